//! How much the session reads from its socket at once.

use bytes::BytesMut;

/// How much one read may take. Bulk OUT data arrives faster than one 64 KiB read per URB can
/// follow (each read costs a syscall, and each one that finds nothing a trip through epoll), so
/// a read that fills all the room it had doubles the room of the next ones, up to
/// [`ReadWindow::MAX`]: four 64 KiB URBs per read. A connection of small commands keeps the
/// small window, and touches no more memory than that.
pub(super) struct ReadWindow {
    size: usize,
}

impl Default for ReadWindow {
    fn default() -> Self {
        ReadWindow { size: Self::MIN }
    }
}

impl ReadWindow {
    const MIN: usize = 64 * 1024;
    const MAX: usize = 256 * 1024;

    /// Makes room in `buf` for the next read when little is left; returns the room there is.
    pub fn room(&self, buf: &mut BytesMut) -> usize {
        if buf.capacity() - buf.len() < self.size / 4 {
            buf.reserve(self.size);
        }
        buf.capacity() - buf.len()
    }

    /// A read took `n` bytes with `room` available.
    pub fn took(&mut self, n: usize, room: usize) {
        if n == room && self.size < Self::MAX {
            self.size *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_reads_keep_the_small_window() {
        let mut window = ReadWindow::default();
        let mut buf = BytesMut::new();
        for _ in 0..4000 {
            let room = window.room(&mut buf);
            assert!(room >= ReadWindow::MIN / 4);
            buf.extend_from_slice(&[0; 48]);
            window.took(48, room);
            let _ = buf.split_to(48);
        }
        assert_eq!(window.size, ReadWindow::MIN);
        assert!(buf.capacity() < 2 * ReadWindow::MIN);
    }

    #[test]
    fn full_reads_grow_the_window_up_to_its_bound() {
        let mut window = ReadWindow::default();
        let mut buf = BytesMut::new();
        let mut rooms = Vec::new();
        for _ in 0..8 {
            let room = window.room(&mut buf);
            rooms.push(room);
            buf.extend_from_slice(&vec![0; room]);
            window.took(room, room);
            // Decoded and handed on.
            let _ = buf.split_to(room);
        }
        assert_eq!(window.size, ReadWindow::MAX);
        assert!(rooms[0] >= ReadWindow::MIN);
        assert!(*rooms.last().unwrap_or(&0) >= ReadWindow::MAX);
        // A partial read does not grow it further.
        window.took(10, 20);
        assert_eq!(window.size, ReadWindow::MAX);
    }
}
