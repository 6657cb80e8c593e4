//! The worker side as a tower layer, for any tower-based executor: resolves a task's proxied
//! arguments (off the async threads), calls the task, and evicts the task's objects when it is
//! finished for good, or hands them to the executor to evict.
//!
//! The layer knows an executor's requests through an [`Executor`]: where the task document is,
//! which attempt this is, how to build the request of the service it wraps, and who evicts the
//! task's objects. [`TaskPayloads`], the default, serves [`TaskPayload`] requests and calls the
//! wrapped service with the bare arguments; executor plugins (such as `proxystore-apalis`)
//! implement [`Executor`] for their own request types.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use proxystore::Reference;
use proxystore::lifetime::{DropCollector, with_drop_owner, with_drop_owner_sync};
use serde::de::DeserializeOwned;
use tower_layer::Layer;
use tower_service::Service;
use tracing::{Instrument, Span};

use crate::codec::{TaskCodec, TaskInfo};
use crate::error::MiddlewareError;

/// The error of a [`ResolveService`]: the wrapped service's error, or the resolve failure as
/// [`Executor::resolve_failed`] made it (by default the [`MiddlewareError`] itself). It is the
/// core's `BoxError`, the same type as tower's; downcast it to get a typed error back.
pub use proxystore::error::BoxError;

/// The future of [`ResolveService`].
pub type ResolveFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// A task as it arrives from a broker: the encoded document and where it is in its retries.
#[derive(Clone, Debug)]
pub struct TaskPayload {
    /// The document made by [`TaskCodec::encode`].
    pub bytes: Bytes,
    /// Attempt number, starting at 0.
    pub attempt: u32,
    /// Attempts the executor makes in all; the objects are kept until the last one ends.
    pub max_attempts: u32,
}

impl TaskPayload {
    /// A payload for a task that is not retried.
    pub fn once(bytes: impl Into<Bytes>) -> Self {
        TaskPayload {
            bytes: bytes.into(),
            attempt: 0,
            max_attempts: 1,
        }
    }

    /// Whether the executor will not run this task again if this attempt fails.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt.saturating_add(1) >= self.max_attempts
    }
}

/// Who evicts a task's objects once the task is finished for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// [`ResolveService`] does: after the task succeeds, or after it fails when this is its last
    /// attempt.
    Here {
        /// Whether the executor will not run the task again if this attempt fails.
        last_attempt: bool,
    },
    /// The executor does (for instance from a layer that sees the outcome after its retries),
    /// with the references [`Executor::eviction`] was given.
    Elsewhere,
}

/// How a [`ResolveService`] reads an executor's requests (`Req`) and builds the requests of the
/// service it wraps, whose task arguments are of type `Args`.
///
/// Implemented by a small value held by the layer, so that an executor plugin can describe
/// request types it does not own.
pub trait Executor<Req, Args>: Clone + Send + 'static {
    /// The request of the wrapped service: the arguments, or the executor's task around them.
    type Resolved;

    /// The task document in `req`, as [`TaskCodec::encode`] made it.
    fn document(&self, req: &Req) -> Bytes;

    /// The attempt `req` is, starting at 0 (recorded as the span's `attempt`).
    fn attempt(&self, req: &Req) -> u32;

    /// The executor's id of the task, if it has one (recorded as the span's `task_id`).
    fn task_id(&self, _req: &Req) -> Option<String> {
        None
    }

    /// Who evicts the task's objects. Called once per attempt, before the task runs (or after
    /// its arguments failed to resolve), with the references the task owns and the span the
    /// attempt runs in; an executor that evicts them itself keeps them from here.
    fn eviction(&self, req: &Req, proxied: &[Reference], span: &Span) -> Eviction;

    /// The request of the wrapped service, from `req` and its resolved arguments.
    fn resolved(&self, req: Req, args: Args) -> Self::Resolved;

    /// Where the owned proxies (`proxystore::OwnedProxy`) the task drops go (see
    /// [`proxystore::lifetime::with_drop_owner`]): kept, not evicted, so that a retried attempt
    /// finds its owned inputs. `None` (the default): [`ResolveService`] collects them and evicts
    /// them when the task is over (with its arguments under [`Eviction::Here`]; after a success
    /// otherwise). An executor that evicts elsewhere returns its own collector and evicts it
    /// there.
    fn drop_collector(&self, _req: &Req) -> Option<Arc<DropCollector>> {
        None
    }

    /// The error the attempt fails with when the arguments cannot be resolved. By default the
    /// [`MiddlewareError`] itself; [`MiddlewareError::is_retryable`] says whether another attempt
    /// may succeed.
    fn resolve_failed(&self, _req: &Req, error: MiddlewareError) -> BoxError {
        Box::new(error)
    }
}

