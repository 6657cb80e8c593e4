//! Any [`Connector`] behind the service.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use proxystore::connector::PutOptions;
use proxystore::{Connector, Key, Result};

use super::{Backend, ChunkBuffer, ObjectMeta, ObjectReader, ObjectWriter};

/// Fronts a connector; objects pass through the server whole.
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
        Ok(Box::new(ConnectorWriter {
            connector: self.connector.clone(),
            key,
            options,
            buf: ChunkBuffer::new(size),
        }))
    }

    async fn read(&self, key: &Key, range: Option<Range<u64>>) -> Result<Option<ObjectReader>> {
        match range {
            None => Ok(self
                .connector
                .get(key)
                .await?
                .map(|b| ObjectReader::from_bytes(b, None))),
            // The object's full size is not known from a ranged read: report the range end.
            Some(r) => Ok(self.connector.get_range(key, r.clone()).await?.map(|b| {
                let len = b.len() as u64;
                let start = r.start.min(r.end);
                ObjectReader {
                    object_size: start + len,
                    offset: start,
                    len,
                    body: super::Body::Bytes(b),
                }
            })),
        }
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

/// Buffers one object (see [`ChunkBuffer`]) and hands it to the connector on commit.
struct ConnectorWriter {
    connector: Arc<dyn Connector>,
    key: Option<Key>,
    options: PutOptions,
    buf: ChunkBuffer,
}

#[async_trait]
impl ObjectWriter for ConnectorWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.buf.push(chunk)
    }

    async fn commit(self: Box<Self>, _meta: &ObjectMeta) -> Result<Key> {
        let ConnectorWriter {
            connector,
            key,
            options,
            buf,
        } = *self;
        let data = buf.finish()?;
        match key {
            Some(k) => connector.set(&k, data).await.map(|()| k),
            None => connector.put_opts(data, &options).await,
        }
    }
}
