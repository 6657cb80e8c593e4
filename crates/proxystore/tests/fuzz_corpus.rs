//! Replays every file of the fuzz corpora (`fuzz/corpus/<target>/`) through the same decode
//! functions as the fuzz targets, so the normal test run covers every input the fuzzer kept,
//! including the ones that once crashed.
//!
//! The seed files are real encodings; `PROXYSTORE_WRITE_FUZZ_SEEDS=1` rewrites them from the
//! current code (`cargo nextest run -p proxystore --test fuzz_corpus`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../fuzz/src/core_harness.rs"]
#[allow(unreachable_pub, dead_code)]
mod harness;

use std::path::{Path, PathBuf};

use harness::FuzzTask;
use proxystore::connector::ConnectorConfig;
use proxystore::{Codec, Digest, Key, Proxy, Reference};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Every file of `target`'s corpus through `run`; fails on an empty corpus.
fn replay(target: &str, run: fn(&[u8])) {
    let dir = corpus(target);
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    for f in &files {
        let data = std::fs::read(f).unwrap();
        // A panic names the file that caused it.
        let result = std::panic::catch_unwind(|| run(&data));
        assert!(result.is_ok(), "{} panicked on {}", target, f.display());
    }
    eprintln!("{target}: {} inputs replayed", files.len());
}

fn references() -> Vec<(&'static str, Reference)> {
    let mut plain = Reference::new(
        "my-store",
        ConnectorConfig::new("file", serde_json::json!({"directory": "/tmp/ps/objects"})),
        Key::from("3f1c2a9e-8d7b-4c6a-9e5f-0a1b2c3d4e5f"),
    );
    plain.size = 1 << 20;
    plain.digest = Some(Digest::Xxh3(0x9f86_d081_884c_7d65));
    plain.type_name = "alloc::vec::Vec<f64>".into();
    let mut full = Reference::new(
        "grpc-store",
        ConnectorConfig::new(
            "grpc",
            serde_json::json!({"address": "https://127.0.0.1:50051", "token": "t0k", "timeout_secs": 30}),
        ),
        Key::from("ключ/ünïcode:🙂"),
    );
    full.digest = Some(Digest::Blake3([7; 32]));
    full.codec = Codec::MessagePack;
    full.evict_on_resolve = true;
    full.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into();
    full.tracestate = "vendor=value".into();
    let multi = Reference::new(
        "multi",
        ConnectorConfig::new(
            "multi",
            serde_json::json!({"routes": [
                {"label": "small", "connector": {"kind": "memory", "options": {"segment": "s"}},
                 "policy": {"max_size": 1024}},
                {"label": "large", "connector": {"kind": "file", "options": {"directory": "/tmp/ps"}},
                 "policy": {"min_size": 1025, "pattern": "weights/**", "tags": ["big"], "priority": 2}}
            ]}),
        ),
        Key::from("small:6f1c2a9e-8d7b-4c6a-9e5f-0a1b2c3d4e5f"),
    );
    let mut raw = Reference::new(
        "m",
        ConnectorConfig::new("memory", serde_json::Value::Null),
        Key::from(""),
    );
    raw.codec = Codec::Raw;
    vec![
        ("plain", plain),
        ("full", full),
        ("multi", multi),
        ("raw", raw),
    ]
}

fn connector_configs() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "memory",
            serde_json::json!({"kind": "memory", "options": {"segment": "fuzz"}}),
        ),
        ("memory-null", serde_json::json!({"kind": "memory"})),
        (
            "file",
            serde_json::json!({"kind": "file", "options": {"directory": "/tmp/proxystore-fuzz-must-not-exist/objects", "fsync": true}}),
        ),
        (
            "file-escape",
            serde_json::json!({"kind": "file", "options": {"directory": "../../etc"}}),
        ),
        (
            "multi",
            serde_json::to_value(&references()[2].1.connector).unwrap(),
        ),
        (
            "multi-bad-glob",
            serde_json::json!({"kind": "multi", "options": {"routes": [
            {"label": "a", "connector": {"kind": "memory"}, "policy": {"pattern": "[unclosed"}}]}}),
        ),
        (
            "multi-empty",
            serde_json::json!({"kind": "multi", "options": {"routes": []}}),
        ),
        (
            "grpc",
            serde_json::json!({"kind": "grpc", "options": {"address": "http://127.0.0.1:1"}}),
        ),
        (
            "unknown",
            serde_json::json!({"kind": "nope", "options": {}}),
        ),
    ]
}

