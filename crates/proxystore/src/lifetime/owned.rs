//! Owned proxies and their borrows: Rust's ownership rules for objects in a store.
//!
//! - An [`OwnedProxy`] owns its object: when it drops (or [`OwnedProxy::evict`] is called), the
//!   object is evicted, exactly once. Serializing it *moves* ownership: the serialized reference
//!   becomes an owned proxy again where it is deserialized (a task, another process), and this
//!   handle no longer evicts; serializing it a second time is an error
//!   ([`OwnershipProblem::Moved`]).
//! - [`OwnedProxy::borrow`] hands out a counted [`RefProxy`] (cloneable, `'static`, sendable to
//!   a task as a plain proxy). While any is alive the owner cannot evict, move or mutably
//!   borrow the object: each is an [`Error::Ownership`] naming store and key. An owner dropped
//!   while borrowed evicts when its last borrow drops, never before.
//! - [`OwnedProxy::borrow_mut`] is a Rust borrow of the owner (`&mut`), so the compiler rules out
//!   any other use of the owner meanwhile; [`RefMutProxy::update`] writes a new value under the
//!   same key. To let another process change an object, move the owned proxy there and take it
//!   back from what that task returns ([`Proxy::into_owned`]): a mutable borrow never leaves
//!   the process, so no reference anywhere holds a stale size or digest.
//! - Inside [`with_drop_owner`], an owned proxy dropped hands its object to that lifetime
//!   instead of evicting it (an executor evicts a task's objects once the task succeeds, so a
//!   retried attempt still finds them).

use std::future::Future;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Lifetime, Unfinished, exit};
use crate::error::{Error, OwnershipProblem, Result};
use crate::key::Key;
use crate::proxy::{Factory, Proxy};
use crate::reference::Reference;
use crate::store::Store;

tokio::task_local! {
    static DROP_OWNER: Arc<dyn Lifetime>;
}

