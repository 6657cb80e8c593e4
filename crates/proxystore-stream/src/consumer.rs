//! The consumer's side: events from the broker, proxies out, resolved only when used.

use std::collections::{HashMap, HashSet, VecDeque};
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proxystore::{Proxy, Reference};
use serde::de::DeserializeOwned;

use crate::Metadata;
use crate::broker::{Acknowledge, Broker, Delivered, Polled, SubscribeOptions, Subscription};
use crate::error::{Result, StreamError};
use crate::event::{self, Event};
use crate::outage::retrying;

/// One object of a stream: a lazy proxy and the metadata its producer sent with it.
#[derive(Debug)]
pub struct StreamItem<T> {
    /// The object, fetched on first use.
    pub proxy: Proxy<T>,
    /// Its metadata.
    pub metadata: Metadata,
    /// Its position among its producer's objects on the topic, from 0.
    pub sequence: u64,
    /// Its producer's id.
    pub producer: String,
}

/// An event of a message read, with its producer, its message's acknowledgement and whether
/// the message was delivered before.
type Queued = (Event, String, Arc<MessageAck>, bool);

/// Filters events on their metadata: `true` keeps the event.
type Filter = Box<dyn Fn(&Metadata) -> bool + Send + Sync>;

/// Reads a stream of `T` from one topic: an async iteration of [`StreamItem`]s
/// ([`StreamConsumer::next`], or [`StreamConsumer::into_stream`] for a `futures::Stream`).
///
/// An item is *consumed* when the next one is asked for (or the consumer closes). A broker
/// message whose events are all consumed is *settled*: the objects of its events are evicted
/// if their producer asked for it (single-consumer topics), and then the message is
/// acknowledged, so an at-least-once broker redelivers what a consumer that died was still
/// working on, objects included. Messages are settled in the background as soon as they are
/// consumed; those consumed while a settlement runs go together with the next (one eviction
/// call per store, the acknowledgements at once). An error of it comes from the next call.
///
/// A read takes the message the broker waited for and those it has received already
/// ([`StreamConsumer::read_ahead`]); [`StreamConsumer::next_object`] fetches their small
/// objects with one call per store.
///
/// Iteration ends once each of [`StreamConsumer::producers`] producers has ended the topic
/// (its end-of-stream event came here, or, for the other consumers of a group, the broker
/// says so) and the consumer's group has read and acknowledged every message (on
/// at-least-once brokers, what a dead consumer held comes here first); or when the broker
/// ends the subscription. Messages on the topic that are not
/// ours are skipped ([`StreamConsumer::skipped`]), never an error that stops the stream.
pub struct StreamConsumer<T> {
    topic: String,
    broker: String,
    subscription: Box<dyn Subscription>,
    filter: Option<Filter>,
    /// Events of the messages read, not yet handed out.
    queue: VecDeque<Queued>,
    /// The item handed out last, consumed when the next is asked for.
    current: Option<(Option<Reference>, bool, Arc<MessageAck>)>,
    ended: HashSet<String>,
    /// Object events seen per producer, to tell at its end how many never arrived.
    seen: HashMap<String, u64>,
    missed: u64,
    duplicates: u64,
    /// Sequences of each producer's objects handed out (or filtered) here.
    handled: HashMap<String, Sequences>,
    producers: usize,
    skipped: u64,
    done: bool,
    retry_for: Duration,
    /// Fetch the small objects of each message read with one call: set by
    /// [`StreamConsumer::next_object`], whose caller resolves every object it is given.
    prefetch: bool,
    /// Messages taken from the broker at once, at most.
    read_ahead: usize,
    /// Settles messages whose events are all consumed.
    settler: Settler,
    _value: PhantomData<fn() -> T>,
}

/// Messages read from the broker at once, at most, by default ([`StreamConsumer::read_ahead`]).
const READ_AHEAD: usize = 64;

/// Bytes of small objects fetched with one call, at most, when a read's objects are
/// prefetched; past [`PREFETCH_BYTES`] in all, the rest are fetched as they are resolved.
const PREFETCH_CALL_BYTES: u64 = 4 << 20;
/// Bytes of small objects prefetched per read, at most.
const PREFETCH_BYTES: u64 = 32 << 20;

