//! The ProxyStore gRPC store service: a ready object store that proxies can point at,
//! embedded in a process or run standalone.
//!
//! It serves `proxystore_rs.v1.StoreService` (see `proto/proxystore_rs/v1/store.proto`), the
//! standard `grpc.health.v1.Health` service and server reflection (v1 and v1alpha, so that
//! `grpcurl` can list and call it). Objects live in memory, in a file directory, or in any
//! [`proxystore::Connector`] (see [`BackendConfig`]); limits answer `RESOURCE_EXHAUSTED`, a
//! missing or wrong bearer token `UNAUTHENTICATED`, unknown keys `NOT_FOUND`. Its client is
//! [`proxystore::connector::grpc::GrpcConnector`].
//!
//! Every store call runs in a `grpc.server` span (`otel.name` = `proxystore_rs.v1.StoreService/Get`
//! and so on, with `key`, `bytes` and `rpc.grpc.status_code`) whose parent is the trace context
//! the client sent in its `traceparent`/`tracestate` metadata; see
//! [`proxystore::connector::grpc::rpc_trace`]. The `proxystore-server` binary exports these
//! spans over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (through `proxystore-telemetry`).
//!
//! # Embedding
//!
//! [`spawn`] starts a server on a free loopback port inside the current process and returns
//! its address and a handle that shuts it down (or stops it when dropped):
//!
//! ```
//! use proxystore::{Store, Proxy};
//! use proxystore_server::{ServerConfig, spawn};
//!
//! let server = spawn(ServerConfig::default())?;
//! let store = Store::new("doc-grpc", server.connector()?);
//! let proxy: Proxy<String> =
//!     proxystore::runtime::block_on(async move { store.proxy(&"hello".to_string()).await })??;
//! assert_eq!(proxy.as_str(), "hello");
//! drop(server); // stops it
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
//!
//! [`store_service`] gives the store service alone, to mount in a tonic router of one's own
//! next to other services.
//!
//! The allocator is the embedding program's. The `proxystore` and `proxystore-server` binaries
//! use jemalloc. Under glibc's default allocator, a server that stores and evicts objects of
//! about 1 MiB pays page faults on freshly mapped memory for many of its puts. On the
//! benchmark machine (2026-12-07), 1 MiB puts to an embedded server took a median of
//! 640-1520 us per run, against 500-575 us with glibc's mmap and trim thresholds fixed
//! (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`). Such a program does better with
//! jemalloc or those thresholds.
//!
//! # Threads
//!
//! A server serves its connections on threads of its own, one per core unless
//! [`ServerConfig::threads`] says otherwise. Each is a current-thread tokio runtime, and a
//! connection stays on one of them from accept to close: the many hand-offs between the tasks
//! of one call (the HTTP/2 connection, the call, a session, the answer) then cost no
//! cross-thread wake-ups. The caller's runtime runs only the accept loop, which gives each
//! connection to the thread with the fewest open ones, and the sweeper of expired objects.
//! On the benchmark machine this served 100 B put+get pairs from one client about 15% faster
//! than one multi-thread runtime did (docs/benchmarks.md).
//!
//! # Standalone
//!
//! [`serve`] runs until SIGINT or SIGTERM, then finishes the calls in flight (for up to
//! [`ServerConfig::shutdown_grace`]). [`Server`] splits that into binding (to learn the
//! address of port 0) and running. With feature `cli`, [`ServeArgs`] is a `clap` argument
//! group for command lines, used by the `proxystore-server` binary.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use proxystore::connector::grpc::{
    CONNECTION_WINDOW, GrpcConfig, GrpcConnector, MAX_FRAME_SIZE, STREAM_WINDOW,
};
use tonic::transport::server::Router;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

mod accounting;
#[cfg(feature = "cli")]
mod args;
mod auth;
mod backend;
mod config;
mod linger;
mod mount;
mod service;
mod workers;

#[cfg(feature = "cli")]
pub use args::{BackendKind, ServeArgs, parse_duration, parse_size};
pub use backend::{BackendConfig, MAX_KEY_BYTES};
pub use config::{DEFAULT_IDLE_TIMEOUT, DEFAULT_PORT, ServerConfig, TlsConfig};
pub use mount::{StoreService, store_service};

/// Interval of the HTTP/2 keepalive pings a server sends on an idle connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// How long a server waits for a keepalive ping's answer before it closes the connection.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The settings are inconsistent.
    #[error("invalid server configuration: {0}")]
    Config(String),
    /// The backend could not be opened (its error, which names the connector).
    #[error(transparent)]
    Backend(#[from] proxystore::Error),
    /// The transport failed (TLS set-up, accepting connections).
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The server task ended abnormally.
    #[error("server task: {0}")]
    Task(String),
}

