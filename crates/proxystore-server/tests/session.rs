//! The `Session` call: small calls on one long-lived stream, matched by id.
//!
//! Driven raw (the protocol as the proto documents it: `opened` first, answers by id, errors
//! as answers that leave the session open, hostile requests) and through the connector (many
//! concurrent calls on one session, a session that ends and is reopened, shutdown not held up
//! by idle sessions, a server without sessions, which calls go where).

// Helpers outside #[test] functions fail tests the way tests do: by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use proxystore::conformance::payload;
use proxystore::connector::grpc::{GrpcConfig, GrpcConnector, session_status};
use proxystore::{Connector, DigestAlgorithm, Error, Key};
use proxystore_proto::v1;
use proxystore_proto::v1::session_request::Call;
use proxystore_proto::v1::session_response::Result as Answer;
use proxystore_proto::v1::store_service_client::StoreServiceClient;
use proxystore_server::{ServerConfig, StoreService, spawn, store_service};
use tonic::Code;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::transport::{Channel, Endpoint};

async fn raw(url: String) -> StoreServiceClient<Channel> {
    let ch = Endpoint::from_shared(url).unwrap().connect().await.unwrap();
    StoreServiceClient::new(ch)
}

fn request(id: u64, call: Option<Call>) -> v1::SessionRequest {
    v1::SessionRequest {
        id,
        call,
        ..Default::default()
    }
}

fn put(key: &str, data: &'static [u8]) -> Option<Call> {
    Some(Call::Put(v1::SessionPut {
        header: Some(v1::PutHeader {
            key: key.into(),
            ..Default::default()
        }),
        data: Bytes::from_static(data),
    }))
}

fn get(key: &str) -> Option<Call> {
    Some(Call::Get(v1::GetRequest {
        key: key.into(),
        range: None,
    }))
}

/// The protocol as the proto documents it, with hostile requests among good ones: each bad
/// call is an error answer with the status it would have had alone, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_answers_each_call_by_id_and_survives_bad_ones() {
    let server = spawn(ServerConfig::default()).unwrap();
    let c = server.connector().unwrap();
    let big = c.put(payload(300 << 10, 7)).await.unwrap();
    let mut client = raw(server.url()).await;
    let wrong_digest = v1::PutHeader {
        key: "checked".into(),
        digest: Some(v1::Digest {
            algorithm: DigestAlgorithm::Xxh3.as_str().into(),
            value: Bytes::from_static(&[0; 8]),
        }),
        ..Default::default()
    };
    let requests = vec![
        request(1, put("a", b"first object")),
        request(2, get("absent")),
        request(3, None),
        request(
            4,
            Some(Call::Put(v1::SessionPut {
                header: Some(wrong_digest),
                data: Bytes::from_static(b"not what the digest says"),
            })),
        ),
        request(5, get(big.as_str())),
        request(6, get(&"k".repeat(5000))),
        request(
            7,
            Some(Call::Put(v1::SessionPut {
                header: Some(v1::PutHeader {
                    key: "sized".into(),
                    size: Some(3),
                    ..Default::default()
                }),
                data: Bytes::from_static(b"four"),
            })),
        ),
        request(
            8,
            Some(Call::Put(v1::SessionPut {
                header: None,
                data: Bytes::new(),
            })),
        ),
    ];
    let mut answers = client
        .session(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let first = answers.message().await.unwrap().unwrap();
    let Some(Answer::Opened(limits)) = first.result else {
        panic!("the first answer is not `opened`: {first:?}");
    };
    assert_eq!(first.id, 0);
    assert!(limits.max_inline_bytes > 0 && limits.max_inline_bytes < 300 << 10);
    assert!(limits.max_put_bytes > 0 && limits.max_put_bytes <= limits.max_inline_bytes);
    assert!(limits.max_in_flight > 0);
    let mut by_id = HashMap::new();
    while let Some(a) = answers.message().await.unwrap() {
        assert!(
            by_id.insert(a.id, a.result.unwrap()).is_none(),
            "two answers to {}",
            a.id
        );
    }
    assert_eq!(by_id.len(), 8, "{by_id:?}");
    let status = |id: u64| match by_id[&id].clone() {
        Answer::Error(e) => session_status(e),
        other => panic!("call {id} did not fail: {other:?}"),
    };
    assert!(matches!(&by_id[&1], Answer::Put(p) if p.key == "a" && p.size == 12));
    assert!(matches!(&by_id[&2], Answer::Get(g) if !g.found));
    assert_eq!(status(3).code(), Code::InvalidArgument);
    let mismatch = Error::from(status(4));
    assert!(
        matches!(mismatch, Error::DigestMismatch { .. }),
        "{mismatch:?}"
    );
    // Larger than a session answers inline: omitted, with its size.
    assert!(
        matches!(&by_id[&5], Answer::Get(g) if g.found && g.omitted && g.size == 300 << 10 && g.data.is_empty())
    );
    assert!(matches!(Error::from(status(6)), Error::InvalidKey { .. }));
    assert_eq!(status(7).code(), Code::InvalidArgument);
    assert_eq!(status(8).code(), Code::InvalidArgument);
    // What the good calls did is there; what the bad ones did is not.
    assert_eq!(
        c.get(&Key::from("a")).await.unwrap().as_deref(),
        Some(&b"first object"[..])
    );
    assert!(!c.exists(&Key::from("checked")).await.unwrap());
    assert!(!c.exists(&Key::from("sized")).await.unwrap());
}

