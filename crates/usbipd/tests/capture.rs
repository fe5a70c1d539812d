//! `--capture`: a session over TCP, driven by our client against the virtual disk and gadget
//! zero, is recorded as usbmon records in a pcapng file that reads back with pcap-file.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::start_server;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;
use usbip_client::{Connection, Submit};
use usbipd::capture::Capture;
use usbipd::device::r#virtual::{gadget_zero, mass_storage, BusPosition};
use usbipd::device::Device;
use usbipd::server::ServerConfig;

const SNAPLEN: u32 = 512;

/// One record's header fields, as Wireshark shows them.
#[derive(Debug, Clone, PartialEq)]
struct Rec {
    id: u64,
    kind: char,
    xfer: u8,
    endpoint: u8,
    devnum: u8,
    busnum: u16,
    flag_setup: u8,
    status: i32,
    urb_len: u32,
    data_len: u32,
    setup: [u8; 8],
    data: Vec<u8>,
}

fn parse(r: &[u8]) -> Rec {
    let u32_at = |i: usize| u32::from_le_bytes(r[i..i + 4].try_into().unwrap());
    Rec {
        id: u64::from_le_bytes(r[0..8].try_into().unwrap()),
        kind: r[8] as char,
        xfer: r[9],
        endpoint: r[10],
        devnum: r[11],
        busnum: u16::from_le_bytes([r[12], r[13]]),
        flag_setup: r[14],
        status: u32_at(28) as i32,
        urb_len: u32_at(32),
        data_len: u32_at(36),
        setup: r[40..48].try_into().unwrap(),
        data: r[64..].to_vec(),
    }
}

fn cbw(tag: u32, data_len: u32, cb: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(31);
    v.extend_from_slice(&0x4342_5355u32.to_le_bytes());
    v.extend_from_slice(&tag.to_le_bytes());
    v.extend_from_slice(&data_len.to_le_bytes());
    v.extend_from_slice(&[0x80, 0, cb.len() as u8]);
    let mut block = [0u8; 16];
    block[..cb.len()].copy_from_slice(cb);
    v.extend_from_slice(&block);
    v
}

/// The S and C records of the URB whose submission is `submit`.
fn pair<'a>(recs: &'a [Rec], submit: &Rec) -> &'a Rec {
    recs.iter()
        .find(|r| r.kind == 'C' && r.id == submit.id)
        .unwrap_or_else(|| panic!("no completion for {submit:?}"))
}

