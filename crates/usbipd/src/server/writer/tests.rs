//! The outbox against a socket that takes a few bytes at a time and is often not ready.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use usbip_proto::{Direction, IsoPacket, Limits, Reply, RetSubmit, RetUnlink};

use super::{Outbox, TotalBuffered};

/// Takes at most `chunk` bytes per write and refuses every other call with `Pending`.
#[derive(Default)]
struct Trickle {
    out: Vec<u8>,
    chunk: usize,
    calls: usize,
    flushes: usize,
    /// Where each slice of each accepted write started, and its length.
    slices: Vec<Vec<(*const u8, usize)>>,
}

impl AsyncWrite for Trickle {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.calls += 1;
        if self.calls % 2 == 1 {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let seen = bufs.iter().map(|b| (b.as_ptr(), b.len())).collect();
        self.slices.push(seen);
        let mut room = self.chunk;
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(room);
            self.out.extend_from_slice(&b[..take]);
            room -= take;
            n += take;
            if room == 0 {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.flushes += 1;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}

fn submit(seqnum: u32, data: &'static [u8], iso: Vec<IsoPacket>) -> Reply {
    Reply::Submit {
        ret: RetSubmit {
            seqnum,
            actual_length: data.len() as u32,
            number_of_packets: iso.len() as u32,
            ..Default::default()
        },
        data: Bytes::from_static(data),
        iso,
    }
}

#[test]
fn replies_reach_the_socket_whole_and_in_order_through_partial_writes() {
    let iso = vec![IsoPacket {
        offset: 0,
        length: 3,
        actual_length: 3,
        status: 0,
    }];
    let replies = vec![
        submit(1, b"hello, world", Vec::new()),
        Reply::Unlink(RetUnlink {
            seqnum: 2,
            status: -104,
        }),
        submit(3, b"", Vec::new()),
        submit(4, b"iso", iso),
    ];
    let total = TotalBuffered::default();
    let mut outbox = Outbox::new(total.clone());
    let mut queued = 0;
    for r in replies.iter().cloned() {
        queued = outbox.push(r);
    }
    assert_eq!(queued, 48 + 12 + 48 + 48 + 48 + 3 + 16);
    assert_eq!(outbox.backlog(), queued);
    assert_eq!(total.get(), queued);
    let mut socket = Trickle {
        chunk: 7,
        ..Default::default()
    };
    let mut cx = Context::from_waker(Waker::noop());
    let mut polls = 0;
    while outbox.poll_write(&mut cx, &mut socket).is_pending() {
        polls += 1;
        assert!(polls < 10_000, "the outbox makes no progress");
    }
    assert!(outbox.is_idle());
    assert_eq!((outbox.backlog(), total.get()), (0, 0));
    assert_eq!(socket.flushes, 1, "one batch, one flush");
    // What the client decodes is what was queued.
    let mut wire = BytesMut::from(&socket.out[..]);
    let dirs = |_| Some(Direction::In);
    for expected in &replies {
        let got = Reply::decode(&mut wire, &Limits::default(), dirs).expect("well formed");
        assert_eq!(got.as_ref(), Some(expected));
    }
    assert!(wire.is_empty());
}

#[test]
fn more_than_one_batch_goes_out_in_order_and_discard_returns_the_count() {
    let total = TotalBuffered::default();
    let mut outbox = Outbox::new(total.clone());
    for seqnum in 0..200 {
        outbox.push(submit(seqnum, b"x", Vec::new()));
    }
    let mut socket = Trickle {
        chunk: 1000,
        ..Default::default()
    };
    let mut cx = Context::from_waker(Waker::noop());
    while outbox.poll_write(&mut cx, &mut socket).is_pending() {}
    assert_eq!(socket.flushes, 200_usize.div_ceil(super::MAX_BATCH));
    let mut wire = BytesMut::from(&socket.out[..]);
    for seqnum in 0..200 {
        match Reply::decode(&mut wire, &Limits::default(), |_| Some(Direction::In)) {
            Ok(Some(Reply::Submit { ret, .. })) => assert_eq!(ret.seqnum, seqnum),
            other => panic!("reply {seqnum}: {other:?}"),
        }
    }
    // What a closed session never wrote is given back to the server-wide count.
    outbox.push(submit(9, b"abc", Vec::new()));
    assert_eq!(total.get(), 51);
    outbox.discard();
    assert_eq!(total.get(), 0);
}

#[test]
fn small_replies_go_out_as_one_slice_and_large_payloads_are_not_copied() {
    static LARGE: [u8; 4096] = [7; 4096];
    let mut outbox = Outbox::new(TotalBuffered::default());
    for seqnum in 0..10 {
        outbox.push(submit(seqnum, b"a small descriptor", Vec::new()));
    }
    outbox.push(Reply::Unlink(RetUnlink {
        seqnum: 10,
        status: 0,
    }));
    outbox.push(submit(11, &LARGE, Vec::new()));
    outbox.push(submit(12, b"after", Vec::new()));
    let mut socket = Trickle {
        chunk: usize::MAX,
        ..Default::default()
    };
    let mut cx = Context::from_waker(Waker::noop());
    while outbox.poll_write(&mut cx, &mut socket).is_pending() {}
    assert_eq!(socket.slices.len(), 1, "one batch, one write");
    let slices = &socket.slices[0];
    // Eleven replies and the large one's header in one slice, its payload where it was, then
    // the last reply.
    assert_eq!(slices.len(), 3);
    assert_eq!(slices[0].1, 10 * (48 + 18) + 48 + 48);
    assert_eq!(slices[1], (LARGE.as_ptr(), LARGE.len()));
    assert_eq!(slices[2].1, 48 + 5);
    let mut wire = BytesMut::from(&socket.out[..]);
    let dirs = |_| Some(Direction::In);
    let mut seqnums = Vec::new();
    while let Some(reply) = Reply::decode(&mut wire, &Limits::default(), dirs).expect("well formed")
    {
        seqnums.push(match reply {
            Reply::Submit { ret, .. } => ret.seqnum,
            Reply::Unlink(u) => u.seqnum,
        });
    }
    assert_eq!(seqnums, (0..13).collect::<Vec<u32>>());
}
