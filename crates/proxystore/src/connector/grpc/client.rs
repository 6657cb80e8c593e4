//! The client side of the gRPC connector: the endpoint settings, each RPC (unary calls with
//! their deadlines and retries, streamed gets and puts, batches), and on which replica of the
//! [`Pool`] each runs.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use proxystore_proto::splice::SpliceRequests;
use proxystore_proto::v1;
use proxystore_proto::v1::session_request::Call;
use proxystore_proto::v1::session_response::Result as Answer;
use proxystore_proto::v1::store_service_client::StoreServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use super::config::{
    BATCH_BYTES, BATCH_ITEM_MAX, BATCH_KEYS, CONNECTION_WINDOW, GrpcConfig, KIND, MAX_FRAME_SIZE,
    MAX_MESSAGE_SIZE, ObjectInfo, STREAM_WINDOW, UploadOptions, uri_of,
};
use super::pool::{Pick, Pool};
use super::rpc_trace::RpcTrace;
use super::session::Session;
use super::transfer::{GetStream, Progress, PutBody, next_message};
use crate::connector::PutOptions;
use crate::digest::{Digest, DigestAlgorithm};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::retry::RetryConfig;

pub(super) struct Inner {
    pub(super) config: GrpcConfig,
    pub(super) pool: Pool,
    pub(super) auth: Option<MetadataValue<Ascii>>,
    pub(super) caller_keys: tokio::sync::OnceCell<bool>,
    /// Gets in a row whose object was too large for a session's answer: from
    /// [`LARGE_GETS_TO_STREAMS`] on, gets go straight to streams of their own (sparing the
    /// session's round trip that only says "too large"), until one fetches an object small
    /// enough for a session again.
    pub(super) large_gets: AtomicU32,
}

pub(super) type Client = StoreServiceClient<SpliceRequests<RpcTrace<Channel>>>;

/// Largest object put on a session (one message), whatever the server allows
/// (`SessionOpened::max_put_bytes`); larger ones go on a `Put` stream of their own.
const SESSION_PUT_MAX: u64 = 1 << 20;
/// An object a session answers inline (the server's default limit), when no session said.
const SESSION_GET_SMALL: u64 = 256 << 10;
/// Gets in a row too large for a session after which gets go straight to streams of their own
/// (see [`Inner::large_gets`]).
const LARGE_GETS_TO_STREAMS: u32 = 2;
/// Sessions a call is tried on before it goes on a stream of its own, when each ends (with OK)
/// before it runs the call.
const SESSION_ATTEMPTS: usize = 3;

