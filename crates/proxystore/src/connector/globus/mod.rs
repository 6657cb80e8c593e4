//! The Globus connector: objects as files in directories that Globus Transfer keeps in sync.
//!
//! Follows Python ProxyStore's `GlobusConnector` (`proxystore/connectors/globus.py`). A
//! connector knows a set of [`GlobusEndpoint`]s: Globus collections, each with a UUID, a directory
//! as Globus sees it (`endpoint_path`), the same directory as this host sees it (`local_path`)
//! and host-name glob patterns saying on which hosts it is the *local* endpoint.
//!
//! - **put** writes the object into the local endpoint's directory, then submits one Transfer
//!   task per other endpoint copying it there. The key is `<name>:<task id>[,<task id>...]`: the
//!   object's file name and the tasks that carry it. A batch put submits one task per other
//!   endpoint for the whole batch.
//! - **get** on a host that received the object waits (polling the task with backoff, bounded
//!   by [`GlobusConfig::timeout_ms`]) until the task bound for this endpoint has SUCCEEDED, then
//!   reads the local copy. On the host that put the object nothing is waited for. A FAILED task
//!   gives [`Error::Backend`] naming the task, its status and Globus' `fatal_error`.
//! - **exists** waits the same way and then checks the local file; a FAILED task reads as absent.
//! - **evict** waits until the key's transfers are over (so that a delete cannot race a copy),
//!   deletes the local file and submits a Delete task to every other endpoint. As in Python, a key
//!   whose local file is already gone is left alone.
//!
//! Deferred puts (`new_key` + `set`) are not supported: the key must carry task ids that only
//! exist once the transfer is submitted (Python's connector has no deferred put either).
//!
//! # Which endpoint is local
//!
//! In order: [`GlobusConfig::local_endpoint`] (a per-process setting, never written into proxy
//! references), then the `PROXYSTORE_GLOBUS_ENDPOINT` environment variable when it names one of
//! the endpoints, then the first endpoint one of whose `host_patterns` (globs, case-insensitive)
//! matches this host's name. Python matches a regular expression; globs are what the rest of this
//! library uses for patterns.
//!
//! # Credentials
//!
//! A Globus Transfer access token (scope `urn:globus:auth:scope:transfer.api.globus.org:all`),
//! sent as `Authorization: Bearer`. It is looked up at every request, so that a rotated token is
//! picked up: [`GlobusConfig::token`] if set, else the environment variable named by
//! [`GlobusConfig::token_env`] (default `PROXYSTORE_GLOBUS_TOKEN`), else the first line of
//! [`GlobusConfig::token_file`]. [`Connector::config`] leaves the token out unless
//! [`GlobusConfig::export_token`] is set: a proxy that travels to another process picks the
//! token up from that process's environment or token file. `Debug` never shows it.
//! HTTP 401 and 403 answers become [`Error::Unauthorized`].
//!
//! # The Transfer API calls used (v0.10)
//!
//! Base URL `https://transfer.api.globus.org/v0.10` ([`GlobusConfig::api_url`]). Field names
//! are those of the Globus documentation: <https://docs.globus.org/api/transfer/overview/>
//! (base URL, bearer authentication, error documents with `code` and `message`),
//! <https://docs.globus.org/api/transfer/task_submit/> (submission documents) and
//! <https://docs.globus.org/api/transfer/task/> (task document), and were checked against the
//! response fixtures of the Globus Python SDK (`globus_sdk/testing/data/transfer/`).
//!
//! | call | request | response fields read |
//! |---|---|---|
//! | `GET /submission_id` | | `value` |
//! | `POST /transfer` | `DATA_TYPE: "transfer"`, `submission_id`, `source_endpoint`, `destination_endpoint`, `label`, `notify_on_succeeded/failed/inactive: false`, `DATA: [{DATA_TYPE: "transfer_item", source_path, destination_path}]` | `task_id` (`code` is `Accepted`, or `Duplicate` for a resubmission) |
//! | `POST /delete` | `DATA_TYPE: "delete"`, `submission_id`, `endpoint`, `ignore_missing: true`, `label`, `notify_on_*: false`, `DATA: [{DATA_TYPE: "delete_item", path}]` | `task_id` |
//! | `GET /task/{task_id}` | | `status` (`ACTIVE`, `INACTIVE`, `SUCCEEDED`, `FAILED`), `source_endpoint_id`, `destination_endpoint_id`, `fatal_error.code`, `fatal_error.description` |
//!
//! A submission id makes a submission safe to repeat, so submissions are retried with the same
//! id when the API cannot be reached or answers 429/5xx, as are status polls, until the
//! operation's deadline; a task id unknown to the API (400/404) reads as an absent object, as in
//! Python.
//!
//! ```no_run
//! # proxystore::runtime::block_on(async {
//! use proxystore::connector::Connector;
//! use proxystore::connector::globus::{GlobusConfig, GlobusConnector, GlobusEndpoint};
//!
//! let config = GlobusConfig::new(vec![
//!     GlobusEndpoint::new(
//!         "11111111-2222-3333-4444-555555555555",
//!         "/~/proxystore",
//!         "/home/alice/proxystore",
//!         ["login*.cluster-a.example.org"],
//!     ),
//!     GlobusEndpoint::new(
//!         "66666666-7777-8888-9999-000000000000",
//!         "/projects/foo/proxystore",
//!         "/lus/projects/foo/proxystore",
//!         ["*.cluster-b.example.org"],
//!     ),
//! ]);
//! // The token comes from PROXYSTORE_GLOBUS_TOKEN (or `token_file`).
//! let connector = GlobusConnector::with_config(config)?;
//! let key = connector.put(bytes::Bytes::from_static(b"data")).await?;
//! # Ok::<_, proxystore::Error>(()) }).unwrap().unwrap();
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::file::{TMP_PREFIX, validate_key};
use super::{CallConfig, Connector, ConnectorConfig, PutOptions, Resource};
use crate::error::{BoxError, Error, Result};
use crate::key::Key;

/// Kind name of this connector.
pub const KIND: &str = "globus";

/// The Globus Transfer API base URL.
pub const DEFAULT_API_URL: &str = "https://transfer.api.globus.org/v0.10";

