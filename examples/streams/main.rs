//! A stream of large objects: camera frames go into a store, and only small events (a
//! reference and metadata) through a message broker. Two consumers of one group share the
//! frames; each resolves only the frames it uses (camera 3 is filtered out unresolved), and
//! every frame is evicted once consumed.
//!
//! Run with `cargo run -p proxystore-examples --bin streams` on the embedded default: an
//! in-process broker and store, no server to install. Give a broker to run the two consumers
//! as processes of their own (this binary run again), the frames in a file store:
//! `-- --redis redis://127.0.0.1:6379` (Redis Streams) or `-- --nats nats://127.0.0.1:4222`
//! (NATS JetStream).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use proxystore::Store;
use proxystore::connector::file::FileConnector;
use proxystore::connector::memory::MemoryConnector;
use proxystore_stream::broker::memory::MemoryBroker;
use proxystore_stream::broker::nats::{NatsBroker, NatsConfig};
use proxystore_stream::broker::redis_streams::{RedisStreamsBroker, RedisStreamsConfig};
use proxystore_stream::broker::{Broker, Delivery, SubscribeOptions, Subscription};
use proxystore_stream::{BatchPolicy, StreamConsumer, StreamProducer, metadata};

const FRAMES: u64 = 40;
const FRAME_BYTES: usize = 1 << 20;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Runtime::new()?;
    match args.as_slice() {
        [cmd, kind, url, topic, name] if cmd == "consumer" => rt.block_on(async {
            let broker = connect(kind, url).await?;
            let (frames, bytes) = consume(&*broker, topic, name).await?;
            println!("{frames} {bytes}");
            Ok(())
        }),
        [] => rt.block_on(run(None)),
        [kind, url] if kind == "--redis" || kind == "--nats" => rt.block_on(run(Some((
            kind.trim_start_matches("--").to_owned(),
            url.clone(),
        )))),
        _ => anyhow::bail!("usage: streams [--redis URL | --nats URL]"),
    }
}

/// The broker of `kind` (`redis`: Redis Streams; `nats`: NATS JetStream) at `url`.
async fn connect(kind: &str, url: &str) -> anyhow::Result<Arc<dyn Broker>> {
    Ok(match kind {
        "redis" => {
            let mut config = RedisStreamsConfig::new(url);
            config.prefix = "proxystore-example:".into();
            Arc::new(RedisStreamsBroker::connect(config).await?)
        }
        "nats" => {
            let mut config = NatsConfig::new(url);
            config.stream_prefix = "PROXYSTORE_EXAMPLE_".into();
            Arc::new(NatsBroker::connect(config).await?)
        }
        other => anyhow::bail!("unknown broker {other}"),
    })
}

/// Read `topic` as consumer `name` of group `analysis`: frames of cameras other than 3 are
/// resolved (fetched from the store here); returns the frames and bytes resolved.
async fn consume(broker: &dyn Broker, topic: &str, name: &str) -> anyhow::Result<(u64, u64)> {
    let options = SubscribeOptions::group("analysis").named(name);
    let mut consumer = StreamConsumer::<Vec<u8>>::subscribe(broker, topic, options)
        .await?
        .filter(|m| m["camera"] != "3");
    let (mut frames, mut bytes) = (0, 0);
    while let Some(item) = consumer.next().await {
        let item = item?;
        let frame = item.proxy.resolve().await?;
        let expected = frame_byte(item.metadata["frame"].parse()?);
        anyhow::ensure!(frame.iter().all(|&b| b == expected), "a damaged frame");
        frames += 1;
        bytes += frame.len() as u64;
    }
    consumer.close().await?;
    Ok((frames, bytes))
}

fn frame_byte(frame: u64) -> u8 {
    (frame % 251) as u8
}

