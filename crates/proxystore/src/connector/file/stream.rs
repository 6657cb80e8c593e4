//! The file connector's objects in pieces: a writer that streams into a temporary file renamed
//! into place on finish, and a reader that reads a chunk at a time. Memory per object is a
//! chunk, whatever its size.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::super::object_dir::{TMP_PREFIX, blocking, open_object};
use super::{KIND, meta};
use crate::connector::stream::{ObjectMeta, ObjectReader, ObjectWriter, ReadChunks};
use crate::error::{Error, Result};
use crate::key::Key;

/// Start writing the object `key` (at `path`) of `dir` into a new temporary file.
///
/// The writer (whose drop removes the temporary file) is made on the blocking thread, so a call
/// cancelled while the file is being created still cleans it up: tokio drops the output of a
/// blocking task nobody awaits any more.
pub(super) async fn writer(
    dir: PathBuf,
    key: Key,
    path: PathBuf,
    fsync: bool,
) -> Result<FileWriter> {
    blocking(KIND, "create", move || {
        let tmp = dir.join(format!("{TMP_PREFIX}{}", Key::random()));
        let file = File::create_new(&tmp)?;
        Ok(FileWriter {
            dir,
            key,
            path,
            tmp,
            file: Some(file),
            fsync,
            committed: false,
        })
    })
    .await
}

/// Streams chunks into a temporary file; finishing renames it over the key's file (after
/// writing its description, see [`meta`]), dropping it unfinished deletes it.
pub(super) struct FileWriter {
    dir: PathBuf,
    key: Key,
    path: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    fsync: bool,
    committed: bool,
}

impl FileWriter {
    fn file(&mut self) -> Result<File> {
        self.file.take().ok_or_else(|| {
            Error::backend_message(KIND, "a previous write of this object failed", false)
        })
    }
}

#[async_trait]
impl ObjectWriter for FileWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let mut file = self.file()?;
        let file = blocking(KIND, "write", move || file.write_all(&chunk).map(|()| file)).await?;
        self.file = Some(file);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<Key> {
        self.finish_with(&ObjectMeta::default()).await
    }

    async fn finish_with(mut self: Box<Self>, meta: &ObjectMeta) -> Result<Key> {
        let file = self.file()?;
        let (dir, key, meta) = (self.dir.clone(), self.key.clone(), meta.clone());
        let (tmp, path, fsync) = (self.tmp.clone(), self.path.clone(), self.fsync);
        blocking(KIND, "finish", move || {
            if fsync {
                file.sync_all()?;
            }
            // The description first (see `meta`); a replaced object's goes away.
            meta::write(&dir, &key, &meta, &file, fsync)?;
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
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Open the object at `path` for reading bytes `range` of it (clamped); `None` when absent.
pub(super) async fn reader(
    path: PathBuf,
    range: Option<Range<u64>>,
) -> Result<Option<ObjectReader>> {
    blocking(KIND, "open", move || open_at(&path, range)).await
}

fn open_at(path: &Path, range: Option<Range<u64>>) -> std::io::Result<Option<ObjectReader>> {
    let Some((mut f, object_size)) = open_object(path)? else {
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
        Box::new(FileChunks(Some(f))),
    )))
}

/// An open object file, positioned where the read starts.
struct FileChunks(Option<File>);

#[async_trait]
impl ReadChunks for FileChunks {
    async fn read(&mut self, max: usize) -> Result<Option<Bytes>> {
        let mut file = self.0.take().ok_or_else(|| {
            Error::backend_message(KIND, "a previous read of this object failed", false)
        })?;
        let (file, chunk) = blocking(KIND, "read", move || {
            let mut buf = vec![0u8; max];
            file.read_exact(&mut buf)?;
            Ok((file, Bytes::from(buf)))
        })
        .await?;
        self.0 = Some(file);
        Ok(Some(chunk))
    }
}
