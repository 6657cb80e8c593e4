//! The gRPC connector: the client of the ProxyStore store service (`proxystore-server`).
//!
//! One HTTP/2 channel per server address and tokio runtime that calls, created lazily on that
//! runtime (the library's I/O runtime for callers outside any) and reused by its calls, so that
//! a call stays on its caller's threads; like any tokio network client it needs the runtime's
//! I/O and time drivers (`enable_all`, as `#[tokio::main]` and `#[tokio::test]` have); with several addresses of replicas serving the same objects
//! ([`GrpcConfig::addresses`]), calls are spread over them and move on from one that is down.
//! Small calls (gets of objects up to 256 KiB, puts up to 256 KiB: the server's limits; exists
//! and evict) share one long-lived `Session` stream per server, matched by id, so that a call
//! costs one message each way instead of an HTTP/2 stream of its own; larger objects move as
//! streams of 1 MiB chunks with HTTP/2 flow control as backpressure (after two gets in a row
//! too large for a session, gets go straight to streams until one fetches a small object). A
//! server without sessions (an older one) is served call by call. Idempotent calls (get, exists, evict, stat,
//! batch get and evict, deferred `set`) are retried with backoff
//! ([`crate::retry::RetryConfig`], applied by the store's layers) when the server answers
//! `UNAVAILABLE` or the connection breaks; every call has a timeout. The config round-trips, so a proxy made against a server resolves in
//! any process that can reach that server.
//!
//! ```no_run
//! # proxystore::runtime::block_on(async {
//! use proxystore::connector::Connector;
//! use proxystore::connector::grpc::{GrpcConfig, GrpcConnector};
//!
//! let c = GrpcConnector::with_config(
//!     GrpcConfig::new("http://127.0.0.1:50051").token_env("PROXYSTORE_TOKEN"),
//! )?;
//! let key = c.put(bytes::Bytes::from_static(b"hello")).await?;
//! assert_eq!(c.get(&key).await?.as_deref(), Some(&b"hello"[..]));
//! # Ok::<_, proxystore::Error>(()) })??;
//! # Ok::<_, proxystore::Error>(())
//! ```
//!
//! Every call runs in a `grpc.client` span that sends its trace context to the server in
//! request metadata (see [`rpc_trace`]).
//!
//! Beyond the [`Connector`] trait, [`GrpcConnector::put_stream`] and
//! [`GrpcConnector::get_stream`] move objects larger than memory, and [`GrpcConnector::stat`]
//! describes the server.

use std::future::Future;
use std::ops::Range;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use tonic::metadata::MetadataValue;

use super::stream::{ObjectReader, ObjectWriter};
use super::{CallConfig, CallRuntime, Connector, ConnectorConfig, PutOptions, Resource};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::retry::RetryConfig;
use crate::runtime;

pub mod rpc_trace;
mod status;

pub use status::{DETAIL_METADATA, KEY_METADATA, session_error, session_status};

mod client;
mod config;
mod pool;
mod session;
mod transfer;

use client::Inner;
use pool::Pool;

pub use config::{
    CONNECTION_WINDOW, DEFAULT_CHUNK_SIZE, GrpcConfig, KIND, MAX_FRAME_SIZE, MAX_MESSAGE_SIZE,
    ObjectInfo, STREAM_WINDOW, ServerStat, UploadOptions,
};
pub use transfer::GetStream;
use transfer::{GrpcWriter, Piece, StreamChunks};

/// Client of a ProxyStore gRPC server.
///
/// Cheap to clone (clones share the channel). Build with [`GrpcConnector::new`],
/// [`GrpcConnector::with_config`], or from a reference's config with
/// [`GrpcConnector::from_config`].
#[derive(Clone)]
pub struct GrpcConnector {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GrpcConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcConnector")
            .field("config", &self.inner.config)
            .field("runtimes", &self.inner.pool.runtimes())
            .finish_non_exhaustive()
    }
}

impl GrpcConnector {
    /// A connector for the server at `address` with default settings.
    ///
    /// # Errors
    /// As for [`GrpcConnector::with_config`].
    pub fn new(address: impl Into<String>) -> Result<Self> {
        Self::with_config(GrpcConfig::new(address))
    }