fn proxies() -> Vec<(&'static str, Proxy<Vec<u8>>, FuzzTask)> {
    let refs = references();
    let task = |i: usize| FuzzTask {
        name: format!("task-{i}"),
        data: Proxy::from_reference(refs[i].1.clone()),
        weights: Some(Proxy::from_value(vec![0.5, -1.0, f64::MAX])),
        parts: vec![
            Proxy::from_value("inline".into()),
            Proxy::from_reference(refs[0].1.clone()),
        ],
    };
    vec![
        (
            "reference",
            Proxy::from_reference(refs[0].1.clone()),
            task(1),
        ),
        ("inline", Proxy::from_value(vec![1, 2, 3]), task(2)),
        (
            "multi",
            Proxy::from_reference(refs[2].1.clone()),
            FuzzTask {
                name: String::new(),
                data: Proxy::from_value(Vec::new()),
                weights: None,
                parts: Vec::new(),
            },
        ),
    ]
}

fn write_seeds() {
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    };
    for (name, r) in references() {
        write("reference_protobuf", name, &r.to_bytes());
        write("reference_json", name, r.to_json().as_bytes());
    }
    for (name, p, t) in proxies() {
        write(
            "proxy_postcard",
            &format!("proxy-{name}"),
            &postcard::to_stdvec(&p).unwrap(),
        );
        write(
            "proxy_postcard",
            &format!("task-{name}"),
            &postcard::to_stdvec(&t).unwrap(),
        );
        write(
            "proxy_msgpack",
            &format!("proxy-{name}"),
            &rmp_serde::to_vec_named(&p).unwrap(),
        );
        write(
            "proxy_msgpack",
            &format!("task-{name}"),
            &rmp_serde::to_vec_named(&t).unwrap(),
        );
    }
    for (name, c) in connector_configs() {
        write("connector_config", name, c.to_string().as_bytes());
    }
}

#[test]
fn seeds_are_current_encodings() {
    if std::env::var_os("PROXYSTORE_WRITE_FUZZ_SEEDS").is_some() {
        write_seeds();
    }
    // The seeds decode as what they were made from (so the fuzzers start from valid inputs).
    for (name, r) in references() {
        let pb = std::fs::read(corpus("reference_protobuf").join(format!("seed-{name}"))).unwrap();
        assert_eq!(Reference::from_bytes(&pb).unwrap(), r, "{name}");
        let js =
            std::fs::read_to_string(corpus("reference_json").join(format!("seed-{name}"))).unwrap();
        assert_eq!(Reference::from_json(&js).unwrap(), r, "{name}");
    }
    for (name, p, _) in proxies() {
        let b = std::fs::read(corpus("proxy_postcard").join(format!("seed-proxy-{name}"))).unwrap();
        let q: Proxy<Vec<u8>> = postcard::from_bytes(&b).unwrap();
        assert_eq!(q.reference(), p.reference(), "{name}");
        let b = std::fs::read(corpus("proxy_msgpack").join(format!("seed-proxy-{name}"))).unwrap();
        let q: Proxy<Vec<u8>> = rmp_serde::from_slice(&b).unwrap();
        assert_eq!(q.reference(), p.reference(), "{name}");
    }
}

#[test]
fn reference_protobuf_corpus() {
    replay("reference_protobuf", harness::reference_protobuf);
}

#[test]
fn reference_json_corpus() {
    replay("reference_json", harness::reference_json);
}

#[test]
fn proxy_postcard_corpus() {
    replay("proxy_postcard", harness::proxy_postcard);
}

#[test]
fn proxy_msgpack_corpus() {
    replay("proxy_msgpack", harness::proxy_msgpack);
}

#[test]
fn connector_config_corpus() {
    replay("connector_config", harness::connector_config);
    // Directories named by the inputs were never created: only the sandbox was used.
    assert!(!Path::new("/tmp/proxystore-fuzz-must-not-exist").exists());
    harness::remove_sandbox();
}

/// Found by `reference_json`: a float in the connector options came back one bit different
/// after the options' JSON text was parsed again (serde_json parsed floats inexactly without
/// its `float_roundtrip` feature), so the reference did not round-trip.
#[test]
fn float_options_round_trip_exactly() {
    for x in [
        4.4440000000000003e51,
        0.1,
        1e-300,
        2.2250738585072014e-308,
        f64::MAX,
        -0.0,
    ] {
        let r = Reference::new(
            "s",
            ConnectorConfig::new("k", serde_json::json!({ "x": x, "a": [x] })),
            Key::from("0"),
        );
        assert_eq!(Reference::from_bytes(&r.to_bytes()).unwrap(), r, "{x:e}");
        assert_eq!(Reference::from_json(&r.to_json()).unwrap(), r, "{x:e}");
        let twice = Reference::from_json(&Reference::from_json(&r.to_json()).unwrap().to_json());
        assert_eq!(twice.unwrap(), r, "{x:e}");
    }
    harness::reference_json(
        &std::fs::read(corpus("reference_json").join("crash-float-options")).unwrap(),
    );
}
