//! The multi connector: several connectors behind one, with a policy choosing per put.
//!
//! Each put goes to the highest-priority connector whose [`Policy`] accepts the object (its size,
//! the tags asked for, the object's name against a glob pattern). The returned key names the
//! connector that holds the object (`label:inner-key`), so a get, exists or evict goes straight
//! there. The whole configuration, inner connectors included, round-trips through
//! [`Connector::config`], so proxies made by a multi connector resolve in any process.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use super::{Connector, ConnectorConfig, PutOptions};
use crate::error::{Error, Result};
use crate::key::Key;

/// Kind name of this connector.
pub const KIND: &str = "multi";

/// Which objects a connector of a [`MultiConnector`] accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Smallest accepted object size in bytes (inclusive).
    pub min_size: Option<u64>,
    /// Largest accepted object size in bytes (inclusive).
    pub max_size: Option<u64>,
    /// Tags this connector carries; a put asking for tags goes only where all of them are.
    pub tags: Vec<String>,
    /// Higher wins among the connectors that accept an object; ties go to the first declared.
    pub priority: i32,
    /// A glob (globset syntax, e.g. `weights/**` or `*.npy`) that the object's name must match.
    /// A connector with a pattern takes only named objects that match it.
    pub pattern: Option<String>,
}

impl Policy {
    /// Whether an object of `size` bytes (unknown for a deferred put) with `options` is
    /// acceptable.
    fn accepts(
        &self,
        size: Option<u64>,
        options: &PutOptions,
        pattern: Option<&GlobMatcher>,
    ) -> bool {
        let size_ok = size.is_none_or(|size| {
            self.min_size.is_none_or(|m| size >= m) && self.max_size.is_none_or(|m| size <= m)
        });
        size_ok
            && options.tags.iter().all(|t| self.tags.contains(t))
            && match pattern {
                None => true,
                Some(p) => options.name.as_deref().is_some_and(|n| p.is_match(n)),
            }
    }
}

/// One connector of a [`MultiConfig`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// Label that prefixes keys of this connector; no `:` allowed.
    pub label: String,
    /// The inner connector.
    pub connector: ConnectorConfig,
    /// What it accepts.
    #[serde(default)]
    pub policy: Policy,
}

/// Options of a [`MultiConnector`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MultiConfig {
    /// Connectors in declaration order.
    pub routes: Vec<Route>,
}

#[derive(Debug)]
struct Entry {
    route: Route,
    pattern: Option<GlobMatcher>,
    connector: Arc<dyn Connector>,
}

/// Routes puts among several connectors by policy.
///
/// ```
/// # proxystore::runtime::block_on(async {
/// use proxystore::connector::{Connector, PutOptions, memory::MemoryConnector, multi::*};
/// let small = Arc::new(MemoryConnector::new("doc-small")) as Arc<dyn Connector>;
/// let large = Arc::new(MemoryConnector::new("doc-large")) as Arc<dyn Connector>;
/// let multi = MultiConnector::builder()
///     .route("small", small, Policy { max_size: Some(1024), ..Default::default() })
///     .route("large", large, Policy { min_size: Some(1025), ..Default::default() })
///     .build()?;
/// let key = multi.put(bytes::Bytes::from(vec![0u8; 4096])).await?;
/// assert!(key.as_str().starts_with("large:"));
/// # Ok::<_, proxystore::Error>(()) })??;
/// # use std::sync::Arc;
/// # Ok::<_, proxystore::Error>(())
/// ```
#[derive(Debug)]
pub struct MultiConnector {
    entries: Vec<Entry>,
}

/// Builds a [`MultiConnector`] from live connectors.
#[derive(Debug, Default)]
pub struct MultiConnectorBuilder {
    routes: Vec<(String, Arc<dyn Connector>, Policy)>,
}

impl MultiConnectorBuilder {
    /// Add a connector under `label` with `policy`.
    #[must_use]
    pub fn route(
        mut self,
        label: impl Into<String>,
        connector: Arc<dyn Connector>,
        policy: Policy,
    ) -> Self {
        self.routes.push((label.into(), connector, policy));
        self
    }

