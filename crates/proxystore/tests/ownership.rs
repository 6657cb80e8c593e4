//! Ownership: owned proxies that move when serialized, counted borrows, mutable borrows that
//! write back, drop owners for task attempts, and evictions finished before the process exits.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use proxystore::connector::file::FileConnector;
use proxystore::connector::memory::MemoryConnector;
use proxystore::lifetime::{self, OwnedProxy, Scope};
use proxystore::{Error, Key, OwnershipProblem, Proxy, Store};
use serde::{Deserialize, Serialize};

fn memory_store() -> Store {
    let name = format!("own-{}", Key::random());
    Store::new(name.clone(), MemoryConnector::new(&name))
}

fn settle() {
    assert!(lifetime::wait_for_evictions(Duration::from_secs(10)));
}

#[derive(Serialize, Deserialize)]
struct Task {
    name: String,
    input: OwnedProxy<Vec<u64>>,
}

#[tokio::test]
async fn ownership_moves_with_the_serialized_task_and_is_evicted_once_after_the_last_owner() {
    let store = memory_store();
    proxystore::register_store(&store).unwrap();
    let owned = store.owned_proxy(&vec![7u64; 1000]).await.unwrap();
    let key = owned.key().unwrap().clone();

    // Producer -> task A: serializing moves ownership; the producer's copy evicts nothing.
    let task = Task {
        name: "a".into(),
        input: owned,
    };
    let wire_a = serde_json::to_vec(&task).unwrap();
    assert!(!task.input.is_owner());
    // A second move of the same handle is refused, naming store and key.
    let again = serde_json::to_vec(&task).unwrap_err().to_string();
    assert!(
        again.contains("already moved") && again.contains(key.as_str()),
        "{again}"
    );
    drop(task);
    settle();
    assert!(store.exists(&key).await.unwrap());

    // Task A takes ownership, then moves it on to task B (postcard this time).
    let a: Task = serde_json::from_slice(&wire_a).unwrap();
    assert!(a.input.is_owner());
    assert_eq!(a.input.iter().sum::<u64>(), 7000);
    let wire_b = postcard::to_allocvec(&Task {
        name: "b".into(),
        input: a.input,
    })
    .unwrap();
    settle();
    assert!(store.exists(&key).await.unwrap(), "A's end must not evict");

    // Task B is the last owner: its end evicts, once.
    let b: Task = postcard::from_bytes(&wire_b).unwrap();
    assert_eq!(b.input.len(), 1000);
    let before = store.metrics().evict.count;
    drop(b);
    settle();
    assert!(!store.exists(&key).await.unwrap());
    assert_eq!(store.metrics().evict.count, before + 1);
    proxystore::unregister_store(store.name());
}

