//! The task codec: an inner, self-describing codec (JSON or MessagePack) wrapped so that large
//! arguments travel as proxy references.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proxystore::trace::{self, TraceContext};
use proxystore::{Reference, Store};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_value::Value;
use tracing::Span;
use tracing::field::Empty;
use typed_arena::Arena;

use crate::decode::{DecodeCtx, TreeDe};
use crate::encode::{EncodeCtx, TreeSer};
use crate::error::MiddlewareError;
use crate::policy::ArgumentPolicy;
use crate::stores::Stores;

/// The format of the task document itself (small: large arguments are references in it).
///
/// Only self-describing formats can carry "a reference or a value" at any position; for
/// non-self-describing ones (postcard, bincode) use explicit `Proxy<T>` fields instead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InnerCodec {
    /// JSON, as most brokers' default codecs use.
    #[default]
    Json,
    /// MessagePack.
    #[serde(rename = "msgpack")]
    MessagePack,
}

impl InnerCodec {
    fn encode<T: Serialize>(self, value: &T) -> Result<Vec<u8>, MiddlewareError> {
        match self {
            InnerCodec::Json => {
                serde_json::to_vec(value).map_err(|e| MiddlewareError::Encode(e.to_string()))
            }
            InnerCodec::MessagePack => {
                rmp_serde::to_vec_named(value).map_err(|e| MiddlewareError::Encode(e.to_string()))
            }
        }
    }

    fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, MiddlewareError> {
        match self {
            InnerCodec::Json => {
                serde_json::from_slice(bytes).map_err(|e| MiddlewareError::Decode(e.to_string()))
            }
            InnerCodec::MessagePack => {
                // Task documents come from outside: bound the nesting like serde_json does.
                let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
                de.set_max_depth(proxystore::codec::MAX_DEPTH);
                T::deserialize(&mut de).map_err(|e| MiddlewareError::Decode(e.to_string()))
            }
        }
    }
}

/// What travels through the broker: the task tree plus the references the producer made, so
/// the worker side knows what to clean up when the task ends, and the trace context of the
/// code that enqueued it, so that the worker's spans continue that trace.
#[derive(Serialize, Deserialize)]
struct Envelope {
    /// Format version of the envelope.
    #[serde(rename = "$proxystore")]
    version: u32,
    /// The task's name, as the producer gave it to the policy.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    task: String,
    /// W3C `traceparent` of the producer's `proxystore.encode` span (empty without tracing).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    traceparent: String,
    /// W3C `tracestate` accompanying `traceparent`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    tracestate: String,
    /// References made for this task (owned by it: evicted when it ends).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    proxied: Vec<Reference>,
    /// The arguments, large ones replaced by references.
    args: Value,
}

const ENVELOPE_VERSION: u32 = 1;

/// The envelope's fields a worker needs before decoding the arguments.
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "$proxystore")]
    version: u32,
    #[serde(default)]
    task: String,
    #[serde(default)]
    traceparent: String,
    #[serde(default)]
    tracestate: String,
}

/// What a worker learns from a task document without decoding its arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskInfo {
    /// The task's name as the producer gave it (empty in documents of older producers).
    pub task: String,
    /// The trace context of the producer's `proxystore.encode` span.
    pub trace: Option<TraceContext>,
}

