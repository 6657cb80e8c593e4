#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use super::*;
use crate::connector::memory::MemoryConnector;

fn store() -> (Store, MemoryConnector) {
    let name = format!("future-{}", Key::random());
    let c = MemoryConnector::new(&name);
    let s = Store::new(name, c.clone());
    crate::register_store(&s).unwrap();
    (s, c)
}

fn problem(e: Error) -> FutureProblem {
    match e {
        Error::Future { problem, .. } => problem,
        other => panic!("expected a future error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_waiting_before_the_set_wakes_with_the_value() {
    let (store, segment) = store();
    let (promise, proxy) = store.future::<Vec<u32>>().await.unwrap();
    let consumers: Vec<_> = (0..8)
        .map(|_| {
            let p: Proxy<Vec<u32>> =
                serde_json::from_str(&serde_json::to_string(&proxy).unwrap()).unwrap();
            tokio::spawn(async move { p.resolve().await.map(|v| v.iter().sum::<u32>()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        consumers.iter().all(|c| !c.is_finished()),
        "nothing to read yet"
    );
    promise.set(&vec![1, 2, 3]).await.unwrap();
    for c in consumers {
        assert_eq!(c.await.unwrap().unwrap(), 6);
    }
    // Set before the consumer starts: resolved at once; the heartbeat is retired (in the
    // background: `set` returns once the value is written).
    assert_eq!(proxy.resolve().await.unwrap(), &vec![1, 2, 3]);
    let retired =
        tokio::task::spawn_blocking(|| crate::lifetime::wait_for_evictions(Duration::from_secs(5)));
    assert!(retired.await.unwrap());
    assert_eq!(segment.len(), 1, "only the value remains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_is_visible_dropped_failed_set_twice_and_timeout() {
    let (store, _segment) = store();

    let (promise, proxy) = store.future::<u32>().await.unwrap();
    let waiting = tokio::spawn(async move { proxy.resolve().await.copied() });
    drop(promise);
    let e = waiting.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("dropped its promise"), "{e}");
    assert_eq!(problem(e), FutureProblem::Dropped);

    let (promise, proxy) = store.future::<u32>().await.unwrap();
    promise.set_error("out of memory").await.unwrap();
    let e = proxy.resolve().await.unwrap_err();
    assert_eq!(
        problem(e),
        FutureProblem::Failed {
            message: "out of memory".into()
        }
    );

    // Another handle (the promise sent elsewhere and back) cannot set it again.
    let (promise, proxy) = store.future::<u32>().await.unwrap();
    let wire = serde_json::to_string(&promise).unwrap();
    assert!(!promise.is_live(), "serializing moves it");
    let e = serde_json::to_string(&promise).unwrap_err();
    assert!(e.to_string().contains("moved away"), "{e}");
    let there: Promise<u32> = serde_json::from_str(&wire).unwrap();
    let again: Promise<u32> = serde_json::from_str(&wire).unwrap();
    there.set(&7).await.unwrap();
    assert_eq!(
        problem(again.set(&8).await.unwrap_err()),
        FutureProblem::AlreadySet
    );
    assert_eq!(*proxy.resolve().await.unwrap(), 7);
    drop(promise);

    let (promise, proxy) = store.future::<u32>().await.unwrap();
    let started = Instant::now();
    let e = proxy
        .resolve_within(Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert!(started.elapsed() >= Duration::from_millis(100));
    promise.set(&1).await.unwrap();
    assert_eq!(
        *proxy.resolve().await.unwrap(),
        1,
        "a timeout leaves it usable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_producer_is_noticed_and_a_moved_promise_is_not_silent() {
    let (store, _segment) = store();
    let options = FutureOptions::default().heartbeat(Some(Duration::from_millis(50)));

    // A producer that stops beating without dropping its promise (as if killed).
    let (promise, proxy) = store.future_with::<u32>(options.clone()).await.unwrap();
    promise.take_live().unwrap(); // its heartbeat stops; nothing is written
    std::mem::forget(promise);
    let started = Instant::now();
    let e = proxy.resolve().await.unwrap_err();
    assert!(matches!(problem(e), FutureProblem::ProducerGone { .. }));
    assert!(started.elapsed() < Duration::from_secs(2));

    // In transit longer than three periods, then set by the process that took it over.
    let (promise, proxy) = store.future_with::<u32>(options).await.unwrap();
    let wire = serde_json::to_vec(&promise).unwrap();
    let waiting = tokio::spawn(async move { proxy.resolve().await.copied() });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!waiting.is_finished(), "a parked heartbeat is not silence");
    let there: Promise<u32> = serde_json::from_slice(&wire).unwrap();
    there.set(&5).await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), 5);
}

#[test]
fn deref_from_sync_code_waits_for_the_value() {
    let (store, _segment) = crate::runtime::block_on(async { store() }).unwrap();
    let (promise, proxy) = crate::runtime::block_on(async move { store.future::<String>().await })
        .unwrap()
        .unwrap();
    let consumer = std::thread::spawn(move || proxy.len());
    std::thread::sleep(Duration::from_millis(50));
    crate::runtime::block_on(async move { promise.set(&"ready".to_owned()).await })
        .unwrap()
        .unwrap();
    assert_eq!(consumer.join().unwrap(), 5);
}
