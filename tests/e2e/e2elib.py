"""What both end-to-end suites share: the QEMU command line, a guest whose serial console is
followed line by line (and answered with `GO <word>`), PASS/FAIL bookkeeping, and log tails.
Python stdlib only; it runs nothing by itself."""

import datetime
import os
import queue
import signal
import statistics
import subprocess
import threading
import time


def qemu_command(cache, initrd, append, timeout, extra=()):
    """The TCG guest every suite boots: 2 vCPUs, 512 MiB, serial console on stdio."""
    return (["timeout", str(int(timeout) + 5), "qemu-system-x86_64", "-accel", "tcg", "-machine", "q35",
             "-cpu", "max", "-smp", "2", "-m", "512",
             "-kernel", os.path.join(cache, "vmlinuz"),
             "-initrd", os.path.join(cache, initrd), "-append", append,
             "-display", "none", "-vga", "none", "-nodefaults", "-no-reboot",
             "-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con"] + list(extra))


class Guest:
    """A booted guest: its console goes to `console_path` (timestamped) and to `lines()`."""

    def __init__(self, cmd, console_path, verbose=False):
        self.console_path = console_path
        self.verbose = verbose
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._lines = queue.Queue()
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        t0 = time.time()
        with open(self.console_path, "w") as log:
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip("\r\n")
                log.write(f"[{time.time() - t0:6.2f}] {line}\n")
                log.flush()
                if self.verbose:
                    print(f"  | {line}", flush=True)
                self._lines.put(line)
        self._lines.put(None)

    def lines(self, deadline):
        """Console lines until the guest ends; raises TimeoutError at `deadline`."""
        while True:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                raise TimeoutError
            if line is None:
                return
            yield line

    def follow(self, timeout, started, on_line, record):
        """Feeds console lines to `on_line` until it returns False or the guest ends; a guest
        still running `timeout` seconds after `started` is recorded as a failure."""
        try:
            for line in self.lines(started + timeout):
                if not on_line(line):
                    return
        except TimeoutError:
            record("guest-finished", False, f"guest still running after {timeout} s")

    def tell(self, word):
        """Answers an `E2E READY <word>` marker."""
        try:
            self.proc.stdin.write(f"GO {word}\n".encode())
            self.proc.stdin.flush()
        except OSError:
            pass

    def stop(self):
        kill_group(self.proc)


def kill_group(proc):
    """SIGTERM to a process group started with start_new_session, SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(5)
            return
        except (OSError, subprocess.TimeoutExpired):
            continue


class Results:
    """PASS/FAIL lines as checks report; the first report of a name wins."""

    def __init__(self, verbose=False):
        self.verbose = verbose
        self.results = {}
        self.order = []

    def record(self, name, ok, reason=""):
        if name in self.results:
            return
        reason = " | ".join(l.strip() for l in reason.splitlines() if l.strip())
        reason = reason if len(reason) < 400 else reason[:400] + "..."
        self.results[name] = (ok, reason)
        self.order.append(name)
        if ok:
            print(f"PASS {name}" + (f" ({reason})" if reason and self.verbose else ""), flush=True)
        else:
            print(f"FAIL {name}: {reason}", flush=True)

    def missing(self, expected, reason):
        for name in expected:
            if name not in self.results:
                self.record(name, False, reason)

    def failed(self):
        return [n for n in self.order if not self.results[n][0]]

    def summary(self):
        """The closing line CI reads; returns the exit code."""
        failed = self.failed()
        print(f"{len(self.order) - len(failed)} passed, {len(failed)} failed")
        return 1 if failed else 0


def tail(path, n=60):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError as e:
        return f"({e})\n"


def provenance(by):
    """When, on which commit and by which command a bench's results were measured: the results
    files under docs/bench/ are committed, so each says it itself."""
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

    def git(*args):
        try:
            return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                                  timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": git("rev-parse", "HEAD") or "unknown",
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "by": by}


def print_summary(rows, baseline):
    """One line per bench row: the median of its samples against `baseline`'s, and the median
    and spread of the per-window ratios."""
    for r in rows:
        if not r["baseline_samples"]:
            print(f"{r['figure']}: {r['case']}: {r['samples']} {r['unit']}", flush=True)
            continue
        ratios = [s / b for s, b in zip(r["samples"], r["baseline_samples"]) if b > 0]
        if not ratios:
            continue
        print(f"{r['figure']}: {r['case']}: median {statistics.median(r['samples']):.3f} {r['unit']} "
              f"({baseline} {statistics.median(r['baseline_samples']):.3f}); ratio median "
              f"{statistics.median(ratios):.2f}, spread {min(ratios):.2f}-{max(ratios):.2f} over "
              f"{len(ratios)} windows{'; goal ' + r['goal'] if r.get('goal') else ''}", flush=True)
