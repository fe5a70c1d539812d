//! The two bounded byte pipes between a serial device's USB endpoints and its peer, with the
//! URBs parked on them.
//!
//! Plain data under one short lock: no I/O and no waiting here. Whoever frees room or adds
//! data is told (by return value) to wake the other side.

use std::collections::VecDeque;
use std::net::SocketAddr;

use bytes::Bytes;
use usbip_proto::errno;

use crate::device::{Completer, UrbCompletion};

/// Bytes each direction may hold. An OUT URB waits (is not completed) until its bytes fit.
pub const PIPE_CAPACITY: usize = 64 * 1024;

/// An IN URB waiting for bytes.
struct ParkedIn {
    seqnum: u32,
    length: u32,
}

/// An OUT URB waiting for room in the pipe to the peer.
struct ParkedOut {
    seqnum: u32,
    data: Bytes,
}

#[derive(Default)]
pub struct Pipes {
    /// The open session's generation and completer.
    session: Option<(u64, Completer)>,
    generation: u64,
    /// Peer -> USB host.
    to_host: VecDeque<u8>,
    parked_in: VecDeque<ParkedIn>,
    /// USB host -> peer.
    to_peer: VecDeque<u8>,
    parked_out: VecDeque<ParkedOut>,
    peer: Option<SocketAddr>,
    /// Interrupt IN URBs of the notification endpoint, and the one notification waiting.
    parked_notify: VecDeque<ParkedIn>,
    notification: Option<Bytes>,
}

impl Pipes {
    /// A new session takes over; it returns the generation that identifies it.
    pub fn open_session(&mut self, completer: Completer) -> u64 {
        self.generation += 1;
        self.session = Some((self.generation, completer));
        self.parked_in.clear();
        self.parked_out.clear();
        self.parked_notify.clear();
        self.notification = None;
        self.generation
    }

    /// The session ends: its parked URBs are forgotten, never completed. Buffered bytes stay.
    pub fn close_session(&mut self, generation: u64) {
        if matches!(self.session, Some((g, _)) if g == generation) {
            self.session = None;
            self.parked_in.clear();
            self.parked_out.clear();
            self.parked_notify.clear();
            self.notification = None;
        }
    }

    fn complete(&self, completion: UrbCompletion) {
        if let Some((_, completer)) = &self.session {
            completer.complete(completion);
        }
    }

    /// A bulk IN URB. Returns whether room was freed in the pipe to the host.
    pub fn submit_in(&mut self, seqnum: u32, length: u32) -> bool {
        if length == 0 {
            // Nothing fits into it; do not let it hold up the URBs behind it.
            self.complete(UrbCompletion::data_in(seqnum, Bytes::new()));
            return false;
        }
        self.parked_in.push_back(ParkedIn { seqnum, length });
        self.deliver_in()
    }

    /// Completes parked IN URBs with whatever is buffered, each as soon as there is any byte
    /// for it and with no more than it asked for. Returns whether any byte left the pipe.
    fn deliver_in(&mut self) -> bool {
        if self.session.is_none() {
            return false;
        }
        let mut delivered = false;
        while !self.to_host.is_empty() {
            let Some(urb) = self.parked_in.pop_front() else {
                break;
            };
            let n = self.to_host.len().min(urb.length as usize);
            let data: Vec<u8> = self.to_host.drain(..n).collect();
            self.complete(UrbCompletion::data_in(urb.seqnum, Bytes::from(data)));
            delivered = true;
        }
        delivered
    }

    /// Room left in the pipe to the host.
    pub fn to_host_room(&self) -> usize {
        PIPE_CAPACITY.saturating_sub(self.to_host.len())
    }

    /// Bytes from the peer; the caller read no more than [`Pipes::to_host_room`].
    pub fn push_from_peer(&mut self, bytes: &[u8]) {
        self.to_host.extend(bytes);
        self.deliver_in();
    }

    /// A bulk OUT URB. Without a peer its bytes are discarded (a serial line with nothing on
    /// the other end). Returns whether bytes were added for the peer.
    pub fn submit_out(&mut self, seqnum: u32, data: Bytes) -> bool {
        if self.peer.is_none() {
            self.complete(UrbCompletion::done_out(seqnum, data.len() as u32));
            return false;
        }
        self.parked_out.push_back(ParkedOut { seqnum, data });
        self.admit_out()
    }

    /// Moves parked OUT URBs into the pipe to the peer in order while they fit, completing
    /// each as its bytes are accepted. Returns whether any were.
    fn admit_out(&mut self) -> bool {
        let mut admitted = false;
        while let Some(front) = self.parked_out.front() {
            // An empty pipe takes a URB of any size, so that no URB can wait forever.
            let fits =
                self.to_peer.is_empty() || self.to_peer.len() + front.data.len() <= PIPE_CAPACITY;
            if !fits {
                break;
            }
            let Some(urb) = self.parked_out.pop_front() else {
                break;
            };
            self.to_peer.extend(&urb.data[..]);
            self.complete(UrbCompletion::done_out(urb.seqnum, urb.data.len() as u32));
            admitted = true;
        }
        admitted
    }

