//! Reused, 4 KiB-aligned block buffers.
//!
//! Every PutSnapshotBlock body and every GetSnapshotBlock read needs 512 KiB of memory. A
//! fresh allocation of that size is fresh pages: the kernel faults them in and zeroes them
//! on first touch, which cost about a tenth of the server's CPU on the put and get paths.
//! A [`BlockBuffer`] comes from a process-wide pool and goes back to it when the last
//! [`Bytes`] made from it is dropped, so the hot paths touch warm memory. The pool keeps at
//! most [`POOL_LIMIT`] idle buffers; beyond that, returned buffers are freed.

use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use strata_types::BLOCK_SIZE;

use crate::checksum::BUFFER_ALIGN;

/// Most idle buffers kept (64 MiB).
pub const POOL_LIMIT: usize = 128;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A buffer of up to one block whose first byte is [`BUFFER_ALIGN`]-aligned (so it can be
/// read into or written from with `O_DIRECT`), returned to the pool when dropped.
#[derive(Debug)]
pub struct BlockBuffer {
    /// `BLOCK_SIZE + BUFFER_ALIGN` initialized bytes; the block starts at `start`.
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl BlockBuffer {
    /// An empty buffer (from the pool when one is idle).
    pub fn take() -> Self {
        let pooled = POOL.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let storage = pooled.unwrap_or_else(|| vec![0u8; BLOCK_SIZE + BUFFER_ALIGN]);
        // The storage never moves or grows, so its alignment offset is fixed.
        let start = storage.as_ptr().align_offset(BUFFER_ALIGN);
        Self {
            storage,
            start,
            len: 0,
        }
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
        self.storage[self.start + self.len..self.start + end].copy_from_slice(data);
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
        Some(&mut self.storage[self.start..self.start + len])
    }

    /// The held bytes, shareable; the buffer returns to the pool when the last clone drops.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for BlockBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl Drop for BlockBuffer {
    fn drop(&mut self) {
        let storage = std::mem::take(&mut self.storage);
        let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < POOL_LIMIT {
            pool.push(storage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_bounded_and_recycled() {
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
        // Other tests share the pool, so the same storage is likely, not certain, to come back.
        let mut again = BlockBuffer::take();
        assert!(again.is_empty());
        let window = again.fill(4096).expect("fits");
        assert_eq!(window.len(), 4096);
        assert_eq!(window.as_ptr().align_offset(BUFFER_ALIGN), 0);
        assert!(again.fill(BLOCK_SIZE + 1).is_none());
    }
}
