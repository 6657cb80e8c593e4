//! Streams of proxies on real brokers started by each test: Redis Streams and Redis pub/sub
//! (`redis-server`), NATS JetStream (`nats-server -js`).
//!
//! For each broker, a consumer process (`stream-node`) reads what this process sends: 1 KiB to
//! 64 MiB objects byte for byte, a filter, the end of the stream, 0 objects left. For the
//! at-least-once brokers (Redis Streams, JetStream): a consumer process killed mid-stream
//! leaves its unacknowledged objects to another, every object consumed after the acks; two
//! live consumers of a group both end; the broker killed and restarted mid-stream loses
//! nothing. Redis pub/sub: fan-out, and groups refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use proxystore::connector::file::FileConnector;
use proxystore::{Key, Store};
use proxystore_stream::broker::nats::{NatsBroker, NatsConfig};
use proxystore_stream::broker::redis_pubsub::RedisPubSubBroker;
use proxystore_stream::broker::redis_streams::{RedisStreamsBroker, RedisStreamsConfig};
use proxystore_stream::broker::{Broker, SubscribeOptions};
use proxystore_stream::{BatchPolicy, StreamConsumer, StreamProducer, metadata};
use proxystore_tests::nats_server::NatsServer;
use proxystore_tests::object;
use proxystore_tests::redis_server::RedisServer;

