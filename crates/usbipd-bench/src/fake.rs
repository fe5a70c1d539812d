//! A USB/IP server that answers from prebuilt replies: the import of any bus id succeeds, every
//! CMD_SUBMIT gets RET_SUBMIT status 0 with the full length (IN: that many zero bytes from one
//! static buffer, never copied), every CMD_UNLINK gets RET_UNLINK 0.
//!
//! It has no USB logic at all, so `usbip-client` against it measures the client library alone,
//! against the raw TCP client on the raw server of `raw` with the same message sizes.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use usbip_proto::{command, DeviceRecord, OpReply, OpRequest, Speed, HEADER_LEN};

/// Accepts connections until the runtime ends.
pub async fn serve(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream));
    }
}

fn record(busid: &str) -> DeviceRecord {
    DeviceRecord {
        path: "/usbipd-bench/prebuilt".into(),
        busid: busid.into(),
        busnum: 1,
        devnum: 1,
        speed: Speed::High,
        id_vendor: 0x0525,
        id_product: 0xa4a0,
        bcd_device: 0,
        device_class: 0xff,
        device_subclass: 0,
        device_protocol: 0,
        configuration_value: 1,
        num_configurations: 1,
        num_interfaces: 1,
    }
}

fn be32(h: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]])
}

async fn connection(mut stream: TcpStream) -> anyhow::Result<()> {
    let mut first = BytesMut::with_capacity(512);
    let (request, used) = loop {
        if let Some(r) = OpRequest::decode(&first)? {
            break r;
        }
        if stream.read_buf(&mut first).await? == 0 {
            return Ok(());
        }
    };
    let _ = first.split_to(used);
    let mut out = Vec::new();
    match request {
        OpRequest::Import { busid } => OpReply::Import(Ok(record(&busid))).encode(&mut out),
        _ => {
            OpReply::DevList(Vec::new()).encode(&mut out);
            stream.write_all(&out).await?;
            return Ok(());
        }
    }
    stream.write_all(&out).await?;
    // The URB phase: a streaming parser over one read buffer, replies written per read.
    let mut buf = vec![0u8; 256 * 1024];
    let carried = first.len();
    buf[..carried].copy_from_slice(&first);
    let (mut hdr, mut have, mut skip) = ([0u8; HEADER_LEN], 0usize, 0usize);
    let mut scratch: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut plan: Vec<(usize, usize, usize)> = Vec::new();
    let mut got = carried;
    loop {
        if got == 0 {
            got = stream.read(&mut buf).await?;
            if got == 0 {
                return Ok(());
            }
        }
        scratch.clear();
        plan.clear();
        let mut data = &buf[..got];
        got = 0;
        while !data.is_empty() {
            if skip > 0 {
                let k = skip.min(data.len());
                skip -= k;
                data = &data[k..];
                continue;
            }
            let k = (HEADER_LEN - have).min(data.len());
            hdr[have..have + k].copy_from_slice(&data[..k]);
            have += k;
            data = &data[k..];
            if have < HEADER_LEN {
                break;
            }
            have = 0;
            let (cmd, seqnum) = (be32(&hdr, 0), be32(&hdr, 4));
            let is_in = be32(&hdr, 0x0c) == 1;
            let len = be32(&hdr, 0x18) as usize;
            let start = scratch.len();
            scratch.resize(start + HEADER_LEN, 0);
            let reply = &mut scratch[start..];
            reply[4..8].copy_from_slice(&seqnum.to_be_bytes());
            let zeros = match cmd {
                command::CMD_SUBMIT => {
                    reply[0..4].copy_from_slice(&command::RET_SUBMIT.to_be_bytes());
                    reply[0x18..0x1c].copy_from_slice(&(len as u32).to_be_bytes());
                    if is_in {
                        len
                    } else {
                        skip = len;
                        0
                    }
                }
                command::CMD_UNLINK => {
                    reply[0..4].copy_from_slice(&command::RET_UNLINK.to_be_bytes());
                    0
                }
                other => anyhow::bail!("unexpected command {other}"),
            };
            plan.push((start, scratch.len(), zeros));
        }
        crate::raw::write_plan(&mut stream, &scratch, &plan).await?;
    }
}
