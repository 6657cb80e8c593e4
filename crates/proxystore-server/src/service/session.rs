//! The `Session` call: many small calls on one stream, answered by id as they finish (see
//! the proto).
//!
//! One task per session reads requests and runs them, at most [`MAX_IN_FLIGHT`] at a time; it
//! reads no more while that many run or while answers wait for the client to read them, so a
//! client that stops reading stops its session instead of filling server memory.
//!
//! Answers go out in batches: the task first takes every request that has already arrived,
//! then hands the transport every answer that is ready as one batch, which the transport
//! encodes into one frame and one write. Concurrent callers' calls (which arrive together,
//! often in one frame) are thus answered together: one write and one wake-up of the client
//! for many calls, where answering each call as it finished cost a write and a wake-up per
//! call (with 16 clients, most of the time went to those).
//!
//! What a session can hold is bounded: [`MAX_IN_FLIGHT`] calls, each with at most one
//! request's bytes or one answer of at most [`MAX_INLINE`] bytes, and one batch waiting for the
//! transport (answers up to [`BATCH_BYTES`], plus the one that crossed it). A client that reads
//! no answer for the idle timeout has its session ended with `DEADLINE_EXCEEDED`, which drops
//! all of that. A session on which no call ran for [`IDLE_END`] ends with OK, after every call
//! it read: the client opens another when it needs one.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, Stream, StreamExt};
use prost::Message;
use proxystore::connector::grpc::rpc_trace::{
    Side, call_span, record_call_status, store_method_path,
};
use proxystore::connector::grpc::session_error;
use proxystore_proto::v1;
use proxystore_proto::v1::session_request::Call;
use proxystore_proto::v1::session_response::Result as Answer;
use tonic::{Code, Status, Streaming};
use tracing::Instrument;

use super::{Inner, idle_status, invalid, request_status};

/// Calls a session runs at once.
pub(crate) const MAX_IN_FLIGHT: usize = 32;
/// A batch of answers takes no more answers once its answers hold this many bytes.
pub(crate) const BATCH_BYTES: usize = 256 << 10;
/// Largest object a session's get answers inline (larger ones are `omitted`: the client
/// fetches them with `Get`, in chunks): an object up to this size moves in one message, without
/// the set-up of a stream of its own. The transport keeps a send buffer the size of a stream's
/// largest answer for as long as the stream lives: this bounds what each session keeps.
pub(crate) const MAX_INLINE: u64 = 256 << 10;
/// Largest object a client should put on a session, as large as the largest answer a session
/// sends inline ([`MAX_INLINE`]). The transport keeps a receive buffer the size of a stream's
/// largest request for as long as the stream lives, as it keeps a send buffer the size of its
/// largest answer: bounded so, each costs a session at most this much. A put on a `Put` stream
/// of its own pays that stream's set-up (headers both ways and trailers), which was a third of
/// a 100 KiB put on loopback (about 220 us on a stream, 150 us on a session, 2026-12-07): not
/// negligible up to this size. The calls in flight on a session then hold at most what as many
/// inline answers hold.
pub(crate) const MAX_PUT: u64 = MAX_INLINE;
/// A session on which no call ran for this long ends (with OK; the client opens a new one
/// when it needs it): a server that is shut down by a router that does not call
/// `StoreService::stop_sessions` waits for its sessions no longer than this.
pub(crate) const IDLE_END: Duration = Duration::from_secs(2);

/// The answers of a session, as the transport sends them.
pub(crate) type SessionStream =
    Pin<Box<dyn Stream<Item = Result<v1::SessionResponse, Status>> + Send>>;

/// Serve the session whose requests are `requests`.
pub(super) fn serve(inner: Arc<Inner>, requests: Streaming<v1::SessionRequest>) -> SessionStream {
    // One batch waits for the transport while the task makes the next.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let abandoned = Arc::new(AtomicBool::new(false));
    let idle = inner.limits.idle;
    tokio::spawn(run(inner, requests, tx, abandoned.clone()));
    // A batch's answers are all ready at once: the transport encodes them together.
    let answers = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|batch| (futures::stream::iter(batch), rx))
    })
    .flatten();
    // The task ends without a last message when the client stopped reading: end the session
    // with an error, never with a clean end.
    let end = futures::stream::once(async move {
        (abandoned.load(Ordering::Acquire))
            .then(|| Err(idle_status("Session", idle.unwrap_or_default())))
    })
    .filter_map(futures::future::ready);
    Box::pin(answers.chain(end))
}

/// A batch of answers (or the session's end), handed to the transport at once.
type Batch = Vec<Result<v1::SessionResponse, Status>>;
type Tx = tokio::sync::mpsc::Sender<Batch>;

/// Send `item` to the client; false when the session is over (the client went away, or did
/// not read for the idle timeout, which `abandoned` then says).
async fn send(tx: &Tx, item: Batch, idle: Option<Duration>, abandoned: &AtomicBool) -> bool {
    let Some(idle) = idle else {
        return tx.send(item).await.is_ok();
    };
    match tx.send_timeout(item, idle).await {
        Ok(()) => true,
        Err(tokio::sync::mpsc::error::SendTimeoutError::Timeout(_)) => {
            tracing::debug!(
                ?idle,
                "session answers not read for the idle timeout; ended"
            );
            abandoned.store(true, Ordering::Release);
            false
        }
        Err(tokio::sync::mpsc::error::SendTimeoutError::Closed(_)) => false,
    }
}