    /// A connector with `config`. Nothing connects yet: the channel opens on first use.
    ///
    /// # Errors
    /// [`Error::Config`] for a missing or unparsable address (any of
    /// [`GrpcConfig::all_addresses`]), a token that cannot be sent as a header,
    /// a `token_env` variable that is not set, an `https://` address without feature
    /// `tls`, or an unreadable CA file.
    pub fn with_config(config: GrpcConfig) -> Result<Self> {
        if config.address.is_empty() {
            return Err(Error::config("grpc connector needs an address"));
        }
        if config.chunk_size == 0 {
            return Err(Error::config("grpc connector chunk_size must be positive"));
        }
        let token = match (&config.token, &config.token_env) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                Error::config(format!(
                    "grpc connector token_env {var} is not set in this process"
                ))
            })?),
            (None, None) => None,
        };
        let auth = token
            .map(|t| {
                MetadataValue::try_from(format!("Bearer {t}"))
                    .map_err(|_| Error::config("grpc token is not a valid header value"))
            })
            .transpose()?;
        let pool = Pool::new(&config)?;
        Ok(GrpcConnector {
            inner: Arc::new(Inner {
                config,
                pool,
                auth,
                caller_keys: tokio::sync::OnceCell::new(),
                large_gets: std::sync::atomic::AtomicU32::new(0),
            }),
        })
    }

    /// Build from a [`ConnectorConfig`] of kind `grpc`.
    ///
    /// # Errors
    /// As for [`GrpcConnector::with_config`].
    pub fn from_config(config: &ConnectorConfig) -> Result<Arc<dyn Connector>> {
        Ok(Arc::new(Self::with_config(config.options()?)?))
    }

    /// What a connector built from `config` would touch, for the resolve policy: the host and
    /// port of every address (the first and each replica's) as the channel parses it (`http`
    /// crate), and the CA file.
    pub(crate) fn resources(config: &ConnectorConfig) -> Result<Vec<Resource>> {
        let config: GrpcConfig = config.options()?;
        let mut out = config
            .all_addresses()
            .map(host_resource)
            .collect::<Result<Vec<_>>>()?;
        if let Some(path) = config.tls_ca_file {
            out.push(Resource::Path {
                what: "grpc tls_ca_file",
                path,
            });
        }
        Ok(out)
    }

    /// The connector's settings.
    pub fn grpc_config(&self) -> &GrpcConfig {
        &self.inner.config
    }

    /// Run `f` where the store's layers run the [`Connector`] methods, for the methods outside
    /// the trait: in place on any tokio runtime, on the library's I/O runtime from outside one.
    async fn io<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        runtime::run_on_tokio_or_io(f(self.inner.clone())).await
    }

    /// The retries of idempotent calls: [`GrpcConfig::retries`] with the shared backoff.
    fn retry_config(&self) -> RetryConfig {
        self.inner.retry_config()
    }

    /// Server information: backend, usage, limits, version.
    ///
    /// # Errors
    /// [`Error::Unauthorized`], [`Error::Timeout`], [`Error::Backend`] when unreachable.
    pub async fn stat(&self) -> Result<ServerStat> {
        self.io(|i| async move { i.stat().await.map(ServerStat::from) })
            .await
    }

    /// Upload an object from a stream of byte chunks (of any sizes; they are re-cut to the
    /// configured chunk size without copying). Memory use is bounded by the chunks in flight,
    /// not by the object.
    ///
    /// If `data` yields an error, the upload is cancelled and the server keeps nothing.
    ///
    /// # Errors
    /// The error `data` yielded; [`Error::LimitExceeded`] when the server's limits refuse the
    /// object; [`Error::Timeout`] when no chunk is accepted within the timeout;
    /// [`Error::Backend`] for a lost connection.
    ///
    /// # Cancel safety
    /// Dropping the future cancels the upload; the server keeps nothing.
    pub async fn put_stream<S>(&self, data: S, options: UploadOptions) -> Result<Key>
    where
        S: Stream<Item = Result<Bytes>> + Send + 'static,
    {
        self.io(move |i| async move { i.put(Box::pin(data), options).await })
            .await
    }

    /// Download an object (or byte range of it) as a stream; `None` when the key is absent.
    ///
    /// # Errors
    /// As for [`Connector::get`]; errors part-way arrive as stream items.
    pub async fn get_stream(
        &self,
        key: &Key,
        range: Option<Range<u64>>,
    ) -> Result<Option<GetStream>> {
        let key = key.clone();
        self.io(move |i| async move { i.get_stream(key, range, true).await })
            .await
    }
}

