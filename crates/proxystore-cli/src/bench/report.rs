//! The report: every figure with its baseline ratio, the comparison with Python ProxyStore,
//! the targets of the issues with their measured values; printed as a table, written as JSON
//! and as Markdown.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::measure::{RefSize, Row, attach_baselines};
use super::rss::RssRow;
use super::small::SmallOps;
use super::stats::{fmt_rate, fmt_size, fmt_time};
use super::{BenchArgs, baselines};

const MIB: u64 = 1 << 20;

/// Everything one run measured.
#[derive(Deserialize, Serialize)]
pub(crate) struct Report {
    pub(crate) schema: String,
    pub(crate) timestamp_utc: String,
    pub(crate) command: Vec<String>,
    pub(crate) environment: Value,
    pub(crate) config: Value,
    /// Store operations and raw baselines per connector and size.
    pub(crate) results: Vec<Row>,
    pub(crate) reference_sizes: Vec<RefSize>,
    pub(crate) small_ops: Vec<SmallOps>,
    pub(crate) rss: Vec<RssRow>,
    /// File-connector first resolves per digest, digest throughput.
    pub(crate) core: Vec<Row>,
    /// Python ProxyStore's own report, when run.
    pub(crate) python: Option<Value>,
    /// Ours against Python ProxyStore, operation by operation.
    pub(crate) comparison: Vec<Comparison>,
    pub(crate) targets: Vec<Target>,
    pub(crate) errors: Vec<String>,
    pub(crate) total_wall_s: f64,
}

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
    pub(crate) fn new(args: &BenchArgs, sizes: &[u64], environment: Value) -> Self {
        Report {
            schema: "proxystore_rs_bench/v1".into(),
            timestamp_utc: utc_now(),
            command: std::env::args().collect(),
            environment,
            config: json!({
                "sizes_bytes": sizes,
                "connectors": args.connectors.iter().map(|n| format!("{n:?}").to_lowercase()).collect::<Vec<_>>(),
                "min_time_s": args.min_time,
                "min_reps": args.min_reps,
                "max_reps": args.max_reps,
                "repeat": args.repeat,
                "fresh_processes": args.processes,
                "small_seconds": args.small_seconds,
                "clients": args.clients,
                "rss": args.rss,
                "rss_size": args.rss_size,
                "timer": "std::time::Instant around the operation; one untimed warm-up call; \
                          adaptive repetition as the Python script (until min_time timed and \
                          min_reps, at most max_reps, wall cap max(3 min_time, 1 s))",
                "percentiles": "linear interpolation (numpy default)",
                "ratio": "our median time over the baseline's median time, same size, same run \
                          (below 1: faster than the baseline); small objects: our rate over \
                          the baseline's rate",
                "stores": "puts, cold gets and first resolves through a store without cache \
                           (cache_bytes 0); warm gets through a store with a cache; payloads \
                           are bytes::Bytes (stored raw, no codec)",
            }),
            results: Vec::new(),
            reference_sizes: Vec::new(),
            small_ops: Vec::new(),
            rss: Vec::new(),
            core: Vec::new(),
            python: None,
            comparison: Vec::new(),
            targets: Vec::new(),
            errors: Vec::new(),
            total_wall_s: 0.0,
        }
    }

    /// Attach baselines and ratios, compare with Python, evaluate the targets.
    pub(crate) fn finish(&mut self) {
        let b = baselines();
        attach_baselines(&mut self.results, &b);
        attach_baselines(
            &mut self.core,
            &std::collections::BTreeMap::from([("file", super::subjects::RawKind::Fs)]),
        );
        let small = self.small_ops.clone();
        for s in self.small_ops.iter_mut().filter(|s| s.ratio.is_none()) {
            let Some(kind) = b.get(s.connector.as_str()) else {
                continue;
            };
            if *kind == super::subjects::RawKind::Memcpy {
                continue;
            }
            let name = kind.small_name();
            if let Some(base) = small
                .iter()
                .find(|r| r.connector == name && r.clients == s.clients)
            {
                s.baseline = Some(name.to_owned());
                s.ratio = Some(s.put_get_pairs_per_s / base.put_get_pairs_per_s);
            }
        }
        self.comparison = self.compare();
        self.targets = self.evaluate();
    }

    fn row(&self, connector: &str, op: &str, size: u64) -> Option<&Row> {
        self.results
            .iter()
            .chain(&self.core)
            .find(|r| r.connector == connector && r.op == op && r.size_bytes == size)
    }

    fn small(&self, connector: &str, clients: usize) -> Option<&SmallOps> {
        self.small_ops
            .iter()
            .find(|r| r.connector == connector && r.clients == clients)
    }

    fn python_rows(&self) -> Vec<&Value> {
        self.python
            .as_ref()
            .and_then(|p| p["results"].as_array())
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    }

    fn python_median(&self, connector: &str, op: &str, size: u64) -> Option<f64> {
        self.python_rows()
            .into_iter()
            .find(|r| {
                r["connector"] == connector
                    && r["op"] == op
                    && r["size_bytes"].as_u64() == Some(size)
            })
            .and_then(|r| r["median_s"].as_f64())
    }

    fn python_small(&self, connector: &str) -> Option<f64> {
        self.python.as_ref()?["small_ops"][connector]["put_get_pairs_per_s"].as_f64()
    }

    fn python_pickled(&self, connector: &str) -> Option<u64> {
        self.python_rows()
            .into_iter()
            .find(|r| r["connector"] == connector && r["op"] == "pickle_dumps")
            .and_then(|r| r["pickled_size_bytes"].as_u64())
    }

    fn compare(&self) -> Vec<Comparison> {
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

    fn evaluate(&self) -> Vec<Target> {
        let mut t = Vec::new();
        let na = |issue, target: &str, why: &str| Target {
            issue,
            target: target.to_owned(),
            measured: format!("not measured: {why}"),
            met: None,
        };

        // Small objects against Python.
        for (ours, py, factor, issues) in [
            ("memory", "local", 20.0, vec![3, 8]),
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
        for (conn, limit, issue) in [("file", 1.1, 8), ("redis", 1.1, 8), ("file", 1.3, 3)] {
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
                "gRPC {} throughput >= Redis (redis crate) from 1 MiB up",
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

    /// The terminal table.
    pub(crate) fn table(&self) -> String {
        let mut s = String::new();
        let env = &self.environment;
        let _ = writeln!(
            s,
            "proxystore bench | {} x{} | {} | load {} -> {} | {:.0}s",
            env["cpu_model"].as_str().unwrap_or("?"),
            env["cpu_count"],
            env["mem_total"].as_str().unwrap_or("?"),
            env["loadavg_start"].as_str().unwrap_or("?"),
            env["loadavg_end"].as_str().unwrap_or("?"),
            self.total_wall_s
        );
        let _ = writeln!(
            s,
            "cells: median time (ratio to the connector's baseline, same size, same run; <1 = faster)"
        );
        let sizes: Vec<u64> = self
            .results
            .iter()
            .map(|r| r.size_bytes)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for conn in self.connectors_in_results() {
            let base = baselines()
                .get(conn.as_str())
                .map(|k| {
                    let (w, r) = k.ops();
                    if w == r {
                        w.to_owned()
                    } else {
                        format!("{w}/{r}")
                    }
                })
                .unwrap_or_default();
            let _ = writeln!(s, "\n=== {conn} (baseline: raw {base}) ===");
            let _ = write!(s, "{:<20}", "op");
            for size in &sizes {
                let _ = write!(s, "{:>17}", fmt_size(*size));
            }
            s.push('\n');
            for op in self.ops_of(&conn) {
                let _ = write!(s, "{op:<20}");
                for &size in &sizes {
                    let cell = match self.row(&conn, &op, size) {
                        Some(r) => match r.ratio {
                            Some(x) => format!("{} {}", fmt_time(r.summary.median_s), fmt_ratio(x)),
                            None => fmt_time(r.summary.median_s),
                        },
                        None => "-".into(),
                    };
                    let _ = write!(s, "{cell:>17}");
                }
                s.push('\n');
            }
        }
        if !self.reference_sizes.is_empty() {
            let _ = writeln!(s, "\n=== serialized proxy reference (bytes) ===");
            let _ = writeln!(
                s,
                "{:<10}{:>9}{:>10}{:>7}{:>16}",
                "connector", "postcard", "protobuf", "json", "python pickle"
            );
            for r in &self.reference_sizes {
                let py = python_name(&r.connector)
                    .and_then(|p| self.python_pickled(p))
                    .map_or("-".into(), |p| p.to_string());
                let _ = writeln!(
                    s,
                    "{:<10}{:>9}{:>10}{:>7}{:>16}",
                    r.connector, r.postcard_bytes, r.protobuf_bytes, r.json_bytes, py
                );
            }
        }
        if !self.small_ops.is_empty() {
            let _ = writeln!(
                s,
                "\n=== small objects (100 B): put+get pairs per second ==="
            );
            let _ = writeln!(
                s,
                "{:<12}{:>8}{:>12}{:>10}{:>10}{:>16}{:>12}",
                "connector", "clients", "pairs/s", "put", "get", "vs baseline", "Python"
            );
            for r in &self.small_ops {
                let py = if r.clients == 1 {
                    python_small_name(&r.connector)
                        .and_then(|p| self.python_small(p))
                        .map_or("-".into(), |p| format!("{p:.0}"))
                } else {
                    "-".into()
                };
                let _ = writeln!(
                    s,
                    "{:<12}{:>8}{:>12.0}{:>10}{:>10}{:>16}{:>12}",
                    r.connector,
                    r.clients,
                    r.put_get_pairs_per_s,
                    r.mean_put_s.map_or("-".into(), fmt_time),
                    r.mean_get_s.map_or("-".into(), fmt_time),
                    match (&r.baseline, r.ratio) {
                        (Some(b), Some(x)) => format!("{x:.2}x {b}"),
                        _ => "-".into(),
                    },
                    py
                );
            }
        }
        if !self.rss.is_empty() {
            let _ = writeln!(s, "\n=== peak RSS (VmHWM of a child process) ===");
            for r in &self.rss {
                let _ = writeln!(
                    s,
                    "{:<8} {}: put {:.0} MiB ({:.2}x), resolve {:.0} MiB ({:.2}x), idle {:.0} MiB{}",
                    r.connector,
                    fmt_size(r.size_bytes),
                    r.put_peak_bytes as f64 / MIB as f64,
                    r.put_ratio,
                    r.resolve_peak_bytes as f64 / MIB as f64,
                    r.resolve_ratio,
                    r.idle_peak_bytes as f64 / MIB as f64,
                    raw_rss(r)
                );
            }
        }
        if !self.core.is_empty() {
            let _ = writeln!(
                s,
                "\n=== core: first resolve of 1 MiB over file per digest; digests ==="
            );
            for r in &self.core {
                let _ = writeln!(
                    s,
                    "{:<8}{:<28}{:>8}{:>10}  [{}..{}] {}{}",
                    r.connector,
                    r.op,
                    fmt_size(r.size_bytes),
                    fmt_time(r.summary.median_s),
                    fmt_time(r.summary.p10_s),
                    fmt_time(r.summary.p90_s),
                    fmt_rate(r.throughput_bps),
                    r.ratio
                        .map(|x| format!("  {x:.2}x raw read"))
                        .unwrap_or_default()
                );
            }
        }
        if !self.comparison.is_empty() {
            let _ = writeln!(
                s,
                "\n=== against Python ProxyStore (speedup = Python's time / ours) ==="
            );
            let _ = write!(s, "{:<26}", "connector/op");
            for size in &sizes {
                let _ = write!(s, "{:>10}", fmt_size(*size));
            }
            s.push('\n');
            let mut keys: Vec<(String, String)> = Vec::new();
            for c in &self.comparison {
                let k = (c.connector.clone(), c.op.clone());
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            for (conn, op) in keys {
                let _ = write!(s, "{:<26}", format!("{conn}/{op}"));
                for &size in &sizes {
                    let cell = self
                        .comparison
                        .iter()
                        .find(|c| c.connector == conn && c.op == op && c.size_bytes == size)
                        .map_or("-".into(), |c| format!("{:.1}x", c.speedup));
                    let _ = write!(s, "{cell:>10}");
                }
                s.push('\n');
            }
        }
        let _ = writeln!(s, "\n=== targets ===");
        for t in &self.targets {
            let _ = writeln!(
                s,
                "[{}] #{} {}: {}",
                match t.met {
                    Some(true) => "met ",
                    Some(false) => "MISS",
                    None => " -- ",
                },
                t.issue,
                t.target,
                t.measured
            );
        }
        if !self.errors.is_empty() {
            let _ = writeln!(s, "\nerrors:");
            for e in &self.errors {
                let _ = writeln!(s, "  - {e}");
            }
        }
        s
    }

    fn connectors_in_results(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for r in &self.results {
            if !v.contains(&r.connector) {
                v.push(r.connector.clone());
            }
        }
        // Baselines last.
        v.sort_by_key(|c| c == "raw");
        v
    }

    fn ops_of(&self, conn: &str) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for r in self.results.iter().filter(|r| r.connector == conn) {
            if !v.contains(&r.op) {
                v.push(r.op.clone());
            }
        }
        v
    }

    /// The generated Markdown report (what `--update-doc` splices into the document).
    pub(crate) fn markdown(&self, plots: Option<&Path>, doc: Option<&Path>) -> String {
        let mut s = String::new();
        let env = &self.environment;
        let _ = writeln!(
            s,
            "Generated by `{}` on {} (UTC), {:.0} s.\n",
            self.command_line(),
            self.timestamp_utc,
            self.total_wall_s
        );
        let _ = writeln!(
            s,
            "Machine: {} x{} cores, {}, Linux {}, files on {}; load average {} at the start, {} at the end \
             (shared with other work: absolute numbers are noisy, ratios are measured side by side). \
             redis-server {}; Python ProxyStore {}.\n",
            env["cpu_model"].as_str().unwrap_or("?"),
            env["cpu_count"],
            env["mem_total"].as_str().unwrap_or("?"),
            env["kernel"].as_str().unwrap_or("?"),
            env["dir_fs"].as_str().unwrap_or("?"),
            env["loadavg_start"].as_str().unwrap_or("?"),
            env["loadavg_end"].as_str().unwrap_or("?"),
            env["redis_server_version"].as_str().unwrap_or("?"),
            self.python
                .as_ref()
                .and_then(|p| p["environment"]["proxystore_version"].as_str())
                .unwrap_or("not run"),
        );
        let _ = writeln!(s, "### Targets\n");
        let _ = writeln!(s, "| issue | target | measured | |\n|---|---|---|---|");
        for t in &self.targets {
            let _ = writeln!(
                s,
                "| #{} | {} | {} | {} |",
                t.issue,
                t.target,
                t.measured,
                match t.met {
                    Some(true) => "met",
                    Some(false) => "**missed**",
                    None => "-",
                }
            );
        }
        let sizes: Vec<u64> = self
            .results
            .iter()
            .map(|r| r.size_bytes)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !self.comparison.is_empty() {
            let _ = writeln!(
                s,
                "\n### Against Python ProxyStore\n\nMedian latency, ours / Python ProxyStore's, \
                 and the speedup (Python's time over ours). Same machine, same redis-server, \
                 same directory, same run. Memory is compared with Python's LocalConnector; \
                 `raw` rows compare the raw clients (redis crate vs redis-py, `std::fs` vs \
                 Python file I/O, memcpy vs `bytearray(x)`).\n"
            );
            let _ = write!(s, "| connector | op |");
            for size in &sizes {
                let _ = write!(s, " {} |", fmt_size(*size));
            }
            let _ = write!(s, "\n|---|---|");
            for _ in &sizes {
                s.push_str("---|");
            }
            s.push('\n');
            let mut keys: Vec<(String, String)> = Vec::new();
            for c in &self.comparison {
                let k = (c.connector.clone(), c.op.clone());
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            for (conn, op) in keys {
                let _ = write!(s, "| {conn} | {op} |");
                for &size in &sizes {
                    let cell = self
                        .comparison
                        .iter()
                        .find(|c| c.connector == conn && c.op == op && c.size_bytes == size)
                        .map_or("-".into(), |c| {
                            format!(
                                "{} / {} ({:.1}x)",
                                fmt_time(c.ours_s),
                                fmt_time(c.python_s),
                                c.speedup
                            )
                        });
                    let _ = write!(s, " {cell} |");
                }
                s.push('\n');
            }
        }
        let _ = writeln!(
            s,
            "\n### Every connector against its raw backend\n\nMedian latency, its ratio to the \
             baseline of the same size in the same run (below 1: faster than the baseline), and \
             the p10..p90 spread in the JSON. Baselines: memory - memcpy into a buffer allocated \
             beforehand; file - `std::fs::write` of a new file / `std::fs::read` in the same \
             directory; redis and grpc - the redis crate's SET/GET against the same \
             redis-server; s3 - aws-sdk-s3 `put_object` / `get_object` against the same \
             server.\n"
        );
        for conn in self.connectors_in_results() {
            let _ = write!(s, "**{conn}**\n\n| op |");
            for size in &sizes {
                let _ = write!(s, " {} |", fmt_size(*size));
            }
            s.push_str("\n|---|");
            for _ in &sizes {
                s.push_str("---|");
            }
            s.push('\n');
            for op in self.ops_of(&conn) {
                let _ = write!(s, "| {op} |");
                for &size in &sizes {
                    let cell = match self.row(&conn, &op, size) {
                        Some(r) => match r.ratio {
                            Some(x) => {
                                format!("{} ({})", fmt_time(r.summary.median_s), fmt_ratio(x))
                            }
                            None => fmt_time(r.summary.median_s),
                        },
                        None => "-".into(),
                    };
                    let _ = write!(s, " {cell} |");
                }
                s.push('\n');
            }
            s.push('\n');
        }
        if !self.small_ops.is_empty() {
            let _ = writeln!(
                s,
                "### Small objects (100 B)\n\nPut+get pairs per second through a store without \
                 cache (Python: `cache_size=0`), one client looping, or N concurrent clients. \
                 `vs baseline`: our rate over the raw client's rate at the same concurrency.\n"
            );
            let _ = writeln!(
                s,
                "| connector | clients | pairs/s | mean put | mean get | vs baseline | Python ProxyStore pairs/s |\n|---|---|---|---|---|---|---|"
            );
            for r in &self.small_ops {
                let py = if r.clients == 1 {
                    python_small_name(&r.connector)
                        .and_then(|p| self.python_small(p))
                        .map_or("-".into(), |p| format!("{p:.0}"))
                } else {
                    "-".into()
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.0} | {} | {} | {} | {} |",
                    r.connector,
                    r.clients,
                    r.put_get_pairs_per_s,
                    r.mean_put_s.map_or("-".into(), fmt_time),
                    r.mean_get_s.map_or("-".into(), fmt_time),
                    match (&r.baseline, r.ratio) {
                        (Some(b), Some(x)) => format!("{x:.2}x {b}"),
                        _ => "-".into(),
                    },
                    py
                );
            }
        }
        if !self.reference_sizes.is_empty() {
            let _ = writeln!(
                s,
                "\n### Serialized proxy reference\n\n| connector | postcard | protobuf | JSON | Python pickle |\n|---|---|---|---|---|"
            );
            for r in &self.reference_sizes {
                let py = python_name(&r.connector)
                    .and_then(|p| self.python_pickled(p))
                    .map_or("-".into(), |p| format!("{p} B"));
                let _ = writeln!(
                    s,
                    "| {} | {} B | {} B | {} B | {py} |",
                    r.connector, r.postcard_bytes, r.protobuf_bytes, r.json_bytes
                );
            }
        }
        if !self.rss.is_empty() {
            let _ = writeln!(
                s,
                "\n### Peak memory\n\nVmHWM of a child process that makes the object and puts it, and of a fresh child that resolves a proxy of it (the memory connector: one process, peak reset between), over the object size.\n\n| connector | size | put | resolve | idle process |\n|---|---|---|---|---|"
            );
            for r in &self.rss {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.0} MiB ({:.2}x) | {:.0} MiB ({:.2}x) | {:.0} MiB |",
                    r.connector,
                    fmt_size(r.size_bytes),
                    r.put_peak_bytes as f64 / MIB as f64,
                    r.put_ratio,
                    r.resolve_peak_bytes as f64 / MIB as f64,
                    r.resolve_ratio,
                    r.idle_peak_bytes as f64 / MIB as f64
                );
            }
        }
        if !self.core.is_empty() {
            let _ = writeln!(
                s,
                "\n### Digests and first resolve per digest\n\n| what | size | median | p10..p90 | throughput | vs raw read |\n|---|---|---|---|---|---|"
            );
            for r in &self.core {
                let _ = writeln!(
                    s,
                    "| {} {} | {} | {} | {}..{} | {} | {} |",
                    r.connector,
                    r.op,
                    fmt_size(r.size_bytes),
                    fmt_time(r.summary.median_s),
                    fmt_time(r.summary.p10_s),
                    fmt_time(r.summary.p90_s),
                    fmt_rate(r.throughput_bps),
                    r.ratio.map_or("-".into(), |x| format!("{x:.2}x"))
                );
            }
        }
        if let Some(dir) = plots {
            let rel = relative_to_doc(dir, doc);
            let _ = writeln!(
                s,
                "\n### Plots\n\nLatency and throughput against object size: ours (solid), Python ProxyStore (dashed), the raw backend (dotted).\n"
            );
            for conn in self.connectors_in_results().iter().filter(|c| *c != "raw") {
                let _ = writeln!(s, "![{conn}]({rel}/bench_{conn}.png)\n");
            }
            if !self.small_ops.is_empty() {
                let _ = writeln!(s, "![small objects]({rel}/bench_small_ops.png)\n");
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(s, "\nFailed measurements:\n");
            for e in &self.errors {
                let _ = writeln!(s, "- {e}");
            }
        }
        s
    }

    fn command_line(&self) -> String {
        let mut v: Vec<String> = self.command.clone();
        if let Some(first) = v.first_mut() {
            "proxystore".clone_into(first);
        }
        v.join(" ")
    }
}

const OPS: [&str; 5] = [
    "put",
    "get_cold",
    "get_warm",
    "proxy_create",
    "resolve_first",
];

fn python_name(conn: &str) -> Option<&'static str> {
    match conn {
        "memory" => Some("local"),
        "file" => Some("file"),
        "redis" => Some("redis"),
        _ => None,
    }
}

fn python_small_name(conn: &str) -> Option<&'static str> {
    match conn {
        "raw_fs" => Some("raw_file"),
        "raw_redis" => Some("raw_redis"),
        other => python_name(other),
    }
}

