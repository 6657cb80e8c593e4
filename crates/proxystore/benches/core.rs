//! Core benchmarks, each next to its baseline in the same run.
//!
//! - `get_bytes_zero_copy`: memory-store get of a `Bytes` object at 100 B and 100 MiB (should
//!   not grow with size), next to a memcpy of the same bytes;
//! - `file_100MiB`: file connector put/get against raw `std::fs` write/read in the same directory;
//! - `resolve_1MiB`: first resolve of a deserialized proxy over the file connector, per digest,
//!   against a raw read of the same file;
//! - `digest`: throughput of each digest algorithm;
//! - `small_objects`: 100 B put+get pairs through a memory store.
//!
//! Run: `cargo bench -p proxystore --bench core`.

// A benchmark that cannot set itself up has nothing to measure: failing loudly is right.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use proxystore::connector::file::FileConnector;
use proxystore::connector::memory::MemoryConnector;
use proxystore::{Connector, DigestAlgorithm, Key, Proxy, Reference, Store, register_store};

const MIB: usize = 1 << 20;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn payload(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>())
}

fn get_bytes_zero_copy(c: &mut Criterion) {
    let rt = rt();
    let mut g = c.benchmark_group("get_bytes_zero_copy");
    for size in [100usize, 100 * MIB] {
        let data = payload(size);
        let store = Store::builder(
            format!("bench-zc-{size}"),
            MemoryConnector::new(&format!("bench-zc-{size}")),
        )
        .cache_bytes(0)
        .build();
        let key = rt.block_on(store.put(&data)).expect("put");
        g.bench_with_input(BenchmarkId::new("memory_store_get", size), &size, |b, _| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let v: Bytes = store.get(&key).await.expect("get").expect("present");
                        black_box(v);
                    }
                    start.elapsed()
                })
            })
        });
        let mut dst = vec![0u8; size];
        g.bench_with_input(BenchmarkId::new("memcpy", size), &size, |b, _| {
            b.iter(|| {
                dst.copy_from_slice(&data);
                black_box(&dst);
            })
        });
    }
    g.finish();
}

fn file_100mib(c: &mut Criterion) {
    let rt = rt();
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = FileConnector::new(dir.path()).expect("file connector");
    let data = payload(100 * MIB);
    let mut g = c.benchmark_group("file_100MiB");
    g.sample_size(10)
        .throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("connector_put", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let key = conn.put(data.clone()).await.expect("put");
                    total += start.elapsed();
                    conn.evict(&key).await.expect("evict");
                }
                total
            })
        })
    });
    g.bench_function("raw_std_fs_write", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let path = dir.path().join(Key::random().as_str());
                let start = Instant::now();
                std::fs::write(&path, &data).expect("write");
                total += start.elapsed();
                std::fs::remove_file(&path).expect("remove");
            }
            total
        })
    });
    let key = rt.block_on(conn.put(data.clone())).expect("put");
    let path = dir.path().join(key.as_str());
    g.bench_function("connector_get", |b| {
        b.iter(|| black_box(rt.block_on(conn.get(&key)).expect("get")))
    });
    g.bench_function("raw_std_fs_read", |b| {
        b.iter(|| black_box(std::fs::read(&path).expect("read")))
    });
    g.finish();
}

fn resolve_1mib(c: &mut Criterion) {
    let rt = rt();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = payload(MIB);
    let mut g = c.benchmark_group("resolve_1MiB");
    g.throughput(Throughput::Bytes(MIB as u64));
    for digest in [
        DigestAlgorithm::None,
        DigestAlgorithm::Xxh3,
        DigestAlgorithm::Blake3,
    ] {
        // No cache: every iteration is a first resolve that reads the file.
        let store = Store::builder(
            format!("bench-resolve-{}", digest.as_str()),
            FileConnector::new(dir.path()).expect("file connector"),
        )
        .digest(digest)
        .cache_bytes(0)
        .build();
        register_store(&store).expect("register");
        let proxy = rt.block_on(store.proxy(&data)).expect("proxy");
        let wire = proxy.reference().expect("reference").to_bytes();
        g.bench_function(BenchmarkId::new("first_resolve", digest.as_str()), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let r = Reference::from_bytes(&wire).expect("reference");
                        let p: Proxy<Bytes> = Proxy::from_reference(r);
                        black_box(p.resolve().await.expect("resolve").len());
                    }
                    start.elapsed()
                })
            })
        });
        if digest == DigestAlgorithm::None {
            let path = dir
                .path()
                .join(proxy.key().expect("key").as_str())
                .to_path_buf();
            g.bench_function("raw_std_fs_read", |b| {
                b.iter(|| black_box(std::fs::read(&path).expect("read")))
            });
        }
    }
    g.finish();
}

fn digest(c: &mut Criterion) {
    let data = payload(100 * MIB);
    let mut g = c.benchmark_group("digest_100MiB");
    g.sample_size(10)
        .throughput(Throughput::Bytes(data.len() as u64));
    for alg in [DigestAlgorithm::Xxh3, DigestAlgorithm::Blake3] {
        g.bench_function(alg.as_str(), |b| b.iter(|| black_box(alg.digest(&data))));
    }
    g.finish();
}

fn small_objects(c: &mut Criterion) {
    let rt = rt();
    let store = Store::new("bench-small", MemoryConnector::new("bench-small"));
    let obj = vec![7u8; 100];
    let mut g = c.benchmark_group("small_objects_100B");
    g.throughput(Throughput::Elements(1));
    g.bench_function("memory_put_get_evict", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let key = store.put(&obj).await.expect("put");
                    let v: Vec<u8> = store.get(&key).await.expect("get").expect("present");
                    black_box(v);
                    store.evict(&key).await.expect("evict");
                }
                start.elapsed()
            })
        })
    });
    // As Python ProxyStore's baseline measures it: a store without cache.
    let cold = Store::builder("bench-small-cold", MemoryConnector::new("bench-small-cold"))
        .cache_bytes(0)
        .build();
    g.bench_function("memory_put_get_cold", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                let mut keys = Vec::with_capacity(iters as usize);
                for _ in 0..iters {
                    let key = cold.put(&obj).await.expect("put");
                    let v: Vec<u8> = cold.get(&key).await.expect("get").expect("present");
                    black_box(v);
                    keys.push(key);
                }
                let elapsed = start.elapsed();
                cold.evict_batch(&keys).await.expect("evict");
                elapsed
            })
        })
    });
    g.bench_function("memory_put_get", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                let mut keys = Vec::with_capacity(iters as usize);
                for _ in 0..iters {
                    let key = store.put(&obj).await.expect("put");
                    let v: Vec<u8> = store.get(&key).await.expect("get").expect("present");
                    black_box(v);
                    keys.push(key);
                }
                let elapsed = start.elapsed();
                store.evict_batch(&keys).await.expect("evict");
                elapsed
            })
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    small_objects,
    get_bytes_zero_copy,
    resolve_1mib,
    digest,
    file_100mib
);
criterion_main!(benches);
