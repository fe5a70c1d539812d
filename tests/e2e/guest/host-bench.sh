# The host-passthrough bench (tests/e2e/bench-host.sh, not in the CI suite), sourced by host-init.sh
# when the kernel command line says e2e_mode=bench, after the emulated devices were found (it uses
# host-init.sh's helpers and KD SD KB SB). The host gives the guest two identical usb-storage disks
# and a usb-kbd; our usbipd (usbfs) and the kernel's usbip-host + usbipd serve them, imported by this
# guest's vhci-hcd over 127.0.0.1. In each window: each server serves one disk at the same time and
# the guest reads and writes both in ABBA rounds (O_DIRECT, BENCH_MIB MiB from the start, then
# BENCH_MIB MiB at W_MIB MiB: scratch, the images are the harness's own); then each server in turn
# serves the keyboard for NKEYS key presses timed by the host (see bench_host.py); then the first
# disk and the keyboard are used locally as a reference. Which disk each server gets and which
# server goes first alternate between windows.
# Prints "BENCH window=W server=S read_mibs=X write_mibs=Y cpu_ms_per_mib=Z" and "BENCH-FAIL ..."
# lines; the keys: "E2E KEYS window=W server=S n=N", then e2e-evkeys's "listening" and "key CODE".

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
# io NAME DISK: read and write BENCH_MIB MiB with O_DIRECT 1 MiB requests; adds the milliseconds
# and busy jiffies to NAME's totals (RT_NAME, WT_NAME, CJ_NAME)
io() {
  local dev=/dev/$2 t0 t1 t2 c0 c1
  c0=$(busy); t0=$(ms); tmo 120 dd if=$dev of=/dev/null bs=1048576 count=$BENCH_MIB iflag=direct 2>/tmp/rd; t1=$(ms)
  tmo 120 dd if=/dev/zero of=$dev bs=1048576 count=$BENCH_MIB seek=$W_MIB oflag=direct 2>/tmp/wr; t2=$(ms); c1=$(busy)
  grep -q "^$BENCH_MIB+0 records in" /tmp/rd || echo "BENCH-FAIL $1 read: $(tr '\n' ' ' < /tmp/rd)"
  grep -q "^$BENCH_MIB+0 records out" /tmp/wr || echo "BENCH-FAIL $1 write: $(tr '\n' ' ' < /tmp/wr)"
  eval "RT_$1=\$((RT_$1 + t1 - t0)) WT_$1=\$((WT_$1 + t2 - t1)) CJ_$1=\$((CJ_$1 + c1 - c0)) N_$1=\$((N_$1 + 1))"
}
# report W NAME: one BENCH line from NAME's totals (guest CPU ms per MiB moved, both directions:
# in TCG every guest instruction costs host time), then the totals start again
report() {
  local n rt wt cj; eval "n=\$N_$2 rt=\$RT_$2 wt=\$WT_$2 cj=\$CJ_$2"
  echo "BENCH window=$1 server=$2 read_mibs=$(mibs $((n * BENCH_MIB)) $rt) write_mibs=$(mibs $((n * BENCH_MIB)) $wt)" \
    "cpu_ms_per_mib=$(awk -v c=$cj -v m=$((n * BENCH_MIB)) 'BEGIN { printf("%.1f", c * 10 / (2 * m)) }')"
  eval "N_$2=0 RT_$2=0 WT_$2=0 CJ_$2=0"
}
N_ours=0 RT_ours=0 WT_ours=0 CJ_ours=0 N_kernel=0 RT_kernel=0 WT_kernel=0 CJ_kernel=0
N_local=0 RT_local=0 WT_local=0 CJ_local=0
# latency W NAME KBD: the host presses NKEYS keys, one at a time, timing each to its "key" line
latency() {
  local ev=/dev/input/$(basename "$(input_of $3)")
  [ -c $ev ] || { echo "BENCH-FAIL window=$1 server=$2 keys: no evdev node for $3"; return; }
  echo "E2E KEYS window=$1 server=$2 n=$NKEYS"
  e2e-evkeys $ev $NKEYS 60000 each || echo "BENCH-FAIL window=$1 server=$2 keys: fewer than $NKEYS presses"
}
serve() {  # serve ours|kernel BUSID
  case $1 in
    ours) tmo 20 usbipd bind --busid $2 $C $S > /dev/null 2>&1;;
    kernel) tmo 20 usbip bind -b $2 > /dev/null 2>&1 && waitfor 50 bound_to /sys/bus/usb/devices/$2 usbip-host;;
  esac || echo "BENCH-FAIL $1 bind $2"
}
unserve() {  # unserve ours|kernel BUSID: and wait until its local driver has it again
  local d=/sys/bus/usb/devices/$2
  case $1 in ours) tmo 20 usbipd unbind --busid $2 $C $S > /dev/null 2>&1;; kernel) tmo 20 usbip unbind -b $2 > /dev/null 2>&1;; esac
  case $2 in
    $KB) waitfor 100 bound_to $(intf0 $d) usbhid && waitfor 50 has_input $d;;
    *) waitfor 100 bound_to $(intf0 $d) usb-storage && waitfor 150 has_disk $d;;
  esac || echo "BENCH-FAIL $1 unbind $2: not returned to its driver"
}
attach() {  # attach ours|kernel BUSID
  local port=3240; [ $1 = ours ] && port=$OURS_PORT
  # a first attach right after boot has been seen to fail with "open vhci_driver": try again
  tmo 30 usbip --tcp-port $port attach -r 127.0.0.1 -b $2 > /tmp/att 2>&1 ||
    { sleep 1; tmo 30 usbip --tcp-port $port attach -r 127.0.0.1 -b $2 > /tmp/att 2>&1; } ||
    echo "BENCH-FAIL $1 attach $2: $(tr '\n' ' ' < /tmp/att)"
}
# imported SERIAL: the imported (vhci) copy of the device with that iSerial, once it has its disk
imported() {
  local d
  for d in /sys/bus/usb/devices/*; do
    case $(readlink -f $d) in */vhci_hcd*) ;; *) continue;; esac
    [ "$(cat $d/serial 2>/dev/null)" = "$1" ] && has_disk $d && { echo $d; return 0; }
  done
  return 1
}
# disks W: one disk served by each server at once, both imported; ABBA rounds of reads and writes
# (the two measurements seconds apart, a linear drift of the host's load cancels); which disk
# each server gets alternates between windows, as does which server goes first
disks() {
  local ob=$SB kb=$SB2 first=ours second=kernel od kd s
  [ $(($1 % 2)) = 0 ] && ob=$SB2 kb=$SB first=kernel second=ours
  serve ours $ob; serve kernel $kb; attach ours $ob; attach kernel $kb
  if waitfor 200 imported "$(cat /sys/bus/usb/devices/$ob/serial)" >/dev/null &&
     waitfor 200 imported "$(cat /sys/bus/usb/devices/$kb/serial)" >/dev/null; then
    od=$(imported "$(cat /sys/bus/usb/devices/$ob/serial)") kd=$(imported "$(cat /sys/bus/usb/devices/$kb/serial)")
    for s in $first $second $second $first; do
      case $s in ours) io ours $(disk_of $od);; kernel) io kernel $(disk_of $kd);; esac
    done
    report $1 ours; report $1 kernel
  else
    echo "BENCH-FAIL window=$1: imported disks missing: $(ls /sys/bus/usb/devices | tr '\n' ' ')"
  fi
  detach_all || echo "BENCH-FAIL window=$1 disks: ports left: $(ports)"
  unserve ours $ob; unserve kernel $kb
}
# keyboard W NAME: the keyboard alone served by NAME, imported, NKEYS presses timed
keyboard() {
  serve $2 $KB; attach $2 $KB
  if waitfor 150 configured $KBDID vhci && waitfor 50 has_input $(find_dev $KBDID vhci); then
    latency $1 $2 $(find_dev $KBDID vhci)
  else
    echo "BENCH-FAIL window=$1 server=$2: imported keyboard missing"
  fi
  detach_all || echo "BENCH-FAIL window=$1 server=$2 keyboard: ports left: $(ports)"
  unserve $2 $KB
}

t "bench: $WINDOWS windows, $BENCH_MIB MiB each way, $NKEYS keys"
# the second emulated disk (the host gives it the same size and bytes): the other server's
SD2=$(for d in /sys/bus/usb/devices/*; do
        case ${d##*/} in *:*|usb*) continue;; esac
        [ "$(cat $d/idVendor 2>/dev/null):$(cat $d/idProduct 2>/dev/null)" = "$STOID" ] && [ ${d##*/} != $SB ] && echo $d
      done | head -1)
SB2=${SD2##*/}
[ -n "$SB2" ] && waitfor 150 has_disk $SD2 || echo "BENCH-FAIL no second disk: $(ls /sys/bus/usb/devices | tr '\n' ' ')"
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
  disks $w
  if [ $((w % 2)) = 1 ]; then keyboard $w ours; keyboard $w kernel; else keyboard $w kernel; keyboard $w ours; fi
  io local $(disk_of $SD); report $w local
  latency $w local $KD
  w=$((w + 1))
done
kill $SPID $KPID
grep -E "WARN|ERROR" /tmp/server.log | tail -5 | sed 's/^/our server: /'
t "bench done"
