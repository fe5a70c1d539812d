//! One usbmon event as Linux's binary usbmon interface lays it out (Documentation/usb/usbmon.rst,
//! "Raw binary format and API"): the 64-byte `usbmon_packet` header, then the isochronous
//! descriptors, then the captured data. This is the record format of pcap link type
//! LINKTYPE_USB_LINUX_MMAPPED (220), so Wireshark and tshark decode our captures as they decode
//! a capture of a real Linux host's bus.
//!
//! The header is little-endian here whatever the machine: Wireshark reads link type 220 in the
//! byte order of the file's section, and our pcapng writer writes little-endian sections.

use usbip_proto::IsoPacket;

/// Bytes of the header.
pub const HEADER_LEN: usize = 64;
/// Bytes of one isochronous descriptor after the header (status, offset, length, padding).
pub const ISO_DESC_LEN: usize = 16;

/// What happened to the URB ("type" in usbmon.rst).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The client submitted it (`'S'`).
    Submit,
    /// It completed, successfully or not, or was unlinked (`'C'`).
    Complete,
    /// Its submission failed: it never reached the device (`'E'`).
    Error,
}

impl EventType {
    fn tag(self) -> u8 {
        match self {
            EventType::Submit => b'S',
            EventType::Complete => b'C',
            EventType::Error => b'E',
        }
    }
}

/// The endpoint's transfer type, with usbmon's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferType {
    Isochronous = 0,
    Interrupt = 1,
    Control = 2,
    Bulk = 3,
}

/// Everything a header says about one event. `data` is the payload this event carries (OUT data
/// of a submission, IN data of a completion, else empty); [`Event::encode`] cuts it to the snap
/// length.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// The same for a URB's submission and its completion.
    pub id: u64,
    pub kind: EventType,
    pub transfer: TransferType,
    /// Endpoint address with the direction bit (0x81 = EP1 IN).
    pub endpoint: u8,
    pub devnum: u8,
    pub busnum: u16,
    /// The setup packet, for a control submission only.
    pub setup: Option<[u8; 8]>,
    /// Seconds and microseconds since the Unix epoch.
    pub ts_sec: i64,
    pub ts_usec: i32,
    /// 0 or a negative errno; -EINPROGRESS for a submission, as Linux reports it.
    pub status: i32,
    /// The URB's length: requested for a submission, actual for a completion.
    pub urb_len: u32,
    pub data: &'a [u8],
    /// Isochronous packets: offsets and lengths for a submission, results for a completion.
    pub iso: &'a [IsoPacket],
    pub error_count: u32,
    pub interval: u32,
    pub start_frame: u32,
    pub xfer_flags: u32,
}

