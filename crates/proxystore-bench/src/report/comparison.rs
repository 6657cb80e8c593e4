//! Ours against Python ProxyStore: the figures read from Python's own report, and the
//! comparison of each operation with Python's, computed once when the report is finished.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Report;

/// One operation, ours against Python ProxyStore's.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct Comparison {
    /// Our connector name (Python's: `local` for memory).
    pub(crate) connector: String,
    pub(crate) op: String,
    pub(crate) size_bytes: u64,
    pub(crate) ours_s: f64,
    pub(crate) python_s: f64,
    /// Python's time over ours (above 1: we are faster).
    pub(crate) speedup: f64,
}

impl Report {
    /// The rows of Python's report (none when it did not run).
    fn python_rows(&self) -> Vec<&Value> {
        self.python
            .as_ref()
            .and_then(|p| p["results"].as_array())
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    }

    /// Python's median time of `op` on its connector `connector` at `size`.
    pub(crate) fn python_median(&self, connector: &str, op: &str, size: u64) -> Option<f64> {
        self.python_rows()
            .into_iter()
            .find(|r| {
                r["connector"] == connector
                    && r["op"] == op
                    && r["size_bytes"].as_u64() == Some(size)
            })
            .and_then(|r| r["median_s"].as_f64())
    }

    /// Python's 100 B put+get pairs per second on its connector `connector`, one client.
    pub(crate) fn python_small(&self, connector: &str) -> Option<f64> {
        self.python.as_ref()?["small_ops"][connector]["put_get_pairs_per_s"].as_f64()
    }

    /// The size of Python's pickled proxy of its connector `connector`.
    pub(crate) fn python_pickled(&self, connector: &str) -> Option<u64> {
        self.python_rows()
            .into_iter()
            .find(|r| r["connector"] == connector && r["op"] == "pickle_dumps")
            .and_then(|r| r["pickled_size_bytes"].as_u64())
    }

    /// Each of our operations that Python measured too, against Python's.
    pub(super) fn compare(&self) -> Vec<Comparison> {
        let mut out = Vec::new();
        if self.python.is_none() {
            return out;
        }
        let pairs = [
            ("memory", "local", OPS.as_slice()),
            ("file", "file", OPS.as_slice()),
            ("redis", "redis", OPS.as_slice()),
        ];
        let raw_pairs = [
            ("memcpy", "bytearray_copy"),
            ("fs_write", "file_write"),
            ("fs_read", "file_read"),
            ("redis_set", "redis_set"),
            ("redis_get", "redis_get"),
        ];
        for r in &self.results {
            let (py_conn, py_op) = if r.connector == "raw" {
                match raw_pairs.iter().find(|(o, _)| *o == r.op) {
                    Some((_, p)) => ("raw", *p),
                    None => continue,
                }
            } else {
                match pairs
                    .iter()
                    .find(|(c, _, ops)| *c == r.connector && ops.contains(&r.op.as_str()))
                {
                    Some((_, p, _)) => (*p, r.op.as_str()),
                    None => continue,
                }
            };
            if let Some(py) = self.python_median(py_conn, py_op, r.size_bytes) {
                out.push(Comparison {
                    connector: r.connector.clone(),
                    op: r.op.clone(),
                    size_bytes: r.size_bytes,
                    ours_s: r.summary.median_s,
                    python_s: py,
                    speedup: py / r.summary.median_s,
                });
            }
        }
        out
    }
}

/// The store operations both benchmarks measure under the same names.
const OPS: [&str; 5] = [
    "put",
    "get_cold",
    "get_warm",
    "proxy_create",
    "resolve_first",
];

/// Python's name of our connector `conn` (`local` for memory), if Python has it.
pub(crate) fn python_name(conn: &str) -> Option<&'static str> {
    match conn {
        "memory" => Some("local"),
        "file" => Some("file"),
        "redis" => Some("redis"),
        _ => None,
    }
}

/// Python's name of a small-object loop of ours (connector or raw client), if Python has it.
pub(crate) fn python_small_name(conn: &str) -> Option<&'static str> {
    match conn {
        "raw_fs" => Some("raw_file"),
        "raw_redis" => Some("raw_redis"),
        other => python_name(other),
    }
}
