//! # OpenTelemetry for ProxyStore
//!
//! ProxyStore's libraries only emit `tracing` spans (`proxystore.put`, `proxystore.get`,
//! `proxystore.resolve`, `proxystore.evict`, `grpc.client`/`grpc.server`, `proxystore.task`; see
//! [`proxystore::trace`]). This crate is what a binary calls once to see them in a tracing
//! dashboard (Jaeger, Grafana Tempo, Arize Phoenix, any OTLP collector):
//!
//! ```no_run
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let _telemetry = proxystore_telemetry::init("my-service")?;
//!     // ... work; spans are exported in the background ...
//!     Ok(())
//! } // dropping the guard flushes what is left
//! ```
//!
//! [`init`] installs a `tracing` subscriber with
//!
//! - log lines on stderr, filtered by `RUST_LOG` (default `warn`);
//! - when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set (e.g.
//!   `http://127.0.0.1:4317`), an OTLP/gRPC exporter (tonic) of the spans through
//!   `tracing-opentelemetry`, batched in the background. It honours the standard variables:
//!   `OTEL_SERVICE_NAME` (else the name given to [`init`]), `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, `OTEL_EXPORTER_OTLP_HEADERS`,
//!   `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_*`; `OTEL_SDK_DISABLED=true` or
//!   `OTEL_TRACES_EXPORTER=none` turn export off. Which spans are exported is
//!   `PROXYSTORE_TRACE_FILTER` (an `EnvFilter`, default `info`); the spans of the exporter's own
//!   transport (`h2`, `hyper`, `tonic`, `tower`) never are;
//! - the W3C trace-context propagator, both as OpenTelemetry's global propagator and as
//!   ProxyStore's [`proxystore::trace::Propagator`], so that proxies carry the context of the
//!   span that made them and gRPC calls carry theirs to the server.
//!
//! Without an endpoint nothing is exported and nothing fails: the binary just logs.
//!
//! [`Config`] gives the same set-up with explicit settings, and [`Config::build`] returns the
//! subscriber as a [`tracing::Dispatch`] without installing it (for tests and benchmarks).

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

mod propagator;
#[cfg(feature = "receiver")]
pub mod receiver;

pub use propagator::W3cPropagator;

/// Targets whose spans are never exported: the exporter's own transport, which would
/// otherwise trace its own exports.
pub const EXCLUDED_TARGETS: &[&str] = &[
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
];

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// A filter (`RUST_LOG`, `PROXYSTORE_TRACE_FILTER`) does not parse.
    #[error("invalid filter {value:?}: {message}")]
    Filter {
        /// The filter text.
        value: String,
        /// What is wrong with it.
        message: String,
    },
    /// The OTLP exporter could not be built (for example a malformed endpoint).
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    /// A global `tracing` subscriber is already installed.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Settings of the telemetry pipeline; [`Config::from_env`] reads the standard variables.
#[derive(Clone, Debug)]
pub struct Config {
    /// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` gives one.
    pub service_name: String,
    /// Export spans over OTLP/gRPC.
    pub export: bool,
    /// Endpoint to use instead of the one the OTLP variables give (e.g.
    /// `http://127.0.0.1:4317`); setting it turns export on.
    pub endpoint: Option<String>,
    /// Filter of the log lines on stderr (`RUST_LOG` syntax); `None` prints no logs.
    pub log_filter: Option<String>,
    /// Filter of the exported spans (`EnvFilter` syntax); [`EXCLUDED_TARGETS`] are always off.
    pub trace_filter: String,
    /// Sample every trace, whatever `OTEL_TRACES_SAMPLER` says (for tests and benchmarks).
    pub sample_all: bool,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Config {
    /// Settings from the environment (see the [crate docs](crate)), with `service_name` as
    /// the default service name.
    pub fn from_env(service_name: &str) -> Self {
        let endpoint_set = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        Config {
            service_name: service_name.to_owned(),
            export: endpoint_set && !disabled,
            endpoint: None,
            log_filter: Some(env("RUST_LOG").unwrap_or_else(|| "warn".to_owned())),
            trace_filter: env("PROXYSTORE_TRACE_FILTER").unwrap_or_else(|| "info".to_owned()),
            sample_all: false,
        }
    }

    /// Export to `endpoint` (e.g. `http://127.0.0.1:4317`).
    #[must_use]
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self.export = true;
        self
    }

