//! Store, proxy, registry and lifetime behaviour over the built-in connectors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proxystore::connector::file::FileConnector;
use proxystore::connector::memory::MemoryConnector;
use proxystore::lifetime::{Lease, Lifetime, Scope};
use proxystore::{
    Codec, DigestAlgorithm, Error, Key, Proxy, ProxyOptions, Reference, Store, get_store,
    register_store, unregister_store,
};
use serde::{Deserialize, Serialize};

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Key::random())
}

fn memory_store() -> Store {
    let name = unique("mem");
    Store::new(name.clone(), MemoryConnector::new(&name))
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Task {
    name: String,
    weights: Proxy<Vec<f64>>,
    scale: f64,
}

#[tokio::test]
async fn put_get_exists_evict_and_cache() {
    let store = memory_store();
    let key = store.put(&vec![1u32, 2, 3]).await.unwrap();
    assert!(store.exists(&key).await.unwrap());
    assert_eq!(
        store.get::<Vec<u32>>(&key).await.unwrap(),
        Some(vec![1, 2, 3])
    );
    let before = store.metrics();
    assert_eq!(
        store.get::<Vec<u32>>(&key).await.unwrap(),
        Some(vec![1, 2, 3])
    );
    let after = store.metrics();
    assert_eq!(
        after.get.count, before.get.count,
        "second get must not touch the connector"
    );
    assert_eq!(after.cache_hits, before.cache_hits + 1);
    store.evict(&key).await.unwrap();
    assert!(!store.exists(&key).await.unwrap());
    assert_eq!(store.get::<Vec<u32>>(&key).await.unwrap(), None);
    assert_eq!(store.metrics().put.count, 1);
}

#[tokio::test]
async fn bytes_are_stored_raw_and_zero_copy() {
    let store = memory_store();
    let data = Bytes::from(vec![42u8; 1 << 20]);
    let key = store.put(&data).await.unwrap();
    let raw = store.connector().get(&key).await.unwrap().unwrap();
    assert_eq!(raw.as_ptr(), data.as_ptr(), "put of Bytes copies nothing");
    let back: Bytes = store.get(&key).await.unwrap().unwrap();
    assert_eq!(back.as_ptr(), data.as_ptr(), "get of Bytes copies nothing");
    let v: Vec<u8> = store.get(&key).await.unwrap().unwrap();
    assert_eq!(v.len(), 1 << 20);
    let p = store.proxy(&data).await.unwrap();
    assert_eq!(p.reference().unwrap().codec, Codec::Raw);
    assert_eq!(p.resolve().await.unwrap().as_ptr(), data.as_ptr());
}

#[tokio::test]
async fn batches() {
    let store = memory_store();
    let objs: Vec<String> = (0..5).map(|i| format!("obj{i}")).collect();
    let keys = store.put_batch(&objs).await.unwrap();
    assert_eq!(keys.len(), 5);
    for (k, o) in keys.iter().zip(&objs) {
        assert_eq!(store.get::<String>(k).await.unwrap().as_ref(), Some(o));
    }
    let proxies = store.proxy_batch(&objs).await.unwrap();
    assert_eq!(*proxies[4].resolve().await.unwrap(), "obj4");
    store.evict_batch(&keys).await.unwrap();
    assert!(!store.exists(&keys[0]).await.unwrap());
}

#[tokio::test(flavor = "current_thread")]
async fn proxy_derefs_inside_a_current_thread_runtime() {
    let store = memory_store();
    let p = store.proxy(&"hello".to_string()).await.unwrap();
    assert!(!p.is_resolved());
    assert_eq!(p.len(), 5);
    assert!(p.is_resolved());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_derefs_inside_a_multi_thread_runtime_and_tasks() {
    let store = memory_store();
    let p = store.proxy(&vec![1u8, 2, 3]).await.unwrap();
    let q = p.clone();
    let n = tokio::spawn(async move { q.iter().map(|&x| x as u32).sum::<u32>() })
        .await
        .unwrap();
    assert_eq!(n, 6);
    let r = p.clone();
    let m = tokio::task::spawn_blocking(move || r.len()).await.unwrap();
    assert_eq!(m, 3);
}

#[test]
fn proxy_derefs_outside_any_runtime() {
    let store = memory_store();
    let p = proxystore::runtime::block_on({
        let store = store.clone();
        async move { store.proxy(&42u64).await }
    })
    .unwrap()
    .unwrap();
    assert_eq!(*p, 42);
    std::thread::spawn(move || assert_eq!(*p + 1, 43))
        .join()
        .unwrap();
}

#[tokio::test]
async fn proxy_forwards_traits_and_debug_never_fetches() {
    let store = memory_store();
    let p = store.proxy(&"abc".to_string()).await.unwrap();
    let dbg = format!("{p:?}");
    assert!(dbg.contains("resolved: false"), "{dbg}");
    assert!(!p.is_resolved(), "Debug must not fetch");
    assert_eq!(p.to_string(), "abc");
    assert_eq!(p, "abc".to_string());
    let s: &str = p.as_ref();
    assert_eq!(s, "abc");
    let q = store.proxy(&"abd".to_string()).await.unwrap();
    assert!(p < q);
    assert!(format!("{p:?}").contains("target"));
    let v = store.proxy(&vec![1, 2]).await.unwrap();
    assert_eq!((&v).into_iter().count(), 2);
    assert_eq!(v.clone().extract().unwrap(), vec![1, 2]);
}

#[tokio::test]
async fn proxies_serialize_as_references_in_every_codec() {
    let store = memory_store();
    register_store(&store).unwrap();
    let weights = vec![0.5f64; 100_000];
    let task = Task {
        name: "train".into(),
        weights: store.proxy(&weights).await.unwrap(),
        scale: 2.0,
    };
    let json = serde_json::to_string(&task).unwrap();
    assert!(json.len() < 1024, "JSON task is {} bytes", json.len());
    assert!(json.contains("\"$proxy\""));
    let post = postcard::to_stdvec(&task).unwrap();
    assert!(post.len() < 300, "postcard task is {} bytes", post.len());
    let mp = rmp_serde::to_vec_named(&task).unwrap();

    let a: Task = serde_json::from_str(&json).unwrap();
    let b: Task = postcard::from_bytes(&post).unwrap();
    let c: Task = rmp_serde::from_slice(&mp).unwrap();
    for t in [&a, &b, &c] {
        assert!(!t.weights.is_resolved());
        assert_eq!(t.weights.len(), 100_000);
        assert_eq!(t.name, "train");
    }
    unregister_store(store.name());
}

#[tokio::test]
async fn proxy_fields_accept_inline_values() {
    #[derive(Serialize)]
    struct PlainTask {
        name: String,
        weights: Vec<f64>,
        scale: f64,
    }
    let json = serde_json::to_string(&PlainTask {
        name: "t".into(),
        weights: vec![1.0, 2.0],
        scale: 1.0,
    })
    .unwrap();
    let t: Task = serde_json::from_str(&json).unwrap();
    assert!(t.weights.is_resolved());
    assert!(t.weights.reference().is_none());
    assert_eq!(*t.weights, vec![1.0, 2.0]);
    // Inline proxies re-serialize inline, in binary codecs too.
    let post = postcard::to_stdvec(&t).unwrap();
    let back: Task = postcard::from_bytes(&post).unwrap();
    assert_eq!(*back.weights, vec![1.0, 2.0]);
}

#[tokio::test]
async fn a_proxy_rebuilds_its_store_from_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("rebuild");
    let producer = Store::new(name.clone(), FileConnector::new(dir.path()).unwrap());
    let p = producer.proxy(&vec![7u16; 1000]).await.unwrap();
    let bytes = p.reference().unwrap().to_bytes();
    assert!(get_store(&name).is_none());
    let q: Proxy<Vec<u16>> = Proxy::from_reference(Reference::from_bytes(&bytes).unwrap());
    assert_eq!(q.resolve().await.unwrap().len(), 1000);
    // The rebuilt store is the proxy's; the registry's names stay the application's.
    let rebuilt = q.factory().unwrap().store().unwrap();
    assert_eq!(rebuilt.metrics().resolve.count, 1);
    assert_eq!(rebuilt.config().connector, producer.config().connector);
    assert!(get_store(&name).is_none());
}

#[tokio::test]
async fn digest_mismatch_and_missing_objects_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    for alg in [DigestAlgorithm::Xxh3, DigestAlgorithm::Blake3] {
        let store = Store::builder(unique("digest"), FileConnector::new(dir.path()).unwrap())
            .digest(alg)
            .cache_bytes(0)
            .build();
        let p = store.proxy(&vec![1u8; 4096]).await.unwrap();
        let key = p.key().unwrap().clone();
        // Corrupt the stored object behind the store's back.
        std::fs::write(dir.path().join(key.as_str()), vec![2u8; 4096]).unwrap();
        let e = p.resolve().await.unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
        assert!(e.to_string().contains(alg.as_str()), "{e}");
        // Truncated.
        std::fs::write(dir.path().join(key.as_str()), vec![1u8; 10]).unwrap();
        assert!(matches!(
            p.try_get().unwrap_err(),
            Error::DigestMismatch { .. }
        ));
        store.evict(&key).await.unwrap();
        let e = p.resolve().await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        assert!(e.to_string().contains(key.as_str()));
    }
    // With verification off, the digest is not checked.
    let store = Store::builder(unique("noverify"), FileConnector::new(dir.path()).unwrap())
        .verify_digest(false)
        .build();
    let p = store.proxy(&vec![1u8; 16]).await.unwrap();
    std::fs::write(dir.path().join(p.key().unwrap().as_str()), vec![3u8; 16]).unwrap();
    assert_eq!(*p.resolve().await.unwrap(), vec![3u8; 16]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_resolves_are_hashed_as_read_and_counted_through_user_layers() {
    // Hashing as the file is read (in pieces) gives the digest of the whole object, through a
    // user's layer (which forwards `get_into`), for both algorithms; the read is counted.
    let dir = tempfile::tempdir().unwrap();
    for alg in [DigestAlgorithm::Xxh3, DigestAlgorithm::Blake3] {
        let store = Store::builder(unique("hashed"), FileConnector::new(dir.path()).unwrap())
            .digest(alg)
            .cache_bytes(0)
            .layer(proxystore::layer::TimeoutLayer::new(Duration::from_secs(
                30,
            )))
            .build();
        let data = Bytes::from(
            (0..(9 << 20) + 7)
                .map(|i| (i % 241) as u8)
                .collect::<Vec<_>>(),
        );
        let p = store.proxy(&data).await.unwrap();
        let r = p.reference().unwrap().clone();
        let before = store.metrics().get;
        assert_eq!(store.get_verified_bytes(&r).await.unwrap(), data);
        let after = store.metrics().get;
        assert_eq!(after.count - before.count, 1);
        assert_eq!(after.bytes - before.bytes, r.size);
        // One byte changed deep inside (not in the first piece) is caught.
        let path = dir.path().join(r.key.as_str());
        let mut stored = std::fs::read(&path).unwrap();
        stored[5 << 20] ^= 1;
        std::fs::write(&path, &stored).unwrap();
        let e = store.get_verified_bytes(&r).await.unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    }
}

#[tokio::test]
async fn decode_into_the_wrong_type_is_a_typed_error() {
    let store = memory_store();
    let key = store.put(&"text".to_string()).await.unwrap();
    // postcard is not self-describing: pick a type whose decoding must fail.
    let e = store.get::<Vec<bool>>(&key).await.unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e}");
    let p: Proxy<u64> = store.proxy_from_key(Key::from("missing"));
    assert!(matches!(p.try_get().unwrap_err(), Error::NotFound { .. }));
}

#[tokio::test]
async fn unknown_connector_kind_in_a_reference() {
    let mut r = Reference::new(
        unique("alien"),
        proxystore::ConnectorConfig::new("alien", serde_json::Value::Null),
        Key::from("k"),
    );
    r.codec = Codec::Json;
    // The default resolve policy refuses kinds it does not know before looking them up.
    let p: Proxy<String> = Proxy::from_reference(r.clone());
    let e = p.try_get().unwrap_err();
    assert!(matches!(e, Error::Refused { .. }), "{e}");
    let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.len())).unwrap_err();
    let msg = e.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("connector kind 'alien' is not allowed"),
        "{msg}"
    );
    // A policy that lists it lets the lookup say the kind is not registered here.
    let policy = proxystore::ResolvePolicy::default().allow_kind("alien");
    let e = proxystore::store_for_reference(&r, &policy).unwrap_err();
    assert!(matches!(e, Error::UnknownConnectorKind { .. }), "{e}");
    assert!(
        e.to_string().contains("unknown connector kind 'alien'"),
        "{e}"
    );
}

