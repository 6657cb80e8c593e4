//! The multi connector: several connectors behind one, with a policy choosing per put.
//!
//! Each put goes to the highest-priority connector whose [`RoutePolicy`] accepts the object (its size,
//! the tags asked for, the object's name against a glob pattern). The returned key names the
//! connector that holds the object (`label:inner-key`), so a get, exists or evict goes straight
//! there; batches go to each connector as one batch of its objects. Each inner connector runs
//! inside the layers it asks for ([`crate::layer::stack`]). The whole configuration, inner connectors included, round-trips through
//! [`Connector::config`], so proxies made by a multi connector resolve in any process.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use super::stream::{ObjectMeta, ObjectReader, ObjectWriter, StoredObject};
use super::{Connector, ConnectorConfig, ObjectSink, PutOptions};
use crate::digest::{Digest, DigestAlgorithm};
use crate::error::{Error, Result};
use crate::key::Key;

/// Kind name of this connector.
pub const KIND: &str = "multi";

/// Which objects a connector of a [`MultiConnector`] accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoutePolicy {
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

impl RoutePolicy {
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
    pub policy: RoutePolicy,
}

/// Options of a [`MultiConnector`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MultiConfig {
    /// Connectors in declaration order.
    pub routes: Vec<Route>,
}

/// The items of a batch bound for one route: the route, their positions in the batch, and
/// the items (inner keys or data).
type Group<'a, T> = (&'a Entry, Vec<usize>, Vec<T>);

/// Items of a batch, each with its route, grouped by route (routes in order of first use).
fn group<'a, T>(items: impl Iterator<Item = Result<(&'a Entry, T)>>) -> Result<Vec<Group<'a, T>>> {
    let mut groups: Vec<Group<'a, T>> = Vec::new();
    for (i, item) in items.enumerate() {
        let (entry, item) = item?;
        match groups.iter_mut().find(|g| std::ptr::eq(g.0, entry)) {
            Some(g) => {
                g.1.push(i);
                g.2.push(item);
            }
            None => groups.push((entry, vec![i], vec![item])),
        }
    }
    Ok(groups)
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
///     .route("small", small, RoutePolicy { max_size: Some(1024), ..Default::default() })
///     .route("large", large, RoutePolicy { min_size: Some(1025), ..Default::default() })
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
    routes: Vec<(String, Arc<dyn Connector>, RoutePolicy)>,
}

