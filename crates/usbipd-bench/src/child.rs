//! The server under test as a separate process: either this binary's `serve` mode (the usbipd
//! engine with bench devices, plus the raw baseline server) or the real `usbipd` binary.
//!
//! The parent samples the child's CPU time (/proc schedstat), RSS (/proc status) and, for the
//! bench child, its allocation counters over a stdin/stdout line protocol. Nothing here
//! generates load.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usbipd::device::r#virtual::gadget_zero;

use anyhow::{bail, Context};
use usbipd::device::r#virtual::BusPosition;
use usbipd::device::registry::Registry;
use usbipd::server::{Server, ServerConfig, TlsServer};

/// `usbipd-bench serve --devices N`: runs until stdin closes. Prints
/// `READY <usbip> <raw> <tls> <raw blocking> <prebuilt-reply usbip> <raw current-thread>`
/// (`<tls>` is `-` without `--tls-state`),
/// then answers each `stats` line with `STATS <allocations> <bytes allocated>`.
pub fn serve(devices: usize, tls_state: Option<PathBuf>) -> anyhow::Result<()> {
    // Same runtime shape as the real binary's #[tokio::main].
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let registry = Registry::new();
        for port in 1..=devices {
            registry.add(Arc::new(gadget_zero::new(BusPosition::virtual_port(
                port as u32,
            ))));
        }
        let listeners = Server::bind(&["127.0.0.1:0".parse()?]).await?;
        let usbip = listeners[0].local_addr()?;
        let mut server = Server::new(registry, ServerConfig::default());
        let mut tls_listeners = Vec::new();
        let mut tls_addr = "-".to_string();
        if let Some(dir) = &tls_state {
            server = server.with_tls(Arc::new(TlsServer::open(dir)?));
            tls_listeners = Server::bind(&["127.0.0.1:0".parse()?]).await?;
            tls_addr = tls_listeners[0].local_addr()?.to_string();
        }
        tokio::spawn(async move { server.serve_tls(listeners, tls_listeners).await });
        let raw = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let raw_addr = raw.local_addr()?;
        tokio::spawn(crate::raw::serve(raw));
        let blocking = std::net::TcpListener::bind("127.0.0.1:0")?;
        let blocking_addr = blocking.local_addr()?;
        std::thread::spawn(move || crate::raw::serve_blocking(blocking));
        let current = std::net::TcpListener::bind("127.0.0.1:0")?;
        let current_addr = current.local_addr()?;
        std::thread::spawn(move || crate::raw::serve_current_thread(current));
        let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let fake_addr = fake.local_addr()?;
        tokio::spawn(crate::fake::serve(fake));
        println!("READY {usbip} {raw_addr} {tls_addr} {blocking_addr} {fake_addr} {current_addr}");
        std::io::stdout().flush()?;
        // Stdin is read on a plain thread: a blocking read must not hold a runtime worker.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if line.trim() == "stats" {
                    let (a, b) = crate::alloc::counts();
                    println!("STATS {a} {b}");
                    let _ = std::io::stdout().flush();
                }
            }
            let _ = tx.send(());
        });
        rx.recv().await;
        Ok(())
    })
}

/// Allocation counters of the bench child.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocs {
    pub count: u64,
    pub bytes: u64,
}

/// A running server process.
pub struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<BufReader<ChildStdout>>,
    pub usbip: SocketAddr,
    /// The raw baseline server (bench child only).
    pub raw: Option<SocketAddr>,
    /// The blocking thread-per-connection raw server (bench child only).
    pub raw_blocking: Option<SocketAddr>,
    /// The raw server on a current-thread runtime (bench child only).
    pub raw_current: Option<SocketAddr>,
    /// The USB/IP server answering from prebuilt replies (bench child only), see `fake`.
    pub prebuilt: Option<SocketAddr>,
    pub pid: u32,
    /// Spawn to first accepted TCP connection.
    pub startup: Duration,
    /// The TLS listener (bench child only) and a client it trusts.
    pub tls: Option<(SocketAddr, Arc<crate::tls::Client>)>,
}

impl ServerProcess {
    /// This binary in `serve` mode exporting `devices` gadget-zero devices.
    pub fn bench(devices: usize) -> anyhow::Result<ServerProcess> {
        Self::bench_with(devices, true, None)
    }