#[tokio::test]
async fn corrupt_references_in_serialized_tasks_are_errors() {
    assert!(
        serde_json::from_str::<Task>(
            r#"{"name":"x","weights":{"$proxy":{"version":1}},"scale":1}"#
        )
        .is_err()
    );
    assert!(serde_json::from_str::<Task>(r#"{"name":"x","weights":{"$proxy":{"version":99,"store":"s","connector":{"kind":"memory"},"key":"k"}},"scale":1}"#).is_err());
    let store = memory_store();
    let t = Task {
        name: "n".into(),
        weights: store.proxy(&vec![1.0]).await.unwrap(),
        scale: 1.0,
    };
    let post = postcard::to_stdvec(&t).unwrap();
    for cut in 0..post.len() {
        let _ = postcard::from_bytes::<Task>(&post[..cut]);
    }
    let mut flipped = post.clone();
    for i in 0..flipped.len() {
        flipped[i] ^= 0x55;
        let _ = postcard::from_bytes::<Task>(&flipped);
        flipped[i] ^= 0x55;
    }
}

#[tokio::test]
async fn evict_on_resolve() {
    let store = memory_store();
    let p = store
        .proxy_with(
            &"once".to_string(),
            ProxyOptions {
                evict_on_resolve: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let key = p.key().unwrap().clone();
    assert!(store.exists(&key).await.unwrap());
    assert_eq!(*p.resolve().await.unwrap(), "once");
    assert!(!store.exists(&key).await.unwrap());
    // Still usable after eviction: the target is held by the proxy.
    assert_eq!(p.len(), 4);
}

#[tokio::test]
async fn scope_evicts_on_close_and_on_drop() {
    let store = memory_store();
    let scope = Scope::new(&store);
    let a = scope.proxy(&1u8).await.unwrap();
    let b = scope.proxy(&2u8).await.unwrap();
    assert_eq!(scope.keys().len(), 2);
    scope.close().await.unwrap();
    for p in [&a, &b] {
        assert!(!store.exists(p.key().unwrap()).await.unwrap());
    }
    assert!(
        scope.proxy(&3u8).await.is_err(),
        "closed scope refuses new objects"
    );
    // ... and leaves nothing behind: the refused object is evicted again.
    let segment = MemoryConnector::new(store.name());
    assert!(segment.is_empty(), "{} objects left", segment.len());

    let key = {
        let scope = Scope::new(&store);
        scope.proxy(&4u8).await.unwrap().key().unwrap().clone()
    };
    wait_until_gone(&store, &key).await;

    // A lifetime owns objects of its own store only.
    let other = memory_store();
    let scope = Scope::new(&store);
    let key = other.put(&5u8).await.unwrap();
    let e = scope.add_key(&other, key).unwrap_err();
    assert!(matches!(e, Error::Config { .. }));
}

async fn wait_until_gone(store: &Store, key: &Key) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.exists(key).await.unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "{key} was not evicted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn lease_expires_extends_and_sweeps_after_drop() {
    let store = memory_store();
    let lease = Lease::new(&store, Duration::from_millis(300));
    let p = lease.proxy(&vec![1u8; 10]).await.unwrap();
    let key = p.key().unwrap().clone();
    // Extended well beyond the first deadline, then checked once that deadline has surely
    // passed, with seconds to spare before the new one for a slow scheduler.
    lease.extend(Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        store.exists(&key).await.unwrap(),
        "extended lease keeps objects"
    );
    assert!(!lease.is_expired());
    drop(lease);
    wait_until_gone(&store, &key).await;

    let lease = Lease::new(&store, Duration::from_secs(60));
    let p = lease.proxy(&1u8).await.unwrap();
    lease.close().await.unwrap();
    assert!(lease.is_expired());
    assert!(!store.exists(p.key().unwrap()).await.unwrap());
}

#[tokio::test]
async fn owned_proxy_evicts_on_drop_unless_released() {
    let store = memory_store();
    let owned = store.owned_proxy(&"mine".to_string()).await.unwrap();
    let key = owned.key().unwrap().clone();
    let borrowed = owned.borrow().unwrap();
    assert_eq!(owned.len(), 4);
    // Dropped while borrowed: the object stays until the last borrow drops.
    drop(owned);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(store.exists(&key).await.unwrap());
    assert_eq!(borrowed.len(), 4);
    drop(borrowed);
    wait_until_gone(&store, &key).await;

    let owned = store.owned_proxy(&"kept".to_string()).await.unwrap();
    let plain = owned.into_proxy();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(store.exists(plain.key().unwrap()).await.unwrap());
}

#[tokio::test]
async fn registry_rejects_a_different_store_with_the_same_name() {
    let name = unique("reg");
    let a = Store::new(name.clone(), MemoryConnector::new(&name));
    register_store(&a).unwrap();
    register_store(&a).unwrap();
    let b = Store::new(name.clone(), MemoryConnector::new("other-segment"));
    assert!(matches!(register_store(&b), Err(Error::StoreExists { .. })));
    assert!(unregister_store(&name).unwrap().ptr_eq(&a));
}

#[tokio::test]
async fn store_config_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder(unique("cfg"), FileConnector::new(dir.path()).unwrap())
        .codec(Codec::Json)
        .digest(DigestAlgorithm::Blake3)
        .cache_bytes(1234)
        .build();
    let json = serde_json::to_string(store.config()).unwrap();
    let rebuilt = Store::from_config(serde_json::from_str(&json).unwrap()).unwrap();
    assert_eq!(rebuilt.config(), store.config());
    let key = store.put(&vec!["a".to_string()]).await.unwrap();
    assert_eq!(
        rebuilt.get::<Vec<String>>(&key).await.unwrap(),
        Some(vec!["a".to_string()])
    );
    let stored = store.get_bytes(&key).await.unwrap().unwrap();
    assert_eq!(&stored[..], b"[\"a\"]", "JSON codec in use");
}

#[tokio::test]
async fn cache_is_byte_bounded() {
    let store = Store::builder(unique("bounded"), MemoryConnector::new(&unique("seg")))
        .cache_bytes(100_000)
        .build();
    let mut keys = Vec::new();
    for i in 0..50u8 {
        let k = store.put(&Bytes::from(vec![i; 10_000])).await.unwrap();
        let _: Bytes = store.get(&k).await.unwrap().unwrap();
        assert!(store.cache_bytes() <= 100_000);
        keys.push(k);
    }
    assert!(store.cache_len() < 50);
    store.clear_cache();
    assert_eq!(store.cache_len(), 0);
}

#[tokio::test]
async fn shared_gets_share_one_object() {
    let store = memory_store();
    let key = store.put(&vec![9u8; 100]).await.unwrap();
    let a = store.get_shared::<Vec<u8>>(&key).await.unwrap().unwrap();
    let b = store.get_shared::<Vec<u8>>(&key).await.unwrap().unwrap();
    assert!(Arc::ptr_eq(&a, &b));
}

#[tokio::test]
async fn per_key_metrics_created_keys_and_populated_proxies() {
    let name = unique("keys");
    let c = MemoryConnector::new(&name);
    let store = Store::builder(name, c.clone())
        .key_metrics(true)
        .track_created(true)
        .build();
    let keys = store
        .put_batch(&[vec![1u8; 10], vec![2u8; 20]])
        .await
        .unwrap();
    let p = store.proxy_value(vec![3u8; 30]).await.unwrap();
    let k3 = p.key().unwrap().clone();
    // Populated: resolved here, cached for other proxies of the key, nothing fetched.
    assert!(p.is_resolved() && store.is_cached(&k3));
    let again: Proxy<Vec<u8>> = Proxy::from_reference(p.reference().unwrap().clone());
    assert_eq!(again.len(), 30);
    assert_eq!(store.metrics().get.count, 0);

    let _: Option<Vec<u8>> = store.get(&keys[1]).await.unwrap();
    store.evict(&keys[0]).await.unwrap();
    let m0 = store.key_metrics(&keys[0]).unwrap();
    let m1 = store.key_metrics(&keys[1]).unwrap();
    assert_eq!((m0.put.count, m0.evict.count, m0.get.count), (1, 1, 0));
    assert_eq!((m1.put.count, m1.put.bytes, m1.get.count), (1, 20, 1));
    assert_eq!(store.key_metrics(&Key::from("never-used")), None);

    // Created and not evicted: the second batch object and the populated one.
    let mut created = store.created_keys();
    created.sort();
    let mut expected = vec![keys[1].clone(), k3.clone()];
    expected.sort();
    assert_eq!(created, expected);
    store.close_and_clear().await.unwrap();
    assert!(c.is_empty());
    assert_eq!(store.take_key_metrics().len(), 3);
    assert!(store.take_key_metrics().is_empty());
}

/// A layer that counts the calls it sees and forwards them the async way (it keeps the
/// default `immediate`, so a store cannot go around it).
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn proxystore::Connector>,
    calls: Arc<std::sync::atomic::AtomicU64>,
}

#[async_trait::async_trait]
impl proxystore::Connector for Counting {
    fn kind(&self) -> &str {
        self.inner.kind()
    }
    async fn put_opts(
        &self,
        data: Bytes,
        options: &proxystore::PutOptions,
    ) -> proxystore::Result<Key> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.put_opts(data, options).await
    }
    async fn get(&self, key: &Key) -> proxystore::Result<Option<Bytes>> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.get(key).await
    }
    async fn exists(&self, key: &Key) -> proxystore::Result<bool> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.exists(key).await
    }
    async fn evict(&self, key: &Key) -> proxystore::Result<()> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.evict(key).await
    }
    fn config(&self) -> proxystore::ConnectorConfig {
        self.inner.config()
    }
}

