//! A lease: owns objects for a time-to-live that can be extended.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Lifetime, Owned};
use crate::error::Result;
use crate::key::Key;
use crate::proxy::Proxy;
use crate::runtime;
use crate::store::Store;

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
    /// As for [`Store::put`], or [`crate::Error::Config`] if the lease has ended.
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
