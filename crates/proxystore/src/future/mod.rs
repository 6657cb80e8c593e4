//! Distributed futures: hand a consumer the result of a producer before it exists.
//!
//! [`Store::future`] returns a [`Promise`] (the producer's side) and a [`Proxy`] (the
//! consumer's side, cloneable and serializable to any process like every proxy). The consumer
//! blocks only when it first uses the value; [`Promise::set`] completes the future once.
//!
//! ```
//! # proxystore::runtime::block_on(async {
//! use proxystore::{Proxy, Store, connector::memory::MemoryConnector};
//! let store = Store::new("future-doc", MemoryConnector::new("future-doc"));
//! let (promise, proxy) = store.future::<Vec<u32>>().await?;
//!
//! // Hand the proxy to a consumer now (here a task; it could be another process).
//! let consumer = tokio::spawn(async move { proxy.resolve().await.map(|v| v.iter().sum::<u32>()) });
//!
//! promise.set(&vec![1, 2, 3]).await?; // the consumer wakes up
//! assert_eq!(consumer.await.unwrap()?, 6);
//! # Ok::<_, proxystore::Error>(()) })??;
//! # Ok::<_, proxystore::Error>(())
//! ```
//!
//! # How consumers wait
//!
//! Not by polling where the backend can tell them: a consumer calls
//! [`Connector::wait`](crate::Connector::wait), which each connector implements with what its
//! backend offers (an in-process notify, a server call that answers when the key is set, a Redis
//! channel, file notifications; polling with backoff only where nothing else exists).
//! [`Connector::wait_mechanism`](crate::Connector::wait_mechanism) names it.
//!
//! # Failure is visible, never a hang
//!
//! - A promise dropped without being set completes the future with
//!   [`FutureProblem::Dropped`] (in the background; the process waits for it at exit).
//! - A producer that dies without dropping its promise (killed) stops its *heartbeat*: every
//!   [`FutureOptions::heartbeat`] it rewrites a small object beside the future, and a consumer
//!   that sees it unchanged for three periods fails with [`FutureProblem::ProducerGone`].
//!   While a promise travels (serialized into a task that is still queued) its heartbeat says
//!   so, and consumers wait on.
//! - A timeout ([`FutureOptions::timeout`], or [`Proxy::resolve_within`]) is an
//!   [`Error::Timeout`]; [`Promise::set_error`] reaches consumers as
//!   [`FutureProblem::Failed`]; a second `set` is [`FutureProblem::AlreadySet`].
//!
//! The future's key holds a small header before the value (see `proto/proxystore_rs/v1/
//! proxy.proto`, message `Future`), which carries the trace context of the `set`: a consumer's
//! `proxystore.future.wait` span links to the span that set the value.
//!
//! A future needs a connector with deferred puts
//! ([`Connector::new_key`](crate::Connector::new_key) and
//! [`Connector::set`](crate::Connector::set)): memory, file, Redis, S3, gRPC and multi have them.

mod record;
mod wait;

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tracing::Instrument;

use crate::connector::PutOptions;
use crate::error::{Error, FutureProblem, Result};
use crate::key::Key;
use crate::proxy::{Factory, Proxy};
use crate::reference::{FutureInfo, Reference};
use crate::store::{Store, Stored, codec_for};
use crate::trace::{self, op_span};

pub(crate) use wait::fetch;

/// The newtype name a [`Promise`] serializes under.
pub const PROMISE_NEWTYPE_NAME: &str = "$proxystore::Promise";

/// Options of [`Store::future_with`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FutureOptions {
    /// How long a consumer's resolve waits by default (`None`: until the future completes, or
    /// its producer is gone). A consumer may choose its own with [`Proxy::resolve_within`].
    pub timeout: Option<Duration>,
    /// How often the producer proves it is alive (`None`: never; a consumer of a future whose
    /// producer was killed then waits for its timeout). Default 1 s: a killed producer is
    /// noticed within about 3 s.
    pub heartbeat: Option<Duration>,
    /// A name for the future, such as `train/return` (carried by its reference as
    /// [`Reference::origin`], and given to routing connectors).
    pub name: Option<String>,
}

impl Default for FutureOptions {
    fn default() -> Self {
        FutureOptions {
            timeout: None,
            heartbeat: Some(Duration::from_secs(1)),
            name: None,
        }
    }
}

impl FutureOptions {
    /// Default options with a consumer timeout.
    pub fn with_timeout(timeout: Duration) -> Self {
        FutureOptions {
            timeout: Some(timeout),
            ..FutureOptions::default()
        }
    }

    /// Set [`FutureOptions::heartbeat`].
    #[must_use]
    pub fn heartbeat(mut self, every: Option<Duration>) -> Self {
        self.heartbeat = every;
        self
    }

