//! The commands as usb-storage sends them: descriptors, INQUIRY, READ CAPACITY, reads and
//! writes through the image file, read-only media, sense data.

use super::*;

#[tokio::test]
async fn descriptors_say_high_speed_bulk_only_scsi() {
    let mut d = disk(false);
    let dev = d
        .host
        .get_descriptor(descriptor_type::DEVICE, 0, 18)
        .await
        .unwrap();
    assert_eq!(&dev.data[8..12], &[0x09, 0x12, 0x03, 0x00]);
    let cfg = d
        .host
        .get_descriptor(descriptor_type::CONFIGURATION, 0, 255)
        .await
        .unwrap();
    let (ifs, eps) = crate::device::r#virtual::parse_configuration(&cfg.data);
    assert_eq!(ifs.len(), 1);
    assert_eq!(
        (ifs[0].class, ifs[0].subclass, ifs[0].protocol),
        (8, 6, 0x50)
    );
    let eps: Vec<_> = eps
        .iter()
        .map(|e| (e.address, e.attributes, e.max_packet_size))
        .collect();
    assert_eq!(eps, vec![(0x81, 2, 512), (0x02, 2, 512)]);
    let serial = d
        .host
        .get_descriptor(descriptor_type::STRING, 3, 255)
        .await
        .unwrap();
    let units: Vec<u16> = serial.data[2..]
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let serial = String::from_utf16(&units).unwrap();
    assert!(serial.len() >= 12 && serial.chars().all(|c| c.is_ascii_hexdigit()));

    let other = temporary_image(SIZE).unwrap();
    let device = new(other.path(), false, BusPosition::virtual_port(3)).unwrap();
    let record = device.describe();
    assert_eq!(record.record.speed, Speed::High);
    assert_eq!(
        (record.record.id_vendor, record.record.id_product),
        (0x1209, 0x0003)
    );
}

#[tokio::test]
async fn get_max_lun_says_one_lun() {
    let mut d = disk(false);
    let c = d.class_request(0xa1, 0xfe, 1).await;
    assert_eq!((c.status, &c.data[..]), (0, &[0u8][..]));
    // Unknown class requests stall.
    assert_eq!(d.class_request(0xa1, 0xfc, 1).await.status, errno::EPIPE);
}

#[tokio::test]
async fn inquiry_and_read_capacity() {
    let mut d = disk(false);
    let (inq, csw) = d.command_in(&[0x12, 0, 0, 0, 36, 0], 36).await;
    assert_eq!(
        csw,
        Csw {
            residue: 0,
            status: PASSED
        }
    );
    assert_eq!(inq.len(), 36);
    assert_eq!((inq[0], inq[4]), (0x00, 31));
    assert_eq!(&inq[8..16], b"usbipd  ");

    let (cap, csw) = d.command_in(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8).await;
    assert_eq!(
        csw,
        Csw {
            residue: 0,
            status: PASSED
        }
    );
    assert_eq!(cap, vec![0, 0, 0x07, 0xff, 0, 0, 0x02, 0x00]);

    let mut rc16 = [0u8; 16];
    rc16[0] = 0x9e;
    rc16[1] = 0x10;
    rc16[13] = 32;
    let (cap, csw) = d.command_in(&rc16, 32).await;
    assert_eq!(csw.status, PASSED);
    assert_eq!(u64::from_be_bytes(cap[0..8].try_into().unwrap()), 2047);

    // The serial number VPD page matches the USB serial string.
    let (vpd, _) = d.command_in(&[0x12, 1, 0x80, 0, 255, 0], 255).await;
    assert_eq!(vpd[1], 0x80);
    assert_eq!(vpd.len(), 4 + 16);
}

#[tokio::test]
async fn host_expecting_more_gets_short_data_and_residue() {
    let mut d = disk(false);
    let (inq, csw) = d.command_in(&[0x12, 0, 0, 0, 96, 0], 96).await;
    assert_eq!(inq.len(), 36);
    assert_eq!(
        csw,
        Csw {
            residue: 60,
            status: PASSED
        }
    );
}

