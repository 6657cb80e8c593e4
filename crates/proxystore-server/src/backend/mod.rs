//! Where the server keeps objects: memory, a file directory, or any [`Connector`].
//!
//! A backend stores whole objects but receives them as a sequence of chunks through an
//! [`ObjectWriter`], which makes the object visible only on [`ObjectWriter::commit`]; dropping
//! the writer before that discards everything written (a put cut off part-way leaves nothing).
//! Reads come back as an [`ObjectReader`] that yields chunks on demand, so that a file backend
//! serves objects larger than memory.

use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use proxystore::connector::PutOptions;
use proxystore::{Connector, Digest, Error, Key, Result};

pub(crate) use proxystore::connector::stream::ObjectReader;

mod connector;
mod file;
mod memory;

pub(crate) use connector::ConnectorBackend;
pub(crate) use file::FileBackend;
pub(crate) use memory::MemoryBackend;

/// Longest key the server accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Which backend a server uses.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum BackendConfig {
    /// Objects in the server's memory (the default). Bound it with
    /// [`crate::ServerConfig::max_total_bytes`].
    #[default]
    Memory,
    /// One file per object in a directory (created if missing). Uploads stream to a temporary
    /// file renamed into place on completion, so server memory per upload is a few chunks,
    /// whatever the object size. The layout is that of `proxystore`'s `FileConnector`.
    File {
        /// The directory.
        directory: std::path::PathBuf,
        /// `fsync` each object before it becomes visible.
        fsync: bool,
    },
    /// Any connector (Redis, S3, ...): the server fronts it. Objects are buffered whole in the
    /// server while they pass through, as the connector API takes whole objects.
    Connector(Arc<dyn Connector>),
}

impl std::fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendConfig::Memory => f.write_str("Memory"),
            BackendConfig::File { directory, fsync } => f
                .debug_struct("File")
                .field("directory", directory)
                .field("fsync", fsync)
                .finish(),
            BackendConfig::Connector(c) => f.debug_tuple("Connector").field(c).finish(),
        }
    }
}

impl BackendConfig {
    pub(crate) async fn build(&self) -> Result<Arc<dyn Backend>> {
        Ok(match self {
            BackendConfig::Memory => Arc::new(MemoryBackend::default()),
            BackendConfig::File { directory, fsync } => {
                Arc::new(FileBackend::open(directory.clone(), *fsync).await?)
            }
            BackendConfig::Connector(c) => Arc::new(ConnectorBackend::new(c.clone()).await),
        })
    }
}

/// What the service knows of an object besides its bytes, for a backend that keeps it across
/// restarts (the file backend).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ObjectMeta {
    /// When the object expires.
    pub(crate) expires_at: Option<SystemTime>,
    /// The digest given when it was put.
    pub(crate) digest: Option<Digest>,
}

/// An object found when the server starts.
pub(crate) struct Existing {
    pub(crate) key: Key,
    pub(crate) size: u64,
    pub(crate) meta: ObjectMeta,
}

/// Receives one object chunk by chunk.
#[async_trait]
pub(crate) trait ObjectWriter: Send {
    /// Append the next bytes.
    async fn write(&mut self, chunk: Bytes) -> Result<()>;
    /// Make the object visible under its key, with `meta`, and return the key.
    async fn commit(self: Box<Self>, meta: &ObjectMeta) -> Result<Key>;
}

/// Object storage behind the service.
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// Backend kind shown by `Stat`.
    fn kind(&self) -> String;
    /// Whether callers may choose keys.
    fn caller_keys(&self) -> bool;
    /// Reject keys this backend cannot store.
    fn check_key(&self, key: &str) -> Result<()> {
        check_key_length(self.kind(), key)
    }
    /// Objects already stored when the server starts.
    async fn existing(&self) -> Result<Vec<Existing>> {
        Ok(Vec::new())
    }
    /// Start receiving an object: under `key`, or under a new key when `None`.
    async fn writer(
        &self,
        key: Option<Key>,
        size: Option<u64>,
        options: PutOptions,
    ) -> Result<Box<dyn ObjectWriter>>;
    /// Open an object (or a range of it) for reading; `None` when absent.
    async fn read(&self, key: &Key, range: Option<Range<u64>>) -> Result<Option<ObjectReader>>;
    /// The size of an object when present (`Some(None)`: present, size unknown).
    async fn exists(&self, key: &Key) -> Result<Option<Option<u64>>>;
    /// Remove an object; whether it was present.
    async fn evict(&self, key: &Key) -> Result<bool>;
}

/// The checks every backend applies: non-empty and at most [`MAX_KEY_BYTES`].
pub(crate) fn check_key_length(kind: String, key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        "empty key"
    } else if key.len() > MAX_KEY_BYTES {
        "longer than 1024 bytes"
    } else {
        return Ok(());
    };
    Err(Error::InvalidKey {
        connector: kind,
        key: key.to_owned(),
        reason: reason.into(),
    })
}
