//! The raw TCP baselines: a minimal request/response server and its pipelined client, with the
//! same message sizes as the USB/IP runs but no USB/IP logic at all.
//!
//! Messages are a 48-byte header (`op`, `len`) plus a payload: OUT sends 48+N and gets 48 back,
//! IN sends 48 and gets 48+N, ECHO sends 48+N and gets the same back. The server writes IN
//! payloads from one shared zero buffer with vectored writes, so it never copies them; this
//! must stay the fastest possible shape of the same exchange, or the ratios mean nothing.

use std::io::IoSlice;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::load::Counters;

pub const HEADER: usize = 48;
// In .bss: costs no memory until read.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Out = 0,
    In = 1,
    Echo = 2,
}

impl Op {
    /// (request bytes, reply bytes) for payload `n`.
    pub fn sizes(self, n: usize) -> (usize, usize) {
        match self {
            Op::Out => (HEADER + n, HEADER),
            Op::In => (HEADER, HEADER + n),
            Op::Echo => (HEADER + n, HEADER + n),
        }
    }
}

fn header(op: Op, n: usize) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(&(op as u32).to_be_bytes());
    h[4..8].copy_from_slice(&(n as u32).to_be_bytes());
    h
}

/// Accepts raw-baseline connections until the runtime ends.
pub async fn serve(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream));
    }
}

async fn connection(mut stream: TcpStream) -> std::io::Result<()> {
    // A streaming parser over one fixed read buffer: payloads are consumed as they arrive,
    // never gathered, so the server neither allocates nor moves data per message.
    let mut buf = vec![0u8; 256 * 1024];
    let (mut hdr, mut have) = ([0u8; HEADER], 0usize);
    // Payload bytes of the current message still to consume, and whether to echo them.
    let (mut left, mut echo) = (0usize, false);
    // Reply headers (and echoed payloads) of one read, then payload lengths of zeros to send.
    let mut scratch: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut plan: Vec<(usize, usize, usize)> = Vec::new(); // (scratch from, to, zeros after)
    loop {
        let got = stream.read(&mut buf).await?;
        if got == 0 {
            return Ok(());
        }
        scratch.clear();
        plan.clear();
        let mut data = &buf[..got];
        while !data.is_empty() {
            if left > 0 {
                let k = left.min(data.len());
                if echo {
                    scratch.extend_from_slice(&data[..k]);
                }
                left -= k;
                data = &data[k..];
                if left == 0 {
                    if let Some(last) = plan.last_mut() {
                        last.1 = scratch.len();
                    }
                }
                continue;
            }
            let k = (HEADER - have).min(data.len());
            hdr[have..have + k].copy_from_slice(&data[..k]);
            have += k;
            data = &data[k..];
            if have < HEADER {
                break;
            }
            have = 0;
            let op = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
            let n = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
            let start = scratch.len();
            scratch.extend_from_slice(&hdr);
            match op {
                0 => (left, echo) = (n, false),
                1 => (left, echo) = (0, false),
                _ => (left, echo) = (n, true),
            }
            // A reply goes out once its request is whole; the range grows as echo bytes come.
            let zeros = if op == Op::In as u32 { n } else { 0 };
            plan.push((start, scratch.len(), zeros));
        }
        // Replies whose request is still incomplete wait for the next read.
        let mut ready = plan.len();
        if left > 0 {
            ready -= 1;
        }
        write_plan(&mut stream, &scratch, &plan[..ready]).await?;
        if ready < plan.len() {
            // Carry the incomplete message's reply (header, echo bytes so far) over.
            let (a, b, z) = plan[ready];
            scratch.copy_within(a..b, 0);
            scratch.truncate(b - a);
            plan.clear();
            plan.push((0, b - a, z));
            pending_carry(
                &mut stream,
                &mut buf,
                &mut scratch,
                &mut plan,
                &mut left,
                echo,
            )
            .await?;
        }
    }
}

/// Finishes one message whose payload spans reads, then sends its reply.
async fn pending_carry(
    stream: &mut TcpStream,
    buf: &mut [u8],
    scratch: &mut Vec<u8>,
    plan: &mut Vec<(usize, usize, usize)>,
    left: &mut usize,
    echo: bool,
) -> std::io::Result<()> {
    // Only the tail of the stream is ours to consume here; anything after the message is the
    // next message's header, which the caller must see: read no more than what is left.
    while *left > 0 {
        let want = (*left).min(buf.len());
        let got = stream.read(&mut buf[..want]).await?;
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if echo {
            scratch.extend_from_slice(&buf[..got]);
        }
        *left -= got;
    }
    plan[0].1 = scratch.len();
    write_plan(stream, scratch, plan).await?;
    scratch.clear();
    plan.clear();
    Ok(())
}

