//! Lazy transparent proxies.
//!
//! A [`Proxy<T>`] is a small [`Reference`] that becomes the `T` it points to on first use:
//! `Deref` (synchronous) or [`Proxy::resolve`] (async) fetch, check and decode the object once;
//! afterwards the proxy behaves as the object. A proxy that is never used never fetches.
//!
//! Serializing a proxy writes the reference, never the object. In JSON it is
//! `{"$proxy": {...reference fields...}}`; in binary codecs (postcard, MessagePack, bincode) it
//! is an enum whose first variant holds the reference's protobuf bytes. Deserializing accepts the
//! reference, or an inline value of `T` (the plain value in JSON, the second variant in binary
//! codecs), so a field typed `Proxy<T>` reads data written either way.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use serde::de::{DeserializeOwned, EnumAccess, VariantAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod make;

pub use make::ProxyOptions;

use crate::error::Result;
use crate::key::Key;
use crate::reference::Reference;
use crate::registry;
use crate::runtime;
use crate::store::Store;

/// The JSON field that marks a serialized proxy reference.
pub const REFERENCE_FIELD: &str = "$proxy";

/// The newtype-struct name under which a `Proxy` (de)serializes itself.
///
/// Ordinary formats treat newtype structs as transparent, so this changes nothing on the wire;
/// a transcoding (de)serializer (such as `proxystore-middleware`'s) recognises the name and knows
/// that the value is already a proxy: it neither proxies it again nor resolves it eagerly.
pub const PROXY_NEWTYPE_NAME: &str = "$proxystore::Proxy";

/// Knows how to produce the target of a proxy: a reference plus, in the process that made it,
/// the store itself.
pub struct Factory<T> {
    reference: Arc<Reference>,
    store: Option<Store>,
    _target: PhantomData<fn() -> T>,
}

impl<T> Clone for Factory<T> {
    fn clone(&self) -> Self {
        Factory {
            reference: self.reference.clone(),
            store: self.store.clone(),
            _target: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Factory<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Factory")
            .field("store", &self.reference.store)
            .field("key", &self.reference.key)
            .finish()
    }
}

impl<T> Factory<T> {
    /// A factory for `reference`; the store is found (or built) when it resolves.
    pub fn new(reference: Reference) -> Self {
        Factory {
            reference: Arc::new(reference),
            store: None,
            _target: PhantomData,
        }
    }

    pub(crate) fn with_store(reference: Reference, store: Store) -> Self {
        Factory::with_shared_store(Arc::new(reference), store)
    }

    /// [`Factory::with_store`] with a reference shared with others.
    pub(crate) fn with_shared_store(reference: Arc<Reference>, store: Store) -> Self {
        Factory {
            reference,
            store: Some(store),
            _target: PhantomData,
        }
    }

    /// The store, when this factory was made with it (no lookup, no rebuild).
    pub(crate) fn store_if_known(&self) -> Option<Store> {
        self.store.clone()
    }

    /// The reference, shared (no copy).
    pub(crate) fn shared_reference(&self) -> Arc<Reference> {
        self.reference.clone()
    }

    /// The reference.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// The store that holds the target: the one that made the proxy, else the registered store
    /// of that name, else one rebuilt from the reference's connector config if the process's
    /// [`crate::ResolvePolicy`] accepts it (see [`crate::store_for_reference`]).
    ///
    /// # Errors
    /// [`crate::Error::Refused`] for a reference outside the resolve policy,
    /// [`crate::Error::UnknownConnectorKind`] or a connector config error.
    pub fn store(&self) -> Result<Store> {
        match &self.store {
            Some(s) => Ok(s.clone()),
            None => registry::store_for(&self.reference),
        }
    }
}

impl<T: DeserializeOwned + Send + Sync + 'static> Factory<T> {
    /// Fetch, check and decode the target.
    ///
    /// # Errors
    /// See [`Store::get_by_reference`].
    pub async fn resolve(&self) -> Result<Arc<T>> {
        self.store()?.get_by_reference(&self.reference).await
    }

