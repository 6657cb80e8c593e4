//! What tracing costs a resolve: a 1 MiB object (a `Vec<f64>` in postcard) in a memory store
//! with the object cache off, so that every resolve fetches, checks the digest and decodes.
//! Three variants, one resolve of each in turn (rotating the order), many rounds:
//!
//! - `resolve_by_hand`: the connector's `get`, the digest check and the decode, written out;
//! - `resolve_traced_off`: `Proxy::resolve` under the process's own subscriber (the CLI's log
//!   subscriber, which exports nothing);
//! - `resolve_traced_otlp`: the same under `proxystore-telemetry`'s OpenTelemetry subscriber,
//!   every trace sampled and exported over OTLP/gRPC to a receiver in this process.
//!
//! A traced row's ratio is the median over the rounds of its time over the resolve by hand of
//! the same round (paired ratios): the three resolves of a round run within about a
//! millisecond, so a slow spell of the shared machine moves both sides of a ratio, where it
//! moves only the variants it happened to hit in a ratio of medians.
//!
//! The same method as `cargo bench -p proxystore-telemetry --bench resolve`, whose notes explain
//! the scoped dispatcher: it runs on a thread of its own, with a current-thread runtime, so
//! that the OpenTelemetry dispatcher is in scope wherever the resolve runs. It runs after every
//! other measurement, because it rebuilds `tracing`'s interest cache.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use proxystore::connector::memory::MemoryConnector;
use proxystore::{Proxy, Reference, Store};
use proxystore_telemetry::Config;
use proxystore_telemetry::receiver::OtlpReceiver;

use super::repeat::{Summary, percentile};
use super::store_ops::Row;

/// Rounds of the three variants.
const ROUNDS: usize = 1500;
const LEN: usize = (1 << 20) / 8;
/// What the rows are measured against.
pub(crate) const BY_HAND: &str = "resolve_by_hand";

/// The three variants' rows (the traced ones with their ratio to the resolve by hand). Blocks
/// for a few seconds: call it from a thread that may block.
pub(crate) fn measure() -> Result<Vec<Row>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    let receiver = OtlpReceiver::start().context("OTLP receiver")?;
    let (otel, guard) = Config::from_env("proxystore-bench")
        .endpoint(receiver.endpoint())
        .without_logs()
        .sample_all()
        .build()
        .context("OpenTelemetry subscriber")?;
    proxystore_telemetry::install_propagator();
    let name = "bench-tracing";
    let store = Store::builder(name, MemoryConnector::new(name))
        .cache_bytes(0)
        .build();
    proxystore::register_store(&store)?;
    let data: Vec<f64> = (0..LEN).map(|i| i as f64 * 0.5).collect();
    let result = (|| {
        let proxy = tracing::dispatcher::with_default(&otel, || {
            let _producer = tracing::info_span!("producer").entered();
            rt.block_on(store.proxy(&data))
        })?;
        let reference = proxy.reference().context("no reference")?.clone();
        // Resolve once in the OpenTelemetry scope with the interest cache rebuilt there, or the
        // resolve's callsites stay cached as disabled by the process's own subscriber.
        let consumer = tracing::dispatcher::with_default(&otel, || {
            tracing::callsite::rebuild_interest_cache();
            rt.block_on(Proxy::<Vec<f64>>::from_reference(reference.clone()).resolve())
                .map(|_| tracing::info_span!("consumer"))
        })?;
        let connector = store.connector().clone();
        let by_hand = || -> Result<Duration> {
            let start = Instant::now();
            let data = rt
                .block_on(connector.get(&reference.key))?
                .context("absent")?;
            ensure!(
                reference.digest.is_some_and(|d| d.matches(&data)),
                "digest mismatch"
            );
            black_box(
                reference
                    .codec
                    .decode::<Vec<f64>>(data)
                    .map_err(|e| anyhow::anyhow!("decode: {e}"))?,
            );
            Ok(start.elapsed())
        };
        let resolve = |r: &Reference| -> Result<Duration> {
            // A fresh proxy, as received from another process; made before the clock starts.
            let p = Proxy::<Vec<f64>>::from_reference(r.clone());
            let start = Instant::now();
            black_box(rt.block_on(p.resolve())?.len());
            Ok(start.elapsed())
        };
        let mut times: [Vec<Duration>; 3] = Default::default();
        for round in 0..ROUNDS {
            for i in 0..3 {
                let k = (i + round) % 3;
                times[k].push(match k {
                    0 => by_hand()?,
                    1 => resolve(&reference)?,
                    _ => tracing::dispatcher::with_default(&otel, || {
                        consumer.in_scope(|| resolve(&reference))
                    })?,
                });
            }
        }
        guard.flush().context("flush the exporter")?;
        let received = receiver
            .spans()
            .iter()
            .filter(|s| s.name == "proxystore.resolve")
            .count();
        ensure!(
            received > ROUNDS,
            "the OTLP receiver got {received} resolve spans of {} traced resolves",
            ROUNDS + 1
        );
        let paired = |k: usize| {
            let mut ratios: Vec<f64> = times[k]
                .iter()
                .zip(&times[0])
                .map(|(t, h)| t.as_secs_f64() / h.as_secs_f64().max(1e-9))
                .collect();
            ratios.sort_unstable_by(f64::total_cmp);
            percentile(&ratios, 50.0)
        };
        let ratios = [paired(1), paired(2)];
        let [hand, off, otlp] = times.map(|t| Summary::of(&t));
        // The object's size (its encoding adds a few bytes of length).
        let size = (LEN * 8) as u64;
        let mut rows = vec![Row::new("memory", BY_HAND, size, hand)];
        for ((op, s), ratio) in [("resolve_traced_off", off), ("resolve_traced_otlp", otlp)]
            .into_iter()
            .zip(ratios)
        {
            let mut row = Row::new("memory", op, size, s);
            row.baseline = Some(format!("memory/{BY_HAND}"));
            row.ratio = Some(ratio);
            rows.push(row);
        }
        Ok(rows)
    })();
    proxystore::unregister_store(name);
    result
}
