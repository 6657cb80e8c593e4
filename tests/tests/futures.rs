//! Distributed futures across OS processes, on every backend that has deferred puts: file,
//! Redis (a real `redis-server`), the gRPC store service and S3 (the test S3 server); and on
//! memory, many tasks of one process.
//!
//! Each backend runs the same scenarios with `future-node` processes as consumers and
//! producers: a consumer waiting before the producer sets; a set before the consumer starts;
//! many consumers of one future; a producer that exits without setting (dropped) and one that
//! is killed (its heartbeat stops); a consumer's timeout; a consumer killed while waiting.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use proxystore::connector::file::FileConnector;
use proxystore::connector::memory::MemoryConnector;
use proxystore::connector::redis::{RedisConfig, RedisConnector};
use proxystore::connector::s3::S3Connector;
use proxystore::{Error, FutureOptions, FutureProblem, Key, Promise, Proxy, Store};
use proxystore_tests::pattern;
use proxystore_tests::redis_server::RedisServer;
use proxystore_tests::s3_server::{BUCKET, S3Server};

/// 1 MiB: the value every producer sets.
const SIZE: usize = 1 << 20;

/// A heartbeat short enough that a killed producer is noticed within about a second.
fn options() -> FutureOptions {
    FutureOptions::default().heartbeat(Some(Duration::from_millis(200)))
}

fn expected_sum() -> u64 {
    pattern(SIZE).iter().map(|&b| u64::from(b)).sum()
}

/// A running `future-node`, its stdout read line by line.
struct Node {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Node {
    fn spawn(args: &[&str], env: &[(String, String)]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_future-node"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting future-node");
        let out = BufReader::new(child.stdout.take().unwrap());
        Node { child, out }
    }

    /// The next line it prints (panics at its end).
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.out.read_line(&mut l).unwrap();
        assert!(!l.is_empty(), "future-node ended early");
        l.trim_end().to_owned()
    }

    /// A consumer of the proxy in `file`, started and waiting (it has printed `waiting`).
    fn consumer(file: &Path, timeout: Duration, env: &[(String, String)]) -> Node {
        let ms = timeout.as_millis().to_string();
        let mut n = Node::spawn(&["consume", file.to_str().unwrap(), &ms], env);
        assert_eq!(n.line(), "waiting");
        n
    }

    /// A consumer's report, once it has finished.
    fn report(mut self) -> serde_json::Value {
        let line = self.line();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "future-node failed: {line}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_value(report: &serde_json::Value) {
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["len"], SIZE, "{report}");
    assert_eq!(report["sum"], expected_sum(), "{report}");
}

fn assert_failed(report: &serde_json::Value, kind: &str) {
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["kind"], kind, "{report}");
}

/// Write a proxy for other processes.
fn write_proxy(dir: &Path, proxy: &Proxy<Vec<u8>>) -> PathBuf {
    let file = dir.join(format!("proxy-{}.bin", Key::random()));
    std::fs::write(&file, postcard::to_stdvec(proxy).unwrap()).unwrap();
    file
}

/// Move a promise to another process (serializing it moves it: this handle goes inert).
fn write_promise(dir: &Path, promise: &Promise<Vec<u8>>) -> PathBuf {
    let file = dir.join(format!("promise-{}.bin", Key::random()));
    std::fs::write(&file, postcard::to_stdvec(promise).unwrap()).unwrap();
    assert!(!promise.is_live(), "a serialized promise moves away");
    file
}

