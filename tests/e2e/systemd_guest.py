#!/usr/bin/env python3
"""Host side of the systemd e2e guest (Python 3 stdlib only).

Writes a small disk image with known raw bytes, boots one QEMU guest whose root is the cached Debian
12 image (guest/systemd-init.sh switch_roots into it, systemd becomes PID 1 and runs
guest/systemd-test.sh) with emulated USB hardware (qemu-xhci + usb-storage on that image), and prints
one PASS/FAIL line per check, the measured times, and the final "N passed, M failed" line.
"""
import argparse
import hashlib
import os
import re
import shutil
import sys
import time

from e2elib import Guest, Results, qemu_command, tail

DISK_MIB = 16
RAW_OFF = 4 << 20  # 1 MiB of known raw bytes
EXPECTED = ["sd-pid1", "local-disk", "server-installs-unit", "unit-enabled-active", "status-is-the-unit",
            "unit-started-once", "runtime-directory", "bind", "bind-claimed-by-unit", "import-attach",
            "import-read", "import-in-use", "detach", "restart-under-1s", "restart-restores-claim",
            "reimport-attach", "reimport-read", "detach-again", "unbind", "uninstall-leaves-no-unit"]


class Suite:
    def __init__(self, args):
        self.args = args
        self.checks = Results(args.verbose)
        self.times = {}

    def prepare(self):
        self.work = os.path.join(self.args.cache, "run-systemd")
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        self.disk = os.path.join(self.work, "stick.img")
        self.console_path = os.path.join(self.work, "guest-console.log")
        raw = b"".join(hashlib.sha256(b"usbipd-systemd %d" % i).digest() for i in range(1 << 15))
        with open(self.disk, "wb") as f:
            f.truncate(DISK_MIB << 20)
            f.seek(RAW_OFF)
            f.write(raw)
        self.raw_md5 = hashlib.md5(raw).hexdigest()

    def boot(self):
        a = self.args
        append = (f"console=ttyS0 quiet loglevel=3 panic=-1 systemd.show_status=false "
                  f"e2e_rawmd5={self.raw_md5} e2e_raw_blk={RAW_OFF >> 16}")
        cmd = qemu_command(a.cache, "initramfs-systemd.cpio.gz", append, a.timeout, [
               # the cached root image stays as it is: the guest writes to a temporary snapshot
               "-drive", f"if=none,id=root,format=raw,snapshot=on,file={a.root}",
               "-device", "virtio-blk-pci,drive=root",
               "-device", "qemu-xhci,id=xhci",
               "-drive", f"if=none,id=stick,format=raw,file={self.disk}",
               "-device", "usb-storage,bus=xhci.0,drive=stick"])
        self.guest = Guest(cmd, self.console_path, self.args.verbose)

    def on_line(self, line):
        now = time.time() - self.t0
        if "E2E BOOT" in line:
            self.times["qemu-to-switch-root"] = now * 1000
        m = re.search(r"E2E CHECK (\S+) (PASS|FAIL) ?(.*)", line)
        if m:
            self.times.setdefault("qemu-to-first-check", now * 1000)
            self.checks.record(m.group(1), m.group(2) == "PASS", m.group(3))
            return True
        m = re.search(r"E2E TIME (\S+) (-?\d+)", line)
        if m:
            self.times[m.group(1)] = int(m.group(2))
            return True
        return "E2E DONE" not in line

    def report(self):
        self.checks.missing(EXPECTED, "not reported by the guest")
        print("\nmeasured (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in self.times.items()))
        if self.checks.failed():
            print(f"\n--- guest console (last 80 lines of {self.console_path})")
            print(tail(self.console_path, 80), end="")
        print(f"time {time.time() - self.t0:.0f} s")
        return self.checks.summary()

    def main(self):
        self.t0 = time.time()
        self.prepare()
        try:
            self.boot()
            self.guest.follow(self.args.timeout, self.t0, self.on_line, self.checks.record)
            # a clean power-off, so the test's last lines are all in
            self.guest.proc.wait(20)
        except Exception as e:  # a timeout of the wait above, or QEMU failing to start
            self.checks.record("guest-finished", False, f"{type(e).__name__}: {e}")
        finally:
            self.guest.stop() if getattr(self, "guest", None) else None
        return self.report()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True, help="directory prepared by setup.sh and run-systemd.sh")
    ap.add_argument("--root", required=True, help="the Debian root image (build-systemd-image.sh)")
    ap.add_argument("--timeout", type=float, default=270, help="seconds for the whole run")
    ap.add_argument("-v", "--verbose", action="store_true", help="echo the guest console")
    sys.exit(Suite(ap.parse_args()).main())


if __name__ == "__main__":
    main()
