//! Property tests (proptest): byte-identical round trips through the built-in connectors and
//! every codec, reference round trips through every wire format, the cache's byte bound, and
//! reference decoding that never panics.
//!
//! Case counts are kept moderate so the whole file runs in a few seconds; raise them with
//! `PROPTEST_CASES` for a longer run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use proxystore::connector::file::FileConnector;
use proxystore::connector::memory::MemoryConnector;
use proxystore::connector::multi::{MultiConnector, RoutePolicy};
use proxystore::{Codec, Connector, ConnectorConfig, Digest, Key, Reference, Store, StoreConfig};
use serde::{Deserialize, Serialize};

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// A runner with `cases` cases (unless `PROPTEST_CASES` says otherwise) and no regression files:
/// a failure prints its minimal input, which then becomes a named test.
fn runner(cases: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(cases);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Key::random())
}

/// Mostly small objects, some around chunk-like sizes, a few up to 256 KiB.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..64),
        3 => vec(any::<u8>(), 64..4096),
        1 => (4096usize..262_144, any::<u8>(), any::<u64>()).prop_map(|(n, b, seed)| {
            // Large objects: a cheap pseudo-random fill instead of generating every byte.
            let mut x = seed | 1;
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x as u8) ^ b
                })
                .collect()
        }),
    ]
}