    /// The same, without TLS, with every thread pinned to `cpu` (see `pin`).
    pub fn bench_pinned(devices: usize, cpu: usize) -> anyhow::Result<ServerProcess> {
        Self::bench_with(devices, false, Some(cpu))
    }

    fn bench_with(devices: usize, tls: bool, cpu: Option<usize>) -> anyhow::Result<ServerProcess> {
        let exe = std::env::current_exe()?;
        let client = tls.then(crate::tls::Client::new).transpose()?;
        let started = Instant::now();
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--devices", &devices.to_string()]);
        if let Some(client) = &client {
            cmd.arg("--tls-state").arg(client.server_dir());
        }
        if let Some(cpu) = cpu {
            crate::pin::command(&mut cmd, cpu);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let startup = started.elapsed();
        let mut words = line.split_whitespace();
        if words.next() != Some("READY") {
            let _ = child.kill();
            bail!("bench server did not start: {line:?}");
        }
        let usbip = words.next().context("no address")?.parse()?;
        let raw = Some(words.next().context("no raw address")?.parse()?);
        let tls = words.next().context("no TLS address")?;
        let tls = match client {
            Some(client) => Some((tls.parse()?, Arc::new(client))),
            None => None,
        };
        let raw_blocking = Some(words.next().context("no blocking raw address")?.parse()?);
        let prebuilt = Some(words.next().context("no prebuilt-reply address")?.parse()?);
        let raw_current = Some(
            words
                .next()
                .context("no current-thread raw address")?
                .parse()?,
        );
        Ok(ServerProcess {
            raw_blocking,
            raw_current,
            prebuilt,
            tls,
            pid: child.id(),
            stdin: child.stdin.take(),
            stdout: Some(stdout),
            child,
            usbip,
            raw,
            startup,
        })
    }

    /// The real `usbipd server` with `args`, listening on a free loopback port; start-up is
    /// measured from spawn to the first accepted TCP connection.
    pub fn usbipd(binary: &Path, args: &[&str]) -> anyhow::Result<ServerProcess> {
        let port = free_port()?;
        let usbip: SocketAddr = ([127, 0, 0, 1], port).into();
        // In a directory of the bench's own, never loose in the shared temporary directory.
        let control = std::env::temp_dir()
            .join(format!("usbipd-bench-{}", std::process::id()))
            .join(format!("control-{port}.sock"));
        let started = Instant::now();
        let mut child = Command::new(binary)
            .arg("server")
            .args(["--extension", "off"])
            .args(args)
            .args(["--listen", &usbip.to_string(), "--control"])
            .arg(&control)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        loop {
            if std::net::TcpStream::connect(usbip).is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                bail!("usbipd exited ({status}): {}", err.trim());
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                bail!("usbipd did not accept connections within 10 s");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let startup = started.elapsed();
        Ok(ServerProcess {
            pid: child.id(),
            child,
            stdin: None,
            stdout: None,
            usbip,
            raw: None,
            raw_blocking: None,
            raw_current: None,
            prebuilt: None,
            startup,
            tls: None,
        })
    }

    /// Allocation counters (bench child only).
    pub fn allocs(&mut self) -> Option<Allocs> {
        let stdin = self.stdin.as_mut()?;
        stdin.write_all(b"stats\n").ok()?;
        stdin.flush().ok()?;
        let mut line = String::new();
        self.stdout.as_mut()?.read_line(&mut line).ok()?;
        let mut w = line.split_whitespace().skip(1);
        Some(Allocs {
            count: w.next()?.parse().ok()?,
            bytes: w.next()?.parse().ok()?,
        })
    }

    /// CPU time of all the child's threads, in nanoseconds.
    pub fn cpu_ns(&self) -> u64 {
        cpu_ns(self.pid)
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid).unwrap_or(0)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.stdin.take()); // the bench child exits on EOF
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The `usbipd` binary: `--usbipd PATH`, else next to this one.
pub fn find_usbipd(explicit: Option<PathBuf>) -> Option<PathBuf> {
    if explicit.is_some() {
        return explicit;
    }
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.join("usbipd");
    candidate.exists().then_some(candidate)
}
