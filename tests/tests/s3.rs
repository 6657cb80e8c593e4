//! The S3 connector against an S3-compatible server (s3s-fs) that each test starts in-process on
//! a free loopback port: the shared conformance suite, multipart uploads (and their abort on
//! failure), faults (server stopped, restarted, hung), and wrong credentials.

// Helpers outside #[test] functions fail the test the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proxystore::conformance::{Fixture, payload};
use proxystore::connector::s3::{MIN_PART_SIZE, S3Config, S3Connector};
use proxystore::{Bytes, Connector, Error, Key, PutOptions};
use proxystore_tests::s3_server::{BUCKET, S3Server};

fn start() -> S3Server {
    S3Server::start().unwrap_or_else(|e| panic!("{e:#}"))
}

fn prefix() -> String {
    format!("test-{}/", Key::random())
}

mod conformance {
    use super::*;

    async fn fixture() -> Fixture {
        let server = start();
        let c = S3Connector::with_config(server.config(&prefix())).expect("s3 connector");
        Fixture::with_guard(c, server)
    }
    proxystore::conformance_tests!(fixture);
}

/// Files of unfinished multipart uploads that s3s-fs keeps in its root.
fn upload_leftovers(server: &S3Server) -> Vec<String> {
    std::fs::read_dir(server.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".upload"))
        .collect()
}