/// A client that ends its requests ends its session cleanly; a request that does not decode
/// ends the session with INVALID_ARGUMENT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_does_not_decode_ends_the_session() {
    let server = spawn(ServerConfig::default()).unwrap();
    let mut client = raw(server.url()).await;
    // A client that ends its requests ends the session cleanly, after the answers.
    let mut answers = client
        .session(futures::stream::iter([request(1, get("x"))]))
        .await
        .unwrap()
        .into_inner();
    answers.message().await.unwrap().unwrap();
    let a = answers.message().await.unwrap().unwrap();
    assert_eq!(a.id, 1);
    assert!(answers.message().await.unwrap().is_none());

    // Raw bytes: a gRPC frame whose payload is not protobuf.
    let ch = Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/proxystore_rs.v1.StoreService/Session");
    let frames = futures::stream::iter([Bytes::from_static(&[0x0a, 0xff, 0xff, 0xff])]);
    let result = grpc
        .streaming(tonic::Request::new(frames), path, RawCodec)
        .await;
    let status = match result {
        Err(s) => s,
        Ok(resp) => {
            let mut answers = resp.into_inner();
            loop {
                match answers.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => {
                        panic!("the session ended cleanly after a request that does not decode")
                    }
                    Err(s) => break s,
                }
            }
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

/// Bytes in, bytes out: lets a test send what no generated client would.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Many concurrent callers of one connector share its session, each getting its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_on_one_session_get_their_own_answers() {
    let server = spawn(ServerConfig::default()).unwrap();
    let c = std::sync::Arc::new(server.connector().unwrap());
    let calls = (0..64u32).map(|i| {
        let c = c.clone();
        async move {
            let data = payload(100 + i as usize * 37, u64::from(i));
            let key = c.put(data.clone()).await.unwrap();
            assert!(c.exists(&key).await.unwrap());
            assert_eq!(c.get(&key).await.unwrap(), Some(data));
            c.evict(&key).await.unwrap();
            assert_eq!(c.get(&key).await.unwrap(), None);
        }
    });
    futures::future::join_all(calls.map(tokio::spawn))
        .await
        .into_iter()
        .for_each(|r| r.unwrap());
}

/// A session the server ends (idle for a while) is reopened by the next call, which runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_ends_and_the_next_call_opens_another() {
    let server = spawn(ServerConfig::default()).unwrap();
    let c = server.connector().unwrap();
    let key = c.put(Bytes::from_static(b"before")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let again = c.put(Bytes::from_static(b"after")).await.unwrap();
    assert_eq!(c.get(&key).await.unwrap().as_deref(), Some(&b"before"[..]));
    assert_eq!(c.get(&again).await.unwrap().as_deref(), Some(&b"after"[..]));
    let stat = c.stat().await.unwrap();
    assert_eq!(stat.object_count, 2, "each put stored once");
}

/// Open sessions do not hold a graceful shutdown up for its grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_not_held_up_by_open_sessions() {
    let server = spawn(ServerConfig {
        shutdown_grace: Duration::from_secs(60),
        ..ServerConfig::default()
    })
    .unwrap();
    let c = server.connector().unwrap();
    let key = c.put(Bytes::from_static(b"x")).await.unwrap();
    assert!(c.exists(&key).await.unwrap());
    let started = Instant::now();
    server.shutdown().await.unwrap();
    // Well before the 2 s after which the server ends idle sessions anyway.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "shutdown took {:?}",
        started.elapsed()
    );
    // The connector is still alive; its session ended with the server.
    let e = c.exists(&key).await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
}