#[tokio::test]
async fn a_session_is_captured_as_usbmon_records_wireshark_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usb.pcapng");
    let (capture, writer) = Capture::open(&path, SNAPLEN).unwrap();
    let image = mass_storage::temporary_image(1024 * 1024).unwrap();
    let pattern: Vec<u8> = (0..1024u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(image.path(), {
        let mut all = std::fs::read(image.path()).unwrap();
        all[..1024].copy_from_slice(&pattern);
        all
    })
    .unwrap();
    let disk = mass_storage::new(image.path(), false, BusPosition::virtual_port(3)).unwrap();
    let gz = gadget_zero::new(BusPosition::virtual_port(4));
    let devices: Vec<Arc<dyn Device>> = vec![Arc::new(disk), Arc::new(gz)];
    let config = ServerConfig {
        capture: Some(capture.clone()),
        ..ServerConfig::default()
    };
    let addr = start_server(devices, config).await;

    // The disk: device and configuration descriptors, then READ(10) of two blocks.
    let disk = Connection::import(addr, "0-3").await.unwrap();
    let device = disk
        .submit(Submit::control([0x80, 6, 0, 1, 0, 0, 18, 0], Bytes::new()))
        .await
        .unwrap();
    assert_eq!(device.data.len(), 18);
    let config = disk
        .submit(Submit::control([0x80, 6, 0, 2, 0, 0, 255, 0], Bytes::new()))
        .await
        .unwrap();
    assert_eq!(
        disk.submit(Submit::control([0, 9, 1, 0, 0, 0, 0, 0], Bytes::new()))
            .await
            .unwrap()
            .status,
        0
    );
    let read_cbw = cbw(7, 1024, &[0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0]);
    disk.submit(Submit::bulk_out(2, read_cbw.clone()))
        .await
        .unwrap();
    let read = disk.submit(Submit::bulk_in(1, 1024)).await.unwrap();
    assert_eq!(read.data[..], pattern[..]);
    let csw = disk.submit(Submit::bulk_in(1, 13)).await.unwrap();
    assert_eq!(csw.data.len(), 13);

    // Gadget zero in loopback: a bulk IN with nothing to read waits, and is unlinked.
    let gz = Connection::import(addr, "0-4").await.unwrap();
    let set_loopback = [0, 9, gadget_zero::CONFIG_LOOPBACK, 0, 0, 0, 0, 0];
    gz.submit(Submit::control(set_loopback, Bytes::new()))
        .await
        .unwrap();
    let parked = gz.start(Submit::bulk_in(1, 512)).unwrap();
    assert_eq!(gz.unlink(parked.seqnum).await.unwrap().status, -104);

    // Every record was queued before its reply went out; close writes them all.
    tokio::task::spawn_blocking(move || writer.close())
        .await
        .unwrap();
    assert_eq!(capture.dropped(), 0);
    let mut reader = PcapNgReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    let mut recs = Vec::new();
    while let Some(block) = reader.next_block() {
        match block.unwrap() {
            Block::InterfaceDescription(i) => {
                assert_eq!(i.linktype, DataLink::USB_LINUX_MMAPPED);
                // Unlimited: the snap length cuts data, never a usbmon header.
                assert_eq!(i.snaplen, 0);
            }
            Block::EnhancedPacket(p) => {
                let rec = parse(&p.data);
                // The record's length without the snap length: all of the data it carries.
                let carried = if rec.data_len > 0 { rec.urb_len } else { 0 };
                assert_eq!(p.original_len, 64 + carried);
                recs.push(rec);
            }
            _ => {}
        }
    }
    let disk_recs: Vec<Rec> = recs.iter().filter(|r| r.devnum == 3).cloned().collect();
    let gz_recs: Vec<Rec> = recs.iter().filter(|r| r.devnum == 4).cloned().collect();
    assert!(recs.iter().all(|r| r.busnum == 0));
    assert_eq!(disk_recs.len(), 12, "{disk_recs:#?}");

    // GET_DESCRIPTOR(DEVICE): a control submission on EP0 IN with its setup packet.
    let s = &disk_recs[0];
    assert_eq!((s.kind, s.xfer, s.endpoint), ('S', 2, 0x80));
    assert_eq!((s.flag_setup, s.setup), (0, [0x80, 6, 0, 1, 0, 0, 18, 0]));
    assert_eq!((s.status, s.urb_len, s.data_len), (-115, 18, 0));
    let c = pair(&disk_recs, s);
    assert_eq!(
        (c.xfer, c.endpoint, c.status, c.urb_len, c.data_len),
        (2, 0x80, 0, 18, 18)
    );
    assert_eq!(c.data, device.data[..]);
    assert_eq!(c.flag_setup, b'-');
    let c = pair(&disk_recs, &disk_recs[2]);
    assert_eq!(c.urb_len as usize, config.data.len());

    // The CBW: 31 bytes on bulk OUT 0x02, data in the submission.
    let s = disk_recs
        .iter()
        .find(|r| r.kind == 'S' && r.endpoint == 0x02)
        .unwrap();
    assert_eq!((s.xfer, s.urb_len, s.data_len), (3, 31, 31));
    assert_eq!(s.data, read_cbw);
    assert_eq!(
        (pair(&disk_recs, s).urb_len, pair(&disk_recs, s).data_len),
        (31, 0)
    );

    // The data IN: 1024 bytes on bulk IN 0x81, cut to the snap length in the capture.
    let ins: Vec<&Rec> = disk_recs
        .iter()
        .filter(|r| r.kind == 'S' && r.endpoint == 0x81)
        .collect();
    assert_eq!(ins.len(), 2);
    assert_eq!((ins[0].xfer, ins[0].urb_len, ins[0].data_len), (3, 1024, 0));
    let c = pair(&disk_recs, ins[0]);
    assert_eq!((c.status, c.urb_len, c.data_len), (0, 1024, SNAPLEN));
    assert_eq!(c.data, pattern[..SNAPLEN as usize]);

    // The CSW: 13 bytes on bulk IN 0x81.
    let c = pair(&disk_recs, ins[1]);
    assert_eq!((c.urb_len, c.data_len), (13, 13));
    assert_eq!(&c.data[..4], b"USBS");

    // The unlinked URB completes with -ECONNRESET.
    let s = gz_recs
        .iter()
        .find(|r| r.kind == 'S' && r.endpoint == 0x81)
        .unwrap();
    let c = pair(&gz_recs, s);
    assert_eq!((c.status, c.urb_len, c.data_len), (-104, 0, 0));
    assert_eq!(gz_recs.len(), 4, "{gz_recs:#?}");
}

