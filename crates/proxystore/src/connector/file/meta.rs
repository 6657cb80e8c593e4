//! What the file connector keeps beside an object ([`ObjectMeta`]: expiry time, digest), so
//! that a store server resumes them after a restart.
//!
//! Each object's description is a small file of the same name under [`META_DIR`]. It names the
//! inode and size of the object file it describes and is written before that file is renamed
//! into place: a crash between the two leaves a description that matches no object, which is
//! ignored (and removed by [`super::FileConnector::clean_up`]), never one applied to the wrong
//! object. An object replaced behind the connector's back (a new inode) loses its description
//! the same way.

use std::fs::{File, Metadata};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::super::object_dir::{TMP_PREFIX, not_found_is_none};
use crate::connector::stream::{ObjectMeta, StoredObject};
use crate::digest::Digest;
use crate::key::Key;

/// The directory (inside the object directory) of the objects' descriptions. It starts with
/// [`super::RESERVED_PREFIX`], so no key can name it.
pub const META_DIR: &str = ".proxystore-meta";

/// Where the descriptions of the objects of `dir` live.
pub(super) fn meta_dir(dir: &Path) -> PathBuf {
    dir.join(META_DIR)
}

/// The identity of an open file: its inode where there is one.
fn identity(m: &Metadata) -> u64 {
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
fn describe(meta: &ObjectMeta, file: &File) -> std::io::Result<String> {
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

/// Write the description of the object `key` about to be stored from `file` (or remove a
/// stale one when `meta` is empty), before that file is renamed into place.
pub(super) fn write(
    dir: &Path,
    key: &Key,
    meta: &ObjectMeta,
    file: &File,
    fsync: bool,
) -> std::io::Result<()> {
    let meta_dir = meta_dir(dir);
    let description = meta_dir.join(key.as_str());
    if meta.is_empty() {
        return not_found_is_none(std::fs::remove_file(&description)).map(|_| ());
    }
    let text = describe(meta, file)?;
    // Made on first use: a directory of objects without expiry or digest has nothing but the
    // objects.
    std::fs::create_dir_all(&meta_dir)?;
    let t = meta_dir.join(format!("{TMP_PREFIX}{}", Key::random()));
    let written = std::fs::write(&t, text).and_then(|()| {
        if fsync {
            File::open(&t)?.sync_all()?;
        }
        std::fs::rename(&t, &description)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&t);
    }
    written
}

/// Remove the description of `key`, if any.
pub(super) fn remove(dir: &Path, key: &str) -> std::io::Result<()> {
    not_found_is_none(std::fs::remove_file(meta_dir(dir).join(key))).map(|_| ())
}

/// The description of the object `name` whose file has metadata `m`, when there is one and it
/// is of this very file; a description that cannot be read is ignored.
fn read(dir: &Path, name: &str, m: &Metadata) -> Option<ObjectMeta> {
    let text = std::fs::read_to_string(meta_dir(dir).join(name)).ok()?;
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

/// Every object of `dir` (regular files whose names are keys) with its description.
pub(super) fn inventory(dir: &Path) -> std::io::Result<Vec<StoredObject>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let m = entry.metadata()?;
        if m.is_file() && super::validate_key(&name).is_ok() {
            let meta = read(dir, &name, &m).unwrap_or_default();
            out.push(StoredObject::new(Key::from(name), m.len(), meta));
        }
    }
    Ok(out)
}

/// Remove what writes cut off by a crash left in `dir`: temporary files, and descriptions that
/// describe no object.
pub(super) fn clean_up(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let Some(descriptions) = not_found_is_none(std::fs::read_dir(meta_dir(dir)))? else {
        return Ok(());
    };
    for entry in descriptions {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let described = std::fs::symlink_metadata(dir.join(&name))
            .ok()
            .filter(Metadata::is_file)
            .and_then(|m| read(dir, &name, &m));
        if described.is_none() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_key_names_the_description_directory() {
        assert!(META_DIR.starts_with(super::super::RESERVED_PREFIX));
        assert!(super::super::validate_key(META_DIR).is_err());
    }

    #[test]
    fn a_description_applies_only_to_the_file_it_was_written_for() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::from("k");
        let path = dir.path().join("k");
        std::fs::write(&path, b"abc").unwrap();
        let meta = ObjectMeta::new(
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(5)),
            crate::DigestAlgorithm::Xxh3.digest(b"abc"),
        );
        write(dir.path(), &key, &meta, &File::open(&path).unwrap(), false).unwrap();
        assert_eq!(inventory(dir.path()).unwrap()[0].meta, meta);
        // Replaced behind its back: a new file, the description no longer applies.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(dir.path().join("other"), b"keeps the inode busy").unwrap();
        std::fs::write(&path, b"xyz!").unwrap();
        let found = inventory(dir.path()).unwrap();
        assert!(found.iter().all(|o| o.meta.is_empty()), "{found:?}");
        clean_up(dir.path()).unwrap();
        assert!(!meta_dir(dir.path()).join("k").exists());
    }
}
