//! The file connector on a full disk: a 1 MiB tmpfs mounted for the test (needs root, as the
//! test machines run; elsewhere the test fails saying so).
//!
//! Expectation: `Error::LimitExceeded`, no partial object or temporary file left behind, and
//! normal service once space is free again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use proxystore::Error;
use proxystore::conformance::__testing::SmallDisk;
use proxystore::connector::Connector;
use proxystore::connector::file::FileConnector;

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[tokio::test]
async fn a_full_disk_is_limit_exceeded_with_nothing_left_behind() {
    let disk = SmallDisk::mount("1m").unwrap_or_else(|e| panic!("{e}"));
    let c = FileConnector::new(disk.path()).unwrap();

    let too_big = Bytes::from(vec![7u8; 2 << 20]);
    let err = c.put(too_big).await.unwrap_err();
    assert!(
        matches!(err, Error::LimitExceeded { .. }),
        "expected LimitExceeded, got {err:?}"
    );
    assert!(
        entries(disk.path()).is_empty(),
        "a failed put left files behind: {:?}",
        entries(disk.path())
    );

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
    let files = entries(disk.path());
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
    assert!(entries(disk.path()).is_empty());
}