impl<T> std::fmt::Debug for StreamConsumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConsumer")
            .field("topic", &self.topic)
            .field("broker", &self.broker)
            .field("skipped", &self.skipped)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Evicts the objects of a broker message and acknowledges it once every event of it is
/// consumed.
struct MessageAck {
    remaining: AtomicUsize,
    /// Objects of its consumed events that are to be evicted.
    evict: std::sync::Mutex<Vec<Reference>>,
    ack: std::sync::Mutex<Option<Box<dyn Acknowledge>>>,
}

impl MessageAck {
    fn new(events: usize, ack: Option<Box<dyn Acknowledge>>) -> Arc<Self> {
        Arc::new(MessageAck {
            remaining: AtomicUsize::new(events),
            evict: std::sync::Mutex::new(Vec::new()),
            ack: std::sync::Mutex::new(ack),
        })
    }

    /// One of its events is consumed (its object to be evicted, if `evict`); `true` when it
    /// was the last: the message is then settled ([`settle`]).
    fn consumed(&self, evict: Option<Reference>) -> bool {
        if let Some(r) = evict {
            self.to_evict().push(r);
        }
        self.remaining.fetch_sub(1, Ordering::AcqRel) == 1
    }

    fn to_evict(&self) -> std::sync::MutexGuard<'_, Vec<Reference>> {
        self.evict.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Evict the objects of the events consumed so far.
    async fn evict_consumed(&self) -> Result<()> {
        let refs = std::mem::take(&mut *self.to_evict());
        evict_objects(&refs).await
    }

    /// Whether the broker redelivers the message if it is not acknowledged.
    fn redelivered(&self) -> bool {
        self.ack.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }
}

/// `ack.ack()`, tried again while the broker is away (an acknowledgement is idempotent).
async fn acknowledge(ack: Box<dyn Acknowledge>, retry_for: Duration) -> Result<()> {
    retrying!(retry_for, "ack", ack.ack())
}

/// Settle messages whose events are all consumed: evict their objects (one call per store for
/// all of them), then acknowledge them (all at once: brokers that pipeline make it one round
/// trip).
///
/// Evicting one by one as events were consumed cost a round trip to the store per event, and
/// left a redelivered message (its consumer died before acknowledging it) pointing to objects
/// already gone; acknowledging message by message cost a round trip each.
async fn settle(messages: Vec<Arc<MessageAck>>, retry_for: Duration) -> Result<()> {
    let refs: Vec<Reference> = messages
        .iter()
        .flat_map(|m| std::mem::take(&mut *m.to_evict()))
        .collect();
    evict_objects(&refs).await?;
    let mut acks: Vec<Box<dyn Acknowledge>> = messages
        .iter()
        .filter_map(|m| m.ack.lock().unwrap_or_else(|e| e.into_inner()).take())
        .collect();
    // All but the last unconfirmed, at once; then the last, confirmed.
    let Some(last) = acks.pop() else {
        return Ok(());
    };
    futures::future::try_join_all(
        acks.iter()
            .map(|a| async move { retrying!(retry_for, "ack", a.ack_unconfirmed()) }),
    )
    .await?;
    acknowledge(last, retry_for).await
}

impl<T> StreamConsumer<T> {
    /// Subscribe to `topic` on `broker`.
    ///
    /// # Errors
    /// The broker's error.
    pub async fn subscribe(
        broker: &dyn Broker,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Self> {
        let subscription = broker.subscribe(topic, &options).await?;
        Ok(StreamConsumer {
            topic: topic.to_owned(),
            broker: broker.kind().to_owned(),
            subscription,
            filter: None,
            queue: VecDeque::new(),
            current: None,
            ended: HashSet::new(),
            seen: HashMap::new(),
            missed: 0,
            duplicates: 0,
            handled: HashMap::new(),
            producers: 1,
            skipped: 0,
            done: false,
            retry_for: crate::outage::DEFAULT_RETRY_FOR,
            prefetch: false,
            read_ahead: READ_AHEAD,
            settler: Settler::default(),
            _value: PhantomData,
        })
    }

    /// Keep only events whose metadata `keep` accepts; the others are consumed without being
    /// resolved (and evicted, if their producer asked for eviction after consumption).
    #[must_use]
    pub fn filter(mut self, keep: impl Fn(&Metadata) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Box::new(keep));
        self
    }

