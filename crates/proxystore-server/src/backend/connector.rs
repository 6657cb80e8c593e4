//! Any [`Connector`] behind the service, read and written in pieces through the connector's
//! streaming methods (a connector without them buffers one object at a time).

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use proxystore::connector::PutOptions;
use proxystore::{Connector, Key, Result};

use super::{Backend, ObjectMeta, ObjectReader, ObjectWriter};

/// Fronts a connector.
pub(crate) struct ConnectorBackend {
    connector: Arc<dyn Connector>,
    caller_keys: bool,
}

impl ConnectorBackend {
    /// Wrap `connector`, probing once whether it supports deferred puts (caller-chosen keys).
    pub(crate) async fn new(connector: Arc<dyn Connector>) -> Self {
        let caller_keys = connector.new_key(&PutOptions::default()).await.is_ok();
        ConnectorBackend {
            connector,
            caller_keys,
        }
    }
}

#[async_trait]
impl Backend for ConnectorBackend {
    fn kind(&self) -> String {
        self.connector.kind().to_owned()
    }

    fn caller_keys(&self) -> bool {
        self.caller_keys
    }

    async fn writer(
        &self,
        key: Option<Key>,
        size: Option<u64>,
        options: PutOptions,
    ) -> Result<Box<dyn ObjectWriter>> {
        // The connector's own streaming writer, or one that buffers the object whole.
        let inner = self.connector.put_writer(key, size, &options).await?;
        Ok(Box::new(ConnectorWriter { inner }))
    }

    async fn read(&self, key: &Key, range: Option<Range<u64>>) -> Result<Option<ObjectReader>> {
        self.connector.reader(key, range).await
    }

    async fn exists(&self, key: &Key) -> Result<Option<Option<u64>>> {
        Ok(self.connector.exists(key).await?.then_some(None))
    }

    async fn evict(&self, key: &Key) -> Result<bool> {
        let existed = self.connector.exists(key).await?;
        self.connector.evict(key).await?;
        Ok(existed)
    }
}

/// A connector's writer behind the service's writer interface.
struct ConnectorWriter {
    inner: Box<dyn proxystore::connector::stream::ObjectWriter>,
}

#[async_trait]
impl ObjectWriter for ConnectorWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.inner.write(chunk).await
    }

    async fn commit(self: Box<Self>, _meta: &ObjectMeta) -> Result<Key> {
        self.inner.finish().await
    }
}
