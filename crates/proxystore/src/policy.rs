//! Which references this process agrees to rebuild a store from.
//!
//! A [`Reference`] carries the config of its store's connector, so that any process can rebuild
//! the store and fetch the object. That config is data from whoever sent the reference: on its
//! own it could name a file connector over `/etc`, a Redis server anywhere, or an S3 bucket the
//! process's credentials can read. A [`ResolvePolicy`] says which connector kinds, local
//! directories, network hosts and S3 buckets a reference may name; a store is rebuilt from a
//! reference only when every place its connector would touch is allowed. A reference outside
//! the policy fails with [`Error::Refused`] before any connector is built: nothing is read,
//! created or contacted.
//!
//! Stores registered with [`crate::register_store`] are the application's own and are never
//! checked: a reference naming a registered store resolves through it, whatever config the
//! reference carries.
//!
//! # The default
//!
//! [`ResolvePolicy::default`] accepts what a single machine or a test needs and nothing that
//! reaches further:
//!
//! - connector kinds: the built-in ones (`memory`, `file`, `multi`, `redis`, `grpc`, `s3`,
//!   `globus`), each limited by the lists below; kinds added with
//!   [`crate::kinds::register_connector_kind`] only when listed with
//!   [`ResolvePolicy::allow_kind`] (registering a kind says how to build it, not that
//!   strangers may make this process build it);
//! - directories (file connector, a Globus endpoint's local path, Unix sockets, CA and token
//!   files): the system temporary directory ([`std::env::temp_dir`]) and, on Unix, `/tmp`;
//! - hosts (Redis, gRPC, S3 endpoints, the Globus API): loopback only (`localhost`,
//!   `127.0.0.0/8`, `::1`);
//! - S3 buckets: none, so S3 references are refused until a bucket is listed; the Globus API
//!   host is not loopback, so Globus references are refused until it is listed.
//!
//! Widen it in code with the `allow_*` methods and [`set_resolve_policy`], or in a deployment
//! with the `PROXYSTORE_RESOLVE_POLICY` environment variable ([`RESOLVE_POLICY_ENV`]), read the
//! first time a reference needs a policy when none was set in code:
//!
//! ```sh
//! PROXYSTORE_RESOLVE_POLICY='{"hosts": ["redis.internal:6379"], "directories": ["/mnt/shared/objects"]}'
//! ```
//!
//! The lists of that JSON object are added to the default; `"base": "none"` starts from
//! nothing instead (only what is listed, and only registered stores otherwise), and
//! `"base": "all"` accepts every reference (a closed network whose every sender is trusted).
//!
//! # What is compared
//!
//! Paths must be absolute and free of `..`; the configured path and each allowed directory are
//! then resolved through the file system ([`std::fs::canonicalize`] of the longest part that
//! exists), so a symbolic link inside an allowed directory that points outside it is refused.
//! This reads directory entries, never an object. A link swapped in after the check by someone
//! who can write into an allowed directory is outside what a policy can stop.
//!
//! Hosts are compared as written in the reference, after the connector's own URL parsing; names
//! are not resolved (a policy that lists a name trusts whatever it resolves to). A host pattern
//! is one of `name`, `name:port`, `*.domain` (any name under `domain`), an IP address (IPv6 in
//! brackets when followed by a port: `[::1]:50051`), a network `10.0.0.0/8`, or `*` (any host).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::connector::{ConnectorConfig, Resource, file, memory, multi};
use crate::error::{Error, Result};
use crate::reference::Reference;

/// Environment variable holding a process's resolve policy as JSON (see the
/// [module documentation](self) and [`ResolvePolicy::from_env`]).
pub const RESOLVE_POLICY_ENV: &str = "PROXYSTORE_RESOLVE_POLICY";

/// The connector kinds built into this crate (whether or not their cargo feature is on).
const BUILTIN_KINDS: &[&str] = &[
    memory::KIND,
    file::KIND,
    multi::KIND,
    "redis",
    "grpc",
    "s3",
    "globus",
];

