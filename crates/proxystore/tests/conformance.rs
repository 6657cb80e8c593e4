//! The shared conformance suite, run for the built-in connectors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use proxystore::conformance::Fixture;
use proxystore::connector::file::FileConnector;
use proxystore::connector::memory::MemoryConnector;
use proxystore::connector::multi::{MultiConnector, RoutePolicy};
use proxystore::{Connector, Key};

mod memory {
    use super::*;
    async fn fixture() -> Fixture {
        Fixture::new(MemoryConnector::new(&format!(
            "conformance-{}",
            Key::random()
        )))
    }
    proxystore::conformance_tests!(fixture);
}

mod file {
    use super::*;
    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let c = FileConnector::new(dir.path().join("objects")).expect("file connector");
        Fixture::with_guard(c, dir)
    }
    proxystore::conformance_tests!(fixture);
}

mod multi {
    use super::*;
    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let small: Arc<dyn Connector> =
            Arc::new(MemoryConnector::new(&format!("multi-{}", Key::random())));
        let large: Arc<dyn Connector> =
            Arc::new(FileConnector::new(dir.path()).expect("file connector"));
        let c = MultiConnector::builder()
            .route(
                "small",
                small,
                RoutePolicy {
                    max_size: Some(1000),
                    ..Default::default()
                },
            )
            .route(
                "large",
                large,
                RoutePolicy {
                    min_size: Some(1001),
                    ..Default::default()
                },
            )
            .build()
            .expect("multi connector");
        Fixture::with_guard(c, dir)
    }
    proxystore::conformance_tests!(fixture);
}
