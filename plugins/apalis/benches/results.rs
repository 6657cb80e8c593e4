//! 100 tasks each returning a 10 MiB result through apalis-redis, read back by the producer:
//! with the plugin (the task returns `codec.proxy_result(..)`, a reference in Redis, the object
//! in a file store, evicted when read) and without it (apalis with its MessagePack codec; the
//! result goes into Redis by value). Prints end-to-end time and redis-server peak memory for
//! each, and the ratios.
//!
//! `cargo bench -p proxystore-apalis --bench results`; `BENCH_TASKS` and `BENCH_MIB` change
//! the shape. Each configuration gets a fresh redis-server. The producer pushes every task,
//! then reads each result from apalis-redis's result storage as soon as it is there (a poll of
//! the task's metadata every 20 ms) and sums it; the worker runs in this process too.

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
use proxystore::{Key, Proxy, Store};
use proxystore_apalis::{PollEvery, ProxyCodec, resolve};
use proxystore_middleware::{ArgumentPolicy, TaskCodec};
use proxystore_tests::redis_server::RedisServer;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

mod common;
use common::{config, env_num, used_memory_peak, values};

/// A task that makes `len` values: a small argument, a large result.
#[derive(Clone, Serialize, Deserialize)]
struct Make {
    index: u32,
    len: u64,
}

async fn make_plain(job: Make) -> Result<Vec<f64>, BoxDynError> {
    Ok(values(job.index, job.len as usize))
}

async fn make_proxied(job: Make, codec: Data<TaskCodec>) -> Result<Proxy<Vec<f64>>, BoxDynError> {
    let out = values(job.index, job.len as usize);
    Ok(codec.proxy_result("make", out).await?)
}

struct Run {
    name: &'static str,
    elapsed: Duration,
    peak: u64,
    largest_result: usize,
    checksum: f64,
}

/// Read every task's result as `R` from apalis-redis's result storage, as it arrives, and sum
/// it with `sum`; the largest stored result document, in bytes.
async fn read_results<R: DeserializeOwned>(
    url: &str,
    queue: &str,
    ids: &[String],
    sum: impl Fn(&R) -> f64,
) -> (f64, usize) {
    let mut conn = proxystore_apalis::connect(url).await.unwrap();
    let (mut total, mut largest) = (0.0, 0);
    for id in ids {
        let deadline = Instant::now() + Duration::from_secs(600);
        let doc: String = loop {
            let doc: Option<String> = redis::cmd("HGET")
                .arg(format!("{queue}:meta:{id}"))
                .arg("result")
                .query_async(&mut conn)
                .await
                .unwrap();
            if let Some(d) = doc {
                break d;
            }
            assert!(
                Instant::now() < deadline,
                "no result for {id} in 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        largest = largest.max(doc.len());
        let result: Result<R, String> = serde_json::from_str(&doc).unwrap();
        total += sum(&result.unwrap());
    }
    (total, largest)
}

/// One configuration: a fresh server, a worker, the pushes, every result read back.
macro_rules! run {
    ($name:expr, $tasks:expr, $len:expr, $codec:expr, $data:expr, $build:expr, $result:ty, $sum:expr) => {{
        let redis = RedisServer::start().unwrap();
        let url = redis.url();
        let queue = "bench-results";
        let mut producer =
            RedisStorage::<Make>::new(proxystore_apalis::connect(&url).await.unwrap())
                .with_config(config(queue))
                .with_codec($codec);
        let storage = RedisStorage::<Make>::new(proxystore_apalis::connect(&url).await.unwrap())
            .with_config(config(queue))
            .with_codec($codec)
            .poll_with_strategy(PollEvery::millis(20));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let worker = WorkerBuilder::new(format!("bench-{}", $name))
            .backend(storage)
            .data($data)
            .build($build);
        let worker = tokio::spawn(worker.run_until(async move {
            let _ = stop_rx.await;
            Ok::<_, std::io::Error>(())
        }));
        let start = Instant::now();
        for index in 0..$tasks as u32 {
            producer
                .push(Make {
                    index,
                    len: $len as u64,
                })
                .await
                .unwrap();
        }
        let mut conn = proxystore_apalis::connect(&url).await.unwrap();
        let ids: Vec<String> = redis::cmd("HKEYS")
            .arg(config(queue).job_data_hash())
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(ids.len(), $tasks);
        let (checksum, largest_result) = read_results::<$result>(&url, queue, &ids, $sum).await;
        let elapsed = start.elapsed();
        stop_tx.send(()).unwrap();
        worker.await.unwrap().unwrap();
        let peak = used_memory_peak(&url).await;
        drop(redis);
        Run {
            name: $name,
            elapsed,
            peak,
            largest_result,
            checksum,
        }
    }};
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; a filter that excludes us ends the run.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"results".contains(a.as_str()))
    {
        return;
    }
    let tasks = env_num("BENCH_TASKS", 100);
    let mib = env_num("BENCH_MIB", 10);
    let len = mib * 1024 * 1024 / 8;
    println!("{tasks} tasks, each returning {mib} MiB of f64 ({len} values), through apalis-redis");

    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        format!("bench-results-{}", Key::random()),
        FileConnector::new(dir.path()).unwrap(),
    );
    proxystore::register_store(&store).unwrap();
    let task_codec =
        TaskCodec::new(ArgumentPolicy::with_store(store.name())).with_store(store.clone());
    let codec = ProxyCodec::new(task_codec.clone());

    let plugin = run!(
        "plugin (file store)",
        tasks,
        len,
        codec.clone(),
        task_codec.clone(),
        resolve(make_proxied),
        Proxy<Vec<f64>>,
        |p: &Proxy<Vec<f64>>| p.iter().sum::<f64>()
    );
    let left = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(left, 0, "read results must leave nothing in the store");
    let msgpack = run!(
        "MessagePack codec",
        tasks,
        len,
        MsgPackCodec,
        (),
        make_plain,
        Vec<f64>,
        |v: &Vec<f64>| v.iter().sum::<f64>()
    );
    assert!(
        (plugin.checksum - msgpack.checksum).abs() < 1e-6 * msgpack.checksum.abs().max(1.0),
        "both read the same results"
    );

    let mib_of = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!();
    println!(
        "{:<22} {:>12} {:>18} {:>16}",
        "configuration", "end-to-end", "redis peak memory", "largest result"
    );
    for r in [&plugin, &msgpack] {
        println!(
            "{:<22} {:>10.2} s {:>14.1} MiB {:>14} B",
            r.name,
            r.elapsed.as_secs_f64(),
            mib_of(r.peak),
            r.largest_result
        );
    }
    println!();
    println!(
        "plugin vs {:<20} time {:>6.1}x less, redis memory {:>7.1}x less",
        msgpack.name,
        msgpack.elapsed.as_secs_f64() / plugin.elapsed.as_secs_f64(),
        msgpack.peak as f64 / plugin.peak as f64,
    );
}