impl TaskInfo {
    /// A `proxystore.task` span for running this task (kind `consumer`, named after the task),
    /// whose parent is the producer's context, so that the task's spans continue the trace of
    /// the code that enqueued it. Without a context it is a child of the current span.
    ///
    /// It declares `task_id`, `attempt`, `fetched` and `lazy` for the executor to record, and
    /// `outcome` and the error status for [`TaskInfo::record_outcome`].
    pub fn span(&self) -> Span {
        let name = if self.task.is_empty() {
            "proxystore.task"
        } else {
            self.task.as_str()
        };
        let span = tracing::info_span!(
            "proxystore.task",
            otel.name = name,
            otel.kind = "consumer",
            task = self.task.as_str(),
            task_id = Empty,
            attempt = Empty,
            fetched = Empty,
            lazy = Empty,
            outcome = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        if let Some(t) = &self.trace {
            proxystore::trace::set_parent(&span, &t.traceparent, &t.tracestate);
        }
        span
    }

    /// Record how the task ended on its span: `outcome = "ok"`, or the error status with
    /// `error`'s message.
    pub fn record_outcome(span: &Span, error: Option<&dyn std::fmt::Display>) {
        match error {
            None => {
                span.record("outcome", "ok");
            }
            Some(e) => {
                span.record("outcome", "error");
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_description", tracing::field::display(e));
            }
        }
    }
}

/// An encoded task.
#[derive(Debug)]
pub struct Encoded {
    /// The task document for the broker.
    pub bytes: Vec<u8>,
    /// The references made for its large arguments.
    pub proxied: Vec<Reference>,
}

/// A decoded task.
#[derive(Debug)]
pub struct Decoded<T> {
    /// The arguments: plain fields resolved, `Proxy<T>` fields still lazy.
    pub args: T,
    /// The references the producer made for this task (to evict when it ends).
    pub proxied: Vec<Reference>,
    /// How many references were fetched while decoding (plain fields).
    pub fetched: usize,
    /// How many references were handed to `Proxy<T>` fields unresolved.
    pub lazy: usize,
    /// The task's name and the producer's trace context.
    pub info: TaskInfo,
}

/// What a document encodes: a task's arguments, or its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// A task's arguments ([`TaskCodec::encode`]).
    Arguments,
    /// A task's result ([`TaskCodec::encode_result`]); its references are marked
    /// evict-on-resolve when it is read once.
    Result {
        /// Mark the references evict-on-resolve.
        evict_on_read: bool,
    },
}

/// Counters of a [`TaskCodec`], shared by its clones.
#[derive(Debug, Default)]
pub struct CodecMetrics {
    tasks_encoded: AtomicU64,
    tasks_decoded: AtomicU64,
    args_proxied: AtomicU64,
    bytes_proxied: AtomicU64,
    bytes_inline: AtomicU64,
    refs_fetched: AtomicU64,
    refs_lazy: AtomicU64,
    refs_evicted: AtomicU64,
    results_encoded: AtomicU64,
    results_proxied: AtomicU64,
    result_bytes_proxied: AtomicU64,
    result_bytes_inline: AtomicU64,
}

/// A snapshot of [`CodecMetrics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CodecStats {
    /// Tasks encoded by this codec.
    pub tasks_encoded: u64,
    /// Tasks decoded by this codec.
    pub tasks_decoded: u64,
    /// Arguments put into a store instead of the task.
    pub args_proxied: u64,
    /// Bytes of those arguments (as stored).
    pub bytes_proxied: u64,
    /// Bytes of the task documents (what went through the broker).
    pub bytes_inline: u64,
    /// References resolved while decoding tasks.
    pub refs_fetched: u64,
    /// References handed to `Proxy<T>` fields unresolved.
    pub refs_lazy: u64,
    /// References evicted by cleanup.
    pub refs_evicted: u64,
    /// Task results made into a document ([`TaskCodec::encode_result`]) or a proxy
    /// ([`TaskCodec::proxy_result`]).
    pub results_encoded: u64,
    /// Results put into a store instead of the result document.
    pub results_proxied: u64,
    /// Bytes of those results (as stored).
    pub result_bytes_proxied: u64,
    /// Bytes of the result documents [`TaskCodec::encode_result`] made (what went through the
    /// executor's result storage; a [`TaskCodec::proxy_result`] is serialized by the executor
    /// and not counted here).
    pub result_bytes_inline: u64,
}

impl CodecMetrics {
    /// A result made by [`TaskCodec::proxy_result`].
    pub(crate) fn result_encoded(&self) {
        self.results_encoded.fetch_add(1, Ordering::Relaxed);
    }

    /// ... and put into a store (`size` bytes).
    pub(crate) fn result_proxied(&self, size: u64) {
        self.results_proxied.fetch_add(1, Ordering::Relaxed);
        self.result_bytes_proxied.fetch_add(size, Ordering::Relaxed);
    }

    fn snapshot(&self) -> CodecStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CodecStats {
            tasks_encoded: l(&self.tasks_encoded),
            tasks_decoded: l(&self.tasks_decoded),
            args_proxied: l(&self.args_proxied),
            bytes_proxied: l(&self.bytes_proxied),
            bytes_inline: l(&self.bytes_inline),
            refs_fetched: l(&self.refs_fetched),
            refs_lazy: l(&self.refs_lazy),
            refs_evicted: l(&self.refs_evicted),
            results_encoded: l(&self.results_encoded),
            results_proxied: l(&self.results_proxied),
            result_bytes_proxied: l(&self.result_bytes_proxied),
            result_bytes_inline: l(&self.result_bytes_inline),
        }
    }
}

