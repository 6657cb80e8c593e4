//! The W3C trace-context propagator behind [`proxystore::trace`].

use std::str::FromStr;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
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
        if let Some(linked) = parse(traceparent, tracestate) {
            span.add_link(linked);
        }
    }
}

/// A version-00 `traceparent` (and its `tracestate`) as a remote span context; `None` when
/// malformed or invalid. The propagator's `extract` does the same through a `Context`, which
/// costs allocations that resolving every proxy would pay.
fn parse(traceparent: &str, tracestate: &str) -> Option<SpanContext> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if version != "00"
        || parts.next().is_some()
        || !lower_hex(trace, 32)
        || !lower_hex(span, 16)
        || !lower_hex(flags, 2)
    {
        return None;
    }
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()?) & TraceFlags::SAMPLED;
    let state = if tracestate.is_empty() {
        TraceState::default()
    } else {
        TraceState::from_str(tracestate).unwrap_or_default()
    };
    let cx = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        flags,
        true,
        state,
    );
    cx.is_valid().then_some(cx)
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
        let parsed = parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "vendor=x",
        );
        assert_eq!(
            parsed.as_ref(),
            Some(&sc),
            "the fast parse agrees with the propagator"
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad, ""), None, "{bad:?}");
        }
    }
}