async fn broker(server: &RedisServer) -> RedisStreamsBroker {
    let mut config = RedisStreamsConfig::new(server.url());
    config.prefix = format!("test-{}:", Key::random());
    config.claim_idle = Duration::from_millis(500);
    config.block = Duration::from_millis(200);
    RedisStreamsBroker::connect(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_go_through_a_group_and_a_dead_consumers_events_are_redelivered() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e:#}"));
    let broker = broker(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        format!("rs-{}", Key::random()),
        FileConnector::new(dir.path()).unwrap(),
    );
    let producer = StreamProducer::<Vec<u8>>::new(broker.clone())
        .with_store(store.clone())
        .batch(BatchPolicy {
            max_events: 2,
            max_delay: Duration::from_millis(20),
        });
    let group = SubscribeOptions::group("workers");
    // The first consumer takes a message (two events) and dies without acknowledging it.
    let mut doomed = StreamConsumer::<Vec<u8>>::subscribe(&broker, "t", group.clone().named("a"))
        .await
        .unwrap();
    for i in 0..10u64 {
        producer
            .send(
                "t",
                &object(i, 50_000 + i as usize),
                metadata([("i", i.to_string())]),
            )
            .await
            .unwrap();
    }
    producer.close("t").await.unwrap();
    let taken = doomed.next().await.unwrap().unwrap();
    assert_eq!(taken.metadata["i"], "0");
    drop(doomed); // no ack: its message stays pending

    // Another consumer of the group gets everything, the dead one's message after it idles.
    let mut rescuer = StreamConsumer::<Vec<u8>>::subscribe(&broker, "t", group.named("b"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(20), rescuer.next())
        .await
        .expect("the stream goes on")
    {
        let item = item.unwrap();
        let i: u64 = item.metadata["i"].parse().unwrap();
        assert_eq!(
            *item.proxy.resolve().await.unwrap(),
            object(i, 50_000 + i as usize)
        );
        seen.push(i);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..10).collect::<Vec<_>>(), "every object once");
    rescuer.close().await.unwrap();
    // Consumed and acknowledged: the store is empty and nothing is pending in the group.
    let objects = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(objects, 0, "evicted after consumption");
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("test-*:t")
        .query_async(&mut con)
        .await
        .unwrap();
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg(&keys[0])
        .arg("workers")
        .query_async(&mut con)
        .await
        .unwrap();
    let redis::Value::Array(summary) = pending else {
        panic!("{pending:?}")
    };
    assert_eq!(
        summary[0],
        redis::Value::Int(0),
        "nothing left unacknowledged"
    );
}

/// Redis pub/sub: every subscriber gets every object (fan-out); a group is refused with a
/// typed error that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_fans_out_to_every_subscriber_and_refuses_groups() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e:#}"));
    let broker = RedisPubSubBroker::connect(&server.url(), format!("ps-{}:", Key::random()))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        format!("ps-{}", Key::random()),
        FileConnector::new(dir.path()).unwrap(),
    );
    let producer = StreamProducer::<Vec<u8>>::new(broker.clone())
        .with_store(store)
        .evict_after_consume(false);
    let mut a = StreamConsumer::<Vec<u8>>::subscribe(&broker, "t", SubscribeOptions::default())
        .await
        .unwrap();
    let mut b = StreamConsumer::<Vec<u8>>::subscribe(&broker, "t", SubscribeOptions::default())
        .await
        .unwrap();
    for i in 0..5u64 {
        producer
            .send("t", &object(i, 10_000), metadata([("i", i.to_string())]))
            .await
            .unwrap();
    }
    producer.close("t").await.unwrap();
    for c in [&mut a, &mut b] {
        let mut n = 0;
        while let Some(item) = tokio::time::timeout(Duration::from_secs(10), c.next())
            .await
            .expect("the stream ends")
        {
            let item = item.unwrap();
            assert_eq!(*item.proxy.resolve().await.unwrap(), object(n, 10_000));
            n += 1;
        }
        assert_eq!(n, 5);
        assert_eq!(c.missed(), 0);
    }
    let err = StreamConsumer::<Vec<u8>>::subscribe(&broker, "t", SubscribeOptions::group("g"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no consumer groups"), "{err}");
}

/// A consumer of a group dies in the middle of a batched message, after consuming part of it:
/// the message is redelivered to another consumer of the group with every object still there
/// (a message's objects are evicted once all its events are consumed, just before its
/// acknowledgement; they were evicted one by one before, and the redelivered events of the
/// consumed ones pointed to nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_redelivered_after_its_consumer_died_mid_message_still_has_its_objects() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e:#}"));
    let broker = broker(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        format!("rs-mid-{}", Key::random()),
        FileConnector::new(dir.path()).unwrap(),
    );
    let producer = StreamProducer::<Vec<u8>>::new(broker.clone())
        .with_store(store)
        .batch(BatchPolicy {
            max_events: 4,
            max_delay: Duration::from_secs(60),
        });
    let group = SubscribeOptions::group("workers");
    let mut doomed = StreamConsumer::<Vec<u8>>::subscribe(&broker, "t", group.clone().named("a"))
        .await
        .unwrap();
    for i in 0..8u64 {
        producer
            .send("t", &object(i, 2000), metadata([("i", i.to_string())]))
            .await
            .unwrap();
    }
    producer.close("t").await.unwrap();
    // Three of the first message's four events: the first two are consumed.
    for i in 0..3u64 {
        let item = doomed.next().await.unwrap().unwrap();
        assert_eq!(*item.proxy.resolve().await.unwrap(), object(i, 2000));
    }
    drop(doomed);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        8,
        "nothing evicted yet"
    );

    let mut rescuer = StreamConsumer::<Vec<u8>>::subscribe(&broker, "t", group.named("b"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(20), rescuer.next())
        .await
        .expect("the stream goes on")
    {
        let item = item.unwrap();
        let i: u64 = item.metadata["i"].parse().unwrap();
        assert_eq!(*item.proxy.resolve().await.unwrap(), object(i, 2000));
        seen.push(i);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..8).collect::<Vec<_>>(), "every object, resolvable");
    rescuer.close().await.unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "then evicted"
    );
}

