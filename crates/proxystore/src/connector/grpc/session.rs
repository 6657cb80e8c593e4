//! Small calls on one long-lived `Session` stream per replica (the store service's `Session`
//! call): puts of objects that fit one message, gets answered inline, exists and evict.
//!
//! A call on a stream of its own pays the HTTP/2 stream set-up (headers both ways, trailers,
//! the transport's per-stream state) on top of its bytes; on a session it is one message each
//! way, matched by id, and the requests of concurrent callers go out in the same writes. The
//! session of a replica is opened by the first call that needs it and reopened by the first
//! call after it ended (the connection broke, the server shut down). A server that does not
//! have the call (UNIMPLEMENTED, an older server) is remembered, and its calls go on streams
//! of their own.
//!
//! Failures keep the meaning they have on a stream of their own: the server's answer is the
//! status the call would have ended with ([`super::session_status`]); a session that ends
//! with calls in flight fails them with its status (a broken connection is a temporary,
//! retryable error, as for a call of its own whose connection breaks).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use proxystore_proto::v1;
use proxystore_proto::v1::session_request::Call;
use proxystore_proto::v1::session_response::Result as Answer;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Code, Request, Status};
use tracing::Instrument;

use super::client::{Client, protocol_error, timeout_status};
use super::rpc_trace::{Side, call_span, record_call_status, store_method_path};
use super::status::session_status;
use crate::runtime;
use crate::trace;

/// Requests queued for the transport before callers wait for room.
const OUTBOUND: usize = 256;

/// A call's answer: `None` when the session ended without running it (see [`Session::call`]).
type Reply = tokio::sync::oneshot::Sender<Result<Option<Answer>, Status>>;

/// The session state of one replica: the open session, if any, and whether the replica has
/// the call at all.
#[derive(Default)]
pub(super) struct SessionSlot {
    current: Mutex<Option<Arc<Session>>>,
    /// Held while a session is being opened, so that concurrent first calls open one.
    opening: tokio::sync::Mutex<()>,
    /// The server answered UNIMPLEMENTED: its calls go on streams of their own.
    unsupported: AtomicBool,
    /// When the last open failed, and how: callers that waited for that open share its
    /// failure instead of each trying again in turn (a server that does not answer would
    /// otherwise cost each of them a whole timeout, one after the other).
    last_failure: Mutex<Option<(std::time::Instant, Status)>>,
}

impl SessionSlot {
    /// The open session, opening one on `client()` when there is none; `None` when the server
    /// does not have sessions.
    pub(super) async fn get(
        &self,
        client: impl FnOnce() -> Client,
        auth: Option<&MetadataValue<Ascii>>,
        timeout: Duration,
    ) -> Result<Option<Arc<Session>>, Status> {
        if let Some(s) = self.live() {
            return Ok(Some(s));
        }
        if self.unsupported.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let waiting_since = std::time::Instant::now();
        let _opening = self.opening.lock().await;
        // Opened by another caller while this one waited, or failed to.
        if let Some(s) = self.live() {
            return Ok(Some(s));
        }
        if let Some((at, status)) = lock(&self.last_failure).as_ref()
            && *at >= waiting_since
        {
            return Err(status.clone());
        }
        match Session::open(client(), auth, timeout).await {
            Ok(s) => {
                let s = Arc::new(s);
                *lock(&self.current) = Some(s.clone());
                Ok(Some(s))
            }
            Err(s) if s.code() == Code::Unimplemented => {
                tracing::debug!("grpc server without sessions: one stream per call");
                self.unsupported.store(true, Ordering::Relaxed);
                Ok(None)
            }
            Err(s) => {
                *lock(&self.last_failure) = Some((std::time::Instant::now(), s.clone()));
                Err(s)
            }
        }
    }

    /// The largest object the open session answers inline, if one is open.
    pub(super) fn inline_max(&self) -> Option<u64> {
        self.live().map(|s| s.limits.max_inline_bytes)
    }

