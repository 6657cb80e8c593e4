//! The producer's side: objects into the topic's store, events through the broker.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use proxystore::trace::TraceContext;
use proxystore::{Codec, PutOptions, Reference, Store};
use proxystore_proto::v1::StreamEvent;
use serde::Serialize;
use tracing::Instrument;

use crate::broker::Broker;
use crate::error::{Result, StreamError};
use crate::outage::retrying;
use crate::{Metadata, event};

/// When a producer publishes the events it has buffered: after `max_events` events, or
/// `max_delay` after the first of them, whichever comes first. The default, one event and no
/// delay, publishes each event as it is sent.
///
/// In a batch, the objects of up to [`BATCHED_PUT_BYTES`] each are stored together, with one
/// put, when the batch is published: for small objects a round trip to the store per object
/// cost more than the object. Larger ones are stored as they are sent, so a batch holds at
/// most `max_events` small objects in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Events per message, at most.
    pub max_events: usize,
    /// How long an event may wait for others.
    pub max_delay: Duration,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy {
            max_events: 1,
            max_delay: Duration::ZERO,
        }
    }
}

/// In a batch of events, objects of at most this many bytes (encoded) are stored together when
/// the batch is published, larger ones as they are sent ([`BatchPolicy`]).
pub const BATCHED_PUT_BYTES: usize = 64 << 10;

/// Sends a stream of `T`: each object goes into its topic's store, and a small event (its
/// reference and metadata) through the broker, in batches by [`BatchPolicy`].
///
/// ```
/// # proxystore::runtime::block_on(async {
/// use proxystore::{Store, connector::memory::MemoryConnector};
/// use proxystore_stream::{StreamConsumer, StreamProducer, broker::memory::MemoryBroker, metadata};
///
/// let store = Store::new("stream-doc", MemoryConnector::new("stream-doc"));
/// let broker = MemoryBroker::new();
/// let producer = StreamProducer::<Vec<u8>>::new(broker.clone()).with_store(store);
/// let mut consumer = StreamConsumer::<Vec<u8>>::subscribe(&broker, "frames", Default::default()).await?;
///
/// producer.send("frames", &vec![7; 1 << 20], metadata([("camera", "3")])).await?;
/// producer.close("frames").await?;
///
/// while let Some(item) = consumer.next().await {
///     let item = item?;
///     assert_eq!(item.metadata["camera"], "3");
///     assert_eq!(item.proxy.len(), 1 << 20); // fetched here, on first use
/// }
/// # Ok::<_, proxystore_stream::StreamError>(()) })??;
/// # Ok::<_, proxystore_stream::StreamError>(())
/// ```
pub struct StreamProducer<T> {
    inner: Arc<Inner>,
    _value: PhantomData<fn(&T)>,
}

impl<T> std::fmt::Debug for StreamProducer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamProducer")
            .field("broker", &self.inner.broker.kind())
            .field("batch", &self.inner.batch)
            .field("evict", &self.inner.evict)
            .finish_non_exhaustive()
    }
}

struct Inner {
    broker: Arc<dyn Broker>,
    default_store: Option<Store>,
    stores: HashMap<String, Store>,
    batch: BatchPolicy,
    /// Events in flight per topic, at most, with sends pipelined; 0: each send waits.
    pipeline: usize,
    evict: bool,
    retry_for: Duration,
    topics: Mutex<HashMap<String, TopicState>>,
}

/// A topic's state in this producer.
struct TopicState {
    /// This producer's id on the topic.
    producer: String,
    /// Objects sent so far (the next sequence number).
    sent: u64,
    /// Events not yet published.
    pending: Vec<Pending>,
    /// Bumped at each publish: a delayed flush of an older batch does nothing.
    generation: u64,
    closed: bool,
    /// Events sent and not yet published (pending, or being published).
    in_flight: usize,
    /// A background flush runs (pipelined sends).
    flusher: bool,
    /// The error of the last background flush, for the next send.
    failed: Option<StreamError>,
    /// Held while events are taken and published: publishes of a topic do not overtake each
    /// other.
    publishing: Arc<tokio::sync::Mutex<()>>,
    /// Woken when events are published or a background flush fails.
    progress: Arc<tokio::sync::Notify>,
}

/// An event not yet published.
enum Pending {
    /// Ready to publish: its object is stored (or it has none).
    Event(StreamEvent),
    /// A small object of a batch, encoded at `send`, stored with its batch.
    Object(Box<Unstored>),
}

/// A small object of a batch, not yet stored, and its event's fields.
struct Unstored {
    data: Bytes,
    codec: Codec,
    type_name: &'static str,
    metadata: Metadata,
    sequence: u64,
    /// The context of its `send`, for its reference: the put runs later, in the flush.
    trace: Option<TraceContext>,
}

