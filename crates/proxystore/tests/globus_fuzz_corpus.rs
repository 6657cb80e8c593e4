//! Replays every file of the `globus_responses` fuzz corpus (`fuzz/corpus/globus_responses/`)
//! through the same function as the fuzz target: Globus Transfer API answers through the
//! connector's parsers.
//!
//! The seed files are answers shaped like those of the Transfer API v0.10 (and of the local
//! fake in `tests/src/globus_fake.rs`); `PROXYSTORE_WRITE_FUZZ_SEEDS=1` rewrites them
//! (`cargo nextest run -p proxystore --features globus --test globus_fuzz_corpus`).

#![cfg(feature = "globus")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../fuzz/src/globus_harness.rs"]
#[allow(unreachable_pub, dead_code)]
mod harness;

use std::path::{Path, PathBuf};

use proxystore::Error;
use proxystore::connector::globus::__fuzzing;
use serde_json::{Value, json};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/globus_responses")
}

const TASK: &str = "1d4e6a2c-5b7f-11ef-9f3a-0242ac110002";
const SUBMISSION: &str = "9c1e3f5a-5b7f-11ef-9f3a-0242ac110002";
const SRC: &str = "11111111-2222-3333-4444-555555555555";
const DST: &str = "66666666-7777-8888-9999-000000000000";

fn error_doc(code: &str, message: &str) -> Value {
    json!({"code": code, "message": message, "request_id": "abc123def", "resource": "/v0.10/task"})
}

fn task_doc(status: &str, fatal: Value) -> Value {
    json!({
        "DATA_TYPE": "task",
        "task_id": TASK,
        "type": "TRANSFER",
        "status": status,
        "label": "ProxyStore put 0f8e2d1c-aaaa-bbbb-cccc-000000000000",
        "source_endpoint_id": SRC,
        "destination_endpoint_id": DST,
        "files": 1,
        "fatal_error": fatal,
        "is_ok": status != "FAILED",
        "nice_status": if status == "ACTIVE" { Value::from("Queued") } else { Value::Null },
    })
}

fn submit_result(kind: &str, code: &str) -> Value {
    json!({
        "DATA_TYPE": format!("{kind}_result"),
        "code": code,
        "message": format!("The {kind} has been accepted and a task has been created and queued for execution"),
        "request_id": "Ab1Cd2Ef3",
        "resource": format!("/v0.10/{kind}"),
        "submission_id": SUBMISSION,
        "task_id": TASK,
        "task_link": {
            "DATA_TYPE": "link",
            "href": format!("/v0.10/task/{TASK}?format=json"),
            "rel": "related",
            "resource": "task",
            "title": "related task",
        },
    })
}

/// Seeds: name, HTTP status, body.
fn seeds() -> Vec<(&'static str, u16, Vec<u8>)> {
    let json = |v: Value| serde_json::to_vec(&v).unwrap();
    vec![
        (
            "submission-id",
            200,
            json(json!({"DATA_TYPE": "submission_id", "value": SUBMISSION})),
        ),
        (
            "transfer-accepted",
            202,
            json(submit_result("transfer", "Accepted")),
        ),
        (
            "transfer-duplicate",
            200,
            json(submit_result("transfer", "Duplicate")),
        ),
        (
            "delete-accepted",
            202,
            json(submit_result("delete", "Accepted")),
        ),
        ("task-active", 200, json(task_doc("ACTIVE", Value::Null))),
        (
            "task-inactive",
            200,
            json(task_doc("INACTIVE", Value::Null)),
        ),
        (
            "task-succeeded",
            200,
            json(task_doc("SUCCEEDED", Value::Null)),
        ),
        (
            "task-failed",
            200,
            json(task_doc(
                "FAILED",
                json!({"code": "PERMISSION_DENIED", "description": "permission denied on the destination"}),
            )),
        ),
        (
            "unauthorized",
            401,
            json(error_doc("AuthenticationFailed", "Token is not active")),
        ),
        (
            "forbidden",
            403,
            json(error_doc("PermissionDenied", "No permission on endpoint")),
        ),
        (
            "task-not-found",
            404,
            json(error_doc("TaskNotFound", &format!("Task {TASK} not found"))),
        ),
        (
            "bad-request",
            400,
            json(error_doc("ClientError.BadRequest", "'DATA' is required")),
        ),
        (
            "conflict",
            409,
            json(error_doc(
                "ClientError.Conflict",
                "A task with this submission id exists",
            )),
        ),
        (
            "rate-limited",
            429,
            json(error_doc("RequestLimitExceeded", "Too many requests")),
        ),
        (
            "unavailable",
            503,
            json(error_doc(
                "ServiceUnavailable",
                "Transfer is down for maintenance",
            )),
        ),
        (
            "gateway-html",
            502,
            b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>".to_vec(),
        ),
        ("not-json", 200, b"OK".to_vec()),
        ("empty", 204, Vec::new()),
    ]
}

fn input(status: u16, body: &[u8]) -> Vec<u8> {
    let mut v = vec![harness::control_of(status)];
    v.extend_from_slice(body);
    v
}

#[test]
fn seeds_parse_as_the_connector_expects() {
    if std::env::var_os("PROXYSTORE_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(corpus()).unwrap();
        for (name, status, body) in seeds() {
            std::fs::write(corpus().join(format!("seed-{name}")), input(status, &body)).unwrap();
        }
    }
    for (name, status, body) in seeds() {
        let file = std::fs::read(corpus().join(format!("seed-{name}"))).unwrap();
        assert_eq!(file, input(status, &body), "seed-{name} is not current");
        harness::globus_responses(&file);
    }
    let parse = |name: &str| {
        let (_, status, body) = seeds().into_iter().find(|s| s.0 == name).unwrap();
        __fuzzing::parse(status, &body)
    };
    assert_eq!(parse("submission-id").submission_id.unwrap(), SUBMISSION);
    assert_eq!(parse("transfer-accepted").task_id.unwrap(), TASK);
    assert_eq!(parse("transfer-duplicate").task_id.unwrap(), TASK);
    let task = |name: &str| parse(name).task.unwrap().unwrap();
    assert!(task("task-active").contains("Running(\"ACTIVE\")"));
    assert!(task("task-succeeded").contains("Succeeded"));
    assert!(task("task-failed").contains("PERMISSION_DENIED: permission denied"));
    assert!(parse("task-not-found").task.unwrap().is_none());
    assert!(matches!(
        parse("unauthorized").task,
        Err(Error::Unauthorized { .. })
    ));
    let e = parse("gateway-html").submission_id.unwrap_err();
    assert!(
        e.is_retryable() && e.to_string().contains("HTTP 502"),
        "{e}"
    );
    let e = parse("conflict").task_id.unwrap_err();
    assert!(e.to_string().contains("ClientError.Conflict"), "{e}");
}

#[test]
fn globus_responses_corpus() {
    let files: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("fuzz/corpus/globus_responses is missing")
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        files.len() >= seeds().len(),
        "corpus has {} files",
        files.len()
    );
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let result = std::panic::catch_unwind(|| harness::globus_responses(&data));
        assert!(
            result.is_ok(),
            "globus_responses panicked on {}",
            f.display()
        );
    }
    eprintln!("globus_responses: {} inputs replayed", files.len());
}
