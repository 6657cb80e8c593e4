//! What a gRPC connector is configured with and what it reports: the transport constants,
//! [`GrpcConfig`] (which travels in references), upload options, the server's `Stat` and the
//! header of a streamed download.

use std::path::PathBuf;
use std::time::Duration;

use proxystore_proto::v1;
use serde::{Deserialize, Serialize};

use crate::connector::PutOptions;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::key::Key;

/// Kind name of this connector.
pub const KIND: &str = "grpc";

/// Chunk size of streamed transfers (1 MiB: measured best with the window sizes below).
pub const DEFAULT_CHUNK_SIZE: usize = 1 << 20;
/// HTTP/2 stream window: 16 MiB lets a 1 MiB-chunk stream run without stalls on loopback.
pub const STREAM_WINDOW: u32 = 16 << 20;
/// HTTP/2 connection window, shared by concurrent streams.
pub const CONNECTION_WINDOW: u32 = 64 << 20;
/// HTTP/2 frame size: 256 KiB frames cut per-frame overhead (the largest single gain measured).
pub const MAX_FRAME_SIZE: u32 = 256 << 10;
/// Largest gRPC message either side accepts (batches of small objects).
pub const MAX_MESSAGE_SIZE: usize = 64 << 20;

/// Objects up to this size go into batch calls; larger ones are streamed on their own.
pub(super) const BATCH_ITEM_MAX: usize = 1 << 20;
/// Bytes per batch call.
pub(super) const BATCH_BYTES: usize = 8 << 20;
/// Keys per batch call.
pub(super) const BATCH_KEYS: usize = 4096;

/// Options of a [`GrpcConnector`](super::GrpcConnector).
///
/// Serialized into every proxy reference made with the connector: prefer
/// [`GrpcConfig::token_env`] over [`GrpcConfig::token`] so that references carry the name of
/// an environment variable, not the secret itself.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GrpcConfig {
    /// Server address: `http://host:port`, `https://host:port` (TLS, feature `tls`), or
    /// `host:port` (plain HTTP/2).
    pub address: String,
    /// Further addresses of replicas serving the same objects (several `proxystore serve`
    /// processes in front of one shared backend), in the same forms as `address`. Calls are
    /// spread over `address` and these, and move on from one that is down (see
    /// [`GrpcConfig::addresses`]). Empty by default, and then left out of references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Bearer token sent as `authorization: Bearer <token>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Name of an environment variable holding the token, read when the connector is built
    /// (in each process that rebuilds it). Used when `token` is unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Per-call timeout in milliseconds (default 30 000): the whole of a unary call, and the
    /// longest wait for progress (the next chunk) in a streamed transfer, so that large
    /// objects are not cut off while a stalled server is still detected.
    pub timeout_ms: u64,
    /// Timeout of establishing the connection, in milliseconds (default 5 000).
    pub connect_timeout_ms: u64,
    /// Retries of idempotent calls that failed temporarily (`UNAVAILABLE`, a broken
    /// connection; default 3), with the backoff of [`crate::retry::RetryConfig::default`].
    pub retries: u32,
    /// Chunk size of uploads in bytes (default 1 MiB).
    pub chunk_size: usize,
    /// PEM file of a CA certificate to trust for `https://` addresses (default: the system's
    /// roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// Server name to verify instead of the address's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_domain: Option<String>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            address: String::new(),
            addresses: Vec::new(),
            token: None,
            token_env: None,
            timeout_ms: 30_000,
            connect_timeout_ms: 5_000,
            retries: 3,
            chunk_size: DEFAULT_CHUNK_SIZE,
            tls_ca_file: None,
            tls_domain: None,
        }
    }
}

impl std::fmt::Debug for GrpcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcConfig")
            .field("address", &self.address)
            .field("addresses", &self.addresses)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_env", &self.token_env)
            .field("timeout_ms", &self.timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("retries", &self.retries)
            .field("chunk_size", &self.chunk_size)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_domain", &self.tls_domain)
            .finish()
    }
}

