//! The byte-level storage protocol and its implementations.
//!
//! A [`Connector`] moves `Bytes` in and out of one backend. It knows nothing of codecs, caches or
//! proxies; [`crate::Store`] adds those. Every connector describes itself with a
//! [`ConnectorConfig`], and any process can rebuild it from that config with [`crate::kinds::from_config`]:
//! this is how a proxy that travelled to another process finds its bytes (see [`crate::kinds`],
//! which holds the kinds a process can build).
//!
//! Built in: [`memory`], [`file`](mod@file) and [`multi`]. Third parties implement [`Connector`]
//! and call [`crate::kinds::register_connector_kind`] so that their kind can be rebuilt from a
//! reference.

use std::fmt::Debug;
use std::ops::Range;
use std::path::PathBuf;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::digest::{Digest, DigestAlgorithm};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::retry::RetryConfig;
use stream::{ObjectReader, ObjectWriter, StoredObject};

pub mod file;
#[cfg(feature = "globus")]
pub mod globus;
#[cfg(feature = "grpc")]
pub mod grpc;
pub mod memory;
pub mod multi;
mod object_dir;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "s3")]
pub mod s3;
mod sink;
pub mod stream;

pub use crate::buffer::advise_huge_pages;
pub use sink::{ObjectMemory, ObjectSink};

/// Something a connector built from a config would touch, as a
/// [`crate::ResolvePolicy`] sees it: each connector lists those of a config, the policy judges
/// them.
#[derive(Debug)]
pub(crate) enum Resource {
    /// A local path it reads, writes or connects to; `what` names the option.
    Path { what: &'static str, path: PathBuf },
    /// A network endpoint; `port` is the effective one when the connector knows it.
    #[cfg_attr(
        not(any(
            feature = "redis",
            feature = "grpc",
            feature = "s3",
            feature = "globus"
        )),
        allow(dead_code)
    )]
    Host {
        what: &'static str,
        host: String,
        port: Option<u16>,
    },
    /// An S3 bucket.
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    Bucket(String),
}

/// Hints a store passes with a put; connectors that route or label objects use them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// A name for the object (an argument path, a file name); [`multi::MultiConnector`] matches
    /// its glob patterns against it.
    pub name: Option<String>,
    /// Tags the chosen backend must carry (see [`multi::RoutePolicy::tags`]).
    pub tags: Vec<String>,
}

impl PutOptions {
    /// Options naming the object.
    pub fn named(name: impl Into<String>) -> Self {
        PutOptions {
            name: Some(name.into()),
            tags: Vec::new(),
        }
    }

    /// Add a required tag.
    #[must_use]
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }
}

/// How a store runs a connector's calls: what a connector asks of the layers
/// ([`crate::layer`]) that [`crate::Store`] puts around it, so that the connector implements
/// only its backend.
///
/// The default asks for nothing, as fits an in-process connector. A networked connector asks
/// for the hop onto the library's I/O runtime, a time bound per attempt and retries of
/// temporary failures, from its own config (which travels in references, so every process
/// runs it the same way).
///
/// ```
/// use std::time::Duration;
/// use proxystore::connector::CallConfig;
/// use proxystore::retry::RetryConfig;
/// use proxystore::connector::CallRuntime;
/// let c = CallConfig::networked(Some(Duration::from_secs(30)), RetryConfig::default());
/// assert!(c.runtime == CallRuntime::Io && c.retry.is_some());
/// assert!(CallConfig::default().is_empty());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallConfig {
    /// Where the calls run: where the connector's connections live.
    pub runtime: CallRuntime,
    /// Bound of one attempt; past it the call ends with [`Error::Timeout`].
    pub timeout: Option<Duration>,
    /// Retries of temporary failures.
    pub retry: Option<RetryConfig>,
}

