//! Byte-exact checks against replies captured from the Linux kernel's own `usbipd` (usbip
//! 2.0+6.1, serving QEMU-emulated devices through `usbip-host`, see tests/e2e): decoding them and
//! encoding the result gives back the same bytes.

use usbip_proto::*;

const DEVLIST: &[u8] = include_bytes!("captures/kernel-usbipd-devlist-reply.bin");
const IMPORT: &[u8] = include_bytes!("captures/kernel-usbipd-import-reply.bin");
const IMPORT_UNKNOWN: &[u8] = include_bytes!("captures/kernel-usbipd-import-unknown-reply.bin");

#[test]
fn devlist_reply_round_trips_byte_for_byte() {
    let (reply, used) = OpReply::decode(&OpRequest::DevList, DEVLIST, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(used, DEVLIST.len());
    let OpReply::DevList(devices) = &reply else {
        panic!("not a device list")
    };
    assert_eq!(devices.len(), 3);
    let storage = &devices[0].record;
    assert_eq!(storage.busid, "18-3");
    assert_eq!(
        storage.path,
        "/sys/devices/pci0000:00/0000:00:02.0/usb18/18-3"
    );
    assert_eq!((storage.id_vendor, storage.id_product), (0x46f4, 0x0001));
    assert_eq!(storage.speed, Speed::Super);
    let mut again = Vec::new();
    reply.encode(&mut again);
    assert_eq!(again, DEVLIST);
}

#[test]
fn import_replies_round_trip_byte_for_byte() {
    let req = OpRequest::Import {
        busid: "18-3".into(),
    };
    let (reply, used) = OpReply::decode(&req, IMPORT, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(used, IMPORT.len());
    let mut again = Vec::new();
    reply.encode(&mut again);
    assert_eq!(again, IMPORT);

    // The kernel's usbipd answers an unknown busid with ST_NODEV.
    let (reply, _) = OpReply::decode(&req, IMPORT_UNKNOWN, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(reply, OpReply::Import(Err(OpStatus::NoDev)));
    let mut again = Vec::new();
    reply.encode(&mut again);
    assert_eq!(again, IMPORT_UNKNOWN);
}