fn raw_rss(r: &RssRow) -> String {
    match (r.raw_put_ratio, r.raw_get_ratio) {
        (Some(p), Some(g)) => format!("; raw client write {p:.2}x, read {g:.2}x"),
        _ => String::new(),
    }
}

fn fmt_ratio(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}x")
    } else if x >= 10.0 {
        format!("{x:.1}x")
    } else {
        format!("{x:.2}x")
    }
}

/// `dir` as a path relative to the document's directory, when it lies below it.
fn relative_to_doc(dir: &Path, doc: Option<&Path>) -> String {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if let Some(doc_dir) = doc.and_then(Path::parent) {
        let (d, base) = (abs(dir), abs(doc_dir));
        if let Ok(rel) = d.strip_prefix(&base) {
            return rel.display().to_string();
        }
    }
    dir.display().to_string()
}

/// Replace what lies between the markers of `doc` with `generated`.
///
/// # Errors
/// When the document cannot be read or written, or lacks the markers.
pub(crate) fn update_doc(doc: &Path, generated: &str) -> Result<()> {
    const BEGIN: &str = "<!-- bench:begin -->";
    const END: &str = "<!-- bench:end -->";
    let text = std::fs::read_to_string(doc).with_context(|| format!("read {}", doc.display()))?;
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        bail!("{} has no {BEGIN} ... {END} markers", doc.display());
    };
    if e < b {
        bail!("{}: {END} comes before {BEGIN}", doc.display());
    }
    let new = format!(
        "{}{BEGIN}\n{}\n{}",
        &text[..b],
        generated.trim_end(),
        &text[e..]
    );
    std::fs::write(doc, new).with_context(|| format!("write {}", doc.display()))
}