/// A server bound to its address, not yet serving.
///
/// ```no_run
/// # async fn f() -> Result<(), proxystore_server::ServerError> {
/// let server = proxystore_server::Server::bind(proxystore_server::ServerConfig::default()).await?;
/// println!("listening on {}", server.url());
/// server.run().await // until SIGINT or SIGTERM
/// # }
/// ```
pub struct Server {
    config: ServerConfig,
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    store: StoreService,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Open the backend and bind the address.
    ///
    /// # Errors
    /// [`ServerError::Config`], [`ServerError::Backend`] when the backend cannot be opened,
    /// [`ServerError::Bind`] when the address is taken.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        let store = store_service(&config).await?;
        let listener = tokio::net::TcpListener::bind(config.address)
            .await
            .map_err(|source| ServerError::Bind {
                address: config.address,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            address: config.address,
            source,
        })?;
        Ok(Server {
            config,
            listener,
            local_addr,
            store,
        })
    }

    /// The bound address (with the actual port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL clients use: `http://addr` or, with TLS, `https://addr`.
    pub fn url(&self) -> String {
        url(&self.config, self.local_addr)
    }

    /// Serve until SIGINT or SIGTERM, then shut down gracefully.
    ///
    /// # Errors
    /// As for [`Server::run_until`].
    pub async fn run(self) -> Result<(), ServerError> {
        self.run_until(shutdown_signal()).await
    }

    /// Serve until `signal` completes, then stop accepting connections, let the calls in
    /// flight finish (for up to [`ServerConfig::shutdown_grace`]) and return.
    ///
    /// Connections are served on threads of the server's own (see the crate docs,
    /// "Threads"); this future runs the accept loop. Dropping it closes every connection.
    ///
    /// # Errors
    /// [`ServerError::Transport`] when TLS cannot be set up or serving fails,
    /// [`ServerError::Task`] when a serving thread cannot start.
    pub async fn run_until<F>(self, signal: F) -> Result<(), ServerError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Server {
            config,
            listener,
            local_addr,
            store,
        } = self;
        let sessions = store.clone();
        let (router, reporter) = router(&config, store).await?;
        let threads = config.threads.unwrap_or_else(workers::default_threads);
        let mut workers = workers::Workers::start(threads, &router)?;
        tracing::info!(%local_addr, backend = ?config.backend, threads, "proxystore server listening");
        tokio::pin!(signal);
        loop {
            tokio::select! {
                () = &mut signal => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => match stream.into_std() {
                        // No thread serves any more: stop, with the error they ended with.
                        Ok(stream) => if !workers.dispatch(stream) {
                            break;
                        },
                        Err(e) => tracing::debug!(error = %e, "accepted connection lost"),
                    },
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        if let Some(wait) = workers::accept_backoff(&e) {
                            tokio::time::sleep(wait).await;
                        }
                    }
                },
            }
        }
        // Closing the socket at once makes new clients fail fast instead of hanging.
        drop(listener);
        tracing::info!(%local_addr, "proxystore server shutting down");
        reporter
            .set_service_status(
                proxystore_proto::STORE_SERVICE_NAME,
                ServingStatus::NotServing,
            )
            .await;
        sessions.stop_sessions();
        workers.close();
        let grace = config.shutdown_grace;
        tokio::select! {
            r = workers.finished() => r,
            () = tokio::time::sleep(grace) => {
                tracing::warn!(%local_addr, ?grace, "calls still in flight after the grace period; closing them");
                workers.abort();
                Ok(())
            }
        }
    }
}

/// The transport settings and services of a server: health, reflection (v1 and v1alpha) and
/// `store`, on a tonic transport with the HTTP/2 window, frame-size and keepalive settings of
/// the gRPC connector, and TLS when `config` has it. [`Server::run_until`] serves it on its
/// listener, [`fuzzing::serve_connection`] on one given connection, so the fuzz target runs the
/// same stack as `proxystore serve`.
async fn router(
    config: &ServerConfig,
    store: StoreService,
) -> Result<(Router, HealthReporter), ServerError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(proxystore_proto::STORE_SERVICE_NAME, ServingStatus::Serving)
        .await;
    let reflection_v1 = reflection_builder()
        .build_v1()
        .map_err(|e| ServerError::Config(format!("reflection: {e}")))?;
    // grpcurl 1.8 speaks only v1alpha; newer clients ask for v1.
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|e| ServerError::Config(format!("reflection: {e}")))?;
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut builder = tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
    #[cfg(feature = "tls")]
    if let Some(tls) = &config.tls {
        builder = builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem),
        ))?;
    }
    #[cfg(not(feature = "tls"))]
    let _ = config;
    // The store service traces its own calls; health checks and reflection stay out of the
    // traces.
    let router = builder
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(store);
    Ok((router, reporter))
}