    /// End the iteration after the end-of-stream events of `n` distinct producers (default 1).
    #[must_use]
    pub fn producers(mut self, n: usize) -> Self {
        self.producers = n.max(1);
        self
    }

    /// How long a broker call that failed with a temporary error (the broker restarting, a
    /// lost connection) is tried again, with backoff, before [`StreamConsumer::next`] returns
    /// the error (default 30 s; zero: at once). An acknowledgement that still fails leaves
    /// its message to be delivered again (at-least-once brokers).
    #[must_use]
    pub fn retry_for(mut self, budget: Duration) -> Self {
        self.retry_for = budget;
        self
    }

    /// Messages taken from the broker at once, at most (default 64): the one the broker
    /// waited for and those it had received already (a broker may receive more per read of its
    /// own: `count` in the Redis Streams and NATS options). Their small objects are fetched
    /// together. In a group whose
    /// consumers share a topic, the messages a consumer has taken are its own until it
    /// consumes them: lower it (and the broker's count) when each object takes long, so that
    /// the others are not left idle.
    #[must_use]
    pub fn read_ahead(mut self, messages: usize) -> Self {
        self.read_ahead = messages.max(1);
        self
    }

    /// Messages on the topic that were not ours (or not readable), skipped.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Objects that ended producers said they sent and this consumer never saw: lost by an
    /// at-most-once broker (or taken by another consumer of the group).
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// Events delivered again and skipped: this consumer had handled them already (an
    /// at-least-once broker that lost acknowledgements when it crashed, a publish retried),
    /// or the broker redelivered them (another consumer of the group died holding them) and
    /// their object was gone, evicted when it was consumed before.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Consume the item handed out last: its object is to be evicted if asked; when it was its
    /// message's last, the message is to be settled.
    fn finish_current(&mut self) {
        if let Some((reference, evict, ack)) = self.current.take()
            && ack.consumed(reference.filter(|_| evict))
        {
            self.settler.push(ack, self.retry_for);
        }
    }

    /// Consume the last item, wait until every consumed message is settled, and stop (what
    /// dropping the consumer does not do: it cannot wait; an unacknowledged message is then
    /// redelivered by at-least-once brokers). The objects of the consumed events of a
    /// message not consumed to its end are evicted when the broker does not redeliver it
    /// (at-most-once); otherwise they are left for the consumer it is redelivered to.
    ///
    /// # Errors
    /// As for [`StreamConsumer::next`].
    pub async fn close(mut self) -> Result<()> {
        self.finish_current();
        self.settler.drain(self.retry_for).await?;
        if let Some((_, _, ack, _)) = self.queue.front()
            && !ack.redelivered()
        {
            ack.evict_consumed().await?;
        }
        Ok(())
    }
}

/// Settles consumed messages ([`settle`]) in a task of its own as soon as they are consumed;
/// what is consumed while a settlement runs goes with the next, all at once (a database's
/// group commit): under load the calls are few, and a consumer that dies leaves little
/// consumed and not acknowledged (delivered again).
#[derive(Default)]
struct Settler {
    shared: Arc<std::sync::Mutex<Settling>>,
    /// Woken when the task stops.
    stopped: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct Settling {
    queue: Vec<Arc<MessageAck>>,
    running: bool,
    /// The first error since the last look.
    failed: Option<StreamError>,
}

impl Settler {
    fn lock(&self) -> std::sync::MutexGuard<'_, Settling> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Settle `message`: now, in the background, or with the settlement after the one
    /// running. Without a tokio runtime at hand it waits for [`Settler::drain`].
    fn push(&self, message: Arc<MessageAck>, retry_for: Duration) {
        let mut s = self.lock();
        s.queue.push(message);
        if !s.running
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            s.running = true;
            let shared = self.shared.clone();
            let stopped = self.stopped.clone();
            rt.spawn(async move {
                loop {
                    let batch = {
                        let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                        if s.queue.is_empty() {
                            s.running = false;
                            stopped.notify_waiters();
                            return;
                        }
                        std::mem::take(&mut s.queue)
                    };
                    if let Err(e) = settle(batch, retry_for).await {
                        tracing::warn!(error = %e, "stream: settling consumed messages failed; the broker delivers them again");
                        shared
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .failed
                            .get_or_insert(e);
                    }
                }
            });
        }
    }

