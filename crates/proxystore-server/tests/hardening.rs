//! What a careless or hostile client cannot do to the store service: commit part of an object
//! by cutting its stream off, pin reservations or objects by stalling, be refused a
//! replacement that fits, lose expiry times across a restart, receive a batch answer larger
//! than the common 4 MiB limit, or get status codes the proto does not list.
//!
//! The cut-off cases are driven with raw HTTP/2 frames (RST_STREAM with CANCEL and NO_ERROR,
//! which hyper reports to the service as a clean end of the request) and through tonic.

// Helpers outside #[test] functions fail tests the way tests do: by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use prost::Message;
use proxystore::conformance::payload;
use proxystore::connector::grpc::{GrpcConfig, GrpcConnector, UploadOptions};
use proxystore::{Connector, DigestAlgorithm, Error, Key};
use proxystore_proto::v1;
use proxystore_proto::v1::store_service_client::StoreServiceClient;
use proxystore_server::{RunningServer, ServerConfig, spawn};
use tonic::Code;
use tonic::codegen::http;
use tonic::transport::{Channel, Endpoint};

const DEADLINE: Duration = Duration::from_secs(15);

/// Wait (up to [`DEADLINE`]) until `cond` holds, polling.
async fn until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn raw(server: &RunningServer) -> StoreServiceClient<Channel> {
    let ch = Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    StoreServiceClient::new(ch)
}

fn header(key: &str, size: Option<u64>) -> v1::PutRequest {
    v1::PutRequest {
        msg: Some(v1::put_request::Msg::Header(v1::PutHeader {
            key: key.to_owned(),
            size,
            ..Default::default()
        })),
    }
}

fn chunk(data: Bytes) -> v1::PutRequest {
    v1::PutRequest {
        msg: Some(v1::put_request::Msg::Chunk(data)),
    }
}

fn finish() -> v1::PutRequest {
    v1::PutRequest {
        msg: Some(v1::put_request::Msg::Finish(v1::PutFinish {})),
    }
}

/// A gRPC length-prefixed message.
fn frame(m: &impl Message) -> Bytes {
    let body = m.encode_to_vec();
    let mut b = BytesMut::with_capacity(5 + body.len());
    b.put_u8(0);
    b.put_u32(body.len() as u32);
    b.put_slice(&body);
    b.freeze()
}

/// A raw HTTP/2 client connection to the server.
async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    client.ready().await.unwrap()
}