/// The endpoint of `address`, one of `config`'s, with `config`'s settings.
pub(super) fn endpoint(config: &GrpcConfig, address: &str) -> Result<Endpoint> {
    let uri = uri_of(address);
    let bad = |e: tonic::transport::Error| Error::config(format!("grpc address {address:?}: {e}"));
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

pub(super) fn timeout_status(operation: &str, after: Duration) -> Status {
    Status::from(Error::Timeout {
        operation: format!("{KIND} {operation}"),
        after,
    })
}

pub(super) fn proto_digest(d: &Digest) -> v1::Digest {
    v1::Digest {
        algorithm: d.algorithm().as_str().to_owned(),
        value: Bytes::from(d.to_bytes()),
    }
}

pub(super) fn digest_from_proto(d: Option<v1::Digest>) -> Option<Digest> {
    let d = d?;
    let alg: DigestAlgorithm = d.algorithm.parse().ok()?;
    Digest::from_parts(alg, &d.value).ok().flatten()
}

/// The header of an upload with `options`.
fn put_header(options: &UploadOptions) -> v1::PutHeader {
    v1::PutHeader {
        key: options
            .key
            .as_ref()
            .map(|k| k.to_string())
            .unwrap_or_default(),
        size: options.size,
        digest: options.digest.as_ref().map(proto_digest),
        ttl_millis: options
            .ttl
            .map(|t| t.as_millis().clamp(1, u128::from(u64::MAX)) as u64)
            .unwrap_or(0),
        name: options.put.name.clone().unwrap_or_default(),
        tags: options.put.tags.clone(),
    }
}

/// A session answered `method` with the result of another call.
fn unexpected_answer(method: &str) -> Status {
    protocol_error(format!(
        "a session answered {method} with another call's result"
    ))
}

pub(super) fn protocol_error(what: impl Into<String>) -> Status {
    Status::internal(format!("protocol error from server: {}", what.into()))
}

impl Inner {
    /// Run `call` on a replica picked from the pool, and record its outcome there. A call
    /// whose connection could not be established sent nothing, so it moves on to the next
    /// replica not tried yet, whatever the call (an upload too); after any other failure,
    /// trying again is the caller's decision (its retries pick a replica again).
    pub(super) async fn on_replica<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.on_replica_picked(call).await.map(|(t, _)| t)
    }

    /// As [`Inner::on_replica`], also returning the replica the call succeeded on.
    async fn on_replica_picked<T, F, Fut>(&self, mut call: F) -> Result<(T, Pick)>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.on_pick(|pick| call(self.pool.client(pick))).await
    }

    /// As [`Inner::on_replica_picked`], `call` given the replica picked.
    async fn on_pick<T, F, Fut>(&self, mut call: F) -> Result<(T, Pick)>
    where
        F: FnMut(Pick) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut pick = self.pool.pick();
        let mut tried = Vec::new();
        loop {
            let result = call(pick).await;
            self.pool.report(pick, result.as_ref().err());
            match result {
                Ok(t) => return Ok((t, pick)),
                Err(e) if Pool::not_sent(&e) => {
                    tracing::debug!(
                        address = self.pool.address(pick),
                        error = %e,
                        "grpc replica not reachable, trying the next"
                    );
                    tried.push(pick);
                    match self.pool.pick_other(&tried) {
                        Some(next) => pick = next,
                        None => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The session of the picked replica, opened if need be; `None` when its server has no
    /// sessions.
    async fn session(&self, pick: Pick) -> Result<Option<Arc<Session>>> {
        let conn = self.pool.conn(pick);
        conn.session
            .get(|| conn.client.clone(), self.auth.as_ref(), self.timeout())
            .await
            .map_err(Error::from)
    }

    /// `call` (the service's `method`) on the picked replica's session, when the session's
    /// limits let it (`fits`); `None` when the replica has no sessions, the call does not fit,
    /// or its sessions kept ending before they ran it: the caller then makes the call on a
    /// stream of its own.
    async fn session_call(
        &self,
        pick: Pick,
        method: &'static str,
        call: &Call,
        fits: impl Fn(&v1::SessionOpened) -> bool,
    ) -> Result<Option<Answer>> {
        for _ in 0..SESSION_ATTEMPTS {
            let Some(session) = self.session(pick).await? else {
                return Ok(None);
            };
            if !fits(session.limits()) {
                return Ok(None);
            }
            if let Some(answer) = session.call(method, call.clone(), self.timeout()).await? {
                return Ok(Some(answer));
            }
        }
        Ok(None)
    }

    /// [`Inner::session_call`] on a replica picked from the pool.
    async fn on_session(&self, method: &'static str, call: Call) -> Result<Option<Answer>> {
        self.on_replica_pick(|pick| {
            let call = &call;
            async move { self.session_call(pick, method, call, |_| true).await }
        })
        .await
    }

    /// As [`Inner::on_pick`], without the pick.
    async fn on_replica_pick<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnMut(Pick) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.on_pick(call).await.map(|(t, _)| t)
    }

    pub(super) async fn exists(&self, key: &Key) -> Result<bool> {
        let req = v1::ExistsRequest {
            key: key.to_string(),
        };
        match self.on_session("Exists", Call::Exists(req.clone())).await? {
            Some(Answer::Exists(r)) => return Ok(r.exists),
            Some(_) => return Err(Error::from(unexpected_answer("Exists"))),
            None => {}
        }
        let r = self
            .unary("exists", req, |mut c, r| async move { c.exists(r).await })
            .await?;
        Ok(r.exists)
    }

    pub(super) async fn evict(&self, key: &Key) -> Result<()> {
        let req = v1::EvictRequest {
            key: key.to_string(),
        };
        match self.on_session("Evict", Call::Evict(req.clone())).await? {
            Some(Answer::Evict(_)) => return Ok(()),
            Some(_) => return Err(Error::from(unexpected_answer("Evict"))),
            None => {}
        }
        self.unary("evict", req, |mut c, r| async move { c.evict(r).await })
            .await
            .map(|_| ())
    }

    pub(super) fn timeout(&self) -> Duration {
        self.config.timeout_duration()
    }

    pub(super) fn request<T>(&self, msg: T, deadline: bool) -> Request<T> {
        self.request_within(msg, deadline.then(|| self.timeout()))
    }

    /// A request with the token and, when given, a deadline of `within`.
    fn request_within<T>(&self, msg: T, within: Option<Duration>) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(a) = &self.auth {
            r.metadata_mut().insert("authorization", a.clone());
        }
        if let Some(d) = within {
            r.set_timeout(d);
        }
        r
    }

    /// The retries of idempotent calls: [`GrpcConfig::retries`] with the shared backoff.
    pub(super) fn retry_config(&self) -> RetryConfig {
        RetryConfig::default().max_retries(self.config.retries)
    }

    /// A unary call under the timeout. Retries are the caller's (the store's retry layer for
    /// the trait's methods, [`RetryConfig::run`] for the others).
    ///
    /// The timeout bounds the whole call, moves to other replicas included.
    pub(super) async fn unary<Req, Resp, F, Fut>(
        &self,
        op: &'static str,
        msg: Req,
        call: F,
    ) -> Result<Resp>
    where
        Req: Clone,
        F: Fn(Client, Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, Status>>,
    {
        let attempts = self.on_replica(|client| {
            let req = self.request(msg.clone(), true);
            let call = call(client, req);
            async move {
                call.await
                    .map(tonic::Response::into_inner)
                    .map_err(Error::from)
            }
        });
        match tokio::time::timeout(self.timeout(), attempts).await {
            Ok(r) => r,
            Err(_) => Err(Error::from(timeout_status(op, self.timeout()))),
        }
    }

    /// One `Wait` call: the server answers when `key` is written, or after `left` (or its own
    /// cap, whichever is first). Bounded by `left` plus the call timeout.
    pub(super) async fn wait_once(&self, key: &Key, left: Duration) -> Result<bool> {
        let within = left.saturating_add(self.timeout());
        let attempts = self.on_replica(|mut client| {
            let req = self.request_within(
                v1::WaitRequest {
                    key: key.to_string(),
                    timeout_millis: left.as_millis() as u64,
                },
                Some(within),
            );
            async move {
                match client.wait(req).await {
                    Ok(resp) => Ok(resp.into_inner().exists),
                    Err(s) => Err(Error::from(s)),
                }
            }
        });
        match tokio::time::timeout(within, attempts).await {
            Ok(r) => r,
            Err(_) => Err(Error::from(timeout_status("wait", within))),
        }
    }

    pub(super) async fn stat(&self) -> Result<v1::StatResponse> {
        self.retry_config()
            .run("grpc stat", || {
                self.unary("stat", v1::StatRequest {}, |mut c, r| async move {
                    c.stat(r).await
                })
            })
            .await
    }

    pub(super) async fn caller_keys(&self) -> Result<bool> {
        self.caller_keys
            .get_or_try_init(|| async { Ok(self.stat().await?.caller_keys) })
            .await
            .copied()
    }

    /// Open a Get stream on `client` and read its header; `None` when the key is absent.
    async fn open_get(
        &self,
        mut client: Client,
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
        let mut stream = match tokio::time::timeout(t, client.get(req)).await {
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

    /// A whole get on `client`: the stream opened and read to its end.
    async fn get_once(
        &self,
        client: Client,
        key: &Key,
        range: Option<Range<u64>>,
    ) -> std::result::Result<Option<Bytes>, Status> {
        let Some((info, mut stream)) = self.open_get(client, key, range).await? else {
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

    pub(super) async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<Option<Bytes>> {
        self.get_expecting(key, range, None).await
    }

    /// A get of an object of `size` bytes: on a stream of its own at once when a session would
    /// not answer it inline.
    pub(super) async fn get_sized(&self, key: &Key, size: u64) -> Result<Option<Bytes>> {
        self.get_expecting(key, None, Some(size)).await
    }

    /// A get, with the object's size when known.
    async fn get_expecting(
        &self,
        key: &Key,
        range: Option<Range<u64>>,
        size: Option<u64>,
    ) -> Result<Option<Bytes>> {
        self.on_replica_pick(|pick| {
            let range = range.clone();
            async move {
                // What a session answers inline: its own limit once one is open.
                let inline_limit = || {
                    self.pool
                        .conn(pick)
                        .session
                        .inline_max()
                        .unwrap_or(SESSION_GET_SMALL)
                };
                let likely_small = match size {
                    Some(s) => s <= inline_limit(),
                    None => self.large_gets.load(Ordering::Relaxed) < LARGE_GETS_TO_STREAMS,
                };
                if likely_small {
                    let call = Call::Get(v1::GetRequest {
                        key: key.to_string(),
                        range: range.clone().map(|r| v1::ByteRange {
                            start: r.start,
                            end: r.end,
                        }),
                    });
                    match self.session_call(pick, "Get", &call, |_| true).await? {
                        Some(Answer::Get(item)) if !item.found => return Ok(None),
                        Some(Answer::Get(item)) if !item.omitted => {
                            if item.data.len() as u64 != item.size {
                                return Err(Error::from(protocol_error(format!(
                                    "a session's Get answer of {} bytes for an object of {}",
                                    item.data.len(),
                                    item.size
                                ))));
                            }
                            self.large_gets.store(0, Ordering::Relaxed);
                            return Ok(Some(item.data));
                        }
                        // Too large to answer inline: on a stream of its own.
                        Some(Answer::Get(_)) => {
                            self.large_gets.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(_) => return Err(Error::from(unexpected_answer("Get"))),
                        None => {}
                    }
                }
                let data = self
                    .get_once(self.pool.client(pick), key, range)
                    .await
                    .map_err(Error::from)?;
                // Small enough for a session: the next get tries one again.
                if data
                    .as_ref()
                    .is_some_and(|d| d.len() as u64 <= inline_limit())
                {
                    self.large_gets.store(0, Ordering::Relaxed);
                }
                Ok(data)
            }
        })
        .await
    }

    /// Open a streamed get; with `retry`, opening is retried as for idempotent calls (the
    /// trait's reader leaves that to the store's retry layer). The stream is read from the
    /// replica it was opened on.
    pub(super) async fn get_stream(
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
        let this = &*self;
        let key = &key;
        let (opened, pick) = retries
            .run("grpc get", || {
                this.on_replica_picked(|client| {
                    let range = range.clone();
                    async move { this.open_get(client, key, range).await.map_err(Error::from) }
                })
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
                let e = Error::from(s);
                self.pool.report(pick, Some(&e));
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Some(GetStream { info, rx }))
    }

    /// Upload from `data` on one replica. A stream read once cannot be sent again, so a
    /// connection that cannot be established fails the upload, which the caller may repeat
    /// (on the next replica in turn).
    pub(super) async fn put(
        &self,
        data: Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>,
        options: UploadOptions,
    ) -> Result<Key> {
        let pick = self.pool.pick();
        let result = self.put_on(self.pool.client(pick), data, options).await;
        self.pool.report(pick, result.as_ref().err());
        result
    }

    /// Upload from `data` on `client`.
    async fn put_on(
        &self,
        mut client: Client,
        data: Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>,
        options: UploadOptions,
    ) -> Result<Key> {
        let header = put_header(&options);
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
        let call = client.put(self.request(body, false));
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

    pub(super) async fn put_bytes(
        &self,
        data: Bytes,
        key: Option<Key>,
        options: &PutOptions,
    ) -> Result<Key> {
        let size = data.len() as u64;
        // Whole in memory, the object can be sent again to the next replica when the
        // connection to one cannot be established.
        self.on_replica_pick(|pick| {
            let data = data.clone();
            let options = UploadOptions {
                key: key.clone(),
                size: Some(size),
                put: options.clone(),
                ..UploadOptions::default()
            };
            async move {
                if size <= SESSION_PUT_MAX {
                    let put = v1::SessionPut {
                        header: Some(put_header(&options)),
                        data: data.clone(),
                    };
                    // Room for the request's id and trace context.
                    let len = prost::Message::encoded_len(&put) as u64 + 256;
                    let fits = |l: &v1::SessionOpened| {
                        (l.max_put_bytes == 0 || size <= l.max_put_bytes)
                            && len <= l.max_message_bytes
                    };
                    match self
                        .session_call(pick, "Put", &Call::Put(put), fits)
                        .await?
                    {
                        Some(Answer::Put(r)) => return Ok(Key::from(r.key)),
                        Some(_) => return Err(Error::from(unexpected_answer("Put"))),
                        None => {}
                    }
                }
                self.put_on(
                    self.pool.client(pick),
                    Box::pin(futures::stream::once(async move { Ok(data) })),
                    options,
                )
                .await
            }
        })
        .await
    }

    pub(super) async fn put_batch(
        &self,
        data: Vec<Bytes>,
        options: &PutOptions,
    ) -> Result<Vec<Key>> {
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

    pub(super) async fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>> {
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

    pub(super) async fn evict_batch(&self, keys: &[Key]) -> Result<()> {
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