impl MultiConnectorBuilder {
    /// Add a connector under `label` with `policy`.
    #[must_use]
    pub fn route(
        mut self,
        label: impl Into<String>,
        connector: Arc<dyn Connector>,
        policy: RoutePolicy,
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
                    connector: crate::layer::stack(connector),
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

    /// Build from options, building each inner connector from its config with `build`
    /// (the kinds of this process: [`crate::kinds::from_config`], which is how a `multi`
    /// config is built, nested ones included).
    ///
    /// # Errors
    /// As for [`MultiConnectorBuilder::build`], or an inner connector's error.
    pub fn with_config(
        config: MultiConfig,
        build: impl Fn(&ConnectorConfig) -> Result<Arc<dyn Connector>>,
    ) -> Result<Self> {
        let entries = config
            .routes
            .into_iter()
            .map(|route| {
                Ok(Entry {
                    pattern: compile(&route)?,
                    connector: crate::layer::stack(build(&route.connector)?),
                    route,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::check(&entries)?;
        Ok(MultiConnector { entries })
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

    /// The positions of `keys` grouped by the route that holds them, with their inner keys;
    /// routes in order of first use.
    fn group_keys(&self, keys: &[Key]) -> Result<Vec<Group<'_, Key>>> {
        group(keys.iter().map(|k| self.locate(k)))
    }

    fn wrap(entry: &Entry, inner: &Key) -> Key {
        Key::from(format!("{}:{inner}", entry.route.label))
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Connector for MultiConnector {
    fn kind(&self) -> &str {
        KIND
    }

    async fn put_opts(&self, data: Bytes, options: &PutOptions) -> Result<Key> {
        let entry = self.choose(Some(data.len() as u64), options)?;
        let inner = entry.connector.put_opts(data, options).await?;
        Ok(Self::wrap(entry, &inner))
    }

    async fn put_hashing(
        &self,
        data: Bytes,
        options: &PutOptions,
        algorithm: DigestAlgorithm,
    ) -> Result<(Key, Option<Digest>)> {
        let entry = self.choose(Some(data.len() as u64), options)?;
        let (inner, digest) = entry
            .connector
            .put_hashing(data, options, algorithm)
            .await?;
        Ok((Self::wrap(entry, &inner), digest))
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        let (entry, inner) = self.locate(key)?;
        entry.connector.get(&inner).await
    }

    async fn get_sized(&self, key: &Key, size: u64) -> Result<Option<Bytes>> {
        let (entry, inner) = self.locate(key)?;
        entry.connector.get_sized(&inner, size).await
    }

    async fn get_into(&self, key: &Key, sink: &mut ObjectSink<'_>) -> Result<bool> {
        let (entry, inner) = self.locate(key)?;
        entry.connector.get_into(&inner, sink).await
    }

    async fn get_range(&self, key: &Key, range: std::ops::Range<u64>) -> Result<Option<Bytes>> {
        let (entry, inner) = self.locate(key)?;
        entry.connector.get_range(&inner, range).await
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        let (entry, inner) = self.locate(key)?;
        entry.connector.exists(&inner).await
    }

    /// The route holding `key` waits, with its own mechanism.
    async fn wait(&self, key: &Key, timeout: Duration) -> Result<bool> {
        let (entry, inner) = self.locate(key)?;
        entry.connector.wait(&inner, timeout).await
    }

    fn wait_mechanism(&self) -> &'static str {
        "the route's"
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

    async fn put_batch(&self, data: Vec<Bytes>, options: &PutOptions) -> Result<Vec<Key>> {
        // Route each object, then one batch per route.
        let groups = group(
            data.into_iter()
                .map(|d| Ok((self.choose(Some(d.len() as u64), options)?, d))),
        )?;
        let n = groups.iter().map(|g| g.1.len()).sum();
        let mut keys: Vec<Option<Key>> = vec![None; n];
        for (entry, positions, data) in groups {
            let inner = entry.connector.put_batch(data, options).await?;
            if inner.len() != positions.len() {
                return Err(Error::backend_message(
                    entry.connector.kind(),
                    format!(
                        "put_batch returned {} keys for {}",
                        inner.len(),
                        positions.len()
                    ),
                    false,
                ));
            }
            for (at, k) in positions.into_iter().zip(inner) {
                keys[at] = Some(Self::wrap(entry, &k));
            }
        }
        Ok(keys.into_iter().flatten().collect())
    }

    async fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>> {
        let mut out: Vec<Option<Bytes>> = vec![None; keys.len()];
        for (entry, positions, inner) in self.group_keys(keys)? {
            let got = entry.connector.get_batch(&inner).await?;
            if got.len() != positions.len() {
                return Err(Error::backend_message(
                    entry.connector.kind(),
                    format!(
                        "get_batch returned {} objects for {}",
                        got.len(),
                        positions.len()
                    ),
                    false,
                ));
            }
            for (at, d) in positions.into_iter().zip(got) {
                out[at] = d;
            }
        }
        Ok(out)
    }

    async fn evict_batch(&self, keys: &[Key]) -> Result<()> {
        for (entry, _, inner) in self.group_keys(keys)? {
            entry.connector.evict_batch(&inner).await?;
        }
        Ok(())
    }

    async fn writer(
        &self,
        key: Option<&Key>,
        size: Option<u64>,
        options: &PutOptions,
    ) -> Result<Option<Box<dyn ObjectWriter>>> {
        let (entry, inner_key) = match key {
            Some(k) => {
                let (entry, inner) = self.locate(k)?;
                (entry, Some(inner))
            }
            None => (self.choose(size, options)?, None),
        };
        Ok(entry
            .connector
            .writer(inner_key.as_ref(), size, options)
            .await?
            .map(|inner| {
                Box::new(LabelledWriter {
                    label: entry.route.label.clone(),
                    inner,
                }) as Box<dyn ObjectWriter>
            }))
    }

    async fn reader(
        &self,
        key: &Key,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Option<ObjectReader>> {
        let (entry, inner) = self.locate(key)?;
        entry.connector.reader(&inner, range).await
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

    async fn set_once(&self, key: &Key, data: Bytes) -> Result<bool> {
        let (entry, inner) = self.locate(key)?;
        entry.connector.set_once(&inner, data).await
    }

    /// Only when every route's is.
    fn set_once_is_atomic(&self) -> bool {
        self.entries
            .iter()
            .all(|e| e.connector.set_once_is_atomic())
    }

    async fn put(&self, data: Bytes) -> Result<Key> {
        self.put_opts(data, &PutOptions::default()).await
    }

    /// None: a call goes to a route, which may do I/O.
    fn immediate(&self) -> Option<&dyn super::ImmediateConnector> {
        None
    }

    /// Nothing: each route runs inside the layers it asks for already.
    fn call_config(&self) -> super::CallConfig {
        super::CallConfig::default()
    }

    fn check_key(&self, key: &Key) -> Result<()> {
        let (entry, inner) = self.locate(key)?;
        entry.connector.check_key(&inner)
    }

    /// Every route's objects under the multi-connector's keys; `None` when a route cannot list
    /// its objects.
    async fn inventory(&self) -> Result<Option<Vec<StoredObject>>> {
        let mut all = Vec::new();
        for e in &self.entries {
            let Some(objects) = e.connector.inventory().await? else {
                return Ok(None);
            };
            all.extend(objects.into_iter().map(|mut o| {
                o.key = Self::wrap(e, &o.key);
                o
            }));
        }
        Ok(Some(all))
    }

    async fn close(&self) -> Result<()> {
        for e in &self.entries {
            e.connector.close().await?;
        }
        Ok(())
    }
}

/// A route's streaming writer whose key comes back with the route's label.
struct LabelledWriter {
    label: String,
    inner: Box<dyn ObjectWriter>,
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectWriter for LabelledWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.inner.write(chunk).await
    }

    async fn finish(self: Box<Self>) -> Result<Key> {
        let key = self.inner.finish().await?;
        Ok(Key::from(format!("{}:{key}", self.label)))
    }

    async fn finish_with(self: Box<Self>, meta: &ObjectMeta) -> Result<Key> {
        let key = self.inner.finish_with(meta).await?;
        Ok(Key::from(format!("{}:{key}", self.label)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::memory::MemoryConnector;

    fn mem(seg: &str) -> Arc<dyn Connector> {
        Arc::new(MemoryConnector::new(seg))
    }

    /// A memory connector that counts the calls it gets, batches counting once.
    #[derive(Debug)]
    struct Counting(MemoryConnector, std::sync::atomic::AtomicUsize);

    impl Counting {
        fn count(&self) {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[async_trait]
    impl Connector for Counting {
        fn kind(&self) -> &str {
            "counting"
        }
        async fn put_opts(&self, data: Bytes, o: &PutOptions) -> Result<Key> {
            self.count();
            self.0.put_opts(data, o).await
        }
        async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
            self.count();
            self.0.get(key).await
        }
        async fn exists(&self, key: &Key) -> Result<bool> {
            self.0.exists(key).await
        }
        async fn evict(&self, key: &Key) -> Result<()> {
            self.count();
            self.0.evict(key).await
        }
        fn config(&self) -> ConnectorConfig {
            self.0.config()
        }
        async fn put_batch(&self, data: Vec<Bytes>, o: &PutOptions) -> Result<Vec<Key>> {
            self.count();
            self.0.put_batch(data, o).await
        }
        async fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>> {
            self.count();
            self.0.get_batch(keys).await
        }
        async fn evict_batch(&self, keys: &[Key]) -> Result<()> {
            self.count();
            self.0.evict_batch(keys).await
        }
    }

    #[tokio::test]
    async fn batches_go_to_each_route_as_one_batch() {
        let counting = |seg| Arc::new(Counting(MemoryConnector::new(seg), 0.into()));
        let (small, big) = (counting("mb-small"), counting("mb-big"));
        let m = MultiConnector::builder()
            .route(
                "small",
                small.clone(),
                RoutePolicy {
                    max_size: Some(10),
                    ..Default::default()
                },
            )
            .route("big", big.clone(), RoutePolicy::default())
            .build()
            .unwrap();
        let data: Vec<Bytes> = (0..10)
            .map(|i| Bytes::from(vec![i as u8; if i % 2 == 0 { 5 } else { 50 }]))
            .collect();
        let keys = m
            .put_batch(data.clone(), &PutOptions::default())
            .await
            .unwrap();
        for (i, k) in keys.iter().enumerate() {
            let label = if i % 2 == 0 { "small:" } else { "big:" };
            assert!(k.as_str().starts_with(label), "{i}: {k}");
        }
        let got = m.get_batch(&keys).await.unwrap();
        assert_eq!(got, data.into_iter().map(Some).collect::<Vec<_>>());
        m.evict_batch(&keys).await.unwrap();
        assert!(
            m.get_batch(&keys)
                .await
                .unwrap()
                .iter()
                .all(Option::is_none)
        );
        // put, get, evict, get: one batch call per route each.
        for c in [&small, &big] {
            assert_eq!(c.1.load(std::sync::atomic::Ordering::SeqCst), 4);
        }
    }

    #[tokio::test]
    async fn routes_by_size_tags_priority_and_pattern() {
        let m = MultiConnector::builder()
            .route(
                "small",
                mem("m-small"),
                RoutePolicy {
                    max_size: Some(10),
                    ..Default::default()
                },
            )
            .route(
                "big",
                mem("m-big"),
                RoutePolicy {
                    min_size: Some(11),
                    tags: vec!["bulk".into()],
                    ..Default::default()
                },
            )
            .route(
                "weights",
                mem("m-weights"),
                RoutePolicy {
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

        let rebuilt = crate::kinds::from_config(&m.config()).unwrap();
        assert_eq!(rebuilt.config(), m.config());
        assert!(rebuilt.exists(&k).await.unwrap());
    }

    #[test]
    fn bad_configs_are_typed_errors() {
        assert!(MultiConnector::builder().build().is_err());
        let bad_label = MultiConnector::builder()
            .route("a:b", mem("x"), RoutePolicy::default())
            .build();
        assert!(bad_label.is_err());
        let dup = MultiConnector::builder()
            .route("a", mem("x"), RoutePolicy::default())
            .route("a", mem("y"), RoutePolicy::default())
            .build();
        assert!(dup.is_err());
        let glob = MultiConnector::builder()
            .route(
                "a",
                mem("x"),
                RoutePolicy {
                    pattern: Some("[".into()),
                    ..Default::default()
                },
            )
            .build();
        assert!(matches!(glob, Err(Error::Config { .. })));
    }
}
