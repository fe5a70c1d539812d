//! [`OwnedPipeline`]: an imported device driven by one task that owns the socket and the
//! in-flight table. No reader or writer task, no lock, no channel: `start` queues a URB,
//! `next` writes what is queued and reads replies in the caller's task, so a URB costs no
//! task hand-off at all. For one task keeping many URBs in flight (a load generator, a bulk
//! copy); [`crate::Connection`] is the handle to share between tasks.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, ToSocketAddrs};
use usbip_proto::{DeviceRecord, Direction, Limits, Reply};

use crate::io::{pieces, READ_BUFFER};
use crate::{command, import_on, Completion, Error, Submit};

pub struct OwnedPipeline {
    stream: TcpStream,
    record: DeviceRecord,
    next_seqnum: u32,
    /// Direction of every URB in flight, by seqnum.
    waiting: HashMap<u32, Direction>,
    buf: BytesMut,
    /// Bytes queued for the socket, in order.
    out: VecDeque<Bytes>,
    limits: Limits,
}

impl OwnedPipeline {
    /// Imports `busid` from the server at `addr`.
    pub async fn import(addr: impl ToSocketAddrs, busid: &str) -> Result<OwnedPipeline, Error> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (record, buf) = import_on(&mut stream, busid).await?;
        Ok(OwnedPipeline {
            stream,
            record,
            next_seqnum: 1,
            waiting: HashMap::new(),
            buf,
            out: VecDeque::new(),
            limits: Limits::default(),
        })
    }

    /// The device record the import reply carried.
    pub fn record(&self) -> &DeviceRecord {
        &self.record
    }

    /// URBs started whose completion `next` has not returned yet.
    pub fn in_flight(&self) -> usize {
        self.waiting.len()
    }

    /// Queues a URB (sent by the next call to `next`); returns its seqnum.
    pub fn start(&mut self, submit: Submit) -> u32 {
        let seqnum = self.next_seqnum;
        self.next_seqnum = self.next_seqnum.wrapping_add(1);
        self.waiting.insert(seqnum, submit.direction);
        let (h, data, tail) = pieces(&command(seqnum, self.record.devid(), submit));
        self.out.push_back(Bytes::copy_from_slice(&h));
        if !data.is_empty() {
            self.out.push_back(data);
        }
        if !tail.is_empty() {
            self.out.push_back(tail.into());
        }
        seqnum
    }

    /// Writes what the socket takes now; `Ok(false)` if it would block.
    fn try_flush(&mut self) -> Result<bool, Error> {
        while !self.out.is_empty() {
            let slices: Vec<IoSlice<'_>> =
                self.out.iter().take(256).map(|b| IoSlice::new(b)).collect();
            let mut n = match self.stream.try_write_vectored(&slices) {
                Ok(0) => return Err(Error::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e.into()),
            };
            while n > 0 {
                let Some(front) = self.out.front_mut() else {
                    break;
                };
                let k = n.min(front.len());
                front.advance(k);
                n -= k;
                if front.is_empty() {
                    self.out.pop_front();
                }
            }
        }
        Ok(true)
    }

    /// Sends what is queued, then returns the next completion; `None` when nothing is in
    /// flight. Replies to seqnums this pipeline never sent are skipped.
    pub async fn next(&mut self) -> Option<Result<(u32, Completion), Error>> {
        match self.step().await {
            Ok(Some(done)) => Some(Ok(done)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    async fn step(&mut self) -> Result<Option<(u32, Completion)>, Error> {
        loop {
            let waiting = &self.waiting;
            let dir = |seq| Some(waiting.get(&seq).copied().unwrap_or(Direction::Out));
            match Reply::decode(&mut self.buf, &self.limits, dir)? {
                Some(Reply::Submit { ret, data, iso }) => {
                    if self.waiting.remove(&ret.seqnum).is_some() {
                        let c = Completion {
                            status: ret.status,
                            actual_length: ret.actual_length,
                            data,
                            iso,
                        };
                        return Ok(Some((ret.seqnum, c)));
                    }
                    continue;
                }
                Some(Reply::Unlink(_)) => continue,
                None => {}
            }
            if self.waiting.is_empty() && self.out.is_empty() {
                return Ok(None);
            }
            let flushed = self.try_flush()?;
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(READ_BUFFER);
            }
            if flushed {
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Err(Error::Closed);
                }
                continue;
            }
            // Output waits for room: read replies meanwhile, so neither side stalls.
            tokio::select! {
                r = self.stream.readable() => {
                    r?;
                    match self.stream.try_read_buf(&mut self.buf) {
                        Ok(0) => return Err(Error::Closed),
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                w = self.stream.writable() => w?,
            }
        }
    }
}
