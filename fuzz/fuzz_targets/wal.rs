#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logsift_fuzz::wal(data));
