//! Objects in pieces: a put written chunk by chunk, a get read chunk by chunk.
//!
//! [`Connector::writer`] and [`Connector::reader`] are how a store service, a CLI upload or any
//! caller moves an object larger than it wants to hold in memory. Their defaults work over the
//! whole-object methods (a writer that buffers, then puts; a reader over the bytes of a get), so
//! every connector has them; a backend that can do better (a file written to a temporary file
//! and renamed, a server that streams) overrides them. Call them through
//! `<dyn Connector>::put_writer`, which falls back to the buffering writer.

use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Connector, PutOptions, slice_range};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::key::Key;

/// An object being written in pieces. Nothing is visible under its key until
/// [`ObjectWriter::finish`] returns; a writer dropped before that (a cancelled upload, a
/// client gone) leaves nothing, and whatever it held is released.
#[async_trait]
pub trait ObjectWriter: Send {
    /// Append the next bytes.
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] when the object cannot be held, or the backend's error.
    async fn write(&mut self, chunk: Bytes) -> Result<()>;

    /// Make the object visible and return its key.
    ///
    /// # Errors
    /// The backend's error; the object is then absent.
    async fn finish(self: Box<Self>) -> Result<Key>;

    /// Make the object visible with `meta` kept beside it, where the backend can keep it (the
    /// file connector keeps it in a description file; see [`ObjectMeta`]); the default drops
    /// `meta` and calls [`ObjectWriter::finish`].
    ///
    /// # Errors
    /// As for [`ObjectWriter::finish`].
    async fn finish_with(self: Box<Self>, meta: &ObjectMeta) -> Result<Key> {
        let _ = meta;
        self.finish().await
    }
}

/// What a backend keeps beside an object's bytes for whoever manages the objects (the store
/// service resumes expiry and serves digests from it after a restart). A connector stores it and
/// lists it ([`crate::Connector::inventory`]); it does not act on it (an expiry time passing
/// removes nothing by itself).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectMeta {
    /// When the object expires.
    pub expires_at: Option<SystemTime>,
    /// The digest of its bytes, as given when it was put.
    pub digest: Option<Digest>,
}

impl ObjectMeta {
    /// Metadata with an expiry time and a digest, either optional.
    ///
    /// ```
    /// use proxystore::connector::stream::ObjectMeta;
    /// assert!(ObjectMeta::new(None, None).is_empty());
    /// ```
    pub fn new(expires_at: Option<SystemTime>, digest: Option<Digest>) -> Self {
        ObjectMeta { expires_at, digest }
    }

    /// Whether there is nothing to keep.
    pub fn is_empty(&self) -> bool {
        self.expires_at.is_none() && self.digest.is_none()
    }
}

/// An object a backend holds, as [`crate::Connector::inventory`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredObject {
    /// Its key.
    pub key: Key,
    /// Its size in bytes.
    pub size: u64,
    /// What was kept beside it ([`ObjectWriter::finish_with`]).
    pub meta: ObjectMeta,
}

impl StoredObject {
    /// An object of `size` bytes under `key`, with `meta`.
    pub fn new(key: Key, size: u64, meta: ObjectMeta) -> Self {
        StoredObject { key, size, meta }
    }
}

/// An object (or a range of it) being read in pieces.
pub struct ObjectReader {
    /// Size of the whole object, when the backend knows it (a ranged read of a connector that
    /// has no way to tell reports the end of what it read).
    pub object_size: u64,
    /// Offset of the first byte this reader yields.
    pub offset: u64,
    /// Bytes left to read.
    pub len: u64,
    source: Source,
}

enum Source {
    Bytes(Bytes),
    Chunks(Box<dyn ReadChunks>),
}

