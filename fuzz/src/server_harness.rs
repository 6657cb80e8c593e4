//! The gRPC store service as it receives requests: the bytes of a request body (gRPC
//! length-prefixed frames of protobuf messages) go to the real tonic service
//! (`proxystore_server::store_service`, with its token check and limits) in-process, called as
//! a tower service on a current-thread runtime, and the response body is drained.
//!
//! Input: the first byte picks the call (bits 0-2: Put, Get, Exists, Evict, Stat, PutBatch,
//! GetBatch, EvictBatch), the token (bits 3-4: right, right, none, wrong) and how the body is
//! delivered (bits 5-7: 0 in one piece, k in pieces of 2^(k-1) bytes, so frames split across
//! reads); the rest is the request body.
//!
//! Checks besides "no panic": every response carries a gRPC status; a call without the right
//! token is UNAUTHENTICATED; after a Put or PutBatch no upload bytes stay reserved and the
//! total limit holds; an acknowledged Put is readable with the size it was acknowledged with.
//! (The fuzz target also bounds the largest single allocation a call makes.)
//!
//! The store starts each input with the same two objects ([`SMALL_KEY`], [`LARGE_KEY`]); after
//! a call that may change it (put or evict), the service is built again, so every input sees
//! the same store.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::{Body as _, Frame};
use prost::Message;
use proxystore::DigestAlgorithm;
use proxystore_proto::v1;
use proxystore_server::{ServerConfig, StoreService, store_service};
use tonic::codegen::{Service, http};

/// The token the fuzzed service requires.
pub const TOKEN: &str = "fuzz-token";
/// Largest object the fuzzed service accepts.
pub const MAX_OBJECT: u64 = 512 << 10;
/// Most bytes the fuzzed service stores at once.
pub const MAX_TOTAL: u64 = 1 << 20;
/// Largest gRPC message the fuzzed service decodes or encodes.
pub const MAX_MESSAGE: usize = 256 << 10;
/// Chunk size of the fuzzed service's downloads.
pub const CHUNK: usize = 16 << 10;
/// The largest single allocation a call may make: twice the largest of the limits above (a
/// buffer that grows by doubling up to a limit), plus slack.
pub const MAX_ALLOCATION: usize = 2 * MAX_MESSAGE + 2 * MAX_OBJECT as usize + (64 << 10);

/// Key of the small object in the store at the start of every input (13 bytes, XXH3 digest).
pub const SMALL_KEY: &str = "fixture-small";
/// Key of the large object (40 KiB: three download chunks, BLAKE3 digest).
pub const LARGE_KEY: &str = "fixture-large";

/// The calls, in the order of the first byte's low bits.
pub const METHODS: [&str; 8] = [
    "Put",
    "Get",
    "Exists",
    "Evict",
    "Stat",
    "PutBatch",
    "GetBatch",
    "EvictBatch",
];

/// Which credentials a request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `authorization: Bearer <TOKEN>`.
    Right,
    /// No `authorization` header.
    Missing,
    /// A bearer token that is not [`TOKEN`].
    Wrong,
}

/// What a call answered.
#[derive(Debug)]
pub struct Outcome {
    /// The gRPC status code.
    pub code: i32,
    /// The response messages (gRPC frames removed).
    pub messages: Vec<Bytes>,
}

/// The fuzz target: never panics on any input, and checks the invariants in the module docs.
pub fn grpc_messages(data: &[u8]) {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(control & 7)];
    let auth = match (control >> 3) & 3 {
        0 | 1 => Auth::Right,
        2 => Auth::Missing,
        _ => Auth::Wrong,
    };
    let piece = match control >> 5 {
        0 => usize::MAX,
        k => 1 << (k - 1),
    };
    let mut state = state();
    let outcome = state.call(method, auth, body, piece);
    if auth != Auth::Right {
        assert_eq!(outcome.code, 16, "{method} without the token: {outcome:?}");
        return;
    }
    if matches!(method, "Put" | "PutBatch") {
        let stat = state.call_message("Stat", &v1::StatRequest {});
        let stat = decode::<v1::StatResponse>(&stat);
        assert_eq!(stat.bytes_in_flight, 0, "reservation left after {method}");
        assert!(
            stat.bytes_used <= MAX_TOTAL,
            "total limit exceeded: {stat:?}"
        );
        // (An object put with a time to live may be gone already.)
        if method == "Put" && outcome.code == 0 && put_ttl(body) == Some(0) {
            let put = decode::<v1::PutResponse>(&outcome);
            let exists = state.call_message(
                "Exists",
                &v1::ExistsRequest {
                    key: put.key.clone(),
                },
            );
            let exists = decode::<v1::ExistsResponse>(&exists);
            assert!(
                exists.exists && exists.size == put.size,
                "{put:?} then {exists:?}"
            );
        }
    }
    if matches!(method, "Put" | "Evict" | "PutBatch" | "EvictBatch") {
        state.service = None;
    }
}

