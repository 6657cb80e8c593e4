//! The Redis connector against a real `redis-server` that each test starts on a free loopback
//! port: the shared conformance suite, then faults (server killed, restarted, frozen), wrong
//! passwords, TTL expiry and key prefixes.

// Helpers outside #[test] functions fail the test the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proxystore::conformance::{Fixture, payload};
use proxystore::connector::redis::{RedisConfig, RedisConnector};
use proxystore::{Bytes, Connector, Error, Key};
use proxystore_tests::redis_server::{RedisServer, TlsFiles};

fn start() -> RedisServer {
    RedisServer::start().unwrap_or_else(|e| panic!("{e:#}"))
}

fn config(server: &RedisServer) -> RedisConfig {
    RedisConfig {
        prefix: format!("test-{}:", Key::random()),
        ..RedisConfig::new(server.url())
    }
}

mod conformance {
    use super::*;

    async fn fixture() -> Fixture {
        let server = start();
        let c = RedisConnector::with_config(config(&server)).expect("redis connector");
        Fixture::with_guard(c, server)
    }
    proxystore::conformance_tests!(fixture);
}

/// The same suite with objects above 1 MiB written in pieces (the 64 MiB case among them).
mod conformance_chunked {
    use super::*;

    async fn fixture() -> Fixture {
        let server = start();
        let c = RedisConnector::with_config(RedisConfig {
            chunked_above_bytes: 1 << 20,
            chunk_bytes: 1 << 20,
            ..config(&server)
        })
        .expect("redis connector");
        Fixture::with_guard(c, server)
    }
    proxystore::conformance_tests!(fixture);
}

