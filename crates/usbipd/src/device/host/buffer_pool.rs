//! Reused buffers of one endpoint queue. IN: the OS writes into them (on Linux usbfs maps them,
//! zero-copy) and the completion's bytes borrow them until the reply is on the socket; then they
//! come back for the next transfer. OUT: the payload is copied in and the OS reads it from there;
//! the buffer comes back when the transfer is done.
//!
//! Why: a fresh buffer per transfer costs an allocation and, without the mapping, a copy of
//! every byte into or out of the kernel. Never hands out a buffer that a completion still borrows, and
//! never keeps more than a few (usbfs memory is limited for all devices together).

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use nusb::transfer::Buffer;

/// At most this many buffers wait for reuse per endpoint...
const KEEP_BUFFERS: usize = 4;
/// ...holding at most this much (usbfs allows 16 MiB for all users by default).
const KEEP_BYTES: usize = 4 << 20;

#[derive(Clone, Default)]
pub(super) struct BufferPool {
    free: Arc<Mutex<Vec<Buffer>>>,
}

impl BufferPool {
    /// The smallest free buffer that holds `len` bytes, emptied and set to read `len`; or
    /// a new one from `allocate`.
    pub fn take(&self, len: usize, allocate: impl FnOnce(usize) -> Buffer) -> Buffer {
        let reused = {
            let mut free = self.lock();
            let best = free
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            best.map(|i| free.swap_remove(i))
        };
        match reused {
            Some(mut buffer) => {
                buffer.clear();
                buffer.set_requested_len(len);
                buffer
            }
            None => allocate(len),
        }
    }

    /// The bytes a finished IN transfer received, without copying them; the buffer returns
    /// to the pool when the last clone of the bytes is dropped.
    pub fn lend(&self, buffer: Buffer) -> Bytes {
        Bytes::from_owner(Lent {
            buffer: Some(buffer),
            pool: self.clone(),
        })
    }

    /// Keeps `buffer` for reuse, if the pool has room (an OUT transfer's, once it is done).
    pub fn give_back(&self, buffer: Buffer) {
        let mut free = self.lock();
        let held: usize = free.iter().map(Buffer::capacity).sum();
        if free.len() < KEEP_BUFFERS && held + buffer.capacity() <= KEEP_BYTES {
            free.push(buffer);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Buffer>> {
        // No I/O under the lock; a panic elsewhere leaves a usable list.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn free(&self) -> Vec<usize> {
        self.lock().iter().map(Buffer::capacity).collect()
    }
}

/// A buffer lent out as `Bytes`.
struct Lent {
    buffer: Option<Buffer>,
    pool: BufferPool,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_deref().unwrap_or(&[])
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            self.pool.give_back(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(capacity: usize, data: &[u8]) -> Buffer {
        let mut b = Buffer::new(capacity);
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn lent_bytes_are_the_received_ones_and_come_back_when_dropped() {
        let pool = BufferPool::default();
        let bytes = pool.lend(received(512, b"hello"));
        assert_eq!(&bytes[..], b"hello");
        let clone = bytes.slice(1..3);
        drop(bytes);
        assert!(pool.free().is_empty(), "a slice still borrows the buffer");
        assert_eq!(&clone[..], b"el");
        drop(clone);
        assert_eq!(pool.free(), [512]);

        // Reused: emptied, asking for the new length, nothing allocated.
        let b = pool.take(64, |_| panic!("should reuse"));
        assert_eq!((b.len(), b.requested_len(), b.capacity()), (0, 64, 512));
        assert!(pool.free().is_empty());
    }

    #[test]
    fn takes_the_smallest_buffer_that_fits_or_allocates() {
        let pool = BufferPool::default();
        for cap in [4096, 512, 1024] {
            drop(pool.lend(received(cap, b"")));
        }
        assert_eq!(pool.take(600, Buffer::new).capacity(), 1024);
        assert_eq!(pool.take(8192, Buffer::new).capacity(), 8192);
        let mut left = pool.free();
        left.sort();
        assert_eq!(left, [512, 4096]);
    }

    #[test]
    fn keeps_only_a_few_buffers() {
        let pool = BufferPool::default();
        let lent: Vec<Bytes> = (0..6).map(|_| pool.lend(received(1024, b""))).collect();
        drop(lent);
        assert_eq!(pool.free().len(), KEEP_BUFFERS);
        let pool = BufferPool::default();
        let big: Vec<Bytes> = (0..3)
            .map(|_| pool.lend(received(KEEP_BYTES / 2, b"")))
            .collect();
        drop(big);
        assert_eq!(pool.free().len(), 2, "at most KEEP_BYTES held");
    }
}
