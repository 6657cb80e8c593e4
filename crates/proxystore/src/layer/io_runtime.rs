//! The hop onto the library's I/O runtime.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::Layer;
use crate::connector::stream::{ObjectReader, ObjectWriter, StoredObject};
use crate::connector::{
    CallConfig, CallRuntime, Connector, ConnectorConfig, ImmediateConnector, ObjectSink,
    PutOptions, get_into_whole,
};
use crate::digest::{Digest, DigestAlgorithm};
use crate::error::Result;
use crate::key::Key;
use crate::runtime::{on_io_runtime, run_on_io, run_on_tokio_or_io};

/// Runs every call of a connector on the library's I/O runtime
/// ([`crate::runtime::io_handle`]), where networked connectors keep their connections, so that
/// their I/O never depends on a runtime the caller may be blocking or may drop. A call that
/// already runs there (a synchronous resolve, another layer) does not hop again.
///
/// [`IoRuntimeLayer::outside_tokio`] hops only the calls made outside any tokio runtime, for a
/// connector that keeps a client per runtime ([`CallRuntime::CallerTokio`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct IoRuntimeLayer {
    outside_tokio_only: bool,
}

impl IoRuntimeLayer {
    /// Every call on the I/O runtime (as [`IoRuntimeLayer::default`]).
    pub fn always() -> Self {
        IoRuntimeLayer::default()
    }

    /// Only the calls made outside any tokio runtime go to the I/O runtime; the others run
    /// where they are.
    pub fn outside_tokio() -> Self {
        IoRuntimeLayer {
            outside_tokio_only: true,
        }
    }
}

impl Layer for IoRuntimeLayer {
    fn layer(&self, inner: Arc<dyn Connector>) -> Arc<dyn Connector> {
        Arc::new(IoRuntime {
            inner,
            outside_tokio_only: self.outside_tokio_only,
        })
    }
}

/// A connector whose calls run on the I/O runtime (made by [`IoRuntimeLayer`]).
pub struct IoRuntime {
    inner: Arc<dyn Connector>,
    outside_tokio_only: bool,
}

impl IoRuntime {
    /// Whether a call made here runs in place.
    fn in_place(&self) -> bool {
        if self.outside_tokio_only {
            tokio::runtime::Handle::try_current().is_ok()
        } else {
            on_io_runtime()
        }
    }

    /// Run `fut` in place or on the I/O runtime (see [`IoRuntime::in_place`]).
    async fn hop<T, F>(&self, fut: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        if self.outside_tokio_only {
            run_on_tokio_or_io(fut).await
        } else {
            run_on_io(fut).await
        }
    }
}

impl std::fmt::Debug for IoRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Connector for IoRuntime {
    fn kind(&self) -> &str {
        self.inner.kind()
    }

    async fn put_opts(&self, data: Bytes, options: &PutOptions) -> Result<Key> {
        let (c, options) = (self.inner.clone(), options.clone());
        self.hop(async move { c.put_opts(data, &options).await })
            .await
    }

    async fn put_hashing(
        &self,
        data: Bytes,
        options: &PutOptions,
        algorithm: DigestAlgorithm,
    ) -> Result<(Key, Option<Digest>)> {
        let (c, options) = (self.inner.clone(), options.clone());
        self.hop(async move { c.put_hashing(data, &options, algorithm).await })
            .await
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        let (c, key) = (self.inner.clone(), key.clone());
        self.hop(async move { c.get(&key).await }).await
    }

    async fn get_sized(&self, key: &Key, size: u64) -> Result<Option<Bytes>> {
        let (c, key) = (self.inner.clone(), key.clone());
        self.hop(async move { c.get_sized(&key, size).await }).await
    }

    /// In place on the I/O runtime. From elsewhere the sink cannot go along (it borrows the
    /// caller's memory), so the object is fetched there whole (this layer's `get` and
    /// `get_sized` hop) and handed over, as the default `get_into` does.
    async fn get_into(&self, key: &Key, sink: &mut ObjectSink<'_>) -> Result<bool> {
        if self.in_place() {
            return self.inner.get_into(key, sink).await;
        }
        get_into_whole(self, key, sink).await
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        let (c, key) = (self.inner.clone(), key.clone());
        self.hop(async move { c.exists(&key).await }).await
    }

    async fn wait(&self, key: &Key, timeout: Duration) -> Result<bool> {
        let (c, key) = (self.inner.clone(), key.clone());
        self.hop(async move { c.wait(&key, timeout).await }).await
    }

