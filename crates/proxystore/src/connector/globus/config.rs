//! What a Globus connector is built from: its endpoints, API URL, token sources and time
//! bounds ([`GlobusConfig`], [`GlobusEndpoint`]), their defaults, and the checks a config must
//! pass.

use std::fmt;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The Globus Transfer API base URL.
pub const DEFAULT_API_URL: &str = "https://transfer.api.globus.org/v0.10";

/// Environment variable holding the access token, unless [`GlobusConfig::token_env`] names
/// another.
pub const DEFAULT_TOKEN_ENV: &str = "PROXYSTORE_GLOBUS_TOKEN";

/// Environment variable naming (by UUID) the local endpoint of this process, for hosts whose
/// name no pattern matches.
pub const LOCAL_ENDPOINT_ENV: &str = "PROXYSTORE_GLOBUS_ENDPOINT";

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
    pub(super) fn globus_path(&self, name: &str) -> String {
        format!("{}/{name}", self.endpoint_path.trim_end_matches('/'))
    }

    /// The local directory, with a leading `~` expanded.
    pub(super) fn local_dir(&self) -> PathBuf {
        expand_home(&self.local_path)
    }
}

pub(super) fn expand_home(path: &Path) -> PathBuf {
    let Ok(rest) = path.strip_prefix("~") else {
        return path.to_path_buf();
    };
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(rest),
        None => path.to_path_buf(),
    }
}

/// Options of a [`GlobusConnector`](super::GlobusConnector).
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
    /// An access token given directly. Left out of
    /// [`Connector::config`](crate::connector::Connector::config) unless
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
    /// Write [`GlobusConfig::token`] into
    /// [`Connector::config`](crate::connector::Connector::config), and so into every proxy
    /// reference (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub export_token: bool,
    /// UUID of the local endpoint, overriding host-name matching in this process only: it is
    /// never written into [`Connector::config`](crate::connector::Connector::config), because a
    /// proxy's reader runs elsewhere.
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
    pub(super) fn resolve_token(&self, env: impl Fn(&str) -> Option<String>) -> Result<String> {
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

impl GlobusConfig {
    /// The API base URL without a trailing `/`.
    pub(super) fn api_base(&self) -> &str {
        self.api_url.trim_end_matches('/')
    }

    /// Check the config, and pick the local endpoint of `host` (its index, if any):
    /// [`GlobusConfig::local_endpoint`], else `env_endpoint` (the value of
    /// [`LOCAL_ENDPOINT_ENV`]) when it names an endpoint, else the first endpoint with a host
    /// pattern matching `host`.
    ///
    /// # Errors
    /// [`Error::Config`] for fewer than two endpoints, a UUID that is not one or appears twice,
    /// an endpoint path that is not absolute, an empty local path, a bad host pattern, a bad API
    /// URL, a zero timeout, or a local endpoint that is not an endpoint.
    pub(super) fn check(&self, host: &str, env_endpoint: Option<&str>) -> Result<Option<usize>> {
        if self.endpoints.len() < 2 {
            return Err(Error::config(
                "globus connector needs at least two endpoints to keep in sync",
            ));
        }
        let mut matchers = Vec::with_capacity(self.endpoints.len());
        for (i, ep) in self.endpoints.iter().enumerate() {
            uuid::Uuid::parse_str(&ep.uuid).map_err(|e| {
                Error::config(format!(
                    "globus endpoint uuid {:?} is not a UUID: {e}",
                    ep.uuid
                ))
            })?;
            if self.endpoints[..i].iter().any(|o| o.uuid == ep.uuid) {
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
        reqwest::Url::parse(self.api_base())
            .map_err(|e| Error::config(format!("globus api_url {:?}: {e}", self.api_url)))?;
        if self.timeout_ms == 0 || self.request_timeout_ms == 0 {
            return Err(Error::config("globus timeouts must be positive"));
        }
        let position = |uuid: &str| self.endpoints.iter().position(|ep| ep.uuid == uuid);
        Ok(match &self.local_endpoint {
            Some(uuid) => Some(position(uuid).ok_or_else(|| {
                Error::config(format!(
                    "globus local_endpoint {uuid} is not one of the endpoints"
                ))
            })?),
            None => env_endpoint
                .and_then(position)
                .or_else(|| matchers.iter().position(|m| m.is_match(host))),
        })
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) const A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
    pub(crate) const B: &str = "bbbbbbbb-0000-4000-8000-000000000002";

    /// Two endpoints, A and B, with host patterns (shared by the connector's tests).
    pub(crate) fn config() -> GlobusConfig {
        GlobusConfig::new(vec![
            GlobusEndpoint::new(A, "/~/ps", "/tmp/a", ["login*.a.example.org", "a-*"]),
            GlobusEndpoint::new(B, "/data/ps/", "/tmp/b", ["*.b.example.org"]),
        ])
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
            let e = c.check("h", None).unwrap_err();
            assert!(matches!(e, Error::Config { .. }), "{e}");
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
}
