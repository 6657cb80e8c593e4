//! Latency of each store operation on one connector at one object size, each paired with the
//! raw write or read of its baseline and repeated by [`Repeat`]; and the sizes of a
//! connector's serialized references.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use futures::future::BoxFuture;
use proxystore::{Proxy, Store};
use serde::{Deserialize, Serialize};

use super::repeat::{Repeat, Summary};
use crate::baselines::{Raw, RawKey, RawKind};
use crate::setup::Subject;

/// One measured operation.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct Row {
    /// Connector name, or `raw` for a baseline.
    pub(crate) connector: String,
    pub(crate) op: String,
    pub(crate) size_bytes: u64,
    #[serde(flatten)]
    pub(crate) summary: Summary,
    /// `size / median`.
    #[serde(rename = "throughput_Bps")]
    pub(crate) throughput_bps: f64,
    /// The baseline row this one is compared with (`raw/<op>`), if any.
    pub(crate) baseline: Option<String>,
    /// Median over the baseline's median (below 1: faster than the baseline); for the rows of
    /// what tracing costs, the median of the paired ratios of each round (see `tracing_cost`).
    pub(crate) ratio: Option<f64>,
}

impl Row {
    pub(crate) fn new(connector: &str, op: &str, size: u64, summary: Summary) -> Self {
        Row {
            connector: connector.to_owned(),
            op: op.to_owned(),
            size_bytes: size,
            throughput_bps: size as f64 / summary.median_s,
            summary,
            baseline: None,
            ratio: None,
        }
    }
}

/// Sizes of a serialized proxy reference of one connector.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct RefSize {
    pub(crate) connector: String,
    /// `postcard::to_stdvec(&proxy)`: what travels in binary task payloads.
    pub(crate) postcard_bytes: usize,
    /// `Reference::to_bytes()`: the protobuf message of `proxy.proto`.
    pub(crate) protobuf_bytes: usize,
    /// `serde_json::to_string(&proxy)`.
    pub(crate) json_bytes: usize,
}

/// The two stores of a connector: one without cache (cold gets, first resolves, puts), one
/// with a cache large enough for every size (warm gets).
pub(crate) struct Stores {
    pub(crate) cold: Store,
    pub(crate) warm: Store,
}

impl Stores {
    pub(crate) fn new(subject: &Subject) -> Result<Self> {
        let cold = Store::builder(
            format!("bench-{}-cold", subject.name),
            subject.connector.clone(),
        )
        .cache_bytes(0)
        .build();
        // Deserialized proxies of this store name resolve through it, without a cache.
        proxystore::register_store(&cold)?;
        let warm = Store::builder(
            format!("bench-{}-warm", subject.name),
            subject.connector.clone(),
        )
        .cache_bytes(u64::MAX)
        .build();
        Ok(Stores { cold, warm })
    }
}

fn row(subject: &Subject, op: &str, size: u64, s: Summary) -> Row {
    Row::new(subject.name, op, size, s)
}

/// A store operation measured alternately with its baseline: ratio of their medians.
fn paired(
    subject: &Subject,
    op: &str,
    size: u64,
    ours: Summary,
    base: &Summary,
    base_op: &str,
) -> Row {
    let mut r = row(subject, op, size, ours);
    r.baseline = Some(format!("raw/{base_op}"));
    r.ratio = Some(r.summary.median_s / base.median_s);
    r
}

/// The raw baseline of one connector at one size: write and read operations to interleave
/// with the store's.
pub(crate) struct Base {
    raw: Raw,
    kind: RawKind,
    payload: Bytes,
    /// An object written beforehand, for reads.
    read_key: Option<Arc<RawKey>>,
    /// Memcpy destination, allocated once (and touched by the warm-up call).
    buf: Arc<Mutex<Vec<u8>>>,
}

