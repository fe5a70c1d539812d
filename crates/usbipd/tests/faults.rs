//! Faults on either side of a session: a client that vanishes without FIN, a device that goes
//! away mid-transfer, a disk image that fails under the mass-storage device, a reply backlog
//! past `max_buffered_bytes`, `kill -9` of the real server binary during disk writes, and a disk
//! image that the real server flushes when it stops and refuses to serve twice.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::bot::{cbw, Bot, BLOCK, FAILED, PASSED};
use common::process::free_port;
use common::raw::{out_submit as bulk_out, raw_import};
use common::{eventually, start_server, ScriptedDevice};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use usbip_client::{list_devices, Connection, Submit};
use usbip_proto::{errno, CmdSubmit, Command, Direction, ExportedDevice, UrbHeader};
use usbipd::device::r#virtual::mass_storage::{self, MassStorage};
use usbipd::device::r#virtual::BusPosition;
use usbipd::device::{Completer, Device, DeviceSession, OpenError, Urb, UrbCompletion};
use usbipd::server::ServerConfig;

fn bulk_in(seqnum: u32, devid: u32, ep: u32, length: u32) -> Vec<u8> {
    let mut out = Vec::new();
    Command::Submit {
        cmd: CmdSubmit {
            header: UrbHeader {
                seqnum,
                devid,
                direction: Direction::In,
                ep,
            },
            transfer_flags: 0x200,
            transfer_buffer_length: length,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup: [0; 8],
        },
        data: Bytes::new(),
        iso: vec![],
    }
    .encode(&mut out);
    out
}

/// A client whose connection is reset (SO_LINGER 0: RST, no FIN) with URBs parked: the server
/// cancels them, releases the device and lets the next client import it.
#[tokio::test]
async fn a_client_reset_mid_transfer_frees_the_device() {
    let dev = ScriptedDevice::new("9-4");
    let addr = start_server(
        vec![dev.clone() as Arc<dyn Device>],
        ServerConfig::default(),
    )
    .await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let devid = raw_import(&mut stream, "9-4").await;
    for seqnum in 1..=3 {
        stream
            .write_all(&bulk_in(seqnum, devid, 1, 64))
            .await
            .unwrap();
    }
    assert!(eventually(|| dev.parked() == 3).await);
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
    assert!(eventually(|| dev.script.lock().unwrap().closed == 1).await);
    let mut cancelled = dev.cancelled();
    cancelled.sort();
    assert_eq!(cancelled, vec![1, 2, 3]);
    let conn = Connection::import(addr, "9-4").await.unwrap();
    let c = conn.submit(Submit::bulk_in(3, 4)).await.unwrap();
    assert_eq!(c.actual_length, 4);
}

/// A device that can be unplugged: bulk IN on ep1 parks until `unplug`, which fails every
/// parked URB with -ENODEV and drops the session's completer, as a device that went away does.
#[derive(Default)]
struct Unpluggable {
    state: Arc<Mutex<Plug>>,
}

#[derive(Default)]
struct Plug {
    completer: Option<Completer>,
    parked: Vec<u32>,
    opened: usize,
    dropped: usize,
}

impl Unpluggable {
    fn unplug(&self) {
        let mut st = self.state.lock().unwrap();
        if let Some(completer) = st.completer.take() {
            for seqnum in st.parked.drain(..) {
                completer.complete(UrbCompletion::error(seqnum, errno::ENODEV));
            }
        }
    }
}

struct PlugSession(Arc<Mutex<Plug>>);

impl Device for Unpluggable {
    fn describe(&self) -> ExportedDevice {
        let mut d = ScriptedDevice::new("9-7").describe();
        d.record.devnum = 7;
        d
    }

    fn open(&self, completer: Completer) -> Result<Box<dyn DeviceSession>, OpenError> {
        let mut st = self.state.lock().unwrap();
        st.completer = Some(completer);
        st.opened += 1;
        Ok(Box::new(PlugSession(self.state.clone())))
    }
}

impl DeviceSession for PlugSession {
    fn submit(&mut self, urb: Urb) {
        let mut st = self.0.lock().unwrap();
        // Once unplugged nothing can complete; the server ends the session on its own.
        if st.completer.is_some() {
            st.parked.push(urb.seqnum);
        }
    }

    fn cancel(&mut self, seqnum: u32) {
        self.0.lock().unwrap().parked.retain(|&s| s != seqnum);
    }
}

impl Drop for PlugSession {
    fn drop(&mut self) {
        self.0.lock().unwrap().dropped += 1;
    }
}

