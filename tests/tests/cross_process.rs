//! A proxy made in one OS process resolves in another that never registered its store, and a
//! proxy that the other process does not use is never fetched.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use proxystore::connector::file::FileConnector;
use proxystore::{Key, Proxy, Store};

#[tokio::test]
async fn proxies_resolve_in_a_second_process_and_unused_ones_are_never_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        format!("xproc-{}", Key::random()),
        FileConnector::new(dir.path().join("objects")).unwrap(),
    );
    let objects: Vec<Vec<u64>> = (0..4u64)
        .map(|i| (0..100_000).map(|x| x * i).collect())
        .collect();
    let mut proxies: Vec<Proxy<Vec<u64>>> = Vec::new();
    for o in &objects {
        proxies.push(store.proxy(o).await.unwrap());
    }
    let wire = postcard::to_stdvec(&proxies).unwrap();
    assert!(
        wire.len() < 4 * 256,
        "4 references take {} bytes",
        wire.len()
    );
    let file = dir.path().join("proxies.bin");
    std::fs::write(&file, &wire).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_proxy-consumer"))
        .arg(&file)
        .args(["0", "2", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["registered_before"], false);
    let expected: Vec<u64> = [0, 2, 2].iter().map(|&i| objects[i].iter().sum()).collect();
    assert_eq!(report["sums"], serde_json::json!(expected));
    assert_eq!(
        report["resolved"],
        serde_json::json!([true, false, true, false])
    );
    // Two distinct objects fetched; the repeated use of proxy 2 and the unused proxies 1 and 3
    // cost no connector read.
    assert_eq!(report["metrics"]["get"]["count"], 2, "{report}");
    assert_eq!(report["metrics"]["resolve"]["count"], 2, "{report}");
    // Nothing was fetched by the producer either.
    assert_eq!(store.metrics().get.count, 0);
}

#[tokio::test]
async fn a_second_process_reports_a_missing_object_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        format!("xproc-missing-{}", Key::random()),
        FileConnector::new(dir.path()).unwrap(),
    );
    let p = store.proxy(&vec![1u64, 2, 3]).await.unwrap();
    store.evict(p.key().unwrap()).await.unwrap();
    let file = dir.path().join("proxies.bin");
    std::fs::write(&file, postcard::to_stdvec(&vec![p]).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_proxy-consumer"))
        .arg(&file)
        .arg("0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not found in store"), "{stderr}");
}
