//! What tracing costs a proxy's resolve: a 1 MiB object (a `Vec<f64>` in postcard) in a memory
//! store with the object cache off, so every resolve fetches, checks the digest and decodes.
//!
//! - `by_hand`: the connector's `get`, the digest check and the decode, written out;
//! - `resolve_no_subscriber`: `Proxy::resolve` of a fresh proxy, with no `tracing` subscriber
//!   (the W3C propagator installed, the reference carrying a `traceparent`);
//! - `resolve_otlp_sampled`: the same with `proxystore-telemetry`'s subscriber (OpenTelemetry
//!   layer, every trace sampled) exporting over OTLP/gRPC to a receiver in this process.
//!
//! Criterion measures each; then interleaved rounds (one resolve of each variant in turn,
//! thousands of times) give medians and ratios to `by_hand` that load from other processes on a
//! busy machine affects less, printed at the end.
//!
//! The OpenTelemetry subscriber is used as a scoped dispatcher (`with_default`), the only one in
//! the process. `tracing` then decides whether a callsite is enabled from whichever dispatcher
//! is in scope when the callsite is first hit (and when interest is rebuilt), so the set-up
//! resolves once and rebuilds the interest cache inside its scope; otherwise the resolve spans
//! would be cached as disabled and never reach the exporter.
//!
//! Run: `cargo bench -p proxystore-telemetry --bench resolve`.

// A benchmark that cannot set itself up has nothing to measure: failing loudly is right.
#![allow(clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use proxystore::connector::memory::MemoryConnector;
use proxystore::{Connector, Proxy, Reference, Store};
use proxystore_telemetry::Config;
use proxystore_telemetry::receiver::OtlpReceiver;

const LEN: usize = (1 << 20) / 8;

/// Resolves run with the OpenTelemetry subscriber (each exports one span, with a link).
static TRACED: AtomicU64 = AtomicU64::new(0);

struct Setup {
    rt: tokio::runtime::Runtime,
    store: Store,
    reference: Reference,
    otel: tracing::Dispatch,
    /// The span the traced resolves run in, as a task's span would be.
    consumer: tracing::Span,
    guard: proxystore_telemetry::TelemetryGuard,
    receiver: OtlpReceiver,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let receiver = OtlpReceiver::start().expect("receiver");
    let (otel, guard) = Config::from_env("resolve-bench")
        .endpoint(receiver.endpoint())
        .without_logs()
        .sample_all()
        .build()
        .expect("telemetry");
    proxystore_telemetry::install_propagator();
    let store = Store::builder("bench-otel", MemoryConnector::new("bench-otel"))
        .cache_bytes(0)
        .build();
    proxystore::register_store(&store).expect("register");
    let data: Vec<f64> = (0..LEN).map(|i| i as f64 * 0.5).collect();
    let proxy = tracing::dispatcher::with_default(&otel, || {
        let _producer = tracing::info_span!("producer").entered();
        rt.block_on(store.proxy(&data)).expect("put")
    });
    let reference = proxy.reference().expect("reference").clone();
    assert!(reference.size >= 1 << 20 && !reference.traceparent.is_empty());
    let consumer = tracing::dispatcher::with_default(&otel, || {
        tracing::callsite::rebuild_interest_cache();
        rt.block_on(resolve(&Proxy::from_reference(reference.clone())));
        tracing::info_span!("consumer")
    });
    Setup {
        rt,
        store,
        reference,
        otel,
        consumer,
        guard,
        receiver,
    }
}

async fn by_hand(connector: &Arc<dyn Connector>, r: &Reference) -> Vec<f64> {
    let data = connector.get(&r.key).await.expect("get").expect("present");
    assert!(r.digest.expect("digest").matches(&data));
    r.codec.decode::<Vec<f64>>(data).expect("decode")
}

async fn resolve(p: &Proxy<Vec<f64>>) -> usize {
    p.resolve().await.expect("resolve").len()
}

#[derive(Clone, Copy, Debug)]
enum Variant {
    ByHand,
    NoSubscriber,
    OtlpSampled,
}

fn run(s: &Setup, v: Variant, iters: u64) -> Duration {
    let connector = s.store.connector().clone();
    // Fresh proxies, as received from another process; made before the clock starts, as
    // deserializing them is not part of resolving.
    let proxies: Vec<Proxy<Vec<f64>>> = match v {
        Variant::ByHand => Vec::new(),
        _ => (0..iters)
            .map(|_| Proxy::from_reference(s.reference.clone()))
            .collect(),
    };
    let go = move || {
        s.rt.block_on(async {
            let start = Instant::now();
            match v {
                Variant::ByHand => {
                    for _ in 0..iters {
                        black_box(by_hand(&connector, &s.reference).await);
                    }
                }
                _ => {
                    // Each proxy (and the object it resolved) is dropped after use, as the
                    // by-hand variant drops its object.
                    for p in proxies {
                        black_box(resolve(&p).await);
                    }
                }
            }
            start.elapsed()
        })
    };
    match v {
        Variant::OtlpSampled => {
            TRACED.fetch_add(iters, Ordering::Relaxed);
            tracing::dispatcher::with_default(&s.otel, || s.consumer.in_scope(go))
        }
        _ => go(),
    }
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let mut g = c.benchmark_group("resolve_1MiB");
    g.measurement_time(Duration::from_secs(8));
    for v in [Variant::ByHand, Variant::NoSubscriber, Variant::OtlpSampled] {
        let name = match v {
            Variant::ByHand => "by_hand",
            Variant::NoSubscriber => "resolve_no_subscriber",
            Variant::OtlpSampled => "resolve_otlp_sampled",
        };
        g.bench_function(name, |b| b.iter_custom(|iters| run(&s, v, iters)));
    }
    g.finish();
    ratios(&s);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Interleaved rounds: one resolve of each variant in turn; medians of the single times.
fn ratios(s: &Setup) {
    const ROUNDS: usize = 3000;
    const PER_ROUND: u64 = 1;
    let variants = [Variant::ByHand, Variant::NoSubscriber, Variant::OtlpSampled];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..ROUNDS {
        for i in 0..variants.len() {
            // Rotate the order so that no variant always runs after the same one.
            let k = (i + round) % variants.len();
            let t = run(s, variants[k], PER_ROUND);
            times[k].push(t.as_secs_f64() * 1e6 / PER_ROUND as f64);
        }
    }
    let m: Vec<f64> = times.into_iter().map(median).collect();
    s.guard.flush().expect("flush");
    let resolves = TRACED.load(Ordering::Relaxed);
    let received = s
        .receiver
        .spans()
        .iter()
        .filter(|sp| sp.name == "proxystore.resolve")
        .count();
    println!();
    println!("resolve of 1 MiB, medians of {ROUNDS} interleaved rounds:");
    println!("  by hand (get + digest + decode): {:8.1} us", m[0]);
    println!(
        "  resolve, no subscriber:          {:8.1} us  ratio {:.4}",
        m[1],
        m[1] / m[0]
    );
    println!(
        "  resolve, OTLP, all sampled:      {:8.1} us  ratio {:.4}",
        m[2],
        m[2] / m[0]
    );
    println!(
        "  traced resolves: {resolves}, resolve spans received by the OTLP receiver: {received}"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
