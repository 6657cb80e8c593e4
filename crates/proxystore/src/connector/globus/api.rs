//! The Globus Transfer API over HTTP: the client, one call and its retries within an
//! operation's [`Deadline`], and what an answer means ([`answer`], [`ApiError`]).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::config::GlobusConfig;
use super::{Inner, KIND};
use crate::error::{BoxError, Error, Result};

/// A failed API call, before it becomes an [`Error`].
#[derive(Debug)]
pub(super) enum ApiError {
    /// The API could not be reached or answered 429/5xx: the same call may succeed later.
    Transient(String, Option<BoxError>),
    /// 401 or 403.
    Unauthorized(String),
    /// Any other refusal.
    Rejected { status: u16, message: String },
}

impl ApiError {
    /// The error of `what` (an operation) that failed this way.
    pub(super) fn into_error(self, what: &str) -> Error {
        match self {
            ApiError::Transient(message, source) => Error::Backend {
                connector: KIND.into(),
                message: format!("{what}: {message}"),
                source,
                temporary: true,
            },
            ApiError::Unauthorized(message) => Error::Unauthorized {
                message: format!("Globus Transfer API, {what}: {message}"),
            },
            ApiError::Rejected { status, message } => Error::Backend {
                connector: KIND.into(),
                message: format!("{what}: HTTP {status}: {message}"),
                source: None,
                temporary: false,
            },
        }
    }
}

/// A deadline for one operation and the growing interval between retries.
pub(super) struct Deadline {
    start: Instant,
    end: Instant,
    interval: Duration,
    max_interval: Duration,
}

impl Deadline {
    /// From now until [`GlobusConfig::timeout_ms`] from now, with the poll intervals of `c`.
    pub(super) fn new(c: &GlobusConfig) -> Self {
        let start = Instant::now();
        let min = Duration::from_millis(c.poll_min_ms.max(1));
        Deadline {
            start,
            end: start + Duration::from_millis(c.timeout_ms),
            interval: min,
            max_interval: Duration::from_millis(c.poll_max_ms).max(min),
        }
    }

    /// Time left.
    pub(super) fn remaining(&self) -> Duration {
        self.end.saturating_duration_since(Instant::now())
    }

    /// Sleep for the next backoff interval; false when the deadline has passed.
    pub(super) async fn backoff(&mut self) -> bool {
        let remaining = self.remaining();
        if remaining.is_zero() {
            return false;
        }
        tokio::time::sleep(self.interval.min(remaining)).await;
        self.interval = (self.interval * 2).min(self.max_interval);
        true
    }

    /// Time since the start.
    pub(super) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// An API request: a `GET`, or a `POST` of a JSON document.
pub(super) enum Method {
    Get,
    Post(Value),
}

impl Inner {
    async fn client(&self) -> Result<&reqwest::Client> {
        self.client
            .get_or_try_init(|| async {
                let mut b = reqwest::Client::builder()
                    .connect_timeout(Duration::from_millis(self.config.request_timeout_ms));
                // A local API (a test double, a tunnel) must not go through a proxy from the
                // environment.
                if let Ok(url) = reqwest::Url::parse(&self.api_url)
                    && matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
                {
                    b = b.no_proxy();
                }
                b.build()
                    .map_err(|e| Error::backend(KIND, "build the HTTP client", e))
            })
            .await
    }

    /// One API call: the JSON answer, or why not.
    pub(super) async fn call(
        &self,
        method: &Method,
        path: &str,
        deadline: &Deadline,
    ) -> Result<Value, ApiError> {
        let token = self
            .config
            .resolve_token(|name| std::env::var(name).ok())
            .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
        let client = self
            .client()
            .await
            .map_err(|e| ApiError::Transient(e.to_string(), None))?;
        let url = format!("{}{path}", self.api_url);
        let request = match method {
            Method::Get => client.get(&url),
            Method::Post(body) => client.post(&url).json(body),
        };
        let timeout = Duration::from_millis(self.config.request_timeout_ms)
            .min(deadline.remaining())
            .max(Duration::from_millis(1));
        let response = request
            .bearer_auth(token)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| ApiError::Transient(transport_message(&e), Some(Box::new(e))))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| ApiError::Transient(transport_message(&e), Some(Box::new(e))))?;
        answer(status.as_u16(), &body)
    }

    /// [`Inner::call`], retried with backoff while the failure is transient and time is left.
    pub(super) async fn call_retrying(
        &self,
        method: &Method,
        path: &str,
        deadline: &mut Deadline,
    ) -> Result<Value, ApiError> {
        loop {
            match self.call(method, path, deadline).await {
                Err(ApiError::Transient(message, source)) => {
                    if !deadline.backoff().await {
                        return Err(ApiError::Transient(
                            format!(
                                "Globus Transfer API unavailable for {:?}: {message}",
                                deadline.elapsed()
                            ),
                            source,
                        ));
                    }
                }
                other => return other,
            }
        }
    }
}

/// What an answer of the API (HTTP `status`, `body`) means: its JSON document, or why not.
pub(super) fn answer(status: u16, body: &[u8]) -> Result<Value, ApiError> {
    if (200..300).contains(&status) {
        return serde_json::from_slice(body).map_err(|e| ApiError::Rejected {
            status,
            message: format!("answer is not JSON: {e}"),
        });
    }
    let message = error_message(body);
    match status {
        401 | 403 => Err(ApiError::Unauthorized(format!("HTTP {status}: {message}"))),
        429 | 500..=599 => Err(ApiError::Transient(
            format!("HTTP {status}: {message}"),
            None,
        )),
        code => Err(ApiError::Rejected {
            status: code,
            message,
        }),
    }
}

/// The `code` and `message` of a Globus error document, or the start of the body.
fn error_message(body: &[u8]) -> String {
    if let Ok(doc) = serde_json::from_slice::<Value>(body) {
        let field = |n: &str| doc.get(n).and_then(Value::as_str);
        match (field("code"), field("message")) {
            (Some(c), Some(m)) => return format!("{c}: {m}"),
            (Some(c), None) => return c.to_owned(),
            (None, Some(m)) => return m.to_owned(),
            (None, None) => {}
        }
    }
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

fn transport_message(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "request timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_documents_are_summarised() {
        let body =
            br#"{"code":"ClientError.NotFound","message":"Task not found","request_id":"x"}"#;
        assert_eq!(error_message(body), "ClientError.NotFound: Task not found");
        assert_eq!(error_message(b"<html>oops"), "<html>oops");
    }
}
