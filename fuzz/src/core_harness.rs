//! Decoders of the core crate that take bytes from outside: proxy references (protobuf, JSON,
//! inside postcard and MessagePack documents) and connector configs.
//!
//! Each function must return, whatever the input; an error is a fine answer. Where a decode
//! succeeds, the value must survive re-encoding unchanged, so the fuzzer also finds inputs that
//! decode into something the encoder cannot reproduce.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use proxystore::connector::file::FileConnector;
use proxystore::connector::{Connector, ConnectorConfig};
use proxystore::kinds;
use proxystore::{Proxy, Reference};
use serde::{Deserialize, Serialize};

/// A task document with proxies in several positions.
#[derive(Serialize, Deserialize)]
pub struct FuzzTask {
    /// A plain field.
    pub name: String,
    /// A proxied byte payload.
    pub data: Proxy<Vec<u8>>,
    /// An optional proxy of a serde type.
    pub weights: Option<Proxy<Vec<f64>>>,
    /// Proxies in a sequence.
    pub parts: Vec<Proxy<String>>,
}

/// `Reference::from_bytes` (the protobuf wire format).
pub fn reference_protobuf(data: &[u8]) {
    if let Ok(r) = Reference::from_bytes(data) {
        check_reference(&r);
    }
}

/// `Reference::from_json`.
pub fn reference_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = Reference::from_json(text) {
        check_reference(&r);
    }
}

fn check_reference(r: &Reference) {
    let pb = Reference::from_bytes(&r.to_bytes());
    assert_eq!(pb.as_ref().ok(), Some(r), "protobuf re-encoding: {pb:?}");
    let json = Reference::from_json(&r.to_json());
    assert_eq!(json.as_ref().ok(), Some(r), "JSON re-encoding: {json:?}");
}

/// A `Proxy<Vec<u8>>` and a [`FuzzTask`] from postcard.
pub fn proxy_postcard(data: &[u8]) {
    stable(
        data,
        |b| postcard::from_bytes::<Proxy<Vec<u8>>>(b).ok(),
        |v| postcard::to_stdvec(v).ok(),
    );
    stable(
        data,
        |b| postcard::from_bytes::<FuzzTask>(b).ok(),
        |v| postcard::to_stdvec(v).ok(),
    );
}

/// A `Proxy<Vec<u8>>` and a [`FuzzTask`] from MessagePack.
///
/// Decoded as `docs/reliability.md` tells callers to decode untrusted MessagePack: with a
/// nesting limit (`codec::MAX_DEPTH`, as the core's own codec), since rmp-serde's default of
/// 1 024 levels overflows a 2 MiB thread stack in unoptimised builds.
pub fn proxy_msgpack(data: &[u8]) {
    stable(data, msgpack::<Proxy<Vec<u8>>>, |v| {
        rmp_serde::to_vec_named(v).ok()
    });
    stable(data, msgpack::<FuzzTask>, |v| {
        rmp_serde::to_vec_named(v).ok()
    });
}

fn msgpack<T: serde::de::DeserializeOwned>(data: &[u8]) -> Option<T> {
    let mut de = rmp_serde::Deserializer::from_read_ref(data);
    de.set_max_depth(proxystore::codec::MAX_DEPTH);
    T::deserialize(&mut de).ok()
}

/// Whatever decodes must encode, decode again and encode to the same bytes. (Bytes, not `==`:
/// `==` on proxies compares targets, which would resolve them, and NaN is not equal to itself.)
fn stable<T>(
    data: &[u8],
    decode: impl Fn(&[u8]) -> Option<T>,
    encode: impl Fn(&T) -> Option<Vec<u8>>,
) {
    let Some(v) = decode(data) else {
        return;
    };
    let first = encode(&v);
    assert!(first.is_some(), "a decoded value does not encode");
    let second = first
        .as_deref()
        .and_then(&decode)
        .as_ref()
        .and_then(&encode);
    assert_eq!(first, second, "re-encoding is not stable");
}

/// JSON -> `ConnectorConfig` -> `kinds::from_config`, then one object through the connector.
///
/// Runs in a sandbox: file connectors are moved into a temporary directory whatever directory
/// the input names, and kinds that would open network connections are refused.
pub fn connector_config(data: &[u8]) {
    sandbox();
    let Ok(config) = serde_json::from_slice::<ConnectorConfig>(data) else {
        return;
    };
    let Ok(c) = kinds::from_config(&config) else {
        return;
    };
    let own = c.config();
    let rebuilt = kinds::from_config(&own).map(|r| r.config());
    assert_eq!(
        rebuilt.as_ref().ok(),
        Some(&own),
        "config round trip: {rebuilt:?}"
    );
    runtime().block_on(put_get_evict(c));
}

async fn put_get_evict(c: Arc<dyn Connector>) {
    // A routing connector may accept no object of this size: an error, not a bug.
    let Ok(key) = c.put(Bytes::from_static(b"fuzz")).await else {
        return;
    };
    let got = c.get(&key).await;
    assert!(
        matches!(got, Ok(Some(ref b)) if &b[..] == b"fuzz"),
        "get after put: {got:?}"
    );
    let evicted = c.evict(&key).await;
    assert!(evicted.is_ok(), "evict: {evicted:?}");
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => unreachable!("a current-thread runtime always builds: {e}"),
        }
    })
}

/// The directory every fuzzed file connector is confined to.
pub fn sandbox_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| std::env::temp_dir().join(format!("proxystore-fuzz-{}", std::process::id())))
}

/// Remove the sandbox directory (the corpus replay tests call this when done).
pub fn remove_sandbox() {
    let _ = std::fs::remove_dir_all(sandbox_dir());
}

fn sandbox() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        for kind in kinds::registered_connector_kinds() {
            match kind.as_str() {
                "memory" | "multi" => {}
                "file" => kinds::register_connector_kind(kind, sandboxed_file),
                _ => kinds::register_connector_kind(kind, refused),
            }
        }
    });
}

fn sandboxed_file(config: &ConnectorConfig) -> proxystore::Result<Arc<dyn Connector>> {
    let mut options = config.options_value().clone();
    if let Some(m) = options.as_object_mut()
        && m.get("directory").is_some_and(|d| d.is_string())
    {
        let dir = sandbox_dir().join("file");
        m.insert(
            "directory".into(),
            dir.to_string_lossy().into_owned().into(),
        );
    }
    FileConnector::from_config(&ConnectorConfig::new(config.kind(), options))
}

fn refused(config: &ConnectorConfig) -> proxystore::Result<Arc<dyn Connector>> {
    Err(proxystore::Error::config(format!(
        "{} connectors are not built while fuzzing (no network)",
        config.kind()
    )))
}
