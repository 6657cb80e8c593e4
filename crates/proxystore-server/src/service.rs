//! The `proxystore_rs.v1.StoreService` implementation: limits, digests and expiry on top of a
//! connector (see [`crate::backend`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use proxystore::connector::PutOptions;
use proxystore::connector::stream::{ObjectMeta, ObjectReader};
use proxystore::digest::DigestHasher;
use proxystore::{Connector, Digest, DigestAlgorithm, Error, Key};
use proxystore_proto::v1;
use proxystore_proto::v1::store_service_server::StoreService;
use tonic::{Request, Response, Status, Streaming};

use crate::accounting::{Accounting, Meta};
use crate::backend::{Backend, MAX_KEY_BYTES, check_key_length};

mod session;

/// The longest one `Wait` call waits; a client that wants longer calls again.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(30);

/// Size of a GetBatch answer when the request asks for none: the common 4 MiB receive limit
/// of gRPC clients (grpcio, grpc-go, grpc-java, tonic).
pub(crate) const BATCH_RESPONSE_BYTES: u64 = 4 << 20;

/// Settings the service enforces.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub(crate) max_object: Option<u64>,
    pub(crate) max_total: Option<u64>,
    pub(crate) chunk_size: usize,
    pub(crate) max_message: usize,
    pub(crate) idle: Option<Duration>,
    pub(crate) auth_required: bool,
}

/// One message of a Put stream after its header.
enum Piece {
    Chunk(Bytes),
    Finish,
}

/// The store service (cheap to clone).
#[derive(Clone)]
pub(crate) struct StoreSvc {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Arc<dyn Connector>,
    caller_keys: bool,
    acc: Arc<Accounting>,
    limits: Limits,
    /// Becomes true when the server shuts down (see [`StoreSvc::stop_sessions`]).
    stopping: tokio::sync::watch::Sender<bool>,
}

type GetStream = Pin<Box<dyn Stream<Item = Result<v1::GetResponse, Status>> + Send>>;

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message.into())
}

/// The hasher for the digest announced in an upload's header, and that digest; `None` for none.
fn upload_hasher(d: Option<&v1::Digest>) -> Result<Option<(DigestHasher, Digest)>, Status> {
    let Some(d) = d else { return Ok(None) };
    let alg: DigestAlgorithm = d
        .algorithm
        .parse()
        .map_err(|e: Error| invalid(e.to_string()))?;
    let Some(expected) = Digest::from_parts(alg, &d.value).map_err(|e| invalid(e.to_string()))?
    else {
        return Ok(None);
    };
    Ok(DigestHasher::new(alg).map(|h| (h, expected)))
}

fn proto_digest(d: &Digest) -> v1::Digest {
    v1::Digest {
        algorithm: d.algorithm().as_str().to_owned(),
        value: Bytes::from(d.to_bytes()),
    }
}

fn expiry(ttl_millis: u64) -> Option<Instant> {
    (ttl_millis > 0).then(|| Instant::now() + Duration::from_millis(ttl_millis))
}

/// Record the object of a call on its `grpc.server` span (see `RpcTraceLayer`).
fn record_call(key: &Key, bytes: u64) {
    let span = tracing::Span::current();
    span.record("key", tracing::field::display(key));
    span.record("bytes", proxystore::trace::int(bytes));
}

/// What a put needs besides the bytes.
struct Upload {
    key: Option<Key>,
    size: Option<u64>,
    digest: Option<v1::Digest>,
    ttl_millis: u64,
    options: PutOptions,
}

impl StoreSvc {
    pub(crate) fn new(backend: Backend, acc: Arc<Accounting>, limits: Limits) -> Self {
        StoreSvc {
            inner: Arc::new(Inner {
                connector: backend.connector,
                caller_keys: backend.caller_keys,
                acc,
                limits,
                stopping: tokio::sync::watch::Sender::new(false),
            }),
        }
    }

    /// Tell the open sessions that the server is shutting down: each finishes the calls it
    /// has read and ends (see [`session`]).
    pub(crate) fn stop_sessions(&self) {
        self.inner.stopping.send_replace(true);
    }

