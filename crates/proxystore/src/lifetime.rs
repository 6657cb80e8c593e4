//! Lifetimes: who evicts an object, and when.
//!
//! - evict-on-resolve: [`crate::ProxyOptions::evict_on_resolve`], a one-shot hand-off;
//! - [`Scope`]: owns the objects put through it and evicts them all when closed or dropped;
//! - [`Lease`]: like a scope, but also ends by itself when its time-to-live runs out, which can
//!   be extended; the backstop for workers that crash before cleaning up;
//! - [`OwnedProxy`]: a proxy that evicts its object when dropped.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::key::Key;
use crate::proxy::Proxy;
use crate::runtime;
use crate::store::Store;

/// Something that takes ownership of stored objects and evicts them when it ends.
pub trait Lifetime: Send + Sync {
    /// Take ownership of `key` in `store`.
    ///
    /// # Errors
    /// [`Error::Config`] when the lifetime has already ended or `store` is not its store.
    fn add_key(&self, store: &Store, key: Key) -> Result<()>;

    /// Whether the lifetime has ended (its objects are evicted or being evicted).
    fn is_done(&self) -> bool;
}

/// The keys a lifetime owns and the store they are in.
struct Owned {
    store: Store,
    keys: Mutex<Vec<Key>>,
    done: AtomicBool,
}

impl Owned {
    fn new(store: &Store) -> Self {
        Owned {
            store: store.clone(),
            keys: Mutex::new(Vec::new()),
            done: AtomicBool::new(false),
        }
    }

    fn add(&self, store: &Store, key: Key, what: &str) -> Result<()> {
        if !store.ptr_eq(&self.store) && store.name() != self.store.name() {
            return Err(Error::config(format!(
                "{what} of store '{}' cannot own objects of store '{}'",
                self.store.name(),
                store.name()
            )));
        }
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if self.done.load(Ordering::Acquire) {
            return Err(Error::config(format!("{what} has already ended")));
        }
        keys.push(key);
        Ok(())
    }

    fn take(&self) -> Vec<Key> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        self.done.store(true, Ordering::Release);
        std::mem::take(&mut *keys)
    }

    async fn end(&self) -> Result<()> {
        let keys = self.take();
        if keys.is_empty() {
            return Ok(());
        }
        self.store.evict_batch(&keys).await
    }

    /// End from a destructor: evict in the background on the I/O runtime.
    fn end_in_background(self: &Arc<Self>) {
        if self.done.load(Ordering::Acquire) {
            return;
        }
        let this = self.clone();
        runtime::io_handle().spawn(async move {
            if let Err(e) = this.end().await {
                tracing::warn!(store = this.store.name(), error = %e, "lifetime cleanup failed");
            }
        });
    }

    fn keys(&self) -> Vec<Key> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Put `obj` into the store and hand it to `lifetime`; an object the lifetime refuses (it
    /// has ended) is evicted again, so that nothing is left unowned.
    async fn proxy<T: Serialize + 'static>(
        &self,
        lifetime: &dyn Lifetime,
        obj: &T,
    ) -> Result<Proxy<T>> {
        let proxy = self.store.proxy(obj).await?;
        let Some(key) = proxy.key().cloned() else {
            return Ok(proxy);
        };
        if let Err(e) = lifetime.add_key(&self.store, key.clone()) {
            if let Err(evict) = self.store.evict(&key).await {
                tracing::warn!(store = self.store.name(), %key, error = %evict, "cannot evict an object its lifetime refused");
            }
            return Err(e);
        }
        Ok(proxy)
    }
}

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
    /// As for [`Store::put`], or [`Error::Config`] if the scope has ended.
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

impl Drop for Scope {
    fn drop(&mut self) {
        self.owned.end_in_background();
    }
}

struct LeaseState {
    owned: Arc<Owned>,
    deadline: Mutex<Instant>,
    changed: Notify,
}

impl LeaseState {
    fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Owns objects for a time-to-live that can be extended; when it expires, a background sweeper
/// evicts them, even if every handle to the lease was dropped (Python ProxyStore's
/// `LeaseLifetime`).
///
/// ```
/// # proxystore::runtime::block_on(async {
/// use std::time::Duration;
/// use proxystore::{Store, lifetime::Lease, connector::memory::MemoryConnector};
/// let store = Store::new("lease-doc", MemoryConnector::new("lease-doc"));
/// let lease = Lease::new(&store, Duration::from_millis(50));
/// let p = lease.proxy(&7u64).await?;
/// lease.extend(Duration::from_millis(50));
/// tokio::time::sleep(Duration::from_millis(300)).await;
/// assert!(lease.is_expired());
/// assert!(!store.exists(p.key().unwrap()).await?);
/// # Ok::<_, proxystore::Error>(()) })??;
/// # Ok::<_, proxystore::Error>(())
/// ```
pub struct Lease {
    state: Arc<LeaseState>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("store", &self.state.owned.store.name())
            .field("expires_in", &self.expires_in())
            .field("done", &self.is_done())
            .finish()
    }
}

