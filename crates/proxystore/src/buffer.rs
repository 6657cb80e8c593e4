//! Buffers for whole large objects, read from a file or a socket.
//!
//! A fresh buffer of many megabytes costs more in page faults than the copy that fills it:
//! resolving a 100 MiB array from a file took 2.3x as long as `numpy.fromfile` of the same
//! file, most of it faulting in 4 KiB pages. NumPy asks for transparent huge pages on its large
//! allocations (`madvise(MADV_HUGEPAGE)`, which many kernels require before they use them, as
//! `transparent_hugepage=madvise` does), so its arrays fault in 2 MiB at a time; these buffers do
//! the same.

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
}