/// The load average (1, 5, 15 minutes).
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// What the report says about the machine.
pub(crate) fn environment(work: &Path, redis_port: Option<u16>) -> Value {
    let first = |file: &str, key: &str| -> Option<String> {
        std::fs::read_to_string(file).ok()?.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|r| r.trim_start().strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        })
    };
    json!({
        "cpu_model": first("/proc/cpuinfo", "model name"),
        "cpu_count": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "mem_total": first("/proc/meminfo", "MemTotal"),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
        "proxystore_version": env!("CARGO_PKG_VERSION"),
        "debug_build": cfg!(debug_assertions),
        "dir": work.display().to_string(),
        "dir_fs": fs_type(work),
        "redis_server_version": redis_port.and_then(|p| super::servers::info_field(p, "redis_version").ok()),
    })
}

/// Filesystem type and mount point of `path`.
fn fs_type(path: &Path) -> Option<String> {
    let path = std::fs::canonicalize(path).ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let mut best: Option<(String, String)> = None;
    for line in mounts.lines() {
        let mut parts = line.split_whitespace();
        let (Some(_), Some(mnt), Some(fs)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if path.starts_with(mnt) && best.as_ref().is_none_or(|(m, _)| mnt.len() > m.len()) {
            best = Some((mnt.to_owned(), fs.to_owned()));
        }
    }
    best.map(|(m, f)| format!("{f} (mount {m})"))
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_doc_replaces_only_the_generated_part() {
        let dir = tempfile::tempdir().unwrap();
        let doc = dir.path().join("b.md");
        std::fs::write(
            &doc,
            "intro\n<!-- bench:begin -->\nold\n<!-- bench:end -->\noutro\n",
        )
        .unwrap();
        update_doc(&doc, "new table\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&doc).unwrap(),
            "intro\n<!-- bench:begin -->\nnew table\n<!-- bench:end -->\noutro\n"
        );
        std::fs::write(&doc, "no markers").unwrap();
        assert!(update_doc(&doc, "x").is_err());
    }

    /// `scripts/bench-report` writes `bench/results/bench.json`, the standard output
    /// (`table.txt`) and the Markdown report (`report.md`) of one run: rendering that JSON
    /// again gives the same two texts, cell for cell.
    #[test]
    fn renders_the_committed_report_again_from_its_json() {
        let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/results");
        let read = |name: &str| std::fs::read_to_string(results.join(name)).unwrap();
        let report: Report = serde_json::from_str(&read("bench.json")).unwrap();
        assert_eq!(format!("{}\n", report.table()), read("table.txt"));
        let md = report.markdown(
            Some(Path::new("docs/images")),
            Some(Path::new("docs/benchmarks.md")),
        );
        assert_eq!(md, read("report.md"));
    }

    #[test]
    fn timestamps_look_like_iso_8601() {
        let t = utc_now();
        assert_eq!(t.len(), 20);
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }

    #[test]
    fn plot_paths_are_relative_to_the_document() {
        assert_eq!(
            relative_to_doc(
                Path::new("docs/images"),
                Some(Path::new("docs/benchmarks.md"))
            ),
            "images"
        );
        assert_eq!(relative_to_doc(Path::new("/x/y"), None), "/x/y");
    }
}
