#!/usr/bin/env python3
"""Host side of the host-passthrough bench (tests/e2e/bench-host.sh; Python 3 stdlib only).

Boots the host-passthrough guest (emulated qemu-xhci + usb-kbd + two identical usb-storage disks,
guest/host-init.sh in bench mode, which runs guest/host-bench.sh), all imported by the guest's
vhci-hcd over 127.0.0.1. In each window our usbipd serves one disk and the kernel's usbip-host the
other at the same time, and the guest reads and writes them in ABBA rounds (which disk each server
gets and which goes first alternate between windows); then each server in turn serves the
keyboard for timed key presses; then the devices are used locally as a reference. Writes the rows
(ours against usbip-host in the same windows) to a JSON file that `usbipd-bench --guest` merges
into docs/benchmarks.md. Not part of the CI suite (minutes of emulated guest time).

Keyboard latency: the host sends `sendkey` through the QEMU monitor and times until the guest's
e2e-evkeys (each) prints the key's evdev event on the serial console. The path is QEMU's usb-kbd -> the
guest's xhci -> the server (usbfs + our usbipd, or usbip-host) -> TCP over loopback -> vhci-hcd ->
usbhid -> evdev -> serial console -> this process. Everything but the server is the same code for
both servers, so the comparison is fair, but that shared part (monitor, serial console, QEMU's
TCG) dilutes the ratio towards 1: the local row (usbhid on the emulated keyboard directly, no
USB/IP) measures it in the same windows, and the "above local" row shows the servers' own share.
"""
import argparse
import json
import os
import random
import re
import shutil
import socket
import statistics
import sys
import time

from e2elib import Guest, print_summary, provenance, qemu_command, tail
from host_passthrough import KEYCODES, KEYS, hardware

OURS = "usbipd (usbfs)"
KERNEL = "kernel usbip-host + usbipd"
LOCAL = "local usb-storage / usbhid (no USB/IP)"
# seconds after a key's line before the next press: QEMU releases the key after 100 ms; random, so
# that the presses fall at every phase of the emulated xhci's interrupt polling alike
GAP = (0.2, 0.35)