    /// [`Factory::resolve`] from synchronous code, on any thread or runtime (see
    /// [`runtime::block_on`]). A cached target is returned without leaving the thread.
    ///
    /// # Errors
    /// As for [`Factory::resolve`], plus [`crate::Error::Timeout`].
    pub fn resolve_blocking(&self) -> Result<Arc<T>> {
        let store = self.store()?;
        if let Some(hit) = store.cached::<T>(&self.reference.key) {
            return Ok(hit);
        }
        let reference = self.reference.clone();
        // A future's wait bounds itself (its timeout, its producer's heartbeat).
        let timeout = match reference.future {
            Some(_) => None,
            None => Some(runtime::blocking_timeout()),
        };
        runtime::block_on_within(timeout, async move {
            store.get_by_reference_after_miss::<T>(&reference).await
        })?
    }
}

/// A lazy reference to a `T` that becomes the `T` on first use.
///
/// ```
/// # proxystore::runtime::block_on(async {
/// use proxystore::{Proxy, Store, connector::memory::MemoryConnector};
/// let store = Store::new("proxy-doc", MemoryConnector::new("proxy-doc"));
/// let p: Proxy<Vec<u32>> = store.proxy(&vec![1, 2, 3]).await?;
///
/// // Send it anywhere: only the reference travels.
/// let wire = serde_json::to_string(&p).unwrap();
/// let q: Proxy<Vec<u32>> = serde_json::from_str(&wire).unwrap();
/// assert!(!q.is_resolved());
/// assert_eq!(q.iter().sum::<u32>(), 6); // first use resolves
/// assert!(q.is_resolved());
/// # Ok::<_, proxystore::Error>(()) })??;
/// # Ok::<_, proxystore::Error>(())
/// ```
pub struct Proxy<T> {
    factory: Option<Factory<T>>,
    target: OnceLock<Arc<T>>,
}

impl<T> Clone for Proxy<T> {
    fn clone(&self) -> Self {
        let target = OnceLock::new();
        if let Some(t) = self.target.get() {
            let _ = target.set(t.clone());
        }
        Proxy {
            factory: self.factory.clone(),
            target,
        }
    }
}

impl<T> Proxy<T> {
    /// A proxy that will resolve through `factory`.
    pub fn from_factory(factory: Factory<T>) -> Self {
        Proxy {
            factory: Some(factory),
            target: OnceLock::new(),
        }
    }

    /// A proxy with its factory and its target already there (what was just stored).
    pub(crate) fn resolved(factory: Factory<T>, value: T) -> Self {
        Proxy::resolved_shared(factory, Arc::new(value))
    }

    /// [`Proxy::resolved`] with a target shared with others (the store's cache).
    pub(crate) fn resolved_shared(factory: Factory<T>, value: Arc<T>) -> Self {
        Proxy {
            factory: Some(factory),
            target: OnceLock::from(value),
        }
    }

    /// A proxy for `reference` (for example one read from another process).
    pub fn from_reference(reference: Reference) -> Self {
        Proxy::from_factory(Factory::new(reference))
    }

    /// A proxy that already holds its value and has no reference (an inline value).
    pub fn from_value(value: T) -> Self {
        Proxy {
            factory: None,
            target: OnceLock::from(Arc::new(value)),
        }
    }

    /// Whether the target has been fetched (or was inline).
    pub fn is_resolved(&self) -> bool {
        self.target.get().is_some()
    }

    /// The factory, or `None` for an inline value.
    pub fn factory(&self) -> Option<&Factory<T>> {
        self.factory.as_ref()
    }

    /// The reference, or `None` for an inline value.
    pub fn reference(&self) -> Option<&Reference> {
        self.factory.as_ref().map(Factory::reference)
    }

    /// The key of the target, or `None` for an inline value.
    pub fn key(&self) -> Option<&Key> {
        self.reference().map(|r| &r.key)
    }

