//! Objects as files in a directory: the file rules that every connector keeping objects this
//! way follows (the file connector, the Globus connector's endpoint directories; the store
//! server's file backend uses the public ones through [`super::file`]).
//!
//! - An object's file name is its key (or, for Globus, the name part of its key); names that
//!   could reach outside the directory or name a temporary or reserved file are refused
//!   ([`name_problem`]).
//! - Only a regular file is an object: reads never follow a symbolic link planted in the
//!   directory, nor block on a FIFO ([`open_object`]); `exists` says no for either.
//! - Writes are atomic: the bytes go to a hidden temporary file ([`TMP_PREFIX`]) in the same
//!   directory, which is then renamed over the final name, so a reader (or a Globus transfer)
//!   sees the whole object or none of it, and a failed write leaves nothing behind.
//! - Removing an entry removes it (a link, never its target); an absent one is no error.
//! - The file system is reached through [`blocking`], which keeps the caller's runtime going
//!   and maps I/O errors with [`Error::io`] (temporary, permanent or a full disk).

use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::Path;

use bytes::Bytes;

use crate::connector::ObjectSink;
use crate::error::{Error, Result};
use crate::key::Key;

/// Prefix of the temporary files that writes go through before they are renamed into place;
/// no key may start with it, so no key can name an in-progress write.
pub const TMP_PREFIX: &str = ".tmp-";

/// Prefix of names kept for ProxyStore's own use in an object directory (e.g. the directory
/// where the store server keeps each object's expiry and digest); no key may start with it.
pub const RESERVED_PREFIX: &str = ".proxystore";

/// Why `name` cannot be an object's file name in a directory, or `None` when it can: it must
/// be a plain file name (not empty, `.` or `..`, without a path separator or NUL), must not
/// start with [`TMP_PREFIX`] or [`RESERVED_PREFIX`], and must be at most 255 bytes.
pub(crate) fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty key")
    } else if name == "." || name == ".." {
        Some("a relative path component")
    } else if name.contains(['/', '\\']) {
        Some("contains a path separator")
    } else if name.contains('\0') {
        Some("contains NUL")
    } else if name.starts_with(TMP_PREFIX) || name.starts_with(RESERVED_PREFIX) {
        Some("reserved prefix (.tmp- or .proxystore)")
    } else if name.len() > 255 {
        Some("longer than 255 bytes")
    } else {
        None
    }
}

/// Open the object file at `path` for reading, with its length; `None` when absent.
///
/// Only a regular file is an object. A symbolic link planted in the directory by someone who
/// can write to it would make a key read a file outside the directory, and opening a FIFO would
/// block: the entry is checked without following links before it is opened, and the opened file
/// must be that same entry (so a swap in between is refused too).
///
/// # Errors
/// An I/O error, or [`std::io::ErrorKind::Other`] when the entry is not a regular file.
pub fn open_object(path: &Path) -> std::io::Result<Option<(std::fs::File, u64)>> {
    let not_an_object = || {
        std::io::Error::other(format!(
            "{} is not a regular file (a symbolic link or special file in the directory)",
            path.display()
        ))
    };
    let Some(entry) = not_found_is_none(std::fs::symlink_metadata(path))? else {
        return Ok(None);
    };
    if !entry.is_file() {
        return Err(not_an_object());
    }
    let Some(f) = not_found_is_none(std::fs::File::open(path))? else {
        return Ok(None);
    };
    let opened = f.metadata()?;
    if !same_file(&entry, &opened) {
        return Err(not_an_object());
    }
    Ok(Some((f, opened.len())))
}

#[cfg(unix)]
fn same_file(entry: &std::fs::Metadata, opened: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    entry.dev() == opened.dev() && entry.ino() == opened.ino()
}

#[cfg(not(unix))]
fn same_file(_entry: &std::fs::Metadata, opened: &std::fs::Metadata) -> bool {
    opened.is_file()
}

/// The object at `path`, whole or bytes `range` of it (clamped to its length); `None` when
/// absent. Opened with [`open_object`], so links and special files are refused.
pub(crate) fn read_object(
    path: &Path,
    range: Option<Range<u64>>,
) -> std::io::Result<Option<Bytes>> {
    let Some((mut f, len)) = open_object(path)? else {
        return Ok(None);
    };
    let Some(range) = range else {
        let (mut buf, head) = buffer_for(len)?;
        f.read_to_end(&mut buf)?;
        return Ok(Some(Bytes::from(buf).slice(head..)));
    };
    let end = range.end.min(len);
    let start = range.start.min(end);
    f.seek(SeekFrom::Start(start))?;
    let (mut buf, head) = buffer_for(end - start)?;
    f.take(end - start).read_to_end(&mut buf)?;
    Ok(Some(Bytes::from(buf).slice(head..)))
}

/// The object at `path` read into `sink` (see [`crate::connector::Connector::get_into`]);
/// `false` when absent. Opened with [`open_object`], so links and special files are refused.
pub(crate) fn read_object_into(
    kind: &'static str,
    path: &Path,
    sink: &mut ObjectSink<'_>,
) -> Result<bool> {
    let io = |e| Error::io(kind, "get", e);
    let Some((f, len)) = open_object(path).map_err(io)? else {
        return Ok(false);
    };
    sink.start(len)?;
    sink.read_file(&f).map_err(io)?;
    if !sink.is_complete() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "{} ended after {} of its {len} bytes (changed while read)",
                path.display(),
                sink.filled()
            ),
        )));
    }
    Ok(true)
}

