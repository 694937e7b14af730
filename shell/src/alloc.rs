//! The allocator both binaries install ([`KeepLarge`]): the system's allocator, plus a small
//! store of freed large blocks (4 KiB to 512 KiB) that the next request of exactly the same
//! size gets back without a system call.
//!
//! Why: a router runs the static musl build, and musl's allocator gives memory back to the
//! kernel as soon as a group of large slots empties. A relay frees and asks again for the
//! same few buffer sizes with every message (TLS records, DATA pieces, the spool's write
//! buffer), so under musl each message paid for mmap/munmap calls, page faults and the
//! clearing of fresh pages: about 1.7 times the CPU of the glibc build per 100 KiB message.
//! glibc keeps such memory itself, in its arenas, where it stays resident after the load;
//! from [`KeepLarge::keep_from_now`] on, glibc is told to map blocks of 64 KiB and more
//! on their own, so that they behave as under musl and the store decides what stays.
//!
//! Blocks are kept by their exact size, never rounded up, so a block in use costs what it
//! costs without the store (an idle TLS session holds a few buffers of this size for hours).
//! A size freed and not asked for again loses its place to the next new size once the
//! store is full.
//!
//! A buffer that grows by doubling (4, 8, 16, 32 KiB...) asks for the same sizes with every
//! message too: a reallocation to a size the store holds takes its block and leaves the old
//! one in the store.
//!
//! Under glibc, [`one_arena`] also makes all threads share one malloc arena.
//!
//! What it does not do: it never asks the system for memory the program did not request,
//! keeps at most [`KEPT_BYTES`] (every block beyond that goes back at once), keeps nothing
//! until [`KeepLarge::keep_from_now`] (start-up's one-off buffers go back to the system), and
//! never touches small or over-aligned requests, which go to the system allocator as they
//! are. It is not a general allocator: no arenas, no per-thread caches,
//! one lock taken only for large blocks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The smallest request kept: below it, the system's allocators do well.
const SMALLEST: usize = 4 * 1024;
/// The largest request kept: above it a block is rare and large.
const LARGEST: usize = 512 * 1024;
/// Sizes kept at once.
const SIZES: usize = 16;
/// Blocks kept per size.
const PER_SIZE: usize = 8;
/// Bytes kept in all. Measured with 100 KiB messages at C=8, in alternating runs: with
/// musl, 512 KiB cost 15 % more CPU per message than 1 MiB; with glibc (whose other
/// blocks stay in its arenas) the CPU was the same and the peak memory 0.3 MiB lower.
#[cfg(target_env = "gnu")]
pub const KEPT_BYTES: usize = 512 * 1024;
/// Bytes kept in all (see the glibc build's value).
#[cfg(not(target_env = "gnu"))]
pub const KEPT_BYTES: usize = 1024 * 1024;
/// Requests aligned beyond this are not kept: every system allocator we run on aligns a
/// plain allocation at least this much, so any kept block of a size fits any request of it.
const ALIGN: usize = 8;

/// Set in a program's environment, keeping never begins: for side-by-side measurements of
/// what the store gains (`benches/compare-postfix.sh` passes its environment on to the
/// relay), not for use.
pub const BENCH_ONLY_NO_KEEPING_VAR: &str = "CERTRELAY_BENCH_ONLY_NO_KEEPING";

/// Makes every thread allocate from glibc's main arena, as `MALLOC_ARENA_MAX=1` would; the
/// binaries call it first in `main`, before any thread exists (a thread keeps the arena it
/// first allocated from). By default glibc gives threads arenas of their own, up to eight
/// per core: the relay's executor, its blocking pool and its reactor each kept their own
/// free memory, and a buffer filled on one thread and freed on another went back to the
/// first one's. The relay's peak PSS at C=8 with 100 KiB messages, three alternating runs
/// each, at the same speed: with `MALLOC_ARENA_MAX=1` set from outside, 8.2-8.9 MB before and
/// 7.4-7.8 MB after; with this call, in a later set, 8.0-8.4 MB before and 7.8-8.0 MB after
/// (glibc's per-thread caches serve small blocks without the arena's lock; the large ones
/// are in mappings of their own, see [`KeepLarge::keep_from_now`]). Nothing under musl,
/// whose allocator has no arenas.
pub fn one_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt sets a tunable of glibc's allocator; it touches no memory of ours.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Whether a request of this layout may be served from, and its block kept in, the store.
fn keepable(layout: Layout) -> bool {
    layout.align() <= ALIGN && (SMALLEST..=LARGEST).contains(&layout.size())
}

