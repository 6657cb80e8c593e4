//! The connector conformance suite: one set of checks every connector must pass.
//!
//! Each check is a public async function over a connector; [`conformance_tests!`](crate::conformance_tests) expands all
//! of them into `#[tokio::test]`s for one connector fixture. A new connector is done when it
//! passes every check. Checks return `Err` with a message naming what broke, so a failure reads
//! like a bug report.
//!
//! ```
//! // In a connector's test file (tests/conformance.rs):
//! use proxystore::connector::memory::MemoryConnector;
//!
//! async fn fixture() -> proxystore::conformance::Fixture {
//!     proxystore::conformance::Fixture::new(MemoryConnector::new("conformance-doc"))
//! }
//! proxystore::conformance_tests!(fixture);
//! # fn main() {}
//! ```

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::connector::{Connector, ObjectMemory, ObjectSink, PutOptions};
use crate::error::Error;
use crate::key::Key;

/// Result of a check: `Err` describes the failure.
pub type CheckResult = std::result::Result<(), String>;

/// A connector under test, plus whatever must stay alive while it is used (a server process,
/// a temporary directory).
pub struct Fixture {
    /// The connector.
    pub connector: Arc<dyn Connector>,
    /// Dropped after the checks.
    pub guard: Option<Box<dyn Any + Send>>,
}

impl Fixture {
    /// A fixture without a guard.
    pub fn new(connector: impl crate::IntoConnector) -> Self {
        Fixture {
            connector: connector.into_connector(),
            guard: None,
        }
    }

    /// A fixture that keeps `guard` alive.
    pub fn with_guard(connector: impl crate::IntoConnector, guard: impl Any + Send) -> Self {
        Fixture {
            connector: connector.into_connector(),
            guard: Some(Box::new(guard)),
        }
    }
}

fn fail(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Deterministic, non-repeating-looking bytes of `len`.
pub fn payload(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let take = (len - v.len()).min(8);
        v.extend_from_slice(&x.to_le_bytes()[..take]);
    }
    Bytes::from(v)
}

async fn put_get_evict(c: &dyn Connector, data: Bytes, what: &str) -> CheckResult {
    let key = c.put(data.clone()).await.map_err(|e| fail(what, e))?;
    let back = c
        .get(&key)
        .await
        .map_err(|e| fail(what, e))?
        .ok_or_else(|| format!("{what}: get of {key} after put returned None"))?;
    if back != data {
        return Err(format!(
            "{what}: got {} bytes back, not the {} put (or different content)",
            back.len(),
            data.len()
        ));
    }
    c.evict(&key).await.map_err(|e| fail(what, e))
}

/// Objects of 0 B, 1 B, 1 KiB and 1 MiB come back byte-identical.
pub async fn round_trip(c: &dyn Connector) -> CheckResult {
    for (i, len) in [0usize, 1, 1024, 1 << 20].into_iter().enumerate() {
        put_get_evict(c, payload(len, i as u64), &format!("round trip of {len} B")).await?;
    }
    Ok(())
}

/// A 64 MiB object comes back byte-identical.
pub async fn large_object(c: &dyn Connector) -> CheckResult {
    put_get_evict(c, payload(64 << 20, 64), "round trip of 64 MiB").await
}

/// Room for an object in a zeroed vector, that never adopts `Bytes`: what a caller whose
/// memory must hold the object (a Python `bytes`) gives [`Connector::get_into`].
#[derive(Default)]
struct OwnRoom(Vec<std::mem::MaybeUninit<u8>>);

impl ObjectMemory for OwnRoom {
    fn allocate(&mut self, len: usize) -> crate::Result<()> {
        self.0 = vec![std::mem::MaybeUninit::new(0); len];
        Ok(())
    }
    fn room(&mut self) -> &mut [std::mem::MaybeUninit<u8>] {
        &mut self.0
    }
}

