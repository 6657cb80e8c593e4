//! The core writes `proxystore_rs.v1.ProxyReference` with hand-written prost derives (so that it
//! needs no protoc). These tests hold that mirror to the .proto file: the generated message
//! must encode byte for byte what `Reference::to_bytes` writes, and decode it.

use bytes::Bytes;
use prost::Message;
use proxystore::connector::ConnectorConfig;
use proxystore::{Codec, DigestAlgorithm, Key, Reference};
use proxystore_proto::v1;

fn references() -> Vec<Reference> {
    let mut full = Reference::new(
        "my-store",
        ConnectorConfig::new(
            "grpc",
            serde_json::json!({"address": "http://127.0.0.1:50051", "timeout_ms": 5000}),
        ),
        Key::from("3f1c2a9e-8d7b-4c6a-9e5f-0a1b2c3d4e5f"),
    );
    full.size = 1 << 30;
    full.digest = DigestAlgorithm::Blake3.digest(b"payload");
    full.codec = Codec::Json;
    full.type_name = "alloc::vec::Vec<f64>".into();
    full.evict_on_resolve = true;
    full.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into();
    full.tracestate = "rojo=00f067aa0ba902b7".into();
    full.set_origin("train/return");
    let mut future = proxystore::FutureInfo::default();
    future.timeout_ms = 30_000;
    future.heartbeat_ms = 1_000;
    future.heartbeat_key = Some(Key::from("beat-3f1c2a9e"));
    full.future = Some(future);

    let mut xxh = Reference::new(
        "s",
        ConnectorConfig::new("memory", serde_json::Value::Null),
        Key::from("ключ-✓"),
    );
    xxh.digest = DigestAlgorithm::Xxh3.digest(b"x");

    let minimal = Reference::new(
        "minimal",
        ConnectorConfig::new("file", serde_json::json!({"directory": "/tmp/x"})),
        Key::random(),
    );
    vec![full, xxh, minimal]
}

/// The generated message with the values the reference holds, field by field.
fn generated(r: &Reference) -> v1::ProxyReference {
    v1::ProxyReference {
        version: r.version,
        store: r.store.clone(),
        connector: Some(v1::ConnectorConfig {
            kind: r.connector.kind().to_owned(),
            options_json: r.connector.options_json().to_owned(),
        }),
        key: r.key.to_string(),
        size: r.size,
        digest: r.digest.map(|d| v1::Digest {
            algorithm: d.algorithm().as_str().to_owned(),
            value: Bytes::from(d.to_bytes()),
        }),
        codec: r.codec.as_str().to_owned(),
        type_name: r.type_name.clone(),
        evict_on_resolve: r.evict_on_resolve,
        traceparent: r.traceparent.clone(),
        tracestate: r.tracestate.clone(),
        origin: r.origin.clone(),
        future: r.future.as_ref().map(|f| v1::Future {
            timeout_ms: f.timeout_ms,
            heartbeat_ms: f.heartbeat_ms,
            heartbeat_key: f
                .heartbeat_key
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        }),
    }
}

#[test]
fn generated_message_encodes_byte_identically() {
    for r in references() {
        let core = r.to_bytes();
        let gen_bytes = generated(&r).encode_to_vec();
        assert_eq!(core.as_ref(), gen_bytes.as_slice(), "{r:?}");
    }
}

#[test]
fn generated_message_decodes_core_bytes() {
    for r in references() {
        let decoded = v1::ProxyReference::decode(r.to_bytes()).unwrap();
        assert_eq!(decoded, generated(&r));
        // And what the generated type writes, the core reads back to the same reference.
        assert_eq!(Reference::from_bytes(&decoded.encode_to_vec()).unwrap(), r);
    }
}

#[test]
fn descriptor_set_names_both_files_and_the_service() {
    let fds = proxystore_proto::FILE_DESCRIPTOR_SET;
    let text = String::from_utf8_lossy(fds);
    assert!(text.contains("proxystore_rs/v1/proxy.proto"));
    assert!(text.contains("proxystore_rs/v1/store.proto"));
    assert!(text.contains("StoreService"));
    assert_eq!(
        v1::store_service_server::SERVICE_NAME,
        proxystore_proto::STORE_SERVICE_NAME
    );
}