thread_local! {
    /// How deep this thread is in [`serialize_without_moving`].
    static NOT_MOVING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Run `f`, in which serializing an owned proxy writes its reference without moving ownership:
/// for code that serializes a value to measure or inspect it before (or instead of) sending it,
/// such as a size threshold check. Only the serialization that sends the value should move it.
///
/// ```
/// # proxystore::runtime::block_on(async {
/// use proxystore::{Store, connector::memory::MemoryConnector, lifetime};
/// let store = Store::new("no-move-doc", MemoryConnector::new("no-move-doc"));
/// let owned = store.owned_proxy(&1u8).await?;
/// let size = lifetime::serialize_without_moving(|| serde_json::to_vec(&owned).unwrap().len());
/// assert!(size > 0 && owned.is_owner());
/// # Ok::<_, proxystore::Error>(()) })??;
/// # Ok::<_, proxystore::Error>(())
/// ```
pub fn serialize_without_moving<R>(f: impl FnOnce() -> R) -> R {
    struct Depth;
    impl Drop for Depth {
        fn drop(&mut self) {
            NOT_MOVING.with(|d| d.set(d.get().saturating_sub(1)));
        }
    }
    NOT_MOVING.with(|d| d.set(d.get() + 1));
    let _depth = Depth;
    f()
}

pub(crate) fn moving() -> bool {
    NOT_MOVING.with(|d| d.get() == 0)
}

/// Run `fut` so that owned proxies dropped inside it hand their objects to `lifetime` instead
/// of evicting them. An executor wraps each task attempt in it and ends the lifetime when the
/// task has succeeded (or failed for the last time), so a retried attempt finds its owned
/// inputs again and they are evicted exactly once.
///
/// ```
/// # proxystore::runtime::block_on(async {
/// use proxystore::{Store, connector::memory::MemoryConnector, lifetime::{self, Scope}};
/// let store = Store::new("drop-owner-doc", MemoryConnector::new("drop-owner-doc"));
/// let owned = store.owned_proxy(&42u32).await?;
/// let key = owned.key().unwrap().clone();
/// let task_scope = std::sync::Arc::new(Scope::new(&store));
/// lifetime::with_drop_owner(task_scope.clone(), async move { drop(owned) }).await;
/// assert!(store.exists(&key).await?); // kept for a retry
/// task_scope.close().await?; // the task is over
/// assert!(!store.exists(&key).await?);
/// # Ok::<_, proxystore::Error>(()) })??;
/// # Ok::<_, proxystore::Error>(())
/// ```
pub async fn with_drop_owner<F: Future>(lifetime: Arc<dyn Lifetime>, fut: F) -> F::Output {
    DROP_OWNER.scope(lifetime, fut).await
}

/// Hand `work` to the drop owner of the running task attempt, if there is one that takes it.
pub(crate) fn adopt_unfinished(
    work: Box<dyn Unfinished>,
) -> std::result::Result<(), Box<dyn Unfinished>> {
    let slot = std::cell::Cell::new(Some(work));
    let _outside_any_attempt = DROP_OWNER.try_with(|owner| {
        if let Some(w) = slot.take()
            && let Err(w) = owner.adopt(w)
        {
            slot.set(Some(w));
        }
    });
    slot.into_inner().map_or(Ok(()), Err)
}

/// [`with_drop_owner`] for synchronous code, such as a service's `call` that may drop its
/// arguments before it returns its future.
///
/// ```
/// # proxystore::runtime::block_on(async {
/// use proxystore::{Store, connector::memory::MemoryConnector, lifetime::{self, DropCollector}};
/// let store = Store::new("drop-owner-sync-doc", MemoryConnector::new("drop-owner-sync-doc"));
/// let owned = store.owned_proxy(&42u32).await?;
/// let attempt = std::sync::Arc::new(DropCollector::new());
/// lifetime::with_drop_owner_sync(attempt.clone(), move || drop(owned));
/// assert_eq!(attempt.len(), 1); // kept for a retry, evicted by `finish`
/// attempt.finish(None).await?;
/// # Ok::<_, proxystore::Error>(()) })??;
/// # Ok::<_, proxystore::Error>(())
/// ```
pub fn with_drop_owner_sync<R>(lifetime: Arc<dyn Lifetime>, f: impl FnOnce() -> R) -> R {
    DROP_OWNER.sync_scope(lifetime, f)
}

/// The objects owned proxies handed over while a task attempt ran (see [`with_drop_owner`]),
/// from any store: an executor evicts them once the task is over, or forgets them when the
/// attempt will be retried (the next attempt owns them again).
///
/// It also holds the promises an attempt dropped unset (see [`crate::Promise`]):
/// [`DropCollector::finish`] fails their futures once the task is over, [`DropCollector::forget`]
/// leaves them to the next attempt.
#[derive(Default)]
pub struct DropCollector {
    keys: Mutex<Vec<(Store, Key)>>,
    unfinished: Mutex<Vec<Box<dyn Unfinished>>>,
}

impl std::fmt::Debug for DropCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DropCollector")
            .field("objects", &self.len())
            .finish()
    }
}

