#!/usr/bin/env python3
"""Host side of the guest benchmark (tests/e2e/bench-guest.sh; Python 3 stdlib only).

Starts our server with the demo disk on a plain and a TLS listener, makes a pairing code, boots
the QEMU guest running guest/bench-init.sh, collects its "BENCH" lines (one per window and
transport) and writes them as rows of docs/bench/guest-tls.json (committed, with when and on
which commit it was measured): per transport the 64 KiB read
throughput against plain TCP's in the same windows (goal >= 0.8 for kernel TLS), and the
512-byte read latency against plain's. Prints a summary: medians and spreads of the per-window
ratios. Not part of the CI suite (minutes of emulated guest time).
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

from e2elib import Guest, kill_group, print_summary, provenance, qemu_command, tail

DISK_MIB = 64
STORAGE_BUSID = "0-3"
# what each transport is called in the report
CASES = {
    "ktls-aesni": "kernel TLS (AES-NI gcm(aes))",
    "ktls-generic": "kernel TLS (generic C gcm(aes))",
    "relay": "TLS relay (usbipd client)",
    "plain": "plain TCP",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(a, work):
    state = os.path.join(work, "state")
    os.makedirs(state, mode=0o700)
    image = os.path.join(work, "disk.img")
    with open(image, "wb") as f:  # known, incompressible-looking bytes (not that USB/IP compresses)
        f.write(os.urandom(DISK_MIB << 20))
    config = os.path.join(work, "usbipd.toml")
    with open(config, "w") as f:
        f.write(f'[[device]]\nkind = "storage"\nbusid = "{STORAGE_BUSID}"\nimage = "{image}"\n'
                f'read_only = true\n')
    port, tls_port = free_port(), free_port()
    log = open(os.path.join(work, "server.log"), "w")
    env = dict(os.environ, RUST_LOG=os.environ.get("USBIPD_E2E_LOG", "info"), NO_COLOR="1")
    server = subprocess.Popen([a.usbipd, "server", "--extension", "off", "--listen", f"127.0.0.1:{port}",
                               "--config", config, "--control", os.path.join(work, "control.sock"),
                               "--listen-tls", f"127.0.0.1:{tls_port}", "--state-dir", state],
                              stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", tls_port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit(f"the server did not start: {tail(log.name, 20)}")
            time.sleep(0.1)
    out = subprocess.run([a.usbipd, "pair", "--state-dir", state], capture_output=True, text=True,
                         timeout=20).stdout
    code = re.search(r"pairing code: (\S+)", out)
    fp = re.search(r"(SHA256:\S+)", out)
    if not (code and fp):
        raise SystemExit(f"usbipd pair printed no code/fingerprint: {out}")
    return server, port, tls_port, code.group(1), fp.group(1)


def rows(samples, bs):
    """guest.json rows: each TLS path's throughput and latency against plain's in the same windows."""
    size = f"{bs >> 10} KiB" if bs % 1024 == 0 else f"{bs}-byte"
    windows = sorted(set(w for w, _ in samples))
    def series(path, key):
        return [samples[(w, path)][key] for w in windows if (w, path) in samples and (w, "plain") in samples]
    def base(path, key):
        return [samples[(w, "plain")][key] for w in windows if (w, path) in samples and (w, "plain") in samples]
    out = []
    for path in ("ktls-aesni", "ktls-generic", "relay"):
        if not series(path, "read_mibs"):
            continue
        out.append({"figure": f"guest {size} O_DIRECT reads of the demo disk through vhci-hcd",
                    "case": CASES[path], "unit": "MiB/s", "samples": series(path, "read_mibs"),
                    "baseline": CASES["plain"], "baseline_samples": base(path, "read_mibs"),
                    "goal": ">= 0.8" if path == "ktls-aesni" else None, "higher_is_better": True})
        out.append({"figure": "guest 512-byte O_DIRECT read latency (one small URB each way)",
                    "case": CASES[path], "unit": "ms", "samples": series(path, "small_read_ms"),
                    "baseline": CASES["plain"], "baseline_samples": base(path, "small_read_ms"),
                    "goal": None, "higher_is_better": False})
        out.append({"figure": f"guest CPU time per MiB of {size} reads (both vCPUs, /proc/stat)",
                    "case": CASES[path], "unit": "ms/MiB", "samples": series(path, "cpu_ms_per_mib"),
                    "baseline": CASES["plain"], "baseline_samples": base(path, "cpu_ms_per_mib"),
                    "goal": None, "higher_is_better": False})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--usbipd", required=True)
    ap.add_argument("--cache", required=True, help="directory prepared by setup.sh")
    ap.add_argument("--out", required=True, help="guest.json to write")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--mib", type=int, default=8, help="MiB read per window and transport")
    ap.add_argument("--paths", default="plain,ktls-aesni,ktls-generic,relay")
    ap.add_argument("--bs", type=int, default=65536, help="bytes per O_DIRECT read (one URB)")
    ap.add_argument("--timeout", type=float, default=1500)
    ap.add_argument("--console", help="no guest: report from this guest-console.log of an earlier run")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    work = os.path.join(a.cache, "bench")
    if a.console:  # only the report, from the console log of an earlier run
        return report(a, [l.rstrip("\n") for l in open(a.console, errors="replace")], None, time.time())
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    server, port, tls_port, code, fp = start_server(a, work)
    append = (f"console=ttyS0 quiet loglevel=3 panic=-1 e2e_port={port} e2e_tls_port={tls_port} "
              f"e2e_tls_code={code} e2e_tls_fp={fp} e2e_windows={a.windows} e2e_mib={a.mib} "
              f"e2e_paths={a.paths} e2e_bs={a.bs}")
    cmd = qemu_command(a.cache, "initramfs-bench.cpio.gz", append, a.timeout,
                       ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,romfile="])
    console = os.path.join(work, "guest-console.log")
    t0 = time.time()
    guest = Guest(cmd, console, a.verbose)
    lines = []

    def on_line(line):
        lines.append(line)
        if "BENCH" in line:
            print(line[line.index("BENCH"):], flush=True)
        return "E2E DONE" not in line
    try:
        guest.follow(a.timeout, t0, on_line, lambda name, ok, why: lines.append(f"BENCH-FAIL {name}: {why}"))
    finally:
        guest.stop()
        kill_group(server)
    return report(a, lines, console, t0)


def report(a, lines, console, t0):
    """Rows from the guest's console lines into guest.json, and the summary."""
    samples, failures, crypto = {}, [], {}
    for line in lines:
        m = re.search(r"BENCH window=(\d+) path=(\S+) (.*)", line)
        t = re.search(r"BENCH-INFO tcrypt gcm\(aes\) (.+?): .*; ([\d.]+) ms per MiB", line)
        if m:
            samples[(int(m.group(1)), m.group(2))] = {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", m.group(3))}
        elif t:
            crypto[t.group(1)] = float(t.group(2))
        elif "BENCH-FAIL" in line:
            failures.append(line)
    out = rows(samples, a.bs)
    for driver, ms in crypto.items():  # the cipher alone, beside what TLS costs per MiB above
        out.append({"figure": "guest gcm(aes) decryption alone (tcrypt, AES-128, 8 KiB requests)",
                    "case": driver, "unit": "ms/MiB", "samples": [ms], "baseline": None,
                    "baseline_samples": None, "goal": None, "higher_is_better": False})
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    # (taken before the results file, which is tracked, is rewritten)
    measured = provenance(f"tests/e2e/bench-guest.sh --windows {a.windows} --mib {a.mib} --paths {a.paths} --bs {a.bs}")
    with open(a.out, "w") as f:
        json.dump({"measured": measured, "rows": out, "settings": {"accel": "tcg", "cpu": "max", "smp": 2, "windows": a.windows,
                                             "mib_per_window": a.mib, "read_bytes": a.bs,
                                             "seconds": round(time.time() - t0)}},
                  f, indent=1)
    print_summary(out, "plain")
    print(f"wrote {a.out} ({len(out)} rows) in {time.time() - t0:.0f} s")
    if failures or not out:
        print("\n".join(failures) or "no samples", file=sys.stderr)
        if console:
            sys.stderr.write(tail(console, 30))
        return 1
    return 0

if __name__ == "__main__":
    sys.exit(main())