    /// Takes up to `max` bytes for the peer, admitting parked OUT URBs into the room freed.
    pub fn take_for_peer(&mut self, max: usize) -> Vec<u8> {
        let n = self.to_peer.len().min(max);
        let chunk = self.to_peer.drain(..n).collect();
        self.admit_out();
        chunk
    }

    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    pub fn peer_connected(&mut self, addr: SocketAddr) {
        self.peer = Some(addr);
        self.to_peer.clear();
    }

    /// The peer left: what was meant for it is discarded, and the OUT URBs waiting for room
    /// complete as if sent, like bytes written to a line with nothing attached.
    pub fn peer_gone(&mut self) {
        self.peer = None;
        self.to_peer.clear();
        while let Some(urb) = self.parked_out.pop_front() {
            self.complete(UrbCompletion::done_out(urb.seqnum, urb.data.len() as u32));
        }
    }

    /// An interrupt IN URB on the notification endpoint.
    pub fn submit_notify(&mut self, seqnum: u32, length: u32) {
        self.parked_notify.push_back(ParkedIn { seqnum, length });
        self.deliver_notification();
    }

    /// Queues a notification, replacing one not yet read (only the latest state matters).
    pub fn notify(&mut self, notification: Bytes) {
        self.notification = Some(notification);
        self.deliver_notification();
    }

    fn deliver_notification(&mut self) {
        if self.session.is_none() || self.parked_notify.is_empty() {
            return;
        }
        let Some(notification) = self.notification.take() else {
            return;
        };
        let Some(urb) = self.parked_notify.pop_front() else {
            return;
        };
        let completion = if notification.len() > urb.length as usize {
            UrbCompletion::error(urb.seqnum, errno::EOVERFLOW)
        } else {
            UrbCompletion::data_in(urb.seqnum, notification)
        };
        self.complete(completion);
    }

    /// Forgets a parked URB. Returns whether bytes were admitted for the peer as a result (a
    /// cancelled OUT URB may have been holding up smaller ones behind it).
    pub fn cancel(&mut self, seqnum: u32) -> bool {
        self.parked_in.retain(|u| u.seqnum != seqnum);
        self.parked_out.retain(|u| u.seqnum != seqnum);
        self.parked_notify.retain(|u| u.seqnum != seqnum);
        self.admit_out()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (Pipes, tokio::sync::mpsc::UnboundedReceiver<UrbCompletion>) {
        let (completer, rx) = Completer::channel();
        let mut pipes = Pipes::default();
        pipes.open_session(completer);
        pipes.peer_connected(SocketAddr::from(([127, 0, 0, 1], 9)));
        (pipes, rx)
    }

    #[test]
    fn out_urbs_wait_for_room_in_order_and_a_cancel_lets_the_next_through() {
        let (mut pipes, mut rx) = open();
        assert!(pipes.submit_out(1, Bytes::from(vec![1; PIPE_CAPACITY - 10])));
        assert_eq!(rx.try_recv().unwrap().seqnum, 1);
        // 20 bytes do not fit; 5 would, but must not overtake.
        assert!(!pipes.submit_out(2, Bytes::from(vec![2; 20])));
        assert!(!pipes.submit_out(3, Bytes::from(vec![3; 5])));
        assert!(rx.try_recv().is_err());
        // Cancelling the big one admits the small one behind it.
        assert!(pipes.cancel(2));
        let c = rx.try_recv().unwrap();
        assert_eq!((c.seqnum, c.actual_length), (3, 5));
        let chunk = pipes.take_for_peer(usize::MAX);
        assert_eq!(chunk.len(), PIPE_CAPACITY - 10 + 5);
        assert_eq!(chunk[chunk.len() - 1], 3);
    }

    #[test]
    fn a_departing_peer_releases_waiting_out_urbs() {
        let (mut pipes, mut rx) = open();
        pipes.submit_out(1, Bytes::from(vec![1; PIPE_CAPACITY]));
        pipes.submit_out(2, Bytes::from(vec![2; 1]));
        assert_eq!(rx.try_recv().unwrap().seqnum, 1);
        assert!(rx.try_recv().is_err());
        pipes.peer_gone();
        let c = rx.try_recv().unwrap();
        assert_eq!((c.seqnum, c.status, c.actual_length), (2, 0, 1));
        assert!(pipes.take_for_peer(usize::MAX).is_empty());
    }

    #[test]
    fn a_closed_session_completes_nothing_and_keeps_the_bytes() {
        let (mut pipes, mut rx) = open();
        pipes.submit_in(1, 64);
        pipes.close_session(1);
        pipes.push_from_peer(b"abc");
        assert!(rx.try_recv().is_err());
        assert_eq!(pipes.to_host_room(), PIPE_CAPACITY - 3);
    }
}
