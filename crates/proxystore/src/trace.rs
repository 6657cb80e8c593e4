//! Tracing: the spans the library opens, and the hook that carries trace context across
//! processes without this crate depending on OpenTelemetry.
//!
//! # Spans
//!
//! Every store operation runs in an `info` span of target `proxystore::…`:
//!
//! | span | where | fields |
//! |---|---|---|
//! | `proxystore.put` | [`Store::put`](crate::Store::put), `proxy`, `put_batch`, `put_encoded` | `store`, `connector`, `key`, `bytes`, `count` (batches) |
//! | `proxystore.get` | [`Store::get`](crate::Store::get), `get_bytes`; the transfer inside a resolve, at `debug` level | `store`, `connector`, `key`, `bytes`, `cache_hit` |
//! | `proxystore.resolve` | a proxy's first use ([`Store::get_by_reference`](crate::Store::get_by_reference), `get_verified_bytes`) | `store`, `connector`, `key`, `bytes`, `cache_hit`, `type` |
//! | `proxystore.evict` | [`Store::evict`](crate::Store::evict), `evict_batch` | `store`, `connector`, `key`, `count` |
//! | `proxystore.exists` | [`Store::exists`](crate::Store::exists) | `store`, `connector`, `key` |
//!
//! Sizes and counts are integers (see [`int`]). The `proxystore.get` span of the transfer
//! inside a resolve is a `debug` span: a resolve exported at the default `info` level is one span
//! carrying the store, connector, key, size, type and the link to the producer, and a connector's
//! own spans (`grpc.client`) are its children; enable `debug` for `proxystore::store` to also
//! see how long the transfer took apart from the decode.
//!
//! Each records `outcome` (`ok`, `absent` or `error`); a failure also records
//! `otel.status_code = "ERROR"`, `otel.status_description` (the message) and `error.type` (the
//! [`Error`] variant), the conventions `tracing-opentelemetry` maps onto OpenTelemetry's span
//! status. With no subscriber installed, or one that ignores `info` spans of `proxystore`, a
//! span costs a relaxed load and a branch.
//!
//! # Context across processes
//!
//! A proxy's [`Reference`](crate::Reference) carries the W3C `traceparent`/`tracestate` of the
//! `proxystore.put` span that stored its object, and the `proxystore.resolve` span of its first use,
//! in whatever process, links to it. The gRPC connector sends the context of its call in request
//! metadata, and the server continues the trace. Turning a `tracing` span into W3C context
//! needs an OpenTelemetry layer, which this crate does not link: a [`Propagator`] installed with
//! [`set_propagator`] does it (`proxystore-telemetry` installs one). Without one, references
//! carry no context and nothing is linked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use tracing::Span;

use crate::error::Error;

/// A W3C trace context: the `traceparent` and `tracestate` header values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceContext {
    /// `version-traceid-spanid-flags`, e.g.
    /// `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
    pub traceparent: String,
    /// Vendor-specific state, often empty.
    pub tracestate: String,
}

impl TraceContext {
    /// A context from its two header values.
    pub fn new(traceparent: impl Into<String>, tracestate: impl Into<String>) -> Self {
        TraceContext {
            traceparent: traceparent.into(),
            tracestate: tracestate.into(),
        }
    }

    /// The context if `traceparent` is non-empty.
    pub fn from_parts(traceparent: &str, tracestate: &str) -> Option<Self> {
        (!traceparent.is_empty()).then(|| TraceContext::new(traceparent, tracestate))
    }
}

/// Turns `tracing` spans into W3C trace context and back; installed by a telemetry crate with
/// [`set_propagator`].
///
/// Implementations must not panic and should ignore spans they do not know (disabled, or not
/// seen by their layer).
pub trait Propagator: Send + Sync + 'static {
    /// The context of `span`, or `None` when it has none (not recorded by the layer).
    fn inject(&self, span: &Span) -> Option<TraceContext>;

    /// Make `span` a child of the remote context `parent`. Called right after `span` is
    /// created, before it is entered.
    fn set_parent(&self, span: &Span, traceparent: &str, tracestate: &str);

    /// Add a link from `span` to the context `linked` (which may belong to another trace).
    fn add_link(&self, span: &Span, traceparent: &str, tracestate: &str);
}

static INSTALLED: AtomicBool = AtomicBool::new(false);
static PROPAGATOR: RwLock<Option<Arc<dyn Propagator>>> = RwLock::new(None);

/// Install the process-wide propagator, replacing (and returning) the previous one.
pub fn set_propagator(propagator: Arc<dyn Propagator>) -> Option<Arc<dyn Propagator>> {
    let mut slot = PROPAGATOR.write().unwrap_or_else(|e| e.into_inner());
    let previous = slot.replace(propagator);
    INSTALLED.store(true, Ordering::Release);
    previous
}

/// Remove the process-wide propagator, returning it.
pub fn clear_propagator() -> Option<Arc<dyn Propagator>> {
    let mut slot = PROPAGATOR.write().unwrap_or_else(|e| e.into_inner());
    INSTALLED.store(false, Ordering::Release);
    slot.take()
}

