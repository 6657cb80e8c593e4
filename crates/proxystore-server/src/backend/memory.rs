//! Objects in the server's memory.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use proxystore::connector::PutOptions;
use proxystore::{Error, Key, Result};

use super::{Backend, ObjectReader, ObjectWriter};

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
            size,
            single: None,
            buf: Vec::new(),
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

/// Buffers one object; a declared size is allocated once.
///
/// An object that arrives as one chunk is copied into an allocation of its own when committed:
/// the chunk is a slice of the transport's receive buffer and would keep all of it alive for as
/// long as the object is stored (a 100 B object held about 7 KiB, so a store full of small
/// objects used many times its byte limit).
struct MemoryWriter {
    objects: Map,
    key: Key,
    size: Option<u64>,
    single: Option<Bytes>,
    buf: Vec<u8>,
}

#[async_trait]
impl ObjectWriter for MemoryWriter {
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
        let MemoryWriter {
            objects,
            key,
            single,
            buf,
            ..
        } = *self;
        let data = match single {
            Some(chunk) => Bytes::copy_from_slice(&chunk),
            None => Bytes::from(buf),
        };
        objects
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), data);
        Ok(key)
    }
}