/// The time to live of a Put request body's header.
fn put_ttl(body: &[u8]) -> Option<u64> {
    let len = u32::from_be_bytes(body.get(1..5)?.try_into().ok()?) as usize;
    let header = v1::PutRequest::decode(body.get(5..5 + len)?).ok()?;
    match header.msg? {
        v1::put_request::Msg::Header(h) => Some(h.ttl_millis),
        v1::put_request::Msg::Chunk(_) | v1::put_request::Msg::Finish(_) => None,
    }
}

/// A valid request body: one gRPC frame per message.
pub fn frames(messages: &[&dyn MessageBytes]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        let payload = m.to_bytes();
        out.push(0);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
    }
    out
}

/// A protobuf message as bytes (object-safe, for [`frames`]).
pub trait MessageBytes {
    /// The encoded message.
    fn to_bytes(&self) -> Vec<u8>;
}

impl<M: Message> MessageBytes for M {
    fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

/// A Put header message.
pub fn put_header(header: v1::PutHeader) -> v1::PutRequest {
    v1::PutRequest {
        msg: Some(v1::put_request::Msg::Header(header)),
    }
}

/// A Put chunk message.
pub fn put_chunk(data: &[u8]) -> v1::PutRequest {
    v1::PutRequest {
        msg: Some(v1::put_request::Msg::Chunk(Bytes::copy_from_slice(data))),
    }
}

/// The Put message that ends an object.
pub fn put_finish() -> v1::PutRequest {
    v1::PutRequest {
        msg: Some(v1::put_request::Msg::Finish(v1::PutFinish {})),
    }
}

/// The proto form of `algorithm`'s digest of `data`.
pub fn digest(algorithm: DigestAlgorithm, data: &[u8]) -> Option<v1::Digest> {
    algorithm.digest(data).map(|d| v1::Digest {
        algorithm: d.algorithm().as_str().to_owned(),
        value: Bytes::from(d.to_bytes()),
    })
}

/// The contents of [`SMALL_KEY`].
pub fn small_object() -> &'static [u8] {
    b"small fixture"
}

/// The contents of [`LARGE_KEY`].
pub fn large_object() -> Vec<u8> {
    (0..40u32 << 10).map(|i| (i % 251) as u8).collect()
}

/// Call `method` with `body` as `auth` allows, on the shared fuzzing service, and return its
/// status and messages (for the replay tests).
pub fn call(method: &str, auth: Auth, body: &[u8]) -> Outcome {
    let mut state = state();
    let outcome = state.call(method, auth, body, usize::MAX);
    state.service = None;
    outcome
}

struct State {
    runtime: tokio::runtime::Runtime,
    service: Option<StoreService>,
}

