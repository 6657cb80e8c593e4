//! The worker side: resolution inside the task, cleanup when the task is finished for good.
//!
//! apalis runs a worker's services in this order, outermost first (measured, and read in
//! `Worker::stream`): the backend's own middleware (for apalis-redis, the layer that records each
//! outcome and reschedules failures), the user's layers in the order of their `.layer()` calls
//! (the first one outermost), the lifecycle service (counts the attempt, sets the status from the
//! result), then the task function. [`resolve`] puts:
//!
//! - the middleware's [`ResolveService`], reading apalis tasks through [`ApalisTasks`], where the
//!   task function is, inside the lifecycle: it resolves the arguments on a blocking thread, and
//!   a store failure is a failed attempt like any other (counted, rescheduled, retried by a retry
//!   layer);
//! - [`CleanupLayer`] in the backend's middleware, inside the outcome recorder but outside every
//!   user layer: it sees the result after any retry layer, and evicts the task's objects when the
//!   task succeeded or failed for the last time.
//!
//! Each attempt runs in a `proxystore.task` span (named after the task, kind `consumer`, with
//! `task_id` and `attempt`) whose parent is the producer's `proxystore.encode` span, carried in
//! the task document: the resolves of its arguments, the task function's own spans and the
//! final evictions continue the trace of the code that enqueued the task.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use apalis_core::backend::finalize::FinalizeBackend;
use apalis_core::backend::{Backend, BackendConfig, WireFormatBackend};
use apalis_core::error::{AbortError, BoxDynError};
use apalis_core::task::status::Status;
use apalis_core::task::task_fn::{TaskFn, task_fn};
use apalis_core::task::{ExecutionContext, Task};
use apalis_core::worker::context::WorkerContext;
use apalis_core::worker::service::{IntoWorkerService, WorkerService};
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use proxystore::Reference;
use proxystore::lifetime::DropCollector;
use proxystore_middleware::{BoxError, Eviction, Executor, MiddlewareError, ResolveService};
use tower_layer::{Layer, Stack};
use tower_service::Service;
use tracing::{Instrument, Span};

use crate::codec::{ProxyCodec, Unresolved};
use crate::error::ResolveError;

/// apalis-redis gives up on a task after this many attempts whatever its `max_attempts`
/// (hard-coded in its `handle_results.lua`); the last attempt is the earlier of the two.
pub const APALIS_REDIS_ATTEMPT_CAP: usize = 25;

/// Build a worker whose task function receives its usual argument type, with every proxied
/// argument resolved: pass the task function through this in `WorkerBuilder::build`.
///
/// The storage must carry a [`ProxyCodec`] (`storage.with_codec(ProxyCodec::new(..))`).
///
/// ```no_run
/// # async fn doc() -> Result<(), Box<dyn std::error::Error>> {
/// use apalis_core::backend::ext::BackendExt;
/// use apalis_core::worker::builder::WorkerBuilder;
/// use apalis_redis::RedisStorage;
/// use proxystore_apalis::{ProxyCodec, resolve};
/// use proxystore_middleware::{ArgumentPolicy, TaskCodec};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Train { weights: Vec<f32>, epochs: u32 }
///
/// async fn train(job: Train) -> Result<f32, std::io::Error> {
///     Ok(job.weights.iter().sum::<f32>() * job.epochs as f32)
/// }
///
/// let conn = proxystore_apalis::connect("redis://127.0.0.1/").await?;
/// let codec = ProxyCodec::new(TaskCodec::new(ArgumentPolicy::with_store("shared")));
/// let storage = RedisStorage::<Train>::new(conn)
///     .with_codec(codec)
///     .poll_with_strategy(proxystore_apalis::PollEvery::millis(100));
/// WorkerBuilder::new("trainer").backend(storage).build(resolve(train)).run().await?;
/// # Ok(()) }
/// ```
pub fn resolve<F>(handler: F) -> Resolve<F> {
    Resolve { handler }
}

/// A task function that resolves proxied arguments first; see [`resolve`].
#[derive(Clone)]
pub struct Resolve<F> {
    handler: F,
}

impl<F> fmt::Debug for Resolve<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolve")
            .field("handler", &std::any::type_name::<F>())
            .finish()
    }
}

impl<B, A, F, FnArgs, O> IntoWorkerService<B, ResolveService<TaskFn<F, A, FnArgs>, A, ApalisTasks>>
    for Resolve<F>