fn grpc_request(addr: SocketAddr, method: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{addr}/proxystore_rs.v1.StoreService/{method}"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// The gRPC status of a raw HTTP/2 answer (trailers-only or in the trailers).
async fn grpc_status(resp: h2::client::ResponseFuture) -> (i32, String) {
    let resp = resp.await.unwrap();
    let read = |h: &http::HeaderMap| {
        h.get("grpc-status").map(|v| {
            let msg = h
                .get("grpc-message")
                .map(|m| m.to_str().unwrap_or_default().to_owned())
                .unwrap_or_default();
            (v.to_str().unwrap().parse::<i32>().unwrap(), msg)
        })
    };
    if let Some(s) = read(resp.headers()) {
        return s;
    }
    let mut body = resp.into_body();
    while let Some(d) = body.data().await {
        let d = d.unwrap();
        let _ = body.flow_control().release_capacity(d.len());
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    read(&trailers).expect("grpc-status in trailers")
}

async fn stat(c: &GrpcConnector) -> proxystore::connector::grpc::ServerStat {
    c.stat().await.unwrap()
}

async fn memory_and_file() -> Vec<(String, RunningServer, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    vec![
        (
            "memory".into(),
            spawn(ServerConfig::default()).unwrap(),
            None,
        ),
        (
            "file".into(),
            spawn(ServerConfig::default().file(dir.path())).unwrap(),
            Some(dir),
        ),
    ]
}

/// Finding 1: a stream reset part-way (RST_STREAM CANCEL or NO_ERROR, which hyper hands the
/// service as a clean end) stores nothing, on both backends; a clean end without `PutFinish`
/// is refused; with it the object is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_reset_part_way_stores_nothing() {
    for (backend, server, dir) in memory_and_file().await {
        let c = server.connector().unwrap();
        for reason in [h2::Reason::CANCEL, h2::Reason::NO_ERROR] {
            let key = format!("cut-{}", u32::from(reason));
            let mut client = h2_client(server.local_addr()).await;
            let (resp, mut stream) = client
                .send_request(grpc_request(server.local_addr(), "Put"), false)
                .unwrap();
            stream.send_data(frame(&header(&key, None)), false).unwrap();
            stream
                .send_data(frame(&chunk(payload(300_000, 1))), false)
                .unwrap();
            until("the server holds the first bytes", || async {
                stat(&c).await.bytes_in_flight >= 300_000
            })
            .await;
            stream.send_reset(reason);
            drop(resp);
            until("the upload is dropped", || async {
                stat(&c).await.bytes_in_flight == 0
            })
            .await;
            assert!(
                !c.exists(&Key::from(key.as_str())).await.unwrap(),
                "{backend}: a put reset with {reason:?} was stored"
            );
        }

        // A clean end of stream without PutFinish (and without a declared size) is refused.
        let mut client = h2_client(server.local_addr()).await;
        let (resp, mut stream) = client
            .send_request(grpc_request(server.local_addr(), "Put"), false)
            .unwrap();
        stream
            .send_data(frame(&header("ended", None)), false)
            .unwrap();
        stream
            .send_data(frame(&chunk(payload(1000, 2))), true)
            .unwrap();
        let (code, message) = grpc_status(resp).await;
        assert_eq!(code, Code::InvalidArgument as i32, "{backend}: {message}");
        assert!(message.contains("PutFinish"), "{message}");
        assert!(!c.exists(&Key::from("ended")).await.unwrap());

        // With PutFinish it is stored.
        let reqs = [header("finished", None), chunk(payload(1000, 3)), finish()];
        let mut r = raw(&server).await;
        r.put(futures::stream::iter(reqs)).await.unwrap();
        assert_eq!(
            c.get(&Key::from("finished")).await.unwrap(),
            Some(payload(1000, 3))
        );
        // Nothing may follow PutFinish.
        let reqs = [header("after", None), finish(), chunk(payload(10, 4))];
        let e = r.put(futures::stream::iter(reqs)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let s = stat(&c).await;
        assert_eq!(
            (s.object_count, s.bytes_in_flight),
            (1, 0),
            "{backend}: {s:?}"
        );
        if let Some(dir) = dir {
            assert_eq!(
                entries(dir.path()),
                vec!["finished".to_owned()],
                "nothing else left in the directory"
            );
        }
    }
}

/// Finding 1 through tonic and the connector: a client whose source stalls and times out
/// (what `proxystore put --timeout 2s` does with a slow pipe) cancels its call; nothing is
/// stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_that_times_out_on_its_source_stores_nothing() {
    for (backend, server, _dir) in memory_and_file().await {
        let c = server.connector().unwrap();
        let impatient = GrpcConnector::with_config(
            GrpcConfig::new(server.url()).timeout(Duration::from_millis(500)),
        )
        .unwrap();
        let source =
            futures::stream::iter([Ok(payload(2 << 20, 1))]).chain(futures::stream::pending());
        let e = impatient
            .put_stream(
                source,
                UploadOptions {
                    key: Some(Key::from("partial")),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{backend}: {e:?}");
        until("the upload is dropped", || async {
            stat(&c).await.bytes_in_flight == 0
        })
        .await;
        assert!(!c.exists(&Key::from("partial")).await.unwrap(), "{backend}");

        // The same through tonic: a task holding the call aborted part-way.
        let mut r = raw(&server).await;
        let reqs = futures::stream::iter([header("aborted", None), chunk(payload(1 << 20, 2))])
            .chain(futures::stream::pending());
        let call = tokio::spawn(async move { r.put(reqs).await });
        until("the server holds the first bytes", || async {
            stat(&c).await.bytes_in_flight > 0
        })
        .await;
        call.abort();
        until("the upload is dropped", || async {
            stat(&c).await.bytes_in_flight == 0
        })
        .await;
        assert!(!c.exists(&Key::from("aborted")).await.unwrap(), "{backend}");
        assert_eq!(stat(&c).await.object_count, 0);
    }
}

/// Finding 2: stalled puts lose their reservations after the idle timeout, so they cannot keep
/// everyone else at RESOURCE_EXHAUSTED; a put that never sends its header is dropped too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_puts_lose_their_reservation_after_the_idle_timeout() {
    let idle = Duration::from_millis(400);
    let server = spawn(
        ServerConfig::default()
            .max_object_bytes(1 << 20)
            .max_total_bytes(4 << 20)
            .idle_timeout(Some(idle)),
    )
    .unwrap();
    let c = server.connector().unwrap();
    assert_eq!(stat(&c).await.idle_timeout, Some(idle));
    let mut stalled = Vec::new();
    for i in 0..3 {
        let mut r = raw(&server).await;
        let reqs = futures::stream::iter([header(&format!("stalled-{i}"), Some(1 << 20))])
            .chain(futures::stream::pending());
        stalled.push(tokio::spawn(async move { r.put(reqs).await }));
    }
    // No header at all.
    let mut r = raw(&server).await;
    stalled.push(tokio::spawn(async move {
        r.put(futures::stream::pending::<v1::PutRequest>()).await
    }));
    until("three reservations are held", || async {
        stat(&c).await.bytes_in_flight == 3 << 20
    })
    .await;
    c.put(payload(1 << 20, 1)).await.unwrap();
    let e = c.put(payload(1 << 20, 2)).await;
    assert!(
        matches!(e, Err(Error::LimitExceeded { .. })),
        "the stalled reservations fill the store: {e:?}"
    );
    let start = Instant::now();
    for call in stalled {
        let e = call.await.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    }
    assert!(start.elapsed() < DEADLINE);
    assert_eq!(stat(&c).await.bytes_in_flight, 0);
    for i in 0..3 {
        c.put(payload(1 << 20, i)).await.unwrap();
    }
    assert_eq!(stat(&c).await.object_count, 4);
}

/// Finding 2, gets: a client that stops reading a large object has its call ended after the
/// idle timeout, holding back at most a chunk or two, never the whole object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_get_is_abandoned_after_the_idle_timeout() {
    let idle = Duration::from_millis(300);
    let server = spawn(ServerConfig::default().idle_timeout(Some(idle))).unwrap();
    let c = server.connector().unwrap();
    let size = 16 << 20;
    let key = c.put(payload(size, 1)).await.unwrap();
    // A client with the smallest HTTP/2 windows, so that an unread stream really stalls.
    let ch = Endpoint::from_shared(server.url())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut r = StoreServiceClient::new(ch);
    let mut stream = r
        .get(v1::GetRequest {
            key: key.to_string(),
            range: None,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(first.msg, Some(v1::get_response::Msg::Header(_))));
    tokio::time::sleep(idle * 4).await;
    // The object can go while the stalled call lasts; the call does not keep it.
    c.evict(&key).await.unwrap();
    let mut received = 0usize;
    let status = loop {
        match stream.message().await {
            Ok(Some(v1::GetResponse {
                msg: Some(v1::get_response::Msg::Chunk(c)),
            })) => received += c.len(),
            Ok(other) => {
                panic!("the call ended without an error after {received} bytes: {other:?}")
            }
            Err(s) => break s,
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        received < size / 2,
        "{received} of {size} bytes were still sent"
    );

    // A client that reads keeps its call, however long the object takes.
    let key = c.put(payload(size, 2)).await.unwrap();
    assert_eq!(c.get(&key).await.unwrap(), Some(payload(size, 2)));
}

/// Finding 3's allocator side lives in the load test (RSS of the binary); here: the bytes of
/// a stalled put are given back to the accounting, object by object.
///
/// Finding 4: a replacement that fits once the object it replaces is gone is accepted when the
/// store is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_accepts_a_replacement_that_fits() {
    let server = spawn(ServerConfig::default().max_total_bytes(2 << 20)).unwrap();
    let c = server.connector().unwrap();
    let (a, b) = (Key::from("a"), Key::from("b"));
    c.set(&a, payload(1 << 20, 1)).await.unwrap();
    c.set(&b, payload(1 << 20, 2)).await.unwrap();
    let e = c.set(&Key::from("new"), payload(3, 3)).await.unwrap_err();
    assert!(matches!(e, Error::LimitExceeded { .. }), "{e:?}");
    c.set(&a, payload(3, 3)).await.unwrap();
    assert_eq!(c.get(&a).await.unwrap(), Some(payload(3, 3)));
    // Growing back to what it was fits too; one byte more does not.
    c.set(&a, payload(1 << 20, 4)).await.unwrap();
    let e = c.set(&a, payload((1 << 20) + 1, 5)).await.unwrap_err();
    assert!(matches!(e, Error::LimitExceeded { .. }), "{e:?}");
    // Without a declared size, checked as the bytes arrive.
    let source = futures::stream::iter([Ok(payload(1 << 19, 6)), Ok(payload(1 << 19, 7))]);
    c.put_stream(
        source,
        UploadOptions {
            key: Some(b.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let s = stat(&c).await;
    assert_eq!(
        (s.object_count, s.bytes_used, s.bytes_in_flight),
        (2, 2 << 20, 0)
    );
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".proxystore-meta")
        .collect();
    v.sort();
    v
}

/// Finding 5: the file backend keeps expiry times and digests across a restart, and never
/// applies them to another object stored under the same name behind its back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_backend_keeps_expiry_and_digest_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        sweep_interval: Duration::from_millis(50),
        ..ServerConfig::default().file(dir.path())
    };
    let server = spawn(config.clone()).unwrap();
    let c = server.connector().unwrap();
    let ttl = Duration::from_millis(1500);
    let put = |key: &'static str, seed: u64, ttl: Option<Duration>| {
        let c = c.clone();
        async move {
            let data = payload(10_000, seed);
            c.put_stream(
                futures::stream::iter([Ok(data.clone())]),
                UploadOptions {
                    key: Some(Key::from(key)),
                    ttl,
                    digest: DigestAlgorithm::Blake3.digest(&data),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
        }
    };
    let start = Instant::now();
    put("expires", 1, Some(ttl)).await;
    put("replaced-behind", 2, Some(ttl)).await;
    put("stays", 3, None).await;
    // A replacement without a TTL drops the old expiry.
    put("was-expiring", 4, Some(ttl)).await;
    put("was-expiring", 5, None).await;
    server.shutdown().await.unwrap();

    // Another writer replaces one object in the directory while the server is down.
    let file = proxystore::connector::file::FileConnector::new(dir.path()).unwrap();
    file.set(&Key::from("replaced-behind"), payload(10_000, 9))
        .await
        .unwrap();

    let server = spawn(config.clone()).unwrap();
    let c = server.connector().unwrap();
    assert!(
        start.elapsed() < ttl,
        "the machine is too slow for this test"
    );
    assert!(c.exists(&Key::from("expires")).await.unwrap());
    let got = c
        .get_stream(&Key::from("stays"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got.info.digest,
        DigestAlgorithm::Blake3.digest(&payload(10_000, 3)),
        "the digest survives the restart"
    );
    let until_expired = ttl.saturating_sub(start.elapsed()) + Duration::from_millis(300);
    tokio::time::sleep(until_expired).await;
    until("the expired object is evicted", || async {
        !c.exists(&Key::from("expires")).await.unwrap()
    })
    .await;
    for key in ["stays", "was-expiring", "replaced-behind"] {
        assert!(c.exists(&Key::from(key)).await.unwrap(), "{key} is gone");
    }
    let s = c
        .get_stream(&Key::from("replaced-behind"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.info.digest, None, "another object's digest was applied");
    assert_eq!(
        entries(dir.path()),
        vec!["replaced-behind", "stays", "was-expiring"]
    );
    let mut meta: Vec<String> = std::fs::read_dir(dir.path().join(".proxystore-meta"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    meta.sort();
    assert_eq!(
        meta,
        vec!["stays", "was-expiring"],
        "descriptions of objects gone or replaced behind the server's back are removed"
    );
}

/// Finding 6: a GetBatch answer fits the 4 MiB receive limit of stock gRPC clients unless the
/// client asks for more; what does not fit is omitted and fetched with Get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answer_fits_a_4_mib_client() {
    let server = spawn(ServerConfig::default()).unwrap();
    let c = server.connector().unwrap();
    let data: Vec<Bytes> = (0..50).map(|i| payload(100 << 10, i)).collect();
    let keys = c
        .put_batch(data.clone(), &Default::default())
        .await
        .unwrap();
    let stock = Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut stock = StoreServiceClient::new(stock).max_decoding_message_size(4 << 20);
    let answer = stock
        .get_batch(v1::GetBatchRequest {
            keys: keys.iter().map(ToString::to_string).collect(),
            max_response_bytes: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.encoded_len() <= 4 << 20);
    let omitted = answer.items.iter().filter(|i| i.omitted).count();
    assert!(omitted > 0 && omitted < 50, "{omitted} omitted");
    for (item, d) in answer.items.iter().zip(&data) {
        assert!(item.found);
        assert_eq!(item.size, d.len() as u64);
        if !item.omitted {
            assert_eq!(&item.data, d);
        }
    }
    // A client may ask for more (the connector asks for its own 64 MiB limit).
    let answer = stock
        .max_decoding_message_size(8 << 20)
        .get_batch(v1::GetBatchRequest {
            keys: keys.iter().map(ToString::to_string).collect(),
            max_response_bytes: 8 << 20,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.items.iter().all(|i| !i.omitted));
    let got = c.get_batch(&keys).await.unwrap();
    assert!(got.iter().zip(&data).all(|(g, d)| g.as_ref() == Some(d)));
    assert_eq!(stat(&c).await.batch_response_bytes, 4 << 20);
}

/// Finding 9: requests that are not valid protobuf, keys that are not UTF-8 and messages over
/// the size limit get the codes the proto lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_get_the_documented_codes() {
    let server = spawn(ServerConfig {
        max_message_bytes: 1 << 20,
        chunk_size: 256 << 10,
        ..ServerConfig::default()
    })
    .unwrap();
    let addr = server.local_addr();
    let mut client = h2_client(addr).await;
    let garbage = {
        let mut b = BytesMut::new();
        b.put_u8(0);
        b.put_u32(3);
        b.put_slice(&[0xff, 0xff, 0xff]);
        b.freeze()
    };
    // ExistsRequest { key: <0xff 0xfe> }: field 1, length 2, not UTF-8.
    let bad_utf8 = {
        let mut b = BytesMut::new();
        b.put_u8(0);
        b.put_u32(4);
        b.put_slice(&[0x0a, 0x02, 0xff, 0xfe]);
        b.freeze()
    };
    for (what, method, body) in [
        ("garbage Exists", "Exists", garbage.clone()),
        ("garbage Get", "Get", garbage.clone()),
        ("non-UTF-8 key", "Exists", bad_utf8),
        ("garbage in a Put stream", "Put", garbage),
    ] {
        let (resp, mut stream) = client
            .send_request(grpc_request(addr, method), false)
            .unwrap();
        stream.send_data(body, true).unwrap();
        let (code, message) = grpc_status(resp).await;
        assert_eq!(code, Code::InvalidArgument as i32, "{what}: {message}");
    }

    let mut r = raw(&server).await;
    let big = payload(2 << 20, 1);
    let e = r
        .put_batch(v1::PutBatchRequest {
            items: vec![v1::PutBatchItem {
                data: big.clone(),
                ..Default::default()
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    let e = r
        .put(futures::stream::iter([
            header("big", None),
            chunk(big),
            finish(),
        ]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    let s = stat(&server.connector().unwrap()).await;
    assert_eq!(s.max_message_bytes, 1 << 20);
    assert_eq!((s.object_count, s.bytes_in_flight), (0, 0));
}
