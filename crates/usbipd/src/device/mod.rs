//! The device model: what the server core asks of any exportable USB device, virtual or host.
//!
//! The core speaks URBs. A [`Device`] describes itself for the device list and opens one
//! [`DeviceSession`] per import; the session takes URBs with [`DeviceSession::submit`] and hands
//! back each result, exactly once, through its [`Completer`]. Nothing here knows about sockets.

pub mod allowlist;
pub mod host;
pub mod registry;
pub mod setup;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod r#virtual;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;
use usbip_proto::{Direction, ExportedDevice, IsoPacket};

pub use setup::SetupPacket;

/// One URB as the server core hands it to a device.
#[derive(Debug, Clone)]
pub struct Urb {
    pub seqnum: u32,
    /// Endpoint number without direction bit (0 is the default control pipe).
    pub endpoint: u8,
    pub direction: Direction,
    pub transfer_flags: u32,
    /// Bytes the client asked for (IN) or sent (OUT).
    pub transfer_length: u32,
    /// Raw setup packet; meaningful for control URBs only.
    pub setup: [u8; 8],
    /// OUT payload; empty for IN.
    pub data: Bytes,
    pub interval: u32,
    pub start_frame: u32,
    /// Isochronous packet descriptors; empty for other transfer types.
    pub iso: Vec<IsoPacket>,
}

impl Urb {
    /// Endpoint address with the direction bit, as USB descriptors write it (0x81 = EP1 IN).
    pub fn endpoint_address(&self) -> u8 {
        match self.direction {
            Direction::In => self.endpoint | 0x80,
            Direction::Out => self.endpoint,
        }
    }
}

/// The result of one URB.
#[derive(Debug, Clone, Default)]
pub struct UrbCompletion {
    pub seqnum: u32,
    /// 0 or a negative Linux errno (see `usbip_proto::errno`).
    pub status: i32,
    /// Bytes transferred. For IN it equals `data.len()`.
    pub actual_length: u32,
    /// IN payload; empty for OUT.
    pub data: Bytes,
    pub start_frame: u32,
    pub error_count: u32,
    pub iso: Vec<IsoPacket>,
}

impl UrbCompletion {
    /// A successful IN transfer carrying `data`.
    pub fn data_in(seqnum: u32, data: Bytes) -> UrbCompletion {
        UrbCompletion {
            seqnum,
            actual_length: data.len() as u32,
            data,
            ..Default::default()
        }
    }

    /// A successful OUT transfer of `len` bytes.
    pub fn done_out(seqnum: u32, len: u32) -> UrbCompletion {
        UrbCompletion {
            seqnum,
            actual_length: len,
            ..Default::default()
        }
    }

    /// A failed transfer with a negative errno and nothing transferred.
    pub fn error(seqnum: u32, status: i32) -> UrbCompletion {
        UrbCompletion {
            seqnum,
            status,
            ..Default::default()
        }
    }

    /// `urb` failed as a whole with `status`, nothing transferred. An isochronous URB still
    /// gets one descriptor per packet (each with `status`, counted in `error_count`): vhci-hcd
    /// takes `number_of_packets` from the RET_SUBMIT, so leaving them out would shrink the
    /// client's URB. For any other URB this is [`UrbCompletion::error`].
    pub fn failed(urb: &Urb, status: i32) -> UrbCompletion {
        let iso: Vec<IsoPacket> = urb
            .iso
            .iter()
            .map(|p| IsoPacket {
                offset: p.offset,
                length: p.length,
                actual_length: 0,
                status,
            })
            .collect();
        UrbCompletion {
            seqnum: urb.seqnum,
            status,
            error_count: iso.len() as u32,
            iso,
            ..Default::default()
        }
    }
}

/// Where a device session delivers completions. Cloneable so that device-side tasks can hold one.
/// A device session keeps one for as long as the device can complete URBs: once every clone is
/// dropped, the server takes the device as gone and ends the client's session (after sending
/// what was completed before).
///
/// A completion given on the server's own thread while it is inside [`DeviceSession::submit`]
/// (see [`InlineCompletions`]) is handed straight back to it, without the channel and without
/// waking any task; any other goes through the channel.
#[derive(Clone, Debug)]
pub struct Completer {
    tx: mpsc::UnboundedSender<UrbCompletion>,
    channel: u64,
}

impl Completer {
    pub fn channel() -> (Completer, mpsc::UnboundedReceiver<UrbCompletion>) {
        static CHANNELS: AtomicU64 = AtomicU64::new(0);
        let (tx, rx) = mpsc::unbounded_channel();
        let channel = CHANNELS.fetch_add(1, Ordering::Relaxed);
        (Completer { tx, channel }, rx)
    }

    /// Where this completer's completions given inside `submit()` can be collected.
    pub fn inline(&self) -> InlineCompletions {
        InlineCompletions {
            channel: self.channel,
        }
    }