#[tokio::test]
async fn borrows_are_counted_and_the_owner_cannot_evict_move_or_mutate_while_they_live() {
    let store = memory_store();
    let mut owned = store.owned_proxy(&"shared".to_string()).await.unwrap();
    let key = owned.key().unwrap().clone();
    let r1 = owned.borrow().unwrap();
    let r2 = r1.clone();
    assert_eq!(r2.as_str(), "shared");

    // A borrow serializes as a plain proxy, readable as one.
    let plain: Proxy<String> = serde_json::from_str(&serde_json::to_string(&r1).unwrap()).unwrap();
    assert_eq!(plain.as_str(), "shared");

    match owned.borrow_mut() {
        Err(Error::Ownership {
            store: s,
            key: k,
            problem: OwnershipProblem::Borrowed { shared: 2, .. },
            ..
        }) => assert_eq!((s.as_str(), &k), (store.name(), &key)),
        other => panic!("borrow_mut while borrowed gave {:?}", other.map(|_| ())),
    }
    let moved = serde_json::to_string(&owned).unwrap_err().to_string();
    assert!(moved.contains("cannot move it while 2 borrows"), "{moved}");
    assert!(owned.is_owner(), "a refused move leaves the owner in place");

    let err = owned.evict().await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Ownership {
                problem: OwnershipProblem::Borrowed {
                    action: "evict it",
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
    drop(r1);
    settle();
    assert!(
        store.exists(&key).await.unwrap(),
        "one borrow is still alive"
    );
    assert_eq!(r2.len(), 6);
    drop(r2);
    settle();
    assert!(!store.exists(&key).await.unwrap());
}

#[tokio::test]
async fn a_mutable_borrow_writes_back_under_the_same_key_and_the_new_version_verifies() {
    let store = memory_store();
    proxystore::register_store(&store).unwrap();
    let mut owned = store.owned_proxy(&vec![1u32, 2, 3]).await.unwrap();
    let key = owned.key().unwrap().clone();
    {
        let mut m = owned.borrow_mut().unwrap();
        assert_eq!(m.len(), 3);
        m.update(vec![4, 5, 6, 7]).await.unwrap();
    }
    assert_eq!(owned.key(), Some(&key));
    assert_eq!(*owned.as_slice(), [4, 5, 6, 7]);
    // The owner's reference carries the new size and digest: a cold resolve elsewhere checks.
    let wire = serde_json::to_string(&owned).unwrap();
    let there: OwnedProxy<Vec<u32>> = serde_json::from_str(&wire).unwrap();
    store.clear_cache();
    assert_eq!(there.resolve().await.unwrap(), &vec![4, 5, 6, 7]);
    drop(there);
    settle();
    assert!(!store.exists(&key).await.unwrap());
    proxystore::unregister_store(store.name());
}

#[tokio::test]
async fn a_returned_proxy_becomes_owned_and_a_given_up_one_is_left_alone() {
    let store = memory_store();
    let p = store
        .proxy_with(
            &9u8,
            proxystore::ProxyOptions {
                evict_on_resolve: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let key = p.key().unwrap().clone();
    let owned = p.into_owned();
    assert!(!owned.reference().unwrap().evict_on_resolve);
    assert_eq!(**owned, 9);
    assert!(
        store.exists(&key).await.unwrap(),
        "the owner decides, not the resolve"
    );
    let plain = owned.into_proxy();
    settle();
    assert!(store.exists(plain.key().unwrap()).await.unwrap());
}

#[tokio::test]
async fn drops_inside_a_task_attempt_go_to_its_owner_until_the_task_is_over() {
    let store = memory_store();
    let owned = store.owned_proxy(&vec![0u8; 10]).await.unwrap();
    let key = owned.key().unwrap().clone();
    let wire = serde_json::to_vec(&owned).unwrap();
    let task_objects = Arc::new(Scope::new(&store));
    for attempt in 0..2 {
        // Each attempt takes the same input and drops it; a failed one must leave it.
        let input: OwnedProxy<Vec<u8>> = serde_json::from_slice(&wire).unwrap();
        lifetime::with_drop_owner(task_objects.clone(), async move {
            assert_eq!(input.len(), 10, "attempt {attempt}");
        })
        .await;
        settle();
        assert!(store.exists(&key).await.unwrap());
    }
    task_objects.close().await.unwrap();
    assert!(!store.exists(&key).await.unwrap());
}

/// The child half of the exit test: drop owners and a process scope, then exit at once.
#[test]
fn child_drops_its_objects_and_exits() {
    let Ok(dir) = std::env::var("PROXYSTORE_OWNERSHIP_CHILD_DIR") else {
        return; // only as a child process
    };
    let store = Store::new("exit-child", FileConnector::new(&dir).unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut owners = Vec::new();
        for i in 0..20u32 {
            owners.push(store.owned_proxy(&vec![i; 100_000]).await.unwrap());
        }
        lifetime::process_scope(&store)
            .proxy(&"lives as long as the process".to_string())
            .await
            .unwrap();
        drop(owners);
    });
    // No wait here: the process exits right after the destructors ran.
    std::process::exit(0);
}

#[test]
fn evictions_from_destructors_finish_before_the_process_exits() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_drops_its_objects_and_exits",
            "--nocapture",
        ])
        .env("PROXYSTORE_OWNERSHIP_CHILD_DIR", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left after exit: {left:?}");
}
