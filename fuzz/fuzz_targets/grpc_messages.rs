#![no_main]

//! Besides the checks of `server_harness::grpc_messages`, no single allocation made while a
//! call runs may exceed `MAX_ALLOCATION`: a length claimed by a request (a gRPC frame header, a
//! Put's declared size) must be checked against the service's limits before memory is
//! reserved for it. (libFuzzer's own `-malloc_limit_mb` needs a sanitizer's allocator hooks,
//! which `--sanitizer none` builds do not have.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use proxystore_fuzz::server_harness::{MAX_ALLOCATION, grpc_messages};

/// The system allocator, remembering the largest request since the last reset.
struct Tracking;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    LARGEST.store(0, Ordering::Relaxed);
    grpc_messages(data);
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= MAX_ALLOCATION,
        "one allocation of {largest} bytes (bound {MAX_ALLOCATION})"
    );
});