#[test]
fn any_bytes_come_back_identical_from_memory_file_and_multi() {
    let dir = tempfile::tempdir().unwrap();
    let seg = unique("prop-mem");
    let memory: Arc<dyn Connector> = Arc::new(MemoryConnector::new(&seg));
    let file: Arc<dyn Connector> = Arc::new(FileConnector::new(dir.path().join("file")).unwrap());
    let small = RoutePolicy {
        max_size: Some(1024),
        ..RoutePolicy::default()
    };
    let multi: Arc<dyn Connector> = Arc::new(
        MultiConnector::builder()
            .route(
                "small",
                Arc::new(MemoryConnector::new(&unique("prop-multi"))),
                small,
            )
            .route(
                "large",
                Arc::new(FileConnector::new(dir.path().join("multi")).unwrap()),
                RoutePolicy::default(),
            )
            .build()
            .unwrap(),
    );
    let connectors = [memory, file, multi];
    runner(48)
        .run(&payload(), |data| {
            rt().block_on(async {
                for c in &connectors {
                    let data = Bytes::from(data.clone());
                    let key = c.put(data.clone()).await.unwrap();
                    let back = c.get(&key).await.unwrap();
                    prop_assert_eq!(back.as_deref(), Some(&data[..]), "{}", c.kind());
                    // The same bytes again under a second key: no aliasing between objects.
                    let key2 = c.put(data.clone()).await.unwrap();
                    prop_assert_ne!(&key, &key2);
                    c.evict(&key).await.unwrap();
                    prop_assert_eq!(c.get(&key).await.unwrap(), None);
                    let back2 = c.get(&key2).await.unwrap();
                    prop_assert_eq!(back2.as_deref(), Some(&data[..]), "{}", c.kind());
                    c.evict(&key2).await.unwrap();
                }
                Ok(())
            })
        })
        .unwrap();
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Shape {
    Empty,
    Circle(u32),
    Rect { w: i64, h: i64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Sample {
    id: u64,
    delta: i32,
    label: String,
    flag: Option<bool>,
    ratio: f64,
    values: Vec<u16>,
    shapes: Vec<Shape>,
    attrs: BTreeMap<String, i64>,
    blob: Vec<u8>,
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Empty),
        any::<u32>().prop_map(Shape::Circle),
        (any::<i64>(), any::<i64>()).prop_map(|(w, h)| Shape::Rect { w, h }),
    ]
}

fn sample() -> impl Strategy<Value = Sample> {
    (
        any::<u64>(),
        any::<i32>(),
        any::<String>(),
        any::<Option<bool>>(),
        // JSON has no NaN or infinities; every finite value must come back exactly.
        proptest::num::f64::NORMAL | proptest::num::f64::ZERO | proptest::num::f64::SUBNORMAL,
        vec(any::<u16>(), 0..32),
        vec(shape(), 0..6),
        btree_map(any::<String>(), any::<i64>(), 0..6),
        vec(any::<u8>(), 0..64),
    )
        .prop_map(
            |(id, delta, label, flag, ratio, values, shapes, attrs, blob)| Sample {
                id,
                delta,
                label,
                flag,
                ratio,
                values,
                shapes,
                attrs,
                blob,
            },
        )
}

#[test]
fn serde_objects_round_trip_through_a_store_with_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let mut stores = Vec::new();
    for codec in [Codec::Postcard, Codec::Json, Codec::MessagePack] {
        let seg = unique("prop-codec");
        // No cache: every get decodes the stored bytes.
        stores.push(
            Store::builder(seg.clone(), MemoryConnector::new(&seg))
                .codec(codec)
                .cache_bytes(0)
                .build(),
        );
        let file = FileConnector::new(dir.path().join(codec.as_str())).unwrap();
        stores.push(
            Store::builder(unique("prop-codec-file"), file)
                .codec(codec)
                .cache_bytes(0)
                .build(),
        );
    }
    for store in &stores {
        proxystore::register_store(store).unwrap();
    }
    let strategy = (sample(), any::<String>(), vec(any::<i64>(), 0..16));
    runner(64)
        .run(&strategy, |(s, text, ints)| {
            rt().block_on(async {
                for store in &stores {
                    let codec = store.config().codec;
                    let k = store.put(&s).await.unwrap();
                    let back: Option<Sample> = store.get(&k).await.unwrap();
                    prop_assert_eq!(back.as_ref(), Some(&s), "{}", codec);
                    let k2 = store.put(&text).await.unwrap();
                    let back: Option<String> = store.get(&k2).await.unwrap();
                    prop_assert_eq!(back.as_ref(), Some(&text), "{}", codec);
                    let k3 = store.put(&ints).await.unwrap();
                    let back: Option<Vec<i64>> = store.get(&k3).await.unwrap();
                    prop_assert_eq!(back.as_ref(), Some(&ints), "{}", codec);
                    // Through a proxy as well: the reference carries the codec.
                    let p = store.proxy(&s).await.unwrap();
                    let wire = postcard::to_stdvec(&p).unwrap();
                    let p: proxystore::Proxy<Sample> = postcard::from_bytes(&wire).unwrap();
                    let resolved = p.resolve().await.unwrap();
                    prop_assert_eq!(resolved, &s, "{}", codec);
                    let pk = p.key().unwrap().clone();
                    store.evict_batch(&[k, k2, k3, pk]).await.unwrap();
                }
                Ok(())
            })
        })
        .unwrap();
}

/// Option values of every JSON kind, floats included (exact since serde_json's
/// `float_roundtrip`; see the `float_options_round_trip_exactly` regression test).
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| Value::Number(i.into())),
        any::<u64>().prop_map(|u| Value::Number(u.into())),
        (proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO)
            .prop_filter_map("finite", serde_json::Number::from_f64)
            .prop_map(Value::Number),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn connector_config() -> impl Strategy<Value = ConnectorConfig> {
    let kind = prop_oneof![
        Just("memory".to_owned()),
        Just("file".to_owned()),
        Just("multi".to_owned()),
        Just("grpc".to_owned()),
        "\\PC{1,24}",
    ];
    let options = prop_oneof![
        Just(serde_json::Value::Null),
        btree_map(any::<String>(), json_value(), 0..5)
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
    ];
    (kind, options).prop_map(|(k, o)| ConnectorConfig::new(k, o))
}

fn digest() -> impl Strategy<Value = Option<Digest>> {
    prop_oneof![
        Just(None),
        any::<u64>().prop_map(|v| Some(Digest::Xxh3(v))),
        any::<[u8; 32]>().prop_map(|v| Some(Digest::Blake3(v))),
    ]
}

