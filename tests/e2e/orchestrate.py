#!/usr/bin/env python3
"""Host side of the kernel-client e2e suite (Python 3 stdlib only).

Starts our usbipd on 127.0.0.1 with one device of each kind, boots the QEMU guest (guest/init.sh),
follows its serial console line by line, answers its "E2E READY x" markers (types on the virtual
keyboard, talks to the serial device's TCP side, inspects the server and the disk image after the
detach), and prints one PASS/FAIL line per check plus the final "N passed, M failed" line.
"""
import argparse
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import capture
from e2elib import Guest, Results, kill_group, qemu_command, tail

BUSIDS = {"keyboard": "0-1", "serial": "0-2", "storage": "0-3", "loopback": "0-4"}
IDS = {"keyboard": "1209:0001", "serial": "1209:0002", "storage": "1209:0003", "loopback": "0525:a4a0"}
TYPED = "hello 42\n"
MOVED_STORAGE_BUSID = "0-9"  # where the disk is after the server restart of the --auto check
DISK_MIB = 64
FS_MIB = 48  # the guest's vfat; big enough for a spec-conformant FAT32 (>= 65525 clusters) mtools reads
RAW_OFF = 52 << 20  # 1 MiB the guest writes raw, the host verifies
HOST_DATA_OFF = 60 << 20  # 1 MiB the host writes before boot, the guest reads
RAW_LINE = b"usbipd-e2e raw sector pattern 0123456789abcdef\n"
VFAT_TEXT = "".join("%d\n" % i for i in range(1, 20001)).encode()
SERIAL_UP = "guest-to-host usbipd-e2e 0123456789"
SERIAL_DOWN = "host-to-guest usbipd-e2e abcdefghij"
CAPTURE_SNAPLEN = 4096  # the first server's --capture-snaplen: the disk's reads are longer

# checks in the order they normally happen; anything the guest never reports is a failure
EXPECTED = (
    ["host-server-start", "host-usbip-list", "host-usbipd-list", "guest-usbip-list"]
    + [f"{s}-{k}" for k in BUSIDS for s in ("attach", "enumerate")]
    + ["keyboard-usbhid-bound", "host-type-keys", "keyboard-keys"]
    + ["serial-cdc-acm-bound", "serial-guest-to-host", "serial-host-to-guest"]
    + ["storage-disk", "storage-read-host-data", "storage-vfat-file", "storage-raw-sectors"]
    + ["loopback-usbtest-bound"] + [f"usbtest-{n}" for n in (1, 2, 9, 10)]
    + ["loopback-usbtest-iso-alt", "usbtest-15", "usbtest-16"]
    + ["loopback-unlink-timeout", "loopback-echo-after-unlink", "loopback-control-after-unlink"]
    + [f"detach-{k}" for k in BUSIDS] + ["detach-devices-gone"]
    + ["host-server-log-disconnect", "host-reimportable", "host-image-vfat-file", "host-image-raw-sectors"]
    + ["attach-reattach-loopback", "enumerate-reattach-loopback", "reattach-loopback-io"]
    + ["usbtest-11", "usbtest-12", "reattach-detach"]
    # our own client (usbipd client) in the guest
    + ["client-attach-storage", "client-enumerate-storage", "client-storage-read-host-data",
       "client-storage-raw-sectors", "client-attach-keyboard", "client-enumerate-keyboard",
       "host-type-keys-client", "client-keyboard-keys", "client-port", "client-detach-port",
       "client-detach-all"]
    + [f"vm-{v}-{step}" for v in ("lima", "lima-auto", "docker", "docker-auto") for step in ("attach", "detach")]
    + ["vm-docker-usbip-attach", "vm-client-detach-busid"]
    + ["client-auto-attach", "host-server-restart", "client-auto-reattach", "client-auto-sigterm-detach"]
    # the first server's --capture, decoded by tshark after the run
    + ["capture-tshark", "capture-get-descriptor", "capture-storage-cbw", "capture-storage-csw",
       "capture-storage-data-in"]
    # USB/IP in TLS (issue 17): usbipd client attach --tls against --listen-tls
    + ["host-tls-pair-code", "tls-untrusted-refused", "host-tls-refused-logged", "tls-pair-attach",
       "tls-storage-read-host-data", "tls-storage-raw-sectors", "tls-detach", "tls-reattach-trusted",
       "tls-kernel-tls", "tls-auto-attach", "tls-auto-reattach", "tls-auto-sigterm-detach",
       "host-tls-rekey", "tls-changed-key-refused", "host-tls-wire-no-plaintext"]
)