fn state() -> std::sync::MutexGuard<'static, State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    let state = STATE.get_or_init(|| {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => unreachable!("a current-thread runtime always builds: {e}"),
        };
        Mutex::new(State {
            runtime,
            service: None,
        })
    });
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    fn service(&mut self) -> StoreService {
        if let Some(s) = &self.service {
            return s.clone();
        }
        let mut config = ServerConfig::default()
            .max_object_bytes(MAX_OBJECT)
            .max_total_bytes(MAX_TOTAL)
            .token(TOKEN);
        config.max_message_bytes = MAX_MESSAGE;
        config.chunk_size = CHUNK;
        let built = self.runtime.block_on(async {
            let service = store_service(&config).await;
            // Calls on memory never wait, so this is where the scheduler gets to run spawned
            // tasks: the new service's sweeper, and the end of the one dropped before.
            tokio::task::yield_now().await;
            service
        });
        let service = match built {
            Ok(s) => s,
            Err(e) => unreachable!("the fuzzing service builds: {e}"),
        };
        self.service = Some(service.clone());
        for fixture in fixtures() {
            let outcome = self.call("Put", Auth::Right, fixture, usize::MAX);
            assert_eq!(outcome.code, 0, "fixture put: {outcome:?}");
        }
        service
    }

    fn call_message(&mut self, method: &str, message: &dyn MessageBytes) -> Outcome {
        let outcome = self.call(method, Auth::Right, &frames(&[message]), usize::MAX);
        assert_eq!(outcome.code, 0, "{method}: {outcome:?}");
        outcome
    }

    fn call(&mut self, method: &str, auth: Auth, body: &[u8], piece: usize) -> Outcome {
        let mut service = self.service();
        let mut request = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!(
                "http://fuzz/proxystore_rs.v1.StoreService/{method}"
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        match auth {
            Auth::Right => request = request.header("authorization", format!("Bearer {TOKEN}")),
            Auth::Missing => {}
            Auth::Wrong => request = request.header("authorization", "Bearer fuzz-tokem"),
        }
        let pieces = body
            .chunks(piece.max(1))
            .map(Bytes::copy_from_slice)
            .collect();
        let request = match request.body(Pieces(pieces)) {
            Ok(r) => r,
            Err(e) => unreachable!("a fixed request builds: {e}"),
        };
        self.runtime.block_on(async move {
            let response = match service.call(request).await {
                Ok(r) => r,
                Err(e) => match e {},
            };
            let (parts, mut body) = response.into_parts();
            let mut code = status(&parts.headers);
            let mut data = BytesMut::new();
            while let Some(frame) =
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            {
                let frame = match frame {
                    Ok(f) => f,
                    // A status raised while streaming ends the body the same way.
                    Err(status) => {
                        code = Some(status.code() as i32);
                        break;
                    }
                };
                match frame.into_data() {
                    Ok(d) => data.put(d),
                    Err(frame) => {
                        if let Some(t) = frame.trailers_ref() {
                            code = code.or(status(t));
                        }
                    }
                }
            }
            let code = match code {
                Some(c) if (0..=16).contains(&c) => c,
                other => unreachable!("{method}: response without a gRPC status ({other:?})"),
            };
            Outcome {
                code,
                messages: unframe(data.freeze()),
            }
        })
    }
}

/// The two fixture objects as Put request bodies.
fn fixtures() -> &'static [Vec<u8>; 2] {
    static FIXTURES: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let small = small_object();
        let large = large_object();
        let header = |key: &str, data: &[u8], alg| {
            put_header(v1::PutHeader {
                key: key.into(),
                size: Some(data.len() as u64),
                digest: digest(alg, data),
                ..Default::default()
            })
        };
        let small_put = frames(&[
            &header(SMALL_KEY, small, DigestAlgorithm::Xxh3),
            &put_chunk(small),
        ]);
        let mut large_put: Vec<&dyn MessageBytes> = Vec::new();
        let large_header = header(LARGE_KEY, &large, DigestAlgorithm::Blake3);
        large_put.push(&large_header);
        let chunks: Vec<v1::PutRequest> = large.chunks(CHUNK).map(put_chunk).collect();
        large_put.extend(chunks.iter().map(|c| c as &dyn MessageBytes));
        [small_put, frames(&large_put)]
    })
}

fn status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// The messages of a response body (which the service itself framed, so well formed).
fn unframe(mut data: Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    while data.len() >= 5 {
        data.advance(1);
        let len = data.get_u32() as usize;
        let len = len.min(data.len());
        out.push(data.split_to(len));
    }
    out
}

/// The single message of a unary response.
pub fn decode<M: Message + Default>(outcome: &Outcome) -> M {
    let [m] = outcome.messages.as_slice() else {
        unreachable!("one message expected: {outcome:?}");
    };
    match M::decode(m.clone()) {
        Ok(m) => m,
        Err(e) => unreachable!("the service's own message decodes: {e}"),
    }
}

/// A request body delivered in pieces.
struct Pieces(VecDeque<Bytes>);

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}
