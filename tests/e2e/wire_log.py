#!/usr/bin/env python3
"""A logging TCP proxy for USB/IP (Python 3 stdlib only), for debugging the e2e suite.

Forwards every byte unchanged between a client (vhci-hcd in the guest) and our server, decodes
the USB/IP headers in both directions and logs one line per command/reply with a timestamp:
seqnum, command, unlink victim, status, lengths. It also checks the order rules vhci-hcd depends
on and logs a VIOLATION line when a RET_UNLINK saying "too late" (status 0) precedes the victim's
RET_SUBMIT, or a RET_SUBMIT follows a RET_UNLINK for it. It never changes or delays the traffic
beyond decoding a chunk before forwarding it.

usage: wire_log.py LISTEN_PORT SERVER_PORT LOGFILE   (or import it: start(...))
"""
import socket
import struct
import sys
import threading
import time

OP_HEADER = 8
URB_HEADER = 48
DEVICE_RECORD = 312
OP_REQ_IMPORT, OP_REP_IMPORT = 0x8003, 0x0003
CMD_SUBMIT, CMD_UNLINK, RET_SUBMIT, RET_UNLINK = 1, 2, 3, 4
ISO_DESCRIPTOR = 16
NO_PACKETS = (0, 0xFFFFFFFF)


class Log:
    """Timestamped lines to one file, shared by every connection."""

    def __init__(self, path):
        self.f = open(path, "w", buffering=1)
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.violations = 0

    def line(self, conn, text, t=None):
        t = time.monotonic() if t is None else t
        with self.lock:
            self.f.write(f"{t - self.t0:11.6f} #{conn} {text}\n")


class Conn:
    """Decoder state of one proxied connection (both directions)."""

    def __init__(self, log, n):
        self.log, self.n = log, n
        self.lock = threading.Lock()
        self.direction = {}  # seqnum -> 0 out / 1 in, from CMD_SUBMIT
        self.submitted = set()  # seqnums with a CMD_SUBMIT seen and no RET_SUBMIT yet
        self.unlinks = {}  # unlink seqnum -> victim
        self.cancelled = {}  # victim -> status of its RET_UNLINK

    def violation(self, text, t):
        self.log.violations += 1
        self.log.line(self.n, "VIOLATION " + text, t)


