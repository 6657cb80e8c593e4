//! The gRPC connector: the client of the ProxyStore store service (`proxystore-server`).
//!
//! One HTTP/2 channel per connector, created lazily on the library's I/O runtime and reused by
//! every call; objects move as streams of 1 MiB chunks with HTTP/2 flow control as
//! backpressure; idempotent calls (get, exists, evict, stat, batch get and evict, deferred
//! `set`) are retried with backoff ([`crate::retry::RetryConfig`], applied by the store's
//! layers) when the server answers `UNAVAILABLE` or the connection breaks; every call has a
//! timeout. The config round-trips, so a proxy made against a server resolves in
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
use std::pin::Pin;

use std::sync::{Arc, OnceLock};

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use proxystore_proto::v1;
use proxystore_proto::v1::store_service_client::StoreServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use super::stream::{ObjectReader, ObjectWriter};
use super::{CallConfig, Connector, ConnectorConfig, PutOptions, Resource};
use crate::digest::{Digest, DigestAlgorithm};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::retry::RetryConfig;
use crate::runtime;
use rpc_trace::{RpcTrace, Side};

pub mod rpc_trace;
mod status;

pub use status::{DETAIL_METADATA, KEY_METADATA};

mod config;
mod transfer;

use config::{BATCH_BYTES, BATCH_ITEM_MAX, BATCH_KEYS};
pub use config::{
    CONNECTION_WINDOW, DEFAULT_CHUNK_SIZE, GrpcConfig, KIND, MAX_FRAME_SIZE, MAX_MESSAGE_SIZE,
    ObjectInfo, STREAM_WINDOW, ServerStat, UploadOptions,
};
pub use transfer::GetStream;
use transfer::{GrpcWriter, Piece, Progress, PutBody, StreamChunks, next_message};

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
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: GrpcConfig,
    endpoint: Endpoint,
    auth: Option<MetadataValue<Ascii>>,
    client: OnceLock<Client>,
    caller_keys: tokio::sync::OnceCell<bool>,
}

type Client = StoreServiceClient<RpcTrace<Channel>>;

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
    /// [`Error::Config`] for an unparsable address, a token that cannot be sent as a header,
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
        let endpoint = endpoint(&config)?;
        Ok(GrpcConnector {
            inner: Arc::new(Inner {
                config,
                endpoint,
                auth,
                client: OnceLock::new(),
                caller_keys: tokio::sync::OnceCell::new(),
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
    /// port of the address as the channel parses it (`http` crate), and the CA file.
    pub(crate) fn resources(config: &ConnectorConfig) -> Result<Vec<Resource>> {
        let config: GrpcConfig = config.options()?;
        let bad = |why: &str| Error::config(format!("grpc address {:?}: {why}", config.address));
        let uri: tonic::codegen::http::Uri =
            config.uri().parse().map_err(|e| bad(&format!("{e}")))?;
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let mut out = vec![Resource::Host {
            what: "grpc",
            // IPv6 hosts come in brackets.
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: Some(port),
        }];
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

    /// Run `f` on the library's I/O runtime, for the methods outside the [`Connector`] trait
    /// (which a store's layers run there).
    async fn io<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        runtime::run_on_io(f(self.inner.clone())).await
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

fn endpoint(config: &GrpcConfig) -> Result<Endpoint> {
    let uri = config.uri();
    let bad = |e: tonic::transport::Error| {
        Error::config(format!("grpc address {:?}: {e}", config.address))
    };
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut ep = Endpoint::from_shared(uri.clone())
        .map_err(bad)?
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms.max(1)))
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10));
    if uri.starts_with("https://") {
        #[cfg(feature = "tls")]
        {
            let mut tls = tonic::transport::ClientTlsConfig::new();
            tls = match &config.tls_ca_file {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|e| {
                        Error::config(format!("grpc tls_ca_file {}: {e}", path.display()))
                    })?;
                    tls.ca_certificate(tonic::transport::Certificate::from_pem(pem))
                }
                None => tls.with_native_roots(),
            };
            if let Some(d) = &config.tls_domain {
                tls = tls.domain_name(d.clone());
            }
            ep = ep.tls_config(tls).map_err(bad)?;
        }
        #[cfg(not(feature = "tls"))]
        return Err(Error::config(
            "https:// grpc addresses need the `tls` feature of proxystore",
        ));
    }
    Ok(ep)
}

fn timeout_status(operation: &str, after: Duration) -> Status {
    Status::from(Error::Timeout {
        operation: format!("{KIND} {operation}"),
        after,
    })
}

fn proto_digest(d: &Digest) -> v1::Digest {
    v1::Digest {
        algorithm: d.algorithm().as_str().to_owned(),
        value: Bytes::from(d.to_bytes()),
    }
}

