//! The claim book: which devices are bound, where each is in its life, and the transitions
//! between those states, as plain data.
//!
//! Nothing here blocks, awaits, logs or talks IPC. Each transition checks that it applies,
//! changes the book, and returns what the caller must now do (claim a device, give one back,
//! end sessions, tell subscribers), so the state machine is unit-tested on its own below and
//! [`super::service`] is left with the I/O. The book is generic over the claim handle `H` and
//! the session `S` it keeps for each slot; it only stores and hands them back.

use std::collections::BTreeMap;

use super::bus::BusDevice;
use super::claims::{ClaimRecord, Phase};

/// Where a bound device is, as the running extension sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Its claim is being taken (a blocking call is under way).
    Claiming,
    Claimed,
    /// Bound, but the device is unplugged (or could not be claimed): waiting for it.
    Absent,
    /// An unbind is giving it back.
    Releasing,
}

/// One bound device.
#[derive(Debug)]
pub struct Slot<H, S> {
    pub record: ClaimRecord,
    pub state: SlotState,
    handle: Option<H>,
    sessions: Vec<S>,
}

/// What a slot held when its device was let go: the claim, if it was claimed, and its sessions.
#[derive(Debug)]
pub struct Taken<H, S> {
    pub record: ClaimRecord,
    pub handle: Option<H>,
    pub sessions: Vec<S>,
}

/// What the caller does for one saved claim at start.
#[derive(Debug, PartialEq, Eq)]
pub enum RestoreStep {
    /// An unbind was interrupted and the device is here, at `busid`: give it back to its kernel
    /// driver and tell subscribers the saved claim is released.
    Reattach { record: ClaimRecord, busid: String },
    /// Bound and present: its slot is `Claiming`; claim it.
    Claim(ClaimRecord),
    /// Bound and not plugged in: its slot is `Absent`, waiting for it.
    Wait(ClaimRecord),
    /// An interrupted unbind of a device that is not here: forgotten.
    Forget(ClaimRecord),
}

/// Why a request does not apply to the book.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    #[error("{0} is bound already")]
    AlreadyBound(String),
    #[error("no device at {0}")]
    NoSuchDevice(String),
    #[error("{0} is not bound")]
    NotBound(String),
    /// The slot a transition expected is gone (an internal inconsistency).
    #[error("no slot for {0}")]
    Vanished(String),
}

/// A bound device that came back (see [`ClaimBook::returned`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Returned {
    pub record: ClaimRecord,
    /// Its busid before, when it came back on another port (the file must be saved again).
    pub moved_from: Option<String>,
}

/// The bound devices by busid.
#[derive(Debug)]
pub struct ClaimBook<H, S> {
    slots: BTreeMap<String, Slot<H, S>>,
}

impl<H, S> Default for ClaimBook<H, S> {
    fn default() -> Self {
        ClaimBook {
            slots: BTreeMap::new(),
        }
    }
}