async fn run(
    inner: Arc<Inner>,
    mut requests: Streaming<v1::SessionRequest>,
    tx: Tx,
    abandoned: Arc<AtomicBool>,
) {
    let idle = inner.limits.idle;
    let max_inline = MAX_INLINE.min(inner.limits.max_message as u64 / 2);
    let opened = v1::SessionResponse {
        id: 0,
        result: Some(Answer::Opened(v1::SessionOpened {
            max_inline_bytes: max_inline,
            max_message_bytes: inner.limits.max_message as u64,
            max_in_flight: MAX_IN_FLIGHT as u64,
            max_put_bytes: MAX_PUT.min(max_inline),
        })),
    };
    if !send(&tx, vec![Ok(opened)], idle, &abandoned).await {
        return;
    }
    let mut stopping = inner.stopping.subscribe();
    let mut reading = !*stopping.borrow_and_update();
    let mut running = FuturesUnordered::new();
    // The status the session ends with after its last answers (OK: a clean end).
    let mut end: Option<Status> = None;
    let quiet = tokio::time::sleep(IDLE_END);
    tokio::pin!(quiet);
    // What to do with the next request read: run it, or stop reading.
    let mut take = |next: Option<Result<v1::SessionRequest, Status>>,
                    running: &mut FuturesUnordered<_>,
                    reading: &mut bool| match next {
        Some(Ok(request)) => running.push(call(inner.clone(), request, max_inline)),
        Some(Err(s)) => {
            end = Some(request_status(s));
            *reading = false;
        }
        None => *reading = false,
    };
    // An answer the wait below got, to lead the next batch.
    let mut ready = None;
    loop {
        // A session kept busy still sees the server stop (the wait below sees it otherwise).
        if reading && !matches!(stopping.has_changed(), Ok(false)) {
            reading = false;
        }
        // The requests that have arrived, then the answers that are ready: one batch.
        while reading && running.len() < MAX_IN_FLIGHT {
            match requests.next().now_or_never() {
                Some(next) => take(next, &mut running, &mut reading),
                None => break,
            }
        }
        let mut batch = Vec::new();
        let mut bytes = 0;
        while bytes < BATCH_BYTES {
            let Some(answer) = ready
                .take()
                .or_else(|| running.next().now_or_never().flatten())
            else {
                break;
            };
            bytes += answer.encoded_len();
            batch.push(Ok(answer));
        }
        if !batch.is_empty() {
            if !send(&tx, batch, idle, &abandoned).await {
                return;
            }
            if running.is_empty() {
                quiet.as_mut().reset(tokio::time::Instant::now() + IDLE_END);
            }
            continue;
        }
        tokio::select! {
            biased;
            // With the requests and answers that came meanwhile, at the top.
            Some(answer) = running.next(), if !running.is_empty() => ready = Some(answer),
            _ = stopping.changed(), if reading => reading = false,
            () = &mut quiet, if reading && running.is_empty() => reading = false,
            next = requests.next(), if reading && running.len() < MAX_IN_FLIGHT => {
                take(next, &mut running, &mut reading);
            }
            else => break,
        }
    }
    if let Some(s) = end {
        let _ = send(&tx, vec![Err(s)], idle, &abandoned).await;
    }
}

/// Run one call of a session and make its answer: its result, or the status it would have
/// ended with on a stream of its own.
async fn call(
    inner: Arc<Inner>,
    request: v1::SessionRequest,
    max_inline: u64,
) -> v1::SessionResponse {
    let v1::SessionRequest {
        id,
        call,
        traceparent,
        tracestate,
    } = request;
    let method = match &call {
        Some(Call::Put(_)) => "Put",
        Some(Call::Get(_)) => "Get",
        Some(Call::Exists(_)) => "Exists",
        Some(Call::Evict(_)) => "Evict",
        None => "Session",
    };
    let span = call_span(Side::Server, store_method_path(method));
    if !span.is_disabled() {
        proxystore::trace::set_parent(&span, &traceparent, &tracestate);
    }
    let result = async {
        match call {
            Some(Call::Put(p)) => {
                let header = p
                    .header
                    .ok_or_else(|| invalid("a session's put needs a header"))?;
                inner.put_whole(header, p.data).await.map(Answer::Put)
            }
            Some(Call::Get(r)) => inner.get_inline(r, max_inline).await.map(Answer::Get),
            Some(Call::Exists(r)) => inner.exists_call(r).await.map(Answer::Exists),
            Some(Call::Evict(r)) => inner.evict_call(r).await.map(Answer::Evict),
            None => Err(invalid("a session request without a call")),
        }
    }
    .instrument(span.clone())
    .await;
    let result = match result {
        // An absent object, as the call on a stream of its own ends: NOT_FOUND.
        Ok(Answer::Get(g)) if !g.found => {
            record_call_status(&span, Side::Server, Code::NotFound, "not found");
            Answer::Get(g)
        }
        Ok(answer) => {
            record_call_status(&span, Side::Server, Code::Ok, "");
            answer
        }
        Err(s) => {
            record_call_status(&span, Side::Server, s.code(), s.message());
            Answer::Error(session_error(&s))
        }
    };
    v1::SessionResponse {
        id,
        result: Some(result),
    }
}