/// `get_into` writes the object `get` returns, whole, into memory that takes `Bytes` as they
/// are and into memory that must hold the bytes itself, hashing what it wrote; an absent
/// key writes nothing.
pub async fn get_into(c: &dyn Connector) -> CheckResult {
    use crate::digest::DigestAlgorithm::{Blake3, Xxh3};
    for (i, len) in [0usize, 1, 1000, 300 << 10, 5 << 20]
        .into_iter()
        .enumerate()
    {
        let data = payload(len, 40 + i as u64);
        let what = format!("get_into of {len} B");
        let key = c.put(data.clone()).await.map_err(|e| fail(&what, e))?;
        let hint = if i % 2 == 0 { len as u64 } else { 0 };
        let got = crate::buffer::get_into_buffer(c, &key, hint, Blake3)
            .await
            .map_err(|e| fail(&what, e))?;
        match got {
            Some((back, digest)) if back == data && digest == Blake3.digest(&data) => {}
            Some((back, _)) => {
                return Err(format!(
                    "{what}: {} bytes came back, or a wrong digest, into a store's buffer",
                    back.len()
                ));
            }
            None => return Err(format!("{what}: absent")),
        }
        let mut room = OwnRoom::default();
        let mut sink = ObjectSink::new(&mut room).hashing(Xxh3);
        let found = c
            .get_into(&key, &mut sink)
            .await
            .map_err(|e| fail(&what, e))?;
        let complete = sink.complete().map_err(|e| fail(&what, e))?;
        // The sink hashes the bytes it wrote, so the digest vouches for the room's content.
        if !found || complete != len as u64 || sink.digest() != Xxh3.digest(&data) {
            return Err(format!(
                "{what} into memory of the caller's: found {found}, {complete} bytes, digest \
                 {:?} where {:?} was put",
                sink.digest(),
                Xxh3.digest(&data)
            ));
        }
        c.evict(&key).await.map_err(|e| fail("evict", e))?;
        let mut room = OwnRoom::default();
        let mut sink = ObjectSink::new(&mut room);
        match c.get_into(&key, &mut sink).await {
            Ok(false) if sink.size().is_none() => {}
            other => {
                return Err(format!(
                    "get_into of an evicted key gave {other:?} with {sink:?}, expected \
                     Ok(false) and nothing written"
                ));
            }
        }
    }
    Ok(())
}

/// `put_hashing` stores the object as `put` does and returns its digest with the algorithm
/// asked for (none for `None`), small and large (9 MiB: what the Redis connector hashes as it
/// writes).
pub async fn put_hashing(c: &dyn Connector) -> CheckResult {
    use crate::digest::DigestAlgorithm::{Blake3, None as NoDigest, Xxh3};
    let cases = [
        (0usize, NoDigest),
        (1000, Xxh3),
        (300 << 10, Blake3),
        (9 << 20, Xxh3),
        (9 << 20, Blake3),
        (9 << 20, NoDigest),
    ];
    for (i, (len, algorithm)) in cases.into_iter().enumerate() {
        let data = payload(len, 70 + i as u64);
        let what = format!("put_hashing of {len} B with {}", algorithm.as_str());
        let (key, digest) = c
            .put_hashing(data.clone(), &PutOptions::default(), algorithm)
            .await
            .map_err(|e| fail(&what, e))?;
        if digest != algorithm.digest(&data) {
            return Err(format!(
                "{what}: digest {digest:?}, expected {:?}",
                algorithm.digest(&data)
            ));
        }
        match c.get(&key).await.map_err(|e| fail(&what, e))? {
            Some(back) if back == data => {}
            Some(back) => return Err(format!("{what}: {} other bytes came back", back.len())),
            None => return Err(format!("{what}: absent after the put")),
        }
        c.evict(&key).await.map_err(|e| fail("evict", e))?;
    }
    Ok(())
}

