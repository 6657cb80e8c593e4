//! `proxystore bench streams`: streams of proxies, side by side with Python ProxyStore's.
//!
//! Measured the way `../shared/bench/python_patterns_bench.py` measures Python ProxyStore's
//! streams, so that the rows compare:
//!
//! - **The producer is this process, the consumer another OS process** (a child of this
//!   executable, `bench stream-child`, kept for the whole run). For each trial the consumer
//!   subscribes (before the first send: Redis pub/sub keeps nothing for late subscribers),
//!   opens the store and says ready; the producer sends N copies of one object
//!   (`StreamProducer::send`, evict-after-consume on), then closes the topic; the consumer
//!   iterates (`StreamConsumer::next`, then resolves the proxy) to the end of the stream.
//!   **End to end** is from the producer's first send to the last object resolved in the
//!   consumer (same clock): objects/s and MB/s (1 MB = 1e6 B). Every object is checked in the
//!   consumer (length, first and last 16 bytes; the first object in full; the store checks
//!   each object's digest on resolve), and the store must be empty after each trial.
//! - **Raw baselines in the same run**, same N, same bytes: the objects `RPUSH`ed onto a Redis
//!   list by this process and `BLPOP`ed by the consumer process (redis crate, blocking
//!   connections: the broker carrying the bytes itself); and the store alone, two ways: each
//!   put here handed to the consumer process over a pipe (its reference, one line on the
//!   consumer's standard input: no broker), which gets and evicts it, end to end like a stream;
//!   and N puts here, then N gets (and evictions) in the consumer, end to end = puts + gets.
//! - Per row: first-object latency, the producer's send p50, CPU of the producer, the consumer
//!   and redis-server over the trial, the peak of Redis `used_memory` over the trial above
//!   where it started (sampled every 5 ms), and for brokers that keep the messages the bytes
//!   the topic's key holds per object (`MEMORY USAGE`) at the end of the trial.
//! - With `--python`, the script's streams section in the same run against the same
//!   redis-server, and the ratios ours/Python and ours/raw list, and the targets met or
//!   not.
//!
//! - **NATS JetStream** (`--brokers nats`, started here like redis-server: `nats-server -js`
//!   with file storage and its default limits): its rows beside the same objects published
//!   into a JetStream stream of their own and pulled by the consumer (the broker carrying the
//!   bytes: no proxies), with the bytes the topic's stream holds per object for both (the
//!   stream's `state.bytes` at the end of the trial).
//!
//! Brokers are rows of `BrokerName`: one more broker is one more variant there, with how to
//! connect to it and where it keeps what it keeps.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use proxystore::connector::file::FileConnector;
use proxystore::connector::redis::{RedisConfig, RedisConnector};
use proxystore::{Key, Reference, Store, StoreConfig};
use proxystore_stream::broker::nats::{NatsBroker, NatsConfig};
use proxystore_stream::broker::redis_pubsub::RedisPubSubBroker;
use proxystore_stream::broker::redis_streams::{RedisStreamsBroker, RedisStreamsConfig};
use proxystore_stream::broker::{Broker, SubscribeOptions};
use proxystore_stream::{BatchPolicy, Metadata, StreamConsumer, StreamProducer};
use serde::{Deserialize, Serialize};

use crate::format::{fmt_rate, fmt_ratio, fmt_size, fmt_time};
use crate::futures::{now_ns, percentile};
use crate::machine::{pid_cpu_s, process_cpu_s};
use crate::servers::{NatsServer, RedisServer, work_dir};

/// Streams of proxies: objects/s and MB/s from a producer (this process) to a consumer
/// process, per broker, store, size and batch, beside a raw Redis list and the store alone;
/// with `--python`, Python ProxyStore's streams in the same run.
#[derive(Debug, Args)]
pub struct StreamsArgs {
    /// Brokers carrying the events.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "redis-streams,redis-pubsub,nats"
    )]
    brokers: Vec<BrokerName>,

    /// Stores holding the objects (Redis: the same redis-server as the brokers; file: a
    /// temporary directory).
    #[arg(long, value_delimiter = ',', default_value = "redis,file")]
    stores: Vec<StoreName>,

    /// Object sizes, comma-separated, with units.
    #[arg(long, value_delimiter = ',', default_value = "1KiB,1MiB,10MiB")]
    sizes: Vec<String>,

    /// Events per broker message (the producer's batch); above 1 only for objects up to
    /// --batch-max-size.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    batches: Vec<usize>,

    /// Largest object size measured with batches above 1.
    #[arg(long, default_value = "1KiB")]
    batch_max_size: String,

    /// How long a batch may wait for more events before it is published.
    #[arg(long, default_value_t = 0.01)]
    batch_delay: f64,

    /// Events in flight with pipelined sends (`StreamProducer::pipeline`), comma-separated;
    /// 0: each send waits. Above 0 only for objects up to --batch-max-size.
    #[arg(long, value_delimiter = ',', default_value = "0,64")]
    pipelines: Vec<usize>,

    /// Objects per trial (default: per size, for about --target-s seconds a trial of the
    /// slowest row).
    #[arg(long)]
    n: Option<usize>,

    /// Seconds a trial should take, for the default N.
    #[arg(long, default_value_t = 1.5)]
    target_s: f64,

    /// Trials per row, taken in turn over the rows of a size (the median is reported).
    #[arg(long, default_value_t = 3)]
    trials: usize,

    /// Parent directory of the file store (default: the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,

    /// Also run Python ProxyStore's streams benchmark against the same redis-server (installs
    /// `proxystore` and `redis` with pip when missing).
    #[arg(long)]
    python: bool,

    /// Python ProxyStore's patterns benchmark script.
    #[arg(long, default_value = "../shared/bench/python_patterns_bench.py")]
    python_script: PathBuf,

    /// Python interpreter.
    #[arg(long, default_value = "python3")]
    python_bin: String,

    /// Write every figure as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A broker the events of a stream go through: one row each. Another broker is one more
/// variant, with its [`BrokerName::connect`] and where it keeps what it keeps
/// ([`BrokerName::stored_keys`] on Redis; the topic's stream on NATS) (and its server started
/// in `run`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum BrokerName {
    /// Redis Streams: `XADD`, a consumer group, `XACK`; at least once.
    RedisStreams,
    /// Redis pub/sub: `PUBLISH`; at most once (the consumer subscribes before the first send).
    RedisPubsub,
    /// NATS JetStream: a stream per topic, a durable pull consumer, acknowledgements
    /// confirmed by the server; at least once.
    Nats,
}

impl BrokerName {
    fn label(self) -> &'static str {
        match self {
            BrokerName::RedisStreams => "redis-streams",
            BrokerName::RedisPubsub => "redis-pubsub",
            BrokerName::Nats => "nats-jetstream",
        }
    }

    /// A broker of this kind: on the Redis server at `url`, its keys or channels under
    /// `prefix`; on the nats-server at `nats_url`.
    async fn connect(
        self,
        url: &str,
        nats_url: Option<&str>,
        prefix: &str,
    ) -> Result<Arc<dyn Broker>> {
        Ok(match self {
            BrokerName::RedisStreams => {
                let mut config = RedisStreamsConfig::new(url);
                config.prefix = prefix.to_owned();
                Arc::new(RedisStreamsBroker::connect(config).await?)
            }
            BrokerName::RedisPubsub => Arc::new(RedisPubSubBroker::connect(url, prefix).await?),
            BrokerName::Nats => Arc::new(connect_nats(nats_url).await?),
        })
    }

    /// The Redis keys that hold what the broker keeps of `topic` (the first holds its
    /// messages); none when it keeps nothing.
    fn stored_keys(self, prefix: &str, topic: &str) -> Vec<String> {
        match self {
            BrokerName::RedisStreams => {
                vec![format!("{prefix}{topic}"), format!("{prefix}{topic}:ended")]
            }
            BrokerName::RedisPubsub | BrokerName::Nats => Vec::new(),
        }
    }

    /// The key holding the messages of `topic`, measured with `MEMORY USAGE`.
    fn stored_key(self, prefix: &str, topic: &str) -> Option<String> {
        self.stored_keys(prefix, topic).into_iter().next()
    }
}

