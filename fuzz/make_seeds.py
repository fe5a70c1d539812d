#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/seeds/<target>/), from the kernel's captured
handshake replies (crates/usbip-proto/tests/captures/) and URB traffic shaped like what vhci-hcd
sends: enumeration (GET_DESCRIPTOR device/config/string, SET_CONFIGURATION), class requests,
bulk IN/OUT, a parked interrupt IN and CMD_UNLINK. Re-run after changing it; the seeds are
committed so that `scripts/fuzz.sh` starts from them.
"""
import os
import struct

ROOT = os.path.dirname(os.path.abspath(__file__))
CAPTURES = os.path.join(ROOT, "..", "crates", "usbip-proto", "tests", "captures")
SEEDS = os.path.join(ROOT, "seeds")

VERSION = 0x0111
REQ_DEVLIST, REQ_IMPORT = 0x8005, 0x8003
CMD_SUBMIT, CMD_UNLINK, RET_SUBMIT, RET_UNLINK = 1, 2, 3, 4
DIR_OUT, DIR_IN = 0, 1
URB_DIR_IN = 0x200


def op_request(code, busid=None):
    b = struct.pack(">HHI", VERSION, code, 0)
    if busid is not None:
        b += busid.encode().ljust(32, b"\0")
    return b


def submit(seq, devid, direction, ep, length, setup=b"\0" * 8, data=b"", flags=None, iso=()):
    if flags is None:
        flags = URB_DIR_IN if direction == DIR_IN else 0
    h = struct.pack(">IIIII", CMD_SUBMIT, seq, devid, direction, ep)
    h += struct.pack(">IIIII", flags, length, 0, len(iso), 0) + setup
    assert len(h) == 48
    body = data if direction == DIR_OUT else b""
    return h + body + b"".join(struct.pack(">IIIi", *p) for p in iso)


def unlink(seq, devid, victim):
    h = struct.pack(">IIIII", CMD_UNLINK, seq, devid, DIR_OUT, 0)
    return h + struct.pack(">I", victim) + b"\0" * 24


def ret_submit(seq, status, data=b"", actual=None, iso=()):
    actual = len(data) if actual is None else actual
    h = struct.pack(">IIIIIiIIII", RET_SUBMIT, seq, 0, 0, 0, status, actual, 0, len(iso), 0)
    return h + b"\0" * 8 + data + b"".join(struct.pack(">IIIi", *p) for p in iso)


def ret_unlink(seq, status):
    return struct.pack(">IIIIIi", RET_UNLINK, seq, 0, 0, 0, status) + b"\0" * 24


def setup(request_type, request, value, index, length):
    return struct.pack("<BBHHH", request_type, request, value, index, length)


class Urbs:
    """Numbers URBs the way vhci-hcd does: one counter for submits and unlinks."""

    def __init__(self, devid):
        self.devid, self.seq, self.out = devid, 0, b""

    def next(self):
        self.seq += 1
        return self.seq

    def control(self, request_type, request, value, index, length, data=b""):
        direction = DIR_IN if request_type & 0x80 else DIR_OUT
        s = setup(request_type, request, value, index, length)
        n = length if direction == DIR_IN else len(data)
        self.out += submit(self.next(), self.devid, direction, 0, n, s, data)
        return self.seq

    def bulk_in(self, ep, length):
        self.out += submit(self.next(), self.devid, DIR_IN, ep, length)
        return self.seq

    def bulk_out(self, ep, data):
        self.out += submit(self.next(), self.devid, DIR_OUT, ep, len(data), data=data)
        return self.seq

    def unlink(self, victim):
        self.out += unlink(self.next(), self.devid, victim)

    def enumerate(self, config_len, strings, config):
        self.control(0x80, 6, 0x0100, 0, 64)
        self.control(0x80, 6, 0x0100, 0, 18)
        self.control(0x80, 6, 0x0200, 0, 9)
        self.control(0x80, 6, 0x0200, 0, config_len)
        self.control(0x80, 6, 0x0300, 0, 255)
        for i in range(1, strings + 1):
            self.control(0x80, 6, 0x0300 | i, 0x0409, 255)
        self.control(0x00, 9, config, 0, 0)


def cbw(tag, length, data_in, cdb):
    return struct.pack("<IIIBBB", 0x43425355, tag, length, 0x80 if data_in else 0, 0, len(cdb)) + cdb.ljust(16, b"\0")


def gadget_zero():
    u = Urbs(1)
    u.enumerate(32, 3, 3)
    u.bulk_in(1, 512)
    u.bulk_in(1, 4096)
    u.bulk_out(1, b"\0" * 512)
    u.control(0x40, 0x5B, 0, 0, 8, b"fuzzseed")
    u.control(0xC0, 0x5C, 0, 0, 8)
    u.control(0x02, 3, 0, 0x81, 0)  # SET_FEATURE(ENDPOINT_HALT) on bulk IN
    u.control(0x82, 0, 0, 0x81, 2)  # GET_STATUS
    u.control(0x02, 1, 0, 0x81, 0)  # CLEAR_FEATURE(ENDPOINT_HALT)
    u.control(0x00, 9, 2, 0, 0)  # loopback
    u.bulk_out(1, b"loopback data")
    u.bulk_in(1, 512)
    victim = u.bulk_in(1, 512)
    u.unlink(victim)
    u.unlink(999)
    return u.out


def keyboard():
    u = Urbs(2)
    u.enumerate(34, 3, 1)
    u.control(0x21, 0x0A, 0, 0, 0)  # SET_IDLE
    u.control(0x81, 6, 0x2200, 0, 63)  # HID report descriptor
    u.control(0x21, 0x09, 0x0200, 0, 1, b"\x01")  # SET_REPORT(output): LEDs
    u.control(0xA1, 0x01, 0x0100, 0, 8)  # GET_REPORT(input)
    victim = u.bulk_in(1, 8)  # interrupt IN parks until a key is typed
    u.unlink(victim)
    return u.out


def storage():
    u = Urbs(3)
    u.enumerate(32, 3, 1)
    u.control(0xA1, 0xFE, 0, 0, 1)  # GET_MAX_LUN
    tag = 0

    def command(cdb, data_in, length, out=b""):
        nonlocal tag
        tag += 1
        u.bulk_out(2, cbw(tag, length, data_in, cdb))
        if length and data_in:
            u.bulk_in(1, length)
        elif length:
            u.bulk_out(2, out)
        u.bulk_in(1, 13)

    command(bytes([0x12, 0, 0, 0, 36, 0]), True, 36)  # INQUIRY
    command(bytes(6), False, 0)  # TEST UNIT READY
    command(bytes([0x25]) + bytes(9), True, 8)  # READ CAPACITY(10)
    command(bytes([0x1A, 0, 0x3F, 0, 192, 0]), True, 192)  # MODE SENSE(6)
    command(bytes([0x28, 0, 0, 0, 0, 1, 0, 0, 1, 0]), True, 512)  # READ(10) LBA 1
    command(bytes([0x2A, 0, 0, 0, 0, 2, 0, 0, 1, 0]), False, 512, b"\xa5" * 512)  # WRITE(10)
    command(bytes([0x35]) + bytes(9), False, 0)  # SYNCHRONIZE CACHE(10)
    command(bytes([0x28, 0, 0, 0, 0x10, 0, 0, 0, 1, 0]), True, 512)  # READ past the end
    command(bytes([0x03, 0, 0, 0, 18, 0]), True, 18)  # REQUEST SENSE
    u.bulk_out(2, b"not a CBW")  # invalid CBW: both pipes stall
    u.control(0x21, 0xFF, 0, 0, 0)  # Bulk-Only Mass Storage Reset
    u.control(0x02, 1, 0, 0x81, 0)
    u.control(0x02, 1, 0, 0x02, 0)
    victim = u.bulk_in(1, 13)
    u.unlink(victim)
    return u.out


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    captures = {}
    for name in os.listdir(CAPTURES):
        with open(os.path.join(CAPTURES, name), "rb") as f:
            captures[name] = f.read()

    # codec_handshake: two control bytes (split seed; bit 0: the reply answers an import).
    write("codec_handshake", "req-devlist", b"\0\0" + op_request(REQ_DEVLIST))
    write("codec_handshake", "req-import", b"\0\0" + op_request(REQ_IMPORT, "1-1.4"))
    write("codec_handshake", "req-both", b"\x07\0" + op_request(REQ_DEVLIST) + op_request(REQ_IMPORT, "0-3"))
    write("codec_handshake", "rep-devlist-kernel", b"\x10\0" + captures["kernel-usbipd-devlist-reply.bin"])
    write("codec_handshake", "rep-import-kernel", b"\x11\0" + captures["kernel-usbipd-import-reply.bin"])
    write("codec_handshake", "rep-import-nodev-kernel", b"\x01\0" + captures["kernel-usbipd-import-unknown-reply.bin"])

    # codec_urb: two control bytes (split seed; bit 0: small limits; high byte: directions).
    write("codec_urb", "cmd-gadget-zero", b"\0\0" + gadget_zero())
    write("codec_urb", "cmd-keyboard", b"\x03\0" + keyboard())
    write("codec_urb", "cmd-storage", b"\x20\0" + storage())
    write("codec_urb", "cmd-iso", b"\0\0" + submit(1, 1, DIR_OUT, 3, 8, data=b"12345678", iso=[(0, 4, 0, 0), (4, 4, 0, 0)])
          + submit(2, 1, DIR_IN, 3, 8, iso=[(0, 4, 0, 0), (4, 4, 0, 0)]))
    # With high byte 0, seqnum 3 is IN and 4 is OUT (see direction_of in codec_urb.rs).
    write("codec_urb", "ret-mixed", b"\0\0" + ret_submit(3, 0, bytes(range(18))) + ret_submit(4, 0, actual=512)
          + ret_unlink(5, -104) + ret_submit(6, -32) + ret_submit(3, 0, b"ab" * 4, iso=[(0, 4, 4, 0), (4, 4, 4, 0)]))

    # session: a mode byte (bits 0-1: 0, handshake only; 1..3, import 0-1..0-3 first; bit 2:
    # the server with tight limits).
    write("session", "devlist", b"\0" + op_request(REQ_DEVLIST))
    write("session", "import-then-close", b"\0" + op_request(REQ_IMPORT, "0-1"))
    write("session", "import-unknown", b"\0" + op_request(REQ_IMPORT, "9-9"))
    write("session", "gadget-zero", b"\x01" + gadget_zero())
    write("session", "keyboard", b"\x02" + keyboard())
    write("session", "storage", b"\x03" + storage())
    # The same against the server with tight limits (mode bit 2).
    write("session", "tight-gadget-zero", b"\x05" + gadget_zero())
    write("session", "tight-storage", b"\x07" + storage())


if __name__ == "__main__":
    main()
