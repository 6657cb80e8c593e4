//! Answers of the Globus Transfer API (v0.10) as the Globus connector parses them: the HTTP
//! status and body of an answer go through the connector's parsers for each call it makes
//! (`GET /submission_id`, `POST /transfer` and `/delete`, `GET /task/{id}`), through the hook
//! `proxystore::connector::globus::__fuzzing::parse` (the parsers are private).
//!
//! Input: the first byte picks the HTTP status from [`STATUSES`]; the rest is the body.
//!
//! Checks besides "no panic": a task id the connector accepts can go into a URL path
//! unescaped (it is put into `/task/{id}`); 401 and 403 are `Error::Unauthorized` for every
//! call; 429 and 5xx are retryable errors; any other refusal is an error, except that 400 and
//! 404 on a task mean an unknown task; a 2xx submission id is the body's `value` string.

use proxystore::Error;
use proxystore::connector::globus::__fuzzing;
use serde_json::Value;

/// HTTP statuses an answer may have, indexed by the first input byte (modulo its length).
pub const STATUSES: [u16; 20] = [
    200, 201, 202, 204, 299, 100, 301, 304, 400, 401, 403, 404, 409, 410, 429, 500, 502, 503, 504,
    599,
];

/// The status the first byte of an input stands for.
pub fn status_of(control: u8) -> u16 {
    STATUSES[usize::from(control) % STATUSES.len()]
}

/// The input byte that stands for `status` (for writing seeds).
pub fn control_of(status: u16) -> u8 {
    match STATUSES.iter().position(|&s| s == status) {
        Some(i) => i as u8,
        None => unreachable!("{status} is not in STATUSES"),
    }
}

/// The fuzz target.
pub fn globus_responses(data: &[u8]) {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let status = status_of(control);
    let parsed = __fuzzing::parse(status, body);
    // Every error can be shown (messages quote parts of the body).
    for e in [
        parsed.submission_id.as_ref().err(),
        parsed.task_id.as_ref().err(),
        parsed.task.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    {
        let _ = (e.to_string(), format!("{e:?}"), e.is_retryable());
    }

    if let Ok(id) = &parsed.task_id {
        assert!(
            !id.is_empty()
                && id.len() <= 64
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "task id {id:?} accepted"
        );
    }
    let success = (200..300).contains(&status);
    match status {
        401 | 403 => {
            for e in [
                parsed.submission_id.as_ref().err(),
                parsed.task_id.as_ref().err(),
                parsed.task.as_ref().err(),
            ] {
                assert!(
                    matches!(e, Some(Error::Unauthorized { .. })),
                    "HTTP {status}: {parsed:?}"
                );
            }
        }
        429 | 500..=599 => {
            for e in [
                parsed.submission_id.as_ref().err(),
                parsed.task_id.as_ref().err(),
                parsed.task.as_ref().err(),
            ] {
                assert!(
                    e.is_some_and(Error::is_retryable),
                    "HTTP {status}: {parsed:?}"
                );
            }
        }
        400 | 404 => {
            assert!(matches!(parsed.task, Ok(None)), "HTTP {status}: {parsed:?}");
        }
        _ if !success => {
            assert!(
                parsed.submission_id.is_err() && parsed.task_id.is_err() && parsed.task.is_err(),
                "HTTP {status}: {parsed:?}"
            );
        }
        _ => {}
    }
    if !success {
        assert!(
            parsed.submission_id.is_err() && parsed.task_id.is_err(),
            "HTTP {status}: {parsed:?}"
        );
        return;
    }
    // What serde_json itself reads from the body.
    let doc = serde_json::from_slice::<Value>(body).ok();
    let field = |name: &str| {
        doc.as_ref()
            .and_then(|d| d.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    assert_eq!(
        parsed.submission_id.as_ref().ok(),
        field("value").as_ref(),
        "submission id of {doc:?}"
    );
    if let Ok(id) = &parsed.task_id {
        assert_eq!(Some(id), field("task_id").as_ref());
    }
    assert_eq!(parsed.task.is_ok(), doc.is_some(), "task of {doc:?}");
}
