//! The core figures of the file connector and the digests: the first resolve of a
//! deserialized 1 MiB proxy per digest against a raw read of the same file, and each digest's
//! throughput.

use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use proxystore::connector::file::FileConnector;
use proxystore::{Connector, DigestAlgorithm, Proxy, Store};

use super::repeat::Repeat;
use super::rss;
use super::store_ops::Row;
use crate::baselines::Raw;

/// The core figures of the file connector and digests: the first resolve of a deserialized
/// 1 MiB proxy per digest against a raw read of the same file, and each digest's throughput.
pub(crate) async fn core_checks(raw: &Raw, repeat: &Repeat) -> Result<Vec<Row>> {
    const SIZE: u64 = 1 << 20;
    let payload = rss::payload(SIZE as usize, 17);
    let mut rows = Vec::new();
    let connector = FileConnector::new(&raw.fs_dir)?;
    let mut keys = Vec::new();
    let first = connector.put(payload.clone()).await?;
    let path = raw.fs_dir.join(first.as_str());
    let raw_read = || {
        let path = path.clone();
        async move {
            let start = Instant::now();
            let v = std::fs::read(&path)?;
            let dt = start.elapsed();
            anyhow::ensure!(v.len() as u64 == SIZE, "read {} bytes", v.len());
            Ok(dt)
        }
    };
    for alg in [
        DigestAlgorithm::None,
        DigestAlgorithm::Xxh3,
        DigestAlgorithm::Blake3,
    ] {
        let store = Store::builder(format!("bench-core-{}", alg.as_str()), connector.clone())
            .digest(alg)
            .cache_bytes(0)
            .build();
        proxystore::register_store(&store)?;
        let proxy = store.proxy(&payload).await?;
        let key = proxy.key().context("no key")?.clone();
        keys.push((store.clone(), key));
        let wire = postcard::to_stdvec(&proxy)?;
        let (s, b) = repeat
            .run_paired(
                || {
                    let wire = wire.clone();
                    async move {
                        let q: Proxy<Bytes> = postcard::from_bytes(&wire)?;
                        let start = Instant::now();
                        let n = q.resolve().await?.len();
                        let dt = start.elapsed();
                        anyhow::ensure!(n as u64 == SIZE, "resolved {n} bytes");
                        Ok(dt)
                    }
                },
                raw_read,
            )
            .await?;
        let mut row = Row::new(
            "file",
            &format!("resolve_first_digest_{}", alg.as_str()),
            SIZE,
            s,
        );
        row.baseline = Some("raw/fs_read".into());
        row.ratio = Some(row.summary.median_s / b.median_s);
        rows.push(row);
        if alg == DigestAlgorithm::None {
            rows.push(Row::new("raw", "fs_read", SIZE, b));
        }
        proxystore::unregister_store(store.name());
    }
    connector.evict(&first).await?;
    for (store, key) in keys {
        store.evict(&key).await?;
    }

    let big = rss::payload(100 << 20, 3);
    for alg in [DigestAlgorithm::Xxh3, DigestAlgorithm::Blake3] {
        for data in [payload.clone(), big.clone()] {
            let s = repeat
                .run(|| {
                    let data = data.clone();
                    async move {
                        let start = Instant::now();
                        std::hint::black_box(alg.digest(&data));
                        Ok(start.elapsed())
                    }
                })
                .await?;
            rows.push(Row::new("digest", alg.as_str(), data.len() as u64, s));
        }
    }
    Ok(rows)
}
