#!/bin/sh
# PID 1 of the guest benchmark (tests/e2e/bench-guest.sh, not part of the CI suite): the demo disk
# imported by vhci-hcd over each transport in turn -- plain TCP, kernel TLS with the AES-NI/PCLMUL
# gcm(aes) driver, kernel TLS with the generic C driver, and the TLS relay of `usbipd client` --
# in interleaved windows. Each window attaches, reads the disk with O_DIRECT 64 KiB reads (one
# 64 KiB bulk URB each) and 512-byte reads (one small URB each: the latency), then detaches.
# Prints "BENCH window=N path=P read_mibs=X small_read_ms=Y" lines and "BENCH-INFO ..." lines
# (which gcm(aes) driver the kernel TLS socket holds, the negotiated cipher suite).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
if [ $$ = 1 ]; then
  mount -t proc proc /proc
  mount -t sysfs sys /sys
  mount -t devtmpfs dev /dev
  stty -echo 2>/dev/null
  /bin/sh /init
  echo "E2E DONE bench exited rc=$?"
  poweroff -f
fi

SERVER=10.0.2.2 PORT= TLS_PORT= TLS_CODE= TLS_FP= WINDOWS=5 MIB=8 SMALL=200 BS=65536 STOID=1209:0003
PATHS="plain ktls-aesni ktls-generic relay"
for x in $(cat /proc/cmdline); do
  case $x in
    e2e_port=*) PORT=${x#*=};;          e2e_tls_port=*) TLS_PORT=${x#*=};;
    e2e_tls_code=*) TLS_CODE=${x#*=};;  e2e_tls_fp=*) TLS_FP=${x#*=};;
    e2e_windows=*) WINDOWS=${x#*=};;    e2e_mib=*) MIB=${x#*=};;
    e2e_small=*) SMALL=${x#*=};;        e2e_bs=*) BS=${x#*=};;        e2e_paths=*) PATHS=$(echo ${x#*=} | tr , ' ');;
  esac
done
FAILED=0
. /lib.sh
UC="usbipd client"
for m in virtio_pci virtio_net usbip-core vhci-hcd sd_mod tls gcm ghash-generic ctr; do
  modprobe $m || echo "modprobe $m failed"
done
modprobe usb-storage delay_use=0 || echo "modprobe usb-storage failed"
ip link set lo up; ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2
echo "BENCH-INFO cpu flags: $(grep -m1 '^flags' /proc/cpuinfo | grep -o -w 'aes\|pclmulqdq\|avx2\|vaes' | tr '\n' ' ')"

find_sto() {
  for d in /sys/bus/usb/devices/*; do
    case ${d##*/} in *:*|usb*) continue;; esac
    [ "$(cat $d/idVendor 2>/dev/null):$(cat $d/idProduct 2>/dev/null)" = "$STOID" ] && { echo $d; return 0; }
  done
  return 1
}
sto_disk() { d=$(find_sto) && sd=$(ls $d/${d##*/}:1.0/host*/target*/*/block 2>/dev/null | head -1) &&
             [ -n "$sd" ] && [ -b /dev/$sd ]; }
gone() { ! find_sto > /dev/null; }
ms() { awk '{printf "%d", $1 * 1000}' /proc/uptime; }
# busy jiffies (USER_HZ, 10 ms) of all guest CPUs: everything but idle and iowait
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
# the gcm(aes) implementations the kernel has, with their use counts (a kernel TLS socket holds one)
gcm_drivers() { awk '/^name/ {n=$3} /^driver/ {d=$3} /^refcnt/ {r=$3} /^$/ { if (n == "gcm(aes)") printf "%s(refcnt %s) ", d, r }' /proc/crypto; }
aesni() {
  case $1 in
    on) modprobe aesni-intel && modprobe ghash-clmulni-intel;;
    off) rmmod ghash_clmulni_intel aesni_intel 2>/dev/null; ! grep -q 'gcm-aesni' /proc/crypto;;
  esac
}

# the client's key is registered once with the pairing code (through the relay), then trusted
TLSR="--remote $SERVER:$TLS_PORT --hardware-id $STOID"
$UC attach --tls $TLSR --pair $TLS_CODE --fingerprint $TLS_FP --no-kernel-tls > /tmp/pair.log 2>&1 &
if waitfor 300 sto_disk; then
  echo "BENCH-INFO paired: $(tr '\n' ' ' < /tmp/pair.log | tail -c 300)"
else echo "BENCH-FAIL pairing: $(cat /tmp/pair.log)"; fi
$UC detach --all > /dev/null 2>&1; waitfor 100 gone; wait

