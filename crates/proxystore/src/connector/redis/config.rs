//! The options of a Redis connector and their normal form (the URL with its overrides folded
//! in, the password out of it).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default server URL.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// Default response timeout: generous, because a single reply may carry a large object (the
/// redis crate's own default of 500 ms fails for objects of tens of MiB).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default timeout of one connection attempt (TCP, TLS and the Redis handshake).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default [`RedisConfig::chunked_above_bytes`]: 128 MiB.
pub const DEFAULT_CHUNKED_ABOVE_BYTES: u64 = 128 << 20;

/// Default [`RedisConfig::chunk_bytes`]: 16 MiB.
pub const DEFAULT_CHUNK_BYTES: u64 = 16 << 20;

/// Options of a [`RedisConnector`](super::RedisConnector).
///
/// The server is given by `url` (`redis://[user@]host[:port][/db]`, or `rediss://` for TLS);
/// `host`, `port`, `db` and `username` override the matching part of it, and `password`
/// overrides a password in it. The connector normalises these into `url` plus `password`, and
/// [`Connector::config`](crate::Connector::config) returns that normal form, with the password never in the URL so that
/// the `Debug` of a config redacts it.
///
/// ```
/// use proxystore::connector::redis::RedisConfig;
/// let c = RedisConfig {
///     url: "redis://:hunter2@cache.example:6380/2".into(),
///     prefix: "jobs:".into(),
///     ttl_ms: Some(3_600_000),
///     ..RedisConfig::default()
/// };
/// assert!(!format!("{c:?}").contains("hunter2"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    /// Server URL (default [`DEFAULT_URL`]).
    pub url: String,
    /// Host name or address, overriding the URL's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port, overriding the URL's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Database number, overriding the URL's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db: Option<i64>,
    /// ACL user name, overriding the URL's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password, overriding the URL's. Travels in proxy references like every option.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// PEM file of the certificate authorities to trust for a `rediss://` server, instead of
    /// the system's roots (for a private CA or a self-signed server certificate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// Prefix of every Redis key this connector writes (default none).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// Expire objects this long after they are put (`SET ... PX`); default never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// How long to wait for one reply, in milliseconds (default 30 000).
    pub response_timeout_ms: u64,
    /// How long one connection attempt may take, in milliseconds (default 5 000).
    pub connect_timeout_ms: u64,
    /// Objects larger than this (default [`DEFAULT_CHUNKED_ABOVE_BYTES`]) are written and read
    /// in pieces of [`Self::chunk_bytes`]: written into a temporary key with `SETRANGE` and
    /// renamed over the key when complete, so readers never see part of an object; read with
    /// `GETRANGE` into one buffer. A single `SET` makes the redis client hold about three more
    /// copies of the object while it encodes the command, and a `GET` one more while it
    /// decodes the reply; in pieces it holds a few pieces more than the object. Below the limit
    /// one `SET` is faster: the server keeps the received argument as the value, where pieces
    /// are copied into a preallocated value.
    #[serde(skip_serializing_if = "is_default_chunked_above")]
    pub chunked_above_bytes: u64,
    /// Size of the pieces of a large object (default [`DEFAULT_CHUNK_BYTES`]).
    #[serde(skip_serializing_if = "is_default_chunk")]
    pub chunk_bytes: u64,
    /// A Redis Cluster (default `false`): `url` and [`Self::nodes`] are seed nodes, from which
    /// the client learns the cluster's slots and follows `MOVED` and `ASK` redirections. Each
    /// object's key carries a hash tag (`prefix{key}`), so that the pieces of a large object
    /// stay on its slot; batches are split by slot. Cluster mode has database 0 only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cluster: bool,
    /// More seed nodes of a cluster (`redis://host:port`, the scheme of `url`), tried when
    /// `url` is down. Their passwords, if any, are ignored: `password` (or `url`'s) is used.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// A write returns once this many replicas of its master have it too (`WAIT`), so that a
    /// master that fails after acknowledging it cannot take it along (default 0: replication
    /// is asynchronous, as in Redis). A write that fewer replicas take within
    /// `response_timeout` fails with a temporary error; the object may be in place then.
    #[serde(skip_serializing_if = "is_zero")]
    pub min_replicas: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_default_chunk(n: &u64) -> bool {
    *n == DEFAULT_CHUNK_BYTES
}

fn is_default_chunked_above(n: &u64) -> bool {
    *n == DEFAULT_CHUNKED_ABOVE_BYTES
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: DEFAULT_URL.into(),
            host: None,
            port: None,
            db: None,
            username: None,
            password: None,
            tls_ca_file: None,
            prefix: String::new(),
            ttl_ms: None,
            response_timeout_ms: DEFAULT_RESPONSE_TIMEOUT.as_millis() as u64,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT.as_millis() as u64,
            chunked_above_bytes: DEFAULT_CHUNKED_ABOVE_BYTES,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            cluster: false,
            nodes: Vec::new(),
            min_replicas: 0,
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls_ca_file", &self.tls_ca_file)
            .field("prefix", &self.prefix)
            .field("ttl_ms", &self.ttl_ms)
            .field("response_timeout_ms", &self.response_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("chunked_above_bytes", &self.chunked_above_bytes)
            .field("chunk_bytes", &self.chunk_bytes)
            .field("cluster", &self.cluster)
            .field(
                "nodes",
                &self.nodes.iter().map(|u| redact_url(u)).collect::<Vec<_>>(),
            )
            .field("min_replicas", &self.min_replicas)
            .finish()
    }
}

