//! `proxystore demo`: the README's main job.
//!
//! A map-reduce workflow over large arrays. A producer enqueues tasks whose arguments are a
//! multi-megabyte array (a plain `Vec<f64>` field: proxied automatically by the size policy)
//! and a calibration table that only some tasks use (an explicit `Proxy<Vec<f64>>` field:
//! lazy, never fetched by the tasks that do not touch it). Workers take task documents from a
//! broker, run them with their usual argument types, and the objects of each task are evicted
//! when it finishes. Each map task returns its calibrated array, as large as its input: the
//! same policy proxies it at `map/return`, so the result document the worker sends back is
//! small too, and the reducer reads the array from the store (evicted once read). The summary
//! shows what went through the broker, for arguments and for results, and what through the
//! store.
//!
//! By default everything is embedded: the gRPC store service runs in this process on a free
//! loopback port, and the broker is an in-process queue that carries encoded task documents
//! (bytes), exactly as a networked broker would. With `--redis URL` the pipeline of the
//! [`apalis`] module runs instead, on apalis-redis through the `proxystore-apalis` plugin.
//!
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the run is one trace under a `proxystore demo` span:
//! each task's encode (with the puts of its arguments and their gRPC calls), the task itself as
//! a child of its encode (with the resolves, transfers and evictions, and the encode of its
//! result), the reducer's read of each result (`reduce`), and the server's spans.

mod apalis;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use proxystore::lifetime::Scope;
use proxystore::{Proxy, Store};
use proxystore_middleware::{ArgumentPolicyConfig, TaskCodec};
use proxystore_server::{ServerConfig, spawn};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

/// Options of `proxystore demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Number of map tasks.
    #[arg(long, default_value_t = 32, env = "PROXYSTORE_DEMO_TASKS")]
    tasks: u32,
    /// Size of each task's array argument, in MiB.
    #[arg(long, default_value_t = 8, env = "PROXYSTORE_DEMO_MIB")]
    mib: u32,
    /// Concurrent workers.
    #[arg(long, default_value_t = 4)]
    workers: u32,
    /// Arguments whose encoded size exceeds this many bytes travel as proxies.
    #[arg(long, default_value_t = proxystore_middleware::DEFAULT_THRESHOLD)]
    threshold: u64,
    /// Run the same kind of pipeline on apalis with Redis as the broker (e.g.
    /// redis://127.0.0.1:6379) instead of the in-process broker.
    #[arg(long, env = "PROXYSTORE_DEMO_REDIS", value_name = "URL")]
    redis: Option<String>,
    /// Hide the progress bar (for logs and tests).
    #[arg(long)]
    quiet: bool,
}

/// What a map task receives. Consumer code uses plain types; the size policy decides what
/// travels by reference.
#[derive(Serialize, Deserialize)]
struct MapTask {
    chunk: u32,
    /// Large: proxied automatically, resolved transparently when the task is decoded.
    samples: Vec<f64>,
    /// Shared by all tasks, used by some: a lazy proxy, fetched only where used.
    calibration: Proxy<Vec<f64>>,
    use_calibration: bool,
    scale: f64,
}

/// What a map task returns: its chunk calibrated, as large as its input (proxied by the same
/// policy at `map/return`, read by the reducer from the store).
#[derive(Debug, Serialize, Deserialize)]
struct Calibrated {
    chunk: u32,
    values: Vec<f64>,
}

/// The task body: ordinary code over ordinary types.
fn map(task: &MapTask) -> Calibrated {
    let offset = if task.use_calibration {
        task.calibration.iter().sum::<f64>() / task.calibration.len().max(1) as f64
    } else {
        0.0
    };
    Calibrated {
        chunk: task.chunk,
        values: task
            .samples
            .iter()
            .map(|x| x * task.scale + offset)
            .collect(),
    }
}

/// The reduce step over one map result: its sum and its largest value.
fn sum_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((0.0, f64::MIN), |(s, m), &x| (s + x, m.max(x)))
}

fn samples(chunk: u32, len: usize) -> Vec<f64> {
    (0..len)
        .map(|i| ((i as u64 * 7 + chunk as u64) % 1000) as f64)
        .collect()
}

/// What went through the broker, one way and the other.
#[derive(Default)]
struct Broker {
    task_bytes: AtomicU64,
    tasks: AtomicU64,
    result_bytes: AtomicU64,
    results: AtomicU64,
}

