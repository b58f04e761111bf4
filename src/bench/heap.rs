//! Live heap bytes for the soak benchmark: a global allocator that forwards to the system's and counts
//! the bytes handed out less those given back. The `tigel` binary installs it; elsewhere (tests, an
//! embedding application) nothing is counted and [`live_bytes`] answers `None`. Unlike the resident
//! memory, which also holds pages the allocator keeps after a free (heap fragmentation), this moves only
//! when something is kept: flat live bytes mean nothing accumulates per step.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

static LIVE: AtomicI64 = AtomicI64::new(0);

/// The system allocator, counting live bytes (install with `#[global_allocator]`).
pub struct CountingAlloc;

// SAFETY: every call forwards to `System` with the caller's arguments unchanged; the count is a side
// effect that never touches the memory.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as i64, Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as i64, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as i64, Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Relaxed);
        }
        p
    }
}

/// Bytes allocated and not yet freed, when [`CountingAlloc`] is the global allocator (else `None`).
pub fn live_bytes() -> Option<u64> {
    let n = LIVE.load(Relaxed);
    (n > 0).then_some(n as u64)
}