/// A key that was put then evicted reads as absent everywhere, and evicting it again is fine.
pub async fn missing_key(c: &dyn Connector) -> CheckResult {
    let key = c.put(payload(10, 1)).await.map_err(|e| fail("put", e))?;
    c.evict(&key).await.map_err(|e| fail("evict", e))?;
    match c.get(&key).await {
        Ok(None) => {}
        other => {
            return Err(format!(
                "get of evicted key gave {other:?}, expected Ok(None)"
            ));
        }
    }
    match c.exists(&key).await {
        Ok(false) => {}
        other => return Err(format!("exists of evicted key gave {other:?}")),
    }
    match c.get_range(&key, 0..5).await {
        Ok(None) => {}
        other => return Err(format!("get_range of evicted key gave {other:?}")),
    }
    c.evict(&key)
        .await
        .map_err(|e| fail("evicting an absent key must not fail", e))
}

/// `exists` follows put and evict; evicting one key leaves others alone.
pub async fn exists_and_evict(c: &dyn Connector) -> CheckResult {
    let a = c.put(payload(100, 2)).await.map_err(|e| fail("put", e))?;
    let b = c.put(payload(100, 3)).await.map_err(|e| fail("put", e))?;
    if a == b {
        return Err("two puts returned the same key".into());
    }
    for k in [&a, &b] {
        if !c.exists(k).await.map_err(|e| fail("exists", e))? {
            return Err(format!("exists({k}) false right after put"));
        }
    }
    c.evict(&a).await.map_err(|e| fail("evict", e))?;
    if c.exists(&a).await.map_err(|e| fail("exists", e))? {
        return Err("exists true after evict".into());
    }
    if c.get(&b).await.map_err(|e| fail("get", e))? != Some(payload(100, 3)) {
        return Err("evicting one key disturbed another".into());
    }
    c.evict(&b).await.map_err(|e| fail("evict", e))
}

/// Batch put, get and evict keep order, and absent keys read as `None` in a batch.
pub async fn batches(c: &dyn Connector) -> CheckResult {
    let data: Vec<Bytes> = (0..10).map(|i| payload(i * 37, i as u64)).collect();
    let keys = c
        .put_batch(data.clone(), &PutOptions::default())
        .await
        .map_err(|e| fail("put_batch", e))?;
    if keys.len() != data.len() {
        return Err(format!("put_batch gave {} keys for 10 objects", keys.len()));
    }
    c.evict(&keys[3]).await.map_err(|e| fail("evict", e))?;
    let got = c.get_batch(&keys).await.map_err(|e| fail("get_batch", e))?;
    for (i, (g, d)) in got.iter().zip(&data).enumerate() {
        let expected = if i == 3 { None } else { Some(d) };
        if g.as_ref() != expected {
            return Err(format!("get_batch item {i} is wrong"));
        }
    }
    c.evict_batch(&keys)
        .await
        .map_err(|e| fail("evict_batch", e))?;
    for k in &keys {
        if c.exists(k).await.map_err(|e| fail("exists", e))? {
            return Err(format!("{k} still exists after evict_batch"));
        }
    }
    Ok(())
}

/// Ranged reads return the right slice, clamped to the object.
pub async fn ranges(c: &dyn Connector) -> CheckResult {
    let data = payload(1000, 9);
    let key = c.put(data.clone()).await.map_err(|e| fail("put", e))?;
    for (range, expected) in [
        (0..10, data.slice(0..10)),
        (500..501, data.slice(500..501)),
        (990..2000, data.slice(990..1000)),
        (0..1000, data.clone()),
        (2000..3000, Bytes::new()),
        (10..10, Bytes::new()),
    ] {
        let got = c
            .get_range(&key, range.clone())
            .await
            .map_err(|e| fail("get_range", e))?;
        if got.as_ref() != Some(&expected) {
            return Err(format!(
                "get_range({range:?}) gave {:?} bytes, expected {}",
                got.map(|g| g.len()),
                expected.len()
            ));
        }
    }
    c.evict(&key).await.map_err(|e| fail("evict", e))
}