/// The URL with any password replaced, for messages.
pub(super) fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("<redacted>"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable URL>".into(),
    }
}

/// Decode `%XX` escapes (a URL's user-info part); invalid escapes are kept as they are.
pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2))
            && let (Some(h), Some(l)) = (hex(h), hex(l))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl RedisConfig {
    /// A config for the server at `url` with defaults for everything else.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            ..RedisConfig::default()
        }
    }

    /// A config for the Redis Cluster of which `nodes` are members (seed nodes: at least one;
    /// the first is [`RedisConfig::url`], the others [`RedisConfig::nodes`]).
    ///
    /// ```
    /// use proxystore::connector::redis::RedisConfig;
    /// let c = RedisConfig::cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]);
    /// assert!(c.cluster);
    /// assert_eq!(c.nodes, ["redis://10.0.0.2:7000"]);
    /// ```
    pub fn cluster<S: Into<String>>(nodes: impl IntoIterator<Item = S>) -> Self {
        let mut nodes = nodes.into_iter().map(Into::into);
        RedisConfig {
            url: nodes.next().unwrap_or_default(),
            nodes: nodes.collect(),
            cluster: true,
            ..RedisConfig::default()
        }
    }

    /// The response timeout as a duration.
    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }

    /// The connect timeout as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The normal form: the overriding fields folded into the URL, the password taken out of it.
    /// Normalising twice gives the same config.
    pub(super) fn normalized(&self) -> Result<RedisConfig> {
        let bad =
            |what: &str| Error::config(format!("redis URL {}: {what}", redact_url(&self.url)));
        let mut url = url::Url::parse(&self.url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "redis" | "rediss" | "redis+unix" | "unix") {
            return Err(bad("scheme must be redis, rediss, redis+unix or unix"));
        }
        let mut password = url.password().map(percent_decode);
        if url.password().is_some() {
            url.set_password(None)
                .map_err(|()| bad("cannot remove the password"))?;
        }
        if let Some(p) = &self.password {
            password = Some(p.clone());
        }
        if let Some(host) = &self.host {
            url.set_host(Some(host))
                .map_err(|e| bad(&format!("host {host:?}: {e}")))?;
        }
        if let Some(port) = self.port {
            url.set_port(Some(port))
                .map_err(|()| bad("this URL cannot have a port"))?;
        }
        if let Some(db) = self.db {
            if url.scheme().ends_with("unix") {
                url.query_pairs_mut().append_pair("db", &db.to_string());
            } else {
                url.set_path(&format!("/{db}"));
            }
        }
        if let Some(user) = &self.username {
            url.set_username(user)
                .map_err(|()| bad("this URL cannot have a user name"))?;
        }
        if self.response_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(Error::config("redis timeouts must be above zero"));
        }
        if self.ttl_ms == Some(0) {
            return Err(Error::config("redis ttl_ms must be above zero"));
        }
        if self.chunk_bytes == 0 || self.chunked_above_bytes == 0 {
            return Err(Error::config(
                "redis chunk_bytes and chunked_above_bytes must be above zero",
            ));
        }
        if self.tls_ca_file.is_some() && url.scheme() != "rediss" {
            return Err(bad("tls_ca_file needs a rediss:// URL"));
        }
        let mut nodes = Vec::with_capacity(self.nodes.len());
        if self.cluster {
            if !matches!(url.scheme(), "redis" | "rediss") {
                return Err(bad("a cluster's nodes are redis:// or rediss:// URLs"));
            }
            if !matches!(url.path(), "" | "/" | "/0") {
                return Err(bad("a Redis Cluster has database 0 only"));
            }
            for node in &self.nodes {
                let bad = |what: &str| {
                    Error::config(format!("redis cluster node {}: {what}", redact_url(node)))
                };
                let mut n = url::Url::parse(node).map_err(|e| bad(&e.to_string()))?;
                if n.scheme() != url.scheme() {
                    return Err(bad(&format!(
                        "scheme must be {}, as the url's",
                        url.scheme()
                    )));
                }
                if n.host_str().is_none() {
                    return Err(bad("no host"));
                }
                let _ = n.set_password(None);
                if !url.username().is_empty() {
                    let _ = n.set_username(url.username());
                }
                nodes.push(n.to_string());
            }
        } else if !self.nodes.is_empty() {
            return Err(Error::config(
                "redis nodes are the seed nodes of a cluster: set cluster too",
            ));
        }
        Ok(RedisConfig {
            url: url.to_string(),
            host: None,
            port: None,
            db: None,
            username: None,
            password,
            tls_ca_file: self.tls_ca_file.clone(),
            prefix: self.prefix.clone(),
            ttl_ms: self.ttl_ms,
            response_timeout_ms: self.response_timeout_ms,
            connect_timeout_ms: self.connect_timeout_ms,
            chunked_above_bytes: self.chunked_above_bytes,
            chunk_bytes: self.chunk_bytes,
            cluster: self.cluster,
            nodes,
            min_replicas: self.min_replicas,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2"), "a b%2");
        assert_eq!(percent_decode("%e2%9c%93"), "✓");
    }
}