impl DropCollector {
    /// An empty collector.
    pub fn new() -> Self {
        DropCollector::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(Store, Key)>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Objects collected so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none were collected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget what was collected: the task will run again and owns these objects (and its
    /// unset promises) then.
    pub fn forget(&self) {
        self.lock().clear();
        let unfinished = std::mem::take(&mut *self.unfinished());
        for u in unfinished {
            u.release();
        }
    }

    fn unfinished(&self) -> MutexGuard<'_, Vec<Box<dyn Unfinished>>> {
        self.unfinished.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The task is over: settle what it left unfinished (its unset promises fail with `error`,
    /// or as dropped when it succeeded), then evict everything collected.
    ///
    /// # Errors
    /// As for [`DropCollector::evict_all`].
    pub async fn finish(&self, error: Option<String>) -> Result<()> {
        let unfinished = std::mem::take(&mut *self.unfinished());
        for u in unfinished {
            u.settle(error.clone()).await;
        }
        self.evict_all().await
    }

    /// Evict every object collected (the task is over); unset promises are settled as by
    /// [`DropCollector::finish`] with no error.
    ///
    /// # Errors
    /// The first store error; every object is still attempted.
    pub async fn evict_all(&self) -> Result<()> {
        let unfinished = std::mem::take(&mut *self.unfinished());
        for u in unfinished {
            u.settle(None).await;
        }
        let taken = std::mem::take(&mut *self.lock());
        let mut first = None;
        for (store, key) in taken {
            if let Err(e) = store.evict(&key).await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Lifetime for DropCollector {
    fn add_key(&self, store: &Store, key: Key) -> Result<()> {
        self.lock().push((store.clone(), key));
        Ok(())
    }

    fn adopt(&self, work: Box<dyn Unfinished>) -> std::result::Result<(), Box<dyn Unfinished>> {
        self.unfinished().push(work);
        Ok(())
    }

    fn is_done(&self) -> bool {
        false
    }
}

/// Who owns the object now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// This handle: evict on drop.
    Owned,
    /// Dropped while borrowed: the last borrow to drop evicts.
    EndWhenUnborrowed,
    /// Moved away, given up or already evicted: nothing to do here.
    Gone,
}

struct Counts {
    status: Status,
    shared: usize,
}

/// What an owned proxy and its borrows share.
struct OwnerState {
    /// The store when known (the proxy was made here); else found from the reference.
    store: Option<Store>,
    reference: Option<Arc<Reference>>,
    counts: Mutex<Counts>,
}

impl OwnerState {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn store_name(&self) -> String {
        match (&self.store, &self.reference) {
            (Some(s), _) => s.name().to_owned(),
            (None, Some(r)) => r.store.clone(),
            (None, None) => String::new(),
        }
    }

    fn key(&self) -> Key {
        self.reference
            .as_ref()
            .map_or_else(|| Key::from(""), |r| r.key.clone())
    }

    fn error(&self, problem: OwnershipProblem) -> Error {
        Error::Ownership {
            store: self.store_name(),
            key: self.key(),
            origin: self
                .reference
                .as_ref()
                .filter(|r| !r.origin.is_empty())
                .map(|r| r.origin.clone()),
            problem,
        }
    }

    fn store(&self) -> Result<Store> {
        match (&self.store, &self.reference) {
            (Some(s), _) => Ok(s.clone()),
            (None, Some(r)) => crate::registry::store_for(r),
            (None, None) => Err(Error::config("an inline value has no store")),
        }
    }

    /// Evict now, or hand the object to the task's drop owner.
    fn end(&self) {
        let Some(r) = &self.reference else { return };
        let store = match self.store() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(store = r.store, key = %r.key, error = %e, "owned proxy: cannot find the store to evict from");
                return;
            }
        };
        let handed = DROP_OWNER
            .try_with(|owner| owner.add_key(&store, r.key.clone()).is_ok())
            .unwrap_or(false);
        if !handed {
            exit::spawn_eviction(store, vec![r.key.clone()], "owned proxy");
        }
    }
}

/// A proxy that owns its object (see the [module docs](self)): the object is evicted when the
/// owner drops, or when its last borrow does if it is still borrowed then.
///
/// ```
/// # proxystore::runtime::block_on(async {
/// use proxystore::{Store, connector::memory::MemoryConnector};
/// let store = Store::new("owned-doc", MemoryConnector::new("owned-doc"));
/// let owned = store.owned_proxy(&vec![1.0f32; 4]).await?;
/// let key = owned.key().unwrap().clone();
///
/// let r = owned.borrow()?; // counted; a plain proxy on the wire
/// assert_eq!(r.len(), 4);
/// let err = owned.evict().await.unwrap_err(); // borrowed: refused, evicted when `r` drops
/// assert!(matches!(err, proxystore::Error::Ownership { .. }));
/// assert!(store.exists(&key).await?);
/// drop(r);
/// assert!(proxystore::lifetime::wait_for_evictions(std::time::Duration::from_secs(5)));
/// assert!(!store.exists(&key).await?);
/// # Ok::<_, proxystore::Error>(()) })??;
/// # Ok::<_, proxystore::Error>(())
/// ```
pub struct OwnedProxy<T> {
    proxy: Proxy<T>,
    state: Arc<OwnerState>,
}

impl<T> OwnedProxy<T> {
    fn with_store(proxy: Proxy<T>, store: Option<Store>) -> Self {
        let reference = proxy.factory().map(Factory::shared_reference);
        OwnedProxy {
            proxy,
            state: Arc::new(OwnerState {
                store,
                reference,
                counts: Mutex::new(Counts {
                    status: Status::Owned,
                    shared: 0,
                }),
            }),
        }
    }

    /// A counted borrow to read the object or send it to a task (as a plain proxy). The owner
    /// cannot evict, move or mutably borrow the object while it is alive.
    ///
    /// # Errors
    /// [`Error::Ownership`] ([`OwnershipProblem::Moved`]) when this handle no longer owns it.
    pub fn borrow(&self) -> Result<RefProxy<T>> {
        let mut c = self.state.counts();
        if c.status != Status::Owned {
            return Err(self.state.error(OwnershipProblem::Moved));
        }
        c.shared += 1;
        Ok(RefProxy {
            proxy: self.proxy.clone(),
            state: self.state.clone(),
        })
    }

    /// A mutable borrow, exclusive by Rust's rules, to write a new value
    /// ([`RefMutProxy::update`]).
    ///
    /// # Errors
    /// [`Error::Ownership`] while counted borrows ([`RefProxy`]) are alive.
    pub fn borrow_mut(&mut self) -> Result<RefMutProxy<'_, T>> {
        let shared = self.state.counts().shared;
        if shared > 0 {
            return Err(self.state.error(OwnershipProblem::Borrowed {
                shared,
                action: "borrow it mutably",
            }));
        }
        Ok(RefMutProxy { owner: self })
    }

    /// Evict the object now (and wait for it).
    ///
    /// # Errors
    /// [`Error::Ownership`] while it is borrowed (it is then evicted when the last borrow
    /// drops), or the store's error.
    pub async fn evict(self) -> Result<()> {
        let state = self.state.clone();
        {
            let mut c = state.counts();
            if c.status != Status::Owned {
                return Err(state.error(OwnershipProblem::Moved));
            }
            if c.shared > 0 {
                // The last borrow evicts (this handle's drop leaves it to them).
                let shared = c.shared;
                c.status = Status::EndWhenUnborrowed;
                drop(c);
                drop(self);
                return Err(state.error(OwnershipProblem::Borrowed {
                    shared,
                    action: "evict it",
                }));
            }
            c.status = Status::Gone;
        }
        drop(self);
        match &state.reference {
            Some(r) => state.store()?.evict(&r.key).await,
            None => Ok(()),
        }
    }

    /// Give up ownership: the object is no longer evicted by this handle.
    pub fn into_proxy(self) -> Proxy<T> {
        self.state.counts().status = Status::Gone;
        self.proxy.clone()
    }

    /// Whether this handle still owns the object (not moved away or given up).
    pub fn is_owner(&self) -> bool {
        self.state.counts().status == Status::Owned
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
        let mut c = self.state.counts();
        match c.status {
            Status::Owned if c.shared > 0 => c.status = Status::EndWhenUnborrowed,
            Status::Owned => {
                c.status = Status::Gone;
                drop(c);
                self.state.end();
            }
            Status::EndWhenUnborrowed | Status::Gone => {}
        }
    }
}

/// Serializing moves ownership: the reference is written as a proxy's (so a field typed
/// `OwnedProxy<T>` or `Proxy<T>` reads it), and this handle stops owning the object.
impl<T: Serialize> Serialize for OwnedProxy<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        if !moving() {
            return self.proxy.serialize(s);
        }
        let mut c = self.state.counts();
        match c.status {
            Status::Owned if c.shared == 0 => {}
            Status::Owned => {
                let shared = c.shared;
                return Err(S::Error::custom(self.state.error(
                    OwnershipProblem::Borrowed {
                        shared,
                        action: "move it",
                    },
                )));
            }
            _ => return Err(S::Error::custom(self.state.error(OwnershipProblem::Moved))),
        }
        let written = self.proxy.serialize(s)?;
        c.status = Status::Gone;
        Ok(written)
    }
}

