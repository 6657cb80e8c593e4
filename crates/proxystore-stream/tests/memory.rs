//! Streams over the in-process broker and a memory store: every object byte for byte, batches
//! by count and by time, the end of the stream, filters, evict-after-consume, consumer groups,
//! and bad input on the topic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use proxystore::connector::memory::MemoryConnector;
use proxystore::{Key, Store};
use proxystore_stream::broker::memory::MemoryBroker;
use proxystore_stream::broker::{Broker, SubscribeOptions};
use proxystore_stream::{BatchPolicy, Metadata, StreamConsumer, StreamError, StreamProducer};

fn store() -> (Store, MemoryConnector) {
    let name = format!("stream-{}", Key::random());
    let c = MemoryConnector::new(&name);
    (Store::new(name, c.clone()), c)
}

/// A producer over `broker` storing into `store` that publishes a batch every `max_events`
/// events or after `max_delay`, and a consumer of its topic `t`.
async fn batched(
    broker: &MemoryBroker,
    store: &Store,
    max_events: usize,
    max_delay: Duration,
) -> (StreamProducer<Vec<u8>>, StreamConsumer<Vec<u8>>) {
    let producer = StreamProducer::<Vec<u8>>::new(broker.clone())
        .with_store(store.clone())
        .batch(BatchPolicy {
            max_events,
            max_delay,
        });
    let consumer = StreamConsumer::<Vec<u8>>::subscribe(broker, "t", SubscribeOptions::default())
        .await
        .unwrap();
    (producer, consumer)
}

fn object(i: usize, size: usize) -> Vec<u8> {
    (0..size).map(|j| ((i * 7 + j * 13) % 251) as u8).collect()
}

