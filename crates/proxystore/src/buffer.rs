//! Buffers for whole large objects, read from a file or a socket.
//!
//! A fresh buffer of many megabytes costs more in page faults than the copy that fills it:
//! resolving a 100 MiB array from a file took 2.3x as long as `numpy.fromfile` of the same
//! file, most of it faulting in 4 KiB pages. NumPy asks for transparent huge pages on its large
//! allocations (`madvise(MADV_HUGEPAGE)`, which many kernels require before they use them, as
//! `transparent_hugepage=madvise` does), so its arrays fault in 2 MiB at a time; these buffers do
//! the same.
//!
//! Where a buffer starts matters as much for reads from a file: the kernel copies from page
//! cache pages, which start on a page boundary, and on the x86 machines measured here a copy
//! to a destination 16 bytes past a page boundary (where malloc puts a large block) ran at a
//! third of the speed of one to any other offset (100 MiB into huge pages: 88 ms against
//! 33 ms; the loads of the copy falsely wait on its stores, whose addresses match theirs in the
//! low 12 bits). Buffers from [`ALIGN_FROM`] bytes start their content on a page boundary
//! ([`aligned_with_capacity`]).

use std::mem::MaybeUninit;

use bytes::Bytes;

use crate::connector::{Connector, ObjectMemory, ObjectSink};
use crate::digest::{Digest, DigestAlgorithm};
use crate::error::{Error, Result};
use crate::key::Key;

/// Buffers of at least this many bytes ask for huge pages (NumPy's threshold).
pub(crate) const HUGE_PAGES_FROM: usize = 4 << 20;

/// Buffers of at least this many bytes start their content on a page boundary (the few
/// bytes of padding do not count next to the object).
pub(crate) const ALIGN_FROM: usize = 64 << 10;

const PAGE: usize = 4096;

/// A vector with room for `len` more bytes, and the length of its head: from [`ALIGN_FROM`]
/// bytes it holds a few zero bytes first, so that the bytes that follow start on a page
/// boundary (see the module docs); empty below. Huge pages as [`with_capacity`].
/// `Bytes::from(vec).slice(head..)` is the content, without a copy.
pub(crate) fn aligned_with_capacity(len: usize) -> Option<(Vec<u8>, usize)> {
    if len < ALIGN_FROM {
        return Some((with_capacity(len)?, 0));
    }
    let mut buf = Vec::new();
    buf.try_reserve_exact(len.checked_add(PAGE - 1)?).ok()?;
    // The advice first: the head's write is the buffer's first touch.
    advise_huge_pages(buf.spare_capacity_mut());
    let head = (PAGE - buf.as_ptr() as usize % PAGE) % PAGE;
    buf.resize(head, 0);
    Some((buf, head))
}

/// An empty vector with room for exactly `len` bytes, or `None` when they cannot be allocated.
/// From [`HUGE_PAGES_FROM`] bytes on Linux, the kernel is asked to back it with huge pages.
pub(crate) fn with_capacity(len: usize) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    buf.try_reserve_exact(len).ok()?;
    advise_huge_pages(buf.spare_capacity_mut());
    Some(buf)
}

/// Read from `file` (at its position) into `buf`, which need not be initialized; the bytes
/// read, a prefix of `buf` (empty at the end of the file). One `read` call, retried when
/// interrupted.
#[cfg(unix)]
pub(crate) fn read_uninit<'b>(
    file: &std::fs::File,
    buf: &'b mut [MaybeUninit<u8>],
) -> std::io::Result<&'b mut [u8]> {
    use std::os::fd::AsRawFd;
    let len = buf.len().min(isize::MAX as usize);
    let n = loop {
        // SAFETY: the descriptor is open (borrowed from `file`); the kernel writes at most
        // `len` bytes at `buf`'s start, memory this function holds exclusively.
        #[allow(unsafe_code)]
        let n = unsafe { libc::read(file.as_raw_fd(), buf.as_mut_ptr().cast(), len) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: `read` wrote (initialized) the first `n <= len` bytes of `buf`.
    #[allow(unsafe_code)]
    Ok(unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), n.min(len)) })
}