/// Environment variable holding the access token, unless [`GlobusConfig::token_env`] names
/// another.
pub const DEFAULT_TOKEN_ENV: &str = "PROXYSTORE_GLOBUS_TOKEN";

/// Environment variable naming (by UUID) the local endpoint of this process, for hosts whose
/// name no pattern matches.
pub const LOCAL_ENDPOINT_ENV: &str = "PROXYSTORE_GLOBUS_ENDPOINT";

/// Task ids kept in the status cache before it is cleared.
const TASK_CACHE_LIMIT: usize = 65_536;

/// One Globus collection (endpoint) and the directory used on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobusEndpoint {
    /// The collection's UUID.
    pub uuid: String,
    /// The directory as Globus sees it (an absolute path in the collection, e.g.
    /// `/~/proxystore` or `/projects/foo/proxystore`).
    pub endpoint_path: String,
    /// The same directory as seen on the endpoint's own hosts; `~/` is expanded from `HOME`.
    pub local_path: PathBuf,
    /// Glob patterns of the host names on which this endpoint is the local one.
    #[serde(default)]
    pub host_patterns: Vec<String>,
}

impl GlobusEndpoint {
    /// An endpoint description.
    pub fn new(
        uuid: impl Into<String>,
        endpoint_path: impl Into<String>,
        local_path: impl Into<PathBuf>,
        host_patterns: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        GlobusEndpoint {
            uuid: uuid.into(),
            endpoint_path: endpoint_path.into(),
            local_path: local_path.into(),
            host_patterns: host_patterns.into_iter().map(Into::into).collect(),
        }
    }

    /// The Globus path of object `name` on this endpoint.
    fn globus_path(&self, name: &str) -> String {
        format!("{}/{name}", self.endpoint_path.trim_end_matches('/'))
    }

    /// The local directory, with a leading `~` expanded.
    fn local_dir(&self) -> PathBuf {
        expand_home(&self.local_path)
    }
}

fn expand_home(path: &Path) -> PathBuf {
    let Ok(rest) = path.strip_prefix("~") else {
        return path.to_path_buf();
    };
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(rest),
        None => path.to_path_buf(),
    }
}

/// Options of a [`GlobusConnector`].
///
/// Defaults follow Python ProxyStore where it has the setting (60 s timeout); durations are in
/// milliseconds.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobusConfig {
    /// The endpoints kept in sync (at least two, distinct UUIDs). Order matters when several
    /// match the host name: the first wins.
    pub endpoints: Vec<GlobusEndpoint>,
    /// Transfer API base URL (default [`DEFAULT_API_URL`]).
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// An access token given directly. Left out of [`Connector::config`] unless
    /// [`GlobusConfig::export_token`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Environment variable read for the token when [`GlobusConfig::token`] is unset (default
    /// [`DEFAULT_TOKEN_ENV`]).
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// File whose first line is the token, read when neither of the above gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Write [`GlobusConfig::token`] into [`Connector::config`], and so into every proxy
    /// reference (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub export_token: bool,
    /// UUID of the local endpoint, overriding host-name matching in this process only: it is
    /// never written into [`Connector::config`], because a proxy's reader runs elsewhere.
    #[serde(default, skip_serializing)]
    pub local_endpoint: Option<String>,
    /// Longest wait of one operation for its Globus tasks, and for the API to answer (default
    /// 60 000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// First interval between task status polls; it doubles up to
    /// [`GlobusConfig::poll_max_ms`] (default 250).
    #[serde(default = "default_poll_min_ms")]
    pub poll_min_ms: u64,
    /// Longest interval between task status polls (default 5 000).
    #[serde(default = "default_poll_max_ms")]
    pub poll_max_ms: u64,
    /// Timeout of one HTTP request (default 30 000).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_api_url() -> String {
    DEFAULT_API_URL.to_owned()
}
fn default_token_env() -> String {
    DEFAULT_TOKEN_ENV.to_owned()
}
fn default_timeout_ms() -> u64 {
    60_000
}
fn default_poll_min_ms() -> u64 {
    250
}
fn default_poll_max_ms() -> u64 {
    5_000
}
fn default_request_timeout_ms() -> u64 {
    30_000
}

impl GlobusConfig {
    /// A config of `endpoints` with every other option at its default.
    pub fn new(endpoints: Vec<GlobusEndpoint>) -> Self {
        GlobusConfig {
            endpoints,
            api_url: default_api_url(),
            token: None,
            token_env: default_token_env(),
            token_file: None,
            export_token: false,
            local_endpoint: None,
            timeout_ms: default_timeout_ms(),
            poll_min_ms: default_poll_min_ms(),
            poll_max_ms: default_poll_max_ms(),
            request_timeout_ms: default_request_timeout_ms(),
        }
    }

    /// The access token: [`GlobusConfig::token`], the [`GlobusConfig::token_env`] variable as
    /// returned by `env`, or the first line of [`GlobusConfig::token_file`].
    fn resolve_token(&self, env: impl Fn(&str) -> Option<String>) -> Result<String> {
        let non_empty = |s: String| {
            let t = s.trim().to_owned();
            (!t.is_empty()).then_some(t)
        };
        if let Some(t) = self.token.clone().and_then(non_empty) {
            return Ok(t);
        }
        if let Some(t) = env(&self.token_env).and_then(non_empty) {
            return Ok(t);
        }
        if let Some(file) = &self.token_file {
            let text =
                std::fs::read_to_string(expand_home(file)).map_err(|e| Error::Unauthorized {
                    message: format!("cannot read Globus token file {}: {e}", file.display()),
                })?;
            if let Some(t) = text.lines().next().map(str::to_owned).and_then(non_empty) {
                return Ok(t);
            }
            return Err(Error::Unauthorized {
                message: format!("Globus token file {} is empty", file.display()),
            });
        }
        Err(Error::Unauthorized {
            message: format!(
                "no Globus access token: set {}, token_file or token in the connector options",
                self.token_env
            ),
        })
    }
}