fn meta(i: usize) -> Metadata {
    [
        ("index".to_owned(), i.to_string()),
        ("parity".to_owned(), (i % 2).to_string()),
    ]
    .into_iter()
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_arrive_byte_for_byte_in_batches_and_are_evicted_after_use() {
    let (store, segment) = store();
    let broker = MemoryBroker::new();
    let (producer, mut consumer) = batched(&broker, &store, 4, Duration::from_millis(20)).await;
    let sizes = [
        1024,
        1 << 20,
        10,
        64 << 10,
        3 << 20,
        0,
        5,
        100_000,
        1 << 16,
        7,
    ];
    for (i, size) in sizes.iter().enumerate() {
        producer
            .send("t", &object(i, *size), meta(i))
            .await
            .unwrap();
    }
    producer.close("t").await.unwrap();
    let mut n = 0;
    while let Some(item) = consumer.next().await {
        let item = item.unwrap();
        assert_eq!(item.sequence, n as u64);
        assert_eq!(item.metadata, meta(n));
        assert_eq!(*item.proxy.resolve().await.unwrap(), object(n, sizes[n]));
        n += 1;
    }
    assert_eq!(n, sizes.len(), "every object, then the end");
    assert_eq!(consumer.missed(), 0);
    assert_eq!(segment.len(), 0, "evicted after consumption");
    assert_eq!(broker.held("t"), 0);
    let err = producer
        .send("t", &vec![1], Metadata::new())
        .await
        .unwrap_err();
    assert!(matches!(err, StreamError::Closed { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_published_after_its_delay_without_a_flush() {
    let (store, _segment) = store();
    let broker = MemoryBroker::new();
    let producer = StreamProducer::<u32>::new(broker.clone())
        .with_store(store)
        .batch(BatchPolicy {
            max_events: 100,
            max_delay: Duration::from_millis(50),
        });
    let mut consumer = StreamConsumer::<u32>::subscribe(&broker, "t", SubscribeOptions::default())
        .await
        .unwrap();
    for i in 0..3u32 {
        producer.send("t", &i, Metadata::new()).await.unwrap();
    }
    for i in 0..3u32 {
        let item = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .expect("published by the delay")
            .unwrap()
            .unwrap();
        assert_eq!(*item.proxy.resolve().await.unwrap(), i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_skip_events_without_resolving_them() {
    let (store, segment) = store();
    // Registered: the consumer resolves through this store, whose metrics count the reads.
    proxystore::register_store(&store).unwrap();
    let broker = MemoryBroker::new();
    let producer = StreamProducer::<Vec<u8>>::new(broker.clone()).with_store(store.clone());
    let mut consumer =
        StreamConsumer::<Vec<u8>>::subscribe(&broker, "t", SubscribeOptions::default())
            .await
            .unwrap()
            .filter(|m| m.get("parity").map(String::as_str) == Some("0"));
    for i in 0..10 {
        producer.send("t", &object(i, 4096), meta(i)).await.unwrap();
    }
    producer.close("t").await.unwrap();
    let mut kept = Vec::new();
    while let Some((value, m)) = consumer.next_object().await.map(Result::unwrap) {
        assert_eq!(value, object(kept.len() * 2, 4096));
        kept.push(m["index"].clone());
    }
    assert_eq!(kept, ["0", "2", "4", "6", "8"]);
    // The odd ones were never read from the store, and they are gone too. The kept ones
    // came with one call: the consumer read the ten messages at once.
    let read = store.metrics().get;
    assert_eq!(read.count, 1, "the kept objects fetched together");
    assert!(
        read.bytes >= 5 * 4096 && read.bytes < 6 * 4096,
        "only the kept objects are read: {} bytes",
        read.bytes
    );
    assert_eq!(segment.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_are_not_ours_and_objects_that_are_gone_do_not_stop_the_stream() {
    let (store, _segment) = store();
    let broker = MemoryBroker::new();
    let producer = StreamProducer::<Vec<u8>>::new(broker.clone())
        .with_store(store.clone())
        .evict_after_consume(false);
    let mut consumer =
        StreamConsumer::<Vec<u8>>::subscribe(&broker, "t", SubscribeOptions::default())
            .await
            .unwrap();
    broker
        .publish("t", Bytes::from_static(b"hello, not a stream message"))
        .await
        .unwrap();
    producer.send("t", &object(0, 100), meta(0)).await.unwrap();
    producer.send("t", &object(1, 100), meta(1)).await.unwrap();
    producer.close("t").await.unwrap();

    let first = consumer.next().await.unwrap().unwrap();
    // The second object is evicted before anyone reads it.
    let second = consumer.next().await.unwrap().unwrap();
    store.evict(second.proxy.key().unwrap()).await.unwrap();
    assert_eq!(*first.proxy.resolve().await.unwrap(), object(0, 100));
    let err = second.proxy.resolve().await.unwrap_err();
    assert!(matches!(err, proxystore::Error::NotFound { .. }), "{err:?}");
    assert!(consumer.next().await.is_none(), "then the end");
    assert_eq!(consumer.skipped(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_each_get_every_object_and_share_them_within() {
    let (store, _segment) = store();
    let broker = MemoryBroker::new();
    let producer = StreamProducer::<u64>::new(broker.clone())
        .with_store(store)
        .evict_after_consume(false);
    let mut audit =
        StreamConsumer::<u64>::subscribe(&broker, "t", SubscribeOptions::group("audit"))
            .await
            .unwrap();
    // One message a read: each takes its share as it asks.
    let mut w1 = StreamConsumer::<u64>::subscribe(&broker, "t", SubscribeOptions::group("work"))
        .await
        .unwrap()
        .read_ahead(1);
    let mut w2 = StreamConsumer::<u64>::subscribe(&broker, "t", SubscribeOptions::group("work"))
        .await
        .unwrap()
        .read_ahead(1);
    for i in 0..20u64 {
        producer.send("t", &i, Metadata::new()).await.unwrap();
    }
    let mut all = Vec::new();
    for _ in 0..20 {
        all.push(
            *audit
                .next()
                .await
                .unwrap()
                .unwrap()
                .proxy
                .resolve()
                .await
                .unwrap(),
        );
    }
    assert_eq!(all, (0..20).collect::<Vec<_>>());
    let mut shared = Vec::new();
    for i in 0..20 {
        let c = if i % 2 == 0 { &mut w1 } else { &mut w2 };
        shared.push(
            *c.next()
                .await
                .unwrap()
                .unwrap()
                .proxy
                .resolve()
                .await
                .unwrap(),
        );
    }
    shared.sort_unstable();
    assert_eq!(
        shared,
        (0..20).collect::<Vec<_>>(),
        "each object to one worker"
    );
    // The end reaches one worker; the other learns it from the broker: both end.
    producer.close("t").await.unwrap();
    for c in [&mut w1, &mut w2, &mut audit] {
        let end = tokio::time::timeout(Duration::from_secs(5), c.next())
            .await
            .expect("every consumer of the group ends");
        assert!(end.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_without_a_store_is_a_typed_error() {
    let broker = MemoryBroker::new();
    let producer = StreamProducer::<u8>::new(broker);
    let err = producer
        .send("nowhere", &1, Metadata::new())
        .await
        .unwrap_err();
    assert!(matches!(err, StreamError::NoStore { .. }), "{err}");
    assert!(err.to_string().contains("nowhere"));
}

/// Evict-after-consume evicts a message's objects together once its events are consumed: one
/// eviction call per store and message (was one per event, a round trip each on a networked
/// store), in the background. A consumer that closes in the middle of a message of an
/// at-most-once broker still evicts what it consumed of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messages_objects_are_evicted_together_once_it_is_consumed() {
    let (store, segment) = store();
    // Registered: the consumer evicts through this store, whose metrics count the calls.
    proxystore::register_store(&store).unwrap();
    let broker = MemoryBroker::new();
    let (producer, mut consumer) = batched(&broker, &store, 4, Duration::from_secs(60)).await;
    for i in 0..12 {
        producer.send("t", &object(i, 1000), meta(i)).await.unwrap();
    }
    producer.close("t").await.unwrap();
    // The first message (four events): nothing is evicted until its last is consumed.
    for i in 0..4 {
        let item = consumer.next().await.unwrap().unwrap();
        assert_eq!(*item.proxy.resolve().await.unwrap(), object(i, 1000));
        assert_eq!(
            segment.len(),
            12,
            "held while its message is being consumed"
        );
    }
    // Asking for the fifth consumes the fourth: the first message's four objects go at once,
    // settled in the background.
    let item = consumer.next().await.unwrap().unwrap();
    eventually(|| segment.len() == 8).await;
    assert_eq!(store.metrics().evict.count, 1, "one call for the message");
    assert_eq!(*item.proxy.resolve().await.unwrap(), object(4, 1000));
    for i in 5..8 {
        let item = consumer.next().await.unwrap().unwrap();
        assert_eq!(*item.proxy.resolve().await.unwrap(), object(i, 1000));
    }
    let item = consumer.next().await.unwrap().unwrap();
    assert_eq!(item.sequence, 8);
    eventually(|| segment.len() == 4).await;
    assert_eq!(store.metrics().evict.count, 2);
    // Closing after two events of the third message: the memory broker does not redeliver
    // it, so what was consumed of it (two objects) is evicted; the rest stays.
    consumer.next().await.unwrap().unwrap();
    consumer.close().await.unwrap();
    assert_eq!(segment.len(), 2, "the two objects never consumed stay");
    proxystore::unregister_store(store.name());
}

/// In a batch, small objects are stored with one put when the batch is published and a larger
/// one as it is sent; `next_object` fetches a message's small objects with one get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batchs_small_objects_take_one_put_and_one_get() {
    let (store, segment) = store();
    let broker = MemoryBroker::new();
    let (producer, mut consumer) = batched(&broker, &store, 4, Duration::from_secs(60)).await;
    let big = proxystore_stream::BATCHED_PUT_BYTES + 1;
    let sizes = [10, 2000, big, 0, 100, 1, 5, 64];
    for (i, size) in sizes.iter().enumerate() {
        producer
            .send("t", &object(i, *size), meta(i))
            .await
            .unwrap();
        if i == 0 {
            assert_eq!(segment.len(), 0, "a small object waits for its batch");
        }
    }
    producer.close("t").await.unwrap();
    // One put for the big one at its send, one per batch of small ones.
    assert_eq!(store.metrics().put.count, 3);
    assert_eq!(segment.len(), sizes.len());

    // The consumer resolves through the store of that name registered in its process.
    proxystore::register_store(&store).unwrap();
    let reader = store.metrics();
    let mut n = 0;
    while let Some(got) = consumer.next_object().await {
        let (value, metadata) = got.unwrap();
        assert_eq!(value, object(n, sizes[n]));
        assert_eq!(metadata, meta(n));
        n += 1;
    }
    assert_eq!(n, sizes.len());
    let read = store.metrics();
    // Both messages are read at once: their seven small objects in one get, the big one
    // alone.
    assert_eq!(read.get.count - reader.get.count, 2);
    assert_eq!(segment.len(), 0, "evicted after consumption");
}

/// A memory connector whose puts fail while `refuse` is set.
#[derive(Debug)]
struct Refusing {
    inner: MemoryConnector,
    refuse: std::sync::atomic::AtomicBool,
}

impl Refusing {
    fn check(&self) -> proxystore::Result<()> {
        if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(proxystore::Error::backend_message(
                "refusing", "refused", true,
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl proxystore::Connector for Refusing {
    fn kind(&self) -> &str {
        "refusing"
    }
    async fn put_opts(&self, data: Bytes, o: &proxystore::PutOptions) -> proxystore::Result<Key> {
        self.check()?;
        self.inner.put_opts(data, o).await
    }
    async fn put_batch(
        &self,
        data: Vec<Bytes>,
        o: &proxystore::PutOptions,
    ) -> proxystore::Result<Vec<Key>> {
        self.check()?;
        self.inner.put_batch(data, o).await
    }
    async fn get(&self, key: &Key) -> proxystore::Result<Option<Bytes>> {
        self.inner.get(key).await
    }
    async fn exists(&self, key: &Key) -> proxystore::Result<bool> {
        self.inner.exists(key).await
    }
    async fn evict(&self, key: &Key) -> proxystore::Result<()> {
        self.inner.evict(key).await
    }
    fn config(&self) -> proxystore::ConnectorConfig {
        self.inner.config()
    }
}

/// A batch whose put fails keeps its events: the next flush stores and publishes them, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_put_failed_is_kept_for_the_next_flush() {
    let name = format!("stream-{}", Key::random());
    let segment = MemoryConnector::new(&name);
    let connector = std::sync::Arc::new(Refusing {
        inner: segment.clone(),
        refuse: false.into(),
    });
    let store = Store::new(
        name,
        connector.clone() as std::sync::Arc<dyn proxystore::Connector>,
    );
    let refuse = |on: bool| {
        connector
            .refuse
            .store(on, std::sync::atomic::Ordering::SeqCst)
    };
    let broker = MemoryBroker::new();
    let (producer, mut consumer) = batched(&broker, &store, 3, Duration::from_secs(60)).await;
    producer.send("t", &object(0, 10), meta(0)).await.unwrap();
    producer.send("t", &object(1, 10), meta(1)).await.unwrap();
    refuse(true);
    let err = producer
        .send("t", &object(2, 10), meta(2))
        .await
        .unwrap_err();
    assert!(matches!(err, StreamError::Store(_)), "{err:?}");
    assert_eq!(broker.held("t"), 0, "nothing published");
    refuse(false);
    producer.close("t").await.unwrap();
    let mut n = 0;
    while let Some(got) = consumer.next_object().await {
        let (value, _) = got.unwrap();
        assert_eq!(value, object(n, 10));
        n += 1;
    }
    assert_eq!(n, 3);
    assert_eq!(segment.len(), 0);
}

/// Wait up to 5 s for `done`.
async fn eventually(done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "not within 5 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