/// Deserializing takes ownership: this process evicts the object when the proxy drops.
impl<'de, T: DeserializeOwned> Deserialize<'de> for OwnedProxy<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Proxy::<T>::deserialize(d)?.into_owned())
    }
}

/// A counted borrow of an [`OwnedProxy`]'s object. Reads like the proxy; serializes as a plain
/// proxy (the count stays here: keep the borrow alive until whoever received it is done).
pub struct RefProxy<T> {
    proxy: Proxy<T>,
    state: Arc<OwnerState>,
}

impl<T> Clone for RefProxy<T> {
    fn clone(&self) -> Self {
        self.state.counts().shared += 1;
        RefProxy {
            proxy: self.proxy.clone(),
            state: self.state.clone(),
        }
    }
}

impl<T> Deref for RefProxy<T> {
    type Target = Proxy<T>;
    fn deref(&self) -> &Proxy<T> {
        &self.proxy
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for RefProxy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RefProxy").field(&self.proxy).finish()
    }
}

impl<T: Serialize> Serialize for RefProxy<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.proxy.serialize(s)
    }
}

impl<T> Drop for RefProxy<T> {
    fn drop(&mut self) {
        let mut c = self.state.counts();
        c.shared = c.shared.saturating_sub(1);
        if c.shared == 0 && c.status == Status::EndWhenUnborrowed {
            c.status = Status::Gone;
            drop(c);
            self.state.end();
        }
    }
}