/// 16 concurrent tasks putting, getting and evicting see only their own objects.
pub async fn concurrency(c: &dyn Connector) -> CheckResult {
    let tasks = (0..16u64).map(|t| async move {
        for i in 0..8u64 {
            let seed = t * 100 + i;
            put_get_evict(
                c,
                payload((seed as usize * 131) % 20_000, seed),
                &format!("task {t} object {i}"),
            )
            .await?;
        }
        Ok::<(), String>(())
    });
    for r in futures::future::join_all(tasks).await {
        r?;
    }
    Ok(())
}

/// A connector rebuilt from `config()` has the same config and sees the same objects.
pub async fn config_round_trip(c: &dyn Connector) -> CheckResult {
    let config = c.config();
    let json = serde_json::to_string(&config).map_err(|e| fail("config to JSON", e))?;
    let parsed: crate::ConnectorConfig =
        serde_json::from_str(&json).map_err(|e| fail("config from JSON", e))?;
    let rebuilt = crate::kinds::from_config(&parsed).map_err(|e| fail("from_config", e))?;
    if rebuilt.config() != config {
        return Err(format!(
            "rebuilt config differs: {:?} vs {:?}",
            rebuilt.config(),
            config
        ));
    }
    let data = payload(4096, 11);
    let key = c.put(data.clone()).await.map_err(|e| fail("put", e))?;
    let got = rebuilt
        .get(&key)
        .await
        .map_err(|e| fail("get through rebuilt connector", e))?;
    if got != Some(data) {
        return Err("rebuilt connector does not see the object".into());
    }
    rebuilt
        .evict(&key)
        .await
        .map_err(|e| fail("evict through rebuilt connector", e))?;
    if c.exists(&key).await.map_err(|e| fail("exists", e))? {
        return Err("evict through rebuilt connector not seen by the original".into());
    }
    Ok(())
}

/// Hostile and unusual keys never panic, never reach other objects, and give `None`/`false`
/// or a typed error; deferred puts (where supported) accept unicode keys.
pub async fn hostile_keys(c: &dyn Connector) -> CheckResult {
    let data = payload(64, 12);
    let victim = c.put(data.clone()).await.map_err(|e| fail("put", e))?;
    let long = "k".repeat(4096);
    let hostile = [
        "",
        ".",
        "..",
        "../x",
        "../../etc/passwd",
        "/etc/passwd",
        "a/b",
        "a\\b",
        "nul\0byte",
        "*",
        "?",
        "key with spaces",
        "ключ-✓-鍵",
        long.as_str(),
    ];
    for k in hostile {
        let key = Key::from(k);
        let ok_err = |e: &Error| {
            matches!(
                e,
                Error::InvalidKey { .. } | Error::NotFound { .. } | Error::Backend { .. }
            )
        };
        // A key `check_key` refuses is refused by the calls too (a service relies on it).
        let refused = match c.check_key(&key) {
            Ok(()) => false,
            Err(Error::InvalidKey { .. }) => true,
            Err(e) => return Err(format!("check_key({k:?}) gave {e:?}")),
        };
        match c.get(&key).await {
            Err(Error::InvalidKey { .. }) => {}
            _ if refused => return Err(format!("check_key refused {k:?}, get did not")),
            Ok(None) => {}
            Err(e) if ok_err(&e) => {}
            other => return Err(format!("get({k:?}) gave {other:?}")),
        }
        match c.exists(&key).await {
            Ok(false) => {}
            Err(e) if ok_err(&e) => {}
            other => return Err(format!("exists({k:?}) gave {other:?}")),
        }
        match c.evict(&key).await {
            Ok(()) => {}
            Err(e) if ok_err(&e) => {}
            Err(e) => return Err(format!("evict({k:?}) gave {e:?}")),
        }
    }
    if c.get(&victim).await.map_err(|e| fail("get", e))? != Some(data) {
        return Err("a hostile key disturbed another object".into());
    }
    c.evict(&victim).await.map_err(|e| fail("evict", e))?;
    deferred_put(c).await
}

