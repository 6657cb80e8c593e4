//! Reading an object into memory the caller provides ([`Connector::get_into`]).
//!
//! [`Connector::get`] hands back `Bytes` that the connector allocated. A caller that needs the
//! object in memory of its own kind (a Python `bytes` object, which Python code takes without a
//! copy; a buffer that is hashed while it fills) would copy it there: the whole object once
//! more, with the page faults of a second fresh allocation. With [`Connector::get_into`] the
//! connector asks the caller's [`ObjectMemory`] for room once it knows the object's size (a
//! file's length, a Redis reply's header) and reads into that room: a file straight from the
//! page cache, a Redis reply straight off the socket.
//!
//! The connector writes through an [`ObjectSink`], which counts the bytes written (the room
//! need not be initialized, and only what was written is ever handed on), refuses more bytes
//! than the object's size, and can hash each piece as it lands, while it is still in the CPU's
//! cache ([`ObjectSink::hashing`]).
//!
//! ```
//! # proxystore::runtime::block_on(async {
//! use std::mem::MaybeUninit;
//! use proxystore::connector::{Connector, ObjectMemory, ObjectSink, memory::MemoryConnector};
//!
//! /// Room in a plain vector, zeroed (a real one would leave it uninitialized).
//! #[derive(Default)]
//! struct Zeroed(Vec<MaybeUninit<u8>>);
//! impl ObjectMemory for Zeroed {
//!     fn allocate(&mut self, len: usize) -> proxystore::Result<()> {
//!         self.0 = vec![MaybeUninit::new(0); len];
//!         Ok(())
//!     }
//!     fn room(&mut self) -> &mut [MaybeUninit<u8>] {
//!         &mut self.0
//!     }
//! }
//!
//! let c = MemoryConnector::new("sink-doc");
//! let key = c.put(proxystore::Bytes::from_static(b"abc")).await?;
//! let mut memory = Zeroed::default();
//! let mut sink = ObjectSink::new(&mut memory);
//! assert!(c.get_into(&key, &mut sink).await?);
//! assert_eq!(sink.complete()?, 3);
//! # Ok::<_, proxystore::Error>(()) })??;
//! # Ok::<_, proxystore::Error>(())
//! ```

use std::mem::MaybeUninit;

use bytes::{BufMut, Bytes};
use tokio::io::{AsyncRead, ReadBuf};

use crate::digest::{Digest, DigestAlgorithm, DigestHasher};
use crate::error::{Error, Result};

/// Memory of the caller's for one whole object, filled by [`Connector::get_into`] through an
/// [`ObjectSink`].
///
/// [`Connector::get_into`]: super::Connector::get_into
pub trait ObjectMemory: Send {
    /// Make room for exactly `len` bytes, replacing any room made before (a read that is tried
    /// again starts over). Called once the object's size is known, before any byte is written.
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] when that much memory cannot be had.
    fn allocate(&mut self, len: usize) -> Result<()>;

    /// The room the last [`ObjectMemory::allocate`] made: `len` bytes, which may hold anything
    /// until written (empty before the first call). It must be the same memory every time until
    /// the next `allocate`: the sink writes it in order and counts what it wrote.
    fn room(&mut self) -> &mut [MaybeUninit<u8>];

    /// Take `data`, the whole object, as it is: what a connector that cannot read into memory
    /// fetched ([`ObjectSink::put_bytes`]). `None` when taken; `Some(data)` back (the default)
    /// when the bytes must be in this memory's room, and the sink copies them there.
    fn adopt(&mut self, data: Bytes) -> Option<Bytes> {
        Some(data)
    }
}

/// Where a connector's [`Connector::get_into`] writes an object: the caller's
/// [`ObjectMemory`], the count of bytes written into it, and optionally a digest of them.
///
/// A connector calls [`ObjectSink::start`] with the object's size, then writes the bytes in
/// order ([`ObjectSink::put_slice`], [`ObjectSink::read_from`], [`ObjectSink::read_file`]), or
/// hands over a whole fetched object with [`ObjectSink::put_bytes`]. The caller then asks
/// [`ObjectSink::complete`]: only an object written whole counts, whatever the connector said.
///
/// [`Connector::get_into`]: super::Connector::get_into
pub struct ObjectSink<'a> {
    memory: &'a mut dyn ObjectMemory,
    size_hint: Option<u64>,
    algorithm: DigestAlgorithm,
    state: State,
}