/// The installed propagator, if any, for a span that is recorded at all.
fn propagator(span: &Span) -> Option<Arc<dyn Propagator>> {
    if !INSTALLED.load(Ordering::Acquire) || span.is_disabled() {
        return None;
    }
    PROPAGATOR.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The W3C context of `span`, when a propagator is installed and the span is recorded.
pub fn inject(span: &Span) -> Option<TraceContext> {
    propagator(span)?.inject(span)
}

/// The W3C context of the current span (see [`inject`]).
pub fn current() -> Option<TraceContext> {
    if !INSTALLED.load(Ordering::Acquire) {
        return None;
    }
    inject(&Span::current())
}

/// Make `span` a child of the remote context (call before entering `span`). Does nothing for
/// an empty `traceparent` or without a propagator.
pub fn set_parent(span: &Span, traceparent: &str, tracestate: &str) {
    if traceparent.is_empty() {
        return;
    }
    if let Some(p) = propagator(span) {
        p.set_parent(span, traceparent, tracestate);
    }
}

/// Link `span` to a context (for example the one a proxy reference carries). Does nothing for
/// an empty `traceparent` or without a propagator.
pub fn add_link(span: &Span, traceparent: &str, tracestate: &str) {
    if traceparent.is_empty() {
        return;
    }
    if let Some(p) = propagator(span) {
        p.add_link(span, traceparent, tracestate);
    }
}

/// A size or count as a span field: an `i64`, saturating.
///
/// Record sizes through it rather than as `u64`/`usize`: `tracing` hands those to a layer's
/// `record_u64`, which `tracing-opentelemetry` (0.34) does not implement, so each one is
/// formatted with `Debug` into a string attribute (an allocation, and a value a trace backend
/// cannot compare as a number). An `i64` becomes an integer attribute.
///
/// ```
/// let span = tracing::info_span!("op", bytes = proxystore::trace::int(1_u64 << 20));
/// span.record("bytes", proxystore::trace::int(usize::MAX));
/// ```
pub fn int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Record the outcome of an operation on its span: `outcome = "ok"`, or the error status
/// fields (the span must declare `outcome`, `otel.status_code`, `otel.status_description` and
/// `error.type`).
pub fn record_result<T>(span: &Span, result: &Result<T, Error>) {
    if span.is_disabled() {
        return;
    }
    match result {
        Ok(_) => {
            span.record("outcome", "ok");
        }
        Err(e) => record_error(span, e),
    }
}

/// Record `e` on `span` as its error status (see [`record_result`]).
pub fn record_error(span: &Span, e: &Error) {
    if span.is_disabled() {
        return;
    }
    span.record("outcome", "error");
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", tracing::field::display(e));
    span.record("error.type", error_type(e));
}

/// The variant name of an error, for the `error.type` attribute.
pub fn error_type(e: &Error) -> &'static str {
    match e {
        Error::NotFound { .. } => "NotFound",
        Error::Backend { .. } => "Backend",
        Error::Encode { .. } => "Encode",
        Error::Decode { .. } => "Decode",
        Error::DigestMismatch { .. } => "DigestMismatch",
        Error::InvalidDigest { .. } => "InvalidDigest",
        Error::InvalidReference { .. } => "InvalidReference",
        Error::UnsupportedVersion { .. } => "UnsupportedVersion",
        Error::UnknownConnectorKind { .. } => "UnknownConnectorKind",
        Error::Config { .. } => "Config",
        Error::InvalidKey { .. } => "InvalidKey",
        Error::Unauthorized { .. } => "Unauthorized",
        Error::LimitExceeded { .. } => "LimitExceeded",
        Error::Timeout { .. } => "Timeout",
        Error::Unsupported { .. } => "Unsupported",
        Error::StoreExists { .. } => "StoreExists",
        Error::Refused { .. } => "Refused",
        Error::Ownership { .. } => "Ownership",
        Error::Future { .. } => "Future",
    }
}

/// A span for one store operation, with the fields every operation records. Values known when
/// the span opens are given then: one recording instead of one per field later. `info` unless
/// the first token is `debug`.
macro_rules! op_span {
    (debug $name:literal, $store:expr, key = $key:expr) => {
        $crate::trace::op_span!(
            @level tracing::Level::DEBUG,
            $name,
            $store,
            key = $key,
            bytes = tracing::field::Empty,
            r#type = tracing::field::Empty
        )
    };
    ($name:literal, $store:expr) => {
        $crate::trace::op_span!(
            $name,
            $store,
            key = tracing::field::Empty,
            bytes = tracing::field::Empty,
            r#type = tracing::field::Empty
        )
    };
    ($name:literal, $store:expr, key = $key:expr) => {
        $crate::trace::op_span!(
            $name,
            $store,
            key = $key,
            bytes = tracing::field::Empty,
            r#type = tracing::field::Empty
        )
    };
    ($name:literal, $store:expr, key = $key:expr, bytes = $bytes:expr, r#type = $type:expr) => {
        $crate::trace::op_span!(
            @level tracing::Level::INFO,
            $name,
            $store,
            key = $key,
            bytes = $bytes,
            r#type = $type
        )
    };
    (@level $level:expr, $name:literal, $store:expr, key = $key:expr, bytes = $bytes:expr, r#type = $type:expr) => {
        tracing::span!(
            $level,
            $name,
            store = $store.name(),
            connector = $store.connector().kind(),
            key = $key,
            bytes = $bytes,
            count = tracing::field::Empty,
            cache_hit = tracing::field::Empty,
            r#type = $type,
            outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            error.r#type = tracing::field::Empty,
        )
    };
}
pub(crate) use op_span;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_propagator_nothing_is_injected_or_linked() {
        assert!(current().is_none());
        let span = tracing::info_span!("x");
        assert!(inject(&span).is_none());
        add_link(
            &span,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "",
        );
        set_parent(&span, "", "");
        assert_eq!(TraceContext::from_parts("", "x"), None);
        assert_eq!(
            TraceContext::from_parts("tp", "ts"),
            Some(TraceContext::new("tp", "ts"))
        );
    }
}