/// Where a connector's calls run ([`CallConfig::runtime`]; the hop is
/// [`crate::layer::IoRuntimeLayer`]'s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallRuntime {
    /// Wherever the caller runs them: in-process connectors, and connectors that choose for
    /// each call themselves.
    #[default]
    Caller,
    /// On the caller's tokio runtime, where the connector keeps a client of that runtime's own
    /// ([`crate::runtime::PerRuntime`]), so that a call stays on its caller's threads; a call
    /// from outside any tokio runtime (another executor) runs on the I/O runtime.
    CallerTokio,
    /// On the library's I/O runtime ([`crate::runtime::io_handle`]), where the connector keeps
    /// its one client.
    Io,
}

impl CallConfig {
    /// On the I/O runtime, with `timeout` per attempt and `retry`.
    pub fn networked(timeout: Option<Duration>, retry: RetryConfig) -> Self {
        CallConfig {
            runtime: CallRuntime::Io,
            timeout,
            retry: Some(retry),
        }
    }

    /// Whether nothing is asked for.
    pub fn is_empty(&self) -> bool {
        *self == CallConfig::default()
    }
}

/// The byte-level protocol every storage backend implements.
///
/// Object-safe and used as `Arc<dyn Connector>`. Only the single-object methods are required;
/// batch and range methods have default implementations that a backend overrides when it can do
/// better (one round trip, a ranged read).
///
/// Implementations must be cheap to call concurrently from many tasks. Networked connectors
/// should drive their I/O on [`crate::runtime::io_handle`] (ask for it in
/// [`Connector::call_config`]), or keep a client per calling runtime whose connection task lives
/// there ([`crate::runtime::PerRuntime`], as the Redis connector does), so that a proxy resolved
/// synchronously from any thread or runtime cannot deadlock and a runtime that shuts down takes
/// no other caller's connection with it.
///
/// # Cancel safety
/// Dropping a `put` future may leave the object absent or present, never partial: a later `get`
/// returns either `None` or the whole object.
#[async_trait]
pub trait Connector: Debug + Send + Sync + 'static {
    /// The kind of this connector, as registered with [`crate::kinds::register_connector_kind`].
    fn kind(&self) -> &str;

    /// Store `data` under a new key chosen by the connector.
    ///
    /// # Errors
    /// [`Error::Backend`] on I/O failure, [`Error::LimitExceeded`] when the backend is full.
    async fn put_opts(&self, data: Bytes, options: &PutOptions) -> Result<Key>;

    /// The object's bytes, or `None` when the key is absent.
    ///
    /// # Errors
    /// [`Error::Backend`] on I/O failure, [`Error::InvalidKey`] for a key this connector never
    /// makes.
    async fn get(&self, key: &Key) -> Result<Option<Bytes>>;

    /// As [`Connector::get`], for an object whose size the caller knows (a reference records
    /// it): a connector may choose how to fetch by it (the gRPC connector fetches a large object
    /// on a stream of its own at once, without first asking for it in one message). The default
    /// ignores the size. The object returned is what is stored, whatever its size.
    ///
    /// # Errors
    /// As for [`Connector::get`].
    async fn get_sized(&self, key: &Key, size: u64) -> Result<Option<Bytes>> {
        let _ = size;
        self.get(key).await
    }

    /// As [`Connector::put_opts`], and the digest of `data` with `algorithm` (`None` for
    /// [`DigestAlgorithm::None`]): how [`crate::Store`] puts an object, so that a connector
    /// that writes an object in pieces can hash each piece right after writing it, while it is
    /// still in the CPU's cache, instead of the object being read from memory once more
    /// beside the write.
    ///
    /// The default hashes beside [`Connector::put_opts`]: before it for objects under 1 MiB,
    /// on a thread of the blocking pool while it runs from 1 MiB up. The Redis connector
    /// overrides it: a large value is written in pieces and each is hashed as it goes out.
    /// A call that is tried again (a retry layer) hashes again.
    ///
    /// ```
    /// # proxystore::runtime::block_on(async {
    /// use bytes::Bytes;
    /// use proxystore::connector::{Connector, PutOptions, memory::MemoryConnector};
    /// use proxystore::digest::DigestAlgorithm;
    /// let c = MemoryConnector::new("put-hashing-doc");
    /// let data = Bytes::from_static(b"data");
    /// let (key, digest) = c
    ///     .put_hashing(data.clone(), &PutOptions::default(), DigestAlgorithm::Xxh3)
    ///     .await?;
    /// assert_eq!(digest, DigestAlgorithm::Xxh3.digest(&data));
    /// assert_eq!(c.get(&key).await?, Some(data));
    /// # Ok::<_, proxystore::Error>(()) })??;
    /// # Ok::<_, proxystore::Error>(())
    /// ```
    ///
    /// # Errors
    /// As for [`Connector::put_opts`].
    async fn put_hashing(
        &self,
        data: Bytes,
        options: &PutOptions,
        algorithm: DigestAlgorithm,
    ) -> Result<(Key, Option<Digest>)> {
        put_hashing_beside(self, data, options, algorithm).await
    }

    /// As [`Connector::get`], into memory the caller provides: the object is written through
    /// `sink` (which asks the caller's [`ObjectMemory`] for room of its size, then counts what
    /// is written and hashes it when asked); `false` when the key is absent, nothing written.
    /// The caller checks [`ObjectSink::complete`] after `true`. See [`ObjectSink`].
    ///
    /// The default fetches the object with [`Connector::get`] ([`Connector::get_sized`] when
    /// the sink has a size hint) and hands it over whole ([`ObjectSink::put_bytes`]: taken as
    /// it is by memory that adopts `Bytes`, else copied). Connectors that can read straight
    /// into memory override it: the file connector reads the file into the room, the Redis
    /// connector its reply off the socket, so the object is copied once, by the kernel.
    ///
    /// A call that is tried again (a retry layer) starts the sink over.
    ///
    /// # Errors
    /// As for [`Connector::get`]; the sink's errors ([`Error::LimitExceeded`] when the memory
    /// cannot hold the object).
    async fn get_into(&self, key: &Key, sink: &mut ObjectSink<'_>) -> Result<bool> {
        get_into_whole(self, key, sink).await
    }

    /// Whether the key is present.
    ///
    /// # Errors
    /// As for [`Connector::get`].
    async fn exists(&self, key: &Key) -> Result<bool>;

    /// Remove the object. Evicting an absent key is not an error.
    ///
    /// # Errors
    /// As for [`Connector::get`].
    async fn evict(&self, key: &Key) -> Result<()>;

    /// The configuration that rebuilds this connector in any process (see [`crate::kinds::from_config`]).
    fn config(&self) -> ConnectorConfig;

    /// [`Connector::put_opts`] with default options.
    ///
    /// # Errors
    /// As for [`Connector::put_opts`].
    async fn put(&self, data: Bytes) -> Result<Key> {
        self.put_opts(data, &PutOptions::default()).await
    }

    /// Store many objects; keys come back in input order.
    ///
    /// # Errors
    /// As for [`Connector::put_opts`]; objects stored before a failure stay stored.
    async fn put_batch(&self, data: Vec<Bytes>, options: &PutOptions) -> Result<Vec<Key>> {
        let mut keys = Vec::with_capacity(data.len());
        for d in data {
            keys.push(self.put_opts(d, options).await?);
        }
        Ok(keys)
    }

    /// Fetch many objects; results come back in input order.
    ///
    /// # Errors
    /// As for [`Connector::get`].
    async fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(k).await?);
        }
        Ok(out)
    }

    /// Bytes `range` of the object (clamped to its length), or `None` when the key is absent.
    ///
    /// # Errors
    /// As for [`Connector::get`].
    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Option<Bytes>> {
        Ok(self.get(key).await?.map(|b| slice_range(&b, range)))
    }

    /// Evict many objects.
    ///
    /// # Errors
    /// As for [`Connector::evict`].
    async fn evict_batch(&self, keys: &[Key]) -> Result<()> {
        for k in keys {
            self.evict(k).await?;
        }
        Ok(())
    }

    /// Reserve a key for an object that will be [`Connector::set`] later (a deferred put).
    ///
    /// # Errors
    /// [`Error::Unsupported`] unless the connector supports deferred puts.
    async fn new_key(&self, options: &PutOptions) -> Result<Key> {
        let _ = options;
        Err(Error::Unsupported {
            connector: self.kind().to_owned(),
            operation: "new_key".into(),
        })
    }

    /// Store `data` under a key from [`Connector::new_key`].
    ///
    /// # Errors
    /// [`Error::Unsupported`] unless the connector supports deferred puts.
    async fn set(&self, key: &Key, data: Bytes) -> Result<()> {
        let _ = (key, data);
        Err(Error::Unsupported {
            connector: self.kind().to_owned(),
            operation: "set".into(),
        })
    }

    /// [`Connector::set`] unless an object is under `key` already: `true` when written,
    /// `false` when the key was taken (nothing written). How a distributed future is set
    /// once ([`crate::future`]).
    ///
    /// The default looks with [`Connector::exists`] and then sets: two calls, and two
    /// writers racing may both write. Connectors whose backend can write only-if-absent in
    /// one step override it (memory under its lock, Redis `SET NX`) and say so in
    /// [`Connector::set_once_is_atomic`].
    ///
    /// # Errors
    /// As for [`Connector::set`].
    async fn set_once(&self, key: &Key, data: Bytes) -> Result<bool> {
        if self.exists(key).await? {
            return Ok(false);
        }
        self.set(key, data).await.map(|()| true)
    }

    /// Whether [`Connector::set_once`] is one atomic step (else: look, then write).
    fn set_once_is_atomic(&self) -> bool {
        false
    }

    /// Wait until `key` is present, for at most `timeout`: `true` once it is, `false` when the
    /// time ran out first. What a distributed future's consumer waits on ([`crate::future`]).
    ///
    /// The default polls [`Connector::exists`] with backoff (1 ms, doubling to 100 ms);
    /// connectors that can be told when a key is written override it (an in-process notify,
    /// a server call that answers when the key is set, a Redis channel, file notifications),
    /// and say how in [`Connector::wait_mechanism`].
    ///
    /// # Errors
    /// As for [`Connector::exists`].
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the call leaves nothing behind.
    async fn wait(&self, key: &Key, timeout: Duration) -> Result<bool> {
        poll_until_present(self, key, timeout).await
    }

    /// How [`Connector::wait`] learns that a key was written: `poll` (the default),
    /// or a notification mechanism such as `notify`, `server call`, `pub/sub` or `inotify`.
    fn wait_mechanism(&self) -> &'static str {
        "poll"
    }

    /// A writer that streams one object into the backend, under `key` or a new key, when
    /// the backend can take an object in pieces; `None` (the default) when it cannot, and
    /// callers buffer it and put it whole. Use `<dyn Connector>::put_writer`,
    /// which does that. A writer dropped before [`ObjectWriter::finish`] must leave nothing.
    ///
    /// # Errors
    /// The backend's error when it cannot start the object (an invalid key, no space).
    async fn writer(
        &self,
        key: Option<&Key>,
        size: Option<u64>,
        options: &PutOptions,
    ) -> Result<Option<Box<dyn ObjectWriter>>> {
        let _ = (key, size, options);
        Ok(None)
    }

    /// The object (or bytes `range` of it, clamped) to read in pieces, or `None` when the key
    /// is absent. The default reads it whole with [`Connector::get`] or
    /// [`Connector::get_range`]; a backend that can read in pieces (a file, a stream) keeps
    /// memory to a chunk at a time.
    ///
    /// # Errors
    /// As for [`Connector::get`].
    async fn reader(&self, key: &Key, range: Option<Range<u64>>) -> Result<Option<ObjectReader>> {
        Ok(match range {
            None => self
                .get(key)
                .await?
                .map(|b| ObjectReader::from_bytes(b, None)),
            Some(r) => {
                let start = r.start.min(r.end);
                self.get_range(key, r)
                    .await?
                    .map(|b| ObjectReader::from_part(start, b))
            }
        })
    }

    /// Check that `key` is one this connector could hold, without reaching the backend (a
    /// service checks a caller's key before it reads an upload). The default accepts every key;
    /// the connector's other methods check keys anyway.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] saying why.
    fn check_key(&self, key: &Key) -> Result<()> {
        let _ = key;
        Ok(())
    }

    /// The objects the backend holds, with their sizes and kept metadata, for a service that
    /// manages a store it owns (the store server accounts for what a directory already holds
    /// when it starts); `None` (the default) when the backend cannot list them.
    ///
    /// # Errors
    /// The backend's error.
    async fn inventory(&self) -> Result<Option<Vec<StoredObject>>> {
        Ok(None)
    }

    /// The connector's calls done here and now, without a future, for a backend that never
    /// waits (an in-process map): what a [`crate::Store`] calls on its hot paths when it is
    /// there, sparing the machinery of an async call (a small object through a memory store
    /// costs a few hundred nanoseconds, as much as that machinery). `None`, the default, for
    /// every connector that does I/O.
    ///
    /// A [`crate::layer::Layer`] forwards it only when its behaviour does not apply to calls
    /// that cannot wait or fail temporarily (the built-in layers do); one that must see every
    /// call keeps the default, and the store then calls it the async way.
    fn immediate(&self) -> Option<&dyn ImmediateConnector> {
        None
    }

    /// How a store runs this connector's calls (I/O runtime, timeout, retries); see
    /// [`CallConfig`]. A wrapper that already applies them reports the default.
    fn call_config(&self) -> CallConfig {
        CallConfig::default()
    }

    /// Release resources (connections, files). Further calls may fail.
    ///
    /// # Errors
    /// Backend-specific.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// The calls of a connector whose backend never waits, made here and now (see
