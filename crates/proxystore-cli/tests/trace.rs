//! The demo's trace, as an OTLP collector receives it from `proxystore demo` run with
//! `OTEL_EXPORTER_OTLP_ENDPOINT`: what `docs/observability.md` shows in a dashboard.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use proxystore_telemetry::receiver::{OtlpReceiver, ReceivedSpan};

fn children<'a>(
    spans: &'a [ReceivedSpan],
    parent: &ReceivedSpan,
    name: &str,
) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.name == name && parent.is_parent_of(s))
        .collect()
}

#[test]
fn the_demo_is_one_trace_of_encodes_tasks_transfers_and_server_calls() {
    let receiver = OtlpReceiver::start().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_proxystore"))
        .args([
            "demo",
            "--tasks",
            "4",
            "--mib",
            "1",
            "--workers",
            "2",
            "--quiet",
        ])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_TRACES_SAMPLER")
        .env_remove("OTEL_SDK_DISABLED")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The process flushed its spans before exiting.
    let spans = receiver
        .wait_for(Duration::from_secs(10), |s| {
            s.iter().filter(|x| x.name == "map" && x.kind == 5).count() == 4
        })
        .unwrap_or_else(|s| panic!("spans missing: {s:#?}"));
    assert!(spans.iter().all(|s| s.service == "proxystore"));
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "proxystore demo")
        .collect();
    assert_eq!(roots.len(), 1);
    let demo = roots[0];
    assert!(
        spans.iter().all(|s| s.trace_id == demo.trace_id),
        "the whole run is one trace"
    );
    let encodes = children(&spans, demo, "encode map");
    assert_eq!(encodes.len(), 4);
    for encode in encodes {
        let put = children(&spans, encode, "proxystore.put");
        assert_eq!(put.len(), 1, "the samples argument is put: {encode}");
        let put = put[0];
        assert_eq!(put.attr("connector"), Some("grpc"));
        let client = children(&spans, put, "proxystore_rs.v1.StoreService/Put");
        assert_eq!(client.len(), 1);
        assert_eq!(
            children(&spans, client[0], "proxystore_rs.v1.StoreService/Put").len(),
            1,
            "the server's span of the call"
        );
        let task = children(&spans, encode, "map");
        assert_eq!(task.len(), 1, "the task continues its encode: {encode}");
        let task = task[0];
        let resolves = children(&spans, task, "proxystore.resolve");
        let resolve = resolves
            .iter()
            .find(|r| r.links_to(put))
            .unwrap_or_else(|| panic!("no resolve of the put {put} in {task}"));
        // The transfer inside a resolve is a debug span, not exported by default: the
        // connector's call is the resolve's own child.
        assert!(children(&spans, resolve, "proxystore.get").is_empty());
        assert_eq!(resolve.attr("bytes"), put.attr("bytes"));
        assert_eq!(
            children(&spans, resolve, "proxystore_rs.v1.StoreService/Get").len(),
            1
        );
        assert!(!children(&spans, task, "proxystore.evict").is_empty());
        let result = children(&spans, task, "encode map");
        assert_eq!(result.len(), 1, "the task encodes its result: {task}");
        let result_put = children(&spans, result[0], "proxystore.put");
        assert_eq!(result_put.len(), 1, "the result is put: {task}");
        // The reducer's read of the result links to the put that stored it.
        let read = spans
            .iter()
            .filter(|s| s.name == "proxystore.resolve" && s.links_to(result_put[0]))
            .collect::<Vec<_>>();
        assert_eq!(
            read.len(),
            1,
            "one read of the result put {}",
            result_put[0]
        );
        let reduce = spans.iter().find(|s| s.is_parent_of(read[0])).unwrap();
        assert_eq!(reduce.name, "reduce");
    }
    assert_eq!(children(&spans, demo, "reduce").len(), 4);
}
