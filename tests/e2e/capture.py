"""The capture check of the kernel-client suite: tshark decodes the pcapng file our first server
wrote with --capture while the guest used its devices, and the records must show what the kernel
did with the disk: GET_DESCRIPTOR requests on endpoint 0, 31-byte CBWs on bulk OUT, 13-byte CSWs
on bulk IN, and data IN of the lengths the CBWs asked for, cut to the snap length.
"""
import subprocess

FIELDS = ["usb.urb_id", "usb.urb_type", "usb.transfer_type", "usb.endpoint_address",
          "usb.device_address", "usb.bus_id", "usb.setup.bRequest", "usb.bDescriptorType",
          "usb.urb_len", "usb.data_len", "usb.urb_status", "usbms.dCBWDataTransferLength",
          "usbms.dCBWFlags", "usbms.dCSWSignature", "_ws.malformed"]
STORAGE_OUT, STORAGE_IN = "0x02", "0x81"  # the virtual disk's bulk endpoints
CONTROL, BULK = "0x02", "0x03"  # usb.transfer_type
CSW_SIGNATURE = "0x53425355"


def decode(path):
    """(rc, rows as dicts of FIELDS, tshark's message)."""
    cmd = ["tshark", "-r", path, "-T", "fields", "-E", "separator=/t"]
    for f in FIELDS:
        cmd += ["-e", f]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 1, [], str(e)
    rows = [dict(zip(FIELDS, line.split("\t"))) for line in p.stdout.splitlines()]
    return p.returncode, rows, p.stderr.strip()[-500:]


def check(path, storage_busid, snaplen, record):
    bus, dev = storage_busid.split("-")
    rc, rows, err = decode(path)
    submitted = set()
    unmatched = 0
    for r in rows:
        if r.get("usb.urb_type") == "'S'":
            submitted.add(r["usb.urb_id"])
        elif r.get("usb.urb_type") == "'C'" and r.get("usb.urb_id") not in submitted:
            unmatched += 1
    types = {r.get("usb.urb_type") for r in rows}
    # isochronous records carry 16-byte packet descriptors besides the data
    too_long = [r for r in rows if r.get("usb.transfer_type") != "0x00" and int(r.get("usb.data_len") or 0) > snaplen]
    malformed = [r for r in rows if r.get("_ws.malformed")]
    record("capture-tshark", rc == 0 and len(rows) > 1000 and types <= {"'S'", "'C'", "'E'"}
           and unmatched == 0 and not too_long and not malformed,
           f"tshark rc={rc} {len(rows)} records ({len(malformed)} malformed), types {sorted(types)}, {unmatched} completions "
           f"without a submission, {len(too_long)} longer than the snap length {snaplen} (isochronous excepted); {err}")

    disk = [r for r in rows if r.get("usb.bus_id") == bus and r.get("usb.device_address") == dev]
    gets = [r for r in disk if r["usb.urb_type"] == "'S'" and r["usb.transfer_type"] == CONTROL
            and r["usb.endpoint_address"] == "0x80" and r["usb.setup.bRequest"] == "6"]
    kinds = {r["usb.bDescriptorType"] for r in gets}
    device_answers = [r for r in disk if r["usb.urb_type"] == "'C'" and r["usb.endpoint_address"] == "0x80"
                      and r["usb.urb_len"] == "18" and r["usb.data_len"] == "18"]
    record("capture-get-descriptor", {"0x01", "0x02"} <= kinds and bool(device_answers),
           f"disk {storage_busid}: {len(gets)} GET_DESCRIPTOR requests on 0x80 for descriptor types "
           f"{sorted(kinds)} (want 0x01 and 0x02), {len(device_answers)} 18-byte device descriptor answers")

    cbws = [r for r in disk if r["usb.urb_type"] == "'S'" and r["usb.endpoint_address"] == STORAGE_OUT
            and r["usbms.dCBWDataTransferLength"]]
    good = [r for r in cbws if r["usb.transfer_type"] == BULK and r["usb.urb_len"] == "31"
            and r["usb.data_len"] == "31"]
    record("capture-storage-cbw", bool(cbws) and len(good) == len(cbws),
           f"{len(cbws)} CBWs on bulk OUT {STORAGE_OUT}, {len(good)} of them bulk with 31 bytes captured")

    ins = [r for r in disk if r["usb.urb_type"] == "'C'" and r["usb.endpoint_address"] == STORAGE_IN
           and r["usb.transfer_type"] == BULK and r["usb.urb_status"] == "0"]
    csws = [r for r in ins if r["usbms.dCSWSignature"] == CSW_SIGNATURE]
    good = [r for r in csws if r["usb.urb_len"] == "13" and r["usb.data_len"] == "13"]
    record("capture-storage-csw", bool(csws) and len(good) == len(csws) and len(csws) >= len(cbws) - 2,
           f"{len(csws)} CSWs on bulk IN {STORAGE_IN} for {len(cbws)} CBWs, {len(good)} of 13 bytes")

    asked = {int(r["usbms.dCBWDataTransferLength"]) for r in cbws if r["usbms.dCBWFlags"] == "0x80"}
    data = [r for r in ins if not r["usbms.dCSWSignature"]]
    cut_right = [r for r in data if int(r["usb.data_len"]) == min(int(r["usb.urb_len"]), snaplen)]
    long_reads = sorted({int(r["usb.urb_len"]) for r in data if int(r["usb.urb_len"]) in asked
                         and int(r["usb.urb_len"]) > snaplen and int(r["usb.data_len"]) == snaplen})
    record("capture-storage-data-in", bool(data) and len(cut_right) == len(data) and bool(long_reads),
           f"{len(data)} data IN completions on {STORAGE_IN}, {len(cut_right)} captured up to the "
           f"snap length {snaplen}; reads longer than it of a length a CBW asked for: {long_reads[:5]}")
