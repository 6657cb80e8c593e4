//! 100 tasks with 10 MiB arguments through apalis-redis: with the plugin, and without it using
//! apalis's default JSON codec and a MessagePack codec. Prints end-to-end time and redis-server
//! peak memory for each, and the ratios.
//!
//! `cargo bench -p proxystore-apalis --bench apalis`; `BENCH_TASKS` and `BENCH_MIB` change the
//! shape. Each configuration gets a fresh redis-server (so `used_memory_peak` is its own). The
//! producer and the worker run in this process, on separate connections, at the same time;
//! both use `proxystore_apalis::connect` (long response timeout) and `PollEvery` (no heartbeat
//! stalls), without which the baselines fail or stall. The plugin's store is the file
//! connector in a temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use apalis_codec::msgpack::MsgPackCodec;
use apalis_core::backend::TaskSink;
use apalis_core::backend::ext::BackendExt;
use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_redis::RedisStorage;
use proxystore::connector::file::FileConnector;
use proxystore::{Key, Store};
use proxystore_apalis::{PollEvery, ProxyCodec, resolve};
use proxystore_middleware::{ArgumentPolicy, TaskCodec};
use proxystore_tests::redis_server::RedisServer;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

mod common;
use common::{config, env_num, used_memory_peak, values};

#[derive(Serialize, Deserialize)]
struct Job {
    index: u32,
    values: Vec<f64>,
}

async fn sum(job: Job, done: Data<mpsc::UnboundedSender<(u32, f64)>>) -> Result<f64, BoxDynError> {
    let s: f64 = job.values.iter().sum();
    done.send((job.index, s))?;
    Ok(s)
}

struct Run {
    name: &'static str,
    elapsed: Duration,
    peak: u64,
    largest_job: u64,
}

fn jobs(tasks: usize, len: usize) -> impl Iterator<Item = Job> {
    (0..tasks as u32).map(move |index| Job {
        index,
        values: values(index, len),
    })
}

/// The size in bytes of the largest job in an apalis-redis data hash.
async fn largest_job(conn: &mut apalis_redis::ConnectionManager, data_hash: &str) -> u64 {
    let ids: Vec<String> = redis::cmd("HKEYS")
        .arg(data_hash)
        .query_async(conn)
        .await
        .unwrap();
    let mut largest = 0;
    for id in ids {
        let len: u64 = redis::cmd("HSTRLEN")
            .arg(data_hash)
            .arg(&id)
            .query_async(conn)
            .await
            .unwrap();
        largest = largest.max(len);
    }
    largest
}

async fn wait_results(rx: &mut mpsc::UnboundedReceiver<(u32, f64)>, tasks: usize) {
    for _ in 0..tasks {
        tokio::time::timeout(Duration::from_secs(600), rx.recv())
            .await
            .expect("a result within 10 minutes")
            .expect("the worker is alive");
    }
}

/// One configuration: a fresh server, a worker, 100 pushes, 100 results.
macro_rules! run {
    ($name:expr, $tasks:expr, $len:expr, $codec:expr, $build:expr) => {{
        let redis = RedisServer::start().unwrap();
        let url = redis.url();
        let queue = "bench";
        let conn = proxystore_apalis::connect(&url).await.unwrap();
        let mut producer = RedisStorage::<Job>::new(conn)
            .with_config(config(queue))
            .with_codec($codec);
        let storage = RedisStorage::<Job>::new(proxystore_apalis::connect(&url).await.unwrap())
            .with_config(config(queue))
            .with_codec($codec)
            .poll_with_strategy(PollEvery::millis(20));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let worker = WorkerBuilder::new(format!("bench-{}", $name))
            .backend(storage)
            .data(tx)
            .build($build);
        let worker = tokio::spawn(worker.run_until(async move {
            let _ = stop_rx.await;
            Ok::<_, std::io::Error>(())
        }));
        let start = Instant::now();
        for job in jobs($tasks, $len) {
            producer.push(job).await.unwrap();
        }
        wait_results(&mut rx, $tasks).await;
        let elapsed = start.elapsed();
        stop_tx.send(()).unwrap();
        worker.await.unwrap().unwrap();
        let mut c = proxystore_apalis::connect(&url).await.unwrap();
        let largest = largest_job(&mut c, &config(queue).job_data_hash()).await;
        let peak = used_memory_peak(&url).await;
        drop(redis);
        Run {
            name: $name,
            elapsed,
            peak,
            largest_job: largest,
        }
    }};
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; a filter that excludes us ends the run.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"apalis".contains(a.as_str()))
    {
        return;
    }
    let tasks = env_num("BENCH_TASKS", 100);
    let mib = env_num("BENCH_MIB", 10);
    let len = mib * 1024 * 1024 / 8;
    println!("{tasks} tasks, each with {mib} MiB of f64 ({len} values), through apalis-redis");

    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        format!("bench-{}", Key::random()),
        FileConnector::new(dir.path()).unwrap(),
    );
    proxystore::register_store(&store).unwrap();
    let codec = ProxyCodec::new(
        TaskCodec::new(ArgumentPolicy::with_store(store.name())).with_store(store.clone()),
    );

    let plugin = run!(
        "plugin (file store)",
        tasks,
        len,
        codec.clone(),
        resolve(sum)
    );
    let left = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(left, 0, "the plugin left objects in the store");
    let msgpack = run!("MessagePack codec", tasks, len, MsgPackCodec, sum);
    let json = run!(
        "JSON codec (default)",
        tasks,
        len,
        apalis_codec::json::JsonCodec::<Vec<u8>>::default(),
        sum
    );

    let mib_of = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!();
    println!(
        "{:<22} {:>12} {:>18} {:>16}",
        "configuration", "end-to-end", "redis peak memory", "largest job"
    );
    for r in [&plugin, &msgpack, &json] {
        println!(
            "{:<22} {:>10.2} s {:>14.1} MiB {:>14} B",
            r.name,
            r.elapsed.as_secs_f64(),
            mib_of(r.peak),
            r.largest_job
        );
    }
    let stronger = if msgpack.elapsed <= json.elapsed {
        &msgpack
    } else {
        &json
    };
    println!();
    for base in [&msgpack, &json] {
        println!(
            "plugin vs {:<20} time {:>6.1}x less, redis memory {:>7.1}x less{}",
            base.name,
            base.elapsed.as_secs_f64() / plugin.elapsed.as_secs_f64(),
            base.peak as f64 / plugin.peak as f64,
            if std::ptr::eq(base, stronger) {
                "  (stronger baseline)"
            } else {
                ""
            }
        );
    }
}