class Decoder:
    """Splits one direction's byte stream into USB/IP messages and logs them."""

    def __init__(self, conn, to_server):
        self.conn, self.to_server = conn, to_server
        self.buf = bytearray()
        self.state = "op"
        self.chunk = 0

    def feed(self, data, t):
        self.chunk += 1
        self.buf += data
        while self.state != "raw":
            n = self.step(t)
            if n == 0:
                return
            del self.buf[:n]

    def step(self, t):
        b, c, arrow = self.buf, self.conn, "c>s" if self.to_server else "s>c"
        if self.state == "op":
            if len(b) < OP_HEADER:
                return 0
            _, code, status = struct.unpack_from(">HHI", b)
            if self.to_server and code == OP_REQ_IMPORT:
                if len(b) < OP_HEADER + 32:
                    return 0
                busid = bytes(b[8:40]).split(b"\0")[0].decode(errors="replace")
                c.log.line(c.n, f"{arrow} OP_REQ_IMPORT busid={busid}", t)
                self.state = "urb"
                return OP_HEADER + 32
            if not self.to_server and code == OP_REP_IMPORT:
                if status != 0:
                    c.log.line(c.n, f"{arrow} OP_REP_IMPORT status={status}", t)
                    self.state = "raw"
                    return OP_HEADER
                if len(b) < OP_HEADER + DEVICE_RECORD:
                    return 0
                c.log.line(c.n, f"{arrow} OP_REP_IMPORT ok", t)
                self.state = "urb"
                return OP_HEADER + DEVICE_RECORD
            c.log.line(c.n, f"{arrow} op code {code:#06x} (not decoded further)", t)
            self.state = "raw"
            return 0
        if len(b) < URB_HEADER:
            return 0
        cmd, seq, devid, direction, ep = struct.unpack_from(">5I", b)
        tag = f"{arrow} [{self.chunk}]"
        if cmd == CMD_SUBMIT:
            flags, length, frame, npk, interval = struct.unpack_from(">5I", b, 20)
            need = URB_HEADER + (length if direction == 0 else 0)
            need += 0 if npk in NO_PACKETS else npk * ISO_DESCRIPTOR
            if len(b) < need:
                return 0
            with c.lock:
                c.direction[seq] = direction
                c.submitted.add(seq)
            iso = "" if npk in NO_PACKETS else (
                f" iso flags={flags:#x} start_frame={frame} interval={interval} "
                + iso_packets(b, need - npk * ISO_DESCRIPTOR, npk))
            c.log.line(c.n, f"{tag} CMD_SUBMIT seq={seq} dir={'in' if direction else 'out'} ep={ep} "
                            f"len={length}{iso}", t)
            return need
        if cmd == CMD_UNLINK:
            (victim,) = struct.unpack_from(">I", b, 20)
            with c.lock:
                c.unlinks[seq] = victim
                before = "" if victim in c.submitted or victim in c.direction else " (victim not submitted yet)"
            c.log.line(c.n, f"{tag} CMD_UNLINK seq={seq} victim={victim}{before}", t)
            return URB_HEADER
        if cmd == RET_SUBMIT:
            status, actual, frame, npk, errors = struct.unpack_from(">iIIII", b, 20)
            with c.lock:
                d = c.direction.get(seq)
            need = URB_HEADER + (actual if d == 1 else 0)
            need += 0 if npk in NO_PACKETS else npk * ISO_DESCRIPTOR
            if len(b) < need:
                return 0
            iso = "" if npk in NO_PACKETS else (
                f" iso start_frame={frame} error_count={errors} "
                + iso_packets(b, need - npk * ISO_DESCRIPTOR, npk))
            c.log.line(c.n, f"{tag} RET_SUBMIT seq={seq} status={status} len={actual}{iso}", t)
            with c.lock:
                if d is None:
                    c.violation(f"RET_SUBMIT seq={seq} for no CMD_SUBMIT seen", t)
                elif seq in c.cancelled:
                    c.violation(f"RET_SUBMIT seq={seq} after RET_UNLINK status={c.cancelled[seq]}", t)
                c.submitted.discard(seq)
            return need
        if cmd == RET_UNLINK:
            (status,) = struct.unpack_from(">i", b, 20)
            with c.lock:
                victim = c.unlinks.pop(seq, None)
                pending = victim in c.submitted
                seen = victim in c.direction
                if victim is not None:
                    c.cancelled[victim] = status
            c.log.line(c.n, f"{tag} RET_UNLINK seq={seq} victim={victim} status={status}", t)
            if status == 0 and (pending or not seen):
                with c.lock:
                    c.violation(f"RET_UNLINK seq={seq} status=0 before RET_SUBMIT of victim {victim}"
                                + ("" if seen else " (its CMD_SUBMIT not seen yet)"), t)
            return URB_HEADER
        c.log.line(c.n, f"{arrow} unknown command {cmd:#x} seq={seq}: stop decoding", t)
        self.state = "raw"
        return 0


def iso_packets(b, at, n):
    """The iso descriptors at b[at:], as offset+length/actual_length(status) for each packet."""
    out = []
    for i in range(n):
        off, length, actual, status = struct.unpack_from(">IIIi", b, at + i * ISO_DESCRIPTOR)
        out.append(f"{off}+{length}/{actual}" + (f"({status})" if status else ""))
    return f"packets=[{' '.join(out)}]"


def pump(src, dst, decoder):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            t = time.monotonic()
            try:
                decoder.feed(data, t)
            except Exception as e:  # a decoding bug must never break the traffic
                decoder.conn.log.line(decoder.conn.n, f"decoder error {e!r}; forwarding raw")
                decoder.state = "raw"
            dst.sendall(data)
    except OSError:
        pass
    for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
        try:
            s.shutdown(how)
        except OSError:
            pass


def serve(listener, server_port, log):
    n = 0
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        n += 1
        try:
            server = socket.create_connection(("127.0.0.1", server_port))
        except OSError as e:
            log.line(n, f"connect to server failed: {e}")
            client.close()
            continue
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(log, n)
        log.line(n, "connected")
        threading.Thread(target=pump, args=(client, server, Decoder(conn, True)), daemon=True).start()
        threading.Thread(target=pump, args=(server, client, Decoder(conn, False)), daemon=True).start()


def start(listen_port, server_port, path):
    """Starts the proxy in background threads; returns its Log (for .violations)."""
    log = Log(path)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", listen_port))
    listener.listen(16)
    threading.Thread(target=serve, args=(listener, server_port, log), daemon=True).start()
    return log


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[-1])
    start(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
    threading.Event().wait()