/// Where a streaming [`ObjectReader`] gets its bytes (a file, a network stream).
#[async_trait]
pub trait ReadChunks: Send {
    /// The next bytes, at most `max` of them; `None` at the end.
    ///
    /// # Errors
    /// The backend's error.
    async fn read(&mut self, max: usize) -> Result<Option<Bytes>>;
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("object_size", &self.object_size)
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl ObjectReader {
    /// A reader over bytes in memory (the whole object), clamped to `range`; chunks are slices
    /// of `data`, without copying.
    pub fn from_bytes(data: Bytes, range: Option<Range<u64>>) -> Self {
        let object_size = data.len() as u64;
        let range = range.unwrap_or(0..object_size);
        let part = slice_range(&data, range.clone());
        let offset = range.start.min(range.end).min(object_size);
        ObjectReader {
            object_size,
            offset,
            len: part.len() as u64,
            source: Source::Bytes(part),
        }
    }

    /// A reader over `data`, the bytes of an object from `offset` on, when the whole object's
    /// size is not known (it is reported as the end of `data`).
    pub fn from_part(offset: u64, data: Bytes) -> Self {
        let len = data.len() as u64;
        ObjectReader {
            object_size: offset + len,
            offset,
            len,
            source: Source::Bytes(data),
        }
    }

    /// A reader of `len` bytes from `offset` of an object of `object_size` bytes, read from
    /// `chunks`.
    pub fn from_chunks(
        object_size: u64,
        offset: u64,
        len: u64,
        chunks: Box<dyn ReadChunks>,
    ) -> Self {
        ObjectReader {
            object_size,
            offset,
            len,
            source: Source::Chunks(chunks),
        }
    }

    /// Whether the bytes left are already in memory (no I/O to read them).
    pub fn is_in_memory(&self) -> bool {
        matches!(self.source, Source::Bytes(_))
    }

    /// The next chunk of at most `max` bytes, or `None` at the end.
    ///
    /// # Errors
    /// The backend's error; a source that ends early is a temporary [`Error::Backend`] (the
    /// object changed while it was read).
    pub async fn next_chunk(&mut self, max: usize) -> Result<Option<Bytes>> {
        if self.len == 0 {
            return Ok(None);
        }
        let n = usize::try_from(self.len)
            .unwrap_or(usize::MAX)
            .min(max.max(1));
        let chunk = match &mut self.source {
            Source::Bytes(b) => b.split_to(n),
            Source::Chunks(c) => match c.read(n).await? {
                Some(chunk) if !chunk.is_empty() && chunk.len() <= n => chunk,
                _ => {
                    return Err(Error::backend_message(
                        "reader",
                        format!("the object ended {} bytes early", self.len),
                        true,
                    ));
                }
            },
        };
        self.len -= chunk.len() as u64;
        Ok(Some(chunk))
    }

    /// All remaining bytes, in one piece.
    ///
    /// # Errors
    /// As for [`ObjectReader::next_chunk`], or [`Error::LimitExceeded`] when they do not fit.
    pub async fn into_bytes(mut self) -> Result<Bytes> {
        if let Source::Bytes(b) = &self.source {
            return Ok(b.clone());
        }
        let len = usize::try_from(self.len).map_err(|_| too_large(self.len))?;
        let mut buf = ChunkBuffer::new(Some(self.len));
        while let Some(c) = self.next_chunk(len).await? {
            buf.push(c)?;
        }
        buf.finish()
    }
}

fn too_large(n: u64) -> Error {
    Error::LimitExceeded {
        message: format!("cannot allocate {n} bytes"),
    }
}

/// The chunks of an object on their way into a backend that stores whole objects, ending as one
/// allocation of its own.
///
/// Chunks are often slices of a transport's receive buffers; an object kept as such slices would
/// keep those buffers alive for as long as it is stored. With a declared size the bytes are
/// copied into one exact allocation as they come (the receive buffers are freed at once);
/// without one they are held as they came and copied once at the end, so an object being
/// received takes about its own size, not the doubling of a growing buffer.
#[derive(Debug, Default)]
pub struct ChunkBuffer {
    size: Option<u64>,
    whole: Vec<u8>,
    chunks: Vec<Bytes>,
    len: usize,
}

impl ChunkBuffer {
    /// A buffer for an object of `size` bytes (`None`: unknown).
    pub fn new(size: Option<u64>) -> Self {
        ChunkBuffer {
            size,
            ..ChunkBuffer::default()
        }
    }

