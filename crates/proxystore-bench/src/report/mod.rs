//! The report of a run. [`Report`] is its model: every figure, with its ratio to its
//! baseline, the comparison with Python ProxyStore ([`comparison`]) and the targets of the
//! issues with their measured values ([`targets`]), all computed once by
//! [`Report::finish`]; written as JSON as it is, and read back from it. Its tables are
//! computed once from it into a [`model::Tables`], which the terminal ([`text`]) and
//! Markdown ([`markdown`]) renderers only lay out.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::baselines::{RawKind, baselines};
use crate::machine::utc_now;
use crate::measure::rss::RssRow;
use crate::measure::small::SmallOps;
use crate::measure::store_ops::{RefSize, Row};
use crate::options::Options;

mod comparison;
mod markdown;
mod model;
mod targets;
mod text;

pub(crate) use comparison::Comparison;
pub(crate) use markdown::update_doc;
pub(crate) use targets::Target;

const MIB: u64 = 1 << 20;

/// Everything one run measured (the JSON report, schema `proxystore_rs_bench/v1`).
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

impl Report {
    /// An empty report of a run with `options` at `sizes`, started now.
    pub(crate) fn new(options: &Options, sizes: &[u64], environment: Value) -> Self {
        Report {
            schema: "proxystore_rs_bench/v1".into(),
            timestamp_utc: utc_now(),
            command: std::env::args().collect(),
            environment,
            config: json!({
                "sizes_bytes": sizes,
                "connectors": options.connectors.iter().map(|n| n.label()).collect::<Vec<_>>(),
                "min_time_s": options.min_time,
                "min_reps": options.min_reps,
                "max_reps": options.max_reps,
                "repeat": options.repeat,
                "fresh_processes": options.processes,
                "small_seconds": options.small_seconds,
                "clients": options.clients,
                "rss": options.rss,
                "rss_size": options.rss_size,
                // The Redis baseline's SETs of this many bytes and more are plain writes.
                "redis_plain_set_bytes": crate::baselines::PLAIN_SET_BYTES,
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
        attach_baselines(&mut self.core, &BTreeMap::from([("file", RawKind::Fs)]));
        let small = self.small_ops.clone();
        for s in self.small_ops.iter_mut().filter(|s| s.ratio.is_none()) {
            let Some(kind) = b.get(s.connector.as_str()) else {
                continue;
            };
            if *kind == RawKind::Memcpy {
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

    /// The row of `op` on `connector` at `size`, among the results and the core figures.
    pub(crate) fn row(&self, connector: &str, op: &str, size: u64) -> Option<&Row> {
        self.results
            .iter()
            .chain(&self.core)
            .find(|r| r.connector == connector && r.op == op && r.size_bytes == size)
    }

    /// The small-object loop of `connector` (or raw client) with `clients` clients.
    pub(crate) fn small(&self, connector: &str, clients: usize) -> Option<&SmallOps> {
        self.small_ops
            .iter()
            .find(|r| r.connector == connector && r.clients == clients)
    }

    /// The terminal table.
    pub(crate) fn table(&self) -> String {
        text::render(&model::Tables::of(self))
    }

    /// The generated Markdown report (what `--update-doc` splices into the document), its
    /// plots in `plots` linked relative to the document `doc`.
    pub(crate) fn markdown(&self, plots: Option<&Path>, doc: Option<&Path>) -> String {
        markdown::render(&model::Tables::of(self), plots, doc)
    }

    /// Connectors in the order of the results, the raw baselines last.
    pub(crate) fn connectors_in_results(&self) -> Vec<String> {
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

    /// Operations of `conn` in the order of the results.
    pub(crate) fn ops_of(&self, conn: &str) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for r in self.results.iter().filter(|r| r.connector == conn) {
            if !v.contains(&r.op) {
                v.push(r.op.clone());
            }
        }
        v
    }

    /// The command line of the run, as `proxystore bench ...`.
    pub(crate) fn command_line(&self) -> String {
        let mut v: Vec<String> = self.command.clone();
        if let Some(first) = v.first_mut() {
            "proxystore".clone_into(first);
        }
        v.join(" ")
    }
}

/// The baseline op each store op is compared with.
fn baseline_op(kind: RawKind, op: &str) -> &'static str {
    let (write, read) = kind.ops();
    match op {
        "put" | "proxy_create" | "connector_put" => write,
        _ => read,
    }
}

/// Fill in `baseline` and `ratio` of the non-raw rows that have none yet (those measured
/// without a paired baseline) from the raw rows of the same size.
fn attach_baselines(rows: &mut [Row], baselines: &BTreeMap<&str, RawKind>) {
    let raw: BTreeMap<(String, u64), f64> = rows
        .iter()
        .filter(|r| r.connector == "raw")
        .map(|r| ((r.op.clone(), r.size_bytes), r.summary.median_s))
        .collect();
    for r in rows
        .iter_mut()
        .filter(|r| r.connector != "raw" && r.ratio.is_none())
    {
        let Some(kind) = baselines.get(r.connector.as_str()) else {
            continue;
        };
        let op = baseline_op(*kind, &r.op);
        r.baseline = Some(format!("raw/{op}"));
        r.ratio = raw
            .get(&(op.to_owned(), r.size_bytes))
            .map(|b| r.summary.median_s / b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