/// What has been written so far.
enum State {
    /// Nothing yet.
    Empty,
    /// Writing into a room of `len` bytes, `filled` of them written.
    Room {
        len: usize,
        filled: usize,
        hasher: Option<DigestHasher>,
    },
    /// The memory adopted a whole object of `len` bytes.
    Adopted { len: usize, digest: Option<Digest> },
}

impl std::fmt::Debug for ObjectSink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectSink")
            .field("size_hint", &self.size_hint)
            .field("algorithm", &self.algorithm)
            .field("size", &self.size())
            .field("filled", &self.filled())
            .finish()
    }
}

/// The unwritten part of a sink's room, the count of what was written, and the hasher.
struct Unfilled<'s> {
    room: &'s mut [MaybeUninit<u8>],
    filled: &'s mut usize,
    hasher: Option<&'s mut DigestHasher>,
}

/// Bytes of a file read at a time by [`ObjectSink::read_file`]: small enough to be in the
/// CPU's cache when hashed right after the read, large enough that the calls cost nothing.
const FILE_PIECE: usize = 512 << 10;

impl<'a> ObjectSink<'a> {
    /// A sink into `memory`, without a digest.
    pub fn new(memory: &'a mut dyn ObjectMemory) -> Self {
        ObjectSink {
            memory,
            size_hint: None,
            algorithm: DigestAlgorithm::None,
            state: State::Empty,
        }
    }

    /// The size the caller expects (a reference records it), which a connector may use to
    /// choose how to fetch (see [`super::Connector::get_sized`]); the object written is what
    /// is stored, whatever its size.
    #[must_use]
    pub fn size_hint(mut self, size: u64) -> Self {
        self.size_hint = Some(size);
        self
    }

    /// Hash the bytes with `algorithm` as they are written, each piece right after it lands;
    /// [`ObjectSink::digest`] gives the result.
    #[must_use]
    pub fn hashing(mut self, algorithm: DigestAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// The size the caller expects, if it said.
    pub fn expected_size(&self) -> Option<u64> {
        self.size_hint
    }

    /// Start the object: it is `len` bytes long. Asks the memory for room (again, when a
    /// read starts over: what was written before is dropped).
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] when the memory cannot hold `len` bytes; [`Error::Backend`]
    /// when the memory gave room of another size.
    pub fn start(&mut self, len: u64) -> Result<()> {
        let len = usize::try_from(len).map_err(|_| Error::LimitExceeded {
            message: format!("an object of {len} bytes does not fit in memory"),
        })?;
        self.state = State::Empty;
        self.memory.allocate(len)?;
        let room = self.memory.room().len();
        if room != len {
            return Err(Error::backend_message(
                "get_into",
                format!("asked for room for {len} bytes, the memory gave {room}"),
                false,
            ));
        }
        self.state = State::Room {
            len,
            filled: 0,
            hasher: DigestHasher::new(self.algorithm),
        };
        Ok(())
    }

    /// The object's size, once started.
    pub fn size(&self) -> Option<u64> {
        match self.state {
            State::Empty => None,
            State::Room { len, .. } | State::Adopted { len, .. } => Some(len as u64),
        }
    }

    /// Bytes written so far.
    pub fn filled(&self) -> u64 {
        match self.state {
            State::Empty => 0,
            State::Room { filled, .. } => filled as u64,
            State::Adopted { len, .. } => len as u64,
        }
    }

    /// Bytes still to write (0 before the start).
    pub fn remaining(&self) -> u64 {
        self.size().unwrap_or(0) - self.filled()
    }

    /// Whether the object was started and written whole.
    pub fn is_complete(&self) -> bool {
        self.size().is_some() && self.remaining() == 0
    }

    /// The object's size, when it was written whole.
    ///
    /// # Errors
    /// [`Error::Backend`] (temporary: the object may have changed while it was read) when
    /// it was not started or not written whole.
    pub fn complete(&self) -> Result<u64> {
        match self.size() {
            Some(len) if self.remaining() == 0 => Ok(len),
            Some(len) => Err(Error::backend_message(
                "get_into",
                format!(
                    "the read ended after {} of the object's {len} bytes",
                    self.filled()
                ),
                true,
            )),
            None => Err(Error::backend_message(
                "get_into",
                "the connector reported an object but wrote none",
                false,
            )),
        }
    }

    /// The digest of the bytes written, when asked for with [`ObjectSink::hashing`] and the
    /// object is complete.
    pub fn digest(&self) -> Option<Digest> {
        if !self.is_complete() {
            return None;
        }
        match &self.state {
            State::Room { hasher, .. } => hasher.as_ref().map(DigestHasher::finish),
            State::Adopted { digest, .. } => *digest,
            State::Empty => None,
        }
    }