attach_path() {
  case $1 in
    plain) tmo 30 $UC attach --remote $SERVER:$PORT --hardware-id $STOID > /tmp/att.log 2>&1;;
    ktls-aesni) aesni on && tmo 30 $UC attach --tls $TLSR > /tmp/att.log 2>&1 && grep -q '(kernel TLS)' /tmp/att.log;;
    ktls-generic) aesni off && tmo 30 $UC attach --tls $TLSR > /tmp/att.log 2>&1 && grep -q '(kernel TLS)' /tmp/att.log;;
    relay) $UC attach --tls $TLSR --no-kernel-tls > /tmp/att.log 2>&1 & sleep 1;;
  esac
}

w=1
while [ $w -le $WINDOWS ]; do
  for p in $PATHS; do
    if ! attach_path $p || ! waitfor 300 sto_disk; then
      echo "BENCH-FAIL window=$w path=$p attach: $(tr '\n' ' ' < /tmp/att.log | tail -c 400)"
      $UC detach --all > /dev/null 2>&1; waitfor 100 gone; continue
    fi
    [ $w = 1 ] && echo "BENCH-INFO path=$p $(grep -o 'cipher_suite=[^ ]*' /tmp/att.log) gcm(aes) drivers: $(gcm_drivers)"
    # 64 KiB O_DIRECT reads: each one SCSI READ(10) of 128 sectors, one 64 KiB bulk IN URB
    n=$((MIB * 1048576 / BS))
    c0=$(busy); t0=$(ms); tmo 120 dd if=/dev/$sd of=/dev/null bs=$BS count=$n iflag=direct 2>/tmp/dd1; t1=$(ms); c1=$(busy)
    # 512-byte O_DIRECT reads: the round trip of a small URB (CBW, data, CSW: three URBs each)
    tmo 60 dd if=/dev/$sd of=/dev/null bs=512 count=$SMALL iflag=direct 2>/tmp/dd2; t2=$(ms)
    if ! grep -q "^$n+0 records in" /tmp/dd1 || ! grep -q "^$SMALL+0 records in" /tmp/dd2; then
      echo "BENCH-FAIL window=$w path=$p short read: $(cat /tmp/dd1 /tmp/dd2 | tr '\n' ' ')"
    fi
    awk -v w=$w -v p=$p -v mib=$MIB -v big=$((t1 - t0)) -v small=$((t2 - t1)) -v n=$SMALL -v cpu=$((c1 - c0)) 'BEGIN {
      printf "BENCH window=%d path=%s read_mibs=%.3f small_read_ms=%.3f cpu_ms_per_mib=%.1f wall_ms_per_mib=%.1f\n",
        w, p, mib * 1000 / (big > 0 ? big : 1), small / n, cpu * 10 / mib, big / mib }'
    $UC detach --all > /dev/null 2>&1
    waitfor 100 gone || echo "BENCH-FAIL window=$w path=$p: the port stays in use"
    wait 2>/dev/null  # the relay exits once its port is free
  done
  w=$((w + 1))
done
# the guest's gcm(aes) by itself (tcrypt, sec=0: cycles of 8 operations after 4 warm-ups), with
# the AES-NI driver and with the generic one: 128-bit key, 8192-byte blocks, the first
# (single-request) decryption test
tcrypt_gcm() {
  dmesg -c > /dev/null; modprobe tcrypt mode=211 sec=0 2> /dev/null
  dmesg | awk '/testing speed of gcm\(aes\)/ && /decryption/ {on=1; drv=$0; sub(/.*\(aes\) \(/, "", drv); sub(/\) .*/, "", drv); next}
               /testing speed/ {on=0} on && /128 bit key, 8192 byte/ {want=1} want && /cycles/ {sub(/.*: /, ""); print drv ": " $0; exit}'
}
mhz=$(dmesg | grep -o 'tsc: Detected [0-9.]* MHz' | grep -o '[0-9.]*' | head -1)
for mode in on off; do
  aesni $mode
  tcrypt_gcm | while read -r line; do
    cyc=$(echo "$line" | grep -o 'in [0-9]* cycles' | grep -o '[0-9]*')
    echo "BENCH-INFO tcrypt gcm(aes) $line; $(awk -v c=$cyc -v m=$mhz 'BEGIN { if (c > 0 && m > 0) printf "%.1f ms per MiB at the %s MHz TSC", c / m / 1000 * 128, m }')"
  done
done
echo "E2E DONE bench"
