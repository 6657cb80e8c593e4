//! Retries of temporary failures, with backoff.

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
use crate::error::Result;
use crate::key::Key;
use crate::retry::RetryConfig;

/// Tries a call again while it fails with a temporary error
/// ([`crate::Error::is_temporary`]), as [`RetryConfig`] says. Permanent errors, timeouts and
/// successes return at once. Reads, exists, evictions and `set` (a fixed key) are always
/// retried; puts only when [`RetryConfig::retry_puts`]; `new_key` and `close` never.
#[derive(Clone, Copy, Debug)]
pub struct RetryLayer {
    config: RetryConfig,
}

impl RetryLayer {
    /// Retries as `config` says.
    pub fn new(config: RetryConfig) -> Self {
        RetryLayer { config }
    }
}

impl Layer for RetryLayer {
    fn layer(&self, inner: Arc<dyn Connector>) -> Arc<dyn Connector> {
        Arc::new(Retry {
            inner,
            config: self.config,
        })
    }
}

/// A connector whose temporary failures are retried (made by [`RetryLayer`]).
pub struct Retry {
    inner: Arc<dyn Connector>,
    config: RetryConfig,
}

impl std::fmt::Debug for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Retry {
    async fn retrying<T, F, Fut>(&self, op: &str, attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.config.run(op, attempt).await
    }

