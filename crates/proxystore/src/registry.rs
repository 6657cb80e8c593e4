//! The process-wide registry of named stores, and the stores rebuilt from references.
//!
//! A proxy that arrives in a process looks its store up here by name. A store registered by the
//! application ([`register_store`]) always wins. Otherwise the store is rebuilt from the connector
//! config in the reference, if the [`ResolvePolicy`] accepts it, and kept apart from the
//! registered ones: keyed by store name *and* connector config, so that later proxies of that
//! store share one connector, cache and metrics, while a reference can neither take a name from
//! the application nor make another reference of the same name use its config.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use crate::error::{Error, Result};
use crate::policy::{self, ResolvePolicy};
use crate::reference::Reference;
use crate::store::{Store, StoreConfig};

#[derive(Default)]
struct Registry {
    /// Stores registered by the application, by name.
    named: HashMap<String, Store>,
    /// Stores rebuilt from references, by name; each has its own connector config, and the
    /// policy that accepted it (a reference of the same config under that same policy needs
    /// no second check).
    rebuilt: HashMap<String, Vec<(Store, Arc<ResolvePolicy>)>>,
}

fn registry() -> &'static RwLock<Registry> {
    static REGISTRY: OnceLock<RwLock<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Register `store` under its name.
///
/// Registering the same store (or one with an identical config) again is a no-op. Stores
/// rebuilt from references never stand in the way: a registered store replaces them for every
/// later reference of its name.
///
/// ```
/// use proxystore::{Store, register_store, get_store, unregister_store};
/// use proxystore::connector::memory::MemoryConnector;
/// let store = Store::new("registry-doc", MemoryConnector::new("registry-doc"));
/// register_store(&store).unwrap();
/// assert!(get_store("registry-doc").unwrap().ptr_eq(&store));
/// unregister_store("registry-doc");
/// assert!(get_store("registry-doc").is_none());
/// ```
///
/// # Errors
/// [`Error::StoreExists`] when a store with that name but another config is registered.
pub fn register_store(store: &Store) -> Result<()> {
    let mut reg = registry().write().unwrap_or_else(|e| e.into_inner());
    match reg.named.get(store.name()) {
        Some(existing) if existing.ptr_eq(store) || existing.config() == store.config() => Ok(()),
        Some(_) => Err(Error::StoreExists {
            name: store.name().to_owned(),
        }),
        None => {
            reg.rebuilt.remove(store.name());
            reg.named.insert(store.name().to_owned(), store.clone());
            Ok(())
        }
    }
}

/// The store registered as `name` with [`register_store`]. Stores rebuilt from references are
/// not returned: reach one through its proxy ([`crate::Factory::store`]).
pub fn get_store(name: &str) -> Option<Store> {
    registry()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .named
        .get(name)
        .cloned()
}

/// Remove the store named `name` from the registry and return it.
pub fn unregister_store(name: &str) -> Option<Store> {
    registry()
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .named
        .remove(name)
}

/// The store `reference` resolves through, under `policy`: the store registered under its name,
/// whatever connector the reference names; otherwise, if `policy` accepts the reference, the
/// store rebuilt from its name and connector config (built once, then shared by every reference
/// with the same name and config).
///
/// Proxies call this with the process's policy ([`crate::resolve_policy`]); call it directly to
/// resolve with another one.
///
/// ```
/// use proxystore::{Error, Key, Reference, ResolvePolicy, store_for_reference};
/// use proxystore::connector::ConnectorConfig;
///
/// let hostile = Reference::new(
///     "app-store",
///     ConnectorConfig::new("file", serde_json::json!({"directory": "/etc"})),
///     Key::from("shadow"),
/// );
/// let e = store_for_reference(&hostile, &ResolvePolicy::default()).unwrap_err();
/// assert!(matches!(e, Error::Refused { .. }));
/// assert!(proxystore::get_store("app-store").is_none()); // nothing registered either
/// ```
///
/// # Errors
/// [`Error::Refused`] when the policy does not accept the reference (nothing is built, read or
/// contacted); [`Error::UnknownConnectorKind`] or the connector's [`Error::Config`] when it
/// cannot be built.
pub fn store_for_reference(reference: &Reference, policy: &ResolvePolicy) -> Result<Store> {
    store_under(reference, policy, None)
}

/// [`store_for_reference`]; `shared` is `policy` when it is the process's policy, so that a
/// store rebuilt and checked under it is found again without checking (and parsing) the
/// connector config a second time.
fn store_under(
    reference: &Reference,
    policy: &ResolvePolicy,
    shared: Option<&Arc<ResolvePolicy>>,
) -> Result<Store> {
    {
        let reg = registry().read().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = reg.named.get(&reference.store) {
            return Ok(s.clone());
        }
        if let Some(s) = shared.and_then(|p| rebuilt(&reg, reference, Some(p))) {
            return Ok(s);
        }
    }
    policy.check(reference)?;
    {
        // Rebuilt before, under another policy that accepted it too: now it is this one's.
        let mut reg = registry().write().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = reg.rebuilt.get_mut(&reference.store).and_then(|v| {
            v.iter_mut()
                .find(|(s, _)| s.config().connector == reference.connector)
        }) {
            if let Some(p) = shared {
                entry.1 = p.clone();
            }
            return Ok(entry.0.clone());
        }
    }
    let built = Store::from_config(StoreConfig::new(
        reference.store.clone(),
        reference.connector.clone(),
    ))?;
    let mut reg = registry().write().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = reg.named.get(&reference.store) {
        return Ok(s.clone());
    }
    if let Some(s) = rebuilt(&reg, reference, None) {
        return Ok(s);
    }
    // Remembered with the policy that accepted it: the process's (shared, so that later
    // references find it without a check), or a copy of the caller's.
    let checked = shared.map_or_else(|| Arc::new(policy.clone()), Arc::clone);
    reg.rebuilt
        .entry(reference.store.clone())
        .or_default()
        .push((built.clone(), checked));
    Ok(built)
}

/// The store rebuilt for `reference`'s name and config; with `checked_under`, only one that
/// this same policy accepted.
fn rebuilt(
    reg: &Registry,
    reference: &Reference,
    checked_under: Option<&Arc<ResolvePolicy>>,
) -> Option<Store> {
    reg.rebuilt
        .get(&reference.store)?
        .iter()
        .find(|(s, p)| {
            s.config().connector == reference.connector
                && checked_under.is_none_or(|c| Arc::ptr_eq(c, p))
        })
        .map(|(s, _)| s.clone())
}

/// The store a reference names, under the process's resolve policy.
pub(crate) fn store_for(reference: &Reference) -> Result<Store> {
    match policy::current() {
        Ok(policy) => store_under(reference, &policy, Some(&policy)),
        // A registered store needs no policy, and works while the environment's is invalid.
        Err(e) => get_store(&reference.store).ok_or(e),
    }
}
