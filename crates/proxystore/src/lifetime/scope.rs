//! A scope: owns objects until it is closed or dropped.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::{Lifetime, Owned};
use crate::error::Result;
use crate::key::Key;
use crate::proxy::Proxy;
use crate::store::Store;

/// Owns objects until it is closed or dropped, then evicts them (Python ProxyStore's
/// `ContextLifetime`).
///
/// ```
/// # proxystore::runtime::block_on(async {
/// use proxystore::{Store, lifetime::Scope, connector::memory::MemoryConnector};
/// let store = Store::new("scope-doc", MemoryConnector::new("scope-doc"));
/// let scope = Scope::new(&store);
/// let p = scope.proxy(&vec![0u8; 16]).await?;
/// let key = p.key().unwrap().clone();
/// scope.close().await?;
/// assert!(!store.exists(&key).await?);
/// # Ok::<_, proxystore::Error>(()) })??;
/// # Ok::<_, proxystore::Error>(())
/// ```
pub struct Scope {
    owned: Arc<Owned>,
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("store", &self.owned.store.name())
            .field("keys", &self.owned.keys().len())
            .field("done", &self.is_done())
            .finish()
    }
}

impl Scope {
    /// A scope owning objects of `store`.
    pub fn new(store: &Store) -> Self {
        Scope {
            owned: Arc::new(Owned::new(store)),
        }
    }

    /// Put `obj` into the store, owned by this scope, and return a proxy to it.
    ///
    /// # Errors
    /// As for [`Store::put`], or [`crate::Error::Config`] if the scope has ended.
    pub async fn proxy<T: Serialize + 'static>(&self, obj: &T) -> Result<Proxy<T>> {
        self.owned.proxy(self, obj).await
    }

    /// Keys owned so far.
    pub fn keys(&self) -> Vec<Key> {
        self.owned.keys()
    }

    /// Evict every owned object and end the scope.
    ///
    /// # Errors
    /// The connector's error; the scope has ended regardless.
    pub async fn close(&self) -> Result<()> {
        self.owned.end().await
    }
}

impl Lifetime for Scope {
    fn add_key(&self, store: &Store, key: Key) -> Result<()> {
        self.owned.add(store, key, "scope")
    }

    fn is_done(&self) -> bool {
        self.owned.done.load(Ordering::Acquire)
    }
}

impl Scope {
    /// End from a destructor or at exit: evict in the background.
    pub(crate) fn end_in_background(&self) {
        self.owned.end_in_background();
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        self.owned.end_in_background();
    }
}
