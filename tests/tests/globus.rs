//! The Globus connector against the local fake of the Globus Transfer API: the conformance
//! suite for two endpoints, a proxy put on one endpoint and resolved on the other while its
//! transfer is still ACTIVE, FAILED tasks, bad tokens, and the API going away mid-wait.

// The set-up helpers below are test code too, though not `#[test]` functions.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proxystore::conformance::Fixture;
use proxystore::connector::globus::{GlobusConfig, GlobusConnector, GlobusEndpoint};
use proxystore::{Bytes, Connector, Error, Key, Proxy, Store, register_store, unregister_store};
use proxystore_tests::globus_fake::{FakeGlobus, FakeStatus};
use tempfile::TempDir;

const A: &str = "0d2c5a4e-6f1b-4c8e-9a3d-1b2c3d4e5f60";
const B: &str = "7e8f9a0b-1c2d-4e3f-8a4b-5c6d7e8f9a0b";
const TOKEN: &str = "fake-transfer-token-3f9a";

/// Two collections on this machine, the fake API serving them, and a connector config in which
/// endpoint A is this host (by host pattern) and B is "another host".
struct Setup {
    fake: FakeGlobus,
    config: GlobusConfig,
    dir: TempDir,
}

impl Setup {
    async fn new(delay: Duration) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let (root_a, root_b) = (
            dir.path().join("collection-a"),
            dir.path().join("collection-b"),
        );
        std::fs::create_dir_all(&root_a).unwrap();
        std::fs::create_dir_all(&root_b).unwrap();
        let fake = FakeGlobus::start(
            TOKEN,
            [
                (A.to_owned(), root_a.clone()),
                (B.to_owned(), root_b.clone()),
            ],
            delay,
        )
        .await
        .unwrap();
        let token_file = dir.path().join("globus-token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let mut config = GlobusConfig::new(vec![
            // Globus sees a directory under the collection root that this host sees elsewhere.
            GlobusEndpoint::new(A, "/~/proxystore", root_a.join("proxystore"), ["*"]),
            GlobusEndpoint::new(
                B,
                "/projects/ps/cache/",
                root_b.join("projects/ps/cache"),
                ["globus-test-host-b.invalid"],
            ),
        ]);
        config.api_url = fake.api_url();
        // A token from the file only, whatever the environment of the test run holds.
        config.token_env = "PROXYSTORE_GLOBUS_TEST_TOKEN_NEVER_SET".into();
        config.token_file = Some(token_file);
        config.timeout_ms = 30_000;
        config.poll_min_ms = 5;
        config.poll_max_ms = 100;
        config.request_timeout_ms = 5_000;
        Setup { fake, config, dir }
    }

    fn dir_a(&self) -> PathBuf {
        self.config.endpoints[0].local_path.clone()
    }

    fn dir_b(&self) -> PathBuf {
        self.config.endpoints[1].local_path.clone()
    }

    /// The connector of this host: endpoint A, chosen by host name.
    fn on_a(&self) -> GlobusConnector {
        let c = GlobusConnector::with_config(self.config.clone()).unwrap();
        assert_eq!(c.local_endpoint().unwrap().uuid, A);
        c
    }

    /// The connector of "another host": same options, endpoint B.
    fn on_b(&self) -> GlobusConnector {
        with_local(&self.config, B)
    }
}

fn with_local(config: &GlobusConfig, uuid: &str) -> GlobusConnector {
    let mut config = config.clone();
    config.local_endpoint = Some(uuid.into());
    GlobusConnector::with_config(config).unwrap()
}

fn tasks_of(key: &Key) -> Vec<String> {
    let (_, tasks) = key.as_str().split_once(':').unwrap();
    tasks.split(',').map(str::to_owned).collect()
}

fn name_of(key: &Key) -> String {
    key.as_str().split_once(':').unwrap().0.to_owned()
}

