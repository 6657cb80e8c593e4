//! The W3C trace-context propagator behind [`proxystore::trace`].

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use proxystore::trace::{Propagator, TraceContext};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Turns `tracing` spans recorded by the `tracing-opentelemetry` layer into W3C
/// `traceparent`/`tracestate` values and back. [`crate::install_propagator`] installs it.
#[derive(Debug, Default)]
pub struct W3cPropagator {
    inner: TraceContextPropagator,
}

impl W3cPropagator {
    /// A propagator.
    pub fn new() -> Self {
        W3cPropagator::default()
    }

    fn extract(&self, traceparent: &str, tracestate: &str) -> Context {
        self.inner.extract(&Headers {
            traceparent,
            tracestate,
        })
    }
}

struct Headers<'a> {
    traceparent: &'a str,
    tracestate: &'a str,
}

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.traceparent),
            "tracestate" if !self.tracestate.is_empty() => Some(self.tracestate),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

#[derive(Default)]
struct Collect(TraceContext);

impl Injector for Collect {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.0.traceparent = value,
            "tracestate" => self.0.tracestate = value,
            _ => {}
        }
    }
}

impl Propagator for W3cPropagator {
    fn inject(&self, span: &Span) -> Option<TraceContext> {
        let cx = span.context();
        if !cx.span().span_context().is_valid() {
            return None;
        }
        let mut out = Collect::default();
        self.inner.inject_context(&cx, &mut out);
        (!out.0.traceparent.is_empty()).then_some(out.0)
    }

    fn set_parent(&self, span: &Span, traceparent: &str, tracestate: &str) {
        let cx = self.extract(traceparent, tracestate);
        if cx.span().span_context().is_valid() {
            // Fails only for spans already started or not recorded: then there is nothing to
            // attach the parent to.
            let _ = span.set_parent(cx);
        }
    }

    fn add_link(&self, span: &Span, traceparent: &str, tracestate: &str) {
        let cx = self.extract(traceparent, tracestate);
        let linked = cx.span().span_context().clone();
        if linked.is_valid() {
            span.add_link(linked);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_context_is_ignored() {
        let p = W3cPropagator::new();
        let span = tracing::info_span!("x");
        p.add_link(&span, "garbage", "");
        p.set_parent(&span, "00-zz-zz-01", "a=b");
        assert!(p.inject(&span).is_none());
        let cx = p.extract(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "vendor=x",
        );
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(sc.trace_state().header(), "vendor=x");
    }
}
