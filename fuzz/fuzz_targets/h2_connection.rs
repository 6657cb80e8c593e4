#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxystore_fuzz::h2_harness::h2_connection(data));