impl TopicState {
    fn new() -> Self {
        TopicState {
            producer: proxystore::Key::random().as_str().to_owned(),
            sent: 0,
            pending: Vec::new(),
            generation: 0,
            closed: false,
            in_flight: 0,
            flusher: false,
            failed: None,
            publishing: Arc::default(),
            progress: Arc::default(),
        }
    }

    /// Queue `pending` as the next event.
    fn push(&mut self, pending: Pending) {
        self.pending.push(pending);
        self.in_flight += 1;
    }
}

impl<T> StreamProducer<T> {
    /// A producer publishing through `broker`; give it stores with
    /// [`StreamProducer::with_store`] or [`StreamProducer::topic_store`].
    pub fn new(broker: impl Broker) -> Self {
        Self::with_broker(Arc::new(broker))
    }

    /// [`StreamProducer::new`] with a shared broker.
    pub fn with_broker(broker: Arc<dyn Broker>) -> Self {
        StreamProducer {
            inner: Arc::new(Inner {
                broker,
                default_store: None,
                stores: HashMap::new(),
                batch: BatchPolicy::default(),
                pipeline: 0,
                evict: true,
                retry_for: crate::outage::DEFAULT_RETRY_FOR,
                topics: Mutex::new(HashMap::new()),
            }),
            _value: PhantomData,
        }
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::get_mut(&mut self.inner).unwrap_or_else(|| unreachable!("configured before use"))
    }

    /// The store of every topic without a store of its own.
    #[must_use]
    pub fn with_store(mut self, store: Store) -> Self {
        self.inner_mut().default_store = Some(store);
        self
    }

    /// The store of `topic`.
    #[must_use]
    pub fn topic_store(mut self, topic: impl Into<String>, store: Store) -> Self {
        self.inner_mut().stores.insert(topic.into(), store);
        self
    }

    /// Batch events ([`BatchPolicy`]).
    #[must_use]
    pub fn batch(mut self, policy: BatchPolicy) -> Self {
        self.inner_mut().batch = BatchPolicy {
            max_events: policy.max_events.max(1),
            ..policy
        };
        self
    }

    /// Pipeline sends, with up to `max_in_flight` events per topic sent and not yet published
    /// (0, the default: each `send` waits until its event is published, or buffered in its
    /// batch).
    ///
    /// A pipelined `send` encodes its value and queues it, waiting only while
    /// `max_in_flight` events are queued; a task in the background stores the queued
    /// objects (the small ones, up to [`BATCHED_PUT_BYTES`], with one put) and publishes
    /// their events in order, all at once (one round trip on brokers that pipeline), while
    /// the next ones queue. Each event is still a broker message of its own, or of a batch
    /// by [`BatchPolicy`]: a batch then takes what queued meanwhile, up to `max_events`,
    /// without waiting for more. [`StreamProducer::flush`] and [`StreamProducer::close`]
    /// wait for everything sent before them. If the background publish fails (once
    /// [`StreamProducer::retry_for`] is spent), its events stay queued, and the next `send`
    /// on the topic returns the error (sending nothing) while the next `flush` or `close`
    /// tries them again. Events still queued when the process exits are lost: flush or close
    /// first. This is how Kafka's producers send.
    ///
    /// ```
    /// # proxystore::runtime::block_on(async {
    /// use proxystore::{Store, connector::memory::MemoryConnector};
    /// use proxystore_stream::{StreamProducer, broker::memory::MemoryBroker, Metadata};
    ///
    /// let store = Store::new("pipelined-doc", MemoryConnector::new("pipelined-doc"));
    /// let producer = StreamProducer::<u64>::new(MemoryBroker::new())
    ///     .with_store(store)
    ///     .pipeline(64);
    /// for i in 0..1000 {
    ///     producer.send("counts", &i, Metadata::new()).await?; // queued
    /// }
    /// producer.close("counts").await?; // all 1000 published, then the end of the stream
    /// # Ok::<_, proxystore_stream::StreamError>(()) })??;
    /// # Ok::<_, proxystore_stream::StreamError>(())
    /// ```
    #[must_use]
    pub fn pipeline(mut self, max_in_flight: usize) -> Self {
        self.inner_mut().pipeline = max_in_flight;
        self
    }

    /// Whether consumers evict each object once they have consumed it (default `true`: a topic
    /// with one consumer group): the objects of a broker message go together once all its
    /// events are consumed, before the message is acknowledged. Turn it off for topics several
    /// groups read; then bound the objects' life by the store (a TTL, a lease).
    #[must_use]
    pub fn evict_after_consume(mut self, evict: bool) -> Self {
        self.inner_mut().evict = evict;
        self
    }