fn files_in(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// What a bounded operation may take beyond its configured timeout on a loaded machine (the
/// bounds stay well below the transfers' delays, so a wait that ignored its timeout still
/// fails).
const SLACK: Duration = Duration::from_millis(2500);

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

mod conformance {
    use super::*;

    async fn fixture() -> Fixture {
        // Tasks stay ACTIVE for a while, so the suite also runs against in-flight transfers.
        let setup = Setup::new(Duration::from_millis(20)).await;
        let c = setup.on_a();
        Fixture::with_guard(c, setup)
    }

    proxystore::conformance_tests!(fixture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_put_on_a_resolves_on_b_once_the_active_transfer_succeeds() {
    let s = Setup::new(Duration::from_millis(800)).await;
    let name = format!("globus-ab-{}", Key::random());
    let a = s.on_a();
    let store_a = Store::new(&name, a.clone());
    register_store(&store_a).unwrap();
    let value: Vec<u64> = (0..200_000).collect();
    let proxy = store_a.proxy(&value).await.unwrap();
    let wire = postcard::to_stdvec(&proxy).unwrap();
    let key = proxy.key().unwrap().clone();
    let [task] = tasks_of(&key).try_into().unwrap();
    assert_eq!(s.fake.task_status(&task), Some(FakeStatus::Active));
    assert!(s.dir_a().join(name_of(&key)).exists());
    assert!(!s.dir_b().join(name_of(&key)).exists());

    // Another host: the reference carries the same config; there, endpoint B is local.
    unregister_store(&name);
    let b = s.on_b();
    assert_eq!(b.config(), a.config());
    register_store(&Store::new(&name, b.clone())).unwrap();
    let received: Proxy<Vec<u64>> = postcard::from_bytes(&wire).unwrap();
    let start = Instant::now();
    let got = received.resolve().await.unwrap();
    let waited = start.elapsed();
    assert_eq!(*got, value);
    assert_eq!(s.fake.task_status(&task), Some(FakeStatus::Succeeded));
    assert!(
        waited >= Duration::from_millis(300),
        "resolved after {waited:?}, before the transfer could have finished"
    );
    assert!(s.dir_b().join(name_of(&key)).exists());

    // After the transfer: a synchronous resolve of another copy of the reference, in a fresh
    // store on B, answers at once.
    unregister_store(&name);
    register_store(&Store::new(&name, s.on_b())).unwrap();
    let again: Proxy<Vec<u64>> = postcard::from_bytes(&wire).unwrap();
    let requests = s.fake.requests();
    let len = tokio::task::spawn_blocking(move || again.try_get().map(Vec::len))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(len, value.len());
    // One look at the finished task, no polling: counted, not timed.
    assert!(
        s.fake.requests() - requests <= 1,
        "{} requests",
        s.fake.requests() - requests
    );
    unregister_store(&name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_task_is_a_typed_error_naming_the_task() {
    let s = Setup::new(Duration::from_millis(50)).await;
    let (a, b) = (s.on_a(), s.on_b());
    s.fake.fail_next_tasks(1);
    let key = a.put(Bytes::from_static(b"doomed")).await.unwrap();
    let [task] = tasks_of(&key).try_into().unwrap();
    let err = b.get(&key).await.unwrap_err();
    match &err {
        Error::Backend { message, .. } => {
            assert!(message.contains(&task), "{message}");
            assert!(message.contains("FAILED"), "{message}");
            assert!(message.contains("PERMISSION_DENIED"), "{message}");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert!(matches!(
        s.fake.task_status(&task),
        Some(FakeStatus::Failed(..))
    ));
    assert!(!b.exists(&key).await.unwrap());
    assert!(matches!(
        b.get_range(&key, 0..2).await,
        Err(Error::Backend { .. })
    ));
    // The source still has its copy, and can evict it.
    assert_eq!(a.get(&key).await.unwrap().unwrap(), "doomed");
    a.evict(&key).await.unwrap();
    assert!(!a.exists(&key).await.unwrap());

    // The next task is not affected.
    let key = a.put(Bytes::from_static(b"fine")).await.unwrap();
    assert_eq!(b.get(&key).await.unwrap().unwrap(), "fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_token_is_unauthorized() {
    let s = Setup::new(Duration::from_millis(20)).await;
    let mut wrong = s.config.clone();
    wrong.token = Some("not-the-token".into());
    let bad = GlobusConnector::with_config(wrong).unwrap();
    let err = bad.put(Bytes::from_static(b"x")).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(!err.is_retryable());
    // The refused put left nothing behind.
    assert_eq!(files_in(&s.dir_a()), Vec::<String>::new());
    let err = bad
        .put_batch(vec![Bytes::from_static(b"y")], &Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert_eq!(files_in(&s.dir_a()), Vec::<String>::new());

    let mut none = s.config.clone();
    none.token_file = None;
    let requests = s.fake.requests();
    let err = GlobusConnector::with_config(none)
        .unwrap()
        .put(Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert_eq!(s.fake.requests(), requests, "no request without a token");

    // The service answering 401 to a reader that waits on a task.
    let key = s.on_a().put(Bytes::from_static(b"z")).await.unwrap();
    s.fake.set_reject_all(true);
    let b = s.on_b();
    let err = b.get(&key).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    let err = b.exists(&key).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    s.fake.set_reject_all(false);
    assert_eq!(b.get(&key).await.unwrap().unwrap(), "z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_stopped_mid_wait_is_a_typed_error_within_the_timeout_then_recovers() {
    let mut s = Setup::new(Duration::from_millis(2500)).await;
    s.config.timeout_ms = 1500;
    let (a, b) = (s.on_a(), s.on_b());
    let data = Bytes::from(vec![7u8; 100_000]);
    let key = a.put(data.clone()).await.unwrap();

    let start = Instant::now();
    let waiting = tokio::spawn({
        let (b, key) = (b.clone(), key.clone());
        async move { b.get(&key).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "get returned while its task was ACTIVE"
    );
    s.fake.stop().await;
    let result = waiting.await.unwrap();
    let elapsed = start.elapsed();
    match &result {
        Err(e @ Error::Backend { message, .. }) => {
            assert!(message.contains("unavailable"), "{message}");
            assert!(e.is_retryable());
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    // Bounded by the timeout; the rest is slack for a loaded machine.
    assert!(
        elapsed < Duration::from_millis(1500) + SLACK,
        "gave up after {elapsed:?}, timeout 1.5 s"
    );

    // The same connectors work again once the API is back (and the transfer has run).
    s.fake.restart().await.unwrap();
    assert_eq!(b.get(&key).await.unwrap(), Some(data));
    let key = a.put(Bytes::from_static(b"after")).await.unwrap();
    assert_eq!(a.get(&key).await.unwrap().unwrap(), "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_while_the_api_is_down_fails_within_the_timeout_and_leaves_nothing() {
    let mut s = Setup::new(Duration::from_millis(20)).await;
    s.config.timeout_ms = 800;
    let a = s.on_a();
    s.fake.stop().await;
    let start = Instant::now();
    let err = a.put(Bytes::from_static(b"x")).await.unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_millis(800) + SLACK);
    assert_eq!(files_in(&s.dir_a()), Vec::<String>::new());
    s.fake.restart().await.unwrap();
    let key = a.put(Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(s.on_b().get(&key).await.unwrap().unwrap(), "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_put_is_one_transfer_and_batch_evict_one_delete() {
    let s = Setup::new(Duration::from_millis(100)).await;
    let (a, b) = (s.on_a(), s.on_b());
    let data: Vec<Bytes> = (0..5u8)
        .map(|i| Bytes::from(vec![i; 1000 + i as usize]))
        .collect();
    let before = s.fake.task_count();
    let keys = a
        .put_batch(data.clone(), &Default::default())
        .await
        .unwrap();
    assert_eq!(
        s.fake.task_count(),
        before + 1,
        "one transfer task for the batch"
    );
    let task = tasks_of(&keys[0]);
    assert!(keys.iter().all(|k| tasks_of(k) == task));
    assert_eq!(
        s.fake.task_label(&task[0]).as_deref(),
        Some("ProxyStore put of 5 objects")
    );
    let got = b.get_batch(&keys).await.unwrap();
    assert_eq!(got, data.iter().cloned().map(Some).collect::<Vec<_>>());
    assert_eq!(files_in(&s.dir_b()).len(), 5);

    let before = s.fake.task_count();
    a.evict_batch(&keys).await.unwrap();
    assert_eq!(
        s.fake.task_count(),
        before + 1,
        "one delete task for the batch"
    );
    assert_eq!(files_in(&s.dir_a()), Vec::<String>::new());
    let dir_b = s.dir_b();
    eventually("B's copies deleted", || files_in(&dir_b).is_empty()).await;
    for k in &keys {
        assert_eq!(b.get(k).await.unwrap(), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evict_waits_for_an_active_transfer_so_no_copy_survives() {
    let s = Setup::new(Duration::from_millis(500)).await;
    let (a, b) = (s.on_a(), s.on_b());
    let key = a.put(Bytes::from_static(b"short-lived")).await.unwrap();
    let start = Instant::now();
    a.evict(&key).await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "evict did not wait for the transfer"
    );
    let [task] = tasks_of(&key).try_into().unwrap();
    assert_eq!(s.fake.task_status(&task), Some(FakeStatus::Succeeded));
    let dir_b = s.dir_b();
    eventually("B's copy deleted", || files_in(&dir_b).is_empty()).await;
    assert_eq!(b.get(&key).await.unwrap(), None);
    assert!(!a.exists(&key).await.unwrap());
    // Evicting on B, where the object is gone, submits nothing.
    let before = s.fake.task_count();
    b.evict(&key).await.unwrap();
    assert_eq!(s.fake.task_count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evict_on_the_receiving_side_deletes_the_source_copy() {
    let s = Setup::new(Duration::from_millis(20)).await;
    let (a, b) = (s.on_a(), s.on_b());
    let key = a.put(Bytes::from_static(b"data")).await.unwrap();
    assert_eq!(b.get_range(&key, 1..3).await.unwrap().unwrap(), "at");
    b.evict(&key).await.unwrap();
    assert!(!b.exists(&key).await.unwrap());
    let dir_a = s.dir_a();
    eventually("A's copy deleted", || files_in(&dir_a).is_empty()).await;
    assert_eq!(a.get(&key).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_task_ids_read_as_absent_and_hostile_keys_as_invalid() {
    let s = Setup::new(Duration::from_millis(20)).await;
    let (a, b) = (s.on_a(), s.on_b());
    let key = a.put(Bytes::from_static(b"real")).await.unwrap();
    // The real object name with a task the API never made.
    let forged = Key::from(format!("{}:{}", name_of(&key), uuid_like()));
    assert_eq!(b.get(&forged).await.unwrap(), None);
    assert!(!b.exists(&forged).await.unwrap());
    for k in [
        "../../etc/passwd:abc",
        "x:../../task",
        "x:a/b",
        "x:a?b=c",
        "no-task-part",
    ] {
        let k = Key::from(k);
        assert!(
            matches!(b.get(&k).await, Err(Error::InvalidKey { .. })),
            "{k}"
        );
        assert!(
            matches!(b.evict(&k).await, Err(Error::InvalidKey { .. })),
            "{k}"
        );
    }
    assert_eq!(b.get(&key).await.unwrap().unwrap(), "real");
    // Deferred puts are not supported: task ids only exist once the transfer is submitted.
    assert!(matches!(
        a.new_key(&Default::default()).await,
        Err(Error::Unsupported { .. })
    ));
}

/// A symbolic link to a file outside, planted in an endpoint's directory under an object's name,
/// is not followed (as in the file connector): get and get_range are refused with a permanent
/// error, exists is false, on the receiving endpoint and on the one that put the object;
/// evicting the key removes the link, never its target.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_symlink_in_a_globus_directory_is_not_followed() {
    let s = Setup::new(Duration::from_millis(20)).await;
    let (a, b) = (s.on_a(), s.on_b());
    let key = a.put(Bytes::from_static(b"object")).await.unwrap();
    // B's copy arrives with the transfer.
    assert_eq!(b.get(&key).await.unwrap().unwrap(), "object");
    let secret = s.dir.path().join("secret");
    std::fs::write(&secret, b"secret bytes").unwrap();
    let plant = |path: PathBuf| {
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&secret, &path).unwrap();
        path
    };
    let copy_b = plant(s.dir_b().join(name_of(&key)));
    let copy_a = plant(s.dir_a().join(name_of(&key)));
    for c in [&b, &a] {
        for r in [c.get(&key).await, c.get_range(&key, 0..6).await] {
            assert!(
                matches!(&r, Err(e @ Error::Backend { .. }) if !e.is_retryable()),
                "{r:?}"
            );
        }
        assert!(!c.exists(&key).await.unwrap());
    }
    b.evict(&key).await.unwrap();
    assert!(copy_b.symlink_metadata().is_err());
    // The delete task on A removes A's link too.
    eventually("A's link removed", || copy_a.symlink_metadata().is_err()).await;
    assert_eq!(std::fs::read(&secret).unwrap(), b"secret bytes");
}

fn uuid_like() -> String {
    Key::random().to_string()
}

/// Runs `proxy-consumer` (a second OS process) on serialized proxies, with `env` set and the
/// Globus variables of this process's environment removed.
async fn consume(file: PathBuf, indices: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_proxy-consumer"));
    cmd.arg(file).args(indices);
    for var in ["PROXYSTORE_GLOBUS_TOKEN", "PROXYSTORE_GLOBUS_ENDPOINT"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_endpoint_b_resolves_with_its_own_token() {
    let s = Setup::new(Duration::from_millis(500)).await;
    // The producer has the token in its config; the reference must not carry it.
    let mut config = s.config.clone();
    config.token_file = None;
    config.token_env = proxystore::connector::globus::DEFAULT_TOKEN_ENV.into();
    config.token = Some(TOKEN.into());
    let a = GlobusConnector::with_config(config).unwrap();
    let store = Store::new(format!("globus-xproc-{}", Key::random()), a);
    let objects: Vec<Vec<u64>> = (1..=3u64)
        .map(|i| (0..50_000).map(|x| x * i).collect())
        .collect();
    let proxies = store.proxy_batch(&objects).await.unwrap();
    let wire = postcard::to_stdvec(&proxies).unwrap();
    assert!(
        !wire.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
        "the token travelled in the references"
    );
    let file = s.dir.path().join("proxies.bin");
    std::fs::write(&file, &wire).unwrap();

    // Without a token in its environment, the consumer is refused.
    let out = consume(file.clone(), &["0"], &[("PROXYSTORE_GLOBUS_ENDPOINT", B)]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unauthorized"), "{stderr}");

    // With the token from its environment, and B as its endpoint: it waits for the transfer.
    let out = consume(
        file,
        &["0", "2"],
        &[
            ("PROXYSTORE_GLOBUS_TOKEN", TOKEN),
            ("PROXYSTORE_GLOBUS_ENDPOINT", B),
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected: Vec<u64> = [0, 2].iter().map(|&i| objects[i].iter().sum()).collect();
    assert_eq!(report["sums"], serde_json::json!(expected));
    assert_eq!(report["registered_before"], false);
    // It read B's copies: the batch's transfer has run.
    let task = tasks_of(proxies[0].key().unwrap());
    assert_eq!(s.fake.task_status(&task[0]), Some(FakeStatus::Succeeded));
    assert_eq!(files_in(&s.dir_b()).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_still_active_at_the_deadline_is_a_timeout() {
    let mut s = Setup::new(Duration::from_millis(5000)).await;
    s.config.timeout_ms = 700;
    let (a, b) = (s.on_a(), s.on_b());
    let key = a.put(Bytes::from_static(b"slow")).await.unwrap();
    let [task] = tasks_of(&key).try_into().unwrap();
    let start = Instant::now();
    let err = b.get(&key).await.unwrap_err();
    let elapsed = start.elapsed();
    match &err {
        Error::Timeout { operation, after } => {
            assert!(
                operation.contains(&task) && operation.contains("ACTIVE"),
                "{operation}"
            );
            assert_eq!(*after, Duration::from_millis(700));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert!(
        elapsed >= Duration::from_millis(650) && elapsed < Duration::from_millis(700) + SLACK,
        "gave up after {elapsed:?}"
    );
    // exists waits the same way; on a loaded machine the last status poll itself may be cut by
    // the deadline (a retryable backend error) instead of the wait (a timeout): both are typed.
    match b.exists(&key).await {
        Err(e @ (Error::Timeout { .. } | Error::Backend { .. })) => assert!(e.is_retryable()),
        other => panic!("exists of a key whose transfer is still ACTIVE gave {other:?}"),
    }
}