struct CountingLayer(Arc<std::sync::atomic::AtomicU64>);

impl proxystore::layer::Layer for CountingLayer {
    fn layer(&self, inner: Arc<dyn proxystore::Connector>) -> Arc<dyn proxystore::Connector> {
        Arc::new(Counting {
            inner,
            calls: self.0.clone(),
        })
    }
}

/// A memory store's calls go around the async machinery (the connector's immediate calls),
/// except through a layer that does not forward them: that layer sees every call.
#[tokio::test]
async fn a_layer_that_keeps_the_async_path_sees_every_call_of_a_memory_store() {
    let name = unique("immediate-layer");
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let store = Store::builder(name.clone(), MemoryConnector::new(&name))
        .layer(CountingLayer(calls.clone()))
        .cache_bytes(0)
        .build();
    let key = store.put(&Bytes::from_static(b"seen")).await.unwrap();
    let got: Bytes = store.get(&key).await.unwrap().unwrap();
    assert_eq!(&got[..], b"seen");
    assert!(store.exists(&key).await.unwrap());
    store.evict(&key).await.unwrap();
    assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 4);
    assert_eq!(store.metrics().put.count, 1);
}

/// Immediate calls are counted one by one; their time is estimated from a sample, never zero
/// once any ran, and the mean stays that of a call.
#[tokio::test]
async fn immediate_calls_are_all_counted_and_their_time_estimated() {
    let store = memory_store();
    let data = Bytes::from(vec![1u8; 100]);
    for _ in 0..1000 {
        let key = store.put(&data).await.unwrap();
        let _: Bytes = store.get(&key).await.unwrap().unwrap();
        store.evict(&key).await.unwrap();
    }
    let m = store.metrics();
    for (op, stats, bytes) in [
        ("put", m.put, 100_000),
        ("get", m.get, 100_000),
        ("evict", m.evict, 0),
    ] {
        assert_eq!(stats.count, 1000, "{op}");
        assert_eq!(stats.bytes, bytes, "{op}");
        assert!(stats.time > Duration::ZERO, "{op}: {stats:?}");
        assert!(stats.mean() < Duration::from_millis(10), "{op}: {stats:?}");
    }
}