/// The NATS broker on the server at `url` (default config: streams `PROXYSTORE_<topic>`).
async fn connect_nats(url: Option<&str>) -> Result<NatsBroker> {
    let url = url.context("no nats-server in this run")?;
    Ok(NatsBroker::connect(NatsConfig::new(url)).await?)
}

/// The subject of the raw JetStream baseline's stream `name`.
fn raw_subject(name: &str) -> String {
    format!("bench.raw.{name}")
}

/// A store the objects go into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum StoreName {
    /// The Redis connector, on the brokers' redis-server.
    Redis,
    /// The file connector, in a temporary directory.
    File,
}

impl StoreName {
    fn label(self) -> &'static str {
        match self {
            StoreName::Redis => "redis",
            StoreName::File => "file",
        }
    }
}

/// Objects per trial by default: what the slowest row moves in `target_s`, by a cost model
/// per object measured on the 2-core reference VM (a fixed part and a part per byte).
fn default_n(size: u64, target_s: f64) -> usize {
    const FIXED_S: f64 = 350e-6;
    const PER_BYTE_S: f64 = 2.5e-9;
    let est = FIXED_S + PER_BYTE_S * size as f64;
    ((target_s / est).round() as usize).clamp(20, 50_000)
}

/// The object of a trial: `size` pseudo-random bytes (the same for the producer and the
/// consumer, which checks what it gets against it).
fn payload(size: usize) -> Bytes {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ size as u64;
    let mut v = Vec::with_capacity(size + 8);
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(size);
    Bytes::from(v)
}

/// What the consumer checks of each object: its length, first and last 16 bytes; the first
/// object in full.
struct Expect {
    full: Bytes,
    edge: usize,
}

impl Expect {
    fn new(size: usize) -> Self {
        Expect {
            full: payload(size),
            edge: size.min(16),
        }
    }

    fn ok(&self, v: &[u8], first: bool) -> bool {
        let n = self.full.len();
        if first {
            return v == self.full.as_ref();
        }
        v.len() == n
            && v[..self.edge] == self.full[..self.edge]
            && v[n - self.edge..] == self.full[n - self.edge..]
    }
}

/// What the consumer process does in one trial.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    /// Subscribe to the topic on the broker and consume the stream.
    Stream { broker: BrokerName },
    /// `BLPOP` the list `topic` until its empty item.
    RawList,
    /// Pull `n` messages from the JetStream stream `topic` (made by the producer), acking each.
    RawJetStream,
    /// Get and evict the objects of the references in this file (postcard).
    Store { refs: PathBuf },
    /// Get and evict the objects of the `n` references that come on standard input (JSON, a
    /// line each).
    StorePiped,
}

/// One trial, for the consumer process (a JSON line on its standard input).
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    mode: Mode,
    redis_url: String,
    /// The nats-server of this run, if any.
    #[serde(default)]
    nats_url: Option<String>,
    /// Prefix of the brokers' keys and channels.
    prefix: String,
    topic: String,
    size: usize,
    n: usize,
    /// The store the objects are in (opened and registered before saying ready).
    store: Option<StoreConfig>,
    timeout_s: f64,
}

/// What the consumer process measured in one trial.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Done {
    /// Objects received.
    count: usize,
    /// Objects that were not what was sent.
    bad: usize,
    /// Objects the stream's producer sent that never came (at-most-once brokers).
    missed: u64,
    /// Unix time (ns) when the first and the last object were resolved and checked.
    t_first_ns: Option<u128>,
    t_last_ns: Option<u128>,
    /// Unix time (ns) when the stream ended.
    t_end_ns: u128,
    /// Seconds from ready to the end.
    loop_s: f64,
    /// CPU seconds of the consumer process over the same.
    cpu_s: f64,
}

/// A line the consumer process writes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Reply {
    /// Subscribed and connected: the producer may start.
    Ready,
    /// The trial is over.
    Done(Done),
    /// The trial failed.
    Error(String),
}

/// The consumer process: per job on its standard input, prepare, say ready, consume, report.
///
/// # Errors
/// When its input cannot be read or its output written; a failed trial is reported to the
/// parent as [`Reply::Error`] and the next job is read.
pub(crate) fn child() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut stores: HashMap<String, Store> = HashMap::new();
    let mut input = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    loop {
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            break;
        }
        let job: Job = serde_json::from_str(&line).context("a job")?;
        let reply = match runtime.block_on(consume(&job, &mut stores, &mut out, &mut input)) {
            Ok(done) => Reply::Done(done),
            Err(e) => Reply::Error(format!("{e:#}")),
        };
        writeln!(out, "{}", serde_json::to_string(&reply)?)?;
        out.flush()?;
    }
    Ok(())
}

fn say_ready(out: &mut impl Write) -> Result<()> {
    writeln!(out, "{}", serde_json::to_string(&Reply::Ready)?)?;
    out.flush()?;
    Ok(())
}

/// The store of `config`, opened once per process, registered (references to it resolve
/// through it) and connected.
async fn open_store(config: &StoreConfig, stores: &mut HashMap<String, Store>) -> Result<Store> {
    if let Some(s) = stores.get(&config.name) {
        return Ok(s.clone());
    }
    let store = Store::from_config(config.clone())?;
    proxystore::register_store(&store)?;
    store.exists(&Key::random()).await?;
    stores.insert(config.name.clone(), store.clone());
    Ok(store)
}

