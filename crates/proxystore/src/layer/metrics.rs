//! Counts, bytes and time of a store's connector calls.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::Layer;
use crate::connector::stream::{ObjectReader, ObjectWriter, StoredObject};
use crate::connector::{
    CallConfig, Connector, ConnectorConfig, ImmediateConnector, ObjectSink, PutOptions,
};
use crate::digest::{Digest, DigestAlgorithm};
use crate::error::Result;
use crate::key::Key;
use crate::metrics::{Metrics, Op, OpCounter};

/// Records every call of the connector it wraps into a store's [`Metrics`] (what
/// [`crate::Store::metrics`] reports): puts and gets with their bytes, exists and evictions,
/// one record per call (a batch is one call). Streamed transfers ([`Connector::writer`],
/// [`Connector::reader`]) are passed through uncounted.
pub(crate) struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        MetricsLayer { metrics }
    }
}

impl MetricsLayer {
    /// The layer as its concrete type, whose counted calls a store makes without the boxed
    /// future of a call through `dyn Connector` (one allocation per call on the hot path).
    pub(crate) fn measure(&self, inner: Arc<dyn Connector>) -> Arc<Measured> {
        Arc::new(Measured {
            inner,
            metrics: self.metrics.clone(),
        })
    }
}

impl Layer for MetricsLayer {
    fn layer(&self, inner: Arc<dyn Connector>) -> Arc<dyn Connector> {
        self.measure(inner)
    }
}

/// A connector whose calls are counted (made by [`MetricsLayer`]).
pub(crate) struct Measured {
    inner: Arc<dyn Connector>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

/// Run `fut` and record it in `counter` with the bytes `bytes` says it moved; `keyed` then
/// sees a success with those bytes and the time taken (for the per-key figures).
async fn counted_with<T>(
    counter: &OpCounter,
    fut: impl Future<Output = Result<T>>,
    bytes: impl FnOnce(&T) -> u64,
    keyed: impl FnOnce(&T, u64, std::time::Duration),
) -> Result<T> {
    let start = Instant::now();
    let result = fut.await;
    let elapsed = start.elapsed();
    let n = result.as_ref().map_or(0, bytes);
    counter.record(n, elapsed);
    if let Ok(v) = &result {
        keyed(v, n, elapsed);
    }
    result
}

fn got(d: &Option<Bytes>) -> u64 {
    d.as_ref().map_or(0, |d| d.len() as u64)
}

/// An immediate connector's calls, counted (see [`Measured::immediate`]).
pub(crate) struct Immediate<'a> {
    inner: &'a dyn ImmediateConnector,
    metrics: &'a Metrics,
}

impl Immediate<'_> {
    /// Run `call` counted in `counter` with the bytes `bytes` says it moved, timed as
    /// [`OpCounter::clock`] says; `key` gets the per-key figures.
    fn counted<T>(
        &self,
        counter: &OpCounter,
        op: Op,
        call: impl FnOnce() -> Result<T>,
        bytes: impl FnOnce(&T) -> u64,
        key: impl FnOnce(&T) -> Key,
    ) -> Result<T> {
        let per_key = self.metrics.per_key.is_some();
        let start = counter.clock(per_key);
        let result = call();
        let elapsed = start.map(|s| s.elapsed());
        let n = result.as_ref().map_or(0, bytes);
        counter.record_sampled(n, elapsed);
        if per_key && let Ok(v) = &result {
            self.metrics
                .record_key(&key(v), op, n, elapsed.unwrap_or_default());
        }
        result
    }

    pub(crate) fn put(&self, data: Bytes, options: &PutOptions) -> Result<Key> {
        let n = data.len() as u64;
        self.counted(
            &self.metrics.put,
            Op::Put,
            || self.inner.put_now(data, options),
            |_| n,
            Key::clone,
        )
    }

    pub(crate) fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        self.counted(
            &self.metrics.get,
            Op::Get,
            || self.inner.get_now(key),
            got,
            |_| key.clone(),
        )
    }

    pub(crate) fn exists(&self, key: &Key) -> Result<bool> {
        self.counted(
            &self.metrics.exists,
            Op::Exists,
            || self.inner.exists_now(key),
            |_| 0,
            |_| key.clone(),
        )
    }

    pub(crate) fn evict(&self, key: &Key) -> Result<()> {
        self.counted(
            &self.metrics.evict,
            Op::Evict,
            || self.inner.evict_now(key),
            |()| 0,
            |()| key.clone(),
        )
    }
}