    /// How long a publish that failed with a temporary broker error (the broker restarting, a
    /// lost connection) is tried again, with backoff, before `send`, `flush` or `close`
    /// returns the error (default 30 s; zero: at once). The same message is published again,
    /// so a broker that took the first try and lost only its answer may deliver it twice
    /// (NATS JetStream drops the copy by its message id; Redis Streams delivers both).
    #[must_use]
    pub fn retry_for(mut self, budget: Duration) -> Self {
        self.inner_mut().retry_for = budget;
        self
    }

    /// Publish what `topic` has buffered (or queued, with [`StreamProducer::pipeline`]):
    /// when it returns, every event sent before is published.
    ///
    /// # Errors
    /// The store's or the broker's error; the events stay buffered for the next try.
    pub async fn flush(&self, topic: &str) -> Result<()> {
        self.inner.flush(topic).await
    }

    /// Flush every topic.
    ///
    /// # Errors
    /// The first broker error; every topic is tried.
    pub async fn flush_all(&self) -> Result<()> {
        let topics: Vec<String> = self.inner.topics().keys().cloned().collect();
        let mut first = None;
        for t in topics {
            if let Err(e) = self.inner.flush(&t).await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// End `topic`: publish what is buffered and an end-of-stream event, after which its
    /// consumers' iteration ends. Sending on it again is [`StreamError::Closed`].
    ///
    /// # Errors
    /// The broker's error.
    pub async fn close(&self, topic: &str) -> Result<()> {
        let producer = {
            let mut topics = self.inner.topics();
            let state = topics
                .entry(topic.to_owned())
                .or_insert_with(TopicState::new);
            if !state.closed {
                state.closed = true;
                let end = event::end(state.sent);
                state.push(Pending::Event(end));
            }
            state.producer.clone()
        };
        self.inner.flush(topic).await?;
        // For the consumers of a group that the end message does not reach.
        retrying!(
            self.inner.retry_for,
            "mark_ended",
            self.inner.broker.mark_ended(topic, &producer)
        )
    }
}

impl<T: Serialize + 'static> StreamProducer<T> {
    /// Send `value` on `topic` with `metadata`: the value goes into the topic's store now (a
    /// small one in a batch: with its batch, [`BatchPolicy`]), its event is published now or
    /// with its batch. Pipelined ([`StreamProducer::pipeline`]): both in the background.
    ///
    /// # Errors
    /// [`StreamError::NoStore`], [`StreamError::Closed`], the store's error (nothing is
    /// published then; a batch's put failing keeps its events buffered for the next flush),
    /// the broker's error once [`StreamProducer::retry_for`] is spent (the events stay
    /// buffered; a later flush retries). Pipelined: the error of the background publish of
    /// earlier events (this value is not sent then).
    pub async fn send(&self, topic: &str, value: &T, metadata: Metadata) -> Result<()> {
        let store = self.inner.store(topic)?;
        let span = tracing::info_span!(
            "proxystore.stream.send",
            otel.kind = "producer",
            topic,
            store = store.name(),
            broker = self.inner.broker.kind(),
        );
        async {
            if self.inner.topics().get(topic).is_some_and(|s| s.closed) {
                return Err(StreamError::Closed {
                    topic: topic.to_owned(),
                });
            }
            let pipelined = self.inner.pipeline > 0;
            let batched = self.inner.batch.max_events > 1;
            let (data, codec) = store.config().codec.encode(value)?;
            // Stored now, or later: pipelined, or (small, in a batch) with its batch. A put
            // now runs in this span, and its trace context, in the reference, is the event's;
            // a later put runs in a flush, so the reference carries this span's context.
            let stored = if pipelined || (batched && data.len() <= BATCHED_PUT_BYTES) {
                Stored::Later(Unstored {
                    data,
                    codec,
                    type_name: std::any::type_name::<T>(),
                    metadata,
                    sequence: 0,
                    trace: proxystore::trace::inject(&tracing::Span::current()),
                })
            } else {
                let reference = store
                    .put_encoded(
                        data,
                        codec,
                        std::any::type_name::<T>(),
                        &PutOptions::default(),
                    )
                    .await?;
                Stored::Now(reference, metadata)
            };
            if pipelined {
                return self.inner.enqueue(topic, stored).await;
            }
            let full = {
                let mut topics = self.inner.topics();
                let state = open(&mut topics, topic)?;
                let pending = stored.pending(state.sent, self.inner.evict);
                state.sent += 1;
                state.push(pending);
                if state.pending.len() == 1 && batched {
                    self.inner.flush_later(topic, state.generation);
                }
                state.pending.len() >= self.inner.batch.max_events
            };
            if full {
                self.inner.flush(topic).await?;
            }
            Ok(())
        }
        .instrument(span)
        .await
    }
}

/// An object sent: stored, with its reference, or to be stored later.
enum Stored {
    Now(Reference, Metadata),
    Later(Unstored),
}

impl Stored {
    /// Its pending event, as the producer's `sequence`th object.
    fn pending(self, sequence: u64, evict: bool) -> Pending {
        match self {
            Stored::Now(reference, metadata) => {
                Pending::Event(event::object(&reference, &metadata, evict, sequence))
            }
            Stored::Later(o) => Pending::Object(Box::new(Unstored { sequence, ..o })),
        }
    }
}

impl Inner {
    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<String, TopicState>> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn store(&self, topic: &str) -> Result<&Store> {
        self.stores
            .get(topic)
            .or(self.default_store.as_ref())
            .ok_or_else(|| StreamError::NoStore {
                topic: topic.to_owned(),
            })
    }

