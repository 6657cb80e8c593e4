//! A byte-bounded LRU cache of decoded objects.

use std::any::Any;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::key::Key;

/// Fixed per-entry cost, so that many tiny objects still count against the bound.
const ENTRY_OVERHEAD: u64 = 64;

type Object = Arc<dyn Any + Send + Sync>;

struct Inner {
    lru: LruCache<Key, (Object, u64), foldhash::fast::RandomState>,
    bytes: u64,
}

/// Decoded objects by key, bounded by the total encoded size of what it holds.
pub(crate) struct ObjectCache {
    capacity: u64,
    inner: Mutex<Inner>,
}

impl ObjectCache {
    pub(crate) fn new(capacity_bytes: u64) -> Self {
        ObjectCache {
            capacity: capacity_bytes,
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded_with_hasher(foldhash::fast::RandomState::default()),
                bytes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached object of `key` if it is a `T`.
    pub(crate) fn get<T: Send + Sync + 'static>(&self, key: &Key) -> Option<Arc<T>> {
        if self.capacity == 0 {
            return None;
        }
        let obj = self.lock().lru.get(key)?.0.clone();
        obj.downcast::<T>().ok()
    }

    /// Cache `obj` as the object of `key`, whose encoded size is `size`. Objects larger than the
    /// whole cache are not cached.
    pub(crate) fn insert<T: Send + Sync + 'static>(&self, key: Key, obj: Arc<T>, size: u64) {
        let weight = size.saturating_add(ENTRY_OVERHEAD);
        if weight > self.capacity {
            return;
        }
        let mut inner = self.lock();
        if let Some((_, old)) = inner.lru.put(key, (obj, weight)) {
            inner.bytes -= old;
        }
        inner.bytes += weight;
        while inner.bytes > self.capacity {
            match inner.lru.pop_lru() {
                Some((_, (_, w))) => inner.bytes -= w,
                None => break,
            }
        }
    }

    /// Whether `key` is cached (without touching its recency).
    pub(crate) fn contains(&self, key: &Key) -> bool {
        self.capacity > 0 && self.lock().lru.contains(key)
    }

    pub(crate) fn remove(&self, key: &Key) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        if let Some((_, w)) = inner.lru.pop(key) {
            inner.bytes -= w;
        }
    }

    /// Bytes accounted to cached objects (encoded sizes plus a fixed overhead each).
    pub(crate) fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().lru.len()
    }

    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.lru.clear();
        inner.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_exceeds_its_byte_bound_and_evicts_lru_first() {
        let c = ObjectCache::new(1000);
        for i in 0..100u64 {
            c.insert(Key::from(i.to_string()), Arc::new(i), 100 + i % 7);
            assert!(c.bytes() <= 1000);
        }
        assert!(c.get::<u64>(&Key::from("99")).is_some());
        assert!(c.get::<u64>(&Key::from("0")).is_none());
        assert!(
            c.get::<String>(&Key::from("99")).is_none(),
            "type mismatch is a miss"
        );
        c.insert(Key::from("huge"), Arc::new(0u8), 10_000);
        assert!(c.get::<u8>(&Key::from("huge")).is_none());
        c.remove(&Key::from("99"));
        assert!(c.get::<u64>(&Key::from("99")).is_none());
        let zero = ObjectCache::new(0);
        zero.insert(Key::from("a"), Arc::new(1u8), 0);
        assert_eq!(zero.len(), 0);
        c.clear();
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }
}
