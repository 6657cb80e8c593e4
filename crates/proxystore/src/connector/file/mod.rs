//! The file connector: one file per object in a directory.
//!
//! Writes are atomic: the bytes go to a hidden temporary file in the same directory, which is
//! then renamed over the final name, so a reader sees the whole object or none of it and a failed
//! or cancelled put leaves nothing behind. Keys are validated so that no key can name a path
//! outside the directory.
//!
//! Objects also stream in and out a chunk at a time ([`Connector::writer`],
//! [`Connector::reader`]), and a writer can keep an expiry time and a digest beside its object
//! (`meta`: how a store server fronting the directory resumes them after a restart).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::object_dir::{
    self, blocking, blocking_here, is_object, read_object, read_object_into, remove, write_atomic,
};
pub use super::object_dir::{RESERVED_PREFIX, TMP_PREFIX, open_object};
use super::stream::{ObjectReader, ObjectWriter, StoredObject};
use super::{Connector, ConnectorConfig, ObjectSink, PutOptions, Resource, get_into_whole};
use crate::error::{Error, Result};
use crate::key::Key;

mod meta;
mod stream;
mod wait;

pub use meta::META_DIR;

/// Kind name of this connector.
pub const KIND: &str = "file";

/// Options of a [`FileConnector`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileConfig {
    /// The directory holding the objects; created if missing.
    pub directory: PathBuf,
    /// Call `fsync` on each object before it becomes visible (default false, as in Python
    /// ProxyStore: durable against process crashes, not power loss).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fsync: bool,
}

/// Objects as files in one directory.
///
/// ```
/// # proxystore::runtime::block_on(async {
/// use proxystore::connector::{Connector, file::FileConnector};
/// let dir = tempfile::tempdir()?;
/// let c = FileConnector::new(dir.path())?;
/// let key = c.put(bytes::Bytes::from_static(b"data")).await?;
/// assert!(dir.path().join(key.as_str()).exists());
/// // Keys that would leave the directory are refused.
/// assert!(c.get(&"../etc/passwd".into()).await.is_err());
/// # Ok::<_, Box<dyn std::error::Error + Send + Sync>>(()) }).unwrap().unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct FileConnector {
    config: FileConfig,
}

impl FileConnector {
    /// Use (and create) `directory`.
    ///
    /// # Errors
    /// [`Error::Backend`] when the directory cannot be created.
    pub fn new(directory: impl AsRef<Path>) -> Result<Self> {
        Self::with_config(FileConfig {
            directory: directory.as_ref().to_path_buf(),
            fsync: false,
        })
    }

    /// Use `config`, creating its directory.
    ///
    /// # Errors
    /// [`Error::Backend`] when the directory cannot be created, [`Error::Config`] for an empty
    /// path.
    pub fn with_config(mut config: FileConfig) -> Result<Self> {
        if config.directory.as_os_str().is_empty() {
            return Err(Error::config("file connector needs a directory"));
        }
        std::fs::create_dir_all(&config.directory).map_err(|e| {
            Error::io(
                KIND,
                format!("create directory {}", config.directory.display()),
                e,
            )
        })?;
        // An absolute path makes the config usable from any working directory.
        if let Ok(abs) = std::path::absolute(&config.directory) {
            config.directory = abs;
        }
        Ok(FileConnector { config })
    }

    /// Build from a [`ConnectorConfig`] of kind `file`.
    ///
    /// # Errors
    /// As for [`FileConnector::with_config`].
    pub fn from_config(config: &ConnectorConfig) -> Result<Arc<dyn Connector>> {
        Ok(Arc::new(Self::with_config(config.options()?)?))
    }

    /// What a connector built from `config` would touch, for the resolve policy.
    pub(crate) fn resources(config: &ConnectorConfig) -> Result<Vec<Resource>> {
        let config: FileConfig = config.options()?;
        Ok(vec![Resource::Path {
            what: "directory",
            path: config.directory,
        }])
    }

    /// The directory holding the objects.
    pub fn directory(&self) -> &Path {
        &self.config.directory
    }

    /// The path of `key`, after checking that it stays inside the directory.
    fn path(&self, key: &Key) -> Result<PathBuf> {
        validate_key(key.as_str())?;
        Ok(self.config.directory.join(key.as_str()))
    }