fn codec() -> impl Strategy<Value = Codec> {
    prop_oneof![
        Just(Codec::Raw),
        Just(Codec::Postcard),
        Just(Codec::Json),
        Just(Codec::MessagePack),
    ]
}

fn reference() -> impl Strategy<Value = Reference> {
    let store = prop_oneof![
        "[a-z0-9-]{1,16}",
        "\\PC{1,32}",
        any::<String>().prop_filter("non-empty", |s| !s.is_empty())
    ];
    let key = prop_oneof![
        Just(Key::random().to_string()),
        any::<String>(),
        "[a-z]{1,8}:[0-9a-f-]{36}",
        "\\PC{0,64}",
    ];
    (
        (
            store,
            connector_config(),
            key,
            any::<u64>(),
            digest(),
            codec(),
        ),
        (
            any::<String>(),
            any::<bool>(),
            any::<String>(),
            any::<String>(),
        ),
    )
        .prop_map(
            |((store, connector, key, size, digest, codec), (type_name, evict, tp, ts))| {
                let mut r = Reference::new(store, connector, Key::from(key));
                r.size = size;
                r.digest = digest;
                r.codec = codec;
                r.type_name = type_name;
                r.evict_on_resolve = evict;
                r.traceparent = tp;
                r.tracestate = ts;
                r
            },
        )
}

#[test]
fn any_reference_round_trips_through_protobuf_json_postcard_and_msgpack() {
    runner(512)
        .run(&reference(), |r| {
            let pb = r.to_bytes();
            prop_assert_eq!(&Reference::from_bytes(&pb).unwrap(), &r);
            prop_assert_eq!(&Reference::from_json(&r.to_json()).unwrap(), &r);
            let json = serde_json::to_vec(&r).unwrap();
            prop_assert_eq!(&serde_json::from_slice::<Reference>(&json).unwrap(), &r);
            let pc = postcard::to_stdvec(&r).unwrap();
            prop_assert_eq!(&postcard::from_bytes::<Reference>(&pc).unwrap(), &r);
            let named = rmp_serde::to_vec_named(&r).unwrap();
            prop_assert_eq!(&rmp_serde::from_slice::<Reference>(&named).unwrap(), &r);
            let compact = rmp_serde::to_vec(&r).unwrap();
            prop_assert_eq!(&rmp_serde::from_slice::<Reference>(&compact).unwrap(), &r);
            Ok(())
        })
        .unwrap();
}

#[derive(Clone, Debug)]
enum Op {
    /// Put a byte object of this many bytes.
    PutBytes(usize),
    /// Put a serde object (a string of this many characters).
    PutText(usize),
    /// Get one of the keys put so far, as bytes / as text / shared.
    Get(usize),
    GetShared(usize),
    Evict(usize),
    ClearCache,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..3000).prop_map(Op::PutBytes),
        2 => (0usize..1500).prop_map(Op::PutText),
        6 => any::<usize>().prop_map(Op::Get),
        2 => any::<usize>().prop_map(Op::GetShared),
        2 => any::<usize>().prop_map(Op::Evict),
        1 => Just(Op::ClearCache),
    ]
}