/// Encodes and decodes tasks, proxying large arguments by policy.
///
/// Cheap to clone; clones share the policy and metrics.
///
/// ```
/// use proxystore::{Proxy, Store, connector::memory::MemoryConnector};
/// use proxystore_middleware::{ArgumentPolicy, TaskCodec};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Train { weights: Vec<f32>, epochs: u32 }
///
/// let store = Store::new("mw-doc", MemoryConnector::new("mw-doc"));
/// let codec = TaskCodec::new(ArgumentPolicy::with_store("mw-doc")).with_store(store);
/// let task = Train { weights: vec![0.1; 1_000_000], epochs: 3 };
///
/// let enc = codec.encode("train", &task).unwrap();
/// assert!(enc.bytes.len() < 1024);            // 4 MB of weights left the task document
/// assert_eq!(enc.proxied.len(), 1);
///
/// let dec = codec.decode::<Train>(&enc.bytes).unwrap();
/// assert_eq!(dec.args.weights.len(), 1_000_000);  // resolved transparently
/// assert_eq!(dec.args.epochs, 3);
/// ```
#[derive(Clone, Debug)]
pub struct TaskCodec {
    pub(crate) policy: Arc<ArgumentPolicy>,
    inner: InnerCodec,
    pub(crate) stores: Stores,
    pub(crate) metrics: Arc<CodecMetrics>,
    pub(crate) result_cleanup: crate::result::ResultCleanup,
}

impl TaskCodec {
    /// A codec with `policy` and JSON documents. Stores named by the policy are looked up in
    /// the process registry unless given with [`TaskCodec::with_store`].
    pub fn new(policy: ArgumentPolicy) -> Self {
        TaskCodec {
            policy: Arc::new(policy),
            inner: InnerCodec::default(),
            stores: Stores::default(),
            metrics: Arc::default(),
            result_cleanup: crate::result::ResultCleanup::default(),
        }
    }

    /// Use `inner` for task documents.
    #[must_use]
    pub fn with_inner(mut self, inner: InnerCodec) -> Self {
        self.inner = inner;
        self
    }

    /// Use `store` for the policy's store of the same name (instead of the registry).
    #[must_use]
    pub fn with_store(mut self, store: Store) -> Self {
        self.stores.add(store);
        self
    }

    /// Install `policy` as this process's resolve policy ([`proxystore::set_resolve_policy`]):
    /// which references a worker rebuilds a store from when the store is not registered here.
    ///
    /// The policy is process-wide, not this codec's: a `Proxy<T>` field resolves lazily, long
    /// after decoding, from `Deref` with no codec at hand, so every resolve in the process must
    /// see the same policy. The last policy installed wins. Without this call the process uses
    /// `PROXYSTORE_RESOLVE_POLICY`, else [`proxystore::ResolvePolicy::default`] (temporary
    /// directories and loopback hosts). An argument outside the policy fails the task with
    /// [`MiddlewareError::Store`] around [`proxystore::Error::Refused`], which is not retryable.
    ///
    /// ```
    /// use proxystore::ResolvePolicy;
    /// use proxystore_middleware::{ArgumentPolicy, TaskCodec};
    ///
    /// let codec = TaskCodec::new(ArgumentPolicy::with_store("shared")).with_resolve_policy(
    ///     ResolvePolicy::default()
    ///         .allow_directory("/mnt/shared/objects")
    ///         .allow_host("redis.internal:6379")?,
    /// );
    /// assert!(proxystore::resolve_policy()?.directories().iter().any(|d| d.ends_with("objects")));
    /// # Ok::<_, proxystore::Error>(())
    /// ```
    #[must_use]
    pub fn with_resolve_policy(self, policy: proxystore::ResolvePolicy) -> Self {
        proxystore::set_resolve_policy(policy);
        self
    }

    /// The policy.
    pub fn policy(&self) -> &ArgumentPolicy {
        &self.policy
    }

    /// The inner codec.
    pub fn inner(&self) -> InnerCodec {
        self.inner
    }

    /// Counters since the codec was built.
    pub fn stats(&self) -> CodecStats {
        self.metrics.snapshot()
    }