/// How deep `multi` connectors may nest inside one another in a reference.
const MAX_MULTI_DEPTH: usize = 8;

/// Which references this process rebuilds stores from (see the [module documentation](self)).
///
/// Build one from [`ResolvePolicy::default`] (loopback and temporary directories),
/// [`ResolvePolicy::deny_all`] (nothing: only registered stores resolve) or
/// [`ResolvePolicy::allow_all`] (everything), widen it with the `allow_*` methods, and install it
/// with [`set_resolve_policy`]. It deserializes from the JSON of [`RESOLVE_POLICY_ENV`].
///
/// ```
/// use proxystore::{Error, Key, Reference, ResolvePolicy, connector::ConnectorConfig};
///
/// let policy = ResolvePolicy::default()
///     .allow_directory("/mnt/shared/objects")
///     .allow_host("redis.internal:6379")?
///     .allow_bucket("ml-artifacts");
///
/// let file = |dir: &str| {
///     let config = ConnectorConfig::new("file", serde_json::json!({ "directory": dir }));
///     Reference::new("s", config, Key::from("k"))
/// };
/// assert!(policy.check(&file("/mnt/shared/objects/run-7")).is_ok());
/// assert!(matches!(policy.check(&file("/etc")), Err(Error::Refused { .. })));
/// assert!(matches!(policy.check(&file("/mnt/shared/objects/../../etc")), Err(Error::Refused { .. })));
/// # Ok::<_, proxystore::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PolicySpec", into = "PolicySpec")]
pub struct ResolvePolicy {
    allow_all: bool,
    kinds: BTreeSet<String>,
    directories: Vec<PathBuf>,
    hosts: Vec<HostPattern>,
    buckets: BTreeSet<String>,
}

impl Default for ResolvePolicy {
    /// Built-in kinds; the temporary directory (and `/tmp` on Unix); loopback hosts; no
    /// bucket. See the [module documentation](self) for why.
    fn default() -> Self {
        let mut directories = vec![std::env::temp_dir()];
        #[cfg(unix)]
        directories.push(PathBuf::from("/tmp"));
        directories.dedup();
        ResolvePolicy {
            allow_all: false,
            kinds: BUILTIN_KINDS.iter().map(|k| (*k).to_owned()).collect(),
            directories,
            hosts: vec![
                HostPattern::name("localhost"),
                HostPattern::net(IpAddr::from([127, 0, 0, 0]), 8),
                HostPattern::net(IpAddr::from(std::net::Ipv6Addr::LOCALHOST), 128),
            ],
            buckets: BTreeSet::new(),
        }
    }
}

impl ResolvePolicy {
    /// A policy that accepts no reference: only stores registered in this process resolve.
    /// Widen it with the `allow_*` methods to accept exactly what is listed.
    ///
    /// ```
    /// use proxystore::{Key, Reference, ResolvePolicy, connector::ConnectorConfig};
    /// let memory = Reference::new("s", ConnectorConfig::new("memory", serde_json::Value::Null), Key::from("k"));
    /// assert!(ResolvePolicy::deny_all().check(&memory).is_err());
    /// assert!(ResolvePolicy::deny_all().allow_kind("memory").check(&memory).is_ok());
    /// ```
    pub fn deny_all() -> Self {
        ResolvePolicy {
            allow_all: false,
            kinds: BTreeSet::new(),
            directories: Vec::new(),
            hosts: Vec::new(),
            buckets: BTreeSet::new(),
        }
    }

    /// A policy that accepts every reference, as this library did before policies existed. For
    /// closed networks where every process that can send a reference is trusted.
    pub fn allow_all() -> Self {
        ResolvePolicy {
            allow_all: true,
            ..ResolvePolicy::deny_all()
        }
    }

    /// Also accept connector kind `kind` (a third-party kind registered with
    /// [`crate::kinds::register_connector_kind`], or a built-in one left out by
    /// [`ResolvePolicy::deny_all`]). A listed third-party kind is accepted with any options:
    /// this crate does not know what they point at.
    #[must_use]
    pub fn allow_kind(mut self, kind: impl Into<String>) -> Self {
        self.kinds.insert(kind.into());
        self
    }