#[tokio::test]
async fn write_then_read_round_trips_through_the_file() {
    let mut d = disk(false);
    let data = pattern(4 * 512, 0x5a);
    let csw = d.command_out(&write10(10, 4), &data).await;
    assert_eq!(
        csw,
        Csw {
            residue: 0,
            status: PASSED
        }
    );
    assert_eq!(d.file_bytes(10 * 512, data.len()), data);

    let (back, csw) = d.command_in(&read10(10, 4), 2048).await;
    assert_eq!(
        csw,
        Csw {
            residue: 0,
            status: PASSED
        }
    );
    assert_eq!(back, data);

    let csw = d.command(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]).await;
    assert_eq!(
        csw,
        Csw {
            residue: 0,
            status: PASSED
        },
        "SYNCHRONIZE CACHE"
    );
}

#[tokio::test]
async fn data_phase_split_across_urbs_submitted_before_the_data_exists() {
    let mut d = disk(false);
    let data = pattern(8 * 512, 0x33);
    d.file.as_file().write_all_at(&data, 100 * 512).unwrap();
    let tag = d.tag();
    d.send(&cbw(tag, 4096, true, &read10(100, 8))).await;
    // Queue the whole data phase and the CSW read at once, while the read is in flight.
    let mut seqs = Vec::new();
    for len in [1024, 512, 2048, 512, 13] {
        let urb = d.host.urb(EP_IN, len, &[]);
        seqs.push(d.host.submit(urb));
    }
    let mut got = Vec::new();
    for &seq in &seqs[..4] {
        let c = d.done(seq).await;
        assert_eq!(c.status, 0);
        got.extend_from_slice(&c.data);
    }
    assert_eq!(got, data);
    let c = d.done(seqs[4]).await;
    assert_eq!(&c.data[0..4], b"USBS");
    assert_eq!(c.data[12], PASSED);
}

#[tokio::test]
async fn write_larger_than_one_urb() {
    let mut d = disk(false);
    let data = pattern(64 * 1024, 0xc3);
    let tag = d.tag();
    d.send(&cbw(tag, data.len() as u32, false, &write10(300, 128)))
        .await;
    for chunk in data.chunks(16 * 1024) {
        d.send(chunk).await;
    }
    assert_eq!(
        d.csw(tag).await,
        Csw {
            residue: 0,
            status: PASSED
        }
    );
    assert_eq!(d.file_bytes(300 * 512, data.len()), data);
    let (back, _) = d.command_in(&read10(300, 128), data.len() as u32).await;
    assert_eq!(back, data);
}

#[tokio::test]
async fn read_only_disk_rejects_writes_with_data_protect() {
    let mut d = disk(true);
    let csw = d.command_out(&write10(0, 1), &[0xee; 512]).await;
    assert_eq!(
        csw,
        Csw {
            residue: 512,
            status: FAILED
        }
    );
    assert_eq!(d.sense().await, (0x07, 0x27, 0x00));
    assert_eq!(d.file_bytes(0, 512), vec![0u8; 512]);
    // MODE SENSE(6) shows the write-protect bit.
    let (ms, csw) = d.command_in(&[0x1a, 0, 0x3f, 0, 192, 0], 192).await;
    assert_eq!(csw.status, PASSED);
    assert_eq!(ms[2] & 0x80, 0x80);
    assert_eq!(csw.residue as usize, 192 - ms.len());
}

#[tokio::test]
async fn unknown_opcode_fails_and_request_sense_explains() {
    let mut d = disk(false);
    let csw = d.command(&[0xc7, 0, 0, 0, 0, 0]).await;
    assert_eq!(
        csw,
        Csw {
            residue: 0,
            status: FAILED
        }
    );
    assert_eq!(d.sense().await, (0x05, 0x20, 0x00));
    // The sense was consumed; the next one is clean.
    assert_eq!(d.sense().await, (0x00, 0x00, 0x00));
}

#[tokio::test]
async fn read_past_the_end_is_lba_out_of_range() {
    let mut d = disk(false);
    let (data, csw) = d.command_in(&read10(2047, 2), 1024).await;
    assert!(data.is_empty(), "no data, just a zero-length packet");
    assert_eq!(
        csw,
        Csw {
            residue: 1024,
            status: FAILED
        }
    );
    assert_eq!(d.sense().await, (0x05, 0x21, 0x00));
}
