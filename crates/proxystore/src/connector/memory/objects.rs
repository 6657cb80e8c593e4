//! The objects of one memory segment: slots for the keys the segment makes, a hash map for
//! the keys callers give.
//!
//! A store's keys are random, so a hash map of them puts each new object at a random place
//! in a table that grows with the objects held: with a few hundred thousand objects, nearly
//! every insert and remove misses the CPU cache (in the benchmark's 100 B loop, a put cost
//! 550 ns in such a map against 140 ns in a small one). Keys the segment makes itself (every
//! `put`, a writer without a key) therefore name a *slot* instead: a new object takes the
//! slot freed last, or the next one at the end, so that inserts land where the last ones did,
//! and a lookup parses the slot's number out of the key instead of hashing it.
//!
//! A key of a slot is `<segment>-<slot>-<generation>` in hex (34 characters):
//! - `<segment>` is random per segment (and drawn again when the slots are released), so a
//!   key made by another process, or by an earlier life of this segment, names no slot here;
//! - `<generation>` counts the objects the slot held, so a key outlives neither its object
//!   nor a later object in the same slot (a slot whose count would wrap is not used again).
//!
//! Any other key (from `new_key`, `set`, another connector, or a caller's own string) lives in
//! the hash map, and so does a key of this segment's form whose object is gone, when a caller
//! sets it again: a key means one object, wherever it lives.

use std::collections::HashMap;

use bytes::Bytes;

use crate::key::Key;

// foldhash: several times faster than SipHash on short keys, and still seeded per process.
type Map = HashMap<Key, Bytes, foldhash::fast::RandomState>;

/// Hex digits of the segment part of a slot's key.
const SEGMENT_HEX: usize = 16;
/// Length of a slot's key: segment, slot and generation, separated by dashes.
const KEY_LEN: usize = SEGMENT_HEX + 1 + 8 + 1 + 8;
/// Slots kept when the last object of the slots is removed; above this, the slots are
/// released (and the segment part drawn again, so that their keys name nothing).
const SLOTS_KEPT: usize = 4096;

/// One slot: the object it holds, and how many objects it held before.
#[derive(Default)]
struct Slot {
    generation: u32,
    data: Option<Bytes>,
}

/// The objects of a segment (see the module's documentation).
pub(super) struct Objects {
    /// The segment part of this segment's keys, as the hex digits of the key.
    segment: [u8; SEGMENT_HEX],
    slots: Vec<Slot>,
    /// Free slots, the one freed last at the end.
    free: Vec<u32>,
    /// Objects in slots.
    in_slots: usize,
    named: Map,
}

impl Default for Objects {
    fn default() -> Self {
        Objects {
            segment: random_segment(),
            slots: Vec::new(),
            free: Vec::new(),
            in_slots: 0,
            named: Map::default(),
        }
    }
}