/// With the default configuration (reads block up to 1 s, past the Redis client's default
/// response timeout of 500 ms), both consumers of a group end soon after the producer closes:
/// the one the end message does not reach learns it when a read comes back empty. (Every such
/// read timed out, and it ended only at its next claim, 15 s later.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams_with_default_reads_both_consumers_of_a_group_end_soon_after_close() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e:#}"));
    let mut config = RedisStreamsConfig::new(server.url());
    config.prefix = format!("idle-{}:", Key::random());
    let broker = RedisStreamsBroker::connect(config).await.unwrap();
    let name = format!("idle-{}", Key::random());
    let store = Store::new(
        name.clone(),
        proxystore::connector::memory::MemoryConnector::new(&name),
    );
    let consume = |name: &'static str| {
        let broker = broker.clone();
        tokio::spawn(async move {
            let mut c = StreamConsumer::<Vec<u8>>::subscribe(
                &broker,
                "t",
                SubscribeOptions::group("pair").named(name),
            )
            .await
            .unwrap();
            let mut n = 0;
            while let Some(item) = c.next().await {
                item.unwrap();
                n += 1;
            }
            n
        })
    };
    let (a, b) = (consume("a"), consume("b"));
    let producer = StreamProducer::<Vec<u8>>::new(broker.clone()).with_store(store);
    for i in 0..4u64 {
        producer
            .send("t", &object(i, 100), metadata([("i", i.to_string())]))
            .await
            .unwrap();
    }
    producer.close("t").await.unwrap();
    let closed = tokio::time::Instant::now();
    let a = tokio::time::timeout(Duration::from_secs(30), a)
        .await
        .unwrap()
        .unwrap();
    let b = tokio::time::timeout(Duration::from_secs(30), b)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a + b, 4);
    assert!(
        closed.elapsed() < Duration::from_secs(5),
        "the consumers ended {:?} after the close",
        closed.elapsed()
    );
}

/// A broker under test, its server, and how to reach it from this process and from a
/// `stream-node` process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    RedisStreams,
    RedisPubSub,
    Nats,
}

enum Server {
    Redis(RedisServer),
    Nats(NatsServer),
}

impl Server {
    /// A server for `kind`; `persistent`: what it acknowledged survives a kill and restart.
    fn start(kind: Kind, persistent: bool) -> Server {
        let started = match kind {
            Kind::Nats => NatsServer::start().map(Server::Nats),
            _ if persistent => RedisServer::start_persistent().map(Server::Redis),
            _ => RedisServer::start().map(Server::Redis),
        };
        started.unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn url(&self) -> String {
        match self {
            Server::Redis(s) => s.url(),
            Server::Nats(s) => s.url(),
        }
    }

    /// Kill it (SIGKILL) and start it again on the same port with the same data.
    fn restart(&mut self) {
        match self {
            Server::Redis(s) => s.restart(),
            Server::Nats(s) => s.restart(),
        }
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::RedisStreams => "redis-streams",
            Kind::RedisPubSub => "redis-pubsub",
            Kind::Nats => "nats",
        }
    }

    /// A prefix of keys or stream names of its own for each test.
    fn prefix(self) -> String {
        match self {
            Kind::Nats => format!("T{}_", Key::random().as_str().replace('-', "")),
            _ => format!("test-{}:", Key::random()),
        }
    }

    /// The broker, in this process.
    async fn broker(self, server: &Server, prefix: &str, claim: Duration) -> Arc<dyn Broker> {
        match self {
            Kind::RedisStreams => {
                let mut config = RedisStreamsConfig::new(server.url());
                config.prefix = prefix.to_owned();
                config.claim_idle = claim;
                config.block = Duration::from_millis(200);
                Arc::new(RedisStreamsBroker::connect(config).await.unwrap())
            }
            Kind::RedisPubSub => Arc::new(
                RedisPubSubBroker::connect(&server.url(), prefix)
                    .await
                    .unwrap(),
            ),
            Kind::Nats => {
                let mut config = NatsConfig::new(server.url());
                config.stream_prefix = prefix.to_owned();
                config.ack_wait = claim;
                config.block = Duration::from_millis(200);
                Arc::new(NatsBroker::connect(config).await.unwrap())
            }
        }
    }
}

