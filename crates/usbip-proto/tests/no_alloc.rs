//! The URB-phase codec must not allocate per header: a counting global allocator proves it for
//! encoding and decoding CMD_SUBMIT and RET_SUBMIT (IN and OUT, with and without payload).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use usbip_proto::{CmdSubmit, Command, Direction, Limits, Reply, RetSubmit, UrbHeader, HEADER_LEN};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` (the test harness runs tests on several threads; this file holds
/// one test so nothing else allocates meanwhile).
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCS.load(Ordering::Relaxed);
    f();
    ALLOCS.load(Ordering::Relaxed) - before
}

fn cmd(seqnum: u32, direction: Direction, length: u32) -> CmdSubmit {
    CmdSubmit {
        header: UrbHeader {
            seqnum,
            devid: 0x0001_0002,
            direction,
            ep: 1,
        },
        transfer_flags: 0,
        transfer_buffer_length: length,
        start_frame: 0,
        number_of_packets: 0,
        interval: 0,
        setup: [0; 8],
    }
}

#[test]
fn headers_encode_and_decode_without_allocating() {
    const N: u32 = 1000;
    const PAYLOAD: usize = 64;
    let limits = Limits::default();

    // Encoding into a header array or a buffer with room never allocates.
    let mut wire = Vec::with_capacity(N as usize * (HEADER_LEN + PAYLOAD) * 2);
    let payload = bytes::Bytes::from(vec![0xa5; PAYLOAD]);
    // A Vec-backed Bytes becomes shared on its first clone (one allocation): do that here.
    let _shared = payload.clone();
    let encoded = allocations(|| {
        for i in 0..N {
            let mut h = [0u8; HEADER_LEN];
            cmd(i, Direction::In, 512).encode(&mut h);
            wire.extend_from_slice(&h);
            Command::Submit {
                cmd: cmd(i + N, Direction::Out, PAYLOAD as u32),
                data: payload.clone(),
                iso: Vec::new(),
            }
            .encode(&mut wire);
        }
    });
    assert_eq!(encoded, 0, "allocations while encoding {} commands", 2 * N);

    // Decoding: the first payload split off a fresh BytesMut makes it shared (one allocation;
    // an IN command has no payload and splits nothing), so the first IN and OUT commands are
    // decoded before counting; after that every command must be free.
    let mut buf = BytesMut::with_capacity(wire.len());
    buf.extend_from_slice(&wire);
    let first = Command::decode(&mut buf, &limits).unwrap().unwrap();
    let second = Command::decode(&mut buf, &limits).unwrap().unwrap();
    let mut decoded = 2;
    let n = allocations(|| {
        while let Some(c) = Command::decode(&mut buf, &limits).unwrap() {
            decoded += 1;
            drop(c);
        }
    });
    drop((first, second));
    assert_eq!(decoded, 2 * N);
    assert_eq!(n, 0, "allocations while decoding {} commands", 2 * N - 2);

    // The same for replies: RET_SUBMIT headers, half of them carrying IN data.
    let mut wire = Vec::with_capacity(N as usize * (HEADER_LEN + PAYLOAD));
    for i in 0..N {
        let mut h = [0u8; HEADER_LEN];
        let len = if i & 1 == 0 { PAYLOAD as u32 } else { 0 };
        RetSubmit {
            seqnum: i,
            actual_length: len,
            ..Default::default()
        }
        .encode(&mut h);
        wire.extend_from_slice(&h);
        wire.resize(wire.len() + len as usize, 0);
    }
    let mut buf = BytesMut::with_capacity(wire.len());
    buf.extend_from_slice(&wire);
    let dir = |seq: u32| {
        Some(if seq & 1 == 0 {
            Direction::In
        } else {
            Direction::Out
        })
    };
    let first = Reply::decode(&mut buf, &limits, dir).unwrap().unwrap();
    let mut decoded = 1;
    let n = allocations(|| {
        while let Some(r) = Reply::decode(&mut buf, &limits, dir).unwrap() {
            decoded += 1;
            drop(r);
        }
    });
    drop(first);
    assert_eq!(decoded, N);
    assert_eq!(n, 0, "allocations while decoding {} replies", N - 1);
}
