//! The in-process memory connector.
//!
//! Objects live in a named *segment* shared by every `MemoryConnector` of that segment in the
//! process, so two stores (or a store rebuilt from a proxy's config) see the same objects. Bytes
//! are handed out without copying. The keys a segment makes name the slot of their object, so
//! that a segment of many objects stays quick to fill (see `objects.rs`).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::stream::{ChunkBuffer, ObjectReader, ObjectWriter, StoredObject};
use super::{Connector, ConnectorConfig, ImmediateConnector, PutOptions};
use crate::error::Result;
use crate::key::Key;

/// Kind name of this connector.
pub const KIND: &str = "memory";

mod objects;

use objects::Objects;

/// The objects of a segment, and the notification of writes under a given key (what
/// [`Connector::wait`] waits on).
#[derive(Default)]
struct Segment {
    map: RwLock<Objects>,
    written: tokio::sync::Notify,
}

impl Segment {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Objects> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Objects> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Insert unless present (under the lock), and wake the waiters: whether it inserted.
    fn set_once(&self, key: Key, data: Bytes) -> bool {
        let inserted = self.write().insert_once(key, data);
        if inserted {
            self.written.notify_waiters();
        }
        inserted
    }

    /// Insert under a key someone may be waiting for, and wake the waiters.
    fn set(&self, key: Key, data: Bytes) {
        self.write().insert(key, data);
        self.written.notify_waiters();
    }
}

fn segment(name: &str) -> Arc<Segment> {
    static SEGMENTS: OnceLock<RwLock<HashMap<String, Arc<Segment>>>> = OnceLock::new();
    let segments = SEGMENTS.get_or_init(Default::default);
    if let Some(s) = segments.read().unwrap_or_else(|e| e.into_inner()).get(name) {
        return s.clone();
    }
    segments
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(name.to_owned())
        .or_default()
        .clone()
}

/// Options of a [`MemoryConnector`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryConfig {
    /// Segment name (default `default`).
    pub segment: Option<String>,
}

/// Process-wide in-memory storage.
///
/// ```
/// # proxystore::runtime::block_on(async {
/// use proxystore::connector::{Connector, memory::MemoryConnector};
/// let a = MemoryConnector::new("doc-segment");
/// let key = a.put(bytes::Bytes::from_static(b"hi")).await?;
/// // Another connector on the same segment sees the object.
/// let b = MemoryConnector::new("doc-segment");
/// assert_eq!(b.get(&key).await?.as_deref(), Some(&b"hi"[..]));
/// # Ok::<_, proxystore::Error>(()) })??;
/// # Ok::<_, proxystore::Error>(())
/// ```
#[derive(Clone)]
pub struct MemoryConnector {
    name: String,
    data: Arc<Segment>,
}

impl std::fmt::Debug for MemoryConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryConnector")
            .field("segment", &self.name)
            .finish_non_exhaustive()
    }
}

impl MemoryConnector {
    /// Attach to the segment `name`, creating it if needed.
    pub fn new(name: &str) -> Self {
        MemoryConnector {
            name: name.to_owned(),
            data: segment(name),
        }
    }

    /// A segment of its own, reachable only through this connector and its clones (a store
    /// server's objects): it is freed with the last of them. Its config names a segment that
    /// no other connector of the process can join, so a connector rebuilt from it is empty.
    ///
    /// ```
    /// # proxystore::runtime::block_on(async {
    /// use proxystore::connector::{Connector, memory::MemoryConnector};
    /// let a = MemoryConnector::private();
    /// a.put(bytes::Bytes::from_static(b"hi")).await?;
    /// assert_eq!((a.len(), MemoryConnector::private().len()), (1, 0));
    /// # Ok::<_, proxystore::Error>(()) })??;
    /// # Ok::<_, proxystore::Error>(())
    /// ```
    pub fn private() -> Self {
        MemoryConnector {
            name: format!("private-{}", Key::random()),
            data: Arc::default(),
        }
    }

    /// Build from a [`ConnectorConfig`] of kind `memory`.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when the options do not parse.
    pub fn from_config(config: &ConnectorConfig) -> Result<Arc<dyn Connector>> {
        let opts: MemoryConfig = if config.options_value().is_null() {
            MemoryConfig::default()
        } else {
            config.options()?
        };
        Ok(Arc::new(MemoryConnector::new(
            opts.segment.as_deref().unwrap_or("default"),
        )))
    }

    /// Number of objects in the segment.
    pub fn len(&self) -> usize {
        self.data.read().len()
    }