class Monitor:
    """One connection to the QEMU human monitor, kept open so a press costs one write."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        deadline = time.time() + 30
        while True:
            try:
                self.sock.connect(path)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)

    def sendkey(self, key):
        """Presses `key`; returns the monotonic time just before the command left."""
        self.drain()
        t0 = time.monotonic()
        self.sock.sendall(f"sendkey {key}\n".encode())
        return t0

    def drain(self):
        """Reads (and drops) what the monitor echoed so far."""
        self.sock.setblocking(False)
        try:
            while self.sock.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        finally:
            self.sock.settimeout(10)

    def close(self):
        self.sock.close()


class Bench:
    def __init__(self, a):
        self.a = a
        self.samples = {}  # (window, server) -> {"read_mibs", "write_mibs", "key_ms": [...]}
        self.failures = []
        self.keys = None  # the press in progress: window, server, count wanted, key index, t0
        self.monitor = None

    def prepare(self):
        self.work = os.path.join(self.a.cache, "bench-host")
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        self.image = os.path.join(self.work, "disk.img")
        self.monitor_path = os.path.join(self.work, "monitor.sock")
        self.console = os.path.join(self.work, "guest-console.log")
        # reads from the first MIB MiB (written with bytes), writes to the next MIB MiB (scratch)
        with open(self.image, "wb") as f:
            f.write(os.urandom(self.a.mib << 20))
            f.truncate(2 * self.a.mib << 20)
        # a second disk like the first, so that both servers each serve one at the same time
        self.image2 = os.path.join(self.work, "disk2.img")
        shutil.copyfile(self.image, self.image2)

    def run(self):
        a = self.a
        append = (f"console=ttyS0 quiet loglevel=3 panic=-1 e2e_mode=bench e2e_windows={a.windows} "
                  f"e2e_bench_mib={a.mib} e2e_write_mib={a.mib} e2e_nkeys={a.keys}")
        cmd = qemu_command(a.cache, "initramfs-host.cpio.gz", append, a.timeout,
                           hardware(self.image, self.monitor_path) + [
                               "-blockdev", f"driver=file,filename={self.image2},node-name=stick2file",
                               "-blockdev", "driver=raw,file=stick2file,node-name=stick2",
                               "-device", "usb-storage,bus=xhci.0,port=3,drive=stick2,id=stick2dev"])
        self.t0 = time.time()
        guest = Guest(cmd, self.console, a.verbose)
        try:
            self.monitor = Monitor(self.monitor_path)
            guest.follow(a.timeout, self.t0, self.on_line,
                         lambda name, ok, why: self.failures.append(f"{name}: {why}"))
        finally:
            guest.stop()
            if self.monitor:
                self.monitor.close()

    def on_line(self, line):
        """Handles one console line; False once the guest is done."""
        now = time.monotonic()
        m = re.fullmatch(r"key (\d+)", line.strip())
        if m and self.keys:
            w, s, n, i, t0 = self.keys
            want = KEYCODES[KEYS[i % len(KEYS)]]
            if t0 is not None and int(m.group(1)) == want:
                self.samples.setdefault((w, s), {}).setdefault("key_ms", []).append((now - t0) * 1000)
            else:
                self.failures.append(f"window={w} server={s}: key {m.group(1)}, pressed {want}")
            if i + 1 < n:
                time.sleep(random.uniform(*GAP))
                self.press(w, s, n, i + 1)
            else:
                self.keys = None
            return True
        if line.strip() == "listening" and self.keys:
            self.press(*self.keys[:3], 0)
            return True
        m = re.search(r"E2E KEYS window=(\d+) server=(\S+) n=(\d+)", line)
        if m:
            self.keys = (int(m.group(1)), m.group(2), int(m.group(3)), 0, None)
            return True
        m = re.search(r"BENCH window=(\d+) server=(\S+) (.*)", line)
        if m:
            print(line[line.index("BENCH"):], flush=True)
            values = {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", m.group(3))}
            self.samples.setdefault((int(m.group(1)), m.group(2)), {}).update(values)
            return True
        if "BENCH-FAIL" in line:
            print(line, flush=True)
            self.failures.append(line[line.index("BENCH-FAIL"):])
        return "E2E DONE" not in line

    def press(self, w, s, n, i):
        try:
            t0 = self.monitor.sendkey(KEYS[i % len(KEYS)])
        except OSError as e:
            self.failures.append(f"window={w} server={s}: monitor: {e}")
            t0 = None
        self.keys = (w, s, n, i, t0)


def series(samples, server, key, base="kernel", minus=None):
    """Per-window values of `key` for `server` and `base`, only windows where both were measured;
    `minus`: subtract that server's value of the same window from both (e.g. the local one)."""
    def value(w, s):
        v = samples.get((w, s), {}).get(key)
        if isinstance(v, list):
            v = statistics.median(v) if v else None
        return v if v else None
    out, ref = [], []
    for w in sorted({w for w, _ in samples}):
        a, b = value(w, server), value(w, base)
        if a is None or b is None:
            continue
        if minus is not None:
            m = value(w, minus)
            if m is None:
                continue
            a, b = a - m, b - m
        out.append(round(a, 3))
        ref.append(round(b, 3))
    return out, ref