/// One trial on the consumer's side.
async fn consume(
    job: &Job,
    stores: &mut HashMap<String, Store>,
    out: &mut impl Write,
    input: &mut impl BufRead,
) -> Result<Done> {
    let expect = Expect::new(job.size);
    let timeout = Duration::from_secs_f64(job.timeout_s);
    let store = match &job.store {
        Some(c) => Some(open_store(c, stores).await?),
        None => None,
    };
    let mut done = Done::default();
    match &job.mode {
        Mode::Stream { broker } => {
            let broker = broker
                .connect(&job.redis_url, job.nats_url.as_deref(), &job.prefix)
                .await?;
            let mut consumer = StreamConsumer::<Bytes>::subscribe(
                broker.as_ref(),
                &job.topic,
                SubscribeOptions::default(),
            )
            .await?;
            say_ready(out)?;
            let (t0, cpu0) = (Instant::now(), process_cpu_s());
            let run = async {
                // Resolved objects, as Python ProxyStore's consumer takes them
                // (`next_object`): a message's small objects come with one store call.
                while let Some(item) = consumer.next_object().await {
                    let (v, _) = item?;
                    done.tally(&expect, &v);
                    if done.count > job.n {
                        bail!("more objects than were sent");
                    }
                }
                Ok(())
            };
            tokio::time::timeout(timeout, run)
                .await
                .map_err(|_| anyhow!("the stream did not end within {timeout:?}"))??;
            done.missed = consumer.missed();
            consumer.close().await?;
            done.finish(t0, cpu0);
        }
        Mode::RawList => {
            let client = redis::Client::open(job.redis_url.as_str())?;
            let mut con = client.get_connection()?;
            say_ready(out)?;
            let (t0, cpu0) = (Instant::now(), process_cpu_s());
            while done.count <= job.n {
                let item: Option<(Vec<u8>, Vec<u8>)> = redis::cmd("BLPOP")
                    .arg(&job.topic)
                    .arg(timeout.as_secs_f64())
                    .query(&mut con)?;
                let (_, v) = item.context("BLPOP timed out")?;
                if v.is_empty() {
                    break;
                }
                done.tally(&expect, &v);
            }
            done.finish(t0, cpu0);
        }
        Mode::RawJetStream => {
            use async_nats::jetstream::consumer::{AckPolicy, pull};
            use futures::StreamExt as _;
            let client =
                async_nats::connect(job.nats_url.as_deref().context("no nats-server")?).await?;
            let js = async_nats::jetstream::new(client);
            let stream = js.get_stream(&job.topic).await?;
            let consumer = stream
                .create_consumer(pull::Config {
                    ack_policy: AckPolicy::Explicit,
                    ..Default::default()
                })
                .await?;
            let mut messages = consumer.messages().await?;
            say_ready(out)?;
            let (t0, cpu0) = (Instant::now(), process_cpu_s());
            let run = async {
                while done.count < job.n {
                    let msg = messages
                        .next()
                        .await
                        .context("the JetStream consumer ended")?
                        .map_err(|e| anyhow!("pull: {e}"))?;
                    done.tally(&expect, &msg.payload);
                    msg.ack().await.map_err(|e| anyhow!("ack: {e}"))?;
                }
                Ok::<_, anyhow::Error>(())
            };
            tokio::time::timeout(timeout, run).await.map_err(|_| {
                anyhow!("the JetStream messages did not all come within {timeout:?}")
            })??;
            done.finish(t0, cpu0);
        }
        Mode::Store { refs } => {
            let store = store.context("no store")?;
            let refs: Vec<Vec<u8>> = postcard::from_bytes(&std::fs::read(refs)?)?;
            let refs = refs
                .iter()
                .map(|r| Reference::from_bytes(r))
                .collect::<proxystore::Result<Vec<_>>>()?;
            say_ready(out)?;
            let (t0, cpu0) = (Instant::now(), process_cpu_s());
            for r in &refs {
                let v = store.get_by_reference::<Bytes>(r).await?;
                done.tally(&expect, &v);
                store.evict(&r.key).await?;
            }
            done.finish(t0, cpu0);
        }
        Mode::StorePiped => {
            let store = store.context("no store")?;
            say_ready(out)?;
            let (t0, cpu0) = (Instant::now(), process_cpu_s());
            for _ in 0..job.n {
                let mut line = String::new();
                ensure!(
                    input.read_line(&mut line)? > 0,
                    "the references ended early"
                );
                let r = Reference::from_json(line.trim())?;
                let v = store.get_by_reference::<Bytes>(&r).await?;
                done.tally(&expect, &v);
                store.evict(&r.key).await?;
            }
            done.finish(t0, cpu0);
        }
    }
    Ok(done)
}

impl Done {
    fn tally(&mut self, expect: &Expect, v: &[u8]) {
        let now = now_ns();
        if !expect.ok(v, self.count == 0) {
            self.bad += 1;
        }
        self.t_first_ns.get_or_insert(now);
        self.t_last_ns = Some(now);
        self.count += 1;
    }

    fn finish(&mut self, t0: Instant, cpu0: f64) {
        self.t_end_ns = now_ns();
        self.loop_s = t0.elapsed().as_secs_f64();
        self.cpu_s = process_cpu_s() - cpu0;
    }
}

/// The consumer process, with a thread reading its replies (so that waiting for one is
/// bounded).
struct Consumer {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    replies: mpsc::Receiver<String>,
}

