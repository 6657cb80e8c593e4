//! Command-line arguments of a server (`proxystore serve`, `proxystore-server`).

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use proxystore::connector::ConnectorConfig;

use crate::{BackendConfig, ServerConfig, ServerError, TlsConfig};

/// Where a command-line server keeps objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// In the server's memory (bound it with --max-total-bytes).
    Memory,
    /// As files in --directory.
    File,
    /// In Redis or a Redis Cluster at --redis-url, shared with every server given the same
    /// URL and --prefix.
    Redis,
    /// In the S3 bucket --bucket (AWS, or an S3-compatible server at --s3-endpoint), shared
    /// with every server given the same bucket and --prefix. Credentials come from the
    /// standard chain (`AWS_ACCESS_KEY_ID`, profile, instance role).
    S3,
}

/// Server options for a command line, to `#[command(flatten)]` into a `serve` command.
///
/// Every option also reads an environment variable (shown in `--help`).
///
/// ```
/// use clap::Parser;
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     serve: proxystore_server::ServeArgs,
/// }
/// let cli = Cli::parse_from(["x", "--listen", "127.0.0.1:0", "--max-object-bytes", "64MiB"]);
/// let config = cli.serve.into_config().unwrap();
/// assert_eq!(config.max_object_bytes, Some(64 << 20));
/// ```
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port; the bound address is printed).
    #[arg(long, env = "PROXYSTORE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Where objects are kept.
    #[arg(long, value_enum, env = "PROXYSTORE_BACKEND", default_value = "memory")]
    pub backend: BackendKind,

    /// Directory of the file backend (created if missing).
    #[arg(long, env = "PROXYSTORE_DIRECTORY", required_if_eq("backend", "file"))]
    pub directory: Option<PathBuf>,

    /// fsync each object of the file backend before it becomes visible.
    #[arg(long, env = "PROXYSTORE_FSYNC")]
    pub fsync: bool,

    /// Redis URL of the redis backend, `redis://[user:password@]host:port[/db]` (`rediss://`
    /// for TLS). Several, comma-separated, are seeds of a Redis Cluster.
    #[arg(
        long,
        env = "PROXYSTORE_REDIS_URL",
        value_delimiter = ',',
        required_if_eq("backend", "redis"),
        hide_env_values = true
    )]
    pub redis_url: Vec<String>,

    /// The Redis URL is a node of a Redis Cluster (implied by several URLs).
    #[arg(long, env = "PROXYSTORE_REDIS_CLUSTER")]
    pub redis_cluster: bool,

    /// Bucket of the s3 backend (it must exist).
    #[arg(long, env = "PROXYSTORE_S3_BUCKET", required_if_eq("backend", "s3"))]
    pub bucket: Option<String>,

    /// Endpoint of an S3-compatible server, e.g. http://127.0.0.1:9000 (default: AWS). Buckets
    /// are then addressed by path (`endpoint/bucket/key`).
    #[arg(long, env = "PROXYSTORE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Region of the s3 backend (default: the standard chain, `AWS_REGION`, profile).
    #[arg(long, env = "PROXYSTORE_S3_REGION")]
    pub s3_region: Option<String>,

    /// Prefix of every key the redis or s3 backend writes, e.g. `proxystore/` (default none).
    /// Servers that share a backend must use the same prefix.
    #[arg(long, env = "PROXYSTORE_PREFIX", default_value = "")]
    pub prefix: String,

    /// The backend as a connector config file: the JSON a reference carries,
    /// `{"kind": "redis", "options": {"url": "redis://..."}}`, of any kind this program has
    /// (instead of --backend).
    #[arg(long, env = "PROXYSTORE_BACKEND_CONFIG", conflicts_with = "backend")]
    pub backend_config: Option<PathBuf>,

    /// Largest object accepted, e.g. 512MiB (default: no limit).
    #[arg(long, env = "PROXYSTORE_MAX_OBJECT_BYTES", value_parser = parse_size)]
    pub max_object_bytes: Option<u64>,

    /// Most bytes stored at once, e.g. 8GiB (default: no limit). Counted per server: over a
    /// shared backend (redis, s3), bound the backend itself.
    #[arg(long, env = "PROXYSTORE_MAX_TOTAL_BYTES", value_parser = parse_size)]
    pub max_total_bytes: Option<u64>,

    /// Require `authorization: Bearer <token>` on store calls. Prefer the environment
    /// variable to the flag: command lines are visible to other users.
    #[arg(long, env = "PROXYSTORE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Abandon a Put that sends nothing, or a Get left unread, for this long (e.g. 30s, 2m;
    /// 0: never). A stalled Put stores nothing and frees the bytes it reserved.
    #[arg(long, env = "PROXYSTORE_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Threads serving connections, a connection staying on one from accept to close
    /// (default: one per core).
    #[arg(long, env = "PROXYSTORE_THREADS")]
    pub threads: Option<NonZeroUsize>,

    /// TLS certificate chain (PEM); serves https with --tls-key.
    #[arg(long, env = "PROXYSTORE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM).
    #[arg(long, env = "PROXYSTORE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ServeArgs {
    /// The server configuration these arguments describe.
    ///
    /// The Redis and S3 backends, and a config file, are built when the server starts (by
    /// [`proxystore::kinds::from_config`]): their kinds must be registered, as they are in the
    /// `proxystore` command and with this crate's features `redis` and `s3`.
    ///
    /// # Errors
    /// [`ServerError::Config`] when a TLS file or the backend config file cannot be read, or a
    /// backend misses its location (directory, Redis URL, bucket).
    pub fn into_config(self) -> Result<ServerConfig, ServerError> {
        let backend = self.backend_config()?;
        self.finish_config(backend)
    }

    /// What `--backend` and its options, or `--backend-config`, describe.
    fn backend_config(&self) -> Result<BackendConfig, ServerError> {
        if let Some(path) = &self.backend_config {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ServerError::Config(format!("backend config {}: {e}", path.display()))
            })?;
            let config: ConnectorConfig = serde_json::from_str(&text).map_err(|e| {
                ServerError::Config(format!(
                    "backend config {}: {e} (expected {{\"kind\": ..., \"options\": {{...}}}})",
                    path.display()
                ))
            })?;
            return Ok(BackendConfig::Config(config));
        }
        Ok(match self.backend {
            BackendKind::Memory => BackendConfig::Memory,
            BackendKind::File => BackendConfig::File {
                directory: self.directory.clone().ok_or_else(|| {
                    ServerError::Config("the file backend needs --directory".into())
                })?,
                fsync: self.fsync,
            },
            BackendKind::Redis => {
                let Some((url, seeds)) = self.redis_url.split_first() else {
                    return Err(ServerError::Config(
                        "the redis backend needs --redis-url".into(),
                    ));
                };
                let cluster = self.redis_cluster || !seeds.is_empty();
                let mut options = serde_json::json!({ "url": url, "prefix": self.prefix });
                if cluster {
                    options["cluster"] = true.into();
                    options["nodes"] = seeds.into();
                }
                BackendConfig::Config(ConnectorConfig::new("redis", options))
            }
            BackendKind::S3 => {
                let bucket = self
                    .bucket
                    .clone()
                    .ok_or_else(|| ServerError::Config("the s3 backend needs --bucket".into()))?;
                let mut options = serde_json::json!({ "bucket": bucket, "prefix": self.prefix });
                if let Some(endpoint) = &self.s3_endpoint {
                    options["endpoint_url"] = endpoint.clone().into();
                    options["force_path_style"] = true.into();
                }
                if let Some(region) = &self.s3_region {
                    options["region"] = region.clone().into();
                }
                BackendConfig::Config(ConnectorConfig::new("s3", options))
            }
        })
    }

    /// The rest of the settings, around `backend`.
    fn finish_config(self, backend: BackendConfig) -> Result<ServerConfig, ServerError> {
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(c), Some(k)) => Some(TlsConfig::from_files(c, k)?),
            (None, None) => None,
            _ => {
                return Err(ServerError::Config(
                    "TLS needs both --tls-cert and --tls-key".into(),
                ));
            }
        };
        Ok(ServerConfig {
            address: self.listen,
            backend,
            max_object_bytes: self.max_object_bytes,
            max_total_bytes: self.max_total_bytes,
            token: self.token.filter(|t| !t.is_empty()),
            tls,
            idle_timeout: (!self.idle_timeout.is_zero()).then_some(self.idle_timeout),
            threads: self.threads,
            ..ServerConfig::default()
        })
    }
}

