//! The store service alone, as a tower `Service` to mount in any tonic router.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use proxystore::connector::grpc::rpc_trace::{RpcTrace, Side};
use proxystore_proto::splice::{GET_PATH, spliced_unless_compressed};
use proxystore_proto::v1::store_service_server::StoreServiceServer;
use tonic::codegen::{Service, StdError, http};
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;

use crate::ServerError;
use crate::accounting::Accounting;
use crate::auth::BearerAuth;
use crate::config::ServerConfig;
use crate::service::{Limits, StoreSvc};

type Stack = RpcTrace<InterceptedService<StoreServiceServer<StoreSvc>, BearerAuth>>;

/// `proxystore_rs.v1.StoreService` with the bearer-token check, limits and tracing of a
/// [`ServerConfig`], made by [`store_service`]; cheap to clone (clones share the store).
///
/// It is a tower [`Service`] over HTTP/2 gRPC requests with a [`NamedService`] name, so it can
/// be added to any tonic router next to an application's own services, or called directly.
#[derive(Clone)]
pub struct StoreService {
    stack: Stack,
    svc: StoreSvc,
    /// Stops the sweeper when the last clone is dropped.
    _sweeper: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for StoreService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreService").finish_non_exhaustive()
    }
}

impl StoreService {
    /// Begin a graceful shutdown of the service's long-lived `Session` streams: each finishes
    /// the calls it has read and ends, so that a server waiting for its calls in flight is not
    /// held up by idle sessions. [`crate::Server`] calls it when its shutdown signal fires; a
    /// router that mounts the service itself calls it before (or as) it shuts down. Calls made
    /// afterwards on new streams are served as before.
    pub fn stop_sessions(&self) {
        self.svc.stop_sessions();
    }
}

impl NamedService for StoreService {
    const NAME: &'static str = proxystore_proto::STORE_SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for StoreService
where
    B: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        <Stack as Service<http::Request<B>>>::poll_ready(&mut self.stack, cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // A Get's large chunks go out from the object's own bytes (`splice`).
        let get = request.uri().path() == GET_PATH;
        let response = self.stack.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            // tonic refuses a request message over the size limit with OUT_OF_RANGE before the
            // service sees it; the proto documents RESOURCE_EXHAUSTED (the Put stream's later
            // messages are mapped by the service itself).
            let status = response.headers().get("grpc-status");
            if status.is_some_and(|v| v.as_bytes() == b"11") {
                response.headers_mut().insert(
                    "grpc-status",
                    http::HeaderValue::from_static("8"), // RESOURCE_EXHAUSTED
                );
            }
            Ok(if get {
                let (parts, body) = response.into_parts();
                let body = spliced_unless_compressed(&parts.headers, body);
                http::Response::from_parts(parts, body)
            } else {
                response.map(tonic::body::Body::new)
            })
        })
    }
}

/// The store service of `config`, without a listener: for mounting the store in a tonic
/// router of one's own (or calling it in-process). [`crate::Server`] serves the same service,
/// next to health and reflection.
///
/// Of `config` it uses the backend, the object, total and message-size limits, the chunk
/// size, the token and the sweep interval; the address, TLS and shutdown settings belong to
/// whoever serves it. Each call runs in a `grpc.server` span continuing the caller's trace
/// context. Expired objects are evicted in the background (every
/// [`ServerConfig::sweep_interval`]) for as long as a clone of the service exists.
///
/// ```
/// use bytes::Bytes;
/// use proxystore::connector::Connector;
/// use proxystore::connector::grpc::{GrpcConfig, GrpcConnector};
/// use proxystore_server::{ServerConfig, store_service};
///
/// proxystore::runtime::block_on(async {
///     let config = ServerConfig::default().token("s3cret").max_total_bytes(1 << 30);
///     let store = store_service(&config).await?;
///     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
///     let mut client = GrpcConfig::new(format!("http://{}", listener.local_addr()?));
///     tokio::spawn(
///         tonic::transport::Server::builder()
///             .add_service(store) // next to the application's own services
///             .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
///     );
///     client.token = Some("s3cret".into());
///     let client = GrpcConnector::with_config(client)?;
///     let key = client.put(Bytes::from_static(b"hello")).await?;
///     assert_eq!(client.get(&key).await?, Some(Bytes::from_static(b"hello")));
///     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
/// })??;
/// # Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
/// ```
///
/// # Errors
/// [`ServerError::Config`] for inconsistent settings or when not called inside a tokio
/// runtime (the sweeper needs one), [`ServerError::Backend`] when the backend cannot be
/// opened.
pub async fn store_service(config: &ServerConfig) -> Result<StoreService, ServerError> {
    config.check()?;
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| ServerError::Config(format!("store_service needs a tokio runtime: {e}")))?;
    let mut backend = config.backend.open().await?;
    let acc = Accounting::new(
        config.max_total_bytes,
        std::mem::take(&mut backend.existing),
    );
    // Zero would abandon every call at once: treat it as no timeout, like the command line.
    let idle = config.idle_timeout.filter(|d| !d.is_zero());
    let svc = StoreSvc::new(
        backend,
        acc,
        Limits {
            max_object: config.max_object_bytes,
            max_total: config.max_total_bytes,
            chunk_size: config.chunk_size,
            max_message: config.max_message_bytes,
            idle,
            auth_required: config.token.is_some(),
        },
    );
    let sweeper = runtime.spawn(sweep(
        svc.clone(),
        config.sweep_interval.max(Duration::from_millis(10)),
    ));
    let server = StoreServiceServer::new(svc.clone())
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    let authenticated = InterceptedService::new(server, BearerAuth::new(config.token.as_deref()));
    Ok(StoreService {
        stack: RpcTrace::new(authenticated, Side::Server),
        svc,
        _sweeper: Arc::new(AbortOnDrop(sweeper.abort_handle())),
    })
}

/// Evict expired objects every `every` (until aborted).
async fn sweep(svc: StoreSvc, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        svc.sweep_expired().await;
    }
}
