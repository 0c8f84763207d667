#![no_main]
//! See `leadgate::fuzz::config` for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadgate::fuzz::config(data));