/// `new_key` + `set` (a deferred put), where supported.
pub async fn deferred_put(c: &dyn Connector) -> CheckResult {
    let key = match c.new_key(&PutOptions::default()).await {
        Ok(k) => k,
        Err(Error::Unsupported { .. }) => return Ok(()),
        Err(e) => return Err(fail("new_key", e)),
    };
    if c.exists(&key).await.map_err(|e| fail("exists", e))? {
        return Err("a new key exists before set".into());
    }
    let data = payload(300, 13);
    c.set(&key, data.clone())
        .await
        .map_err(|e| fail("set", e))?;
    if c.get(&key).await.map_err(|e| fail("get", e))? != Some(data) {
        return Err("get after set returned something else".into());
    }
    c.evict(&key).await.map_err(|e| fail("evict", e))
}

/// [`Connector::wait`] and [`Connector::set_once`], where deferred puts are supported: a
/// wait times out on an absent key, wakes when another caller [`Connector::set`]s the key
/// while it waits, and returns at once for a key that is there; `set_once` refuses a taken
/// key and leaves it as it was, and of racing callers exactly one writes where it says it is
/// atomic.
pub async fn wait(c: &dyn Connector) -> CheckResult {
    let key = match c.new_key(&PutOptions::default()).await {
        Ok(k) => k,
        Err(Error::Unsupported { .. }) => return Ok(()),
        Err(e) => return Err(fail("new_key", e)),
    };
    if c.wait(&key, Duration::from_millis(30))
        .await
        .map_err(|e| fail("wait", e))?
    {
        return Err("wait on an absent key said it is there".into());
    }
    let data = payload(1000, 21);
    let waiting = c.wait(&key, Duration::from_secs(20));
    let writing = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.set(&key, data.clone()).await
    };
    let (seen, written) = tokio::join!(waiting, writing);
    written.map_err(|e| fail("set", e))?;
    if !seen.map_err(|e| fail("wait", e))? {
        return Err("wait did not see a set made while it waited".into());
    }
    let started = std::time::Instant::now();
    if !c
        .wait(&key, Duration::from_secs(20))
        .await
        .map_err(|e| fail("wait", e))?
    {
        return Err("wait on a present key said it is absent".into());
    }
    if started.elapsed() > Duration::from_secs(10) {
        return Err("wait on a present key did not return at once".into());
    }
    if c.get(&key).await.map_err(|e| fail("get", e))? != Some(data.clone()) {
        return Err("get after a waited-for set returned something else".into());
    }
    // set_once: refused over an object, which stays as it was.
    if c.set_once(&key, payload(10, 3))
        .await
        .map_err(|e| fail("set_once", e))?
    {
        return Err("set_once wrote over an object".into());
    }
    if c.get(&key).await.map_err(|e| fail("get", e))? != Some(data) {
        return Err("a refused set_once changed the object".into());
    }
    c.evict(&key).await.map_err(|e| fail("evict", e))?;
    // On a new key it writes, once; where it is atomic, one of racing writers wins.
    let key = c
        .new_key(&PutOptions::default())
        .await
        .map_err(|e| fail("new_key", e))?;
    let racers = if c.set_once_is_atomic() { 8u64 } else { 1 };
    let tries = (0..racers).map(|i| c.set_once(&key, payload(100, i)));
    let won = futures::future::join_all(tries)
        .await
        .into_iter()
        .collect::<crate::error::Result<Vec<bool>>>()
        .map_err(|e| fail("set_once", e))?;
    if won.iter().filter(|w| **w).count() != 1 {
        return Err(format!(
            "{racers} racing set_once calls wrote {won:?}, not exactly once"
        ));
    }
    c.evict(&key).await.map_err(|e| fail("evict", e))
}

