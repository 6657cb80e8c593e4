//! The decode functions behind the fuzz targets. The repository's test suite compiles the same
//! files (`crates/proxystore/tests/fuzz_corpus.rs`, `crates/proxystore/tests/
//! globus_fuzz_corpus.rs`, `crates/proxystore-middleware/tests/fuzz_corpus.rs`,
//! `crates/proxystore-server/tests/fuzz_corpus.rs`, `crates/proxystore-server/tests/
//! h2_fuzz_corpus.rs`) to replay every corpus file without cargo-fuzz.

pub mod core_harness;
pub mod globus_harness;
pub mod h2_harness;
pub mod middleware_harness;
pub mod server_harness;
