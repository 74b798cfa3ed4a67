//! Reused, 4 KiB-aligned block buffers.
//!
//! Every PutSnapshotBlock body and every GetSnapshotBlock read needs 512 KiB of memory. A
//! fresh allocation of that size is fresh pages: the kernel faults them in and zeroes them
//! on first touch, which cost about a tenth of the server's CPU on the put and get paths.
//! A [`BlockBuffer`] comes from a process-wide pool and goes back to it when the last
//! [`Bytes`] made from it is dropped, so the hot paths touch warm memory.
//!
//! The first [`ARENA_BUFFERS`] buffers are carved from one arena that asks for transparent
//! huge pages (`MADV_HUGEPAGE`): an `O_DIRECT` read or write pins, dirties and releases
//! its buffer page by page, and a 2 MiB page makes that one step instead of 128. The arena
//! is mapped once and kept for the life of the process (its untouched pages cost nothing).
//! Beyond it, buffers are ordinary allocations, of which the pool keeps at most
//! [`POOL_LIMIT`] idle; returned ones beyond that are freed.

use std::sync::{Mutex, OnceLock, PoisonError};

use bytes::{Bytes, BytesMut};
use strata_types::BLOCK_SIZE;

/// Alignment of block buffers: the chunk store can then write them with `O_DIRECT`,
/// without a copy into the page cache.
pub const BUFFER_ALIGN: usize = 4096;

/// An empty buffer with room for `capacity` bytes whose first byte sits on a
/// [`BUFFER_ALIGN`] boundary (for `O_DIRECT` reads and writes).
pub fn aligned_buffer(capacity: usize) -> BytesMut {
    let mut buffer = BytesMut::with_capacity(capacity + BUFFER_ALIGN);
    let pad = buffer.as_ptr().align_offset(BUFFER_ALIGN);
    buffer.resize(pad, 0);
    bytes::Buf::advance(&mut buffer, pad);
    buffer
}

/// Most idle ordinary buffers kept (32 MiB: one per request in flight at C=64).
pub const POOL_LIMIT: usize = 64;

/// Buffers in the huge-page arena (64 MiB of address space).
pub const ARENA_BUFFERS: usize = 128;

/// The size and alignment of a transparent huge page on x86-64 and arm64 (4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// The memory of one buffer.
#[derive(Debug)]
enum Storage {
    /// A block-sized slot of the arena (block-aligned, so also [`BUFFER_ALIGN`]-aligned).
    Arena(&'static mut [u8]),
    /// `BLOCK_SIZE + BUFFER_ALIGN` bytes; the block starts at the first aligned byte.
    Heap(Vec<u8>),
}

impl Storage {
    fn heap() -> Self {
        Storage::Heap(vec![0u8; BLOCK_SIZE + BUFFER_ALIGN])
    }

    /// The block-sized, aligned window.
    fn block(&mut self) -> &mut [u8] {
        match self {
            Storage::Arena(slot) => slot,
            Storage::Heap(vec) => {
                let window = aligned_window(vec);
                &mut vec[window]
            }
        }
    }

    fn block_ref(&self) -> &[u8] {
        match self {
            Storage::Arena(slot) => slot,
            Storage::Heap(vec) => &vec[aligned_window(vec)],
        }
    }
}

/// Where the block sits in a heap buffer: from its first aligned byte (the vector never
/// grows, so that offset is fixed).
fn aligned_window(vec: &[u8]) -> std::ops::Range<usize> {
    let start = vec.as_ptr().align_offset(BUFFER_ALIGN);
    start..start + BLOCK_SIZE
}

/// Idle buffers: every arena slot not in use, and up to [`POOL_LIMIT`] heap buffers.
struct Pool {
    arena: Vec<&'static mut [u8]>,
    heap: Vec<Vec<u8>>,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    arena: Vec::new(),
    heap: Vec::new(),
});

/// Whether the arena was mapped (it is filled into the pool once, on first use).
static ARENA: OnceLock<()> = OnceLock::new();