pub(crate) async fn write_plan(
    stream: &mut TcpStream,
    scratch: &[u8],
    plan: &[(usize, usize, usize)],
) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(plan.len() * 2);
    for &(a, b, zeros) in plan {
        slices.push(IoSlice::new(&scratch[a..b]));
        let mut left = zeros;
        while left > 0 {
            let k = left.min(ZEROS.len());
            slices.push(IoSlice::new(&ZEROS[..k]));
            left -= k;
        }
    }
    let mut rest: &mut [IoSlice<'_>] = &mut slices;
    while !rest.is_empty() {
        let n = stream.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// Keeps `depth` requests of `op`/`n` in flight on one connection until `counters.stop`, then
/// drains what is in flight. One task, no channels: the cheapest client of this exchange.
pub async fn load(
    addr: std::net::SocketAddr,
    op: Op,
    n: usize,
    depth: usize,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (req_len, reply_len) = op.sizes(n);
    let h = header(op, n);
    let payload = vec![0u8; req_len - HEADER];
    let mut buf = vec![0u8; 256 * 1024];
    let mut pending = 0usize; // bytes of the current reply already read
    let mut in_flight = 0usize;
    let mut to_send = depth;
    loop {
        if to_send > 0 {
            send(&mut stream, &h, &payload, to_send).await?;
            in_flight += to_send;
        }
        if in_flight == 0 {
            return Ok(());
        }
        let got = stream.read(&mut buf).await?;
        if got == 0 {
            anyhow::bail!("raw server closed");
        }
        pending += got;
        let done = pending / reply_len;
        pending %= reply_len;
        in_flight -= done;
        counters.ops.fetch_add(done as u64, Ordering::Relaxed);
        counters
            .bytes
            .fetch_add((done * n) as u64, Ordering::Relaxed);
        to_send = if counters.stop.load(Ordering::Relaxed) {
            0
        } else {
            done
        };
    }
}

async fn send(stream: &mut TcpStream, h: &[u8], payload: &[u8], k: usize) -> std::io::Result<()> {
    let mut slices = Vec::with_capacity(2 * k);
    for _ in 0..k {
        slices.push(IoSlice::new(h));
        if !payload.is_empty() {
            slices.push(IoSlice::new(payload));
        }
    }
    let mut rest: &mut [IoSlice<'_>] = &mut slices;
    while !rest.is_empty() {
        let w = stream.write_vectored(rest).await?;
        if w == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, w);
    }
    Ok(())
}

/// The raw server on a current-thread runtime of its own thread: the thread that wakes from
/// epoll runs the connection's task and writes the reply, with no other worker to hand off to.
pub fn serve_current_thread(listener: std::net::TcpListener) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async {
        listener.set_nonblocking(true)?;
        serve(TcpListener::from_std(listener)?).await;
        Ok(())
    })
}

/// The blocking raw server: one thread per connection, blocking reads and writes, one message
/// at a time. For one message in flight it can beat the async server (no task wake-up).
pub fn serve_blocking(listener: std::net::TcpListener) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        std::thread::spawn(move || blocking_connection(stream));
    }
}

fn blocking_connection(mut s: std::net::TcpStream) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut hdr = [0u8; HEADER];
    let (mut body, mut reply) = (Vec::new(), Vec::new());
    loop {
        if let Err(e) = s.read_exact(&mut hdr) {
            return match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Ok(()),
                _ => Err(e),
            };
        }
        let op = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let n = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
        reply.clear();
        reply.extend_from_slice(&hdr);
        if op == Op::In as u32 {
            reply.extend_from_slice(&ZEROS[..n.min(ZEROS.len())]);
        } else {
            body.resize(n, 0);
            s.read_exact(&mut body)?;
            if op == Op::Echo as u32 {
                reply.extend_from_slice(&body);
            }
        }
        s.write_all(&reply)?;
    }
}

/// One blocking connection doing one exchange at a time, from a thread that sleeps in `read`
/// while it waits: the latency figure's client for usbipd and the raw servers alike.
pub struct PingPong {
    s: std::net::TcpStream,
    pub request: [u8; HEADER],
    reply: Vec<u8>,
}

impl PingPong {
    pub fn new(
        s: std::net::TcpStream,
        request: [u8; HEADER],
        reply_len: usize,
    ) -> std::io::Result<PingPong> {
        s.set_nodelay(true)?;
        s.set_nonblocking(false)?;
        Ok(PingPong {
            s,
            request,
            reply: vec![0u8; reply_len],
        })
    }

    /// Sends `request`, reads the whole reply; returns the round-trip time and the reply.
    pub fn round_trip(&mut self) -> std::io::Result<(Duration, &[u8])> {
        use std::io::{Read, Write};
        let t = Instant::now();
        self.s.write_all(&self.request)?;
        self.s.read_exact(&mut self.reply)?;
        Ok((t.elapsed(), &self.reply))
    }
}

/// The request header of the raw IN exchange (48 B out, 48+`n` back).
pub fn in_request(n: usize) -> [u8; HEADER] {
    header(Op::In, n)
}