# evdev key codes (linux/input-event-codes.h) of what we type
KEYCODES = {c: n for row, first in (("qwertyuiop", 16), ("asdfghjkl", 30), ("zxcvbnm", 44))
            for n, c in enumerate(row, first)}
KEYCODES.update({str(d): (d + 1 if d else 11) for d in range(10)})
KEYCODES.update({" ": 57, "\n": 28})


class Suite:
    def __init__(self, args):
        self.args = args
        self.checks = Results()
        self.record = self.checks.record
        self.procs = []
        self.socks = []

    # ---------------------------------------------------------------- helpers
    def run(self, cmd, timeout=20):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            return p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired:
            return 124, f"timed out after {timeout}s: {' '.join(cmd)}"
        except OSError as e:
            return 127, str(e)

    def server_log(self):
        try:
            with open(self.server_log_path, errors="replace") as f:
                return re.sub(r"\x1b\[[0-9;]*m", "", f.read())
        except OSError:
            return ""

    # ---------------------------------------------------------------- setup
    def prepare(self):
        a = self.args
        self.work = os.path.join(a.cache, "run")
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        self.port = a.port or free_port()  # what the clients (guest, host tools) connect to
        self.server_port = free_port() if a.wire_log else self.port  # behind the proxy, if any
        self.serial_port = free_port()
        self.tls_port = free_port()  # the server's --listen-tls
        self.state = os.path.join(self.work, "state")  # its key, trust store and pairing codes
        os.makedirs(self.state, mode=0o700)
        self.sock = os.path.join(self.work, "control.sock")
        self.image = os.path.join(self.work, "disk.img")
        self.host_data = b"".join(hashlib.sha256(b"usbipd-e2e %d" % i).digest() for i in range(1 << 15))
        with open(self.image, "wb") as f:
            f.truncate(DISK_MIB << 20)
            f.seek(HOST_DATA_OFF)
            f.write(self.host_data)
        self.config = os.path.join(self.work, "usbipd.toml")
        with open(self.config, "w") as f:
            f.write(f'[[device]]\nkind = "keyboard"\nbusid = "{BUSIDS["keyboard"]}"\n\n'
                    f'[[device]]\nkind = "serial"\nbusid = "{BUSIDS["serial"]}"\n'
                    f'tcp = "127.0.0.1:{self.serial_port}"\n\n'
                    f'[[device]]\nkind = "storage"\nbusid = "{BUSIDS["storage"]}"\n'
                    f'image = "{self.image}"\nread_only = false\n\n'
                    f'[[device]]\nkind = "loopback"\nbusid = "{BUSIDS["loopback"]}"\n')
        self.server_log_path = os.path.join(self.work, "server.log")
        self.capture_path = os.path.join(self.work, "capture.pcapng")
        self.console_path = os.path.join(self.work, "guest-console.log")

    def start_server(self, check="host-server-start", log_mode="w"):
        a = self.args
        env = dict(os.environ, RUST_LOG=os.environ.get("USBIPD_E2E_LOG", "debug"), NO_COLOR="1")
        cmd = [a.usbipd, "server", "--extension", "off", "--listen", f"127.0.0.1:{self.server_port}", "--config", self.config,
               "--control", self.sock, "--listen-tls", f"127.0.0.1:{self.tls_port}", "--state-dir", self.state]
        if check == "host-server-start":  # the restarted server must not overwrite the capture
            cmd += ["--capture", self.capture_path, "--capture-snaplen", str(CAPTURE_SNAPLEN)]
        log = open(self.server_log_path, log_mode)
        self.server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
        self.procs.append(self.server)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.server.poll() is not None:
                return self.record(check, False, f"server exited rc={self.server.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.server_port), timeout=1).close()
                if os.path.exists(self.sock):
                    if check == "host-server-start":
                        self.start_wire_log()
                    return self.record(check, True)
            except OSError:
                pass
            time.sleep(0.1)
        self.record(check, False, f"nothing listening on 127.0.0.1:{self.port} "
                    f"(or no control socket) after 30 s")

    def start_wire_log(self):
        """--wire-log: clients reach the server through wire_log.py, which logs every header."""
        self.wire = None
        if self.args.wire_log:
            import wire_log
            self.wire_path = os.path.join(self.work, "wire.log")
            self.wire = wire_log.start(self.port, self.server_port, self.wire_path)

    def host_lists(self):
        rc, out = self.run(["usbip", "--tcp-port", str(self.port), "list", "-r", "127.0.0.1"])
        found = dict(re.findall(r"^\s*(\S+): .*\(([0-9a-f]{4}:[0-9a-f]{4})\)\s*$", out, re.M))
        bad = [f"{b}({IDS[k]}) got {found.get(b)}" for k, b in BUSIDS.items() if found.get(b) != IDS[k]]
        self.record("host-usbip-list", rc == 0 and not bad, f"rc={rc} {'; '.join(bad)}\n{out}")
        rc, out = self.run([self.args.usbipd, "list", "--remote", f"127.0.0.1:{self.port}"])
        bad = [f"{b}({IDS[k]})" for k, b in BUSIDS.items()
               if not re.search(rf"\b{re.escape(b)}\b.*{IDS[k]}", out, re.I)]
        self.record("host-usbipd-list", rc == 0 and not bad, f"rc={rc} missing {' '.join(bad)}\n{out}")

    # ---------------------------------------------------------------- the guest
    def boot(self):
        a = self.args
        keys = ",".join(str(KEYCODES[c]) for c in TYPED)
        append = (f"console=ttyS0 quiet loglevel=3 panic=-1 e2e_mode={a.mode} e2e_server=10.0.2.2 "
                  f"e2e_port={self.port} e2e_kbd={BUSIDS['keyboard']} e2e_serial={BUSIDS['serial']} "
                  f"e2e_storage={BUSIDS['storage']} e2e_loop={BUSIDS['loopback']} e2e_keys={keys} "
                  f"e2e_ids={IDS['keyboard']},{IDS['serial']},{IDS['storage']},{IDS['loopback']} "
                  f"e2e_sectors={(DISK_MIB << 20) // 512} e2e_fs_kb={FS_MIB << 10} e2e_raw_blk={RAW_OFF >> 16} "
                  f"e2e_host_blk={HOST_DATA_OFF >> 16} e2e_hostmd5={hashlib.md5(self.host_data).hexdigest()}"
                  f"{self.tls_args()}")
        cmd = qemu_command(a.cache, "initramfs.cpio.gz", append, a.timeout,
                           ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,romfile="])
        if a.mode == "shell":  # interactive: the console is the terminal; the server stays up meanwhile
            print(f"server on 127.0.0.1:{self.port} (guest: usbip --tcp-port {self.port} attach -r 10.0.2.2 -b BUSID)")
            subprocess.call(cmd[2:])
            return False
        self.guest = Guest(cmd, self.console_path, self.args.verbose)
        self.procs.append(self.guest.proc)

    def tls_args(self):
        """The TLS checks' kernel command line: the guest reaches the TLS listener through a
        recording proxy (the wire check), with a pairing code and the server key's fingerprint."""
        import tls_wire
        self.tls_wire = tls_wire.start(self.tls_port)
        rc, out = self.run([self.args.usbipd, "pair", "--state-dir", self.state])
        code = re.search(r"pairing code: (\S+)", out)
        fp = re.search(r"server key: +(SHA256:\S+)", out)
        self.record("host-tls-pair-code", rc == 0 and bool(code and fp), f"rc={rc} {out.strip()}")
        if not (code and fp):
            return ""
        self.tls_fp = fp.group(1)
        return f" e2e_tls_port={self.tls_wire.port} e2e_tls_code={code.group(1)} e2e_tls_fp={self.tls_fp}"

    def on_tls_refused(self):
        log = self.server_log()
        self.record("host-tls-refused-logged", "TLS connection refused: client key not trusted" in log,
                    "; ".join(l for l in log.splitlines() if "TLS connection refused" in l)[-300:])

    def on_tls_rekey(self):
        """The server gets a new key: stopped, its key moved away, started again (a new key)."""
        kill_group(self.server)
        self.procs.remove(self.server)
        key = os.path.join(self.state, "server.key")
        os.replace(key, key + ".old")
        try:
            os.unlink(self.sock)
        except OSError:
            pass
        self.start_server("host-tls-rekey", "a")
        rc, out = self.run([self.args.usbipd, "pair", "--state-dir", self.state])
        fp = re.search(r"server key: +(SHA256:\S+)", out)
        new = fp.group(1) if fp else "?"
        if new == getattr(self, "tls_fp", None):
            self.record("host-tls-rekey", False, f"the key did not change: {new}")
        print(f"server key now {new} (was {getattr(self, 'tls_fp', '?')})", flush=True)

    def on_tls_wire(self):
        """What crossed the TLS port: no USB/IP header, busid or disk data in the clear."""
        up, down = self.tls_wire.captured()
        found = [name for name, where, pattern in (
            ("OP_REQ_DEVLIST", up, b"\x01\x11\x80\x05"), ("OP_REQ_IMPORT", up, b"\x01\x11\x80\x03"),
            ("OP_REP_IMPORT", down, b"\x01\x11\x00\x03"), ("busid", up + down, MOVED_STORAGE_BUSID.encode() + b"\0"),
            ("host data", down, self.host_data[:64]), ("raw pattern", up + down, RAW_LINE))
            if pattern in where]
        ok = len(down) > (1 << 20) and not found
        self.record("host-tls-wire-no-plaintext", ok,
                    f"{len(up)} bytes up, {len(down)} down over {self.tls_wire.connections} connections; "
                    + (f"in the clear: {', '.join(found)}" if found else "no USB/IP header, busid or disk data in the clear"))

    def tell_guest(self, word):
        self.guest.tell(word)

    def follow(self):
        self.guest.follow(self.args.timeout, self.t0, self.on_line, self.record)

    def on_line(self, line):
        """Handles one console line; False once the guest is done."""
        m = re.search(r"E2E CHECK (\S+) (PASS|FAIL) ?(.*)", line)
        if m:
            self.record(m.group(1), m.group(2) == "PASS", m.group(3))
            return True
        if "TLS-BENCH" in line:  # the guest's read throughput per transport, for the report
            print(line[line.index("TLS-BENCH"):].strip(), flush=True)
        m = re.search(r"E2E READY (\S+)", line)
        if m:
            if not getattr(self, "on_" + m.group(1).replace("-", "_"))():
                self.tell_guest(m.group(1))
            return True
        return "E2E DONE" not in line

    # ---------------------------------------------------------------- answers to READY markers
    def on_keyboard(self):
        rc, out = self.run([self.args.usbipd, "virtual", "type", "--control", self.sock,
                            "--busid", BUSIDS["keyboard"], TYPED])
        self.record("host-type-keys", rc == 0, f"rc={rc} {out.strip()}")

    def on_client_keyboard(self):
        rc, out = self.run([self.args.usbipd, "virtual", "type", "--control", self.sock,
                            "--busid", BUSIDS["keyboard"], TYPED])
        self.record("host-type-keys-client", rc == 0, f"rc={rc} {out.strip()}")

    def on_server_restart(self):
        """--auto in the guest: stop our server (its clients' connections close), start it again
        with the disk on another busid (the guest follows it by hardware id)."""
        kill_group(self.server)
        self.procs.remove(self.server)
        with open(self.config) as f:
            text = f.read()
        with open(self.config, "w") as f:
            f.write(text.replace(f'kind = "storage"\nbusid = "{BUSIDS["storage"]}"',
                                 f'kind = "storage"\nbusid = "{MOVED_STORAGE_BUSID}"'))
        time.sleep(1.0)
        try:
            os.unlink(self.sock)
        except OSError:
            pass
        t = time.time()
        self.start_server("host-server-restart", "a")
        print(f"server restarted in {time.time() - t:.2f} s", flush=True)

    def on_serial(self):
        try:
            s = socket.create_connection(("127.0.0.1", self.serial_port), timeout=5)
        except OSError as e:
            return self.record("serial-guest-to-host", False, f"connect 127.0.0.1:{self.serial_port}: {e}")
        self.socks.append(s)
        time.sleep(0.3)  # let the server accept before the guest writes
        self.tell_guest("serial")  # answered here already, not after returning
        buf = b""
        deadline = time.time() + 15
        try:
            while b"\n" not in buf and time.time() < deadline:
                s.settimeout(max(0.1, deadline - time.time()))
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except OSError:
            pass
        got = buf.split(b"\n")[0].decode(errors="replace").strip("\r")
        self.record("serial-guest-to-host", got == SERIAL_UP, f"received {buf!r}")
        try:
            s.sendall((SERIAL_DOWN + "\n").encode())
        except OSError as e:
            self.record("serial-host-to-guest", False, f"send: {e}")
        return True

    def on_reattach(self):
        time.sleep(0.5)  # let the server notice the closed connections
        ends = [l for l in self.server_log().splitlines() if re.search(r"disconnect|closed|detach", l, re.I)]
        missing = [b for b in BUSIDS.values() if not any(re.search(rf"\b{re.escape(b)}\b", l) for l in ends)]
        self.record("host-server-log-disconnect", not missing,
                    f"no disconnect/closed/detached line naming busid {' '.join(missing)} in the server log")
        rc, out = self.run(["usbip", "--tcp-port", str(self.port), "list", "-r", "127.0.0.1"])
        missing = [b for b in BUSIDS.values() if not re.search(rf"^\s*{re.escape(b)}: ", out, re.M)]
        self.record("host-reimportable", rc == 0 and not missing, f"rc={rc} missing {missing}\n{out}")
        self.verify_image()

    def verify_image(self):
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        try:
            p = subprocess.run(["mcopy", "-n", "-i", self.image, "::E2E.TXT", "-"], capture_output=True,
                               timeout=20, env=env)
            ok = p.returncode == 0 and p.stdout == VFAT_TEXT
            self.record("host-image-vfat-file", ok,
                        f"mcopy rc={p.returncode} md5 {hashlib.md5(p.stdout).hexdigest()} want "
                        f"{hashlib.md5(VFAT_TEXT).hexdigest()} {p.stderr.decode(errors='replace').strip()}")
        except (OSError, subprocess.TimeoutExpired) as e:
            self.record("host-image-vfat-file", False, str(e))
        want = (RAW_LINE * (1 + (1 << 20) // len(RAW_LINE)))[: 1 << 20]
        with open(self.image, "rb") as f:
            f.seek(RAW_OFF)
            got = f.read(1 << 20)
        self.record("host-image-raw-sectors", got == want,
                    f"image md5 at {RAW_OFF} is {hashlib.md5(got).hexdigest()}, want {hashlib.md5(want).hexdigest()}")

    def __getattr__(self, name):  # an unknown READY marker: answer it anyway so the guest goes on
        if name.startswith("on_"):
            return lambda: None
        raise AttributeError(name)

    # ---------------------------------------------------------------- teardown and report
    def stop(self):
        for s in self.socks:
            s.close()
        for p in reversed(self.procs):
            kill_group(p)

    def report(self):
        self.checks.missing(EXPECTED, "not reached (see the guest console below)")
        try:
            with open(self.console_path, errors="replace") as f:
                console = f.read()
        except OSError:
            console = ""
        m = re.search(r"vhci_hcd: cannot find a urb of seqnum (\d+)", console)
        if m:  # the kernel client's reason for dropping a connection; see README (usbtest-11/12)
            print(f"NOTE vhci-hcd dropped a connection: RET_SUBMIT for seqnum {m.group(1)} arrived after "
                  f"the RET_UNLINK for it (grep the console for 'urb->status' and 'cannot find')")
        if getattr(self, "wire", None):
            print(f"NOTE wire log {self.wire_path}: {self.wire.violations} order violation(s)"
                  + (" (grep VIOLATION)" if self.wire.violations else ""))
        if self.checks.failed():
            print(f"---- last lines of the guest console ({self.console_path})")
            sys.stdout.write(tail(self.console_path, 60))
            print(f"---- last lines of the server log ({self.server_log_path})")
            sys.stdout.write(tail(self.server_log_path, 60))
            print("----")
        print(f"run time {time.time() - self.t0:.1f} s, logs in {self.work}")
        return self.checks.summary()

    def main(self):
        self.t0 = time.time()
        try:  # which build is under test: a stale binary silently tests old code
            built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(self.args.usbipd)))
            print(f"server binary {self.args.usbipd} (built {built})", flush=True)
        except OSError:
            pass
        self.prepare()
        try:
            self.start_server()
            if self.checks.results["host-server-start"][0]:
                if self.args.mode == "client":
                    self.host_lists()
                if self.boot() is not False:
                    self.follow()
        finally:
            self.stop()
        capture.check(self.capture_path, BUSIDS["storage"], CAPTURE_SNAPLEN, self.record)
        return self.report()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--usbipd", required=True, help="our usbipd binary")
    ap.add_argument("--cache", required=True, help="directory prepared by setup.sh")
    ap.add_argument("--port", type=int, default=0, help="USB/IP port (default: a free one)")
    ap.add_argument("--timeout", type=float, default=230, help="seconds for the whole run")
    ap.add_argument("--mode", default="client", choices=["client", "shell"],
                    help="shell: boot the guest with an interactive shell instead of the checks")
    ap.add_argument("--wire-log", action="store_true",
                    help="route USB/IP through wire_log.py, which logs every header to wire.log")
    ap.add_argument("-v", "--verbose", action="store_true", help="echo the guest console")
    ap.add_argument("--devices", default="", metavar="KIND=BUSID@VID:PID,...",
                    help="expect other busids/ids than our defaults (to point the suite at another server)")
    args = ap.parse_args()
    for item in filter(None, args.devices.split(",")):
        kind, rest = item.split("=", 1)
        BUSIDS[kind], IDS[kind] = rest.split("@", 1)
    sys.exit(Suite(args).main())


if __name__ == "__main__":
    main()
