//! Task results by proxy: the same [`ArgumentPolicy`](crate::ArgumentPolicy) that moves large
//! arguments off the broker applies to what a task returns, at the path `return` (a rule
//! `"train/return"` matches the result of task `train`; the whole result is one object).
//!
//! [`TaskCodec::proxy_result`] turns a result into a [`Proxy`]: a reference of a few hundred
//! bytes when the policy proxies it, the value inline otherwise. Serialized into an executor's
//! result storage, either form reads back as `Proxy<R>` (lazy: fetched on first use), and a
//! task that takes the result as an argument declares the field `Proxy<R>` (or
//! `proxystore::OwnedProxy<R>` to own it). [`TaskCodec::encode_result`] and
//! [`TaskCodec::decode_result`] do the same for executors that store documents (bytes).
//!
//! Who evicts a result's object is the codec's [`ResultCleanup`].

use std::time::Duration;

use proxystore::{Proxy, ProxyOptions};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{Decoded, Encoded, Side, TaskCodec};
use crate::encode::exceeds;
use crate::error::MiddlewareError;

/// The path of a task's result in the policy's globs (`task/return`).
pub const RESULT_PATH: &str = "return";

/// Who evicts the object of a proxied task result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResultCleanup {
    /// The first read evicts it (the reference is marked evict-on-resolve): one reader per
    /// result, as with apalis's result API. The default.
    #[default]
    OnRead,
    /// A [`proxystore::Lease`] of this length, held by the process that made the result (the
    /// worker), evicts it; readers may read it any number of times until then.
    Lease(Duration),
    /// The reader owns it: read it as `proxystore::OwnedProxy<R>`, whose drop (or a task it
    /// is moved to) evicts it. Nothing else does.
    Reader,
}

#[derive(Serialize)]
struct Returned<'a, R> {
    #[serde(rename = "return")]
    value: &'a R,
}

#[derive(Deserialize)]
struct ReturnedOwned<R> {
    #[serde(rename = "return")]
    value: R,
}

impl TaskCodec {
    /// Who evicts the objects of the results this codec proxies (default
    /// [`ResultCleanup::OnRead`]).
    #[must_use]
    pub fn with_result_cleanup(mut self, cleanup: ResultCleanup) -> Self {
        self.result_cleanup = cleanup;
        self
    }

    /// The cleanup rule of results.
    pub fn result_cleanup(&self) -> &ResultCleanup {
        &self.result_cleanup
    }

    /// The result of task `task` as a proxy (in the task function, before it returns): stored
    /// when the policy proxies `task/return` and
    /// it is above the threshold (with this codec's [`ResultCleanup`]), else inline. Serialize
    /// it into the executor's result storage; read it back as `Proxy<R>`.
    ///
    /// ```
    /// # proxystore::runtime::block_on(async {
    /// use proxystore::{Proxy, Store, connector::memory::MemoryConnector};
    /// use proxystore_middleware::{ArgumentPolicy, TaskCodec};
    ///
    /// let store = Store::new("results-doc", MemoryConnector::new("results-doc"));
    /// let codec = TaskCodec::new(ArgumentPolicy::from_parts("results-doc".into(), 1024))
    ///     .with_store(store.clone());
    /// let big = codec.proxy_result("map", vec![1u8; 100_000]).await?;
    /// let doc = serde_json::to_string(&big).unwrap(); // what goes to the result storage
    /// assert!(doc.len() < 600);
    /// let read: Proxy<Vec<u8>> = serde_json::from_str(&doc).unwrap();
    /// assert_eq!(read.len(), 100_000); // fetched on first use, then evicted (read once)
    /// let small = codec.proxy_result("map", 7u32).await?;
    /// assert_eq!(serde_json::to_string(&small).unwrap(), "7");
    /// # Ok::<_, Box<dyn std::error::Error + Send + Sync>>(()) })??;
    /// # Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    /// ```
    ///
    /// # Errors
    /// [`MiddlewareError::UnknownStore`], [`MiddlewareError::Store`] when the put fails.
    pub async fn proxy_result<R>(&self, task: &str, result: R) -> Result<Proxy<R>, MiddlewareError>
    where
        R: Serialize + Send + Sync + 'static,
    {
        self.metrics.result_encoded();
        let Some(decision) = self.policy.decide(task, RESULT_PATH) else {
            return Ok(Proxy::from_value(result));
        };
        if !exceeds(&result, decision.threshold) {
            return Ok(Proxy::from_value(result));
        }
        let store = self.stores.get(&decision.store)?;
        let options = ProxyOptions {
            evict_on_resolve: self.result_cleanup == ResultCleanup::OnRead,
            put: proxystore::PutOptions::named(format!("{task}/{RESULT_PATH}")),
        };
        let proxy = store.proxy_with(&result, options).await?;
        if let Some(r) = proxy.reference() {
            self.metrics.result_proxied(r.size);
        }
        if let (ResultCleanup::Lease(ttl), Some(r)) = (&self.result_cleanup, proxy.reference()) {
            self.lease(std::slice::from_ref(r), *ttl)?;
        }
        Ok(proxy)
    }

    /// Encode the result of task `task` as a document (as [`TaskCodec::encode`] does
    /// arguments), the whole result being one candidate at `task/return`.
    ///
    /// # Errors
    /// As for [`TaskCodec::encode`].
    pub fn encode_result<R: Serialize>(
        &self,
        task: &str,
        result: &R,
    ) -> Result<Encoded, MiddlewareError> {
        let side = Side::Result {
            evict_on_read: self.result_cleanup == ResultCleanup::OnRead,
        };
        let encoded = self.encode_with(task, &Returned { value: result }, side)?;
        if let ResultCleanup::Lease(ttl) = &self.result_cleanup {
            self.lease(&encoded.proxied, *ttl)?;
        }
        Ok(encoded)
    }

    /// Decode a result document: a proxied result is fetched (or left lazy when `R` is a
    /// `Proxy<T>` or `OwnedProxy<T>`).
    ///
    /// # Errors
    /// As for [`TaskCodec::decode`].
    pub fn decode_result<R: DeserializeOwned>(
        &self,
        bytes: &[u8],
    ) -> Result<Decoded<R>, MiddlewareError> {
        let d = self.decode::<ReturnedOwned<R>>(bytes)?;
        Ok(Decoded {
            args: d.args.value,
            proxied: d.proxied,
            fetched: d.fetched,
            lazy: d.lazy,
            info: d.info,
        })
    }
}