    /// Set [`FutureOptions::name`].
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

impl Store {
    /// A new distributed future of `T` with default [`FutureOptions`]: the producer's
    /// [`Promise`] and a [`Proxy`] that resolves (waiting) to the value it sets.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the connector has no deferred puts; the connector's error.
    pub async fn future<T>(&self) -> Result<(Promise<T>, Proxy<T>)>
    where
        T: Serialize + 'static,
    {
        self.future_with(FutureOptions::default()).await
    }

    /// [`Store::future`] with options.
    ///
    /// # Errors
    /// As for [`Store::future`].
    pub async fn future_with<T>(&self, options: FutureOptions) -> Result<(Promise<T>, Proxy<T>)>
    where
        T: Serialize + 'static,
    {
        let span = op_span!("proxystore.future", self);
        let made = async {
            let put = PutOptions {
                name: options.name.clone(),
                ..PutOptions::default()
            };
            let connector = self.connector();
            let key = connector.new_key(&put).await?;
            span.record("key", key.as_str());
            let heartbeat = match options.heartbeat.filter(|d| !d.is_zero()) {
                Some(every) => {
                    let beat_key = connector.new_key(&put).await?;
                    connector.set(&beat_key, record::beat()).await?;
                    Some((every, beat_key))
                }
                None => None,
            };
            let stored = Stored {
                key,
                size: 0,
                digest: None,
                codec: codec_for::<T>(self.config().codec),
                trace: trace::inject(&span),
            };
            let mut reference = self.reference::<T>(stored, false);
            if let Some(name) = &options.name {
                reference.set_origin(name);
            }
            reference.future = Some(FutureInfo {
                timeout_ms: options.timeout.map_or(0, |t| t.as_millis().max(1) as u64),
                heartbeat_ms: heartbeat.as_ref().map_or(0, |(d, _)| d.as_millis() as u64),
                heartbeat_key: heartbeat.map(|(_, k)| k),
            });
            let reference = Arc::new(reference);
            let promise = Promise::live(self.clone(), reference.clone());
            let proxy = Proxy::from_factory(Factory::with_shared_store(reference, self.clone()));
            Ok((promise, proxy))
        }
        .instrument(span.clone())
        .await;
        trace::record_result(&span, &made);
        made
    }
}

impl<T: DeserializeOwned + Send + Sync + 'static> Proxy<T> {
    /// [`Proxy::resolve`], waiting at most `timeout` for a distributed future's value (instead
    /// of the timeout its producer chose). For other proxies it is [`Proxy::resolve`].
    ///
    /// # Errors
    /// As for [`Proxy::resolve`]; [`Error::Timeout`] when the future is not set in time.
    pub async fn resolve_within(&self, timeout: Duration) -> Result<&T> {
        if let Some(t) = self.get_if_resolved() {
            return Ok(t);
        }
        let Some(f) = self.factory() else {
            return self.resolve().await;
        };
        let Some(info) = &f.reference().future else {
            return self.resolve().await;
        };
        let mut r = f.reference().clone();
        r.future = Some(FutureInfo {
            timeout_ms: timeout.as_millis().max(1) as u64,
            ..info.clone()
        });
        let obj = f.store()?.get_by_reference::<T>(&r).await?;
        Ok(self.set_resolved(obj))
    }
}

/// The producer's side of a distributed future: [`Promise::set`] it once, or
/// [`Promise::set_error`]; dropped unset, it fails the future for its consumers.
///
/// A promise can be sent to the process that will complete it (it serializes, and like an
/// [`crate::OwnedProxy`] it moves: the sender's handle is then inert). The process that
/// deserializes it takes over its heartbeat.
pub struct Promise<T> {
    store: Store,
    reference: Arc<Reference>,
    /// The heartbeat task while this handle is the live one; `None` once set, failed or moved.
    live: Mutex<Option<Live>>,
    _value: PhantomData<fn(&T)>,
}

/// A live promise's heartbeat.
struct Live {
    beat: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(b) = &self.beat {
            b.abort();
        }
    }
}

impl Live {
    /// Stop the heartbeat and wait until it has stopped, so that no beat in flight lands
    /// after what the caller writes next.
    async fn stopped(mut self) {
        if let Some(b) = self.beat.take() {
            b.abort();
            let _ = b.await;
        }
    }
}

impl<T> fmt::Debug for Promise<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Promise")
            .field("store", &self.reference.store)
            .field("key", &self.reference.key)
            .field("live", &self.is_live())
            .finish()
    }
}

