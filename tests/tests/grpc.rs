//! The gRPC connector against the project's server started inside this process (memory and
//! file backends), a proxy made against that server resolved by a second OS process that
//! rebuilds the connector from the reference, and one connector over several replicas of a
//! server (spread, failover, replicas down).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use proxystore::conformance::Fixture;
use proxystore::{Key, Proxy, Store};
use proxystore_tests::grpc_server;

mod in_process_memory {
    use super::*;
    async fn fixture() -> Fixture {
        let server = grpc_server::in_process().unwrap();
        Fixture::with_guard(server.connector().unwrap(), server)
    }
    proxystore::conformance_tests!(fixture);
}

mod in_process_file {
    use super::*;
    async fn fixture() -> Fixture {
        let server = grpc_server::in_process_file().unwrap();
        Fixture::with_guard(server.server.connector().unwrap(), server)
    }
    proxystore::conformance_tests!(fixture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_made_against_the_server_resolves_in_another_process() {
    let server = grpc_server::in_process().unwrap();
    let store = Store::new(
        format!("grpc-xproc-{}", Key::random()),
        server.connector().unwrap(),
    );
    let objects: Vec<Vec<u64>> = (0..3u64)
        .map(|i| (0..50_000).map(|x| x + i).collect())
        .collect();
    let mut proxies: Vec<Proxy<Vec<u64>>> = Vec::new();
    for o in &objects {
        proxies.push(store.proxy(o).await.unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxies.bin");
    std::fs::write(&file, postcard::to_stdvec(&proxies).unwrap()).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_proxy-consumer"))
        .arg(&file)
        .args(["2", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["registered_before"], false);
    let expected: Vec<u64> = [2, 0].iter().map(|&i| objects[i].iter().sum()).collect();
    assert_eq!(report["sums"], serde_json::json!(expected));
    assert_eq!(report["resolved"], serde_json::json!([true, false, true]));
}

/// Several servers in front of one backend, and a connector given all their addresses.
mod replicas {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use proxystore::Bytes;
    use proxystore::connector::Connector;
    use proxystore::connector::grpc::{GrpcConfig, GrpcConnector};
    use proxystore::connector::memory::MemoryConnector;
    use proxystore::{Error, Key, Store};
    use proxystore_tests::front::Front;
    use proxystore_tests::grpc_server::{RunningServer, ServerConfig, spawn};

    /// A server of the test, dialed through a front port of the test's own ([`Front`]), so
    /// that once stopped, no server of another test can take its port and answer in its
    /// place.
    struct Replica {
        server: RunningServer,
        front: Front,
    }

    impl Replica {
        fn url(&self) -> String {
            self.front.url()
        }

        /// Stop it for good: every connection to it closes, and none gets through again.
        async fn stop(self) {
            self.front.stop();
            self.server.shutdown().await.unwrap();
        }
    }

    /// `n` servers storing into the same memory segment, so they serve the same objects.
    fn start(n: usize) -> Vec<Replica> {
        let shared: Arc<dyn Connector> = Arc::new(MemoryConnector::private());
        (0..n)
            .map(|_| {
                let server = spawn(ServerConfig::default().connector(shared.clone())).unwrap();
                let front = Front::start(&server.url()).unwrap();
                Replica { server, front }
            })
            .collect()
    }

    /// The first address, and the others as replicas.
    fn config(urls: &[String]) -> GrpcConfig {
        GrpcConfig::new(urls[0].clone()).addresses(urls[1..].iter().cloned())
    }

    fn urls(servers: &[Replica]) -> Vec<String> {
        servers.iter().map(Replica::url).collect()
    }

    /// A store over `config` that misses its cache, so that every get is a call.
    fn store(config: GrpcConfig) -> Store {
        Store::builder(
            format!("grpc-replicas-{}", Key::random()),
            GrpcConnector::with_config(config).unwrap(),
        )
        .cache_bytes(0)
        .build()
    }

    fn object(i: usize, len: usize) -> Bytes {
        (0..len)
            .map(|b| (b * 31 + i) as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_are_spread_over_the_replicas() {
        let servers = start(3);
        let multi = GrpcConnector::with_config(config(&urls(&servers))).unwrap();
        let n = 30;
        for i in 0..n {
            multi.put(object(i, 100)).await.unwrap();
        }
        // Each server counts the objects stored through it.
        let mut counts = Vec::new();
        for s in &servers {
            let stat = s.server.connector().unwrap().stat().await.unwrap();
            counts.push(stat.object_count);
        }
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
        assert_eq!(counts.iter().sum::<u64>(), n as u64, "{counts:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn objects_put_through_replicas_read_back_from_each() {
        let servers = start(3);
        let multi = GrpcConnector::with_config(config(&urls(&servers))).unwrap();
        // Small ones in a batch and on their own, and one streamed in many chunks.
        let objects: Vec<Bytes> = (0..6).map(|i| object(i, 1000 + i)).collect();
        let mut keys = multi
            .put_batch(objects[..3].to_vec(), &Default::default())
            .await
            .unwrap();
        for o in &objects[3..] {
            keys.push(multi.put(o.clone()).await.unwrap());
        }
        let large = object(7, (5 << 20) + 3);
        keys.push(multi.put(large.clone()).await.unwrap());
        let expected: Vec<&Bytes> = objects.iter().chain([&large]).collect();
        for s in &servers {
            let single = s.server.connector().unwrap();
            for (k, o) in keys.iter().zip(&expected) {
                let got = single.get(k).await.unwrap();
                assert_eq!(got.as_ref(), Some(*o), "{k} from {}", s.url());
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_fails_over_when_a_replica_stops() {
        let mut servers = start(3);
        let store = store(config(&urls(&servers)));
        let mut before = Vec::new();
        for i in 0..6 {
            before.push(store.connector().put(object(i, 64)).await.unwrap());
        }
        servers.remove(1).stop().await;
        // Every call succeeds: puts and gets alike move on from the stopped replica.
        for round in 0..30 {
            let value: Vec<u64> = (0..100).map(|x| x * round).collect();
            let key = store.put(&value).await.unwrap();
            assert_eq!(store.get::<Vec<u64>>(&key).await.unwrap(), Some(value));
            assert!(store.exists(&key).await.unwrap());
        }
        for (i, k) in before.iter().enumerate() {
            assert_eq!(
                store.get_bytes(k).await.unwrap(),
                Some(object(i, 64)),
                "object put before the stop"
            );
        }
    }

    /// A listener that closes every connection at once, counting them.
    async fn closing_listener() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });
        (url, accepted)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_that_cannot_be_reached_is_skipped() {
        let servers = start(2);
        let (broken, accepted) = closing_listener().await;
        let mut addresses = urls(&servers);
        addresses.insert(1, broken);
        let keys: Vec<Key> = {
            let single = servers[0].server.connector().unwrap();
            let mut keys = Vec::new();
            for i in 0..30 {
                keys.push(single.put(object(i, 64)).await.unwrap());
            }
            keys
        };
        let store = store(config(&addresses));
        let started = Instant::now();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(store.get_bytes(k).await.unwrap(), Some(object(i, 64)));
        }
        // Without the mark, one get in three would go to the broken replica; with it, the
        // first failure there keeps the others away for a second, then two, and so on.
        let elapsed = started.elapsed();
        let dialed = accepted.load(Ordering::SeqCst);
        let bound = 2 + elapsed.as_secs() as usize;
        assert!(
            dialed <= bound,
            "{dialed} connections to the broken replica in {elapsed:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn all_replicas_stopped_is_a_typed_retryable_error() {
        let servers = start(3);
        let addresses = urls(&servers);
        let store = store(config(&addresses).retries(2));
        let key = store.put(&7u32).await.unwrap();
        for s in servers {
            s.stop().await;
        }
        let calls = async {
            let get = store.get::<u32>(&key).await.unwrap_err();
            let put = store.put(&8u32).await.unwrap_err();
            (get, put)
        };
        let (get, put) = tokio::time::timeout(Duration::from_secs(20), calls)
            .await
            .expect("calls on stopped replicas end");
        for e in [get, put] {
            assert!(matches!(e, Error::Backend { .. }), "{e:?}");
            assert!(e.is_retryable(), "{e:?}");
        }
    }
}

/// The runtimes the connector has channels on, as its `Debug` says (`runtimes: N`).
fn runtimes(connector: &dyn std::fmt::Debug) -> usize {
    let text = format!("{connector:?}");
    let at = text.find("runtimes: ").expect("Debug names the runtimes") + "runtimes: ".len();
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A call runs on its caller's runtime, over a channel of that runtime's own (no hop to the
/// library's I/O runtime and back); a runtime that ends takes its channel along; a caller
/// outside any tokio runtime (another executor, a synchronous resolve) is served from the I/O
/// runtime.
#[test]
fn calls_run_on_the_callers_runtime_and_from_outside_any() {
    let server = grpc_server::in_process().unwrap();
    let connector = server.connector().unwrap();
    let store = Store::new(
        format!("grpc-runtimes-{}", Key::random()),
        connector.clone(),
    );
    let current = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let a = current();
    let key = a.block_on(store.put(&vec![7u8; 100])).unwrap();
    assert_eq!(
        a.block_on(store.get::<Vec<u8>>(&key)).unwrap(),
        Some(vec![7u8; 100])
    );
    assert_eq!(runtimes(&connector), 1);

    let b = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let proxy: Proxy<Vec<u8>> = b.block_on(store.proxy(&vec![9u8; 1000])).unwrap();
    assert!(b.block_on(store.exists(&key)).unwrap());
    assert_eq!(runtimes(&connector), 2);
    drop(a);
    assert_eq!(
        runtimes(&connector),
        1,
        "the ended runtime's channel went with it"
    );

    // Another executor: the store's layer runs the call on the I/O runtime.
    let got = futures::executor::block_on(store.get_bytes(&key)).unwrap();
    assert_eq!(got.as_deref(), Some(&[7u8; 100][..]));
    assert_eq!(runtimes(&connector), 2);
    // A synchronous resolve on a plain thread.
    let resolved = std::thread::spawn(move || proxy.len()).join().unwrap();
    assert_eq!(resolved, 1000);
    drop(b);
    assert_eq!(runtimes(&connector), 1);
}