/// [`Connector::immediate`]). Each does what the async method of the same name does.
pub trait ImmediateConnector: Send + Sync {
    /// As [`Connector::put_opts`].
    ///
    /// # Errors
    /// As for [`Connector::put_opts`].
    fn put_now(&self, data: Bytes, options: &PutOptions) -> Result<Key>;

    /// As [`Connector::get`].
    ///
    /// # Errors
    /// As for [`Connector::get`].
    fn get_now(&self, key: &Key) -> Result<Option<Bytes>>;

    /// As [`Connector::exists`].
    ///
    /// # Errors
    /// As for [`Connector::exists`].
    fn exists_now(&self, key: &Key) -> Result<bool>;

    /// As [`Connector::evict`].
    ///
    /// # Errors
    /// As for [`Connector::evict`].
    fn evict_now(&self, key: &Key) -> Result<()>;
}

/// [`Connector::put_hashing`] as the default does it: [`Connector::put_opts`], and the digest
/// computed beside it (before it under 1 MiB, on a thread of the blocking pool while it runs
/// from 1 MiB up). For overrides that hash as they write only in some cases (the Redis
/// connector, from 8 MiB on its bulk connections).
///
/// ```
/// # proxystore::runtime::block_on(async {
/// use bytes::Bytes;
/// use proxystore::connector::{PutOptions, memory::MemoryConnector, put_hashing_beside};
/// use proxystore::digest::DigestAlgorithm;
/// let c = MemoryConnector::new("put-hashing-beside-doc");
/// let data = Bytes::from_static(b"data");
/// let (_key, digest) =
///     put_hashing_beside(&c, data.clone(), &PutOptions::default(), DigestAlgorithm::Blake3)
///         .await?;
/// assert_eq!(digest, DigestAlgorithm::Blake3.digest(&data));
/// # Ok::<_, proxystore::Error>(()) })??;
/// # Ok::<_, proxystore::Error>(())
/// ```
///
/// # Errors
/// As for [`Connector::put_opts`].
pub async fn put_hashing_beside<C: Connector + ?Sized>(
    c: &C,
    data: Bytes,
    options: &PutOptions,
    algorithm: DigestAlgorithm,
) -> Result<(Key, Option<Digest>)> {
    crate::digest::digest_one_beside(algorithm, data, |data| c.put_opts(data, options)).await
}

