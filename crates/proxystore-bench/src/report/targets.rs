//! The targets of the issues, each with what this run measured for it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{MIB, Report};
use crate::format::{fmt_rate, fmt_size, fmt_time};
use crate::measure::small::{REDIS_BENCHMARK, SmallOps};
use crate::measure::tracing_cost::BY_HAND;

/// A target from the issues and what this run measured for it.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct Target {
    pub(crate) issue: u32,
    pub(crate) target: String,
    pub(crate) measured: String,
    /// `None` when it could not be measured in this run.
    pub(crate) met: Option<bool>,
}

impl Report {
    /// Evaluate every target on this run's figures.
    pub(super) fn evaluate(&self) -> Vec<Target> {
        let mut t = Vec::new();
        let na = |issue, target: &str, why: &str| Target {
            issue,
            target: target.to_owned(),
            measured: format!("not measured: {why}"),
            met: None,
        };

        // Small objects against Python.
        for (ours, py, factor, issues) in [
            ("memory", "local", 20.0, vec![3, 8, 18]),
            ("redis", "redis", 3.0, vec![8]),
        ] {
            let target = format!(
                "100 B put+get, {ours} store (no cache), 1 client: >= {factor}x Python ProxyStore's {} rate",
                if py == "local" {
                    "LocalConnector"
                } else {
                    "RedisConnector"
                }
            );
            for issue in issues {
                match (self.small(ours, 1), self.python_small(py)) {
                    (Some(o), Some(p)) => {
                        let x = o.put_get_pairs_per_s / p;
                        t.push(Target {
                            issue,
                            target: target.clone(),
                            measured: format!(
                                "{:.0} vs {:.0} pairs/s = {x:.1}x",
                                o.put_get_pairs_per_s, p
                            ),
                            met: Some(x >= factor),
                        });
                    }
                    _ => t.push(na(
                        issue,
                        &target,
                        "needs the small-object loops and --python",
                    )),
                }
            }
        }

        // Large objects against the raw backend.
        let hundred = 100 * MIB;
        for (conn, limit, issue) in [
            ("file", 1.1, 8),
            ("redis", 1.1, 8),
            ("file", 1.3, 3),
            ("file", 1.1, 18),
        ] {
            for op in ["put", "get_cold"] {
                let target = format!(
                    "100 MiB {conn} {}: within {:.0}% of the raw backend",
                    if op == "put" { "put" } else { "get" },
                    (limit - 1.0) * 100.0
                );
                match self
                    .row(conn, op, hundred)
                    .and_then(|r| r.ratio.map(|x| (r, x)))
                {
                    Some((r, x)) => {
                        let alone = self
                            .row(
                                conn,
                                if op == "put" {
                                    "connector_put"
                                } else {
                                    "connector_get"
                                },
                                hundred,
                            )
                            .and_then(|r| r.ratio)
                            .map(|c| format!("; connector alone {c:.2}x"))
                            .unwrap_or_default();
                        let py = self
                            .python_median(
                                if conn == "file" { "file" } else { "redis" },
                                op,
                                hundred,
                            )
                            .map(|p| format!("; Python ProxyStore {}", fmt_time(p)))
                            .unwrap_or_default();
                        t.push(Target {
                            issue,
                            target,
                            measured: format!(
                                "store {} vs {} {} = {x:.2}x{alone}{py}",
                                fmt_time(r.summary.median_s),
                                r.baseline.as_deref().unwrap_or("?"),
                                fmt_time(r.summary.median_s / x),
                            ),
                            met: Some(x <= limit),
                        });
                    }
                    None => t.push(na(issue, &target, "needs size 100MiB")),
                }
            }
        }

        // Reference size against Python's pickled proxy.
        for (ours, py) in [("memory", "local"), ("file", "file"), ("redis", "redis")] {
            let target =
                format!("serialized {ours} proxy <= 1/3 of Python ProxyStore's pickled proxy");
            let r = self.reference_sizes.iter().find(|r| r.connector == ours);
            match (r, self.python_pickled(py)) {
                (Some(r), Some(p)) => {
                    let x = r.postcard_bytes as f64 / p as f64;
                    t.push(Target {
                        issue: 8,
                        target,
                        measured: format!(
                            "{} B (postcard; protobuf {} B) vs {p} B = {x:.2}",
                            r.postcard_bytes, r.protobuf_bytes
                        ),
                        met: Some(x <= 1.0 / 3.0),
                    });
                }
                _ => t.push(na(8, &target, "needs --python")),
            }
        }

        // Peak memory.
        if self.rss.is_empty() {
            t.push(na(
                8,
                "peak RSS <= 1.5x the object size, 1 GiB put or resolve",
                "needs --rss",
            ));
        }
        for r in &self.rss {
            for (what, x, peak) in [
                ("put", r.put_ratio, r.put_peak_bytes),
                ("resolve", r.resolve_ratio, r.resolve_peak_bytes),
            ] {
                t.push(Target {
                    issue: 8,
                    target: format!(
                        "peak RSS of a {} {what} ({}) <= 1.5x the object size",
                        fmt_size(r.size_bytes),
                        r.connector
                    ),
                    measured: format!(
                        "{:.0} MiB = {x:.2}x{}",
                        peak as f64 / MIB as f64,
                        match (what, r.raw_put_ratio, r.raw_get_ratio) {
                            ("put", Some(p), _) => format!(" (raw client {p:.2}x)"),
                            ("resolve", _, Some(g)) => format!(" (raw client {g:.2}x)"),
                            _ => String::new(),
                        }
                    ),
                    met: Some(x <= 1.5),
                });
            }
        }

        // gRPC against Redis.
        let sizes: BTreeSet<u64> = self.results.iter().map(|r| r.size_bytes).collect();
        for op in ["put", "get_cold"] {
            let target = format!(
                "gRPC {} throughput >= Redis (its raw client) from 1 MiB up",
                if op == "put" { "put" } else { "get" }
            );
            let mut cells = Vec::new();
            let mut ok = true;
            for &size in sizes.iter().filter(|s| **s >= MIB) {
                if let Some(x) = self.row("grpc", op, size).and_then(|r| r.ratio) {
                    cells.push(format!("{}: {:.2}x", fmt_size(size), 1.0 / x));
                    ok &= x <= 1.0;
                }
            }
            if cells.is_empty() {
                t.push(na(4, &target, "needs gRPC and Redis at 1 MiB or more"));
            } else {
                t.push(Target {
                    issue: 4,
                    target,
                    measured: format!("throughput over Redis's: {}", cells.join(", ")),
                    met: Some(ok),
                });
            }
        }
        for clients in [1, 16] {
            let target = format!("gRPC 100 B put+get rate >= half of Redis's, {clients} client(s)");
            match (
                self.small("grpc", clients),
                self.small("raw_redis", clients),
            ) {
                (Some(g), Some(r)) => {
                    let x = g.put_get_pairs_per_s / r.put_get_pairs_per_s;
                    t.push(Target {
                        issue: 4,
                        target,
                        measured: format!(
                            "{:.0} vs {:.0} pairs/s = {x:.2}x",
                            g.put_get_pairs_per_s, r.put_get_pairs_per_s
                        ),
                        met: Some(x >= 0.5),
                    });
                }
                _ => t.push(na(4, &target, "needs the small-object loops")),
            }
        }

        self.performance_targets(&mut t, &sizes);

        // Per-connector overhead against the raw client: the connector alone.
        for conn in ["file", "redis", "s3"] {
            for op in ["connector_put", "connector_get"] {
                let target = format!(
                    "{conn} connector {} overhead vs raw client <= 10% from 1 MiB up",
                    if op == "connector_put" { "put" } else { "get" }
                );
                let mut cells = Vec::new();
                let mut ok = true;
                for &size in &sizes {
                    if let Some(x) = self.row(conn, op, size).and_then(|r| r.ratio) {
                        if size >= 1024 && (size == 1024 || size >= MIB) {
                            cells.push(format!("{}: {x:.2}x", fmt_size(size)));
                        }
                        if size >= MIB {
                            ok &= x <= 1.1;
                        }
                    }
                }
                if cells.is_empty() {
                    t.push(na(5, &target, "connector not measured"));
                } else {
                    t.push(Target {
                        issue: 5,
                        target,
                        measured: cells.join(", "),
                        met: Some(ok),
                    });
                }
            }
        }

        // Core.
        let target = "memory-store get of Bytes is zero-copy: time at 100 MiB ~ time at 100 B";
        match (
            self.row("memory", "get_cold", 100),
            self.row("memory", "get_cold", hundred),
        ) {
            (Some(a), Some(b)) => {
                let x = b.summary.median_s / a.summary.median_s;
                let memcpy = self
                    .row("raw", "memcpy", hundred)
                    .map(|m| format!("; memcpy of 100 MiB {}", fmt_time(m.summary.median_s)))
                    .unwrap_or_default();
                t.push(Target {
                    issue: 3,
                    target: target.into(),
                    measured: format!(
                        "{} vs {} = {x:.2}x{memcpy}",
                        fmt_time(b.summary.median_s),
                        fmt_time(a.summary.median_s)
                    ),
                    met: Some(x <= 2.0),
                });
            }
            _ => t.push(na(3, target, "needs sizes 100B and 100MiB")),
        }
        for (digest, limit) in [("none", 1.1), ("xxh3", 2.0)] {
            let target = format!(
                "first resolve over file at 1 MiB, digest {digest}: <= {limit}x a raw read"
            );
            match self
                .row("file", &format!("resolve_first_digest_{digest}"), MIB)
                .and_then(|r| r.ratio.map(|x| (r, x)))
            {
                Some((r, x)) => t.push(Target {
                    issue: 3,
                    target,
                    measured: format!(
                        "{} vs {} = {x:.2}x",
                        fmt_time(r.summary.median_s),
                        fmt_time(r.summary.median_s / x)
                    ),
                    met: Some(x <= limit),
                }),
                None => t.push(na(3, &target, "needs the file connector")),
            }
        }
        let digests: Vec<String> = self
            .core
            .iter()
            .filter(|r| r.connector == "digest" && r.size_bytes == hundred)
            .map(|r| format!("{} {}", r.op, fmt_rate(r.throughput_bps)))
            .collect();
        let blake = self
            .row("file", "resolve_first_digest_blake3", MIB)
            .and_then(|r| r.ratio)
            .map(|x| format!("; first resolve with blake3 {x:.2}x a raw read"))
            .unwrap_or_default();
        t.push(Target {
            issue: 3,
            target: "digest throughput (100 MiB), xxh3 (default) and blake3".into(),
            measured: format!("{}{blake}", digests.join(", ")),
            met: None,
        });
        t
    }

