# The host-passthrough bench (tests/e2e/bench-host.sh, not in the CI suite), sourced by host-init.sh
# when the kernel command line says e2e_mode=bench, after the emulated devices were found (it uses
# host-init.sh's helpers and KD SD KB SB). In each window the same emulated usb-storage disk and
# usb-kbd are served in turn by our usbipd (usbfs) and by the kernel's usbip-host + usbipd, both
# imported by this guest's vhci-hcd over 127.0.0.1, then used locally (usb-storage, usbhid) as a
# reference; the order of the two servers alternates from window to window. Per phase: O_DIRECT
# reads of the disk's first BENCH_MIB MiB, O_DIRECT writes of BENCH_MIB MiB at W_MIB MiB (scratch:
# the image is the harness's own), and NKEYS key presses timed by the host (see bench_host.py).
# Prints "BENCH window=W server=S read_mibs=X write_mibs=Y cpu_ms_per_mib=Z" and "BENCH-FAIL ..." lines; the keys:
# "E2E KEYS window=W server=S n=N", then e2e-evlat's "listening" and "key CODE" lines.

WINDOWS=7 NKEYS=21 W_MIB=16
for x in $(cat /proc/cmdline); do
  case $x in e2e_windows=*) WINDOWS=${x#*=};; e2e_nkeys=*) NKEYS=${x#*=};; e2e_write_mib=*) W_MIB=${x#*=};; esac
done
OURS_PORT=3241  # ours beside the kernel's usbipd (3240): both stay up, only the binding changes
ms() { awk '{printf "%d", $1 * 1000}' /proc/uptime; }
# mibs MIB MS: MiB/s, 0 when nothing was timed
mibs() { awk -v m=$1 -v t=$2 'BEGIN { printf("%.3f", (t > 0 ? m * 1000 / t : 0)) }'; }

# busy jiffies (USER_HZ, 10 ms) of both guest CPUs: everything but idle and iowait
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
# throughput NAME DISK: read and write BENCH_MIB MiB with O_DIRECT 1 MiB requests; sets RD WR and
# CPU (guest CPU ms per MiB moved, both directions: in TCG every guest instruction costs host time)
throughput() {
  local dev=/dev/$2 t0 t1 t2 c0 c1
  c0=$(busy); t0=$(ms); tmo 120 dd if=$dev of=/dev/null bs=1048576 count=$BENCH_MIB iflag=direct 2>/tmp/rd; t1=$(ms)
  tmo 120 dd if=/dev/zero of=$dev bs=1048576 count=$BENCH_MIB seek=$W_MIB oflag=direct 2>/tmp/wr; t2=$(ms); c1=$(busy)
  RD=$(mibs $BENCH_MIB $((t1 - t0))) WR=$(mibs $BENCH_MIB $((t2 - t1)))
  CPU=$(awk -v c=$((c1 - c0)) -v m=$BENCH_MIB 'BEGIN { printf("%.1f", c * 10 / (2 * m)) }')
  grep -q "^$BENCH_MIB+0 records in" /tmp/rd || { echo "BENCH-FAIL $1 read: $(tr '\n' ' ' < /tmp/rd)"; RD=0; }
  grep -q "^$BENCH_MIB+0 records out" /tmp/wr || { echo "BENCH-FAIL $1 write: $(tr '\n' ' ' < /tmp/wr)"; WR=0; }
}
# latency W NAME KBD: the host presses NKEYS keys, one at a time, timing each to its "key" line
latency() {
  local ev=/dev/input/$(basename "$(input_of $3)")
  [ -c $ev ] || { echo "BENCH-FAIL window=$1 server=$2 keys: no evdev node for $3"; return; }
  echo "E2E KEYS window=$1 server=$2 n=$NKEYS"
  e2e-evlat $ev $NKEYS 60000 || echo "BENCH-FAIL window=$1 server=$2 keys: fewer than $NKEYS presses"
}
# phase W NAME DISKDEV KBDDEV: the measurements on one server's (or the local) devices
phase() {
  throughput "window=$1 server=$2" $(disk_of $3)
  echo "BENCH window=$1 server=$2 read_mibs=$RD write_mibs=$WR cpu_ms_per_mib=$CPU"
  latency $1 $2 $4
}
# returned: both devices back with their local drivers (after an unbind)
returned() {
  waitfor 100 bound_to $(intf0 $SD) usb-storage && waitfor 150 has_disk $SD &&
    waitfor 100 bound_to $(intf0 $KD) usbhid && waitfor 50 has_input $KD
}
# served W NAME PORT: attach both devices from the server on PORT, measure, detach
served() {
  local b
  for b in $SB $KB; do
    # a first attach right after boot has been seen to fail with "open vhci_driver": try again
    tmo 30 usbip --tcp-port $3 attach -r 127.0.0.1 -b $b > /tmp/att 2>&1 ||
      { sleep 1; tmo 30 usbip --tcp-port $3 attach -r 127.0.0.1 -b $b > /tmp/att 2>&1; } ||
      echo "BENCH-FAIL window=$1 server=$2 attach $b: $(tr '\n' ' ' < /tmp/att)"
  done
  if waitfor 150 configured $STOID vhci && waitfor 150 has_disk $(find_dev $STOID vhci) &&
     waitfor 150 configured $KBDID vhci && waitfor 50 has_input $(find_dev $KBDID vhci); then
    phase $1 $2 $(find_dev $STOID vhci) $(find_dev $KBDID vhci)
  else
    echo "BENCH-FAIL window=$1 server=$2: imported devices missing: $(ls /sys/bus/usb/devices | tr '\n' ' ')"
  fi
  detach_all || echo "BENCH-FAIL window=$1 server=$2: ports left: $(ports)"
}
ours() {
  local b
  for b in $SB $KB; do tmo 20 usbipd bind --busid $b $C $S > /dev/null 2>&1 || echo "BENCH-FAIL ours bind $b"; done
  served $1 ours $OURS_PORT
  for b in $SB $KB; do tmo 20 usbipd unbind --busid $b $C $S > /dev/null 2>&1 || echo "BENCH-FAIL ours unbind $b"; done
  returned || echo "BENCH-FAIL window=$1 server=ours: devices not returned to their drivers"
}
kernel() {
  local b
  for b in $SB $KB; do
    tmo 20 usbip bind -b $b > /dev/null 2>&1 && waitfor 50 bound_to /sys/bus/usb/devices/$b usbip-host ||
      echo "BENCH-FAIL kernel bind $b"
  done
  served $1 kernel 3240
  for b in $SB $KB; do tmo 20 usbip unbind -b $b > /dev/null 2>&1; done
  returned || echo "BENCH-FAIL window=$1 server=kernel: devices not returned to their drivers"
}

t "bench: $WINDOWS windows, $BENCH_MIB MiB each way, $NKEYS keys"
mkdir -p /tmp/state /run/usbipd; : > /tmp/usbipd.toml
C="--control /run/usbipd/control.sock" S="--state-dir /tmp/state"
usbipd server --extension off --listen 127.0.0.1:$OURS_PORT --config /tmp/usbipd.toml $C $S \
  > /tmp/server.log 2>&1 & SPID=$!
/usr/sbin/usbipd > /tmp/kusbipd.log 2>&1 & KPID=$!
waitfor 100 [ -S /run/usbipd/control.sock ] || echo "BENCH-FAIL our server did not start: $(tail -3 /tmp/server.log)"
waitfor 100 eval 'usbip list -r 127.0.0.1 >/dev/null 2>&1' || echo "BENCH-FAIL the kernel's usbipd did not start"
w=1
while [ $w -le $WINDOWS ]; do
  t "window $w"
  if [ $((w % 2)) = 1 ]; then ours $w; kernel $w; else kernel $w; ours $w; fi
  phase $w local $SD $KD
  w=$((w + 1))
done
kill $SPID $KPID
grep -E "WARN|ERROR" /tmp/server.log | tail -5 | sed 's/^/our server: /'
t "bench done"