/// [`Connector::get_into`] as the default does it: the object fetched whole with
/// [`Connector::get`] ([`Connector::get_sized`] when the sink has a size hint), then handed to
/// the sink ([`ObjectSink::put_bytes`]). For overrides that cannot read into memory in some
/// case (a connector without its fast path at hand).
///
/// # Errors
/// As for [`Connector::get_into`].
pub async fn get_into_whole<C: Connector + ?Sized>(
    connector: &C,
    key: &Key,
    sink: &mut ObjectSink<'_>,
) -> Result<bool> {
    let data = match sink.expected_size() {
        Some(size) if size > 0 => connector.get_sized(key, size).await?,
        _ => connector.get(key).await?,
    };
    match data {
        Some(data) => sink.put_bytes(data).map(|()| true),
        None => Ok(false),
    }
}

/// [`Connector::wait`] by polling [`Connector::exists`]: 1 ms, doubling to 100 ms.
///
/// # Errors
/// As for [`Connector::exists`].
pub async fn poll_until_present<C: Connector + ?Sized>(
    connector: &C,
    key: &Key,
    timeout: Duration,
) -> Result<bool> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if connector.exists(key).await? {
            return Ok(true);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Clamp `range` to `data` and slice it without copying.
pub(crate) fn slice_range(data: &Bytes, range: Range<u64>) -> Bytes {
    let len = data.len() as u64;
    let end = range.end.min(len);
    let start = range.start.min(end);
    data.slice(start as usize..end as usize)
}

/// How to rebuild a connector: its kind and kind-specific options.
///
/// Options are a JSON object in every codec, so that any kind (including third-party ones) can
/// carry nested settings; in binary formats they are written as a JSON string, which keeps
/// non-self-describing codecs such as postcard able to read them.
///
/// A config is cheap to clone (one reference count), and its options are held in whichever form
/// they came (a JSON value, or the JSON text of a reference), the other form made once on first
/// use: a reference decoded and resolved from a store the process already has never parses
/// them, and one encoded again copies the text it came with.
///
/// ```
/// use proxystore::connector::ConnectorConfig;
/// let c = ConnectorConfig::new("memory", serde_json::json!({"segment": "demo"}));
/// assert_eq!(c.kind(), "memory");
/// assert_eq!(c.options_json(), r#"{"segment":"demo"}"#);
/// let back = ConnectorConfig::from_json_options("memory", c.options_json())?;
/// assert_eq!(back, c);
/// assert_eq!(back.options_value()["segment"], "demo");
/// # Ok::<_, proxystore::Error>(())
/// ```
#[derive(Clone)]
pub struct ConnectorConfig {
    inner: std::sync::Arc<ConfigForms>,
}

/// The two forms of a config's options; at least one is set.
struct ConfigForms {
    kind: String,
    value: std::sync::OnceLock<serde_json::Value>,
    json: std::sync::OnceLock<String>,
}

impl PartialEq for ConnectorConfig {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.inner, &other.inner)
            || (self.kind() == other.kind() && self.options_value() == other.options_value())
    }
}