/// A kept block's address. Raw pointers are not `Send`; these are owned by the store alone
/// between a free and the next allocation.
#[derive(Clone, Copy)]
struct Block(*mut u8);
// SAFETY: a kept block belongs to no one but the store, which hands it out under its lock.
unsafe impl Send for Block {}

/// The blocks kept of one size.
#[derive(Clone, Copy)]
struct Size {
    /// Octets of each block (0: a free place).
    size: usize,
    len: usize,
    /// When a block of this size was last taken or given, in store operations.
    used: u64,
    blocks: [Block; PER_SIZE],
}

const FREE_PLACE: Size = Size {
    size: 0,
    len: 0,
    used: 0,
    blocks: [Block(ptr::null_mut()); PER_SIZE],
};

struct Kept {
    sizes: [Size; SIZES],
    bytes: usize,
    clock: u64,
    /// `clock` when [`KeepLarge::release_if_unused`] last looked.
    looked: u64,
}

impl Kept {
    fn take(&mut self, size: usize) -> Option<*mut u8> {
        let place = self
            .sizes
            .iter_mut()
            .find(|p| p.size == size && p.len > 0)?;
        // Only a block handed out counts as use (see `release_if_unused`).
        self.clock += 1;
        place.len -= 1;
        place.used = self.clock;
        self.bytes -= size;
        Some(place.blocks[place.len].0)
    }

    /// Keeps `block` when there is room; otherwise says what must go back to the system:
    /// the block itself, or the blocks of the size it took the place of.
    fn give(&mut self, size: usize, block: *mut u8) -> Given {
        self.clock += 1;
        if self.bytes + size > KEPT_BYTES {
            return Given::Refused;
        }
        let place = match self.sizes.iter().position(|p| p.size == size) {
            Some(i) => i,
            None => match self.sizes.iter().position(|p| p.len == 0) {
                Some(i) => i,
                None => {
                    // The size used least recently makes way.
                    let (i, _) = self
                        .sizes
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, p)| p.used)
                        .unwrap_or((0, &self.sizes[0]));
                    let evicted = self.sizes[i];
                    self.bytes -= evicted.size * evicted.len;
                    self.sizes[i] = FREE_PLACE;
                    self.sizes[i].size = size;
                    self.push(i, block);
                    return Given::KeptInPlaceOf(evicted);
                }
            },
        };
        if self.sizes[place].len == PER_SIZE {
            return Given::Refused;
        }
        self.sizes[place].size = size;
        self.push(place, block);
        Given::Kept
    }

    fn push(&mut self, place: usize, block: *mut u8) {
        let p = &mut self.sizes[place];
        p.blocks[p.len] = Block(block);
        p.len += 1;
        p.used = self.clock;
        self.bytes += p.size;
    }
}

