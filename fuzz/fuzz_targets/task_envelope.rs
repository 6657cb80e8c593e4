#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxystore_fuzz::middleware_harness::task_envelope(data));