impl Lease {
    /// A lease on objects of `store` that expires after `ttl` unless extended.
    pub fn new(store: &Store, ttl: Duration) -> Self {
        let state = Arc::new(LeaseState {
            owned: Arc::new(Owned::new(store)),
            deadline: Mutex::new(Instant::now() + ttl),
            changed: Notify::new(),
        });
        let sweeper = state.clone();
        runtime::io_handle().spawn(async move {
            loop {
                if sweeper.owned.done.load(Ordering::Acquire) {
                    return;
                }
                let deadline = sweeper.deadline();
                if Instant::now() >= deadline {
                    if let Err(e) = sweeper.owned.end().await {
                        tracing::warn!(error = %e, "lease sweep failed");
                    }
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = sweeper.changed.notified() => {}
                }
            }
        });
        Lease { state }
    }

    /// Push the expiry `by` further into the future (from the current deadline, or from now if
    /// that is later).
    pub fn extend(&self, by: Duration) {
        let mut d = self
            .state
            .deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *d = (*d).max(Instant::now()) + by;
        drop(d);
        self.state.changed.notify_one();
    }

    /// Time left before expiry (zero once expired).
    pub fn expires_in(&self) -> Duration {
        self.state
            .deadline()
            .saturating_duration_since(Instant::now())
    }

    /// Whether the lease has ended (expired or closed).
    pub fn is_expired(&self) -> bool {
        self.is_done()
    }

    /// Put `obj`, owned by this lease, and return a proxy to it.
    ///
    /// # Errors
    /// As for [`Store::put`], or [`Error::Config`] if the lease has ended.
    pub async fn proxy<T: Serialize + 'static>(&self, obj: &T) -> Result<Proxy<T>> {
        self.state.owned.proxy(self, obj).await
    }

    /// Keys owned so far.
    pub fn keys(&self) -> Vec<Key> {
        self.state.owned.keys()
    }

    /// End the lease now, evicting its objects.
    ///
    /// # Errors
    /// The connector's error.
    pub async fn close(&self) -> Result<()> {
        let r = self.state.owned.end().await;
        self.state.changed.notify_one();
        r
    }
}

impl Lifetime for Lease {
    fn add_key(&self, store: &Store, key: Key) -> Result<()> {
        self.state.owned.add(store, key, "lease")
    }

    fn is_done(&self) -> bool {
        self.state.owned.done.load(Ordering::Acquire)
    }
}

/// A proxy that owns its object: dropping it evicts the object (in the background).
///
/// Only the owner evicts; [`OwnedProxy::borrow`] hands out plain proxies to send elsewhere,
/// and [`OwnedProxy::into_proxy`] gives up ownership.
pub struct OwnedProxy<T> {
    proxy: Proxy<T>,
    owner: Arc<Owned>,
}

impl<T> OwnedProxy<T> {
    pub(crate) fn new(proxy: Proxy<T>, store: Store) -> Self {
        let owner = Arc::new(Owned::new(&store));
        if let Some(k) = proxy.key() {
            owner
                .keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(k.clone());
        }
        OwnedProxy { proxy, owner }
    }

    /// A plain proxy to the same object, to pass to code that reads it. It does not keep the
    /// object alive.
    pub fn borrow(&self) -> Proxy<T> {
        self.proxy.clone()
    }

    /// Give up ownership: the object is no longer evicted on drop.
    pub fn into_proxy(self) -> Proxy<T> {
        self.owner.take();
        self.proxy.clone()
    }
}

impl<T> Deref for OwnedProxy<T> {
    type Target = Proxy<T>;
    fn deref(&self) -> &Proxy<T> {
        &self.proxy
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for OwnedProxy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OwnedProxy").field(&self.proxy).finish()
    }
}

impl<T> Drop for OwnedProxy<T> {
    fn drop(&mut self) {
        self.owner.end_in_background();
    }
}
impl Store {
    /// Put `obj` and return a proxy that owns it: the object is evicted when the proxy drops.
    ///
    /// # Errors
    /// As for [`Store::put`].
    pub async fn owned_proxy<T: Serialize + 'static>(&self, obj: &T) -> Result<OwnedProxy<T>> {
        let proxy = self.proxy(obj).await?;
        Ok(OwnedProxy::new(proxy, self.clone()))
    }
}
