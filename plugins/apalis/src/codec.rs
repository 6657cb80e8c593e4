//! The storage codec: large arguments go to a ProxyStore store, a small document to the broker.

use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis_core::backend::codec::Codec;
use bytes::Bytes;
use proxystore::Reference;
use proxystore_middleware::{CodecStats, MiddlewareError, TaskCodec};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An apalis [`Codec`] for any storage whose wire format is bytes (apalis-redis and friends):
/// it runs [`TaskCodec`], so every task argument above the policy is put into its store and
/// only a reference travels through the broker.
///
/// Install it the way apalis installs any codec, with `BackendExt::with_codec`:
///
/// ```no_run
/// # async fn doc() -> Result<(), Box<dyn std::error::Error>> {
/// use apalis_core::backend::{TaskSink, ext::BackendExt};
/// use apalis_redis::RedisStorage;
/// use proxystore::{Store, connector::file::FileConnector};
/// use proxystore_apalis::ProxyCodec;
/// use proxystore_middleware::{ArgumentPolicy, TaskCodec};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Train { weights: Vec<f32>, epochs: u32 }
///
/// let store = Store::new("shared", FileConnector::new("/mnt/shared/objects")?);
/// proxystore::register_store(&store)?;
/// let codec = ProxyCodec::new(TaskCodec::new(ArgumentPolicy::with_store("shared")));
///
/// let conn = proxystore_apalis::connect("redis://127.0.0.1/").await?;
/// let mut storage = RedisStorage::<Train>::new(conn).with_codec(codec);
/// storage.push(Train { weights: vec![0.5; 10_000_000], epochs: 3 }).await?; // ~500 bytes in Redis
/// # Ok(()) }
/// ```
///
/// Decoding as [`Codec<T>`] resolves every proxied plain field while apalis polls the storage,
/// where a store failure is a poll error that stops the worker. Workers should therefore be
/// built with [`crate::resolve`], which decodes through `Codec<Unresolved<T>>` (infallible) and
/// resolves inside the task, where a failure is a task failure that apalis retries.
#[derive(Clone)]
pub struct ProxyCodec {
    codec: TaskCodec,
    task: Option<Arc<str>>,
    lease: Option<Duration>,
    recorded: Option<Arc<Mutex<Vec<Reference>>>>,
}

