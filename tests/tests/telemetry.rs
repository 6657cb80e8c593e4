//! Traces across OS processes, checked on the spans an OTLP/gRPC receiver in this test gets:
//! proxies made here and resolved by another process, a gRPC client here and the
//! `proxystore-server` binary, an apalis producer here and a worker process.
//!
//! This process exports with `proxystore_telemetry::Config` pointed at the receiver; the child
//! processes with `proxystore_telemetry::init` and `OTEL_EXPORTER_OTLP_ENDPOINT`, as any
//! deployment would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use apalis_core::backend::TaskSink;
use apalis_core::backend::ext::BackendExt;
use apalis_redis::{Config as QueueConfig, RedisStorage};
use proxystore::connector::file::FileConnector;
use proxystore::connector::grpc::GrpcConnector;
use proxystore::{Proxy, Store};
use proxystore_apalis::ProxyCodec;
use proxystore_middleware::{ArgumentPolicy, TaskCodec};
use proxystore_telemetry::receiver::{OtlpReceiver, ReceivedSpan};
use proxystore_telemetry::{Config, TelemetryGuard};
use proxystore_tests::process::ChildGuard;
use proxystore_tests::redis_server::RedisServer;
use tracing::Instrument;

const NODE: &str = env!("CARGO_BIN_EXE_otel-node");
const WAIT: Duration = Duration::from_secs(30);

fn setup() -> (OtlpReceiver, TelemetryGuard) {
    let receiver = OtlpReceiver::start().unwrap();
    let guard = Config::from_env("telemetry-test")
        .endpoint(receiver.endpoint())
        .without_logs()
        .sample_all()
        .install()
        .unwrap();
    (receiver, guard)
}

/// A command that exports its spans to `receiver` promptly.
fn exporting(program: impl Into<PathBuf>, receiver: &OtlpReceiver) -> Command {
    let mut cmd = Command::new(program.into());
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_TRACES_SAMPLER")
        .env_remove("OTEL_SDK_DISABLED");
    cmd
}

fn run_json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", out.status);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn of<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect()
}

fn count(service: &'static str, name: &'static str, n: usize) -> impl Fn(&[ReceivedSpan]) -> bool {
    move |spans| of(spans, service, name).len() >= n
}

/// The spans of gRPC calls on one side (OTLP kind 3 client, 2 server), exported under their
/// `otel.name`, `service/method`.
fn rpc<'a>(spans: &'a [ReceivedSpan], service: &str, kind: i32) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.service == service && s.kind == kind && s.attr("rpc.system") == Some("grpc"))
        .collect()
}

fn parent_of<'a>(spans: &'a [ReceivedSpan], child: &ReceivedSpan) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.is_parent_of(child))
        .unwrap_or_else(|| panic!("no parent of {child} in {spans:#?}"))
}

#[test]
fn proxies_resolved_in_another_process_link_to_their_puts() {
    let (receiver, guard) = setup();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new("otel-xproc", FileConnector::new(dir.path()).unwrap());
    let proxies: Vec<Proxy<Vec<u64>>> = proxystore::runtime::block_on({
        let store = store.clone();
        async move {
            let mut out = Vec::new();
            for i in 0..3u64 {
                out.push(store.proxy(&vec![i; 100_000]).await.unwrap());
            }
            out
        }
        .instrument(tracing::info_span!("producer"))
    })
    .unwrap();
    let file = dir.path().join("proxies.bin");
    std::fs::write(&file, postcard::to_stdvec(&proxies).unwrap()).unwrap();

    let out = run_json(
        exporting(NODE, &receiver)
            // The transfer inside a resolve is a debug span.
            .env("PROXYSTORE_TRACE_FILTER", "info,proxystore::store=debug")
            .arg("consume")
            .arg(&file),
    );
    assert_eq!(out["sums"], serde_json::json!([0, 100_000, 200_000]));
    guard.flush().unwrap();

    let consumer_svc = "otel-node-consume";
    let spans = receiver
        .wait_for(WAIT, |s| {
            count(consumer_svc, "proxystore.resolve", 3)(s)
                && count(consumer_svc, "proxystore.get", 3)(s)
                && count("telemetry-test", "proxystore.put", 3)(s)
        })
        .unwrap_or_else(|s| panic!("spans missing: {s:#?}"));
    let producer = &of(&spans, "telemetry-test", "producer")[0];
    let consumer = &of(&spans, consumer_svc, "consumer")[0];
    assert_ne!(producer.trace_id, consumer.trace_id);
    let puts = of(&spans, "telemetry-test", "proxystore.put");
    for p in &proxies {
        let key = p.key().unwrap().as_str();
        let put = puts
            .iter()
            .find(|s| s.attr("key") == Some(key))
            .unwrap_or_else(|| panic!("no put of {key}"));
        assert!(producer.is_parent_of(put));
        assert_eq!(put.attr("connector"), Some("file"));
        let resolve = of(&spans, consumer_svc, "proxystore.resolve")
            .into_iter()
            .find(|s| s.attr("key") == Some(key))
            .unwrap_or_else(|| panic!("no resolve of {key}"));
        assert!(consumer.is_parent_of(resolve), "{resolve}");
        assert!(
            resolve.links_to(put),
            "the resolve in the consumer process links to the put in this one: {resolve}"
        );
        assert_eq!(resolve.attr("store"), Some("otel-xproc"));
        assert_eq!(resolve.attr("bytes"), put.attr("bytes"));
        assert_eq!(resolve.attr("outcome"), Some("ok"));
        let get = of(&spans, consumer_svc, "proxystore.get")
            .into_iter()
            .find(|s| s.attr("key") == Some(key))
            .unwrap();
        assert!(resolve.is_parent_of(get));
    }
}

