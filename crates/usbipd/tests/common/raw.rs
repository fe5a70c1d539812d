//! A raw-socket client for tests that must misbehave as the project's client never would
//! (write URBs without reading a reply).

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use usbip_proto::{CmdSubmit, Command, Direction, Limits, OpReply, OpRequest, UrbHeader};

/// Imports `busid` on a raw socket; returns the devid.
pub async fn raw_import(stream: &mut TcpStream, busid: &str) -> u32 {
    let request = OpRequest::Import {
        busid: busid.into(),
    };
    let mut out = Vec::new();
    request.encode(&mut out);
    stream.write_all(&out).await.unwrap();
    let mut buf = Vec::new();
    loop {
        if let Some((OpReply::Import(Ok(rec)), _)) =
            OpReply::decode(&request, &buf, &Limits::default()).unwrap()
        {
            return rec.devid();
        }
        let mut chunk = [0u8; 512];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "import refused or connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The bytes of one OUT CMD_SUBMIT (`ep` 0 with `setup` for a control request).
pub fn out_submit(seqnum: u32, devid: u32, ep: u32, setup: [u8; 8], data: Bytes) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + data.len());
    Command::Submit {
        cmd: CmdSubmit {
            header: UrbHeader {
                seqnum,
                devid,
                direction: Direction::Out,
                ep,
            },
            transfer_flags: 0,
            transfer_buffer_length: data.len() as u32,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup,
        },
        data,
        iso: vec![],
    }
    .encode(&mut out);
    out
}