    /// Evict objects whose time to live has passed.
    pub(crate) async fn sweep_expired(&self) {
        for key in self.inner.acc.expired(Instant::now()) {
            if let Err(e) = self.inner.evict(&key).await {
                tracing::warn!(%key, error = %e, "evicting an expired object failed");
            }
        }
    }
}

impl Inner {
    fn kind(&self) -> String {
        self.connector.kind().to_owned()
    }

    fn key(&self, key: String) -> Result<Key, Status> {
        // The connector's own rules first: they say more than the length.
        let key = Key::from(key);
        self.connector.check_key(&key)?;
        check_key_length(self.connector.kind(), key.as_str())?;
        Ok(key)
    }

    fn not_found(&self, key: &Key) -> Status {
        Status::from(Error::not_found(self.kind(), key.clone()))
    }

    fn check_object_size(&self, size: u64) -> Result<(), Status> {
        match self.limits.max_object {
            Some(max) if size > max => Err(Status::from(Error::LimitExceeded {
                message: format!(
                    "object of {size} bytes exceeds the server's maximum object size of {max} bytes"
                ),
            })),
            _ => Ok(()),
        }
    }

    /// Treat an expired object as absent (and evict it) even before the sweeper runs.
    async fn expire_if_due(&self, key: &Key) -> Result<(), Status> {
        if self.acc.is_expired(key, Instant::now()) {
            self.evict(key).await?;
        }
        Ok(())
    }

    async fn evict(&self, key: &Key) -> proxystore::Result<bool> {
        let existed = self.connector.exists(key).await?;
        self.connector.evict(key).await?;
        self.acc.remove(key);
        Ok(existed)
    }

    /// The next item of a request stream, or DEADLINE_EXCEEDED when the client sent nothing
    /// for the idle timeout.
    async fn next_within<S, T>(&self, stream: &mut S, what: &str) -> Result<Option<T>, Status>
    where
        S: Stream<Item = Result<T, Status>> + Unpin,
    {
        let next = match self.limits.idle {
            None => stream.next().await,
            Some(idle) => tokio::time::timeout(idle, stream.next())
                .await
                .map_err(|_| idle_status(what, idle))?,
        };
        next.transpose().map_err(request_status)
    }

    /// Store one object from the messages after its header. Returns the key and size.
    ///
    /// The object is stored only once its end is explicit (a `Finish`, or exactly the declared
    /// size): the request stream closing proves nothing, as hyper reports a stream the client
    /// reset with CANCEL or NO_ERROR as a clean end.
    async fn store<S>(&self, up: Upload, mut pieces: S) -> Result<(Key, u64), Status>
    where
        S: Stream<Item = Result<Piece, Status>> + Unpin + Send,
    {
        if up.key.is_some() && !self.caller_keys {
            return Err(Status::from(Error::Unsupported {
                connector: self.kind(),
                operation: "caller-chosen keys".into(),
            }));
        }
        if let Some(s) = up.size {
            self.check_object_size(s)?;
        }
        let mut reservation = self.acc.reserve(up.size.unwrap_or(0), up.key.clone())?;
        let mut hasher = upload_hasher(up.digest.as_ref())?;
        let mut writer = self
            .connector
            .put_writer(up.key.clone(), up.size, &up.options)
            .await?;
        let mut received = 0u64;
        loop {
            match self.next_within(&mut pieces, "Put").await? {
                Some(Piece::Chunk(chunk)) => {
                    received += chunk.len() as u64;
                    match up.size {
                        Some(s) if received > s => {
                            return Err(invalid(format!(
                                "Put stream carried more than the {s} bytes its header declared"
                            )));
                        }
                        Some(_) => {}
                        None => {
                            self.check_object_size(received)?;
                            reservation.grow_to(received)?;
                        }
                    }
                    if let Some((h, _)) = &mut hasher {
                        h.update(&chunk);
                    }
                    writer.write(chunk).await?;
                }
                Some(Piece::Finish) => {
                    // Nothing may follow; the stream's end after it may be clean or a reset.
                    if self.next_within(&mut pieces, "Put").await?.is_some() {
                        return Err(invalid("a Put stream ends with its PutFinish message"));
                    }
                    break;
                }
                None if up.size.is_some() => break,
                None => {
                    return Err(invalid(
                        "Put stream closed without a PutFinish message and without a declared \
                         size: it may have been cut off, so nothing was stored",
                    ));
                }
            }
        }
        if let Some(s) = up.size
            && received != s
        {
            return Err(invalid(format!(
                "Put stream carried {received} of the {s} bytes its header declared; nothing \
                 was stored"
            )));
        }
        let digest = match hasher {
            Some((h, expected)) => {
                let actual = h.finish();
                if actual != expected {
                    return Err(Status::from(Error::DigestMismatch {
                        store: self.kind(),
                        key: up.key.unwrap_or_else(|| Key::from("")),
                        expected: expected.to_string(),
                        actual: actual.to_string(),
                    }));
                }
                Some(expected)
            }
            None => None,
        };
        let expires_at = (up.ttl_millis > 0)
            .then(|| SystemTime::now().checked_add(Duration::from_millis(up.ttl_millis)))
            .flatten();
        let key = writer
            .finish_with(&ObjectMeta::new(expires_at, digest))
            .await?;
        self.acc.commit(
            key.clone(),
            Meta {
                size: received,
                digest,
                expires: expiry(up.ttl_millis),
            },
            reservation,
        );
        Ok((key, received))
    }

