//! Small objects (100 B): put+get pairs per second with 1 and with N concurrent clients, for
//! each connector's store (without a cache, as Python ProxyStore's baseline measures it) and
//! for each raw client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::future::BoxFuture;
use proxystore::{Key, Store};
use serde::{Deserialize, Serialize};

use crate::baselines::{Raw, RawKey, RawKind};
use crate::setup::{Setup, Subject};

/// Object size of the small-object loops.
pub(crate) const SMALL_SIZE: usize = 100;

/// Pairs per second of one loop.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct SmallOps {
    /// Connector name, or `raw_<backend>`.
    pub(crate) connector: String,
    pub(crate) clients: usize,
    pub(crate) object_size_bytes: usize,
    pub(crate) pairs: u64,
    pub(crate) elapsed_s: f64,
    pub(crate) put_get_pairs_per_s: f64,
    pub(crate) ops_per_s: f64,
    /// Mean put and get latency (single client only: with many clients they overlap).
    pub(crate) mean_put_s: Option<f64>,
    pub(crate) mean_get_s: Option<f64>,
    /// The raw loop this one is compared with, and this rate over that rate.
    pub(crate) baseline: Option<String>,
    pub(crate) ratio: Option<f64>,
}

/// What a pair leaves behind, removed after the loop.
pub(crate) enum Cleanup {
    Store(Key),
    Raw(RawKey),
}

/// One put+get, returning the time of each half.
pub(crate) type Pair =
    Arc<dyn Fn() -> BoxFuture<'static, Result<(Duration, Duration, Cleanup)>> + Send + Sync>;

/// One put+get of a new object through `store`.
pub(crate) fn store_pair(store: Store) -> Pair {
    let obj = Bytes::from(vec![7u8; SMALL_SIZE]);
    Arc::new(move || {
        let (store, obj) = (store.clone(), obj.clone());
        Box::pin(async move {
            let t0 = Instant::now();
            let key = store.put(&obj).await?;
            let t1 = Instant::now();
            let v: Bytes = store.get(&key).await?.context("object vanished")?;
            let t2 = Instant::now();
            anyhow::ensure!(v.len() == SMALL_SIZE, "got {} bytes", v.len());
            Ok((t1 - t0, t2 - t1, Cleanup::Store(key)))
        })
    })
}

/// One raw write+read of a new object.
pub(crate) fn raw_pair(raw: Raw, kind: RawKind) -> Pair {
    let obj = Bytes::from(vec![7u8; SMALL_SIZE]);
    Arc::new(move || {
        let (raw, obj) = (raw.clone(), obj.clone());
        Box::pin(async move {
            let (put, key) = raw.write(kind, &obj).await?;
            let (get, n) = raw.read(kind, &key).await?;
            anyhow::ensure!(n == SMALL_SIZE, "got {n} bytes");
            Ok((put, get, Cleanup::Raw(key)))
        })
    })
}

struct Tally {
    pairs: u64,
    put: Duration,
    get: Duration,
    cleanup: Vec<Cleanup>,
}

async fn client_loop(pair: Pair, until: Instant) -> Result<Tally> {
    let mut t = Tally {
        pairs: 0,
        put: Duration::ZERO,
        get: Duration::ZERO,
        cleanup: Vec::new(),
    };
    loop {
        for _ in 0..25 {
            let (p, g, c) = pair().await?;
            t.put += p;
            t.get += g;
            t.cleanup.push(c);
        }
        t.pairs += 25;
        if Instant::now() >= until {
            return Ok(t);
        }
    }
}

/// Two slices of one loop as one: pairs, time and latency sums added.
pub(crate) fn merge(acc: Option<SmallOps>, next: SmallOps) -> SmallOps {
    let Some(mut a) = acc else {
        return next;
    };
    let (pa, pn) = (a.pairs as f64, next.pairs as f64);
    let mean = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if pa + pn > 0.0 => Some((x * pa + y * pn) / (pa + pn)),
        _ => None,
    };
    a.mean_put_s = mean(a.mean_put_s, next.mean_put_s);
    a.mean_get_s = mean(a.mean_get_s, next.mean_get_s);
    a.pairs += next.pairs;
    a.elapsed_s += next.elapsed_s;
    a.put_get_pairs_per_s = a.pairs as f64 / a.elapsed_s;
    a.ops_per_s = 2.0 * a.put_get_pairs_per_s;
    a
}

