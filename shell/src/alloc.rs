//! The allocator both binaries install ([`KeepLarge`]): the system's allocator, plus a small
//! store of freed large blocks (2 KiB to 512 KiB, rounded up to one of 33 size classes) that
//! the next request of the same class gets back without a system call.
//!
//! Why: a router runs the static musl build, and musl's allocator gives memory back to the
//! kernel as soon as a group of large slots empties. A relay frees and asks again for the
//! same few buffer sizes with every message (TLS records, DATA pieces, the encoder's output),
//! so under musl each message paid for mmap/munmap calls, page faults and the clearing of
//! fresh pages: about 1.7 times the CPU of the glibc build per 100 KiB message. glibc keeps
//! such memory itself; there the store changes little.
//!
//! What it does not do: it never asks the system for memory the program did not request,
//! keeps at most [`KEPT_BYTES`] (every block beyond that goes back at once), keeps nothing
//! until [`KeepLarge::keep_from_now`] (start-up's one-off buffers go back to the system), and
//! never touches small or over-aligned requests, which go to the system allocator as they
//! are. It is not a general allocator: no arenas, no per-thread caches, one lock taken only
//! for large blocks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The smallest request kept: below it, the system's allocators do well.
const SMALLEST: usize = 2 * 1024;
/// Log2 of [`SMALLEST`].
const SMALLEST_LOG2: u32 = 11;
/// The largest request kept (itself a class): above it a block is rare and large.
const LARGEST: usize = 512 * 1024;
/// Classes per doubling: a block is at most a quarter larger than its request.
const STEPS: usize = 4;
/// 8 doublings from 2 KiB to 512 KiB, four classes each, and 512 KiB itself.
const CLASSES: usize = 33;
/// Blocks kept per class.
const PER_CLASS: usize = 8;
/// Bytes kept in all, counted by class size.
pub const KEPT_BYTES: usize = 1024 * 1024;
/// Every kept block is aligned this much, whatever its first request asked: malloc's own
/// alignment on 64-bit targets, so there the system gets plain malloc/free calls.
const BLOCK_ALIGN: usize = 16;

/// Which class a request of `size` octets (alignment at most [`BLOCK_ALIGN`]) falls in.
fn class_of(size: usize) -> Option<usize> {
    if !(SMALLEST..=LARGEST).contains(&size) {
        return None;
    }
    let log2 = usize::BITS - 1 - size.leading_zeros(); // 2^log2 <= size < 2^(log2+1)
    let base = 1usize << log2;
    let step = base / STEPS;
    let steps = (size - base).div_ceil(step); // 0..=4
    Some((log2 - SMALLEST_LOG2) as usize * STEPS + steps)
}

/// The size of every block of class `class`.
const fn class_size(class: usize) -> usize {
    let base = SMALLEST << (class / STEPS);
    base + (class % STEPS) * (base / STEPS)
}

fn block_layout(class: usize) -> Layout {
    // The size is at most 512 KiB and the alignment a power of two: always valid.
    Layout::from_size_align(class_size(class), BLOCK_ALIGN).unwrap_or(Layout::new::<u8>())
}

/// The class of a request this store deals with: large enough, small enough, and not
/// aligned beyond what every kept block is.
fn class_for(layout: Layout) -> Option<usize> {
    if layout.align() > BLOCK_ALIGN {
        return None;
    }
    class_of(layout.size())
}

/// A kept block's address. Raw pointers are not `Send`; these are owned by the store alone
/// between a free and the next allocation.
#[derive(Clone, Copy)]
struct Block(*mut u8);
// SAFETY: a kept block belongs to no one but the store, which hands it out under its lock.
unsafe impl Send for Block {}

struct Kept {
    blocks: [[Block; PER_CLASS]; CLASSES],
    len: [u8; CLASSES],
    bytes: usize,
}

impl Kept {
    fn take(&mut self, class: usize) -> Option<*mut u8> {
        let len = usize::from(self.len[class]);
        if len == 0 {
            return None;
        }
        self.len[class] -= 1;
        self.bytes -= class_size(class);
        Some(self.blocks[class][len - 1].0)
    }

    /// Keeps `block` when there is room; false when it must go back to the system.
    fn give(&mut self, class: usize, block: *mut u8) -> bool {
        let len = usize::from(self.len[class]);
        if len == PER_CLASS || self.bytes + class_size(class) > KEPT_BYTES {
            return false;
        }
        self.blocks[class][len] = Block(block);
        self.len[class] += 1;
        self.bytes += class_size(class);
        true
    }
}

