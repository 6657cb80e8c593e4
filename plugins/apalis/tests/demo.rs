//! The demo pipeline end to end on a real redis-server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proxystore::connector::file::FileConnector;
use proxystore::{Key, Store};
use proxystore_apalis::demo::{self, LocalRedis, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_and_leaves_nothing_behind() {
    let redis = LocalRedis::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        format!("demo-{}", Key::random()),
        FileConnector::new(dir.path()).unwrap(),
    );
    let options = Options {
        tasks: 8,
        chunk_len: 100_000,
        anomaly_every: 4,
        ..Options::default()
    };
    let mut seen = Vec::new();
    let summary = demo::run_with(&redis.url(), store, &options, |done, total| {
        seen.push((done, total))
    })
    .await
    .unwrap();
    println!("{summary}");
    assert_eq!(summary.tasks, 8);
    assert!(summary.correct, "{summary}");
    assert_eq!(
        summary.args_proxied, 16,
        "values and baseline of each chunk"
    );
    assert_eq!(summary.anomalies, 2);
    assert_eq!(summary.proxies_never_resolved, 6);
    assert_eq!(summary.objects_left, 0);
    assert!(summary.largest_job_in_redis < 2_000, "{summary}");
    assert_eq!(seen.last(), Some(&(8, 8)));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
