//! A span per gRPC call, with the W3C trace context carried in request metadata.
//!
//! [`RpcTrace`] wraps an HTTP/2 gRPC service: on the client (around the channel of
//! [`GrpcConnector`](super::GrpcConnector)) it opens a `grpc.client` span per call and writes
//! the span's `traceparent`/`tracestate` into the request headers; on the server
//! (`proxystore-server` adds [`RpcTraceLayer::server`] to its transport) it opens a
//! `grpc.server` span per call whose parent is the context those headers carry, so client and
//! server spans form one trace. A span lasts until the response body has ended, so the time of
//! a streamed transfer is inside it, and records `rpc.grpc.status_code` from the trailers.
//!
//! Span fields follow OpenTelemetry's RPC conventions: `otel.name` is `service/method`,
//! `otel.kind` is `client` or `server`, `rpc.system = "grpc"`, `rpc.service`, `rpc.method`,
//! `rpc.grpc.status_code`; handlers may record `key` and `bytes`. A client span is an error for
//! any status but OK; a server span only for the codes that mean a server fault (UNKNOWN,
//! DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS), not for NOT_FOUND and
//! other answers about the request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tonic::codegen::http::{self, HeaderMap, HeaderValue};
use tracing::Span;
use tracing::field::Empty;

use crate::trace;

/// Which end of a call a [`RpcTrace`] sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The caller: injects its context into the request.
    Client,
    /// The callee: continues the context found in the request.
    Server,
}

/// A `tower` layer that traces gRPC calls (see the [module docs](self)).
#[derive(Clone, Copy, Debug)]
pub struct RpcTraceLayer {
    side: Side,
    prefix: Option<&'static str>,
}

impl RpcTraceLayer {
    /// Trace outgoing calls.
    pub fn client() -> Self {
        RpcTraceLayer {
            side: Side::Client,
            prefix: None,
        }
    }

    /// Trace incoming calls.
    pub fn server() -> Self {
        RpcTraceLayer {
            side: Side::Server,
            prefix: None,
        }
    }

    /// Trace only calls whose path starts with `prefix` (e.g. `/proxystore_rs.v1.StoreService/`),
    /// leaving health checks and reflection out of the traces.
    #[must_use]
    pub fn only(mut self, prefix: &'static str) -> Self {
        self.prefix = Some(prefix);
        self
    }
}

impl<S> tower_layer::Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;

    fn layer(&self, inner: S) -> RpcTrace<S> {
        RpcTrace {
            inner,
            side: self.side,
            prefix: self.prefix,
        }
    }
}

/// The service made by [`RpcTraceLayer`].
#[derive(Clone, Debug)]
pub struct RpcTrace<S> {
    inner: S,
    side: Side,
    prefix: Option<&'static str>,
}