    /// What a put with `header` stores, its key checked.
    fn upload(&self, header: v1::PutHeader) -> Result<Upload, Status> {
        let key = if header.key.is_empty() {
            None
        } else {
            Some(self.key(header.key)?)
        };
        Ok(Upload {
            key,
            size: header.size,
            digest: header.digest,
            ttl_millis: header.ttl_millis,
            options: PutOptions {
                name: (!header.name.is_empty()).then_some(header.name),
                tags: header.tags,
            },
        })
    }

    /// Store a whole object given in one message (a `PutBatch` item, a session's put).
    pub(crate) async fn put_whole(
        &self,
        header: v1::PutHeader,
        data: Bytes,
    ) -> Result<v1::PutResponse, Status> {
        let len = data.len() as u64;
        if header.size.is_some_and(|s| s != len) {
            return Err(invalid(format!(
                "a put of {len} bytes whose header declares {} bytes",
                header.size.unwrap_or_default()
            )));
        }
        let mut up = self.upload(header)?;
        up.size = Some(len);
        let pieces = futures::stream::iter([Ok(Piece::Chunk(data)), Ok(Piece::Finish)]);
        let (key, size) = self.store(up, pieces).await?;
        record_call(&key, size);
        Ok(v1::PutResponse {
            key: key.to_string(),
            size,
        })
    }

    /// The key of a get and its reader; no reader when the object is absent.
    async fn open_reader(&self, r: v1::GetRequest) -> Result<(Key, Option<ObjectReader>), Status> {
        let key = self.key(r.key)?;
        self.expire_if_due(&key).await?;
        let range = r.range.map(|r| r.start..r.end);
        let reader = self.connector.reader(&key, range).await?;
        if let Some(reader) = &reader {
            record_call(&key, reader.len);
        }
        Ok((key, reader))
    }

    /// The reader of a get, with the header of its answer; `NOT_FOUND` when absent.
    async fn open_get(&self, r: v1::GetRequest) -> Result<(v1::GetHeader, ObjectReader), Status> {
        let (key, reader) = self.open_reader(r).await?;
        let Some(reader) = reader else {
            return Err(self.not_found(&key));
        };
        let digest = self
            .acc
            .meta(&key)
            .and_then(|m| m.digest)
            .map(|d| proto_digest(&d));
        let header = v1::GetHeader {
            size: reader.len,
            object_size: reader.object_size,
            offset: reader.offset,
            digest,
        };
        Ok((header, reader))
    }

