//! What a run measures, in which order: reference sizes; per object size, every store
//! operation paired with its raw baseline and first resolves in fresh processes; the digest
//! checks; the small-object loops; peak memory.

use std::time::Instant;

use crate::format::fmt_size;
use crate::options::Options;
use crate::report::Report;
use crate::setup::Setup;

pub(crate) mod digests;
pub(crate) mod fresh_process;
pub(crate) mod repeat;
pub(crate) mod rss;
pub(crate) mod small;
pub(crate) mod store_ops;
pub(crate) mod tracing_cost;

use repeat::Repeat;
use store_ops::Stores;

/// The subcommand under which the calling binary mounts the benchmark, and so the first
/// argument of every child process a measurement starts (see [`crate::child`]).
pub(crate) const SUBCOMMAND: &str = "bench";

/// How many proxies each fresh child resolves: a few, within about 64 MiB per child.
fn per_process(size: u64) -> usize {
    ((64u64 << 20) / size.max(1)).clamp(1, 4) as usize
}

/// Measure everything `options` ask for into `out`; failed measurements go to its errors.
pub(crate) async fn measure_all(
    options: &Options,
    setup: &Setup,
    sizes: &[u64],
    rss_size: u64,
    repeat: &Repeat,
    out: &mut Report,
) {
    let mut stores = Vec::new();
    for s in &setup.subjects {
        match Stores::new(s) {
            Ok(st) => stores.push(Some(st)),
            Err(e) => {
                out.errors.push(format!("{}: stores: {e:#}", s.name));
                stores.push(None);
            }
        }
    }
    for (s, st) in setup.subjects.iter().zip(&stores) {
        let Some(st) = st else { continue };
        match store_ops::ref_size(s, st).await {
            Ok(r) => out.reference_sizes.push(r),
            Err(e) => out
                .errors
                .push(format!("{}: reference size: {e:#}", s.name)),
        }
    }

    for &size in sizes {
        eprintln!("[bench] size {}", fmt_size(size));
        let payload = rss::payload(usize::try_from(size).unwrap_or(usize::MAX), size);
        // Big objects: fewer repetitions, so that a run stays within minutes.
        let rep = if size >= 1 << 30 {
            repeat.at_most(3)
        } else {
            *repeat
        };
        let mut raw_done = Vec::new();
        for (s, st) in setup.subjects.iter().zip(&stores) {
            let Some(st) = st else { continue };
            let t = Instant::now();
            match store_ops::store_ops(s, st, &payload, &rep, &setup.raw).await {
                Ok((rows, raw_rows)) => {
                    out.results.extend(rows);
                    // Baseline rows from the first connector compared with that baseline.
                    if !raw_done.contains(&s.baseline) {
                        raw_done.push(s.baseline);
                        out.results.extend(raw_rows);
                    }
                }
                Err(e) => out
                    .errors
                    .push(format!("{} {}: {e:#}", s.name, fmt_size(size))),
            }
            if s.cross_process && options.processes > 0 {
                let procs = if size >= 1 << 30 {
                    2
                } else {
                    options.processes
                };
                match fresh_process::fresh_process(
                    s,
                    st,
                    &payload,
                    procs,
                    per_process(size),
                    &setup.work,
                )
                .await
                {
                    Ok(rows) => out.results.extend(rows),
                    Err(e) => out.errors.push(format!(
                        "{} {} fresh-process resolve: {e:#}",
                        s.name,
                        fmt_size(size)
                    )),
                }
            }
            eprintln!("[bench]   {}: {:.1}s", s.name, t.elapsed().as_secs_f64());
        }
    }

    if setup.subjects.iter().any(|s| s.name == "file") {
        eprintln!("[bench] core: first resolve per digest, digest throughput");
        match digests::core_checks(&setup.raw, repeat).await {
            Ok(rows) => out.core.extend(rows),
            Err(e) => out.errors.push(format!("core: {e:#}")),
        }
    }

    if !options.skip_small {
        eprintln!("[bench] small objects (100 B)");
        let mut raw_done = Vec::new();
        for (s, st) in setup.subjects.iter().zip(&stores) {
            let Some(st) = st else { continue };
            for &clients in &options.clients {
                match small::store_and_baseline(options.small_seconds, setup, s, &st.cold, clients)
                    .await
                {
                    Ok(small::Measured { ours, raw, limit }) => {
                        out.small_ops.push(ours);
                        if let Some(b) = raw
                            && !raw_done.contains(&(s.baseline, clients))
                        {
                            raw_done.push((s.baseline, clients));
                            out.small_ops.push(b);
                        }
                        out.small_ops.extend(limit);
                    }
                    Err(e) => out
                        .errors
                        .push(format!("small {} x{clients}: {e:#}", s.name)),
                }
            }
        }
    }

    if options.rss {
        for s in &setup.subjects {
            eprintln!("[bench] peak RSS: {} {}", s.name, fmt_size(rss_size));
            match rss::measure(s, rss_size, &setup.work).await {
                Ok(r) => out.rss.push(r),
                Err(e) => out.errors.push(format!("rss {}: {e:#}", s.name)),
            }
        }
    }
    for (s, st) in setup.subjects.iter().zip(&stores) {
        if st.is_some() {
            proxystore::unregister_store(&format!("bench-{}-cold", s.name));
        }
    }

    // Last: it rebuilds `tracing`'s interest cache.
    if setup.subjects.iter().any(|s| s.name == "memory") {
        eprintln!("[bench] tracing: a 1 MiB resolve by hand, traced without export, with OTLP");
        match tokio::task::spawn_blocking(tracing_cost::measure).await {
            Ok(Ok(rows)) => out.core.extend(rows),
            Ok(Err(e)) => out.errors.push(format!("tracing: {e:#}")),
            Err(e) => out.errors.push(format!("tracing: {e}")),
        }
    }
}