impl Base {
    pub(crate) async fn new(raw: &Raw, kind: RawKind, payload: &Bytes) -> Result<Self> {
        let (read_key, buf) = if kind == RawKind::Memcpy {
            (None, vec![0u8; payload.len()])
        } else {
            (
                Some(Arc::new(raw.write(kind, payload).await?.1)),
                Vec::new(),
            )
        };
        Ok(Base {
            raw: raw.clone(),
            kind,
            payload: payload.clone(),
            read_key,
            buf: Arc::new(Mutex::new(buf)),
        })
    }

    fn memcpy(&self) -> BoxFuture<'static, Result<Duration>> {
        let (buf, d) = (self.buf.clone(), self.payload.clone());
        Box::pin(async move {
            let mut b = buf.lock().unwrap_or_else(|e| e.into_inner());
            let start = Instant::now();
            b.copy_from_slice(&d);
            let dt = start.elapsed();
            std::hint::black_box(&mut *b);
            Ok(dt)
        })
    }

    /// Write a new object (timed), then remove it (untimed).
    pub(crate) fn write(&self) -> BoxFuture<'static, Result<Duration>> {
        if self.kind == RawKind::Memcpy {
            return self.memcpy();
        }
        let (raw, kind, d) = (self.raw.clone(), self.kind, self.payload.clone());
        Box::pin(async move {
            let (dt, key) = raw.write(kind, &d).await?;
            raw.delete(kind, key).await?;
            Ok(dt)
        })
    }

    /// Read the object written beforehand.
    pub(crate) fn read(&self) -> BoxFuture<'static, Result<Duration>> {
        let Some(key) = self.read_key.clone() else {
            return self.memcpy();
        };
        let (raw, kind, size) = (self.raw.clone(), self.kind, self.payload.len());
        Box::pin(async move {
            let (dt, n) = raw.read(kind, &key).await?;
            ensure!(n == size, "raw read returned {n} bytes");
            Ok(dt)
        })
    }

    /// Remove the object written for reads.
    pub(crate) async fn close(self) -> Result<()> {
        if let Some(key) = self.read_key.and_then(|k| Arc::try_unwrap(k).ok()) {
            self.raw.delete(self.kind, key).await?;
        }
        Ok(())
    }
}