enum Given {
    Kept,
    Refused,
    KeptInPlaceOf(Size),
}

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
                sizes: [FREE_PLACE; SIZES],
                bytes: 0,
                clock: 0,
                looked: 0,
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
        // glibc serves blocks of 128 KiB and more from mmap only until the first is freed,
        // then raises the threshold and serves them from its arenas, where 100 KiB message
        // buffers freed in the middle stay resident: the relay's peak PSS grew with each
        // load of 100 KiB messages (7.8 to 9.1 MiB over four). A fixed threshold of 64 KiB
        // keeps large blocks in mappings of their own, which this store keeps or the
        // system takes back, so memory follows the load.
        #[cfg(target_env = "gnu")]
        // SAFETY: mallopt sets a tunable of glibc's allocator; it touches no memory of ours.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        }
    }

    /// Gives every kept block back to the system.
    pub fn release(&self) {
        let all = {
            let mut kept = self.kept();
            kept.bytes = 0;
            std::mem::replace(&mut kept.sizes, [FREE_PLACE; SIZES])
        };
        for place in all {
            free_all(place);
        }
    }

    /// Gives every kept block back to the system when nothing was taken from or given to
    /// the store since the last call: for a program that went idle. The relay calls it once
    /// a minute, the laptop's `certrelay run` before each queue run.
    pub fn release_if_unused(&self) {
        let unused = {
            let mut kept = self.kept();
            let unused = kept.clock == kept.looked;
            kept.looked = kept.clock;
            unused
        };
        if unused {
            self.release();
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

/// Gives the blocks of `place` back to the system.
fn free_all(place: Size) {
    // A kept size is within [SMALLEST, LARGEST] and ALIGN a power of two: always valid.
    let Ok(layout) = Layout::from_size_align(place.size, ALIGN) else {
        return;
    };
    for block in &place.blocks[..place.len] {
        // SAFETY: each kept block came from the system allocator for a request of this
        // size, aligned at most ALIGN (which the system serves with plain malloc/free).
        unsafe { System.dealloc(block.0, layout) };
    }
}

// SAFETY: every block handed out (by an allocation or a reallocation) is either the system
// allocator's answer for the request's own layout, or a kept block of exactly the request's size, allocated by the system for an
// alignment no greater than ALIGN (which every system allocator we run on exceeds for a
// plain allocation) and owned by no one since it was freed. Every free goes back to the
// system with a layout of the block's size and an alignment the system serves with plain
// free, or into the store.
unsafe impl GlobalAlloc for KeepLarge {
    // Each `self.kept().take(..)` stands in a statement of its own: the lock is let go
    // before the system allocator is called or a block is cleared.
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if keepable(layout) {
            let kept = self.kept().take(layout.size());
            if let Some(block) = kept {
                return block;
            }
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if keepable(layout) {
            let kept = self.kept().take(layout.size());
            if let Some(block) = kept {
                ptr::write_bytes(block, 0, layout.size());
                return block;
            }
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if !keepable(layout) || !self.keeping.load(Ordering::Relaxed) {
            return System.dealloc(block, layout);
        }
        let given = self.kept().give(layout.size(), block);
        match given {
            Given::Kept => {}
            Given::Refused => System.dealloc(block, layout),
            Given::KeptInPlaceOf(evicted) => free_all(evicted),
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The new layout keeps the old alignment (GlobalAlloc's contract).
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        if !keepable(new_layout) || !self.keeping.load(Ordering::Relaxed) {
            // Every block, kept before or not, is the system's own for its size.
            return System.realloc(block, layout, new_size);
        }
        // A buffer growing by doubling asks for the same sizes message after message: the
        // new block comes from the store when it can, and the old one goes into it.
        let kept = self.kept().take(new_size);
        let moved = match kept {
            Some(kept) => kept,
            None if keepable(layout) => System.alloc(new_layout),
            None => return System.realloc(block, layout, new_size),
        };
        if !moved.is_null() {
            ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
            self.dealloc(block, layout);
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    #[test]
    fn a_freed_block_is_reused_only_once_keeping_has_begun_and_only_for_its_size() {
        let a = KeepLarge::new();
        unsafe {
            let first = a.alloc(layout(20_000));
            a.dealloc(first, layout(20_000));
            assert_eq!(a.kept_bytes(), 0, "kept before keep_from_now");
            a.keep_from_now();
            let second = a.alloc(layout(20_000));
            second.write_bytes(0xAB, 20_000);
            a.dealloc(second, layout(20_000));
            assert_eq!(a.kept_bytes(), 20_000);
            // Another size does not get it.
            let other = a.alloc(layout(19_999));
            assert_ne!(other, second);
            assert_eq!(a.kept_bytes(), 20_000);
            // The same size does, zeroed on request.
            let third = a.alloc_zeroed(layout(20_000));
            assert_eq!(third, second);
            assert!(std::slice::from_raw_parts(third, 20_000)
                .iter()
                .all(|&b| b == 0));
            assert_eq!(a.kept_bytes(), 0);
            a.dealloc(third, layout(20_000));
            a.dealloc(other, layout(19_999));
            assert_eq!(a.kept_bytes(), 39_999);
            a.release();
            assert_eq!(a.kept_bytes(), 0);
        }
    }

    #[test]
    fn an_unused_store_goes_back_to_the_system() {
        let a = KeepLarge::new();
        a.keep_from_now();
        unsafe {
            let b = a.alloc(layout(8192));
            a.dealloc(b, layout(8192));
            a.release_if_unused();
            assert_eq!(a.kept_bytes(), 8192, "released while in use");
            // A request the store cannot answer is no use of it.
            let other = a.alloc(layout(9000));
            a.release_if_unused();
            assert_eq!(a.kept_bytes(), 0, "kept while unused");
            System.dealloc(other, layout(9000));
        }
    }

    #[test]
    fn no_more_is_kept_than_the_limits() {
        let a = KeepLarge::new();
        a.keep_from_now();
        unsafe {
            // One size: at most PER_SIZE blocks.
            let blocks: Vec<_> = (0..PER_SIZE + 3).map(|_| a.alloc(layout(8192))).collect();
            for &b in &blocks {
                a.dealloc(b, layout(8192));
            }
            assert_eq!(a.kept_bytes(), PER_SIZE * 8192);
            a.release();
            // All sizes: at most KEPT_BYTES.
            let big: Vec<_> = (0..8).map(|_| a.alloc(layout(LARGEST))).collect();
            for &b in &big {
                a.dealloc(b, layout(LARGEST));
            }
            assert_eq!(a.kept_bytes(), KEPT_BYTES / LARGEST * LARGEST);
            a.release();
            // More sizes than places: the least recently used size makes way, and its
            // blocks go back (the byte count stays exact).
            for i in 0..SIZES + 4 {
                let size = SMALLEST + i;
                let b = a.alloc(layout(size));
                a.dealloc(b, layout(size));
            }
            let expected: usize = (4..SIZES + 4).map(|i| SMALLEST + i).sum();
            assert_eq!(a.kept_bytes(), expected);
            a.release();
            assert_eq!(a.kept_bytes(), 0);
        }
    }

    #[test]
    fn small_huge_and_over_aligned_requests_pass_through() {
        let a = KeepLarge::new();
        a.keep_from_now();
        unsafe {
            for l in [
                layout(SMALLEST - 1),
                layout(LARGEST + 1),
                Layout::from_size_align(8192, 4096).unwrap(),
                Layout::from_size_align(8192, 16).unwrap(),
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
    fn a_growing_buffer_takes_kept_blocks_and_leaves_its_old_ones() {
        let a = KeepLarge::new();
        a.keep_from_now();
        unsafe {
            let b8 = a.alloc(layout(8192));
            let b16 = a.alloc(layout(16384));
            a.dealloc(b16, layout(16384));
            b8.write_bytes(7, 8192);
            let grown = a.realloc(b8, layout(8192), 16384);
            assert_eq!(grown, b16, "the kept 16 KiB block was not used");
            assert!(std::slice::from_raw_parts(grown, 8192)
                .iter()
                .all(|&x| x == 7));
            assert_eq!(a.kept_bytes(), 8192, "the old block was not kept");
            a.dealloc(grown, layout(16384));
            a.release();
        }
    }

    #[test]
    fn realloc_keeps_the_contents_of_kept_and_fresh_blocks() {
        let a = KeepLarge::new();
        a.keep_from_now();
        unsafe {
            // A kept block, grown and shrunk through sizes kept and not.
            let b = a.alloc(layout(9000));
            a.dealloc(b, layout(9000));
            let mut size = 9000;
            let mut b = a.alloc(layout(size));
            for i in 0..size {
                *b.add(i) = i as u8;
            }
            for new_size in [9050, 30_000, 700_000, 1500, 5000] {
                b = a.realloc(b, layout(size), new_size);
                assert!(!b.is_null());
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
                        // A few sizes, so that blocks really go from thread to thread.
                        let size = SMALLEST * (1 + (seed as usize >> 8) % 12);
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