impl ConnectorConfig {
    /// A config of `kind` with `options`.
    pub fn new(kind: impl Into<String>, options: serde_json::Value) -> Self {
        ConnectorConfig {
            inner: std::sync::Arc::new(ConfigForms {
                kind: kind.into(),
                value: options.into(),
                json: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Registered kind, e.g. `file`.
    pub fn kind(&self) -> &str {
        &self.inner.kind
    }

    /// Kind-specific options (a JSON object, or null for none).
    pub fn options_value(&self) -> &serde_json::Value {
        let forms = &*self.inner;
        forms.value.get_or_init(|| match forms.json.get() {
            // Checked to be JSON when it was taken (`from_json_options`).
            Some(json) if !json.is_empty() => {
                serde_json::from_str(json).unwrap_or(serde_json::Value::Null)
            }
            _ => serde_json::Value::Null,
        })
    }

    /// A config of `kind` from a typed options struct.
    ///
    /// # Errors
    /// [`Error::Config`] when `options` does not serialize to JSON.
    pub fn from_options<O: Serialize>(kind: impl Into<String>, options: &O) -> Result<Self> {
        Ok(ConnectorConfig::new(
            kind,
            serde_json::to_value(options)
                .map_err(|e| Error::config(format!("connector options: {e}")))?,
        ))
    }

    /// The options as a typed struct.
    ///
    /// # Errors
    /// [`Error::Config`] naming the kind when the options do not fit `O`.
    pub fn options<O: DeserializeOwned>(&self) -> Result<O> {
        let forms = &*self.inner;
        let parsed = match (forms.value.get(), forms.json.get()) {
            // Straight from the text when that is what came: no intermediate value.
            (None, Some(json)) if !json.is_empty() => serde_json::from_str(json),
            _ => O::deserialize(self.options_value()),
        };
        parsed.map_err(|e| Error::config(format!("{} connector options: {e}", self.kind())))
    }
}

/// Keys whose values are never shown by `Debug`.
const SECRET_OPTION_NAMES: &[&str] = &["password", "token", "secret", "secret_access_key"];

impl Debug for ConnectorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn redact(v: &serde_json::Value) -> serde_json::Value {
            match v {
                serde_json::Value::Object(m) => m
                    .iter()
                    .map(|(k, v)| {
                        let secret = SECRET_OPTION_NAMES.iter().any(|s| k.contains(s));
                        let v = if secret && !v.is_null() {
                            serde_json::Value::String("<redacted>".into())
                        } else {
                            redact(v)
                        };
                        (k.clone(), v)
                    })
                    .collect(),
                serde_json::Value::Array(a) => a.iter().map(redact).collect(),
                other => other.clone(),
            }
        }
        f.debug_struct("ConnectorConfig")
            .field("kind", &self.kind())
            .field("options", &redact(self.options_value()))
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct ReadableConfig {
    kind: String,
    #[serde(default)]
    options: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct BinaryConfig {
    kind: String,
    options: String,
}

impl Serialize for ConnectorConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            ReadableConfig {
                kind: self.kind().to_owned(),
                options: self.options_value().clone(),
            }
            .serialize(s)
        } else {
            BinaryConfig {
                kind: self.kind().to_owned(),
                options: self.options_json().to_owned(),
            }
            .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for ConnectorConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        if d.is_human_readable() {
            let c = ReadableConfig::deserialize(d)?;
            Ok(ConnectorConfig::new(c.kind, c.options))
        } else {
            let c = BinaryConfig::deserialize(d)?;
            ConnectorConfig::from_json_options(c.kind, &c.options).map_err(serde::de::Error::custom)
        }
    }
}

impl ConnectorConfig {
    /// The options as compact JSON text (the form used in binary encodings; empty for none),
    /// made once.
    pub fn options_json(&self) -> &str {
        let forms = &*self.inner;
        forms.json.get_or_init(|| match forms.value.get() {
            Some(v) if !v.is_null() => v.to_string(),
            _ => String::new(),
        })
    }

    /// Rebuild from a kind and options as JSON text (empty text means no options). The text
    /// is checked and kept; it is parsed when the options are first used.
    ///
    /// # Errors
    /// [`Error::Config`] when the text is not JSON.
    pub fn from_json_options(kind: impl Into<String>, json: &str) -> Result<Self> {
        let kind = kind.into();
        if !json.is_empty() {
            serde_json::from_str::<serde::de::IgnoredAny>(json).map_err(|e| {
                Error::config(format!("{kind} connector options are not JSON: {e}"))
            })?;
        }
        Ok(ConnectorConfig {
            inner: std::sync::Arc::new(ConfigForms {
                kind,
                value: std::sync::OnceLock::new(),
                json: json.to_owned().into(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_in_every_codec_and_redacts() {
        let c = ConnectorConfig::new(
            "redis",
            serde_json::json!({"host": "h", "password": "hunter2", "nested": [{"token": "t"}]}),
        );
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<ConnectorConfig>(&json).unwrap(), c);
        let pc = postcard::to_stdvec(&c).unwrap();
        assert_eq!(postcard::from_bytes::<ConnectorConfig>(&pc).unwrap(), c);
        let mp = rmp_serde::to_vec(&c).unwrap();
        assert_eq!(rmp_serde::from_slice::<ConnectorConfig>(&mp).unwrap(), c);
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("\"t\""), "{dbg}");
    }
}
