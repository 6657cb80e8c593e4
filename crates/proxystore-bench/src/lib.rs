//! The benchmark harness behind `proxystore bench`: latency, throughput, small-object rate,
//! reference size and peak memory of every connector, each next to the raw client of its
//! backend measured in the same run, and, with Python, next to Python ProxyStore measured
//! against the same servers.
//!
//! A run starts the servers it needs on loopback (redis-server, an in-process S3 server, the
//! embedded gRPC store service) unless given their addresses, runs children of the current
//! executable for first resolves in fresh processes and for peak memory, prints a table of
//! ratios, and writes JSON, a Markdown report and (through `scripts/bench_plots.py`) plots.
//!
//! The public surface is [`Options`] and [`run`], and the children's side: [`Child`] and
//! [`run_child`]. The command line is the caller's (`proxystore bench` in proxystore-cli).
//! Inside:
//!
//! | concern | module |
//! |---|---|
//! | the options of a run | `options` |
//! | the child processes a run starts, both sides of their command line | `child` |
//! | the servers started on loopback | `servers` |
//! | the raw clients each connector is compared with | `baselines` |
//! | the connectors under test, with their servers and raw clients | `setup` |
//! | what is measured, in which order, and how often | `measure` |
//! | Python ProxyStore's benchmark and the plotting script | `python` |
//! | the machine and the time of a run | `machine` |
//! | units of durations, rates, sizes and ratios | `format` |
//! | the report: figures and targets (JSON), its tables, text and Markdown renderers | `report` |
//! | distributed futures against Python ProxyStore's (`proxystore bench futures`) | `futures` |
//! | streams of proxies against Python ProxyStore's, a raw Redis list and the store alone (`proxystore bench streams`) | `streams` |
//! | service replicas over a shared backend (Redis Cluster, S3) against its raw client (`proxystore bench scale`) | `scale` |

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

mod baselines;
mod child;
mod format;
pub mod futures;
mod machine;
mod measure;
mod options;
mod python;
mod report;
pub mod scale;
mod servers;
mod setup;
pub mod streams;

pub use child::{Child, run_child};
pub use measure::rss::RssOp;
pub use options::{ConnectorName, Options};
pub use servers::S3_BUCKET;

use measure::repeat::Repeat;

/// Run a benchmark: measure, print the table on standard output, write the files `options`
/// ask for.
///
/// The run starts children of the current executable as `<exe> bench <child> ...`: the binary
/// that calls this must mount [`Child`] as a subcommand of its subcommand `bench`, and hand
/// it to [`run_child`] (as `proxystore bench` does).
///
/// # Errors
/// When a size does not parse, a server cannot start or an output cannot be written; failed
/// measurements are listed in the report instead.
pub fn run(options: Options) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; measure with `cargo run --release -p proxystore-cli -- bench`"
        );
    }
    let wall = Instant::now();
    let mut sizes = format::parse_sizes(&options.sizes)?;
    if options.gib {
        sizes.push(1 << 30);
    }
    sizes.sort_unstable();
    sizes.dedup();
    let rss_size = proxystore_server::parse_size(&options.rss_size).map_err(anyhow::Error::msg)?;
    let repeat = Repeat {
        min_time: Duration::from_secs_f64(options.min_time),
        min_reps: options.min_reps.max(1),
        max_reps: options.max_reps.max(1),
        fixed: options.repeat,
        wall_cap: Duration::from_secs_f64((3.0 * options.min_time).max(1.0)),
    };
    let mut names = options.connectors.clone();
    names.sort_unstable();
    names.dedup();

    let load_before = machine::loadavg();
    // The measurements run in a task of a runtime of the harness's own, as a user's task runs
    // on the user's runtime (two workers, one per core here), not on the library's I/O
    // runtime: a connector that hops there pays for it in the figures, as it does for users.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench")
        .enable_all()
        .build()
        .context("start the bench runtime")?;
    let setup = setup::setup(&options, &names, runtime.handle())?;
    let env = machine::environment(&setup.work, setup.redis_port);
    eprintln!(
        "[bench] {} on {} ({} cores, load {}); files in {}",
        names
            .iter()
            .map(|n| n.label())
            .collect::<Vec<_>>()
            .join(","),
        env["cpu_model"].as_str().unwrap_or("?"),
        env["cpu_count"],
        load_before,
        setup.work.display()
    );

    let mut out = report::Report::new(&options, &sizes, env);
    out.environment["loadavg_start"] = load_before.into();
    // In a task, not in `block_on`: a future that `block_on` drives from a thread outside the
    // runtime is woken across threads on every reply: 100 B Redis put+get pairs ran 6-7k/s
    // that way against 40-50k/s from a task, for the redis crate alone, which hid every
    // connector's own cost behind the harness's.
    let (setup, mut out) = {
        let (options, sizes) = (options.clone(), sizes.clone());
        runtime.block_on(async move {
            tokio::spawn(async move {
                measure::measure_all(&options, &setup, &sizes, rss_size, &repeat, &mut out).await;
                (setup, out)
            })
            .await
        })?
    };

    if options.python {
        let py_sizes: Vec<u64> = sizes.iter().copied().filter(|s| *s <= 100 << 20).collect();
        match python::run(
            &options.python_bin,
            &options.python_script,
            setup.redis_port,
            &setup.work,
            &py_sizes,
            options.min_time,
        ) {
            Ok(v) => out.python = Some(v),
            Err(e) => out.errors.push(format!("python: {e:#}")),
        }
    }
    out.environment["loadavg_end"] = machine::loadavg().into();
    out.total_wall_s = wall.elapsed().as_secs_f64();
    out.finish();

    println!("{}", out.table());
    if let Some(path) = &options.json {
        write(path, &serde_json::to_vec_pretty(&out)?)?;
        eprintln!("[bench] wrote {}", path.display());
    }
    let md = out.markdown(options.plots.as_deref(), options.update_doc.as_deref());
    if let Some(path) = &options.markdown {
        write(path, md.as_bytes())?;
    }
    if let Some(doc) = &options.update_doc {
        report::update_doc(doc, &md)?;
        eprintln!("[bench] updated {}", doc.display());
    }
    if let Some(dir) = &options.plots {
        let Some(json) = &options.json else {
            bail!("--plots needs --json (the plotting script reads it)");
        };
        python::plots(&options.python_bin, &options.plot_script, json, dir)?;
    }
    if !out.errors.is_empty() {
        eprintln!("[bench] {} measurement(s) failed:", out.errors.len());
        for e in &out.errors {
            eprintln!("  - {e}");
        }
    }
    drop(setup);
    Ok(())
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, data).with_context(|| format!("write {}", path.display()))
}
