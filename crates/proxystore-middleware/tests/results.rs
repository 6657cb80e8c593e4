//! Task results by proxy: the policy at `task/return`, each cleanup rule, documents.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use proxystore::connector::memory::MemoryConnector;
use proxystore::{Key, OwnedProxy, Proxy, Store};
use proxystore_middleware::{ArgumentPolicy, ArgumentPolicyConfig, ResultCleanup, TaskCodec};

fn store() -> (Store, MemoryConnector) {
    let name = format!("res-{}", Key::random());
    let c = MemoryConnector::new(&name);
    (Store::new(name, c.clone()), c)
}

fn codec(store: &Store, cleanup: ResultCleanup) -> TaskCodec {
    TaskCodec::new(ArgumentPolicy::from_parts(store.name().to_owned(), 1024))
        .with_store(store.clone())
        .with_result_cleanup(cleanup)
}

fn big() -> Vec<u64> {
    (0..100_000).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_result_travels_as_a_small_document_and_is_evicted_when_read() {
    let (store, segment) = store();
    let codec = codec(&store, ResultCleanup::OnRead);
    let doc = serde_json::to_vec(&codec.proxy_result("map", big()).await.unwrap()).unwrap();
    let first = doc.clone();
    assert!(doc.len() < 600, "{} bytes in the result storage", doc.len());
    assert_eq!(segment.len(), 1);
    let read: Proxy<Vec<u64>> = serde_json::from_slice(&doc).unwrap();
    assert_eq!(segment.len(), 1, "not fetched before first use");
    assert_eq!(read.iter().sum::<u64>(), (0..100_000u64).sum::<u64>());
    assert_eq!(segment.len(), 0, "read once: evicted");

    // Read again after its cleanup: a typed error that names store, key and task.
    let again: Proxy<Vec<u64>> = serde_json::from_slice(&first).unwrap();
    let key = again.reference().unwrap().key.clone();
    match again.resolve().await {
        Err(proxystore::Error::NotFound {
            store: s,
            key: k,
            origin,
        }) => {
            assert_eq!((s.as_str(), &k), (store.name(), &key));
            assert_eq!(origin.as_deref(), Some("map/return"));
        }
        other => panic!("expected NotFound, got {other:?}"),
    }

    // A small result stays inline, and still reads as a proxy.
    let doc = serde_json::to_vec(&codec.proxy_result("map", 3u8).await.unwrap()).unwrap();
    assert_eq!(doc, b"3");
    let read: Proxy<u8> = serde_json::from_slice(&doc).unwrap();
    assert_eq!(*read, 3);

    // Results are counted apart from task arguments.
    let stats = codec.stats();
    assert_eq!((stats.results_encoded, stats.results_proxied), (2, 1));
    assert!(stats.result_bytes_proxied > 100_000, "{stats:?}");
    assert_eq!((stats.tasks_encoded, stats.args_proxied), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_result_can_be_read_many_times_until_the_lease_ends() {
    let (store, segment) = store();
    let codec = codec(&store, ResultCleanup::Lease(Duration::from_millis(300)));
    let doc = serde_json::to_vec(&codec.proxy_result("map", big()).await.unwrap()).unwrap();
    for _ in 0..3 {
        store.clear_cache();
        let read: Proxy<Vec<u64>> = serde_json::from_slice(&doc).unwrap();
        assert_eq!(read.len(), 100_000);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !segment.is_empty() {
        assert!(std::time::Instant::now() < deadline, "lease never evicted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_owned_by_its_reader_is_evicted_when_the_reader_drops_it() {
    let (store, segment) = store();
    let codec = codec(&store, ResultCleanup::Reader);
    let doc = serde_json::to_vec(&codec.proxy_result("map", big()).await.unwrap()).unwrap();
    let mine: OwnedProxy<Vec<u64>> = serde_json::from_slice(&doc).unwrap();
    assert_eq!(mine.len(), 100_000);
    assert_eq!(segment.len(), 1, "reading does not evict");
    // Moved to a task, it cannot be moved again: the error names the key and the task.
    let key = mine.key().unwrap().clone();
    let sent = serde_json::to_string(&mine).unwrap();
    let again = serde_json::to_string(&mine).unwrap_err().to_string();
    assert!(
        again.contains(&format!("object {key} (made as map/return) of store")),
        "{again}"
    );
    drop(sent);
    let mine: OwnedProxy<Vec<u64>> = serde_json::from_slice(&doc).unwrap();
    drop(mine);
    assert!(proxystore::lifetime::wait_for_evictions(
        Duration::from_secs(10)
    ));
    assert_eq!(segment.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_decides_at_task_slash_return() {
    let (store, segment) = store();
    let policy = ArgumentPolicyConfig {
        store: store.name().to_owned(),
        threshold: 1024,
        exclude: vec!["report/return".into()],
        ..ArgumentPolicyConfig::default()
    }
    .compile()
    .unwrap();
    let codec = TaskCodec::new(policy).with_store(store.clone());
    let kept = codec.proxy_result("report", big()).await.unwrap();
    assert!(kept.reference().is_none(), "excluded: inline");
    let moved = codec.proxy_result("map", big()).await.unwrap();
    assert_eq!(
        moved.reference().unwrap().key,
        *moved.key().unwrap(),
        "proxied"
    );
    assert_eq!(segment.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_documents_round_trip_fetched_or_lazy() {
    let (store, segment) = store();
    let codec = codec(&store, ResultCleanup::Lease(Duration::from_secs(60)));
    let encoded = codec.encode_result("map", &big()).unwrap();
    assert_eq!(encoded.proxied.len(), 1);
    assert!(encoded.bytes.len() < 1000, "{} bytes", encoded.bytes.len());
    let stats = codec.stats();
    assert_eq!((stats.results_encoded, stats.results_proxied), (1, 1));
    assert_eq!(stats.result_bytes_inline, encoded.bytes.len() as u64);
    assert_eq!((stats.tasks_encoded, stats.bytes_inline), (0, 0));
    let fetched = codec.decode_result::<Vec<u64>>(&encoded.bytes).unwrap();
    assert_eq!((fetched.args.len(), fetched.fetched), (100_000, 1));
    let lazy = codec
        .decode_result::<Proxy<Vec<u64>>>(&encoded.bytes)
        .unwrap();
    assert_eq!((lazy.fetched, lazy.lazy), (0, 1));
    assert_eq!(lazy.args.len(), 100_000);
    assert_eq!(segment.len(), 1);
}

#[derive(serde::Serialize, serde::Deserialize)]
struct WithOwned {
    owned: Option<OwnedProxy<Vec<u64>>>,
    n: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owned_argument_moves_through_a_task_document() {
    let (store, segment) = store();
    let codec = codec(&store, ResultCleanup::OnRead);
    let owned = store.owned_proxy(&big()).await.unwrap();
    let task = WithOwned {
        owned: Some(owned),
        n: 1,
    };
    let encoded = codec.encode("t", &task).unwrap();
    assert!(
        encoded.proxied.is_empty(),
        "already a proxy: not proxied again"
    );
    assert!(
        !task.owned.as_ref().unwrap().is_owner(),
        "moved into the document"
    );
    drop(task);
    let decoded = codec.decode::<WithOwned>(&encoded.bytes).unwrap();
    let owned = decoded.args.owned.unwrap();
    assert!(owned.is_owner());
    assert_eq!(owned.len(), 100_000);
    drop(owned);
    assert!(proxystore::lifetime::wait_for_evictions(
        Duration::from_secs(10)
    ));
    assert_eq!(segment.len(), 0);
}