impl GrpcConfig {
    /// Defaults for the server at `address`.
    pub fn new(address: impl Into<String>) -> Self {
        GrpcConfig {
            address: address.into(),
            ..GrpcConfig::default()
        }
    }

    /// Spread calls over replicas at `addresses` too, besides [`GrpcConfig::address`]
    /// (replacing any set before).
    ///
    /// Each call goes to the next replica in turn that is not marked down. One that cannot
    /// be reached (the connection fails, the server answers `UNAVAILABLE` or goes away) is
    /// marked down for 1 s, twice as long after each further failure, up to 10 s; a call
    /// that succeeds there clears the mark. When every replica is marked down, calls go to
    /// the one whose mark ends first. A connection that cannot be established means nothing
    /// was sent, so the same call moves on to the next replica at once, uploads included;
    /// any other failure is left to the retries of idempotent calls
    /// ([`GrpcConfig::retries`]), each of which goes to the next replica. A streamed
    /// transfer stays on one replica from start to end.
    ///
    /// Every address is checked when the connector is built, and each is a host the resolve
    /// policy must allow before a reference naming it is resolved.
    ///
    /// ```
    /// use proxystore::connector::grpc::{GrpcConfig, GrpcConnector};
    ///
    /// let config = GrpcConfig::new("http://10.0.0.1:50051")
    ///     .addresses(["http://10.0.0.2:50051", "http://10.0.0.3:50051"]);
    /// assert_eq!(config.all_addresses().count(), 3);
    /// let connector = GrpcConnector::with_config(config)?; // nothing connects yet
    /// # Ok::<_, proxystore::Error>(())
    /// ```
    #[must_use]
    pub fn addresses<I, S>(mut self, addresses: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.addresses = addresses.into_iter().map(Into::into).collect();
        self
    }

    /// Every address calls may go to: [`GrpcConfig::address`], then
    /// [`GrpcConfig::addresses`].
    pub fn all_addresses(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.address.as_str()).chain(self.addresses.iter().map(String::as_str))
    }

    /// Send `token` as a bearer token (it is written into references; see
    /// [`GrpcConfig::token_env`]).
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Read the bearer token from environment variable `var` in every process that builds the
    /// connector.
    #[must_use]
    pub fn token_env(mut self, var: impl Into<String>) -> Self {
        self.token_env = Some(var.into());
        self
    }

    /// Set the per-call timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = timeout.as_millis().min(u128::from(u64::MAX)) as u64;
        self
    }

    /// Set the number of retries of idempotent calls.
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Trust the CA certificate in PEM file `path` for `https://` addresses.
    #[must_use]
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }

    /// Verify the server's certificate against `domain` instead of the address's host.
    #[must_use]
    pub fn tls_domain(mut self, domain: impl Into<String>) -> Self {
        self.tls_domain = Some(domain.into());
        self
    }

    /// Settings from the environment: `PROXYSTORE_GRPC_ADDRESS` (required),
    /// `PROXYSTORE_GRPC_ADDRESSES` (further replicas, comma-separated),
    /// `PROXYSTORE_GRPC_TOKEN` (used through [`GrpcConfig::token_env`], so references name
    /// the variable, not the token), `PROXYSTORE_GRPC_TIMEOUT_MS`, `PROXYSTORE_GRPC_CA_FILE`.
    ///
    /// # Errors
    /// [`Error::Config`] when the address is missing or a number does not parse.
    pub fn from_env() -> Result<Self> {
        let address = std::env::var("PROXYSTORE_GRPC_ADDRESS")
            .map_err(|_| Error::config("PROXYSTORE_GRPC_ADDRESS is not set"))?;
        let mut c = GrpcConfig::new(address);
        if let Ok(more) = std::env::var("PROXYSTORE_GRPC_ADDRESSES") {
            c.addresses = more
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if std::env::var_os("PROXYSTORE_GRPC_TOKEN").is_some() {
            c.token_env = Some("PROXYSTORE_GRPC_TOKEN".into());
        }
        if let Ok(t) = std::env::var("PROXYSTORE_GRPC_TIMEOUT_MS") {
            c.timeout_ms = t
                .parse()
                .map_err(|e| Error::config(format!("PROXYSTORE_GRPC_TIMEOUT_MS={t:?}: {e}")))?;
        }
        if let Some(ca) = std::env::var_os("PROXYSTORE_GRPC_CA_FILE") {
            c.tls_ca_file = Some(ca.into());
        }
        Ok(c)
    }

    /// The address with a scheme (`http://` added when missing).
    pub fn uri(&self) -> String {
        uri_of(&self.address)
    }

    pub(super) fn timeout_duration(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }
}