/// The calls a store makes on its hot paths, counted, as plain async methods (what the
/// `Connector` impl below also runs).
impl Measured {
    /// The inner connector's immediate calls, counted, when it has them: the store's hot
    /// paths call these without a future.
    pub(crate) fn immediate(&self) -> Option<Immediate<'_>> {
        self.inner.immediate().map(|inner| Immediate {
            inner,
            metrics: &self.metrics,
        })
    }

    /// Record `op` of `n` bytes on `key` in the per-key figures (if kept).
    fn on_key<'a>(&'a self, key: &'a Key, op: Op) -> impl FnOnce(u64, std::time::Duration) + 'a {
        move |n, elapsed| self.metrics.record_key(key, op, n, elapsed)
    }

    /// Record a batch on each of its keys, the time shared out.
    fn on_keys<'a>(
        &'a self,
        keys: &'a [Key],
        op: Op,
        bytes: impl Fn(usize) -> u64 + 'a,
    ) -> impl FnOnce(std::time::Duration) + 'a {
        move |elapsed| {
            let share = elapsed / u32::try_from(keys.len().max(1)).unwrap_or(u32::MAX);
            for (i, k) in keys.iter().enumerate() {
                self.metrics.record_key(k, op, bytes(i), share);
            }
        }
    }

    pub(crate) async fn counted_put(&self, data: Bytes, options: &PutOptions) -> Result<Key> {
        let n = data.len() as u64;
        let put = async { Ok((self.inner.put_opts(data, options).await?, None)) };
        Ok(self.counted_put_of(n, put).await?.0)
    }

    /// [`Connector::put_hashing`], counted as a put.
    pub(crate) async fn counted_put_hashing(
        &self,
        data: Bytes,
        options: &PutOptions,
        algorithm: DigestAlgorithm,
    ) -> Result<(Key, Option<Digest>)> {
        let n = data.len() as u64;
        self.counted_put_of(n, self.inner.put_hashing(data, options, algorithm))
            .await
    }

    /// `put`, a put of `n` bytes, counted with its key's figures.
    async fn counted_put_of(
        &self,
        n: u64,
        put: impl Future<Output = Result<(Key, Option<Digest>)>>,
    ) -> Result<(Key, Option<Digest>)> {
        counted_with(
            &self.metrics.put,
            put,
            |_| n,
            |(k, _), n, t| {
                self.metrics.record_key(k, Op::Put, n, t);
            },
        )
        .await
    }

    pub(crate) async fn counted_get(&self, key: &Key) -> Result<Option<Bytes>> {
        self.counted_fetch(key, self.inner.get(key)).await
    }

    pub(crate) async fn counted_get_sized(&self, key: &Key, size: u64) -> Result<Option<Bytes>> {
        self.counted_fetch(key, self.inner.get_sized(key, size))
            .await
    }

    /// [`Connector::get_into`], counted as a get of the bytes the sink was given.
    pub(crate) async fn counted_get_into(
        &self,
        key: &Key,
        sink: &mut ObjectSink<'_>,
    ) -> Result<bool> {
        let start = Instant::now();
        let result = self.inner.get_into(key, sink).await;
        let elapsed = start.elapsed();
        let n = if matches!(result, Ok(true)) {
            sink.filled()
        } else {
            0
        };
        self.metrics.get.record(n, elapsed);
        if result.is_ok() {
            self.metrics.record_key(key, Op::Get, n, elapsed);
        }
        result
    }

    /// `fetch`, a get of `key`, counted.
    async fn counted_fetch(
        &self,
        key: &Key,
        fetch: impl Future<Output = Result<Option<Bytes>>>,
    ) -> Result<Option<Bytes>> {
        let on = self.on_key(key, Op::Get);
        counted_with(&self.metrics.get, fetch, got, |_, n, t| {
            on(n, t);
        })
        .await
    }

    pub(crate) async fn counted_exists(&self, key: &Key) -> Result<bool> {
        let on = self.on_key(key, Op::Exists);
        counted_with(
            &self.metrics.exists,
            self.inner.exists(key),
            |_| 0,
            |_, n, t| {
                on(n, t);
            },
        )
        .await
    }

    pub(crate) async fn counted_evict(&self, key: &Key) -> Result<()> {
        let on = self.on_key(key, Op::Evict);
        counted_with(
            &self.metrics.evict,
            self.inner.evict(key),
            |_| 0,
            |_, n, t| {
                on(n, t);
            },
        )
        .await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Connector for Measured {
    fn kind(&self) -> &str {
        self.inner.kind()
    }

    async fn put_opts(&self, data: Bytes, options: &PutOptions) -> Result<Key> {
        self.counted_put(data, options).await
    }

    async fn put_hashing(
        &self,
        data: Bytes,
        options: &PutOptions,
        algorithm: DigestAlgorithm,
    ) -> Result<(Key, Option<Digest>)> {
        self.counted_put_hashing(data, options, algorithm).await
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        self.counted_get(key).await
    }

    async fn get_sized(&self, key: &Key, size: u64) -> Result<Option<Bytes>> {
        self.counted_get_sized(key, size).await
    }

    async fn get_into(&self, key: &Key, sink: &mut ObjectSink<'_>) -> Result<bool> {
        self.counted_get_into(key, sink).await
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        self.counted_exists(key).await
    }

    async fn wait(&self, key: &Key, timeout: Duration) -> Result<bool> {
        self.inner.wait(key, timeout).await
    }

    fn wait_mechanism(&self) -> &'static str {
        self.inner.wait_mechanism()
    }

    async fn evict(&self, key: &Key) -> Result<()> {
        self.counted_evict(key).await
    }

    fn config(&self) -> ConnectorConfig {
        self.inner.config()
    }

    async fn put(&self, data: Bytes) -> Result<Key> {
        self.counted_put(data, &PutOptions::default()).await
    }

    async fn put_batch(&self, data: Vec<Bytes>, options: &PutOptions) -> Result<Vec<Key>> {
        let sizes: Vec<u64> = data.iter().map(|d| d.len() as u64).collect();
        let n = sizes.iter().sum();
        let put = self.inner.put_batch(data, options);
        counted_with(
            &self.metrics.put,
            put,
            |_| n,
            |keys, _, t| {
                self.on_keys(keys, Op::Put, |i| sizes[i])(t);
            },
        )
        .await
    }

    async fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>> {
        let get = self.inner.get_batch(keys);
        counted_with(
            &self.metrics.get,
            get,
            |v| v.iter().map(got).sum(),
            |v, _, t| {
                self.on_keys(keys, Op::Get, |i| v.get(i).map_or(0, got))(t);
            },
        )
        .await
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Option<Bytes>> {
        let on = self.on_key(key, Op::Get);
        let get = self.inner.get_range(key, range);
        counted_with(&self.metrics.get, get, got, |_, n, t| on(n, t)).await
    }

    async fn evict_batch(&self, keys: &[Key]) -> Result<()> {
        let evict = self.inner.evict_batch(keys);
        counted_with(
            &self.metrics.evict,
            evict,
            |_| 0,
            |_, _, t| {
                self.on_keys(keys, Op::Evict, |_| 0)(t);
            },
        )
        .await
    }

    async fn writer(
        &self,
        key: Option<&Key>,
        size: Option<u64>,
        options: &PutOptions,
    ) -> Result<Option<Box<dyn ObjectWriter>>> {
        self.inner.writer(key, size, options).await
    }

    async fn reader(&self, key: &Key, range: Option<Range<u64>>) -> Result<Option<ObjectReader>> {
        self.inner.reader(key, range).await
    }

    async fn new_key(&self, options: &PutOptions) -> Result<Key> {
        self.inner.new_key(options).await
    }

    async fn set(&self, key: &Key, data: Bytes) -> Result<()> {
        let n = data.len() as u64;
        let on = self.on_key(key, Op::Put);
        let set = self.inner.set(key, data);
        counted_with(&self.metrics.put, set, |_| n, |_, n, t| on(n, t)).await
    }

    async fn set_once(&self, key: &Key, data: Bytes) -> Result<bool> {
        let n = data.len() as u64;
        let on = self.on_key(key, Op::Put);
        let set = self.inner.set_once(key, data);
        counted_with(&self.metrics.put, set, |_| n, |_, n, t| on(n, t)).await
    }

    fn set_once_is_atomic(&self) -> bool {
        self.inner.set_once_is_atomic()
    }

    fn check_key(&self, key: &Key) -> Result<()> {
        self.inner.check_key(key)
    }

    async fn inventory(&self) -> Result<Option<Vec<StoredObject>>> {
        self.inner.inventory().await
    }

    /// The inner connector's: a store counts immediate calls itself ([`Measured::immediate`]).
    fn immediate(&self) -> Option<&dyn ImmediateConnector> {
        self.inner.immediate()
    }

    fn call_config(&self) -> CallConfig {
        self.inner.call_config()
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}
