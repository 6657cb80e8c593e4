//! Pipelined sends over the in-process broker: order, the bound on events in flight, `close`
//! waiting for everything, and a failed background publish reported and retried.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use proxystore::connector::memory::MemoryConnector;
use proxystore::{Key, Store};
use proxystore_stream::broker::memory::MemoryBroker;
use proxystore_stream::broker::{Broker, Delivery, SubscribeOptions, Subscription};
use proxystore_stream::{
    BATCHED_PUT_BYTES, BatchPolicy, Metadata, StreamConsumer, StreamError, StreamProducer,
};

/// A memory broker whose publishes take `delay`, are refused while `refuse` is set, and are
/// recorded (messages per call).
#[derive(Clone, Default)]
struct Gate {
    inner: MemoryBroker,
    delay: Duration,
    refuse: Arc<AtomicBool>,
    calls: Arc<Mutex<Vec<usize>>>,
}

impl Gate {
    async fn pass(&self, n: usize) -> proxystore_stream::Result<()> {
        tokio::time::sleep(self.delay).await;
        if self.refuse.load(Ordering::SeqCst) {
            return Err(StreamError::Broker {
                broker: "gate".into(),
                message: "refused".into(),
                source: None,
                temporary: false,
            });
        }
        self.calls.lock().unwrap().push(n);
        Ok(())
    }
}

#[async_trait]
impl Broker for Gate {
    fn kind(&self) -> &str {
        "gate"
    }

    fn delivery(&self) -> Delivery {
        self.inner.delivery()
    }

    async fn publish(&self, topic: &str, message: Bytes) -> proxystore_stream::Result<()> {
        self.pass(1).await?;
        self.inner.publish(topic, message).await
    }

    async fn publish_many(
        &self,
        topic: &str,
        messages: Vec<Bytes>,
    ) -> proxystore_stream::Result<()> {
        self.pass(messages.len()).await?;
        self.inner.publish_many(topic, messages).await
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

fn store() -> (Store, MemoryConnector) {
    let name = format!("pipeline-{}", Key::random());
    let c = MemoryConnector::new(&name);
    (Store::new(name, c.clone()), c)
}

fn object(i: usize, size: usize) -> Vec<u8> {
    (0..size).map(|j| ((i * 7 + j * 13) % 251) as u8).collect()
}

/// Every object arrives, in order, byte for byte, each its own message, small and large
/// alike; sends run ahead of the publishes by at most the bound, and `close` returns once
/// everything is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_arrive_in_order_within_the_bound_and_close_waits_for_them() {
    let (store, segment) = store();
    let gate = Gate {
        delay: Duration::from_millis(5),
        ..Gate::default()
    };
    let producer = StreamProducer::<Vec<u8>>::new(gate.clone())
        .with_store(store)
        .pipeline(8);
    let mut consumer =
        StreamConsumer::<Vec<u8>>::subscribe(&gate, "t", SubscribeOptions::default())
            .await
            .unwrap();
    let size = |i: usize| {
        if i % 10 == 3 {
            BATCHED_PUT_BYTES + 1
        } else {
            100 + i
        }
    };
    let n = 60;
    for i in 0..n {
        producer
            .send("t", &object(i, size(i)), Metadata::new())
            .await
            .unwrap();
    }
    producer.close("t").await.unwrap();
    let calls = gate.calls.lock().unwrap().clone();
    assert_eq!(
        calls.iter().sum::<usize>(),
        n + 1,
        "each event a message, and the end"
    );
    assert!(
        calls.iter().all(|&c| c <= 9),
        "at most the bound (and the end) at once: {calls:?}"
    );
    assert!(calls.len() < n / 2, "publishes went together: {calls:?}");
    assert_eq!(
        segment.len(),
        n,
        "every object stored by the time close returns"
    );

    let mut i = 0;
    while let Some((value, _)) = consumer.next_object().await.map(Result::unwrap) {
        assert_eq!(value, object(i, size(i)));
        i += 1;
    }
    assert_eq!(i, n);
    assert_eq!(segment.len(), 0, "evicted after consumption");
}

/// Pipelined with batches: a batch takes what queued while the publish before it ran, up to
/// its size, without waiting for its delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_take_what_queued_meanwhile() {
    let (store, _segment) = store();
    let gate = Gate {
        delay: Duration::from_millis(5),
        ..Gate::default()
    };
    let producer = StreamProducer::<u64>::new(gate.clone())
        .with_store(store)
        .batch(BatchPolicy {
            max_events: 4,
            max_delay: Duration::from_secs(3600),
        })
        .pipeline(64);
    let mut consumer = StreamConsumer::<u64>::subscribe(&gate, "t", SubscribeOptions::default())
        .await
        .unwrap();
    for i in 0..100u64 {
        producer.send("t", &i, Metadata::new()).await.unwrap();
    }
    producer.flush("t").await.unwrap();
    let mut got = Vec::new();
    while got.len() < 100 {
        let (v, _) = tokio::time::timeout(Duration::from_secs(5), consumer.next_object())
            .await
            .expect("published without waiting for the batch's delay")
            .unwrap()
            .unwrap();
        got.push(v);
    }
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    let messages: usize = gate.calls.lock().unwrap().iter().sum();
    assert!(
        (25..100).contains(&messages),
        "batches of up to 4: {messages} messages"
    );
}

/// A background publish that fails keeps its events: the next send returns the error and
/// sends nothing, and a flush once the broker is back publishes them, each once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pipelined_publish_is_reported_by_the_next_send_and_retried_by_flush() {
    let (store, _segment) = store();
    // Slow enough that the first three are queued before the first publish fails.
    let gate = Gate {
        delay: Duration::from_millis(50),
        ..Gate::default()
    };
    let producer = StreamProducer::<u64>::new(gate.clone())
        .with_store(store)
        .pipeline(4)
        .retry_for(Duration::ZERO);
    let mut consumer = StreamConsumer::<u64>::subscribe(&gate, "t", SubscribeOptions::default())
        .await
        .unwrap();
    gate.refuse.store(true, Ordering::SeqCst);
    for i in 0..3u64 {
        producer.send("t", &i, Metadata::new()).await.unwrap();
    }
    // The background publish fails; a send soon meets its error.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let err = loop {
        if let Err(e) = producer.send("t", &99, Metadata::new()).await {
            break e;
        }
        assert!(tokio::time::Instant::now() < deadline, "no error reported");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(err.to_string().contains("refused"), "{err}");
    gate.refuse.store(false, Ordering::SeqCst);
    producer.close("t").await.unwrap();
    let mut got = Vec::new();
    while let Some((v, _)) = consumer.next_object().await.map(Result::unwrap) {
        got.push(v);
    }
    // The three, then the 99s sent before the error came (queued, so published), none lost
    // or twice.
    assert_eq!(got[..3], [0, 1, 2]);
    assert!(got[3..].iter().all(|&v| v == 99), "{got:?}");
    assert_eq!(consumer.duplicates(), 0);
}
