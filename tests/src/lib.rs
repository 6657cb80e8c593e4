//! Support for the cross-process and real-server tests: finding built binaries, starting the
//! servers the tests need on free loopback ports, and stopping them.
//!
//! Every server is started by the test that needs it and stopped when its guard drops; a
//! missing server binary is a clear failure, never a skip.

pub mod front;
pub mod globus_fake;
pub mod grpc_server;
pub mod nats_server;
pub mod process;
pub use proxystore_testkit::redis_cluster;
pub mod redis_server;
pub mod s3_server;

/// A test value of `size` bytes, each a function of its index (the same in every process).
pub fn pattern(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i.wrapping_mul(31) % 251) as u8)
        .collect()
}

/// Test object number `i` of `size` bytes: a function of both (the same in every process), so
/// that two objects of one size differ.
pub fn object(i: u64, size: usize) -> Vec<u8> {
    let i = usize::try_from(i).unwrap_or(usize::MAX);
    (0..size)
        .map(|j| (i.wrapping_mul(7).wrapping_add(j.wrapping_mul(13)) % 251) as u8)
        .collect()
}