    async fn write_new(&self, key: Key, data: Bytes, replaces: bool) -> Result<Key> {
        let path = self.path(&key)?;
        let dir = self.config.directory.clone();
        let fsync = self.config.fsync;
        let name = replaces.then(|| key.clone());
        blocking(KIND, "put", move || {
            // A replaced object's description (see `meta`) goes with it.
            if let Some(name) = name {
                meta::remove(&dir, name.as_str())?;
            }
            write_atomic(&dir, &path, &data, fsync)
        })
        .await?;
        Ok(key)
    }

    /// Remove what writes cut off by a crash left in the directory: temporary files, and
    /// descriptions of objects that are gone. Call it only when no other process writes to the
    /// directory (a store server that owns it does when it starts): a write in progress
    /// elsewhere would lose its temporary file.
    ///
    /// # Errors
    /// [`Error::Backend`] when the directory cannot be read.
    pub async fn clean_up(&self) -> Result<()> {
        let dir = self.config.directory.clone();
        blocking(KIND, "clean up", move || meta::clean_up(&dir)).await
    }
}

/// Reject keys that are not a plain file name inside the directory: empty, `.` or `..`, with a
/// path separator or NUL, starting with [`TMP_PREFIX`] or [`RESERVED_PREFIX`], or longer than
/// 255 bytes. Shared by every store that keeps objects as files (the Globus connector's object
/// names, the gRPC server's file backend).
///
/// ```
/// use proxystore::connector::file::validate_key;
/// assert!(validate_key("3f2a-weights").is_ok());
/// assert!(validate_key("../etc/passwd").is_err());
/// ```
///
/// # Errors
/// [`Error::InvalidKey`] saying why.
pub fn validate_key(key: &str) -> Result<()> {
    match object_dir::name_problem(key) {
        Some(reason) => Err(Error::InvalidKey {
            connector: KIND.into(),
            key: key.to_owned(),
            reason: reason.into(),
        }),
        None => Ok(()),
    }
}

#[async_trait]
impl Connector for FileConnector {
    fn kind(&self) -> &str {
        KIND
    }

    async fn put_opts(&self, data: Bytes, _options: &PutOptions) -> Result<Key> {
        self.write_new(Key::random(), data, false).await
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        let path = self.path(key)?;
        blocking(KIND, "get", move || read_object(&path, None)).await
    }

    /// Reads the file straight into the sink's room, a piece at a time (hashed as it lands
    /// when asked). On a current-thread runtime, which the read cannot leave in place, the
    /// file is read whole on the blocking pool and handed over.
    async fn get_into(&self, key: &Key, sink: &mut ObjectSink<'_>) -> Result<bool> {
        let path = self.path(key)?;
        match blocking_here(|| read_object_into(KIND, &path, sink)) {
            Some(done) => done,
            None => get_into_whole(self, key, sink).await,
        }
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Option<Bytes>> {
        let path = self.path(key)?;
        blocking(KIND, "get_range", move || read_object(&path, Some(range))).await
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        let path = self.path(key)?;
        blocking(KIND, "exists", move || is_object(&path)).await
    }

    async fn evict(&self, key: &Key) -> Result<()> {
        let path = self.path(key)?;
        let (dir, name) = (self.config.directory.clone(), key.clone());
        blocking(KIND, "evict", move || {
            remove(&path)?;
            meta::remove(&dir, name.as_str())
        })
        .await
    }

    fn config(&self) -> ConnectorConfig {
        ConnectorConfig::new(
            KIND,
            serde_json::json!({ "directory": self.config.directory, "fsync": self.config.fsync }),
        )
    }

    async fn new_key(&self, _options: &PutOptions) -> Result<Key> {
        Ok(Key::random())
    }

    async fn set(&self, key: &Key, data: Bytes) -> Result<()> {
        self.write_new(key.clone(), data, true).await.map(|_| ())
    }

    /// File notifications on the directory (inotify on Linux), polling where there are none.
    async fn wait(&self, key: &Key, timeout: std::time::Duration) -> Result<bool> {
        self.wait_for_file(key, timeout).await
    }

    fn wait_mechanism(&self) -> &'static str {
        "file notifications (inotify), polling as a fallback"
    }

    fn check_key(&self, key: &Key) -> Result<()> {
        validate_key(key.as_str())
    }

    /// Streams into a temporary file renamed into place on finish (memory: one chunk);
    /// [`ObjectWriter::finish_with`] keeps the metadata in a description file.
    async fn writer(
        &self,
        key: Option<&Key>,
        _size: Option<u64>,
        _options: &PutOptions,
    ) -> Result<Option<Box<dyn ObjectWriter>>> {
        let key = key.cloned().unwrap_or_else(Key::random);
        let path = self.path(&key)?;
        let w = stream::writer(self.config.directory.clone(), key, path, self.config.fsync).await?;
        Ok(Some(Box::new(w)))
    }