    /// Bytes taken so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was taken yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn reserve(buf: &mut Vec<u8>, want: usize) -> Result<()> {
        if buf.capacity() == 0 {
            *buf = crate::buffer::with_capacity(want).ok_or_else(|| too_large(want as u64))?;
            return Ok(());
        }
        buf.try_reserve_exact(want)
            .map_err(|_| too_large(want as u64))
    }

    /// Take the next chunk.
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] when the declared size cannot be allocated.
    pub fn push(&mut self, chunk: Bytes) -> Result<()> {
        self.len += chunk.len();
        match self.size {
            Some(size) => {
                if self.whole.capacity() == 0 {
                    let want = usize::try_from(size).unwrap_or(usize::MAX);
                    Self::reserve(&mut self.whole, want)?;
                }
                self.whole.extend_from_slice(&chunk);
            }
            None => self.chunks.push(chunk),
        }
        Ok(())
    }

    /// The whole object, in an allocation of its own.
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] when it cannot be allocated.
    pub fn finish(self) -> Result<Bytes> {
        if self.size.is_some() {
            return Ok(Bytes::from(self.whole));
        }
        let mut whole = Vec::new();
        Self::reserve(&mut whole, self.len)?;
        for c in &self.chunks {
            whole.extend_from_slice(c);
        }
        Ok(Bytes::from(whole))
    }
}

/// The writer every connector has: it buffers the object ([`ChunkBuffer`]) and puts it whole
/// on [`ObjectWriter::finish`] (with [`Connector::set`] under a given key, else
/// [`Connector::put_opts`]).
pub struct BufferedWriter {
    connector: Arc<dyn Connector>,
    key: Option<Key>,
    options: PutOptions,
    buf: ChunkBuffer,
}

impl std::fmt::Debug for BufferedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferedWriter")
            .field("connector", &self.connector.kind())
            .field("key", &self.key)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl BufferedWriter {
    /// A writer that puts into `connector` when finished.
    pub fn new(
        connector: Arc<dyn Connector>,
        key: Option<Key>,
        size: Option<u64>,
        options: PutOptions,
    ) -> Self {
        BufferedWriter {
            connector,
            key,
            options,
            buf: ChunkBuffer::new(size),
        }
    }
}

#[async_trait]
impl ObjectWriter for BufferedWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.buf.push(chunk)
    }

    async fn finish(self: Box<Self>) -> Result<Key> {
        let BufferedWriter {
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

impl dyn Connector {
    /// A writer for one object, under `key` (a key from [`Connector::new_key`], or any key the
    /// backend accepts from callers) or under a new key: the connector's own streaming writer
    /// ([`Connector::writer`]) when it has one, else a [`BufferedWriter`]. `size` is the
    /// object's size when known (a streaming backend may check it; the buffer allocates once).
    ///
    /// ```
    /// # proxystore::runtime::block_on(async {
    /// use std::sync::Arc;
    /// use proxystore::connector::{Connector, PutOptions, memory::MemoryConnector};
    /// let c: Arc<dyn Connector> = Arc::new(MemoryConnector::new("writer-doc"));
    /// let mut w = c.put_writer(None, Some(4), &PutOptions::default()).await?;
    /// w.write(proxystore::Bytes::from_static(b"ab")).await?;
    /// w.write(proxystore::Bytes::from_static(b"cd")).await?;
    /// let key = w.finish().await?;
    /// assert_eq!(c.get(&key).await?.as_deref(), Some(&b"abcd"[..]));
    /// # Ok::<_, proxystore::Error>(()) })??;
    /// # Ok::<_, proxystore::Error>(())
    /// ```
    ///
    /// # Errors
    /// The connector's error when it cannot start the object.
    pub async fn put_writer(
        self: &Arc<Self>,
        key: Option<Key>,
        size: Option<u64>,
        options: &PutOptions,
    ) -> Result<Box<dyn ObjectWriter>> {
        match self.writer(key.as_ref(), size, options).await? {
            Some(w) => Ok(w),
            None => Ok(Box::new(BufferedWriter::new(
                self.clone(),
                key,
                size,
                options.clone(),
            ))),
        }
    }
}
