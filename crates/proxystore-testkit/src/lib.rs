//! Servers that the tests and the benchmarks start for themselves on free loopback ports and
//! stop when their guards drop. A missing server binary is a clear error naming
//! `scripts/install-deps`, never a skip.

pub mod redis_cluster;

/// A port that was free a moment ago on 127.0.0.1.
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> anyhow::Result<u16> {
    use anyhow::Context as _;
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