/// A `stream-node` consumer process and its output.
struct Node {
    child: std::process::Child,
    out: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

/// What a consumer process printed about one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    i: u64,
    len: usize,
    sum: u64,
}

impl Node {
    /// Start a consumer of `topic` (`group` `-`: none) and wait until it has subscribed.
    #[allow(clippy::too_many_arguments)]
    fn start(
        kind: Kind,
        server: &Server,
        prefix: &str,
        topic: &str,
        group: &str,
        name: &str,
        claim_ms: u64,
        delay_ms: u64,
        filter: Option<&str>,
    ) -> Node {
        use std::io::BufRead as _;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_stream-node"));
        cmd.args([
            "consume",
            kind.name(),
            &server.url(),
            prefix,
            topic,
            group,
            name,
            &claim_ms.to_string(),
            &delay_ms.to_string(),
        ]);
        if let Some(f) = filter {
            cmd.arg(f);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = out.next().expect("the consumer starts").unwrap();
        assert_eq!(ready, "ready");
        Node { child, out }
    }

    /// The next line: `Ok(seen)` for an object (checked byte for byte by the consumer),
    /// `Err((missed, skipped))` at the end, `None` when the process died.
    fn next(&mut self) -> Option<Result<Seen, (u64, u64)>> {
        let line = self.out.next()?.unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["item", i, len, sum, ok] => {
                assert_eq!(*ok, "ok", "the consumer read other bytes: {line}");
                Some(Ok(Seen {
                    i: i.parse().unwrap(),
                    len: len.parse().unwrap(),
                    sum: sum.parse().unwrap(),
                }))
            }
            ["end", missed, skipped, _gone] => {
                Some(Err((missed.parse().unwrap(), skipped.parse().unwrap())))
            }
            _ => panic!("unexpected line from the consumer: {line}"),
        }
    }

