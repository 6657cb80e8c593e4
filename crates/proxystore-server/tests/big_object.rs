//! A 1 GiB object streamed through Put and Get, with the peak memory (VmHWM) of client and
//! server each measured and printed. Alone in its test binary, so that the client's peak is
//! this test's own.

// Helpers outside #[test] functions fail tests the way tests do: by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use proxystore::Connector;
use proxystore::conformance::payload;
use proxystore::connector::grpc::{GrpcConnector, UploadOptions};
use support::{ServerProcess, mib, proc_status_bytes, reset_peak_rss};

const GIB: u64 = 1 << 30;
const BLOCK: usize = 1 << 20;

/// 1 GiB made of one 1 MiB pseudo-random block, repeated.
fn block() -> Bytes {
    payload(BLOCK, 42)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_object_streams_with_bounded_memory() {
    let block = block();

    // 1. Memory backend, whole-object `Connector` calls: the server must hold the object once,
    //    the client the object it sends or receives once.
    {
        let server = ServerProcess::start(&[]);
        let c = GrpcConnector::new(server.url.clone()).unwrap();
        reset_peak_rss();
        let mut data = Vec::with_capacity(GIB as usize);
        while data.len() < GIB as usize {
            data.extend_from_slice(&block);
        }
        let data = Bytes::from(data);
        let t = Instant::now();
        let key = c.put(data).await.unwrap();
        let put = t.elapsed();
        let t = Instant::now();
        let got = c.get(&key).await.unwrap().unwrap();
        let get = t.elapsed();
        assert_eq!(got.len() as u64, GIB);
        for chunk in got.chunks(BLOCK) {
            assert!(chunk == &block[..], "corrupt block");
        }
        drop(got);
        let client = proc_status_bytes("self", "VmHWM:");
        let server_peak = proc_status_bytes(&server.pid().to_string(), "VmHWM:");
        println!(
            "1 GiB via put/get, memory backend: put {put:?}, get {get:?}; peak RSS client {}, server {}",
            mib(client),
            mib(server_peak)
        );
        // "Well below twice the object size": each side holds it about once.
        assert!(client < GIB * 3 / 2, "client peak {}", mib(client));
        assert!(
            server_peak < GIB * 3 / 2,
            "server peak {}",
            mib(server_peak)
        );
    }

    // 2. File backend, streamed calls: neither side ever holds the object.
    {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_owned();
        let server = ServerProcess::start(&["--backend", "file", "--directory", &d]);
        let c = GrpcConnector::new(server.url.clone()).unwrap();
        reset_peak_rss();
        let base = proc_status_bytes("self", "VmRSS:");
        let blocks = (GIB as usize) / BLOCK;
        let source = futures::stream::iter((0..blocks).map({
            let block = block.clone();
            move |_| Ok(block.clone())
        }));
        let t = Instant::now();
        let key = c
            .put_stream(
                source,
                UploadOptions {
                    size: Some(GIB),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let put = t.elapsed();
        let t = Instant::now();
        let mut stream = c.get_stream(&key, None).await.unwrap().unwrap();
        assert_eq!(stream.info.size, GIB);
        let mut pending: Vec<u8> = Vec::with_capacity(BLOCK);
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            total += chunk.len() as u64;
            pending.extend_from_slice(&chunk);
            while pending.len() >= BLOCK {
                assert!(pending[..BLOCK] == block[..], "corrupt block");
                pending.drain(..BLOCK);
            }
        }
        let get = t.elapsed();
        assert_eq!(total, GIB);
        let client = proc_status_bytes("self", "VmHWM:").saturating_sub(base);
        let server_peak = proc_status_bytes(&server.pid().to_string(), "VmHWM:");
        println!(
            "1 GiB via put_stream/get_stream, file backend: put {put:?}, get {get:?}; peak RSS \
             client +{} over its baseline, server {}",
            mib(client),
            mib(server_peak)
        );
        assert!(client < 256 << 20, "client peak +{}", mib(client));
        assert!(server_peak < 256 << 20, "server peak {}", mib(server_peak));
        let on_disk = std::fs::metadata(dir.path().join(key.as_str()))
            .unwrap()
            .len();
        assert_eq!(on_disk, GIB);
    }
}
