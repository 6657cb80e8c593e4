//! The `proxystore-server` binary as a subprocess: the conformance suite through
//! `GrpcConnector`, a server killed part-way through a transfer, and SIGTERM.

// Helpers outside #[test] functions fail tests the way tests do: by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use proxystore::conformance::{Fixture, payload};
use proxystore::connector::grpc::{GrpcConfig, GrpcConnector};
use proxystore::connector::memory::MemoryConnector;
use proxystore::{Connector, Error, Key};
use proxystore_server::{ServerConfig, spawn};
use support::ServerProcess;

mod binary_memory {
    use super::*;
    async fn fixture() -> Fixture {
        let server = ServerProcess::start(&[]);
        Fixture::with_guard(GrpcConnector::new(server.url.clone()).unwrap(), server)
    }
    proxystore::conformance_tests!(fixture);
}

mod binary_file {
    use super::*;
    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_owned();
        let server = ServerProcess::start(&["--backend", "file", "--directory", &d]);
        let c = GrpcConnector::new(server.url.clone()).unwrap();
        Fixture::with_guard(c, (server, dir))
    }
    proxystore::conformance_tests!(fixture);
}

mod binary_token {
    use super::*;
    async fn fixture() -> Fixture {
        let server = ServerProcess::start_with_env(&[], &[("PROXYSTORE_TOKEN", "t0ken")]);
        let c =
            GrpcConnector::with_config(GrpcConfig::new(server.url.clone()).token("t0ken")).unwrap();
        Fixture::with_guard(c, server)
    }
    proxystore::conformance_tests!(fixture);
}

mod in_process_connector_backend {
    use super::*;
    async fn fixture() -> Fixture {
        let inner = Arc::new(MemoryConnector::new(&format!(
            "behind-grpc-{}",
            Key::random()
        )));
        let server = spawn(ServerConfig::default().connector(inner)).unwrap();
        Fixture::with_guard(server.connector().unwrap(), server)
    }
    proxystore::conformance_tests!(fixture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_get_gives_a_typed_error_without_hanging() {
    let mut server = ServerProcess::start(&[]);
    let c = GrpcConnector::with_config(
        GrpcConfig::new(server.url.clone()).timeout(Duration::from_secs(5)),
    )
    .unwrap();
    let key = c.put(payload(128 << 20, 3)).await.unwrap();

    // A streamed download that has started: the consumer holds back, the server is killed.
    let mut stream = c.get_stream(&key, None).await.unwrap().unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    server.kill();
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        let mut received = first.len() as u64;
        while let Some(item) = stream.next().await {
            match item {
                Ok(c) => received += c.len() as u64,
                Err(e) => return Some((received, e)),
            }
        }
        None
    })
    .await
    .expect("the download must end within the timeout, not hang");
    let (received, e) = outcome.expect("a killed server cannot deliver the whole object");
    assert!(received < 128 << 20);
    assert!(
        matches!(e, Error::Backend { .. } | Error::Timeout { .. }),
        "typed error: {e:?}"
    );
    println!(
        "killed mid-get after {received} of {} bytes: {e} (after {:?})",
        128 << 20,
        started.elapsed()
    );

    // Whole-object calls against the dead server fail the same way, after retries.
    let e = tokio::time::timeout(Duration::from_secs(20), c.get(&key))
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_during_a_whole_get_gives_a_typed_error() {
    let mut server = ServerProcess::start(&[]);
    let c = GrpcConnector::with_config(
        GrpcConfig::new(server.url.clone())
            .timeout(Duration::from_secs(5))
            .retries(1),
    )
    .unwrap();
    let key = c.put(payload(256 << 20, 4)).await.unwrap();
    let get = tokio::spawn({
        let c = c.clone();
        async move { c.get(&key).await }
    });
    // Kill once the transfer is under way (the server is sending, the client receiving).
    tokio::time::sleep(Duration::from_millis(30)).await;
    server.kill();
    let result = tokio::time::timeout(Duration::from_secs(20), get)
        .await
        .expect("no hang")
        .expect("no panic");
    match result {
        Err(e) => assert!(
            matches!(e, Error::Backend { .. } | Error::Timeout { .. }),
            "{e:?}"
        ),
        // The whole object may already have arrived on a fast machine; then it is complete.
        Ok(Some(b)) => assert_eq!(b.len(), 256 << 20),
        Ok(None) => panic!("a killed server does not make an object absent"),
    }
}

#[test]
fn sigterm_stops_the_server_gracefully() {
    let mut server = ServerProcess::start(&[]);
    let status = server
        .terminate(Duration::from_secs(15))
        .expect("server exits after SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let out = std::process::Command::new(support::SERVER_BIN)
        .args(["--backend", "file"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--directory"));
    let out = std::process::Command::new(support::SERVER_BIN)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--max-object-bytes",
        "PROXYSTORE_TOKEN",
        "--tls-cert",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}
