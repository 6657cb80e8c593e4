//! An OTLP/gRPC trace receiver in the process, for tests and benchmarks (feature `receiver`).
//!
//! It serves the OpenTelemetry collector's `TraceService` on a free loopback port, on
//! ProxyStore's I/O runtime, and keeps every span it receives, from any number of exporting
//! processes:
//!
//! ```
//! use proxystore_telemetry::receiver::OtlpReceiver;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let receiver = OtlpReceiver::start()?;
//! // Point exporters at it, e.g. OTEL_EXPORTER_OTLP_ENDPOINT=<receiver.endpoint()> in a child.
//! assert!(receiver.endpoint().starts_with("http://127.0.0.1:"));
//! assert!(receiver.spans().is_empty());
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

/// A span as received, with ids in lowercase hex (as W3C `traceparent` writes them).
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedSpan {
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// Span name.
    pub name: String,
    /// Trace id, 32 hex digits.
    pub trace_id: String,
    /// Span id, 16 hex digits.
    pub span_id: String,
    /// Parent span id, empty for a root span.
    pub parent_span_id: String,
    /// Span kind as OTLP numbers it (1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    /// Attributes, every value as text.
    pub attributes: BTreeMap<String, String>,
    /// Links, as `(trace_id, span_id)`.
    pub links: Vec<(String, String)>,
    /// Status code (0 unset, 1 ok, 2 error).
    pub status_code: i32,
    /// Status message.
    pub status_message: String,
    /// Start time, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// End time, nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
}

impl ReceivedSpan {
    /// An attribute's value as text.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// Whether `self` is the parent of `child`.
    pub fn is_parent_of(&self, child: &ReceivedSpan) -> bool {
        self.trace_id == child.trace_id && self.span_id == child.parent_span_id
    }

    /// Whether `self` links to `target`.
    pub fn links_to(&self, target: &ReceivedSpan) -> bool {
        self.links
            .iter()
            .any(|(t, s)| *t == target.trace_id && *s == target.span_id)
    }
}

impl fmt::Display for ReceivedSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] trace={} span={} parent={} links={:?} status={} {:?}",
            self.name,
            self.service,
            self.trace_id,
            self.span_id,
            self.parent_span_id,
            self.links,
            self.status_code,
            self.attributes
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

/// Keeps what it receives as it came (decoding it into [`ReceivedSpan`]s only when asked, so
/// that a benchmark exporting to it pays little for the receiving side).
#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<ResourceSpans>>>,
}

impl Collector {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ResourceSpans>> {
        self.received.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn decode(received: &[ResourceSpans]) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in received {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                out.push(ReceivedSpan {
                    service: service.clone(),
                    name: s.name.clone(),
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    kind: s.kind,
                    attributes: attributes(&s.attributes),
                    links: s
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                    status_code: s.status.as_ref().map_or(0, |st| st.code),
                    status_message: s
                        .status
                        .as_ref()
                        .map(|st| st.message.clone())
                        .unwrap_or_default(),
                    start_unix_nano: s.start_time_unix_nano,
                    end_unix_nano: s.end_time_unix_nano,
                });
            }
        }
    }
    out
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.lock().extend(request.into_inner().resource_spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    collector: Collector,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl fmt::Debug for OtlpReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpReceiver")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl OtlpReceiver {
    /// Listen on a free port of 127.0.0.1.
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn start() -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let collector = Collector::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let rt = proxystore::runtime::io_handle();
        let listener = {
            let _rt = rt.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let svc = TraceServiceServer::new(collector.clone());
        rt.spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(OtlpReceiver {
            addr,
            collector,
            stop: Some(stop),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint for exporters: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        decode(&self.collector.lock())
    }

    /// How many spans were received so far (cheaper than [`OtlpReceiver::spans`]).
    pub fn span_count(&self) -> usize {
        self.collector
            .lock()
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum()
    }

    /// Forget the spans received so far.
    pub fn clear(&self) {
        self.collector.lock().clear();
    }

    /// Wait (polling, blocking the thread) until `done` holds for the spans received, or
    /// `timeout` passes.
    ///
    /// # Errors
    /// The spans received by then, when `done` never held.
    pub fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Result<Vec<ReceivedSpan>, Vec<ReceivedSpan>> {
        let start = Instant::now();
        loop {
            let spans = self.spans();
            if done(&spans) {
                return Ok(spans);
            }
            if start.elapsed() > timeout {
                return Err(spans);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