/// Map the arena and cut it into slots; none if the system refuses the mapping.
fn arena_slots() -> Vec<&'static mut [u8]> {
    let Ok(map) = memmap2::MmapMut::map_anon(ARENA_BUFFERS * BLOCK_SIZE + HUGE_PAGE) else {
        return Vec::new();
    };
    #[cfg(target_os = "linux")]
    if let Err(error) = map.advise(memmap2::Advice::HugePage) {
        // Still correct, only with small pages.
        tracing::debug!(%error, "no transparent huge pages for block buffers");
    }
    // Kept for the life of the process: the slots are handed out as `'static` memory.
    let memory: &'static mut [u8] = &mut Box::leak(Box::new(map))[..];
    let skip = memory.as_ptr().align_offset(HUGE_PAGE).min(HUGE_PAGE);
    memory[skip..]
        .chunks_exact_mut(BLOCK_SIZE)
        .take(ARENA_BUFFERS)
        .collect()
}

/// A buffer of up to one block whose first byte is [`BUFFER_ALIGN`]-aligned (so it can be
/// read into or written from with `O_DIRECT`), returned to the pool when dropped.
#[derive(Debug)]
pub struct BlockBuffer {
    storage: Storage,
    len: usize,
}

impl BlockBuffer {
    /// An empty buffer to fill and then write out (from the pool when one is idle; from the
    /// huge-page arena while it has room).
    pub fn take() -> Self {
        Self::take_from(true)
    }

    /// An empty buffer to read into with `O_DIRECT`, in small pages: a read dirties and locks
    /// every page of its buffer, and with four buffers sharing a huge page, concurrent
    /// reads into them contend for that one page (GetSnapshotBlock measured 15 % slower).
    pub fn take_for_reading() -> Self {
        Self::take_from(false)
    }

    fn take_from(arena: bool) -> Self {
        let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        if arena {
            ARENA.get_or_init(|| pool.arena = arena_slots());
        }
        let storage = match pool.take(arena) {
            Some(storage) => storage,
            None => {
                drop(pool);
                Storage::heap()
            }
        };
        Self { storage, len: 0 }
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append `data`. Returns false, changing nothing, if the result would exceed one block.
    pub fn extend_from_slice(&mut self, data: &[u8]) -> bool {
        let end = self.len + data.len();
        if end > BLOCK_SIZE {
            return false;
        }
        self.storage.block()[self.len..end].copy_from_slice(data);
        self.len = end;
        true
    }

    /// The first `len` bytes (at most one block) as a writable slice, which the buffer then
    /// holds: for reading into. Their previous content is whatever the buffer last held.
    pub fn fill(&mut self, len: usize) -> Option<&mut [u8]> {
        if len > BLOCK_SIZE {
            return None;
        }
        self.len = len;
        Some(&mut self.storage.block()[..len])
    }

    /// The held bytes, shareable; the buffer returns to the pool when the last clone drops.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for BlockBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.storage.block_ref()[..self.len]
    }
}

impl Drop for BlockBuffer {
    fn drop(&mut self) {
        let storage = std::mem::replace(&mut self.storage, Storage::Heap(Vec::new()));
        POOL.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .give_back(storage);
    }
}

impl Pool {
    /// An idle buffer: an arena slot if `arena` and one is free, else a pooled heap one.
    fn take(&mut self, arena: bool) -> Option<Storage> {
        let slot = if arena { self.arena.pop() } else { None };
        slot.map(Storage::Arena)
            .or_else(|| self.heap.pop().map(Storage::Heap))
    }

