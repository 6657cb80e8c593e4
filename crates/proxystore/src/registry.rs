//! The process-wide registry of named stores.
//!
//! A proxy that arrives in a process looks its store up here by name; when the store is missing,
//! the proxy builds it from the connector config in its reference and registers it, so later
//! proxies of that store share one connector, cache and metrics.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use crate::error::{Error, Result};
use crate::reference::Reference;
use crate::store::{Store, StoreConfig};

fn stores() -> &'static RwLock<HashMap<String, Store>> {
    static STORES: OnceLock<RwLock<HashMap<String, Store>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

/// Register `store` under its name.
///
/// Registering the same store (or one with an identical config) again is a no-op.
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
    let mut map = stores().write().unwrap_or_else(|e| e.into_inner());
    match map.get(store.name()) {
        Some(existing) if existing.ptr_eq(store) || existing.config() == store.config() => Ok(()),
        Some(_) => Err(Error::StoreExists {
            name: store.name().to_owned(),
        }),
        None => {
            map.insert(store.name().to_owned(), store.clone());
            Ok(())
        }
    }
}

/// The registered store named `name`.
pub fn get_store(name: &str) -> Option<Store> {
    stores()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .cloned()
}

/// Remove the store named `name` from the registry and return it.
pub fn unregister_store(name: &str) -> Option<Store> {
    stores()
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .remove(name)
}

/// The store a reference names: the registered one, or one built from the reference and
/// registered.
pub(crate) fn store_for(reference: &Reference) -> Result<Store> {
    if let Some(s) = get_store(&reference.store) {
        return Ok(s);
    }
    let built = Store::from_config(StoreConfig::new(
        reference.store.clone(),
        reference.connector.clone(),
    ))?;
    let mut map = stores().write().unwrap_or_else(|e| e.into_inner());
    Ok(map.entry(reference.store.clone()).or_insert(built).clone())
}
