//! The `proxystore-server` binary (file backend) killed with SIGKILL in the middle of a large
//! put, then restarted on the same port and directory: the client gets a typed, retryable
//! error within its timeout, nothing of the cut-off object is visible after the restart (no
//! object, no temporary file), what was stored before survives, and the same connector works
//! again. (A kill in the middle of a get is in `binary.rs`.)

// Helpers outside #[test] functions fail tests the way tests do: by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use proxystore::conformance::payload;
use proxystore::connector::grpc::{GrpcConfig, GrpcConnector, UploadOptions};
use proxystore::{Connector, Error, Key};
use support::ServerProcess;

/// The connector's timeout per call (between messages, for streams).
const TIMEOUT: Duration = Duration::from_secs(5);
/// Size of the object cut off.
const BIG: usize = 64 << 20;
const CHUNK: usize = 1 << 20;

fn tmp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

/// Wait (at most 30 s, for a loaded machine) until `cond` holds.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(30), "never: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn start(listen: &str, dir: &Path) -> ServerProcess {
    let d = dir.to_str().unwrap();
    ServerProcess::start_on(listen, &["--backend", "file", "--directory", d], &[], false)
}

/// Start again on `authority` (the port of the killed server); the port may take a moment to
/// be free.
fn restart(authority: &str, dir: &Path) -> ServerProcess {
    let start_at = Instant::now();
    loop {
        match std::panic::catch_unwind(|| start(authority, dir)) {
            Ok(s) => return s,
            Err(_) if start_at.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}

/// After the restart: the cut-off object is not there, only `survivor` is, no temporary
/// file is left, and `c` (the connector used before the kill) works again.
async fn check_after_restart(c: &GrpcConnector, dir: &Path, survivor: (&Key, &Bytes), cut: &Key) {
    assert_eq!(tmp_files(dir), Vec::<String>::new(), "left after restart");
    let t = Instant::now();
    // The first call reconnects (retried while the connection is refused).
    assert!(!c.exists(cut).await.unwrap(), "a partial object is visible");
    println!("first call after the restart took {:?}", t.elapsed());
    assert_eq!(c.get(cut).await.unwrap(), None);
    let s = c.stat().await.unwrap();
    assert_eq!(
        (s.object_count, s.bytes_used, s.bytes_in_flight),
        (1, survivor.1.len() as u64, 0),
        "{s:?}"
    );
    assert_eq!(c.get(survivor.0).await.unwrap().as_ref(), Some(survivor.1));
    // Normal service, including the same large put under the same key.
    let data = payload(BIG, 11);
    c.set(cut, data.clone()).await.unwrap();
    assert_eq!(c.get(cut).await.unwrap(), Some(data));
    let key = c.put(payload(1000, 12)).await.unwrap();
    assert_eq!(c.get(&key).await.unwrap(), Some(payload(1000, 12)));
    assert_eq!(tmp_files(dir), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_streamed_put_restarts_clean() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start("127.0.0.1:0", dir.path());
    let authority = server.authority().to_owned();
    let c = GrpcConnector::with_config(
        GrpcConfig::new(server.url.clone())
            .timeout(TIMEOUT)
            .retries(5),
    )
    .unwrap();
    let survivor = payload(1000, 1);
    let survivor_key = c.put(survivor.clone()).await.unwrap();

    // 64 MiB from a source that reports how far it got; the server is killed once 8 MiB
    // have been taken and the server is writing its temporary file.
    let (taken_tx, taken_rx) = std::sync::mpsc::channel::<usize>();
    let source = futures::stream::iter(0..BIG / CHUNK).map(move |i| {
        let _ = taken_tx.send(i);
        Ok(payload(CHUNK, i as u64))
    });
    let cut = Key::from(format!("cut-{}", Key::random()));
    let upload = tokio::spawn({
        let c = c.clone();
        let cut = cut.clone();
        async move {
            let started = Instant::now();
            let r = c
                .put_stream(
                    source,
                    UploadOptions {
                        key: Some(cut),
                        size: Some(BIG as u64),
                        ..Default::default()
                    },
                )
                .await;
            (r, started.elapsed())
        }
    });
    wait_for("8 MiB taken by the upload", || {
        taken_rx.try_iter().any(|i| i >= 8)
    })
    .await;
    wait_for("a temporary file on the server", || {
        !tmp_files(dir.path()).is_empty()
    })
    .await;
    let killed_at = Instant::now();
    server.kill();
    let (result, _) = tokio::time::timeout(Duration::from_secs(60), upload)
        .await
        .expect("the put must end, not hang")
        .expect("no panic");
    let ended_after = killed_at.elapsed();
    let e = result.expect_err("the server died before the object was complete");
    assert!(
        matches!(e, Error::Backend { .. } | Error::Timeout { .. }),
        "typed error: {e:?}"
    );
    assert!(e.is_retryable(), "{e:?}");
    assert!(
        ended_after < TIMEOUT + Duration::from_secs(10),
        "the put ended {ended_after:?} after the kill (timeout {TIMEOUT:?})"
    );
    println!("put ended {ended_after:?} after the kill: {e}");
    // The killed server could not clean up: its temporary file is still there.
    assert!(!tmp_files(dir.path()).is_empty());
    assert!(!dir.path().join(cut.as_str()).exists());

    // While it is down, calls fail the same way, within the bound.
    let t = Instant::now();
    let e = c.exists(&survivor_key).await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert!(
        t.elapsed() < TIMEOUT + Duration::from_secs(10),
        "{:?}",
        t.elapsed()
    );

    let _server = restart(&authority, dir.path());
    check_after_restart(&c, dir.path(), (&survivor_key, &survivor), &cut).await;
}

/// The same with a whole-object put (`Connector::set` of 64 MiB in memory), killed as soon as
/// the server has begun writing it: the object is then either absent or, had the transfer won
/// the race, complete; never partial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_whole_put_leaves_nothing_partial() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start("127.0.0.1:0", dir.path());
    let authority = server.authority().to_owned();
    let c = GrpcConnector::with_config(
        GrpcConfig::new(server.url.clone())
            .timeout(TIMEOUT)
            .retries(5),
    )
    .unwrap();
    let survivor = payload(1000, 1);
    let survivor_key = c.put(survivor.clone()).await.unwrap();
    let data = payload(BIG, 2);
    let cut = Key::from(format!("cut-{}", Key::random()));
    let upload = tokio::spawn({
        let (c, cut, data) = (c.clone(), cut.clone(), data.clone());
        async move { c.set(&cut, data).await }
    });
    wait_for("a temporary file on the server", || {
        !tmp_files(dir.path()).is_empty()
    })
    .await;
    server.kill();
    let result = tokio::time::timeout(Duration::from_secs(60), upload)
        .await
        .expect("the put must end, not hang")
        .expect("no panic");
    let _server = restart(&authority, dir.path());
    match result {
        Err(e) => {
            assert!(e.is_retryable(), "{e:?}");
            println!("whole put cut off: {e}");
            check_after_restart(&c, dir.path(), (&survivor_key, &survivor), &cut).await;
        }
        Ok(()) => {
            // The server committed before it died: the object is whole.
            println!("whole put finished before the kill");
            assert_eq!(c.get(&cut).await.unwrap(), Some(data));
            assert_eq!(tmp_files(dir.path()), Vec::<String>::new());
        }
    }
}
