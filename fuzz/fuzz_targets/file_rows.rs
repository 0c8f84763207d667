#![no_main]
//! See `leadgate::fuzz::file_rows` for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadgate::fuzz::file_rows(data));