/// A consumer process waits on a distributed future before this process sets it: its wait is
/// a span of its own, linked to the span of the `set`.
#[test]
fn a_future_waited_on_in_another_process_links_its_wait_to_the_set() {
    let (receiver, guard) = setup();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new("otel-future", FileConnector::new(dir.path()).unwrap());
    let (promise, proxy) = proxystore::runtime::block_on({
        let store = store.clone();
        async move { store.future::<Vec<u64>>().await.unwrap() }
    })
    .unwrap();
    let file = dir.path().join("future.bin");
    std::fs::write(&file, postcard::to_stdvec(&proxy).unwrap()).unwrap();
    let mut node = exporting(NODE, &receiver)
        .arg("await-future")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(node.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "waiting");
    std::thread::sleep(Duration::from_millis(300));
    proxystore::runtime::block_on(
        async move { promise.set(&vec![7u64; 1000]).await.unwrap() }
            .instrument(tracing::info_span!("producer")),
    )
    .unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(node.wait().unwrap().success());
    let report: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(report["sum"], 7000);
    guard.flush().unwrap();

    let consumer_svc = "otel-node-await-future";
    let spans = receiver
        .wait_for(WAIT, |s| {
            count(consumer_svc, "proxystore.future.wait", 1)(s)
                && count("telemetry-test", "proxystore.future.set", 1)(s)
        })
        .unwrap_or_else(|s| panic!("spans missing: {s:#?}"));
    let set = of(&spans, "telemetry-test", "proxystore.future.set")[0];
    let producer = of(&spans, "telemetry-test", "producer")[0];
    assert!(producer.is_parent_of(set));
    let wait = of(&spans, consumer_svc, "proxystore.future.wait")[0];
    assert!(wait.links_to(set), "the wait links to the set: {wait}");
    assert_eq!(wait.attr("key"), Some(proxy.key().unwrap().as_str()));
    // The wait sits under the consumer's resolve, under its own `consumer` span.
    let consumer = of(&spans, consumer_svc, "consumer")[0];
    assert_eq!(consumer.trace_id, parent_of(&spans, wait).trace_id);
}

