//! Middleware benchmarks, each beside its baseline in the same run.
//!
//! - `small_arg`: encoding a task whose arguments are all below the threshold, with the task
//!   codec against plain `serde_json::to_vec` of the same task: the difference is the policy's
//!   cost per argument;
//! - `large_arg_10MiB`: a task with a 10 MiB argument, automatic (plain field, proxied by the
//!   codec) against explicit (`Proxy<T>` field made with `Store::proxy`), producer encode plus
//!   worker decode and use, on the same memory store.
//!
//! Run: `cargo bench -p proxystore-middleware --bench policy`.

// A benchmark that cannot set itself up has nothing to measure: failing loudly is right.
#![allow(clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use proxystore::connector::memory::MemoryConnector;
use proxystore::{Proxy, Store};
use proxystore_middleware::{ArgumentPolicy, TaskCodec};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Small {
    name: String,
    seed: u64,
    scale: f64,
    labels: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Auto {
    data: Vec<f64>,
    epochs: u32,
}

#[derive(Serialize, Deserialize)]
struct Explicit {
    data: Proxy<Vec<f64>>,
    epochs: u32,
}

fn small_arg(c: &mut Criterion) {
    let store = Store::new("bench-mw-small", MemoryConnector::new("bench-mw-small"));
    let codec = TaskCodec::new(ArgumentPolicy::with_store("bench-mw-small")).with_store(store);
    let task = Small {
        name: "resnet".into(),
        seed: 42,
        scale: 0.5,
        labels: vec!["a".into(), "b".into(), "c".into()],
    };
    let mut g = c.benchmark_group("small_arg");
    g.bench_function("task_codec_encode", |b| {
        b.iter(|| black_box(codec.encode("train", &task).expect("encode")))
    });
    g.bench_function("serde_json_to_vec", |b| {
        b.iter(|| black_box(serde_json::to_vec(&task).expect("encode")))
    });
    g.finish();
}

fn large_arg(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = Store::builder("bench-mw-large", MemoryConnector::new("bench-mw-large"))
        .cache_bytes(0)
        .build();
    proxystore::register_store(&store).expect("register");
    let codec =
        TaskCodec::new(ArgumentPolicy::with_store("bench-mw-large")).with_store(store.clone());
    let data: Vec<f64> = (0..10 * 1024 * 1024 / 8).map(|i| i as f64).collect();
    let mut g = c.benchmark_group("large_arg_10MiB");
    g.sample_size(20);
    g.bench_function("automatic", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let task = Auto {
                    data: data.clone(),
                    epochs: 3,
                };
                let enc = codec.encode("train", &task).expect("encode");
                let dec = codec.decode::<Auto>(&enc.bytes).expect("decode");
                black_box(dec.args.data.len());
                rt.block_on(codec.cleanup(&dec.proxied)).expect("cleanup");
            }
            start.elapsed()
        })
    });
    g.bench_function("explicit_proxy_field", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let data = data.clone();
                let task = Explicit {
                    data: rt.block_on(store.proxy(&data)).expect("proxy"),
                    epochs: 3,
                };
                let doc = serde_json::to_vec(&task).expect("encode");
                let back: Explicit = serde_json::from_slice(&doc).expect("decode");
                black_box(back.data.len());
                rt.block_on(store.evict(back.data.key().expect("key")))
                    .expect("evict");
            }
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, small_arg, large_arg);
criterion_main!(benches);
