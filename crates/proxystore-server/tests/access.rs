//! Access: a server with a token refuses every store call without it (and with a wrong one),
//! health and reflection stay open; a TLS server refuses plain-text clients; the server's logs
//! (at `RUST_LOG=trace`) hold neither object contents nor tokens; no key makes the file backend
//! or the file connector read or write outside their directory.

// Helpers outside #[test] functions fail tests the way tests do: by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use proxystore::conformance::payload;
use proxystore::connector::file::FileConnector;
use proxystore::connector::grpc::{GrpcConfig, GrpcConnector, UploadOptions};
use proxystore::{Connector, DigestAlgorithm, Error, Key};
use proxystore_proto::v1;
use proxystore_proto::v1::store_service_client::StoreServiceClient;
use proxystore_server::{ServerConfig, spawn};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const TOKEN: &str = "access-test-token";

async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// `msg` with `authorization: <auth>` when given.
fn req<T>(msg: T, auth: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(a) = auth {
        r.metadata_mut().insert("authorization", a.parse().unwrap());
    }
    r
}

fn put_msgs(key: &str, data: Bytes) -> Vec<v1::PutRequest> {
    vec![
        v1::PutRequest {
            msg: Some(v1::put_request::Msg::Header(v1::PutHeader {
                key: key.to_owned(),
                size: Some(data.len() as u64),
                ..Default::default()
            })),
        },
        v1::PutRequest {
            msg: Some(v1::put_request::Msg::Chunk(data)),
        },
    ]
}

/// A whole Get: the bytes, or the status it failed with (at the call or in the stream).
async fn raw_get(
    c: &mut StoreServiceClient<Channel>,
    key: &str,
    auth: Option<&str>,
) -> Result<Bytes, Status> {
    let mut stream = c
        .get(req(
            v1::GetRequest {
                key: key.to_owned(),
                range: None,
            },
            auth,
        ))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        if let Some(v1::get_response::Msg::Chunk(c)) = m.msg {
            out.extend_from_slice(&c);
        }
    }
    Ok(Bytes::from(out))
}