where
    B: Backend + BackendConfig<Args = A> + WireFormatBackend<Codec = ProxyCodec>,
    B::Kind: FinalizeBackend<B, Unresolved<A>, Backend = O>,
    O: Backend<Task = Task<Unresolved<A>>> + BackendConfig<Args = Unresolved<A>>,
    TaskFn<F, A, FnArgs>: Service<Task<A>>,
    ResolveService<TaskFn<F, A, FnArgs>, A, ApalisTasks>: Service<Task<Unresolved<A>>>,
{
    type Task = Task<Unresolved<A>>;
    type Backend = ProxyBackend<O>;

    fn into_service(
        self,
        backend: B,
    ) -> WorkerService<ProxyBackend<O>, ResolveService<TaskFn<F, A, FnArgs>, A, ApalisTasks>> {
        let codec = backend.codec().clone();
        let backend = <B::Kind as FinalizeBackend<B, Unresolved<A>>>::finalize(backend);
        WorkerService {
            backend: ProxyBackend::new(backend, codec.clone()),
            service: ResolveService::new(
                task_fn(self.handler),
                codec.task_codec().clone(),
                ApalisTasks,
            ),
        }
    }
}

/// Where [`ApalisTasks`] tells [`CleanupService`] which references a task owns, so that the
/// document is parsed once, and in which span the task ran, so that the evictions join it.
#[derive(Clone, Default)]
struct TaskRefs(Arc<Mutex<Reported>>);

#[derive(Default)]
struct Reported {
    refs: Option<Vec<Reference>>,
    span: Option<Span>,
    /// The owned proxies the attempt dropped (evicted with the arguments).
    dropped: Arc<DropCollector>,
}

impl TaskRefs {
    fn set(&self, refs: Vec<Reference>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).refs = Some(refs);
    }

    fn set_span(&self, span: Span) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).span = Some(span);
    }

    fn take(&self) -> Reported {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn dropped(&self) -> Arc<DropCollector> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .dropped
            .clone()
    }
}

/// The [`Executor`] of apalis tasks: how [`ResolveService`] reads a `Task<Unresolved<A>>` and
/// calls the task function with a `Task<A>`.
///
/// The task's objects are evicted by [`CleanupLayer`] (which sees the outcome after every retry
/// layer), so this hands it the task's references and span. A store failure fails the attempt
/// with a [`ResolveError`] (apalis retries it); a document that cannot be decoded, or a reference
/// the resolve policy refuses, fails it with an [`AbortError`] around one (no retry can fix it).
#[derive(Clone, Copy, Debug, Default)]
pub struct ApalisTasks;

impl<A> Executor<Task<Unresolved<A>>, A> for ApalisTasks {
    type Resolved = Task<A>;

    fn document(&self, task: &Task<Unresolved<A>>) -> Bytes {
        task.args.bytes().clone()
    }

    fn attempt(&self, task: &Task<Unresolved<A>>) -> u32 {
        u32::try_from(task.ctx().attempt()).unwrap_or(u32::MAX)
    }

    fn task_id(&self, task: &Task<Unresolved<A>>) -> Option<String> {
        task.ctx().task_id().map(ToString::to_string)
    }

    fn eviction(&self, task: &Task<Unresolved<A>>, proxied: &[Reference], span: &Span) -> Eviction {
        if let Some(slot) = task.data().get::<TaskRefs>() {
            slot.set(proxied.to_vec());
            slot.set_span(span.clone());
        }
        Eviction::Elsewhere
    }

    fn resolved(&self, task: Task<Unresolved<A>>, args: A) -> Task<A> {
        task.map_args(|_| args)
    }

    /// [`CleanupLayer`]'s collector: it evicts the owned inputs the task dropped once the task
    /// is finished for good, and keeps them for a retry otherwise.
    fn drop_collector(&self, task: &Task<Unresolved<A>>) -> Option<Arc<DropCollector>> {
        task.data().get::<TaskRefs>().map(TaskRefs::dropped)
    }

    fn resolve_failed(&self, task: &Task<Unresolved<A>>, error: MiddlewareError) -> BoxError {
        let e = ResolveError::new(task.ctx().task_id().map(ToString::to_string), error);
        if e.is_retryable() {
            Box::new(e)
        } else {
            Box::new(AbortError::new(e))
        }
    }
}

/// The finalized backend of a [`resolve`] worker: the storage's own, with [`CleanupLayer`]
/// added to its middleware.
pub struct ProxyBackend<B> {
    inner: B,
    codec: ProxyCodec,
}