def rows(samples, mib):
    """The rows merged into docs/benchmarks.md: goal 5's three, and the local reference."""
    out = []
    def row(figure, case, unit, higher, samples_, baseline=None, base=None, goal=None, note=None):
        r = {"figure": figure, "case": case, "unit": unit, "samples": samples_, "baseline": baseline,
             "baseline_samples": base, "goal": goal, "higher_is_better": higher}
        if note:
            r["note"] = note
        out.append(r)
    read = f"host passthrough: guest O_DIRECT reads, 1 MiB requests, ABBA passes of {mib} MiB, emulated usb-storage"
    write = f"host passthrough: guest O_DIRECT writes, 1 MiB requests, ABBA passes of {mib} MiB, emulated usb-storage"
    keys = "host passthrough: usb-kbd interrupt latency p50, QEMU sendkey to guest evdev event"
    above = "host passthrough: usb-kbd latency p50 above local usbhid (the server's own share)"
    cpu = "host passthrough: guest CPU time per MiB of the reads and writes (both vCPUs, /proc/stat)"
    med = lambda v: f"{statistics.median(v):.3g}" if v else "-"
    local_of = lambda key: series(samples, "local", key, base="local")[0]
    cpu_s, cpu_b = series(samples, "ours", "cpu_ms_per_mib")
    alongside = (f"guest CPU per MiB moved (median): usbipd {med(cpu_s)} ms, usbip-host {med(cpu_b)} ms, "
                 f"local {med(local_of('cpu_ms_per_mib'))} ms")
    for figure, key, unit, higher, goal in ((read, "read_mibs", "MiB/s", True, ">= 0.9"),
                                            (write, "write_mibs", "MiB/s", True, ">= 0.9"),
                                            (keys, "key_ms", "ms", False, "<= 1.1")):
        s, b = series(samples, "ours", key)
        if s:
            note = f"local (no USB/IP) median {med(local_of(key))} {unit}; "
            if key == "key_ms":
                a, k = series(samples, "ours", key, minus="local")
                note += (f"above local: usbipd {med(a)} ms, usbip-host {med(k)} ms (medians): the local "
                         f"part (QEMU monitor, emulation, serial console) is the same for both")
            else:
                note += alongside
            row(figure, OURS, unit, higher, s, KERNEL, b, goal, note)
    s, b = series(samples, "ours", "key_ms", minus="local")
    if s:
        row(above, OURS, "ms", False, s, KERNEL, b,
            note="the local p50 of the same window subtracted from both servers' p50")
    if cpu_s:
        row(cpu, OURS, "ms/MiB", False, cpu_s, KERNEL, cpu_b)
    for figure, key, unit, higher in ((read, "read_mibs", "MiB/s", True), (write, "write_mibs", "MiB/s", True),
                                      (keys, "key_ms", "ms", False), (cpu, "cpu_ms_per_mib", "ms/MiB", False)):
        s, _ = series(samples, "local", key, base="local")
        if s:
            row(figure, LOCAL, unit, higher, s)
    return out


def measured(a, seconds, started):
    """When, on which commit and how: the results file says it itself (it is committed); `started`
    is the provenance taken before the run (before the results file is rewritten)."""
    return dict(started, settings={"accel": "tcg", "cpu": "max", "smp": 2, "windows": a.windows, "mib": a.mib,
                          "request_bytes": 1 << 20, "keys_per_window": a.keys, "seconds": round(seconds)})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True, help="directory prepared by setup.sh and bench-host.sh")
    ap.add_argument("--out", required=True, help="JSON file to write (rows for usbipd-bench --guest)")
    ap.add_argument("--windows", type=int, default=7)
    ap.add_argument("--mib", type=int, default=8, help="MiB read and written per pass (two passes per window and server)")
    ap.add_argument("--keys", type=int, default=21, help="key presses timed per window and server")
    ap.add_argument("--timeout", type=float, default=840)
    ap.add_argument("-v", "--verbose", action="store_true", help="echo the guest console")
    a = ap.parse_args()
    started = provenance(f"tests/e2e/bench-host.sh --windows {a.windows} --mib {a.mib} --keys {a.keys}")
    b = Bench(a)
    b.prepare()
    b.run()
    out = rows(b.samples, a.mib)
    if out:  # what was measured is kept, with what went wrong beside it
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump({"measured": dict(measured(a, time.time() - b.t0, started), failures=b.failures), "rows": out},
                      f, indent=1)
            f.write("\n")
        print_summary(out, "usbip-host")
        print(f"wrote {a.out} ({len(out)} rows) in {time.time() - b.t0:.0f} s")
    if b.failures or not out:
        print("\n".join(b.failures) or "no samples", file=sys.stderr)
        sys.stderr.write(tail(b.console, 30))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
