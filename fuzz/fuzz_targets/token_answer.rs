#![no_main]
//! See `leadgate::fuzz::token_answer` for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadgate::fuzz::token_answer(data));
