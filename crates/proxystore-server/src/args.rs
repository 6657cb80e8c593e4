//! Command-line arguments of a server (`proxystore serve`, `proxystore-server`).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::{BackendConfig, ServerConfig, ServerError, TlsConfig};

/// Where a command-line server keeps objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// In the server's memory (bound it with --max-total-bytes).
    Memory,
    /// As files in --directory.
    File,
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

    /// Largest object accepted, e.g. 512MiB (default: no limit).
    #[arg(long, env = "PROXYSTORE_MAX_OBJECT_BYTES", value_parser = parse_size)]
    pub max_object_bytes: Option<u64>,

    /// Most bytes stored at once, e.g. 8GiB (default: no limit).
    #[arg(long, env = "PROXYSTORE_MAX_TOTAL_BYTES", value_parser = parse_size)]
    pub max_total_bytes: Option<u64>,

    /// Require `authorization: Bearer <token>` on store calls. Prefer the environment
    /// variable to the flag: command lines are visible to other users.
    #[arg(long, env = "PROXYSTORE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

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
    /// # Errors
    /// [`ServerError::Config`] when a TLS file cannot be read or the file backend has no
    /// directory.
    pub fn into_config(self) -> Result<ServerConfig, ServerError> {
        let backend = match self.backend {
            BackendKind::Memory => BackendConfig::Memory,
            BackendKind::File => BackendConfig::File {
                directory: self.directory.ok_or_else(|| {
                    ServerError::Config("the file backend needs --directory".into())
                })?,
                fsync: self.fsync,
            },
        };
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
