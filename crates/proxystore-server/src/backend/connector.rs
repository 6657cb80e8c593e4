//! Any [`Connector`] behind the service.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use proxystore::connector::PutOptions;
use proxystore::{Connector, Error, Key, Result};

use super::{Backend, ObjectReader, ObjectWriter};

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
            size,
            single: None,
            buf: Vec::new(),
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

struct ConnectorWriter {
    connector: Arc<dyn Connector>,
    key: Option<Key>,
    options: PutOptions,
    size: Option<u64>,
    single: Option<Bytes>,
    buf: Vec<u8>,
}

#[async_trait]
impl ObjectWriter for ConnectorWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if self.single.is_none() && self.buf.is_empty() && self.size == Some(chunk.len() as u64) {
            self.single = Some(chunk);
            return Ok(());
        }
        if self.buf.capacity() == 0 {
            let first = self.single.take().unwrap_or_default();
            let want = self.size.map_or(first.len() + chunk.len(), |s| s as usize);
            self.buf
                .try_reserve_exact(want)
                .map_err(|_| Error::LimitExceeded {
                    message: format!("server cannot allocate {want} bytes"),
                })?;
            self.buf.extend_from_slice(&first);
        }
        self.buf.extend_from_slice(&chunk);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<Key> {
        let ConnectorWriter {
            connector,
            key,
            options,
            single,
            buf,
            ..
        } = *self;
        // A single chunk is a slice of the transport's receive buffer: a connector that keeps
        // the object (a fronted memory connector) would keep that whole buffer alive, so the
        // object gets an allocation of its own (at most one chunk is copied).
        let data = match single {
            Some(chunk) => Bytes::copy_from_slice(&chunk),
            None => Bytes::from(buf),
        };
        match key {
            Some(k) => connector.set(&k, data).await.map(|()| k),
            None => connector.put_opts(data, &options).await,
        }
    }
}