    /// Keep `obj` as the resolved target (unless one is there already) and borrow it.
    pub(crate) fn set_resolved(&self, obj: Arc<T>) -> &T {
        self.target.get_or_init(|| obj)
    }

    /// The target if already resolved; never fetches.
    pub fn get_if_resolved(&self) -> Option<&T> {
        self.target.get().map(|t| &**t)
    }
}

impl<T: DeserializeOwned + Send + Sync + 'static> Proxy<T> {
    /// Resolve (once) and borrow the target, from async code.
    ///
    /// # Errors
    /// See [`Store::get_by_reference`].
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled resolve leaves the proxy unresolved, to be resolved again later.
    pub async fn resolve(&self) -> Result<&T> {
        if let Some(t) = self.target.get() {
            return Ok(t);
        }
        let Some(f) = &self.factory else {
            return Err(inline_without_value());
        };
        let obj = f.resolve().await?;
        Ok(self.target.get_or_init(|| obj))
    }

    /// Resolve (once) and borrow the target, from synchronous code. This is what `Deref` calls;
    /// use it where a failure must be handled instead of panicking.
    ///
    /// # Errors
    /// As for [`Proxy::resolve`], plus [`crate::Error::Timeout`].
    pub fn try_get(&self) -> Result<&T> {
        if let Some(t) = self.target.get() {
            return Ok(t);
        }
        let Some(f) = &self.factory else {
            return Err(inline_without_value());
        };
        let obj = f.resolve_blocking()?;
        Ok(self.target.get_or_init(|| obj))
    }

    /// The target as a shared `Arc`, resolving it if needed.
    ///
    /// # Errors
    /// As for [`Proxy::try_get`].
    pub fn shared(&self) -> Result<Arc<T>> {
        self.try_get()?;
        self.target.get().cloned().ok_or_else(inline_without_value)
    }

    /// Consume the proxy and return the target (cloned if others share it).
    ///
    /// # Errors
    /// As for [`Proxy::try_get`].
    pub fn extract(self) -> Result<T>
    where
        T: Clone,
    {
        let shared = self.shared()?;
        drop(self);
        Ok(Arc::try_unwrap(shared).unwrap_or_else(|a| (*a).clone()))
    }
}

fn inline_without_value() -> crate::Error {
    crate::Error::InvalidReference {
        reason: "proxy has neither a reference nor a value".into(),
    }
}

impl<T: DeserializeOwned + Send + Sync + 'static> Deref for Proxy<T> {
    type Target = T;

    /// Resolve on first use.
    ///
    /// # Panics
    /// When the target cannot be fetched or decoded, as `Deref` cannot return an error. Use
    /// [`Proxy::try_get`] or [`Proxy::resolve`] to handle failures.
    #[allow(clippy::panic)]
    fn deref(&self) -> &T {
        match self.try_get() {
            Ok(t) => t,
            Err(e) => panic!(
                "proxystore: cannot resolve proxy ({}): {e}",
                self.key().map_or_else(String::new, |k| k.to_string())
            ),
        }
    }
}

impl<T> fmt::Debug for Proxy<T>
where
    T: fmt::Debug,
{
    /// Shows the reference, and the target only if already resolved: never fetches.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Proxy");
        if let Some(r) = self.reference() {
            d.field("store", &r.store).field("key", &r.key);
        }
        match self.target.get() {
            Some(t) => d.field("target", t),
            None => d.field("resolved", &false),
        };
        d.finish()
    }
}

impl<T> fmt::Display for Proxy<T>
where
    T: fmt::Display + DeserializeOwned + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<T> PartialEq for Proxy<T>
