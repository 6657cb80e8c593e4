//! Status codes, limits, auth, malformed streams and clean failure of the store service,
//! against servers started in this process.

// Helpers outside #[test] functions fail tests the way tests do: by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use proxystore::conformance::payload;
use proxystore::connector::grpc::{GrpcConfig, GrpcConnector, UploadOptions};
use proxystore::connector::memory::MemoryConnector;
use proxystore::{Connector, DigestAlgorithm, Error, Key};
use proxystore_proto::v1;
use proxystore_proto::v1::store_service_client::StoreServiceClient;
use proxystore_server::{RunningServer, ServerConfig, spawn};
use tonic::Code;
use tonic::transport::Channel;

async fn raw(server: &RunningServer) -> StoreServiceClient<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    StoreServiceClient::new(ch)
}

fn header(size: Option<u64>) -> v1::PutRequest {
    v1::PutRequest {
        msg: Some(v1::put_request::Msg::Header(v1::PutHeader {
            size,
            ..Default::default()
        })),
    }
}

fn chunk(n: usize) -> v1::PutRequest {
    v1::PutRequest {
        msg: Some(v1::put_request::Msg::Chunk(payload(n, n as u64))),
    }
}

async fn stat(c: &GrpcConnector) -> proxystore::connector::grpc::ServerStat {
    c.stat().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_token_is_unauthenticated() {
    let server = spawn(ServerConfig::default().token("right-token")).unwrap();
    let url = server.url();
    let none = GrpcConnector::new(url.clone()).unwrap();
    let wrong = GrpcConnector::with_config(GrpcConfig::new(url.clone()).token("wrong")).unwrap();
    let right = server.connector().unwrap();
    for c in [&none, &wrong] {
        let e = c.put(Bytes::from_static(b"x")).await.unwrap_err();
        assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
        let e = c.get(&Key::from("k")).await.unwrap_err();
        assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
        let e = c.exists(&Key::from("k")).await.unwrap_err();
        assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
        let e = c.stat().await.unwrap_err();
        assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    }
    let key = right.put(Bytes::from_static(b"ok")).await.unwrap();
    assert_eq!(right.get(&key).await.unwrap().unwrap(), "ok");
    assert!(stat(&right).await.auth_required);

    // The raw status code, and health staying open without a token.
    let e = raw(&server)
        .await
        .stat(v1::StatRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let ch = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest {
            service: proxystore_proto::STORE_SERVICE_NAME.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_object_is_resource_exhausted() {
    let server = spawn(ServerConfig::default().max_object_bytes(1000)).unwrap();
    let c = server.connector().unwrap();
    c.put(payload(1000, 1)).await.unwrap();
    let e = c.put(payload(1001, 1)).await.unwrap_err();
    assert!(matches!(e, Error::LimitExceeded { .. }), "{e:?}");
    let e = c
        .put_batch(vec![payload(10, 1), payload(1001, 2)], &Default::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::LimitExceeded { .. }), "{e:?}");

    // Without a declared size the limit is enforced as chunks arrive.
    let reqs = futures::stream::iter([header(None), chunk(600), chunk(600)]);
    let e = raw(&server).await.put(reqs).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    let s = stat(&c).await;
    assert_eq!((s.object_count, s.bytes_in_flight), (2, 0), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_bytes_limit_is_resource_exhausted_and_freed_by_evict() {
    let server = spawn(ServerConfig::default().max_total_bytes(10_000)).unwrap();
    let c = server.connector().unwrap();
    let a = c.put(payload(6000, 1)).await.unwrap();
    let e = c.put(payload(6000, 2)).await.unwrap_err();
    assert!(matches!(e, Error::LimitExceeded { .. }), "{e:?}");
    assert!(e.to_string().contains("10000"), "{e}");
    assert_eq!(stat(&c).await.bytes_used, 6000);
    c.evict(&a).await.unwrap();
    let b = c.put(payload(6000, 2)).await.unwrap();
    // A replacement is credited with the object it replaces: a new key of 4001 bytes does
    // not fit, the same bytes replacing `b` do, and so does growing `b` to the whole limit.
    assert!(c.put(payload(4001, 3)).await.is_err());
    c.set(&b, payload(4001, 3)).await.unwrap();
    c.set(&b, payload(10_000, 3)).await.unwrap();
    assert!(c.set(&b, payload(10_001, 3)).await.is_err());
    c.set(&b, payload(4000, 3)).await.unwrap();
    let s = stat(&c).await;
    assert_eq!(
        (s.object_count, s.bytes_used, s.bytes_in_flight),
        (1, 4000, 0)
    );
    assert_eq!(s.max_total_bytes, Some(10_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_is_not_found() {
    let server = spawn(ServerConfig::default()).unwrap();
    let status = match raw(&server)
        .await
        .get(v1::GetRequest {
            key: "nope".into(),
            range: None,
        })
        .await
    {
        Err(s) => s,
        Ok(mut stream) => stream.get_mut().message().await.unwrap_err(),
    };
    assert_eq!(status.code(), Code::NotFound);
    let e = Error::from(status);
    assert!(
        matches!(&e, Error::NotFound { key, .. } if key.as_str() == "nope"),
        "{e:?}"
    );

    let c = server.connector().unwrap();
    let k = Key::from("nope");
    assert_eq!(c.get(&k).await.unwrap(), None);
    assert_eq!(c.get_range(&k, 0..10).await.unwrap(), None);
    assert!(!c.exists(&k).await.unwrap());
    c.evict(&k).await.unwrap();
    assert!(c.get_stream(&k, None).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunk_order_is_invalid_argument() {
    let server = spawn(ServerConfig::default()).unwrap();
    let cases: Vec<(&str, Vec<v1::PutRequest>)> = vec![
        ("chunk before header", vec![chunk(10), header(Some(10))]),
        ("two headers", vec![header(Some(0)), header(Some(0))]),
        (
            "header after chunks",
            vec![header(None), chunk(5), header(None)],
        ),
        (
            "fewer bytes than declared",
            vec![header(Some(10)), chunk(5)],
        ),
        ("more bytes than declared", vec![header(Some(3)), chunk(5)]),
        ("empty stream", vec![]),
        (
            "empty message",
            vec![header(None), v1::PutRequest { msg: None }],
        ),
    ];
    for (what, reqs) in cases {
        let e = raw(&server)
            .await
            .put(futures::stream::iter(reqs))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
    }
    let s = stat(&server.connector().unwrap()).await;
    assert_eq!((s.object_count, s.bytes_used, s.bytes_in_flight), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_are_checked_and_returned() {
    let server = spawn(ServerConfig::default()).unwrap();
    let c = server.connector().unwrap();
    let data = payload(3 << 20, 5);
    for alg in [DigestAlgorithm::Xxh3, DigestAlgorithm::Blake3] {
        let digest = alg.digest(&data);
        let d = data.clone();
        let key = c
            .put_stream(
                futures::stream::iter([Ok(d)]),
                UploadOptions {
                    digest,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let s = c.get_stream(&key, None).await.unwrap().unwrap();
        assert_eq!(s.info.digest, digest);
        let e = c
            .put_stream(
                futures::stream::iter([Ok(payload(3 << 20, 6))]),
                UploadOptions {
                    digest,
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e:?}");
    }
    assert_eq!(stat(&c).await.object_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_put_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(ServerConfig::default().file(dir.path())).unwrap();
    let c = server.connector().unwrap();

    // A raw client that sends half an object and then vanishes.
    let mut client = raw(&server).await;
    let reqs = futures::stream::iter([header(Some(10 << 20)), chunk(1 << 20), chunk(1 << 20)])
        .chain(futures::stream::pending());
    let call = tokio::spawn(async move { client.put(reqs).await });
    // The reservation comes with the header, the temporary file with the first chunk: on a
    // busy machine the second can lag the first, so wait for both.
    let start = Instant::now();
    while stat(&c).await.bytes_in_flight == 0 || tmp_files(dir.path()) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the upload never started writing its temporary file"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    call.abort();
    let start = Instant::now();
    loop {
        let s = stat(&c).await;
        if s.bytes_in_flight == 0 && tmp_files(dir.path()) == 0 {
            assert_eq!(s.object_count, 0);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "leftovers: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A source stream that fails part-way cancels the upload.
    let failing = futures::stream::iter([
        Ok(payload(1 << 20, 1)),
        Err(Error::backend(
            "test",
            "source",
            std::io::Error::other("disk gone"),
        )),
    ]);
    let e = c
        .put_stream(
            failing,
            UploadOptions {
                size: Some(4 << 20),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Backend { connector, .. } if connector == "test"),
        "{e:?}"
    );
    // Without a declared size too: the upload must not be committed short.
    let failing = futures::stream::iter([
        Ok(payload(1 << 20, 1)),
        Err(Error::backend(
            "test",
            "source",
            std::io::Error::other("disk gone"),
        )),
    ]);
    c.put_stream(failing, UploadOptions::default())
        .await
        .unwrap_err();
    let start = Instant::now();
    // The server notices the cut-off calls asynchronously: wait until it has cleaned up.
    while std::fs::read_dir(dir.path()).unwrap().count() > 0 || stat(&c).await.bytes_in_flight > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} temporary files, {:?}",
            tmp_files(dir.path()),
            stat(&c).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stat(&c).await.object_count, 0);
}

fn tmp_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_expire_after_their_ttl() {
    let server = spawn(ServerConfig {
        sweep_interval: Duration::from_millis(50),
        ..ServerConfig::default()
    })
    .unwrap();
    let c = server.connector().unwrap();
    let key = c
        .put_stream(
            futures::stream::iter([Ok(payload(100, 1))]),
            UploadOptions {
                ttl: Some(Duration::from_millis(300)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let keep = c.put(payload(100, 2)).await.unwrap();
    assert!(c.exists(&key).await.unwrap());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!c.exists(&key).await.unwrap());
    assert_eq!(c.get(&key).await.unwrap(), None);
    assert!(c.exists(&keep).await.unwrap());
    assert_eq!(stat(&c).await.object_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_mix_small_and_large_objects() {
    let server = spawn(ServerConfig::default()).unwrap();
    let c = server.connector().unwrap();
    let data = vec![
        payload(10, 1),
        payload(20 << 20, 2), // streamed on its own, omitted from batch responses
        payload(0, 3),
        payload(300_000, 4),
    ];
    let keys = c
        .put_batch(data.clone(), &Default::default())
        .await
        .unwrap();
    let got = c.get_batch(&keys).await.unwrap();
    for (g, d) in got.iter().zip(&data) {
        assert_eq!(g.as_ref(), Some(d));
    }
    c.evict_batch(&keys).await.unwrap();
    assert_eq!(stat(&c).await.object_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_backend_fronts_any_connector() {
    let inner = Arc::new(MemoryConnector::new(&format!("fronted-{}", Key::random())));
    let server = spawn(ServerConfig::default().connector(inner.clone())).unwrap();
    let c = server.connector().unwrap();
    let key = c.put(payload(5000, 1)).await.unwrap();
    // The object is in the fronted connector, under the key the client got.
    assert_eq!(inner.get(&key).await.unwrap(), Some(payload(5000, 1)));
    assert_eq!(
        c.get_range(&key, 10..20).await.unwrap(),
        Some(payload(5000, 1).slice(10..20))
    );
    let s = stat(&c).await;
    assert_eq!((s.backend.as_str(), s.caller_keys), ("memory", true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_calls_in_flight() {
    let server = spawn(ServerConfig::default()).unwrap();
    let c = server.connector().unwrap();
    let data = payload(64 << 20, 9);
    let key = c.put(data.clone()).await.unwrap();
    let mut stream = c.get_stream(&key, None).await.unwrap().unwrap();
    let first = stream.next().await.unwrap().unwrap();
    let stopping = tokio::spawn(server.shutdown());
    let mut got = first.to_vec();
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(Bytes::from(got), data);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("shutdown finished")
        .unwrap()
        .unwrap();
    // Stopped: new calls fail with a typed, retryable error, not a hang.
    let e = c.exists(&key).await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_calls_still_in_flight_after_the_grace_period() {
    let grace = Duration::from_millis(300);
    let server = spawn(ServerConfig {
        shutdown_grace: grace,
        ..ServerConfig::default()
    })
    .unwrap();
    let c = server.connector().unwrap();
    let data = payload(256 << 20, 3);
    let key = c.put(data.clone()).await.unwrap();
    // A Get read only to its first chunk: the rest waits on flow control, past the grace.
    let mut stream = c.get_stream(&key, None).await.unwrap().unwrap();
    let mut got = stream.next().await.unwrap().unwrap().len();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown returns once the grace period is over")
        .unwrap();
    assert!(started.elapsed() >= grace, "{:?}", started.elapsed());
    // The call was closed, not left running: the stream ends in an error, never with the
    // whole object, and does not hang.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => got += c.len(),
                Err(e) => return Some(e),
            }
        }
        None
    })
    .await
    .expect("the stream ends");
    assert!(
        ended.is_some(),
        "the stream ended cleanly after {got} bytes"
    );
    assert!(got < data.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_thread_serves_many_connections_at_once() {
    let server = spawn(ServerConfig::default().threads(std::num::NonZeroUsize::MIN)).unwrap();
    // Each connector has a connection of its own.
    let clients: Vec<GrpcConnector> = (0..4).map(|_| server.connector().unwrap()).collect();
    // A Get left unread on one connection does not hold up the others.
    let big = clients[0].put(payload(64 << 20, 1)).await.unwrap();
    let mut held = clients[0].get_stream(&big, None).await.unwrap().unwrap();
    let _first = held.next().await.unwrap().unwrap();
    let calls = clients.iter().enumerate().map(|(i, c)| async move {
        for n in 0..50 {
            let data = payload(1000 + n, i as u64);
            let key = c.put(data.clone()).await.unwrap();
            assert_eq!(c.get(&key).await.unwrap(), Some(data));
        }
    });
    tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(calls))
        .await
        .expect("calls on one thread finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_the_backend_refuses_are_invalid_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(ServerConfig::default().file(dir.path())).unwrap();
    let c = server.connector().unwrap();
    for k in ["../escape", "a/b", "", ".tmp-x"] {
        let e = c.set(&Key::from(k), payload(1, 1)).await.unwrap_err();
        assert!(matches!(e, Error::InvalidKey { .. }), "{k:?}: {e:?}");
        let e = c.get(&Key::from(k)).await.unwrap_err();
        assert!(matches!(e, Error::InvalidKey { .. }), "{k:?}: {e:?}");
    }
    let long = Key::from("k".repeat(5000));
    assert!(matches!(
        c.exists(&long).await.unwrap_err(),
        Error::InvalidKey { .. }
    ));
}

#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let tls = proxystore_server::TlsConfig {
        cert_pem: ck.cert.pem().into_bytes(),
        key_pem: ck.signing_key.serialize_pem().into_bytes(),
    };
    let server = spawn(ServerConfig::default().tls(tls)).unwrap();
    assert!(server.url().starts_with("https://"));
    let c = GrpcConnector::with_config(
        GrpcConfig::new(server.url())
            .tls_ca_file(&ca)
            .tls_domain("localhost"),
    )
    .unwrap();
    let key = c.put(payload(2 << 20, 1)).await.unwrap();
    assert_eq!(c.get(&key).await.unwrap(), Some(payload(2 << 20, 1)));

    // A plain-text client cannot talk to it, and says so with a typed error.
    let plain = GrpcConnector::with_config(
        GrpcConfig::new(server.url().replace("https://", "http://")).retries(0),
    )
    .unwrap();
    assert!(plain.exists(&key).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_messages_survive_the_wire_whole() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(ServerConfig::default().file(dir.path()).token("t")).unwrap();
    let url = server.url();
    let c = GrpcConnector::with_config(GrpcConfig::new(url.clone()).token("t")).unwrap();

    // Key errors name the server's backend, and a long key leaves the reason readable.
    let e = c.get(&Key::from("a/b")).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid key \"a/b\" for file connector: contains a path separator"
    );
    for len in [1000, 4000] {
        let e = c.get(&Key::from("k".repeat(len))).await.unwrap_err();
        assert!(
            matches!(&e, Error::InvalidKey { connector, reason, .. }
                if connector == "file" && reason == "longer than 255 bytes"),
            "{len}: {e:?}"
        );
    }

    // One prefix, however many times the error crossed.
    let wrong = GrpcConnector::with_config(GrpcConfig::new(url).token("wrong")).unwrap();
    let e = wrong.exists(&Key::from("k")).await.unwrap_err();
    assert_eq!(e.to_string(), "unauthorized: wrong bearer token");

    // A digest mismatch of an upload has no empty slot where the key would be.
    let e = c
        .put_stream(
            futures::stream::iter([Ok(payload(100, 1))]),
            UploadOptions {
                digest: DigestAlgorithm::Xxh3.digest(b"something else"),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e:?}");
    assert!(
        text.starts_with("digest mismatch for ") && !text.contains("  "),
        "{text}"
    );
}