impl Consumer {
    fn start() -> Result<Self> {
        let exe = std::env::current_exe().context("path of this executable")?;
        let mut child = Command::new(exe)
            .args([crate::measure::SUBCOMMAND, "stream-child"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start the consumer process")?;
        let stdin = child.stdin.take().context("consumer stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("consumer stdout")?);
        let (tx, replies) = mpsc::channel();
        std::thread::Builder::new()
            .name("bench-stream-consumer".into())
            .spawn(move || {
                for line in stdout.lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .context("start the reader of the consumer")?;
        Ok(Consumer {
            child,
            stdin,
            replies,
        })
    }

    fn send(&mut self, job: &Job) -> Result<()> {
        writeln!(self.stdin, "{}", serde_json::to_string(job)?)?;
        self.stdin.flush()?;
        Ok(())
    }

    fn reply(&mut self, timeout: Duration) -> Result<Reply> {
        let line = self.replies.recv_timeout(timeout).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => {
                anyhow!("the consumer process did not answer within {timeout:?}")
            }
            mpsc::RecvTimeoutError::Disconnected => anyhow!("the consumer process ended"),
        })?;
        serde_json::from_str(&line).with_context(|| format!("consumer said {line:?}"))
    }

    fn ready(&mut self, timeout: Duration) -> Result<()> {
        match self.reply(timeout)? {
            Reply::Ready => Ok(()),
            Reply::Error(e) => bail!("consumer: {e}"),
            Reply::Done(_) => bail!("the consumer was done before it was ready"),
        }
    }

    fn done(&mut self, timeout: Duration) -> Result<Done> {
        match self.reply(timeout)? {
            Reply::Done(d) => Ok(d),
            Reply::Error(e) => bail!("consumer: {e}"),
            Reply::Ready => bail!("the consumer said ready twice"),
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `used_memory` of a Redis server, from `INFO memory`.
fn used_memory(con: &mut redis::Connection) -> Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query(con)?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no used_memory in INFO memory")
}

/// CPU seconds of the calling thread so far.
fn thread_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// Samples Redis `used_memory` every 5 ms on a thread of its own until finished.
struct MemorySampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<(u64, f64)>>,
    before: u64,
}

impl MemorySampler {
    fn start(client: &redis::Client) -> Result<Self> {
        let mut con = client.get_connection()?;
        let before = used_memory(&mut con)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-redis-memory".into())
            .spawn(move || {
                let cpu0 = thread_cpu_s();
                let mut peak = 0;
                loop {
                    peak = peak.max(used_memory(&mut con)?);
                    if stopped.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok((peak, thread_cpu_s() - cpu0))
            })
            .context("start the memory sampler")?;
        Ok(MemorySampler {
            stop,
            thread,
            before,
        })
    }

    /// The peak above where it started (bytes), and the CPU seconds the sampler took.
    fn finish(self) -> Result<(u64, f64)> {
        self.stop.store(true, Ordering::Relaxed);
        let (peak, cpu) = self
            .thread
            .join()
            .map_err(|_| anyhow!("the memory sampler panicked"))??;
        Ok((peak.saturating_sub(self.before), cpu))
    }
}

/// What a row measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
enum Subject {
    /// Our stream: a broker, a store, a batch size, events in flight (0: not pipelined).
    Stream {
        broker: BrokerName,
        store: StoreName,
        batch: usize,
        pipeline: usize,
    },
    /// The objects `RPUSH`ed onto a Redis list and `BLPOP`ed.
    RawList,
    /// The objects published into a JetStream stream and pulled (no proxies).
    RawJetStream,
    /// The store alone: N puts here, then N gets and evictions in the consumer.
    Store { store: StoreName },
    /// The store alone: each put here handed to the consumer over a pipe, which gets and
    /// evicts it.
    StorePiped { store: StoreName },
}

impl Subject {
    fn labels(&self) -> (String, String, String) {
        match *self {
            Subject::Stream {
                broker,
                store,
                batch,
                pipeline,
            } => (
                broker.label().into(),
                store.label().into(),
                if pipeline > 0 {
                    format!("{batch}, pipelined {pipeline}")
                } else {
                    batch.to_string()
                },
            ),
            Subject::RawList => ("Redis list (RPUSH/BLPOP)".into(), "-".into(), "-".into()),
            Subject::RawJetStream => (
                "NATS JetStream (objects in messages)".into(),
                "-".into(),
                "-".into(),
            ),
            Subject::Store { store } => (
                "(store alone: puts, then gets)".into(),
                store.label().into(),
                "-".into(),
            ),
            Subject::StorePiped { store } => (
                "(store alone: put, pipe, get)".into(),
                store.label().into(),
                "-".into(),
            ),
        }
    }
}

/// One trial's figures.
#[derive(Debug, Clone, Serialize)]
struct Trial {
    e2e_s: f64,
    objects_per_s: f64,
    first_object_s: Option<f64>,
    #[serde(skip)]
    send_s: Vec<f64>,
    producer_cpu_s: f64,
    consumer_cpu_s: f64,
    server_cpu_s: Option<f64>,
    /// Peak `used_memory` over the trial above where it started.
    redis_peak_bytes: u64,
    /// `MEMORY USAGE` of the key holding the topic's messages at the end, per object.
    broker_bytes_per_object: Option<f64>,
    /// Messages on the broker at the end (`XLEN`).
    broker_messages: Option<u64>,
    /// Store alone: seconds of the puts and of the gets.
    put_s: Option<f64>,
    get_s: Option<f64>,
}

/// One row: the median of its trials.
#[derive(Debug, Serialize)]
struct Row {
    subject: Subject,
    size_bytes: u64,
    n: usize,
    e2e_s: f64,
    objects_per_s: f64,
    bytes_per_s: f64,
    /// (max - min) / median of the trials' objects/s.
    spread: f64,
    first_object_s: Option<f64>,
    send_p50_s: f64,
    send_p99_s: f64,
    producer_cpu_s: f64,
    consumer_cpu_s: f64,
    server_cpu_s: Option<f64>,
    /// The highest over the trials.
    redis_peak_bytes: u64,
    broker_bytes_per_object: Option<f64>,
    broker_messages: Option<u64>,
    put_s: Option<f64>,
    get_s: Option<f64>,
    trials: Vec<Trial>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0)
}

fn median_opt(v: Vec<Option<f64>>) -> Option<f64> {
    v.into_iter().collect::<Option<Vec<f64>>>().map(median)
}

impl Row {
    fn new(subject: Subject, size: u64, n: usize, trials: Vec<Trial>) -> Self {
        let e2e = median(trials.iter().map(|t| t.e2e_s).collect());
        let mut send: Vec<f64> = trials.iter().flat_map(|t| t.send_s.clone()).collect();
        send.sort_by(f64::total_cmp);
        Row {
            subject,
            size_bytes: size,
            n,
            e2e_s: e2e,
            objects_per_s: n as f64 / e2e,
            bytes_per_s: n as f64 * size as f64 / e2e,
            spread: {
                let rates = trials.iter().map(|t| t.objects_per_s);
                let (lo, hi) = rates.fold((f64::INFINITY, 0.0_f64), |(lo, hi), r| {
                    (lo.min(r), hi.max(r))
                });
                (hi - lo) / (n as f64 / e2e)
            },
            first_object_s: median_opt(trials.iter().map(|t| t.first_object_s).collect()),
            send_p50_s: percentile(&send, 50.0),
            send_p99_s: percentile(&send, 99.0),
            producer_cpu_s: median(trials.iter().map(|t| t.producer_cpu_s).collect()),
            consumer_cpu_s: median(trials.iter().map(|t| t.consumer_cpu_s).collect()),
            server_cpu_s: median_opt(trials.iter().map(|t| t.server_cpu_s).collect()),
            redis_peak_bytes: trials.iter().map(|t| t.redis_peak_bytes).max().unwrap_or(0),
            broker_bytes_per_object: median_opt(
                trials.iter().map(|t| t.broker_bytes_per_object).collect(),
            ),
            broker_messages: trials.iter().filter_map(|t| t.broker_messages).max(),
            put_s: median_opt(trials.iter().map(|t| t.put_s).collect()),
            get_s: median_opt(trials.iter().map(|t| t.get_s).collect()),
            trials,
        }
    }
}

/// Where the objects of a store are, to see that the store is empty after a trial.
enum Holds {
    /// Redis keys under this prefix.
    Redis(String),
    /// Files under this directory.
    Dir(PathBuf),
}

/// A store under test.
struct StoreUnderTest {
    name: StoreName,
    store: Store,
    holds: Holds,
}

/// The nats-server of a run and what inspects it.
struct Nats {
    server: NatsServer,
    broker: NatsBroker,
    js: async_nats::jetstream::Context,
}

/// Everything a trial needs.
struct Bench {
    server: RedisServer,
    url: String,
    client: redis::Client,
    /// Prefix of the brokers' keys and of the raw lists.
    prefix: String,
    consumer: Consumer,
    brokers: HashMap<BrokerName, Arc<dyn Broker>>,
    /// The nats-server of the run, when a NATS row is asked for.
    nats: Option<Nats>,
    batch_delay: Duration,
    timeout: Duration,
    work: PathBuf,
}

impl Bench {
    fn job(&self, mode: Mode, topic: &str, size: usize, n: usize) -> Job {
        Job {
            mode,
            redis_url: self.url.clone(),
            nats_url: self.nats.as_ref().map(|n| n.server.url()),
            prefix: self.prefix.clone(),
            topic: topic.to_owned(),
            size,
            n,
            store: None,
            timeout_s: self.timeout.as_secs_f64(),
        }
    }

    /// Objects left in a store.
    fn leftovers(&self, holds: &Holds) -> Result<usize> {
        match holds {
            Holds::Redis(prefix) => {
                let mut con = self.client.get_connection()?;
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{prefix}*"))
                    .query(&mut con)?;
                Ok(keys.len())
            }
            Holds::Dir(dir) => Ok(count_files(dir)),
        }
    }

    /// CPU seconds so far of the servers of the run (redis-server, and nats-server if any).
    fn server_cpu(&self) -> Option<f64> {
        let redis = pid_cpu_s(self.server.pid())?;
        match &self.nats {
            Some(n) => Some(redis + pid_cpu_s(n.server.pid())?),
            None => Some(redis),
        }
    }

    /// The JetStream stream `name`'s bytes per object and messages, then the stream removed.
    async fn jetstream_usage(&self, name: &str, n: usize) -> Result<(f64, u64)> {
        let nats = self.nats.as_ref().context("no nats-server")?;
        let mut stream = nats.js.get_stream(name).await?;
        let state = stream.info().await?.state.clone();
        nats.js.delete_stream(name).await?;
        Ok((state.bytes as f64 / n as f64, state.messages))
    }

    /// One trial of our stream.
    async fn stream_trial(
        &mut self,
        broker: BrokerName,
        store: &StoreUnderTest,
        batch: usize,
        pipeline: usize,
        object: &Bytes,
        n: usize,
    ) -> Result<Trial> {
        let topic = format!("t-{}", Key::random());
        let mut job = self.job(Mode::Stream { broker }, &topic, object.len(), n);
        job.store = Some(store.store.config().clone());
        self.consumer.send(&job)?;
        self.consumer.ready(self.timeout)?;
        let handle = self
            .brokers
            .get(&broker)
            .context("broker not connected")?
            .clone();
        let policy = if batch > 1 {
            BatchPolicy {
                max_events: batch,
                max_delay: self.batch_delay,
            }
        } else {
            BatchPolicy::default()
        };
        let producer = StreamProducer::<Bytes>::with_broker(handle)
            .with_store(store.store.clone())
            .batch(policy)
            .pipeline(pipeline);
        let sampler = MemorySampler::start(&self.client)?;
        let server0 = self.server_cpu();
        let cpu0 = process_cpu_s();
        let mut send_s = Vec::with_capacity(n);
        let start_ns = now_ns();
        for _ in 0..n {
            let t = Instant::now();
            producer.send(&topic, object, Metadata::new()).await?;
            send_s.push(t.elapsed().as_secs_f64());
        }
        producer.close(&topic).await?;
        let cpu1 = process_cpu_s();
        let done = self.consumer.done(self.timeout)?;
        let server1 = self.server_cpu();
        let (peak, sampler_cpu) = sampler.finish()?;
        let mut con = self.client.get_connection()?;
        let (mut stored, mut messages) = (None, None);
        if let Some(key) = broker.stored_key(&self.prefix, &topic) {
            let bytes: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(&key)
                .arg("SAMPLES")
                .arg(0)
                .query(&mut con)?;
            stored = bytes.map(|b| b as f64 / n as f64);
            messages = Some(redis::cmd("XLEN").arg(&key).query(&mut con)?);
        }
        if broker == BrokerName::Nats {
            let name = self
                .nats
                .as_ref()
                .context("no nats-server")?
                .broker
                .stream_name(&topic);
            let (bytes, count) = self.jetstream_usage(&name, n).await?;
            (stored, messages) = (Some(bytes), Some(count));
        }
        let keys = broker.stored_keys(&self.prefix, &topic);
        if !keys.is_empty() {
            redis::cmd("DEL").arg(&keys).query::<()>(&mut con)?;
        }
        self.check_consumed(&done, n, &store.holds)?;
        Ok(trial(
            &done,
            start_ns,
            n,
            send_s,
            cpu1 - cpu0 - sampler_cpu,
            server0.zip(server1).map(|(a, b)| b - a),
            peak,
            stored,
            messages,
        ))
    }

    /// One trial of the raw baseline: the objects through a Redis list.
    fn raw_trial(&mut self, object: &Bytes, n: usize) -> Result<Trial> {
        let key = format!("{}raw-{}", self.prefix, Key::random());
        let job = self.job(Mode::RawList, &key, object.len(), n);
        let mut con = self.client.get_connection()?;
        self.consumer.send(&job)?;
        self.consumer.ready(self.timeout)?;
        let sampler = MemorySampler::start(&self.client)?;
        let server0 = self.server_cpu();
        let cpu0 = process_cpu_s();
        let mut send_s = Vec::with_capacity(n);
        let start_ns = now_ns();
        for _ in 0..n {
            let t = Instant::now();
            redis::cmd("RPUSH")
                .arg(&key)
                .arg(object.as_ref())
                .query::<i64>(&mut con)?;
            send_s.push(t.elapsed().as_secs_f64());
        }
        redis::cmd("RPUSH")
            .arg(&key)
            .arg(b"")
            .query::<i64>(&mut con)?;
        let cpu1 = process_cpu_s();
        let done = self.consumer.done(self.timeout)?;
        let server1 = self.server_cpu();
        let (peak, sampler_cpu) = sampler.finish()?;
        redis::cmd("DEL").arg(&key).query::<()>(&mut con)?;
        self.check(&done, n)?;
        Ok(trial(
            &done,
            start_ns,
            n,
            send_s,
            cpu1 - cpu0 - sampler_cpu,
            server0.zip(server1).map(|(a, b)| b - a),
            peak,
            None,
            None,
        ))
    }

    /// One trial of the raw JetStream baseline: the objects published (each publish
    /// acknowledged by the server, as our producer's are) into a stream of their own, pulled
    /// and acknowledged by the consumer.
    async fn raw_jetstream_trial(&mut self, object: &Bytes, n: usize) -> Result<Trial> {
        let name = format!("BENCH_RAW_{}", Key::random().as_str().replace('-', ""));
        let subject = raw_subject(&name);
        let js = self.nats.as_ref().context("no nats-server")?.js.clone();
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await?;
        let job = self.job(Mode::RawJetStream, &name, object.len(), n);
        self.consumer.send(&job)?;
        self.consumer.ready(self.timeout)?;
        let sampler = MemorySampler::start(&self.client)?;
        let server0 = self.server_cpu();
        let cpu0 = process_cpu_s();
        let mut send_s = Vec::with_capacity(n);
        let start_ns = now_ns();
        let sent = async {
            for _ in 0..n {
                let t = Instant::now();
                js.publish(subject.clone(), object.clone())
                    .await
                    .map_err(|e| anyhow!("publish: {e}"))?
                    .await
                    .map_err(|e| anyhow!("publish acknowledgement: {e}"))?;
                send_s.push(t.elapsed().as_secs_f64());
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        if let Err(e) = sent {
            let _ = js.delete_stream(&name).await;
            let _ = sampler.finish();
            return Err(e);
        }
        let cpu1 = process_cpu_s();
        let done = self.consumer.done(self.timeout)?;
        let server1 = self.server_cpu();
        let (peak, sampler_cpu) = sampler.finish()?;
        let (bytes, count) = self.jetstream_usage(&name, n).await?;
        self.check(&done, n)?;
        Ok(trial(
            &done,
            start_ns,
            n,
            send_s,
            cpu1 - cpu0 - sampler_cpu,
            server0.zip(server1).map(|(a, b)| b - a),
            peak,
            Some(bytes),
            Some(count),
        ))
    }

    /// One trial of the store alone, pipelined: each put here, its reference handed to the
    /// consumer over its standard input, which gets and evicts it.
    async fn piped_store_trial(
        &mut self,
        store: &StoreUnderTest,
        object: &Bytes,
        n: usize,
    ) -> Result<Trial> {
        let mut job = self.job(Mode::StorePiped, "", object.len(), n);
        job.store = Some(store.store.config().clone());
        self.consumer.send(&job)?;
        self.consumer.ready(self.timeout)?;
        let sampler = MemorySampler::start(&self.client)?;
        let server0 = self.server_cpu();
        let cpu0 = process_cpu_s();
        let mut send_s = Vec::with_capacity(n);
        let start_ns = now_ns();
        for _ in 0..n {
            let t = Instant::now();
            let proxy = store.store.proxy(object).await?;
            send_s.push(t.elapsed().as_secs_f64());
            let line = proxy.reference().context("an inline proxy")?.to_json();
            writeln!(self.consumer.stdin, "{line}")?;
            self.consumer.stdin.flush()?;
        }
        let cpu1 = process_cpu_s();
        let done = self.consumer.done(self.timeout)?;
        let server1 = self.server_cpu();
        let (peak, sampler_cpu) = sampler.finish()?;
        self.check_consumed(&done, n, &store.holds)?;
        Ok(trial(
            &done,
            start_ns,
            n,
            send_s,
            cpu1 - cpu0 - sampler_cpu,
            server0.zip(server1).map(|(a, b)| b - a),
            peak,
            None,
            None,
        ))
    }

    /// One trial of the store alone: N puts here, then N gets and evictions in the consumer.
    async fn store_trial(
        &mut self,
        store: &StoreUnderTest,
        object: &Bytes,
        n: usize,
    ) -> Result<Trial> {
        let refs_file = self.work.join(format!("refs-{}", Key::random()));
        let sampler = MemorySampler::start(&self.client)?;
        let server0 = self.server_cpu();
        let cpu0 = process_cpu_s();
        let mut send_s = Vec::with_capacity(n);
        let mut refs = Vec::with_capacity(n);
        let t_put = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            let proxy = store.store.proxy(object).await?;
            send_s.push(t.elapsed().as_secs_f64());
            refs.push(
                proxy
                    .reference()
                    .context("an inline proxy")?
                    .to_bytes()
                    .to_vec(),
            );
        }
        let put_s = t_put.elapsed().as_secs_f64();
        let cpu1 = process_cpu_s();
        std::fs::write(&refs_file, postcard::to_stdvec(&refs)?)?;
        let mut job = self.job(
            Mode::Store {
                refs: refs_file.clone(),
            },
            "",
            object.len(),
            n,
        );
        job.store = Some(store.store.config().clone());
        self.consumer.send(&job)?;
        self.consumer.ready(self.timeout)?;
        let done = self.consumer.done(self.timeout);
        let _ = std::fs::remove_file(&refs_file);
        let done = done?;
        let server1 = self.server_cpu();
        let (peak, sampler_cpu) = sampler.finish()?;
        self.check_consumed(&done, n, &store.holds)?;
        let e2e = put_s + done.loop_s;
        Ok(Trial {
            e2e_s: e2e,
            objects_per_s: n as f64 / e2e,
            first_object_s: None,
            send_s,
            producer_cpu_s: cpu1 - cpu0 - sampler_cpu,
            consumer_cpu_s: done.cpu_s,
            server_cpu_s: server0.zip(server1).map(|(a, b)| b - a),
            redis_peak_bytes: peak,
            broker_bytes_per_object: None,
            broker_messages: None,
            put_s: Some(put_s),
            get_s: Some(done.loop_s),
        })
    }

    /// [`Bench::check`], and the store left empty.
    fn check_consumed(&self, done: &Done, n: usize, holds: &Holds) -> Result<()> {
        self.check(done, n)?;
        let left = self.leftovers(holds)?;
        ensure!(
            left == 0,
            "{left} objects left in the store after the trial"
        );
        Ok(())
    }

    fn check(&self, done: &Done, n: usize) -> Result<()> {
        ensure!(
            done.count == n && done.bad == 0,
            "the consumer got {} of {n} objects ({} not as sent, {} missed)",
            done.count,
            done.bad,
            done.missed
        );
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn trial(
    done: &Done,
    start_ns: u128,
    n: usize,
    send_s: Vec<f64>,
    producer_cpu_s: f64,
    server_cpu_s: Option<f64>,
    redis_peak_bytes: u64,
    broker_bytes_per_object: Option<f64>,
    broker_messages: Option<u64>,
) -> Trial {
    let since = |t: u128| (t as f64 - start_ns as f64) / 1e9;
    let e2e = since(done.t_last_ns.unwrap_or(done.t_end_ns));
    Trial {
        e2e_s: e2e,
        objects_per_s: n as f64 / e2e,
        first_object_s: done.t_first_ns.map(since),
        send_s,
        producer_cpu_s,
        consumer_cpu_s: done.cpu_s,
        server_cpu_s,
        redis_peak_bytes,
        broker_bytes_per_object,
        broker_messages,
        put_s: None,
        get_s: None,
    }
}

/// Files under `dir`, in subdirectories too.
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            _ => 1,
        })
        .sum()
}

/// Run the streams benchmark: print its table, write its JSON.
///
/// # Errors
/// When redis-server cannot start, a size does not parse or the consumer process cannot
/// start; a failed row is listed at the end of the table instead.
pub fn run(args: StreamsArgs) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; measure with `cargo run --release -p proxystore-cli -- bench streams`"
        );
    }
    proxystore::set_resolve_policy(proxystore::ResolvePolicy::allow_all());
    let wall = Instant::now();
    let sizes = crate::format::parse_sizes(&args.sizes)?;
    let batch_max = crate::format::parse_size(&args.batch_max_size)?;
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let (_guard, work) = work_dir(&parent)?;
    let server = RedisServer::start()?;
    let url = format!("redis://127.0.0.1:{}/0", server.port());
    let run_id = Key::random().as_str().replace('-', "")[..12].to_owned();
    let prefix = format!("bench-stream-{run_id}:");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let mut stores = Vec::new();
    for name in &args.stores {
        let (connector, holds): (Arc<dyn proxystore::Connector>, Holds) = match name {
            StoreName::Redis => {
                let store_prefix = format!("bench-stream-store-{run_id}:");
                let mut c = RedisConfig::new(url.clone());
                c.prefix = store_prefix.clone();
                (
                    Arc::new(RedisConnector::with_config(c)?),
                    Holds::Redis(store_prefix),
                )
            }
            StoreName::File => {
                let dir = work.join("stream-file-store");
                (Arc::new(FileConnector::new(&dir)?), Holds::Dir(dir))
            }
        };
        let store = Store::new(format!("bench-stream-{}-{run_id}", name.label()), connector);
        runtime.block_on(store.exists(&Key::random()))?;
        stores.push(StoreUnderTest {
            name: *name,
            store,
            holds,
        });
    }
    let nats = if args.brokers.contains(&BrokerName::Nats) {
        let server = NatsServer::start()?;
        let broker = runtime.block_on(connect_nats(Some(&server.url())))?;
        let js = {
            let _in_runtime = runtime.enter();
            async_nats::jetstream::new(broker.client().clone())
        };
        Some(Nats { server, broker, js })
    } else {
        None
    };
    let nats_url = nats.as_ref().map(|n| n.server.url());
    let mut brokers = HashMap::new();
    for b in &args.brokers {
        brokers.insert(
            *b,
            runtime.block_on(b.connect(&url, nats_url.as_deref(), &prefix))?,
        );
    }
    let timeout = Duration::from_secs_f64((20.0 * args.target_s).max(60.0));
    let mut bench = Bench {
        client: redis::Client::open(url.as_str())?,
        server,
        url,
        prefix,
        consumer: Consumer::start()?,
        brokers,
        nats,
        batch_delay: Duration::from_secs_f64(args.batch_delay),
        timeout,
        work: work.clone(),
    };
    eprintln!(
        "[bench] streams: redis-server pid {} at {}; files in {}",
        bench.server.pid(),
        bench.url,
        work.display()
    );

    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for &size in &sizes {
        let object = payload(size as usize);
        let n = args
            .n
            .unwrap_or_else(|| default_n(size, args.target_s))
            .max(1);
        let mut subjects = Vec::new();
        for s in &stores {
            for &broker in &args.brokers {
                for &batch in &args.batches {
                    for &pipeline in &args.pipelines {
                        if (batch == 1 && pipeline == 0) || size <= batch_max {
                            subjects.push(Subject::Stream {
                                broker,
                                store: s.name,
                                batch: batch.max(1),
                                pipeline,
                            });
                        }
                    }
                }
            }
        }
        for s in &stores {
            subjects.push(Subject::StorePiped { store: s.name });
        }
        subjects.push(Subject::RawList);
        if bench.nats.is_some() {
            subjects.push(Subject::RawJetStream);
        }
        // Last in each round: these pile up N objects (hundreds of MB at 10 MiB) before the
        // first get, and the machine takes a while to reclaim the memory; a row right after
        // one of them was measured up to 3x slower.
        for s in &stores {
            subjects.push(Subject::Store { store: s.name });
        }
        // Round robin: trial t of every row, then trial t + 1, so that the drift of a shared
        // machine (page cache, memory freed by the row before) falls on every row alike.
        let mut trials: Vec<Vec<Trial>> = subjects.iter().map(|_| Vec::new()).collect();
        let mut failed: Vec<Option<anyhow::Error>> = subjects.iter().map(|_| None).collect();
        for _ in 0..args.trials.max(1) {
            for (i, subject) in subjects.iter().enumerate() {
                if failed[i].is_some() {
                    continue;
                }
                let store = match *subject {
                    Subject::Stream { store, .. }
                    | Subject::Store { store }
                    | Subject::StorePiped { store } => stores.iter().find(|s| s.name == store),
                    Subject::RawList | Subject::RawJetStream => None,
                };
                let result = match (*subject, store) {
                    (
                        Subject::Stream {
                            broker,
                            batch,
                            pipeline,
                            ..
                        },
                        Some(s),
                    ) => {
                        runtime.block_on(bench.stream_trial(broker, s, batch, pipeline, &object, n))
                    }
                    (Subject::Store { .. }, Some(s)) => {
                        runtime.block_on(bench.store_trial(s, &object, n))
                    }
                    (Subject::StorePiped { .. }, Some(s)) => {
                        runtime.block_on(bench.piped_store_trial(s, &object, n))
                    }
                    (Subject::RawList, _) => bench.raw_trial(&object, n),
                    (Subject::RawJetStream, _) => {
                        runtime.block_on(bench.raw_jetstream_trial(&object, n))
                    }
                    _ => Err(anyhow!("no such store")),
                };
                match result {
                    Ok(t) => trials[i].push(t),
                    Err(e) => {
                        let (b, s, batch) = subject.labels();
                        eprintln!(
                            "[bench] FAILED {b} {s} {} batch {batch}: {e:#}",
                            fmt_size(size)
                        );
                        failed[i] = Some(e);
                        // Its state is unknown: a new consumer process for what follows.
                        bench.consumer = Consumer::start()?;
                    }
                }
            }
        }
        for ((subject, trials), failed) in subjects.into_iter().zip(trials).zip(failed) {
            let (b, s, batch) = subject.labels();
            if let Some(e) = failed {
                errors.push(format!("{b} {s} {} batch {batch}: {e:#}", fmt_size(size)));
                continue;
            }
            let row = Row::new(subject, size, n, trials);
            eprintln!(
                "[bench] stream {b:<14} {s:<6} {:>6} b={batch:<3} N={n:<6} {:>10.1} obj/s {:>10}  send p50 {}",
                fmt_size(size),
                row.objects_per_s,
                fmt_rate(row.bytes_per_s),
                fmt_time(row.send_p50_s),
            );
            rows.push(row);
        }
    }

    let python = if args.python {
        match run_python(&args, &work, bench.server.port(), &sizes, batch_max) {
            Ok(v) => Some(v),
            Err(e) => {
                errors.push(format!("python: {e:#}"));
                None
            }
        }
    } else {
        None
    };
    let py_cells: Vec<PyCell> = python
        .as_ref()
        .and_then(|p| p["streams"].as_array())
        .map(|a| a.iter().filter_map(PyCell::from_json).collect())
        .unwrap_or_default();
    let targets = targets(&rows, &py_cells);
    let text = render(&rows, &py_cells, &targets, &errors, &args, wall.elapsed());
    print!("{text}");
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "streams": rows,
            "config": {
                "sizes_bytes": sizes, "batches": args.batches, "batch_max_size_bytes": batch_max,
                "batch_delay_s": args.batch_delay, "trials": args.trials, "target_s": args.target_s,
                "n_fixed": args.n, "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
            },
            "targets": targets,
            "python": python,
            "errors": errors,
            "total_wall_s": wall.elapsed().as_secs_f64(),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("[bench] wrote {}", path.display());
    }
    for s in &stores {
        if let Holds::Redis(_) = s.holds {
            let _ = runtime.block_on(s.store.close());
        }
    }
    Ok(())
}