/// `address` with a scheme (`http://` added when missing).
pub(super) fn uri_of(address: &str) -> String {
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}

/// Options of a streamed upload ([`GrpcConnector::put_stream`](super::GrpcConnector::put_stream)).
#[derive(Clone, Debug, Default)]
pub struct UploadOptions {
    /// Store under this key (replacing any object there); `None`: the server chooses.
    pub key: Option<Key>,
    /// Total size, when known: the server checks its limits before any byte is sent and
    /// allocates once, and rejects a stream of another length.
    pub size: Option<u64>,
    /// Digest of the whole object, checked by the server.
    pub digest: Option<Digest>,
    /// Evict the object after this long.
    pub ttl: Option<Duration>,
    /// Name and tags for routing backends.
    pub put: PutOptions,
}

/// What a server says about itself ([`GrpcConnector::stat`](super::GrpcConnector::stat)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStat {
    /// Backend kind (`memory`, `file`, or a connector kind).
    pub backend: String,
    /// Objects stored.
    pub object_count: u64,
    /// Bytes stored.
    pub bytes_used: u64,
    /// Bytes reserved by uploads in progress.
    pub bytes_in_flight: u64,
    /// Largest object accepted, if limited.
    pub max_object_bytes: Option<u64>,
    /// Total bytes stored at most, if limited.
    pub max_total_bytes: Option<u64>,
    /// Chunk size of the server's downloads.
    pub chunk_size: u64,
    /// Whether calls need a bearer token.
    pub auth_required: bool,
    /// Whether callers may choose keys (deferred puts).
    pub caller_keys: bool,
    /// Server version.
    pub version: String,
    /// Largest gRPC message the server accepts and sends (0 from servers before this field).
    #[serde(default)]
    pub max_message_bytes: u64,
    /// Longest key the server accepts (0 from servers before this field).
    #[serde(default)]
    pub max_key_bytes: u64,
    /// Size of a GetBatch answer when the client asks for no other (0 from servers before
    /// this field).
    #[serde(default)]
    pub batch_response_bytes: u64,
    /// How long the server lets a Put send nothing or a Get go unread; `None`: no limit.
    #[serde(default)]
    pub idle_timeout: Option<Duration>,
}

impl From<v1::StatResponse> for ServerStat {
    fn from(s: v1::StatResponse) -> Self {
        let limit = |v: u64| (v > 0).then_some(v);
        ServerStat {
            backend: s.backend,
            object_count: s.object_count,
            bytes_used: s.bytes_used,
            bytes_in_flight: s.bytes_in_flight,
            max_object_bytes: limit(s.max_object_bytes),
            max_total_bytes: limit(s.max_total_bytes),
            chunk_size: s.chunk_size,
            auth_required: s.auth_required,
            caller_keys: s.caller_keys,
            version: s.version,
            max_message_bytes: s.max_message_bytes,
            max_key_bytes: s.max_key_bytes,
            batch_response_bytes: s.batch_response_bytes,
            idle_timeout: limit(s.idle_timeout_millis).map(Duration::from_millis),
        }
    }
}

/// Header of a streamed download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Bytes the stream carries (the clamped range, or the whole object).
    pub size: u64,
    /// Size of the whole object.
    pub object_size: u64,
    /// Offset of the first byte carried.
    pub offset: u64,
    /// Digest of the whole object, when the server knows it.
    pub digest: Option<Digest>,
}