    fn wait_mechanism(&self) -> &'static str {
        self.inner.wait_mechanism()
    }

    async fn evict(&self, key: &Key) -> Result<()> {
        let (c, key) = (self.inner.clone(), key.clone());
        self.hop(async move { c.evict(&key).await }).await
    }

    fn config(&self) -> ConnectorConfig {
        self.inner.config()
    }

    async fn put(&self, data: Bytes) -> Result<Key> {
        let c = self.inner.clone();
        self.hop(async move { c.put(data).await }).await
    }

    async fn put_batch(&self, data: Vec<Bytes>, options: &PutOptions) -> Result<Vec<Key>> {
        let (c, options) = (self.inner.clone(), options.clone());
        self.hop(async move { c.put_batch(data, &options).await })
            .await
    }

    async fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>> {
        let (c, keys) = (self.inner.clone(), keys.to_vec());
        self.hop(async move { c.get_batch(&keys).await }).await
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Option<Bytes>> {
        let (c, key) = (self.inner.clone(), key.clone());
        self.hop(async move { c.get_range(&key, range).await })
            .await
    }

    async fn evict_batch(&self, keys: &[Key]) -> Result<()> {
        let (c, keys) = (self.inner.clone(), keys.to_vec());
        self.hop(async move { c.evict_batch(&keys).await }).await
    }

    async fn writer(
        &self,
        key: Option<&Key>,
        size: Option<u64>,
        options: &PutOptions,
    ) -> Result<Option<Box<dyn ObjectWriter>>> {
        let (c, key, options) = (self.inner.clone(), key.cloned(), options.clone());
        self.hop(async move { c.writer(key.as_ref(), size, &options).await })
            .await
    }

    async fn reader(&self, key: &Key, range: Option<Range<u64>>) -> Result<Option<ObjectReader>> {
        let (c, key) = (self.inner.clone(), key.clone());
        self.hop(async move { c.reader(&key, range).await }).await
    }

    async fn new_key(&self, options: &PutOptions) -> Result<Key> {
        let (c, options) = (self.inner.clone(), options.clone());
        self.hop(async move { c.new_key(&options).await }).await
    }

    async fn set(&self, key: &Key, data: Bytes) -> Result<()> {
        let (c, key) = (self.inner.clone(), key.clone());
        self.hop(async move { c.set(&key, data).await }).await
    }

    async fn set_once(&self, key: &Key, data: Bytes) -> Result<bool> {
        let (c, key) = (self.inner.clone(), key.clone());
        self.hop(async move { c.set_once(&key, data).await }).await
    }

    fn set_once_is_atomic(&self) -> bool {
        self.inner.set_once_is_atomic()
    }

    fn check_key(&self, key: &Key) -> Result<()> {
        self.inner.check_key(key)
    }

    async fn inventory(&self) -> Result<Option<Vec<StoredObject>>> {
        let c = self.inner.clone();
        self.hop(async move { c.inventory().await }).await
    }

    /// An immediate call needs no runtime: the inner connector's, as it is.
    fn immediate(&self) -> Option<&dyn ImmediateConnector> {
        self.inner.immediate()
    }

    /// What the inner connector asks for, less the hop this layer makes.
    fn call_config(&self) -> CallConfig {
        CallConfig {
            runtime: CallRuntime::Caller,
            ..self.inner.call_config()
        }
    }

    async fn close(&self) -> Result<()> {
        let c = self.inner.clone();
        self.hop(async move { c.close().await }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::memory::MemoryConnector;
    use crate::runtime::on_io_runtime;

    #[derive(Debug)]
    struct WhereAmI(MemoryConnector);

    #[async_trait]
    impl Connector for WhereAmI {
        fn kind(&self) -> &str {
            "where"
        }
        async fn put_opts(&self, data: Bytes, o: &PutOptions) -> Result<Key> {
            self.0.put_opts(data, o).await
        }
        async fn get(&self, _: &Key) -> Result<Option<Bytes>> {
            Ok(Some(Bytes::from(on_io_runtime().to_string())))
        }
        async fn exists(&self, _: &Key) -> Result<bool> {
            Ok(on_io_runtime())
        }
        async fn evict(&self, _: &Key) -> Result<()> {
            Ok(())
        }
        fn config(&self) -> ConnectorConfig {
            self.0.config()
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn calls_run_on_the_io_runtime_and_hop_once() {
        let c =
            IoRuntimeLayer::always().layer(Arc::new(WhereAmI(MemoryConnector::new("io-layer"))));
        assert!(!on_io_runtime());
        assert!(c.exists(&Key::from("k")).await.unwrap());
        // Already there (as in a synchronous resolve): runs in place, still on the runtime.
        let inner = c.clone();
        let there = crate::runtime::block_on(async move { inner.get(&Key::from("k")).await })
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(there, "true");
    }
}