    /// Print no log lines.
    #[must_use]
    pub fn without_logs(mut self) -> Self {
        self.log_filter = None;
        self
    }

    /// Sample every trace.
    #[must_use]
    pub fn sample_all(mut self) -> Self {
        self.sample_all = true;
        self
    }

    fn trace_filter(&self) -> Result<EnvFilter, TelemetryError> {
        let mut directives = self.trace_filter.clone();
        for t in EXCLUDED_TARGETS {
            directives.push_str(&format!(",{t}=off"));
        }
        parse_filter(&directives)
    }

    fn resource(&self) -> Resource {
        let named = env("OTEL_SERVICE_NAME").is_some()
            || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| {
                a.split(',')
                    .any(|kv| kv.trim().starts_with("service.name="))
            });
        let builder = Resource::builder();
        if named {
            builder.build()
        } else {
            builder.with_service_name(self.service_name.clone()).build()
        }
    }

    /// The tracer provider, built on ProxyStore's I/O runtime: the tonic channel of the
    /// exporter needs a Tokio runtime for as long as the process runs, whatever runtime (if
    /// any) the application uses.
    fn provider(&self) -> Result<SdkTracerProvider, TelemetryError> {
        let _rt = proxystore::runtime::io_handle().enter();
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(e) = &self.endpoint {
            exporter = exporter.with_endpoint(e.clone());
        }
        let exporter = exporter
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let mut builder = SdkTracerProvider::builder()
            .with_resource(self.resource())
            .with_batch_exporter(exporter);
        if self.sample_all {
            builder = builder.with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn);
        }
        Ok(builder.build())
    }

    /// Build the subscriber without installing it. Installs nothing global either: use
    /// [`install_propagator`] for context propagation.
    ///
    /// Used as the only dispatcher of a process in scopes (`tracing::dispatcher::with_default`),
    /// mind that `tracing` caches whether a callsite is enabled from the dispatcher in scope
    /// when the callsite is first hit: call `tracing::callsite::rebuild_interest_cache()`
    /// inside its scope, or spans first met outside it stay disabled.
    ///
    /// # Errors
    /// [`TelemetryError::Filter`] for a malformed filter, [`TelemetryError::Exporter`] when the exporter cannot
    /// be built.
    pub fn build(&self) -> Result<(tracing::Dispatch, TelemetryGuard), TelemetryError> {
        let logs = self.log_filter.as_deref().map(parse_filter).transpose()?;
        let provider = if self.export {
            Some(self.provider()?)
        } else {
            None
        };
        let exported = provider
            .as_ref()
            .map(|p| Ok::<_, TelemetryError>((p.tracer("proxystore"), self.trace_filter()?)))
            .transpose()?;
        // A layer alone gets its filter as the subscriber's own, so that a span it does not
        // want is not built at all. With the filter on the layer (`with_filter`), or beside
        // it a `None` layer (`Option`), the registry still builds, enters and closes every
        // span whose callsite is looked at per call (as when a second dispatcher exists) and
        // a span's link is parsed, for no layer: 7k instructions, 1% of a 1 MiB resolve with
        // export off (issue 18). Per-layer filters are for two layers that want different
        // spans.
        let registry = tracing_subscriber::registry();
        let dispatch = match (logs, exported) {
            (None, None) => tracing::Dispatch::new(registry.with(LevelFilter::OFF)),
            (Some(logs), None) => tracing::Dispatch::new(registry.with(logs).with(log_layer())),
            (None, Some((tracer, traces))) => {
                tracing::Dispatch::new(registry.with(traces).with(span_layer(tracer)))
            }
            (Some(logs), Some((tracer, traces))) => tracing::Dispatch::new(
                registry
                    .with(log_layer().with_filter(logs))
                    .with(span_layer(tracer).with_filter(traces)),
            ),
        };
        Ok((dispatch, TelemetryGuard { provider }))
    }

    /// Build the subscriber and install it as the global default, with the W3C propagator.
    ///
    /// # Errors
    /// As for [`Config::build`], and [`TelemetryError::AlreadyInstalled`].
    pub fn install(&self) -> Result<TelemetryGuard, TelemetryError> {
        let (dispatch, guard) = self.build()?;
        tracing::dispatcher::set_global_default(dispatch)
            .map_err(|_| TelemetryError::AlreadyInstalled)?;
        install_propagator();
        Ok(guard)
    }
}