/// Set in a program's environment, keeping never begins: for side-by-side measurements of
/// what the store gains (`benches/compare-postfix.sh` passes its environment on to the
/// relay), not for use.
pub const BENCH_ONLY_NO_KEEPING_VAR: &str = "CERTRELAY_BENCH_ONLY_NO_KEEPING";

/// The system allocator with a store of freed large blocks (see the module's notes).
pub struct KeepLarge {
    kept: Mutex<Kept>,
    keeping: AtomicBool,
}

impl Default for KeepLarge {
    fn default() -> Self {
        KeepLarge::new()
    }
}

impl KeepLarge {
    pub const fn new() -> KeepLarge {
        KeepLarge {
            kept: Mutex::new(Kept {
                blocks: [[Block(ptr::null_mut()); PER_CLASS]; CLASSES],
                len: [0; CLASSES],
                bytes: 0,
            }),
            keeping: AtomicBool::new(false),
        }
    }

    /// From now on freed large blocks are kept for reuse. Called once the program's set-up
    /// is done, so that its one-off buffers go back to the system.
    pub fn keep_from_now(&self) {
        if std::env::var_os(BENCH_ONLY_NO_KEEPING_VAR).is_some() {
            return;
        }
        self.keeping.store(true, Ordering::Relaxed);
    }

    /// Gives every kept block back to the system (for a program going idle for long).
    pub fn release(&self) {
        for class in 0..CLASSES {
            loop {
                let block = self.kept().take(class);
                match block {
                    // SAFETY: the block came from `System.alloc(block_layout(class))`.
                    Some(block) => unsafe { System.dealloc(block, block_layout(class)) },
                    None => break,
                }
            }
        }
    }

