//! The spans of store operations, exported over OTLP/gRPC to a receiver on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use proxystore::connector::memory::MemoryConnector;
use proxystore::{Proxy, Store};
use proxystore_telemetry::receiver::{OtlpReceiver, ReceivedSpan};
use proxystore_telemetry::{Config, TelemetryGuard};
use tracing::Instrument;

/// Exports the store's `debug` spans too (the transfer inside a resolve).
fn setup(service: &str) -> (OtlpReceiver, TelemetryGuard) {
    let receiver = OtlpReceiver::start().unwrap();
    let mut config = Config::from_env(service);
    config.trace_filter = "info,proxystore::store=debug".to_owned();
    let guard = config
        .endpoint(receiver.endpoint())
        .without_logs()
        .sample_all()
        .install()
        .unwrap();
    assert!(guard.is_exporting());
    (receiver, guard)
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one span {name} expected in {spans:#?}");
    found[0]
}

fn has(names: &'static [&'static str]) -> impl Fn(&[ReceivedSpan]) -> bool {
    move |spans| names.iter().all(|n| spans.iter().any(|s| s.name == *n))
}

#[test]
fn put_and_resolve_spans_carry_attributes_parents_and_the_link() {
    let (receiver, guard) = setup("export-test");
    let store = Store::new("otel-store", MemoryConnector::new("otel-store"));
    proxystore::register_store(&store).unwrap();
    let data: Vec<u64> = (0..10_000).collect();
    let made = {
        let store = store.clone();
        proxystore::runtime::block_on(
            async move { store.proxy(&data).await }.instrument(tracing::info_span!("producer")),
        )
        .unwrap()
        .unwrap()
    };
    let reference = made.reference().unwrap().clone();
    assert!(
        reference.traceparent.starts_with("00-") && reference.traceparent.ends_with("-01"),
        "{reference:?}"
    );

    // As in another process: a proxy from the reference alone, resolved by first use.
    let received: Proxy<Vec<u64>> = Proxy::from_reference(reference.clone());
    store.clear_cache();
    tracing::info_span!("consumer").in_scope(|| assert_eq!(received.len(), 10_000));
    guard.flush().unwrap();

    let spans = receiver
        .wait_for(
            Duration::from_secs(10),
            has(&[
                "producer",
                "consumer",
                "proxystore.put",
                "proxystore.resolve",
                "proxystore.get",
            ]),
        )
        .unwrap_or_else(|s| panic!("spans missing: {s:#?}"));
    for s in &spans {
        assert_eq!(s.service, "export-test");
        assert!(
            ["producer", "consumer"].contains(&s.name.as_str())
                || s.name.starts_with("proxystore."),
            "unexpected span (the exporter's own transport must not be traced): {s}"
        );
    }
    let producer = one(&spans, "producer");
    let consumer = one(&spans, "consumer");
    let put = one(&spans, "proxystore.put");
    let resolve = one(&spans, "proxystore.resolve");
    let get = one(&spans, "proxystore.get");

    assert!(producer.is_parent_of(put), "{put}");
    assert_eq!(put.attr("store"), Some("otel-store"));
    assert_eq!(put.attr("connector"), Some("memory"));
    assert_eq!(put.attr("key"), Some(reference.key.as_str()));
    assert_eq!(put.attr("bytes"), Some(reference.size.to_string().as_str()));
    assert_eq!(put.attr("outcome"), Some("ok"));
    assert_eq!(
        reference.traceparent,
        format!("00-{}-{}-01", put.trace_id, put.span_id),
        "the reference carries the put span's context"
    );

    assert!(consumer.is_parent_of(resolve), "{resolve}");
    assert_ne!(resolve.trace_id, put.trace_id, "the consumer's own trace");
    assert!(resolve.links_to(put), "resolve links to the put: {resolve}");
    assert_eq!(resolve.attr("key"), Some(reference.key.as_str()));
    assert_eq!(resolve.attr("cache_hit"), Some("false"));
    assert_eq!(resolve.attr("type"), Some("alloc::vec::Vec<u64>"));
    assert_eq!(resolve.attr("outcome"), Some("ok"));
    assert_eq!(resolve.kind, 1);

    assert!(
        resolve.is_parent_of(get),
        "the transfer is inside the resolve: {get}"
    );
    assert_eq!(get.attr("bytes"), Some(reference.size.to_string().as_str()));
    assert!(get.start_unix_nano >= resolve.start_unix_nano);
    assert!(get.end_unix_nano <= resolve.end_unix_nano);
}

#[test]
fn failures_set_the_error_status() {
    let (receiver, guard) = setup("export-errors");
    let store = Store::new("otel-errors", MemoryConnector::new("otel-errors"));
    let proxy = proxystore::runtime::block_on({
        let store = store.clone();
        async move {
            let p = store.proxy(&String::from("gone")).await.unwrap();
            store.evict(p.key().unwrap()).await.unwrap();
            p
        }
    })
    .unwrap();
    let err = proxy.try_get().unwrap_err();
    assert!(err.is_not_found(), "{err}");
    guard.flush().unwrap();
    let spans = receiver
        .wait_for(
            Duration::from_secs(10),
            has(&["proxystore.resolve", "proxystore.evict", "proxystore.get"]),
        )
        .unwrap_or_else(|s| panic!("spans missing: {s:#?}"));
    let resolve = one(&spans, "proxystore.resolve");
    assert_eq!(resolve.status_code, 2, "{resolve}");
    assert!(resolve.status_message.contains("not found"), "{resolve}");
    assert_eq!(resolve.attr("outcome"), Some("error"));
    assert_eq!(resolve.attr("error.type"), Some("NotFound"));
    let get = one(&spans, "proxystore.get");
    assert_eq!(get.status_code, 2);
    assert!(resolve.is_parent_of(get));
    let evict = one(&spans, "proxystore.evict");
    assert_eq!(evict.status_code, 0, "{evict}");
    assert_eq!(evict.attr("outcome"), Some("ok"));
}