/// The [`Executor`] of [`TaskPayload`] requests: the wrapped service receives the bare
/// arguments, and [`ResolveService`] evicts the task's objects itself (after a success, or after
/// a failure of the last attempt).
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskPayloads;

impl<Args> Executor<TaskPayload, Args> for TaskPayloads {
    type Resolved = Args;

    fn document(&self, req: &TaskPayload) -> Bytes {
        req.bytes.clone()
    }

    fn attempt(&self, req: &TaskPayload) -> u32 {
        req.attempt
    }

    fn eviction(&self, req: &TaskPayload, _: &[Reference], _: &Span) -> Eviction {
        Eviction::Here {
            last_attempt: req.is_last_attempt(),
        }
    }

    fn resolved(&self, _: TaskPayload, args: Args) -> Args {
        args
    }
}

/// Wraps a service of resolved tasks into a service of encoded ones.
///
/// Each attempt runs in a `proxystore.task` span that continues the trace of the code that
/// encoded the task (see [`crate::TaskInfo::span`]), with its `attempt` (and `task_id` when the
/// executor has one): decoding, the task and the cleanup. Decoding fetches the proxied plain
/// fields on a blocking thread of ProxyStore's I/O runtime, never on the executor's async
/// threads; `Proxy<T>` fields stay lazy.
///
/// `Args` is the type the task's arguments are decoded to; `X` reads the executor's requests
/// (by default [`TaskPayloads`]: requests are [`TaskPayload`]s, the wrapped service gets `Args`).
/// The wrapped service must be `Clone`: the ready one moves into the call's future.
///
/// ```
/// # proxystore::runtime::block_on(async {
/// use proxystore::{Store, connector::memory::MemoryConnector};
/// use proxystore_middleware::{ArgumentPolicy, ResolveLayer, TaskCodec, TaskPayload};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// let store = Store::new("layer-doc", MemoryConnector::new("layer-doc"));
/// let codec = TaskCodec::new(ArgumentPolicy::from_parts("layer-doc".into(), 1000))
///     .with_store(store.clone());
/// let svc = ServiceBuilder::new()
///     .layer(ResolveLayer::<Vec<u64>>::new(codec.clone()))
///     .service(service_fn(|v: Vec<u64>| async move {
///         Ok::<_, std::io::Error>(v.iter().sum::<u64>())
///     }));
/// let enc = codec.encode("sum", &(0..10_000u64).collect::<Vec<_>>()).unwrap();
/// let total = svc.oneshot(TaskPayload::once(enc.bytes)).await.unwrap();
/// assert_eq!(total, 49_995_000);
/// # })
/// # .unwrap();
/// ```
pub struct ResolveLayer<Args, X = TaskPayloads> {
    codec: TaskCodec,
    executor: X,
    _args: PhantomData<fn() -> Args>,
}

impl<Args> ResolveLayer<Args> {
    /// A layer for [`TaskPayload`] requests, decoding with `codec`.
    pub fn new(codec: TaskCodec) -> Self {
        ResolveLayer::with_executor(codec, TaskPayloads)
    }
}

impl<Args, X> ResolveLayer<Args, X> {
    /// A layer for the requests `executor` reads, decoding with `codec`.
    pub fn with_executor(codec: TaskCodec, executor: X) -> Self {
        ResolveLayer {
            codec,
            executor,
            _args: PhantomData,
        }
    }

    /// The codec.
    pub fn codec(&self) -> &TaskCodec {
        &self.codec
    }
}

impl<Args, X: Clone> Clone for ResolveLayer<Args, X> {
    fn clone(&self) -> Self {
        ResolveLayer::with_executor(self.codec.clone(), self.executor.clone())
    }
}

impl<Args, X: fmt::Debug> fmt::Debug for ResolveLayer<Args, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolveLayer")
            .field("args", &std::any::type_name::<Args>())
            .field("executor", &self.executor)
            .field("codec", &self.codec)
            .finish()
    }
}

impl<S, Args, X: Clone> Layer<S> for ResolveLayer<Args, X> {
    type Service = ResolveService<S, Args, X>;

    fn layer(&self, inner: S) -> Self::Service {
        ResolveService::new(inner, self.codec.clone(), self.executor.clone())
    }
}