#[tokio::test]
async fn a_device_that_goes_away_ends_its_session_cleanly() {
    let dev = Arc::new(Unpluggable::default());
    let addr = start_server(
        vec![dev.clone() as Arc<dyn Device>],
        ServerConfig::default(),
    )
    .await;
    let conn = Connection::import(addr, "9-7").await.unwrap();
    let pending: Vec<_> = (0..3)
        .map(|_| conn.start(Submit::bulk_in(1, 64)).unwrap())
        .collect();
    assert!(eventually(|| dev.state.lock().unwrap().parked.len() == 3).await);
    dev.unplug();
    // Every URB in flight gets its error, then the server closes the connection.
    for p in pending {
        let c = p.wait().await.unwrap();
        assert_eq!((c.status, c.data.len()), (errno::ENODEV, 0));
    }
    assert!(eventually(|| conn.is_closed()).await);
    assert!(eventually(|| dev.state.lock().unwrap().dropped == 1).await);
    // The claim is released: the device (plugged back in) can be imported again.
    let again = Connection::import(addr, "9-7").await.unwrap();
    assert_eq!(dev.state.lock().unwrap().opened, 2);
    drop(again);
    assert!(list_devices(addr).await.is_ok());
}

/// Serves a disk whose image is opened read-only although the device claims to be writable,
/// so every write fails in the file system, as on a full or failing disk.
async fn failing_disk() -> (SocketAddr, tempfile::NamedTempFile) {
    let image = mass_storage::temporary_image(64 * 1024).unwrap();
    std::fs::write(image.path(), vec![0x5a; 64 * 1024]).unwrap();
    let file = std::fs::File::open(image.path()).unwrap();
    let device = MassStorage::from_file(file, false)
        .unwrap()
        .into_device(BusPosition::virtual_port(1));
    let addr = start_server(
        vec![Arc::new(device) as Arc<dyn Device>],
        ServerConfig::default(),
    )
    .await;
    (addr, image)
}

#[tokio::test]
async fn disk_write_and_read_errors_reach_the_client_as_scsi_errors() {
    let (addr, image) = failing_disk().await;
    let mut bot = Bot::configure(Connection::import(addr, "0-1").await.unwrap()).await;

    let o = bot.write10(4, &[0xa5; 2 * BLOCK]).await;
    assert_eq!(o.status, FAILED, "a failed write must not be acknowledged");
    assert_eq!(o.residue, 2 * BLOCK as u32);
    // MEDIUM ERROR, WRITE ERROR.
    assert_eq!(bot.request_sense().await, (0x03, 0x0c, 0x00));
    // The unit is usable afterwards, and the sense was consumed.
    let o = bot.read10(4, 1).await;
    assert_eq!((o.status, &o.data[..]), (PASSED, &[0x5a; BLOCK][..]));
    assert_eq!(bot.request_sense().await, (0, 0, 0));

    // The image shrinks under the device: reading past its new end is an I/O error.
    image.as_file().set_len(8 * BLOCK as u64).unwrap();
    let o = bot.read10(100, 1).await;
    assert_eq!(o.status, FAILED);
    // MEDIUM ERROR, UNRECOVERED READ ERROR.
    assert_eq!(bot.request_sense().await, (0x03, 0x11, 0x00));
    let o = bot.sync().await;
    assert_eq!(o.status, PASSED);
}

/// A client that submits IN URBs and never reads their replies is closed once the queued
/// replies pass `max_buffered_bytes`, and only that client: the device is freed and a client
/// that reads keeps working under the same limit.
#[tokio::test]
async fn a_client_that_never_reads_is_closed_at_max_buffered_bytes() {
    let dev = ScriptedDevice::new("9-4");
    let config = ServerConfig {
        max_buffered_bytes: 1024 * 1024,
        ..ServerConfig::default()
    };
    let addr = start_server(vec![dev.clone() as Arc<dyn Device>], config).await;
    let socket = TcpSocket::new_v4().unwrap();
    // A small receive window, so that the kernel's buffers hold little of what the server sends.
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let devid = raw_import(&mut stream, "9-4").await;
    // 32 MiB of IN data asked for; far more than the limit plus what sockets can hold.
    let mut sent = 0;
    for seqnum in 1..=512 {
        if stream
            .write_all(&bulk_in(seqnum, devid, 3, 64 * 1024))
            .await
            .is_err()
        {
            break; // closed already
        }
        sent += 1;
    }
    assert!(sent > 0);
    assert!(
        eventually(|| dev.script.lock().unwrap().closed == 1).await,
        "the session was not closed"
    );
    drop(stream);

    let conn = Connection::import(addr, "9-4").await.unwrap();
    for _ in 0..16 {
        let batch: Vec<_> = (0..8)
            .map(|_| conn.start(Submit::bulk_in(3, 64 * 1024)).unwrap())
            .collect();
        for p in batch {
            assert_eq!(p.wait().await.unwrap().actual_length, 64 * 1024);
        }
    }
    assert!(!conn.is_closed());
}