/// The store service behind a router that records the method of every stream opened and,
/// without `sessions`, answers UNIMPLEMENTED to `Session`, as a server from before the call
/// does.
#[derive(Clone)]
struct Recorded {
    inner: StoreService,
    sessions: bool,
    paths: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl NamedService for Recorded {
    const NAME: &'static str = proxystore_proto::STORE_SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for Recorded
where
    StoreService:
        Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    <StoreService as Service<http::Request<B>>>::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        self.paths.lock().unwrap().push(path.clone());
        if path == "Session" && !self.sessions {
            let resp = tonic::Status::unimplemented("no sessions here").into_http();
            return Box::pin(async move { Ok(resp) });
        }
        Box::pin(self.inner.call(req))
    }
}

/// Small calls go on one session; without sessions, each on a stream of its own. Either way
/// they do the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_calls_share_a_session_or_go_call_by_call_without() {
    for sessions in [true, false] {
        let store = store_service(&ServerConfig::default()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let paths = std::sync::Arc::default();
        let recorded = Recorded {
            inner: store.clone(),
            sessions,
            paths: std::sync::Arc::clone(&paths),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(recorded)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async move {
                        let _ = stopped.await;
                        // What a router that mounts the service does on shutdown.
                        store.stop_sessions();
                    },
                ),
        );
        let c = GrpcConnector::with_config(GrpcConfig::new(url)).unwrap();
        for i in 0..3u64 {
            let key = c.put(payload(100, i)).await.unwrap();
            assert!(c.exists(&key).await.unwrap());
            assert_eq!(c.get(&key).await.unwrap(), Some(payload(100, i)));
            c.evict(&key).await.unwrap();
            assert!(!c.exists(&key).await.unwrap());
        }
        // Up to the session's inline limit (256 KiB), puts and gets of larger objects still go
        // on the session.
        let mid = c.put(payload(200 << 10, 11)).await.unwrap();
        assert_eq!(c.get(&mid).await.unwrap(), Some(payload(200 << 10, 11)));
        // Too large for a session: a stream of its own either way. With sessions, a get asks
        // the session first, twice, then goes straight to streams until an object is small
        // again.
        let big = c.put(payload(300 << 10, 9)).await.unwrap();
        let small = c.put(payload(100, 10)).await.unwrap();
        for _ in 0..4 {
            assert_eq!(c.get(&big).await.unwrap(), Some(payload(300 << 10, 9)));
        }
        assert_eq!(c.get(&small).await.unwrap(), Some(payload(100, 10)));
        assert_eq!(c.get(&small).await.unwrap(), Some(payload(100, 10)));
        let paths = paths.lock().unwrap().clone();
        let count = |m: &str| paths.iter().filter(|p| *p == m).count();
        if sessions {
            assert_eq!(count("Session"), 1, "{paths:?}");
            // The big put; 4 big gets and the first small one after them.
            assert_eq!((count("Put"), count("Get")), (1, 5), "{paths:?}");
            assert_eq!(count("Exists") + count("Evict"), 0, "{paths:?}");
        } else {
            // Asked once, then never again.
            assert_eq!(count("Session"), 1, "{paths:?}");
            assert_eq!((count("Put"), count("Get")), (6, 10), "{paths:?}");
            assert_eq!((count("Exists"), count("Evict")), (6, 3), "{paths:?}");
        }
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(1), server)
            .await
            .expect("shutdown held up")
            .unwrap()
            .unwrap();
    }
}

/// A client that sends calls and reads no answer has its session ended after the idle
/// timeout: what the session held goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_answers_end_the_session_after_the_idle_timeout() {
    let idle = Duration::from_millis(300);
    let server = spawn(ServerConfig::default().idle_timeout(Some(idle))).unwrap();
    let c = server.connector().unwrap();
    let key = c.put(payload(60 << 10, 3)).await.unwrap();
    // The smallest HTTP/2 windows, so that unread answers really stall the server.
    let ch = Endpoint::from_shared(server.url())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut client = StoreServiceClient::new(ch);
    let requests = (1..=400u64).map(move |id| request(id, get(key.as_str())));
    let mut answers = client
        .session(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(idle * 5).await;
    let mut read = 0;
    let status = loop {
        match answers.message().await {
            Ok(Some(_)) => read += 1,
            Ok(None) => panic!("the session ended cleanly after {read} answers"),
            Err(s) => break s,
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(read < 400, "{read} answers");
    // The connector's own session is unaffected.
    assert!(c.exists(&Key::from("absent")).await.is_ok());
    let _ = answers.next().await;
}
