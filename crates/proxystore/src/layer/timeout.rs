//! A time bound on each call.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::Layer;
use crate::connector::stream::{ObjectReader, ObjectWriter, StoredObject};
use crate::connector::{
    CallConfig, Connector, ConnectorConfig, ImmediateConnector, ObjectSink, PutOptions,
};
use crate::digest::{Digest, DigestAlgorithm};
use crate::error::{Error, Result};
use crate::key::Key;

/// Bounds every call of a connector: past the duration the call is dropped and ends with
/// [`Error::Timeout`] naming the connector kind and the operation.
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer {
    after: Duration,
}

impl TimeoutLayer {
    /// A bound of `after` per call.
    pub fn new(after: Duration) -> Self {
        TimeoutLayer { after }
    }
}

impl Layer for TimeoutLayer {
    fn layer(&self, inner: Arc<dyn Connector>) -> Arc<dyn Connector> {
        Arc::new(Timeout {
            inner,
            after: self.after,
        })
    }
}

/// A connector whose calls are bounded in time (made by [`TimeoutLayer`]).
pub struct Timeout {
    inner: Arc<dyn Connector>,
    after: Duration,
}

impl std::fmt::Debug for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Timeout {
    async fn bound<T>(&self, op: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(self.after, fut)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    operation: format!("{} {op}", self.inner.kind()),
                    after: self.after,
                })
            })
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Connector for Timeout {
    fn kind(&self) -> &str {
        self.inner.kind()
    }

    async fn put_opts(&self, data: Bytes, options: &PutOptions) -> Result<Key> {
        self.bound("put", self.inner.put_opts(data, options)).await
    }

    async fn put_hashing(
        &self,
        data: Bytes,
        options: &PutOptions,
        algorithm: DigestAlgorithm,
    ) -> Result<(Key, Option<Digest>)> {
        self.bound("put", self.inner.put_hashing(data, options, algorithm))
            .await
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        self.bound("get", self.inner.get(key)).await
    }

    async fn get_sized(&self, key: &Key, size: u64) -> Result<Option<Bytes>> {
        self.bound("get", self.inner.get_sized(key, size)).await
    }

    async fn get_into(&self, key: &Key, sink: &mut ObjectSink<'_>) -> Result<bool> {
        self.bound("get", self.inner.get_into(key, sink)).await
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        self.bound("exists", self.inner.exists(key)).await
    }

    /// Bounded by the caller's `timeout` plus this layer's bound on one call, not by the
    /// bound alone: waiting is what the call is for.
    async fn wait(&self, key: &Key, timeout: Duration) -> Result<bool> {
        let after = timeout.saturating_add(self.after);
        tokio::time::timeout(after, self.inner.wait(key, timeout))
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    operation: format!("{} wait", self.inner.kind()),
                    after,
                })
            })
    }

    fn wait_mechanism(&self) -> &'static str {
        self.inner.wait_mechanism()
    }

    async fn evict(&self, key: &Key) -> Result<()> {
        self.bound("evict", self.inner.evict(key)).await
    }

    fn config(&self) -> ConnectorConfig {
        self.inner.config()
    }

    async fn put(&self, data: Bytes) -> Result<Key> {
        self.bound("put", self.inner.put(data)).await
    }

    async fn put_batch(&self, data: Vec<Bytes>, options: &PutOptions) -> Result<Vec<Key>> {
        self.bound("put_batch", self.inner.put_batch(data, options))
            .await
    }

    async fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>> {
        self.bound("get_batch", self.inner.get_batch(keys)).await
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Option<Bytes>> {
        self.bound("get_range", self.inner.get_range(key, range))
            .await
    }

    async fn evict_batch(&self, keys: &[Key]) -> Result<()> {
        self.bound("evict_batch", self.inner.evict_batch(keys))
            .await
    }

    async fn writer(
        &self,
        key: Option<&Key>,
        size: Option<u64>,
        options: &PutOptions,
    ) -> Result<Option<Box<dyn ObjectWriter>>> {
        self.bound("writer", self.inner.writer(key, size, options))
            .await
    }

    async fn reader(&self, key: &Key, range: Option<Range<u64>>) -> Result<Option<ObjectReader>> {
        self.bound("reader", self.inner.reader(key, range)).await
    }

    async fn new_key(&self, options: &PutOptions) -> Result<Key> {
        self.bound("new_key", self.inner.new_key(options)).await
    }

    async fn set(&self, key: &Key, data: Bytes) -> Result<()> {
        self.bound("set", self.inner.set(key, data)).await
    }

    async fn set_once(&self, key: &Key, data: Bytes) -> Result<bool> {
        self.bound("set_once", self.inner.set_once(key, data)).await
    }

    fn set_once_is_atomic(&self) -> bool {
        self.inner.set_once_is_atomic()
    }

    fn check_key(&self, key: &Key) -> Result<()> {
        self.inner.check_key(key)
    }

    async fn inventory(&self) -> Result<Option<Vec<StoredObject>>> {
        self.bound("inventory", self.inner.inventory()).await
    }

    /// An immediate call cannot outlast a bound: the inner connector's, as it is.
    fn immediate(&self) -> Option<&dyn ImmediateConnector> {
        self.inner.immediate()
    }

    /// What the inner connector asks for, less the time bound this layer applies.
    fn call_config(&self) -> CallConfig {
        CallConfig {
            timeout: None,
            ..self.inner.call_config()
        }
    }

    async fn close(&self) -> Result<()> {
        self.bound("close", self.inner.close()).await
    }
}
