//! How a store makes proxies: put an object, get back a lazy [`Proxy`] to it.
//!
//! These methods of [`Store`] live here, above both the store and the proxy, so that the store
//! knows nothing of proxies (a proxy's factory holds a store, not the other way round).

use serde::Serialize;

use super::{Factory, Proxy};
use crate::connector::PutOptions;
use crate::error::Result;
use crate::key::Key;
use crate::reference::Reference;
use crate::store::{Store, Stored, codec_for};
use crate::trace;

/// Options of a proxy made by [`Store::proxy_with`].
#[derive(Clone, Default)]
pub struct ProxyOptions {
    /// Evict the object once the proxy resolves (a one-shot hand-off).
    pub evict_on_resolve: bool,
    /// Put hints (name, tags) for routing connectors.
    pub put: PutOptions,
}

impl std::fmt::Debug for ProxyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyOptions")
            .field("evict_on_resolve", &self.evict_on_resolve)
            .field("put", &self.put)
            .finish()
    }
}

impl Store {
    fn proxy_of<T>(&self, reference: Reference) -> Proxy<T> {
        Proxy::from_factory(Factory::with_store(reference, self.clone()))
    }

    /// Put `obj` and return a lazy proxy to it.
    ///
    /// # Errors
    /// As for [`Store::put`].
    pub async fn proxy<T: Serialize + 'static>(&self, obj: &T) -> Result<Proxy<T>> {
        self.proxy_with(obj, ProxyOptions::default()).await
    }

    /// [`Store::proxy`] with options (evict on resolve, routing hints).
    ///
    /// # Errors
    /// As for [`Store::put`].
    pub async fn proxy_with<T: Serialize + 'static>(
        &self,
        obj: &T,
        options: ProxyOptions,
    ) -> Result<Proxy<T>> {
        let stored = self.put_object(obj, &options.put).await?;
        let mut r = self.reference::<T>(stored, options.evict_on_resolve);
        if let Some(name) = &options.put.name {
            r.set_origin(name);
        }
        Ok(self.proxy_of(r))
    }

    /// Proxies to many objects, stored with one batch put.
    ///
    /// # Errors
    /// As for [`Store::put`].
    pub async fn proxy_batch<T: Serialize + 'static>(&self, objs: &[T]) -> Result<Vec<Proxy<T>>> {
        Ok(self
            .put_objects(objs, &PutOptions::default())
            .await?
            .into_iter()
            .map(|s| self.proxy_of(self.reference::<T>(s, false)))
            .collect())
    }

    /// A proxy to an object already in the store under `key` (its size and digest unknown, so
    /// not checked). The store's codec is assumed, or raw for `Bytes` and `Vec<u8>`.
    pub fn proxy_from_key<T: 'static>(&self, key: Key) -> Proxy<T> {
        let codec = codec_for::<T>(self.config().codec);
        let stored = Stored {
            key,
            size: 0,
            digest: None,
            codec,
            trace: trace::current(),
        };
        self.proxy_of(self.reference::<T>(stored, false))
    }
}