    /// Check the routes and build.
    ///
    /// # Errors
    /// [`Error::Config`] for no routes, a duplicate or malformed label, or a bad glob.
    pub fn build(self) -> Result<MultiConnector> {
        let entries = self
            .routes
            .into_iter()
            .map(|(label, connector, policy)| {
                let route = Route {
                    label,
                    connector: connector.config(),
                    policy,
                };
                Ok(Entry {
                    pattern: compile(&route)?,
                    route,
                    connector,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        MultiConnector::check(&entries)?;
        Ok(MultiConnector { entries })
    }
}

fn compile(route: &Route) -> Result<Option<GlobMatcher>> {
    route
        .policy
        .pattern
        .as_deref()
        .map(|p| {
            Glob::new(p).map(|g| g.compile_matcher()).map_err(|e| {
                Error::config(format!("multi route '{}': pattern {p:?}: {e}", route.label))
            })
        })
        .transpose()
}

impl MultiConnector {
    /// A builder over live connectors.
    pub fn builder() -> MultiConnectorBuilder {
        MultiConnectorBuilder::default()
    }

    /// Build from options, building each inner connector from its config.
    ///
    /// # Errors
    /// As for [`MultiConnectorBuilder::build`], or an inner connector's error.
    pub fn with_config(config: MultiConfig) -> Result<Self> {
        let entries = config
            .routes
            .into_iter()
            .map(|route| {
                Ok(Entry {
                    pattern: compile(&route)?,
                    connector: super::from_config(&route.connector)?,
                    route,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::check(&entries)?;
        Ok(MultiConnector { entries })
    }

    /// Build from a [`ConnectorConfig`] of kind `multi`.
    ///
    /// # Errors
    /// As for [`MultiConnector::with_config`].
    pub fn from_config(config: &ConnectorConfig) -> Result<Arc<dyn Connector>> {
        Ok(Arc::new(Self::with_config(config.options()?)?))
    }

    fn check(entries: &[Entry]) -> Result<()> {
        if entries.is_empty() {
            return Err(Error::config("multi connector needs at least one route"));
        }
        for (i, e) in entries.iter().enumerate() {
            let l = &e.route.label;
            if l.is_empty() || l.contains(':') {
                return Err(Error::config(format!(
                    "multi route label {l:?} must be non-empty and without ':'"
                )));
            }
            if entries[..i].iter().any(|o| &o.route.label == l) {
                return Err(Error::config(format!(
                    "multi route label {l:?} is repeated"
                )));
            }
        }
        Ok(())
    }

    /// The route a put of `size` bytes with `options` goes to.
    fn choose(&self, size: Option<u64>, options: &PutOptions) -> Result<&Entry> {
        let mut best: Option<&Entry> = None;
        for e in &self.entries {
            if e.route.policy.accepts(size, options, e.pattern.as_ref())
                && best.is_none_or(|b| e.route.policy.priority > b.route.policy.priority)
            {
                best = Some(e);
            }
        }
        best.ok_or_else(|| Error::config(format!(
            "no multi connector route accepts an object of {} bytes with name {:?} and tags {:?}",
            size.map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
            options.name,
            options.tags
        )))
    }

    /// The route and inner key of `key`.
    fn locate(&self, key: &Key) -> Result<(&Entry, Key)> {
        let invalid = |reason: &str| Error::InvalidKey {
            connector: KIND.into(),
            key: key.to_string(),
            reason: reason.into(),
        };
        let (label, inner) = key
            .as_str()
            .split_once(':')
            .ok_or_else(|| invalid("expected label:key"))?;
        let entry = self
            .entries
            .iter()
            .find(|e| e.route.label == label)
            .ok_or_else(|| invalid("no route has this label"))?;
        Ok((entry, Key::from(inner)))
    }

    fn wrap(entry: &Entry, inner: &Key) -> Key {
        Key::from(format!("{}:{inner}", entry.route.label))
    }
}

#[async_trait]
impl Connector for MultiConnector {
    fn kind(&self) -> &str {
        KIND
    }

    async fn put_opts(&self, data: Bytes, options: &PutOptions) -> Result<Key> {
        let entry = self.choose(Some(data.len() as u64), options)?;
        let inner = entry.connector.put_opts(data, options).await?;
        Ok(Self::wrap(entry, &inner))
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        let (entry, inner) = self.locate(key)?;
        entry.connector.get(&inner).await
    }

    async fn get_range(&self, key: &Key, range: std::ops::Range<u64>) -> Result<Option<Bytes>> {
        let (entry, inner) = self.locate(key)?;
        entry.connector.get_range(&inner, range).await
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        let (entry, inner) = self.locate(key)?;
        entry.connector.exists(&inner).await
    }

    async fn evict(&self, key: &Key) -> Result<()> {
        let (entry, inner) = self.locate(key)?;
        entry.connector.evict(&inner).await
    }

    fn config(&self) -> ConnectorConfig {
        let routes: Vec<Route> = self.entries.iter().map(|e| e.route.clone()).collect();
        ConnectorConfig::new(
            KIND,
            serde_json::to_value(MultiConfig { routes }).unwrap_or_default(),
        )
    }

    async fn new_key(&self, options: &PutOptions) -> Result<Key> {
        // The size of a deferred put is unknown: route on name, tags and priority.
        let entry = self.choose(None, options)?;
        let inner = entry.connector.new_key(options).await?;
        Ok(Self::wrap(entry, &inner))
    }

    async fn set(&self, key: &Key, data: Bytes) -> Result<()> {
        let (entry, inner) = self.locate(key)?;
        entry.connector.set(&inner, data).await
    }

    async fn close(&self) -> Result<()> {
        for e in &self.entries {
            e.connector.close().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::memory::MemoryConnector;

    fn mem(seg: &str) -> Arc<dyn Connector> {
        Arc::new(MemoryConnector::new(seg))
    }

    #[tokio::test]
    async fn routes_by_size_tags_priority_and_pattern() {
        let m = MultiConnector::builder()
            .route(
                "small",
                mem("m-small"),
                Policy {
                    max_size: Some(10),
                    ..Default::default()
                },
            )
            .route(
                "big",
                mem("m-big"),
                Policy {
                    min_size: Some(11),
                    tags: vec!["bulk".into()],
                    ..Default::default()
                },
            )
            .route(
                "weights",
                mem("m-weights"),
                Policy {
                    pattern: Some("*/weights".into()),
                    priority: 10,
                    ..Default::default()
                },
            )
            .build()
            .unwrap();
        let k = m.put(Bytes::from_static(b"tiny")).await.unwrap();
        assert!(k.as_str().starts_with("small:"));
        let k = m.put(Bytes::from(vec![0; 100])).await.unwrap();
        assert!(k.as_str().starts_with("big:"), "{k}");
        let e = m
            .put_opts(Bytes::from(vec![0; 100]), &PutOptions::default().tag("gpu"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Config { .. }));
        let k = m
            .put_opts(
                Bytes::from(vec![0; 100]),
                &PutOptions::named("train/weights"),
            )
            .await
            .unwrap();
        assert!(k.as_str().starts_with("weights:"), "{k}");
        assert_eq!(m.get(&k).await.unwrap().unwrap().len(), 100);
        assert!(m.get(&Key::from("nolabel")).await.is_err());
        assert!(m.get(&Key::from("ghost:x")).await.is_err());

        let rebuilt = crate::connector::from_config(&m.config()).unwrap();
        assert_eq!(rebuilt.config(), m.config());
        assert!(rebuilt.exists(&k).await.unwrap());
    }

    #[test]
    fn bad_configs_are_typed_errors() {
        assert!(MultiConnector::builder().build().is_err());
        let bad_label = MultiConnector::builder()
            .route("a:b", mem("x"), Policy::default())
            .build();
        assert!(bad_label.is_err());
        let dup = MultiConnector::builder()
            .route("a", mem("x"), Policy::default())
            .route("a", mem("y"), Policy::default())
            .build();
        assert!(dup.is_err());
        let glob = MultiConnector::builder()
            .route(
                "a",
                mem("x"),
                Policy {
                    pattern: Some("[".into()),
                    ..Default::default()
                },
            )
            .build();
        assert!(matches!(glob, Err(Error::Config { .. })));
    }
}