    /// The rows of issue 18 (performance) that are not targets of earlier issues.
    fn performance_targets(&self, t: &mut Vec<Target>, sizes: &BTreeSet<u64>) {
        let mut push = |target: String, measured: Option<(String, bool)>, why: &str| {
            t.push(match measured {
                Some((measured, met)) => Target {
                    issue: 18,
                    target,
                    measured,
                    met: Some(met),
                },
                None => Target {
                    issue: 18,
                    target,
                    measured: format!("not measured: {why}"),
                    met: None,
                },
            })
        };
        let rate = |a: &SmallOps, b: &SmallOps| {
            let x = a.put_get_pairs_per_s / b.put_get_pairs_per_s;
            (
                format!(
                    "{:.0} vs {:.0} pairs/s = {x:.2}x",
                    a.put_get_pairs_per_s, b.put_get_pairs_per_s
                ),
                x,
            )
        };

        // Row 1: Redis large puts against Python ProxyStore and the fastest client.
        let mut cells = Vec::new();
        let mut ok = true;
        for size in [MIB, 10 * MIB, 100 * MIB] {
            let (Some(r), Some(py)) = (
                self.row("redis", "put", size),
                self.python_median("redis", "put", size),
            ) else {
                continue;
            };
            let fastest = r
                .ratio
                .map(|x| format!(", {x:.2}x the plain write"))
                .unwrap_or_default();
            cells.push(format!(
                "{}: {} vs Python {} ({:.2}x faster){fastest}",
                fmt_size(size),
                fmt_time(r.summary.median_s),
                fmt_time(py),
                py / r.summary.median_s
            ));
            ok &= r.summary.median_s <= py && r.ratio.is_some_and(|x| x <= 1.1);
        }
        push(
            "Redis put at 1, 10 and 100 MiB: at least as fast as Python ProxyStore's, within 10% of the fastest client (the value written from its buffer on a plain socket)".into(),
            (!cells.is_empty()).then(|| (cells.join("; "), ok)),
            "needs Redis at 1, 10 or 100 MiB and --python",
        );

        // Row 3: small objects through Redis, against redis-benchmark and the raw crate.
        push(
            "100 B put+get, redis store (no cache), 1 client: >= 75% of redis-benchmark -c 1 -d 100 (one connection, no pipelining)".into(),
            self.small("redis", 1)
                .zip(self.small(REDIS_BENCHMARK, 1))
                .map(|(o, b)| rate(o, b))
                .map(|(m, x)| (m, x >= 0.75)),
            "needs the small-object loops over a plain-TCP Redis",
        );
        push(
            "100 B put+get, redis store (no cache), 16 clients: >= the raw redis crate".into(),
            self.small("redis", 16)
                .zip(self.small("raw_redis", 16))
                .map(|(o, b)| rate(o, b))
                .map(|(m, x)| (m, x >= 1.0)),
            "needs the small-object loops with 16 clients",
        );

        // Row 4: small objects through the gRPC service, against Redis.
        for (clients, factor) in [(1, 0.75), (16, 1.0)] {
            push(
                format!(
                    "gRPC 100 B put+get, {clients} client(s): >= {factor}x Redis (its raw client)"
                ),
                self.small("grpc", clients)
                    .zip(self.small("raw_redis", clients))
                    .map(|(o, b)| rate(o, b))
                    .map(|(m, x)| (m, x >= factor)),
                "needs the small-object loops over gRPC and Redis",
            );
        }
        push(
            "gRPC get at 1 MiB: throughput >= Redis's (its raw client)".into(),
            self.row("grpc", "get_cold", MIB)
                .and_then(|r| r.ratio.map(|x| (r, x)))
                .map(|(r, x)| {
                    (
                        format!(
                            "{} vs {} = {:.2}x Redis's throughput",
                            fmt_time(r.summary.median_s),
                            fmt_time(r.summary.median_s / x),
                            1.0 / x
                        ),
                        x <= 1.0,
                    )
                }),
            "needs gRPC and Redis at 1 MiB",
        );

        // Row 5: S3 puts through the connector against one raw PUT.
        let mut cells = Vec::new();
        let mut ok = true;
        for &size in sizes.iter().filter(|s| (10 * MIB..=100 * MIB).contains(*s)) {
            if let Some(x) = self.row("s3", "connector_put", size).and_then(|r| r.ratio) {
                cells.push(format!("{}: {x:.2}x", fmt_size(size)));
                ok &= x <= 1.05;
            }
        }
        push(
            "S3 put of 10-100 MiB through the connector: as fast as one raw PUT to the same server (<= 1.05x: the spread of repeated runs)".into(),
            (!cells.is_empty()).then(|| (cells.join(", "), ok)),
            "needs S3 at 10 or 100 MiB",
        );

        // Row 7: what tracing costs a resolve.
        let traced = |op| {
            self.row("memory", op, MIB)
                .and_then(|r| r.ratio.map(|x| (r.summary.median_s, x)))
        };
        let by_hand = self.row("memory", BY_HAND, MIB).map(|r| r.summary.median_s);
        push(
            "resolve of 1 MiB (memory, no cache): with OTLP export on and every trace sampled, < 5% \
             slower than by hand (get, digest check, decode); traced without export, < 1%"
                .into(),
            match (by_hand, traced("resolve_traced_off"), traced("resolve_traced_otlp")) {
                (Some(hand), Some((off, x_off)), Some((otlp, x_otlp))) => Some((
                    format!(
                        "median of paired ratios (each round's resolve over its resolve by \
                         hand): no export {:+.1}%, OTLP {:+.1}%; medians: by hand {}, no export \
                         {} ({:+.1}%), OTLP {} ({:+.1}%)",
                        (x_off - 1.0) * 100.0,
                        (x_otlp - 1.0) * 100.0,
                        fmt_time(hand),
                        fmt_time(off),
                        (off / hand - 1.0) * 100.0,
                        fmt_time(otlp),
                        (otlp / hand - 1.0) * 100.0
                    ),
                    x_otlp < 1.05 && x_off < 1.01,
                )),
                _ => None,
            },
            "needs the memory connector",
        );
    }
}