const BIN: &str = env!("CARGO_BIN_EXE_usbipd");

/// The real binary: `capture` in the configuration file and `--capture-snaplen` on the command
/// line; on SIGTERM the server writes what is queued, closes the file and says so.
#[tokio::test]
async fn the_server_captures_to_the_configured_file_and_closes_it_on_sigterm() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("from-config.pcapng");
    let config = dir.path().join("usbipd.toml");
    std::fs::write(
        &config,
        format!(
            "capture = \"{}\"\n[[device]]\nkind = \"loopback\"\nbusid = \"0-4\"\n",
            path.display()
        ),
    )
    .unwrap();
    let port = common::process::free_port();
    let mut server = Command::new(BIN)
        .args([
            "server",
            "--extension",
            "off",
            "--no-host",
            "--capture-snaplen",
            "8",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(&config)
        .arg("--control")
        .arg(dir.path().join("control.sock"))
        .arg("--state-dir")
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut conn = None;
    for _ in 0..600 {
        if let Ok(c) = Connection::import(("127.0.0.1", port), "0-4").await {
            conn = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let conn = conn.expect("the server never answered an import");
    let device = conn
        .submit(Submit::control([0x80, 6, 0, 1, 0, 0, 18, 0], Bytes::new()))
        .await
        .unwrap();
    assert_eq!(device.data.len(), 18);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let status = server.wait().unwrap();
        let mut log = String::new();
        std::io::Read::read_to_string(server.stderr.as_mut().unwrap(), &mut log).unwrap();
        (status, log)
    })
    .await
    .unwrap();
    assert!(out.0.success(), "{}", out.1);
    assert!(out.1.contains("capture closed"), "{}", out.1);

    let mut reader = PcapNgReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    let mut recs = Vec::new();
    while let Some(block) = reader.next_block() {
        if let Block::EnhancedPacket(p) = block.unwrap() {
            recs.push(parse(&p.data));
        }
    }
    assert_eq!(recs.len(), 2, "{recs:#?}");
    assert_eq!(
        (recs[0].kind, recs[0].devnum, recs[0].setup[1]),
        ('S', 4, 6)
    );
    assert_eq!(
        (recs[1].kind, recs[1].urb_len, recs[1].data_len),
        ('C', 18, 8)
    );
    assert_eq!(recs[1].data, device.data[..8]);
}

#[test]
fn a_capture_file_that_cannot_be_created_stops_the_server_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("missing/dir/usb.pcapng");
    let out = std::process::Command::new(BIN)
        .args([
            "server",
            "--extension",
            "off",
            "--no-host",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--capture")
        .arg(&bad)
        .arg("--control")
        .arg(dir.path().join("control.sock"))
        .arg("--state-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot create the capture file")
            && stderr.contains(&*bad.to_string_lossy()),
        "{stderr}"
    );
}