/// Every scenario against `store`; `env` is what a second process needs to resolve its
/// references (e.g. a resolve policy that allows the test bucket).
async fn scenarios(store: &Store, env: &[(String, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let long = Duration::from_secs(30);

    // 1. The consumer waits before the producer sets.
    let (promise, proxy) = store.future_with::<Vec<u8>>(options()).await.unwrap();
    let file = write_proxy(dir, &proxy);
    let consumer = Node::consumer(&file, long, env);
    tokio::time::sleep(Duration::from_millis(300)).await;
    promise.set(&pattern(SIZE)).await.unwrap();
    assert_value(&consumer.report());
    store.evict(proxy.key().unwrap()).await.unwrap();

    // 2. The value is set before the consumer starts.
    let (promise, proxy) = store.future_with::<Vec<u8>>(options()).await.unwrap();
    promise.set(&pattern(SIZE)).await.unwrap();
    let file = write_proxy(dir, &proxy);
    assert_value(&Node::consumer(&file, long, env).report());

    // 3. Many consumers of one future; and the producer is another process.
    let (promise, proxy) = store.future_with::<Vec<u8>>(options()).await.unwrap();
    let file = write_proxy(dir, &proxy);
    let consumers: Vec<Node> = (0..6).map(|_| Node::consumer(&file, long, env)).collect();
    let promise_file = write_promise(dir, &promise);
    drop(promise); // inert: moved
    let mut producer = Node::spawn(
        &[
            "produce",
            promise_file.to_str().unwrap(),
            "200",
            &SIZE.to_string(),
            "set",
        ],
        env,
    );
    assert_eq!(producer.line(), "live");
    for c in consumers {
        assert_value(&c.report());
    }
    assert!(producer.child.wait().unwrap().success());
    store.evict(proxy.key().unwrap()).await.unwrap();

    // 4. The producer returns without setting: its consumers are told, they do not hang.
    let (promise, proxy) = store.future_with::<Vec<u8>>(options()).await.unwrap();
    let file = write_proxy(dir, &proxy);
    let consumer = Node::consumer(&file, long, env);
    let promise_file = write_promise(dir, &promise);
    let mut producer = Node::spawn(
        &[
            "produce",
            promise_file.to_str().unwrap(),
            "100",
            "0",
            "drop",
        ],
        env,
    );
    assert_eq!(producer.line(), "live");
    assert!(producer.child.wait().unwrap().success());
    assert_failed(&consumer.report(), "dropped");
    // The error is the same for a consumer that comes later.
    let err = proxy.resolve().await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Future {
                problem: FutureProblem::Dropped,
                ..
            }
        ),
        "{err:?}"
    );
    store.evict(proxy.key().unwrap()).await.unwrap();

    // 5. The producer is killed before it sets: its heartbeat stops, and consumers learn it.
    let (promise, proxy) = store.future_with::<Vec<u8>>(options()).await.unwrap();
    let file = write_proxy(dir, &proxy);
    let promise_file = write_promise(dir, &promise);
    let mut producer = Node::spawn(
        &["produce", promise_file.to_str().unwrap(), "0", "0", "hang"],
        env,
    );
    assert_eq!(producer.line(), "live");
    let consumer = Node::consumer(&file, long, env);
    tokio::time::sleep(Duration::from_millis(300)).await;
    producer.kill();
    let report = consumer.report();
    assert_failed(&report, "producer-gone");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains(proxy.key().unwrap().as_str()),
        "the error names the key: {report}"
    );

    // 6. A consumer's timeout, while the producer (this process) is alive.
    let (promise, proxy) = store.future_with::<Vec<u8>>(options()).await.unwrap();
    let file = write_proxy(dir, &proxy);
    let consumer = Node::consumer(&file, Duration::from_millis(700), env);
    assert_failed(&consumer.report(), "timeout");

    // 7. A consumer killed while waiting leaves the future as it was: the set and a later
    //    consumer work.
    let consumer = Node::consumer(&file, long, env);
    tokio::time::sleep(Duration::from_millis(200)).await;
    consumer.kill();
    promise.set(&pattern(SIZE)).await.unwrap();
    assert_value(&Node::consumer(&file, long, env).report());
    store.evict(proxy.key().unwrap()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_futures_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        format!("fut-file-{}", Key::random()),
        FileConnector::new(dir.path().join("objects")).unwrap(),
    );
    scenarios(&store, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_futures_across_processes() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e:#}"));
    let store = Store::new(
        format!("fut-redis-{}", Key::random()),
        RedisConnector::with_config(RedisConfig {
            prefix: format!("fut-{}:", Key::random()),
            ..RedisConfig::new(server.url())
        })
        .unwrap(),
    );
    scenarios(&store, &[]).await;
    // Nobody is left subscribed: waits (killed ones included) closed their connections.
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(channels.is_empty(), "still subscribed: {channels:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_futures_across_processes() {
    let server = proxystore_tests::grpc_server::in_process().unwrap();
    let store = Store::new(
        format!("fut-grpc-{}", Key::random()),
        server.connector().unwrap(),
    );
    scenarios(&store, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_futures_across_processes() {
    let server = S3Server::start().unwrap_or_else(|e| panic!("{e:#}"));
    let store = Store::new(
        format!("fut-s3-{}", Key::random()),
        S3Connector::with_config(server.config(&format!("fut-{}/", Key::random()))).unwrap(),
    );
    let policy = format!(r#"{{"buckets": ["{BUCKET}"]}}"#);
    scenarios(
        &store,
        &[(proxystore::RESOLVE_POLICY_ENV.to_owned(), policy)],
    )
    .await;
}

/// Memory: one process, many tasks. 32 consumers wait on each of 8 futures set by 8 producer
/// tasks; a dropped promise and a timeout are seen by every consumer of theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_futures_across_tasks() {
    let store = Store::new(
        format!("fut-mem-{}", Key::random()),
        MemoryConnector::new(&format!("fut-mem-{}", Key::random())),
    );
    let mut consumers = Vec::new();
    let mut producers = Vec::new();
    for i in 0..8usize {
        let (promise, proxy) = store.future_with::<Vec<u8>>(options()).await.unwrap();
        for _ in 0..32 {
            let p = proxy.clone();
            consumers.push(tokio::spawn(async move {
                p.resolve()
                    .await
                    .map(|v| v.len())
                    .map_err(|e| e.to_string())
            }));
        }
        producers.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10 * i as u64)).await;
            promise.set(&pattern(1024 + i)).await
        }));
    }
    for p in producers {
        p.await.unwrap().unwrap();
    }
    for (n, c) in consumers.into_iter().enumerate() {
        assert_eq!(c.await.unwrap(), Ok(1024 + n / 32));
    }

    let (promise, proxy) = store.future_with::<Vec<u8>>(options()).await.unwrap();
    let waiting: Vec<_> = (0..16)
        .map(|_| {
            let p = proxy.clone();
            tokio::spawn(async move { p.resolve().await.map(|_| ()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(promise);
    for w in waiting {
        let err = w.await.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                Error::Future {
                    problem: FutureProblem::Dropped,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    let (_promise, proxy) = store.future_with::<Vec<u8>>(options()).await.unwrap();
    let err = proxy
        .resolve_within(Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
}