/// Python ProxyStore's streams section of the patterns benchmark, in this run, against the
/// Redis server on `port`.
fn run_python(
    args: &StreamsArgs,
    work: &Path,
    port: u16,
    sizes: &[u64],
    batch_max: u64,
) -> Result<serde_json::Value> {
    ensure!(
        args.python_script.exists(),
        "Python benchmark script {} not found (give its path with --python-script)",
        args.python_script.display()
    );
    crate::python::ensure_modules(
        &args.python_bin,
        "proxystore, redis",
        &["proxystore[all]", "redis"],
    )?;
    let out = work.join("python_patterns_streams.json");
    let table = work.join("python_patterns_streams.txt");
    let join = |v: Vec<String>| v.join(",");
    let mut cmd = Command::new(&args.python_bin);
    cmd.arg(&args.python_script)
        .arg("--skip-futures")
        .args([
            "--connectors",
            &join(args.stores.iter().map(|s| s.label().to_owned()).collect()),
        ])
        .args([
            "--stream-sizes",
            &join(sizes.iter().map(|s| fmt_size(*s)).collect()),
        ])
        .args([
            "--batch-sizes",
            &join(args.batches.iter().map(|b| b.to_string()).collect()),
        ])
        .args(["--batch-max-size", &fmt_size(batch_max)])
        .args(["--stream-trials", &args.trials.to_string()])
        .args(["--redis-port", &port.to_string()])
        .arg("--tmpdir")
        .arg(work);
    crate::python::run_script(cmd, &out, &table)
}

