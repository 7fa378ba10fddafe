#![no_main]
//! See `shared::fuzzing::sigv4` for the input format and the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| shared::fuzzing::sigv4(data));
