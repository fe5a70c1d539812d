#!/bin/sh
# PID 1 of the systemd guest's initramfs: loads virtio_blk and ext4, mounts the Debian root disk
# (/dev/vda, written to a throw-away QEMU snapshot), copies in what is not part of the cached
# image (this kernel's modules, our server, the test script and its unit), and switch_roots into
# it with systemd as PID 1. The test itself is guest/systemd-test.sh, run by systemd as e2e.service.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
die() {
  echo "E2E CHECK boot-root FAIL $*: block devices '$(ls /sys/block | tr '\n' ' ')'"
  dmesg | tail -8; echo "E2E DONE failed=1"; poweroff -f
}
KVER=$(uname -r)
# crc32c is a soft dependency of ext4 (metadata checksums) that modprobe does not follow
for m in virtio_pci virtio_blk crc32c_generic ext4; do modprobe $m || die "modprobe $m"; done
n=100; while [ ! -b /dev/vda ] && [ $n -gt 0 ]; do usleep 100000; n=$((n - 1)); done
mkdir -p /newroot
mount -t ext4 /dev/vda /newroot || die "cannot mount /dev/vda"
R=/newroot
mkdir -p $R/lib/modules $R/usr/local/bin $R/usr/local/lib
cp -a /lib/modules/$KVER $R/lib/modules/ || die "cannot copy the modules"
cp /usr/bin/usbipd $R/usr/local/bin/usbipd
cp /usr/bin/systemd-test.sh $R/usr/local/bin/e2e-systemd-test
cp /lib.sh $R/usr/local/lib/e2e-lib.sh
cat > $R/etc/systemd/system/e2e.service <<UNIT
[Unit]
Description=usbipd end-to-end test under systemd
After=systemd-udev-trigger.service systemd-udevd.service systemd-journald.service

[Service]
Type=oneshot
TimeoutStartSec=infinity
ExecStart=/usr/local/bin/e2e-systemd-test
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
UNIT
mkdir -p $R/etc/systemd/system/multi-user.target.wants
ln -sf ../e2e.service $R/etc/systemd/system/multi-user.target.wants/e2e.service
echo "E2E BOOT switching to systemd at $(cut -d' ' -f1 /proc/uptime)s"
for d in dev proc sys; do mount -o move /$d $R/$d || die "cannot move /$d"; done
exec switch_root $R /lib/systemd/systemd
