//! Options shared by the commands that talk to a server, and the connector they build.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use proxystore::ConnectorConfig;
use proxystore::connector::grpc::{self, GrpcConfig, GrpcConnector};

use crate::util::parse_duration;

/// Default server URL of the client commands (the default address of `proxystore serve`).
pub(crate) const DEFAULT_URL: &str = "http://127.0.0.1:50051";

/// Environment variable of the bearer token, named (never copied) in references.
pub(crate) const TOKEN_ENV: &str = "PROXYSTORE_TOKEN";

/// How to reach the server.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Server connection")]
pub(crate) struct ClientArgs {
    /// URL of the store server: http://HOST:PORT, https://HOST:PORT (feature `tls`) or
    /// HOST:PORT. Several, comma-separated, are replicas serving the same objects (`proxystore
    /// serve` over one Redis or S3): calls are spread over them and go to the others while one
    /// is down.
    #[arg(long, env = "PROXYSTORE_URL", default_value = DEFAULT_URL, value_name = "URL")]
    pub(crate) url: String,

    /// Bearer token the server requires. Prefer the environment variable to the flag: command
    /// lines are visible to other users.
    #[arg(long, env = "PROXYSTORE_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Longest wait for a call, or for the next chunk of a transfer (e.g. 500ms, 30s, 2m).
    #[arg(long, env = "PROXYSTORE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,

    /// Longest wait for the connection to the server.
    #[arg(long, env = "PROXYSTORE_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,

    /// Retries of idempotent calls (get, exists, evict, stat) while the server is unavailable.
    #[arg(long, env = "PROXYSTORE_RETRIES", default_value_t = 3)]
    retries: u32,

    /// PEM file of a CA certificate to trust for https:// URLs (default: the system's roots).
    #[arg(long, env = "PROXYSTORE_CA_FILE", value_name = "PEM")]
    ca_file: Option<PathBuf>,

    /// Server name to verify in its certificate instead of the URL's host (e.g. when the URL
    /// names an IP address).
    #[arg(long, env = "PROXYSTORE_TLS_DOMAIN", value_name = "NAME")]
    tls_domain: Option<String>,
}

impl ClientArgs {
    fn token(&self) -> Option<&str> {
        self.token.as_deref().filter(|t| !t.is_empty())
    }

    /// Settings without any secret: the token is named through [`TOKEN_ENV`].
    fn shareable_config(&self) -> GrpcConfig {
        let mut urls = self.url.split(',').map(str::trim).filter(|u| !u.is_empty());
        let first = urls.next().unwrap_or_default().to_owned();
        let mut c = GrpcConfig::new(first)
            .addresses(urls.map(str::to_owned))
            .timeout(self.timeout)
            .retries(self.retries);
        c.connect_timeout_ms = self
            .connect_timeout
            .as_millis()
            .clamp(1, u128::from(u64::MAX)) as u64;
        c.tls_ca_file = self.ca_file.clone();
        c.tls_domain = self.tls_domain.clone();
        if self.token().is_some() {
            c.token_env = Some(TOKEN_ENV.to_owned());
        }
        c
    }

    /// The longest wait for a call or for the next chunk of a transfer.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The connector of this command (nothing connects until the first call).
    ///
    /// # Errors
    /// A usage error for an unparsable URL or a token that cannot be sent.
    pub(crate) fn connector(&self) -> anyhow::Result<GrpcConnector> {
        let mut c = self.shareable_config();
        c.token_env = None;
        c.token = self.token().map(str::to_owned);
        GrpcConnector::with_config(c).with_context(|| format!("server URL {:?}", self.url))
    }

    /// The connector config written into references: the same server and settings, with the
    /// token, if one is in use, read from `PROXYSTORE_TOKEN` by whoever resolves.
    ///
    /// Options left at their defaults are omitted (the connector fills them in when it is
    /// rebuilt), which keeps the reference small.
    pub(crate) fn reference_config(&self) -> anyhow::Result<ConnectorConfig> {
        let describe =
            |c: &GrpcConfig| serde_json::to_value(c).context("cannot describe the connector");
        let mut options = describe(&self.shareable_config())?;
        let defaults = describe(&GrpcConfig::default())?;
        if let (Some(o), Some(d)) = (options.as_object_mut(), defaults.as_object()) {
            o.retain(|k, v| k == "address" || d.get(k) != Some(v));
        }
        Ok(ConnectorConfig::new(grpc::KIND, options))
    }
}