    /// A get answered in one message: the bytes when at most `max_inline`, else `omitted`.
    pub(crate) async fn get_inline(
        &self,
        r: v1::GetRequest,
        max_inline: u64,
    ) -> Result<v1::GetBatchItem, Status> {
        let (_, Some(reader)) = self.open_reader(r).await? else {
            return Ok(v1::GetBatchItem::default());
        };
        let mut item = v1::GetBatchItem {
            found: true,
            omitted: reader.len > max_inline,
            size: reader.len,
            data: Bytes::new(),
        };
        if !item.omitted {
            item.data = reader.into_bytes().await?;
        }
        Ok(item)
    }

    pub(crate) async fn exists_call(
        &self,
        r: v1::ExistsRequest,
    ) -> Result<v1::ExistsResponse, Status> {
        let key = self.key(r.key)?;
        tracing::Span::current().record("key", tracing::field::display(&key));
        self.expire_if_due(&key).await?;
        // The size as accounted (every object put through the server or listed when it
        // started); for one stored behind its back, as an empty read reports it (0 when the
        // connector cannot tell).
        let exists = self.connector.exists(&key).await?;
        let size = match self.acc.meta(&key) {
            Some(m) if exists => m.size,
            None if exists => self
                .connector
                .reader(&key, Some(0..0))
                .await?
                .map_or(0, |r| r.object_size),
            _ => 0,
        };
        Ok(v1::ExistsResponse { exists, size })
    }

    pub(crate) async fn evict_call(
        &self,
        r: v1::EvictRequest,
    ) -> Result<v1::EvictResponse, Status> {
        let key = self.key(r.key)?;
        tracing::Span::current().record("key", tracing::field::display(&key));
        let existed = self.evict(&key).await?;
        Ok(v1::EvictResponse { existed })
    }

    /// The stream of a Get answer: the header, then chunks read as the transport asks for
    /// them (a slow client holds back the reads instead of filling server memory).
    ///
    /// A client that stops reading would otherwise pin what the reader holds (an evicted
    /// object's bytes, an open file) for as long as its connection lives: past the idle
    /// timeout, the reader is dropped and the call ends with DEADLINE_EXCEEDED.
    fn get_stream(&self, header: v1::GetResponse, mut reader: ObjectReader) -> GetStream {
        let chunk = self.limits.chunk_size;
        let whole_in_memory = reader.is_in_memory() && reader.len <= chunk as u64;
        let Some(idle) = self.limits.idle.filter(|_| !whole_in_memory) else {
            // One chunk at most of bytes already in memory: nothing more to pin than the
            // message the transport holds anyway.
            let chunks = futures::stream::try_unfold(reader, move |mut reader| async move {
                Ok(reader
                    .next_chunk(chunk)
                    .await
                    .map_err(Status::from)?
                    .map(|c| (chunk_message(c), reader)))
            });
            return Box::pin(futures::stream::once(async move { Ok(header) }).chain(chunks));
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<v1::GetResponse, Status>>(1);
        let abandoned = Arc::new(AtomicBool::new(false));
        let flag = abandoned.clone();
        tokio::spawn(async move {
            let mut next = Ok(header);
            loop {
                let last = next.is_err();
                match tx.send_timeout(next, idle).await {
                    Ok(()) if last => return,
                    Ok(()) => {}
                    Err(tokio::sync::mpsc::error::SendTimeoutError::Timeout(_)) => {
                        tracing::debug!(?idle, "Get not read for the idle timeout; abandoned");
                        flag.store(true, Ordering::Release);
                        return;
                    }
                    Err(tokio::sync::mpsc::error::SendTimeoutError::Closed(_)) => return,
                }
                next = match reader.next_chunk(chunk).await {
                    Ok(Some(c)) => Ok(chunk_message(c)),
                    Ok(None) => return,
                    Err(e) => Err(Status::from(e)),
                };
            }
        });
        let rx = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        // The pump ends without a last message when it gave up: end the call with an error,
        // never with a clean end after part of the object.
        let end = futures::stream::once(async move {
            abandoned
                .load(Ordering::Acquire)
                .then(|| Err(idle_status("Get", idle)))
        })
        .filter_map(futures::future::ready);
        Box::pin(rx.chain(end))
    }
}

/// Bytes `item` takes in a GetBatch answer once `data_len` more bytes of data are added to it.
fn batch_item_len(item: &v1::GetBatchItem, data_len: u64) -> u64 {
    use prost::encoding::encoded_len_varint;
    let mut len = prost::Message::encoded_len(item) as u64;
    if data_len > 0 {
        len += 1 + encoded_len_varint(data_len) as u64 + data_len;
    }
    1 + encoded_len_varint(len) as u64 + len
}

fn chunk_message(c: Bytes) -> v1::GetResponse {
    v1::GetResponse {
        msg: Some(v1::get_response::Msg::Chunk(c)),
    }
}

fn idle_status(what: &str, idle: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "{what} stream idle for {} ms (the server's idle timeout): abandoned, nothing kept",
        idle.as_millis()
    ))
}