    /// Also accept local paths in `directory` or below it. A relative path is taken relative
    /// to the current directory now.
    #[must_use]
    pub fn allow_directory(mut self, directory: impl AsRef<Path>) -> Self {
        let dir = directory.as_ref();
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        if !self.directories.contains(&dir) {
            self.directories.push(dir);
        }
        self
    }

    /// Also accept network endpoints matching `pattern`: `name`, `name:port`, `*.domain`, an
    /// IP address (`10.0.0.5`, `10.0.0.5:6379`, `::1`, `[::1]:50051`), a network
    /// (`10.0.0.0/8`), or `*` for any host.
    ///
    /// # Errors
    /// [`Error::Config`] when `pattern` is none of these.
    pub fn allow_host(mut self, pattern: &str) -> Result<Self> {
        let pattern: HostPattern = pattern.parse()?;
        if !self.hosts.contains(&pattern) {
            self.hosts.push(pattern);
        }
        Ok(self)
    }

    /// Also accept S3 references to `bucket` (on AWS, or on an endpoint whose host is
    /// allowed).
    #[must_use]
    pub fn allow_bucket(mut self, bucket: impl Into<String>) -> Self {
        self.buckets.insert(bucket.into());
        self
    }

    /// Whether this policy accepts every reference ([`ResolvePolicy::allow_all`]).
    pub fn allows_all(&self) -> bool {
        self.allow_all
    }