    /// Encode the arguments of task `task` (its name, matched by the policy's globs), putting
    /// every argument above the policy into its store.
    ///
    /// Synchronous, as broker codecs are; store puts run on the library's I/O runtime.
    ///
    /// Runs in a `proxystore.encode` span (kind `producer`) whose context the document carries:
    /// the worker's task span continues it (see [`TaskInfo::span`]).
    ///
    /// # Errors
    /// [`MiddlewareError::Store`] when a put fails (the task is then not enqueued; objects already put
    /// for it are evicted), [`MiddlewareError::UnknownStore`], [`MiddlewareError::Encode`].
    pub fn encode<T: Serialize>(&self, task: &str, args: &T) -> Result<Encoded, MiddlewareError> {
        self.encode_with(task, args, Side::Arguments)
    }

    /// [`TaskCodec::encode`] of a task's arguments or of its result.
    pub(crate) fn encode_with<T: Serialize>(
        &self,
        task: &str,
        args: &T,
        side: Side,
    ) -> Result<Encoded, MiddlewareError> {
        let span = tracing::info_span!(
            "proxystore.encode",
            otel.name = format_args!("encode {task}"),
            otel.kind = "producer",
            task,
            proxied = Empty,
            bytes_proxied = Empty,
            bytes_inline = Empty,
            outcome = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        let result = span.in_scope(|| self.encode_in(&span, task, args, side));
        match &result {
            Ok(_) => TaskInfo::record_outcome(&span, None),
            Err(e) => TaskInfo::record_outcome(&span, Some(e)),
        }
        result
    }

    fn encode_in<T: Serialize>(
        &self,
        span: &Span,
        task: &str,
        args: &T,
        side: Side,
    ) -> Result<Encoded, MiddlewareError> {
        let ctx = EncodeCtx {
            policy: &self.policy,
            task,
            stores: &self.stores,
            proxied: Default::default(),
            evict_on_read: side
                == (Side::Result {
                    evict_on_read: true,
                }),
        };
        let tree = TreeSer {
            ctx: &ctx,
            path: "",
            intercept: true,
        }
        .root(args);
        let proxied = ctx.proxied.into_inner();
        let trace = proxystore::trace::inject(span).unwrap_or_default();
        let doc = tree.and_then(|args| {
            self.inner.encode(&Envelope {
                version: ENVELOPE_VERSION,
                task: task.to_owned(),
                traceparent: trace.traceparent,
                tracestate: trace.tracestate,
                proxied: proxied.clone(),
                args,
            })
        });
        let bytes = match doc {
            Ok(b) => b,
            Err(e) => {
                self.evict_now(&proxied);
                return Err(e);
            }
        };
        let proxied_bytes = proxied.iter().map(|r| r.size).sum();
        let m = &self.metrics;
        let (count, objects, stored, inline) = match side {
            Side::Arguments => (
                &m.tasks_encoded,
                &m.args_proxied,
                &m.bytes_proxied,
                &m.bytes_inline,
            ),
            Side::Result { .. } => (
                &m.results_encoded,
                &m.results_proxied,
                &m.result_bytes_proxied,
                &m.result_bytes_inline,
            ),
        };
        count.fetch_add(1, Ordering::Relaxed);
        objects.fetch_add(proxied.len() as u64, Ordering::Relaxed);
        stored.fetch_add(proxied_bytes, Ordering::Relaxed);
        inline.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        span.record("proxied", trace::int(proxied.len()));
        span.record(
            "bytes_proxied",
            trace::int(proxied.iter().map(|r| r.size).sum::<u64>()),
        );
        span.record("bytes_inline", trace::int(bytes.len()));
        Ok(Encoded { bytes, proxied })
    }

    /// Decode a task document: plain fields that were proxied are fetched and decoded in
    /// place; `Proxy<T>` fields stay lazy.
    ///
    /// # Errors
    /// [`MiddlewareError::Store`] when a store is unreachable or an object is missing or corrupt (a task
    /// failure to retry, never a reason to stop a worker), [`MiddlewareError::Decode`].
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<Decoded<T>, MiddlewareError> {
        let envelope: Envelope = self.inner.decode(bytes)?;
        if envelope.version > ENVELOPE_VERSION {
            return Err(MiddlewareError::Decode(format!(
                "task envelope version {} is newer than this build reads ({ENVELOPE_VERSION})",
                envelope.version
            )));
        }
        let arena = Arena::new();
        let ctx = DecodeCtx::new(&arena, &envelope.proxied);
        let args = T::deserialize(TreeDe {
            value: envelope.args,
            ctx: &ctx,
        })?;
        let fetched = ctx.fetched.borrow().len();
        let lazy = ctx.lazy.get();
        let m = &self.metrics;
        m.tasks_decoded.fetch_add(1, Ordering::Relaxed);
        m.refs_fetched.fetch_add(fetched as u64, Ordering::Relaxed);
        m.refs_lazy.fetch_add(lazy as u64, Ordering::Relaxed);
        let span = Span::current();
        span.record("fetched", trace::int(fetched));
        span.record("lazy", trace::int(lazy));
        Ok(Decoded {
            args,
            proxied: envelope.proxied,
            fetched,
            lazy,
            info: TaskInfo {
                task: envelope.task,
                trace: TraceContext::from_parts(&envelope.traceparent, &envelope.tracestate),
            },
        })
    }

    /// The task's name and the producer's trace context, without decoding the arguments: a
    /// worker opens the task's span ([`TaskInfo::span`]) with it, then decodes inside that
    /// span so that the resolves of proxied arguments are part of the task's trace.
    ///
    /// # Errors
    /// [`MiddlewareError::Decode`] when the document is not a task envelope.
    pub fn task_info(&self, bytes: &[u8]) -> Result<TaskInfo, MiddlewareError> {
        let head: Head = self.inner.decode(bytes)?;
        if head.version > ENVELOPE_VERSION {
            return Err(MiddlewareError::Decode(format!(
                "task envelope version {} is newer than this build reads ({ENVELOPE_VERSION})",
                head.version
            )));
        }
        Ok(TaskInfo {
            task: head.task,
            trace: TraceContext::from_parts(&head.traceparent, &head.tracestate),
        })
    }

    /// The references a task document owns, without decoding its arguments.
    ///
    /// # Errors
    /// [`MiddlewareError::Decode`] when the document is not a task envelope.
    pub fn proxied_of(&self, bytes: &[u8]) -> Result<Vec<Reference>, MiddlewareError> {
        Ok(self.inner.decode::<Envelope>(bytes)?.proxied)
    }

    /// Give the objects of `refs` to one [`proxystore::Lease`] of `ttl` per store (evicted when
    /// it expires, unless evicted before); the leases' sweepers outlive this call.
    ///
    /// # Errors
    /// [`MiddlewareError::Store`] for the first reference whose store cannot be found or whose
    /// lease refused it (the others are still leased).
    pub fn lease(
        &self,
        refs: &[Reference],
        ttl: std::time::Duration,
    ) -> Result<(), MiddlewareError> {
        use proxystore::Lifetime;
        let mut leases: Vec<(String, proxystore::Lease, Store)> = Vec::new();
        let mut first_error = None;
        for r in refs {
            let store = match proxystore::Factory::<()>::new(r.clone()).store() {
                Ok(s) => s,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            let i = match leases.iter().position(|(n, _, _)| *n == r.store) {
                Some(i) => i,
                None => {
                    let lease = proxystore::Lease::new(&store, ttl);
                    leases.push((r.store.clone(), lease, store));
                    leases.len() - 1
                }
            };
            let (_, lease, store) = &leases[i];
            if let Err(e) = lease.add_key(store, r.key.clone()) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), |e| Err(e.into()))
    }

    /// Evict the objects of `refs` (a finished task's arguments).
    ///
    /// # Errors
    /// [`MiddlewareError::Store`] for the first eviction that failed (the others are still attempted).
    pub async fn cleanup(&self, refs: &[Reference]) -> Result<(), MiddlewareError> {
        let mut first_error = None;
        for r in refs {
            let store = match proxystore::Factory::<()>::new(r.clone()).store() {
                Ok(s) => s,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            match store.evict(&r.key).await {
                Ok(()) => {
                    self.metrics.refs_evicted.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), |e| Err(MiddlewareError::Store(e)))
    }

    fn evict_now(&self, refs: &[Reference]) {
        if refs.is_empty() {
            return;
        }
        let this = self.clone();
        let refs = refs.to_vec();
        if let Ok(Err(e)) = proxystore::runtime::block_on(async move { this.cleanup(&refs).await })
        {
            tracing::warn!(error = %e, "could not evict the objects of a task that failed to encode");
        }
    }
}