/// Picks a free loopback port for a child server (bound, then released).
/// Kills the child on drop, so that a failed assertion does not leave a server running.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server configuration with one storage device per image in `images`, in `dir`.
fn storage_config(dir: &std::path::Path, images: &[&std::path::Path]) -> std::path::PathBuf {
    let config = dir.join("usbipd.toml");
    let devices: String = images
        .iter()
        .enumerate()
        .map(|(i, image)| {
            format!(
                "[[device]]\nkind = \"storage\"\nbusid = \"0-{}\"\nimage = {:?}\n",
                i + 1,
                image.display().to_string()
            )
        })
        .collect();
    std::fs::write(&config, devices).unwrap();
    config
}

/// The real server on `config`, listening on `addr`, its log (at info) going to `log`.
fn spawn_server(
    dir: &std::path::Path,
    config: &std::path::Path,
    addr: SocketAddr,
    log: &std::path::Path,
) -> Child {
    Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_usbipd"))
            .arg("server")
            .args(["--extension", "off"])
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--control")
            .arg(dir.join("control.sock"))
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// Waits up to 20 s for the child to exit.
fn exit_status(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..400 {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("usbipd did not exit");
}

/// One image backs one disk: the real server refuses a configuration naming an image twice, and
/// an image that another process serves, with an error naming the file.
#[test]
fn the_server_refuses_a_disk_image_that_is_already_served() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![0u8; 64 * 1024]).unwrap();
    let log = dir.path().join("usbipd.log");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let refused = |child: &mut Child| {
        let status = exit_status(child);
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!status.success(), "usbipd served the image twice: {text}");
        assert!(
            text.contains(&format!("disk image {} is in use", image.display())),
            "the error names the image: {text}"
        );
    };

    let twice = storage_config(dir.path(), &[&image, &image]);
    refused(&mut spawn_server(dir.path(), &twice, addr, &log));

    // Here this test process is the other one that serves it.
    let held = mass_storage::new(&image, false, BusPosition::virtual_port(1)).unwrap();
    let once = storage_config(dir.path(), &[&image]);
    refused(&mut spawn_server(dir.path(), &once, addr, &log));
    drop(held);
}

/// A server stopped (SIGTERM) with a client attached flushes the disk image: writes the client
/// saw acknowledged, without a SYNCHRONIZE CACHE, are synced before the server exits.
#[tokio::test]
async fn the_server_flushes_disk_images_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![0u8; 64 * 1024]).unwrap();
    let config = storage_config(dir.path(), &[&image]);
    let log = dir.path().join("usbipd.log");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut child = spawn_server(dir.path(), &config, addr, &log);
    let mut up = false;
    for _ in 0..1200 {
        if list_devices(addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "usbipd did not start");
    let mut bot = Bot::configure(Connection::import(addr, "0-1").await.unwrap()).await;
    assert_eq!(bot.write10(5, &[0xa5; BLOCK]).await.status, PASSED);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let status = exit_status(&mut child);
        (child, status)
    })
    .await
    .unwrap()
    .1;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("disk image flushed") && l.contains(&*image.to_string_lossy())),
        "no flush of {} logged at stop: {text}",
        image.display()
    );
    let after = std::fs::read(&image).unwrap();
    assert_eq!(&after[5 * BLOCK..6 * BLOCK], &[0xa5; BLOCK][..]);
    drop(bot);
}

