#![no_main]
//! See `leadgate::fuzz::webhook_body` for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadgate::fuzz::webhook_body(data));
