//! Replays every file of the `grpc_messages` fuzz corpus (`fuzz/corpus/grpc_messages/`)
//! through the same function as the fuzz target: request bodies sent to the real store
//! service in-process.
//!
//! The seed files are valid requests of every call; `PROXYSTORE_WRITE_FUZZ_SEEDS=1` rewrites
//! them from the current code (`cargo nextest run -p proxystore-server --test fuzz_corpus`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../fuzz/src/server_harness.rs"]
#[allow(unreachable_pub, dead_code)]
mod harness;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use harness::{
    Auth, LARGE_KEY, METHODS, MessageBytes, SMALL_KEY, digest, frames, put_chunk, put_finish,
    put_header,
};
use prost::Message;
use proxystore::DigestAlgorithm;
use proxystore_proto::v1;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/grpc_messages")
}

/// A seed: its file name, the call, the credentials, the delivery (0: one piece; k: pieces of
/// 2^(k-1) bytes), the body, and the status the service answers.
struct Seed {
    name: &'static str,
    method: &'static str,
    auth: Auth,
    split: u8,
    body: Vec<u8>,
    code: i32,
}

impl Seed {
    fn input(&self) -> Vec<u8> {
        let method = METHODS.iter().position(|m| *m == self.method).unwrap() as u8;
        let auth = match self.auth {
            Auth::Right => 0,
            Auth::Missing => 2,
            Auth::Wrong => 3,
        };
        let mut input = vec![method | auth << 3 | self.split << 5];
        input.extend_from_slice(&self.body);
        input
    }
}

fn seed(name: &'static str, method: &'static str, messages: &[&dyn MessageBytes]) -> Seed {
    Seed {
        name,
        method,
        auth: Auth::Right,
        split: 0,
        body: frames(messages),
        code: 0,
    }
}

fn seeds() -> Vec<Seed> {
    let data = b"an object of the fuzzing seeds";
    let header = |key: &str, size: Option<u64>, alg| {
        put_header(v1::PutHeader {
            key: key.into(),
            size,
            digest: digest(alg, data),
            ..Default::default()
        })
    };
    let get = |key: &str, range: Option<(u64, u64)>| v1::GetRequest {
        key: key.into(),
        range: range.map(|(start, end)| v1::ByteRange { start, end }),
    };
    let keys = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    let full_header = put_header(v1::PutHeader {
        key: "named-object".into(),
        size: None,
        digest: None,
        ttl_millis: 60_000,
        name: "weights.bin".into(),
        tags: vec!["big".into(), "ünïcode".into()],
    });
    let mut seeds = vec![
        seed(
            "put-new-key",
            "Put",
            &[
                &header("", Some(data.len() as u64), DigestAlgorithm::Xxh3),
                &put_chunk(data),
            ],
        ),
        seed(
            "put-chunks-blake3",
            "Put",
            &[
                &header("chunked", Some(data.len() as u64), DigestAlgorithm::Blake3),
                &put_chunk(&data[..10]),
                &put_chunk(&data[10..20]),
                &put_chunk(&data[20..]),
            ],
        ),
        seed(
            "put-undeclared-size-ttl-tags",
            "Put",
            &[
                &full_header,
                &put_chunk(data),
                &put_chunk(data),
                &put_finish(),
            ],
        ),
        seed(
            "put-empty",
            "Put",
            &[&header("empty", Some(0), DigestAlgorithm::None)],
        ),
        seed("get-small", "Get", &[&get(SMALL_KEY, None)]),
        seed("get-large", "Get", &[&get(LARGE_KEY, None)]),
        seed("get-range", "Get", &[&get(LARGE_KEY, Some((1000, 20_000)))]),
        seed(
            "exists-small",
            "Exists",
            &[&v1::ExistsRequest {
                key: SMALL_KEY.into(),
            }],
        ),
        seed(
            "exists-missing",
            "Exists",
            &[&v1::ExistsRequest {
                key: "missing".into(),
            }],
        ),
        seed(
            "evict-large",
            "Evict",
            &[&v1::EvictRequest {
                key: LARGE_KEY.into(),
            }],
        ),
        seed("stat", "Stat", &[&v1::StatRequest {}]),
        seed(
            "put-batch",
            "PutBatch",
            &[&v1::PutBatchRequest {
                items: vec![
                    v1::PutBatchItem {
                        key: "batch-a".into(),
                        data: Bytes::from_static(data),
                        digest: digest(DigestAlgorithm::Xxh3, data),
                        ttl_millis: 0,
                        name: String::new(),
                    },
                    v1::PutBatchItem {
                        key: String::new(),
                        data: Bytes::from_static(b"second"),
                        digest: None,
                        ttl_millis: 5_000,
                        name: "second".into(),
                    },
                ],
            }],
        ),
        seed(
            "get-batch",
            "GetBatch",
            &[&v1::GetBatchRequest {
                keys: keys(&[SMALL_KEY, LARGE_KEY, "missing"]),
                max_response_bytes: 0,
            }],
        ),
        seed(
            "evict-batch",
            "EvictBatch",
            &[&v1::EvictBatchRequest {
                keys: keys(&[SMALL_KEY, "missing"]),
            }],
        ),
    ];
    let mut missing = seed("get-missing", "Get", &[&get("missing", None)]);
    missing.code = 5;
    let mut pieces = seed(
        "put-in-4-byte-pieces",
        "Put",
        &[
            &header("pieces", Some(data.len() as u64), DigestAlgorithm::Xxh3),
            &put_chunk(data),
        ],
    );
    pieces.split = 3;
    let mut anonymous = seed("get-without-token", "Get", &[&get(SMALL_KEY, None)]);
    anonymous.auth = Auth::Missing;
    anonymous.code = 16;
    let mut wrong = seed(
        "put-wrong-token",
        "Put",
        &[
            &header("", Some(data.len() as u64), DigestAlgorithm::Xxh3),
            &put_chunk(data),
        ],
    );
    wrong.auth = Auth::Wrong;
    wrong.code = 16;
    seeds.extend([missing, pieces, anonymous, wrong]);
    seeds
}