pub(crate) fn run(args: DemoArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let span = tracing::info_span!(
        "proxystore demo",
        tasks = args.tasks,
        mib = args.mib,
        workers = args.workers
    );
    rt.block_on(run_async(args).instrument(span))
}

fn progress_bar(args: &DemoArgs) -> ProgressBar {
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(u64::from(args.tasks))
    };
    bar.set_style(
        ProgressStyle::with_template("  {bar:40} {pos}/{len} tasks {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// The pipeline on apalis-redis, through the `proxystore-apalis` plugin.
async fn run_on_apalis(args: &DemoArgs, url: &str, store: Store) -> anyhow::Result<()> {
    println!(
        "ProxyStore demo on apalis-redis ({url}): {} map tasks x {} MiB arrays, {} workers",
        args.tasks, args.mib, args.workers
    );
    let bar = progress_bar(args);
    let options = apalis::Options {
        tasks: args.tasks as usize,
        chunk_len: args.mib as usize * (1 << 20) / 8,
        workers: args.workers as usize,
        threshold: args.threshold,
        ..apalis::Options::default()
    };
    let summary = apalis::run(url, store, &options, |done, _| {
        bar.set_position(done as u64);
    })
    .await?;
    bar.finish_and_clear();
    println!("{summary}");
    anyhow::ensure!(summary.correct, "the pipeline computed a wrong result");
    anyhow::ensure!(
        summary.objects_left == 0,
        "the workflow left {} objects behind",
        summary.objects_left
    );
    Ok(())
}

async fn run_async(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let server = spawn(ServerConfig::default()).context("starting the embedded store service")?;
    let connector = server.connector()?;
    let store = Store::new("demo", connector.clone());
    proxystore::register_store(&store)?;
    if let Some(url) = &args.redis {
        run_on_apalis(&args, url, store).await?;
        server.shutdown().await?;
        return Ok(());
    }
    let codec = TaskCodec::new(
        ArgumentPolicyConfig {
            store: "demo".into(),
            threshold: args.threshold,
            ..ArgumentPolicyConfig::default()
        }
        .compile()?,
    )
    .with_store(store.clone());
    println!(
        "ProxyStore demo: {} map tasks x {} MiB arrays, {} workers",
        args.tasks, args.mib, args.workers
    );
    println!(
        "  store:  embedded gRPC store service at {} (memory backend)",
        server.url()
    );
    println!(
        "  broker: in-process queues of encoded task and result documents; policy: proxy arguments and results over {} bytes",
        args.threshold
    );

    let len = args.mib as usize * (1 << 20) / 8;
    let calibration: Vec<f64> = (0..len / 4).map(|i| (i % 10) as f64).collect();
    let workflow = Scope::new(&store);
    let calibration_mean = calibration.iter().sum::<f64>() / calibration.len().max(1) as f64;
    let calibration = workflow.proxy(&calibration).await?;

    let broker = Arc::new(Broker::default());
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(args.workers as usize * 2);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let (results_tx, mut results_rx) = tokio::sync::mpsc::unbounded_channel();

    let bar = progress_bar(&args);

    let mut workers = Vec::new();
    for _ in 0..args.workers {
        let rx = rx.clone();
        let codec = codec.clone();
        let results = results_tx.clone();
        let broker = broker.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let Some(doc) = rx.lock().await.recv().await else {
                    return Ok::<(), anyhow::Error>(());
                };
                let codec2 = codec.clone();
                // The task's span continues the trace of its encode, carried in the document.
                let span = codec.task_info(&doc)?.span();
                let task_span = span.clone();
                // Decoding resolves proxied plain fields; it may block on the store, so it
                // runs off the async workers, as the task body does.
                // The result goes back as a document too: the policy proxies the large array.
                let (result, used_calibration, proxied) = tokio::task::spawn_blocking(move || {
                    task_span.in_scope(|| {
                        let decoded = codec2.decode::<MapTask>(&doc)?;
                        let result = tracing::info_span!("map", chunk = decoded.args.chunk)
                            .in_scope(|| map(&decoded.args));
                        let used = decoded.args.calibration.is_resolved();
                        let result = codec2.encode_result("map", &result)?;
                        Ok::<_, anyhow::Error>((result.bytes, used, decoded.proxied))
                    })
                })
                .await??;
                codec.cleanup(&proxied).instrument(span.clone()).await?;
                proxystore_middleware::TaskInfo::record_outcome(&span, None);
                broker
                    .result_bytes
                    .fetch_add(result.len() as u64, Ordering::Relaxed);
                broker.results.fetch_add(1, Ordering::Relaxed);
                let _ = results.send((result, used_calibration));
            }
        }));
    }
    drop(results_tx);

    let producer = {
        let codec = codec.clone();
        let broker = broker.clone();
        let calibration = calibration.clone();
        let demo_span = tracing::Span::current();
        tokio::spawn(async move {
            for chunk in 0..args.tasks {
                let task = MapTask {
                    chunk,
                    samples: samples(chunk, len),
                    calibration: calibration.clone(),
                    use_calibration: chunk % 4 == 0,
                    scale: 0.5,
                };
                let codec = codec.clone();
                let span = demo_span.clone();
                let doc = tokio::task::spawn_blocking(move || {
                    span.in_scope(|| codec.encode("map", &task))
                })
                .await??;
                broker
                    .task_bytes
                    .fetch_add(doc.bytes.len() as u64, Ordering::Relaxed);
                broker.tasks.fetch_add(1, Ordering::Relaxed);
                tx.send(doc.bytes)
                    .await
                    .map_err(|_| anyhow::anyhow!("workers stopped"))?;
            }
            Ok::<(), anyhow::Error>(())
        })
    };

    let mut total = 0.0;
    let mut done = 0u32;
    let mut never_resolved = 0u32;
    while let Some((doc, used_calibration)) = results_rx.recv().await {
        // The reducer reads each result document: the array is fetched from the store (and
        // evicted, read once) like any proxied argument.
        let reader = codec.clone();
        let span = tracing::info_span!("reduce");
        let (chunk, sum, max) = tokio::task::spawn_blocking(move || {
            span.in_scope(|| {
                let r = reader.decode_result::<Calibrated>(&doc)?.args;
                let (sum, max) = sum_max(&r.values);
                Ok::<_, anyhow::Error>((r.chunk, sum, max))
            })
        })
        .await??;
        total += sum;
        done += 1;
        never_resolved += u32::from(!used_calibration);
        bar.inc(1);
        bar.set_message(format!("(chunk {chunk} max {max:.1})"));
    }
    producer.await??;
    for w in workers {
        w.await??;
    }
    bar.finish_and_clear();
    anyhow::ensure!(
        done == args.tasks,
        "only {done} of {} tasks finished",
        args.tasks
    );

    // Reduce, and check against the same computation done locally.
    let expected: f64 = (0..args.tasks)
        .map(|c| {
            let offset = if c % 4 == 0 { calibration_mean } else { 0.0 };
            samples(c, len)
                .iter()
                .map(|x| x * 0.5 + offset)
                .sum::<f64>()
        })
        .sum();
    anyhow::ensure!(
        (total - expected).abs() <= expected.abs() * 1e-9,
        "reduce gave {total}, expected {expected}"
    );

    workflow.close().await?;
    let stat = connector.stat().await?;
    let elapsed = started.elapsed();
    let stats = codec.stats();
    println!();
    println!("  result:                      sum = {total:.1} (checked)");
    println!("  tasks run:                   {done}");
    println!(
        "  arguments proxied:           {} (automatic, by size) + 1 shared explicit proxy",
        stats.args_proxied
    );
    println!(
        "  results proxied:             {} (automatic, by size; evicted when read)",
        stats.results_proxied
    );
    println!(
        "  bytes through the broker:    arguments {} in {} task documents",
        human(broker.task_bytes.load(Ordering::Relaxed)),
        broker.tasks.load(Ordering::Relaxed)
    );
    println!(
        "                               results   {} in {} result documents",
        human(broker.result_bytes.load(Ordering::Relaxed)),
        broker.results.load(Ordering::Relaxed)
    );
    println!(
        "  bytes through the store:     {} put (by value, the broker would have carried {})",
        human(store.metrics().put.bytes),
        human(stats.bytes_proxied + stats.result_bytes_proxied)
    );
    println!(
        "  proxies never resolved:      {never_resolved} of {} (tasks that did not use the calibration table never fetched it)",
        stats.refs_lazy
    );
    println!(
        "  objects left in the store:   {} ({} bytes)",
        stat.object_count, stat.bytes_used
    );
    println!("  time taken:                  {}", secs(elapsed));
    anyhow::ensure!(
        stat.object_count == 0,
        "the workflow left {} objects behind",
        stat.object_count
    );
    server.shutdown().await?;
    Ok(())
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}
