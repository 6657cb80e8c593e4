#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxystore_fuzz::core_harness::proxy_postcard(data));