/// A status from reading the request stream, in the codes the proto documents: a message
/// over the size limit is RESOURCE_EXHAUSTED (tonic says OUT_OF_RANGE), one that does not
/// decode is INVALID_ARGUMENT (tonic says INTERNAL).
fn request_status(s: Status) -> Status {
    match s.code() {
        tonic::Code::OutOfRange => Status::resource_exhausted(s.message().to_owned()),
        tonic::Code::Internal if s.message().contains("decode") => {
            Status::invalid_argument(s.message().to_owned())
        }
        _ => s,
    }
}

#[tonic::async_trait]
impl StoreService for StoreSvc {
    async fn put(
        &self,
        request: Request<Streaming<v1::PutRequest>>,
    ) -> Result<Response<v1::PutResponse>, Status> {
        let mut stream = request.into_inner();
        let header = match self.inner.next_within(&mut stream, "Put").await? {
            Some(v1::PutRequest {
                msg: Some(v1::put_request::Msg::Header(h)),
            }) => h,
            Some(_) => {
                return Err(invalid(
                    "the first message of a Put stream must be a header",
                ));
            }
            None => return Err(invalid("empty Put stream: a header is required")),
        };
        let up = self.inner.upload(header)?;
        let mut finished = false;
        let chunks = stream.map(move |m| {
            if finished {
                return Err(invalid("a Put stream ends with its PutFinish message"));
            }
            match m?.msg {
                Some(v1::put_request::Msg::Chunk(c)) => Ok(Piece::Chunk(c)),
                Some(v1::put_request::Msg::Finish(_)) => {
                    finished = true;
                    Ok(Piece::Finish)
                }
                Some(v1::put_request::Msg::Header(_)) => {
                    Err(invalid("a Put stream carries exactly one header"))
                }
                None => Err(invalid(
                    "a Put message with neither header, chunk nor finish",
                )),
            }
        });
        let (key, size) = self.inner.store(up, chunks).await?;
        record_call(&key, size);
        Ok(Response::new(v1::PutResponse {
            key: key.to_string(),
            size,
        }))
    }

