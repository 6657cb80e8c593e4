//! Trace context that travels: through a task document (the middleware), and through gRPC
//! metadata (connector to server), checked on the spans an OTLP receiver gets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use proxystore::Store;
use proxystore::connector::memory::MemoryConnector;
use proxystore_middleware::{ArgumentPolicy, ResolveLayer, TaskCodec, TaskPayload};
use proxystore_telemetry::receiver::{OtlpReceiver, ReceivedSpan};
use proxystore_telemetry::{Config, TelemetryGuard};
use tower::{Layer, Service, ServiceExt, service_fn};

fn setup(service: &str) -> (OtlpReceiver, TelemetryGuard) {
    let receiver = OtlpReceiver::start().unwrap();
    let guard = Config::from_env(service)
        .endpoint(receiver.endpoint())
        .without_logs()
        .sample_all()
        .install()
        .unwrap();
    (receiver, guard)
}

/// Wait (at most 30 s) until the spans received satisfy `done`, flushing as it goes: a span
/// that ends after a flush (the server's, which closes once its answer is sent) goes out with
/// the next one instead of the exporter's next scheduled batch.
fn wait_flushing(
    receiver: &OtlpReceiver,
    guard: &TelemetryGuard,
    done: impl Fn(&[ReceivedSpan]) -> bool,
) -> Result<Vec<ReceivedSpan>, Vec<ReceivedSpan>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        guard.flush().unwrap();
        match receiver.wait_for(Duration::from_millis(200), &done) {
            Err(spans) if Instant::now() >= deadline => return Err(spans),
            Err(_) => {}
            found => return found,
        }
    }
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// The spans of gRPC calls on one side (OTLP kind 3 client, 2 server), exported under their
/// `otel.name`, `service/method`.
fn rpc(spans: &[ReceivedSpan], kind: i32) -> Vec<&ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.kind == kind && s.attr("rpc.system") == Some("grpc"))
        .collect()
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one span {name} expected in {spans:#?}");
    found[0]
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Sum {
    values: Vec<u64>,
    scale: u64,
}

#[test]
fn a_task_continues_the_trace_of_the_code_that_encoded_it() {
    let (receiver, guard) = setup("middleware-context");
    let store = Store::new("ctx-mw", MemoryConnector::new("ctx-mw"));
    proxystore::register_store(&store).unwrap();
    let codec = TaskCodec::new(ArgumentPolicy::from_parts("ctx-mw".into(), 1024)).with_store(store);
    let task = Sum {
        values: (0..100_000).collect(),
        scale: 2,
    };
    let doc = tracing::info_span!("enqueue")
        .in_scope(|| codec.encode("sum", &task))
        .unwrap();
    assert_eq!(doc.proxied.len(), 1);
    let info = codec.task_info(&doc.bytes).unwrap();
    assert_eq!(info.task, "sum");
    let parent = info
        .trace
        .clone()
        .expect("the document carries the producer's context");

    // The worker side, in a trace of its own until the task span joins the producer's.
    let mut svc = ResolveLayer::<Sum>::new(codec.clone()).layer(service_fn(|t: Sum| async move {
        let _inside = tracing::info_span!("task body").entered();
        Ok::<_, proxystore_middleware::MiddlewareError>(t.values.iter().sum::<u64>() * t.scale)
    }));
    let total = proxystore::runtime::block_on(async move {
        tracing::info_span!("worker loop")
            .in_scope(|| svc.ready())
            .await
            .unwrap()
            .call(TaskPayload::once(doc.bytes))
            .await
    })
    .unwrap()
    .unwrap();
    assert_eq!(total, 99_999 * 100_000);
    guard.flush().unwrap();

    let spans = receiver
        .wait_for(Duration::from_secs(10), |s| {
            ["sum", "proxystore.evict", "task body"]
                .iter()
                .all(|n| s.iter().any(|x| x.name == *n))
        })
        .unwrap_or_else(|s| panic!("spans missing: {s:#?}"));
    let enqueue = one(&spans, "enqueue");
    let encode = one(&spans, "encode sum");
    let put = one(&spans, "proxystore.put");
    let task = one(&spans, "sum");
    let resolve = one(&spans, "proxystore.resolve");
    let body = one(&spans, "task body");
    let evict = one(&spans, "proxystore.evict");

    assert!(enqueue.is_parent_of(encode));
    assert_eq!(encode.kind, 4, "producer");
    assert_eq!(encode.attr("proxied"), Some("1"));
    assert!(encode.is_parent_of(put));
    assert_eq!(
        parent.traceparent,
        format!("00-{}-{}-01", encode.trace_id, encode.span_id)
    );

    assert!(
        encode.is_parent_of(task),
        "task span continues the trace: {task}"
    );
    assert_eq!(task.kind, 5, "consumer");
    assert_eq!(task.attr("task"), Some("sum"));
    assert_eq!(task.attr("fetched"), Some("1"));
    assert_eq!(task.attr("outcome"), Some("ok"));
    assert!(task.is_parent_of(resolve), "{resolve}");
    assert!(resolve.links_to(put));
    assert!(task.is_parent_of(body));
    assert!(
        task.is_parent_of(evict),
        "cleanup is part of the task: {evict}"
    );
    assert_eq!(evict.attr("key"), put.attr("key"));
}

#[test]
fn grpc_calls_carry_context_to_the_server() {
    let (receiver, guard) = setup("grpc-context");
    let server = proxystore_server::spawn(proxystore_server::ServerConfig::default()).unwrap();
    let store = Store::builder("ctx-grpc", server.connector().unwrap())
        .cache_bytes(0)
        .build();
    let data: Vec<u8> = vec![7; 3 << 20];
    let (key, back) = proxystore::runtime::block_on({
        let store = store.clone();
        async move {
            let proxy = store.proxy(&data).await.unwrap();
            let key = proxy.key().unwrap().clone();
            store.clear_cache();
            let again =
                proxystore::Proxy::<Vec<u8>>::from_reference(proxy.reference().unwrap().clone());
            let len = again.resolve().await.unwrap().len();
            (key, len)
        }
    })
    .unwrap();
    assert_eq!(back, 3 << 20);
    // The Get stream's span ends with the body, after the client has its bytes.
    let spans = wait_flushing(&receiver, &guard, |s| {
        rpc(s, 2).len() >= 2
            && rpc(s, 3).len() >= 2
            && s.iter().any(|x| x.name == "proxystore.resolve")
    })
    .unwrap_or_else(|s| panic!("spans missing: {s:#?}"));
    let call = |kind: i32, method: &str| -> &ReceivedSpan {
        let all: Vec<_> = rpc(&spans, kind)
            .into_iter()
            .filter(|s| s.attr("rpc.method") == Some(method))
            .collect();
        assert_eq!(all.len(), 1, "{kind} {method} in {spans:#?}");
        assert_eq!(
            all[0].name,
            format!("proxystore_rs.v1.StoreService/{method}")
        );
        all[0]
    };
    let put = one(&spans, "proxystore.put");
    // The transfer inside a resolve is a debug span: the connector's call is the resolve's child.
    assert!(named(&spans, "proxystore.get").is_empty(), "{spans:#?}");
    let resolve = one(&spans, "proxystore.resolve");
    let client_put = call(3, "Put");
    let server_put = call(2, "Put");
    let client_get = call(3, "Get");
    let server_get = call(2, "Get");

    assert!(put.is_parent_of(client_put), "{client_put}");
    assert!(client_put.is_parent_of(server_put), "{server_put}");
    assert!(resolve.is_parent_of(client_get), "{client_get}");
    assert!(client_get.is_parent_of(server_get), "{server_get}");
    for s in [client_put, server_put, client_get, server_get] {
        assert_eq!(s.attr("rpc.system"), Some("grpc"));
        assert_eq!(s.attr("rpc.service"), Some("proxystore_rs.v1.StoreService"));
        assert_eq!(s.attr("rpc.grpc.status_code"), Some("0"), "{s}");
        assert_eq!(s.status_code, 0);
    }
    assert_eq!(server_put.attr("key"), Some(key.as_str()));
    assert_eq!(server_get.attr("key"), Some(key.as_str()));
    let size = put.attr("bytes").unwrap();
    assert_eq!(server_get.attr("bytes"), Some(size));
    assert!(
        server_get.end_unix_nano > server_get.start_unix_nano,
        "the server span covers the streamed body"
    );
    assert!(
        spans
            .iter()
            .all(|s| !s.attr("rpc.service").is_some_and(|v| v.contains("Health"))),
        "health checks are not traced"
    );

    // A call the server answers NOT_FOUND: an error for the client, not for the server.
    receiver.clear();
    let missing = proxystore::runtime::block_on({
        let store = store.clone();
        async move { store.get_bytes(&proxystore::Key::from("no-such-key")).await }
    })
    .unwrap()
    .unwrap();
    assert!(missing.is_none());
    let spans = wait_flushing(&receiver, &guard, |s| {
        !rpc(s, 2).is_empty() && !rpc(s, 3).is_empty()
    })
    .unwrap_or_else(|s| panic!("spans missing: {s:#?}"));
    let client = rpc(&spans, 3)[0];
    let server_span = rpc(&spans, 2)[0];
    assert_eq!(client.attr("rpc.method"), Some("Get"));
    assert_eq!(client.attr("rpc.grpc.status_code"), Some("5"));
    assert_eq!(client.status_code, 2);
    assert_eq!(server_span.attr("rpc.grpc.status_code"), Some("5"));
    assert_eq!(
        server_span.status_code, 0,
        "NOT_FOUND is not a server fault"
    );
    assert_eq!(
        one(&spans, "proxystore.get").attr("outcome"),
        Some("absent")
    );
    drop(server);
}
