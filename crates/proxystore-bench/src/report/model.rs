//! The tables of a report as computed cells: every lookup, ratio and label is made here once,
//! and the renderers ([`super::text`], [`super::markdown`]) only lay the cells out.

use std::collections::BTreeSet;

use super::comparison::{python_name, python_small_name};
use super::{MIB, Report, Target};
use crate::baselines::baselines;
use crate::format::{fmt_rate, fmt_ratio, fmt_size, fmt_time};

/// Every table of one report.
pub(crate) struct Tables<'a> {
    pub(crate) run: Run,
    /// Column labels of the per-connector and Python tables: the object sizes of the results.
    pub(crate) sizes: Vec<String>,
    /// One table per connector of the results, the raw baselines last.
    pub(crate) connectors: Vec<ConnectorTable>,
    /// Ours against Python ProxyStore, one row per connector and operation.
    pub(crate) comparison: Vec<ComparisonRow>,
    pub(crate) small: Vec<SmallRow>,
    pub(crate) references: Vec<ReferenceRow>,
    pub(crate) rss: Vec<RssLine>,
    pub(crate) core: Vec<CoreRow>,
    pub(crate) targets: &'a [Target],
    /// Whether the report has small-object loops (their plot).
    pub(crate) has_small: bool,
    pub(crate) errors: &'a [String],
}

/// The run and its machine, `?` where unknown.
pub(crate) struct Run {
    pub(crate) command_line: String,
    pub(crate) timestamp_utc: String,
    pub(crate) total_wall_s: f64,
    pub(crate) cpu_model: String,
    pub(crate) cpu_count: String,
    pub(crate) mem_total: String,
    pub(crate) kernel: String,
    pub(crate) dir_fs: String,
    pub(crate) loadavg_start: String,
    pub(crate) loadavg_end: String,
    pub(crate) redis_server_version: String,
    /// Python ProxyStore's version, or `not run`.
    pub(crate) python_version: String,
    /// From this size on, the Redis baseline's SETs were plain writes (`None`: reports made
    /// before, when every SET went through the redis crate).
    pub(crate) redis_plain_set_bytes: Option<u64>,
}

/// The operations of one connector at every size.
pub(crate) struct ConnectorTable {
    pub(crate) connector: String,
    /// Its baseline's operations (`fs_write/fs_read`, `memcpy`); empty for none.
    pub(crate) baseline_ops: String,
    pub(crate) rows: Vec<OpRow>,
}

/// One operation at every size (`None`: not measured at that size).
pub(crate) struct OpRow {
    pub(crate) op: String,
    pub(crate) cells: Vec<Option<TimeCell>>,
}

/// A median time and its ratio to the baseline, if any.
pub(crate) struct TimeCell {
    pub(crate) time: String,
    pub(crate) ratio: Option<String>,
}

/// One connector and operation, ours against Python ProxyStore at every size.
pub(crate) struct ComparisonRow {
    pub(crate) connector: String,
    pub(crate) op: String,
    pub(crate) cells: Vec<Option<ComparisonCell>>,
}

/// Our median, Python's median, and Python's over ours.
pub(crate) struct ComparisonCell {
    pub(crate) ours: String,
    pub(crate) python: String,
    pub(crate) speedup: String,
}

/// One small-object loop.
pub(crate) struct SmallRow {
    pub(crate) connector: String,
    pub(crate) clients: usize,
    pub(crate) pairs_per_s: String,
    pub(crate) mean_put: String,
    pub(crate) mean_get: String,
    /// Our rate over the raw client's, with the raw client's name, or `-`.
    pub(crate) vs_baseline: String,
    /// Python ProxyStore's rate (single client only), or `-`.
    pub(crate) python: String,
}

/// Sizes of one connector's serialized reference, in bytes.
pub(crate) struct ReferenceRow {
    pub(crate) connector: String,
    pub(crate) postcard: usize,
    pub(crate) protobuf: usize,
    pub(crate) json: usize,
    pub(crate) python_pickle: Option<u64>,
}

/// Peak memory of one connector.
pub(crate) struct RssLine {
    pub(crate) connector: String,
    pub(crate) size: String,
    /// `N MiB (R x)` of the put and of the resolve.
    pub(crate) put: String,
    pub(crate) resolve: String,
    pub(crate) idle: String,
    /// The raw client's write and read ratios, when both were measured.
    pub(crate) raw: Option<(String, String)>,
}

/// One digest figure: a first resolve per digest, or a digest's throughput.
pub(crate) struct CoreRow {
    pub(crate) connector: String,
    pub(crate) op: String,
    pub(crate) size: String,
    pub(crate) median: String,
    pub(crate) p10: String,
    pub(crate) p90: String,
    pub(crate) throughput: String,
    /// Over a raw read of the same file.
    pub(crate) ratio: Option<String>,
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / MIB as f64)
}

impl<'a> Tables<'a> {
    /// The tables of `report`.
    pub(crate) fn of(report: &'a Report) -> Self {
        let sizes: Vec<u64> = report
            .results
            .iter()
            .map(|r| r.size_bytes)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        Tables {
            run: run(report),
            connectors: connectors(report, &sizes),
            comparison: comparison(report, &sizes),
            small: small(report),
            references: references(report),
            rss: rss(report),
            core: core(report),
            targets: &report.targets,
            has_small: !report.small_ops.is_empty(),
            errors: &report.errors,
            sizes: sizes.into_iter().map(fmt_size).collect(),
        }
    }
}

