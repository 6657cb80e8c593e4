//! What the server has stored: sizes for the byte limit, digests, expiry times.
//!
//! Uploads reserve their bytes before they are stored (up front when the size is declared,
//! as chunks arrive otherwise), so that concurrent uploads cannot together overshoot the total
//! limit; a reservation is released when its upload ends, committed or not.
//!
//! An upload that replaces a stored object under the same key is credited with that object's
//! size: once it commits, the old bytes are gone, so a full store still accepts a replacement
//! that is not larger than what it replaces. (Until then both versions are held: the limit can
//! be passed by at most the size of the object being replaced.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use proxystore::{Digest, Error, Key, Result};

use proxystore::connector::stream::StoredObject;

/// What is known of one stored object.
#[derive(Clone, Debug)]
pub(crate) struct Meta {
    pub(crate) size: u64,
    pub(crate) digest: Option<Digest>,
    pub(crate) expires: Option<Instant>,
}

/// Every object the server holds: a large table whose keys come from clients, so hashed with
/// foldhash (seeded per process, several times faster than SipHash on keys this short).
type Objects = HashMap<Key, Meta, foldhash::fast::RandomState>;

#[derive(Default)]
struct State {
    used: u64,
    in_flight: u64,
    objects: Objects,
}

impl State {
    /// Record `meta` under `key`, returning what the key held.
    fn insert(&mut self, key: Key, meta: Meta, expiring: &AtomicUsize) -> Option<Meta> {
        if meta.expires.is_some() {
            expiring.fetch_add(1, Ordering::Relaxed);
        }
        let old = self.objects.insert(key, meta);
        self.forgot(old.as_ref(), expiring);
        old
    }