impl<B> ProxyBackend<B> {
    /// Wrap a finalized backend that yields [`Unresolved`] tasks.
    pub fn new(inner: B, codec: ProxyCodec) -> Self {
        ProxyBackend { inner, codec }
    }

    /// The wrapped backend.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: fmt::Debug> fmt::Debug for ProxyBackend<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyBackend")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Backend for ProxyBackend<B> {
    type Task = B::Task;
    type Error = B::Error;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), B::Error>> {
        self.inner.poll_ready(cx, worker)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<B::Task, B::Error>>> {
        self.inner.poll_next(cx, worker)
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), B::Error>> {
        self.inner.poll_close(cx, worker)
    }
}

impl<B: BackendConfig> BackendConfig for ProxyBackend<B> {
    type Args = B::Args;
    type Id = B::Id;
    type Kind = B::Kind;
    type Config = B::Config;
    type Layer = Stack<CleanupLayer, B::Layer>;

    fn config(&self) -> &B::Config {
        self.inner.config()
    }

    fn middleware(&mut self, worker: &mut WorkerContext) -> Self::Layer {
        // `Stack::new(inner, outer)`: cleanup runs inside the backend's outcome recorder, so the
        // status it may set (Killed after the last attempt) is the one recorded.
        Stack::new(
            CleanupLayer::new(self.codec.clone()),
            self.inner.middleware(worker),
        )
    }
}

/// Evicts a task's objects when the task is finished for good: after a success, or after a
/// failure that will not be retried (killed, or its last attempt). On the last attempt it marks
/// the task `Killed`, so that a backend which would retry further (apalis-redis retries up to
/// attempt 25 whatever `max_attempts` says) does not run it again without its arguments.
#[derive(Clone, Debug)]
pub struct CleanupLayer {
    codec: ProxyCodec,
}

impl CleanupLayer {
    /// A layer evicting through `codec`'s stores.
    pub fn new(codec: ProxyCodec) -> Self {
        CleanupLayer { codec }
    }
}

impl<S> Layer<S> for CleanupLayer {
    type Service = CleanupService<S>;

    fn layer(&self, inner: S) -> CleanupService<S> {
        CleanupService {
            inner,
            codec: self.codec.clone(),
        }
    }
}

/// The service made by [`CleanupLayer`].
#[derive(Clone, Debug)]
pub struct CleanupService<S> {
    inner: S,
    codec: ProxyCodec,
}

/// Whether a failed task will not be run again.
fn finally_failed(ctx: &ExecutionContext) -> bool {
    if ctx.status() == Status::Killed {
        return true;
    }
    let limit = ctx
        .max_attempts()
        .unwrap_or(APALIS_REDIS_ATTEMPT_CAP)
        .min(APALIS_REDIS_ATTEMPT_CAP);
    ctx.attempt() >= limit
}

impl<S, A> Service<Task<Unresolved<A>>> for CleanupService<S>
where
    S: Service<Task<Unresolved<A>>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxDynError>,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<S::Response, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxDynError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut task: Task<Unresolved<A>>) -> Self::Future {
        let slot = TaskRefs::default();
        task.inject_data(slot.clone());
        let bytes = task.args.bytes().clone();
        let ctx = task.ctx().clone();
        let fut = self.inner.call(task);
        let codec = self.codec.task_codec().clone();
        async move {
            let result = fut.await.map_err(Into::into);
            let finished = result.is_ok() || finally_failed(&ctx);
            if !finished {
                return result;
            }
            if result.is_err() {
                ctx.raw_status().store(Status::Killed);
            }
            // The resolver reports the references; if it never ran (a layer failed the task
            // first), read them from the document.
            let Reported {
                refs,
                span,
                dropped,
            } = slot.take();
            // Promises the task dropped unset fail with its error (or as dropped).
            let error = result.as_ref().err().map(ToString::to_string);
            if let Err(e) = dropped.finish(error).await {
                tracing::warn!(error = %e, "could not evict the owned inputs of a finished task");
            }
            let refs = refs
                .or_else(|| codec.proxied_of(&bytes).ok())
                .unwrap_or_default();
            if !refs.is_empty()
                && let Err(e) = codec
                    .cleanup(&refs)
                    .instrument(span.unwrap_or_else(Span::current))
                    .await
            {
                tracing::warn!(error = %e, "could not evict the arguments of a finished task");
            }
            result
        }
        .boxed()
    }
}