    /// The error of a settlement since the last look.
    fn failed(&self) -> Option<StreamError> {
        self.lock().failed.take()
    }

    /// Wait until everything pushed is settled; the first error since the last look.
    async fn drain(&self, retry_for: Duration) -> Result<()> {
        loop {
            let stopped = self.stopped.notified();
            let inline = {
                let mut s = self.lock();
                if s.running {
                    None
                } else {
                    Some(std::mem::take(&mut s.queue))
                }
            };
            match inline {
                None => stopped.await,
                Some(batch) => {
                    if !batch.is_empty() {
                        settle(batch, retry_for).await?;
                    }
                    return self.failed().map_or(Ok(()), Err);
                }
            }
        }
    }
}

/// A set of sequence numbers, small when they come about in order: all below `below`, and the
/// others.
#[derive(Debug, Default)]
struct Sequences {
    below: u64,
    above: std::collections::BTreeSet<u64>,
}

impl Sequences {
    /// Add `n`; `false` if it was there.
    fn insert(&mut self, n: u64) -> bool {
        if n < self.below || !self.above.insert(n) {
            return false;
        }
        while self.above.remove(&self.below) {
            self.below += 1;
        }
        true
    }

    fn contains(&self, n: u64) -> bool {
        n < self.below || self.above.contains(&n)
    }
}

/// Fetch `wanted` objects into their stores' caches, a call per store for up to
/// [`PREFETCH_CALL_BYTES`], where resolving them one by one would cost a round trip each. What
/// fails here is left to the resolve of its item, which meets the error itself.
async fn prefetch<T: DeserializeOwned + Send + Sync + 'static>(
    topic: &str,
    wanted: Vec<(proxystore::Store, Vec<Reference>)>,
) {
    for (store, refs) in wanted {
        let mut rest = refs.as_slice();
        while !rest.is_empty() {
            let mut bytes = 0;
            let n = rest
                .iter()
                .take_while(|r| {
                    bytes += r.size;
                    bytes <= PREFETCH_CALL_BYTES
                })
                .count()
                .max(1);
            let (call, after) = rest.split_at(n);
            rest = after;
            if let Err(e) = store.resolve_batch::<T>(call).await {
                tracing::debug!(topic, error = %e, "stream: prefetching objects failed; resolving them one by one");
            }
        }
    }
}

/// Whether the object of `r` exists in its store.
async fn object_exists(r: &Reference) -> Result<bool> {
    let store = proxystore::store_for_reference(r, &proxystore::resolve_policy()?)?;
    Ok(store.exists(&r.key).await?)
}

/// Evict the objects of `refs`: one call per store.
async fn evict_objects(refs: &[Reference]) -> Result<()> {
    if refs.is_empty() {
        return Ok(());
    }
    let policy = proxystore::resolve_policy()?;
    let mut stores: Vec<(proxystore::Store, Vec<proxystore::Key>)> = Vec::new();
    for r in refs {
        let store = proxystore::store_for_reference(r, &policy)?;
        match stores.iter_mut().find(|(s, _)| s.ptr_eq(&store)) {
            Some((_, keys)) => keys.push(r.key.clone()),
            None => stores.push((store, vec![r.key.clone()])),
        }
    }
    for (store, keys) in stores {
        match keys.as_slice() {
            [key] => store.evict(key).await?,
            keys => store.evict_batch(keys).await?,
        }
    }
    Ok(())
}