/// A buffer for `len` bytes read from a file, and the length of its head
/// ([`crate::buffer::aligned_with_capacity`]).
fn buffer_for(len: u64) -> std::io::Result<(Vec<u8>, usize)> {
    usize::try_from(len)
        .ok()
        .and_then(crate::buffer::aligned_with_capacity)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("cannot allocate {len} bytes"),
            )
        })
}

/// Whether `path` is an object: a regular file, checked without following links.
pub(crate) fn is_object(path: &Path) -> std::io::Result<bool> {
    Ok(not_found_is_none(std::fs::symlink_metadata(path))?.is_some_and(|m| m.is_file()))
}

/// Write `data` as the object at `path` in `dir`: into a new temporary file in `dir`, flushed
/// to disk first when `fsync`, then renamed over `path` (replacing whatever entry was there, a
/// link itself rather than its target). On failure the temporary file is removed.
pub(crate) fn write_atomic(
    dir: &Path,
    path: &Path,
    data: &[u8],
    fsync: bool,
) -> std::io::Result<()> {
    let tmp = dir.join(format!("{TMP_PREFIX}{}", Key::random()));
    let result = (|| {
        let mut f = std::fs::File::create_new(&tmp)?;
        f.write_all(data)?;
        if fsync {
            f.sync_all()?;
        }
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Remove the entry at `path` (a link, not its target); whether there was one.
pub(crate) fn remove(path: &Path) -> std::io::Result<bool> {
    Ok(not_found_is_none(std::fs::remove_file(path))?.is_some())
}

/// `Ok(None)` for a not-found error.
pub(crate) fn not_found_is_none<T>(r: std::io::Result<T>) -> std::io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Run blocking file I/O without stalling the caller's runtime; an I/O error becomes
/// [`Error::io`] of connector `kind` and operation `what`.
///
/// A hop to tokio's blocking pool and back costs about as much as reading a megabyte from
/// the page cache, so on a multi-thread runtime the call runs in place
/// (`block_in_place` moves this worker's other tasks to another thread meanwhile). A
/// current-thread runtime cannot do that and hops (`spawn_blocking`); outside any runtime there
/// is nothing to stall.
pub(crate) async fn blocking<T: Send + 'static>(
    kind: &'static str,
    what: &'static str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let out = match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        Ok(_) => tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Error::backend(kind, what, e))?,
        Err(_) => f(),
    };
    out.map_err(|e| Error::io(kind, what, e))
}

/// Run blocking file I/O that borrows from its caller (so it cannot move to another
/// thread): in place on a multi-thread runtime (`block_in_place`, as [`blocking`] does) or
/// outside any runtime; `None` on a current-thread runtime, which only a `'static` call can
/// leave (the caller then does without it).
pub(crate) fn blocking_here<T>(f: impl FnOnce() -> Result<T>) -> Option<Result<T>> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            Some(tokio::task::block_in_place(f))
        }
        Ok(_) => None,
        Err(_) => Some(f()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_leave_the_directory_or_hide_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "nul\0",
            ".tmp-x",
            ".proxystore-meta",
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
        assert!(name_problem(&"x".repeat(256)).is_some());
        for good in [
            "3f2a-weights",
            "données ✓",
            ".hidden",
            "..x",
            &"x".repeat(255),
        ] {
            assert_eq!(name_problem(good), None, "{good:?}");
        }
    }

    #[test]
    fn write_then_read_whole_and_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("obj");
        write_atomic(dir.path(), &path, b"0123456789", true).unwrap();
        assert_eq!(read_object(&path, None).unwrap().unwrap(), "0123456789");
        assert_eq!(read_object(&path, Some(2..5)).unwrap().unwrap(), "234");
        assert_eq!(read_object(&path, Some(8..100)).unwrap().unwrap(), "89");
        assert_eq!(read_object(&path, Some(20..30)).unwrap().unwrap(), "");
        assert!(is_object(&path).unwrap());
        // Only the object: no temporary file is left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
        assert_eq!(read_object(&path, None).unwrap(), None);
        assert!(!is_object(&path).unwrap());
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // The final name is a non-empty directory: the rename fails.
        let path = dir.path().join("taken");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"x").unwrap();
        assert!(write_atomic(dir.path(), &path, b"data", false).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn links_are_not_objects() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"secret").unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let link = store.join("link");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        assert!(read_object(&link, None).is_err());
        assert!(read_object(&link, Some(0..3)).is_err());
        assert!(!is_object(&link).unwrap());
        write_atomic(&store, &link, b"new", false).unwrap();
        assert!(!link.is_symlink());
        std::os::unix::fs::symlink(&secret, store.join("gone")).unwrap();
        assert!(remove(&store.join("gone")).unwrap());
        assert_eq!(std::fs::read(&secret).unwrap(), b"secret");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn blocking_maps_io_errors_with_the_connector_kind() {
        let e = blocking("test-kind", "read", || {
            Err::<(), _>(std::io::Error::from(std::io::ErrorKind::StorageFull))
        })
        .await
        .unwrap_err();
        assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
        let e = blocking("test-kind", "read", || {
            Err::<(), _>(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
        })
        .await
        .unwrap_err();
        assert!(
            matches!(&e, Error::Backend { connector, .. } if connector == "test-kind"),
            "{e}"
        );
        assert!(!e.is_retryable());
    }
}
