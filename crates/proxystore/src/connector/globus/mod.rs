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
//! Each endpoint's directory is kept as the file connector keeps its own: an object's name
//! follows the file connector's key rules, writes go through a temporary file renamed into
//! place (so a transfer never copies part of an object), and only a regular file is an object.
//! A symbolic link (or FIFO) planted in the directory under an object's name is not followed:
//! reading the key is refused with a permanent [`Error::Backend`], and **exists** says no.
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
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;

use super::object_dir::{blocking, is_object, read_object, remove, write_atomic};
use super::{CallConfig, CallRuntime, Connector, ConnectorConfig, PutOptions, Resource};
use crate::error::{Error, Result};
use crate::key::Key;
use config::expand_home;
use key::GlobusKey;
use transfer::{TaskInfo, WaitFor, Waited};

mod api;
mod config;
mod key;
mod transfer;

pub use config::{
    DEFAULT_API_URL, DEFAULT_TOKEN_ENV, GlobusConfig, GlobusEndpoint, LOCAL_ENDPOINT_ENV,
};
#[doc(hidden)]
pub use transfer::__fuzzing;

/// Kind name of this connector.
pub const KIND: &str = "globus";

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
        let local = config.check(&host, env_endpoint.as_deref())?;
        let api_url = config.api_base().to_owned();
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

    fn local_file(&self, name: &str) -> Result<PathBuf> {
        Ok(self.local()?.local_dir().join(name))
    }

    async fn put_many(&self, data: Vec<Bytes>) -> Result<Vec<Key>> {
        let dir = self.local()?.local_dir();
        let names: Vec<String> = data.iter().map(|_| Key::random().to_string()).collect();
        let written: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        let paths = written.clone();
        blocking(KIND, "put", move || {
            std::fs::create_dir_all(&dir)?;
            for (path, bytes) in paths.iter().zip(&data) {
                write_atomic(&dir, path, bytes, false)?;
            }
            Ok(())
        })
        .await
        .inspect_err(|_| remove_quietly(&written))?;
        let mut tasks = Vec::new();
        for dst in self.others()? {
            match self.submit_transfer(dst, &names).await {
                Ok(t) => tasks.push(t),
                Err(e) => {
                    // No key is handed out, so nothing could ever read or evict these.
                    remove_quietly(&written);
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
        // Only a regular file is an object: a link planted in the directory is not followed.
        blocking(KIND, "get", move || read_object(&path, range)).await
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        let key = GlobusKey::parse(key)?;
        let path = self.local_file(&key.name)?;
        match self.wait(&key, WaitFor::Incoming).await? {
            Waited::Ready => blocking(KIND, "exists", move || is_object(&path)).await,
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
        let present = blocking(KIND, "evict", move || {
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
        blocking(KIND, "evict", move || {
            for p in paths {
                remove(&p)?;
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

/// Remove what a failed put wrote (best effort: the put fails anyway).
fn remove_quietly(paths: &[PathBuf]) {
    for p in paths {
        let _ = remove(p);
    }
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
            runtime: CallRuntime::Io,
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

    fn check_key(&self, key: &Key) -> Result<()> {
        GlobusKey::parse(key).map(|_| ())
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
    use super::config::tests::{A, B, config};
    use super::*;

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
    fn config_leaves_token_and_local_endpoint_out_unless_asked() {
        let mut o = config();
        o.token = Some("sekrit-token".into());
        o.local_endpoint = Some(B.into());
        let c = GlobusConnector::build(o.clone(), "h".into(), None).unwrap();
        let cfg = c.config();
        let text = cfg.options_json().to_owned();
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
        assert!(cfg.options_json().contains("sekrit-token"));
        assert!(!format!("{cfg:?}").contains("sekrit"));
        let rebuilt = GlobusConnector::with_config(cfg.options().unwrap()).unwrap();
        assert_eq!(rebuilt.config(), cfg);
    }
}