/// The service made by [`ResolveLayer`].
pub struct ResolveService<S, Args, X = TaskPayloads> {
    inner: S,
    codec: TaskCodec,
    executor: X,
    _args: PhantomData<fn() -> Args>,
}

impl<S, Args, X> ResolveService<S, Args, X> {
    /// Wrap `inner`, a service of resolved tasks, decoding with `codec` the requests `executor`
    /// reads.
    pub fn new(inner: S, codec: TaskCodec, executor: X) -> Self {
        ResolveService {
            inner,
            codec,
            executor,
            _args: PhantomData,
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
}

impl<S: Clone, Args, X: Clone> Clone for ResolveService<S, Args, X> {
    fn clone(&self) -> Self {
        ResolveService::new(
            self.inner.clone(),
            self.codec.clone(),
            self.executor.clone(),
        )
    }
}

impl<S, Args, X: fmt::Debug> fmt::Debug for ResolveService<S, Args, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolveService")
            .field("args", &std::any::type_name::<Args>())
            .field("executor", &self.executor)
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

impl<S, Args, X, Req> Service<Req> for ResolveService<S, Args, X>
where
    X: Executor<Req, Args>,
    S: Service<X::Resolved> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    Args: DeserializeOwned + Send + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResolveFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The ready service goes into the future; a fresh clone waits for the next poll_ready.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let codec = self.codec.clone();
        let executor = self.executor.clone();
        let bytes = executor.document(&req);
        let attempt = executor.attempt(&req);
        let span = codec.task_info(&bytes).unwrap_or_default().span();
        if !span.is_disabled() {
            if let Some(id) = executor.task_id(&req) {
                span.record("task_id", tracing::field::display(id));
            }
            span.record("attempt", i64::from(attempt));
        }
        let task_span = span.clone();
        Box::pin(
            async move {
                let decoding = {
                    let codec = codec.clone();
                    let bytes = bytes.clone();
                    let span = task_span.clone();
                    // Decoding fetches and decodes megabytes: keep it off the async threads.
                    proxystore::runtime::io_handle()
                        .spawn_blocking(move || span.in_scope(|| codec.decode::<Args>(&bytes)))
                };
                let decoded = decoding.await.unwrap_or_else(|e| {
                    Err(MiddlewareError::Decode(format!(
                        "the resolving thread failed: {e}"
                    )))
                });
                match decoded {
                    Ok(d) => {
                        let eviction = executor.eviction(&req, &d.proxied, &task_span);
                        let (collector, ours) = match executor.drop_collector(&req) {
                            Some(c) => (c, false),
                            None => (Arc::new(DropCollector::new()), true),
                        };
                        let resolved = executor.resolved(req, d.args);
                        // `call` inside the scope too: a service may drop its arguments
                        // before it returns a future.
                        let attempt =
                            with_drop_owner_sync(collector.clone(), || inner.call(resolved));
                        let result = with_drop_owner(collector.clone(), attempt)
                            .await
                            .map_err(Into::into);
                        TaskInfo::record_outcome(
                            &task_span,
                            result.as_ref().err().map(|e| e as &dyn fmt::Display),
                        );
                        let over = match eviction {
                            Eviction::Here { last_attempt } => result.is_ok() || last_attempt,
                            Eviction::Elsewhere => result.is_ok(),
                        };
                        if over && matches!(eviction, Eviction::Here { .. }) {
                            evict(&codec, &d.proxied).await;
                        }
                        if ours {
                            if over {
                                let error = result.as_ref().err().map(ToString::to_string);
                                if let Err(e) = collector.finish(error).await {
                                    tracing::warn!(error = %e, "could not evict a finished task's owned objects");
                                }
                            } else {
                                collector.forget();
                            }
                        }
                        result
                    }
                    Err(e) => {
                        let refs = codec.proxied_of(&bytes).unwrap_or_default();
                        let eviction = executor.eviction(&req, &refs, &task_span);
                        let error = executor.resolve_failed(&req, e);
                        TaskInfo::record_outcome(&task_span, Some(&error));
                        tracing::warn!(error = %error, attempt, "task arguments not resolved");
                        if eviction == (Eviction::Here { last_attempt: true }) {
                            evict(&codec, &refs).await;
                        }
                        Err(error)
                    }
                }
            }
            .instrument(span),
        )
    }
}

async fn evict(codec: &TaskCodec, refs: &[Reference]) {
    if !refs.is_empty()
        && let Err(e) = codec.cleanup(refs).await
    {
        tracing::warn!(error = %e, "could not evict a finished task's arguments");
    }
}
