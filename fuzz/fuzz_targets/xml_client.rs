#![no_main]
//! See `shared::fuzzing::xml_client` for the input format and the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| shared::fuzzing::xml_client(data));