impl<T> Promise<T> {
    fn live(store: Store, reference: Arc<Reference>) -> Self {
        let beat = start_heartbeat(&store, &reference);
        Promise {
            store,
            reference,
            live: Mutex::new(Some(Live { beat })),
            _value: PhantomData,
        }
    }

    /// The future's key.
    pub fn key(&self) -> &Key {
        &self.reference.key
    }

    /// The future's reference (what its proxies carry).
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// Another proxy of this future, for another consumer.
    pub fn proxy(&self) -> Proxy<T> {
        Proxy::from_factory(Factory::with_shared_store(
            self.reference.clone(),
            self.store.clone(),
        ))
    }

    /// Whether this handle can still complete the future (not set, failed or moved away).
    pub fn is_live(&self) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn error(&self, problem: FutureProblem) -> Error {
        future_error(&self.reference, problem)
    }

    /// Take the live state, or say why there is none.
    fn take_live(&self) -> Result<Live> {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| self.error(FutureProblem::Moved))
    }

    /// Complete the future with an error that its consumers get as [`FutureProblem::Failed`].
    ///
    /// # Errors
    /// As for [`Promise::set`].
    pub async fn set_error(self, message: impl Into<String>) -> Result<()> {
        let live = self.take_live()?;
        self.complete(live, &record::Outcome::Failed(message.into()))
            .await
    }

    /// Write `outcome` (once), then retire the heartbeat.
    async fn complete(&self, live: Live, outcome: &record::Outcome) -> Result<()> {
        let span = op_span!(
            "proxystore.future.set",
            self.store,
            key = self.key().as_str()
        );
        let result = complete(&self.store, &self.reference, live, outcome, &span)
            .instrument(span.clone())
            .await;
        trace::record_result(&span, &result);
        result
    }
}

impl<T: Serialize + 'static> Promise<T> {
    /// Complete the future with `value`: its consumers wake up and resolve it.
    ///
    /// # Errors
    /// [`FutureProblem::AlreadySet`] when it was completed already (by another handle);
    /// [`FutureProblem::Moved`] when this handle was sent away; [`Error::Encode`]; the
    /// connector's error (the promise is then spent: its consumers get
    /// [`FutureProblem::Dropped`] if nothing was written).
    pub async fn set(self, value: &T) -> Result<()> {
        let live = self.take_live()?;
        let (data, codec) = match self.store.config().codec.encode(value) {
            Ok(encoded) => encoded,
            Err(e) => {
                // Not completed: dropped unset (below), as if `set` had not been called.
                *self.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(live);
                return Err(e);
            }
        };
        debug_assert_eq!(codec, self.reference.codec);
        self.complete(live, &record::Outcome::Value(data)).await
    }
}

/// Write `outcome` under the future's key unless something is there, then retire the
/// heartbeat (after the value: a consumer that finds the heartbeat gone looks for the value;
/// the heartbeat task is stopped first, so it cannot write the key again).
async fn complete(
    store: &Store,
    reference: &Reference,
    live: Live,
    outcome: &record::Outcome,
    span: &tracing::Span,
) -> Result<()> {
    let connector = store.connector();
    let written = async {
        let data = record::encode(outcome, trace::inject(span).as_ref());
        span.record("bytes", trace::int(data.len()));
        if connector.set_once(&reference.key, data).await? {
            Ok(())
        } else {
            Err(future_error(reference, FutureProblem::AlreadySet))
        }
    }
    .await;
    // Retired in the background: consumers need the value, not the heartbeat's absence, so
    // `set` returns as soon as the value is written (the process waits for this at exit).
    if let Some(beat_key) = reference
        .future
        .as_ref()
        .and_then(|f| f.heartbeat_key.clone())
    {
        let connector = connector.clone();
        crate::lifetime::spawn_cleanup(async move {
            live.stopped().await;
            if let Err(e) = connector.evict(&beat_key).await {
                tracing::warn!(key = %beat_key, error = %e, "cannot remove a future's heartbeat");
            }
        });
    }
    written
}

/// A promise dropped unset inside a task attempt: the attempt's
/// [`crate::lifetime::DropCollector`] holds it until the executor knows whether the task is over
/// (the future fails, with the task's error) or will run again (its next attempt completes it).
struct UnsetPromise {
    store: Store,
    reference: Arc<Reference>,
    live: Option<Live>,
}

impl crate::lifetime::Unfinished for UnsetPromise {
    fn settle(mut self: Box<Self>, error: Option<String>) -> crate::lifetime::Settling {
        let live = self.live.take();
        let store = self.store.clone();
        let reference = self.reference.clone();
        Box::pin(async move {
            let Some(live) = live else { return };
            let outcome = match error {
                Some(message) => record::Outcome::Failed(message),
                None => record::Outcome::Dropped,
            };
            let span = op_span!("proxystore.future.set", store, key = reference.key.as_str());
            let result = complete(&store, &reference, live, &outcome, &span)
                .instrument(span.clone())
                .await;
            trace::record_result(&span, &result);
            if let Err(e) = result
                && !matches!(e, Error::Future { .. })
            {
                tracing::warn!(key = %reference.key, error = %e, "cannot fail the future of a finished task");
            }
        })
    }