    /// Everything up to the end; the process must exit successfully.
    fn until_end(mut self) -> (Vec<Seen>, (u64, u64)) {
        let mut seen = Vec::new();
        loop {
            match self.next().expect("the consumer ends the stream") {
                Ok(s) => seen.push(s),
                Err(end) => {
                    assert!(self.child.wait().unwrap().success());
                    return (seen, end);
                }
            }
        }
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn sum(bytes: &[u8]) -> u64 {
    bytes.iter().map(|&b| u64::from(b)).sum()
}

/// The sizes of the cross-process tests: 1 KiB to 64 MiB.
const SIZES: [usize; 8] = [
    1 << 10,
    64 << 10,
    1 << 20,
    3,
    16 << 20,
    64 << 20,
    10 << 10,
    1 << 20,
];

/// A producer here, a consumer process that resolves the even objects only: 1 KiB to 64 MiB
/// objects, byte for byte, the end of the stream, nothing missed, and 0 objects left.
/// With `pipeline` above 0, pipelined sends (`StreamProducer::pipeline`).
async fn cross_process_objects_filter_and_end(kind: Kind, pipeline: usize) {
    let server = Server::start(kind, false);
    let prefix = kind.prefix();
    let broker = kind.broker(&server, &prefix, Duration::from_secs(30)).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        format!("xp-{}", Key::random()),
        FileConnector::new(dir.path()).unwrap(),
    );
    let group = if kind == Kind::RedisPubSub { "-" } else { "g" };
    let node = Node::start(
        kind,
        &server,
        &prefix,
        "t",
        group,
        "a",
        30_000,
        0,
        Some("even"),
    );
    let producer = StreamProducer::<Vec<u8>>::with_broker(broker)
        .with_store(store)
        .batch(BatchPolicy {
            max_events: 3,
            max_delay: Duration::from_millis(20),
        })
        .pipeline(pipeline);
    for (i, size) in SIZES.iter().enumerate() {
        let i = i as u64;
        producer
            .send("t", &object(i, *size), metadata([("i", i.to_string())]))
            .await
            .unwrap();
    }
    producer.close("t").await.unwrap();
    let (seen, (missed, skipped)) = tokio::task::spawn_blocking(|| node.until_end())
        .await
        .unwrap();
    let expected: Vec<Seen> = SIZES
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(i, &size)| Seen {
            i: i as u64,
            len: size,
            sum: sum(&object(i as u64, size)),
        })
        .collect();
    assert_eq!(seen, expected, "the even objects, in order, byte for byte");
    assert_eq!((missed, skipped), (0, 0));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "every object evicted once consumed, the filtered ones too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams_cross_process_objects_filter_and_end() {
    cross_process_objects_filter_and_end(Kind::RedisStreams, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams_cross_process_pipelined_objects_filter_and_end() {
    cross_process_objects_filter_and_end(Kind::RedisStreams, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_pubsub_cross_process_objects_filter_and_end() {
    cross_process_objects_filter_and_end(Kind::RedisPubSub, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_pubsub_cross_process_pipelined_objects_filter_and_end() {
    cross_process_objects_filter_and_end(Kind::RedisPubSub, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cross_process_objects_filter_and_end() {
    cross_process_objects_filter_and_end(Kind::Nats, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cross_process_pipelined_objects_filter_and_end() {
    cross_process_objects_filter_and_end(Kind::Nats, 4).await;
}

/// Consumer processes of one group: the first works slowly and is killed (SIGKILL) holding
/// objects; the second gets the rest, the killed one's unacknowledged objects included. Every
/// object is seen, byte for byte, only the killed one's last unacknowledged one twice, and
/// the store is empty at the end.
async fn a_consumer_process_killed_mid_stream_leaves_its_objects_to_another(kind: Kind) {
    let server = Server::start(kind, false);
    let prefix = kind.prefix();
    let broker = kind
        .broker(&server, &prefix, Duration::from_millis(500))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        format!("xp-{}", Key::random()),
        FileConnector::new(dir.path()).unwrap(),
    );
    let sizes: Vec<usize> = (0..30).map(|i| 1024 << (i % 11)).collect(); // 1 KiB .. 1 MiB
    // The first consumer works slowly (100 ms an object): killed after 5, it holds many.
    let mut first = Node::start(kind, &server, &prefix, "t", "workers", "a", 500, 100, None);
    let producer = StreamProducer::<Vec<u8>>::with_broker(broker).with_store(store);
    for (i, size) in sizes.iter().enumerate() {
        let i = i as u64;
        producer
            .send("t", &object(i, *size), metadata([("i", i.to_string())]))
            .await
            .unwrap();
    }
    producer.close("t").await.unwrap();

    let check = |s: Seen| {
        assert_eq!(s.len, sizes[s.i as usize]);
        assert_eq!(s.sum, sum(&object(s.i, s.len)));
        s.i
    };
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(check(first.next().unwrap().unwrap()));
    }
    first.kill();
    // What it printed before it died (its last one unacknowledged).
    while let Some(line) = first.next() {
        seen.push(check(line.unwrap()));
    }
    let held = 30 - seen.len();
    assert!(
        held >= 10,
        "the first consumer was killed holding objects: {seen:?}"
    );

    let second = Node::start(kind, &server, &prefix, "t", "workers", "b", 500, 0, None);
    let (rest, _) = tokio::task::spawn_blocking(|| second.until_end())
        .await
        .unwrap();
    seen.extend(rest.into_iter().map(check));
    let mut distinct = seen.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct, (0..30).collect::<Vec<_>>(), "every object");
    // At least once: only what the killed consumer had not acknowledged comes twice: the
    // item it held, and the one before if its settlement (in the background, one round
    // trip) had not landed when it died.
    let before_kill = &seen[..30 - held];
    let last_two = &before_kill[before_kill.len().saturating_sub(2)..];
    let mut counts = std::collections::HashMap::new();
    for i in &seen {
        *counts.entry(*i).or_insert(0) += 1;
    }
    assert!(
        counts
            .iter()
            .all(|(i, &n)| n == 1 || (n == 2 && last_two.contains(i))),
        "duplicates beyond the last two handed out before the kill: {seen:?}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "all consumed and evicted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams_a_consumer_process_killed_mid_stream_leaves_its_objects_to_another() {
    a_consumer_process_killed_mid_stream_leaves_its_objects_to_another(Kind::RedisStreams).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_a_consumer_process_killed_mid_stream_leaves_its_objects_to_another() {
    a_consumer_process_killed_mid_stream_leaves_its_objects_to_another(Kind::Nats).await;
}

/// Two live consumers of one group share the objects, and both end when the producer closes
/// the topic, though the end message reaches only one of them.
async fn every_consumer_of_a_group_ends_when_the_producer_closes(kind: Kind) {
    let server = Server::start(kind, false);
    let prefix = kind.prefix();
    let broker = kind
        .broker(&server, &prefix, Duration::from_millis(500))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        format!("end-{}", Key::random()),
        FileConnector::new(dir.path()).unwrap(),
    );
    let producer = StreamProducer::<Vec<u8>>::with_broker(broker.clone()).with_store(store);
    let consume = |name: &'static str| {
        let broker = broker.clone();
        tokio::spawn(async move {
            let mut c = StreamConsumer::<Vec<u8>>::subscribe(
                &*broker,
                "t",
                SubscribeOptions::group("pair").named(name),
            )
            .await
            .unwrap();
            let mut seen = Vec::new();
            while let Some(item) = c.next().await {
                let item = item.unwrap();
                let i: u64 = item.metadata["i"].parse().unwrap();
                assert_eq!(*item.proxy.resolve().await.unwrap(), object(i, 1000));
                seen.push(i);
            }
            seen
        })
    };
    let (a, b) = (consume("a"), consume("b"));
    for i in 0..20u64 {
        producer
            .send("t", &object(i, 1000), metadata([("i", i.to_string())]))
            .await
            .unwrap();
    }
    producer.close("t").await.unwrap();
    let a = tokio::time::timeout(Duration::from_secs(20), a)
        .await
        .expect("the first consumer ends")
        .unwrap();
    let b = tokio::time::timeout(Duration::from_secs(20), b)
        .await
        .expect("the second consumer ends")
        .unwrap();
    let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..20).collect::<Vec<_>>(),
        "each object once: a {a:?}, b {b:?}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams_every_consumer_of_a_group_ends_when_the_producer_closes() {
    every_consumer_of_a_group_ends_when_the_producer_closes(Kind::RedisStreams).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_every_consumer_of_a_group_ends_when_the_producer_closes() {
    every_consumer_of_a_group_ends_when_the_producer_closes(Kind::Nats).await;
}

/// The broker is killed (SIGKILL) and started again mid-stream, with its data: the producer's
/// sends and the consumer process ride it out (temporary errors retried), and every object
/// reaches the consumer, byte for byte, none missed; 0 objects left. With `pipeline` above 0
/// the sends are pipelined: the background publishes ride it out, and `close` waits for them.
async fn the_broker_restarted_mid_stream_loses_nothing(kind: Kind, pipeline: usize) {
    let mut server = Server::start(kind, true);
    let prefix = kind.prefix();
    let broker = kind.broker(&server, &prefix, Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        format!("restart-{}", Key::random()),
        FileConnector::new(dir.path()).unwrap(),
    );
    let node = Node::start(kind, &server, &prefix, "t", "g", "a", 2_000, 0, None);
    let reader = tokio::task::spawn_blocking(|| node.until_end());
    let producer = StreamProducer::<Vec<u8>>::with_broker(broker)
        .with_store(store)
        .pipeline(pipeline);
    const N: u64 = 30;
    for i in 0..N {
        if i == N / 2 {
            server.restart();
        }
        producer
            .send("t", &object(i, 64 << 10), metadata([("i", i.to_string())]))
            .await
            .unwrap_or_else(|e| panic!("send {i} across the restart: {e}"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    producer.close("t").await.unwrap();
    let (seen, (missed, skipped)) = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the consumer ends")
        .unwrap();
    let mut distinct: Vec<u64> = seen.iter().map(|s| s.i).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct,
        (0..N).collect::<Vec<_>>(),
        "every object: {seen:?}"
    );
    for s in &seen {
        assert_eq!((s.len, s.sum), (64 << 10, sum(&object(s.i, 64 << 10))));
    }
    assert_eq!((missed, skipped), (0, 0));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams_the_broker_restarted_mid_stream_loses_nothing() {
    the_broker_restarted_mid_stream_loses_nothing(Kind::RedisStreams, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams_the_broker_restarted_mid_stream_loses_nothing_pipelined() {
    the_broker_restarted_mid_stream_loses_nothing(Kind::RedisStreams, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_the_broker_restarted_mid_stream_loses_nothing() {
    the_broker_restarted_mid_stream_loses_nothing(Kind::Nats, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_the_broker_restarted_mid_stream_loses_nothing_pipelined() {
    the_broker_restarted_mid_stream_loses_nothing(Kind::Nats, 8).await;
}

/// Objects of events never consumed do not leak the store: the topic's store has a TTL (the
/// Redis connector's `ttl_ms`), so when the only consumer group dies without consuming, the
/// objects expire. A consumer that comes later gets each such event's object as a typed
/// `NotFound` error, and the stream goes on to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_of_events_never_consumed_expire_with_the_stores_ttl() {
    use proxystore::connector::redis::{RedisConfig, RedisConnector};
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e:#}"));
    let prefix = Kind::RedisStreams.prefix();
    let mut config = RedisStreamsConfig::new(server.url());
    config.prefix = prefix;
    let broker = RedisStreamsBroker::connect(config).await.unwrap();
    let connector = RedisConnector::with_config(RedisConfig {
        ttl_ms: Some(500),
        prefix: format!("ttl-{}:", Key::random()),
        ..RedisConfig::new(server.url())
    })
    .unwrap();
    let store = Store::new(format!("ttl-{}", Key::random()), connector);
    let producer = StreamProducer::<Vec<u8>>::new(broker.clone()).with_store(store.clone());
    // The group's consumer takes the first object and dies without consuming anything.
    let mut doomed =
        StreamConsumer::<Vec<u8>>::subscribe(&broker, "t", SubscribeOptions::group("g").named("a"))
            .await
            .unwrap();
    let mut keys = Vec::new();
    for i in 0..5u64 {
        producer
            .send("t", &object(i, 10_000), metadata([("i", i.to_string())]))
            .await
            .unwrap();
    }
    producer.close("t").await.unwrap();
    let taken = doomed.next().await.unwrap().unwrap();
    keys.push(taken.proxy.key().unwrap().clone());
    drop(doomed);
    assert!(store.exists(&keys[0]).await.unwrap());

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!store.exists(&keys[0]).await.unwrap(), "expired");

    // A later consumer of another group: every object is gone, each a typed error.
    let mut late =
        StreamConsumer::<Vec<u8>>::subscribe(&broker, "t", SubscribeOptions::group("late"))
            .await
            .unwrap();
    let mut gone = 0;
    while let Some(next) = tokio::time::timeout(Duration::from_secs(10), late.next_object())
        .await
        .expect("the stream ends")
    {
        match next {
            Err(proxystore_stream::StreamError::Store(e)) => {
                assert!(e.is_not_found(), "{e}");
                gone += 1;
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
    assert_eq!(gone, 5);
}