    /// Octets held in kept blocks now.
    pub fn kept_bytes(&self) -> usize {
        self.kept().bytes
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        // Nothing panics while holding the lock; a poisoned lock is still consistent.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// SAFETY: every block handed out is either the system allocator's answer for a layout at
// least as large and as aligned as the request, or a kept block of the same class (same
// size and alignment, owned by no one since it was freed). Every free goes back to the
// system with the layout the block was allocated with (the class's), or into the store.
unsafe impl GlobalAlloc for KeepLarge {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_for(layout) else {
            return System.alloc(layout);
        };
        if let Some(block) = self.kept().take(class) {
            return block;
        }
        System.alloc(block_layout(class))
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_for(layout) else {
            return System.alloc_zeroed(layout);
        };
        if let Some(block) = self.kept().take(class) {
            ptr::write_bytes(block, 0, layout.size());
            return block;
        }
        System.alloc_zeroed(block_layout(class))
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(class) = class_for(layout) else {
            return System.dealloc(block, layout);
        };
        if self.keeping.load(Ordering::Relaxed) && self.kept().give(class, block) {
            return;
        }
        System.dealloc(block, block_layout(class));
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = class_for(layout);
        // The new layout keeps the old alignment (GlobalAlloc's contract).
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new = class_for(new_layout);
        match (old, new) {
            (None, None) => System.realloc(block, layout, new_size),
            (Some(a), Some(b)) if a == b => block,
            _ => {
                let moved = self.alloc(new_layout);
                if !moved.is_null() {
                    ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                    self.dealloc(block, layout);
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    #[test]
    fn classes_cover_every_kept_size_within_a_quarter() {
        assert_eq!(class_size(0), SMALLEST);
        assert_eq!(class_size(CLASSES - 1), LARGEST);
        for class in 1..CLASSES {
            assert!(class_size(class) > class_size(class - 1));
        }
        for size in (SMALLEST..=LARGEST).step_by(7).chain([SMALLEST, LARGEST, 16 * 1024 + 1]) {
            let class = class_of(size).unwrap();
            assert!(class_size(class) >= size, "{size}");
            assert!(class_size(class) * 4 <= size * 5, "{size}: {}", class_size(class));
            if class > 0 {
                assert!(class_size(class - 1) < size, "{size} fits a smaller class");
            }
        }
        assert_eq!(class_of(SMALLEST - 1), None);
        assert_eq!(class_of(LARGEST + 1), None);
        assert_eq!(class_for(Layout::from_size_align(4096, 64).unwrap()), None);
    }

    #[test]
    fn a_freed_block_is_reused_only_once_keeping_has_begun() {
        let a = KeepLarge::new();
        unsafe {
            let first = a.alloc(layout(20_000));
            a.dealloc(first, layout(20_000));
            assert_eq!(a.kept_bytes(), 0, "kept before keep_from_now");
            a.keep_from_now();
            let second = a.alloc(layout(20_000));
            second.write_bytes(0xAB, 20_000);
            a.dealloc(second, layout(20_000));
            assert_eq!(a.kept_bytes(), class_size(class_of(20_000).unwrap()));
            // Any size of the same class gets the same block back, zeroed on request.
            let third = a.alloc_zeroed(layout(19_500));
            assert_eq!(third, second);
            assert!(std::slice::from_raw_parts(third, 19_500).iter().all(|&b| b == 0));
            assert_eq!(a.kept_bytes(), 0);
            a.dealloc(third, layout(19_500));
            a.release();
            assert_eq!(a.kept_bytes(), 0);
        }
    }

    #[test]
    fn no_more_is_kept_than_the_limits() {
        let a = KeepLarge::new();
        a.keep_from_now();
        unsafe {
            // One class: at most PER_CLASS blocks.
            let blocks: Vec<_> = (0..PER_CLASS + 3).map(|_| a.alloc(layout(4096))).collect();
            for &b in &blocks {
                a.dealloc(b, layout(4096));
            }
            assert_eq!(a.kept_bytes(), PER_CLASS * 4096);
            a.release();
            // All classes: at most KEPT_BYTES.
            let big: Vec<_> = (0..8).map(|_| a.alloc(layout(LARGEST))).collect();
            for &b in &big {
                a.dealloc(b, layout(LARGEST));
            }
            assert_eq!(a.kept_bytes(), KEPT_BYTES / LARGEST * LARGEST);
            assert!(a.kept_bytes() <= KEPT_BYTES);
            a.release();
        }
    }

    #[test]
    fn small_huge_and_over_aligned_requests_pass_through() {
        let a = KeepLarge::new();
        a.keep_from_now();
        unsafe {
            for l in [
                layout(100),
                layout(LARGEST + 1),
                Layout::from_size_align(8192, 4096).unwrap(),
            ] {
                let b = a.alloc(l);
                assert!(!b.is_null());
                assert_eq!(b as usize % l.align(), 0);
                a.dealloc(b, l);
                assert_eq!(a.kept_bytes(), 0);
            }
        }
    }

    #[test]
    fn realloc_keeps_the_contents_across_and_within_classes() {
        let a = KeepLarge::new();
        a.keep_from_now();
        unsafe {
            // Small → kept class → same class → larger class → huge → small.
            let mut size = 1000;
            let mut b = a.alloc(layout(size));
            for i in 0..size {
                *b.add(i) = i as u8;
            }
            for new_size in [3000, 3050, 9000, 700_000, 1500] {
                let before = b;
                b = a.realloc(b, layout(size), new_size);
                assert!(!b.is_null());
                if class_of(size).is_some() && class_of(size) == class_of(new_size) {
                    assert_eq!(b, before, "{size} → {new_size} moved within its class");
                }
                for i in 0..size.min(new_size) {
                    assert_eq!(*b.add(i), i as u8, "{size} → {new_size} at {i}");
                }
                for i in size..new_size {
                    *b.add(i) = i as u8;
                }
                size = new_size;
            }
            a.dealloc(b, layout(size));
            a.release();
        }
    }

    #[test]
    fn threads_never_share_a_block() {
        static SHARED: KeepLarge = KeepLarge::new();
        SHARED.keep_from_now();
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut seed = u32::from(t) * 7919 + 1;
                    for round in 0..2000u32 {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        let size = 2048 + (seed as usize >> 8) % (64 * 1024);
                        let mark = t.wrapping_add(round as u8);
                        unsafe {
                            let b = SHARED.alloc(layout(size));
                            b.write_bytes(mark, size);
                            std::thread::yield_now();
                            let whole = std::slice::from_raw_parts(b, size);
                            assert!(whole.iter().all(|&x| x == mark), "a block was shared");
                            SHARED.dealloc(b, layout(size));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(SHARED.kept_bytes() <= KEPT_BYTES);
        SHARED.release();
    }
}
