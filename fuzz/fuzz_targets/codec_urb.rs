//! The URB-phase codec on arbitrary bytes: CMD_SUBMIT/CMD_UNLINK (what the server decodes) and
//! RET_SUBMIT/RET_UNLINK (what the client decodes). Input: two bytes choosing the split points,
//! the limits and the directions the client remembers, then the stream. Checks: no panic;
//! decoding in pieces gives what decoding whole gives; decoded messages re-encode to bytes that
//! decode to the same message, using exactly those bytes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use usbip_proto::{Command, Direction, Limits, ProtoError, Reply};
use usbipd_fuzz::split_points;

/// Feeds `data` in pieces ending at `points` into `decode_one` until it fails, like a
/// connection's read loop. Returns the messages and the error that stopped it, if any.
fn stream<T>(
    data: &[u8],
    points: &[usize],
    mut decode_one: impl FnMut(&mut BytesMut) -> Result<Option<T>, ProtoError>,
) -> Vec<Result<T, ProtoError>> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut from = 0;
    for &to in points {
        buf.extend_from_slice(&data[from..to]);
        from = to;
        loop {
            let before = buf.len();
            match decode_one(&mut buf) {
                Ok(Some(msg)) => {
                    assert!(buf.len() < before, "a message consumed no bytes");
                    out.push(Ok(msg));
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "an incomplete message consumed bytes");
                    break;
                }
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}

/// The direction a client remembers for `seqnum`: a function of the input, so both decodes of
/// the same stream agree.
fn direction_of(seed: u16, seqnum: u32) -> Option<Direction> {
    match (seqnum ^ u32::from(seed >> 8)) % 3 {
        0 => Some(Direction::In),
        1 => Some(Direction::Out),
        _ => None,
    }
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 2 {
        return;
    }
    let (ctl, data) = input.split_at(2);
    let seed = u16::from_le_bytes([ctl[0], ctl[1]]);
    let points = split_points(seed, data.len());
    let whole = [data.len()];
    // Small limits half of the time, so that they are reached by short inputs too.
    let limits = if seed & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            max_transfer_length: 4096,
            max_iso_packets: 8,
            max_devices: 4,
        }
    };

    // Server side.
    let commands = stream(data, &points, |b| Command::decode(b, &limits));
    assert_eq!(
        commands,
        stream(data, &whole, |b| Command::decode(b, &limits)),
        "a split changed the commands"
    );
    for cmd in commands.iter().flatten() {
        let mut bytes = Vec::new();
        cmd.encode(&mut bytes);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(
            Command::decode(&mut buf, &limits),
            Ok(Some(cmd.clone())),
            "command does not round-trip"
        );
        assert!(buf.is_empty(), "re-encoded command has bytes left over");
    }

    // Client side.
    let dir = |s| direction_of(seed, s);
    let replies = stream(data, &points, |b| Reply::decode(b, &limits, dir));
    assert_eq!(
        replies,
        stream(data, &whole, |b| Reply::decode(b, &limits, dir)),
        "a split changed the replies"
    );
    for rep in replies.iter().flatten() {
        let mut bytes = Vec::new();
        rep.encode(&mut bytes);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(
            Reply::decode(&mut buf, &limits, dir),
            Ok(Some(rep.clone())),
            "reply does not round-trip"
        );
        assert!(buf.is_empty(), "re-encoded reply has bytes left over");
    }
});
