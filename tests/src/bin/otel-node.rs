//! A second OS process for the telemetry tests (`tests/tests/telemetry.rs`). It sets up
//! telemetry with `proxystore_telemetry::init`, so it exports its spans to the OTLP endpoint
//! in `OTEL_EXPORTER_OTLP_ENDPOINT`, and flushes them when it exits.
//!
//! ```text
//! otel-node consume FILE
//!     resolve each proxy of FILE (a postcard `Vec<Proxy<Vec<u64>>>`) inside a `consumer`
//!     span; print their sums as JSON
//! otel-node await-future FILE
//!     resolve the future whose proxy is in FILE (a postcard `Proxy<Vec<u64>>`), waiting for
//!     its producer, inside a `consumer` span; print its sum as JSON
//! otel-node stream-consume REDIS_URL PREFIX TOPIC
//!     read TOPIC's `Vec<u64>` objects from Redis Streams to the end of the stream, resolving
//!     each inside a `consumer` span; print their sums as JSON
//! otel-node apalis-work REDIS_URL QUEUE STORE DIR TASKS
//!     run an apalis-redis worker with the plugin (`resolve`) over a file store named STORE
//!     in DIR, until TASKS tasks have run and their objects are evicted; print the sums
//! ```

use std::time::Duration;

use apalis_core::backend::ext::BackendExt;
use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_redis::{Config, RedisStorage};
use proxystore::connector::file::FileConnector;
use proxystore::{Proxy, Store};
use proxystore_apalis::{PollEvery, ProxyCodec, resolve};
use proxystore_middleware::{ArgumentPolicy, TaskCodec};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::Instrument;

/// The task of the apalis test as the worker reads it.
#[derive(Serialize, Deserialize)]
struct Job {
    index: u32,
    data: Vec<f64>,
}

async fn sum(job: Job, out: Data<mpsc::UnboundedSender<(u32, f64)>>) -> Result<f64, BoxDynError> {
    let s = tracing::info_span!("sum body", index = job.index)
        .in_scope(|| job.data.iter().sum::<f64>());
    out.send((job.index, s))?;
    Ok(s)
}

fn consume(file: &str) -> anyhow::Result<()> {
    let proxies: Vec<Proxy<Vec<u64>>> = postcard::from_bytes(&std::fs::read(file)?)?;
    let sums: Vec<u64> = tracing::info_span!("consumer").in_scope(|| {
        proxies
            .iter()
            .map(|p| p.try_get().map(|v| v.iter().sum::<u64>()))
            .collect::<Result<_, _>>()
    })?;
    println!("{}", serde_json::json!({ "sums": sums }));
    Ok(())
}

fn await_future(file: &str) -> anyhow::Result<()> {
    let proxy: Proxy<Vec<u64>> = postcard::from_bytes(&std::fs::read(file)?)?;
    println!("waiting");
    let sum = tracing::info_span!("consumer")
        .in_scope(|| proxy.try_get().map(|v| v.iter().sum::<u64>()))?;
    println!("{}", serde_json::json!({ "sum": sum }));
    Ok(())
}

async fn stream_consume(args: &[String]) -> anyhow::Result<()> {
    use proxystore_stream::StreamConsumer;
    use proxystore_stream::broker::SubscribeOptions;
    use proxystore_stream::broker::redis_streams::{RedisStreamsBroker, RedisStreamsConfig};
    let [url, prefix, topic] = args else {
        anyhow::bail!("usage: otel-node stream-consume REDIS_URL PREFIX TOPIC");
    };
    let mut config = RedisStreamsConfig::new(url.as_str());
    config.prefix = prefix.clone();
    let broker = RedisStreamsBroker::connect(config).await?;
    let mut consumer =
        StreamConsumer::<Vec<u64>>::subscribe(&broker, topic, SubscribeOptions::default()).await?;
    let mut sums = Vec::new();
    while let Some(item) = consumer.next().await {
        let item = item?;
        let sum = async { item.proxy.resolve().await.map(|v| v.iter().sum::<u64>()) }
            .instrument(tracing::info_span!("consumer"))
            .await?;
        sums.push(sum);
    }
    consumer.close().await?;
    println!("{}", serde_json::json!({ "sums": sums }));
    Ok(())
}

async fn apalis_work(args: &[String]) -> anyhow::Result<()> {
    let [url, queue, store_name, dir, tasks] = args else {
        anyhow::bail!("usage: otel-node apalis-work REDIS_URL QUEUE STORE DIR TASKS");
    };
    let tasks: usize = tasks.parse()?;
    let store = Store::new(store_name.as_str(), FileConnector::new(dir)?);
    proxystore::register_store(&store)?;
    let codec = ProxyCodec::new(
        TaskCodec::new(ArgumentPolicy::with_store(store_name.as_str())).with_store(store.clone()),
    );
    let storage = RedisStorage::<Job>::new(proxystore_apalis::connect(url).await?)
        .with_config(Config::default().queue(queue))
        .with_codec(codec)
        .poll_with_strategy(PollEvery::millis(50));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let done = {
        let store = store.clone();
        async move {
            let mut sums: Vec<(u32, f64)> = Vec::new();
            while sums.len() < tasks {
                match rx.recv().await {
                    Some(s) => sums.push(s),
                    None => break,
                }
            }
            // Each task's objects are evicted after its function returns.
            while store.metrics().evict.count < tasks as u64 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sums.sort_by_key(|s| s.0);
            println!("{}", serde_json::json!({ "sums": sums }));
            Ok::<_, std::io::Error>(())
        }
    };
    WorkerBuilder::new("otel-worker")
        .backend(storage)
        .data(tx)
        .build(resolve(sum))
        .run_until(done)
        .await
        .map_err(|e| anyhow::anyhow!("worker: {e}"))?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        anyhow::bail!("usage: otel-node (consume FILE | apalis-work ...)");
    };
    let _telemetry = proxystore_telemetry::init(&format!("otel-node-{cmd}"))?;
    match (cmd.as_str(), rest) {
        ("consume", [file]) => consume(file),
        ("await-future", [file]) => await_future(file),
        ("stream-consume", rest) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(stream_consume(rest)),
        ("apalis-work", rest) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(apalis_work(rest)),
        _ => anyhow::bail!("unknown command {cmd:?}"),
    }
}