impl<S> RpcTrace<S> {
    /// Trace the calls of `inner` on `side`.
    pub fn new(inner: S, side: Side) -> Self {
        RpcTrace {
            inner,
            side,
            prefix: None,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, consuming the wrapper.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn span_for<B>(&self, req: &http::Request<B>) -> Span {
        let path = req.uri().path();
        if self.prefix.is_some_and(|p| !path.starts_with(p)) {
            return Span::none();
        }
        // A session lives as long as its connection: its calls have spans of their own
        // ([`call_span`]), the stream none.
        if path.ends_with(SESSION_SUFFIX) {
            return Span::none();
        }
        call_span(self.side, path)
    }
}

/// The path of the store service's `method` (`Put`, `Get`, `Exists`, `Evict`; any other:
/// `Session`), as [`call_span`] takes it, without building a string per call.
pub fn store_method_path(method: &str) -> &'static str {
    match method {
        "Put" => "proxystore_rs.v1.StoreService/Put",
        "Get" => "proxystore_rs.v1.StoreService/Get",
        "Exists" => "proxystore_rs.v1.StoreService/Exists",
        "Evict" => "proxystore_rs.v1.StoreService/Evict",
        _ => "proxystore_rs.v1.StoreService/Session",
    }
}

/// The method path of the `Session` stream ends so.
const SESSION_SUFFIX: &str = "/Session";

/// The span of one call to `path` (`/package.Service/Method`, the leading `/` optional) on
/// `side`, as [`RpcTrace`] opens it: for a call that travels inside a longer stream (the
/// store service's `Session`), which opens one per call itself.
pub fn call_span(side: Side, path: &str) -> Span {
    let name = path.trim_start_matches('/');
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    match side {
        Side::Client => tracing::info_span!(
            "grpc.client",
            otel.name = name,
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = Empty,
            outcome = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        ),
        Side::Server => tracing::info_span!(
            "grpc.server",
            otel.name = name,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = Empty,
            key = Empty,
            bytes = Empty,
            outcome = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        ),
    }
}

/// Record the end of a call opened with [`call_span`]: its status code and, for an error on
/// `side`, its message.
pub fn record_call_status(span: &Span, side: Side, code: tonic::Code, message: &str) {
    if span.is_disabled() {
        return;
    }
    record_code(span, side, code as i32, Some(message));
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for RpcTrace<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Error: std::fmt::Display,
{
    type Response = http::Response<TracedBody<RB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let span = self.span_for(&req);
        if !span.is_disabled() {
            match self.side {
                Side::Client => inject(&span, req.headers_mut()),
                Side::Server => extract(&span, req.headers()),
            }
        }
        let inner = span.in_scope(|| self.inner.call(req));
        ResponseFuture {
            inner,
            span: Some(span),
            side: self.side,
        }
    }
}

fn inject(span: &Span, headers: &mut HeaderMap) {
    let Some(cx) = trace::inject(span) else {
        return;
    };
    if let Ok(v) = HeaderValue::from_str(&cx.traceparent) {
        headers.insert("traceparent", v);
    }
    if !cx.tracestate.is_empty()
        && let Ok(v) = HeaderValue::from_str(&cx.tracestate)
    {
        headers.insert("tracestate", v);
    }
}

fn extract(span: &Span, headers: &HeaderMap) {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    trace::set_parent(span, get("traceparent"), get("tracestate"));
}

/// The gRPC status of a call: from `grpc-status` in trailers (or in the headers of a
/// trailers-only response).
fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Record a call's final status on its span.
fn record_status(span: &Span, side: Side, code: i32, headers: Option<&HeaderMap>) {
    let message = headers
        .and_then(|h| h.get("grpc-message"))
        .and_then(|v| v.to_str().ok());
    record_code(span, side, code, message);
}

fn record_code(span: &Span, side: Side, code: i32, message: Option<&str>) {
    span.record("rpc.grpc.status_code", code);
    // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
    let server_fault = matches!(code, 2 | 4 | 12 | 13 | 14 | 15);
    let error = match side {
        Side::Client => code != 0,
        Side::Server => server_fault,
    };
    span.record("outcome", if code == 0 { "ok" } else { "error" });
    if error {
        span.record("otel.status_code", "ERROR");
        if let Some(msg) = message {
            span.record("otel.status_description", msg);
        }
    }
}

fn record_failure(span: &Span, message: &dyn std::fmt::Display) {
    span.record("outcome", "error");
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", tracing::field::display(message));
}

pin_project_lite::pin_project! {
    /// The response future of [`RpcTrace`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        span: Option<Span>,
        side: Side,
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
    E: std::fmt::Display,
{
    type Output = Result<http::Response<TracedBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let span = this.span.take().unwrap_or_else(Span::none);
        let polled = span.in_scope(|| this.inner.poll(cx));
        let result = match polled {
            Poll::Pending => {
                *this.span = Some(span);
                return Poll::Pending;
            }
            Poll::Ready(r) => r,
        };
        let side = *this.side;
        Poll::Ready(match result {
            Ok(resp) => {
                // A trailers-only response (an error before any message) has its status here.
                let span = match grpc_status(resp.headers()) {
                    _ if span.is_disabled() => None,
                    Some(code) => {
                        record_status(&span, side, code, Some(resp.headers()));
                        None
                    }
                    None => Some(span),
                };
                Ok(resp.map(|inner| TracedBody { inner, span, side }))
            }
            Err(e) => {
                record_failure(&span, &e);
                Err(e)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its call's span open until the body ends.
    pub struct TracedBody<B> {
        #[pin]
        inner: B,
        span: Option<Span>,
        side: Side,
    }
}

impl<B> Body for TracedBody<B>
where
    B: Body,
    B::Error: std::fmt::Display,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let Some(span) = this.span.as_ref() else {
            return this.inner.poll_frame(cx);
        };
        let polled = span.in_scope(|| this.inner.poll_frame(cx));
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    record_status(span, *this.side, code, frame.trailers_ref());
                    // The call is over: close its span now.
                    *this.span = None;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                record_failure(span, e);
                *this.span = None;
            }
            Poll::Ready(None) => *this.span = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_method_paths_name_the_service() {
        for m in ["Put", "Get", "Exists", "Evict", "Session"] {
            assert_eq!(
                store_method_path(m),
                format!("{}/{m}", proxystore_proto::STORE_SERVICE_NAME)
            );
        }
    }

    #[test]
    fn status_comes_from_grpc_status() {
        let mut h = HeaderMap::new();
        assert_eq!(grpc_status(&h), None);
        h.insert("grpc-status", HeaderValue::from_static("5"));
        assert_eq!(grpc_status(&h), Some(5));
        h.insert("grpc-status", HeaderValue::from_static("x"));
        assert_eq!(grpc_status(&h), None);
    }
}