impl fmt::Debug for ProxyCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyCodec")
            .field("codec", &self.codec)
            .field("task", &self.task)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl ProxyCodec {
    /// A codec running `codec` (its policy, inner format and stores).
    pub fn new(codec: TaskCodec) -> Self {
        ProxyCodec {
            codec,
            task: None,
            lease: None,
            recorded: None,
        }
    }

    /// The task name the policy's globs see (`name/field/...`). By default it is the argument
    /// type's name without its module path, `Train` for `my_app::jobs::Train`.
    #[must_use]
    pub fn named(mut self, task: impl Into<String>) -> Self {
        self.task = Some(Arc::from(task.into()));
        self
    }

    /// Also give each task's objects to a [`Lease`](proxystore::Lease) that evicts them `ttl` after the task was
    /// encoded, unless the worker evicted them before (it normally does, when the task
    /// finishes). A backstop for tasks whose workers all crash: it lives in this (the
    /// producer's) process, so choose a `ttl` longer than a task may wait in the queue.
    #[must_use]
    pub fn with_lease(mut self, ttl: Duration) -> Self {
        self.lease = Some(ttl);
        self
    }

    /// Keep a list of every reference this codec (and its clones) made, for tools that audit
    /// the store afterwards (see [`ProxyCodec::recorded`]). Off by default: the list grows with
    /// every task.
    #[must_use]
    pub fn recording(mut self) -> Self {
        self.recorded = Some(Arc::default());
        self
    }

    /// The references made so far, if [`ProxyCodec::recording`] is on.
    pub fn recorded(&self) -> Vec<Reference> {
        self.recorded
            .as_ref()
            .map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Install `policy` as this process's resolve policy: which references a worker rebuilds
    /// a store from (see [`TaskCodec::with_resolve_policy`]; process-wide, the last installed
    /// wins). A task whose arguments it refuses fails for good, without retries.
    ///
    /// ```
    /// use proxystore::ResolvePolicy;
    /// use proxystore_apalis::ProxyCodec;
    /// use proxystore_middleware::{ArgumentPolicy, TaskCodec};
    ///
    /// let codec = ProxyCodec::new(TaskCodec::new(ArgumentPolicy::with_store("shared")))
    ///     .with_resolve_policy(ResolvePolicy::default().allow_directory("/mnt/shared/objects"));
    /// # let _ = codec;
    /// ```
    #[must_use]
    pub fn with_resolve_policy(mut self, policy: proxystore::ResolvePolicy) -> Self {
        self.codec = self.codec.with_resolve_policy(policy);
        self
    }

    /// The task codec (policy, stores, inner format).
    pub fn task_codec(&self) -> &TaskCodec {
        &self.codec
    }

    /// Counters shared by this codec's clones: tasks encoded and decoded, arguments proxied,
    /// bytes through the broker and through the store, references fetched, left lazy and
    /// evicted.
    pub fn stats(&self) -> CodecStats {
        self.codec.stats()
    }

    fn task_name<T>(&self) -> &str {
        match &self.task {
            Some(t) => t,
            None => short_type_name::<T>(),
        }
    }

    fn encode_doc<T: Serialize>(&self, val: &T) -> Result<Vec<u8>, MiddlewareError> {
        let enc = self.codec.encode(self.task_name::<T>(), val)?;
        if !enc.proxied.is_empty() {
            if let Some(ttl) = self.lease
                && let Err(e) = self.codec.lease(&enc.proxied, ttl)
            {
                tracing::warn!(error = %e, "no lease for a proxied argument");
            }
            if let Some(rec) = &self.recorded {
                rec.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(enc.proxied.iter().cloned());
            }
        }
        Ok(enc.bytes)
    }
}

/// `Train` for `my_app::jobs::Train`, `Vec` for `alloc::vec::Vec<u8>`.
fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

impl<T: Serialize + DeserializeOwned> Codec<T> for ProxyCodec {
    type Error = MiddlewareError;
    type Compact = Vec<u8>;

    fn encode(&self, val: &T) -> Result<Vec<u8>, MiddlewareError> {
        self.encode_doc(val)
    }

    fn decode(&self, val: &Vec<u8>) -> Result<T, MiddlewareError> {
        self.codec.decode::<T>(val).map(|d| d.args)
    }
}

/// A task document whose arguments are not resolved yet: what a worker built with
/// [`crate::resolve`] receives from the storage. Resolution happens inside the task, so that a
/// store failure is a task failure (retried by apalis), never a poll error that stops the
/// worker.
pub struct Unresolved<T> {
    bytes: Bytes,
    _args: PhantomData<fn() -> T>,
}

impl<T> Unresolved<T> {
    /// A document made by [`ProxyCodec`] (or [`TaskCodec::encode`]).
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Unresolved {
            bytes: bytes.into(),
            _args: PhantomData,
        }
    }

    /// The document as it came from the broker.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

impl<T> Clone for Unresolved<T> {
    fn clone(&self) -> Self {
        Unresolved::new(self.bytes.clone())
    }
}

impl<T> fmt::Debug for Unresolved<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unresolved")
            .field("args", &std::any::type_name::<T>())
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl<T> Codec<Unresolved<T>> for ProxyCodec {
    type Error = Infallible;
    type Compact = Vec<u8>;

    fn encode(&self, val: &Unresolved<T>) -> Result<Vec<u8>, Infallible> {
        Ok(val.bytes.to_vec())
    }

    fn decode(&self, val: &Vec<u8>) -> Result<Unresolved<T>, Infallible> {
        Ok(Unresolved::new(Bytes::copy_from_slice(val)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(short_type_name::<Vec<u8>>(), "Vec");
        assert_eq!(short_type_name::<u32>(), "u32");
        assert_eq!(short_type_name::<ProxyCodec>(), "ProxyCodec");
    }
}