    /// Reads the file a chunk at a time.
    async fn reader(&self, key: &Key, range: Option<Range<u64>>) -> Result<Option<ObjectReader>> {
        stream::reader(self.path(key)?, range).await
    }

    /// The directory's objects with the metadata kept beside them.
    async fn inventory(&self) -> Result<Option<Vec<StoredObject>>> {
        let dir = self.config.directory.clone();
        blocking(KIND, "list", move || meta::inventory(&dir))
            .await
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hostile_keys_are_rejected_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("store");
        let c = FileConnector::new(&inner).unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        for k in [
            "../secret",
            "..",
            ".",
            "",
            "/etc/passwd",
            "a/b",
            "a\\b",
            "nul\0byte",
            ".tmp-x",
        ] {
            let key = Key::from(k);
            for r in [
                c.get(&key).await.map(|_| ()),
                c.exists(&key).await.map(|_| ()),
                c.evict(&key).await,
                c.set(&key, Bytes::from_static(b"x")).await,
                c.get_range(&key, 0..1).await.map(|_| ()),
            ] {
                assert!(
                    matches!(r, Err(Error::InvalidKey { .. })),
                    "{k:?} gave {r:?}"
                );
            }
        }
        assert_eq!(std::fs::read(dir.path().join("secret")).unwrap(), b"s");
        let unicode = Key::from("données-✓ key with spaces");
        c.set(&unicode, Bytes::from_static(b"u")).await.unwrap();
        assert_eq!(c.get(&unicode).await.unwrap().unwrap(), "u");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_tasks_on_a_multi_thread_runtime_block_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let c = FileConnector::new(dir.path()).unwrap();
        let tasks: Vec<_> = (0..16u8)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move {
                    let data = Bytes::from(vec![i; 4096]);
                    let key = c.put(data.clone()).await.unwrap();
                    assert_eq!(c.get(&key).await.unwrap().unwrap(), data);
                    c.evict(&key).await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // Also from the thread that drives the runtime (not a worker).
        let key = c.put(Bytes::from_static(b"main")).await.unwrap();
        assert!(c.exists(&key).await.unwrap());
    }

    #[test]
    fn works_outside_any_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let c = FileConnector::new(dir.path()).unwrap();
        let key = futures::executor::block_on(c.put(Bytes::from_static(b"x"))).unwrap();
        let got = futures::executor::block_on(c.get(&key)).unwrap();
        assert_eq!(got.unwrap(), "x");
    }

    #[tokio::test]
    async fn metadata_is_kept_listed_and_goes_with_its_object() {
        use crate::connector::stream::ObjectMeta;
        let dir = tempfile::tempdir().unwrap();
        let c = FileConnector::new(dir.path()).unwrap();
        let meta = ObjectMeta::new(
            Some(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(9)),
            None,
        );
        let key = Key::from("k");
        let put_described = || async {
            let mut w = c
                .writer(Some(&key), None, &PutOptions::default())
                .await
                .unwrap()
                .unwrap();
            w.write(Bytes::from_static(b"abc")).await.unwrap();
            w.finish_with(&meta).await.unwrap();
        };
        put_described().await;
        let listed = c.inventory().await.unwrap().unwrap();
        assert_eq!(
            (listed.len(), listed[0].size, &listed[0].meta),
            (1, 3, &meta)
        );
        // A whole-object replacement drops the description, and so does an eviction.
        c.set(&key, Bytes::from_static(b"new")).await.unwrap();
        assert!(c.inventory().await.unwrap().unwrap()[0].meta.is_empty());
        assert!(!dir.path().join(META_DIR).join("k").exists());
        put_described().await;
        c.evict(&key).await.unwrap();
        assert!(!dir.path().join(META_DIR).join("k").exists());
        assert!(c.inventory().await.unwrap().unwrap().is_empty());
    }

    #[tokio::test]
    async fn failed_put_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let c = FileConnector::new(dir.path()).unwrap();
        // Make the directory unwritable by replacing it with a file.
        std::fs::remove_dir(dir.path()).unwrap();
        std::fs::write(dir.path(), b"not a dir").unwrap();
        let err = c.put(Bytes::from_static(b"x")).await.unwrap_err();
        assert!(matches!(err, Error::Backend { .. }), "{err}");
        std::fs::remove_file(dir.path()).unwrap();
    }
}
