//! What a store knows of single keys, on request: per-key metrics, the keys it created (to
//! clear them when it closes), and whether a key's object is cached.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde::Serialize;

use super::{Store, StoreBuilder};
use crate::error::Result;
use crate::key::Key;
use crate::metrics::KeyMetrics;
use crate::proxy::{Factory, Proxy};

/// The keys a store created and has not evicted.
#[derive(Default)]
pub(super) struct Created(Mutex<HashSet<Key>>);

impl Created {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Key>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StoreBuilder {
    /// Keep figures per key (puts, gets, exists, evictions and resolves of each key; see
    /// [`Store::key_metrics`]). Off by default: the table grows with every key used.
    #[must_use]
    pub fn key_metrics(mut self, on: bool) -> Self {
        self.key_metrics = on;
        self
    }

    /// Remember the keys this store creates (and forget those it evicts), so that
    /// [`Store::close_and_clear`] can evict what is left. Off by default.
    #[must_use]
    pub fn track_created(mut self, on: bool) -> Self {
        self.track_created = on;
        self
    }
}

impl Store {
    pub(super) fn created(&self, keys: &[Key]) {
        if let Some(c) = &self.inner.created {
            c.lock().extend(keys.iter().cloned());
        }
    }

    pub(super) fn evicted(&self, keys: &[Key]) {
        if let Some(c) = &self.inner.created {
            let mut c = c.lock();
            for k in keys {
                c.remove(k);
            }
        }
    }

    /// What this store did with `key`, if it keeps per-key figures
    /// ([`StoreBuilder::key_metrics`]) and used the key.
    ///
    /// ```
    /// # proxystore::runtime::block_on(async {
    /// use proxystore::{Store, connector::memory::MemoryConnector};
    /// let store = Store::builder("key-metrics-doc", MemoryConnector::new("key-metrics-doc"))
    ///     .key_metrics(true)
    ///     .build();
    /// let p = store.proxy(&vec![0u8; 1000]).await?;
    /// p.resolve().await?;
    /// let m = store.key_metrics(p.key().unwrap()).unwrap();
    /// assert_eq!((m.put.count, m.resolve.count), (1, 1));
    /// # Ok::<_, proxystore::Error>(()) })??;
    /// # Ok::<_, proxystore::Error>(())
    /// ```
    pub fn key_metrics(&self, key: &Key) -> Option<KeyMetrics> {
        self.inner.metrics.key(key)
    }

    /// Every key's figures so far, emptying the table.
    pub fn take_key_metrics(&self) -> HashMap<Key, KeyMetrics> {
        self.inner.metrics.take_keys()
    }

    /// Whether the decoded object of `key` is in this store's cache (a resolve would not
    /// fetch it). No I/O.
    pub fn is_cached(&self, key: &Key) -> bool {
        self.inner.cache.contains(key)
    }

    /// The keys this store created and has not evicted (empty unless
    /// [`StoreBuilder::track_created`]).
    pub fn created_keys(&self) -> Vec<Key> {
        self.inner
            .created
            .as_ref()
            .map(|c| c.lock().iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Evict every object this store created and has not evicted (see
    /// [`StoreBuilder::track_created`]), then close the connector.
    ///
    /// ```
    /// # proxystore::runtime::block_on(async {
    /// use proxystore::{Store, connector::memory::MemoryConnector};
    /// let c = MemoryConnector::new("close-clear-doc");
    /// let store = Store::builder("close-clear-doc", c.clone()).track_created(true).build();
    /// store.proxy(&1u8).await?;
    /// store.put_batch(&[2u8, 3]).await?;
    /// store.close_and_clear().await?;
    /// assert!(c.is_empty());
    /// # Ok::<_, proxystore::Error>(()) })??;
    /// # Ok::<_, proxystore::Error>(())
    /// ```
    ///
    /// # Errors
    /// The connector's error.
    pub async fn close_and_clear(&self) -> Result<()> {
        let keys = self.created_keys();
        if !keys.is_empty() {
            self.evict_batch(&keys).await?;
        }
        self.close().await
    }

    /// Put `value` and return a proxy that already holds it (Python ProxyStore's
    /// `populate_target`): the producer's own use of the proxy fetches nothing, and the
    /// store's cache holds the object for other proxies of the key in this process.
    ///
    /// ```
    /// # proxystore::runtime::block_on(async {
    /// use proxystore::{Store, connector::memory::MemoryConnector};
    /// let store = Store::new("populate-doc", MemoryConnector::new("populate-doc"));
    /// let p = store.proxy_value(vec![1u32, 2, 3]).await?;
    /// assert!(p.is_resolved());
    /// assert!(store.is_cached(p.key().unwrap()));
    /// assert_eq!(store.metrics().get.count, 0);
    /// # Ok::<_, proxystore::Error>(()) })??;
    /// # Ok::<_, proxystore::Error>(())
    /// ```
    ///
    /// # Errors
    /// As for [`Store::put`].
    pub async fn proxy_value<T: Serialize + Send + Sync + 'static>(
        &self,
        value: T,
    ) -> Result<Proxy<T>> {
        let stored = self
            .put_object(&value, &crate::connector::PutOptions::default())
            .await?;
        let reference = self.reference::<T>(stored, false);
        let value = std::sync::Arc::new(value);
        self.inner
            .cache
            .insert(reference.key.clone(), value.clone(), reference.size);
        Ok(Proxy::resolved_shared(
            Factory::with_store(reference, self.clone()),
            value,
        ))
    }
}
