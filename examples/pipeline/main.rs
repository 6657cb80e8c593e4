//! Map-reduce over large arrays on apalis-redis, with the arguments moved by ProxyStore.
//!
//! A producer splits a large array of sensor readings into chunks of 8 MiB and pushes one map
//! task per chunk; a worker computes each chunk's histogram; the histograms are reduced to the
//! distribution of the whole array. Each task also carries last week's readings of the same
//! sensor, which the worker only looks at when a chunk drifts.
//!
//! The task types and the task function are plain apalis; the plugin adds two things: a codec
//! on the storage (`with_codec(ProxyCodec::new(..))`), which puts every argument above 100 kB
//! into the store and sends Redis a reference, and `resolve(..)` around the task function,
//! which fetches them back (inside the task, so that a store failure is a retried task failure)
//! and evicts them when the task is done.
//!
//! Run with `cargo run -p proxystore-examples --bin pipeline` (starts its own redis-server
//! unless `REDIS_URL` is set). With `OTEL_EXPORTER_OTLP_ENDPOINT` set, each task's trace
//! (encode, puts, the task with its resolves and evictions) goes to that OTLP collector.

mod local_redis;

use std::time::{Duration, Instant};

use apalis_core::backend::TaskSink;
use apalis_core::backend::ext::BackendExt;
use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_redis::{Config, RedisStorage};
use proxystore::connector::file::FileConnector;
use proxystore::{Proxy, Store, register_store};
use proxystore_apalis::{PollEvery, ProxyCodec, resolve};
use proxystore_middleware::{ArgumentPolicy, TaskCodec};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::local_redis::{LocalRedis, delete_queue, largest_job};

const CHUNKS: u32 = 12;
const CHUNK_LEN: usize = 1 << 20; // 1 Mi readings = 8 MiB per chunk
const BINS: usize = 32;

/// A map task as the producer sends it.
#[derive(Serialize, Deserialize)]
struct Readings {
    sensor: u32,
    values: Vec<f64>,
    last_week: Vec<f64>,
}

/// The same task as the worker declares it: `last_week` stays a lazy proxy (fetched only if
/// used); `values` is resolved before the function runs.
#[derive(Serialize, Deserialize)]
struct ReadingsJob {
    sensor: u32,
    values: Vec<f64>,
    last_week: Proxy<Vec<f64>>,
}

/// What a map task returns.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Histogram {
    sensor: u32,
    counts: Vec<u64>,
    drift: Option<f64>,
}

/// Readings in [0, 1): a deterministic pseudo-random stream per sensor; some sensors drift.
fn readings(sensor: u32, seed: u64) -> Vec<f64> {
    let mut x = ((u64::from(sensor) << 32) | seed) | 1;
    let drift = if seed == 0 && sensor % 5 == 3 {
        0.3
    } else {
        0.0
    };
    (0..CHUNK_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            // Squared uniforms drifted toward 1 by some sensors, clamped to [0, 1).
            (u * u + drift).min(0.999_999)
        })
        .collect()
}