/// put, connector put and get, cold get, warm get, proxy create and first resolve (in this
/// process) of `payload`, each alternated with the raw write or read of the connector's baseline. Returns the store
/// rows and the baseline rows (write and read, from the put and cold-get pairings).
pub(crate) async fn store_ops(
    subject: &Subject,
    stores: &Stores,
    payload: &Bytes,
    repeat: &Repeat,
    raw: &Raw,
) -> Result<(Vec<Row>, Vec<Row>)> {
    let size = payload.len() as u64;
    let (write_op, read_op) = subject.baseline.ops();
    let base = Base::new(raw, subject.baseline, payload).await?;
    let mut rows = Vec::new();
    let mut raw_rows = Vec::new();
    let cold = &stores.cold;

    let (s, b) = repeat
        .run_paired(
            || {
                let (st, d) = (cold.clone(), payload.clone());
                async move {
                    let start = Instant::now();
                    let key = st.put(&d).await?;
                    let dt = start.elapsed();
                    st.evict(&key).await?;
                    Ok(dt)
                }
            },
            || base.write(),
        )
        .await
        .context("put")?;
    rows.push(paired(subject, "put", size, s, &b, write_op));
    raw_rows.push(Row::new("raw", write_op, size, b));

    // The connector alone (no codec, digest, cache, metrics or tracing): its own overhead
    // over the raw client.
    let conn = &subject.connector;
    let (s, b) = repeat
        .run_paired(
            || {
                let (c, d) = (conn.clone(), payload.clone());
                async move {
                    let start = Instant::now();
                    let key = c.put(d).await?;
                    let dt = start.elapsed();
                    c.evict(&key).await?;
                    Ok(dt)
                }
            },
            || base.write(),
        )
        .await
        .context("connector put")?;
    rows.push(paired(subject, "connector_put", size, s, &b, write_op));
    let key = conn.put(payload.clone()).await?;
    let (s, b) = repeat
        .run_paired(
            || {
                let (c, k) = (conn.clone(), key.clone());
                async move {
                    let start = Instant::now();
                    let v = c.get(&k).await?.context("object vanished")?;
                    let dt = start.elapsed();
                    ensure!(v.len() as u64 == size, "get returned {} bytes", v.len());
                    Ok(dt)
                }
            },
            || base.read(),
        )
        .await
        .context("connector get")?;
    conn.evict(&key).await?;
    rows.push(paired(subject, "connector_get", size, s, &b, read_op));

    let key = cold.put(payload).await?;
    let (s, b) = repeat
        .run_paired(
            || {
                let (st, k) = (cold.clone(), key.clone());
                async move {
                    let start = Instant::now();
                    let v: Bytes = st.get(&k).await?.context("object vanished")?;
                    let dt = start.elapsed();
                    ensure!(v.len() as u64 == size, "get returned {} bytes", v.len());
                    Ok(dt)
                }
            },
            || base.read(),
        )
        .await
        .context("cold get")?;
    cold.evict(&key).await?;
    rows.push(paired(subject, "get_cold", size, s, &b, read_op));
    if read_op != write_op {
        raw_rows.push(Row::new("raw", read_op, size, b));
    }

    let warm = &stores.warm;
    let key = warm.put(payload).await?;
    let _: Option<Bytes> = warm.get(&key).await?;
    ensure!(warm.cache_len() > 0, "warm store did not cache");
    let (s, b) = repeat
        .run_paired(
            || {
                let (st, k) = (warm.clone(), key.clone());
                async move {
                    let start = Instant::now();
                    let v: Bytes = st.get(&k).await?.context("object vanished")?;
                    let dt = start.elapsed();
                    std::hint::black_box(v);
                    Ok(dt)
                }
            },
            || base.read(),
        )
        .await
        .context("warm get")?;
    warm.evict(&key).await?;
    rows.push(paired(subject, "get_warm", size, s, &b, read_op));

    let (s, b) = repeat
        .run_paired(
            || {
                let (st, d) = (cold.clone(), payload.clone());
                async move {
                    let start = Instant::now();
                    let p = st.proxy(&d).await?;
                    let dt = start.elapsed();
                    if let Some(k) = p.key() {
                        st.evict(k).await?;
                    }
                    Ok(dt)
                }
            },
            || base.write(),
        )
        .await
        .context("proxy create")?;
    rows.push(paired(subject, "proxy_create", size, s, &b, write_op));

    // As Python's resolve_first: a proxy deserialized (untimed) then used for the first time,
    // its store registered without a cache.
    let proxy = cold.proxy(payload).await?;
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
                    ensure!(n as u64 == size, "resolve returned {n} bytes");
                    Ok(dt)
                }
            },
            || base.read(),
        )
        .await
        .context("first resolve")?;
    if let Some(k) = proxy.key() {
        cold.evict(k).await?;
    }
    rows.push(paired(subject, "resolve_first", size, s, &b, read_op));
    base.close().await?;
    Ok((rows, raw_rows))
}

/// The reference sizes of a connector's proxies.
pub(crate) async fn ref_size(subject: &Subject, stores: &Stores) -> Result<RefSize> {
    let proxy = stores.cold.proxy(&Bytes::from_static(b"x")).await?;
    let reference = proxy.reference().context("proxy without reference")?;
    let sizes = RefSize {
        connector: subject.name.to_owned(),
        postcard_bytes: postcard::to_stdvec(&proxy)?.len(),
        protobuf_bytes: reference.to_bytes().len(),
        json_bytes: serde_json::to_string(&proxy)?.len(),
    };
    if let Some(k) = proxy.key() {
        stores.cold.evict(k).await?;
    }
    Ok(sizes)
}
