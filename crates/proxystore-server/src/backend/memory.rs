//! Objects in the server's memory.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use proxystore::connector::PutOptions;
use proxystore::{Key, Result};

use proxystore::connector::stream::ChunkBuffer;

use super::{Backend, ObjectMeta, ObjectReader, ObjectWriter};

type Map = Arc<RwLock<HashMap<Key, Bytes>>>;

/// Objects as `Bytes` in a map; reads hand out slices without copying.
#[derive(Default)]
pub(crate) struct MemoryBackend {
    objects: Map,
}

impl MemoryBackend {
    fn get(&self, key: &Key) -> Option<Bytes> {
        self.objects
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn kind(&self) -> String {
        "memory".into()
    }

    fn caller_keys(&self) -> bool {
        true
    }

    async fn writer(
        &self,
        key: Option<Key>,
        size: Option<u64>,
        _options: PutOptions,
    ) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(MemoryWriter {
            objects: self.objects.clone(),
            key: key.unwrap_or_else(Key::random),
            buf: ChunkBuffer::new(size),
        }))
    }

    async fn read(&self, key: &Key, range: Option<Range<u64>>) -> Result<Option<ObjectReader>> {
        Ok(self.get(key).map(|b| ObjectReader::from_bytes(b, range)))
    }

    async fn exists(&self, key: &Key) -> Result<Option<Option<u64>>> {
        Ok(self.get(key).map(|b| Some(b.len() as u64)))
    }

    async fn evict(&self, key: &Key) -> Result<bool> {
        Ok(self
            .objects
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key)
            .is_some())
    }
}

/// Buffers one object (see [`ChunkBuffer`]) and stores it on commit.
struct MemoryWriter {
    objects: Map,
    key: Key,
    buf: ChunkBuffer,
}

#[async_trait]
impl ObjectWriter for MemoryWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.buf.push(chunk)
    }

    async fn commit(self: Box<Self>, _meta: &ObjectMeta) -> Result<Key> {
        let MemoryWriter { objects, key, buf } = *self;
        let data = buf.finish()?;
        objects
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), data);
        Ok(key)
    }
}
