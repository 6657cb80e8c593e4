//! One file per object in a directory, written by streaming chunks to a temporary file.
//!
//! The layout matches `proxystore::connector::file::FileConnector` (the key is the file name;
//! temporary files start with `.tmp-`), so a process with access to the directory can also
//! read it directly with that connector.

use std::io::{Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use proxystore::connector::PutOptions;
use proxystore::connector::file::{TMP_PREFIX, open_object, validate_key};
use proxystore::{Error, Key, Result};

use super::{Backend, Body, ObjectReader, ObjectWriter, clamp};

const KIND: &str = "file";

pub(crate) fn io_error(what: &str, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            Error::LimitExceeded {
                message: format!("file backend {what}: {e}"),
            }
        }
        _ => Error::backend(KIND, what, e),
    }
}

async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::backend(KIND, what, e))?
        .map_err(|e| io_error(what, e))
}

/// Objects as files in one directory.
pub(crate) struct FileBackend {
    directory: PathBuf,
    fsync: bool,
}

impl FileBackend {
    /// Use (and create) `directory`, removing temporary files a crashed server left behind.
    pub(crate) async fn open(directory: PathBuf, fsync: bool) -> Result<Self> {
        let dir = directory.clone();
        let directory = blocking("open directory", move || {
            std::fs::create_dir_all(&dir)?;
            let dir = std::path::absolute(&dir)?;
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            Ok(dir)
        })
        .await?;
        Ok(FileBackend { directory, fsync })
    }

    fn path(&self, key: &Key) -> Result<PathBuf> {
        validate_key(key.as_str())?;
        Ok(self.directory.join(key.as_str()))
    }
}

fn not_found_is_none<T>(r: std::io::Result<T>) -> std::io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl Backend for FileBackend {
    fn kind(&self) -> String {
        KIND.into()
    }

    fn caller_keys(&self) -> bool {
        true
    }

    fn check_key(&self, key: &str) -> Result<()> {
        validate_key(key)
    }

    async fn existing(&self) -> Result<Vec<(Key, u64)>> {
        let dir = self.directory.clone();
        blocking("scan directory", move || {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let meta = entry.metadata()?;
                if meta.is_file() && validate_key(&name).is_ok() {
                    out.push((Key::from(name), meta.len()));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn writer(
        &self,
        key: Option<Key>,
        _size: Option<u64>,
        _options: PutOptions,
    ) -> Result<Box<dyn ObjectWriter>> {
        let key = key.unwrap_or_else(Key::random);
        let path = self.path(&key)?;
        let tmp = self
            .directory
            .join(format!("{TMP_PREFIX}{}", Key::random()));
        let fsync = self.fsync;
        // The writer (whose drop removes the temporary file) is made on the blocking thread, so a
        // call cancelled while the file is being created still cleans it up: tokio drops the
        // output of a blocking task nobody awaits any more.
        let writer = blocking("create", move || {
            let file = std::fs::File::create_new(&tmp)?;
            Ok(FileWriter {
                key,
                path,
                tmp,
                file: Some(file),
                fsync,
                committed: false,
            })
        })
        .await?;
        Ok(Box::new(writer))
    }

    async fn read(&self, key: &Key, range: Option<Range<u64>>) -> Result<Option<ObjectReader>> {
        let path = self.path(key)?;
        blocking("open", move || {
            let Some((mut f, object_size)) = open_object(&path)? else {
                return Ok(None);
            };
            let (start, end) = clamp(range, object_size);
            f.seek(SeekFrom::Start(start))?;
            Ok(Some(ObjectReader {
                object_size,
                offset: start,
                len: end - start,
                body: Body::File(f),
            }))
        })
        .await
    }

    async fn exists(&self, key: &Key) -> Result<Option<Option<u64>>> {
        let path = self.path(key)?;
        blocking("exists", move || {
            Ok(not_found_is_none(std::fs::symlink_metadata(path))?
                .filter(std::fs::Metadata::is_file)
                .map(|m| Some(m.len())))
        })
        .await
    }

    async fn evict(&self, key: &Key) -> Result<bool> {
        let path = self.path(key)?;
        blocking("evict", move || {
            Ok(not_found_is_none(std::fs::remove_file(path))?.is_some())
        })
        .await
    }
}

/// Streams chunks into a temporary file; commit renames it over the key's file, drop without
/// commit deletes it.
struct FileWriter {
    key: Key,
    path: PathBuf,
    tmp: PathBuf,
    file: Option<std::fs::File>,
    fsync: bool,
    committed: bool,
}

impl FileWriter {
    fn file(&mut self) -> Result<std::fs::File> {
        self.file.take().ok_or_else(|| {
            Error::backend(
                KIND,
                "write",
                std::io::Error::other("a previous write of this object failed"),
            )
        })
    }
}

#[async_trait]
impl ObjectWriter for FileWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let mut file = self.file()?;
        let file = blocking("write", move || file.write_all(&chunk).map(|()| file)).await?;
        self.file = Some(file);
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<Key> {
        let file = self.file()?;
        let (tmp, path, fsync) = (self.tmp.clone(), self.path.clone(), self.fsync);
        blocking("commit", move || {
            if fsync {
                file.sync_all()?;
            }
            drop(file);
            std::fs::rename(&tmp, &path)
        })
        .await?;
        self.committed = true;
        Ok(self.key.clone())
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if !self.committed {
            remove_quietly(&self.tmp);
        }
    }
}

fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_file(path);
}
