//! The handshake codec on arbitrary bytes: OP_REQ (what the server decodes) and OP_REP (what
//! the client decodes). Input: two bytes choosing the split points and the reply kind, then
//! the stream. Checks: no panic; feeding the stream in pieces gives exactly what decoding it
//! whole gives; whatever decodes encodes to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use usbip_proto::{Limits, OpReply, OpRequest, ProtoError};
use usbipd_fuzz::split_points;

/// Decodes requests from a stream delivered in pieces ending at `points`, as the server would
/// (it stops at the first error).
fn requests(data: &[u8], points: &[usize]) -> Vec<Result<OpRequest, ProtoError>> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut from = 0;
    for &to in points {
        buf.extend_from_slice(&data[from..to]);
        from = to;
        loop {
            match OpRequest::decode(&buf) {
                Ok(Some((req, used))) => {
                    assert!(used > 0 && used <= buf.len());
                    buf.drain(..used);
                    out.push(Ok(req));
                }
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}

/// Decodes one reply to `request` from a stream delivered in pieces.
fn reply(
    request: &OpRequest,
    data: &[u8],
    points: &[usize],
    limits: &Limits,
) -> Option<Result<(OpReply, usize), ProtoError>> {
    for &to in points {
        match OpReply::decode(request, &data[..to], limits) {
            Ok(Some(r)) => return Some(Ok(r)),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
    }
    None
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 2 {
        return;
    }
    let (ctl, data) = input.split_at(2);
    let seed = u16::from_le_bytes([ctl[0], ctl[1]]);
    let points = split_points(seed, data.len());
    let whole = [data.len()];

    // Server side.
    let split = requests(data, &points);
    assert_eq!(
        split,
        requests(data, &whole),
        "a split changed the requests"
    );
    for req in split.iter().flatten() {
        let mut bytes = Vec::new();
        req.encode(&mut bytes);
        assert_eq!(
            OpRequest::decode(&bytes),
            Ok(Some((req.clone(), bytes.len()))),
            "request does not round-trip"
        );
    }

    // Client side, with a small device limit now and then so that it is reached.
    let limits = Limits {
        max_devices: if seed & 0x100 != 0 { 2 } else { 4096 },
        ..Limits::default()
    };
    let request = if seed & 1 == 0 {
        OpRequest::DevList
    } else {
        OpRequest::Import {
            busid: "1-1".into(),
        }
    };
    let split = reply(&request, data, &points, &limits);
    assert_eq!(
        split,
        reply(&request, data, &whole, &limits),
        "a split changed the reply"
    );
    if let Some(Ok((rep, used))) = split {
        assert!(used <= data.len());
        let mut bytes = Vec::new();
        rep.encode(&mut bytes);
        assert_eq!(
            OpReply::decode(&request, &bytes, &limits),
            Ok(Some((rep, bytes.len()))),
            "reply does not round-trip"
        );
    }
});