    /// The accepted connector kinds.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.iter().map(String::as_str)
    }

    /// The directories under which local paths are accepted.
    pub fn directories(&self) -> &[PathBuf] {
        &self.directories
    }

    /// The accepted host patterns.
    pub fn hosts(&self) -> &[HostPattern] {
        &self.hosts
    }

    /// The accepted S3 buckets.
    pub fn buckets(&self) -> impl Iterator<Item = &str> {
        self.buckets.iter().map(String::as_str)
    }

    /// A policy from its JSON form: an object with optional `base` (`"default"`, the default;
    /// `"none"`; or `"all"`) and lists `kinds`, `directories` (absolute paths), `hosts` and
    /// `buckets` that are added to the base.
    ///
    /// ```
    /// use proxystore::ResolvePolicy;
    /// let p = ResolvePolicy::from_json(r#"{"base": "none", "kinds": ["file"], "directories": ["/data"]}"#)?;
    /// assert_eq!(p, ResolvePolicy::deny_all().allow_kind("file").allow_directory("/data"));
    /// let q = ResolvePolicy::from_json(r#"{"hosts": ["10.0.0.0/8"]}"#)?;
    /// assert_eq!(q, ResolvePolicy::default().allow_host("10.0.0.0/8")?);
    /// # Ok::<_, proxystore::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] for text that is not such an object, an unknown field, a relative
    /// directory or a bad host pattern.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| Error::config(format!("resolve policy: {e}")))
    }

    /// The policy in [`RESOLVE_POLICY_ENV`] (see [`ResolvePolicy::from_json`]), or the default
    /// when the variable is not set.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable when its value is not a valid policy.
    pub fn from_env() -> Result<Self> {
        match std::env::var(RESOLVE_POLICY_ENV) {
            Ok(json) => ResolvePolicy::from_json(&json)
                .map_err(|e| Error::config(format!("{RESOLVE_POLICY_ENV}: {e}"))),
            Err(std::env::VarError::NotPresent) => Ok(ResolvePolicy::default()),
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::config(format!(
                "{RESOLVE_POLICY_ENV} is not valid UTF-8"
            ))),
        }
    }

    /// Check that a store may be rebuilt from `reference` (its store name and connector
    /// config). Registered stores are not this method's business: see
    /// [`crate::store_for_reference`].
    ///
    /// # Errors
    /// [`Error::Refused`] saying what is not allowed, or [`Error::Config`] for connector options
    /// that do not parse (which no connector would accept either).
    pub fn check(&self, reference: &Reference) -> Result<()> {
        self.check_connector(&reference.store, &reference.connector)
    }

    /// Check that a store named `store` may be built over `config`, as for
    /// [`ResolvePolicy::check`]. Call it before [`crate::kinds::from_config`] or
    /// [`crate::Store::from_config`] on a config from an untrusted source: those build whatever
    /// they are given.
    ///
    /// # Errors
    /// As for [`ResolvePolicy::check`].
    pub fn check_connector(&self, store: &str, config: &ConnectorConfig) -> Result<()> {
        if self.allow_all {
            return Ok(());
        }
        match self.violation(config, 0)? {
            None => Ok(()),
            Some(reason) => Err(Error::Refused {
                store: store.to_owned(),
                kind: config.kind().to_owned(),
                reason,
            }),
        }
    }

    /// Why `config` is not accepted, if it is not.
    fn violation(&self, config: &ConnectorConfig, depth: usize) -> Result<Option<String>> {
        let kind = config.kind();
        if !self.kinds.contains(kind) {
            return Ok(Some(format!(
                "connector kind '{kind}' is not allowed (allowed: {}); allow it with \
                 ResolvePolicy::allow_kind",
                list(self.kinds.iter())
            )));
        }
        let resources = match kind {
            memory::KIND => Vec::new(),
            file::KIND => file::FileConnector::resources(config)?,
            multi::KIND => {
                if depth >= MAX_MULTI_DEPTH {
                    return Ok(Some(format!(
                        "multi connectors nested more than {MAX_MULTI_DEPTH} deep"
                    )));
                }
                for route in config.options::<multi::MultiConfig>()?.routes {
                    if let Some(reason) = self.violation(&route.connector, depth + 1)? {
                        return Ok(Some(format!("route '{}': {reason}", route.label)));
                    }
                }
                Vec::new()
            }
            #[cfg(feature = "redis")]
            "redis" => crate::connector::redis::RedisConnector::resources(config)?,
            #[cfg(feature = "grpc")]
            "grpc" => crate::connector::grpc::GrpcConnector::resources(config)?,
            #[cfg(feature = "s3")]
            "s3" => crate::connector::s3::S3Connector::resources(config)?,
            #[cfg(feature = "globus")]
            "globus" => crate::connector::globus::GlobusConnector::resources(config)?,
            // A built-in kind whose feature is off fails to build with UnknownConnectorKind,
            // before any I/O; a listed third-party kind is accepted as a whole.
            _ => Vec::new(),
        };
        Ok(resources.iter().find_map(|r| self.resource_violation(r)))
    }

    fn resource_violation(&self, resource: &Resource) -> Option<String> {
        match resource {
            Resource::Path { what, path } => self.path_violation(what, path),
            Resource::Host { what, host, port } => {
                let shown = match port {
                    Some(p) if host.contains(':') => format!("[{host}]:{p}"),
                    Some(p) => format!("{host}:{p}"),
                    None => host.clone(),
                };
                if self.hosts.iter().any(|h| h.matches(host, *port)) {
                    None
                } else {
                    Some(format!(
                        "{what} host {shown} is not allowed (allowed hosts: {}); allow it with \
                         ResolvePolicy::allow_host(\"{shown}\")",
                        list(self.hosts.iter())
                    ))
                }
            }
            Resource::Bucket(bucket) => {
                if self.buckets.contains(bucket) {
                    None
                } else {
                    Some(format!(
                        "S3 bucket '{bucket}' is not allowed (allowed buckets: {}); allow it \
                         with ResolvePolicy::allow_bucket",
                        list(self.buckets.iter())
                    ))
                }
            }
        }
    }

    fn path_violation(&self, what: &str, path: &Path) -> Option<String> {
        let shown = path.display();
        if !path.is_absolute() {
            return Some(format!("{what} {shown} is not an absolute path"));
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return Some(format!("{what} {shown} contains '..'"));
        }
        let real = real_path(path);
        if self
            .directories
            .iter()
            .any(|d| d.is_absolute() && real.starts_with(real_path(d)))
        {
            return None;
        }
        let resolved = if real.as_path() == path {
            String::new()
        } else {
            format!(" (resolves to {})", real.display())
        };
        Some(format!(
            "{what} {shown}{resolved} is outside the allowed directories ({}); allow it with \
             ResolvePolicy::allow_directory",
            list(self.directories.iter().map(|d| d.display()))
        ))
    }
}

