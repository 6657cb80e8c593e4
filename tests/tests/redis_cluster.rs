//! The Redis connector against a Redis Cluster that each test starts on loopback (six
//! `redis-server --cluster-enabled yes`, three masters with a replica each): the conformance
//! suite, objects spread over every master with batches split by slot, large objects in pieces
//! on one slot, and a master killed mid-put while its replica takes over.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxystore::conformance::payload;
use proxystore::connector::redis::{RedisConfig, RedisConnector};
use proxystore::{Bytes, Connector, Key};
use proxystore_tests::redis_cluster::RedisCluster;

fn start() -> RedisCluster {
    RedisCluster::start().unwrap_or_else(|e| panic!("{e:#}"))
}

fn config(cluster: &RedisCluster) -> RedisConfig {
    RedisConfig {
        prefix: format!("test-{}:", Key::random()),
        ..RedisConfig::cluster(cluster.urls())
    }
}

/// Every conformance check, on one cluster (starting one per check would cost a cluster each):
/// whole objects, then objects above 1 MiB written in pieces (the 64 MiB case among them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_on_a_cluster() {
    use proxystore::conformance as c;
    let cluster = start();
    let whole = RedisConnector::with_config(config(&cluster)).unwrap();
    let pieces = RedisConnector::with_config(RedisConfig {
        chunked_above_bytes: 1 << 20,
        chunk_bytes: 1 << 20,
        ..config(&cluster)
    })
    .unwrap();
    let mut failed = Vec::new();
    for (name, conn) in [("whole", &whole), ("pieces", &pieces)] {
        let conn: &dyn Connector = conn;
        let checks = [
            ("round_trip", c::round_trip(conn).await),
            ("large_object", c::large_object(conn).await),
            ("missing_key", c::missing_key(conn).await),
            ("exists_and_evict", c::exists_and_evict(conn).await),
            ("batches", c::batches(conn).await),
            ("ranges", c::ranges(conn).await),
            ("concurrency", c::concurrency(conn).await),
            ("config_round_trip", c::config_round_trip(conn).await),
            ("hostile_keys", c::hostile_keys(conn).await),
            ("streaming", c::streaming(conn).await),
            ("inventory", c::inventory(conn).await),
            ("wait", c::wait(conn).await),
            ("deferred_put", c::deferred_put(conn).await),
        ];
        for (check, result) in checks {
            if let Err(e) = result {
                failed.push(format!("{name}/{check}: {e}"));
            }
        }
    }
    assert!(failed.is_empty(), "conformance checks failed: {failed:#?}");
}

/// A raw connection to the node on `port`.
fn node(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Keys spread over every master; a batch put, get and evict of keys on many slots works in
/// one call each; a large object's pieces stay on its slot (a rename across slots would fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_spread_over_every_master_and_batches_split_by_slot() {
    let cluster = start();
    let config = RedisConfig {
        chunked_above_bytes: 256 << 10,
        chunk_bytes: 64 << 10,
        ..config(&cluster)
    };
    let prefix = config.prefix.clone();
    let c = RedisConnector::with_config(config).unwrap();
    let data: Vec<Bytes> = (0..300).map(|i| payload(100 + i, i as u64)).collect();
    let keys = c
        .put_batch(data.clone(), &Default::default())
        .await
        .unwrap();
    let got = c.get_batch(&keys).await.unwrap();
    assert_eq!(got, data.iter().cloned().map(Some).collect::<Vec<_>>());
    let masters = cluster.masters().unwrap();
    assert_eq!(masters.len(), 3);
    for m in &masters {
        let n: usize = redis::cmd("DBSIZE").query(&mut node(*m)).unwrap();
        assert!(n > 10, "master {m} holds {n} of the 300 objects");
    }
    // A key is `prefix{key}`: its slot is the key's.
    let k = &keys[0];
    let rk = format!("{prefix}{{{}}}", k.as_str());
    let m = cluster.master_of(rk.as_bytes()).unwrap();
    let stored: Option<Vec<u8>> = redis::cmd("GET").arg(&rk).query(&mut node(m)).unwrap();
    assert_eq!(stored.as_deref(), Some(data[0].as_ref()));

    // A 1 MiB object goes in 16 pieces into a temporary key renamed over its key.
    let big = payload(1 << 20, 7);
    let key = c.put(big.clone()).await.unwrap();
    assert_eq!(c.get(&key).await.unwrap(), Some(big));

    c.evict_batch(&keys).await.unwrap();
    c.evict(&key).await.unwrap();
    for m in &masters {
        let n: usize = redis::cmd("DBSIZE").query(&mut node(*m)).unwrap();
        assert_eq!(n, 0, "master {m} still holds objects");
    }
}

