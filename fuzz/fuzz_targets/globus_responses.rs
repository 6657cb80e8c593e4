#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxystore_fuzz::globus_harness::globus_responses(data));