fn histogram(values: &[f64]) -> Vec<u64> {
    let mut counts = vec![0u64; BINS];
    for v in values {
        counts[((v * BINS as f64) as usize).min(BINS - 1)] += 1;
    }
    counts
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// The map task: an ordinary apalis task function.
async fn map(
    job: ReadingsJob,
    out: Data<mpsc::UnboundedSender<Histogram>>,
) -> Result<Histogram, BoxDynError> {
    let this_week = mean(&job.values);
    // Expected mean of squared uniforms is 1/3; only a drifting sensor is compared with last
    // week, so most `last_week` arguments are never fetched.
    let drift = if (this_week - 1.0 / 3.0).abs() > 0.1 {
        let last_week = job.last_week.resolve().await?;
        Some(this_week - mean(last_week))
    } else {
        None
    };
    let h = Histogram {
        sensor: job.sensor,
        counts: histogram(&job.values),
        drift,
    };
    out.send(h.clone())?;
    Ok(h)
}

#[tokio::main]
async fn main() -> Result<(), BoxDynError> {
    let _telemetry = proxystore_telemetry::init("pipeline")?;
    // Redis: the one in REDIS_URL, or a throwaway local redis-server.
    let local;
    let url = match std::env::var("REDIS_URL") {
        Ok(url) => url,
        Err(_) => {
            local = LocalRedis::start()?;
            local.url()
        }
    };

    // The store both sides reach (here a directory; a gRPC, Redis or S3 store in a cluster).
    let dir = tempfile::tempdir()?;
    let store = Store::new("pipeline", FileConnector::new(dir.path())?);
    register_store(&store)?;
    // Arguments above 100 kB go to the store; the policy could also pick stores by glob.
    let codec = ProxyCodec::new(TaskCodec::new(ArgumentPolicy::with_store("pipeline")))
        .with_lease(Duration::from_secs(3600));
    let config = Config::default().queue(format!("pipeline{}", std::process::id()));

    // Worker: the storage with the codec, the task function wrapped in `resolve`.
    let (tx, mut rx) = mpsc::unbounded_channel::<Histogram>();
    let worker_storage = RedisStorage::<ReadingsJob>::new(proxystore_apalis::connect(&url).await?)
        .with_config(config.clone())
        .with_codec(codec.clone())
        .poll_with_strategy(PollEvery::millis(50));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = WorkerBuilder::new("pipeline-worker")
        .backend(worker_storage)
        .data(tx)
        .build(resolve(map));
    let worker = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
        Ok::<_, std::io::Error>(())
    }));

    // Producer: push one task per chunk, exactly as without the plugin.
    let start = Instant::now();
    let mut producer = RedisStorage::<Readings>::new(proxystore_apalis::connect(&url).await?)
        .with_config(config.clone())
        .with_codec(codec.clone());
    let mut expected = vec![0u64; BINS];
    for sensor in 0..CHUNKS {
        let values = readings(sensor, 0);
        for (e, c) in expected.iter_mut().zip(histogram(&values)) {
            *e += c;
        }
        producer
            .push(Readings {
                sensor,
                values,
                last_week: readings(sensor, 1),
            })
            .await?;
    }

    // Reduce.
    let mut total = vec![0u64; BINS];
    let mut drifting = Vec::new();
    for _ in 0..CHUNKS {
        let h = tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await?
            .ok_or("the worker stopped")?;
        for (t, c) in total.iter_mut().zip(&h.counts) {
            *t += c;
        }
        if let Some(d) = h.drift {
            drifting.push((h.sensor, d));
        }
    }
    let elapsed = start.elapsed();
    let _ = stop.send(());
    worker.await??;

    drifting.sort_by_key(|d| d.0);
    let n: u64 = total.iter().sum();
    let median_bin = total
        .iter()
        .scan(0u64, |acc, c| {
            *acc += c;
            Some(*acc)
        })
        .position(|acc| acc * 2 >= n)
        .unwrap_or(0);
    let stats = codec.stats();
    let mut conn = proxystore_apalis::connect(&url).await?;
    let largest = largest_job(&mut conn, &config.job_data_hash()).await?;
    let left = std::fs::read_dir(dir.path())?.count();

    println!(
        "readings: {n} in {CHUNKS} chunks of {} MiB",
        (CHUNK_LEN * 8) >> 20
    );
    println!(
        "median bin: {median_bin} of {BINS} ([{:.3}, {:.3}))",
        median_bin as f64 / BINS as f64,
        (median_bin + 1) as f64 / BINS as f64
    );
    for (sensor, d) in &drifting {
        println!("sensor {sensor} drifted by {d:+.3} since last week");
    }
    println!(
        "histogram: {}",
        if total == expected {
            "correct"
        } else {
            "WRONG"
        }
    );
    println!(
        "through Redis: {} B (largest job {largest} B); through the store: {:.1} MiB",
        stats.bytes_inline,
        stats.bytes_proxied as f64 / (1024.0 * 1024.0)
    );
    println!(
        "last-week arguments never fetched: {} of {CHUNKS}",
        stats.refs_lazy - drifting.len() as u64
    );
    println!("objects left in the store: {left}");
    println!("time: {elapsed:.2?}");
    if total != expected || left != 0 {
        return Err("the pipeline went wrong".into());
    }
    delete_queue(&mut conn, config.queue.as_ref()).await?;
    Ok(())
}