/// A master killed while puts run (some of them written in pieces): its replica takes over,
/// the calls that fail meanwhile fail with temporary errors, every put acknowledged (with
/// `min_replicas: 1`) is there after the failover byte for byte, no object is ever read
/// partial, and the same connector goes on once the old master is back as a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_put_fails_over_and_the_connector_recovers() {
    let mut cluster = start();
    let c = Arc::new(
        RedisConnector::with_config(RedisConfig {
            min_replicas: 1,
            chunked_above_bytes: 256 << 10,
            chunk_bytes: 64 << 10,
            ..config(&cluster)
        })
        .unwrap(),
    );
    let acked: Arc<Mutex<HashMap<Key, Bytes>>> = Arc::default();
    let errors: Arc<Mutex<Vec<proxystore::Error>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let (c, acked, errors, stop) = (c.clone(), acked.clone(), errors.clone(), stop.clone());
        async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && i < 5000 {
                // Mostly small objects; every tenth in pieces.
                let size = if i.is_multiple_of(10) {
                    300 << 10
                } else {
                    1000 + (i as usize % 7) * 100
                };
                let data = payload(size, i);
                match c.put(data.clone()).await {
                    Ok(key) => {
                        acked.lock().unwrap().insert(key, data);
                    }
                    Err(e) => errors.lock().unwrap().push(e),
                }
                i += 1;
            }
        }
    });
    // Let some puts land, then kill the master of a slot the writer uses.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 100 {
        assert!(Instant::now() < deadline, "no puts went through");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let victim = cluster.masters().unwrap()[0];
    cluster.kill(victim);
    let before_kill = acked.lock().unwrap().len();
    // The replica takes over: the cluster serves every slot again.
    tokio::task::block_in_place(|| cluster.wait_healthy())
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));
    // Back as a replica, so that writes to its old slots find `min_replicas` again.
    tokio::task::block_in_place(|| cluster.restart(victim)).unwrap();
    tokio::task::block_in_place(|| cluster.wait_healthy())
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));
    let after_recovery = acked.lock().unwrap().len();
    // The same connector writes again, on every slot.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let batch: Vec<Bytes> = (0..64).map(|i| payload(500, 90_000 + i)).collect();
        match c.put_batch(batch.clone(), &Default::default()).await {
            Ok(keys) => {
                assert_eq!(
                    c.get_batch(&keys).await.unwrap(),
                    batch.into_iter().map(Some).collect::<Vec<_>>()
                );
                break;
            }
            Err(e) => {
                assert!(e.is_retryable(), "not a temporary error: {e}");
                assert!(
                    Instant::now() < deadline,
                    "the connector did not recover: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.unwrap();

    let errors = std::mem::take(&mut *errors.lock().unwrap());
    for e in &errors {
        assert!(
            e.is_retryable(),
            "a put failed with a permanent error: {e:?}"
        );
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        acked.len() > after_recovery.max(before_kill),
        "puts went on after the failover"
    );
    for (key, data) in &acked {
        let got = c.get(key).await.unwrap();
        assert_eq!(
            got.as_ref(),
            Some(data),
            "acknowledged object {key} lost or changed"
        );
    }
    eprintln!(
        "{} puts acknowledged ({before_kill} before the kill), {} failed with temporary errors",
        acked.len(),
        errors.len()
    );
}

/// A stream whose objects live on the cluster: batches of small objects stored with one
/// `put_batch` (split by slot), fetched with one `get_batch` and evicted with one
/// `evict_batch` per message; every object byte for byte, none left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_keeps_its_objects_on_the_cluster() {
    use proxystore_stream::broker::SubscribeOptions;
    use proxystore_stream::broker::memory::MemoryBroker;
    use proxystore_stream::{BatchPolicy, StreamConsumer, StreamProducer, metadata};
    let cluster = start();
    let c = RedisConnector::with_config(config(&cluster)).unwrap();
    let store = proxystore::Store::new(format!("cluster-stream-{}", Key::random()), c);
    let broker = MemoryBroker::new();
    let producer = StreamProducer::<Vec<u8>>::new(broker.clone())
        .with_store(store.clone())
        .batch(BatchPolicy {
            max_events: 16,
            max_delay: Duration::from_secs(60),
        });
    let mut consumer =
        StreamConsumer::<Vec<u8>>::subscribe(&broker, "t", SubscribeOptions::default())
            .await
            .unwrap();
    let objects: Vec<Vec<u8>> = (0..100u64)
        .map(|i| {
            payload(
                if i.is_multiple_of(25) {
                    200 << 10
                } else {
                    1000
                },
                i,
            )
            .to_vec()
        })
        .collect();
    for (i, o) in objects.iter().enumerate() {
        producer
            .send("t", o, metadata([("i", i.to_string())]))
            .await
            .unwrap();
    }
    producer.close("t").await.unwrap();
    let mut n = 0;
    while let Some(got) = consumer.next_object().await {
        let (value, meta) = got.unwrap();
        assert_eq!(meta["i"], n.to_string());
        assert_eq!(value, objects[n]);
        n += 1;
    }
    assert_eq!(n, objects.len());
    for m in cluster.masters().unwrap() {
        let left: usize = redis::cmd("DBSIZE").query(&mut node(m)).unwrap();
        assert_eq!(left, 0, "master {m} still holds objects");
    }
}