fn list<T: fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let items: Vec<String> = items.map(|i| i.to_string()).collect();
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// `path` without `.` components, and `..` applied lexically (for trusted paths only).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `path` with symbolic links resolved as far as it exists; the components that do not exist
/// yet are appended as written. Reads directory entries and links, nothing else.
fn real_path(path: &Path) -> PathBuf {
    let path = lexical(path);
    let mut rest = Vec::new();
    let mut existing = path.as_path();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return path,
        }
    }
}

/// One entry of a policy's host list (see [`ResolvePolicy::allow_host`]).
///
/// ```
/// use proxystore::policy::HostPattern;
/// let p: HostPattern = "*.internal:6379".parse()?;
/// assert!(p.matches("cache.internal", Some(6379)));
/// assert!(!p.matches("cache.internal", Some(6380)));
/// assert!(!p.matches("internal", Some(6379)));
/// let net: HostPattern = "10.0.0.0/8".parse()?;
/// assert!(net.matches("10.1.2.3", Some(1)) && !net.matches("11.0.0.1", None));
/// # Ok::<_, proxystore::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    matcher: Matcher,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Matcher {
    Any,
    Name { name: String, port: Option<u16> },
    Suffix { suffix: String, port: Option<u16> },
    Ip { ip: IpAddr, port: Option<u16> },
    Net { net: IpAddr, bits: u8 },
}

impl HostPattern {
    fn name(name: &str) -> Self {
        HostPattern {
            matcher: Matcher::Name {
                name: name.to_ascii_lowercase(),
                port: None,
            },
        }
    }

    fn net(net: IpAddr, bits: u8) -> Self {
        HostPattern {
            matcher: Matcher::Net { net, bits },
        }
    }

    /// Whether an endpoint at `host` (a name or an IP address, IPv6 with or without brackets)
    /// and `port` matches. Names match names case-insensitively and addresses match addresses;
    /// a name is never resolved.
    pub fn matches(&self, host: &str, port: Option<u16>) -> bool {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let ip = host.parse::<IpAddr>().ok();
        let port_ok = |want: &Option<u16>| want.is_none() || *want == port;
        match &self.matcher {
            Matcher::Any => true,
            Matcher::Name { name, port: p } => {
                ip.is_none() && host.eq_ignore_ascii_case(name) && port_ok(p)
            }
            Matcher::Suffix { suffix, port: p } => {
                let host = host.to_ascii_lowercase();
                ip.is_none()
                    && host.len() > suffix.len() + 1
                    && host.ends_with(suffix.as_str())
                    && host[..host.len() - suffix.len()].ends_with('.')
                    && port_ok(p)
            }
            Matcher::Ip { ip: want, port: p } => ip == Some(*want) && port_ok(p),
            Matcher::Net { net, bits } => ip.is_some_and(|ip| in_network(ip, *net, *bits)),
        }
    }
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

impl FromStr for HostPattern {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::config(format!("host pattern {s:?}: {why}"));
        let matcher = if s == "*" {
            Matcher::Any
        } else if let Some((addr, bits)) = s.split_once('/') {
            let net: IpAddr = addr.parse().map_err(|_| bad("not an IP network"))?;
            let max = if net.is_ipv4() { 32 } else { 128 };
            let bits: u8 = bits.parse().map_err(|_| bad("bad prefix length"))?;
            if bits > max {
                return Err(bad("prefix length too long"));
            }
            Matcher::Net { net, bits }
        } else if let Ok(ip) = s.parse::<IpAddr>() {
            Matcher::Ip { ip, port: None }
        } else {
            let (host, port) = if let Some(rest) = s.strip_prefix('[') {
                let (ip, after) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
                let port = match after {
                    "" => None,
                    p => Some(p.strip_prefix(':').ok_or_else(|| bad("bad port"))?),
                };
                (ip, port)
            } else {
                match s.rsplit_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (s, None),
                }
            };
            let port = port
                .map(|p| p.parse::<u16>().map_err(|_| bad("bad port")))
                .transpose()?;
            if let Ok(ip) = host.parse::<IpAddr>() {
                Matcher::Ip { ip, port }
            } else if s.starts_with('[') {
                return Err(bad("not an IPv6 address in brackets"));
            } else if let Some(suffix) = host.strip_prefix("*.") {
                if !valid_name(suffix) {
                    return Err(bad("not a domain after '*.'"));
                }
                Matcher::Suffix {
                    suffix: suffix.to_ascii_lowercase(),
                    port,
                }
            } else if valid_name(host) {
                Matcher::Name {
                    name: host.to_ascii_lowercase(),
                    port,
                }
            } else {
                return Err(bad(
                    "expected name, name:port, *.domain, an IP address or network, or *",
                ));
            }
        };
        Ok(HostPattern { matcher })
    }
}

