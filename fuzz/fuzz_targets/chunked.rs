#![no_main]
//! See `shared::fuzzing::chunked` for the input format and the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| shared::fuzzing::chunked(data));