#[test]
fn the_object_cache_never_exceeds_its_byte_bound() {
    let strategy = (
        prop_oneof![Just(0u64), 1u64..256, 256u64..8192],
        vec(op(), 1..80),
    );
    runner(128)
        .run(&strategy, |(bound, ops)| {
            rt().block_on(async {
                let name = unique("prop-cache");
                let mut config = StoreConfig::new(
                    name.clone(),
                    ConnectorConfig::new("memory", serde_json::json!({ "segment": name })),
                );
                config.cache_bytes = bound;
                let store = Store::from_config(config).unwrap();
                // What each key holds, to check that the cache never serves stale objects.
                let mut keys: Vec<(Key, Result<Vec<u8>, String>, bool)> = Vec::new();
                for op in ops {
                    match op {
                        Op::PutBytes(n) => {
                            let v: Vec<u8> = (0..n).map(|i| i as u8).collect();
                            let k = store.put(&v).await.unwrap();
                            keys.push((k, Ok(v), true));
                        }
                        Op::PutText(n) => {
                            let s: String = "é".repeat(n / 2) + &"x".repeat(n % 2);
                            let k = store.put(&s).await.unwrap();
                            keys.push((k, Err(s), true));
                        }
                        Op::Get(i) | Op::GetShared(i) if !keys.is_empty() => {
                            let (k, want, live) = &keys[i % keys.len()];
                            let shared = matches!(op, Op::GetShared(_));
                            match want {
                                Ok(v) => {
                                    let got = if shared {
                                        store
                                            .get_shared::<Vec<u8>>(k)
                                            .await
                                            .unwrap()
                                            .map(|a| (*a).clone())
                                    } else {
                                        store.get::<Vec<u8>>(k).await.unwrap()
                                    };
                                    prop_assert_eq!(got.as_ref(), live.then_some(v));
                                }
                                Err(s) => {
                                    let got = if shared {
                                        store
                                            .get_shared::<String>(k)
                                            .await
                                            .unwrap()
                                            .map(|a| (*a).clone())
                                    } else {
                                        store.get::<String>(k).await.unwrap()
                                    };
                                    prop_assert_eq!(got.as_ref(), live.then_some(s));
                                }
                            }
                        }
                        Op::Evict(i) if !keys.is_empty() => {
                            let n = keys.len();
                            let (k, _, live) = &mut keys[i % n];
                            store.evict(k).await.unwrap();
                            *live = false;
                        }
                        Op::ClearCache => store.clear_cache(),
                        _ => {}
                    }
                    prop_assert!(
                        store.cache_bytes() <= bound,
                        "cache holds {} bytes over a bound of {bound}",
                        store.cache_bytes()
                    );
                    if bound == 0 {
                        prop_assert_eq!(store.cache_len(), 0);
                    }
                }
                let all: Vec<Key> = keys.into_iter().map(|(k, _, _)| k).collect();
                store.evict_batch(&all).await.unwrap();
                prop_assert_eq!(store.cache_len(), 0);
                prop_assert_eq!(store.cache_bytes(), 0);
                Ok(())
            })
        })
        .unwrap();
}

#[test]
fn reference_decoding_never_panics_on_arbitrary_bytes() {
    runner(2048)
        .run(&vec(any::<u8>(), 0..512), |bytes| {
            let _ = Reference::from_bytes(&bytes);
            let _ = Reference::from_json(&String::from_utf8_lossy(&bytes));
            let _ = postcard::from_bytes::<Reference>(&bytes);
            let _ = rmp_serde::from_slice::<Reference>(&bytes);
            let _ = postcard::from_bytes::<proxystore::Proxy<Vec<u8>>>(&bytes);
            let _ = rmp_serde::from_slice::<proxystore::Proxy<Vec<u8>>>(&bytes);
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_valid_references_decode_or_fail_without_panicking() {
    // Random bytes rarely get past the first protobuf tag; mutating real encodings reaches
    // the field checks (digest lengths, codec names, versions, options JSON).
    let strategy = (
        reference(),
        vec((any::<usize>(), any::<u8>()), 1..8),
        any::<usize>(),
    );
    runner(1024)
        .run(&strategy, |(r, flips, cut)| {
            let mut b = r.to_bytes().to_vec();
            for (i, x) in flips {
                let n = b.len();
                b[i % n] ^= x;
            }
            let _ = Reference::from_bytes(&b);
            let _ = Reference::from_bytes(&b[..cut % (b.len() + 1)]);
            let mut json = r.to_json().into_bytes();
            let n = json.len();
            json.truncate(cut % (n + 1));
            let _ = Reference::from_json(&String::from_utf8_lossy(&json));
            Ok(())
        })
        .unwrap();
}
