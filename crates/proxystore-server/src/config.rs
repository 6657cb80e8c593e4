//! Server settings.

use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use proxystore::Connector;
use proxystore::connector::grpc::{DEFAULT_CHUNK_SIZE, MAX_MESSAGE_SIZE};

use crate::ServerError;
use crate::backend::BackendConfig;

/// Port of a standalone server when none is given.
pub const DEFAULT_PORT: u16 = 50051;

/// Default of [`ServerConfig::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a server needs to start.
///
/// ```
/// use proxystore_server::ServerConfig;
/// let config = ServerConfig::default() // memory backend on a free loopback port
///     .max_object_bytes(64 << 20)
///     .max_total_bytes(1 << 30)
///     .token("s3cret");
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:0`: a free loopback port).
    pub address: SocketAddr,
    /// Where objects live (default: memory).
    pub backend: BackendConfig,
    /// Largest object accepted, in bytes (default: no limit).
    pub max_object_bytes: Option<u64>,
    /// Most bytes stored at once, counting uploads in progress (default: no limit).
    pub max_total_bytes: Option<u64>,
    /// Bearer token the store service requires (default: none). Health and reflection stay
    /// open.
    pub token: Option<String>,
    /// Serve TLS with this certificate and key (feature `tls`).
    pub tls: Option<TlsConfig>,
    /// Chunk size of downloads (default 1 MiB).
    pub chunk_size: usize,
    /// Largest gRPC message accepted (default 64 MiB; bounds batch calls and chunks).
    pub max_message_bytes: usize,
    /// How long a graceful shutdown waits for calls in flight before closing them (default
    /// 30 s).
    pub shutdown_grace: Duration,
    /// How often expired objects are evicted (default 1 s). Expired objects read as absent
    /// at once in any case.
    pub sweep_interval: Duration,
    /// How long a Put stream may send nothing, or a Get stream stay unread, before the server
    /// abandons the call (DEADLINE_EXCEEDED): a stalled Put stores nothing and gives its
    /// reserved bytes back, a stalled Get lets go of the object (default 30 s, the clients'
    /// default timeout; `None`: wait for as long as the connection lives).
    pub idle_timeout: Option<Duration>,
    /// Threads serving connections, each a current-thread runtime where its connections
    /// live from accept to close (default `None`: one per core). See [`ServerConfig::threads`].
    pub threads: Option<NonZeroUsize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            backend: BackendConfig::Memory,
            max_object_bytes: None,
            max_total_bytes: None,
            token: None,
            tls: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_message_bytes: MAX_MESSAGE_SIZE,
            shutdown_grace: Duration::from_secs(30),
            sweep_interval: Duration::from_secs(1),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            threads: None,
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("address", &self.address)
            .field("backend", &self.backend)
            .field("max_object_bytes", &self.max_object_bytes)
            .field("max_total_bytes", &self.max_total_bytes)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("chunk_size", &self.chunk_size)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("sweep_interval", &self.sweep_interval)
            .field("idle_timeout", &self.idle_timeout)
            .field("threads", &self.threads)
            .finish()
    }
}

impl ServerConfig {
    /// Listen on `address`.
    #[must_use]
    pub fn address(mut self, address: SocketAddr) -> Self {
        self.address = address;
        self
    }

    /// Keep objects in memory.
    #[must_use]
    pub fn memory(mut self) -> Self {
        self.backend = BackendConfig::Memory;
        self
    }

    /// Keep objects as files in `directory`.
    #[must_use]
    pub fn file(mut self, directory: impl Into<PathBuf>) -> Self {
        self.backend = BackendConfig::File {
            directory: directory.into(),
            fsync: false,
        };
        self
    }

    /// Front `connector`.
    #[must_use]
    pub fn connector(mut self, connector: Arc<dyn Connector>) -> Self {
        self.backend = BackendConfig::Connector(connector);
        self
    }

    /// Refuse objects larger than `bytes`.
    #[must_use]
    pub fn max_object_bytes(mut self, bytes: u64) -> Self {
        self.max_object_bytes = Some(bytes);
        self
    }

    /// Store at most `bytes` in total.
    #[must_use]
    pub fn max_total_bytes(mut self, bytes: u64) -> Self {
        self.max_total_bytes = Some(bytes);
        self
    }

    /// Require `authorization: Bearer <token>`.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Abandon calls idle for `timeout` (see [`ServerConfig::idle_timeout`]).
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Serve connections on `threads` threads (default: one per core).
    ///
    /// Each thread is a current-thread tokio runtime, and a connection is served on one
    /// thread from accept to close, given to the thread with the fewest open connections. A
    /// connection's calls hand work from task to task many times; on one thread those
    /// hand-offs cost no cross-thread wake-ups. One client process (one connection per
    /// calling runtime) is therefore served by one thread; several client processes spread
    /// over the threads.
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// let config = proxystore_server::ServerConfig::default().threads(NonZeroUsize::MIN);
    /// assert_eq!(config.threads, Some(NonZeroUsize::MIN));
    /// ```
    #[must_use]
    pub fn threads(mut self, threads: NonZeroUsize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Serve TLS.
    #[must_use]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    pub(crate) fn check(&self) -> Result<(), ServerError> {
        if self.chunk_size == 0 || self.chunk_size > self.max_message_bytes.saturating_sub(64) {
            return Err(ServerError::Config(format!(
                "chunk_size {} must be positive and below max_message_bytes {}",
                self.chunk_size, self.max_message_bytes
            )));
        }
        if self.tls.is_some() && !cfg!(feature = "tls") {
            return Err(ServerError::Config(
                "TLS needs proxystore-server built with feature `tls`".into(),
            ));
        }
        Ok(())
    }
}

/// A TLS certificate chain and private key, PEM encoded.
#[derive(Clone)]
pub struct TlsConfig {
    /// Certificate chain (PEM).
    pub cert_pem: Vec<u8>,
    /// Private key (PEM).
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl TlsConfig {
    /// Read the certificate chain and key from PEM files.
    ///
    /// # Errors
    /// [`ServerError::Config`] naming the file that cannot be read.
    pub fn from_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, ServerError> {
        let read = |p: &Path| {
            std::fs::read(p)
                .map_err(|e| ServerError::Config(format!("TLS file {}: {e}", p.display())))
        };
        Ok(TlsConfig {
            cert_pem: read(cert.as_ref())?,
            key_pem: read(key.as_ref())?,
        })
    }
}