/// A row of Python's streams section.
#[derive(Debug)]
struct PyCell {
    /// `redis` or `file`; `None`: the raw list.
    store: Option<String>,
    size: u64,
    batch: Option<usize>,
    n: u64,
    objects_per_s: f64,
    bytes_per_s: f64,
    spread: Option<f64>,
    first_object_s: Option<f64>,
    send_p50_s: Option<f64>,
    producer_cpu_s: Option<f64>,
    consumer_cpu_s: Option<f64>,
}

impl PyCell {
    fn from_json(c: &serde_json::Value) -> Option<Self> {
        let variant = c["variant"].as_str()?;
        Some(PyCell {
            store: variant.strip_prefix("ps-").map(str::to_owned),
            size: c["size_bytes"].as_u64()?,
            batch: c["batch_size"].as_u64().map(|b| b as usize),
            n: c["n"].as_u64().unwrap_or(0),
            objects_per_s: c["objects_per_s"].as_f64()?,
            bytes_per_s: c["bytes_per_s"].as_f64().unwrap_or(f64::NAN),
            spread: c["trial_spread"].as_f64(),
            first_object_s: c["first_object_latency_s"].as_f64(),
            send_p50_s: c["send_s"]["median"].as_f64(),
            producer_cpu_s: c["producer_cpu_s"].as_f64(),
            consumer_cpu_s: c["consumer_cpu_s"].as_f64(),
        })
    }
}

