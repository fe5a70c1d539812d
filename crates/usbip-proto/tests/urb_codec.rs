//! Round trips, every split point, and every validation error of the URB-phase codec.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use usbip_proto::*;

fn limits() -> Limits {
    Limits::default()
}

fn decode_all_commands(bytes: &[u8], chunk: usize) -> Vec<Command> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(cmd) = Command::decode(&mut buf, &limits()).unwrap() {
            out.push(cmd);
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    out
}

/// CMD_SUBMIT for GET_DESCRIPTOR(device, 64) exactly as vhci-hcd sends it during enumeration.
const KERNEL_GET_DESCRIPTOR: [u8; 48] = [
    0, 0, 0, 1, // CMD_SUBMIT
    0, 0, 0, 2, // seqnum
    0, 1, 0, 2, // devid: bus 1, dev 2
    0, 0, 0, 1, // direction IN
    0, 0, 0, 0, // ep 0
    0, 0, 2, 0, // transfer_flags URB_DIR_IN
    0, 0, 0, 64, // transfer_buffer_length
    0, 0, 0, 0, // start_frame
    0, 0, 0, 0, // number_of_packets: the kernel sends 0, not 0xffffffff
    0, 0, 0, 0, // interval
    0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x40, 0x00, // setup, little-endian inside
];

#[test]
fn decodes_kernel_control_submit() {
    let cmds = decode_all_commands(&KERNEL_GET_DESCRIPTOR, 48);
    let Command::Submit { cmd, data, iso } = &cmds[0] else {
        panic!("not a submit")
    };
    assert_eq!(cmd.header.seqnum, 2);
    assert_eq!(cmd.header.devid, 0x0001_0002);
    assert_eq!(cmd.header.direction, Direction::In);
    assert_eq!(cmd.transfer_flags, transfer_flags::URB_DIR_IN);
    assert_eq!(cmd.transfer_buffer_length, 64);
    assert_eq!(cmd.setup, [0x80, 6, 0, 1, 0, 0, 64, 0]);
    assert!(data.is_empty() && iso.is_empty());
    let mut again = Vec::new();
    cmds[0].encode(&mut again);
    assert_eq!(again, KERNEL_GET_DESCRIPTOR);
}

#[test]
fn ffffffff_packets_means_not_isochronous() {
    let mut b = KERNEL_GET_DESCRIPTOR;
    b[0x20..0x24].copy_from_slice(&[0xff; 4]);
    let cmds = decode_all_commands(&b, 7);
    let Command::Submit { cmd, iso, .. } = &cmds[0] else {
        panic!()
    };
    assert_eq!(cmd.number_of_packets, 0);
    assert!(iso.is_empty());
}

#[test]
fn ret_submit_header_is_byte_exact_with_the_stub() {
    let mut h = [0u8; HEADER_LEN];
    RetSubmit {
        seqnum: 9,
        status: errno::EPIPE,
        actual_length: 18,
        start_frame: 0,
        number_of_packets: 0,
        error_count: 0,
    }
    .encode(&mut h);
    let mut want = [0u8; 48];
    want[3] = 3;
    want[7] = 9;
    want[0x14..0x18].copy_from_slice(&[0xff, 0xff, 0xff, 0xe0]);
    want[0x1b] = 18;
    assert_eq!(h, want);

    let mut u = [0u8; HEADER_LEN];
    RetUnlink {
        seqnum: 10,
        status: errno::ECONNRESET,
    }
    .encode(&mut u);
    assert_eq!(&u[..8], &[0, 0, 0, 4, 0, 0, 0, 10]);
    assert_eq!(&u[0x14..0x18], &(-104i32).to_be_bytes());
    assert!(u[0x18..].iter().all(|&b| b == 0));
}