/// Streams: objects sent in this process, consumed by another over Redis Streams. Each
/// consumer's resolve links to the `proxystore.stream.send` span of its object: through the
/// put inside it when the object is stored at its send (topic `t`), or straight to it when a
/// small object of a batch is stored later, with its batch (topic `b`).
#[test]
fn a_stream_consumer_in_another_process_links_its_resolves_to_the_sends() {
    use proxystore_stream::broker::redis_streams::{RedisStreamsBroker, RedisStreamsConfig};
    use proxystore_stream::{BatchPolicy, Metadata, StreamProducer};
    let (receiver, guard) = setup();
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new("otel-stream", FileConnector::new(dir.path()).unwrap());
    let prefix = format!("otel-{}:", proxystore::Key::random());
    proxystore::runtime::block_on({
        let (url, prefix) = (redis.url(), prefix.clone());
        async move {
            let mut config = RedisStreamsConfig::new(url);
            config.prefix = prefix;
            let broker = std::sync::Arc::new(RedisStreamsBroker::connect(config).await.unwrap());
            let one =
                StreamProducer::<Vec<u64>>::with_broker(broker.clone()).with_store(store.clone());
            let batched = StreamProducer::<Vec<u64>>::with_broker(broker)
                .with_store(store)
                .batch(BatchPolicy {
                    max_events: 3,
                    max_delay: std::time::Duration::from_secs(60),
                });
            for i in 1..=3u64 {
                let value = vec![i; 1000];
                one.send("t", &value, Metadata::new()).await.unwrap();
                batched.send("b", &value, Metadata::new()).await.unwrap();
            }
            one.close("t").await.unwrap();
            batched.close("b").await.unwrap();
        }
        .instrument(tracing::info_span!("producer"))
    })
    .unwrap();
    for topic in ["t", "b"] {
        let out = run_json(
            exporting(NODE, &receiver)
                .arg("stream-consume")
                .arg(redis.url())
                .arg(&prefix)
                .arg(topic),
        );
        assert_eq!(out["sums"], serde_json::json!([1000, 2000, 3000]));
    }
    guard.flush().unwrap();

    let consumer_svc = "otel-node-stream-consume";
    let spans = receiver
        .wait_for(WAIT, |s| {
            count(consumer_svc, "proxystore.resolve", 6)(s)
                && count("telemetry-test", "proxystore.stream.send", 6)(s)
                && count("telemetry-test", "proxystore.put", 4)(s)
        })
        .unwrap_or_else(|s| panic!("spans missing: {s:#?}"));
    let producer = of(&spans, "telemetry-test", "producer")[0];
    let mut topics = Vec::new();
    for resolve in of(&spans, consumer_svc, "proxystore.resolve") {
        let linked = spans
            .iter()
            .find(|s| s.service == "telemetry-test" && resolve.links_to(s))
            .unwrap_or_else(|| panic!("the resolve links to no span of the producer: {resolve}"));
        let send = match linked.name.as_str() {
            "proxystore.put" => parent_of(&spans, linked),
            _ => linked,
        };
        assert_eq!(send.name, "proxystore.stream.send", "{linked}");
        assert!(producer.is_parent_of(send));
        topics.push(send.attr("topic").unwrap().to_owned());
    }
    topics.sort();
    assert_eq!(topics, ["b", "b", "b", "t", "t", "t"]);
}