/// What [`run`] loops over and how.
pub(crate) struct Loop<'a> {
    pub(crate) name: &'a str,
    pub(crate) clients: usize,
    pub(crate) seconds: f64,
    /// The store whose keys the loop leaves behind.
    pub(crate) store: Option<&'a Store>,
    pub(crate) raw: &'a Raw,
    /// The raw backend whose objects the loop leaves behind.
    pub(crate) raw_kind: Option<RawKind>,
    pub(crate) blocking: bool,
    /// Warm up first (at least 20 pairs and 0.25 s).
    pub(crate) warm_up: bool,
}

/// Run `pair` in a loop for `seconds` on `clients` concurrent tasks (on the harness's runtime
/// when more than one; in the calling task otherwise), after a warm-up of at least 20
/// pairs and 0.25 s if asked; then clean up what was stored, untimed.
///
/// `blocking`: the pair blocks its thread (raw `std::fs`), so concurrent clients get threads
/// of their own instead of tasks.
pub(crate) async fn run(l: Loop<'_>, pair: Pair) -> Result<SmallOps> {
    let Loop {
        name,
        clients,
        seconds,
        store,
        raw,
        raw_kind,
        blocking,
        warm_up,
    } = l;
    let warm_until = Instant::now() + Duration::from_millis(250);
    let mut warm = Vec::new();
    while warm_up && (warm.len() < 20 || Instant::now() < warm_until) {
        warm.push(pair().await?.2);
    }
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let tallies = if clients <= 1 {
        vec![client_loop(pair, until).await?]
    } else if blocking {
        let handle = tokio::runtime::Handle::current();
        let mut threads = Vec::new();
        for _ in 0..clients {
            let (pair, handle) = (pair.clone(), handle.clone());
            threads.push(tokio::task::spawn_blocking(move || {
                handle.block_on(client_loop(pair, until))
            }));
        }
        let mut out = Vec::new();
        for t in threads {
            out.push(t.await??);
        }
        out
    } else {
        let mut tasks = Vec::new();
        for _ in 0..clients {
            tasks.push(tokio::spawn(client_loop(pair.clone(), until)));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await??);
        }
        out
    };
    let elapsed = start.elapsed().as_secs_f64();
    let pairs: u64 = tallies.iter().map(|t| t.pairs).sum();
    let (put, get): (Duration, Duration) = tallies
        .iter()
        .fold((Duration::ZERO, Duration::ZERO), |(p, g), t| {
            (p + t.put, g + t.get)
        });
    let mut keys = Vec::new();
    for c in warm
        .into_iter()
        .chain(tallies.into_iter().flat_map(|t| t.cleanup))
    {
        match c {
            Cleanup::Store(k) => keys.push(k),
            Cleanup::Raw(k) => {
                if let Some(kind) = raw_kind {
                    raw.delete(kind, k).await?;
                }
            }
        }
    }
    if let Some(store) = store {
        for chunk in keys.chunks(1000) {
            store.evict_batch(chunk).await?;
        }
    }
    let single = clients <= 1 && pairs > 0;
    Ok(SmallOps {
        connector: name.to_owned(),
        clients,
        object_size_bytes: SMALL_SIZE,
        pairs,
        elapsed_s: elapsed,
        put_get_pairs_per_s: pairs as f64 / elapsed,
        ops_per_s: 2.0 * pairs as f64 / elapsed,
        mean_put_s: single.then(|| put.as_secs_f64() / pairs as f64),
        mean_get_s: single.then(|| get.as_secs_f64() / pairs as f64),
        baseline: None,
        ratio: None,
    })
}

/// Name of the `redis-benchmark` rows.
pub(crate) const REDIS_BENCHMARK: &str = "redis_benchmark";