/// The Python row that a row of ours compares with.
fn python_peer<'a>(row: &Row, py: &'a [PyCell]) -> Option<&'a PyCell> {
    py.iter().find(|c| {
        c.size == row.size_bytes
            && match row.subject {
                Subject::Stream { store, batch, .. } => {
                    c.store.as_deref() == Some(store.label()) && c.batch == Some(batch)
                }
                Subject::RawList => c.store.is_none(),
                Subject::RawJetStream | Subject::Store { .. } | Subject::StorePiped { .. } => false,
            }
    })
}

/// The raw baseline of a row: the same bytes through its broker itself (a JetStream stream for
/// NATS rows, a Redis list for the others).
fn raw_peer<'a>(rows: &'a [Row], row: &Row) -> Option<&'a Row> {
    let raw = match row.subject {
        Subject::Stream {
            broker: BrokerName::Nats,
            ..
        } => Subject::RawJetStream,
        _ => Subject::RawList,
    };
    rows.iter()
        .find(|r| r.subject == raw && r.size_bytes == row.size_bytes)
}

/// The store alone, pipelined like a stream (put, pipe, get): the anchor of the stream's
/// throughput at large sizes.
fn store_peer(rows: &[Row], store: StoreName, size: u64) -> Option<&Row> {
    rows.iter()
        .find(|r| r.subject == Subject::StorePiped { store } && r.size_bytes == size)
}

/// One of the targets, checked for one row.
#[derive(Debug, Serialize)]
struct Target {
    target: String,
    row: String,
    ratio: f64,
    needed: f64,
    met: bool,
}