async fn run(broker: Option<(String, String)>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (inner, store): (Arc<dyn Broker>, Store) = match &broker {
        None => (
            Arc::new(MemoryBroker::new()),
            Store::new("streams-example", MemoryConnector::new("streams-example")),
        ),
        Some((kind, url)) => (
            connect(kind, url).await?,
            Store::new("streams-example", FileConnector::new(dir.path())?),
        ),
    };
    let broker = Arc::new(Counting {
        inner,
        bytes: AtomicU64::new(0),
    });
    // A topic of its own for each run: a real broker keeps topics.
    let topic = format!("frames-{}", &proxystore::Key::random().as_str()[..8]);
    println!(
        "broker: {}, store: {}, topic: {topic}",
        broker.kind(),
        if broker.kind() == "memory" {
            "memory"
        } else {
            "file"
        }
    );

    // Two consumers of the group: tasks here, or processes of their own over a real broker.
    let consumers: Vec<tokio::task::JoinHandle<anyhow::Result<(u64, u64)>>> = ["a", "b"]
        .into_iter()
        .map(|name| match &broker_args(&broker, &topic, name) {
            None => {
                let broker = broker.clone();
                let topic = topic.clone();
                tokio::spawn(async move { consume(&*broker, &topic, name).await })
            }
            Some(args) => {
                let args = args.clone();
                tokio::task::spawn_blocking(move || {
                    let out = std::process::Command::new(std::env::current_exe()?)
                        .args(&args)
                        .output()?;
                    anyhow::ensure!(
                        out.status.success(),
                        "consumer failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    let text = String::from_utf8(out.stdout)?;
                    let mut f = text.split_whitespace().map(str::parse::<u64>);
                    match (f.next(), f.next()) {
                        (Some(Ok(frames)), Some(Ok(bytes))) => Ok((frames, bytes)),
                        _ => anyhow::bail!("unexpected consumer output: {text}"),
                    }
                })
            }
        })
        .collect();

    // The producer: 1 MiB frames into the store, their events in batches of 4 through the
    // broker.
    let producer = StreamProducer::<Vec<u8>>::with_broker(broker.clone())
        .with_store(store.clone())
        .batch(BatchPolicy {
            max_events: 4,
            max_delay: std::time::Duration::from_millis(10),
        });
    let started = Instant::now();
    for frame in 0..FRAMES {
        let camera = frame % 4;
        let data = vec![frame_byte(frame); FRAME_BYTES];
        let m = metadata([("camera", camera.to_string()), ("frame", frame.to_string())]);
        producer.send(&topic, &data, m).await?;
    }
    producer.close(&topic).await?;
    println!(
        "producer: {FRAMES} frames of {} KiB sent in {:.0} ms",
        FRAME_BYTES / 1024,
        started.elapsed().as_secs_f64() * 1e3
    );

    let mut total = 0;
    for (name, c) in ["a", "b"].iter().zip(consumers) {
        let (frames, bytes) = c.await??;
        println!(
            "consumer {name}: {frames} frames resolved ({:.1} MiB)",
            bytes as f64 / f64::from(1 << 20)
        );
        total += frames;
    }
    println!(
        "frames resolved: {total} of {FRAMES} (camera 3 filtered out unresolved: {})",
        FRAMES / 4
    );
    println!(
        "through the broker: {:.1} KiB of events, against {} MiB of frames through the store",
        broker.bytes.load(Ordering::Relaxed) as f64 / 1024.0,
        (FRAMES as usize * FRAME_BYTES) >> 20
    );
    let left = if broker.kind() == "memory" {
        store
            .connector()
            .inventory()
            .await?
            .map_or(0, |objects| objects.len())
    } else {
        std::fs::read_dir(dir.path())?.count()
    };
    println!("objects left in the store: {left}");
    Ok(())
}

/// The command line of consumer `name` as a process of its own, over a real broker.
fn broker_args(broker: &Counting, topic: &str, name: &str) -> Option<Vec<String>> {
    let kind = match broker.kind() {
        "redis-streams" => "redis",
        "nats-jetstream" => "nats",
        _ => return None,
    };
    let url = std::env::args().nth(2)?;
    Some(vec![
        "consumer".into(),
        kind.into(),
        url,
        topic.into(),
        name.into(),
    ])
}

/// A broker that counts the bytes published through it: a broker layer of a few lines, like
/// any third-party broker.
struct Counting {
    inner: Arc<dyn Broker>,
    bytes: AtomicU64,
}

#[async_trait]
impl Broker for Counting {
    fn kind(&self) -> &str {
        self.inner.kind()
    }

    fn delivery(&self) -> Delivery {
        self.inner.delivery()
    }

    async fn publish(&self, topic: &str, message: Bytes) -> proxystore_stream::Result<()> {
        self.bytes
            .fetch_add(message.len() as u64, Ordering::Relaxed);
        self.inner.publish(topic, message).await
    }

    async fn mark_ended(&self, topic: &str, producer: &str) -> proxystore_stream::Result<()> {
        self.inner.mark_ended(topic, producer).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        options: &SubscribeOptions,
    ) -> proxystore_stream::Result<Box<dyn Subscription>> {
        self.inner.subscribe(topic, options).await
    }
}