    /// The unwritten part of the room; an error before the start.
    fn unfilled(&mut self) -> Result<Unfilled<'_>> {
        let State::Room {
            len,
            filled,
            hasher,
        } = &mut self.state
        else {
            return Err(Error::backend_message(
                "get_into",
                "bytes written before the object's size (ObjectSink::start)",
                false,
            ));
        };
        let room = self.memory.room();
        if room.len() != *len {
            return Err(Error::backend_message(
                "get_into",
                "the memory's room changed while it was written",
                false,
            ));
        }
        Ok(Unfilled {
            room: &mut room[*filled..],
            filled,
            hasher: hasher.as_mut(),
        })
    }

    /// Write the next bytes of the object.
    ///
    /// # Errors
    /// [`Error::Backend`] before the start, or when `data` goes past the object's size.
    pub fn put_slice(&mut self, data: &[u8]) -> Result<()> {
        let Unfilled {
            room: mut unfilled,
            filled,
            hasher,
        } = self.unfilled()?;
        if data.len() > unfilled.len() {
            return Err(Error::backend_message(
                "get_into",
                format!(
                    "{} more bytes written than the object's size ({} left)",
                    data.len(),
                    unfilled.len()
                ),
                false,
            ));
        }
        unfilled.put_slice(data);
        *filled += data.len();
        if let Some(h) = hasher {
            h.update(data);
        }
        Ok(())
    }

    /// Hand over the whole object fetched as `Bytes` (by a connector that cannot read into
    /// memory): adopted as it is when the memory takes it ([`ObjectMemory::adopt`]), else
    /// written into a room of its size.
    ///
    /// # Errors
    /// As for [`ObjectSink::start`].
    pub fn put_bytes(&mut self, data: Bytes) -> Result<()> {
        let len = data.len();
        // A second handle (a reference count) to hash what the memory adopts.
        let kept = data.clone();
        match self.memory.adopt(data) {
            None => {
                let digest = self.algorithm.digest(&kept);
                self.state = State::Adopted { len, digest };
                Ok(())
            }
            Some(data) => {
                drop(kept);
                self.start(len as u64)?;
                self.put_slice(&data)
            }
        }
    }

    /// Read the next bytes from `reader` (one read, at most the bytes still to write); how
    /// many were read, 0 at the end of the reader or when the object is complete.
    ///
    /// # Errors
    /// The reader's error; [`std::io::ErrorKind::InvalidInput`] before the start.
    ///
    /// # Cancel safety
    /// Cancel safe: bytes read are counted before the call returns, none are lost in between.
    pub async fn read_from<R>(&mut self, reader: &mut R) -> std::io::Result<usize>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        let Unfilled {
            room: unfilled,
            filled,
            hasher,
        } = self.unfilled().map_err(std::io::Error::other)?;
        if unfilled.is_empty() {
            return Ok(0);
        }
        let mut buf = ReadBuf::uninit(unfilled);
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut *reader).poll_read(cx, &mut buf)).await?;
        let read = buf.filled();
        *filled += read.len();
        if let Some(h) = hasher {
            h.update(read);
        }
        Ok(read.len())
    }

    /// Read the rest of the object from `file`, from its current position, a piece at a
    /// time (each hashed right after it is read); how many bytes were read. Fewer than
    /// [`ObjectSink::remaining`] means the file ended first.
    ///
    /// # Errors
    /// The file's error; [`std::io::ErrorKind::InvalidInput`] before the start.
    pub fn read_file(&mut self, file: &std::fs::File) -> std::io::Result<usize> {
        let Unfilled {
            room: unfilled,
            filled,
            mut hasher,
        } = self.unfilled().map_err(std::io::Error::other)?;
        let mut total = 0;
        while total < unfilled.len() {
            let end = unfilled.len().min(total + FILE_PIECE);
            let read = crate::buffer::read_uninit(file, &mut unfilled[total..end])?;
            if read.is_empty() {
                break;
            }
            if let Some(h) = hasher.as_deref_mut() {
                h.update(read);
            }
            total += read.len();
            *filled += read.len();
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Room in a zeroed vector, that adopts `Bytes` when told to.
    #[derive(Default)]
    struct Plain {
        room: Vec<MaybeUninit<u8>>,
        adopts: bool,
        adopted: Option<Bytes>,
        allocations: usize,
    }

    impl ObjectMemory for Plain {
        fn allocate(&mut self, len: usize) -> Result<()> {
            if len > 1 << 30 {
                return Err(Error::LimitExceeded {
                    message: "test limit".into(),
                });
            }
            self.allocations += 1;
            self.room = vec![MaybeUninit::new(0); len];
            Ok(())
        }
        fn room(&mut self) -> &mut [MaybeUninit<u8>] {
            &mut self.room
        }
        fn adopt(&mut self, data: Bytes) -> Option<Bytes> {
            if !self.adopts {
                return Some(data);
            }
            self.adopted = Some(data);
            None
        }
    }

    #[test]
    fn writes_are_counted_bounded_and_hashed() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut memory = Plain::default();
        let mut sink = ObjectSink::new(&mut memory).hashing(DigestAlgorithm::Xxh3);
        assert!(sink.put_slice(b"x").is_err(), "a write before the start");
        assert!(sink.complete().is_err());
        sink.start(data.len() as u64).unwrap();
        for piece in data.chunks(777) {
            assert!(!sink.is_complete());
            sink.put_slice(piece).unwrap();
        }
        assert!(sink.put_slice(b"!").is_err(), "past the object's size");
        assert_eq!(sink.complete().unwrap(), data.len() as u64);
        assert_eq!(sink.digest(), DigestAlgorithm::Xxh3.digest(&data));
        // A read that starts over replaces what was written.
        sink.start(3).unwrap();
        assert_eq!((sink.filled(), sink.remaining()), (0, 3));
        assert!(sink.digest().is_none(), "no digest of an incomplete object");
        sink.put_slice(b"abc").unwrap();
        assert_eq!(sink.digest(), DigestAlgorithm::Xxh3.digest(b"abc"));
        assert!(sink.start(1 << 40).is_err());
        assert_eq!(memory.allocations, 2);
    }

    #[test]
    fn whole_bytes_are_adopted_or_copied() {
        let data = Bytes::from_static(b"whole object");
        let mut adopting = Plain {
            adopts: true,
            ..Plain::default()
        };
        let mut sink = ObjectSink::new(&mut adopting).hashing(DigestAlgorithm::Blake3);
        sink.put_bytes(data.clone()).unwrap();
        assert_eq!(sink.complete().unwrap(), data.len() as u64);
        assert_eq!(sink.digest(), DigestAlgorithm::Blake3.digest(&data));
        assert_eq!(adopting.allocations, 0);
        assert_eq!(adopting.adopted.as_ref().unwrap().as_ptr(), data.as_ptr());

        let mut copying = Plain::default();
        let mut sink = ObjectSink::new(&mut copying).hashing(DigestAlgorithm::Xxh3);
        sink.put_bytes(data.clone()).unwrap();
        assert_eq!(sink.complete().unwrap(), data.len() as u64);
        assert_eq!(sink.digest(), DigestAlgorithm::Xxh3.digest(&data));
        assert_eq!(copying.allocations, 1);
    }

    #[tokio::test]
    async fn reads_stop_at_the_object_size() {
        let data = vec![5u8; 100];
        let mut reader: &[u8] = &data;
        let mut memory = Plain::default();
        let mut sink = ObjectSink::new(&mut memory).hashing(DigestAlgorithm::Xxh3);
        sink.start(60).unwrap();
        let mut total = 0;
        loop {
            let n = sink.read_from(&mut reader).await.unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        assert_eq!(total, 60);
        assert_eq!(reader.len(), 40, "nothing read past the object");
        assert_eq!(sink.digest(), DigestAlgorithm::Xxh3.digest(&data[..60]));
    }

    #[test]
    fn files_are_read_whole_and_a_short_file_is_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(FILE_PIECE * 2 + 123))
            .map(|i| (i % 253) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let mut memory = Plain::default();
        let mut sink = ObjectSink::new(&mut memory).hashing(DigestAlgorithm::Xxh3);
        sink.start(data.len() as u64).unwrap();
        assert_eq!(sink.read_file(&file).unwrap(), data.len());
        assert_eq!(sink.digest(), DigestAlgorithm::Xxh3.digest(&data));

        let file = std::fs::File::open(&path).unwrap();
        sink.start(data.len() as u64 + 10).unwrap();
        assert_eq!(sink.read_file(&file).unwrap(), data.len());
        assert!(!sink.is_complete());
        assert!(matches!(
            sink.complete(),
            Err(Error::Backend {
                temporary: true,
                ..
            })
        ));
    }
}