    async fn put_retrying<T, F, Fut>(&self, op: &str, attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        if self.config.retry_puts {
            self.retrying(op, attempt).await
        } else {
            let mut attempt = attempt;
            attempt().await
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Connector for Retry {
    fn kind(&self) -> &str {
        self.inner.kind()
    }

    async fn put_opts(&self, data: Bytes, options: &PutOptions) -> Result<Key> {
        self.put_retrying("put", || self.inner.put_opts(data.clone(), options))
            .await
    }

    /// Each attempt hashes again.
    async fn put_hashing(
        &self,
        data: Bytes,
        options: &PutOptions,
        algorithm: DigestAlgorithm,
    ) -> Result<(Key, Option<Digest>)> {
        self.put_retrying("put", || {
            self.inner.put_hashing(data.clone(), options, algorithm)
        })
        .await
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        self.retrying("get", || self.inner.get(key)).await
    }

    async fn get_sized(&self, key: &Key, size: u64) -> Result<Option<Bytes>> {
        self.retrying("get", || self.inner.get_sized(key, size))
            .await
    }

    /// Each attempt starts the sink over.
    async fn get_into(&self, key: &Key, sink: &mut ObjectSink<'_>) -> Result<bool> {
        let mut retries = 0;
        loop {
            match self.inner.get_into(key, sink).await {
                Err(e) if self.config.again("get", &e, &mut retries).await => {}
                done => return done,
            }
        }
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        self.retrying("exists", || self.inner.exists(key)).await
    }

    async fn wait(&self, key: &Key, timeout: Duration) -> Result<bool> {
        self.retrying("wait", || self.inner.wait(key, timeout))
            .await
    }

    fn wait_mechanism(&self) -> &'static str {
        self.inner.wait_mechanism()
    }

    async fn evict(&self, key: &Key) -> Result<()> {
        self.retrying("evict", || self.inner.evict(key)).await
    }

    fn config(&self) -> ConnectorConfig {
        self.inner.config()
    }

    async fn put(&self, data: Bytes) -> Result<Key> {
        self.put_retrying("put", || self.inner.put(data.clone()))
            .await
    }

    async fn put_batch(&self, data: Vec<Bytes>, options: &PutOptions) -> Result<Vec<Key>> {
        if !self.config.retry_puts {
            return self.inner.put_batch(data, options).await;
        }
        self.retrying("put_batch", || self.inner.put_batch(data.clone(), options))
            .await
    }

    async fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>> {
        self.retrying("get_batch", || self.inner.get_batch(keys))
            .await
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Option<Bytes>> {
        self.retrying("get_range", || self.inner.get_range(key, range.clone()))
            .await
    }

    async fn evict_batch(&self, keys: &[Key]) -> Result<()> {
        self.retrying("evict_batch", || self.inner.evict_batch(keys))
            .await
    }

    async fn writer(
        &self,
        key: Option<&Key>,
        size: Option<u64>,
        options: &PutOptions,
    ) -> Result<Option<Box<dyn ObjectWriter>>> {
        self.inner.writer(key, size, options).await
    }

    async fn reader(&self, key: &Key, range: Option<Range<u64>>) -> Result<Option<ObjectReader>> {
        self.retrying("reader", || self.inner.reader(key, range.clone()))
            .await
    }

    async fn new_key(&self, options: &PutOptions) -> Result<Key> {
        self.inner.new_key(options).await
    }

    async fn set(&self, key: &Key, data: Bytes) -> Result<()> {
        self.retrying("set", || self.inner.set(key, data.clone()))
            .await
    }

    /// Retried like `set`: a retry after a lost reply may find the first write and answer
    /// `false` ("taken") for a write that was this call's own.
    async fn set_once(&self, key: &Key, data: Bytes) -> Result<bool> {
        self.retrying("set_once", || self.inner.set_once(key, data.clone()))
            .await
    }

    fn set_once_is_atomic(&self) -> bool {
        self.inner.set_once_is_atomic()
    }

    fn check_key(&self, key: &Key) -> Result<()> {
        self.inner.check_key(key)
    }

    async fn inventory(&self) -> Result<Option<Vec<StoredObject>>> {
        self.retrying("inventory", || self.inner.inventory()).await
    }

    /// An immediate call never fails temporarily: the inner connector's, as it is.
    fn immediate(&self) -> Option<&dyn ImmediateConnector> {
        self.inner.immediate()
    }

    /// What the inner connector asks for, less the retries this layer applies.
    fn call_config(&self) -> CallConfig {
        CallConfig {
            retry: None,
            ..self.inner.call_config()
        }
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::error::Error;

    /// Fails every get with the error `fail` makes until `failures` calls have failed.
    #[derive(Debug)]
    struct Flaky {
        calls: AtomicU32,
        failures: u32,
        temporary: bool,
    }

    #[async_trait]
    impl Connector for Flaky {
        fn kind(&self) -> &str {
            "flaky"
        }
        async fn put_opts(&self, _: Bytes, _: &PutOptions) -> Result<Key> {
            self.get(&Key::from("k")).await.map(|_| Key::from("k"))
        }
        async fn get(&self, _: &Key) -> Result<Option<Bytes>> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
                Err(Error::backend_message("flaky", "broken", self.temporary))
            } else {
                Ok(Some(Bytes::from_static(b"ok")))
            }
        }
        async fn exists(&self, _: &Key) -> Result<bool> {
            Ok(true)
        }
        async fn evict(&self, _: &Key) -> Result<()> {
            Ok(())
        }
        fn config(&self) -> ConnectorConfig {
            ConnectorConfig::new("flaky", serde_json::Value::Null)
        }
    }

    fn flaky(failures: u32, temporary: bool) -> Arc<Flaky> {
        Arc::new(Flaky {
            calls: AtomicU32::new(0),
            failures,
            temporary,
        })
    }

    fn fast(retries: u32) -> RetryLayer {
        RetryLayer::new(
            RetryConfig::default()
                .max_retries(retries)
                .initial_backoff(Duration::from_millis(1)),
        )
    }

    #[tokio::test]
    async fn a_temporary_failure_is_retried_until_it_passes() {
        let inner = flaky(2, true);
        let c = fast(3).layer(inner.clone());
        assert_eq!(c.get(&Key::from("k")).await.unwrap().unwrap(), "ok");
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_permanent_failure_is_tried_once() {
        let inner = flaky(1, false);
        let c = fast(3).layer(inner.clone());
        let e = c.get(&Key::from("k")).await.unwrap_err();
        assert!(!e.is_retryable(), "{e:?}");
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retries_stop_at_the_budget_with_the_last_error() {
        let inner = flaky(10, true);
        let c = fast(2).layer(inner.clone());
        let e = c.get(&Key::from("k")).await.unwrap_err();
        assert!(e.is_temporary(), "{e:?}");
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn puts_are_retried_only_when_asked() {
        let inner = flaky(1, true);
        let c = fast(3).layer(inner.clone());
        c.put(Bytes::new()).await.unwrap_err();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);

        let inner = flaky(1, true);
        let c = RetryLayer::new(
            RetryConfig::default()
                .initial_backoff(Duration::from_millis(1))
                .retry_puts(true),
        )
        .layer(inner.clone());
        c.put(Bytes::new()).await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
    }
}
