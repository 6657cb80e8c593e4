//! The terminal rendering of a report's tables: fixed-width columns, printed on standard
//! output at the end of a run.

use std::fmt::Write as _;

use super::model::Tables;

/// The terminal table of `t`.
pub(crate) fn render(t: &Tables<'_>) -> String {
    let mut s = String::new();
    let run = &t.run;
    let _ = writeln!(
        s,
        "proxystore bench | {} x{} | {} | load {} -> {} | {:.0}s",
        run.cpu_model,
        run.cpu_count,
        run.mem_total,
        run.loadavg_start,
        run.loadavg_end,
        run.total_wall_s
    );
    let _ = writeln!(
        s,
        "cells: median time (ratio to the connector's baseline, same size, same run; <1 = faster)"
    );
    for table in &t.connectors {
        let _ = writeln!(
            s,
            "\n=== {} (baseline: raw {}) ===",
            table.connector, table.baseline_ops
        );
        let _ = write!(s, "{:<20}", "op");
        for size in &t.sizes {
            let _ = write!(s, "{size:>17}");
        }
        s.push('\n');
        for row in &table.rows {
            let _ = write!(s, "{:<20}", row.op);
            for cell in &row.cells {
                let cell = match cell {
                    Some(c) => match &c.ratio {
                        Some(x) => format!("{} {x}", c.time),
                        None => c.time.clone(),
                    },
                    None => "-".into(),
                };
                let _ = write!(s, "{cell:>17}");
            }
            s.push('\n');
        }
    }
    if !t.references.is_empty() {
        let _ = writeln!(s, "\n=== serialized proxy reference (bytes) ===");
        let _ = writeln!(
            s,
            "{:<10}{:>9}{:>10}{:>7}{:>16}",
            "connector", "postcard", "protobuf", "json", "python pickle"
        );
        for r in &t.references {
            let py = r.python_pickle.map_or("-".into(), |p| p.to_string());
            let _ = writeln!(
                s,
                "{:<10}{:>9}{:>10}{:>7}{:>16}",
                r.connector, r.postcard, r.protobuf, r.json, py
            );
        }
    }
    if !t.small.is_empty() {
        let _ = writeln!(
            s,
            "\n=== small objects (100 B): put+get pairs per second ==="
        );
        let _ = writeln!(
            s,
            "{:<12}{:>8}{:>12}{:>10}{:>10}{:>16}{:>12}",
            "connector", "clients", "pairs/s", "put", "get", "vs baseline", "Python"
        );
        for r in &t.small {
            let _ = writeln!(
                s,
                "{:<12}{:>8}{:>12}{:>10}{:>10}{:>16}{:>12}",
                r.connector,
                r.clients,
                r.pairs_per_s,
                r.mean_put,
                r.mean_get,
                r.vs_baseline,
                r.python
            );
        }
    }
    if !t.rss.is_empty() {
        let _ = writeln!(s, "\n=== peak RSS (VmHWM of a child process) ===");
        for r in &t.rss {
            let raw = r
                .raw
                .as_ref()
                .map(|(p, g)| format!("; raw client write {p}, read {g}"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "{:<8} {}: put {}, resolve {}, idle {}{raw}",
                r.connector, r.size, r.put, r.resolve, r.idle
            );
        }
    }
    if !t.core.is_empty() {
        let _ = writeln!(
            s,
            "\n=== core: first resolve of 1 MiB over file per digest; digests; what tracing costs a resolve ==="
        );
        for r in &t.core {
            let _ = writeln!(
                s,
                "{:<8}{:<28}{:>8}{:>10}  [{}..{}] {}{}",
                r.connector,
                r.op,
                r.size,
                r.median,
                r.p10,
                r.p90,
                r.throughput,
                r.ratio
                    .as_ref()
                    .map(|x| format!(
                        "  {x} {}",
                        if r.connector == "memory" {
                            "by hand"
                        } else {
                            "raw read"
                        }
                    ))
                    .unwrap_or_default()
            );
        }
    }
    if !t.comparison.is_empty() {
        let _ = writeln!(
            s,
            "\n=== against Python ProxyStore (speedup = Python's time / ours) ==="
        );
        let _ = write!(s, "{:<26}", "connector/op");
        for size in &t.sizes {
            let _ = write!(s, "{size:>10}");
        }
        s.push('\n');
        for row in &t.comparison {
            let _ = write!(s, "{:<26}", format!("{}/{}", row.connector, row.op));
            for cell in &row.cells {
                let cell = cell.as_ref().map_or("-", |c| c.speedup.as_str());
                let _ = write!(s, "{cell:>10}");
            }
            s.push('\n');
        }
    }
    let _ = writeln!(s, "\n=== targets ===");
    for target in t.targets {
        let _ = writeln!(
            s,
            "[{}] #{} {}: {}",
            match target.met {
                Some(true) => "met ",
                Some(false) => "MISS",
                None => " -- ",
            },
            target.issue,
            target.target,
            target.measured
        );
    }
    if !t.errors.is_empty() {
        let _ = writeln!(s, "\nerrors:");
        for e in t.errors {
            let _ = writeln!(s, "  - {e}");
        }
    }
    s
}