/// The `proxystore-server` binary as a child exporting to `receiver`; its URL.
fn traced_server(receiver: &OtlpReceiver) -> (ChildGuard, String) {
    let bin = proxystore_tests::grpc_server::server_binary().unwrap();
    let mut cmd = exporting(bin, receiver);
    cmd.args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = ChildGuard::spawn("proxystore-server", &mut cmd).unwrap();
    let stdout = child.child_mut().stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().unwrap().unwrap();
    std::thread::spawn(move || for _ in lines {});
    let url = line
        .strip_prefix("proxystore-server listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, url)
}

#[test]
fn grpc_client_and_server_spans_join_one_trace() {
    let (receiver, guard) = setup();
    let (_server, url) = traced_server(&receiver);
    let store = Store::new("otel-grpc", GrpcConnector::new(url).unwrap());
    let (key, len) = proxystore::runtime::block_on({
        let store = store.clone();
        async move {
            let proxy = store.proxy(&vec![5u8; 2 << 20]).await.unwrap();
            let fresh = Proxy::<Vec<u8>>::from_reference(proxy.reference().unwrap().clone());
            store.clear_cache();
            let len = fresh.resolve().await.unwrap().len();
            (proxy.key().unwrap().clone(), len)
        }
        .instrument(tracing::info_span!("client work"))
    })
    .unwrap();
    assert_eq!(len, 2 << 20);
    guard.flush().unwrap();

    let server_svc = "proxystore-server";
    let spans = receiver
        .wait_for(WAIT, |s| {
            rpc(s, server_svc, 2).len() >= 2 && rpc(s, "telemetry-test", 3).len() >= 2
        })
        .unwrap_or_else(|s| panic!("spans missing: {s:#?}"));
    let work = &of(&spans, "telemetry-test", "client work")[0];
    // The transfer inside a resolve is a debug span: the Get call is the resolve's child.
    for (op, method) in [("proxystore.put", "Put"), ("proxystore.resolve", "Get")] {
        let server = rpc(&spans, server_svc, 2)
            .into_iter()
            .find(|s| s.attr("rpc.method") == Some(method))
            .unwrap_or_else(|| panic!("no server span of {method}"));
        let client = parent_of(&spans, server);
        assert_eq!(client.service, "telemetry-test", "{client}");
        assert_eq!(
            client.name,
            format!("proxystore_rs.v1.StoreService/{method}")
        );
        assert_eq!(client.kind, 3);
        assert_eq!(server.name, client.name);
        assert_eq!(client.attr("rpc.method"), Some(method));
        assert_eq!(
            server.trace_id, work.trace_id,
            "one trace across the processes"
        );
        assert_eq!(server.attr("key"), Some(key.as_str()));
        assert_eq!(server.attr("rpc.grpc.status_code"), Some("0"));
        let operation = parent_of(&spans, client);
        assert_eq!(operation.name, op);
        assert_eq!(operation.attr("store"), Some("otel-grpc"));
        assert_eq!(operation.attr("connector"), Some("grpc"));
    }
}

/// The task as the producer writes it (the worker's `Job` has the same fields).
#[derive(serde::Serialize, serde::Deserialize)]
struct JobOut {
    index: u32,
    data: Vec<f64>,
}

#[test]
fn apalis_tasks_continue_the_trace_of_the_code_that_enqueued_them() {
    let (receiver, guard) = setup();
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store_name = "otel-apalis";
    let queue = format!("otel{}", std::process::id());
    let store = Store::new(store_name, FileConnector::new(dir.path()).unwrap());
    proxystore::register_store(&store).unwrap();
    let codec = ProxyCodec::new(
        TaskCodec::new(ArgumentPolicy::with_store(store_name)).with_store(store.clone()),
    )
    .named("sum");
    proxystore::runtime::block_on({
        let url = redis.url();
        let queue = queue.clone();
        async move {
            let mut storage = RedisStorage::<JobOut>::new(proxystore_apalis::connect(&url).await?)
                .with_config(QueueConfig::default().queue(&queue))
                .with_codec(codec);
            for index in 0..2u32 {
                let job = JobOut {
                    index,
                    data: vec![f64::from(index) + 0.5; 200_000],
                };
                storage
                    .push(job)
                    .instrument(tracing::info_span!("enqueue", index))
                    .await?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }
    })
    .unwrap()
    .unwrap();

    let out = run_json(
        exporting(NODE, &receiver)
            .args(["apalis-work", &redis.url(), &queue, store_name])
            .arg(dir.path())
            .arg("2"),
    );
    assert_eq!(
        out["sums"],
        serde_json::json!([[0, 100_000.0], [1, 300_000.0]])
    );
    guard.flush().unwrap();

    let worker = "otel-node-apalis-work";
    let spans = receiver
        .wait_for(WAIT, |s| {
            count(worker, "sum", 2)(s)
                && count(worker, "proxystore.evict", 2)(s)
                && count(worker, "sum body", 2)(s)
        })
        .unwrap_or_else(|s| panic!("spans missing: {s:#?}"));
    for enqueue in of(&spans, "telemetry-test", "enqueue") {
        let encode = spans
            .iter()
            .find(|s| s.name == "encode sum" && enqueue.is_parent_of(s))
            .unwrap_or_else(|| panic!("no encode under {enqueue}"));
        let put = spans
            .iter()
            .find(|s| s.name == "proxystore.put" && encode.is_parent_of(s))
            .unwrap_or_else(|| panic!("no put under {encode}"));
        let task = spans
            .iter()
            .find(|s| s.name == "sum" && encode.is_parent_of(s))
            .unwrap_or_else(|| panic!("no task span continues {encode}: {spans:#?}"));
        assert_eq!(task.service, worker);
        assert_eq!(task.trace_id, enqueue.trace_id);
        assert_eq!(task.kind, 5);
        assert_eq!(task.attr("outcome"), Some("ok"));
        assert!(
            task.attr("task_id").is_some_and(|t| !t.is_empty()),
            "{task}"
        );
        let child = |name: &str| {
            spans
                .iter()
                .find(|s| s.name == name && task.is_parent_of(s))
                .unwrap_or_else(|| panic!("no {name} under {task}: {spans:#?}"))
        };
        let resolve = child("proxystore.resolve");
        assert!(resolve.links_to(put), "{resolve}");
        assert_eq!(resolve.attr("key"), put.attr("key"));
        let body = child("sum body");
        assert_eq!(body.attr("index"), enqueue.attr("index"));
        let evict = child("proxystore.evict");
        assert_eq!(evict.attr("key"), put.attr("key"));
    }
}