/// Objects in pieces: [`Connector::reader`] gives back the whole object and ranges of it, in
/// chunks no larger than asked for; a native [`Connector::writer`] (when the connector has one)
/// stores what it was given on finish, and leaves nothing when dropped before.
pub async fn streaming(c: &dyn Connector) -> CheckResult {
    let data = payload(300 * 1024 + 7, 17);
    let key = c.put(data.clone()).await.map_err(|e| fail("put", e))?;
    for range in [None, Some(1000..5000), Some(300_000..400_000), Some(10..10)] {
        let mut reader = c
            .reader(&key, range.clone())
            .await
            .map_err(|e| fail("reader", e))?
            .ok_or("reader found nothing under a key just put")?;
        let (start, end) = range.clone().map_or((0, data.len()), |r| {
            let end = (r.end as usize).min(data.len());
            ((r.start as usize).min(end), end)
        });
        if reader.offset != start as u64 || reader.len != (end - start) as u64 {
            return Err(format!(
                "reader({range:?}) reports offset {} and length {}, expected {start} and {}",
                reader.offset,
                reader.len,
                end - start
            ));
        }
        if range.is_none() && reader.object_size != data.len() as u64 {
            return Err(format!(
                "reader reports an object of {} bytes, expected {}",
                reader.object_size,
                data.len()
            ));
        }
        let mut got = Vec::new();
        while let Some(chunk) = reader
            .next_chunk(64 * 1024)
            .await
            .map_err(|e| fail("next_chunk", e))?
        {
            if chunk.len() > 64 * 1024 {
                return Err(format!("a chunk of {} bytes, asked for 65536", chunk.len()));
            }
            got.extend_from_slice(&chunk);
        }
        if got != data[start..end] {
            return Err(format!("reader({range:?}) gave other bytes"));
        }
    }
    c.evict(&key).await.map_err(|e| fail("evict", e))?;
    if c.reader(&key, None)
        .await
        .map_err(|e| fail("reader of an evicted key", e))?
        .is_some()
    {
        return Err("reader found an evicted key".into());
    }

    let options = PutOptions::default();
    let Some(mut writer) = c
        .writer(None, Some(data.len() as u64), &options)
        .await
        .map_err(|e| fail("writer", e))?
    else {
        return Ok(());
    };
    for part in [
        data.slice(..1000),
        data.slice(1000..200_000),
        data.slice(200_000..),
    ] {
        writer.write(part).await.map_err(|e| fail("write", e))?;
    }
    let key = writer.finish().await.map_err(|e| fail("finish", e))?;
    if c.get(&key).await.map_err(|e| fail("get", e))? != Some(data.clone()) {
        return Err("get after a streamed put returned something else".into());
    }
    c.evict(&key).await.map_err(|e| fail("evict", e))?;

    // Dropped before finish: nothing under the key, now or a little later.
    let key = match c.new_key(&options).await {
        Ok(k) => k,
        Err(Error::Unsupported { .. }) => return Ok(()),
        Err(e) => return Err(fail("new_key", e)),
    };
    let mut writer = c
        .writer(Some(&key), None, &options)
        .await
        .map_err(|e| fail("writer", e))?
        .ok_or("a connector with a writer gave none for a deferred key")?;
    writer
        .write(data.slice(..100_000))
        .await
        .map_err(|e| fail("write", e))?;
    drop(writer);
    for _ in 0..2 {
        if c.exists(&key).await.map_err(|e| fail("exists", e))? {
            return Err("a writer dropped before finish left an object".into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Where a connector lists its objects ([`Connector::inventory`]): an object put, and one
/// streamed with metadata, are listed with their sizes (and that metadata, when the connector
/// keeps it); evicted, they are not.
pub async fn inventory(c: &dyn Connector) -> CheckResult {
    use crate::connector::stream::ObjectMeta;
    let listed = |objects: &[crate::connector::stream::StoredObject], key: &Key| {
        objects.iter().find(|o| &o.key == key).cloned()
    };
    if c.inventory()
        .await
        .map_err(|e| fail("inventory", e))?
        .is_none()
    {
        return Ok(());
    }
    let plain = c.put(payload(1000, 3)).await.map_err(|e| fail("put", e))?;
    let data = payload(5000, 4);
    let meta = ObjectMeta::new(
        Some(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(4_000_000_000)),
        crate::DigestAlgorithm::Xxh3.digest(&data),
    );
    let described = match c
        .writer(None, Some(data.len() as u64), &PutOptions::default())
        .await
        .map_err(|e| fail("writer", e))?
    {
        Some(mut w) => {
            w.write(data).await.map_err(|e| fail("write", e))?;
            w.finish_with(&meta)
                .await
                .map_err(|e| fail("finish_with", e))?
        }
        None => c.put(data).await.map_err(|e| fail("put", e))?,
    };
    let objects = c
        .inventory()
        .await
        .map_err(|e| fail("inventory", e))?
        .ok_or("inventory stopped listing")?;
    match listed(&objects, &plain) {
        Some(o) if o.size == 1000 && o.meta.is_empty() => {}
        other => return Err(format!("a put object is listed as {other:?}")),
    }
    match listed(&objects, &described) {
        Some(o) if o.size == 5000 && (o.meta == meta || o.meta.is_empty()) => {}
        other => return Err(format!("a streamed object is listed as {other:?}")),
    }
    c.evict_batch(&[plain.clone(), described.clone()])
        .await
        .map_err(|e| fail("evict_batch", e))?;
    let objects = c
        .inventory()
        .await
        .map_err(|e| fail("inventory", e))?
        .ok_or("inventory stopped listing")?;
    if listed(&objects, &plain).is_some() || listed(&objects, &described).is_some() {
        return Err("evicted objects are still listed".into());
    }
    Ok(())
}

/// Expand every check into a `#[tokio::test]` for the fixture returned by the async function
/// `$fixture` (of type `async fn() -> Fixture`).
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:path) => {
        $crate::conformance_tests!(@each $fixture;
            round_trip, large_object, get_into, put_hashing, missing_key, exists_and_evict,
            batches, ranges, concurrency, config_round_trip, hostile_keys, streaming, inventory,
            wait);
    };
    (@each $fixture:path; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let fixture: $crate::conformance::Fixture = $fixture().await;
                let result = $crate::conformance::$check(&*fixture.connector).await;
                drop(fixture);
                if let Err(e) = result {
                    panic!("conformance check `{}` failed: {e}", stringify!($check));
                }
            }
        )*
    };
}

