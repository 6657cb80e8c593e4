//! Helpers shared by the plugin's benchmarks.

#![allow(dead_code, missing_docs)]

use apalis_redis::Config;

pub(crate) fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Deterministic pseudo-random values in [0, 1) for task `index` (xorshift64*).
pub(crate) fn values(index: u32, len: usize) -> Vec<f64> {
    let mut x = (u64::from(index) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
            r as f64 / (1u64 << 53) as f64
        })
        .collect()
}

/// `INFO memory`'s `used_memory_peak` of the server at `url`, in bytes.
pub(crate) async fn used_memory_peak(url: &str) -> u64 {
    let mut conn = proxystore_apalis::connect(url).await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory_peak:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO memory has used_memory_peak")
}

pub(crate) fn config(queue: &str) -> Config {
    Config::default().queue(queue)
}
