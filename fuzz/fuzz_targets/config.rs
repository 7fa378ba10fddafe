#![no_main]
//! See `shared::fuzzing::config` for the input format and the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| shared::fuzzing::config(data));
