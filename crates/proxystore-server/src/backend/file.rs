//! One file per object in a directory, written by streaming chunks to a temporary file.
//!
//! The layout matches `proxystore::connector::file::FileConnector` (the key is the file name;
//! temporary files start with `.tmp-`), so a process with access to the directory can also
//! read it directly with that connector.
//!
//! What the service knows of an object besides its bytes (expiry time, digest) is kept in a
//! small file of the same name under [`META_DIR`], so that it survives a restart. It names the
//! inode of the object it describes and is written before the object is renamed into place:
//! a crash between the two leaves a description that matches no object, which is dropped at
//! the next start, never one that is applied to the wrong object.

use std::io::{Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use proxystore::connector::PutOptions;
use proxystore::connector::file::{TMP_PREFIX, open_object, validate_key};
use proxystore::{Digest, Error, Key, Result};

use super::{Backend, Existing, ObjectMeta, ObjectReader, ObjectWriter};

/// The directory (inside the object directory) of the objects' descriptions. It starts with
/// [`proxystore::connector::file::RESERVED_PREFIX`], so no key can name it.
pub(crate) const META_DIR: &str = ".proxystore-meta";

const KIND: &str = "file";

pub(crate) fn io_error(what: &str, e: std::io::Error) -> Error {
    Error::io(KIND, what, e)
}

/// An open object file, positioned where the read starts, read a chunk at a time off the
/// async threads.
struct FileChunks(std::fs::File);

#[async_trait]
impl proxystore::connector::stream::ReadChunks for FileChunks {
    async fn read(&mut self, max: usize) -> Result<Option<Bytes>> {
        let mut file = self.0.try_clone().map_err(|e| io_error("read", e))?;
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut buf = vec![0u8; max];
            file.read_exact(&mut buf).map(|()| Some(Bytes::from(buf)))
        })
        .await
        .map_err(|e| Error::backend(KIND, "read", e))?
        .map_err(|e| io_error("read", e))
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
            for d in [dir.clone(), dir.join(META_DIR)] {
                let Some(entries) = not_found_is_none(std::fs::read_dir(&d))? else {
                    continue;
                };
                for entry in entries {
                    let entry = entry?;
                    if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                        let _ = std::fs::remove_file(entry.path());
                    }
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

    async fn existing(&self) -> Result<Vec<Existing>> {
        let dir = self.directory.clone();
        blocking("scan directory", move || {
            let mut out = Vec::new();
            let mut described = std::collections::HashSet::new();
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let m = entry.metadata()?;
                if m.is_file() && validate_key(&name).is_ok() {
                    let meta = read_description(&dir, &name, &m);
                    if meta.is_some() {
                        described.insert(name.clone());
                    }
                    out.push(Existing {
                        key: Key::from(name),
                        size: m.len(),
                        meta: meta.unwrap_or_default(),
                    });
                }
            }
            // Descriptions of objects that are gone (or were never renamed into place).
            let descriptions = not_found_is_none(std::fs::read_dir(dir.join(META_DIR)))?;
            for entry in descriptions.into_iter().flatten() {
                let entry = entry?;
                if !described.contains(entry.file_name().to_string_lossy().as_ref()) {
                    let _ = std::fs::remove_file(entry.path());
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
        let meta_dir = self.directory.join(META_DIR);
        let writer = blocking("create", move || {
            let file = std::fs::File::create_new(&tmp)?;
            Ok(FileWriter {
                key,
                path,
                tmp,
                meta_dir,
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
            let range = range.unwrap_or(0..object_size);
            let end = range.end.min(object_size);
            let start = range.start.min(end);
            f.seek(SeekFrom::Start(start))?;
            Ok(Some(ObjectReader::from_chunks(
                object_size,
                start,
                end - start,
                Box::new(FileChunks(f)),
            )))
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
        let description = self.directory.join(META_DIR).join(key.as_str());
        blocking("evict", move || {
            let existed = not_found_is_none(std::fs::remove_file(path))?.is_some();
            not_found_is_none(std::fs::remove_file(description))?;
            Ok(existed)
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
    meta_dir: PathBuf,
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

    async fn commit(mut self: Box<Self>, meta: &ObjectMeta) -> Result<Key> {
        let file = self.file()?;
        let (tmp, path, fsync) = (self.tmp.clone(), self.path.clone(), self.fsync);
        let description = self.meta_dir.join(self.key.as_str());
        let text = (meta != &ObjectMeta::default())
            .then(|| describe(meta, &file))
            .transpose()
            .map_err(|e| io_error("commit", e))?;
        let meta_dir = self.meta_dir.clone();
        blocking("commit", move || {
            if fsync {
                file.sync_all()?;
            }
            drop(file);
            // The description first (see the module docs); a replaced object's goes away.
            match text {
                Some(text) => {
                    // Made on first use: a directory of objects without expiry or digest has
                    // nothing but the objects.
                    std::fs::create_dir_all(&meta_dir)?;
                    let t = meta_dir.join(format!("{TMP_PREFIX}{}", Key::random()));
                    let written = std::fs::write(&t, text).and_then(|()| {
                        if fsync {
                            std::fs::File::open(&t)?.sync_all()?;
                        }
                        std::fs::rename(&t, &description)
                    });
                    if written.is_err() {
                        remove_quietly(&t);
                    }
                    written?;
                }
                None => {
                    not_found_is_none(std::fs::remove_file(&description))?;
                }
            }
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

/// The identity of an open file: its inode where there is one.
fn identity(m: &std::fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        std::os::unix::fs::MetadataExt::ino(m)
    }
    #[cfg(not(unix))]
    {
        m.len()
    }
}

/// The description of an object about to be stored from `file`: lines `id`, `size`,
/// `expires_unix_ms` and `digest` (`algorithm:hex`).
fn describe(meta: &ObjectMeta, file: &std::fs::File) -> std::io::Result<String> {
    let m = file.metadata()?;
    let mut text = format!("id {}\nsize {}\n", identity(&m), m.len());
    if let Some(t) = meta.expires_at {
        let ms = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        text.push_str(&format!("expires_unix_ms {ms}\n"));
    }
    if let Some(d) = meta.digest {
        text.push_str(&format!("digest {d}\n"));
    }
    Ok(text)
}

/// The description of the object `name` found at start-up, when there is one and it is of
/// this very file (see the module docs); a description that cannot be read is ignored.
fn read_description(dir: &Path, name: &str, m: &std::fs::Metadata) -> Option<ObjectMeta> {
    let text = std::fs::read_to_string(dir.join(META_DIR).join(name)).ok()?;
    let mut meta = ObjectMeta::default();
    let (mut id, mut size) = (None, None);
    for line in text.lines() {
        let (field, value) = line.split_once(' ')?;
        match field {
            "id" => id = value.parse::<u64>().ok(),
            "size" => size = value.parse::<u64>().ok(),
            "expires_unix_ms" => {
                let ms = value.parse::<u64>().ok()?;
                meta.expires_at = SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms));
            }
            "digest" => meta.digest = Some(value.parse::<Digest>().ok()?),
            _ => {}
        }
    }
    (id == Some(identity(m)) && size == Some(m.len())).then_some(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxystore::connector::file::RESERVED_PREFIX;

    #[test]
    fn no_key_names_the_description_directory() {
        assert!(META_DIR.starts_with(RESERVED_PREFIX));
        assert!(validate_key(META_DIR).is_err());
    }
}
