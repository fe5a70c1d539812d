//! Encode/decode cost of the URB-phase headers (`cargo bench -p usbip-proto`).
//!
//! Headers only: payloads are never copied by the codec (they are split off as `Bytes`), so the
//! per-URB cost of the wire format is the cost of these 48 bytes.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use usbip_proto::{CmdSubmit, Command, Direction, Limits, Reply, RetSubmit, UrbHeader, HEADER_LEN};

fn cmd_submit(seqnum: u32) -> CmdSubmit {
    CmdSubmit {
        header: UrbHeader {
            seqnum,
            devid: 0x0001_0002,
            direction: Direction::In,
            ep: 1,
        },
        transfer_flags: 0x200,
        transfer_buffer_length: 65536,
        start_frame: 0,
        number_of_packets: 0,
        interval: 0,
        setup: [0; 8],
    }
}

fn ret_submit(seqnum: u32) -> RetSubmit {
    RetSubmit {
        seqnum,
        status: 0,
        actual_length: 0,
        start_frame: 0,
        number_of_packets: 0,
        error_count: 0,
    }
}

/// `n` encoded messages back to back, as they would sit in a read buffer.
fn stream(n: usize, encode: impl Fn(u32, &mut [u8; HEADER_LEN])) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * HEADER_LEN);
    for i in 0..n {
        let mut h = [0u8; HEADER_LEN];
        encode(i as u32, &mut h);
        out.extend_from_slice(&h);
    }
    out
}

fn bench(c: &mut Criterion) {
    const BATCH: usize = 1024;
    let limits = Limits::default();
    let mut g = c.benchmark_group("header");
    g.throughput(Throughput::Elements(1));

    g.bench_function("encode CMD_SUBMIT", |b| {
        let cmd = cmd_submit(7);
        let mut h = [0u8; HEADER_LEN];
        b.iter(|| {
            black_box(&cmd).encode(&mut h);
            black_box(&h);
        })
    });
    g.bench_function("encode RET_SUBMIT", |b| {
        let ret = ret_submit(7);
        let mut h = [0u8; HEADER_LEN];
        b.iter(|| {
            black_box(&ret).encode(&mut h);
            black_box(&h);
        })
    });

    // Decoding consumes its input: refill a buffer of BATCH headers outside the timed part and
    // report the time per header.
    let cmds = stream(BATCH, |i, h| cmd_submit(i).encode(h));
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("decode CMD_SUBMIT x1024", |b| {
        let mut buf = BytesMut::with_capacity(cmds.len());
        b.iter_batched_ref(
            || {
                buf.clear();
                buf.extend_from_slice(&cmds);
                buf.split()
            },
            |buf| {
                while let Ok(Some(cmd)) = Command::decode(buf, &limits) {
                    black_box(cmd);
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let rets = stream(BATCH, |i, h| ret_submit(i).encode(h));
    g.bench_function("decode RET_SUBMIT x1024", |b| {
        let mut buf = BytesMut::with_capacity(rets.len());
        b.iter_batched_ref(
            || {
                buf.clear();
                buf.extend_from_slice(&rets);
                buf.split()
            },
            |buf| {
                while let Ok(Some(reply)) = Reply::decode(buf, &limits, |_| Some(Direction::Out)) {
                    black_box(reply);
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