/// Every key of the server, through a raw client.
fn all_keys(server: &RedisServer) -> Vec<String> {
    let mut raw = redis::Client::open(server.url().as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("KEYS").arg("*").query(&mut raw).unwrap()
}

fn pttl(server: &RedisServer, key: &str) -> i64 {
    let mut raw = redis::Client::open(server.url().as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("PTTL").arg(key).query(&mut raw).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_go_in_pieces_atomically_with_their_ttl() {
    let server = start();
    let base = config(&server);
    let prefix = base.prefix.clone();
    let pieces = RedisConnector::with_config(RedisConfig {
        chunked_above_bytes: 4096,
        chunk_bytes: 4096,
        ..base.clone()
    })
    .unwrap();
    // Sizes around the piece size, and one that is not a multiple of it.
    for size in [4095, 4096, 4097, 100_003] {
        let data = payload(size, size as u64);
        let key = pieces.put(data.clone()).await.unwrap();
        assert_eq!(pieces.get(&key).await.unwrap(), Some(data), "{size} B");
        assert_eq!(pttl(&server, &format!("{prefix}{key}")), -1, "no TTL");
    }
    // Only the objects are left: no temporary keys.
    assert_eq!(all_keys(&server).len(), 4, "{:?}", all_keys(&server));
    assert!(all_keys(&server).iter().all(|k| !k.contains(".tmp-")));

    let expiring = RedisConnector::with_config(RedisConfig {
        chunked_above_bytes: 1000,
        chunk_bytes: 4096,
        ttl_ms: Some(600_000),
        ..base
    })
    .unwrap();
    let key = expiring.put(payload(50_000, 3)).await.unwrap();
    let ttl = pttl(&server, &format!("{prefix}{key}"));
    assert!(ttl > 500_000 && ttl <= 600_000, "ttl {ttl}");
}

/// Puts objects until one fails, counting successes in `done`; returns the error.
async fn put_until_error(c: RedisConnector, size: usize, done: Arc<AtomicUsize>) -> Error {
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
async fn server_killed_mid_operation_fails_fast_and_the_same_connector_recovers() {
    let mut server = start();
    let c = RedisConnector::with_config(RedisConfig {
        response_timeout_ms: 3_000,
        connect_timeout_ms: 1_000,
        ..config(&server)
    })
    .unwrap();
    let before = c.put(Bytes::from_static(b"before")).await.unwrap();
    assert_eq!(c.get(&before).await.unwrap().unwrap(), "before");

    // 8 MiB puts in a loop; the server dies while they run.
    let done = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(put_until_error(c.clone(), 8 << 20, done.clone()));
    // Once one put went through, the next one is under way when the server goes.
    first_success(&done).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let killed_at = Instant::now();
    server.stop();
    let err = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("a put in flight when the server died must end, not hang")
        .unwrap();
    assert!(
        err.is_retryable(),
        "expected a retryable error, got {err:?}"
    );
    // The connector's bound is 1 s + 3 s; the rest is slack for a loaded machine.
    assert!(
        killed_at.elapsed() < Duration::from_secs(7),
        "took {:?}",
        killed_at.elapsed()
    );

    // While it is down: a typed, retryable error within the connector's bound.
    let t = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), c.get(&before))
        .await
        .expect("get against a dead server must not hang")
        .unwrap_err();
    assert!(
        matches!(err, Error::Backend { .. } | Error::Timeout { .. }),
        "{err:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(7),
        "took {:?}",
        t.elapsed()
    );

    // Same port, same connector object: works again from the first call.
    server.restart().unwrap();
    let key = tokio::time::timeout(Duration::from_secs(10), c.put(Bytes::from_static(b"after")))
        .await
        .expect("put after restart must not hang")
        .expect("the same connector works after the server restarts");
    assert_eq!(c.get(&key).await.unwrap().unwrap(), "after");
    // The server keeps nothing across restarts (--save ''), so the old object is gone.
    assert_eq!(c.get(&before).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_server_times_out_then_recovers() {
    let server = start();
    let c = RedisConnector::with_config(RedisConfig {
        response_timeout_ms: 500,
        connect_timeout_ms: 500,
        ..config(&server)
    })
    .unwrap();
    let key = c.put(Bytes::from_static(b"x")).await.unwrap();
    server.pause().unwrap();
    let t = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), c.get(&key)).await;
    let elapsed = t.elapsed();
    server.resume().unwrap();
    let err = result
        .expect("get from a frozen server must not hang")
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(3),
        "timed out after {elapsed:?}, configured 500 ms (+500 ms connect)"
    );
    let got = tokio::time::timeout(Duration::from_secs(10), c.get(&key))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.unwrap(), "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_password_is_unauthorized() {
    let server = RedisServer::start_with_password("right-password").unwrap();
    for password in [Some("wrong-password"), None] {
        let c = RedisConnector::with_config(RedisConfig {
            password: password.map(str::to_owned),
            ..config(&server)
        })
        .unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), c.put(Bytes::from_static(b"x")))
            .await
            .expect("must not hang")
            .unwrap_err();
        assert!(
            matches!(err, Error::Unauthorized { .. }),
            "password {password:?}: {err:?}"
        );
        assert!(!err.is_retryable());
        assert!(!format!("{err:?}{c:?}").contains("wrong-password"));
    }
    // The right password works, given as a field or inside the URL.
    for cfg in [
        RedisConfig {
            password: Some("right-password".into()),
            ..config(&server)
        },
        RedisConfig::new(format!(
            "redis://:right-password@127.0.0.1:{}/0",
            server.port()
        )),
    ] {
        let c = RedisConnector::with_config(cfg).unwrap();
        assert!(!format!("{:?}", c.config()).contains("right-password"));
        let key = c.put(Bytes::from_static(b"ok")).await.unwrap();
        assert_eq!(c.get(&key).await.unwrap().unwrap(), "ok");
        // The config (password included) rebuilds a working connector.
        let rebuilt = proxystore::kinds::from_config(&c.config()).unwrap();
        assert_eq!(rebuilt.get(&key).await.unwrap().unwrap(), "ok");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_expire_after_the_ttl() {
    let server = start();
    let c = RedisConnector::with_config(RedisConfig {
        ttl_ms: Some(300),
        ..config(&server)
    })
    .unwrap();
    let single = c.put(Bytes::from_static(b"short-lived")).await.unwrap();
    let batch = c
        .put_batch(vec![payload(10, 1), payload(20, 2)], &Default::default())
        .await
        .unwrap();
    assert!(c.exists(&single).await.unwrap());
    assert_eq!(
        c.get_batch(&batch).await.unwrap().iter().flatten().count(),
        2
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!c.exists(&single).await.unwrap());
    assert_eq!(c.get(&single).await.unwrap(), None);
    assert_eq!(c.get_batch(&batch).await.unwrap(), vec![None, None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_separate_connectors_and_databases_separate_too() {
    let server = start();
    let a = RedisConnector::with_config(RedisConfig {
        prefix: "a:".into(),
        ..RedisConfig::new(server.url())
    })
    .unwrap();
    let b = RedisConnector::with_config(RedisConfig {
        prefix: "b:".into(),
        ..RedisConfig::new(server.url())
    })
    .unwrap();
    let a_db1 = RedisConnector::with_config(RedisConfig {
        prefix: "a:".into(),
        db: Some(1),
        ..RedisConfig::new(server.url())
    })
    .unwrap();
    let key = a.put(Bytes::from_static(b"in a")).await.unwrap();
    assert_eq!(b.get(&key).await.unwrap(), None);
    assert!(!b.exists(&key).await.unwrap());
    assert_eq!(a_db1.get(&key).await.unwrap(), None);
    // A key that spells another prefix reaches only its own prefixed name.
    let sneaky = Key::from(format!("../a:{key}"));
    assert_eq!(b.get(&sneaky).await.unwrap(), None);
    b.evict(&Key::from(format!("*{key}"))).await.unwrap();
    assert_eq!(a.get(&key).await.unwrap().unwrap(), "in a");
}

#[test]
fn works_from_sync_code_and_a_current_thread_runtime() {
    let server = start();
    let c = RedisConnector::with_config(config(&server)).unwrap();
    // Plain thread, no runtime.
    let key = proxystore::runtime::block_on({
        let c = c.clone();
        async move { c.put(Bytes::from_static(b"sync")).await }
    })
    .unwrap()
    .unwrap();
    // Inside a current-thread runtime, blocking on it from sync code.
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

/// Connections to the server that are not `raw`'s own.
fn clients(server: &RedisServer) -> usize {
    let mut raw = redis::Client::open(server.url().as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut raw).unwrap();
    list.lines().count() - 1
}

/// Each runtime that calls gets a connection of its own, whose task runs there (no hop to the
/// I/O runtime per call); a runtime that shuts down takes its connection with it, and the
/// connector goes on from the others, from sync code, and from an executor that is not tokio.
#[test]
fn each_runtime_calls_on_its_own_connection_which_goes_with_the_runtime() {
    let server = start();
    let c = RedisConnector::with_config(config(&server)).unwrap();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let (a, b) = (runtime(), runtime());
    let key = a.block_on(c.put(Bytes::from_static(b"from a"))).unwrap();
    let got = b.block_on(c.get(&key)).unwrap();
    assert_eq!(got.as_deref(), Some(&b"from a"[..]));
    assert_eq!(clients(&server), 2, "one connection per runtime");
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    while clients(&server) != 1 {
        assert!(
            Instant::now() < deadline,
            "the dropped runtime's connection stays open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The rest go on: the other runtime, a synchronous call, and an executor that is not tokio
    // (its calls run on the I/O runtime's connection).
    assert!(b.block_on(c.exists(&key)).unwrap());
    let sync = {
        let (c, key) = (c.clone(), key.clone());
        proxystore::runtime::block_on(async move { c.get(&key).await })
            .unwrap()
            .unwrap()
    };
    assert_eq!(sync.as_deref(), Some(&b"from a"[..]));
    futures::executor::block_on(c.evict(&key)).unwrap();
    assert!(!futures::executor::block_on(c.exists(&key)).unwrap());
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let files = TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    std::fs::write(&files.cert, ck.cert.pem()).unwrap();
    std::fs::write(&files.key, ck.signing_key.serialize_pem()).unwrap();
    let server = RedisServer::start_tls(files.clone()).unwrap();
    let url = server.tls_url().unwrap();

    let c = RedisConnector::with_config(RedisConfig {
        tls_ca_file: Some(files.cert.clone()),
        ..RedisConfig::new(&url)
    })
    .unwrap();
    let data = payload(3 << 20, 4);
    let key = c.put(data.clone()).await.unwrap();
    assert_eq!(c.get(&key).await.unwrap().unwrap(), data);
    let rebuilt = proxystore::kinds::from_config(&c.config()).unwrap();
    assert!(rebuilt.exists(&key).await.unwrap());

    // Without the private CA the server's certificate is not trusted: an error, not a hang.
    let untrusting = RedisConnector::with_config(RedisConfig {
        connect_timeout_ms: 1_000,
        ..RedisConfig::new(&url)
    })
    .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), untrusting.get(&key))
        .await
        .expect("must not hang");
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_resolve_in_a_second_process() {
    let server = RedisServer::start_with_password("xproc-password").unwrap();
    let store = proxystore::Store::new(
        format!("redis-xproc-{}", Key::random()),
        RedisConnector::with_config(RedisConfig {
            password: Some("xproc-password".into()),
            ..config(&server)
        })
        .unwrap(),
    );
    let objects: Vec<Vec<u64>> = (0..3u64)
        .map(|i| (0..50_000).map(|x| x * i + 1).collect())
        .collect();
    let proxies = store.proxy_batch(&objects).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxies.bin");
    std::fs::write(&file, postcard::to_stdvec(&proxies).unwrap()).unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxy-consumer"))
        .arg(&file)
        .args(["0", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["registered_before"], false);
    let expected: Vec<u64> = [0, 2].iter().map(|&i| objects[i].iter().sum()).collect();
    assert_eq!(report["sums"], serde_json::json!(expected));
    assert_eq!(report["resolved"], serde_json::json!([true, false, true]));
}

/// Waiters share one pub/sub connection: many waits on many keys wake on their own key only,
/// and a restarted server ends the waits in flight (they look once more) and the next waits
/// subscribe on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_share_a_subscriber_that_survives_a_server_restart() {
    let mut server = start();
    let c = RedisConnector::with_config(RedisConfig {
        connect_timeout_ms: 1_000,
        ..config(&server)
    })
    .unwrap();
    let keys: Vec<Key> = (0..20).map(|_| Key::random()).collect();
    let waits: Vec<_> = keys
        .iter()
        .map(|k| {
            let (c, k) = (c.clone(), k.clone());
            tokio::spawn(async move { c.wait(&k, Duration::from_secs(20)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Set every other key: those waits wake, the others keep waiting.
    for k in keys.iter().step_by(2) {
        c.set(k, Bytes::from_static(b"v")).await.unwrap();
    }
    let mut pending = Vec::new();
    for (i, w) in waits.into_iter().enumerate() {
        if i % 2 == 0 {
            let seen = tokio::time::timeout(Duration::from_secs(5), w).await;
            assert!(seen.expect("a set key wakes its waiter").unwrap().unwrap());
        } else {
            pending.push(w);
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        pending.iter().all(|w| !w.is_finished()),
        "woken by another key"
    );

    // The server restarts: the pending waits end (nothing was set: false), not hang.
    server.restart().unwrap();
    for w in pending {
        let seen = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("a wait ends when its connection is lost");
        assert!(!seen.unwrap().unwrap_or(false));
    }
    // A new wait subscribes again and wakes on a set.
    let k = Key::random();
    let waiting = {
        let (c, k) = (c.clone(), k.clone());
        tokio::spawn(async move { c.wait(&k, Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // This runtime's connection learns of the restart on its next call, which a store's layers
    // retry once on the new connection; the bare connector gets them here.
    let stacked = proxystore::layer::stack(Arc::new(c.clone()));
    stacked.set(&k, Bytes::from_static(b"again")).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("a wait after the restart wakes");
    assert!(seen.unwrap().unwrap());
}

/// A plain client of database 3 of `server` (password `bulk-password`).
fn raw_db3(server: &RedisServer) -> redis::Connection {
    redis::Client::open(format!(
        "redis://:bulk-password@127.0.0.1:{}/3",
        server.port()
    ))
    .unwrap()
    .get_connection()
    .unwrap()
}

/// Values of 256 KiB and more go past the redis crate, written from their `Bytes` on
/// connections of their own: they log in (password, database), keep the connector's TTL,
/// announce the key to waiters, refuse like the crate's writes (too few replicas), and come back
/// after the server restarts (the pooled connections go with it; the retry makes a new one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_go_on_bulk_connections_with_the_same_rules() {
    let mut server =
        RedisServer::start_with_password("bulk-password").unwrap_or_else(|e| panic!("{e:#}"));
    let prefix = format!("bulk-{}:", Key::random());
    let c = RedisConnector::with_config(RedisConfig {
        prefix: prefix.clone(),
        password: Some("bulk-password".into()),
        db: Some(3),
        ttl_ms: Some(600_000),
        response_timeout_ms: 5_000,
        ..RedisConfig::new(server.url())
    })
    .unwrap();
    let mut raw = raw_db3(&server);
    for (i, size) in [256 << 10, 1 << 20, 9 << 20].into_iter().enumerate() {
        let data = payload(size, i as u64);
        let key = c.put(data.clone()).await.unwrap();
        assert_eq!(c.get(&key).await.unwrap().unwrap(), data, "{size} B");
        // In database 3, under the prefix, with the TTL.
        let ttl: i64 = redis::cmd("PTTL")
            .arg(format!("{prefix}{key}"))
            .query(&mut raw)
            .unwrap();
        assert!(ttl > 500_000 && ttl <= 600_000, "ttl {ttl}");
    }
    // A waiter learns of a large write as of a small one.
    let key = Key::random();
    let waiter = {
        let (c, key) = (c.clone(), key.clone());
        tokio::spawn(async move { c.wait(&key, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.set(&key, payload(1 << 20, 9)).await.unwrap();
    assert!(waiter.await.unwrap().unwrap(), "the waiter was woken");

    // Too few replicas: the same typed, retryable error for a small and a large value.
    let waits = RedisConnector::with_config(RedisConfig {
        password: Some("bulk-password".into()),
        min_replicas: 1,
        response_timeout_ms: 400,
        ..RedisConfig::new(server.url())
    })
    .unwrap();
    for size in [10, 1 << 20] {
        let err = waits.put(payload(size, 1)).await.unwrap_err();
        assert!(
            err.is_retryable() && err.to_string().contains("replicas"),
            "{size} B: {err}"
        );
    }

    // The server restarts: the pooled connections are dead, the next large put still works.
    server.restart().unwrap();
    let data = payload(2 << 20, 5);
    let key = tokio::time::timeout(Duration::from_secs(20), c.put(data.clone()))
        .await
        .expect("a large put after the restart must not hang")
        .expect("the same connector writes large values after a restart");
    // Read back with a client of its own (the connector's crate connection meets the restart
    // on its next call, retried by the store's layers).
    let mut raw = raw_db3(&server);
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(format!("{prefix}{key}"))
        .query(&mut raw)
        .unwrap();
    assert_eq!(stored, data);
}

/// Calls of `cmd` the server has run, from `INFO commandstats`.
fn calls(server: &RedisServer, cmd: &str) -> u64 {
    let mut raw = redis::Client::open(server.url().as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut raw)
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// A put is one `SET` (nobody can wait for a key before the put returns it, so it is not
/// announced: a `PUBLISH` per put cost the server a third of its commands in a put+get
/// loop); a `set` of a key given beforehand is announced, and a waiter sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_are_one_set_and_only_sets_are_announced() {
    let server = start();
    let c = RedisConnector::with_config(config(&server)).unwrap();
    // Small, bulk-connection and in-pieces sizes.
    let sizes = [100, 512 << 10, 3 << 20];
    let c_chunked = RedisConnector::with_config(RedisConfig {
        chunked_above_bytes: 1 << 20,
        chunk_bytes: 1 << 20,
        ..config(&server)
    })
    .unwrap();
    let before = calls(&server, "publish");
    for (i, size) in sizes.into_iter().enumerate() {
        let data = payload(size, i as u64);
        let key = c_chunked.put(data.clone()).await.unwrap();
        assert_eq!(c_chunked.get(&key).await.unwrap(), Some(data));
    }
    let sets = calls(&server, "set");
    c.put(payload(100, 9)).await.unwrap();
    assert_eq!(calls(&server, "set"), sets + 1);
    assert_eq!(calls(&server, "publish"), before, "a put was announced");

    for (i, size) in sizes.into_iter().enumerate() {
        let key = c_chunked.new_key(&Default::default()).await.unwrap();
        let waiter = {
            let (c, key) = (c_chunked.clone(), key.clone());
            tokio::spawn(async move { c.wait(&key, Duration::from_secs(10)).await })
        };
        // Before or after the waiter subscribed: it looks for the key once subscribed.
        c_chunked.set(&key, payload(size, i as u64)).await.unwrap();
        assert!(waiter.await.unwrap().unwrap(), "set of {size} B not seen");
        assert_eq!(calls(&server, "publish"), before + i as u64 + 1);
    }
}
