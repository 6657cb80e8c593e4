//! The middleware's task envelope decoder (`TaskCodec::decode`), as a worker runs it on every
//! document it takes from a broker.
//!
//! References inside a fuzzed document are resolved against in-memory stores only: every other
//! connector kind is refused, so no input reaches the file system or the network.

use std::sync::{Arc, OnceLock};

use proxystore::connector::memory::MemoryConnector;
use proxystore::connector::{Connector, ConnectorConfig};
use proxystore::kinds;
use proxystore::{Proxy, Store};
use proxystore_middleware::{ArgumentPolicy, InnerCodec, TaskCodec};
use serde::{Deserialize, Serialize};

/// Name of the store the fuzzed codecs proxy into.
pub const STORE: &str = "fuzz-tasks";

/// Arguments of a task: plain fields (fetched in place when proxied) and a lazy proxy.
#[derive(Debug, Serialize, Deserialize)]
pub struct Job {
    /// Task label.
    pub name: String,
    /// A counter.
    pub count: u32,
    /// A byte payload (raw codec when proxied).
    pub data: Vec<u8>,
    /// A serde payload.
    pub values: Vec<i64>,
    /// Always a reference.
    pub weights: Proxy<Vec<f64>>,
    /// Optional nested parts.
    pub parts: Option<Vec<Part>>,
}

/// A nested argument.
#[derive(Debug, Serialize, Deserialize)]
pub struct Part {
    /// Identifier.
    pub id: u64,
    /// Text payload.
    pub text: String,
}

/// The store and the codecs a worker would hold: JSON and MessagePack documents, 64-byte
/// threshold.
pub fn codecs() -> &'static (Store, [TaskCodec; 2]) {
    static CODECS: OnceLock<(Store, [TaskCodec; 2])> = OnceLock::new();
    CODECS.get_or_init(|| {
        sandbox();
        let store = Store::new(STORE, MemoryConnector::new(STORE));
        let _ = proxystore::register_store(&store);
        let codec = |inner| {
            TaskCodec::new(ArgumentPolicy::from_parts(STORE.into(), 64))
                .with_inner(inner)
                .with_store(store.clone())
        };
        let codecs = [codec(InnerCodec::Json), codec(InnerCodec::MessagePack)];
        (store, codecs)
    })
}

/// `TaskCodec::decode::<Job>` with both document codecs.
pub fn task_envelope(data: &[u8]) {
    let (store, codecs) = codecs();
    for codec in codecs {
        let _ = codec.proxied_of(data);
        if let Ok(decoded) = codec.decode::<Job>(data) {
            // What a worker decoded must be encodable again (a task forwarded or retried).
            let again = codec.encode("fuzz", &decoded.args);
            assert!(again.is_ok(), "decoded task does not encode: {again:?}");
            if let Ok(enc) = again {
                let back = codec.decode::<Job>(&enc.bytes);
                assert!(back.is_ok(), "re-encoded task does not decode: {back:?}");
                let keys: Vec<_> = enc.proxied.iter().map(|r| r.key.clone()).collect();
                let store = store.clone();
                let _ =
                    proxystore::runtime::block_on(async move { store.evict_batch(&keys).await });
            }
        }
    }
}

fn sandbox() {
    for kind in kinds::registered_connector_kinds() {
        if kind != "memory" {
            kinds::register_connector_kind(kind, refused);
        }
    }
}

fn refused(config: &ConnectorConfig) -> proxystore::Result<Arc<dyn Connector>> {
    Err(proxystore::Error::config(format!(
        "{} connectors are not built while fuzzing task documents",
        config.kind()
    )))
}