/// The targets: at 1 KiB at least 10x Python's objects/s and above the raw Redis
/// list; at the largest size (10 MiB) within 10% of the store's own throughput; broker memory
/// bounded by the events (bytes on the broker per object the same at every size).
fn targets(rows: &[Row], py: &[PyCell]) -> Vec<Target> {
    let mut out = Vec::new();
    let largest = rows.iter().map(|r| r.size_bytes).max().unwrap_or(0);
    let smallest = rows.iter().map(|r| r.size_bytes).min().unwrap_or(0);
    let mut push = |target: &str, row: &Row, ratio: f64, needed: f64| {
        let (b, s, batch) = row.subject.labels();
        out.push(Target {
            target: target.to_owned(),
            row: format!("{b} {s} {} batch {batch}", fmt_size(row.size_bytes)),
            ratio,
            needed,
            met: ratio >= needed,
        });
    };
    for r in rows {
        let Subject::Stream { broker, store, .. } = r.subject else {
            continue;
        };
        if r.size_bytes == 1024 {
            if let Some(p) = python_peer(r, py) {
                push(
                    "1 KiB: >= 10x Python ProxyStore's objects/s",
                    r,
                    r.objects_per_s / p.objects_per_s,
                    10.0,
                );
            }
            if let Some(raw) = raw_peer(rows, r) {
                push(
                    "1 KiB: above the raw broker (a Redis list; JetStream for NATS rows)",
                    r,
                    r.objects_per_s / raw.objects_per_s,
                    1.0,
                );
            }
        }
        if r.size_bytes == largest
            && largest >= 10 << 20
            && let Some(s) = store_peer(rows, store, r.size_bytes)
        {
            push(
                "10 MiB: within 10% of the store's own throughput (put, pipe, get)",
                r,
                r.objects_per_s / s.objects_per_s,
                0.9,
            );
        }
        if r.size_bytes == largest
            && largest > smallest
            && let Some(big) = r.broker_bytes_per_object
            && let Some(small) = rows
                .iter()
                .find(|o| {
                    o.size_bytes == smallest
                        && matches!(o.subject, Subject::Stream { broker: b, store: s, batch: 1, pipeline: 0 } if b == broker && s == store)
                })
                .and_then(|o| o.broker_bytes_per_object)
        {
            // Bounded by the events: a 10 MiB object takes no more room on the broker than a
            // 1 KiB one (needed: at most 1.5x, i.e. ratio small/big at least 1/1.5).
            push(
                "broker memory bounded by the events (stream bytes per object, smallest size / largest)",
                r,
                small / big,
                1.0 / 1.5,
            );
        }
    }
    out
}

fn opt_time(v: Option<f64>) -> String {
    v.map_or("-".into(), fmt_time)
}

fn fmt_bytes(b: f64) -> String {
    if !b.is_finite() {
        "-".into()
    } else if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

fn render(
    rows: &[Row],
    py: &[PyCell],
    targets: &[Target],
    errors: &[String],
    args: &StreamsArgs,
    wall: Duration,
) -> String {
    let mut t = String::new();
    t.push_str(&format!(
        "Streams of proxies: producer (this process) -> consumer (another process); end to end = first send -> last object resolved in the consumer; median of {} trials (spread: (max - min) / median); MB = 1e6 B\n\n",
        args.trials.max(1)
    ));
    t.push_str("| impl | broker | store | size | batch | N | objects/s (spread) | MB/s | first object | send p50 | CPU us/object prod/cons/servers | on the broker per object | Redis peak | ours/Python | ours/raw broker |\n");
    t.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let per_object = 1e6 / r.n.max(1) as f64;
        let (b, s, batch) = r.subject.labels();
        let vs_py =
            python_peer(r, py).map_or("-".into(), |p| fmt_ratio(r.objects_per_s / p.objects_per_s));
        let vs_raw = match r.subject {
            Subject::RawList | Subject::RawJetStream => "-".into(),
            _ => raw_peer(rows, r).map_or("-".into(), |raw| {
                fmt_ratio(r.objects_per_s / raw.objects_per_s)
            }),
        };
        let send = match r.subject {
            Subject::Store { .. } | Subject::StorePiped { .. } => {
                format!("{} (put)", fmt_time(r.send_p50_s))
            }
            Subject::RawList => format!("{} (RPUSH)", fmt_time(r.send_p50_s)),
            Subject::RawJetStream => format!("{} (publish)", fmt_time(r.send_p50_s)),
            Subject::Stream { .. } => fmt_time(r.send_p50_s),
        };
        let on_broker = match (r.subject, r.broker_bytes_per_object) {
            (_, Some(b)) => format!(
                "{} ({} messages)",
                fmt_bytes(b),
                r.broker_messages.unwrap_or(0)
            ),
            (Subject::Stream { .. }, None) => "nothing kept".into(),
            (Subject::RawList | Subject::RawJetStream, None) => "the object".into(),
            (Subject::Store { .. } | Subject::StorePiped { .. }, None) => "-".into(),
        };
        t.push_str(&format!(
            "| Rust | {b} | {s} | {} | {batch} | {} | {:.0} ({:.0}%) | {:.1} | {} | {} | {:.0}/{:.0}/{} | {on_broker} | {} | {vs_py} | {vs_raw} |\n",
            fmt_size(r.size_bytes),
            r.n,
            r.objects_per_s,
            r.spread * 100.0,
            r.bytes_per_s / 1e6,
            opt_time(r.first_object_s),
            send,
            r.producer_cpu_s * per_object,
            r.consumer_cpu_s * per_object,
            r.server_cpu_s
                .map_or("-".into(), |c| format!("{:.0}", c * per_object)),
            fmt_bytes(r.redis_peak_bytes as f64),
        ));
    }
    for c in py {
        let raw = py
            .iter()
            .find(|o| o.store.is_none() && o.size == c.size)
            .filter(|_| c.store.is_some());
        t.push_str(&format!(
            "| Python | {} | {} | {} | {} | {} | {:.0} ({}) | {:.1} | {} | {} | {}/{}/- | {} | - | | {} |\n",
            if c.store.is_some() {
                "Redis list (RedisQueue shim)"
            } else {
                "Redis list (RPUSH/BLPOP)"
            },
            c.store.as_deref().unwrap_or("-"),
            fmt_size(c.size),
            c.batch.map_or("-".into(), |b| b.to_string()),
            c.n,
            c.objects_per_s,
            c.spread
                .map_or("-".into(), |v| format!("{:.0}%", v * 100.0)),
            c.bytes_per_s / 1e6,
            opt_time(c.first_object_s),
            opt_time(c.send_p50_s),
            c.producer_cpu_s
                .map_or("-".into(), |v| format!("{:.0}", v * 1e6 / c.n.max(1) as f64)),
            c.consumer_cpu_s
                .map_or("-".into(), |v| format!("{:.0}", v * 1e6 / c.n.max(1) as f64)),
            if c.store.is_some() { "-" } else { "the object" },
            raw.map_or("-".into(), |r| fmt_ratio(c.objects_per_s / r.objects_per_s)),
        ));
    }
    if !targets.is_empty() {
        t.push_str("\nTargets:\n");
        for g in targets {
            t.push_str(&format!(
                "- {}: {}: {} (needed {}) {}\n",
                g.target,
                g.row,
                fmt_ratio(g.ratio),
                fmt_ratio(g.needed),
                if g.met { "MET" } else { "NOT MET" }
            ));
        }
    }
    if !errors.is_empty() {
        t.push_str("\nFailed:\n");
        for e in errors {
            t.push_str(&format!("- {e}\n"));
        }
    }
    t.push_str(&format!("\nwall time {:.1} s\n", wall.as_secs_f64()));
    t
}