/// Hooks for the fuzz targets (`fuzz/`); not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    use tokio::io::{AsyncRead, AsyncWrite};
    use tonic::transport::server::Connected;

    use crate::{ServerConfig, ServerError, StoreService};

    /// Serve one client connection `io` with the transport settings and services that
    /// [`crate::Server`] serves (built by the same function), `store` being the store
    /// service (made by [`crate::store_service`] with `config`; the caller keeps a clone to
    /// inspect the store afterwards). Only the lingering close of TCP connections is left
    /// out, and TLS: `io` speaks plain HTTP/2.
    ///
    /// Returns as soon as the connection is handed to its task: tonic's
    /// `serve_with_incoming` stops when its incoming stream (here `io` alone) ends, and waits
    /// for open connections only when it has a shutdown signal, which this one has not. The
    /// connection then runs in a task spawned on the current tokio runtime until it closes
    /// (the client sees the end of its side of `io`); the tasks hyper spawns for the
    /// connection's streams may run a little longer, until their calls notice.
    ///
    /// # Errors
    /// [`ServerError::Config`] when `config` has TLS (a one-connection incoming stream would
    /// end before the handshake, and tonic drops handshakes in progress when it ends), else
    /// as for [`crate::Server::run_until`].
    pub async fn serve_connection<IO>(
        config: &ServerConfig,
        store: StoreService,
        io: IO,
    ) -> Result<(), ServerError>
    where
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    {
        if config.tls.is_some() {
            return Err(ServerError::Config(
                "serve_connection serves plain HTTP/2 only".into(),
            ));
        }
        let (router, _reporter) = crate::router(config, store).await?;
        let incoming = futures::stream::iter([Ok::<_, std::io::Error>(io)]);
        router.serve_with_incoming(incoming).await?;
        Ok(())
    }
}

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proxystore_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

fn url(config: &ServerConfig, addr: SocketAddr) -> String {
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{addr}")
}

/// A future that completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
///
/// The handlers are installed when this function is called, not when the future is first
/// polled, so a signal that arrives in between is not lost. Must be called inside a tokio
/// runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let int = signal(SignalKind::interrupt()).ok();
        let term = signal(SignalKind::terminate()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(int) => {}
                () = wait(term) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Run a server with `config` until SIGINT or SIGTERM, then finish the calls in flight and
/// return. The entry point of `proxystore serve` and of the `proxystore-server` binary.
///
/// `on_ready` is called with the bound address (useful with port 0) once the server
/// listens.
///
/// # Errors
/// As for [`Server::bind`] and [`Server::run_until`].
pub async fn serve(
    config: ServerConfig,
    on_ready: impl FnOnce(&Server),
) -> Result<(), ServerError> {
    let server = Server::bind(config).await?;
    let signal = shutdown_signal();
    on_ready(&server);
    server.run_until(signal).await
}

/// A server running inside this process (see [`spawn`]). Dropping it stops the server.
pub struct RunningServer {
    local_addr: SocketAddr,
    url: String,
    token: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServerError>>>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Start a server with `config` inside this process and return once it listens. Its accept
/// loop runs on the library's I/O runtime, its connections on threads of its own (see the
/// crate docs, "Threads"). With the default config it uses memory and a free loopback port.
///
/// Callable from synchronous code and from any async runtime.
///
/// # Errors
/// As for [`Server::bind`].
pub fn spawn(config: ServerConfig) -> Result<RunningServer, ServerError> {
    let token = config.token.clone();
    let server = proxystore::runtime::block_on(Server::bind(config))??;
    let local_addr = server.local_addr();
    let url = server.url();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = proxystore::runtime::io_handle().spawn(server.run_until(async move {
        let _ = stopped.await;
    }));
    Ok(RunningServer {
        local_addr,
        url,
        token,
        stop: Some(stop),
        task: Some(task),
    })
}

impl RunningServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL clients use (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// A [`GrpcConfig`] for this server, with its token if it has one.
    pub fn grpc_config(&self) -> GrpcConfig {
        let mut c = GrpcConfig::new(self.url());
        c.token = self.token.clone();
        c
    }

    /// A connector to this server (plain HTTP; for TLS build one from [`Self::grpc_config`]
    /// with the CA to trust).
    ///
    /// # Errors
    /// As for [`GrpcConnector::with_config`].
    pub fn connector(&self) -> proxystore::Result<GrpcConnector> {
        GrpcConnector::with_config(self.grpc_config())
    }

    /// Stop accepting connections, let calls in flight finish, and wait until the server has
    /// stopped.
    ///
    /// # Errors
    /// The error the server stopped with, or [`ServerError::Task`] if its task failed.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|e| ServerError::Task(e.to_string()))?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