    type GetStream = GetStream;
    type SessionStream = session::SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<v1::SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        Ok(Response::new(session::serve(
            self.inner.clone(),
            request.into_inner(),
        )))
    }

    async fn get(
        &self,
        request: Request<v1::GetRequest>,
    ) -> Result<Response<Self::GetStream>, Status> {
        let (header, reader) = self.inner.open_get(request.into_inner()).await?;
        let header = v1::GetResponse {
            msg: Some(v1::get_response::Msg::Header(header)),
        };
        Ok(Response::new(self.inner.get_stream(header, reader)))
    }

    async fn exists(
        &self,
        request: Request<v1::ExistsRequest>,
    ) -> Result<Response<v1::ExistsResponse>, Status> {
        Ok(Response::new(
            self.inner.exists_call(request.into_inner()).await?,
        ))
    }

    async fn evict(
        &self,
        request: Request<v1::EvictRequest>,
    ) -> Result<Response<v1::EvictResponse>, Status> {
        Ok(Response::new(
            self.inner.evict_call(request.into_inner()).await?,
        ))
    }

    async fn stat(
        &self,
        _request: Request<v1::StatRequest>,
    ) -> Result<Response<v1::StatResponse>, Status> {
        let u = self.inner.acc.usage();
        let l = &self.inner.limits;
        Ok(Response::new(v1::StatResponse {
            backend: self.inner.kind(),
            object_count: u.objects,
            bytes_used: u.used,
            bytes_in_flight: u.in_flight,
            max_object_bytes: l.max_object.unwrap_or(0),
            max_total_bytes: l.max_total.unwrap_or(0),
            chunk_size: l.chunk_size as u64,
            auth_required: l.auth_required,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            caller_keys: self.inner.caller_keys,
            max_message_bytes: l.max_message as u64,
            max_key_bytes: MAX_KEY_BYTES as u64,
            batch_response_bytes: BATCH_RESPONSE_BYTES.min(l.max_message as u64),
            idle_timeout_millis: l
                .idle
                .map_or(0, |d| d.as_millis().clamp(1, u128::from(u64::MAX)) as u64),
        }))
    }

    async fn put_batch(
        &self,
        request: Request<v1::PutBatchRequest>,
    ) -> Result<Response<v1::PutBatchResponse>, Status> {
        let items = request.into_inner().items;
        let mut keys = Vec::with_capacity(items.len());
        for item in items {
            let header = v1::PutHeader {
                key: item.key,
                size: None,
                digest: item.digest,
                ttl_millis: item.ttl_millis,
                name: item.name,
                tags: Vec::new(),
            };
            keys.push(self.inner.put_whole(header, item.data).await?.key);
        }
        Ok(Response::new(v1::PutBatchResponse { keys }))
    }

    async fn get_batch(
        &self,
        request: Request<v1::GetBatchRequest>,
    ) -> Result<Response<v1::GetBatchResponse>, Status> {
        let r = request.into_inner();
        let max = self.inner.limits.max_message as u64;
        let limit = match r.max_response_bytes {
            0 => BATCH_RESPONSE_BYTES.min(max),
            n => n.min(max),
        };
        // The budget is of the encoded answer, so that it fits the client's receive limit.
        let mut used = 0u64;
        let mut items = Vec::with_capacity(r.keys.len());
        for k in r.keys {
            let key = self.inner.key(k)?;
            self.inner.expire_if_due(&key).await?;
            let item = match self.inner.connector.reader(&key, None).await? {
                None => v1::GetBatchItem::default(),
                Some(reader) => {
                    let mut item = v1::GetBatchItem {
                        found: true,
                        omitted: false,
                        size: reader.len,
                        data: Bytes::new(),
                    };
                    if used + batch_item_len(&item, reader.len) <= limit {
                        item.data = reader.into_bytes().await?;
                    } else {
                        item.omitted = true;
                    }
                    item
                }
            };
            used += batch_item_len(&item, 0);
            items.push(item);
        }
        Ok(Response::new(v1::GetBatchResponse { items }))
    }

    async fn evict_batch(
        &self,
        request: Request<v1::EvictBatchRequest>,
    ) -> Result<Response<v1::EvictBatchResponse>, Status> {
        let mut evicted = 0;
        for k in request.into_inner().keys {
            let key = self.inner.key(k)?;
            if self.inner.evict(&key).await? {
                evicted += 1;
            }
        }
        Ok(Response::new(v1::EvictBatchResponse { evicted }))
    }

    /// Waits on the backend's notification ([`proxystore::Connector::wait`]), at most
    /// [`MAX_WAIT`] per call. A client that goes away cancels the wait.
    async fn wait(
        &self,
        request: Request<v1::WaitRequest>,
    ) -> Result<Response<v1::WaitResponse>, Status> {
        let req = request.into_inner();
        let key = self.inner.key(req.key)?;
        tracing::Span::current().record("key", tracing::field::display(&key));
        let timeout = Duration::from_millis(req.timeout_millis).min(MAX_WAIT);
        let started = Instant::now();
        let mut exists = self.inner.connector.wait(&key, timeout).await?;
        if exists && self.inner.acc.is_expired(&key, Instant::now()) {
            self.inner.evict(&key).await?;
            exists = false;
        }
        Ok(Response::new(v1::WaitResponse {
            exists,
            waited_millis: started.elapsed().as_millis() as u64,
        }))
    }
}