    /// Queue a pipelined send, once fewer than `pipeline` events are in flight, and see that
    /// a background flush publishes it.
    async fn enqueue(self: &Arc<Self>, topic: &str, stored: Stored) -> Result<()> {
        let progress = {
            let mut topics = self.topics();
            let state = topics
                .entry(topic.to_owned())
                .or_insert_with(TopicState::new);
            state.progress.clone()
        };
        let mut stored = Some(stored);
        loop {
            // Made before looking: a wake-up in between is not missed.
            let woken = progress.notified();
            {
                let mut topics = self.topics();
                let state = open(&mut topics, topic)?;
                if let Some(e) = state.failed.take() {
                    return Err(e);
                }
                if state.in_flight < self.pipeline
                    && let Some(stored) = stored.take()
                {
                    let pending = stored.pending(state.sent, self.evict);
                    state.sent += 1;
                    state.push(pending);
                    if !state.flusher {
                        state.flusher = true;
                        self.flush_in_background(topic);
                    }
                    return Ok(());
                }
            }
            woken.await;
        }
    }

    /// Flush `topic` in a task of its own until nothing is pending, or a flush fails (its
    /// error is kept for the next send).
    fn flush_in_background(self: &Arc<Self>, topic: &str) {
        let inner = Arc::clone(self);
        let topic = topic.to_owned();
        tokio::spawn(async move {
            loop {
                let flushed = inner.flush(&topic).await;
                let mut topics = inner.topics();
                let Some(state) = topics.get_mut(&topic) else {
                    return;
                };
                match flushed {
                    Ok(()) if !state.pending.is_empty() => {}
                    Ok(()) => {
                        state.flusher = false;
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(topic, error = %e, "stream: a pipelined publish failed; its events stay queued");
                        state.failed = Some(e);
                        state.flusher = false;
                        state.progress.notify_waiters();
                        return;
                    }
                }
            }
        });
    }

    /// Put back `pending` (not published) for the next flush, ahead of anything sent since.
    fn keep(&self, topic: &str, pending: Vec<Pending>) {
        if let Some(state) = self.topics().get_mut(topic) {
            let later = std::mem::replace(&mut state.pending, pending);
            state.pending.extend(later);
        }
    }

    /// Publish `topic`'s pending events, in order (events sent meanwhile wait for the next),
    /// after storing their objects not stored yet (the small ones with one put), in messages
    /// of up to `max_events` events, all at once.
    async fn flush(&self, topic: &str) -> Result<()> {
        let Some(publishing) = self.topics().get(topic).map(|s| s.publishing.clone()) else {
            return Ok(());
        };
        let _publishing = publishing.lock().await;
        let (producer, pending) = {
            let mut topics = self.topics();
            let Some(state) = topics.get_mut(topic) else {
                return Ok(());
            };
            if state.pending.is_empty() {
                return Ok(());
            }
            state.generation += 1;
            (state.producer.clone(), std::mem::take(&mut state.pending))
        };
        let events = match self.store_objects(topic, pending).await {
            Ok(events) => events,
            Err((e, pending)) => {
                tracing::warn!(topic, events = pending.len(), error = %e, "stream: storing objects failed; kept for the next flush");
                self.keep(topic, pending);
                return Err(e);
            }
        };
        let messages: Vec<Bytes> = events
            .chunks(self.batch.max_events)
            .map(|c| event::encode(topic, &producer, c.to_vec()))
            .collect();
        let published = match messages.as_slice() {
            [one] => retrying!(
                self.retry_for,
                "publish",
                self.broker.publish(topic, one.clone())
            ),
            _ => retrying!(
                self.retry_for,
                "publish",
                self.broker.publish_many(topic, messages.clone())
            ),
        };
        if let Err(e) = published {
            tracing::warn!(topic, events = events.len(), error = %e, "stream: publish failed; kept for the next flush");
            self.keep(topic, events.into_iter().map(Pending::Event).collect());
            return Err(e);
        }
        if let Some(state) = self.topics().get_mut(topic) {
            state.in_flight = state.in_flight.saturating_sub(events.len());
            state.failed = None;
            state.progress.notify_waiters();
        }
        Ok(())
    }

