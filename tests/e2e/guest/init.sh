#!/bin/sh
# PID 1 of the e2e guest: imports the devices of a USB/IP server on the host with the kernel's own
# client (vhci-hcd + usbip) and exercises each one, printing "E2E CHECK name PASS|FAIL reason" lines
# on the console. "E2E READY x" lines ask the host to act; the host answers "GO x" on the console.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
if [ $$ = 1 ]; then
  # PID 1 only mounts, runs the checks in a child shell (a fatal shell error must not panic the
  # kernel) and powers off
  mount -t proc proc /proc
  mount -t sysfs sys /sys
  mount -t devtmpfs dev /dev
  mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
  stty -echo 2>/dev/null # the host's answers on the console should not be echoed back
  /bin/sh /init
  echo "E2E DONE init script exited rc=$?"
  poweroff -f
fi

# knobs from the kernel command line (the host orchestrator sets them)
TLS_PORT= TLS_CODE= TLS_FP=
MODE=client SERVER=10.0.2.2 PORT=3240 KBD=0-1 SER=0-2 STO=0-3 LOOP=0-4 KEYS= SECTORS= HOSTMD5=
FS_KB=49152 RAW_BLK=832 HOST_BLK=960 # vfat size; 64 KiB block offsets of the raw areas
KBDID=1209:0001 SERID=1209:0002 STOID=1209:0003 LOOPID=0525:a4a0
for x in $(cat /proc/cmdline); do
  case $x in
    e2e_mode=*) MODE=${x#*=};;       e2e_server=*) SERVER=${x#*=};;  e2e_port=*) PORT=${x#*=};;
    e2e_kbd=*) KBD=${x#*=};;         e2e_serial=*) SER=${x#*=};;     e2e_storage=*) STO=${x#*=};;
    e2e_loop=*) LOOP=${x#*=};;       e2e_keys=*) KEYS=${x#*=};;      e2e_sectors=*) SECTORS=${x#*=};;
    e2e_hostmd5=*) HOSTMD5=${x#*=};;  e2e_fs_kb=*) FS_KB=${x#*=};;   e2e_raw_blk=*) RAW_BLK=${x#*=};;
    e2e_host_blk=*) HOST_BLK=${x#*=};;
    e2e_tls_port=*) TLS_PORT=${x#*=};; e2e_tls_code=*) TLS_CODE=${x#*=};; e2e_tls_fp=*) TLS_FP=${x#*=};;
    e2e_ids=*) set -- $(echo ${x#*=} | tr , ' '); KBDID=$1 SERID=$2 STOID=$3 LOOPID=$4;;
  esac
done
KEYS=$(echo "$KEYS" | tr , ' ')
FAILED=0
. /lib.sh
# find_dev VID:PID: sysfs directory of the (imported) USB device with that VID:PID
find_dev() {
  for d in /sys/bus/usb/devices/*; do
    case ${d##*/} in *:*|usb*) continue;; esac
    [ "$(cat $d/idVendor 2>/dev/null):$(cat $d/idProduct 2>/dev/null)" = "$1" ] && { echo $d; return 0; }
  done
  return 1
}
configured() { d=$(find_dev $1) && c=$(cat $d/bConfigurationValue 2>/dev/null) && [ -n "$c" ] && [ "$c" != 0 ]; }
usbfs_node() { printf /dev/bus/usb/%03d/%03d $(cat $1/busnum) $(cat $1/devnum); }
bound_to() { [ "$(basename "$(readlink $1/driver 2>/dev/null)")" = "$2" ]; }

t "init start mode=$MODE server=$SERVER:$PORT"
for m in virtio_pci virtio_net usbip-core vhci-hcd evdev usbhid hid-generic cdc-acm sd_mod usbtest vfat \
         nls_cp437 nls_utf8 nls_ascii nls_iso8859-1; do
  modprobe $m || echo "modprobe $m failed"
done
modprobe usb-storage delay_use=0 || echo "modprobe usb-storage failed"
ip link set lo up; ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2
t "modules loaded, network up"

if [ "$MODE" = shell ]; then setsid cttyhack sh; exit 0; fi
USBIP="usbip --tcp-port $PORT"