fn random_segment() -> [u8; SEGMENT_HEX] {
    let (n, _) = uuid::Uuid::new_v4().as_u64_pair();
    let mut out = [0u8; SEGMENT_HEX];
    hex(n, &mut out);
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Write `n`'s low `out.len()` hex digits into `out`, most significant first.
fn hex(mut n: u64, out: &mut [u8]) {
    for b in out.iter_mut().rev() {
        *b = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// The value of 8 lower-case hex digits, if they are.
fn unhex(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |n, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(n << 4 | u32::from(v))
    })
}

impl Objects {
    /// The key of slot `index` at `generation`.
    fn slot_key(&self, index: u32, generation: u32) -> Key {
        let mut k = [b'-'; KEY_LEN];
        k[..SEGMENT_HEX].copy_from_slice(&self.segment);
        hex(u64::from(index), &mut k[SEGMENT_HEX + 1..SEGMENT_HEX + 9]);
        hex(u64::from(generation), &mut k[SEGMENT_HEX + 10..]);
        // Hex digits and dashes: ASCII.
        Key::from(std::str::from_utf8(&k).unwrap_or_default())
    }

    /// The slot `key` names, if it holds that key's object.
    fn slot_of(&self, key: &Key) -> Option<usize> {
        let k = key.as_str().as_bytes();
        if k.len() != KEY_LEN
            || k[..SEGMENT_HEX] != self.segment
            || k[SEGMENT_HEX] != b'-'
            || k[SEGMENT_HEX + 9] != b'-'
        {
            return None;
        }
        let index = unhex(&k[SEGMENT_HEX + 1..SEGMENT_HEX + 9])? as usize;
        let generation = unhex(&k[SEGMENT_HEX + 10..])?;
        let slot = self.slots.get(index)?;
        (slot.generation == generation && slot.data.is_some()).then_some(index)
    }

    /// Store `data` under a new key of this segment.
    pub(super) fn insert_new(&mut self, data: Bytes) -> Key {
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.slots.push(Slot::default());
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        slot.data = Some(data);
        let generation = slot.generation;
        self.in_slots += 1;
        // Slot numbers fit in 32 bits: 4 billion objects of at least one slot's 40 bytes
        // each are more than a process holds.
        self.slot_key(index as u32, generation)
    }

    /// Store `data` under `key`, replacing what it held.
    pub(super) fn insert(&mut self, key: Key, data: Bytes) {
        match self.slot_of(&key) {
            Some(i) => self.slots[i].data = Some(data),
            None => {
                self.named.insert(key, data);
            }
        }
    }

    /// Store `data` under `key` unless it holds an object: whether it stored it.
    pub(super) fn insert_once(&mut self, key: Key, data: Bytes) -> bool {
        if self.slot_of(&key).is_some() {
            return false;
        }
        match self.named.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(data);
                true
            }
        }
    }

    /// The object under `key`.
    pub(super) fn get(&self, key: &Key) -> Option<&Bytes> {
        match self.slot_of(key) {
            Some(i) => self.slots[i].data.as_ref(),
            None => self.named.get(key),
        }
    }

    /// Whether `key` holds an object.
    pub(super) fn contains(&self, key: &Key) -> bool {
        self.slot_of(key).is_some() || self.named.contains_key(key)
    }

    /// Remove the object under `key`, if any.
    pub(super) fn remove(&mut self, key: &Key) {
        let Some(i) = self.slot_of(key) else {
            self.named.remove(key);
            return;
        };
        let slot = &mut self.slots[i];
        slot.data = None;
        self.in_slots -= 1;
        // A slot whose keys are spent is not used again (until the slots are released).
        if let Some(g) = slot.generation.checked_add(1) {
            slot.generation = g;
            // Fewer than u32::MAX slots (see insert_new).
            self.free.push(i as u32);
        }
        if self.in_slots == 0 && self.slots.len() > SLOTS_KEPT {
            // Memory comes back; the keys of the released slots name nothing from now on.
            *self = Objects {
                named: std::mem::take(&mut self.named),
                ..Objects::default()
            };
        }
    }

    /// Number of objects.
    pub(super) fn len(&self) -> usize {
        self.in_slots + self.named.len()
    }

    /// Every object with its key.
    pub(super) fn iter(&self) -> impl Iterator<Item = (Key, &Bytes)> {
        let slots = self.slots.iter().enumerate().filter_map(|(i, s)| {
            let data = s.data.as_ref()?;
            Some((self.slot_key(i as u32, s.generation), data))
        });
        slots.chain(self.named.iter().map(|(k, d)| (k.clone(), d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn a_slot_key_names_its_object_and_no_later_one() {
        let mut o = Objects::default();
        let k = o.insert_new(b("a"));
        assert_eq!(k.as_str().len(), KEY_LEN);
        assert_eq!(o.get(&k), Some(&b("a")));
        o.remove(&k);
        assert_eq!(o.get(&k), None);
        // The freed slot is taken again, under another key.
        let k2 = o.insert_new(b("b"));
        assert_ne!(k, k2);
        assert_eq!((o.get(&k), o.get(&k2)), (None, Some(&b("b"))));
        assert!(!o.contains(&k));
        // Removing the old key again does not touch the new object.
        o.remove(&k);
        assert_eq!((o.len(), o.get(&k2)), (1, Some(&b("b"))));
    }

    #[test]
    fn a_spent_key_set_again_lives_in_the_map() {
        let mut o = Objects::default();
        let k = o.insert_new(b("a"));
        o.remove(&k);
        let k2 = o.insert_new(b("b"));
        assert!(o.insert_once(k.clone(), b("c")));
        assert!(!o.insert_once(k.clone(), b("d")));
        assert!(!o.insert_once(k2.clone(), b("d")));
        assert_eq!(
            (o.get(&k), o.get(&k2), o.len()),
            (Some(&b("c")), Some(&b("b")), 2)
        );
        o.insert(k2.clone(), b("e"));
        assert_eq!(o.get(&k2), Some(&b("e")));
        let mut all: Vec<_> = o.iter().map(|(k, d)| (k, d.clone())).collect();
        all.sort();
        let mut want = vec![(k, b("c")), (k2, b("e"))];
        want.sort();
        assert_eq!(all, want);
    }

    #[test]
    fn keys_of_another_segment_or_malformed_name_no_slot() {
        let mut a = Objects::default();
        let mut other = Objects::default();
        let k = a.insert_new(b("a"));
        let theirs = other.insert_new(b("x"));
        assert_eq!(a.get(&theirs), None);
        let s = k.as_str();
        for hostile in [
            format!("{}G{}", &s[..17], &s[18..]),
            format!("{}-", s),
            s[..33].to_owned(),
            format!("{}é{}", &s[..16], &s[18..]),
            format!("{}ffffffff-00000000", &s[..17]),
            String::new(),
        ] {
            assert_eq!(a.get(&Key::from(hostile.as_str())), None, "{hostile}");
            a.remove(&Key::from(hostile.as_str()));
        }
        assert_eq!(a.get(&k), Some(&b("a")));
    }

    #[test]
    fn emptied_slots_are_released_and_their_keys_name_nothing() {
        let mut o = Objects::default();
        let keys: Vec<Key> = (0..SLOTS_KEPT + 1).map(|_| o.insert_new(b("a"))).collect();
        let named = Key::from("named");
        o.insert(named.clone(), b("n"));
        for k in &keys {
            o.remove(k);
        }
        assert_eq!((o.slots.len(), o.len()), (0, 1));
        let fresh = o.insert_new(b("b"));
        assert_eq!(o.get(&keys[0]), None);
        assert_ne!(fresh, keys[0]);
        assert_eq!(
            (o.get(&fresh), o.get(&named)),
            (Some(&b("b")), Some(&b("n")))
        );
    }

    #[test]
    fn a_slot_whose_generation_would_wrap_is_retired() {
        let mut o = Objects::default();
        o.insert_new(b("a"));
        o.slots[0].generation = u32::MAX;
        let k = o.slot_key(0, u32::MAX);
        assert!(o.contains(&k));
        o.remove(&k);
        assert!(o.free.is_empty());
        let k2 = o.insert_new(b("b"));
        assert_eq!(&k2.as_str()[17..25], "00000001");
    }
}
