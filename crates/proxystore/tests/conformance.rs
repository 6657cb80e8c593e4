//! The shared conformance suite, run for the built-in connectors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use proxystore::conformance::Fixture;
use proxystore::connector::file::FileConnector;
use proxystore::connector::memory::MemoryConnector;
use proxystore::connector::multi::{MultiConnector, RoutePolicy};
use proxystore::{Connector, Key};

mod memory {
    use super::*;
    async fn fixture() -> Fixture {
        Fixture::new(MemoryConnector::new(&format!(
            "conformance-{}",
            Key::random()
        )))
    }
    proxystore::conformance_tests!(fixture);
}

mod file {
    use super::*;
    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let c = FileConnector::new(dir.path().join("objects")).expect("file connector");
        Fixture::with_guard(c, dir)
    }
    proxystore::conformance_tests!(fixture);
}

mod multi {
    use super::*;
    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let small: Arc<dyn Connector> =
            Arc::new(MemoryConnector::new(&format!("multi-{}", Key::random())));
        let large: Arc<dyn Connector> =
            Arc::new(FileConnector::new(dir.path()).expect("file connector"));
        let c = MultiConnector::builder()
            .route(
                "small",
                small,
                RoutePolicy {
                    max_size: Some(1000),
                    ..Default::default()
                },
            )
            .route(
                "large",
                large,
                RoutePolicy {
                    min_size: Some(1001),
                    ..Default::default()
                },
            )
            .build()
            .expect("multi connector");
        Fixture::with_guard(c, dir)
    }
    proxystore::conformance_tests!(fixture);
}

/// File waits share one watcher per directory: more waiters than the default limit of inotify
/// instances per user (128) all wake on their own key, none by polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_waits_share_one_watcher_per_directory() {
    use proxystore::Bytes;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let c = FileConnector::new(dir.path()).unwrap();
    let keys: Vec<Key> = (0..300).map(|_| Key::random()).collect();
    let waits: Vec<_> = keys
        .iter()
        .map(|k| {
            let (c, k) = (c.clone(), k.clone());
            tokio::spawn(async move { c.wait(&k, Duration::from_secs(30)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        waits.iter().all(|w| !w.is_finished()),
        "nothing written yet"
    );
    // One inotify instance for the directory, not one per waiter (other tests of this binary
    // may watch their own directories when run in one process).
    let inotify = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().contains("inotify"))
        })
        .count();
    assert!((1..=4).contains(&inotify), "{inotify} inotify instances");
    let started = std::time::Instant::now();
    for k in &keys {
        c.set(k, Bytes::from_static(b"x")).await.unwrap();
    }
    for w in waits {
        assert!(w.await.unwrap().unwrap());
    }
    // Polling would take up to 100 ms per waiter after its write; notified, all within a
    // fraction of that on an idle machine (bounded loosely: this is not a timing test).
    assert!(started.elapsed() < Duration::from_secs(20));
}