/// `kill -9` of the real server binary in the middle of disk writes: every write the client saw
/// acknowledged before a successful SYNCHRONIZE CACHE is in the image file afterwards.
#[tokio::test]
async fn writes_acknowledged_before_sync_survive_kill_9_of_the_server() {
    const IMAGE_BLOCKS: usize = 2048; // 1 MiB
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![0u8; IMAGE_BLOCKS * BLOCK]).unwrap();
    let config = dir.path().join("usbipd.toml");
    std::fs::write(
        &config,
        format!(
            "[[device]]\nkind = \"storage\"\nbusid = \"0-1\"\nimage = {:?}\n",
            image.display().to_string()
        ),
    )
    .unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_usbipd"))
            .arg("server")
            .args(["--extension", "off"])
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--control")
            .arg(dir.path().join("control.sock"))
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut up = false;
    for _ in 0..1200 {
        if list_devices(addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "usbipd did not start");

    let mut bot = Bot::configure(Connection::import(addr, "0-1").await.unwrap()).await;
    let block = |i: usize| -> Vec<u8> {
        (0..8 * BLOCK)
            .map(|j| (i * 31 + j / BLOCK * 7 + j) as u8 | 1)
            .collect()
    };
    // Acknowledged writes of 4 KiB at scattered places, then SYNCHRONIZE CACHE.
    let lbas: Vec<usize> = (0..24).map(|i| (i * 83) % (IMAGE_BLOCKS - 8)).collect();
    for (i, &lba) in lbas.iter().enumerate() {
        assert_eq!(bot.write10(lba as u32, &block(i)).await.status, PASSED);
    }
    assert_eq!(bot.sync().await.status, PASSED);
    // More writes in flight when the server dies: they may or may not land; nothing checks them.
    // Raw URBs, results ignored: the connection dies under them.
    let conn = bot.conn.clone();
    let more = tokio::spawn(async move {
        let write = [0x2a, 0, 0, 0, 0x07, 0xf0, 0, 0, 8, 0]; // WRITE(10) of LBA 2032..2040
        for tag in 1000u32.. {
            let cbw = cbw(tag, 8 * BLOCK as u32, false, &write);
            let steps = [
                Submit::bulk_out(2, cbw),
                Submit::bulk_out(2, vec![0xee; 8 * BLOCK]),
                Submit::bulk_in(1, 13),
            ];
            for step in steps {
                if conn.submit(step).await.is_err() {
                    return;
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    let _ = more.await; // panics in it (the connection died) are expected

    let after = std::fs::read(&image).unwrap();
    // Later acknowledged writes to overlapping blocks win, as on a disk.
    let mut expected = vec![None::<u8>; IMAGE_BLOCKS * BLOCK];
    for (i, &lba) in lbas.iter().enumerate() {
        for (j, b) in block(i).into_iter().enumerate() {
            expected[lba * BLOCK + j] = Some(b);
        }
    }
    for (at, want) in expected.iter().enumerate() {
        if let Some(want) = want {
            assert_eq!(after[at], *want, "byte {at} lost after kill -9");
        }
    }
}

/// `max_total_buffered_bytes` bounds what all clients together make the server hold: a client
/// under its own limit whose OUT data (held by gadget zero's loopback) passes the server-wide
/// budget is closed, the count goes back to zero, and the device can be imported again.
#[tokio::test]
async fn the_server_wide_budget_closes_the_client_that_passes_it() {
    use usbipd::device::r#virtual::gadget_zero;
    const MIB: usize = 1024 * 1024;
    let config = ServerConfig {
        max_buffered_bytes: 256 * MIB,
        max_total_buffered_bytes: 8 * MIB,
        ..ServerConfig::default()
    };
    let total = config.total_buffered.clone();
    let gz = gadget_zero::new(BusPosition::virtual_port(6));
    let addr = start_server(vec![Arc::new(gz) as Arc<dyn Device>], config).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let devid = raw_import(&mut stream, "0-6").await;
    let set_loopback = [0, 9, gadget_zero::CONFIG_LOOPBACK, 0, 0, 0, 0, 0];
    stream
        .write_all(&bulk_out(1, devid, 0, set_loopback, Bytes::new()))
        .await
        .unwrap();
    let mut reply = [0u8; 48];
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply[20..24], &[0; 4], "SET_CONFIGURATION failed");
    let payload = Bytes::from(vec![0u8; MIB]);
    let mut sent = 0;
    for seqnum in 2..2 + 128 {
        let urb = bulk_out(seqnum, devid, 1, [0; 8], payload.clone());
        match tokio::time::timeout(Duration::from_secs(10), stream.write_all(&urb)).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) => break,
            Err(_) => panic!("the server stopped reading without closing the connection"),
        }
    }
    let mut sink = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "still open after {sent} MiB of OUT data");
    drop(stream);
    assert!(
        eventually(|| total.get() == 0).await,
        "{} bytes still counted after the session ended",
        total.get()
    );
    let again = Connection::import(addr, "0-6").await.unwrap();
    assert_eq!(
        again
            .submit(Submit::control(set_loopback, Bytes::new()))
            .await
            .unwrap()
            .status,
        0
    );
}