/// A mutable borrow of an [`OwnedProxy`]: the owner is borrowed (`&mut`) for as long as it
/// lives.
pub struct RefMutProxy<'a, T> {
    owner: &'a mut OwnedProxy<T>,
}

impl<T> Deref for RefMutProxy<'_, T> {
    type Target = Proxy<T>;
    fn deref(&self) -> &Proxy<T> {
        &self.owner.proxy
    }
}

impl<T: Serialize + Send + Sync + 'static> RefMutProxy<'_, T> {
    /// Store `value` as the object under the same key; the owner (and every proxy made from it
    /// from now on) reads it, already resolved here. Proxies made before keep their old
    /// reference, whose digest no longer matches.
    ///
    /// ```
    /// # proxystore::runtime::block_on(async {
    /// use proxystore::{Store, connector::memory::MemoryConnector};
    /// let store = Store::new("update-doc", MemoryConnector::new("update-doc"));
    /// let mut owned = store.owned_proxy(&vec![1u32, 2]).await?;
    /// owned.borrow_mut()?.update(vec![1, 2, 3]).await?;
    /// assert_eq!(owned.len(), 3);
    /// let again = store.get::<Vec<u32>>(owned.key().unwrap()).await?;
    /// assert_eq!(again, Some(vec![1, 2, 3]));
    /// # Ok::<_, proxystore::Error>(()) })??;
    /// # Ok::<_, proxystore::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the connector cannot write under a given key
    /// ([`crate::Connector::set`]), or the store's error; the object is unchanged then.
    pub async fn update(&mut self, value: T) -> Result<()> {
        let state = self.owner.state.clone();
        let Some(old) = &state.reference else {
            self.owner.proxy = Proxy::from_value(value);
            return Ok(());
        };
        let store = state.store()?;
        let reference = store.set_object(old, &value).await?;
        let factory = Factory::with_store(reference.clone(), store.clone());
        self.owner.proxy = Proxy::resolved(factory, value);
        // The shared state's reference names the same store and key: nothing to change.
        Ok(())
    }
}

impl<T> Proxy<T> {
    /// Take ownership of the object this proxy points to: it is evicted when the returned
    /// owner drops (see [`OwnedProxy`]). For a proxy a task returned, or one received by
    /// value. Its evict-on-resolve flag, if set, is cleared: the owner decides.
    pub fn into_owned(self) -> OwnedProxy<T> {
        let store = self.factory().and_then(|f| f.store_if_known());
        let proxy = match self.factory() {
            Some(f) if f.reference().evict_on_resolve => {
                let mut r = f.reference().clone();
                r.evict_on_resolve = false;
                match &store {
                    Some(s) => Proxy::from_factory(Factory::with_store(r, s.clone())),
                    None => Proxy::from_reference(r),
                }
            }
            _ => self,
        };
        OwnedProxy::with_store(proxy, store)
    }
}

impl Store {
    /// Put `obj` and return a proxy that owns it (see [`OwnedProxy`]).
    ///
    /// # Errors
    /// As for [`Store::put`].
    pub async fn owned_proxy<T: Serialize + 'static>(&self, obj: &T) -> Result<OwnedProxy<T>> {
        let proxy = self.proxy(obj).await?;
        Ok(OwnedProxy::with_store(proxy, Some(self.clone())))
    }
}