/// By default objects up to 100 MiB go up in one PUT (a server that assembles parts by copying
/// them makes parts cost more than they save), and larger ones in 8 MiB parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_objects_up_to_100_mib_go_in_one_put() {
    let server = start();
    let c = S3Connector::with_config(server.config(&prefix())).unwrap();
    let faults = server.faults();
    let one = c.put(payload(20 << 20, 1)).await.unwrap();
    assert_eq!(faults.uploaded_parts.load(Ordering::Relaxed), 0);
    let data = payload((100 << 20) + 1, 2);
    let parts = c.put(data.clone()).await.unwrap();
    assert_eq!(
        faults.uploaded_parts.load(Ordering::Relaxed),
        13,
        "100 MiB + 1 in 8 MiB parts"
    );
    assert_eq!(faults.completed_uploads.load(Ordering::Relaxed), 1);
    assert_eq!(c.get(&parts).await.unwrap().unwrap(), data);
    c.evict_batch(&[one, parts]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_above_the_part_size_go_up_in_parts() {
    let server = start();
    let c = S3Connector::with_config(S3Config {
        part_size: MIN_PART_SIZE,
        multipart_above: MIN_PART_SIZE,
        ..server.config(&prefix())
    })
    .unwrap();
    let size = 2 * MIN_PART_SIZE as usize + 12_345;
    let data = payload(size, 5);
    let key = c.put(data.clone()).await.unwrap();
    let faults = server.faults();
    assert_eq!(faults.uploaded_parts.load(Ordering::Relaxed), 3);
    assert_eq!(faults.completed_uploads.load(Ordering::Relaxed), 1);
    assert_eq!(c.get(&key).await.unwrap().unwrap(), data);
    // A range across the boundary between parts 1 and 2.
    let boundary = MIN_PART_SIZE;
    let range = boundary - 10..boundary + 10;
    assert_eq!(
        c.get_range(&key, range.clone()).await.unwrap().unwrap(),
        data.slice(range.start as usize..range.end as usize)
    );
    // Exactly the part size is still a single PutObject.
    let small = c.put(payload(MIN_PART_SIZE as usize, 6)).await.unwrap();
    assert_eq!(faults.uploaded_parts.load(Ordering::Relaxed), 3);
    c.evict_batch(&[key, small]).await.unwrap();
    assert!(upload_leftovers(&server).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_multipart_upload_is_aborted_and_leaves_nothing() {
    let server = start();
    let c = S3Connector::with_config(S3Config {
        part_size: MIN_PART_SIZE,
        multipart_above: MIN_PART_SIZE,
        max_attempts: 2,
        ..server.config(&prefix())
    })
    .unwrap();
    server.faults().fail_upload_part.store(2, Ordering::Relaxed);
    let key = c.new_key(&PutOptions::default()).await.unwrap();
    let err = c
        .set(&key, payload(3 * MIN_PART_SIZE as usize, 8))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(server.faults().aborted_uploads.load(Ordering::Relaxed), 1);
    assert_eq!(server.faults().completed_uploads.load(Ordering::Relaxed), 0);
    assert!(!c.exists(&key).await.unwrap());
    assert_eq!(upload_leftovers(&server), Vec::<String>::new());
    // With the fault gone the same connector uploads in parts again.
    server.faults().fail_upload_part.store(0, Ordering::Relaxed);
    let data = payload(3 * MIN_PART_SIZE as usize, 9);
    c.set(&key, data.clone()).await.unwrap();
    assert_eq!(c.get(&key).await.unwrap().unwrap(), data);
}

/// Puts objects until one fails, counting successes in `done`; returns the error.
async fn put_until_error(c: S3Connector, size: usize, done: Arc<AtomicUsize>) -> Error {
    let data = payload(size, 7);
    loop {
        match c.put(data.clone()).await {
            Ok(_) => done.fetch_add(1, Ordering::SeqCst),
            Err(e) => return e,
        };
    }
}

/// Waits (at most a minute, for a loaded machine) until `done` counts one success.
async fn first_success(done: &AtomicUsize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "no put succeeded within a minute"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stopped_mid_operation_fails_fast_and_the_same_connector_recovers() {
    let mut server = start();
    let c = S3Connector::with_config(S3Config {
        part_size: MIN_PART_SIZE,
        multipart_above: MIN_PART_SIZE,
        operation_timeout_ms: 8_000,
        ..server.config(&prefix())
    })
    .unwrap();
    let before = c.put(Bytes::from_static(b"before")).await.unwrap();

    // 12 MiB multipart puts in a loop; the server stops while they run.
    let done = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(put_until_error(c.clone(), 12 << 20, done.clone()));
    // Once one put went through, the next one is under way when the server goes.
    first_success(&done).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let stopped_at = Instant::now();
    server.stop();
    let err = tokio::time::timeout(Duration::from_secs(20), writer)
        .await
        .expect("a put in flight when the server stopped must end, not hang")
        .unwrap();
    assert!(
        err.is_retryable(),
        "expected a retryable error, got {err:?}"
    );
    assert!(
        stopped_at.elapsed() < Duration::from_secs(10),
        "took {:?}",
        stopped_at.elapsed()
    );

    let t = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(20), c.get(&before))
        .await
        .expect("get against a stopped server must not hang")
        .unwrap_err();
    assert!(
        matches!(err, Error::Backend { .. } | Error::Timeout { .. }),
        "{err:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );

    // Same port, same connector object: works again, and the data on disk survived.
    server.restart().unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), c.get(&before))
        .await
        .expect("get after restart must not hang")
        .expect("the same connector works after the server restarts");
    assert_eq!(got.unwrap(), "before");
    let key = c.put(payload(3 * MIN_PART_SIZE as usize, 3)).await.unwrap();
    assert!(c.exists(&key).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_server_times_out_then_recovers() {
    let mut server = start();
    let c = S3Connector::with_config(S3Config {
        read_timeout_ms: 500,
        operation_timeout_ms: 3_000,
        // The first attempt may meet the pooled connection the stop cut; the second hangs.
        max_attempts: 2,
        ..server.config(&prefix())
    })
    .unwrap();
    let key = c.put(Bytes::from_static(b"x")).await.unwrap();
    server.hang().unwrap();
    let t = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), c.get(&key))
        .await
        .expect("get from a hung server must not hang the caller")
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());
    // The operation bound is 3 s; the rest is slack for a loaded machine.
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    server.restart().unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), c.get(&key))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.unwrap(), "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_unauthorized() {
    let server = start();
    let good = server.config(&prefix());
    for (id, secret) in [
        (
            good.access_key_id.clone(),
            Some("not-the-secret".to_owned()),
        ),
        (Some("AKUNKNOWN".to_owned()), good.secret_access_key.clone()),
    ] {
        let c = S3Connector::with_config(S3Config {
            access_key_id: id,
            secret_access_key: secret,
            ..good.clone()
        })
        .unwrap();
        for err in [
            c.put(Bytes::from_static(b"x")).await.unwrap_err(),
            c.get(&Key::random()).await.unwrap_err(),
            c.exists(&Key::random()).await.unwrap_err(),
        ] {
            assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
            assert!(!err.is_retryable());
            assert!(!format!("{err:?}").contains("not-the-secret"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_a_config_error() {
    let server = start();
    let c = S3Connector::with_config(S3Config {
        bucket: "no-such-bucket".into(),
        ..server.config("")
    })
    .unwrap();
    let err = c.put(Bytes::from_static(b"x")).await.unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    let err = c.get(&Key::random()).await.unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
}

#[test]
fn works_from_sync_code_and_a_current_thread_runtime() {
    let server = start();
    let c = S3Connector::with_config(server.config(&prefix())).unwrap();
    let key = proxystore::runtime::block_on({
        let c = c.clone();
        async move { c.put(Bytes::from_static(b"sync")).await }
    })
    .unwrap()
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = rt.block_on(async {
        let c = c.clone();
        let key = key.clone();
        proxystore::runtime::block_on(async move { c.get(&key).await }).unwrap()
    });
    assert_eq!(got.unwrap().unwrap(), "sync");
}

/// Runs `proxy-consumer` on `file` with only the given environment.
fn consumer(file: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_proxy-consumer"));
    cmd.env_clear().arg(file).args(["0", "1"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_reads_with_credentials_from_its_environment() {
    let server = start();
    let prefix = prefix();
    // The producer writes with explicit keys; the proxies name a connector without any, so
    // the references carry no secret and each reader uses its own standard chain.
    let writer = proxystore::Store::new(
        format!("s3-writer-{}", Key::random()),
        S3Connector::with_config(server.config(&prefix)).unwrap(),
    );
    let keyless = S3Config {
        access_key_id: None,
        secret_access_key: None,
        ..server.config(&prefix)
    };
    let reader = proxystore::Store::new(
        format!("s3-chain-{}", Key::random()),
        S3Connector::with_config(keyless).unwrap(),
    );
    let objects: Vec<Vec<u64>> = (0..2u64)
        .map(|i| (0..40_000).map(|x| x + i).collect())
        .collect();
    let mut proxies: Vec<proxystore::Proxy<Vec<u64>>> = Vec::new();
    for o in &objects {
        let key = writer.put(o).await.unwrap();
        proxies.push(reader.proxy_from_key(key));
    }
    let wire = postcard::to_stdvec(&proxies).unwrap();
    assert!(!String::from_utf8_lossy(&wire).contains(server.secret_key()));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxies.bin");
    std::fs::write(&file, &wire).unwrap();
    let missing = dir.path().join("none");
    let missing = missing.to_str().unwrap();
    // No instance metadata service here, and no config files: only the environment counts.
    // The reader accepts references to the test bucket (S3 is refused by default).
    let policy = format!(r#"{{"buckets": ["{BUCKET}"]}}"#);
    let isolated = [
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", missing),
        ("AWS_SHARED_CREDENTIALS_FILE", missing),
        (proxystore::RESOLVE_POLICY_ENV, policy.as_str()),
    ];

    let mut env = isolated.to_vec();
    env.push(("AWS_ACCESS_KEY_ID", server.access_key()));
    env.push(("AWS_SECRET_ACCESS_KEY", server.secret_key()));
    let out = consumer(&file, &env);
    assert!(
        out.status.success(),
        "consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected: Vec<u64> = objects.iter().map(|o| o.iter().sum()).collect();
    assert_eq!(report["sums"], serde_json::json!(expected));

    // Without credentials in its environment the same reader cannot read.
    let out = consumer(&file, &isolated);
    assert!(!out.status.success(), "read without credentials succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no credentials"), "{stderr}");
}