#[test]
fn seeds_are_valid_requests() {
    let seeds = seeds();
    if std::env::var_os("PROXYSTORE_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(corpus()).unwrap();
        for s in &seeds {
            std::fs::write(corpus().join(format!("seed-{}", s.name)), s.input()).unwrap();
        }
    }
    for s in &seeds {
        let file = std::fs::read(corpus().join(format!("seed-{}", s.name))).unwrap();
        assert_eq!(file, s.input(), "seed-{} is not current", s.name);
        let outcome = harness::call(s.method, s.auth, &s.body);
        assert_eq!(outcome.code, s.code, "{}: {outcome:?}", s.name);
        harness::grpc_messages(&file);
    }
    // The fixtures are there, with their contents.
    let got = harness::call(
        "Get",
        Auth::Right,
        &frames(&[&v1::GetRequest {
            key: LARGE_KEY.into(),
            range: None,
        }]),
    );
    let messages: Vec<v1::GetResponse> = got
        .messages
        .iter()
        .map(|m| v1::GetResponse::decode(m.clone()).unwrap())
        .collect();
    assert_eq!(messages.len(), 4, "a header and three chunks");
    let mut bytes = Vec::new();
    for m in &messages[1..] {
        match &m.msg {
            Some(v1::get_response::Msg::Chunk(c)) => bytes.extend_from_slice(c),
            other => panic!("chunk expected: {other:?}"),
        }
    }
    assert_eq!(bytes, harness::large_object());
}

#[test]
fn grpc_messages_corpus() {
    let files: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("fuzz/corpus/grpc_messages is missing")
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() >= 18, "corpus has {} files", files.len());
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let result = std::panic::catch_unwind(|| harness::grpc_messages(&data));
        assert!(result.is_ok(), "grpc_messages panicked on {}", f.display());
    }
    eprintln!("grpc_messages: {} inputs replayed", files.len());
}

/// The service mounted in a tonic router of one's own serves the store like `Server` does.
#[test]
fn store_service_mounts_in_a_router() {
    use proxystore::connector::Connector;
    use proxystore::connector::grpc::{GrpcConfig, GrpcConnector};
    use proxystore_server::{ServerConfig, store_service};

    proxystore::runtime::block_on(async {
        let store = store_service(&ServerConfig::default().token("t"))
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = GrpcConfig::new(format!("http://{}", listener.local_addr().unwrap()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(store)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        let anonymous = GrpcConnector::with_config(config.clone()).unwrap();
        let refused = anonymous.exists(&proxystore::Key::from("k")).await;
        assert!(
            matches!(refused, Err(proxystore::Error::Unauthorized { .. })),
            "{refused:?}"
        );
        config.token = Some("t".into());
        let client = GrpcConnector::with_config(config).unwrap();
        let key = client.put(Bytes::from_static(b"mounted")).await.unwrap();
        assert_eq!(
            client.get(&key).await.unwrap(),
            Some(Bytes::from_static(b"mounted"))
        );
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    })
    .unwrap();
}