fn submit(
    seqnum: u32,
    direction: Direction,
    ep: u32,
    data: Vec<u8>,
    iso: Vec<IsoPacket>,
) -> Command {
    let len = if direction == Direction::Out {
        data.len() as u32
    } else {
        512
    };
    Command::Submit {
        cmd: CmdSubmit {
            header: UrbHeader {
                seqnum,
                devid: 0x10002,
                direction,
                ep,
            },
            transfer_flags: if direction == Direction::In {
                transfer_flags::URB_DIR_IN
            } else {
                0
            },
            transfer_buffer_length: len,
            start_frame: 0,
            number_of_packets: iso.len() as u32,
            interval: 0,
            setup: [0; 8],
        },
        data: Bytes::from(data),
        iso,
    }
}

#[test]
fn rejects_every_invalid_field() {
    type Mangle = Box<dyn Fn(&mut [u8; 48])>;
    let cases: Vec<(Mangle, ProtoError)> = vec![
        (Box::new(|b| b[3] = 9), ProtoError::UnknownCommand(9)),
        (Box::new(|b| b[3] = 3), ProtoError::Unexpected("RET_SUBMIT")),
        (Box::new(|b| b[3] = 4), ProtoError::Unexpected("RET_UNLINK")),
        (Box::new(|b| b[0x0f] = 2), ProtoError::BadDirection(2)),
        (Box::new(|b| b[0x13] = 16), ProtoError::BadEndpoint(16)),
        (
            Box::new(|b| b[0x18..0x1c].copy_from_slice(&0x8000_0000u32.to_be_bytes())),
            ProtoError::TransferTooLong(0x8000_0000, 16 * 1024 * 1024),
        ),
        (
            Box::new(|b| b[0x20..0x24].copy_from_slice(&1025u32.to_be_bytes())),
            ProtoError::TooManyIsoPackets(1025, 1024),
        ),
    ];
    for (mangle, want) in cases {
        let mut b = KERNEL_GET_DESCRIPTOR;
        mangle(&mut b);
        let mut buf = BytesMut::from(&b[..]);
        assert_eq!(Command::decode(&mut buf, &limits()), Err(want));
    }
}

#[test]
fn iso_descriptor_outside_the_buffer_is_refused() {
    let bad = submit(
        1,
        Direction::In,
        1,
        vec![],
        vec![IsoPacket {
            offset: 500,
            length: 100,
            actual_length: 0,
            status: 0,
        }],
    );
    let mut bytes = Vec::new();
    bad.encode(&mut bytes);
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(matches!(
        Command::decode(&mut buf, &limits()),
        Err(ProtoError::IsoOutOfBounds {
            index: 0,
            offset: 500,
            length: 100,
            buffer: 512
        })
    ));
}

#[test]
fn ret_submit_iso_lengths_must_add_up() {
    let reply = Reply::Submit {
        ret: RetSubmit {
            seqnum: 5,
            actual_length: 10,
            number_of_packets: 2,
            ..Default::default()
        },
        data: Bytes::from(vec![0u8; 10]),
        iso: vec![
            IsoPacket {
                offset: 0,
                length: 8,
                actual_length: 4,
                status: 0,
            },
            IsoPacket {
                offset: 8,
                length: 8,
                actual_length: 4,
                status: 0,
            },
        ],
    };
    let mut bytes = Vec::new();
    reply.encode(&mut bytes);
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(
        Reply::decode(&mut buf, &limits(), |_| Some(Direction::In)),
        Err(ProtoError::IsoSumMismatch { sum: 8, actual: 10 })
    );
}

#[test]
fn reply_for_unknown_seqnum_is_an_error() {
    let mut bytes = Vec::new();
    Reply::Submit {
        ret: RetSubmit {
            seqnum: 77,
            ..Default::default()
        },
        data: Bytes::new(),
        iso: vec![],
    }
    .encode(&mut bytes);
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(
        Reply::decode(&mut buf, &limits(), |_| None),
        Err(ProtoError::UnknownSeqnum(77))
    );
}