impl<T: DeserializeOwned + Send + Sync + 'static> StreamConsumer<T> {
    /// The next object of the stream, `None` at its end. Consumes the one before.
    ///
    /// # Errors
    /// The broker's error, or the store's when settling consumed messages failed (evicting
    /// their objects or acknowledging them: they are delivered again then, on at-least-once
    /// brokers).
    pub async fn next(&mut self) -> Option<Result<StreamItem<T>>> {
        self.finish_current();
        if let Some(e) = self.settler.failed() {
            return Some(Err(e));
        }
        loop {
            if let Some((event, producer, ack, redelivered)) = self.queue.pop_front() {
                match self.hand_out(event, producer, ack, redelivered).await {
                    Ok(Some(item)) => return Some(Ok(item)),
                    Ok(None) => continue,
                    Err(e) => return Some(Err(e)),
                }
            }
            if self.done {
                return None;
            }
            // Ended (this consumer saw the end events, or the broker says the producers
            // marked the topic ended, for consumers of a group that did not get them): done
            // once the group has read and acknowledged everything, so that what a dead
            // consumer of the group held comes here first.
            if self.ended.len() >= self.producers {
                if let Err(e) = self.settler.drain(self.retry_for).await {
                    return Some(Err(e));
                }
                match retrying!(self.retry_for, "drained", self.subscription.drained()) {
                    Ok(true) => {
                        self.done = true;
                        return None;
                    }
                    Ok(false) => {}
                    Err(e) => return Some(Err(e)),
                }
            }
            let delivered = match retrying!(self.retry_for, "next", self.subscription.next()) {
                Ok(Polled::Message(d)) => d,
                Ok(Polled::Idle) => {
                    if self.ended.len() < self.producers {
                        match retrying!(self.retry_for, "ended", self.subscription.ended()) {
                            Ok(producers) => self.ended.extend(producers),
                            Err(e) => return Some(Err(e)),
                        }
                    }
                    continue;
                }
                Ok(Polled::Ended) => {
                    self.done = true;
                    if let Err(e) = self.settler.drain(self.retry_for).await {
                        return Some(Err(e));
                    }
                    return None;
                }
                Err(e) => return Some(Err(e)),
            };
            let mut read = vec![delivered];
            read.extend(self.subscription.ready(self.read_ahead - 1));
            self.take_in(read).await;
        }
    }

    /// Queue the events of messages read; with `prefetch`, fetch their small objects first,
    /// a call per store. Messages that are not ours, or empty, are settled as they are.
    async fn take_in(&mut self, read: Vec<Delivered>) {
        let mut messages = Vec::with_capacity(read.len());
        for delivered in read {
            match event::decode(&self.topic, &delivered.message) {
                Ok((producer, events)) if !events.is_empty() => {
                    messages.push((producer, events, delivered.redelivered, delivered.ack));
                }
                Ok(_) => self
                    .settler
                    .push(MessageAck::new(0, delivered.ack), self.retry_for),
                Err(reason) => {
                    self.skipped += 1;
                    tracing::warn!(
                        topic = self.topic,
                        broker = self.broker,
                        reason,
                        "stream: skipped a message that is not ours"
                    );
                    // Acknowledged: redelivering it would not make it ours.
                    self.settler
                        .push(MessageAck::new(0, delivered.ack), self.retry_for);
                }
            }
        }
        if self.prefetch {
            let wanted = self.to_prefetch(
                messages
                    .iter()
                    .filter(|(_, _, again, _)| !again)
                    .flat_map(|(p, events, _, _)| events.iter().map(move |e| (p.as_str(), e))),
            );
            prefetch::<T>(&self.topic, wanted).await;
        }
        for (producer, events, again, ack) in messages {
            let ack = MessageAck::new(events.len(), ack);
            self.queue.extend(
                events
                    .into_iter()
                    .map(|e| (e, producer.clone(), ack.clone(), again)),
            );
        }
    }

    /// The item of a queued event; `None` for an event consumed here without handing it out
    /// (an end of stream, a duplicate, one the filter drops).
    async fn hand_out(
        &mut self,
        event: Event,
        producer: String,
        ack: Arc<MessageAck>,
        redelivered: bool,
    ) -> Result<Option<StreamItem<T>>> {
        match event {
            Event::Object {
                reference,
                metadata,
                evict,
                sequence,
            } => {
                *self.seen.entry(producer.clone()).or_default() += 1;
                // Delivered again: handled here before, or consumed elsewhere if its
                // producer asked for eviction after consumption and the object is gone.
                let again = !self
                    .handled
                    .entry(producer.clone())
                    .or_default()
                    .insert(sequence);
                let gone = !again && redelivered && evict && !object_exists(&reference).await?;
                if again || gone {
                    self.duplicates += 1;
                    tracing::debug!(
                        topic = self.topic,
                        producer,
                        sequence,
                        "stream: an event delivered again; skipped"
                    );
                    self.current = Some((None, false, ack));
                    self.finish_current();
                    return Ok(None);
                }
                if self.filter.as_ref().is_some_and(|keep| !keep(&metadata)) {
                    self.current = Some((Some(*reference), evict, ack));
                    self.finish_current();
                    return Ok(None);
                }
                self.current = Some((Some((*reference).clone()), evict, ack));
                Ok(Some(StreamItem {
                    proxy: Proxy::from_reference(*reference),
                    metadata,
                    sequence,
                    producer,
                }))
            }
            Event::End { objects } => {
                let seen = self.seen.get(&producer).copied().unwrap_or(0);
                if seen < objects {
                    self.missed += objects - seen;
                    tracing::debug!(
                        topic = self.topic,
                        producer,
                        sent = objects,
                        seen,
                        "stream: a producer ended; not all of its objects were seen here"
                    );
                }
                self.ended.insert(producer);
                self.current = Some((None, false, ack));
                self.finish_current();
                Ok(None)
            }
        }
    }

    /// The small objects ([`crate::BATCHED_PUT_BYTES`]) of events that will be handed out
    /// (new, kept by the filter), by store, to fetch together, up to [`PREFETCH_BYTES`].
    fn to_prefetch<'a>(
        &self,
        events: impl Iterator<Item = (&'a str, &'a Event)>,
    ) -> Vec<(proxystore::Store, Vec<Reference>)> {
        let Ok(policy) = proxystore::resolve_policy() else {
            return Vec::new();
        };
        let mut budget = PREFETCH_BYTES;
        let mut stores: Vec<(proxystore::Store, Vec<Reference>)> = Vec::new();
        for (producer, e) in events {
            let Event::Object {
                reference,
                metadata,
                sequence,
                ..
            } = e
            else {
                continue;
            };
            let wanted = reference.size <= crate::BATCHED_PUT_BYTES as u64
                && reference.size <= budget
                && !reference.evict_on_resolve
                && !self
                    .handled
                    .get(producer)
                    .is_some_and(|h| h.contains(*sequence))
                && self.filter.as_ref().is_none_or(|keep| keep(metadata));
            if !wanted {
                continue;
            }
            let Ok(store) = proxystore::store_for_reference(reference, &policy) else {
                continue;
            };
            budget -= reference.size;
            match stores.iter_mut().find(|(s, _)| s.ptr_eq(&store)) {
                Some((_, refs)) => refs.push((**reference).clone()),
                None => stores.push((store, vec![(**reference).clone()])),
            }
        }
        stores.retain(|(_, refs)| refs.len() > 1);
        stores
    }

    /// The next object, resolved, with its metadata. The small objects of a broker message
    /// are fetched together, with one call to their store, when the message is read.
    ///
    /// # Errors
    /// As for [`StreamConsumer::next`]; the store's error when the object cannot be read (it
    /// was evicted, or its store refused): that item is consumed, the stream goes on.
    pub async fn next_object(&mut self) -> Option<Result<(T, Metadata)>>
    where
        T: Clone,
    {
        self.prefetch = true;
        let item = match self.next().await? {
            Ok(i) => i,
            Err(e) => return Some(Err(e)),
        };
        let value = item.proxy.resolve().await.cloned();
        Some(value.map(|v| (v, item.metadata)).map_err(Into::into))
    }

    /// The consumer as a `futures::Stream` of items.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<StreamItem<T>>> {
        futures::stream::unfold(self, |mut c| async move {
            let item = c.next().await?;
            Some((item, c))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Sequences;

    #[test]
    fn sequences_stay_small_in_order_and_tell_repeats() {
        let mut s = Sequences::default();
        for n in [0, 1, 3, 2, 4] {
            assert!(s.insert(n));
        }
        assert_eq!((s.below, s.above.len()), (5, 0));
        assert!(!s.insert(3));
        assert!(s.insert(9));
        assert!(!s.insert(9));
        assert_eq!((s.below, s.above.len()), (5, 1));
    }
}
