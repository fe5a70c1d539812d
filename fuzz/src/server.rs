//! Two in-process servers (default and tight limits) with the demo's virtual devices, started
//! once per fuzzing process, and the client side of one fuzzed connection.
//!
//! Devices: gadget zero at 0-1 (devid 1), keyboard at 0-2 (devid 2), disk on a 1 MiB temporary
//! image at 0-3 (devid 3). A fuzzed connection must always end once the client has sent its
//! bytes and closed its side, and the server must still answer a device list afterwards.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use usbip_proto::{Limits, OpReply, OpRequest, OpStatus, Speed};
use usbipd::device::r#virtual::keyboard::Keyboard;
use usbipd::device::r#virtual::{gadget_zero, mass_storage, BusPosition};
use usbipd::device::registry::Registry;
use usbipd::server::{Server, ServerConfig};

/// Busids by the input's mode byte (mode 0: no import, the bytes are the handshake).
pub const BUSIDS: [&str; 3] = ["0-1", "0-2", "0-3"];

/// How long a connection may take to end after the client closed its side. Far above any
/// legitimate time (the server tears a session down in milliseconds); passing it is a hang.
const END_DEADLINE: Duration = Duration::from_secs(20);

pub struct Harness {
    pub runtime: Runtime,
    /// The server with default limits, and one with tight limits that inputs reach easily.
    pub addrs: [SocketAddr; 2],
    /// The disks' temporary images (`NamedTempFile`s), alive as long as the process.
    _images: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

/// Limits small enough for short inputs to hit every one of them.
fn tight() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.limits.max_transfer_length = 64 * 1024;
    config.limits.max_iso_packets = 8;
    config.max_in_flight = 8;
    config.max_buffered_bytes = 256 * 1024;
    config
}

/// The process-wide server, started on first use.
pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(start)
}

fn start() -> Harness {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut images: Vec<Box<dyn std::any::Any + Send + Sync>> = Vec::new();
    let mut addrs = Vec::new();
    for config in [ServerConfig::default(), tight()] {
        let image = mass_storage::temporary_image(1024 * 1024).expect("temporary image");
        let path = image.path().to_owned();
        images.push(Box::new(image));
        addrs.push(runtime.block_on(serve(path, config)));
    }
    Harness {
        runtime,
        addrs: [addrs[0], addrs[1]],
        _images: images,
    }
}

/// Starts a server with the three devices, the disk on the image at `path`.
async fn serve(path: std::path::PathBuf, config: ServerConfig) -> SocketAddr {
    let registry = Registry::new();
    registry.add(Arc::new(gadget_zero::new(BusPosition::virtual_port(1))));
    let (keyboard, _handle) =
        Keyboard::new(Speed::Full, "FUZZ00000002", BusPosition::virtual_port(2)).expect("keyboard");
    registry.add(Arc::new(keyboard));
    registry.add(Arc::new(
        mass_storage::new(&path, false, BusPosition::virtual_port(3)).expect("disk"),
    ));
    let listeners = Server::bind(&["127.0.0.1:0".parse().expect("address")])
        .await
        .expect("bind");
    let addr = listeners[0].local_addr().expect("local address");
    let server = Server::new(registry, config);
    tokio::spawn(async move { server.serve(listeners).await });
    addr
}

/// Imports `busid` on a fresh connection. The previous fuzzed session may still be letting go
/// of the device (DEV_BUSY), so that is retried.
async fn import(addr: SocketAddr, busid: &str) -> TcpStream {
    for _ in 0..2000 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = OpRequest::Import {
            busid: busid.into(),
        };
        let mut out = Vec::new();
        request.encode(&mut out);
        stream.write_all(&out).await.expect("send import");
        let mut buf = BytesMut::new();
        let reply = loop {
            if let Some((reply, _)) =
                OpReply::decode(&request, &buf, &Limits::default()).expect("import reply")
            {
                break reply;
            }
            let n = stream.read_buf(&mut buf).await.expect("read import reply");
            assert!(n > 0, "server closed the connection during an import");
        };
        match reply {
            OpReply::Import(Ok(_)) => return stream,
            OpReply::Import(Err(OpStatus::DevBusy)) => {
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            other => panic!("import of {busid} failed: {other:?}"),
        }
    }
    panic!("{busid} stayed busy after its previous session ended");
}

/// Runs one fuzzed connection: optional import, the bytes, FIN, then reads until the server
/// closes. Panics if the server hangs or stops answering device lists.
pub fn run(input: &[u8]) {
    let Some((&mode, bytes)) = input.split_first() else {
        return;
    };
    let h = harness();
    h.runtime.block_on(async {
        let addr = h.addrs[usize::from(mode >> 2 & 1)];
        let mode = usize::from(mode % 4);
        let exchange = async {
            let stream = match mode {
                0 => TcpStream::connect(addr).await.expect("connect"),
                m => import(addr, BUSIDS[m - 1]).await,
            };
            let (mut rd, mut wr) = stream.into_split();
            let write = async move {
                // The server may close first (a protocol error): that is fine.
                let _ = wr.write_all(bytes).await;
                let _ = wr.shutdown().await;
            };
            let read = async move {
                let mut sink = vec![0u8; 64 * 1024];
                while let Ok(n) = rd.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            tokio::join!(write, read);
        };
        tokio::time::timeout(END_DEADLINE, exchange)
            .await
            .expect("the server did not close a connection after the client's FIN");
        let list = tokio::time::timeout(END_DEADLINE, usbip_client::list_devices(addr))
            .await
            .expect("device list timed out")
            .expect("device list after a fuzzed connection");
        assert_eq!(list.len(), 3, "devices missing from the list");
    });
}
