//! The store: a named connector plus a codec, a cache of decoded objects, and metrics.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tracing::{Instrument, Span, field::display};

use crate::cache::ObjectCache;
use crate::codec::Codec;
use crate::connector::{Connector, ConnectorConfig, PutOptions};
use crate::digest::{Digest, DigestAlgorithm};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::layer::Layer;
use crate::layer::metrics::{Measured, MetricsLayer};
use crate::metrics::{Metrics, StoreMetrics};
use crate::reference::Reference;
use crate::trace::{self, TraceContext, op_span};

/// Default byte bound of the decoded-object cache: 256 MiB.
pub const DEFAULT_CACHE_BYTES: u64 = 256 << 20;

/// Everything needed to rebuild a store in another process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreConfig {
    /// Store name, unique within a process's registry.
    pub name: String,
    /// The connector.
    pub connector: ConnectorConfig,
    /// Codec of new objects (default postcard; byte payloads are always raw).
    #[serde(default)]
    pub codec: Codec,
    /// Byte bound of the cache of decoded objects (default 256 MiB; 0 turns it off).
    #[serde(default = "default_cache_bytes")]
    pub cache_bytes: u64,
    /// Digest recorded for new objects (default xxh3).
    #[serde(default)]
    pub digest: DigestAlgorithm,
    /// Check digests on resolve (default true).
    #[serde(default = "yes")]
    pub verify_digest: bool,
}

fn default_cache_bytes() -> u64 {
    DEFAULT_CACHE_BYTES
}

fn yes() -> bool {
    true
}

impl StoreConfig {
    /// A config with default settings.
    pub fn new(name: impl Into<String>, connector: ConnectorConfig) -> Self {
        StoreConfig {
            name: name.into(),
            connector,
            codec: Codec::default(),
            cache_bytes: DEFAULT_CACHE_BYTES,
            digest: DigestAlgorithm::default(),
            verify_digest: true,
        }
    }
}

/// Anything that can become the connector of a store: a connector value or an
/// `Arc<dyn Connector>`.
pub trait IntoConnector {
    /// Wrap into a shared trait object.
    fn into_connector(self) -> Arc<dyn Connector>;
}

impl<C: Connector> IntoConnector for C {
    fn into_connector(self) -> Arc<dyn Connector> {
        Arc::new(self)
    }
}

impl IntoConnector for Arc<dyn Connector> {
    fn into_connector(self) -> Arc<dyn Connector> {
        self
    }
}

/// Where and how one object was stored.
pub(crate) struct Stored {
    pub(crate) key: Key,
    pub(crate) size: u64,
    pub(crate) digest: Option<Digest>,
    pub(crate) codec: Codec,
    /// Context of the `proxystore.put` span, for the references made to the object.
    pub(crate) trace: Option<TraceContext>,
}

/// Run `fut` inside `span` and record its outcome there.
async fn traced<T>(span: Span, fut: impl Future<Output = Result<T>>) -> Result<T> {
    let result = fut.instrument(span.clone()).await;
    trace::record_result(&span, &result);
    result
}

/// As [`traced`], for a call done here and now (an immediate connector's).
fn traced_now<T>(span: &Span, call: impl FnOnce() -> Result<T>) -> Result<T> {
    let result = span.in_scope(call);
    trace::record_result(span, &result);
    result
}

/// Record the outcome of a lookup that may find nothing.
fn record_lookup<T>(span: &Span, result: &Result<Option<T>>) {
    match result {
        Ok(None) => {
            span.record("outcome", "absent");
        }
        r => trace::record_result(span, r),
    }
}

mod keys;

pub(crate) struct StoreInner {
    config: StoreConfig,
    /// The connector in its layers, counted: `measured` as a `dyn Connector`.
    connector: Arc<dyn Connector>,
    /// The same, for the hot paths' calls without a boxed future of their own.
    measured: Arc<Measured>,
    cache: ObjectCache,
    metrics: Arc<Metrics>,
    /// The keys this store created and has not evicted, when it keeps them
    /// ([`StoreBuilder::track_created`]).
    created: Option<keys::Created>,
}