fn arb_iso(max: usize) -> impl Strategy<Value = Vec<IsoPacket>> {
    prop::collection::vec((0u32..64, 0u32..64, any::<i32>()), 0..max).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (len, actual, status))| IsoPacket {
                offset: i as u32 * 64,
                length: len,
                actual_length: actual.min(len),
                status,
            })
            .collect()
    })
}

fn arb_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (
            any::<u32>(),
            0u32..16,
            prop::collection::vec(any::<u8>(), 0..2048),
            any::<[u8; 8]>()
        )
            .prop_map(|(seq, ep, data, setup)| {
                let mut c = submit(seq, Direction::Out, ep, data, vec![]);
                if let Command::Submit { cmd, .. } = &mut c {
                    cmd.setup = setup;
                }
                c
            }),
        (any::<u32>(), 0u32..16, arb_iso(8)).prop_map(|(seq, ep, iso)| {
            let mut c = submit(seq, Direction::In, ep, vec![], iso);
            if let Command::Submit { cmd, iso, .. } = &mut c {
                cmd.transfer_buffer_length = (iso.len() as u32 * 64).max(1);
            }
            c
        }),
        (any::<u32>(), any::<u32>(), 0u32..16).prop_map(|(seq, victim, ep)| Command::Unlink(
            CmdUnlink {
                header: UrbHeader {
                    seqnum: seq,
                    devid: 0x10002,
                    direction: Direction::Out,
                    ep
                },
                unlink_seqnum: victim,
            }
        )),
    ]
}

proptest! {
    /// Any sequence of commands, delivered in chunks of any size, decodes back to itself.
    #[test]
    fn commands_round_trip_at_any_split(cmds in prop::collection::vec(arb_command(), 1..8), chunk in 1usize..300) {
        let mut bytes = Vec::new();
        for c in &cmds { c.encode(&mut bytes); }
        prop_assert_eq!(decode_all_commands(&bytes, chunk), cmds);
    }

    /// Replies round-trip at any split, with IN data only where the client asked IN.
    #[test]
    fn replies_round_trip_at_any_split(
        items in prop::collection::vec((any::<u32>(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..1024), any::<i32>()), 1..8),
        chunk in 1usize..300,
    ) {
        let replies: Vec<Reply> = items.iter().map(|(seq, is_in, data, status)| {
            if *seq % 5 == 0 {
                Reply::Unlink(RetUnlink { seqnum: *seq, status: *status })
            } else {
                let data = if *is_in { data.clone() } else { vec![] };
                Reply::Submit {
                    ret: RetSubmit { seqnum: *seq, status: *status, actual_length: data.len() as u32, ..Default::default() },
                    data: Bytes::from(data),
                    iso: vec![],
                }
            }
        }).collect();
        let dirs: std::collections::HashMap<u32, Direction> = items.iter()
            .map(|(seq, is_in, _, _)| (*seq, if *is_in { Direction::In } else { Direction::Out }))
            .collect();
        let mut bytes = Vec::new();
        for r in &replies { r.encode(&mut bytes); }
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(r) = Reply::decode(&mut buf, &limits(), |s| dirs.get(&s).copied()).unwrap() {
                out.push(r);
            }
        }
        // Out-direction replies carry no data even when actual_length is set.
        let want: Vec<Reply> = replies.into_iter().map(|r| match r {
            Reply::Submit { ret, data: _, iso } if dirs[&ret.seqnum] == Direction::Out => Reply::Submit { ret, data: Bytes::new(), iso },
            r => r,
        }).collect();
        prop_assert_eq!(out, want);
    }

    /// Arbitrary bytes never panic the decoder; it either errs, waits, or consumes.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = Command::decode(&mut buf, &limits()) {}
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = Reply::decode(&mut buf, &limits(), |_| Some(Direction::In)) {}
        let _ = OpRequest::decode(&bytes);
        let _ = OpReply::decode(&OpRequest::DevList, &bytes, &limits());
    }
}
