//! Which task arguments become proxies, and in which store.
//!
//! Every struct field and string-keyed map entry of a task is a candidate, named by its path:
//! `task/field/subfield`. A candidate is proxied when its path is not excluded, is included
//! (everything is by default), and its encoded size (postcard) exceeds the threshold of the first
//! rule that matches it (or the default threshold, 100,000 bytes as in Python ProxyStore's Dask
//! integration). Candidates are examined from the outside in: once a field is proxied, its
//! insides are not examined; a field that stays inline is descended into.

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::error::MiddlewareError;

/// Default size threshold in encoded bytes.
pub const DEFAULT_THRESHOLD: u64 = 100_000;

/// A per-pattern override of store and threshold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Glob over `task/path` (globset syntax: `train/**`, `*/weights`).
    pub pattern: String,
    /// Store name for matching arguments (default: the policy's store).
    #[serde(default)]
    pub store: Option<String>,
    /// Threshold for matching arguments (default: the policy's threshold).
    #[serde(default)]
    pub threshold: Option<u64>,
}

/// A serializable policy: the form used in config files and environment variables.
///
/// ```
/// use proxystore_middleware::ArgumentPolicyConfig;
/// let p: ArgumentPolicyConfig = serde_json::from_str(r#"{
///     "store": "default",
///     "threshold": 1000000,
///     "exclude": ["*/config/**"],
///     "rules": [{"pattern": "train/**", "store": "fast", "threshold": 10000}]
/// }"#).unwrap();
/// let policy = p.compile().unwrap();
/// assert_eq!(policy.decide("train", "weights").unwrap().store, "fast");
/// assert!(policy.decide("eval", "config/seed").is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ArgumentPolicyConfig {
    /// Store for proxied arguments (a name in the process's store registry).
    pub store: String,
    /// Encoded size above which an argument is proxied.
    pub threshold: u64,
    /// If not empty, only paths matching one of these globs are candidates.
    pub include: Vec<String>,
    /// Paths matching any of these globs are never proxied (their insides may be).
    pub exclude: Vec<String>,
    /// Overrides of store and threshold, first match wins.
    pub rules: Vec<Rule>,
}

impl Default for ArgumentPolicyConfig {
    fn default() -> Self {
        ArgumentPolicyConfig {
            store: "default".into(),
            threshold: DEFAULT_THRESHOLD,
            include: Vec::new(),
            exclude: Vec::new(),
            rules: Vec::new(),
        }
    }
}

impl ArgumentPolicyConfig {
    /// The policy from environment variables, on top of the defaults:
    /// `PROXYSTORE_POLICY` (a JSON document of this struct, or `@path` to a JSON file), then
    /// `PROXYSTORE_STORE`, `PROXYSTORE_THRESHOLD`, `PROXYSTORE_INCLUDE` and `PROXYSTORE_EXCLUDE`
    /// (comma-separated globs), which override its fields.
    ///
    /// # Errors
    /// [`MiddlewareError::Policy`] for unreadable or malformed values.
    pub fn from_env() -> Result<Self, MiddlewareError> {
        let mut p = match std::env::var("PROXYSTORE_POLICY") {
            Ok(v) if v.starts_with('@') => Self::from_file(&v[1..])?,
            Ok(v) => serde_json::from_str(&v)
                .map_err(|e| MiddlewareError::Policy(format!("PROXYSTORE_POLICY: {e}")))?,
            Err(_) => ArgumentPolicyConfig::default(),
        };
        if let Ok(s) = std::env::var("PROXYSTORE_STORE") {
            p.store = s;
        }
        if let Ok(t) = std::env::var("PROXYSTORE_THRESHOLD") {
            p.threshold = t
                .trim()
                .parse()
                .map_err(|e| MiddlewareError::Policy(format!("PROXYSTORE_THRESHOLD={t:?}: {e}")))?;
        }
        let list = |v: String| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        if let Ok(v) = std::env::var("PROXYSTORE_INCLUDE") {
            p.include = list(v);
        }
        if let Ok(v) = std::env::var("PROXYSTORE_EXCLUDE") {
            p.exclude = list(v);
        }
        Ok(p)
    }