    /// Keep a buffer no longer used: every arena slot, heap ones up to [`POOL_LIMIT`].
    fn give_back(&mut self, storage: Storage) {
        match storage {
            Storage::Arena(slot) => self.arena.push(slot),
            Storage::Heap(vec) if !vec.is_empty() && self.heap.len() < POOL_LIMIT => {
                self.heap.push(vec);
            }
            Storage::Heap(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the pool does, on a pool of the test's own (the process-wide one is shared by
    /// every test running at the same time): a returned buffer is the next one handed out,
    /// arena slots always come back, and heap buffers beyond the limit are freed.
    #[test]
    fn returned_buffers_are_handed_out_again_up_to_the_limit() {
        let mut pool = Pool {
            arena: Vec::new(),
            heap: Vec::new(),
        };
        assert!(pool.take(false).is_none(), "an empty pool has nothing");
        let heap = Storage::heap();
        let address = heap.block_ref().as_ptr();
        pool.give_back(heap);
        let again = pool.take(false).expect("recycled");
        assert_eq!(
            again.block_ref().as_ptr(),
            address,
            "the same memory comes back"
        );

        let slot: &'static mut [u8] = Box::leak(vec![0u8; BLOCK_SIZE].into_boxed_slice());
        let slot_address = slot.as_ptr();
        pool.give_back(Storage::Arena(slot));
        pool.give_back(again);
        let first = pool.take(true).expect("a slot");
        assert!(
            matches!(first, Storage::Arena(_)),
            "arena slots are preferred for writes"
        );
        assert_eq!(first.block_ref().as_ptr(), slot_address);
        assert!(matches!(pool.take(false), Some(Storage::Heap(_))));

        for _ in 0..POOL_LIMIT + 5 {
            pool.give_back(Storage::heap());
        }
        assert_eq!(
            pool.heap.len(),
            POOL_LIMIT,
            "beyond the limit, buffers are freed"
        );
        pool.give_back(Storage::Heap(Vec::new()));
        assert_eq!(
            pool.heap.len(),
            POOL_LIMIT,
            "the empty placeholder is never kept"
        );
    }

    #[test]
    fn buffers_are_aligned_and_bounded() {
        let mut buffer = BlockBuffer::take();
        assert!(buffer.extend_from_slice(&[7u8; 1000]));
        assert!(buffer.extend_from_slice(&vec![8u8; BLOCK_SIZE - 1000]));
        assert!(!buffer.extend_from_slice(&[9u8]));
        let bytes = buffer.freeze();
        assert_eq!(bytes.len(), BLOCK_SIZE);
        assert_eq!(bytes.as_ptr().align_offset(BUFFER_ALIGN), 0);
        assert_eq!((bytes[999], bytes[1000]), (7, 8));
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(clone[0], 7, "alive while any clone is");
        drop(clone);
        let mut again = BlockBuffer::take();
        assert!(again.is_empty());
        let window = again.fill(4096).expect("fits");
        assert_eq!(window.len(), 4096);
        assert_eq!(window.as_ptr().align_offset(BUFFER_ALIGN), 0);
        assert!(again.fill(BLOCK_SIZE + 1).is_none());
    }

    #[test]
    fn live_buffers_never_share_memory_past_the_arena() {
        // More live buffers than the arena holds: the rest come from the heap. Each is
        // aligned, and each keeps its own content while all are alive.
        let buffers: Vec<BlockBuffer> = (0..ARENA_BUFFERS + 8)
            .map(|n| {
                let mut buffer = if n % 5 == 0 {
                    BlockBuffer::take_for_reading()
                } else {
                    BlockBuffer::take()
                };
                let window = buffer.fill(BLOCK_SIZE).expect("one block");
                assert_eq!(window.as_ptr().align_offset(BUFFER_ALIGN), 0);
                window.fill((n % 251) as u8);
                buffer
            })
            .collect();
        for (n, buffer) in buffers.iter().enumerate() {
            let expected = (n % 251) as u8;
            assert!(buffer.as_ref().iter().all(|b| *b == expected), "buffer {n}");
        }
        let mut starts: Vec<usize> = buffers
            .iter()
            .map(|b| b.as_ref().as_ptr() as usize)
            .collect();
        starts.sort_unstable();
        assert!(
            starts.windows(2).all(|w| w[1] - w[0] >= BLOCK_SIZE),
            "no overlap"
        );
    }
}
