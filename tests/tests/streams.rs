//! Streams of proxies on Redis brokers, against a real `redis-server` started by each test:
//! Redis Streams (objects byte for byte through a group; a consumer that dies before
//! acknowledging has its events redelivered to another consumer of the group, every object
//! consumed once after the acks; the same with consumer processes, one killed mid-stream) and
//! Redis pub/sub (fan-out, no groups).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use proxystore::connector::file::FileConnector;
use proxystore::{Key, Store};
use proxystore_stream::broker::SubscribeOptions;
use proxystore_stream::broker::redis_streams::{RedisStreamsBroker, RedisStreamsConfig};
use proxystore_stream::{BatchPolicy, StreamConsumer, StreamProducer, metadata};
use proxystore_tests::redis_server::RedisServer;

fn object(i: u64, size: usize) -> Vec<u8> {
    (0..size)
        .map(|j| ((i as usize * 7 + j * 13) % 251) as u8)
        .collect()
}

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
    use proxystore_stream::broker::redis_pubsub::RedisPubSubBroker;
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

/// Consumer processes of one group on Redis Streams: the first is killed (SIGKILL) mid-stream;
/// the second gets the rest, the killed one's unacknowledged objects included. Every object is
/// seen, byte for byte, and the store is empty at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_process_killed_mid_stream_leaves_its_objects_to_another() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e:#}"));
    let prefix = format!("xp-{}:", Key::random());
    let mut config = RedisStreamsConfig::new(server.url());
    config.prefix = prefix.clone();
    let broker = RedisStreamsBroker::connect(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        format!("xp-{}", Key::random()),
        FileConnector::new(dir.path()).unwrap(),
    );
    let sizes: Vec<usize> = (0..30).map(|i| 1024 << (i % 11)).collect(); // 1 KiB .. 1 MiB
    // The first consumer works slowly (100 ms an object): killed after 5, it holds many.
    let node = |name: &str, delay: &str| {
        Command::new(env!("CARGO_BIN_EXE_stream-node"))
            .args([
                "consume",
                &server.url(),
                &prefix,
                "t",
                "workers",
                name,
                "500",
                delay,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };
    let mut first = node("a", "100");
    let producer = StreamProducer::<Vec<u8>>::new(broker).with_store(store.clone());
    for (i, size) in sizes.iter().enumerate() {
        producer
            .send(
                "t",
                &object(i as u64, *size),
                metadata([("i", i.to_string())]),
            )
            .await
            .unwrap();
    }
    producer.close("t").await.unwrap();

    let parse = |line: &str| -> (usize, usize, u64) {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[0], "item", "{line}");
        (
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
        )
    };
    let check = |(i, len, sum): (usize, usize, u64)| {
        let o = object(i as u64, sizes[i]);
        assert_eq!(len, o.len());
        assert_eq!(sum, o.iter().map(|&b| u64::from(b)).sum::<u64>());
        i
    };
    let mut seen = Vec::new();
    let mut out = BufReader::new(first.stdout.take().unwrap());
    for _ in 0..5 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        seen.push(check(parse(&line)));
    }
    first.kill().unwrap();
    first.wait().unwrap();

    // What it printed before it died (its last one unacknowledged).
    for line in out.lines() {
        seen.push(check(parse(&line.unwrap())));
    }
    let held = 30 - seen.len();
    assert!(
        held >= 10,
        "the first consumer was killed holding objects: {seen:?}"
    );

    let mut second = node("b", "0");
    let out = BufReader::new(second.stdout.take().unwrap());
    for line in out.lines() {
        let line = line.unwrap();
        if line == "end" {
            break;
        }
        seen.push(check(parse(&line)));
    }
    assert!(second.wait().unwrap().success());
    let mut distinct = seen.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct, (0..30).collect::<Vec<_>>(), "every object");
    // At least once: only what the killed consumer had not acknowledged comes twice.
    assert!(seen.len() - distinct.len() <= 1, "duplicates: {seen:?}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "all consumed and evicted"
    );
}

/// Two live consumers of one Redis Streams group share the objects, and both end when the
/// producer closes the topic, though the end message reaches only one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_consumer_of_a_group_ends_when_the_producer_closes() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e:#}"));
    let broker = broker(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        format!("rs-end-{}", Key::random()),
        FileConnector::new(dir.path()).unwrap(),
    );
    let producer = StreamProducer::<Vec<u8>>::new(broker.clone()).with_store(store);
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