/// Every `StoreService` call, each with `auth`: its name and the status code, or `Ok` for
/// success. `key` is an object that exists.
async fn every_call(
    c: &mut StoreServiceClient<Channel>,
    key: &str,
    auth: Option<&str>,
) -> Vec<(&'static str, Result<(), Code>)> {
    let code = |r: Result<(), Status>| r.map_err(|s| s.code());
    let data = Bytes::from_static(b"stored by an access test");
    vec![
        (
            "Put",
            code(
                c.put(req(futures::stream::iter(put_msgs("", data.clone())), auth))
                    .await
                    .map(drop),
            ),
        ),
        ("Get", code(raw_get(c, key, auth).await.map(drop))),
        (
            "Exists",
            code(
                c.exists(req(v1::ExistsRequest { key: key.into() }, auth))
                    .await
                    .map(drop),
            ),
        ),
        (
            "Stat",
            code(c.stat(req(v1::StatRequest {}, auth)).await.map(drop)),
        ),
        (
            "PutBatch",
            code(
                c.put_batch(req(
                    v1::PutBatchRequest {
                        items: vec![v1::PutBatchItem {
                            data: data.clone(),
                            ..Default::default()
                        }],
                    },
                    auth,
                ))
                .await
                .map(drop),
            ),
        ),
        (
            "GetBatch",
            code(
                c.get_batch(req(
                    v1::GetBatchRequest {
                        keys: vec![key.into()],
                        max_response_bytes: 0,
                    },
                    auth,
                ))
                .await
                .map(drop),
            ),
        ),
        // Evictions last, of a key that does not exist, so that a refused one proves nothing by
        // accident and an accepted one removes nothing.
        (
            "Evict",
            code(
                c.evict(req(
                    v1::EvictRequest {
                        key: "absent".into(),
                    },
                    auth,
                ))
                .await
                .map(drop),
            ),
        ),
        (
            "EvictBatch",
            code(
                c.evict_batch(req(
                    v1::EvictBatchRequest {
                        keys: vec!["absent".into()],
                    },
                    auth,
                ))
                .await
                .map(drop),
            ),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_store_call_needs_the_token() {
    let server = spawn(ServerConfig::default().token(TOKEN)).unwrap();
    let mut c = StoreServiceClient::new(channel(&server.url()).await);
    let right = format!("Bearer {TOKEN}");
    let data = payload(1000, 1);
    let key = c
        .put(req(
            futures::stream::iter(put_msgs("", data.clone())),
            Some(&right),
        ))
        .await
        .unwrap()
        .into_inner()
        .key;

    let wrong = [
        None,
        Some("Bearer wrong-token".to_owned()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(TOKEN.to_owned()),
        Some(format!("bearer {TOKEN}")),
        Some(format!("Basic {TOKEN}")),
        Some(format!("Bearer  {TOKEN}")),
        Some("Bearer ".to_owned()),
    ];
    for auth in &wrong {
        let results = every_call(&mut c, &key, auth.as_deref()).await;
        assert_eq!(results.len(), 8, "one per call of store.proto");
        for (call, r) in results {
            assert_eq!(r, Err(Code::Unauthenticated), "{call} with {auth:?}");
        }
    }
    // The refused calls changed nothing: one object, still intact.
    let s = c
        .stat(req(v1::StatRequest {}, Some(&right)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.object_count, 1, "{s:?}");
    assert_eq!(raw_get(&mut c, &key, Some(&right)).await.unwrap(), data);

    for (call, r) in every_call(&mut c, &key, Some(&right)).await {
        assert_eq!(r, Ok(()), "{call} with the right token");
    }

    // The connector maps the status to `Error::Unauthorized`, for every operation.
    let none = GrpcConnector::new(server.url()).unwrap();
    let k = Key::from(key.as_str());
    let errors = [
        none.put(data.clone()).await.unwrap_err(),
        none.get(&k).await.unwrap_err(),
        none.get_range(&k, 0..10).await.unwrap_err(),
        none.exists(&k).await.unwrap_err(),
        none.evict(&k).await.unwrap_err(),
        none.put_batch(vec![data.clone()], &Default::default())
            .await
            .unwrap_err(),
        none.get_batch(std::slice::from_ref(&k)).await.unwrap_err(),
        none.evict_batch(std::slice::from_ref(&k))
            .await
            .unwrap_err(),
        none.set(&Key::from("chosen"), data.clone())
            .await
            .unwrap_err(),
        none.stat().await.unwrap_err(),
    ];
    for e in errors {
        assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
        assert!(!e.is_retryable(), "{e:?}");
    }
    assert_eq!(raw_get(&mut c, &key, Some(&right)).await.unwrap(), data);
}

/// Health and reflection need no token: they tell only whether the store serves and what its
/// (public) schema is, never anything about objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_stay_open() {
    use tonic_reflection::pb::{v1 as refl, v1alpha as refl_alpha};
    let server = spawn(ServerConfig::default().token(TOKEN)).unwrap();
    let ch = channel(&server.url()).await;

    let health = tonic_health::pb::health_client::HealthClient::new(ch.clone())
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

    let list = refl::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            refl::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut replies = refl::server_reflection_client::ServerReflectionClient::new(ch.clone())
        .server_reflection_info(futures::stream::iter([list]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(refl::server_reflection_response::MessageResponse::ListServicesResponse(l)) =
        reply.message_response
    else {
        panic!("{reply:?}")
    };
    let names: Vec<_> = l.service.into_iter().map(|s| s.name).collect();
    assert!(
        names
            .iter()
            .any(|n| n == proxystore_proto::STORE_SERVICE_NAME),
        "{names:?}"
    );

    let list = refl_alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            refl_alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut replies = refl_alpha::server_reflection_client::ServerReflectionClient::new(ch)
        .server_reflection_info(futures::stream::iter([list]))
        .await
        .unwrap()
        .into_inner();
    assert!(replies.message().await.unwrap().is_some());
}

#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_refuses_plain_text_clients() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let tls = proxystore_server::TlsConfig {
        cert_pem: ck.cert.pem().into_bytes(),
        key_pem: ck.signing_key.serialize_pem().into_bytes(),
    };
    let server = spawn(ServerConfig::default().tls(tls)).unwrap();
    let trusted = GrpcConnector::with_config(
        GrpcConfig::new(server.url())
            .tls_ca_file(&ca)
            .tls_domain("localhost"),
    )
    .unwrap();
    let data = payload(4096, 7);
    let stored = trusted.put(data.clone()).await.unwrap();

    // Plain HTTP/2 to the TLS port, through the connector and through a raw channel.
    let plain = GrpcConnector::with_config(
        GrpcConfig::new(server.url().replacen("https://", "http://", 1))
            .timeout(Duration::from_secs(5))
            .retries(0),
    )
    .unwrap();
    let outcomes = tokio::time::timeout(Duration::from_secs(30), async {
        vec![
            plain.put(data.clone()).await.map(drop),
            plain.set(&Key::from("plain"), data.clone()).await,
            plain.get(&stored).await.map(drop),
            plain.exists(&stored).await.map(drop),
            plain.evict(&stored).await,
            plain.stat().await.map(drop),
        ]
    })
    .await
    .expect("a plain-text client must get an answer, not hang");
    for r in outcomes {
        let e = r.unwrap_err();
        assert!(
            matches!(e, Error::Backend { .. } | Error::Timeout { .. }),
            "typed error: {e:?}"
        );
        assert!(e.is_retryable(), "{e:?}");
    }
    let raw = tokio::time::timeout(Duration::from_secs(30), async {
        let ch = Channel::from_shared(server.url().replacen("https://", "http://", 1))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        let r = StoreServiceClient::new(ch)
            .put(futures::stream::iter(put_msgs("", data.clone())))
            .await
            .map(drop);
        Ok::<_, tonic::transport::Error>(r)
    })
    .await
    .expect("no hang");
    match raw {
        Err(_) => {}
        Ok(r) => assert!(r.is_err(), "a plain-text put to a TLS port succeeded"),
    }

    // A client that does not trust the certificate is refused as well.
    let untrusting = GrpcConnector::with_config(
        GrpcConfig::new(server.url())
            .tls_domain("localhost")
            .retries(0),
    )
    .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(30), untrusting.exists(&stored))
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(matches!(e, Error::Backend { .. }), "{e:?}");

    // Nothing was stored or removed by the refused clients.
    let s = trusted.stat().await.unwrap();
    assert_eq!((s.object_count, s.bytes_in_flight), (1, 0), "{s:?}");
    assert!(!trusted.exists(&Key::from("plain")).await.unwrap());
    assert_eq!(trusted.get(&stored).await.unwrap(), Some(data));
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_logs_neither_contents_nor_tokens() {
    let marker = format!("OBJECT-CONTENT-MARKER-{}", Key::random());
    let token = format!("TOKEN-MARKER-{}", Key::random());
    let wrong = format!("WRONG-TOKEN-MARKER-{}", Key::random());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    // Trace level for every target, so that the transport's own logging is on too.
    let mut server = support::ServerProcess::start_on(
        "127.0.0.1:0",
        &["--backend", "file", "--directory", d],
        &[
            ("RUST_LOG", "trace"),
            ("PROXYSTORE_TOKEN", &token),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
        ],
        true,
    );
    let c = GrpcConnector::with_config(GrpcConfig::new(server.url.clone()).token(&token)).unwrap();

    // Objects holding the marker: small, and 3 MiB with the marker at the start, across the
    // first chunk boundary and at the end.
    let small = Bytes::from(format!("{marker} small object {marker}"));
    let mut big = payload(3 << 20, 9).to_vec();
    for at in [0, (1 << 20) - marker.len() / 2, big.len() - marker.len()] {
        big[at..at + marker.len()].copy_from_slice(marker.as_bytes());
    }
    let big = Bytes::from(big);
    let k1 = c.put(small.clone()).await.unwrap();
    let k2 = c.put(big.clone()).await.unwrap();
    assert_eq!(c.get(&k1).await.unwrap(), Some(small.clone()));
    assert_eq!(c.get(&k2).await.unwrap(), Some(big.clone()));
    assert_eq!(
        c.get_range(&k2, 0..marker.len() as u64).await.unwrap(),
        Some(Bytes::from(marker.clone()))
    );
    let batch = c
        .put_batch(vec![small.clone(), small.clone()], &Default::default())
        .await
        .unwrap();
    assert_eq!(c.get_batch(&batch).await.unwrap()[0], Some(small.clone()));
    c.set(&Key::from("chosen-key"), small.clone())
        .await
        .unwrap();
    // Failing calls log too: a digest that does not match, a wrong token.
    let e = c
        .put_stream(
            futures::stream::iter([Ok(small.clone())]),
            UploadOptions {
                digest: DigestAlgorithm::Blake3.digest(b"something else"),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e:?}");
    let bad =
        GrpcConnector::with_config(GrpcConfig::new(server.url.clone()).token(&wrong)).unwrap();
    assert!(matches!(
        bad.put(small.clone()).await.unwrap_err(),
        Error::Unauthorized { .. }
    ));
    assert!(matches!(
        bad.get(&k1).await.unwrap_err(),
        Error::Unauthorized { .. }
    ));
    c.evict_batch(&batch).await.unwrap();
    c.evict(&k1).await.unwrap();

    let status = server
        .terminate(Duration::from_secs(30))
        .expect("server exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    let out = server.output();
    let text = String::from_utf8_lossy(&out);
    // The logging was really on: the server's own events and the transport's traces.
    assert!(text.contains("proxystore server listening"), "{text}");
    assert!(text.contains("TRACE"), "no trace-level lines in:\n{text}");
    assert!(
        out.len() > 10_000,
        "only {} bytes of logs: {text}",
        out.len()
    );
    for (what, secret) in [
        ("object contents", &marker),
        ("the token", &token),
        ("a wrong token", &wrong),
    ] {
        assert!(
            !contains(&out, secret.as_bytes()),
            "the server logged {what} ({} bytes of logs)",
            out.len()
        );
    }
    println!("{} bytes of trace logs, no contents or tokens", out.len());
}

/// Every file under `root` except those under `skip`, with its contents.
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.starts_with(skip) {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

/// Keys that must be refused: they name something other than a plain file in the directory.
fn hostile_keys() -> Vec<String> {
    vec![
        String::new(),
        ".".into(),
        "..".into(),
        "../x".into(),
        "../secret".into(),
        "../../secret".into(),
        "/abs".into(),
        "/etc/passwd".into(),
        "a/../../b".into(),
        "a/b".into(),
        "sub/../../secret".into(),
        "a\\b".into(),
        "..\\secret".into(),
        "nul\0byte".into(),
        "secret\0".into(),
        ".tmp-planted".into(),
        "k".repeat(256),
        "k".repeat(4096),
        "é".repeat(128),
        "ключ/../../secret".into(),
        "./x".into(),
    ]
}

/// Odd keys that are plain file names: they are stored, as files directly in the directory.
fn odd_but_valid_keys() -> Vec<String> {
    vec![
        "...".into(),
        "%2e%2e%2fsecret".into(),
        "~".into(),
        "-".into(),
        " ".into(),
        "key with spaces".into(),
        "line\nbreak".into(),
        "ключ-✓-鍵".into(),
        "\u{202e}txt.exe".into(),
        "é".repeat(127),
        "k".repeat(255),
        ".hidden".into(),
        "..x".into(),
    ]
}

/// A sandbox: `root/secret`, `root/other/file`, and the store directory `root/store`.
fn sandbox() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("secret"), b"secret bytes").unwrap();
    std::fs::create_dir(root.path().join("other")).unwrap();
    std::fs::write(root.path().join("other/file"), b"other bytes").unwrap();
    let store = root.path().join("store");
    std::fs::create_dir(&store).unwrap();
    (root, store)
}

/// The store directory holds exactly the odd-but-valid keys, as regular files.
fn assert_only_valid_keys_stored(store: &Path) {
    let mut names: Vec<String> = std::fs::read_dir(store)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            assert!(e.file_type().unwrap().is_file(), "{:?}", e.path());
            e.file_name().into_string().unwrap()
        })
        .collect();
    names.sort();
    let mut want = odd_but_valid_keys();
    want.sort();
    assert_eq!(names, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_leaves_the_file_connector_directory() {
    let (root, store) = sandbox();
    let before = snapshot(root.path(), &store);
    let c = FileConnector::new(&store).unwrap();
    let data = Bytes::from_static(b"written by a hostile key");
    for k in hostile_keys() {
        let key = Key::from(k.as_str());
        let results = [
            ("set", c.set(&key, data.clone()).await),
            ("get", c.get(&key).await.map(drop)),
            ("get_range", c.get_range(&key, 0..4).await.map(drop)),
            ("exists", c.exists(&key).await.map(drop)),
            ("evict", c.evict(&key).await),
            (
                "get_batch",
                c.get_batch(std::slice::from_ref(&key)).await.map(drop),
            ),
            (
                "evict_batch",
                c.evict_batch(std::slice::from_ref(&key)).await,
            ),
        ];
        for (op, r) in results {
            assert!(
                matches!(r, Err(Error::InvalidKey { .. })),
                "{op}({k:?}) gave {r:?}"
            );
        }
    }
    for k in odd_but_valid_keys() {
        let key = Key::from(k.as_str());
        let value = Bytes::from(format!("value of {k}"));
        c.set(&key, value.clone()).await.unwrap();
        assert_eq!(c.get(&key).await.unwrap(), Some(value), "{k:?}");
        assert!(
            store.join(&k).is_file(),
            "{k:?} is not a file in the directory"
        );
    }
    assert_only_valid_keys_stored(&store);
    assert_eq!(snapshot(root.path(), &store), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_leaves_the_file_backend_directory() {
    let (root, store) = sandbox();
    let before = snapshot(root.path(), &store);
    let server = spawn(ServerConfig::default().file(&store)).unwrap();
    let mut raw = StoreServiceClient::new(channel(&server.url()).await);
    let c = server.connector().unwrap();
    let data = Bytes::from_static(b"written by a hostile key");
    for k in hostile_keys() {
        let mut codes = vec![
            (
                "Get",
                raw_get(&mut raw, &k, None)
                    .await
                    .map(drop)
                    .map_err(|s| s.code()),
            ),
            (
                "Exists",
                raw.exists(v1::ExistsRequest { key: k.clone() })
                    .await
                    .map(drop)
                    .map_err(|s| s.code()),
            ),
            (
                "Evict",
                raw.evict(v1::EvictRequest { key: k.clone() })
                    .await
                    .map(drop)
                    .map_err(|s| s.code()),
            ),
            (
                "GetBatch",
                raw.get_batch(v1::GetBatchRequest {
                    keys: vec![k.clone()],
                    max_response_bytes: 0,
                })
                .await
                .map(drop)
                .map_err(|s| s.code()),
            ),
            (
                "EvictBatch",
                raw.evict_batch(v1::EvictBatchRequest {
                    keys: vec![k.clone()],
                })
                .await
                .map(drop)
                .map_err(|s| s.code()),
            ),
        ];
        // An empty key in a put asks the server to choose one: not hostile there.
        if !k.is_empty() {
            codes.push((
                "Put",
                raw.put(futures::stream::iter(put_msgs(&k, data.clone())))
                    .await
                    .map(drop)
                    .map_err(|s| s.code()),
            ));
            codes.push((
                "PutBatch",
                raw.put_batch(v1::PutBatchRequest {
                    items: vec![v1::PutBatchItem {
                        key: k.clone(),
                        data: data.clone(),
                        ..Default::default()
                    }],
                })
                .await
                .map(drop)
                .map_err(|s| s.code()),
            ));
        }
        for (call, r) in codes {
            assert_eq!(r, Err(Code::InvalidArgument), "{call}({k:?})");
        }
        // Through the connector: the same refusal, as `Error::InvalidKey`.
        if !k.is_empty() {
            let e = c
                .set(&Key::from(k.as_str()), data.clone())
                .await
                .unwrap_err();
            assert!(matches!(e, Error::InvalidKey { .. }), "set({k:?}): {e:?}");
        }
    }
    for k in odd_but_valid_keys() {
        let key = Key::from(k.as_str());
        let value = Bytes::from(format!("value of {k}"));
        c.set(&key, value.clone()).await.unwrap();
        assert_eq!(c.get(&key).await.unwrap(), Some(value), "{k:?}");
    }
    assert_eq!(
        c.stat().await.unwrap().object_count,
        odd_but_valid_keys().len() as u64
    );
    assert_only_valid_keys_stored(&store);
    assert_eq!(snapshot(root.path(), &store), before);
}

/// Plants a symbolic link `store/name` to `target`.
#[cfg(unix)]
fn plant(store: &Path, name: &str, target: &Path) {
    std::os::unix::fs::symlink(target, store.join(name)).unwrap();
}

/// Through `c` (storing into `store`), links to `secret` planted in the directory are never
/// followed: reads are refused, writes and evictions replace or remove the link itself; a FIFO
/// is refused without blocking.
#[cfg(unix)]
async fn check_symlinks(c: &dyn Connector, store: &Path, secret: &Path) {
    for name in ["read", "range"] {
        plant(store, name, secret);
    }
    // A typed error, not the target's bytes (nor a hang on what the link points to).
    // And a permanent one: the link stays a link however often it is read, so the error is
    // not worth a retry (through the server: INTERNAL, never UNAVAILABLE).
    let r = c.get(&Key::from("read")).await;
    assert!(
        matches!(&r, Err(e @ Error::Backend { .. }) if !e.is_retryable()),
        "{r:?}"
    );
    let r = c.get_range(&Key::from("range"), 0..6).await;
    assert!(
        matches!(&r, Err(e @ Error::Backend { .. }) if !e.is_retryable()),
        "{r:?}"
    );
    assert!(!c.exists(&Key::from("read")).await.unwrap());
    // A FIFO would block an open for reading until a writer comes.
    let fifo = store.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let r = tokio::time::timeout(Duration::from_secs(20), c.get(&Key::from("fifo")))
        .await
        .expect("reading a FIFO planted under a key must not block");
    assert!(matches!(r, Err(Error::Backend { .. })), "{r:?}");
    std::fs::remove_file(fifo).unwrap();
    plant(store, "written", secret);
    c.set(&Key::from("written"), Bytes::from_static(b"new"))
        .await
        .unwrap();
    assert!(!store.join("written").is_symlink());
    assert_eq!(c.get(&Key::from("written")).await.unwrap().unwrap(), "new");
    plant(store, "evicted", secret);
    c.evict(&Key::from("evicted")).await.unwrap();
    assert!(store.join("evicted").symlink_metadata().is_err());
    assert_eq!(std::fs::read(secret).unwrap(), b"secret bytes");
    for name in ["read", "range", "written"] {
        std::fs::remove_file(store.join(name)).unwrap();
    }
}

/// Symbolic links planted in the directory by someone who can write to it: reading the key is
/// refused; writing or evicting it replaces or removes the link, never its target.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_symlinks_are_not_followed() {
    let (root, store) = sandbox();
    let secret = root.path().join("secret");
    check_symlinks(&FileConnector::new(&store).unwrap(), &store, &secret).await;
    let server = spawn(ServerConfig::default().file(&store)).unwrap();
    check_symlinks(&server.connector().unwrap(), &store, &secret).await;
    drop(server);
    // A server started over a directory with a planted link does not count it as an object.
    plant(&store, "planted", &secret);
    let server = spawn(ServerConfig::default().file(&store)).unwrap();
    let s = server.connector().unwrap().stat().await.unwrap();
    assert_eq!((s.object_count, s.bytes_used), (0, 0), "{s:?}");
}
