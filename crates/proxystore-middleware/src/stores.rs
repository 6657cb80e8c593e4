//! Which `Store` a policy's store name means.

use std::collections::HashMap;

use proxystore::Store;

use crate::error::{MiddlewareError, Result};

/// Stores given to a codec explicitly, with the process registry as the fallback.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stores {
    explicit: HashMap<String, Store>,
}

impl Stores {
    pub(crate) fn add(&mut self, store: Store) {
        self.explicit.insert(store.name().to_owned(), store);
    }

    pub(crate) fn get(&self, name: &str) -> Result<Store> {
        if let Some(s) = self.explicit.get(name) {
            return Ok(s.clone());
        }
        proxystore::get_store(name).ok_or_else(|| MiddlewareError::UnknownStore(name.to_owned()))
    }
}