    fn release(mut self: Box<Self>) {
        self.park();
    }
}

impl UnsetPromise {
    /// Stop beating and say "in transit": the task is queued again.
    fn park(&mut self) {
        if let Some(live) = self.live.take() {
            park_heartbeat(&self.store, &self.reference, live);
        }
    }
}

impl Drop for UnsetPromise {
    fn drop(&mut self) {
        self.park();
    }
}

/// Dropped unset: inside a task attempt the attempt's collector decides (see
/// [`crate::lifetime::with_drop_owner`]); elsewhere the future fails as dropped.
impl<T> Drop for Promise<T> {
    fn drop(&mut self) {
        let live = self
            .live
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(live) = live else { return };
        let unset = Box::new(UnsetPromise {
            store: self.store.clone(),
            reference: self.reference.clone(),
            live: Some(live),
        });
        if let Err(unset) = crate::lifetime::adopt_unfinished(unset) {
            // Not in a task attempt: fail it now, in the background (the process waits for
            // it at exit).
            crate::lifetime::spawn_cleanup(unset.settle(None));
        }
    }
}

/// The heartbeat task of a promise whose reference asks for one.
fn start_heartbeat(store: &Store, reference: &Reference) -> Option<tokio::task::JoinHandle<()>> {
    let info = reference.future.as_ref()?;
    let key = info.heartbeat_key.clone()?;
    let every = Duration::from_millis(info.heartbeat_ms);
    if every.is_zero() {
        return None;
    }
    let connector = store.connector().clone();
    Some(crate::runtime::io_handle().spawn(async move {
        loop {
            if let Err(e) = connector.set(&key, record::beat()).await {
                tracing::debug!(key = %key, error = %e, "a future's heartbeat failed");
            }
            tokio::time::sleep(every).await;
        }
    }))
}

/// [`Error::Future`] for the future of `reference`.
pub(crate) fn future_error(reference: &Reference, problem: FutureProblem) -> Error {
    Error::Future {
        store: reference.store.clone(),
        key: reference.key.clone(),
        origin: (!reference.origin.is_empty()).then(|| reference.origin.clone()),
        problem,
    }
}

/// Serializing moves the promise (unless inside
/// [`crate::lifetime::serialize_without_moving`]): this handle goes inert, and its heartbeat
/// says "in transit" until the process that deserializes it takes over.
impl<T> Serialize for Promise<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        if !crate::lifetime::owned::moving() {
            return s.serialize_newtype_struct(PROMISE_NEWTYPE_NAME, &*self.reference);
        }
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.is_none() {
            return Err(S::Error::custom(self.error(FutureProblem::Moved)));
        }
        let written = s.serialize_newtype_struct(PROMISE_NEWTYPE_NAME, &*self.reference)?;
        if let Some(state) = live.take() {
            park_heartbeat(&self.store, &self.reference, state);
        }
        Ok(written)
    }
}

/// Mark a moved promise's heartbeat "in transit".
fn park_heartbeat(store: &Store, reference: &Reference, live: Live) {
    let Some(key) = reference
        .future
        .as_ref()
        .and_then(|f| f.heartbeat_key.clone())
    else {
        return;
    };
    let connector = store.connector().clone();
    crate::lifetime::spawn_cleanup(async move {
        live.stopped().await;
        let parked = bytes::Bytes::from_static(&record::PARKED);
        if let Err(e) = connector.set(&key, parked).await {
            tracing::debug!(key = %key, error = %e, "cannot park a moved promise's heartbeat");
        }
    });
}

/// Deserializing takes the promise over: this process completes it (or fails it when the
/// handle drops), and beats for it.
impl<'de, T> Deserialize<'de> for Promise<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Reference;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a promise of a distributed future")
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> std::result::Result<Reference, D::Error> {
                <Reference as Deserialize>::deserialize(d)
            }
        }
        let reference = d.deserialize_newtype_struct(PROMISE_NEWTYPE_NAME, Visit)?;
        if reference.future.is_none() {
            return Err(D::Error::custom(format!(
                "object {} of store '{}' is not a distributed future",
                reference.key, reference.store
            )));
        }
        let store = crate::registry::store_for(&reference).map_err(D::Error::custom)?;
        Ok(Promise::live(store, Arc::new(reference)))
    }
}

#[cfg(test)]
mod tests;
