//! The in-flight/unlink table of one session, as plain data: which URBs the device holds, and
//! what each command or completion means for the client. No I/O and no tokio: every
//! transition returns what to send, and the session shell does it.
//!
//! The rule it keeps: for one seqnum the client gets either a RET_SUBMIT or a RET_UNLINK that
//! reports it cancelled (-ECONNRESET), never a RET_SUBMIT after such a RET_UNLINK. A URB leaves
//! the table exactly once, by completing or by being unlinked; a completion for a seqnum not
//! in the table is dropped.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use usbip_proto::{errno, Direction, Reply, RetSubmit};

use crate::device::UrbCompletion;

/// How many unlinks of not-yet-submitted seqnums a table remembers.
pub(super) const MAX_EARLY_UNLINKS: usize = 256;

/// What the table remembers of a URB until it completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pending {
    pub direction: Direction,
    /// Bytes the client asked for (IN) or sent (OUT).
    pub length: u32,
    /// OUT payload bytes the device holds until the URB completes or is cancelled.
    pub held: usize,
}

/// What to do with a CMD_SUBMIT.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Submit {
    /// Hand the URB to the device.
    Start,
    /// It was unlinked before it arrived (the client was told -ECONNRESET): drop it, send
    /// nothing.
    Drop,
}

/// A CMD_SUBMIT the protocol does not allow: the connection closes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// More than this many URBs would be in flight.
    TooMany(usize),
    /// This seqnum is in flight already.
    Duplicate(u32),
}

/// What to do with a CMD_UNLINK.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unlink {
    /// The URB was in flight: cancel it on the device (its completion, if one still comes,
    /// is dropped) and answer -ECONNRESET. `held` OUT bytes are released.
    Cancel { held: usize },
    /// Its CMD_SUBMIT has not arrived yet (vhci-hcd can put the CMD_UNLINK ahead of it):
    /// answer -ECONNRESET; the submit will be dropped.
    Early,
    /// It completed already, and its RET_SUBMIT went out first: answer 0.
    Done,
}

impl Unlink {
    /// The RET_UNLINK status this outcome is reported with.
    pub fn status(&self) -> i32 {
        match self {
            Unlink::Cancel { .. } | Unlink::Early => errno::ECONNRESET,
            Unlink::Done => 0,
        }
    }
}

/// A completion the client is to be told about.
#[derive(Debug)]
pub(super) struct Completed {
    pub reply: Reply,
    /// OUT bytes the device no longer holds.
    pub held: usize,
    /// The device returned more IN data than asked: cut, and reported as -EOVERFLOW.
    pub overflowed: bool,
}

#[derive(Debug)]
pub(super) struct InFlight {
    /// Keyed by seqnums the client chooses. foldhash instead of std's SipHash, which was most
    /// of the table's cost per URB; it is seeded at random too, so colliding seqnums cannot be
    /// chosen without first learning the seed, and `max` bounds the table in any case.
    urbs: HashMap<u32, Pending, foldhash::fast::RandomState>,
    max: usize,
    /// The newest seqnum submitted so far (seqnums grow, wrapping, per connection).
    newest_submit: Option<u32>,
    /// Seqnums unlinked before their CMD_SUBMIT arrived, oldest first.
    early_unlinks: VecDeque<u32>,
    /// OUT payload bytes of the URBs in flight.
    held_out: usize,
}

impl InFlight {
    /// A table that refuses more than `max` URBs in flight.
    pub fn new(max: usize) -> InFlight {
        InFlight {
            urbs: HashMap::default(),
            max,
            newest_submit: None,
            early_unlinks: VecDeque::new(),
            held_out: 0,
        }
    }

    /// URBs in flight.
    pub fn len(&self) -> usize {
        self.urbs.len()
    }

    /// OUT payload bytes the device holds for the URBs in flight.
    pub fn held_out(&self) -> usize {
        self.held_out
    }

    /// A CMD_SUBMIT for `seqnum` arrived.
    pub fn submit(&mut self, seqnum: u32, urb: Pending) -> Result<Submit, Refused> {
        if self.urbs.len() >= self.max {
            return Err(Refused::TooMany(self.max));
        }
        if let Some(i) = self.early_unlinks.iter().position(|&s| s == seqnum) {
            self.early_unlinks.remove(i);
            return Ok(Submit::Drop);
        }
        let Entry::Vacant(slot) = self.urbs.entry(seqnum) else {
            return Err(Refused::Duplicate(seqnum));
        };
        slot.insert(urb);
        if self.is_newer(seqnum) {
            self.newest_submit = Some(seqnum);
        }
        self.held_out += urb.held;
        Ok(Submit::Start)
    }

    /// The device finished a URB. `None`: it is no longer in flight (unlinked meanwhile, the
    /// client was told already), send nothing.
    pub fn complete(&mut self, done: UrbCompletion) -> Option<Completed> {
        let urb = self.urbs.remove(&done.seqnum)?;
        self.held_out -= urb.held;
        let mut ret = RetSubmit {
            seqnum: done.seqnum,
            status: done.status,
            actual_length: done.actual_length,
            start_frame: done.start_frame,
            number_of_packets: done.iso.len() as u32,
            error_count: done.error_count,
        };
        let mut data = done.data;
        let mut overflowed = false;
        match urb.direction {
            Direction::In if data.len() > urb.length as usize => {
                // A device must never return more than asked; the client would overrun.
                data.truncate(urb.length as usize);
                ret.actual_length = urb.length;
                ret.status = errno::EOVERFLOW;
                overflowed = true;
            }
            Direction::In if done.iso.is_empty() => ret.actual_length = data.len() as u32,
            Direction::Out => {
                data = Bytes::new();
                ret.actual_length = ret.actual_length.min(urb.length);
            }
            _ => {}
        }
        Some(Completed {
            reply: Reply::Submit {
                ret,
                data,
                iso: done.iso,
            },
            held: urb.held,
            overflowed,
        })
    }

    /// A CMD_UNLINK for `victim` arrived. Completions that arrived before it must have been
    /// passed to [`InFlight::complete`] first, as the Linux stub sends them first.
    pub fn unlink(&mut self, victim: u32) -> Unlink {
        if let Some(urb) = self.urbs.remove(&victim) {
            self.held_out -= urb.held;
            Unlink::Cancel { held: urb.held }
        } else if self.is_newer(victim) {
            if self.early_unlinks.len() == MAX_EARLY_UNLINKS {
                self.early_unlinks.pop_front();
            }
            self.early_unlinks.push_back(victim);
            Unlink::Early
        } else {
            Unlink::Done
        }
    }

    /// Whether `seqnum` is newer than every seqnum submitted so far, in wrapping order.
    fn is_newer(&self, seqnum: u32) -> bool {
        match self.newest_submit {
            None => true,
            Some(newest) => (seqnum.wrapping_sub(newest) as i32) > 0,
        }
    }
}

#[cfg(test)]
mod tests;
