//! The gRPC connector against the project's server started inside this process (memory and
//! file backends), and a proxy made against that server resolved by a second OS process that
//! rebuilds the connector from the reference.

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
