//! Replays every file of the `h2_connection` fuzz corpus (`fuzz/corpus/h2_connection/`)
//! through the same function as the fuzz target: the bytes a client writes on an HTTP/2
//! connection, served by the real server stack over an in-memory pipe.
//!
//! The seed files are real connections: what a `GrpcConnector` wrote after the preface while
//! it made its calls on a server of the harness's settings. They are recorded when missing,
//! or again with `PROXYSTORE_WRITE_FUZZ_SEEDS=1` (`cargo nextest run -p proxystore-server
//! --test h2_fuzz_corpus`); a recording holds random keys and timing-dependent frames, so it
//! is not compared with a new one, but each seed must still do on replay what it did live.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../fuzz/src/h2_harness.rs"]
#[allow(unreachable_pub, dead_code)]
mod harness;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use harness::{CHUNK, FIXTURE_KEY, Outcome, PREFACE, TOKEN, fixture};
use prost::Message;
use proxystore::Key;
use proxystore::connector::Connector;
use proxystore::connector::grpc::{GrpcConfig, GrpcConnector, UploadOptions};
use proxystore_proto::v1;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/h2_connection")
}

/// Size of the object the put seeds store.
const PUT_SIZE: usize = 3000;
/// Size of the streamed put: five upload chunks.
const STREAM_SIZE: usize = 5 * CHUNK;

fn object(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 239) as u8).collect()
}

/// The calls a client makes on a seed's connection.
type Calls = fn(GrpcConnector) -> Pin<Box<dyn Future<Output = ()> + Send>>;
/// What the replay of a seed must show.
type Expect = fn(&Outcome);

/// The seeds: file name, the calls the client makes, and what the replay must show.
fn seeds() -> Vec<(&'static str, Calls, Expect)> {
    vec![
        (
            "put",
            |c| {
                Box::pin(async move {
                    c.put(Bytes::from(object(PUT_SIZE))).await.unwrap();
                })
            },
            |o| {
                assert_eq!(o.stat.object_count, 2, "{:?}", o.stat);
                assert_eq!(o.stat.bytes_used, fixture().len() as u64 + PUT_SIZE as u64);
            },
        ),
        (
            "get",
            |c| {
                Box::pin(async move {
                    let got = c.get(&Key::from(FIXTURE_KEY)).await.unwrap();
                    assert_eq!(got.as_deref(), Some(&fixture()[..]));
                })
            },
            |o| {
                let answered = o.streams().into_iter().any(|s| download(o, s) == fixture());
                assert!(answered, "no stream carried the fixture: {:?}", o.frames);
            },
        ),
        (
            "put-stream",
            |c| {
                Box::pin(async move {
                    let chunks = object(STREAM_SIZE)
                        .chunks(CHUNK)
                        .map(|c| Ok(Bytes::copy_from_slice(c)))
                        .collect::<Vec<_>>();
                    let options = UploadOptions {
                        size: Some(STREAM_SIZE as u64),
                        ..Default::default()
                    };
                    c.put_stream(futures::stream::iter(chunks), options)
                        .await
                        .unwrap();
                })
            },
            |o| {
                assert_eq!(o.stat.object_count, 2, "{:?}", o.stat);
                assert_eq!(
                    o.stat.bytes_used,
                    fixture().len() as u64 + STREAM_SIZE as u64
                );
            },
        ),
        (
            "exists-evict",
            |c| {
                Box::pin(async move {
                    let key = Key::from(FIXTURE_KEY);
                    assert!(c.exists(&key).await.unwrap());
                    c.evict(&key).await.unwrap();
                })
            },
            |o| {
                assert_eq!(o.stat.object_count, 0, "{:?}", o.stat);
                assert_eq!(o.stat.bytes_used, 0);
            },
        ),
        (
            "put-cancelled",
            |c| {
                Box::pin(async move {
                    // A declared size reserves it all up front; the error after the first
                    // chunk cancels the upload.
                    let data = futures::stream::iter([Ok(Bytes::from(object(2 * CHUNK)))]).chain(
                        futures::stream::once(async {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Err(proxystore::Error::config("cancelled by the seed"))
                        }),
                    );
                    let options = UploadOptions {
                        size: Some(8 * CHUNK as u64),
                        ..Default::default()
                    };
                    assert!(c.put_stream(data, options).await.is_err());
                })
            },
            |o| {
                // (The harness checks that nothing stays reserved.)
                assert_eq!(o.stat.object_count, 1, "{:?}", o.stat);
                assert_eq!(o.stat.bytes_used, fixture().len() as u64);
            },
        ),
    ]
}