where
    T: PartialEq + DeserializeOwned + Send + Sync + 'static,
{
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T> PartialEq<T> for Proxy<T>
where
    T: PartialEq + DeserializeOwned + Send + Sync + 'static,
{
    fn eq(&self, other: &T) -> bool {
        **self == *other
    }
}

impl<T> Eq for Proxy<T> where T: Eq + DeserializeOwned + Send + Sync + 'static {}

impl<T> PartialOrd for Proxy<T>
where
    T: PartialOrd + DeserializeOwned + Send + Sync + 'static,
{
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        (**self).partial_cmp(&**other)
    }
}

impl<T> Ord for Proxy<T>
where
    T: Ord + DeserializeOwned + Send + Sync + 'static,
{
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

impl<T> std::hash::Hash for Proxy<T>
where
    T: std::hash::Hash + DeserializeOwned + Send + Sync + 'static,
{
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl<T, U> AsRef<U> for Proxy<T>
where
    T: AsRef<U> + DeserializeOwned + Send + Sync + 'static,
    U: ?Sized,
{
    fn as_ref(&self) -> &U {
        (**self).as_ref()
    }
}

impl<T> Borrow<T> for Proxy<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    fn borrow(&self) -> &T {
        self
    }
}

impl<'a, T> IntoIterator for &'a Proxy<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
    &'a T: IntoIterator,
{
    type Item = <&'a T as IntoIterator>::Item;
    type IntoIter = <&'a T as IntoIterator>::IntoIter;
    fn into_iter(self) -> Self::IntoIter {
        (**self).into_iter()
    }
}

impl<T: Serialize> Serialize for Proxy<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(PROXY_NEWTYPE_NAME, &Wire(self))
    }
}

/// The proxy as written inside its newtype wrapper.
struct Wire<'a, T>(&'a Proxy<T>);

impl<T: Serialize> Serialize for Wire<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let p = self.0;
        match (&p.factory, p.target.get()) {
            (Some(f), _) if s.is_human_readable() => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(REFERENCE_FIELD, f.reference())?;
                m.end()
            }
            (Some(f), _) => s.serialize_newtype_variant("Proxy", 0, "Reference", f.reference()),
            (None, Some(t)) if s.is_human_readable() => t.serialize(s),
            (None, Some(t)) => s.serialize_newtype_variant("Proxy", 1, "Inline", &**t),
            (None, None) => Err(serde::ser::Error::custom(inline_without_value())),
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Proxy<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_newtype_struct(PROXY_NEWTYPE_NAME, NewtypeVisitor(PhantomData))
    }
}

struct NewtypeVisitor<T>(PhantomData<fn() -> T>);

impl<'de, T: DeserializeOwned> Visitor<'de> for NewtypeVisitor<T> {
    type Value = Proxy<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a proxy reference or an inline value")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Proxy<T>, D::Error> {
        if !d.is_human_readable() {
            return d.deserialize_enum("Proxy", &["Reference", "Inline"], WireVisitor(PhantomData));
        }
        use serde_value::{Value, ValueDeserializer};
        let v = Value::deserialize(d)?;
        if let Value::Map(m) = &v
            && m.len() == 1
            && let Some(r) = m.get(&Value::String(REFERENCE_FIELD.to_owned()))
        {
            let r = <Reference as Deserialize>::deserialize(ValueDeserializer::<D::Error>::new(
                r.clone(),
            ))?;
            return Ok(Proxy::from_reference(r));
        }
        Ok(Proxy::from_value(T::deserialize(ValueDeserializer::<
            D::Error,
        >::new(v))?))
    }
}

#[derive(Deserialize)]
enum Variant {
    Reference,
    Inline,
}

struct WireVisitor<T>(PhantomData<fn() -> T>);

impl<'de, T: DeserializeOwned> Visitor<'de> for WireVisitor<T> {
    type Value = Proxy<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a proxy reference or an inline value")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> std::result::Result<Proxy<T>, A::Error> {
        let (variant, access) = data.variant::<Variant>()?;
        Ok(match variant {
            Variant::Reference => Proxy::from_reference(access.newtype_variant::<Reference>()?),
            Variant::Inline => Proxy::from_value(access.newtype_variant::<T>()?),
        })
    }
}