    /// Delivers one completion. A session that has already ended drops it, which is right:
    /// its client is gone.
    pub fn complete(&self, completion: UrbCompletion) {
        let not_inline = INLINE.with(|sink| match sink.try_borrow_mut() {
            Ok(mut sink) => match sink.as_mut() {
                Some(sink) if sink.channel == self.channel => {
                    sink.done.push(completion);
                    None
                }
                _ => Some(completion),
            },
            Err(_) => Some(completion),
        });
        if let Some(completion) = not_inline {
            let _ = self.tx.send(completion);
        }
    }
}

/// The completions of one channel given on this thread while [`InlineCompletions::collect`]
/// runs.
struct InlineSink {
    channel: u64,
    done: Vec<UrbCompletion>,
}

thread_local! {
    static INLINE: RefCell<Option<InlineSink>> = const { RefCell::new(None) };
}

/// The inline side of a completion channel: lets the server take the completions a device
/// gives synchronously, inside `submit()` (virtual devices, most control transfers), where it
/// is, instead of receiving them from the channel on a later turn of its loop.
#[derive(Clone, Copy, Debug)]
pub struct InlineCompletions {
    channel: u64,
}

impl InlineCompletions {
    /// Runs `f` (a call into the device session) and appends to `done`, in order, what the
    /// channel's completers complete on this thread while it runs. `done` keeps its capacity,
    /// so this allocates nothing once warm.
    pub fn collect<R>(&self, done: &mut Vec<UrbCompletion>, f: impl FnOnce() -> R) -> R {
        /// Puts the previous sink back and the collected completions into `done`, also when
        /// `f` panics.
        struct Restore<'a> {
            done: &'a mut Vec<UrbCompletion>,
            previous: Option<InlineSink>,
        }
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                let previous = self.previous.take();
                if let Some(sink) = INLINE.with(|s| s.replace(previous)) {
                    *self.done = sink.done;
                }
            }
        }
        let sink = InlineSink {
            channel: self.channel,
            done: std::mem::take(done),
        };
        let previous = INLINE.with(|s| s.replace(Some(sink)));
        let _restore = Restore { done, previous };
        f()
    }
}

/// Why a device could not be opened for an import.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("device is in use by another client")]
    Busy,
    #[error("device is gone")]
    Gone,
    #[error("device cannot be opened: {0}")]
    Failed(String),
}

/// Human-readable names of a device, for `usbipd list`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceNames {
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
}

/// An exportable device.
pub trait Device: Send + Sync + 'static {
    /// The device record and interface list for OP_REP_DEVLIST / OP_REP_IMPORT.
    fn describe(&self) -> ExportedDevice;

    /// Manufacturer, product and serial strings, where known.
    fn names(&self) -> DeviceNames {
        DeviceNames::default()
    }

    /// Opens the device for one client. The registry guarantees one session at a time.
    fn open(&self, completer: Completer) -> Result<Box<dyn DeviceSession>, OpenError>;
}

/// One client's use of a device. Dropping it cancels everything still in flight and releases
/// the device.
pub trait DeviceSession: Send {
    /// Starts a URB. Its completion arrives through the session's [`Completer`], exactly once,
    /// unless the URB is cancelled first.
    fn submit(&mut self, urb: Urb);

    /// Cancels the URB with this seqnum if it is still pending, so that it stops using the device.
    /// Whether the client is told it was cancelled is the caller's business, not the device's: a
    /// completion that still arrives afterwards is discarded by the caller.
    fn cancel(&mut self, seqnum: u32);
}

#[cfg(test)]
mod inline_tests {
    use super::*;

    #[test]
    fn completions_inside_collect_bypass_the_channel_others_do_not() {
        let (completer, mut rx) = Completer::channel();
        let (other, mut other_rx) = Completer::channel();
        let inline = completer.inline();
        let mut done = Vec::new();
        let answer = inline.collect(&mut done, || {
            completer.complete(UrbCompletion::error(1, -32));
            other.complete(UrbCompletion::error(2, -32));
            completer.complete(UrbCompletion::error(3, -32));
            // Another thread is never collected, even while this one collects.
            let c = completer.clone();
            std::thread::spawn(move || c.complete(UrbCompletion::error(4, -32)))
                .join()
                .is_ok()
        });
        assert!(answer);
        let seqnums: Vec<u32> = done.iter().map(|c| c.seqnum).collect();
        assert_eq!(seqnums, [1, 3], "in order, this channel only");
        assert_eq!(other_rx.try_recv().map(|c| c.seqnum).ok(), Some(2));
        assert_eq!(rx.try_recv().map(|c| c.seqnum).ok(), Some(4));
        // Outside collect, everything goes through the channel again.
        completer.complete(UrbCompletion::error(5, -32));
        assert_eq!(rx.try_recv().map(|c| c.seqnum).ok(), Some(5));
        assert_eq!(done.len(), 2);
    }
}
