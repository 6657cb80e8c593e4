//! A tower layer for the worker side of any tower-based executor: decodes (resolving proxied
//! arguments), calls the task, and evicts the task's objects when it is finished for good.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

use crate::codec::TaskCodec;
use crate::error::MiddlewareError;

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

    fn is_last_attempt(&self) -> bool {
        self.attempt.saturating_add(1) >= self.max_attempts
    }
}

/// Wraps a service of decoded task arguments into a service of [`TaskPayload`]s.
///
/// Each task runs in a `proxystore.task` span that continues the trace of the code that
/// encoded it (see [`crate::TaskInfo::span`]): decoding, the task and the cleanup.
///
/// ```
/// # proxystore::runtime::block_on(async {
/// use proxystore::{Store, connector::memory::MemoryConnector};
/// use proxystore_middleware::{ArgumentPolicy, ResolveLayer, TaskCodec, TaskPayload};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// let store = Store::new("layer-doc", MemoryConnector::new("layer-doc"));
/// let codec = TaskCodec::new(ArgumentPolicy::from_parts("layer-doc".into(), 1000)).with_store(store.clone());
/// let svc = ServiceBuilder::new()
///     .layer(ResolveLayer::<Vec<u64>>::new(codec.clone()))
///     .service(service_fn(|v: Vec<u64>| async move {
///         Ok::<_, proxystore_middleware::MiddlewareError>(v.iter().sum::<u64>())
///     }));
/// let enc = codec.encode("sum", &(0..10_000u64).collect::<Vec<_>>()).unwrap();
/// let total = svc.oneshot(TaskPayload::once(enc.bytes)).await.unwrap();
/// assert_eq!(total, 49_995_000);
/// # })
/// # .unwrap();
/// ```
pub struct ResolveLayer<Args> {
    codec: TaskCodec,
    _args: PhantomData<fn() -> Args>,
}

impl<Args> ResolveLayer<Args> {
    /// A layer decoding with `codec`.
    pub fn new(codec: TaskCodec) -> Self {
        ResolveLayer {
            codec,
            _args: PhantomData,
        }
    }
}

impl<Args> Clone for ResolveLayer<Args> {
    fn clone(&self) -> Self {
        ResolveLayer::new(self.codec.clone())
    }
}

impl<Args> std::fmt::Debug for ResolveLayer<Args> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolveLayer")
            .field("codec", &self.codec)
            .finish()
    }
}

impl<S, Args> Layer<S> for ResolveLayer<Args> {
    type Service = ResolveService<S, Args>;
    fn layer(&self, inner: S) -> Self::Service {
        ResolveService {
            inner,
            codec: self.codec.clone(),
            _args: PhantomData,
        }
    }
}

/// The service made by [`ResolveLayer`].
pub struct ResolveService<S, Args> {
    inner: S,
    codec: TaskCodec,
    _args: PhantomData<fn() -> Args>,
}

impl<S: Clone, Args> Clone for ResolveService<S, Args> {
    fn clone(&self) -> Self {
        ResolveService {
            inner: self.inner.clone(),
            codec: self.codec.clone(),
            _args: PhantomData,
        }
    }
}

impl<S, Args> ResolveService<S, Args> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, consuming the wrapper.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The future of [`ResolveService`].
pub type ResolveFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, Args> Service<TaskPayload> for ResolveService<S, Args>
where
    S: Service<Args>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: From<MiddlewareError> + Send + 'static,
    Args: DeserializeOwned,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResolveFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, payload: TaskPayload) -> Self::Future {
        let codec = self.codec.clone();
        let last = payload.is_last_attempt();
        let span = codec.task_info(&payload.bytes).unwrap_or_default().span();
        span.record("attempt", payload.attempt);
        match span.in_scope(|| codec.decode::<Args>(&payload.bytes)) {
            Err(e) => {
                crate::TaskInfo::record_outcome(&span, Some(&e));
                if last && let Ok(refs) = codec.proxied_of(&payload.bytes) {
                    return Box::pin(
                        async move {
                            let _ = codec.cleanup(&refs).await;
                            Err(e.into())
                        }
                        .instrument(span),
                    );
                }
                Box::pin(std::future::ready(Err(e.into())))
            }
            Ok(decoded) => {
                let fut = span.in_scope(|| self.inner.call(decoded.args));
                let refs = decoded.proxied;
                let outcome = span.clone();
                Box::pin(
                    async move {
                        let result = fut.await;
                        let failed = result.as_ref().err().map(|_| "the task failed");
                        crate::TaskInfo::record_outcome(
                            &outcome,
                            failed.as_ref().map(|m| m as &dyn std::fmt::Display),
                        );
                        if (result.is_ok() || last)
                            && let Err(e) = codec.cleanup(&refs).await
                        {
                            tracing::warn!(error = %e, "could not evict a finished task's arguments");
                        }
                        result
                    }
                    .instrument(span),
                )
            }
        }
    }
}