impl Event<'_> {
    /// The whole record: header, isochronous descriptors, then at most `snaplen` bytes of data.
    pub fn encode(&self, snaplen: usize, out: &mut Vec<u8>) {
        let captured = &self.data[..self.data.len().min(snaplen)];
        out.reserve(HEADER_LEN + self.iso.len() * ISO_DESC_LEN + captured.len());
        out.extend_from_slice(&self.header(captured.len()));
        for p in self.iso {
            // Submissions carry the asked length, completions the actual one (usbmon.rst).
            let length = match self.kind {
                EventType::Complete => p.actual_length,
                _ => p.length,
            };
            out.extend_from_slice(&p.status.to_le_bytes());
            out.extend_from_slice(&p.offset.to_le_bytes());
            out.extend_from_slice(&length.to_le_bytes());
            out.extend_from_slice(&[0; 4]);
        }
        out.extend_from_slice(captured);
    }

    /// The 64-byte header for a record carrying `captured` bytes of data.
    pub fn header(&self, captured: usize) -> [u8; HEADER_LEN] {
        let ndesc = self.iso.len() as u32;
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&self.id.to_le_bytes());
        h[8] = self.kind.tag();
        h[9] = self.transfer as u8;
        h[10] = self.endpoint;
        h[11] = self.devnum;
        h[12..14].copy_from_slice(&self.busnum.to_le_bytes());
        // flag_setup: 0 when the setup packet is there, '-' when not relevant.
        h[14] = if self.setup.is_some() { 0 } else { b'-' };
        // flag_data: 0 when data follows; '<' for an IN submission and '>' for an OUT
        // completion, which carry none by nature, as Linux marks them.
        let is_in = self.endpoint & 0x80 != 0;
        h[15] = match (captured, self.kind, is_in) {
            (0, EventType::Submit, true) => b'<',
            (0, EventType::Complete, false) => b'>',
            _ => 0,
        };
        h[16..24].copy_from_slice(&self.ts_sec.to_le_bytes());
        h[24..28].copy_from_slice(&self.ts_usec.to_le_bytes());
        h[28..32].copy_from_slice(&self.status.to_le_bytes());
        h[32..36].copy_from_slice(&self.urb_len.to_le_bytes());
        // len_cap counts what follows the header: descriptors and data.
        let len_cap = captured as u32 + ndesc * ISO_DESC_LEN as u32;
        h[36..40].copy_from_slice(&len_cap.to_le_bytes());
        if let Some(setup) = self.setup {
            h[40..48].copy_from_slice(&setup);
        } else if self.transfer == TransferType::Isochronous {
            h[40..44].copy_from_slice(&self.error_count.to_le_bytes());
            h[44..48].copy_from_slice(&ndesc.to_le_bytes());
        }
        h[48..52].copy_from_slice(&self.interval.to_le_bytes());
        h[52..56].copy_from_slice(&self.start_frame.to_le_bytes());
        h[56..60].copy_from_slice(&self.xfer_flags.to_le_bytes());
        h[60..64].copy_from_slice(&ndesc.to_le_bytes());
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventType) -> Event<'static> {
        Event {
            id: 0x0102_0304_0506_0708,
            kind,
            transfer: TransferType::Control,
            endpoint: 0x80,
            devnum: 3,
            busnum: 0x0201,
            setup: None,
            ts_sec: 0x1122_3344_5566,
            ts_usec: 999_999,
            status: -115,
            urb_len: 18,
            data: &[],
            iso: &[],
            error_count: 0,
            interval: 0,
            start_frame: 0,
            xfer_flags: 0x200,
        }
    }

    /// GET_DESCRIPTOR(DEVICE) submitted on EP0 IN of device 3 on bus 0x201, byte by byte from
    /// the layout in usbmon.rst.
    #[test]
    fn control_submission_header_matches_the_documented_layout() {
        let setup = [0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x12, 0x00];
        let e = Event {
            setup: Some(setup),
            ..event(EventType::Submit)
        };
        let mut out = Vec::new();
        e.encode(65535, &mut out);
        #[rustfmt::skip]
        let want: [u8; 64] = [
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // 0: id
            b'S', 2, 0x80, 3,                               // 8: type, xfer_type, epnum, devnum
            0x01, 0x02,                                     // 12: busnum
            0, b'<',                                        // 14: flag_setup (present), flag_data
            0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0, 0,       // 16: ts_sec
            0x3f, 0x42, 0x0f, 0x00,                         // 24: ts_usec 999999
            0x8d, 0xff, 0xff, 0xff,                         // 28: status -115
            18, 0, 0, 0,                                    // 32: length
            0, 0, 0, 0,                                     // 36: len_cap
            0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x12, 0x00, // 40: setup
            0, 0, 0, 0,                                     // 48: interval
            0, 0, 0, 0,                                     // 52: start_frame
            0x00, 0x02, 0, 0,                               // 56: xfer_flags
            0, 0, 0, 0,                                     // 60: ndesc
        ];
        assert_eq!(out, want);
    }

    /// A bulk IN completion longer than the snap length: length is the URB's, len_cap and the
    /// data what was kept.
    #[test]
    fn completion_data_is_cut_to_the_snap_length() {
        let data: Vec<u8> = (0..100).collect();
        let e = Event {
            transfer: TransferType::Bulk,
            endpoint: 0x81,
            status: -32,
            urb_len: 100,
            data: &data,
            ..event(EventType::Complete)
        };
        let mut out = Vec::new();
        e.encode(40, &mut out);
        assert_eq!(out.len(), 64 + 40);
        assert_eq!(&out[8..12], &[b'C', 3, 0x81, 3]);
        assert_eq!(&out[14..16], &[b'-', 0], "no setup; data present");
        assert_eq!(&out[28..32], &[0xe0, 0xff, 0xff, 0xff], "status -32");
        assert_eq!(&out[32..36], &[100, 0, 0, 0]);
        assert_eq!(&out[36..40], &[40, 0, 0, 0]);
        assert_eq!(&out[40..48], &[0; 8]);
        assert_eq!(&out[64..], &data[..40]);
    }

    #[test]
    fn an_out_completion_and_an_error_are_flagged_without_data() {
        let out_done = Event {
            transfer: TransferType::Bulk,
            endpoint: 0x02,
            status: 0,
            urb_len: 31,
            ..event(EventType::Complete)
        };
        assert_eq!(out_done.header(0)[15], b'>');
        let refused = Event {
            transfer: TransferType::Bulk,
            endpoint: 0x02,
            status: -104,
            ..event(EventType::Error)
        };
        let h = refused.header(0);
        assert_eq!((h[8], h[15]), (b'E', 0));
    }

    /// An isochronous IN completion: error_count and numdesc in the union, one 16-byte
    /// descriptor per packet (status, offset, actual length, padding) before the data, and
    /// len_cap counting both.
    #[test]
    fn isochronous_descriptors_follow_the_header() {
        let iso = [
            IsoPacket {
                offset: 0,
                length: 8,
                actual_length: 4,
                status: 0,
            },
            IsoPacket {
                offset: 8,
                length: 8,
                actual_length: 0,
                status: -18,
            },
        ];
        let data = [0xaa; 4];
        let e = Event {
            transfer: TransferType::Isochronous,
            endpoint: 0x82,
            status: 0,
            urb_len: 4,
            data: &data,
            iso: &iso,
            error_count: 1,
            interval: 8,
            start_frame: 0x1234,
            ..event(EventType::Complete)
        };
        let mut out = Vec::new();
        e.encode(65535, &mut out);
        assert_eq!(out.len(), 64 + 32 + 4);
        assert_eq!(&out[36..40], &[36, 0, 0, 0], "len_cap");
        assert_eq!(
            &out[40..48],
            &[1, 0, 0, 0, 2, 0, 0, 0],
            "error_count, numdesc"
        );
        assert_eq!(&out[48..52], &[8, 0, 0, 0]);
        assert_eq!(&out[52..56], &[0x34, 0x12, 0, 0]);
        assert_eq!(&out[60..64], &[2, 0, 0, 0], "ndesc");
        #[rustfmt::skip]
        let descriptors: [u8; 32] = [
            0, 0, 0, 0,  0, 0, 0, 0,  4, 0, 0, 0,  0, 0, 0, 0,
            0xee, 0xff, 0xff, 0xff,  8, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
        ];
        assert_eq!(&out[64..96], &descriptors);
        assert_eq!(&out[96..], &data);
    }
}