    /// The events of `pending`, its objects not stored yet stored first: the small ones
    /// ([`BATCHED_PUT_BYTES`]) with one put, larger ones one by one. On failure the error and
    /// `pending` with what was stored made events, so that nothing is stored twice.
    async fn store_objects(
        &self,
        topic: &str,
        mut pending: Vec<Pending>,
    ) -> std::result::Result<Vec<StreamEvent>, (StreamError, Vec<Pending>)> {
        let store = match self.store(topic) {
            Ok(store) => store,
            Err(e) if pending.iter().any(|p| matches!(p, Pending::Object(_))) => {
                return Err((e, pending));
            }
            Err(_) => return Ok(events_of(pending)),
        };
        let small: Vec<usize> = (0..pending.len())
            .filter(
                |&i| matches!(&pending[i], Pending::Object(o) if o.data.len() <= BATCHED_PUT_BYTES),
            )
            .collect();
        if !small.is_empty() {
            let objects: Vec<(Bytes, Codec)> = small
                .iter()
                .filter_map(|&i| match &pending[i] {
                    Pending::Object(o) => Some((o.data.clone(), o.codec)),
                    Pending::Event(_) => None,
                })
                .collect();
            let type_name = match &pending[small[0]] {
                Pending::Object(o) => o.type_name,
                Pending::Event(_) => "",
            };
            match store
                .put_encoded_batch(objects, type_name, &PutOptions::default())
                .await
            {
                Ok(references) => {
                    for (&i, reference) in small.iter().zip(references) {
                        self.stored(&mut pending[i], reference);
                    }
                }
                Err(e) => return Err((e.into(), pending)),
            }
        }
        for i in 0..pending.len() {
            let Pending::Object(o) = &pending[i] else {
                continue;
            };
            match store
                .put_encoded(o.data.clone(), o.codec, o.type_name, &PutOptions::default())
                .await
            {
                Ok(reference) => self.stored(&mut pending[i], reference),
                Err(e) => return Err((e.into(), pending)),
            }
        }
        Ok(events_of(pending))
    }

    /// `pending`, an object now stored as `reference`, made its event.
    fn stored(&self, pending: &mut Pending, mut reference: Reference) {
        let Pending::Object(o) = pending else { return };
        if let Some(t) = o.trace.take() {
            reference.traceparent = t.traceparent;
            reference.tracestate = t.tracestate;
        }
        *pending = Pending::Event(event::object(
            &reference,
            &o.metadata,
            self.evict,
            o.sequence,
        ));
    }

    /// Flush `topic` after the batch's delay, unless it was published meanwhile.
    fn flush_later(self: &Arc<Self>, topic: &str, generation: u64) {
        let delay = self.batch.max_delay;
        let inner = Arc::downgrade(self);
        let topic = topic.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(inner) = inner.upgrade() else { return };
            let due = inner
                .topics()
                .get(&topic)
                .is_some_and(|s| s.generation == generation && !s.pending.is_empty());
            if due && let Err(e) = inner.flush(&topic).await {
                tracing::warn!(topic, error = %e, "stream: a delayed flush failed");
            }
        });
    }
}

/// The state of `topic`, made if new; [`StreamError::Closed`] once it is closed.
fn open<'a>(
    topics: &'a mut HashMap<String, TopicState>,
    topic: &str,
) -> Result<&'a mut TopicState> {
    let state = topics
        .entry(topic.to_owned())
        .or_insert_with(TopicState::new);
    if state.closed {
        return Err(StreamError::Closed {
            topic: topic.to_owned(),
        });
    }
    Ok(state)
}

/// The events of `pending`, whose objects are all stored.
fn events_of(pending: Vec<Pending>) -> Vec<StreamEvent> {
    pending
        .into_iter()
        .filter_map(|p| match p {
            Pending::Event(e) => Some(e),
            Pending::Object(_) => None,
        })
        .collect()
}