impl TryFrom<String> for HostPattern {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let port = |f: &mut fmt::Formatter<'_>, p: &Option<u16>| match p {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        };
        match &self.matcher {
            Matcher::Any => f.write_str("*"),
            Matcher::Name { name, port: p } => {
                f.write_str(name)?;
                port(f, p)
            }
            Matcher::Suffix { suffix, port: p } => {
                write!(f, "*.{suffix}")?;
                port(f, p)
            }
            Matcher::Ip {
                ip: IpAddr::V6(ip),
                port: Some(p),
            } => write!(f, "[{ip}]:{p}"),
            Matcher::Ip { ip, port: p } => {
                write!(f, "{ip}")?;
                port(f, p)
            }
            Matcher::Net { net, bits } => write!(f, "{net}/{bits}"),
        }
    }
}

impl Serialize for HostPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Where the lists of a policy's JSON form start from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Base {
    #[default]
    Default,
    None,
    All,
}

/// The JSON form of a [`ResolvePolicy`].
#[derive(Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PolicySpec {
    base: Base,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kinds: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    directories: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hosts: Vec<HostPattern>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    buckets: Vec<String>,
}

impl TryFrom<PolicySpec> for ResolvePolicy {
    type Error = Error;

    fn try_from(spec: PolicySpec) -> Result<Self> {
        let mut policy = match spec.base {
            Base::Default => ResolvePolicy::default(),
            Base::None => ResolvePolicy::deny_all(),
            Base::All => ResolvePolicy::allow_all(),
        };
        for dir in spec.directories {
            if !dir.is_absolute() {
                return Err(Error::config(format!(
                    "resolve policy directory {} is not absolute",
                    dir.display()
                )));
            }
            policy = policy.allow_directory(dir);
        }
        for host in spec.hosts {
            if !policy.hosts.contains(&host) {
                policy.hosts.push(host);
            }
        }
        policy.kinds.extend(spec.kinds);
        policy.buckets.extend(spec.buckets);
        Ok(policy)
    }
}

impl From<ResolvePolicy> for PolicySpec {
    fn from(p: ResolvePolicy) -> Self {
        PolicySpec {
            base: if p.allow_all { Base::All } else { Base::None },
            kinds: p.kinds.into_iter().collect(),
            directories: p.directories,
            hosts: p.hosts,
            buckets: p.buckets.into_iter().collect(),
        }
    }
}

/// The policy installed with [`set_resolve_policy`]; `None` until one is installed or read from
/// the environment.
static POLICY: RwLock<Option<Arc<ResolvePolicy>>> = RwLock::new(None);