# ---- list and attach ------------------------------------------------------------------------------
out=$(tmo 20 $USBIP list -r $SERVER 2>&1); rc=$?
echo "$out"
miss=""
for b in $KBD:$KBDID $SER:$SERID $STO:$STOID $LOOP:$LOOPID; do
  id=${b#*:}
  echo "$out" | grep -Eq "^ *${b%%:*}: .*\(${id}\)\$" || miss="$miss ${b%%:*}($id)"
done
[ $rc = 0 ] && [ -z "$miss" ] && pass guest-usbip-list || fail guest-usbip-list "rc=$rc missing:$miss"

# attach NAME BUSID VID:PID: import one device and wait until the kernel configured it
attach() {
  t "attach $1 ($2)"
  if out=$(tmo 30 $USBIP attach -r $SERVER -b $2 2>&1); then pass attach-$1; else fail attach-$1 "$(echo $out)"; return 1; fi
  if waitfor 150 configured $3; then
    d=$(find_dev $3)
    pass enumerate-$1 "${d##*/} $3 cfg=$(cat $d/bConfigurationValue) speed=$(cat $d/speed) product=$(cat $d/product 2>/dev/null | tr ' ' _)"
  else
    d=$(find_dev $3) && fail enumerate-$1 "${d##*/} bConfigurationValue='$(cat $d/bConfigurationValue)'" ||
      fail enumerate-$1 "no device $3 appeared in 15 s"
    return 1
  fi
}
attach keyboard $KBD $KBDID; A_KBD=$?
attach serial $SER $SERID; A_SER=$?
attach storage $STO $STOID; A_STO=$?
attach loopback $LOOP $LOOPID; A_LOOP=$?
$USBIP port

# ---- keyboard: usbhid + evdev receive what the host types -----------------------------------------
if [ $A_KBD = 0 ]; then
  d=$(find_dev $KBDID)
  if waitfor 50 bound_to $d/${d##*/}:1.0 usbhid; then pass keyboard-usbhid-bound; else fail keyboard-usbhid-bound "interface driver: '$(basename "$(readlink $d/${d##*/}:1.0/driver)")'"; fi
  ev=""
  findev() { for e in /sys/class/input/event*; do [ -d $e/device ] || continue
    [ "$(cat $e/device/id/vendor):$(cat $e/device/id/product)" = "$KBDID" ] && ev=/dev/input/${e##*/} && return 0; done; return 1; }
  if waitfor 50 findev; then
    n=$(echo $KEYS | wc -w)
    e2e-evkeys $ev $n 15000 > /tmp/keys.out 2>&1 & kp=$!
    waitfor 30 grep -q listening /tmp/keys.out
    wait_host keyboard
    wait $kp
    got=$(sed -n 's/^keys *//p' /tmp/keys.out)
    [ "$got" = "$KEYS" ] && pass keyboard-keys "$ev codes $got" || fail keyboard-keys "$ev want codes '$KEYS' got '$got'"
  else
    fail keyboard-keys "no /dev/input/event* for $KBDID"
  fi
fi

# ---- serial: cdc-acm tty, bytes both ways through the server's TCP side ---------------------------
if [ $A_SER = 0 ]; then
  d=$(find_dev $SERID)
  tty=""
  findtty() { tty=$(ls $d/${d##*/}:1.0/tty 2>/dev/null | head -1); [ -n "$tty" ] && [ -c /dev/$tty ]; }
  if waitfor 50 findtty; then
    pass serial-cdc-acm-bound "/dev/$tty driver $(basename "$(readlink $d/${d##*/}:1.0/driver)")"
    exec 3<>/dev/$tty
    stty -F /dev/$tty raw -echo 115200
    if wait_host serial; then
      echo "guest-to-host usbipd-e2e 0123456789" >&3
      line=""; read -t 15 -r line <&3
      line=$(echo "$line" | tr -d '\r')
      [ "$line" = "host-to-guest usbipd-e2e abcdefghij" ] && pass serial-host-to-guest || fail serial-host-to-guest "read '$line'"
    else
      fail serial-host-to-guest "host never answered GO serial"
    fi
    exec 3<&-
  else
    fail serial-cdc-acm-bound "no tty under ${d##*/}:1.0 (driver '$(basename "$(readlink $d/${d##*/}:1.0/driver)")')"
  fi
fi

# ---- storage: usb-storage disk; read host data, vfat file and raw sectors written for the host -----
if [ $A_STO = 0 ]; then
  d=$(find_dev $STOID)
  sd=""
  findsd() { sd=$(ls $d/${d##*/}:1.0/host*/target*/*/block 2>/dev/null | head -1); [ -n "$sd" ] && [ -b /dev/$sd ]; }
  if waitfor 100 findsd; then
    size=$(cat /sys/block/$sd/size)
    [ "$size" = "$SECTORS" ] && pass storage-disk "/dev/$sd $size sectors" || fail storage-disk "/dev/$sd has $size sectors, image has $SECTORS"
    # the host wrote 1 MiB of known data before boot
    got=$(tmo 30 dd if=/dev/$sd bs=65536 skip=$HOST_BLK count=16 2>/dev/null | md5sum | cut -d' ' -f1)
    [ "$got" = "$HOSTMD5" ] && pass storage-read-host-data || fail storage-read-host-data "md5 $got, host wrote $HOSTMD5"
    # a vfat filesystem at the start of the disk with one file; read back after a fresh mount
    seq 1 20000 > /tmp/E2E.TXT
    want=$(md5sum < /tmp/E2E.TXT | cut -d' ' -f1)
    if tmo 60 mkdosfs -n E2E /dev/$sd $FS_KB >/tmp/mkfs.out 2>&1 && tmo 30 mount -t vfat /dev/$sd /mnt; then
      cp /tmp/E2E.TXT /mnt/E2E.TXT; sync; tmo 30 umount /mnt
      echo 3 > /proc/sys/vm/drop_caches
      tmo 30 mount -t vfat -o ro /dev/$sd /mnt
      got=$(md5sum < /mnt/E2E.TXT | cut -d' ' -f1); tmo 30 umount /mnt
      [ "$got" = "$want" ] && pass storage-vfat-file "E2E.TXT md5 $got" || fail storage-vfat-file "read back md5 $got, wrote $want"
    else
      fail storage-vfat-file "mkdosfs/mount failed: $(cat /tmp/mkfs.out)"
    fi
    # 1 MiB raw pattern after the filesystem
    yes "usbipd-e2e raw sector pattern 0123456789abcdef" | head -c 1048576 > /tmp/raw.bin
    want=$(md5sum < /tmp/raw.bin | cut -d' ' -f1)
    tmo 60 dd if=/tmp/raw.bin of=/dev/$sd bs=65536 seek=$RAW_BLK conv=fsync 2>/dev/null
    blockdev --flushbufs /dev/$sd; echo 3 > /proc/sys/vm/drop_caches
    got=$(tmo 30 dd if=/dev/$sd bs=65536 skip=$RAW_BLK count=16 2>/dev/null | md5sum | cut -d' ' -f1)
    [ "$got" = "$want" ] && pass storage-raw-sectors "md5 $got" || fail storage-raw-sectors "read back md5 $got, wrote $want"
    sync
  else
    fail storage-disk "no block device under ${d##*/}:1.0 (driver '$(basename "$(readlink $d/${d##*/}:1.0/driver)")')"
  fi
fi

# ---- loopback: usbtest cases in the source/sink configuration, then unlink through usbfs ----------
# usbtest CASE ITERATIONS LENGTH VARY SGLEN
usbtest_case() { tmo 30 e2e-usbtest $node 0 "$@" || { [ $? = 124 ] && fail usbtest-$1 "hung for 30 s" && return 124; }; }
if [ $A_LOOP = 0 ]; then
  d=$(find_dev $LOOPID)
  [ "$(cat $d/bConfigurationValue)" = 3 ] || echo 3 > $d/bConfigurationValue
  if waitfor 50 bound_to $d/${d##*/}:3.0 usbtest; then
    pass loopback-usbtest-bound "${d##*/} config 3"
    node=$(usbfs_node $d)
    usbtest_case 1 64 4096 0 0     # bulk OUT to the sink
    usbtest_case 2 64 4096 0 0     # bulk IN from the source (zeros checked)
    usbtest_case 9 4 0 0 0         # chapter 9 requests
    usbtest_case 10 16 0 0 8       # queued control requests, incl. expected stalls and short reads
    # iso: usbtest takes the first alternate setting with endpoints it can use (alt 0, bulk); its
    # alt parameter, read at probe, makes it take alt 1 with the iso source and sink (SET_INTERFACE
    # at probe and before each case): rebind it with alt=1, and put the parameter back afterwards
    intf=${d##*/}:3.0
    echo 1 > /sys/module/usbtest/parameters/alt
    echo $intf > /sys/bus/usb/drivers/usbtest/unbind
    echo $intf > /sys/bus/usb/drivers/usbtest/bind
    alt_now() { [ "$(tr -d ' ' < $d/$intf/bAlternateSetting)" = 1 ]; }
    if waitfor 50 bound_to $d/$intf usbtest && alt_now; then
      pass loopback-usbtest-iso-alt "$intf alt 1"
      usbtest_case 15 64 4096 0 8  # iso OUT to the sink: 8 URBs of 4 packets queued, 64 rounds
      usbtest_case 16 64 4096 0 8  # iso IN from the source
      dmesg | grep -E 'iso-in|TEST 1[56]|iso period|total [0-9]+ msec|errors out of|resubmit' | sed 's/^/  dmesg: /'
    else
      fail loopback-usbtest-iso-alt "interface driver '$(basename "$(readlink $d/$intf/driver)")', alt '$(cat $d/$intf/bAlternateSetting)'"
    fi
    echo -1 > /sys/module/usbtest/parameters/alt
  else
    fail loopback-usbtest-bound "config $(cat $d/bConfigurationValue), interface driver '$(basename "$(readlink $d/${d##*/}:3.0/driver)")'"
  fi
  echo 2 > $d/bConfigurationValue    # loopback configuration
  if waitfor 50 configured $LOOPID && [ "$(cat $d/bConfigurationValue)" = 2 ]; then
    tmo 60 e2e-usbfs $(usbfs_node $d) || [ $? != 124 ] || fail loopback-usbfs "hung for 60 s"
  else
    fail loopback-unlink-timeout "could not switch to configuration 2 (now '$(cat $d/bConfigurationValue)')"
  fi
fi

# ---- detach everything, let the host look at the server, re-import one device --------------------
ports() { $USBIP port 2>/dev/null | sed -n 's/^Port \([0-9]*\):.*/\1/p'; }
busid_of_port() { $USBIP port 2>/dev/null | awk -v p="Port $1:" '$0 ~ "^"p {f=1} f && /usbip:\/\// {sub(".*/", ""); print; exit}'; }
for p in $(ports); do
  b=$(busid_of_port $p)
  name=$b
  case $b in $KBD) name=keyboard;; $SER) name=serial;; $STO) name=storage;; $LOOP) name=loopback;; esac
  if out=$(tmo 20 $USBIP detach -p $p 2>&1) && ! ports | grep -qx $p; then pass detach-$name "port $p"; else fail detach-$name "port $p: $(echo $out)"; fi
done
gone() { ! find_dev $KBDID && ! find_dev $SERID && ! find_dev $STOID && ! find_dev $LOOPID; } >/dev/null
waitfor 50 gone && pass detach-devices-gone || fail detach-devices-gone "still present: $(ls /sys/bus/usb/devices | tr '\n' ' ')"
if wait_host reattach; then
  if attach reattach-loopback $LOOP $LOOPID; then
    d=$(find_dev $LOOPID)
    [ "$(cat $d/bConfigurationValue)" = 3 ] || echo 3 > $d/bConfigurationValue
    if waitfor 50 bound_to $d/${d##*/}:3.0 usbtest; then
      node=$(usbfs_node $d)
      out=$(usbtest_case 1 16 4096 0 0)
      echo "$out" | sed 's/^E2E CHECK /reattach: /'
      echo "$out" | grep -q PASS && pass reattach-loopback-io || fail reattach-loopback-io "$out"
      # last, as a hang here wedges the device: usbtest's unlink cases (submit, then unlink while the
      # URB is in flight at the server; CMD_UNLINK racing RET_SUBMIT)
      usbtest_case 11 16 4096 0 0   # unlink bulk IN
      if [ $? = 124 ]; then fail usbtest-12 "not run: usbtest-11 hung and holds the device"
      else
        if ! find_dev $LOOPID >/dev/null; then  # usbtest-11 lost the connection: import again for 12
          echo "loopback gone after usbtest-11, importing it again"
          tmo 30 $USBIP attach -r $SERVER -b $LOOP; waitfor 150 configured $LOOPID
          d=$(find_dev $LOOPID) && { [ "$(cat $d/bConfigurationValue)" = 3 ] || echo 3 > $d/bConfigurationValue; }
          waitfor 50 bound_to $d/${d##*/}:3.0 usbtest; node=$(usbfs_node $d)
        fi
        usbtest_case 12 16 4096 0 0  # unlink bulk OUT
      fi
    else
      fail reattach-loopback-io "usbtest did not bind"
    fi
    p=$(ports | head -1)
    if [ -z "$p" ]; then fail reattach-detach "no port in use any more: the connection was dropped before"
    else tmo 20 $USBIP detach -p $p && waitfor 50 gone && pass reattach-detach || fail reattach-detach "port $p"; fi
  fi
else
  fail reattach-loopback "host never answered GO reattach"
fi

# ---- our own client: usbipd client attach / port / detach, no Debian usbip ----------------------
UC="usbipd client"
ms() { awk '{printf "%d", $1 * 1000}' /proc/uptime; }
# client_attach NAME VID:PID ARGS...: attach with our binary, wait until the kernel configured it
client_attach() {
  local name=$1 id=$2 t0 t1 out; shift 2
  t0=$(ms)
  if out=$(tmo 30 $UC attach --remote $SERVER:$PORT "$@" 2>&1); then
    t1=$(ms); pass client-attach-$name "$(echo $out) in $((t1 - t0)) ms"
  else fail client-attach-$name "$(echo $out)"; return 1; fi
  if waitfor 150 configured $id; then
    d=$(find_dev $id)
    pass client-enumerate-$name "${d##*/} $id speed=$(cat $d/speed) configured $(($(ms) - t0)) ms after the attach began"
  else fail client-enumerate-$name "no configured device $id in 15 s"; return 1; fi
}
if client_attach storage $STOID --busid $STO; then
  d=$(find_dev $STOID); sd=""
  findsd() { sd=$(ls $d/${d##*/}:1.0/host*/target*/*/block 2>/dev/null | head -1); [ -n "$sd" ] && [ -b /dev/$sd ]; }
  if waitfor 100 findsd; then
    got=$(tmo 30 dd if=/dev/$sd bs=65536 skip=$HOST_BLK count=16 2>/dev/null | md5sum | cut -d' ' -f1)
    [ "$got" = "$HOSTMD5" ] && pass client-storage-read-host-data "/dev/$sd md5 $got" ||
      fail client-storage-read-host-data "/dev/$sd md5 $got, host wrote $HOSTMD5"
    yes "usbipd-e2e raw sector pattern 0123456789abcdef" | head -c 1048576 > /tmp/raw.bin
    want=$(md5sum < /tmp/raw.bin | cut -d' ' -f1)
    got=$(tmo 30 dd if=/dev/$sd bs=65536 skip=$RAW_BLK count=16 2>/dev/null | md5sum | cut -d' ' -f1)
    [ "$got" = "$want" ] && pass client-storage-raw-sectors "md5 $got (written through usbip attach earlier)" ||
      fail client-storage-raw-sectors "md5 $got, want $want"
  else
    fail client-storage-read-host-data "no block device under ${d##*/}:1.0"
  fi
fi
if client_attach keyboard $KBDID --hardware-id $KBDID; then
  d=$(find_dev $KBDID); ev=""
  kbd_event() { for e in /sys/class/input/event*; do [ -d $e/device ] || continue
    [ "$(cat $e/device/id/vendor):$(cat $e/device/id/product)" = "$KBDID" ] && ev=/dev/input/${e##*/} && return 0; done; return 1; }
  if waitfor 50 kbd_event; then
    n=$(echo $KEYS | wc -w)
    e2e-evkeys $ev $n 15000 > /tmp/keys2.out 2>&1 & kp=$!
    waitfor 30 grep -q listening /tmp/keys2.out
    wait_host client-keyboard
    wait $kp
    got=$(sed -n 's/^keys *//p' /tmp/keys2.out)
    [ "$got" = "$KEYS" ] && pass client-keyboard-keys "$ev codes $got" || fail client-keyboard-keys "$ev want codes '$KEYS' got '$got'"
  else
    fail client-keyboard-keys "no /dev/input/event* for $KBDID"
  fi
fi
out=$($UC port --json 2>&1); echo "$out"
# the storage's port: the last numeric "port" before its "busid" (the remote's port is a string)
sto_port=$(echo "$out" | awk -v b="\"busid\": \"$STO\"" '/"port": [0-9]+,/ {gsub(/[^0-9]/, ""); p=$0} index($0, b) {print p; exit}')
n=$(echo "$out" | grep -c '"state": "used"')
[ "$n" = 2 ] && [ -n "$sto_port" ] && pass client-port "2 ports used, storage on port $sto_port" ||
  fail client-port "want 2 used ports and the storage's port: $(echo $out)"
$UC port
sto_gone() { ! find_dev $STOID >/dev/null; }
if [ -n "$sto_port" ] && out=$(tmo 20 $UC detach --port $sto_port 2>&1) && waitfor 50 sto_gone &&
   [ "$($UC port --json | grep -c '"state": "used"')" = 1 ]; then
  pass client-detach-port "port $sto_port: $(echo $out)"
else fail client-detach-port "port '$sto_port': $(echo $out); $($UC port 2>&1)"; fi
if out=$(tmo 20 $UC detach --all 2>&1) && waitfor 50 gone && [ "$($UC port --json)" = "[]" ]; then
  pass client-detach-all "$(echo $out)"
else fail client-detach-all "$(echo $out); port: $($UC port 2>&1)"; fi

sto_disk() { d=$(find_dev $STOID) && sd=$(ls $d/${d##*/}:1.0/host*/target*/*/block 2>/dev/null | head -1) &&
             [ -n "$sd" ] && [ -b /dev/$sd ]; }
host_md5() { tmo 30 dd if=/dev/$sd bs=65536 skip=$HOST_BLK count=16 2>/dev/null | md5sum | cut -d' ' -f1; }

# ---- `usbipd attach --lima/--docker` (the Mac-side command), with this guest as the VM ------------
# The stand-ins in /opt/vm-tools run here what `usbipd attach` planned, unchanged: `limactl shell`
# runs the command, `docker run` runs it in a mount namespace of its own, from which `nsenter -t 1
# -m` comes back to the guest's (the VM's). The host names resolve as they do in those VMs.
echo "$SERVER host.lima.internal host.docker.internal" >> /etc/hosts
echo "hosts: files dns" > /etc/nsswitch.conf
# /usr/local/bin and /var/log as a VM has them
mkdir -p /usr/local/bin /var/log /opt/usbipd-linux && ln -sf /usr/bin/usbipd /opt/usbipd-linux/usbipd-$(uname -m)-linux
vm_run() { PATH=/opt/vm-tools:$PATH USBIPD_LINUX_CLIENTS=/opt/usbipd-linux tmo 30 usbipd "$@"; }
# vm_attach NAME ARGS...: `usbipd attach --busid STORAGE ARGS`, the host's data read back, then
# `usbipd detach --busid STORAGE` frees the port
vm_attach() {
  local name=$1 out t0; shift
  t0=$(ms)
  if out=$(vm_run attach --busid $STO "$@" 2>&1) && waitfor 200 sto_disk && [ "$(host_md5)" = "$HOSTMD5" ]; then
    pass vm-$name-attach "$(echo $out) -- /dev/$sd md5 ok $(($(ms) - t0)) ms after the command began"
  else fail vm-$name-attach "$(echo $out)"; fi
  if out=$(vm_run detach --busid $STO 2>&1) && waitfor 100 sto_gone && [ "$($UC port --json)" = "[]" ]; then
    pass vm-$name-detach "$(echo $out)"
  else fail vm-$name-detach "$(echo $out); $($UC port 2>&1)"; fi
}
vm_attach lima --lima e2e --remote host.lima.internal:$PORT
vm_attach lima-auto --lima e2e --auto --remote host.lima.internal:$PORT
vm_attach docker --docker --remote host.docker.internal:$PORT
vm_attach docker-auto --docker --auto --remote host.docker.internal:$PORT
# Docker's own recipe (the VM's usbip tool after nsenter); `usbipd client detach --busid` finds
# the port from the record usbip wrote (the UTM recipe's detach)
if out=$(PATH=/opt/vm-tools:$PATH tmo 30 docker run --rm --privileged --pid=host alpine nsenter -t 1 -m -- \
           usbip --tcp-port $PORT attach -r host.docker.internal -b $STO 2>&1) &&
   waitfor 200 sto_disk && [ "$(host_md5)" = "$HOSTMD5" ]; then
  pass vm-docker-usbip-attach "$(echo $out) /dev/$sd md5 ok"
else fail vm-docker-usbip-attach "$(echo $out)"; fi
if out=$(tmo 20 $UC detach --busid $STO 2>&1) && waitfor 100 sto_gone && [ "$($UC port --json)" = "[]" ]; then
  pass vm-client-detach-busid "$(echo $out)"
else fail vm-client-detach-busid "$(echo $out); $($UC port 2>&1)"; fi
for f in /var/log/usbipd-attach-$STO.log /run/docker-stand-in/usbipd-attach-$STO.log; do
  [ -f $f ] && sed "s|^|  ${f##*/}: |" $f
done

# ---- --auto: the disk comes back by itself after the host's server restarts; SIGTERM detaches -----
attaches() { grep -c 'auto: attached' /tmp/auto.log; }
# by hardware id: the host brings its server back with the disk on another busid
usbipd client attach --auto --remote $SERVER:$PORT --hardware-id $STOID > /tmp/auto.log 2>&1 & ap=$!
t0=$(ms)
if waitfor 200 sto_disk && [ "$(host_md5)" = "$HOSTMD5" ]; then
  pass client-auto-attach "/dev/$sd md5 ok $(($(ms) - t0)) ms after start"
  if wait_host server-restart; then
    t0=$(ms)  # the host answers once its new server listens
    back() { [ "$(attaches)" -ge 2 ] && sto_disk; }
    if waitfor 300 back; then
      t1=$(ms); got=$(host_md5)
      losses=$(grep -c 'is free' /tmp/auto.log)  # exactly one: the restart, no false alarm
      busids=$(grep 'auto: attached' /tmp/auto.log | sed 's/.*auto: attached \([^ ]*\) .*/\1/' | tr '\n' ' ')
      set -- $busids
      [ "$got" = "$HOSTMD5" ] && [ "$losses" = 1 ] && [ "$1" = $STO ] && [ -n "$2" ] && [ "$2" != "$1" ] &&
        pass client-auto-reattach "/dev/$sd back $((t1 - t0)) ms after the server returned, busid $1 then $2, md5 $got" ||
        fail client-auto-reattach "/dev/$sd back, md5 $got (host wrote $HOSTMD5), $losses losses logged (want 1), busids attached: $busids"
    else fail client-auto-reattach "not back 30 s after the server returned"; fi
  else fail client-auto-reattach "host never answered GO server-restart"; fi
else fail client-auto-attach "no disk with the host's data in 20 s"; fi
kill -TERM $ap; wait $ap; rc=$?
if [ $rc = 0 ] && grep -q 'auto: detached port' /tmp/auto.log && waitfor 50 gone && [ "$(usbipd client port --json)" = "[]" ]; then
  pass client-auto-sigterm-detach "exit $rc, ports free"
else fail client-auto-sigterm-detach "exit $rc; $(usbipd client port 2>&1)"; fi
sed 's/^/  auto.log: /' /tmp/auto.log

# ---- USB/IP in TLS: usbipd client attach --tls (pairing, relay, trust, changed server key) -------
if [ -n "$TLS_PORT" ]; then
  TLSR="--remote $SERVER:$TLS_PORT --hardware-id $STOID"
  # kernel TLS (AES-GCM): the crypto templates are loaded here, as the guest has no module autoload
  for m in tls gcm ghash-generic ctr; do modprobe $m || echo "modprobe $m failed"; done
  # a client whose key the server does not trust: refused before any device is listed
  out=$(tmo 30 $UC attach --tls $TLSR --fingerprint $TLS_FP --state-dir /tmp/tls-stranger 2>&1); rc=$?
  if [ $rc != 0 ] && echo "$out" | grep -q "does not trust this client's key" && [ "$($UC port --json)" = "[]" ]; then
    pass tls-untrusted-refused "exit $rc: $(echo $out | tail -c 300)"
  else fail tls-untrusted-refused "exit $rc: $(echo $out)"; fi
  wait_host tls-refused
  # read throughput of the same disk region (16 MiB, page cache dropped) per path, for the report
  read_rate() { sync; echo 3 > /proc/sys/vm/drop_caches; local t0=$(ms)
    tmo 60 dd if=/dev/$sd of=/dev/null bs=65536 count=256 2>/dev/null
    awk -v ms=$(($(ms) - t0)) 'BEGIN { printf "%.1f", 16000 / (ms > 0 ? ms : 1) }'; }
  rate_plain=- rate_relay=- rate_ktls=-
  if tmo 30 $UC attach --remote $SERVER:$PORT --hardware-id $STOID > /dev/null 2>&1 && waitfor 200 sto_disk; then
    rate_plain=$(read_rate)
  fi
  $UC detach --all > /dev/null 2>&1; waitfor 50 gone
  # the pairing code registers this client's key; the import goes through the TLS relay
  t0=$(ms)
  $UC attach --tls $TLSR --pair $TLS_CODE --fingerprint $TLS_FP --no-kernel-tls --state-dir /tmp/tls-client > /tmp/tls.log 2>&1 & tp=$!
  if waitfor 200 sto_disk; then
    pass tls-pair-attach "$(tr '\n' ' ' < /tmp/tls.log | tail -c 400) disk /dev/$sd after $(($(ms) - t0)) ms"
    got=$(host_md5)
    [ "$got" = "$HOSTMD5" ] && pass tls-storage-read-host-data "/dev/$sd md5 $got" ||
      fail tls-storage-read-host-data "/dev/$sd md5 $got, host wrote $HOSTMD5"
    yes "usbipd-e2e raw sector pattern 0123456789abcdef" | head -c 1048576 > /tmp/raw.bin
    want=$(md5sum < /tmp/raw.bin | cut -d' ' -f1)
    got=$(tmo 30 dd if=/dev/$sd bs=65536 skip=$RAW_BLK count=16 2>/dev/null | md5sum | cut -d' ' -f1)
    [ "$got" = "$want" ] && pass tls-storage-raw-sectors "md5 $got" || fail tls-storage-raw-sectors "md5 $got, want $want"
    rate_relay=$(read_rate)
  else fail tls-pair-attach "no disk in 20 s: $(tr '\n' ' ' < /tmp/tls.log)"; fi
  # detach: the kernel frees the port, the relay ends, the attach command exits
  $UC detach --all > /dev/null 2>&1
  relay_done() { ! kill -0 $tp 2>/dev/null; }
  if waitfor 100 relay_done && waitfor 50 gone && [ "$($UC port --json)" = "[]" ]; then
    wait $tp; pass tls-detach "relay exited $?"
  else fail tls-detach "relay still running or port in use: $($UC port 2>&1)"; kill $tp 2>/dev/null; fi
  # again without the code or the pin (the key is trusted now, the server's key known), and with
  # kernel TLS: the command exits once vhci-hcd has the socket with the session's keys
  out=$(tmo 30 $UC attach --tls $TLSR --state-dir /tmp/tls-client 2>&1); rc=$?
  if [ $rc = 0 ] && waitfor 200 sto_disk && [ "$(host_md5)" = "$HOSTMD5" ]; then
    pass tls-reattach-trusted "$(echo $out | tail -c 300)"
    rate_ktls=$(read_rate)
    echo "$out" | grep -q "(kernel TLS)" && pass tls-kernel-tls "vhci-hcd reads the disk through kernel TLS: $(echo $out | tail -c 200)" ||
      fail tls-kernel-tls "not kernel TLS: $(echo $out)"
  else fail tls-reattach-trusted "exit $rc: $(echo $out)"; fail tls-kernel-tls "no attach"; fi
  $UC detach --all > /dev/null 2>&1; waitfor 50 gone
  # --auto over TLS: when the port is freed (here by `client detach`) it attaches again, with a
  # new TLS handshake against the pinned server key; SIGTERM detaches and ends it
  $UC attach --tls --auto $TLSR --state-dir /tmp/tls-client > /tmp/tls-auto.log 2>&1 & ap=$!
  handshakes() { grep -c "TLS session established" /tmp/tls-auto.log; }
  if waitfor 200 sto_disk && [ "$(host_md5)" = "$HOSTMD5" ]; then
    pass tls-auto-attach "$(grep 'auto: attached' /tmp/tls-auto.log | tail -c 200)"
    $UC detach --all > /dev/null 2>&1
    twice() { [ "$(handshakes)" -ge 2 ] && sto_disk; }
    if waitfor 200 twice && [ "$(host_md5)" = "$HOSTMD5" ]; then
      pass tls-auto-reattach "$(handshakes) TLS handshakes, disk data checked"
    else fail tls-auto-reattach "$(handshakes) handshakes: $(tr '\n' ' ' < /tmp/tls-auto.log | tail -c 600)"; fi
  else fail tls-auto-attach "no disk with the host's data: $(tr '\n' ' ' < /tmp/tls-auto.log | tail -c 600)"
    fail tls-auto-reattach "no first attach"; fi
  kill -TERM $ap; wait $ap; rc=$?
  if [ $rc = 0 ] && grep -q 'auto: detached port' /tmp/tls-auto.log && waitfor 50 gone && [ "$($UC port --json)" = "[]" ]; then
    pass tls-auto-sigterm-detach "exit $rc, ports free"
  else fail tls-auto-sigterm-detach "exit $rc; $($UC port 2>&1)"; fi
  ratio() { awk -v a=$1 -v b=$rate_plain 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
  echo "TLS-BENCH guest read of 16 MiB through vhci-hcd: plain $rate_plain MiB/s, TLS relay $rate_relay MiB/s (ratio $(ratio $rate_relay)), kernel TLS $rate_ktls MiB/s (ratio $(ratio $rate_ktls))"
  # the server's key changes: the client refuses it, naming the old and the new key
  wait_host tls-rekey
  out=$(tmo 30 $UC attach --tls $TLSR --state-dir /tmp/tls-client 2>&1); rc=$?
  if [ $rc != 0 ] && echo "$out" | grep -q "KEY CHANGED" && echo "$out" | grep -qF "known $TLS_FP, now SHA256:" &&
     [ "$($UC port --json)" = "[]" ]; then
    pass tls-changed-key-refused "exit $rc: $(echo $out | tail -c 300)"
  else fail tls-changed-key-refused "exit $rc: $(echo $out)"; fi
  wait_host tls-wire
fi

if [ $FAILED != 0 ]; then echo "=== guest dmesg (tail)"; dmesg | tail -80; fi
t "done"
echo "E2E DONE failed=$FAILED"