impl fmt::Debug for GlobusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlobusConfig")
            .field("endpoints", &self.endpoints)
            .field("api_url", &self.api_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_env", &self.token_env)
            .field("token_file", &self.token_file)
            .field("export_token", &self.export_token)
            .field("local_endpoint", &self.local_endpoint)
            .field("timeout_ms", &self.timeout_ms)
            .field("poll_min_ms", &self.poll_min_ms)
            .field("poll_max_ms", &self.poll_max_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish()
    }
}

/// Objects in directories on several Globus endpoints, kept in sync by Globus Transfer.
///
/// Cheap to clone (the state is shared). All API calls and file I/O run on the library's I/O
/// runtime (where a store runs every call, see [`crate::layer`]).
#[derive(Clone)]
pub struct GlobusConnector {
    inner: Arc<Inner>,
}

struct Inner {
    config: GlobusConfig,
    /// Index of the local endpoint, if this host has one.
    local: Option<usize>,
    host: String,
    api_url: String,
    client: tokio::sync::OnceCell<reqwest::Client>,
    /// What is known of tasks: those this connector submitted, and terminal states.
    tasks: Mutex<HashMap<String, TaskInfo>>,
}

impl fmt::Debug for GlobusConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlobusConnector")
            .field("host", &self.inner.host)
            .field(
                "local_endpoint",
                &self
                    .inner
                    .local
                    .map(|i| &self.inner.config.endpoints[i].uuid),
            )
            .field("config", &self.inner.config)
            .finish()
    }
}

impl GlobusConnector {
    /// Build from `config`; no request is made until the first operation.
    ///
    /// # Errors
    /// [`Error::Config`] for fewer than two endpoints, a UUID that is not one or appears twice,
    /// an endpoint path that is not absolute, an empty local path, a bad host pattern, a bad API
    /// URL, a zero timeout, or a [`GlobusConfig::local_endpoint`] that is not an endpoint.
    pub fn with_config(config: GlobusConfig) -> Result<Self> {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let env_endpoint = std::env::var(LOCAL_ENDPOINT_ENV).ok();
        Self::build(config, host, env_endpoint)
    }

    /// Build from a [`ConnectorConfig`] of kind `globus`.
    ///
    /// # Errors
    /// As for [`GlobusConnector::with_config`].
    pub fn from_config(config: &ConnectorConfig) -> Result<Arc<dyn Connector>> {
        Ok(Arc::new(Self::with_config(config.options()?)?))
    }