/// Install `policy` as this process's resolve policy: every store rebuilt from a reference from
/// now on is checked against it (proxies resolve through `Deref` with no context to pass a
/// policy in, so the policy is process-wide). Stores already rebuilt are checked again the next
/// time a reference reaches them.
///
/// ```
/// use proxystore::{ResolvePolicy, resolve_policy, set_resolve_policy};
/// set_resolve_policy(ResolvePolicy::default().allow_host("10.0.0.0/8")?);
/// assert!(resolve_policy()?.hosts().iter().any(|h| h.to_string() == "10.0.0.0/8"));
/// # Ok::<_, proxystore::Error>(())
/// ```
pub fn set_resolve_policy(policy: ResolvePolicy) {
    *POLICY.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(policy));
}

/// The policy in force: the one installed with [`set_resolve_policy`], else the one in
/// [`RESOLVE_POLICY_ENV`], else [`ResolvePolicy::default`].
///
/// # Errors
/// [`Error::Config`] when no policy was installed and the environment variable holds an invalid
/// one; every reference is then refused until it is fixed or a policy is installed.
pub fn resolve_policy() -> Result<ResolvePolicy> {
    current().map(|p| (*p).clone())
}

pub(crate) fn current() -> Result<Arc<ResolvePolicy>> {
    if let Some(p) = POLICY.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Ok(p.clone());
    }
    let from_env = Arc::new(ResolvePolicy::from_env()?);
    let mut slot = POLICY.write().unwrap_or_else(|e| e.into_inner());
    Ok(slot.get_or_insert(from_env).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_parse_and_match() {
        let p = |s: &str| s.parse::<HostPattern>().unwrap();
        assert!(p("localhost").matches("LocalHost", Some(1)));
        assert!(!p("localhost").matches("localhost.evil.org", None));
        assert!(p("redis.internal:6379").matches("redis.internal", Some(6379)));
        assert!(!p("redis.internal:6379").matches("redis.internal", None));
        assert!(p("::1").matches("[::1]", Some(5)));
        assert!(p("[::1]:5").matches("::1", Some(5)));
        assert!(!p("[::1]:5").matches("::1", Some(6)));
        assert!(p("127.0.0.0/8").matches("127.3.2.1", None));
        assert!(!p("127.0.0.0/8").matches("128.0.0.1", None));
        assert!(!p("127.0.0.0/8").matches("2130706433", None));
        assert!(p("0.0.0.0/0").matches("8.8.8.8", None));
        assert!(p("*").matches("anything", None));
        assert!(!p("*.example.org").matches("example.org", None));
        assert!(!p("*.example.org").matches("badexample.org", None));
        assert!(p("*.example.org").matches("a.b.Example.org", None));
        for bad in [
            "",
            "a b",
            "*.",
            "1.2.3.4/33",
            "[::1",
            "[evil]:1",
            "h:port",
            "*.*.x",
        ] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad:?}");
        }
        for s in [
            "*",
            "h",
            "h:1",
            "*.d:2",
            "1.2.3.4",
            "1.2.3.4:5",
            "[::1]:5",
            "::1",
            "::/0",
        ] {
            assert_eq!(p(s).to_string(), s);
        }
    }

    #[test]
    fn json_form_round_trips() {
        let p = ResolvePolicy::deny_all()
            .allow_kind("file")
            .allow_directory("/data")
            .allow_host("h:1")
            .unwrap()
            .allow_bucket("b");
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(ResolvePolicy::from_json(&json).unwrap(), p);
        let all = serde_json::to_string(&ResolvePolicy::allow_all()).unwrap();
        assert_eq!(
            ResolvePolicy::from_json(&all).unwrap(),
            ResolvePolicy::allow_all()
        );
        assert_eq!(
            ResolvePolicy::from_json("{}").unwrap(),
            ResolvePolicy::default()
        );
        for bad in [
            "3",
            r#"{"hostz": []}"#,
            r#"{"directories": ["rel"]}"#,
            r#"{"hosts": ["a b"]}"#,
            r#"{"base": "some"}"#,
        ] {
            assert!(
                matches!(ResolvePolicy::from_json(bad), Err(Error::Config { .. })),
                "{bad}"
            );
        }
    }
}
