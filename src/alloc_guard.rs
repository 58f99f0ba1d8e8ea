//! The process allocator, with one guard.
//!
//! The `kafka-protocol` decoders reserve `Vec::with_capacity(count)` from array counts
//! read off the wire before checking them against the bytes present. A lying count
//! then asks for hundreds of gigabytes; the system allocator refuses and Rust aborts
//! the whole process (allocation failure is not a panic that can be contained).
//!
//! Until those decoders are replaced by bounds-checked ones (the hardening issue), this
//! allocator serves very large requests as `MAP_NORESERVE` anonymous mappings: they
//! cost address space, not memory, until written. The decoder then fails at the end of
//! the input, the mapping is unmapped, and only that connection is closed. Every
//! ordinary allocation goes to the system allocator unchanged.

use std::alloc::{GlobalAlloc, Layout, System};

/// Requests at or above this size are mapped lazily. Far above any legitimate
/// allocation: frames are capped by `socket.request.max.bytes` (at most 2 GiB) and
/// never held twice at this size.
pub const LAZY_MAPPING_BYTES_MIN: usize = 1 << 30;
const PAGE_BYTES: usize = 4096;

pub struct GuardedAllocator;

fn lazy(layout: &Layout) -> bool {
    layout.size() >= LAZY_MAPPING_BYTES_MIN && layout.align() <= PAGE_BYTES
}

// SAFETY: every pointer handed out is either from `System` (and returned to it) or
// from mmap (and returned to munmap); the choice depends only on the layout, which
// the caller passes unchanged to `dealloc`.
unsafe impl GlobalAlloc for GuardedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !lazy(&layout) {
            return System.alloc(layout);
        }
        let ptr = libc::mmap(
            std::ptr::null_mut(),
            layout.size(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if ptr == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            ptr as *mut u8
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if lazy(&layout) {
            libc::munmap(ptr as *mut libc::c_void, layout.size());
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        if !lazy(&layout) && !lazy(&new_layout) {
            return System.realloc(ptr, layout, new_size);
        }
        let new = self.alloc(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lying_count_reserves_address_space_not_memory() {
        // 512 GiB: more than this machine's memory and swap together.
        let layout = Layout::from_size_align(512usize << 30, 8).unwrap();
        unsafe {
            let p = GuardedAllocator.alloc(layout);
            assert!(!p.is_null());
            p.write(7);
            *p.add(layout.size() - 1) = 9;
            assert_eq!(*p, 7);
            GuardedAllocator.dealloc(p, layout);
        }
    }

    #[test]
    fn small_allocations_and_growth_across_the_threshold() {
        unsafe {
            let small = Layout::from_size_align(64, 8).unwrap();
            let p = GuardedAllocator.alloc(small);
            p.write_bytes(3, 64);
            let grown = GuardedAllocator.realloc(p, small, LAZY_MAPPING_BYTES_MIN);
            assert_eq!(*grown.add(63), 3);
            let big = Layout::from_size_align(LAZY_MAPPING_BYTES_MIN, 8).unwrap();
            let shrunk = GuardedAllocator.realloc(grown, big, 128);
            assert_eq!(*shrunk.add(10), 3);
            GuardedAllocator.dealloc(shrunk, Layout::from_size_align(128, 8).unwrap());
        }
    }
}