impl<H, S> ClaimBook<H, S> {
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&mut self, record: ClaimRecord, state: SlotState) {
        self.slots.insert(
            record.busid.clone(),
            Slot {
                record,
                state,
                handle: None,
                sessions: Vec::new(),
            },
        );
    }

    /// What to save: every slot's record.
    pub fn records(&self) -> Vec<ClaimRecord> {
        self.slots.values().map(|s| s.record.clone()).collect()
    }

    pub fn busids(&self) -> Vec<String> {
        self.slots.keys().cloned().collect()
    }

    pub fn get(&self, busid: &str) -> Option<&Slot<H, S>> {
        self.slots.get(busid)
    }

    pub fn slots(&self) -> impl Iterator<Item = &Slot<H, S>> {
        self.slots.values()
    }

    /// The claim handle of `busid`, while it is claimed.
    pub fn handle(&self, busid: &str) -> Option<&H> {
        self.slots.get(busid).and_then(|s| s.handle.as_ref())
    }

    /// Start: the saved `records` against the devices `present` now. Bound devices get a slot
    /// (claiming or absent); interrupted unbinds get none.
    pub fn restore(
        &mut self,
        records: Vec<ClaimRecord>,
        present: &[BusDevice],
    ) -> Vec<RestoreStep> {
        let mut steps = Vec::new();
        for mut record in records {
            let found = present
                .iter()
                .find(|d| record.matches(&d.busid, d.vid, d.pid, d.serial.as_deref()));
            steps.push(match (record.phase, found) {
                (Phase::Releasing, Some(dev)) => RestoreStep::Reattach {
                    record,
                    busid: dev.busid.clone(),
                },
                (Phase::Releasing, None) => RestoreStep::Forget(record),
                (Phase::Bound, Some(dev)) => {
                    record.busid = dev.busid.clone();
                    self.insert(record.clone(), SlotState::Claiming);
                    RestoreStep::Claim(record)
                }
                (Phase::Bound, None) => {
                    self.insert(record.clone(), SlotState::Absent);
                    RestoreStep::Wait(record)
                }
            });
        }
        steps
    }

    /// `bind`: a new slot for the device at `busid` among `present`, claiming. The caller saves
    /// the book before it claims the device, so that a crash from then on restores the claim.
    pub fn bind(&mut self, busid: &str, present: &[BusDevice]) -> Result<ClaimRecord, BookError> {
        if self.slots.contains_key(busid) {
            return Err(BookError::AlreadyBound(busid.into()));
        }
        let Some(dev) = present.iter().find(|d| d.busid == busid) else {
            return Err(BookError::NoSuchDevice(busid.into()));
        };
        let record = ClaimRecord {
            busid: dev.busid.clone(),
            vid: dev.vid,
            pid: dev.pid,
            serial: dev.serial.clone(),
            detached_driver: dev.driver.clone(),
            phase: Phase::Bound,
        };
        self.insert(record.clone(), SlotState::Claiming);
        Ok(record)
    }

    /// Removes the slot of `busid` (a bind that failed, an unbind that finished).
    pub fn forget(&mut self, busid: &str) -> Option<Taken<H, S>> {
        self.slots.remove(busid).map(|s| Taken {
            record: s.record,
            handle: s.handle,
            sessions: s.sessions,
        })
    }

    /// The claim of `busid` was taken: the slot holds `handle` and is claimed. The driver the
    /// claim detached, if any, is remembered for the unbind (a driver seen before is kept when
    /// the claim detached none). Hands `handle` back if the slot is gone.
    pub fn claimed(
        &mut self,
        busid: &str,
        handle: H,
        detached_driver: Option<String>,
    ) -> Result<ClaimRecord, (BookError, H)> {
        let Some(slot) = self.slots.get_mut(busid) else {
            return Err((BookError::Vanished(busid.into()), handle));
        };
        if detached_driver.is_some() {
            slot.record.detached_driver = detached_driver;
        }
        slot.handle = Some(handle);
        slot.state = SlotState::Claimed;
        Ok(slot.record.clone())
    }

    /// The claim of `busid` failed: the slot waits for the device (absent).
    pub fn claim_failed(&mut self, busid: &str) -> Result<ClaimRecord, BookError> {
        let slot = self
            .slots
            .get_mut(busid)
            .ok_or_else(|| BookError::Vanished(busid.into()))?;
        slot.state = SlotState::Absent;
        Ok(slot.record.clone())
    }

    /// `unbind`: the slot is releasing (and so is its record, which the caller saves before it
    /// gives the device back); its claim and sessions are handed over to be ended.
    pub fn begin_unbind(&mut self, busid: &str) -> Result<Taken<H, S>, BookError> {
        let slot = self
            .slots
            .get_mut(busid)
            .ok_or_else(|| BookError::NotBound(busid.into()))?;
        slot.state = SlotState::Releasing;
        slot.record.phase = Phase::Releasing;
        Ok(Taken {
            record: slot.record.clone(),
            handle: slot.handle.take(),
            sessions: std::mem::take(&mut slot.sessions),
        })
    }

    /// The device of `busid` left: if it was claimed, the slot waits for it again (absent) and
    /// its claim and sessions are handed over to be closed. `None` when there was no claim.
    pub fn left(&mut self, busid: &str) -> Option<Taken<H, S>> {
        let slot = self.slots.get_mut(busid)?;
        let handle = slot.handle.take()?;
        slot.state = SlotState::Absent;
        Some(Taken {
            record: slot.record.clone(),
            handle: Some(handle),
            sessions: std::mem::take(&mut slot.sessions),
        })
    }

    /// `dev` was plugged in: if it is a bound device waiting for its return, its slot moves to
    /// the device's busid and is claiming; the caller claims it.
    pub fn returned(&mut self, dev: &BusDevice) -> Option<Returned> {
        let old = self
            .slots
            .iter()
            .find(|(_, s)| {
                s.state == SlotState::Absent
                    && s.record.phase == Phase::Bound
                    && s.record
                        .matches(&dev.busid, dev.vid, dev.pid, dev.serial.as_deref())
            })
            .map(|(b, _)| b.clone())?;
        let mut slot = self.slots.remove(&old)?;
        slot.record.busid = dev.busid.clone();
        slot.state = SlotState::Claiming;
        let record = slot.record.clone();
        self.slots.insert(dev.busid.clone(), slot);
        Some(Returned {
            record,
            moved_from: (old != dev.busid).then_some(old),
        })
    }

    /// A session of `busid` started: kept with its slot (dropping those `live` says ended), or
    /// handed back when the device is not bound.
    pub fn add_session(&mut self, busid: &str, session: S, live: impl Fn(&S) -> bool) -> Option<S> {
        match self.slots.get_mut(busid) {
            Some(slot) => {
                slot.sessions.retain(|s| live(s));
                slot.sessions.push(session);
                None
            }
            None => Some(session),
        }
    }

    /// Shutdown: every claim and session is handed over to be closed; the slots (and so the
    /// file) stay as they are, for the next start.
    pub fn take_all(&mut self) -> Vec<Taken<H, S>> {
        self.slots
            .values_mut()
            .map(|s| Taken {
                record: s.record.clone(),
                handle: s.handle.take(),
                sessions: std::mem::take(&mut s.sessions),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