/// `redis-benchmark -c 1 -d 100 -t set,get -n n` against `host:port`: one connection, no
/// pipelining, the C client of Redis itself. The loopback limit of a 100 B put+get pair, as a
/// loop of `n` pairs whose time is `n` SETs plus `n` GETs at the rates it reports.
async fn redis_benchmark(host: &str, port: u16, n: u64) -> Result<SmallOps> {
    let (host, port_s, n_s) = (host.to_owned(), port.to_string(), n.to_string());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("redis-benchmark")
            .args(["-h", &host, "-p", &port_s, "-c", "1", "-d", "100"])
            .args(["-t", "set,get", "-n", &n_s, "-P", "1", "--csv"])
            .output()
    })
    .await?
    .context("run redis-benchmark (Debian package redis-tools; scripts/install-deps)")?;
    anyhow::ensure!(
        out.status.success(),
        "redis-benchmark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8_lossy(&out.stdout);
    let rps = |test: &str| -> Result<f64> {
        csv.lines()
            .find_map(|l| {
                let mut fields = l.split(',').map(|f| f.trim_matches('"'));
                (fields.next() == Some(test)).then(|| fields.next()?.parse::<f64>().ok())?
            })
            .filter(|r| *r > 0.0)
            .with_context(|| format!("no {test} rate in redis-benchmark's output: {csv}"))
    };
    let (set, get) = (rps("SET")?, rps("GET")?);
    let elapsed = n as f64 / set + n as f64 / get;
    Ok(SmallOps {
        connector: REDIS_BENCHMARK.to_owned(),
        clients: 1,
        object_size_bytes: SMALL_SIZE,
        pairs: n,
        elapsed_s: elapsed,
        put_get_pairs_per_s: n as f64 / elapsed,
        ops_per_s: 2.0 * n as f64 / elapsed,
        mean_put_s: Some(1.0 / set),
        mean_get_s: Some(1.0 / get),
        baseline: None,
        ratio: None,
    })
}

/// What [`store_and_baseline`] measured: our loop, the raw client's, and for Redis with one
/// client, `redis-benchmark`'s.
pub(crate) struct Measured {
    pub(crate) ours: SmallOps,
    pub(crate) raw: Option<SmallOps>,
    pub(crate) limit: Option<SmallOps>,
}

/// The small-object loop of `subject`'s store and of its raw baseline, alternated in slices
/// (ours, raw, ours, raw) so that both see the same machine; with one client over Redis, a
/// `redis-benchmark` slice follows each pair of slices.
pub(crate) async fn store_and_baseline(
    seconds: f64,
    setup: &Setup,
    subject: &Subject,
    store: &Store,
    clients: usize,
) -> Result<Measured> {
    // Short slices: file creation on a shared ext4 disk drifts by 10x within seconds.
    const SLICES: usize = 6;
    let seconds = seconds / SLICES as f64;
    let raw_kind = (subject.baseline != RawKind::Memcpy).then_some(subject.baseline);
    let mut ours: Option<SmallOps> = None;
    let mut base: Option<SmallOps> = None;
    let mut limit: Option<SmallOps> = None;
    let limit_addr = (subject.baseline == RawKind::Redis && subject.name == "redis")
        .then(|| setup.raw.redis_plain_addr())
        .flatten();
    for slice in 0..SLICES {
        let l = Loop {
            name: subject.name,
            clients,
            seconds,
            store: Some(store),
            raw: &setup.raw,
            raw_kind: None,
            blocking: false,
            warm_up: slice == 0,
        };
        let r = run(l, store_pair(store.clone())).await?;
        ours = Some(merge(ours, r));
        if let Some(kind) = raw_kind {
            let l = Loop {
                name: kind.small_name(),
                clients,
                seconds,
                store: None,
                raw: &setup.raw,
                raw_kind: Some(kind),
                blocking: kind == RawKind::Fs,
                warm_up: slice == 0,
            };
            let r = run(l, raw_pair(setup.raw.clone(), kind)).await?;
            base = Some(merge(base, r));
        }
        if let (Some((host, port)), true) = (limit_addr, clients == 1) {
            // As many pairs as ours did in a slice, so that it runs about as long.
            let rate = ours.as_ref().map_or(0.0, |o| o.put_get_pairs_per_s);
            let n = ((rate * seconds) as u64).max(1000);
            limit = Some(merge(limit, redis_benchmark(host, port, n).await?));
        }
    }
    let mut ours = ours.context("no small-object slices")?;
    if let (Some(kind), Some(b)) = (raw_kind, &base) {
        ours.baseline = Some(kind.small_name().to_owned());
        ours.ratio = Some(ours.put_get_pairs_per_s / b.put_get_pairs_per_s);
    }
    Ok(Measured {
        ours,
        raw: base,
        limit,
    })
}