    /// Whether the segment holds no objects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every call of a memory connector is a map operation under a lock, done at once.
impl ImmediateConnector for MemoryConnector {
    fn put_now(&self, data: Bytes, _options: &PutOptions) -> Result<Key> {
        Ok(self.data.write().insert_new(data))
    }

    fn get_now(&self, key: &Key) -> Result<Option<Bytes>> {
        Ok(self.data.read().get(key).cloned())
    }

    fn exists_now(&self, key: &Key) -> Result<bool> {
        Ok(self.data.read().contains(key))
    }

    fn evict_now(&self, key: &Key) -> Result<()> {
        self.data.write().remove(key);
        Ok(())
    }
}

#[async_trait]
impl Connector for MemoryConnector {
    fn kind(&self) -> &str {
        KIND
    }

    async fn put_opts(&self, data: Bytes, options: &PutOptions) -> Result<Key> {
        self.put_now(data, options)
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        self.get_now(key)
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        self.exists_now(key)
    }

    async fn evict(&self, key: &Key) -> Result<()> {
        self.evict_now(key)
    }

    fn immediate(&self) -> Option<&dyn ImmediateConnector> {
        Some(self)
    }

    fn config(&self) -> ConnectorConfig {
        ConnectorConfig::new(KIND, serde_json::json!({ "segment": self.name }))
    }

    async fn put_batch(&self, data: Vec<Bytes>, _options: &PutOptions) -> Result<Vec<Key>> {
        let mut map = self.data.write();
        Ok(data.into_iter().map(|d| map.insert_new(d)).collect())
    }

    async fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>> {
        let map = self.data.read();
        Ok(keys.iter().map(|k| map.get(k).cloned()).collect())
    }

    async fn evict_batch(&self, keys: &[Key]) -> Result<()> {
        let mut map = self.data.write();
        for k in keys {
            map.remove(k);
        }
        Ok(())
    }

    async fn new_key(&self, _options: &PutOptions) -> Result<Key> {
        Ok(Key::random())
    }

    async fn set(&self, key: &Key, data: Bytes) -> Result<()> {
        self.data.set(key.clone(), data);
        Ok(())
    }

    async fn set_once(&self, key: &Key, data: Bytes) -> Result<bool> {
        Ok(self.data.set_once(key.clone(), data))
    }

    fn set_once_is_atomic(&self) -> bool {
        true
    }

    /// Woken by every write under a given key in the segment ([`Connector::set`], a writer
    /// with a key), in this process.
    async fn wait(&self, key: &Key, timeout: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let written = self.data.written.notified();
            tokio::pin!(written);
            // Registered before the check: a write between the check and the wait wakes it.
            written.as_mut().enable();
            if self.data.read().contains(key) {
                return Ok(true);
            }
            if tokio::time::timeout_at(deadline, written).await.is_err() {
                return Ok(self.data.read().contains(key));
            }
        }
    }

    fn wait_mechanism(&self) -> &'static str {
        "in-process notify"
    }

    /// Buffers the object in one allocation of its own ([`ChunkBuffer`]) and inserts it on
    /// finish.
    async fn writer(
        &self,
        key: Option<&Key>,
        size: Option<u64>,
        _options: &PutOptions,
    ) -> Result<Option<Box<dyn ObjectWriter>>> {
        Ok(Some(Box::new(MemoryWriter {
            data: self.data.clone(),
            key: key.cloned(),
            buf: ChunkBuffer::new(size),
        })))
    }

    /// Slices of the stored bytes, without copying, and the whole object's size.
    async fn reader(
        &self,
        key: &Key,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Option<ObjectReader>> {
        Ok(self
            .data
            .read()
            .get(key)
            .map(|b| ObjectReader::from_bytes(b.clone(), range)))
    }

    async fn inventory(&self) -> Result<Option<Vec<StoredObject>>> {
        Ok(Some(
            self.data
                .read()
                .iter()
                .map(|(k, b)| StoredObject::new(k, b.len() as u64, Default::default()))
                .collect(),
        ))
    }
}

/// A memory connector's streaming writer.
struct MemoryWriter {
    data: Arc<Segment>,
    /// The key it was given, if any (otherwise the segment makes one on finish).
    key: Option<Key>,
    buf: ChunkBuffer,
}

#[async_trait]
impl ObjectWriter for MemoryWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.buf.push(chunk)
    }

    async fn finish(self: Box<Self>) -> Result<Key> {
        let MemoryWriter { data, key, buf } = *self;
        let bytes = buf.finish()?;
        Ok(match key {
            Some(key) => {
                data.set(key.clone(), bytes);
                key
            }
            None => data.write().insert_new(bytes),
        })
    }
}
