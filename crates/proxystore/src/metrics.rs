//! Per-store operation metrics: counts, bytes and time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::key::Key;

use serde::Serialize;

/// Counters of one operation kind.
///
/// Calls that take as long as a clock read (an immediate call, see
/// [`crate::connector::Connector::immediate`]) are timed one in [`TIME_ONE_IN`] after the first
/// [`TIME_ALL_FIRST`], through [`OpCounter::clock`]; the total time is then estimated from the
/// timed ones (their mean times the count). Every other call is timed.
#[derive(Default)]
pub(crate) struct OpCounter {
    count: AtomicU64,
    bytes: AtomicU64,
    /// Time of the timed calls.
    nanos: AtomicU64,
    /// Calls timed.
    timed: AtomicU64,
}

/// Calls of a kind that are all timed before sampling starts.
pub(crate) const TIME_ALL_FIRST: u64 = 64;
/// After the first [`TIME_ALL_FIRST`], one immediate call in this many is timed.
pub(crate) const TIME_ONE_IN: u64 = 16;

impl OpCounter {
    pub(crate) fn record(&self, bytes: u64, elapsed: Duration) {
        self.record_sampled(bytes, Some(elapsed));
    }

    /// Record a call, timed (`Some`) or not.
    pub(crate) fn record_sampled(&self, bytes: u64, elapsed: Option<Duration>) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(elapsed) = elapsed {
            self.nanos
                .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
            self.timed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The start of an immediate call when it is to be timed (see the type's docs), or always
    /// with `always` (per-key figures want each call's time).
    pub(crate) fn clock(&self, always: bool) -> Option<std::time::Instant> {
        let n = self.count.load(Ordering::Relaxed);
        (always || n < TIME_ALL_FIRST || n.is_multiple_of(TIME_ONE_IN))
            .then(std::time::Instant::now)
    }

    fn snapshot(&self) -> OpStats {
        let count = self.count.load(Ordering::Relaxed);
        let nanos = self.nanos.load(Ordering::Relaxed);
        let timed = self.timed.load(Ordering::Relaxed);
        let time = if timed == 0 || timed >= count {
            nanos
        } else {
            (u128::from(nanos) * u128::from(count) / u128::from(timed)) as u64
        };
        OpStats {
            count,
            bytes: self.bytes.load(Ordering::Relaxed),
            time: Duration::from_nanos(time),
        }
    }
}

/// Totals of one operation kind since the store was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OpStats {
    /// Number of completed operations (successful or not).
    pub count: u64,
    /// Payload bytes moved.
    pub bytes: u64,
    /// Total time spent (for calls of in-memory connectors, which take as long as reading
    /// the clock, estimated from one call in 16).
    pub time: Duration,
}

impl OpStats {
    fn add(&mut self, bytes: u64, elapsed: Duration) {
        self.count += 1;
        self.bytes += bytes;
        self.time += elapsed;
    }

    /// Mean time per operation, zero when none ran.
    pub fn mean(&self) -> Duration {
        if self.count == 0 {
            Duration::ZERO
        } else {
            self.time / self.count as u32
        }
    }
}

#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) put: OpCounter,
    pub(crate) get: OpCounter,
    pub(crate) exists: OpCounter,
    pub(crate) evict: OpCounter,
    pub(crate) resolve: OpCounter,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
    /// Per-key figures, when the store was built to keep them.
    pub(crate) per_key: Option<Mutex<HashMap<Key, KeyMetrics>>>,
}

/// Which operation a per-key record is of.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    Put,
    Get,
    Exists,
    Evict,
    Resolve,
}

/// What a store did with one key (see [`crate::StoreBuilder::key_metrics`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct KeyMetrics {
    /// Connector puts of it (a batch counts once per object, its time shared out).
    pub put: OpStats,
    /// Connector reads of it.
    pub get: OpStats,
    /// Existence checks.
    pub exists: OpStats,
    /// Evictions.
    pub evict: OpStats,
    /// Proxy resolves (cache hits included).
    pub resolve: OpStats,
}

impl Metrics {
    /// Metrics that also keep per-key figures.
    pub(crate) fn with_key_metrics() -> Self {
        Metrics {
            per_key: Some(Mutex::default()),
            ..Metrics::default()
        }
    }

    /// Record `op` on `key`, when per-key figures are kept.
    pub(crate) fn record_key(&self, key: &Key, op: Op, bytes: u64, elapsed: Duration) {
        let Some(m) = &self.per_key else { return };
        let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
        let k = m.entry(key.clone()).or_default();
        let stats = match op {
            Op::Put => &mut k.put,
            Op::Get => &mut k.get,
            Op::Exists => &mut k.exists,
            Op::Evict => &mut k.evict,
            Op::Resolve => &mut k.resolve,
        };
        stats.add(bytes, elapsed);
    }

    /// The per-key figures of `key`; `None` when none are kept or the key was never used.
    pub(crate) fn key(&self, key: &Key) -> Option<KeyMetrics> {
        let m = self.per_key.as_ref()?;
        m.lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }

    /// Every key's figures, emptying the table.
    pub(crate) fn take_keys(&self) -> HashMap<Key, KeyMetrics> {
        self.per_key
            .as_ref()
            .map(|m| std::mem::take(&mut *m.lock().unwrap_or_else(|e| e.into_inner())))
            .unwrap_or_default()
    }

    pub(crate) fn hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn miss(&self) {
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StoreMetrics {
        StoreMetrics {
            put: self.put.snapshot(),
            get: self.get.snapshot(),
            exists: self.exists.snapshot(),
            evict: self.evict.snapshot(),
            resolve: self.resolve.snapshot(),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            cache_misses: self.cache_misses.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of a store's metrics.
///
/// `get` counts connector reads (cache misses of `get` and resolves); `resolve` counts proxy
/// resolves, whether served from cache or not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StoreMetrics {
    /// Connector puts (a batch counts once, with all its bytes).
    pub put: OpStats,
    /// Reads from the connector.
    pub get: OpStats,
    /// Existence checks.
    pub exists: OpStats,
    /// Evictions.
    pub evict: OpStats,
    /// Proxy resolves.
    pub resolve: OpStats,
    /// Gets and resolves served from the cache.
    pub cache_hits: u64,
    /// Gets and resolves that went to the connector.
    pub cache_misses: u64,
}