    /// The policy from a JSON file.
    ///
    /// # Errors
    /// [`MiddlewareError::Policy`] when the file cannot be read or parsed.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, MiddlewareError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| MiddlewareError::Policy(format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| MiddlewareError::Policy(format!("{}: {e}", path.display())))
    }

    /// Check the globs and build the matcher.
    ///
    /// # Errors
    /// [`MiddlewareError::Policy`] naming a malformed glob.
    pub fn compile(self) -> Result<ArgumentPolicy, MiddlewareError> {
        let set = |globs: &[String]| -> Result<Option<GlobSet>, MiddlewareError> {
            if globs.is_empty() {
                return Ok(None);
            }
            let mut b = GlobSetBuilder::new();
            for g in globs {
                b.add(glob(g)?);
            }
            b.build()
                .map(Some)
                .map_err(|e| MiddlewareError::Policy(e.to_string()))
        };
        let rules = self
            .rules
            .iter()
            .map(|r| {
                Ok(CompiledRule {
                    matcher: glob(&r.pattern)?.compile_matcher(),
                    store: r.store.clone().unwrap_or_else(|| self.store.clone()),
                    threshold: r.threshold.unwrap_or(self.threshold),
                })
            })
            .collect::<Result<Vec<_>, MiddlewareError>>()?;
        Ok(ArgumentPolicy {
            include: set(&self.include)?,
            exclude: set(&self.exclude)?,
            rules,
            default: Decision {
                store: self.store.clone(),
                threshold: self.threshold,
            },
            config: self,
        })
    }
}

fn glob(pattern: &str) -> Result<Glob, MiddlewareError> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| MiddlewareError::Policy(format!("glob {pattern:?}: {e}")))
}

/// What to do with a candidate whose path the policy accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Store to put it in.
    pub store: String,
    /// Proxy it if its encoded size exceeds this many bytes.
    pub threshold: u64,
}

#[derive(Debug)]
struct CompiledRule {
    matcher: globset::GlobMatcher,
    store: String,
    threshold: u64,
}

/// A compiled [`ArgumentPolicyConfig`].
#[derive(Debug)]
pub struct ArgumentPolicy {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    rules: Vec<CompiledRule>,
    default: Decision,
    config: ArgumentPolicyConfig,
}

impl ArgumentPolicy {
    /// The policy with default settings: store `store`, threshold 100,000 bytes, no patterns.
    pub fn with_store(store: impl Into<String>) -> Self {
        ArgumentPolicy::from_parts(store.into(), DEFAULT_THRESHOLD)
    }

    /// A policy with `store` and `threshold` and no patterns.
    pub fn from_parts(store: String, threshold: u64) -> Self {
        let default = Decision { store, threshold };
        ArgumentPolicy {
            include: None,
            exclude: None,
            rules: Vec::new(),
            config: ArgumentPolicyConfig {
                store: default.store.clone(),
                threshold,
                ..ArgumentPolicyConfig::default()
            },
            default,
        }
    }

    /// The configuration this policy was compiled from.
    pub fn config(&self) -> &ArgumentPolicyConfig {
        &self.config
    }

    /// Whether an argument at `path` of task `task` may be proxied, and how; `None` when the
    /// path is excluded or not included. The empty path is the whole argument value, matched
    /// as `task`.
    pub fn decide(&self, task: &str, path: &str) -> Option<Decision> {
        if self.include.is_none() && self.exclude.is_none() && self.rules.is_empty() {
            return Some(self.default.clone());
        }
        let full = if path.is_empty() {
            task.to_owned()
        } else {
            format!("{task}/{path}")
        };
        if self.exclude.as_ref().is_some_and(|s| s.is_match(&full)) {
            return None;
        }
        if self.include.as_ref().is_some_and(|s| !s.is_match(&full)) {
            return None;
        }
        Some(
            self.rules
                .iter()
                .find(|r| r.matcher.is_match(&full))
                .map_or_else(
                    || self.default.clone(),
                    |r| Decision {
                        store: r.store.clone(),
                        threshold: r.threshold,
                    },
                ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_exclude_and_rules() {
        let p = ArgumentPolicyConfig {
            store: "s".into(),
            threshold: 10,
            include: vec!["train/**".into(), "*/weights".into()],
            exclude: vec!["*/config".into()],
            rules: vec![Rule {
                pattern: "*/weights".into(),
                store: Some("big".into()),
                threshold: Some(5),
            }],
        }
        .compile()
        .unwrap();
        assert_eq!(p.decide("train", "data").unwrap().store, "s");
        assert_eq!(p.decide("eval", "weights").unwrap().threshold, 5);
        assert!(p.decide("eval", "data").is_none());
        assert!(p.decide("train", "config").is_none());
        // `*` does not cross `/`; `**` does.
        assert!(p.decide("eval", "model/weights").is_none());
        assert!(p.decide("train", "model/weights").is_some());
    }

    #[test]
    fn bad_globs_are_policy_errors() {
        let e = ArgumentPolicyConfig {
            exclude: vec!["[".into()],
            ..ArgumentPolicyConfig::default()
        }
        .compile()
        .unwrap_err();
        assert!(matches!(e, MiddlewareError::Policy(_)), "{e}");
    }

    #[test]
    fn from_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.json");
        std::fs::write(&path, r#"{"threshold": 42, "exclude": ["a/**"]}"#).unwrap();
        let p = ArgumentPolicyConfig::from_file(&path).unwrap();
        assert_eq!(p.threshold, 42);
        assert_eq!(p.store, "default");
        assert!(ArgumentPolicyConfig::from_file(dir.path().join("nope")).is_err());
    }
}