/// Not part of the API (hidden from the docs; may change at any time): helpers of this
/// repository's own tests (the disk-full tests of the core crate and of the store server).
#[doc(hidden)]
pub mod __testing {
    use crate::key::Key;

    /// A small tmpfs mounted on a fresh temporary directory, for disk-full tests; unmounted and
    /// removed when dropped. Mounting needs the `mount` command and root (or `CAP_SYS_ADMIN`).
    ///
    /// ```no_run
    /// use proxystore::conformance::__testing::SmallDisk;
    /// let disk = SmallDisk::mount("1m").expect("root to mount a tmpfs");
    /// let dir = disk.path().join("objects");
    /// # let _ = dir;
    /// ```
    #[derive(Debug)]
    pub struct SmallDisk {
        path: std::path::PathBuf,
    }

    impl SmallDisk {
        /// Mount a tmpfs of `size` (as `mount -o size=`, e.g. `"1m"`).
        ///
        /// # Errors
        /// A message saying why the directory could not be made or the tmpfs mounted.
        pub fn mount(size: &str) -> std::result::Result<SmallDisk, String> {
            let path =
                std::env::temp_dir().join(format!("proxystore-small-disk-{}", Key::random()));
            std::fs::create_dir(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
            let out = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&path)
                .output();
            let failure = match out {
                Ok(o) if o.status.success() => return Ok(SmallDisk { path }),
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                Err(e) => format!("cannot run `mount`: {e}"),
            };
            let _ = std::fs::remove_dir(&path);
            Err(format!(
                "disk-full tests mount a small tmpfs and need root (or CAP_SYS_ADMIN): \
                 `mount -t tmpfs` failed: {failure}"
            ))
        }

        /// The mounted directory.
        pub fn path(&self) -> &std::path::Path {
            &self.path
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(&self.path)
                .status();
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
