//! Lifetimes: who evicts an object, and when.
//!
//! - evict-on-resolve: [`crate::ProxyOptions::evict_on_resolve`], a one-shot hand-off;
//! - [`Scope`]: owns the objects put through it and evicts them all when closed or dropped;
//! - [`Lease`]: like a scope, but also ends by itself when its time-to-live runs out, which can
//!   be extended; the backstop for workers that crash before cleaning up;
//! - [`OwnedProxy`]: a proxy that owns its object, with counted borrows ([`RefProxy`]), a
//!   mutable borrow ([`RefMutProxy`]) and ownership that moves when it is serialized (see
//!   [`owned`]);
//! - [`process_scope`]: a scope that lasts as long as the process.
//!
//! What a destructor evicts runs in the background, and the process waits for it when it exits
//! ([`wait_for_evictions`]).

mod exit;
mod lease;
pub mod owned;
mod scope;

pub(crate) use exit::spawn_cleanup;
pub use exit::{EXIT_WAIT, process_scope, wait_for_evictions};
pub use lease::Lease;
pub(crate) use owned::adopt_unfinished;
pub use owned::{
    DropCollector, OwnedProxy, RefMutProxy, RefProxy, serialize_without_moving, with_drop_owner,
    with_drop_owner_sync,
};
pub use scope::Scope;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::key::Key;
use crate::proxy::Proxy;
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

    /// Take over work a task attempt dropped unfinished (a [`crate::Promise`] dropped unset
    /// inside [`with_drop_owner`]), to settle it once the task is over. By default refused:
    /// the caller settles it at once.
    ///
    /// # Errors
    /// Gives `work` back when this lifetime does not take such work.
    fn adopt(&self, work: Box<dyn Unfinished>) -> std::result::Result<(), Box<dyn Unfinished>> {
        Err(work)
    }
}

/// Work a task attempt left unfinished, held by the attempt's [`DropCollector`] until the
/// executor knows whether the task is over (then [`Unfinished::settle`]) or will run again
/// (then [`Unfinished::release`]: the next attempt takes it over). Dropping it releases it.
pub trait Unfinished: Send + Sync {
    /// The task is over: `error` is why it failed, `None` when it succeeded.
    fn settle(self: Box<Self>, error: Option<String>) -> Settling;

    /// The attempt will be retried.
    fn release(self: Box<Self>);
}

/// What [`Unfinished::settle`] returns: the settling, to await.
pub type Settling = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

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

    /// End from a destructor: evict in the background on the I/O runtime (finished before
    /// the process exits, see [`wait_for_evictions`]).
    fn end_in_background(&self) {
        if self.done.load(Ordering::Acquire) {
            return;
        }
        exit::spawn_eviction(self.store.clone(), self.take(), "lifetime");
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