fn run(report: &Report) -> Run {
    let env = &report.environment;
    let field = |k: &str| env[k].as_str().unwrap_or("?").to_owned();
    Run {
        command_line: report.command_line(),
        timestamp_utc: report.timestamp_utc.clone(),
        total_wall_s: report.total_wall_s,
        cpu_model: field("cpu_model"),
        cpu_count: env["cpu_count"].to_string(),
        mem_total: field("mem_total"),
        kernel: field("kernel"),
        dir_fs: field("dir_fs"),
        loadavg_start: field("loadavg_start"),
        loadavg_end: field("loadavg_end"),
        redis_server_version: field("redis_server_version"),
        redis_plain_set_bytes: report.config["redis_plain_set_bytes"].as_u64(),
        python_version: report
            .python
            .as_ref()
            .and_then(|p| p["environment"]["proxystore_version"].as_str())
            .unwrap_or("not run")
            .to_owned(),
    }
}

fn connectors(report: &Report, sizes: &[u64]) -> Vec<ConnectorTable> {
    let kinds = baselines();
    report
        .connectors_in_results()
        .into_iter()
        .map(|conn| {
            let baseline_ops = kinds
                .get(conn.as_str())
                .map(|k| match k.ops() {
                    (w, r) if w == r => w.to_owned(),
                    (w, r) => format!("{w}/{r}"),
                })
                .unwrap_or_default();
            let rows = report
                .ops_of(&conn)
                .into_iter()
                .map(|op| {
                    let cells = sizes
                        .iter()
                        .map(|&size| {
                            report.row(&conn, &op, size).map(|r| TimeCell {
                                time: fmt_time(r.summary.median_s),
                                ratio: r.ratio.map(fmt_ratio),
                            })
                        })
                        .collect();
                    OpRow { op, cells }
                })
                .collect();
            ConnectorTable {
                connector: conn,
                baseline_ops,
                rows,
            }
        })
        .collect()
}

fn comparison(report: &Report, sizes: &[u64]) -> Vec<ComparisonRow> {
    let mut keys: Vec<(String, String)> = Vec::new();
    for c in &report.comparison {
        let k = (c.connector.clone(), c.op.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(connector, op)| {
            let cells = sizes
                .iter()
                .map(|&size| {
                    report
                        .comparison
                        .iter()
                        .find(|c| c.connector == connector && c.op == op && c.size_bytes == size)
                        .map(|c| ComparisonCell {
                            ours: fmt_time(c.ours_s),
                            python: fmt_time(c.python_s),
                            speedup: format!("{:.1}x", c.speedup),
                        })
                })
                .collect();
            ComparisonRow {
                connector,
                op,
                cells,
            }
        })
        .collect()
}

fn small(report: &Report) -> Vec<SmallRow> {
    report
        .small_ops
        .iter()
        .map(|r| SmallRow {
            connector: r.connector.clone(),
            clients: r.clients,
            pairs_per_s: format!("{:.0}", r.put_get_pairs_per_s),
            mean_put: r.mean_put_s.map_or("-".into(), fmt_time),
            mean_get: r.mean_get_s.map_or("-".into(), fmt_time),
            vs_baseline: match (&r.baseline, r.ratio) {
                (Some(b), Some(x)) => format!("{x:.2}x {b}"),
                _ => "-".into(),
            },
            python: if r.clients == 1 {
                python_small_name(&r.connector)
                    .and_then(|p| report.python_small(p))
                    .map_or("-".into(), |p| format!("{p:.0}"))
            } else {
                "-".into()
            },
        })
        .collect()
}

fn references(report: &Report) -> Vec<ReferenceRow> {
    report
        .reference_sizes
        .iter()
        .map(|r| ReferenceRow {
            connector: r.connector.clone(),
            postcard: r.postcard_bytes,
            protobuf: r.protobuf_bytes,
            json: r.json_bytes,
            python_pickle: python_name(&r.connector).and_then(|p| report.python_pickled(p)),
        })
        .collect()
}

fn rss(report: &Report) -> Vec<RssLine> {
    report
        .rss
        .iter()
        .map(|r| RssLine {
            connector: r.connector.clone(),
            size: fmt_size(r.size_bytes),
            put: format!("{} ({:.2}x)", mib(r.put_peak_bytes), r.put_ratio),
            resolve: format!("{} ({:.2}x)", mib(r.resolve_peak_bytes), r.resolve_ratio),
            idle: mib(r.idle_peak_bytes),
            raw: match (r.raw_put_ratio, r.raw_get_ratio) {
                (Some(p), Some(g)) => Some((format!("{p:.2}x"), format!("{g:.2}x"))),
                _ => None,
            },
        })
        .collect()
}

fn core(report: &Report) -> Vec<CoreRow> {
    report
        .core
        .iter()
        .map(|r| CoreRow {
            connector: r.connector.clone(),
            op: r.op.clone(),
            size: fmt_size(r.size_bytes),
            median: fmt_time(r.summary.median_s),
            p10: fmt_time(r.summary.p10_s),
            p90: fmt_time(r.summary.p90_s),
            throughput: fmt_rate(r.throughput_bps),
            ratio: r.ratio.map(|x| format!("{x:.2}x")),
        })
        .collect()
}