/// The host and port a channel to `address` connects to.
fn host_resource(address: &str) -> Result<Resource> {
    let bad = |why: &str| Error::config(format!("grpc address {address:?}: {why}"));
    let uri: tonic::codegen::http::Uri = config::uri_of(address)
        .parse()
        .map_err(|e| bad(&format!("{e}")))?;
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    Ok(Resource::Host {
        what: "grpc",
        // IPv6 hosts come in brackets.
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: Some(port),
    })
}

#[async_trait]
impl Connector for GrpcConnector {
    fn kind(&self) -> &str {
        KIND
    }

    /// On the caller's tokio runtime, with a channel of that runtime's own (see `pool`); a
    /// call from outside any tokio runtime runs on the I/O runtime. Idempotent calls (reads, exists,
    /// evictions, `set` under a fixed key) retried [`GrpcConfig::retries`] times on a temporary
    /// failure (`UNAVAILABLE`, a broken connection), puts not (the server chooses their keys).
    /// Each call bounds itself: a unary call by [`GrpcConfig::timeout_ms`], a stream by the
    /// time between two messages.
    fn call_config(&self) -> CallConfig {
        CallConfig {
            runtime: CallRuntime::CallerTokio,
            ..CallConfig::networked(None, self.retry_config())
        }
    }

    async fn put_opts(&self, data: Bytes, options: &PutOptions) -> Result<Key> {
        self.inner.put_bytes(data, None, options).await
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        self.inner.get(key, None).await
    }

    /// A small object from the session; one too large for a session's answer on a stream of
    /// its own at once.
    async fn get_sized(&self, key: &Key, size: u64) -> Result<Option<Bytes>> {
        self.inner.get_sized(key, size).await
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Option<Bytes>> {
        self.inner.get(key, Some(range)).await
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        self.inner.exists(key).await
    }

    /// The server's `Wait` call: it answers when the key is written through it (the backend's
    /// notification), called again while the server's cap is shorter than `timeout`.
    async fn wait(&self, key: &Key, timeout: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self.inner.wait_once(key, left).await? {
                return Ok(true);
            }
            if left.is_zero() || tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }

    fn wait_mechanism(&self) -> &'static str {
        "server call (Wait)"
    }

    async fn evict(&self, key: &Key) -> Result<()> {
        self.inner.evict(key).await
    }

    fn config(&self) -> ConnectorConfig {
        ConnectorConfig::from_options(KIND, &self.inner.config)
            .unwrap_or_else(|_| ConnectorConfig::new(KIND, serde_json::Value::Null))
    }

    async fn put_batch(&self, data: Vec<Bytes>, options: &PutOptions) -> Result<Vec<Key>> {
        self.inner.put_batch(data, options).await
    }

    async fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>> {
        self.inner.get_batch(keys).await
    }

    async fn evict_batch(&self, keys: &[Key]) -> Result<()> {
        self.inner.evict_batch(keys).await
    }

