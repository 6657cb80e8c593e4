//! The server's file backend on a full disk: a 1 MiB tmpfs mounted for the test (needs root, as
//! the test machines run; elsewhere the test fails saying so).
//!
//! Expectation: the client gets `Error::LimitExceeded` (RESOURCE_EXHAUSTED), whether the object
//! comes whole or streamed; no partial object or temporary file is left behind; and the server
//! serves normally once space is free again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use proxystore::conformance::__testing::SmallDisk;
use proxystore::connector::Connector;
use proxystore::connector::grpc::UploadOptions;
use proxystore::{Error, Result};
use proxystore_server::{ServerConfig, spawn};

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// Wait (briefly) until the server has removed what a failed call left, then return the
/// directory's entries.
async fn settled(dir: &Path, expected: usize) -> Vec<PathBuf> {
    for _ in 0..200 {
        if entries(dir).len() == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    entries(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_resource_exhausted_with_nothing_left_behind() {
    let disk = SmallDisk::mount("1m").unwrap_or_else(|e| panic!("{e}"));
    // The data directory is a subdirectory, so the server can create it itself.
    let data = disk.path().join("objects");
    let server = spawn(ServerConfig::default().file(&data)).unwrap();
    let c = server.connector().unwrap();

    // Whole, and streamed without a declared size.
    let err = c.put(Bytes::from(vec![7u8; 2 << 20])).await.unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err:?}");
    assert!(settled(&data, 0).await.is_empty(), "{:?}", entries(&data));
    let chunks: Vec<Result<Bytes>> = (0..8)
        .map(|_| Ok(Bytes::from(vec![8u8; 256 << 10])))
        .collect();
    let err = c
        .put_stream(futures::stream::iter(chunks), UploadOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err:?}");
    assert!(settled(&data, 0).await.is_empty(), "{:?}", entries(&data));

    // Fill the disk with objects that fit, then one more does not.
    let mut keys = Vec::new();
    let err = loop {
        match c.put(Bytes::from(vec![1u8; 300 << 10])).await {
            Ok(k) => keys.push(k),
            Err(e) => break e,
        }
        assert!(
            keys.len() < 10,
            "a 1 MiB tmpfs took {} objects of 300 KiB",
            keys.len()
        );
    };
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err:?}");
    assert!(!keys.is_empty());
    let files = settled(&data, keys.len()).await;
    assert_eq!(
        files.len(),
        keys.len(),
        "only complete objects remain: {files:?}"
    );
    for k in &keys {
        let got = c.get(k).await.unwrap().unwrap();
        assert_eq!(got.len(), 300 << 10);
        assert!(got.iter().all(|&b| b == 1));
    }

    // Space freed: normal service again.
    c.evict_batch(&keys).await.unwrap();
    let k = c.put(Bytes::from(vec![2u8; 500 << 10])).await.unwrap();
    assert_eq!(c.get(&k).await.unwrap().unwrap().len(), 500 << 10);
    c.evict(&k).await.unwrap();
    assert!(entries(&data).is_empty());
    server.shutdown().await.unwrap();
}
