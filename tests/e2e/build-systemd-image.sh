#!/bin/bash
# Builds the root disk of the systemd e2e guest: a Debian 12 (bookworm) system from Debian packages
# (mmdebstrap) whose PID 1 is systemd, put into a sparse ext4 image with `mkfs.ext4 -d` (no loop
# mount). The image is cached as OUTDIR/root-<hash of this script>.img, so a rerun with the same
# recipe skips mmdebstrap; it prints the image's path. The kernel, its modules, our server and the
# test script are not in it: the guest's initramfs copies them in at boot (see guest/systemd-init.sh).
# usage: build-systemd-image.sh OUTDIR
set -euo pipefail
OUT=$1
mkdir -p "$OUT"
key=$(sha256sum "$0" | cut -c1-16)
IMG=$OUT/root-$key.img
if [ -f "$IMG" ]; then echo "$IMG"; exit 0; fi
log() { echo "setup: $*" >&2; }
if ! command -v mmdebstrap >/dev/null; then
  log "installing mmdebstrap"
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -q >/dev/null
  timeout 600 apt-get install -y -q --no-install-recommends mmdebstrap >/dev/null
fi
rm -f "$OUT"/root-*.img            # images of older recipes
R=$(mktemp -d "$OUT/rootfs.XXXXXX")
trap 'rm -rf "$R" "$IMG.tmp"' EXIT
log "building the Debian 12 systemd root with mmdebstrap (once per recipe)"
# what the test needs: systemd as PID 1 with udev and journald, kmod for modprobe, the kernel's
# usbip client tool, procps for pgrep; the rest is minbase (bash, coreutils, util-linux, dd)
timeout 1200 mmdebstrap --quiet --mode=root --variant=minbase \
  --include=systemd,systemd-sysv,udev,kmod,usbip,procps \
  --customize-hook='echo e2e-systemd > "$1/etc/hostname"' \
  --customize-hook='ln -sf /dev/null "$1/etc/systemd/system/serial-getty@ttyS0.service"' \
  --customize-hook='ln -sf /dev/null "$1/etc/systemd/system/getty@tty1.service"' \
  --customize-hook='ln -sf /dev/null "$1/etc/systemd/system/systemd-timesyncd.service"' \
  --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/usr/share/doc "$1"/usr/share/man' \
  bookworm "$R" >&2
truncate -s 1G "$IMG.tmp"
mkfs.ext4 -q -F -L e2e-root -d "$R" "$IMG.tmp" >&2
mv "$IMG.tmp" "$IMG"
echo "$IMG"