fn digest_from_proto(d: Option<v1::Digest>) -> Option<Digest> {
    let d = d?;
    let alg: DigestAlgorithm = d.algorithm.parse().ok()?;
    Digest::from_parts(alg, &d.value).ok().flatten()
}

fn protocol_error(what: impl Into<String>) -> Status {
    Status::internal(format!("protocol error from server: {}", what.into()))
}

impl Inner {
    /// The channel's client, created on first use, with its worker on the I/O runtime.
    fn client(&self) -> Client {
        self.client
            .get_or_init(|| {
                // The channel spawns its worker on the current runtime: make that the I/O
                // runtime, whoever calls first.
                let _io = runtime::io_handle().enter();
                StoreServiceClient::new(RpcTrace::new(self.endpoint.connect_lazy(), Side::Client))
                    .max_decoding_message_size(MAX_MESSAGE_SIZE)
                    .max_encoding_message_size(MAX_MESSAGE_SIZE)
            })
            .clone()
    }

    fn timeout(&self) -> Duration {
        self.config.timeout_duration()
    }

    fn request<T>(&self, msg: T, deadline: bool) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(a) = &self.auth {
            r.metadata_mut().insert("authorization", a.clone());
        }
        if deadline {
            r.set_timeout(self.timeout());
        }
        r
    }

    /// The retries of idempotent calls: [`GrpcConfig::retries`] with the shared backoff.
    fn retry_config(&self) -> RetryConfig {
        RetryConfig::default().max_retries(self.config.retries)
    }

    /// A unary call under the timeout. Retries are the caller's (the store's retry layer for
    /// the trait's methods, [`RetryConfig::run`] for the others).
    async fn unary<Req, Resp, F, Fut>(&self, op: &'static str, msg: Req, call: F) -> Result<Resp>
    where
        F: FnOnce(Client, Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, Status>>,
    {
        let req = self.request(msg, true);
        match tokio::time::timeout(self.timeout(), call(self.client(), req)).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(s)) => Err(Error::from(s)),
            Err(_) => Err(Error::from(timeout_status(op, self.timeout()))),
        }
    }

    async fn stat(&self) -> Result<v1::StatResponse> {
        self.retry_config()
            .run("grpc stat", || {
                self.unary("stat", v1::StatRequest {}, |mut c, r| async move {
                    c.stat(r).await
                })
            })
            .await
    }

    async fn caller_keys(&self) -> Result<bool> {
        self.caller_keys
            .get_or_try_init(|| async { Ok(self.stat().await?.caller_keys) })
            .await
            .copied()
    }

    /// Open a Get stream and read its header; `None` when the key is absent.
    async fn open_get(
        &self,
        key: &Key,
        range: Option<Range<u64>>,
    ) -> std::result::Result<Option<(ObjectInfo, tonic::Streaming<v1::GetResponse>)>, Status> {
        let t = self.timeout();
        let req = self.request(
            v1::GetRequest {
                key: key.to_string(),
                range: range.map(|r| v1::ByteRange {
                    start: r.start,
                    end: r.end,
                }),
            },
            false,
        );
        let mut stream = match tokio::time::timeout(t, self.client().get(req)).await {
            Err(_) => return Err(timeout_status("get", t)),
            Ok(Err(s)) if s.code() == Code::NotFound => return Ok(None),
            Ok(Err(s)) => return Err(s),
            Ok(Ok(r)) => r.into_inner(),
        };
        let header = match next_message(&mut stream, t).await {
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(s),
            Ok(Some(v1::GetResponse {
                msg: Some(v1::get_response::Msg::Header(h)),
            })) => h,
            Ok(_) => return Err(protocol_error("Get stream did not start with a header")),
        };
        let info = ObjectInfo {
            size: header.size,
            object_size: header.object_size,
            offset: header.offset,
            digest: digest_from_proto(header.digest),
        };
        Ok(Some((info, stream)))
    }

    async fn get_once(
        &self,
        key: &Key,
        range: Option<Range<u64>>,
    ) -> std::result::Result<Option<Bytes>, Status> {
        let Some((info, mut stream)) = self.open_get(key, range).await? else {
            return Ok(None);
        };
        let t = self.timeout();
        let size = usize::try_from(info.size)
            .map_err(|_| Status::resource_exhausted("object larger than this platform's memory"))?;
        // A single chunk holding the whole object is returned as it came, without copying;
        // otherwise the buffer is allocated once, at the size the header announced.
        let mut single: Option<Bytes> = None;
        let mut buf: Vec<u8> = Vec::new();
        let mut received = 0usize;
        while let Some(m) = next_message(&mut stream, t).await? {
            let Some(v1::get_response::Msg::Chunk(chunk)) = m.msg else {
                return Err(protocol_error("second header in Get stream"));
            };
            received += chunk.len();
            if received > size {
                return Err(protocol_error(format!(
                    "Get stream carried more than the announced {size} bytes"
                )));
            }
            if single.is_none() && buf.capacity() == 0 && chunk.len() == size {
                single = Some(chunk);
                continue;
            }
            if buf.capacity() == 0 {
                buf.try_reserve_exact(size).map_err(|_| {
                    Status::resource_exhausted(format!("cannot allocate {size} bytes"))
                })?;
            }
            buf.extend_from_slice(&chunk);
        }
        if received != size {
            return Err(Status::unavailable(format!(
                "Get stream ended after {received} of {size} bytes"
            )));
        }
        Ok(Some(single.unwrap_or_else(|| Bytes::from(buf))))
    }

    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<Option<Bytes>> {
        self.get_once(key, range).await.map_err(Error::from)
    }

    /// Open a streamed get; with `retry`, opening is retried as for idempotent calls (the
    /// trait's reader leaves that to the store's retry layer).
    async fn get_stream(
        self: Arc<Self>,
        key: Key,
        range: Option<Range<u64>>,
        retry: bool,
    ) -> Result<Option<GetStream>> {
        let retries = if retry {
            self.retry_config()
        } else {
            RetryConfig::none()
        };
        let opened = retries
            .run("grpc get", || async {
                self.open_get(&key, range.clone())
                    .await
                    .map_err(Error::from)
            })
            .await?;
        let Some((info, mut stream)) = opened else {
            return Ok(None);
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let t = self.timeout();
        let size = info.size;
        // The pump runs on the I/O runtime; a full channel stops it reading, which stops the
        // server through HTTP/2 flow control.
        tokio::spawn(async move {
            let mut received = 0u64;
            let err = loop {
                match next_message(&mut stream, t).await {
                    Ok(Some(v1::GetResponse {
                        msg: Some(v1::get_response::Msg::Chunk(c)),
                    })) => {
                        received += c.len() as u64;
                        if received > size {
                            break Some(protocol_error("Get stream carried too many bytes"));
                        }
                        if tx.send(Ok(c)).await.is_err() {
                            return;
                        }
                    }
                    Ok(Some(_)) => break Some(protocol_error("second header in Get stream")),
                    Ok(None) if received == size => break None,
                    Ok(None) => {
                        break Some(Status::unavailable(format!(
                            "Get stream ended after {received} of {size} bytes"
                        )));
                    }
                    Err(s) => break Some(s),
                }
            };
            if let Some(s) = err {
                let _ = tx.send(Err(Error::from(s))).await;
            }
        });
        Ok(Some(GetStream { info, rx }))
    }

    async fn put(
        &self,
        data: Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>,
        options: UploadOptions,
    ) -> Result<Key> {
        let header = v1::PutHeader {
            key: options.key.map(|k| k.to_string()).unwrap_or_default(),
            size: options.size,
            digest: options.digest.as_ref().map(proto_digest),
            ttl_millis: options
                .ttl
                .map(|t| t.as_millis().clamp(1, u128::from(u64::MAX)) as u64)
                .unwrap_or(0),
            name: options.put.name.unwrap_or_default(),
            tags: options.put.tags,
        };
        let progress = Arc::new(Progress::new());
        let body = PutBody {
            header: Some(v1::PutRequest {
                msg: Some(v1::put_request::Msg::Header(header)),
            }),
            finished: false,
            data,
            rest: Bytes::new(),
            chunk: self.config.chunk_size,
            progress: progress.clone(),
            failed: false,
        };
        let t = self.timeout();
        let call = async {
            let mut client = self.client();
            client.put(self.request(body, false)).await
        };
        tokio::pin!(call);
        let tick = (t / 4).max(Duration::from_millis(10));
        loop {
            tokio::select! {
                r = &mut call => {
                    return r.map(|r| Key::from(r.into_inner().key)).map_err(Error::from);
                }
                // Dropping `call` on return cancels the upload: the server keeps nothing.
                () = progress.failed.notified() => {
                    if let Some(e) = progress.take_error() {
                        return Err(e);
                    }
                }
                () = tokio::time::sleep(tick) => {
                    if progress.idle() > t {
                        return Err(Error::from(timeout_status("put", t)));
                    }
                }
            }
        }
    }

    async fn put_bytes(&self, data: Bytes, key: Option<Key>, options: &PutOptions) -> Result<Key> {
        let size = data.len() as u64;
        self.put(
            Box::pin(futures::stream::once(async move { Ok(data) })),
            UploadOptions {
                key,
                size: Some(size),
                put: options.clone(),
                ..UploadOptions::default()
            },
        )
        .await
    }

    async fn put_batch(&self, data: Vec<Bytes>, options: &PutOptions) -> Result<Vec<Key>> {
        let mut keys: Vec<Option<Key>> = vec![None; data.len()];
        let mut group: Vec<(usize, Bytes)> = Vec::new();
        let mut group_bytes = 0usize;
        let mut pending = data.into_iter().enumerate().peekable();
        while let Some((i, d)) = pending.next() {
            if d.len() > BATCH_ITEM_MAX {
                keys[i] = Some(self.put_bytes(d, None, options).await?);
            } else {
                group_bytes += d.len();
                group.push((i, d));
            }
            let flush = group_bytes >= BATCH_BYTES
                || group.len() >= BATCH_KEYS
                || (pending.peek().is_none() && !group.is_empty());
            if flush {
                let items: Vec<v1::PutBatchItem> = group
                    .iter()
                    .map(|(_, d)| v1::PutBatchItem {
                        data: d.clone(),
                        name: options.name.clone().unwrap_or_default(),
                        ..Default::default()
                    })
                    .collect();
                let resp = self
                    .unary(
                        "put_batch",
                        v1::PutBatchRequest { items },
                        |mut c, r| async move { c.put_batch(r).await },
                    )
                    .await?;
                if resp.keys.len() != group.len() {
                    return Err(Error::from(protocol_error(format!(
                        "PutBatch returned {} keys for {} items",
                        resp.keys.len(),
                        group.len()
                    ))));
                }
                for ((i, _), k) in group.drain(..).zip(resp.keys) {
                    keys[i] = Some(Key::from(k));
                }
                group_bytes = 0;
            }
        }
        keys.into_iter()
            .map(|k| k.ok_or_else(|| Error::from(protocol_error("PutBatch lost an item"))))
            .collect()
    }

    async fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>> {
        let mut out = Vec::with_capacity(keys.len());
        for group in keys.chunks(BATCH_KEYS) {
            let req = v1::GetBatchRequest {
                keys: group.iter().map(|k| k.to_string()).collect(),
                // This client receives messages up to this size (the server caps it at its own).
                max_response_bytes: MAX_MESSAGE_SIZE as u64,
            };
            let resp = self
                .unary(
                    "get_batch",
                    req,
                    |mut c, r| async move { c.get_batch(r).await },
                )
                .await?;
            if resp.items.len() != group.len() {
                return Err(Error::from(protocol_error(format!(
                    "GetBatch returned {} items for {} keys",
                    resp.items.len(),
                    group.len()
                ))));
            }
            for (item, key) in resp.items.into_iter().zip(group) {
                out.push(match (item.found, item.omitted) {
                    (false, _) => None,
                    // Too large for the batch response: fetched on its own stream.
                    (true, true) => self.get(key, None).await?,
                    (true, false) => Some(item.data),
                });
            }
        }
        Ok(out)
    }

    async fn evict_batch(&self, keys: &[Key]) -> Result<()> {
        for group in keys.chunks(BATCH_KEYS) {
            let req = v1::EvictBatchRequest {
                keys: group.iter().map(|k| k.to_string()).collect(),
            };
            self.unary("evict_batch", req, |mut c, r| async move {
                c.evict_batch(r).await
            })
            .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Connector for GrpcConnector {
    fn kind(&self) -> &str {
        KIND
    }

    /// On the I/O runtime, where the channel lives; idempotent calls (reads, exists,
    /// evictions, `set` under a fixed key) retried [`GrpcConfig::retries`] times on a temporary
    /// failure (`UNAVAILABLE`, a broken connection), puts not (the server chooses their keys).
    /// Each call bounds itself: a unary call by [`GrpcConfig::timeout_ms`], a stream by the
    /// time between two messages.
    fn call_config(&self) -> CallConfig {
        CallConfig::networked(None, self.retry_config())
    }

    async fn put_opts(&self, data: Bytes, options: &PutOptions) -> Result<Key> {
        self.inner.put_bytes(data, None, options).await
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        self.inner.get(key, None).await
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Option<Bytes>> {
        self.inner.get(key, Some(range)).await
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        let req = v1::ExistsRequest {
            key: key.to_string(),
        };
        let r = self
            .inner
            .unary("exists", req, |mut c, r| async move { c.exists(r).await })
            .await?;
        Ok(r.exists)
    }

    async fn evict(&self, key: &Key) -> Result<()> {
        let req = v1::EvictRequest {
            key: key.to_string(),
        };
        self.inner
            .unary("evict", req, |mut c, r| async move { c.evict(r).await })
            .await
            .map(|_| ())
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
            runtime::io_handle().spawn(async move { inner.put(Box::pin(data), upload).await });
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
    use std::time::Instant;

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
        ] {
            let e = GrpcConnector::with_config(c.clone()).unwrap_err();
            assert!(matches!(e, Error::Config { .. }), "{c:?}: {e}");
        }
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