    fn build(config: GlobusConfig, host: String, env_endpoint: Option<String>) -> Result<Self> {
        if config.endpoints.len() < 2 {
            return Err(Error::config(
                "globus connector needs at least two endpoints to keep in sync",
            ));
        }
        let mut matchers = Vec::with_capacity(config.endpoints.len());
        for (i, ep) in config.endpoints.iter().enumerate() {
            uuid::Uuid::parse_str(&ep.uuid).map_err(|e| {
                Error::config(format!(
                    "globus endpoint uuid {:?} is not a UUID: {e}",
                    ep.uuid
                ))
            })?;
            if config.endpoints[..i].iter().any(|o| o.uuid == ep.uuid) {
                return Err(Error::config(format!(
                    "globus endpoint {} is listed twice",
                    ep.uuid
                )));
            }
            if !ep.endpoint_path.starts_with('/') {
                return Err(Error::config(format!(
                    "globus endpoint {}: endpoint_path {:?} must be absolute",
                    ep.uuid, ep.endpoint_path
                )));
            }
            if ep.local_path.as_os_str().is_empty() {
                return Err(Error::config(format!(
                    "globus endpoint {}: empty local_path",
                    ep.uuid
                )));
            }
            matchers.push(host_matcher(ep)?);
        }
        let api_url = config.api_url.trim_end_matches('/').to_owned();
        reqwest::Url::parse(&api_url)
            .map_err(|e| Error::config(format!("globus api_url {:?}: {e}", config.api_url)))?;
        if config.timeout_ms == 0 || config.request_timeout_ms == 0 {
            return Err(Error::config("globus timeouts must be positive"));
        }
        let position = |uuid: &str| config.endpoints.iter().position(|ep| ep.uuid == uuid);
        let local = match &config.local_endpoint {
            Some(uuid) => Some(position(uuid).ok_or_else(|| {
                Error::config(format!(
                    "globus local_endpoint {uuid} is not one of the endpoints"
                ))
            })?),
            None => env_endpoint
                .as_deref()
                .and_then(position)
                .or_else(|| matchers.iter().position(|m| m.is_match(&host))),
        };
        Ok(GlobusConnector {
            inner: Arc::new(Inner {
                config,
                local,
                host,
                api_url,
                client: tokio::sync::OnceCell::new(),
                tasks: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// What a connector built from `config` would touch, for the resolve policy: the API host,
    /// the local endpoint's directory on this host (the others are reached through Globus),
    /// and the token file. Building the connector makes no request, so it is built here to
    /// pick the local endpoint exactly as it would.
    pub(crate) fn resources(config: &ConnectorConfig) -> Result<Vec<Resource>> {
        let connector = Self::with_config(config.options()?)?;
        let inner = &connector.inner;
        let url = reqwest::Url::parse(&inner.api_url)
            .map_err(|e| Error::config(format!("globus api_url {:?}: {e}", inner.api_url)))?;
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => {
                return Err(Error::config(format!(
                    "globus api_url {:?}: no host",
                    inner.api_url
                )));
            }
        };
        let mut out = vec![Resource::Host {
            what: "globus api_url",
            host,
            port: url.port_or_known_default(),
        }];
        if let Some(ep) = connector.local_endpoint() {
            out.push(Resource::Path {
                what: "globus local_path",
                path: ep.local_dir(),
            });
        }
        if let Some(file) = &inner.config.token_file {
            out.push(Resource::Path {
                what: "globus token_file",
                path: expand_home(file),
            });
        }
        Ok(out)
    }

    /// The options this connector was built with (including any token and local endpoint).
    pub fn options(&self) -> &GlobusConfig {
        &self.inner.config
    }

    /// The endpoint this host writes to and reads from, if one matches.
    pub fn local_endpoint(&self) -> Option<&GlobusEndpoint> {
        self.inner.local.map(|i| &self.inner.config.endpoints[i])
    }
}

fn host_matcher(ep: &GlobusEndpoint) -> Result<GlobSet> {
    let mut set = GlobSetBuilder::new();
    for p in &ep.host_patterns {
        let glob = GlobBuilder::new(p)
            .case_insensitive(true)
            .build()
            .map_err(|e| Error::config(format!("globus endpoint {} host pattern: {e}", ep.uuid)))?;
        set.add(glob);
    }
    set.build()
        .map_err(|e| Error::config(format!("globus endpoint {} host patterns: {e}", ep.uuid)))
}

/// A parsed key: the object's file name and the ids of the tasks that transfer it.
struct GlobusKey {
    name: String,
    tasks: Vec<String>,
}

impl GlobusKey {
    fn parse(key: &Key) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidKey {
            connector: KIND.into(),
            key: key.as_str().to_owned(),
            reason: reason.into(),
        };
        let (name, tasks) = key
            .as_str()
            .split_once(':')
            .ok_or_else(|| invalid("not <name>:<task ids>"))?;
        validate_key(name).map_err(|e| match e {
            Error::InvalidKey { reason, .. } => invalid(&format!("object name: {reason}")),
            other => other,
        })?;
        let tasks: Vec<String> = tasks.split(',').map(str::to_owned).collect();
        if !tasks.iter().all(|t| is_task_id(t)) {
            return Err(invalid("task ids must be UUID-like"));
        }
        Ok(GlobusKey {
            name: name.to_owned(),
            tasks,
        })
    }

    fn to_key(name: &str, tasks: &[String]) -> Key {
        Key::from(format!("{name}:{}", tasks.join(",")))
    }
}

/// Task ids go into URL paths: letters, digits and dashes only.
fn is_task_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[derive(Clone, Debug)]
struct TaskInfo {
    source: Option<String>,
    destination: Option<String>,
    status: TaskStatus,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum TaskStatus {
    /// ACTIVE, INACTIVE, or a status this client does not know (waited on like ACTIVE).
    Running(String),
    Succeeded,
    /// FAILED, with Globus' `fatal_error` code and description.
    Failed(String),
}

impl TaskStatus {
    fn is_terminal(&self) -> bool {
        !matches!(self, TaskStatus::Running(_))
    }
}

/// How waiting on a key's tasks ended.
enum Waited {
    /// Every task that matters has SUCCEEDED (or none matters).
    Ready,
    /// A task that matters FAILED.
    Failed { task: String, detail: String },
    /// The API does not know a task of the key: not a key of this deployment.
    UnknownTask,
}

/// Which of a key's tasks an operation waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WaitFor {
    /// Those that write into the local endpoint (reads).
    Incoming,
    /// All of them, to their end whatever it is (before deleting).
    All,
}

/// A failed API call, before it becomes an [`Error`].
#[derive(Debug)]
enum ApiError {
    /// The API could not be reached or answered 429/5xx: the same call may succeed later.
    Transient(String, Option<BoxError>),
    /// 401 or 403.
    Unauthorized(String),
    /// Any other refusal.
    Rejected { status: u16, message: String },
}

impl ApiError {
    fn into_error(self, what: &str) -> Error {
        match self {
            ApiError::Transient(message, source) => Error::Backend {
                connector: KIND.into(),
                message: format!("{what}: {message}"),
                source,
                temporary: true,
            },
            ApiError::Unauthorized(message) => Error::Unauthorized {
                message: format!("Globus Transfer API, {what}: {message}"),
            },
            ApiError::Rejected { status, message } => Error::Backend {
                connector: KIND.into(),
                message: format!("{what}: HTTP {status}: {message}"),
                source: None,
                temporary: false,
            },
        }
    }
}

/// A deadline for one operation and the growing interval between retries.
struct Deadline {
    start: Instant,
    end: Instant,
    interval: Duration,
    max_interval: Duration,
}

impl Deadline {
    fn new(c: &GlobusConfig) -> Self {
        let start = Instant::now();
        let min = Duration::from_millis(c.poll_min_ms.max(1));
        Deadline {
            start,
            end: start + Duration::from_millis(c.timeout_ms),
            interval: min,
            max_interval: Duration::from_millis(c.poll_max_ms).max(min),
        }
    }

    fn remaining(&self) -> Duration {
        self.end.saturating_duration_since(Instant::now())
    }

    /// Sleep for the next backoff interval; false when the deadline has passed.
    async fn backoff(&mut self) -> bool {
        let remaining = self.remaining();
        if remaining.is_zero() {
            return false;
        }
        tokio::time::sleep(self.interval.min(remaining)).await;
        self.interval = (self.interval * 2).min(self.max_interval);
        true
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

enum Method {
    Get,
    Post(Value),
}

impl Inner {
    fn local(&self) -> Result<&GlobusEndpoint> {
        self.local
            .map(|i| &self.config.endpoints[i])
            .ok_or_else(|| {
                Error::config(format!(
                    "no globus endpoint of this connector is local to host {:?}: add a \
                     matching host pattern, or set {LOCAL_ENDPOINT_ENV} or local_endpoint",
                    self.host
                ))
            })
    }

    fn others(&self) -> Result<Vec<&GlobusEndpoint>> {
        let local = self.local()?;
        Ok(self
            .config
            .endpoints
            .iter()
            .filter(|ep| ep.uuid != local.uuid)
            .collect())
    }

    async fn client(&self) -> Result<&reqwest::Client> {
        self.client
            .get_or_try_init(|| async {
                let mut b = reqwest::Client::builder()
                    .connect_timeout(Duration::from_millis(self.config.request_timeout_ms));
                // A local API (a test double, a tunnel) must not go through a proxy from the
                // environment.
                if let Ok(url) = reqwest::Url::parse(&self.api_url)
                    && matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
                {
                    b = b.no_proxy();
                }
                b.build()
                    .map_err(|e| Error::backend(KIND, "build the HTTP client", e))
            })
            .await
    }

    /// One API call: the JSON answer, or why not.
    async fn call(
        &self,
        method: &Method,
        path: &str,
        deadline: &Deadline,
    ) -> Result<Value, ApiError> {
        let token = self
            .config
            .resolve_token(|name| std::env::var(name).ok())
            .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
        let client = self
            .client()
            .await
            .map_err(|e| ApiError::Transient(e.to_string(), None))?;
        let url = format!("{}{path}", self.api_url);
        let request = match method {
            Method::Get => client.get(&url),
            Method::Post(body) => client.post(&url).json(body),
        };
        let timeout = Duration::from_millis(self.config.request_timeout_ms)
            .min(deadline.remaining())
            .max(Duration::from_millis(1));
        let response = request
            .bearer_auth(token)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| ApiError::Transient(transport_message(&e), Some(Box::new(e))))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| ApiError::Transient(transport_message(&e), Some(Box::new(e))))?;
        answer(status.as_u16(), &body)
    }

    /// [`Inner::call`], retried with backoff while the failure is transient and time is left.
    async fn call_retrying(
        &self,
        method: &Method,
        path: &str,
        deadline: &mut Deadline,
    ) -> Result<Value, ApiError> {
        loop {
            match self.call(method, path, deadline).await {
                Err(ApiError::Transient(message, source)) => {
                    if !deadline.backoff().await {
                        return Err(ApiError::Transient(
                            format!(
                                "Globus Transfer API unavailable for {:?}: {message}",
                                deadline.elapsed()
                            ),
                            source,
                        ));
                    }
                }
                other => return other,
            }
        }
    }

    /// Submit a transfer or delete document; its task id.
    async fn submit(&self, path: &str, mut document: Value, what: &str) -> Result<String> {
        let mut deadline = Deadline::new(&self.config);
        let id = self
            .call_retrying(&Method::Get, "/submission_id", &mut deadline)
            .await;
        document["submission_id"] = Value::String(submission_id(id)?);
        // Resubmitting with the same submission id cannot create a second task.
        let result = self
            .call_retrying(&Method::Post(document), path, &mut deadline)
            .await;
        submitted_task(result, what)
    }

    /// Submit one transfer of `names` from the local endpoint to `dst`.
    async fn submit_transfer(&self, dst: &GlobusEndpoint, names: &[String]) -> Result<String> {
        let src = self.local()?;
        let items: Vec<Value> = names
            .iter()
            .map(|n| {
                json!({
                    "DATA_TYPE": "transfer_item",
                    "source_path": src.globus_path(n),
                    "destination_path": dst.globus_path(n),
                })
            })
            .collect();
        let document = json!({
            "DATA_TYPE": "transfer",
            "source_endpoint": src.uuid,
            "destination_endpoint": dst.uuid,
            "label": label("put", names),
            "notify_on_succeeded": false,
            "notify_on_failed": false,
            "notify_on_inactive": false,
            "DATA": items,
        });
        let task = self
            .submit("/transfer", document, &format!("transfer to {}", dst.uuid))
            .await?;
        self.remember(
            &task,
            TaskInfo {
                source: Some(src.uuid.clone()),
                destination: Some(dst.uuid.clone()),
                status: TaskStatus::Running("ACTIVE".into()),
            },
        );
        Ok(task)
    }

    /// Submit one delete of `names` on `ep`.
    async fn submit_delete(&self, ep: &GlobusEndpoint, names: &[String]) -> Result<String> {
        let items: Vec<Value> = names
            .iter()
            .map(|n| json!({"DATA_TYPE": "delete_item", "path": ep.globus_path(n)}))
            .collect();
        let document = json!({
            "DATA_TYPE": "delete",
            "endpoint": ep.uuid,
            "ignore_missing": true,
            "label": label("evict", names),
            "notify_on_succeeded": false,
            "notify_on_failed": false,
            "notify_on_inactive": false,
            "DATA": items,
        });
        self.submit("/delete", document, &format!("delete on {}", ep.uuid))
            .await
    }

    fn remember(&self, task: &str, info: TaskInfo) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if tasks.len() >= TASK_CACHE_LIMIT {
            tasks.clear();
        }
        tasks.insert(task.to_owned(), info);
    }

    fn known(&self, task: &str) -> Option<TaskInfo> {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.get(task).cloned()
    }

    /// The task's document from the API; `None` when the API does not know the id.
    async fn fetch_task(
        &self,
        task: &str,
        deadline: &mut Deadline,
    ) -> Result<Option<TaskInfo>, ApiError> {
        let answer = self
            .call_retrying(&Method::Get, &format!("/task/{task}"), deadline)
            .await;
        let info = task_info(answer)?;
        if let Some(i) = info.as_ref().filter(|i| i.status.is_terminal()) {
            self.remember(task, i.clone());
        }
        Ok(info)
    }

    /// Wait for the key's tasks that `which` selects to end, within one deadline.
    async fn wait(&self, key: &GlobusKey, which: WaitFor) -> Result<Waited> {
        let local = self.local()?.uuid.clone();
        let mut deadline = Deadline::new(&self.config);
        for task in &key.tasks {
            let mut info = self.known(task);
            loop {
                if let Some(i) = &info {
                    if which == WaitFor::Incoming {
                        // The local copy predates a task that leaves this endpoint, and tasks
                        // between two other endpoints do not touch it.
                        let incoming = i.destination.as_deref() == Some(local.as_str())
                            && i.source.as_deref() != Some(local.as_str());
                        if !incoming {
                            break;
                        }
                    }
                    match &i.status {
                        TaskStatus::Succeeded => break,
                        TaskStatus::Failed(detail) if which == WaitFor::Incoming => {
                            return Ok(Waited::Failed {
                                task: task.clone(),
                                detail: detail.clone(),
                            });
                        }
                        TaskStatus::Failed(_) => break,
                        TaskStatus::Running(status) => {
                            // The first look at a task needs no sleep.
                            if !deadline.backoff().await {
                                return Err(Error::Timeout {
                                    operation: format!(
                                        "waiting for Globus task {task} (still {status})"
                                    ),
                                    after: Duration::from_millis(self.config.timeout_ms),
                                });
                            }
                        }
                    }
                }
                match self.fetch_task(task, &mut deadline).await {
                    Ok(Some(i)) => info = Some(i),
                    Ok(None) => return Ok(Waited::UnknownTask),
                    Err(e) => {
                        let running = match &info {
                            Some(TaskInfo {
                                status: TaskStatus::Running(status),
                                ..
                            }) => Some(status),
                            _ => None,
                        };
                        // The deadline ran out during a status poll of a task last seen running
                        // (the poll was cut by it): the wait timed out. An API that cannot be
                        // reached stays a backend error.
                        if let (ApiError::Transient(message, Some(source)), Some(status)) =
                            (&e, running)
                            && source
                                .downcast_ref::<reqwest::Error>()
                                .is_some_and(reqwest::Error::is_timeout)
                            && deadline.remaining().is_zero()
                        {
                            return Err(Error::Timeout {
                                operation: format!(
                                    "waiting for Globus task {task} (still {status}; last poll: {message})"
                                ),
                                after: Duration::from_millis(self.config.timeout_ms),
                            });
                        }
                        return Err(e.into_error(&format!("status of task {task}")));
                    }
                }
            }
        }
        Ok(Waited::Ready)
    }

    fn local_file(&self, name: &str) -> Result<PathBuf> {
        Ok(self.local()?.local_dir().join(name))
    }

    async fn put_many(&self, data: Vec<Bytes>) -> Result<Vec<Key>> {
        let dir = self.local()?.local_dir();
        let names: Vec<String> = data.iter().map(|_| Key::random().to_string()).collect();
        let written: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        let paths = written.clone();
        blocking("put", move || {
            std::fs::create_dir_all(&dir)?;
            for (path, bytes) in paths.iter().zip(&data) {
                write_atomic(&dir, path, bytes)?;
            }
            Ok(())
        })
        .await
        .inspect_err(|_| remove_quietly(written.clone()))?;
        let mut tasks = Vec::new();
        for dst in self.others()? {
            match self.submit_transfer(dst, &names).await {
                Ok(t) => tasks.push(t),
                Err(e) => {
                    // No key is handed out, so nothing could ever read or evict these.
                    remove_quietly(written);
                    return Err(e);
                }
            }
        }
        Ok(names.iter().map(|n| GlobusKey::to_key(n, &tasks)).collect())
    }

    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<Option<Bytes>> {
        let key = GlobusKey::parse(key)?;
        let path = self.local_file(&key.name)?;
        match self.wait(&key, WaitFor::Incoming).await? {
            Waited::Ready => {}
            Waited::UnknownTask => return Ok(None),
            Waited::Failed { task, detail } => {
                return Err(Error::Backend {
                    connector: KIND.into(),
                    message: format!(
                        "Globus transfer task {task} of object {} FAILED: {detail}",
                        key.name
                    ),
                    source: None,
                    temporary: false,
                });
            }
        }
        blocking("get", move || read_file(&path, range)).await
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        let key = GlobusKey::parse(key)?;
        let path = self.local_file(&key.name)?;
        match self.wait(&key, WaitFor::Incoming).await? {
            Waited::Ready => blocking("exists", move || path.try_exists()).await,
            Waited::Failed { .. } | Waited::UnknownTask => Ok(false),
        }
    }

    async fn evict_many(&self, keys: &[Key]) -> Result<()> {
        let parsed = keys
            .iter()
            .map(GlobusKey::parse)
            .collect::<Result<Vec<_>>>()?;
        let dir = self.local()?.local_dir();
        let paths: Vec<PathBuf> = parsed.iter().map(|k| dir.join(&k.name)).collect();
        let present = blocking("evict", move || {
            paths
                .into_iter()
                .map(|p| p.try_exists())
                .collect::<std::io::Result<Vec<bool>>>()
        })
        .await?;
        let mut names = Vec::new();
        for (key, present) in parsed.iter().zip(present) {
            if !present {
                continue;
            }
            // A delete submitted while the copy is still running could be undone by it.
            match self.wait(key, WaitFor::All).await? {
                Waited::UnknownTask => continue,
                Waited::Ready | Waited::Failed { .. } => names.push(key.name.clone()),
            }
        }
        if names.is_empty() {
            return Ok(());
        }
        let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        blocking("evict", move || {
            for p in paths {
                match std::fs::remove_file(p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        })
        .await?;
        for ep in self.others()? {
            self.submit_delete(ep, &names).await?;
        }
        Ok(())
    }
}

fn label(op: &str, names: &[String]) -> String {
    match names {
        [one] => format!("ProxyStore {op} {one}"),
        many => format!("ProxyStore {op} of {} objects", many.len()),
    }
}

fn transport_message(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "request timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        e.to_string()
    }
}

/// What an answer of the API (HTTP `status`, `body`) means: its JSON document, or why not.
fn answer(status: u16, body: &[u8]) -> Result<Value, ApiError> {
    if (200..300).contains(&status) {
        return serde_json::from_slice(body).map_err(|e| ApiError::Rejected {
            status,
            message: format!("answer is not JSON: {e}"),
        });
    }
    let message = error_message(body);
    match status {
        401 | 403 => Err(ApiError::Unauthorized(format!("HTTP {status}: {message}"))),
        429 | 500..=599 => Err(ApiError::Transient(
            format!("HTTP {status}: {message}"),
            None,
        )),
        code => Err(ApiError::Rejected {
            status: code,
            message,
        }),
    }
}

/// The submission id in the answer to `GET /submission_id`.
fn submission_id(answer: Result<Value, ApiError>) -> Result<String> {
    let doc = answer.map_err(|e| e.into_error("get a submission id"))?;
    match doc.get("value").and_then(Value::as_str) {
        Some(id) => Ok(id.to_owned()),
        None => Err(Error::Backend {
            connector: KIND.into(),
            message: "GET /submission_id answer has no `value`".into(),
            source: None,
            temporary: false,
        }),
    }
}

/// The task id in the answer to a transfer or delete submission (`what`); only ids that can
/// go into a URL path unescaped.
fn submitted_task(answer: Result<Value, ApiError>, what: &str) -> Result<String> {
    let doc = answer.map_err(|e| e.into_error(what))?;
    match doc.get("task_id").and_then(Value::as_str) {
        Some(t) if is_task_id(t) => Ok(t.to_owned()),
        other => Err(Error::Backend {
            connector: KIND.into(),
            message: format!("{what}: answer has no usable task_id ({other:?})"),
            source: None,
            temporary: false,
        }),
    }
}

/// The task in the answer to `GET /task/{id}`; `None` when the API does not know the id.
fn task_info(answer: Result<Value, ApiError>) -> Result<Option<TaskInfo>, ApiError> {
    let doc = match answer {
        Ok(doc) => doc,
        Err(ApiError::Rejected {
            status: 400 | 404, ..
        }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let field = |name: &str| doc.get(name).and_then(Value::as_str).map(str::to_owned);
    let status = match field("status").as_deref() {
        Some("SUCCEEDED") => TaskStatus::Succeeded,
        Some("FAILED") => {
            let fatal = doc.get("fatal_error");
            let part = |n: &str| fatal.and_then(|f| f.get(n)).and_then(Value::as_str);
            TaskStatus::Failed(match (part("code"), part("description")) {
                (Some(c), Some(d)) => format!("{c}: {d}"),
                (Some(c), None) => c.to_owned(),
                (None, Some(d)) => d.to_owned(),
                (None, None) => "no fatal_error given".into(),
            })
        }
        Some(other) => TaskStatus::Running(other.to_owned()),
        None => TaskStatus::Running("<no status>".into()),
    };
    Ok(Some(TaskInfo {
        source: field("source_endpoint_id"),
        destination: field("destination_endpoint_id"),
        status,
    }))
}

/// Not part of the API (hidden from the docs; may change at any time).
///
/// The parsers the connector applies to the Transfer API's answers are private and sit behind
/// HTTP calls; this hook runs one answer through each of them, without a network, for the
/// fuzz target `globus_responses` in `fuzz/` and its corpus replay test.
#[doc(hidden)]
pub mod fuzzing {
    use super::{answer, submission_id, submitted_task, task_info};
    use crate::error::Result;

    /// What the connector makes of one answer, taken as the answer to each of its calls.
    #[derive(Debug)]
    pub struct Parsed {
        /// As the answer to `GET /submission_id`: the submission id.
        pub submission_id: Result<String>,
        /// As the answer to `POST /transfer` or `POST /delete`: the task id.
        pub task_id: Result<String>,
        /// As the answer to `GET /task/{id}`: the task as the connector sees it (its `Debug`
        /// form), `None` when the API does not know it, or the error (before retries).
        pub task: Result<Option<String>>,
    }

    /// Run the answer (HTTP `status`, `body`) through every parser.
    pub fn parse(status: u16, body: &[u8]) -> Parsed {
        Parsed {
            submission_id: submission_id(answer(status, body)),
            task_id: submitted_task(answer(status, body), "submit"),
            task: task_info(answer(status, body))
                .map(|t| t.map(|t| format!("{t:?}")))
                .map_err(|e| e.into_error("status of task")),
        }
    }
}

/// The `code` and `message` of a Globus error document, or the start of the body.
fn error_message(body: &[u8]) -> String {
    if let Ok(doc) = serde_json::from_slice::<Value>(body) {
        let field = |n: &str| doc.get(n).and_then(Value::as_str);
        match (field("code"), field("message")) {
            (Some(c), Some(m)) => return format!("{c}: {m}"),
            (Some(c), None) => return c.to_owned(),
            (None, Some(m)) => return m.to_owned(),
            (None, None) => {}
        }
    }
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::backend(KIND, what, e))?
        .map_err(|e| Error::io(KIND, what, e))
}

/// Write through a temporary file and rename, so that a reader (or a Globus transfer) never
/// sees part of an object.
fn write_atomic(dir: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{TMP_PREFIX}{}", Key::random()));
    let result = (|| {
        let mut f = std::fs::File::create_new(&tmp)?;
        f.write_all(data)?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn remove_quietly(paths: Vec<PathBuf>) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

fn read_file(path: &Path, range: Option<Range<u64>>) -> std::io::Result<Option<Bytes>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(range) = range else {
        let mut buf = Vec::with_capacity(f.metadata().map(|m| m.len() as usize).unwrap_or(0));
        f.read_to_end(&mut buf)?;
        return Ok(Some(Bytes::from(buf)));
    };
    let len = f.metadata()?.len();
    let end = range.end.min(len);
    let start = range.start.min(end);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((end - start) as usize);
    f.take(end - start).read_to_end(&mut buf)?;
    Ok(Some(Bytes::from(buf)))
}

#[async_trait]
impl Connector for GlobusConnector {
    fn kind(&self) -> &str {
        KIND
    }

    /// On the I/O runtime, where the HTTP client lives. No retry or timeout layer: each
    /// operation retries its transient API failures and waits for its transfer within one
    /// deadline ([`GlobusConfig::timeout_ms`]), which a whole-operation retry would restart.
    fn call_config(&self) -> CallConfig {
        CallConfig {
            io_runtime: true,
            timeout: None,
            retry: None,
        }
    }

    async fn put_opts(&self, data: Bytes, _options: &PutOptions) -> Result<Key> {
        let mut keys = self.inner.put_many(vec![data]).await?;
        keys.pop()
            .ok_or_else(|| Error::backend_message(KIND, "put produced no key", false))
    }

    async fn put_batch(&self, data: Vec<Bytes>, _options: &PutOptions) -> Result<Vec<Key>> {
        if data.is_empty() {
            return Ok(Vec::new());
        }
        self.inner.put_many(data).await
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        self.inner.get(key, None).await
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Option<Bytes>> {
        self.inner.get(key, Some(range)).await
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        self.inner.exists(key).await
    }

    async fn evict(&self, key: &Key) -> Result<()> {
        self.inner.evict_many(std::slice::from_ref(key)).await
    }

    async fn evict_batch(&self, keys: &[Key]) -> Result<()> {
        self.inner.evict_many(keys).await
    }

    fn config(&self) -> ConnectorConfig {
        let mut options = self.inner.config.clone();
        if !options.export_token {
            options.token = None;
        }
        options.local_endpoint = None;
        ConnectorConfig::from_options(KIND, &options)
            .unwrap_or_else(|_| ConnectorConfig::new(KIND, Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
    const B: &str = "bbbbbbbb-0000-4000-8000-000000000002";

    fn config() -> GlobusConfig {
        GlobusConfig::new(vec![
            GlobusEndpoint::new(A, "/~/ps", "/tmp/a", ["login*.a.example.org", "a-*"]),
            GlobusEndpoint::new(B, "/data/ps/", "/tmp/b", ["*.b.example.org"]),
        ])
    }

    fn local_of(c: &GlobusConnector) -> Option<&str> {
        c.local_endpoint().map(|e| e.uuid.as_str())
    }

    #[test]
    fn local_endpoint_by_host_env_and_override() {
        let c = GlobusConnector::build(config(), "LOGIN3.A.example.org".into(), None).unwrap();
        assert_eq!(local_of(&c), Some(A));
        let c = GlobusConnector::build(config(), "node7.b.example.org".into(), None).unwrap();
        assert_eq!(local_of(&c), Some(B));
        let c = GlobusConnector::build(config(), "elsewhere".into(), None).unwrap();
        assert_eq!(local_of(&c), None);
        assert!(matches!(c.inner.local(), Err(Error::Config { .. })));
        let c = GlobusConnector::build(config(), "elsewhere".into(), Some(B.into())).unwrap();
        assert_eq!(local_of(&c), Some(B));
        // An environment naming another deployment's endpoint is ignored.
        let c = GlobusConnector::build(config(), "a-1".into(), Some("x".into())).unwrap();
        assert_eq!(local_of(&c), Some(A));
        let mut o = config();
        o.local_endpoint = Some(B.into());
        let c = GlobusConnector::build(o, "a-1".into(), Some(A.into())).unwrap();
        assert_eq!(local_of(&c), Some(B));
    }

    #[test]
    fn bad_configs_are_typed_errors() {
        let mut one = config();
        one.endpoints.pop();
        let mut dup = config();
        dup.endpoints[1].uuid = A.into();
        let mut not_uuid = config();
        not_uuid.endpoints[0].uuid = "laptop".into();
        let mut relative = config();
        relative.endpoints[1].endpoint_path = "data".into();
        let mut glob = config();
        glob.endpoints[0].host_patterns = vec!["a[".into()];
        let mut url = config();
        url.api_url = "not a url".into();
        let mut local = config();
        local.local_endpoint = Some("cccccccc-0000-4000-8000-000000000003".into());
        for c in [one, dup, not_uuid, relative, glob, url, local] {
            let e = GlobusConnector::build(c, "h".into(), None).unwrap_err();
            assert!(matches!(e, Error::Config { .. }), "{e}");
        }
    }

    #[test]
    fn keys_parse_and_refuse_hostile_parts() {
        let k = GlobusKey::parse(&Key::from("obj-1:t-1,t-2")).unwrap();
        assert_eq!(k.name, "obj-1");
        assert_eq!(k.tasks, ["t-1", "t-2"]);
        assert_eq!(
            GlobusKey::to_key("obj-1", &k.tasks).as_str(),
            "obj-1:t-1,t-2"
        );
        for bad in [
            "",
            "no-tasks",
            "obj:",
            ":t1",
            "../x:t1",
            "a/b:t1",
            "..:t1",
            ".tmp-x:t1",
            "obj:../../etc",
            "obj:t1/..",
            "obj:t1?x=1",
            "obj:t1,,t2",
            "nul\0:t1",
        ] {
            let e = GlobusKey::parse(&Key::from(bad)).err();
            assert!(
                matches!(&e, Some(Error::InvalidKey { connector, .. }) if connector == KIND),
                "{bad:?} gave {e:?}"
            );
        }
    }

    #[test]
    fn globus_paths_join_cleanly() {
        let c = config();
        assert_eq!(c.endpoints[0].globus_path("k"), "/~/ps/k");
        assert_eq!(c.endpoints[1].globus_path("k"), "/data/ps/k");
    }

    #[test]
    fn token_from_config_env_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config();
        let no_env = |_: &str| None;
        assert!(matches!(
            c.resolve_token(no_env),
            Err(Error::Unauthorized { .. })
        ));
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\nsecond line\n").unwrap();
        c.token_file = Some(file.clone());
        assert_eq!(c.resolve_token(no_env).unwrap(), "from-file");
        let env = |name: &str| (name == DEFAULT_TOKEN_ENV).then(|| "from-env".to_owned());
        assert_eq!(c.resolve_token(env).unwrap(), "from-env");
        c.token = Some("direct".into());
        assert_eq!(c.resolve_token(env).unwrap(), "direct");
        c.token = None;
        c.token_file = Some(dir.path().join("missing"));
        assert!(matches!(
            c.resolve_token(no_env),
            Err(Error::Unauthorized { .. })
        ));
    }

    #[test]
    fn config_leaves_token_and_local_endpoint_out_unless_asked() {
        let mut o = config();
        o.token = Some("sekrit-token".into());
        o.local_endpoint = Some(B.into());
        let c = GlobusConnector::build(o.clone(), "h".into(), None).unwrap();
        let cfg = c.config();
        let text = cfg.options.to_string();
        assert!(
            !text.contains("sekrit") && !text.contains("local_endpoint"),
            "{text}"
        );
        assert!(!format!("{c:?}").contains("sekrit"));
        assert!(!format!("{cfg:?}").contains("sekrit"));
        let rebuilt = GlobusConnector::with_config(cfg.options().unwrap()).unwrap();
        assert_eq!(rebuilt.config(), cfg);

        o.export_token = true;
        let c = GlobusConnector::build(o, "h".into(), None).unwrap();
        let cfg = c.config();
        assert!(cfg.options.to_string().contains("sekrit-token"));
        assert!(!format!("{cfg:?}").contains("sekrit"));
        let rebuilt = GlobusConnector::with_config(cfg.options().unwrap()).unwrap();
        assert_eq!(rebuilt.config(), cfg);
    }

    #[test]
    fn error_documents_are_summarised() {
        let body =
            br#"{"code":"ClientError.NotFound","message":"Task not found","request_id":"x"}"#;
        assert_eq!(error_message(body), "ClientError.NotFound: Task not found");
        assert_eq!(error_message(b"<html>oops"), "<html>oops");
    }
}