/// [`read_uninit`] where there is no `read(2)`: through a small initialized buffer.
#[cfg(not(unix))]
pub(crate) fn read_uninit<'b>(
    mut file: &std::fs::File,
    buf: &'b mut [MaybeUninit<u8>],
) -> std::io::Result<&'b mut [u8]> {
    use bytes::BufMut;
    use std::io::Read;
    let mut chunk = [0u8; 64 << 10];
    let want = buf.len().min(chunk.len());
    let n = file.read(&mut chunk[..want])?;
    let (head, _) = buf.split_at_mut(n);
    let mut dst: &mut [MaybeUninit<u8>] = head;
    dst.put_slice(&chunk[..n]);
    // SAFETY: the first `n` bytes were just written.
    #[allow(unsafe_code)]
    Ok(unsafe { std::slice::from_raw_parts_mut(head.as_mut_ptr().cast::<u8>(), n) })
}

/// The object under `key` read with [`Connector::get_into`] into a buffer of this module
/// (huge pages when large), or taken as it came from a connector that cannot read into memory,
/// with its digest by `algorithm`, made as it was read; `None` when absent. `size_hint` is the
/// size the caller expects (0 for unknown).
///
/// # Errors
/// As for [`Connector::get_into`], and [`ObjectSink::complete`].
pub(crate) async fn get_into_buffer(
    connector: &dyn Connector,
    key: &Key,
    size_hint: u64,
    algorithm: DigestAlgorithm,
) -> Result<Option<(Bytes, Option<Digest>)>> {
    let mut memory = VecMemory::default();
    let mut sink = ObjectSink::new(&mut memory).hashing(algorithm);
    if size_hint > 0 {
        sink = sink.size_hint(size_hint);
    }
    if !connector.get_into(key, &mut sink).await? {
        return Ok(None);
    }
    let written = sink.complete()?;
    let digest = sink.digest();
    drop(sink);
    // SAFETY: `written` is what the sink over `memory` completed, after its last allocation.
    #[allow(unsafe_code)]
    let data = unsafe { memory.into_bytes(written) };
    Ok(Some((data, digest)))
}

/// An object read into a buffer of this module, or taken as it came ([`get_into_buffer`]).
#[derive(Debug, Default)]
struct VecMemory {
    /// The head ([`aligned_with_capacity`]), then room for `len` bytes.
    buf: Vec<u8>,
    head: usize,
    len: usize,
    adopted: Option<Bytes>,
}

impl ObjectMemory for VecMemory {
    fn allocate(&mut self, len: usize) -> Result<()> {
        self.adopted = None;
        (self.buf, self.head) = aligned_with_capacity(len).ok_or_else(|| Error::LimitExceeded {
            message: format!("cannot allocate {len} bytes"),
        })?;
        self.len = len;
        Ok(())
    }

    fn room(&mut self) -> &mut [MaybeUninit<u8>] {
        let len = self.len;
        &mut self.buf.spare_capacity_mut()[..len]
    }

    fn adopt(&mut self, data: Bytes) -> Option<Bytes> {
        self.buf = Vec::new();
        (self.head, self.len) = (0, 0);
        self.adopted = Some(data);
        None
    }
}

impl VecMemory {
    /// The object written into this memory: `written` bytes of its room, or the bytes it
    /// adopted.
    ///
    /// # Safety
    /// `written` is what [`ObjectSink::complete`] returned for a sink over this memory, after
    /// the last [`ObjectMemory::allocate`] (the sink counts only bytes it wrote).
    #[allow(unsafe_code)]
    unsafe fn into_bytes(mut self, written: u64) -> Bytes {
        if let Some(data) = self.adopted.take() {
            return data;
        }
        let len = usize::try_from(written).unwrap_or(usize::MAX).min(self.len);
        // SAFETY: the caller's sink wrote (initialized) the first `len` bytes of the room, the
        // start of `buf`'s spare capacity (`buf` holds its `head` and is unchanged since
        // `allocate`), and `head + len <= head + self.len <= capacity`.
        unsafe {
            self.buf.set_len(self.head + len);
        }
        Bytes::from(self.buf).slice(self.head..)
    }
}