/// The object a Get answer on `stream` carries (its chunks, in order).
fn download(o: &Outcome, stream: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for m in o.messages(stream) {
        if let Ok(v1::GetResponse {
            msg: Some(v1::get_response::Msg::Chunk(c)),
        }) = v1::GetResponse::decode(m)
        {
            out.extend_from_slice(&c);
        }
    }
    out
}

/// Record what a client writes on one connection while `calls` run: a server of the
/// harness's settings on a loopback port, reading through a tap.
fn record(calls: Calls) -> Vec<u8> {
    proxystore::runtime::block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let written = Arc::new(Mutex::new(Vec::new()));
        let server = {
            let written = written.clone();
            tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let store = harness::store().await;
                let tap = harness::Conn(Tap { io: tcp, written });
                proxystore_server::fuzzing::serve_connection(&harness::config(), store, tap)
                    .await
                    .unwrap();
            })
        };
        let mut config = GrpcConfig::new(format!("http://{address}")).token(TOKEN);
        config.chunk_size = CHUNK;
        let client = GrpcConnector::with_config(config).unwrap();
        calls(client.clone()).await;
        // The frames that follow the last answer (window updates, acknowledgements), and the
        // GOAWAY of the client's close.
        drop(client);
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.await.unwrap();
        let written = written.lock().unwrap().clone();
        assert!(written.starts_with(PREFACE), "not an HTTP/2 connection");
        written[PREFACE.len()..].to_vec()
    })
    .unwrap()
}

/// A connection that keeps a copy of what it reads.
struct Tap {
    io: tokio::net::TcpStream,
    written: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Tap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let new = buf.filled()[before..].to_vec();
        self.written.lock().unwrap().extend_from_slice(&new);
        r
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[test]
fn seeds_replay_what_the_client_did() {
    let rewrite = std::env::var_os("PROXYSTORE_WRITE_FUZZ_SEEDS").is_some();
    std::fs::create_dir_all(corpus()).unwrap();
    for (name, calls, expect) in seeds() {
        let path = corpus().join(format!("seed-{name}"));
        if rewrite || !path.exists() {
            std::fs::write(&path, record(calls)).unwrap();
        }
        let outcome = harness::run(&std::fs::read(&path).unwrap());
        expect(&outcome);
    }
}

#[test]
fn h2_connection_corpus() {
    let files: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("fuzz/corpus/h2_connection is missing")
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() >= 5, "corpus has {} files", files.len());
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let result = std::panic::catch_unwind(|| harness::h2_connection(&data));
        assert!(result.is_ok(), "h2_connection panicked on {}", f.display());
    }
    eprintln!("h2_connection: {} inputs replayed", files.len());
}

/// The harness's checks hold on what the server sends to a client that sends nothing (its
/// SETTINGS, then a GOAWAY once the client closes) and to garbage (a GOAWAY).
#[test]
fn harness_sees_the_server_frames() {
    let silent = harness::run(b"");
    assert_eq!(silent.frames[0].kind, 4, "{:?}", silent.frames);
    let garbage = harness::run(&[0xff; 64]);
    assert!(
        garbage.frames.iter().any(|f| f.kind == 7),
        "no GOAWAY: {:?}",
        garbage.frames
    );
    assert_eq!(garbage.stat.object_count, 1);
    // The frame check fails on a frame larger than allowed, on a cut frame, and on a stream
    // the client did not name.
    let frame = |len: usize, kind: u8, stream: u8| {
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            0,
            0,
            0,
            0,
            stream,
        ];
        f.resize(9 + len, 0);
        f
    };
    let client = harness::client(&frame(0, 1, 1));
    assert_eq!(client.max_frame, 16 << 10);
    assert_eq!(harness::frames(&frame(6, 4, 0), &client).len(), 1);
    let fails = |output: Vec<u8>| {
        std::panic::catch_unwind(|| harness::frames(&output, &harness::client(&frame(0, 1, 1))))
            .is_err()
    };
    assert!(fails(frame(20_000, 4, 0)));
    assert!(fails(frame(6, 4, 0)[..10].to_vec()));
    assert!(fails([frame(6, 4, 0), frame(4, 3, 3)].concat()));
    assert!(!fails([frame(6, 4, 0), frame(4, 3, 1)].concat()));
    let mut settings = frame(6, 4, 0);
    settings[9..].copy_from_slice(&[0, 5, 0, 4, 0, 0]);
    assert_eq!(harness::client(&settings).max_frame, 256 << 10);
}