    /// Account for `old`, a record that left the table.
    fn forgot(&mut self, old: Option<&Meta>, expiring: &AtomicUsize) {
        if let Some(old) = old {
            self.used = self.used.saturating_sub(old.size);
            if old.expires.is_some() {
                expiring.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// Usage figures for `Stat`.
pub(crate) struct Usage {
    pub(crate) objects: u64,
    pub(crate) used: u64,
    pub(crate) in_flight: u64,
}

pub(crate) struct Accounting {
    max_total: Option<u64>,
    state: Mutex<State>,
    /// Objects with an expiry time (changed under `state`'s lock): while there are none, as
    /// with every object put without a time to live, a get asks nothing of the table.
    expiring: AtomicUsize,
}

impl Accounting {
    pub(crate) fn new(max_total: Option<u64>, existing: Vec<StoredObject>) -> Arc<Self> {
        let mut state = State::default();
        let expiring = AtomicUsize::new(0);
        let (now, wall) = (Instant::now(), SystemTime::now());
        for e in existing {
            state.used += e.size;
            // An expiry time in the past is due now: the first sweep evicts it.
            let expires = e
                .meta
                .expires_at
                .map(|t| now + t.duration_since(wall).unwrap_or_default());
            let meta = Meta {
                size: e.size,
                digest: e.meta.digest,
                expires,
            };
            state.insert(e.key, meta, &expiring);
        }
        Arc::new(Accounting {
            max_total,
            state: Mutex::new(state),
            expiring,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserve `bytes` for an upload that will be stored under `replaces` (when the caller
    /// chose the key) and so replace what that key holds.
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] when the total limit would be exceeded.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        bytes: u64,
        replaces: Option<Key>,
    ) -> Result<Reservation> {
        let mut r = Reservation {
            acc: self.clone(),
            bytes: 0,
            replaces,
        };
        r.grow_to(bytes)?;
        Ok(r)
    }

    /// Record a stored object, releasing its reservation and replacing what `key` held.
    pub(crate) fn commit(&self, key: Key, meta: Meta, mut reservation: Reservation) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(reservation.bytes);
        reservation.bytes = 0;
        s.used += meta.size;
        s.insert(key, meta, &self.expiring);
    }

    /// Forget `key`.
    pub(crate) fn remove(&self, key: &Key) {
        let mut s = self.lock();
        let old = s.objects.remove(key);
        s.forgot(old.as_ref(), &self.expiring);
    }

    pub(crate) fn meta(&self, key: &Key) -> Option<Meta> {
        self.lock().objects.get(key).cloned()
    }

    pub(crate) fn is_expired(&self, key: &Key, now: Instant) -> bool {
        if self.expiring.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.lock()
            .objects
            .get(key)
            .and_then(|m| m.expires)
            .is_some_and(|e| e <= now)
    }

    /// Keys whose time to live has passed.
    pub(crate) fn expired(&self, now: Instant) -> Vec<Key> {
        if self.expiring.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        self.lock()
            .objects
            .iter()
            .filter(|(_, m)| m.expires.is_some_and(|e| e <= now))
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub(crate) fn usage(&self) -> Usage {
        let s = self.lock();
        Usage {
            objects: s.objects.len() as u64,
            used: s.used,
            in_flight: s.in_flight,
        }
    }
}

/// Bytes held for an upload in progress; released on drop.
pub(crate) struct Reservation {
    acc: Arc<Accounting>,
    bytes: u64,
    /// The key the upload will be stored under, when known before it commits.
    replaces: Option<Key>,
}

impl Reservation {
    /// Grow the reservation to `total` bytes.
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] when the total limit would be exceeded; the reservation is
    /// then unchanged.
    pub(crate) fn grow_to(&mut self, total: u64) -> Result<()> {
        if total <= self.bytes {
            return Ok(());
        }
        let extra = total - self.bytes;
        let mut s = self.acc.lock();
        if let Some(max) = self.acc.max_total {
            // What the key holds now leaves when this upload commits. Read at every step, so
            // an object evicted or replaced in the meantime is not credited twice.
            let freed = self
                .replaces
                .as_ref()
                .and_then(|k| s.objects.get(k))
                .map_or(0, |m| m.size);
            let after = s
                .used
                .saturating_sub(freed)
                .saturating_add(s.in_flight)
                .saturating_add(extra);
            if after > max {
                return Err(Error::LimitExceeded {
                    message: format!(
                        "storing {total} bytes would exceed the server's total limit of {max} \
                         bytes ({} stored, {} being uploaded)",
                        s.used, s.in_flight
                    ),
                });
            }
        }
        s.in_flight += extra;
        self.bytes = total;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            let mut s = self.acc.lock();
            s.in_flight = s.in_flight.saturating_sub(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64) -> Meta {
        Meta {
            size,
            digest: None,
            expires: None,
        }
    }

    fn existing(key: &str, size: u64) -> StoredObject {
        StoredObject::new(Key::from(key), size, Default::default())
    }

    #[test]
    fn a_replacement_is_credited_with_the_object_it_replaces() {
        let acc = Accounting::new(Some(100), vec![existing("a", 50), existing("b", 50)]);
        // Full: a new key is refused, a smaller or equal replacement of `a` is not.
        assert!(acc.reserve(3, None).is_err());
        assert!(acc.reserve(3, Some(Key::from("c"))).is_err());
        let r = acc.reserve(3, Some(Key::from("a"))).unwrap();
        assert!(
            acc.reserve(48, Some(Key::from("a"))).is_err(),
            "one credit for two uploads"
        );
        acc.commit(Key::from("a"), meta(3), r);
        assert_eq!(acc.usage().used, 53);
        let mut r = acc.reserve(0, Some(Key::from("b"))).unwrap();
        r.grow_to(97).unwrap();
        assert!(r.grow_to(98).is_err());
    }

    #[test]
    fn reservations_bound_concurrent_uploads_and_release_on_drop() {
        let acc = Accounting::new(Some(100), vec![existing("old", 30)]);
        let a = acc.reserve(50, None).unwrap();
        assert!(matches!(
            acc.reserve(21, None),
            Err(Error::LimitExceeded { .. })
        ));
        let mut b = acc.reserve(20, None).unwrap();
        assert!(b.grow_to(21).is_err());
        drop(a);
        b.grow_to(60).unwrap();
        acc.commit(Key::from("old"), meta(60), b);
        let u = acc.usage();
        assert_eq!((u.objects, u.used, u.in_flight), (1, 60, 0));
        acc.remove(&Key::from("old"));
        assert_eq!(acc.usage().used, 0);
    }

    #[test]
    fn expiry_is_looked_up_while_some_object_has_one() {
        let acc = Accounting::new(None, Vec::new());
        let later = Instant::now() + std::time::Duration::from_secs(60);
        let expiring = |size| Meta {
            expires: Some(Instant::now()),
            ..meta(size)
        };
        acc.commit(Key::from("a"), expiring(1), acc.reserve(1, None).unwrap());
        acc.commit(Key::from("b"), meta(1), acc.reserve(1, None).unwrap());
        assert!(acc.is_expired(&Key::from("a"), later));
        assert!(!acc.is_expired(&Key::from("b"), later));
        assert_eq!(acc.expired(later), vec![Key::from("a")]);
        // Replaced by an object without expiry, then expiring again, then removed: the count
        // follows, and nothing is reported expired once none expires.
        acc.commit(Key::from("a"), meta(1), acc.reserve(1, None).unwrap());
        assert!(!acc.is_expired(&Key::from("a"), later));
        assert!(acc.expired(later).is_empty());
        acc.commit(Key::from("b"), expiring(1), acc.reserve(1, None).unwrap());
        assert_eq!(acc.expired(later), vec![Key::from("b")]);
        acc.remove(&Key::from("b"));
        assert_eq!(acc.expiring.load(Ordering::Relaxed), 0);
        assert!(acc.expired(later).is_empty());
    }
}