/// A named connector with a codec, a byte-bounded cache of decoded objects, and metrics.
///
/// Cheap to clone: clones share the connector, cache and metrics.
///
/// ```
/// # proxystore::runtime::block_on(async {
/// use proxystore::{Store, connector::memory::MemoryConnector};
/// let store = Store::new("doc-store", MemoryConnector::new("doc-store"));
/// let key = store.put(&vec![1.0f64, 2.0, 3.0]).await?;
/// let back: Vec<f64> = store.get(&key).await?.expect("present");
/// assert_eq!(back, [1.0, 2.0, 3.0]);
///
/// // A proxy is a small reference; it fetches on first use.
/// let proxy = store.proxy(&String::from("hello")).await?;
/// assert!(!proxy.is_resolved());
/// assert_eq!(proxy.resolve().await?.len(), 5);
/// # Ok::<_, proxystore::Error>(()) })??;
/// # Ok::<_, proxystore::Error>(())
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("name", &self.inner.config.name)
            .field("connector", &self.inner.connector)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Store`] with non-default settings.
#[derive(Debug)]
pub struct StoreBuilder {
    config: StoreConfig,
    connector: Arc<dyn Connector>,
    key_metrics: bool,
    track_created: bool,
}

impl StoreBuilder {
    /// Codec for new objects.
    #[must_use]
    pub fn codec(mut self, codec: Codec) -> Self {
        self.config.codec = codec;
        self
    }

    /// Byte bound of the decoded-object cache (0 disables it).
    #[must_use]
    pub fn cache_bytes(mut self, bytes: u64) -> Self {
        self.config.cache_bytes = bytes;
        self
    }

    /// Digest recorded for new objects.
    #[must_use]
    pub fn digest(mut self, digest: DigestAlgorithm) -> Self {
        self.config.digest = digest;
        self
    }

    /// Whether resolves check digests.
    #[must_use]
    pub fn verify_digest(mut self, verify: bool) -> Self {
        self.config.verify_digest = verify;
        self
    }

    /// Put `layer` around the connector, outside the layers the connector asks for (see
    /// [`crate::layer`]); layers added later wrap earlier ones.
    #[must_use]
    pub fn layer(mut self, layer: impl Layer) -> Self {
        self.connector = layer.layer(crate::layer::stack(self.connector));
        self
    }

    /// Build the store.
    pub fn build(self) -> Store {
        let metrics = if self.key_metrics {
            Metrics::with_key_metrics()
        } else {
            Metrics::default()
        };
        let created = self.track_created.then(keys::Created::default);
        Store::assemble(self.config, self.connector, metrics, created)
    }
}

impl Store {
    /// A store named `name` over `connector`, with default settings.
    pub fn new(name: impl Into<String>, connector: impl IntoConnector) -> Self {
        Store::builder(name, connector).build()
    }

    /// A builder for a store named `name` over `connector`.
    pub fn builder(name: impl Into<String>, connector: impl IntoConnector) -> StoreBuilder {
        let connector = connector.into_connector();
        StoreBuilder {
            config: StoreConfig::new(name, connector.config()),
            connector,
            key_metrics: false,
            track_created: false,
        }
    }

    /// Rebuild a store from its config (building the connector through the registered kinds).
    /// Like [`crate::kinds::from_config`], it builds whatever it is given: check a config from an
    /// untrusted source with [`crate::ResolvePolicy::check_connector`] first.
    ///
    /// # Errors
    /// [`Error::UnknownConnectorKind`] or the connector's [`Error::Config`].
    pub fn from_config(config: StoreConfig) -> Result<Self> {
        let connector = crate::kinds::from_config(&config.connector)?;
        Ok(Store::from_parts(config, connector))
    }

    fn from_parts(config: StoreConfig, connector: Arc<dyn Connector>) -> Self {
        Store::assemble(config, connector, Metrics::default(), None)
    }

    fn assemble(
        config: StoreConfig,
        connector: Arc<dyn Connector>,
        metrics: Metrics,
        created: Option<keys::Created>,
    ) -> Self {
        // The layers the connector asks for, then the store's own count of its calls.
        let metrics = Arc::new(metrics);
        let measured = MetricsLayer::new(metrics.clone()).measure(crate::layer::stack(connector));
        Store {
            inner: Arc::new(StoreInner {
                cache: ObjectCache::new(config.cache_bytes),
                config,
                connector: measured.clone(),
                measured,
                metrics,
                created,
            }),
        }
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// The store's configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// The connector underneath, inside its layers.
    pub fn connector(&self) -> &Arc<dyn Connector> {
        &self.inner.connector
    }

    /// A snapshot of the store's metrics.
    pub fn metrics(&self) -> StoreMetrics {
        self.inner.metrics.snapshot()
    }

    /// Number of objects in the decoded-object cache.
    pub fn cache_len(&self) -> usize {
        self.inner.cache.len()
    }

    /// Bytes accounted to the decoded-object cache.
    pub fn cache_bytes(&self) -> u64 {
        self.inner.cache.bytes()
    }

    /// Empty the decoded-object cache.
    pub fn clear_cache(&self) {
        self.inner.cache.clear();
    }

    /// Whether two handles are the same store.
    pub fn ptr_eq(&self, other: &Store) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) async fn put_object<T: Serialize + 'static>(
        &self,
        obj: &T,
        options: &PutOptions,
    ) -> Result<Stored> {
        let span = op_span!("proxystore.put", self);
        if let Some(now) = self.inner.measured.immediate() {
            return traced_now(&span, || {
                let (data, codec) = self.inner.config.codec.encode(obj)?;
                let size = data.len() as u64;
                span.record("bytes", trace::int(size));
                let digest = self.inner.config.digest.digest(&data);
                let key = now.put(data, options)?;
                self.created(std::slice::from_ref(&key));
                Ok(self.stored(&span, key, size, digest, codec))
            });
        }
        traced(span.clone(), async {
            let (data, codec) = self.inner.config.codec.encode(obj)?;
            self.store_bytes(&span, data, codec, options, None).await
        })
        .await
    }

    /// What a put inside `span` stored.
    fn stored(
        &self,
        span: &Span,
        key: Key,
        size: u64,
        digest: Option<Digest>,
        codec: Codec,
    ) -> Stored {
        span.record("key", display(&key));
        Stored {
            key,
            size,
            digest,
            codec,
            trace: trace::inject(span),
        }
    }

    /// Digest, put and count already encoded bytes, inside the put span `span`.
    ///
    /// Under a new key, or written over `at` (replacing that object; its cached version is
    /// dropped).
    async fn store_bytes(
        &self,
        span: &Span,
        data: Bytes,
        codec: Codec,
        options: &PutOptions,
        at: Option<&Key>,
    ) -> Result<Stored> {
        let size = data.len() as u64;
        span.record("bytes", trace::int(size));
        let (key, digest) = match at {
            // The connector hashes as it writes (or beside the write: `put_hashing`'s default).
            None => {
                let (key, digest) = self
                    .inner
                    .measured
                    .counted_put_hashing(data, options, self.inner.config.digest)
                    .await?;
                self.created(std::slice::from_ref(&key));
                (key, digest)
            }
            Some(key) => {
                let ((), digest) =
                    crate::digest::digest_one_beside(self.inner.config.digest, data, |data| {
                        self.inner.connector.set(key, data)
                    })
                    .await?;
                self.inner.cache.remove(key);
                (key.clone(), digest)
            }
        };
        Ok(self.stored(span, key, size, digest, codec))
    }

    /// `write` and the digests of `data` (the objects it writes) with the store's algorithm
    /// ([`crate::digest::digest_beside`]).
    async fn with_digests<T>(
        &self,
        data: &[Bytes],
        write: impl Future<Output = Result<T>>,
    ) -> Result<(T, Vec<Option<Digest>>)> {
        crate::digest::digest_beside(self.inner.config.digest, data, write).await
    }

    /// Encode `obj` and store it under a new key.
    ///
    /// `Bytes` are stored without a copy, `Vec<u8>` with one; other types go through the
    /// store's codec.
    ///
    /// # Errors
    /// [`Error::Encode`], or the connector's error.
    pub async fn put<T: Serialize + 'static>(&self, obj: &T) -> Result<Key> {
        Ok(self.put_object(obj, &PutOptions::default()).await?.key)
    }

    /// [`Store::put`] with routing hints.
    ///
    /// # Errors
    /// As for [`Store::put`].
    pub async fn put_with<T: Serialize + 'static>(
        &self,
        obj: &T,
        options: &PutOptions,
    ) -> Result<Key> {
        Ok(self.put_object(obj, options).await?.key)
    }

    pub(crate) async fn put_objects<T: Serialize + 'static>(
        &self,
        objs: &[T],
        options: &PutOptions,
    ) -> Result<Vec<Stored>> {
        let span = op_span!("proxystore.put", self);
        traced(span.clone(), self.put_objects_in(&span, objs, options)).await
    }

    async fn put_objects_in<T: Serialize + 'static>(
        &self,
        span: &Span,
        objs: &[T],
        options: &PutOptions,
    ) -> Result<Vec<Stored>> {
        let encoded = objs
            .iter()
            .map(|obj| self.inner.config.codec.encode(obj))
            .collect::<Result<Vec<_>>>()?;
        self.store_batch(span, encoded, options).await
    }

    /// Digest, put (one connector call) and count already encoded objects, inside the put
    /// span `span`.
    async fn store_batch(
        &self,
        span: &Span,
        encoded: Vec<(Bytes, Codec)>,
        options: &PutOptions,
    ) -> Result<Vec<Stored>> {
        span.record("count", trace::int(encoded.len()));
        let (data, codecs): (Vec<Bytes>, Vec<Codec>) = encoded.into_iter().unzip();
        let sizes: Vec<u64> = data.iter().map(|b| b.len() as u64).collect();
        let hashed = data.clone();
        let (keys, digests) = self
            .with_digests(&hashed, self.inner.connector.put_batch(data, options))
            .await?;
        self.created(&keys);
        if keys.len() != sizes.len() {
            return Err(Error::backend_message(
                self.inner.connector.kind(),
                format!("put_batch returned {} keys for {}", keys.len(), sizes.len()),
                false,
            ));
        }
        let meta: Vec<(u64, Option<Digest>, Codec)> = sizes
            .into_iter()
            .zip(digests)
            .zip(codecs)
            .map(|((size, digest), codec)| (size, digest, codec))
            .collect();
        let total: u64 = meta.iter().map(|m| m.0).sum();
        span.record("bytes", trace::int(total));
        let context = trace::inject(span);
        Ok(keys
            .into_iter()
            .zip(meta)
            .map(|(key, (size, digest, codec))| Stored {
                key,
                size,
                digest,
                codec,
                trace: context.clone(),
            })
            .collect())
    }

    /// Store many objects in one connector call where the connector supports it.
    ///
    /// # Errors
    /// As for [`Store::put`].
    pub async fn put_batch<T: Serialize + 'static>(&self, objs: &[T]) -> Result<Vec<Key>> {
        Ok(self
            .put_objects(objs, &PutOptions::default())
            .await?
            .into_iter()
            .map(|s| s.key)
            .collect())
    }

    /// The object under `key` as a shared `Arc<T>`, from the cache when possible.
    ///
    /// # Errors
    /// [`Error::Decode`] when the bytes are not a `T`, or the connector's error.
    pub async fn get_shared<T>(&self, key: &Key) -> Result<Option<Arc<T>>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let span = op_span!("proxystore.get", self, key = key.as_str());
        if let Some(hit) = self.cached_in::<T>(&span, key) {
            record_lookup(&span, &Ok(Some(())));
            return Ok(Some(hit));
        }
        let result = match self.inner.measured.immediate() {
            Some(now) => span.in_scope(|| self.fetched(&span, key, now.get(key)?)),
            None => {
                async { self.fetched(&span, key, self.fetch(key, None).await?) }
                    .instrument(span.clone())
                    .await
            }
        };
        record_lookup(&span, &result);
        result
    }

    /// The object under `key` from the cache, counted as a hit or a miss on the store and on
    /// `span`.
    fn cached_in<T: Send + Sync + 'static>(&self, span: &Span, key: &Key) -> Option<Arc<T>> {
        let hit = self.cached::<T>(key);
        span.record("cache_hit", hit.is_some());
        if hit.is_none() {
            self.inner.metrics.miss();
        }
        hit
    }

    /// The object decoded from `data`, the bytes fetched for `key` inside `span`, and cached.
    fn fetched<T>(&self, span: &Span, key: &Key, data: Option<Bytes>) -> Result<Option<Arc<T>>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let Some(data) = data else {
            return Ok(None);
        };
        let codec = codec_for::<T>(self.inner.config.codec);
        let size = data.len() as u64;
        span.record("bytes", trace::int(size));
        let obj = Arc::new(self.decode::<T>(key, codec, data)?);
        self.inner.cache.insert(key.clone(), obj.clone(), size);
        Ok(Some(obj))
    }

    /// The object under `key`, or `None` when absent. A second get of a key is served from the
    /// cache without connector I/O.
    ///
    /// `T: Clone` because the cache keeps its own copy: use `Bytes` or `Arc<U>` for large
    /// objects to make that clone free, or [`Store::get_shared`].
    ///
    /// # Errors
    /// As for [`Store::get_shared`].
    pub async fn get<T>(&self, key: &Key) -> Result<Option<T>>
    where
        T: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        Ok(self
            .get_shared::<T>(key)
            .await?
            .map(|a| Arc::try_unwrap(a).unwrap_or_else(|a| (*a).clone())))
    }

    /// The stored bytes under `key`, bypassing codec and cache.
    ///
    /// # Errors
    /// The connector's error.
    pub async fn get_bytes(&self, key: &Key) -> Result<Option<Bytes>> {
        let span = op_span!("proxystore.get", self, key = key.as_str());
        let result = self.fetch(key, None).instrument(span.clone()).await;
        if let Ok(Some(d)) = &result {
            span.record("bytes", trace::int(d.len()));
        }
        record_lookup(&span, &result);
        result
    }

    /// The bytes under `key`, counted; `size`, when the caller knows it (from a reference), lets
    /// the connector choose how to fetch ([`Connector::get_sized`]).
    async fn fetch(&self, key: &Key, size: Option<u64>) -> Result<Option<Bytes>> {
        let measured = &self.inner.measured;
        match (measured.immediate(), size) {
            (Some(now), _) => now.get(key),
            // 0: an empty object, or a reference that does not say.
            (None, Some(size)) if size > 0 => measured.counted_get_sized(key, size).await,
            (None, _) => measured.counted_get(key).await,
        }
    }

    fn decode<T: DeserializeOwned + 'static>(
        &self,
        key: &Key,
        codec: Codec,
        data: Bytes,
    ) -> Result<T> {
        codec.decode::<T>(data).map_err(|source| Error::Decode {
            store: self.name().to_owned(),
            key: key.clone(),
            type_name: std::any::type_name::<T>().to_owned(),
            codec: codec.as_str().to_owned(),
            source,
        })
    }

    /// The object a reference points to: cache, then connector, checking size and digest.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::DigestMismatch`], [`Error::Decode`], or the connector's
    /// error.
    pub async fn get_by_reference<T>(&self, reference: &Reference) -> Result<Arc<T>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        self.resolve_reference(reference, true).await
    }

    /// The objects `refs` point to, as [`Store::get_by_reference`] gives them one by one, with
    /// one connector call (`get_batch`) for all those not in the cache: each checked against
    /// its digest, decoded, then cached (or evicted, if its reference says so). One result per
    /// reference, in order: an object that is missing or does not match fails alone.
    ///
    /// ```
    /// # proxystore::runtime::block_on(async {
    /// use proxystore::{Store, connector::memory::MemoryConnector};
    ///
    /// let store = Store::new("resolve-batch-doc", MemoryConnector::new("resolve-batch-doc"));
    /// let proxies = store.proxy_batch(&[vec![1u32, 2], vec![3]]).await?;
    /// let refs: Vec<_> = proxies.iter().map(|p| p.reference().unwrap().clone()).collect();
    /// store.evict(&refs[1].key).await?;
    /// let got = store.resolve_batch::<Vec<u32>>(&refs).await?;
    /// assert_eq!(*got[0].as_ref().unwrap().as_ref(), vec![1, 2]);
    /// assert!(matches!(got[1], Err(proxystore::Error::NotFound { .. })));
    /// # Ok::<_, proxystore::Error>(()) })??;
    /// # Ok::<_, proxystore::Error>(())
    /// ```
    ///
    /// # Errors
    /// The connector's error for the batch call.
    pub async fn resolve_batch<T>(&self, refs: &[Reference]) -> Result<Vec<Result<Arc<T>>>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let mut out: Vec<Option<Result<Arc<T>>>> = Vec::with_capacity(refs.len());
        let mut missed = Vec::new();
        for (i, r) in refs.iter().enumerate() {
            if r.future.is_some() {
                // A future's value is checked against its record, one by one.
                out.push(Some(self.get_by_reference::<T>(r).await));
            } else if let Some(hit) = self.cached::<T>(&r.key) {
                let span = self.resolve_span(r);
                span.record("cache_hit", true);
                out.push(Some(Ok(hit)));
            } else {
                out.push(None);
                missed.push(i);
            }
        }
        if !missed.is_empty() {
            let keys: Vec<Key> = missed.iter().map(|&i| refs[i].key.clone()).collect();
            let span = op_span!("proxystore.get", self);
            span.record("count", trace::int(keys.len()));
            let start = Instant::now();
            let fetched = traced(span.clone(), async {
                let data = self.inner.connector.get_batch(&keys).await?;
                if data.len() != keys.len() {
                    return Err(Error::backend_message(
                        self.inner.connector.kind(),
                        format!(
                            "get_batch returned {} objects for {}",
                            data.len(),
                            keys.len()
                        ),
                        false,
                    ));
                }
                Ok(data)
            })
            .await?;
            let share = start.elapsed() / u32::try_from(keys.len()).unwrap_or(u32::MAX);
            span.record(
                "bytes",
                fetched.iter().flatten().map(Bytes::len).sum::<usize>(),
            );
            let mut evict = Vec::new();
            for (i, data) in missed.into_iter().zip(fetched) {
                let r = &refs[i];
                let span = self.resolve_span(r);
                span.record("cache_hit", false);
                self.inner.metrics.miss();
                let result = span.in_scope(|| {
                    let data = self.check_fetched(r, data)?;
                    let size = data.len() as u64;
                    let obj = Arc::new(self.decode::<T>(&r.key, r.codec, data)?);
                    if r.evict_on_resolve {
                        evict.push(r.key.clone());
                    } else {
                        self.inner.cache.insert(r.key.clone(), obj.clone(), size);
                    }
                    Ok(obj)
                });
                self.inner.metrics.resolve.record(r.size, share);
                trace::record_result(&span, &result);
                out[i] = Some(result);
            }
            if !evict.is_empty() {
                self.evict_batch(&evict).await?;
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or_else(|| unreachable!("every reference has its result")))
            .collect())
    }

    /// [`Store::get_by_reference`] for a caller that has just missed the cache itself (a
    /// synchronous resolve looks before it leaves its thread): the cache is not looked up again.
    pub(crate) async fn get_by_reference_after_miss<T>(
        &self,
        reference: &Reference,
    ) -> Result<Arc<T>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        self.resolve_reference(reference, false).await
    }

    async fn resolve_reference<T>(
        &self,
        reference: &Reference,
        look_in_cache: bool,
    ) -> Result<Arc<T>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let span = self.resolve_span(reference);
        let start = Instant::now();
        let result = self
            .resolve_inner::<T>(&span, reference, look_in_cache)
            .instrument(span.clone())
            .await;
        let elapsed = start.elapsed();
        self.inner.metrics.resolve.record(reference.size, elapsed);
        self.inner.metrics.record_key(
            &reference.key,
            crate::metrics::Op::Resolve,
            reference.size,
            elapsed,
        );
        trace::record_result(&span, &result);
        result
    }

    /// The `proxystore.resolve` span of `r`, linked to the span that made the reference.
    fn resolve_span(&self, r: &Reference) -> Span {
        let span = op_span!(
            "proxystore.resolve",
            self,
            key = r.key.as_str(),
            bytes = trace::int(r.size),
            r#type = r.type_name.as_str()
        );
        trace::add_link(&span, &r.traceparent, &r.tracestate);
        span
    }

    async fn resolve_inner<T>(
        &self,
        span: &Span,
        r: &Reference,
        look_in_cache: bool,
    ) -> Result<Arc<T>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        if look_in_cache && let Some(hit) = self.cached::<T>(&r.key) {
            span.record("cache_hit", true);
            return Ok(hit);
        }
        span.record("cache_hit", false);
        self.inner.metrics.miss();
        let data = self.fetch_checked(r).await?;
        let size = data.len() as u64;
        let obj = Arc::new(self.decode::<T>(&r.key, r.codec, data)?);
        if r.evict_on_resolve {
            self.evict(&r.key).await?;
        } else {
            self.inner.cache.insert(r.key.clone(), obj.clone(), size);
        }
        Ok(obj)
    }

    /// The stored bytes a reference points to, checked against its digest (or size), without
    /// decoding or caching them; evicts the object if the reference says so. For code that
    /// decodes the bytes itself, such as a transcoding deserializer.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::DigestMismatch`], or the connector's error.
    pub async fn get_verified_bytes(&self, r: &Reference) -> Result<Bytes> {
        let span = self.resolve_span(r);
        span.record("cache_hit", false);
        let start = Instant::now();
        let result = async {
            let data = self.fetch_checked(r).await;
            self.inner.metrics.resolve.record(r.size, start.elapsed());
            let data = data?;
            if r.evict_on_resolve {
                self.evict(&r.key).await?;
            }
            Ok(data)
        }
        .instrument(span.clone())
        .await;
        trace::record_result(&span, &result);
        result
    }

    /// Fetch the bytes of `r` and check them, in a `proxystore.get` span (the transfer part of
    /// a resolve). The span is `debug`: the resolve span around it carries the same store, key
    /// and size, and a second exported span per resolve cost as much as the first (issue 18).
    async fn fetch_checked(&self, r: &Reference) -> Result<Bytes> {
        let span = op_span!(debug "proxystore.get", self, key = r.key.as_str());
        let result = self.fetch_checked_in(r).instrument(span.clone()).await;
        if let Ok(d) = &result {
            span.record("bytes", trace::int(d.len()));
        }
        trace::record_result(&span, &result);
        result
    }

    async fn fetch_checked_in(&self, r: &Reference) -> Result<Bytes> {
        if let Some(info) = &r.future {
            // A future's value has no digest to check (it did not exist when the reference
            // was made); its record is checked instead.
            return crate::future::fetch(self, r, info).await;
        }
        if let Some(expected) = r.digest.filter(|_| self.inner.config.verify_digest)
            && self.inner.measured.immediate().is_none()
        {
            return self.fetch_hashed(r, expected).await;
        }
        let data = self.fetch(&r.key, Some(r.size)).await?;
        self.check_fetched(r, data)
    }

    /// Fetch the bytes of `r` into a buffer of the store's, hashing each piece as it lands
    /// (while it is in the CPU's cache: a second pass over a large object in memory cost
    /// a fifth of a 100 MiB resolve from a file), and check the digest.
    async fn fetch_hashed(&self, r: &Reference, expected: Digest) -> Result<Bytes> {
        let measured: &dyn Connector = &*self.inner.measured;
        let got = crate::buffer::get_into_buffer(measured, &r.key, r.size, expected.algorithm());
        let Some((data, actual)) = got.await? else {
            return Err(self.not_found(r));
        };
        if actual != Some(expected) {
            return Err(self.digest_mismatch(r, expected, actual, data.len()));
        }
        Ok(data)
    }

    /// The bytes fetched for `r`: [`Error::NotFound`] when there are none, checked against
    /// its digest (or size).
    fn check_fetched(&self, r: &Reference, data: Option<Bytes>) -> Result<Bytes> {
        let data = data.ok_or_else(|| self.not_found(r))?;
        if self.inner.config.verify_digest {
            if let Some(expected) = r.digest {
                let actual = expected.algorithm().digest(&data);
                if actual != Some(expected) {
                    return Err(self.digest_mismatch(r, expected, actual, data.len()));
                }
            } else if r.size != 0 && r.size != data.len() as u64 {
                return Err(Error::DigestMismatch {
                    store: self.name().to_owned(),
                    key: r.key.clone(),
                    expected: format!("{} bytes", r.size),
                    actual: format!("{} bytes", data.len()),
                });
            }
        }
        Ok(data)
    }

    fn not_found(&self, r: &Reference) -> Error {
        Error::NotFound {
            store: self.name().to_owned(),
            key: r.key.clone(),
            origin: (!r.origin.is_empty()).then(|| r.origin.clone()),
        }
    }

    fn digest_mismatch(
        &self,
        r: &Reference,
        expected: Digest,
        actual: Option<Digest>,
        len: usize,
    ) -> Error {
        Error::DigestMismatch {
            store: self.name().to_owned(),
            key: r.key.clone(),
            expected: expected.to_string(),
            actual: format!(
                "{} ({len} bytes)",
                actual.map_or_else(String::new, |d| d.to_string())
            ),
        }
    }

    /// The cached object of `key`, counting a hit. No I/O.
    pub(crate) fn cached<T: Send + Sync + 'static>(&self, key: &Key) -> Option<Arc<T>> {
        let hit = self.inner.cache.get::<T>(key)?;
        self.inner.metrics.hit();
        Some(hit)
    }

    /// Whether `key` is present (in the cache or the connector).
    ///
    /// # Errors
    /// The connector's error.
    pub async fn exists(&self, key: &Key) -> Result<bool> {
        let span = op_span!("proxystore.exists", self, key = key.as_str());
        if let Some(now) = self.inner.measured.immediate() {
            return traced_now(&span, || now.exists(key));
        }
        traced(span, self.inner.measured.counted_exists(key)).await
    }

    /// Remove `key` from the cache and the connector. Evicting an absent key is not an error.
    ///
    /// # Errors
    /// The connector's error.
    pub async fn evict(&self, key: &Key) -> Result<()> {
        let span = op_span!("proxystore.evict", self, key = key.as_str());
        self.inner.cache.remove(key);
        if let Some(now) = self.inner.measured.immediate() {
            return traced_now(&span, || {
                now.evict(key)?;
                self.evicted(std::slice::from_ref(key));
                Ok(())
            });
        }
        traced(span, async {
            self.inner.measured.counted_evict(key).await?;
            self.evicted(std::slice::from_ref(key));
            Ok(())
        })
        .await
    }

    /// Evict many keys.
    ///
    /// # Errors
    /// The connector's error.
    pub async fn evict_batch(&self, keys: &[Key]) -> Result<()> {
        let span = op_span!("proxystore.evict", self);
        span.record("count", trace::int(keys.len()));
        traced(span, async {
            for k in keys {
                self.inner.cache.remove(k);
            }
            self.inner.connector.evict_batch(keys).await?;
            self.evicted(keys);
            Ok(())
        })
        .await
    }

    pub(crate) fn reference<T: 'static>(
        &self,
        stored: Stored,
        evict_on_resolve: bool,
    ) -> Reference {
        let mut r = Reference::new(self.name(), self.inner.config.connector.clone(), stored.key);
        r.size = stored.size;
        r.digest = stored.digest;
        r.codec = stored.codec;
        r.type_name = std::any::type_name::<T>().to_owned();
        r.evict_on_resolve = evict_on_resolve;
        if let Some(t) = stored.trace {
            r.traceparent = t.traceparent;
            r.tracestate = t.tracestate;
        }
        r
    }

    /// Encode `value` and write it under the key of `old` (replacing that object), returning
    /// the reference to the new version; the cached old version is dropped.
    ///
    /// # Errors
    /// [`Error::Encode`], or the connector's error ([`Error::Unsupported`] when it cannot write
    /// under a given key).
    pub(crate) async fn set_object<T: Serialize + 'static>(
        &self,
        old: &Reference,
        value: &T,
    ) -> Result<Reference> {
        let span = op_span!("proxystore.put", self);
        let stored = traced(span.clone(), async {
            let (data, codec) = self.inner.config.codec.encode(value)?;
            let options = PutOptions::default();
            self.store_bytes(&span, data, codec, &options, Some(&old.key))
                .await
        })
        .await?;
        let mut r = self.reference::<T>(stored, false);
        old.origin.clone_into(&mut r.origin);
        Ok(r)
    }

    /// Store bytes already encoded with `codec` and return a complete reference to them
    /// (size, digest, `type_name`), for code that encodes objects itself.
    ///
    /// # Errors
    /// The connector's error.
    pub async fn put_encoded(
        &self,
        data: Bytes,
        codec: Codec,
        type_name: &str,
        options: &PutOptions,
    ) -> Result<Reference> {
        let span = op_span!("proxystore.put", self);
        let stored = traced(
            span.clone(),
            self.store_bytes(&span, data, codec, options, None),
        )
        .await?;
        let mut r = self.reference::<()>(stored, false);
        type_name.clone_into(&mut r.type_name);
        if let Some(name) = &options.name {
            r.set_origin(name);
        }
        Ok(r)
    }

    /// [`Store::put_encoded`] for many objects in one connector call: a complete reference to
    /// each, in order. For code that encodes objects ahead of storing them together, such as a
    /// stream producer batching its small objects.
    ///
    /// ```
    /// # proxystore::runtime::block_on(async {
    /// use proxystore::{Codec, PutOptions, Store, connector::memory::MemoryConnector};
    ///
    /// let store = Store::new("encoded-batch-doc", MemoryConnector::new("encoded-batch-doc"));
    /// let objects = vec![Codec::Raw.encode(&b"a".to_vec())?, Codec::Raw.encode(&b"bc".to_vec())?];
    /// let refs = store.put_encoded_batch(objects, "Vec<u8>", &PutOptions::default()).await?;
    /// assert_eq!((refs[0].size, refs[1].size), (1, 2));
    /// assert_eq!(store.get_bytes(&refs[1].key).await?.as_deref(), Some(&b"bc"[..]));
    /// # Ok::<_, proxystore::Error>(()) })??;
    /// # Ok::<_, proxystore::Error>(())
    /// ```
    ///
    /// # Errors
    /// The connector's error (then none of them is known to be stored).
    pub async fn put_encoded_batch(
        &self,
        objects: Vec<(Bytes, Codec)>,
        type_name: &str,
        options: &PutOptions,
    ) -> Result<Vec<Reference>> {
        let span = op_span!("proxystore.put", self);
        let stored = traced(span.clone(), self.store_batch(&span, objects, options)).await?;
        Ok(stored
            .into_iter()
            .map(|s| {
                let mut r = self.reference::<()>(s, false);
                type_name.clone_into(&mut r.type_name);
                if let Some(name) = &options.name {
                    r.set_origin(name);
                }
                r
            })
            .collect())
    }

    /// Close the connector.
    ///
    /// # Errors
    /// The connector's error.
    pub async fn close(&self) -> Result<()> {
        self.inner.cache.clear();
        self.inner.connector.close().await
    }
}

/// The codec of an object known by key alone: byte payloads are always stored raw, everything
/// else with the store's codec.
pub(crate) fn codec_for<T: 'static>(store_codec: Codec) -> Codec {
    use std::any::TypeId;
    if TypeId::of::<T>() == TypeId::of::<Bytes>() || TypeId::of::<T>() == TypeId::of::<Vec<u8>>() {
        Codec::Raw
    } else {
        store_codec
    }
}