/// Parse a byte size: a number with an optional unit, `B`, `K`/`KiB`, `M`/`MiB`, `G`/`GiB`,
/// `T`/`TiB` (powers of 1024) or `KB`, `MB`, `GB`, `TB` (powers of 1000).
///
/// ```
/// use proxystore_server::parse_size;
/// assert_eq!(parse_size("1GiB"), Ok(1 << 30));
/// assert_eq!(parse_size("10 MB"), Ok(10_000_000));
/// assert_eq!(parse_size("512"), Ok(512));
/// assert!(parse_size("12 parsecs").is_err());
/// ```
///
/// # Errors
/// A message naming the input when it does not parse or overflows.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use e.g. 64MiB)")),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (use e.g. 64MiB)"))?;
    let bytes = value * factor as f64;
    if !(0.0..=u64::MAX as f64).contains(&bytes) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(bytes.round() as u64)
}

/// Parse a duration: a number with an optional unit `ms`, `s` (the default), `m`, `h` or `d`,
/// e.g. `500ms`, `30s`, `1.5m`, `2h`.
///
/// ```
/// use std::time::Duration;
/// use proxystore_server::parse_duration;
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
/// assert!(parse_duration("3 fortnights").is_err());
/// ```
///
/// # Errors
/// A message naming the input when it is not a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let secs: f64 = match unit.trim() {
        "ms" => 0.001,
        "" | "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use e.g. 500ms, 30s, 10m, 1h)"
            ));
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (use e.g. 500ms, 30s, 10m, 1h)"))?;
    Duration::try_from_secs_f64(value * secs).map_err(|_| format!("{s:?} is out of range"))
}