/// Ask the kernel to back `room`, fresh memory for a whole object, with transparent huge
/// pages when it is 4 MiB or more (NumPy's threshold; on Linux, nothing elsewhere): faulting
/// a large buffer in 2 MiB at a time instead of 4 KiB costs a fraction, and many kernels
/// (`transparent_hugepage=madvise`) use them only where asked. Call it before the first write.
/// For an [`ObjectMemory`] that makes its own room; the buffers of this crate already do.
///
/// ```
/// let mut buf = Vec::<u8>::with_capacity(8 << 20);
/// proxystore::connector::advise_huge_pages(buf.spare_capacity_mut());
/// ```
pub fn advise_huge_pages(room: &mut [MaybeUninit<u8>]) {
    #[cfg(target_os = "linux")]
    if room.len() >= HUGE_PAGES_FROM {
        // Whole pages inside the room: madvise takes a page-aligned start, and the advice
        // must not reach memory that belongs to another allocation.
        let start = room.as_mut_ptr() as usize;
        let end = start + room.len();
        let first = start.next_multiple_of(PAGE);
        let last = end - end % PAGE;
        if last > first {
            // SAFETY: the range is inside `room`, memory borrowed mutably here. MADV_HUGEPAGE
            // is advice about how to back that memory; it does not change its contents or its
            // mapping, and a kernel without huge pages ignores it (the error is not worth
            // reporting: the memory works the same).
            #[allow(unsafe_code)]
            let _ = unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_HUGEPAGE,
                )
            };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = room;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_have_the_exact_room_asked_for() {
        for len in [
            0,
            1,
            HUGE_PAGES_FROM - 1,
            HUGE_PAGES_FROM,
            HUGE_PAGES_FROM + 12345,
        ] {
            let mut buf = with_capacity(len).unwrap();
            assert_eq!((buf.len(), buf.capacity()), (0, len));
            buf.resize(len, 7);
            assert!(buf.iter().all(|b| *b == 7));
        }
        assert!(with_capacity(usize::MAX).is_none());
    }

    #[test]
    fn large_buffers_start_their_content_on_a_page() {
        for len in [0, 1, ALIGN_FROM - 1, ALIGN_FROM, HUGE_PAGES_FROM + 12345] {
            let (mut buf, head) = aligned_with_capacity(len).unwrap();
            assert_eq!(buf.len(), head);
            assert!(buf.capacity() - head >= len);
            if len >= ALIGN_FROM {
                assert_eq!(
                    buf.spare_capacity_mut().as_ptr() as usize % PAGE,
                    0,
                    "{len}"
                );
            } else {
                assert_eq!(head, 0);
            }
            buf.resize(head + len, 7);
            let content = Bytes::from(buf).slice(head..);
            assert_eq!(content.len(), len);
            assert!(content.iter().all(|b| *b == 7));
        }
        assert!(aligned_with_capacity(usize::MAX).is_none());
    }

    #[test]
    fn objects_are_read_into_buffers_hashed_or_adopted() {
        use crate::connector::file::FileConnector;
        use crate::connector::memory::MemoryConnector;
        let dir = tempfile::tempdir().unwrap();
        let file = FileConnector::new(dir.path()).unwrap();
        let memory = MemoryConnector::new("buffer-tests");
        for len in [0, 5, HUGE_PAGES_FROM + 4097] {
            let data = crate::Bytes::from((0..len).map(|i| (i % 249) as u8).collect::<Vec<_>>());
            for c in [&file as &dyn Connector, &memory] {
                let key = futures::executor::block_on(c.put(data.clone())).unwrap();
                let (back, digest) = futures::executor::block_on(get_into_buffer(
                    c,
                    &key,
                    len as u64,
                    DigestAlgorithm::Xxh3,
                ))
                .unwrap()
                .unwrap();
                assert_eq!(back, data, "{} {len}", c.kind());
                assert_eq!(digest, DigestAlgorithm::Xxh3.digest(&data));
                futures::executor::block_on(c.evict(&key)).unwrap();
                let gone =
                    futures::executor::block_on(get_into_buffer(c, &key, 0, DigestAlgorithm::None));
                assert!(gone.unwrap().is_none());
            }
        }
    }

    #[test]
    fn file_reads_into_uninitialized_memory_stop_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let mut room = vec![MaybeUninit::<u8>::uninit(); 4];
        assert_eq!(read_uninit(&f, &mut room).unwrap(), b"0123");
        let mut room = vec![MaybeUninit::<u8>::uninit(); 100];
        assert_eq!(read_uninit(&f, &mut room).unwrap(), b"456789");
        assert!(read_uninit(&f, &mut room).unwrap().is_empty());
    }
}