    fn live(&self) -> Option<Arc<Session>> {
        lock(&self.current)
            .as_ref()
            .filter(|s| !s.shared.closed.load(Ordering::Acquire))
            .cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the session's reader and its callers share.
struct Shared {
    /// Calls sent and not answered yet, by id.
    pending: Mutex<HashMap<u64, Reply>>,
    /// Set (under `pending`'s lock) when the session ended: no call waits on it any more.
    closed: AtomicBool,
}

/// One open session: requests go to the transport through `tx`; a task reads the answers and
/// hands each to its caller.
pub(super) struct Session {
    tx: tokio::sync::mpsc::Sender<v1::SessionRequest>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    limits: v1::SessionOpened,
}

impl Session {
    /// Open a session on `client` and read its `opened` message.
    async fn open(
        mut client: Client,
        auth: Option<&MetadataValue<Ascii>>,
        timeout: Duration,
    ) -> Result<Session, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(OUTBOUND);
        let requests = futures::stream::unfold(rx, |mut rx| async move {
            let first = rx.recv().await?;
            // Callers woken by the same batch of answers queue their next calls now: let them
            // run first, so that their requests go out together (one frame, one write). Without
            // this the transport, woken by the first request, ran before them and sent each
            // request in a write of its own.
            tokio::task::yield_now().await;
            let mut batch = vec![first];
            while let Ok(r) = rx.try_recv() {
                batch.push(r);
            }
            Some((futures::stream::iter(batch), rx))
        })
        .flatten();
        let mut request = Request::new(requests);
        if let Some(a) = auth {
            request.metadata_mut().insert("authorization", a.clone());
        }
        let opening = async {
            let mut responses = client.session(request).await?.into_inner();
            match responses.message().await? {
                Some(v1::SessionResponse {
                    id: 0,
                    result: Some(Answer::Opened(limits)),
                }) => Ok((responses, limits)),
                Some(_) => Err(protocol_error("a session did not start with `opened`")),
                None => Err(Status::unavailable("the server ended the session at once")),
            }
        };
        let (responses, limits) = tokio::time::timeout(timeout, opening)
            .await
            .map_err(|_| timeout_status("session", timeout))??;
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        });
        // Beside the channel's connection task: on the runtime the session was opened from,
        // whose channel it uses (see `pool`).
        runtime::current_or_io().spawn(read_answers(responses, shared.clone()));
        Ok(Session {
            tx,
            shared,
            next_id: AtomicU64::new(1),
            limits,
        })
    }

    /// The session's limits, as the server sent them.
    pub(super) fn limits(&self) -> &v1::SessionOpened {
        &self.limits
    }

    /// Make `call` (named `method`, as in the service: `Put`, `Get`, ...) and wait for its
    /// answer, at most `timeout`. The call has a `grpc.client` span as a call of its own has,
    /// whose context travels in the request.
    ///
    /// `None` when the session ended cleanly (or had ended) before the server read the call:
    /// the server runs every call it read before it ends a session with OK, so the call did
    /// not run, and the caller makes it again.
    pub(super) async fn call(
        &self,
        method: &'static str,
        call: Call,
        timeout: Duration,
    ) -> Result<Option<Answer>, Status> {
        let span = call_span(Side::Client, store_method_path(method));
        let cx = if span.is_disabled() {
            None
        } else {
            trace::inject(&span)
        };
        let (traceparent, tracestate) = cx.map(|c| (c.traceparent, c.tracestate)).unzip();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = v1::SessionRequest {
            id,
            call: Some(call),
            traceparent: traceparent.unwrap_or_default(),
            tracestate: tracestate.unwrap_or_default(),
        };
        let result = self
            .send_and_wait(id, request, method, timeout)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(Some(Answer::Error(e))) => {
                record_call_status(&span, Side::Client, Code::from_i32(e.code), &e.message)
            }
            // An absent object, as the call on a stream of its own ends: NOT_FOUND.
            Ok(Some(Answer::Get(g))) if !g.found => {
                record_call_status(&span, Side::Client, Code::NotFound, "not found");
            }
            Ok(Some(_)) => record_call_status(&span, Side::Client, Code::Ok, ""),
            Ok(None) => {}
            Err(s) => record_call_status(&span, Side::Client, s.code(), s.message()),
        }
        match result? {
            Some(Answer::Error(e)) => Err(session_status(e)),
            answer => Ok(answer),
        }
    }

    async fn send_and_wait(
        &self,
        id: u64,
        request: v1::SessionRequest,
        method: &'static str,
        timeout: Duration,
    ) -> Result<Option<Answer>, Status> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        {
            let mut pending = lock(&self.shared.pending);
            if self.shared.closed.load(Ordering::Acquire) {
                return Ok(None);
            }
            pending.insert(id, reply);
        }
        // Removes the call from `pending` however this ends (answered, timed out, cancelled).
        let _forget = Forget {
            shared: &self.shared,
            id,
        };
        let exchange = async {
            if self.tx.send(request).await.is_err() {
                // The transport dropped the request stream: nothing more was read.
                return Ok(None);
            }
            answer.await.map_err(|_| ended())?
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(timeout_status(&method.to_ascii_lowercase(), timeout)),
        }
    }
}

/// The status of a call whose answer was lost with its session's reader.
fn ended() -> Status {
    Status::unavailable("the session ended before the call was answered")
}

struct Forget<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.shared.pending).remove(&self.id);
    }
}

/// Hand each answer to its caller until the session ends, then fail the calls still waiting
/// with the session's end.
async fn read_answers(mut responses: tonic::Streaming<v1::SessionResponse>, shared: Arc<Shared>) {
    let end = loop {
        match responses.message().await {
            Ok(Some(v1::SessionResponse { id, result })) => {
                let Some(reply) = lock(&shared.pending).remove(&id) else {
                    // A call that gave up (timed out, cancelled) meanwhile.
                    continue;
                };
                let _ = reply.send(
                    result
                        .map(Some)
                        .ok_or_else(|| protocol_error("a session answer without a result")),
                );
            }
            // A clean end: the calls still waiting were not run.
            Ok(None) => break None,
            Err(s) => break Some(s),
        }
    };
    tracing::debug!(status = ?end, "grpc session ended");
    let waiting: Vec<Reply> = {
        let mut pending = lock(&shared.pending);
        shared.closed.store(true, Ordering::Release);
        pending.drain().map(|(_, r)| r).collect()
    };
    for reply in waiting {
        let _ = reply.send(end.clone().map_or(Ok(None), Err));
    }
}