    /// Streams the object to the server as it is written (the server checks `size` before the
    /// first byte and commits on finish); a writer dropped before finish cancels the upload
    /// and the server keeps nothing.
    async fn writer(
        &self,
        key: Option<&Key>,
        size: Option<u64>,
        options: &PutOptions,
    ) -> Result<Option<Box<dyn ObjectWriter>>> {
        if key.is_some_and(|k| k.as_str().is_empty()) {
            return Err(Error::InvalidKey {
                connector: KIND.to_owned(),
                key: String::new(),
                reason: "empty key".into(),
            });
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Piece>(2);
        let data = futures::stream::unfold(Some(rx), |rx| async move {
            let mut rx = rx?;
            match rx.recv().await {
                Some(Piece::Chunk(c)) => Some((Ok(c), Some(rx))),
                Some(Piece::Finish) => None,
                // Dropped before finish: an error, never a clean end (which would commit).
                None => Some((
                    Err(Error::backend_message(
                        KIND,
                        "upload abandoned before it finished",
                        false,
                    )),
                    None,
                )),
            }
        });
        let upload = UploadOptions {
            key: key.cloned(),
            size,
            put: options.clone(),
            ..UploadOptions::default()
        };
        let inner = self.inner.clone();
        let task =
            runtime::current_or_io().spawn(async move { inner.put(Box::pin(data), upload).await });
        Ok(Some(Box::new(GrpcWriter {
            tx: Some(tx),
            task: Some(task),
        })))
    }

    /// Reads the object from the server as a stream, a chunk at a time.
    async fn reader(&self, key: &Key, range: Option<Range<u64>>) -> Result<Option<ObjectReader>> {
        let Some(stream) = self
            .inner
            .clone()
            .get_stream(key.clone(), range, false)
            .await?
        else {
            return Ok(None);
        };
        let info = stream.info.clone();
        Ok(Some(ObjectReader::from_chunks(
            info.object_size,
            info.offset,
            info.size,
            Box::new(StreamChunks {
                stream,
                rest: Bytes::new(),
            }),
        )))
    }

    async fn new_key(&self, _options: &PutOptions) -> Result<Key> {
        // Keys are UUIDs chosen here; the server must accept caller-chosen keys, which a
        // server fronting a connector without deferred puts does not.
        if self.inner.caller_keys().await? {
            Ok(Key::random())
        } else {
            Err(Error::Unsupported {
                connector: KIND.to_owned(),
                operation: "new_key (the server's backend chooses its own keys)".into(),
            })
        }
    }

    async fn set(&self, key: &Key, data: Bytes) -> Result<()> {
        // An empty key in a Put header asks the server to choose one.
        if key.as_str().is_empty() {
            return Err(Error::InvalidKey {
                connector: KIND.to_owned(),
                key: String::new(),
                reason: "empty key".into(),
            });
        }
        self.inner
            .put_bytes(data, Some(key.clone()), &PutOptions::default())
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn config_round_trips_and_redacts() {
        let c = GrpcConnector::with_config(
            GrpcConfig::new("127.0.0.1:1")
                .token("s3cret")
                .timeout(Duration::from_secs(2)),
        )
        .unwrap();
        let config = c.config();
        let rebuilt = crate::kinds::from_config(&config).unwrap();
        assert_eq!(rebuilt.config(), config);
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.grpc_config().uri(), "http://127.0.0.1:1");
    }

    #[test]
    fn bad_configs_are_config_errors() {
        for c in [
            GrpcConfig::new(""),
            GrpcConfig::new("http://[::1"),
            GrpcConfig::new("127.0.0.1:1").token("line\nbreak"),
            GrpcConfig::new("127.0.0.1:1").token_env("PROXYSTORE_TEST_SURELY_UNSET_VAR"),
            GrpcConfig::new("127.0.0.1:1").addresses(["127.0.0.1:2", "http://[::1"]),
            GrpcConfig::new("127.0.0.1:1").addresses([""]),
        ] {
            let e = GrpcConnector::with_config(c.clone()).unwrap_err();
            assert!(matches!(e, Error::Config { .. }), "{c:?}: {e}");
        }
    }

    #[test]
    fn resources_list_every_address() {
        let config = GrpcConfig::new("10.0.0.1:50051")
            .addresses(["http://replica.example:7000", "https://[::1]"])
            .tls_ca_file("/etc/ca.pem");
        let resources =
            GrpcConnector::resources(&ConnectorConfig::from_options(KIND, &config).unwrap())
                .unwrap();
        let hosts: Vec<(String, Option<u16>)> = resources
            .iter()
            .filter_map(|r| match r {
                Resource::Host { host, port, .. } => Some((host.clone(), *port)),
                _ => None,
            })
            .collect();
        assert_eq!(
            hosts,
            [
                ("10.0.0.1".to_owned(), Some(50051)),
                ("replica.example".to_owned(), Some(7000)),
                ("::1".to_owned(), Some(443)),
            ]
        );
        assert!(resources.iter().any(|r| matches!(r, Resource::Path { .. })));
        // An extra address that does not parse fails the check as it fails the connector.
        let bad = GrpcConfig::new("10.0.0.1:50051").addresses(["http://[::1"]);
        let e = GrpcConnector::resources(&ConnectorConfig::from_options(KIND, &bad).unwrap())
            .unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{e:?}");
    }

    #[test]
    fn addresses_are_optional_in_serialized_configs() {
        // A reference made before replicas existed.
        let old: GrpcConfig =
            serde_json::from_str(r#"{"address":"http://10.0.0.1:50051","retries":5}"#).unwrap();
        assert_eq!(old.address, "http://10.0.0.1:50051");
        assert!(old.addresses.is_empty());
        assert_eq!(old.retries, 5);
        // One address: serialized as before, without the field.
        let json = serde_json::to_value(GrpcConfig::new("10.0.0.1:50051")).unwrap();
        assert!(json.get("addresses").is_none(), "{json}");
        // Several: the field round-trips, and so does the connector's config.
        let config = GrpcConfig::new("10.0.0.1:50051").addresses(["10.0.0.2:50051"]);
        let json = serde_json::to_string(&config).unwrap();
        assert!(json.contains(r#""addresses":["10.0.0.2:50051"]"#), "{json}");
        assert_eq!(serde_json::from_str::<GrpcConfig>(&json).unwrap(), config);
        let c = GrpcConnector::with_config(config.clone()).unwrap();
        let rebuilt = crate::kinds::from_config(&c.config()).unwrap();
        assert_eq!(rebuilt.config(), c.config());
        assert!(format!("{c:?}").contains("10.0.0.2:50051"));
    }

    #[tokio::test]
    async fn unreachable_replicas_are_a_typed_error_after_retries() {
        // Nothing listens on ports 1 and 2 of loopback: every connection is refused, each call
        // tries both replicas, and the store's retries try them again.
        let c = crate::layer::stack(Arc::new(
            GrpcConnector::with_config(
                GrpcConfig::new("127.0.0.1:1")
                    .addresses(["127.0.0.1:2"])
                    .retries(2),
            )
            .unwrap(),
        ));
        let started = Instant::now();
        let e = c.exists(&Key::from("k")).await.unwrap_err();
        assert!(
            matches!(e, Error::Backend { .. }) && e.is_retryable(),
            "{e:?}"
        );
        let e = c.put(Bytes::from_static(b"x")).await.unwrap_err();
        assert!(
            matches!(e, Error::Backend { .. }) && e.is_retryable(),
            "{e:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no connect waits"
        );
    }

    /// A server that accepts connections and never answers: concurrent first calls wait for
    /// one session open and share its timeout, instead of each timing out in turn.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_waiting_for_a_session_share_its_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                held.push(conn);
            }
        });
        let timeout = Duration::from_millis(300);
        let c = Arc::new(
            GrpcConnector::with_config(
                GrpcConfig::new(addr.to_string())
                    .timeout(timeout)
                    .retries(0),
            )
            .unwrap(),
        );
        let started = Instant::now();
        let calls = (0..8).map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.exists(&Key::from(format!("k{i}"))).await })
        });
        for r in futures::future::join_all(calls).await {
            let e = r.unwrap().unwrap_err();
            assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        }
        // One open's timeout, perhaps two; not eight in a row.
        assert!(
            started.elapsed() < timeout * 4,
            "took {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn unreachable_server_is_a_typed_error_after_retries() {
        // Port 1 on loopback: connection refused.
        // Retries are the store's layers: stacked as a store stacks it.
        let c = crate::layer::stack(Arc::new(
            GrpcConnector::with_config(GrpcConfig::new("127.0.0.1:1").retries(2)).unwrap(),
        ));
        let started = Instant::now();
        let e = c.exists(&Key::from("k")).await.unwrap_err();
        assert!(matches!(e, Error::Backend { .. }), "{e:?}");
        assert!(e.is_retryable());
        // Two retries: at least half of 50 ms and half of 100 ms (jittered backoff).
        assert!(
            started.elapsed() >= Duration::from_millis(75),
            "retried with backoff"
        );
        let e = c.put(Bytes::from_static(b"x")).await.unwrap_err();
        assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    }
}
