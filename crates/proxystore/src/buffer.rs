//! Buffers for whole large objects, read from a file or a socket.
//!
//! A fresh buffer of many megabytes costs more in page faults than the copy that fills it:
//! resolving a 100 MiB array from a file took 2.3x as long as `numpy.fromfile` of the same
//! file, most of it faulting in 4 KiB pages. NumPy asks for transparent huge pages on its large
//! allocations (`madvise(MADV_HUGEPAGE)`, which many kernels require before they use them, as
//! `transparent_hugepage=madvise` does), so its arrays fault in 2 MiB at a time; these buffers do
//! the same.

use std::mem::MaybeUninit;

use bytes::Bytes;

use crate::connector::{Connector, ObjectMemory, ObjectSink};
use crate::digest::{Digest, DigestAlgorithm};
use crate::error::{Error, Result};
use crate::key::Key;

/// Buffers of at least this many bytes ask for huge pages (NumPy's threshold).
pub(crate) const HUGE_PAGES_FROM: usize = 4 << 20;

/// An empty vector with room for exactly `len` bytes, or `None` when they cannot be allocated.
/// From [`HUGE_PAGES_FROM`] bytes on Linux, the kernel is asked to back it with huge pages.
pub(crate) fn with_capacity(len: usize) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    buf.try_reserve_exact(len).ok()?;
    if len >= HUGE_PAGES_FROM {
        advise_huge_pages(&mut buf);
    }
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
    buf: Vec<u8>,
    len: usize,
    adopted: Option<Bytes>,
}

impl ObjectMemory for VecMemory {
    fn allocate(&mut self, len: usize) -> Result<()> {
        self.adopted = None;
        self.buf = with_capacity(len).ok_or_else(|| Error::LimitExceeded {
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
        self.len = 0;
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
        // SAFETY: the caller's sink wrote (initialized) the first `len` bytes of the room,
        // the start of `buf`'s spare capacity (`buf` is empty and unchanged since
        // `allocate`), and `len <= self.len <= capacity`.
        unsafe {
            self.buf.set_len(len);
        }
        Bytes::from(self.buf)
    }
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(buf: &mut Vec<u8>) {
    // Whole pages inside the allocation: madvise takes a page-aligned start, and the advice
    // must not reach memory that belongs to another allocation.
    const PAGE: usize = 4096;
    let start = buf.as_mut_ptr() as usize;
    let end = start + buf.capacity();
    let first = start.next_multiple_of(PAGE);
    let last = end - end % PAGE;
    if last > first {
        // SAFETY: the range is inside `buf`'s allocation, which is live and owned here.
        // MADV_HUGEPAGE is advice about how to back that memory; it does not change its
        // contents or its mapping, and a kernel without huge pages ignores it (the error is
        // not worth reporting: the buffer works the same).
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
fn advise_huge_pages(_buf: &mut Vec<u8>) {}

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
