//! A minimal single-task USB/IP client for the headline points: the same loop as the raw
//! baseline client, speaking CMD_SUBMIT/RET_SUBMIT through `usbip-proto`'s encoder.
//!
//! It isolates the server from the client library's costs (tasks, channels, oneshots); it
//! never checks more than status and lengths, so it is a load generator, not a client.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use usbipd::device::r#virtual::gadget_zero;

use anyhow::{bail, ensure};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use usbip_proto::{
    transfer_flags, CmdSubmit, Direction, Limits, OpReply, OpRequest, UrbHeader, HEADER_LEN,
};

use crate::load::Counters;

/// Imports `busid` and selects the source/sink configuration; returns the socket and devid.
pub async fn import(addr: SocketAddr, busid: &str) -> anyhow::Result<(TcpStream, u32)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let req = OpRequest::Import {
        busid: busid.into(),
    };
    let mut out = Vec::new();
    req.encode(&mut out);
    stream.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(4096);
    let devid = loop {
        if let Some((reply, _)) = OpReply::decode(&req, &buf, &Limits::default())? {
            match reply {
                OpReply::Import(Ok(record)) => break record.devid(),
                _ => bail!("import of {busid} refused"),
            }
        }
        if stream.read_buf(&mut buf).await? == 0 {
            bail!("server closed during import");
        }
    };
    let mut h = [0u8; HEADER_LEN];
    cmd(
        0,
        devid,
        Direction::Out,
        0,
        0,
        [0, 0x09, gadget_zero::CONFIG_SOURCE_SINK, 0, 0, 0, 0, 0],
    )
    .encode(&mut h);
    stream.write_all(&h).await?;
    let mut reply = [0u8; HEADER_LEN];
    stream.read_exact(&mut reply).await?;
    ensure!(reply[0x14..0x18] == [0; 4], "SET_CONFIGURATION failed");
    Ok((stream, devid))
}

fn cmd(
    seqnum: u32,
    devid: u32,
    direction: Direction,
    ep: u32,
    len: u32,
    setup: [u8; 8],
) -> CmdSubmit {
    CmdSubmit {
        header: UrbHeader {
            seqnum,
            devid,
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
        number_of_packets: 0,
        interval: 0,
        setup,
    }
}

/// The URB a lean load repeats.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub direction: Direction,
    pub ep: u32,
    pub len: usize,
    pub setup: [u8; 8],
}

impl Shape {
    pub fn bulk(direction: Direction, len: usize) -> Shape {
        let ep = if direction == Direction::In {
            gadget_zero::EP_IN & 0x0f
        } else {
            gadget_zero::EP_OUT
        };
        Shape {
            direction,
            ep: u32::from(ep),
            len,
            setup: [0; 8],
        }
    }

    /// GET_DESCRIPTOR(DEVICE), 18 bytes IN on endpoint 0.
    pub fn get_descriptor() -> Shape {
        Shape {
            direction: Direction::In,
            ep: 0,
            len: 18,
            setup: GET_DESCRIPTOR,
        }
    }

    pub fn encode(&self, seqnum: u32, devid: u32, out: &mut [u8; HEADER_LEN]) {
        cmd(
            seqnum,
            devid,
            self.direction,
            self.ep,
            self.len as u32,
            self.setup,
        )
        .encode(out);
    }
}

/// GET_DESCRIPTOR(DEVICE), 18 bytes.
pub const GET_DESCRIPTOR: [u8; 8] = [0x80, 0x06, 0x00, 0x01, 0, 0, 18, 0];

/// Keeps `depth` URBs of `shape` in flight until `counters.stop`.
pub async fn load(
    addr: SocketAddr,
    busid: &str,
    shape: Shape,
    depth: usize,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let (direction, n) = (shape.direction, shape.len);
    let (mut stream, devid) = import(addr, busid).await?;
    let payload = vec![0u8; if direction == Direction::Out { n } else { 0 }];
    let mut headers = vec![0u8; depth * HEADER_LEN];
    let mut buf = vec![0u8; 256 * 1024];
    let (mut seqnum, mut in_flight, mut to_send) = (1u32, 0usize, depth);
    // Reply parsing state: header bytes gathered, then payload bytes still to skip.
    let (mut hdr, mut have, mut skip) = ([0u8; HEADER_LEN], 0usize, 0usize);
    loop {
        if to_send > 0 {
            let mut slices = Vec::with_capacity(2 * to_send);
            for (i, h) in headers
                .chunks_exact_mut(HEADER_LEN)
                .take(to_send)
                .enumerate()
            {
                let h: &mut [u8; HEADER_LEN] = h.try_into()?;
                shape.encode(seqnum + i as u32, devid, h);
            }
            for h in headers.chunks_exact(HEADER_LEN).take(to_send) {
                slices.push(IoSlice::new(h));
                if !payload.is_empty() {
                    slices.push(IoSlice::new(&payload));
                }
            }
            seqnum = seqnum.wrapping_add(to_send as u32);
            let mut rest: &mut [IoSlice<'_>] = &mut slices;
            while !rest.is_empty() {
                let w = stream.write_vectored(rest).await?;
                ensure!(w > 0, "write returned 0");
                IoSlice::advance_slices(&mut rest, w);
            }
            in_flight += to_send;
        }
        if in_flight == 0 {
            return Ok(());
        }
        let got = stream.read(&mut buf).await?;
        ensure!(got > 0, "server closed");
        let mut data = &buf[..got];
        let mut done = 0;
        while !data.is_empty() {
            if skip > 0 {
                let k = skip.min(data.len());
                skip -= k;
                data = &data[k..];
                if skip == 0 {
                    done += 1;
                }
                continue;
            }
            let k = (HEADER_LEN - have).min(data.len());
            hdr[have..have + k].copy_from_slice(&data[..k]);
            have += k;
            data = &data[k..];
            if have == HEADER_LEN {
                have = 0;
                let status = i32::from_be_bytes([hdr[0x14], hdr[0x15], hdr[0x16], hdr[0x17]]);
                let actual =
                    u32::from_be_bytes([hdr[0x18], hdr[0x19], hdr[0x1a], hdr[0x1b]]) as usize;
                if status != 0 {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
                counters.bytes.fetch_add(actual as u64, Ordering::Relaxed);
                skip = if direction == Direction::In {
                    actual
                } else {
                    0
                };
                if skip == 0 {
                    done += 1;
                }
            }
        }
        in_flight -= done;
        counters.ops.fetch_add(done as u64, Ordering::Relaxed);
        to_send = if counters.stop.load(Ordering::Relaxed) {
            0
        } else {
            done
        };
    }
}
