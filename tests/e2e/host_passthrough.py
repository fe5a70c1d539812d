#!/usr/bin/env python3
"""Host side of the host-passthrough e2e suite (Python 3 stdlib only).

Writes a disk image with a known vfat file and known raw bytes, boots one QEMU guest with emulated
USB hardware (qemu-xhci + usb-kbd + usb-storage on that image) running guest/host-init.sh, presses
keys on the emulated keyboard through the QEMU monitor when the guest asks, and prints one PASS/FAIL
line per check, the field-by-field comparison of our device list with the kernel's, the read
throughput of both servers, and the final "N passed, M failed" line.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

from e2elib import Guest, Results, qemu_command, tail

DISK_MIB = 64
FS_SECTORS = 65536  # a 32 MiB FAT16 at the start of the image, without a partition table
RAW_OFF = 48 << 20  # 1 MiB of known raw bytes after the filesystem
BENCH_MIB = int(os.environ.get("USBIPD_E2E_BENCH_MIB", "32"))  # per read; best of three
HEAD_MIB = 8
KEYS = ["a", "s", "d", "f"]  # QEMU sendkey names; their evdev codes below
KEYCODES = {"a": 30, "s": 31, "d": 32, "f": 33}
IDS = {"keyboard": "0627:0001", "storage": "46f4:0001"}  # QEMU's usb-kbd and usb-storage

LOCAL = ["local-devices", "local-file", "local-raw", "local-head"]
OURS = (["ours-server-start", "ours-list-host-devices", "ours-bind-storage", "ours-bind-keyboard",
         "ours-list-shared", "ours-kernel-client-list", "ours-attach-storage", "ours-claim-storage",
         "ours-list-attached", "ours-imported-disk", "ours-file", "ours-raw", "ours-head", "ours-write", "ours-after-reset", "ours-attach-keyboard",
         "ours-claim-keyboard", "ours-imported-keyboard", "ours-keys", "ours-unlink", "ours-after-unlink", "ours-detach",
         "ours-unbind-storage", "ours-unbind-keyboard", "ours-storage-returned", "back-file",
         "back-raw", "back-head", "back-written", "ours-keyboard-returned", "ours-unbind-unexported", "ours-server-log-clean"])
EXTENSION = (["ext-server-start", "ext-bind-storage", "ext-claimed-at-bind-storage", "ext-bind-keyboard",
              "ext-claimed-at-bind-keyboard", "ext-kernel-client-list", "ext-attach-storage",
              "ext-status-in-use", "ext-imported-disk", "ext-file", "ext-raw", "ext-head",
              "ext-second-attach-refused", "ext-attach-keyboard", "ext-imported-keyboard", "ext-keys",
              "ext-detach", "ext-claim-kept", "ext-restart-restores", "ext-reattach-storage",
              "ext-reattach-raw", "ext-server-detach", "ext-detach-again", "ext-unbind-storage", "ext-unbind-keyboard",
              "ext-storage-returned", "ext-keyboard-returned", "ext-unbind-unclaimed", "ext-server-stopped",
              "ext-server-log-clean"])
KERNEL = (["kernel-bind-storage", "kernel-bind-keyboard", "kernel-server-start", "kernel-attach-storage",
           "kernel-imported-disk", "kernel-file", "kernel-raw", "kernel-head", "kernel-attach-keyboard",
           "kernel-imported-keyboard", "kernel-keys", "kernel-unlink", "kernel-after-unlink", "kernel-detach", "kernel-storage-returned",
           "kernel-keyboard-returned"])
HOTPLUG = [f"hp-{mode}-{c}" for mode in ("noudev", "udev") for c in (
    "hotplug-source", "list-before", "bind", "list-bound", "attach", "list-attached", "session-ended",
    "claim-released", "list-unplugged", "reclaimed", "not-left-to-usb-storage", "list-reclaimed",
    "reattach", "reattach-raw", "detach", "unbind", "list-unbound", "storage-returned")] + ["hp-udevd-running"]
# our client with --auto in the guest keeps the bound disk attached across device_del/device_add
CLIENT_AUTO = [f"hp-auto-{c}" for c in ("bind", "attach", "port-freed", "reattach", "logged", "sigterm-detach",
                                         "unbind", "storage-returned")]
EXPECTED = LOCAL + OURS + EXTENSION + HOTPLUG + CLIENT_AUTO + KERNEL + ["list-compare", "bench"]
# QEMU monitor commands that pull the disk's cable and plug it back in (same port, same backend)
UNPLUG = "device_del stickdev"
REPLUG = "device_add usb-storage,bus=xhci.0,port=2,drive=stick,id=stickdev"

# record fields compared between the servers, and what a difference means
FIELDS = ["busid", "vid", "pid", "busnum", "devnum", "speed_code", "bcd_device", "class",
          "configuration_value", "num_configurations", "num_interfaces", "interfaces", "path"]
EXPLAIN = {
    "configuration_value": "usbip-host takes the whole device and unconfigures it (sysfs reads 0) until "
                           "a client sets a configuration; ours keeps it configured and claims its "
                           "interfaces, so it reports the active configuration",
    "num_interfaces": "an unconfigured device has no interfaces (kernel); ours lists the active "
                      "configuration's, as `usbip list -l` does for a device before binding",
    "interfaces": "same reason as num_interfaces",
}


def hardware(image, monitor):
    """QEMU arguments of the emulated USB hardware (the bench of bench_host.py boots the same):
    qemu-xhci, usb-kbd on port 1, usb-storage on `image` on port 2, the monitor on a unix socket."""
    return ["-monitor", f"unix:{monitor},server=on,wait=off",
            "-device", "qemu-xhci,id=xhci", "-device", "usb-kbd,bus=xhci.0,port=1",
            # a -blockdev (unlike a -drive) outlives device_del, so device_add can reuse it
            "-blockdev", f"driver=file,filename={image},node-name=stickfile",
            "-blockdev", "driver=raw,file=stickfile,node-name=stick",
            "-device", "usb-storage,bus=xhci.0,port=2,drive=stick,id=stickdev"]


class Suite:
    def __init__(self, args):
        self.args = args
        self.checks = Results(args.verbose)
        self.record = self.checks.record
        self.json = {}
        self.bench = {}

    def prepare(self):
        self.work = os.path.join(self.args.cache, "run-host")
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        self.image = os.path.join(self.work, "disk.img")
        self.monitor = os.path.join(self.work, "monitor.sock")
        self.console_path = os.path.join(self.work, "guest-console.log")
        text = "".join("usbipd host passthrough line %d\n" % i for i in range(1, 3001)).encode()
        raw = b"".join(hashlib.sha256(b"usbipd-host %d" % i).digest() for i in range(1 << 15))
        with open(self.image, "wb") as f:
            f.truncate(DISK_MIB << 20)
            f.seek(RAW_OFF)
            f.write(raw)
        src = os.path.join(self.work, "HELLO.TXT")
        with open(src, "wb") as f:
            f.write(text)
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        for cmd in (["mformat", "-i", self.image, "-T", str(FS_SECTORS), "-h", "64", "-s", "32",
                     "-v", "E2EHOST", "::"],
                    ["mcopy", "-i", self.image, src, "::HELLO.TXT"]):
            subprocess.run(cmd, check=True, env=env, timeout=30, capture_output=True)
        self.file_md5 = hashlib.md5(text).hexdigest()
        self.raw_md5 = hashlib.md5(raw).hexdigest()

    def boot(self):
        a = self.args
        keys = ",".join(str(KEYCODES[k]) for k in KEYS)
        append = (f"console=ttyS0 quiet loglevel=3 panic=-1 e2e_filemd5={self.file_md5} "
                  f"e2e_rawmd5={self.raw_md5} e2e_raw_blk={RAW_OFF >> 16} e2e_bench_mib={BENCH_MIB} "
                  f"e2e_head_mib={HEAD_MIB} e2e_keys={keys} "
                  # the kernel gives unknown name=value parameters to init as environment
                  f"RUST_LOG={os.environ.get('USBIPD_E2E_LOG', 'info')}")
        cmd = qemu_command(a.cache, "initramfs-host.cpio.gz", append, a.timeout, hardware(self.image, self.monitor))
        self.guest = Guest(cmd, self.console_path, self.args.verbose)

    def tell_guest(self, word):
        self.guest.tell(word)

    def press_keys(self):
        """Presses KEYS on the emulated usb-kbd through the QEMU human monitor."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(self.monitor)
                for k in KEYS:
                    s.sendall(f"sendkey {k}\n".encode())
                    time.sleep(0.3)
        except OSError as e:
            print(f"NOTE cannot press keys through the QEMU monitor: {e}", flush=True)

    def monitor_command(self, command):
        """Runs one QEMU human-monitor command; returns its output ('' when it printed nothing)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(self.monitor)
            out = b""
            while b"(qemu)" not in out:
                out += s.recv(4096) or b"(qemu)"
            s.sendall(command.encode() + b"\n")
            out = b""
            while out.count(b"(qemu)") < 1:
                chunk = s.recv(4096)
                if not chunk:
                    break
                out += chunk
        text = out.decode(errors="replace").replace("\r", "")
        # the echo of the command, then its output, then the next prompt
        return "\n".join(l for l in text.split("\n")[1:] if "(qemu)" not in l).strip()

    def hotplug(self, word):
        """The guest asks to pull (unplug-x) or plug back (replug-x) the disk."""
        command = UNPLUG if word.startswith("unplug-") else REPLUG
        try:
            out = self.monitor_command(command)
        except OSError as e:
            out = f"monitor unreachable: {e}"
        if out:
            self.record(f"{word}-monitor", False, f"{command}: {out}")

    def follow(self):
        self.guest.follow(self.args.timeout, self.t0, self.on_line, self.record)

    def on_line(self, line):
        """Handles one console line; False once the guest is done."""
        m = re.search(r"local-devices PASS keyboard (\S+) .* storage (\S+) ", line)
        if m:
            self.busids = {m.group(1): "keyboard", m.group(2): "storage"}
        m = re.search(r"E2E CHECK (\S+) (PASS|FAIL) ?(.*)", line)
        if m:
            name = m.group(1)
            # the busids are the guest's; name the checks by device
            name = re.sub(r"-(\d+-[\d.]+)$", lambda b: "-" + self.kind_of(b.group(1)), name)
            self.record(name, m.group(2) == "PASS", m.group(3))
            return True
        m = re.search(r"E2E JSON (\S+) (.*)", line)
        if m:
            try:
                self.json[m.group(1)] = json.loads(m.group(2))
            except ValueError:
                self.json[m.group(1)] = m.group(2)
            return True
        m = re.search(r"E2E MEASURE (\S+) (.*)", line)
        if m:
            print(f"MEASURE {m.group(1)}: {m.group(2)}", flush=True)
            return True
        m = re.search(r"E2E BENCH (\S+) (\d+) (\d+)", line)
        if m:
            self.bench[m.group(1)] = (int(m.group(2)), int(m.group(3)) / 100)
            return True
        m = re.search(r"E2E READY (\S+)", line)
        if m:
            if m.group(1).startswith("keys-"):
                time.sleep(0.3)
                self.press_keys()
            elif m.group(1).startswith(("unplug-", "replug-")):
                self.hotplug(m.group(1))
            self.tell_guest(m.group(1))
            return True
        return "E2E DONE" not in line

    def kind_of(self, busid):
        return getattr(self, "busids", {}).get(busid, busid)

    # ---------------------------------------------------------------- comparison and report
    def compare(self):
        ours, kernel = self.json.get("ours"), self.json.get("kernel")
        if not isinstance(ours, list) or not isinstance(kernel, list):
            return self.record("list-compare", False, f"device lists missing: ours={ours!r} kernel={kernel!r}")
        print("\ndevice list entries, our server vs the kernel's usbip-host + usbipd:")
        print(f"  {'device':<9} {'field':<20} {'ours':<28} {'kernel':<28} note")
        same_core = True
        for kind, vidpid in IDS.items():
            vid, pid = (int(x, 16) for x in vidpid.split(":"))
            o = next((d for d in ours if d.get("vid") == vid and d.get("pid") == pid), None)
            k = next((d for d in kernel if d.get("vid") == vid and d.get("pid") == pid), None)
            if o is None or k is None:
                same_core = False
                print(f"  {kind:<9} missing from {'ours' if o is None else 'kernel'}")
                continue
            for f in FIELDS:
                ov, kv = o.get(f), k.get(f)
                if ov == kv:
                    note = "same"
                elif f in EXPLAIN:
                    note = "DIFFERENT: " + EXPLAIN[f]
                else:
                    note = "DIFFERENT"
                    same_core = False
                print(f"  {kind:<9} {f:<20} {json.dumps(ov):<28} {json.dumps(kv):<28} {note}")
        self.record("list-compare", same_core,
                    "every field equal except the documented ones" if same_core
                    else "a field differs that has no explanation (see the table)")

    def report_bench(self):
        print("\nread throughput (O_DIRECT dd, best of three, same emulated disk):")
        for name in ("local", "ours", "kernel"):
            if name in self.bench:
                mib, secs = self.bench[name]
                print(f"  {name:<7} {mib} MiB in {secs:.2f} s = {mib / secs:.2f} MiB/s")
        if "ours" in self.bench and "kernel" in self.bench:
            ours = self.bench["ours"][0] / self.bench["ours"][1]
            kern = self.bench["kernel"][0] / self.bench["kernel"][1]
            print(f"ratio {ours / kern:.2f} (ours / kernel; goal >= 0.9)")
            self.record("bench", True, f"ratio {ours / kern:.2f}")
        else:
            self.record("bench", False, f"missing a measurement: {self.bench}")

    def stop(self):
        if getattr(self, "guest", None):
            self.guest.stop()

    def report(self):
        self.checks.missing(EXPECTED, "not reported by the guest")
        if self.checks.failed():
            print(f"\n--- guest console (last 60 lines of {self.console_path})")
            print(tail(self.console_path, 60), end="")
        print(f"time {time.time() - self.t0:.0f} s")
        return self.checks.summary()

    def main(self):
        self.t0 = time.time()
        self.prepare()
        try:
            self.boot()
            self.follow()
        finally:
            self.stop()
        self.compare()
        self.report_bench()
        return self.report()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True, help="directory prepared by setup.sh and run-host.sh")
    ap.add_argument("--timeout", type=float, default=420, help="seconds for the whole run")
    ap.add_argument("-v", "--verbose", action="store_true", help="echo the guest console")
    sys.exit(Suite(ap.parse_args()).main())


if __name__ == "__main__":
    main()