/// The log lines on stderr.
fn log_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer().with_writer(std::io::stderr)
}

/// The spans to OpenTelemetry.
fn span_layer<S>(tracer: opentelemetry_sdk::trace::Tracer) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Per span, the thread attributes cost an allocation, the source location adds three
        // attributes to encode, export and store (the span names say where they come from),
        // and context activation and busy/idle tracking work on every poll; parents come
        // from the tracing span tree without activation, and the exported start and end
        // times show the durations.
        .with_threads(false)
        .with_location(false)
        .with_context_activation(false)
        .with_tracked_inactivity(false)
}

fn parse_filter(directives: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| TelemetryError::Filter {
            value: directives.to_owned(),
            message: e.to_string(),
        })
}

/// Set up logging and, when the OTLP variables say so, span export; see the
/// [crate docs](crate). Keep the guard until the end of `main`: dropping it flushes.
///
/// # Errors
/// [`TelemetryError::Filter`] for a malformed `RUST_LOG` or `PROXYSTORE_TRACE_FILTER`,
/// [`TelemetryError::Exporter`] for a malformed endpoint, [`TelemetryError::AlreadyInstalled`] when a global
/// subscriber exists.
pub fn init(service_name: &str) -> Result<TelemetryGuard, TelemetryError> {
    Config::from_env(service_name).install()
}

/// Install the W3C trace-context propagator: as OpenTelemetry's global text-map propagator and
/// as ProxyStore's [`proxystore::trace`] hook.
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    proxystore::trace::set_propagator(Arc::new(W3cPropagator::new()));
}

/// Keeps the exporter alive; flushes and shuts it down when dropped.
#[must_use = "dropping the guard stops the export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("exporting", &self.is_exporting())
            .finish()
    }
}

impl TelemetryGuard {
    /// Whether spans are exported.
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Export the spans finished so far, waiting for the collector's answer (bounded by the
    /// exporter's timeout).
    ///
    /// # Errors
    /// [`TelemetryError::Exporter`] when the export failed.
    pub fn flush(&self) -> Result<(), TelemetryError> {
        match &self.provider {
            Some(p) => p
                .force_flush()
                .map_err(|e| TelemetryError::Exporter(e.to_string())),
            None => Ok(()),
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            // Failures here (collector gone) must not turn a clean exit into a crash.
            let _ = p.force_flush();
            let _ = p.shutdown_with_timeout(Duration::from_secs(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Config;

    fn quiet(log_filter: &str) -> Config {
        Config {
            service_name: "test".to_owned(),
            export: false,
            endpoint: None,
            log_filter: Some(log_filter.to_owned()),
            trace_filter: "info".to_owned(),
            sample_all: false,
        }
    }

    /// With export off, a span that the log filter does not print is not built at all (no
    /// registry entry, no link parsed): it costs a resolve nothing.
    #[test]
    fn spans_no_layer_wants_are_not_built() {
        let (warn, _g1) = quiet("warn").build().unwrap_or_else(|e| panic!("{e}"));
        let (info, _g2) = quiet("info").build().unwrap_or_else(|e| panic!("{e}"));
        let (nothing, _g3) = Config {
            log_filter: None,
            ..quiet("info")
        }
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
        tracing::callsite::rebuild_interest_cache();
        let disabled = |d: &tracing::Dispatch| {
            tracing::dispatcher::with_default(d, || tracing::info_span!("op").is_disabled())
        };
        assert!(
            disabled(&warn),
            "an info span built under a warn log filter"
        );
        assert!(disabled(&nothing), "a span built with no layer at all");
        assert!(
            !disabled(&info),
            "an info span not built under an info log filter"
        );
    }
}
