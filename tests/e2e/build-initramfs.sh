#!/bin/bash
# Builds the guest initramfs: busybox, the kernel modules the USB/IP client checks need (with their
# dependencies), Debian's usbip tool with its libraries, our guest tools and guest/init.sh as /init.
# usage: KVER=6.1.0-NN-amd64 build-initramfs.sh UNPACKED_KERNEL_DIR OUTPUT.cpio.gz [extra binaries...]
# env: EXTRA_MODS="more modules" (e.g. xhci-pci usbip-host), INIT=guest script (default guest/init.sh).
# Binaries under /usr keep their path; others go to /usr/bin. Dynamic ones get their libraries.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
K=$1 OUT=$2; shift 2
R=$(mktemp -d "${OUT%/*}/rootfs.XXXXXX")
trap 'rm -rf "$R"' EXIT
mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,tmp,run,root,mnt,var,usr/bin,usr/sbin,lib/modules/$KVER}
ln -s ../run "$R/var/run"          # usbip attach records ports in /var/run/vhci_hcd

cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"; done

# tls, gcm, ghash-generic, ctr: kernel TLS (AES-GCM) for `usbipd client attach --tls`
MODS="virtio_pci virtio_net usbip-core vhci-hcd usbhid hid-generic evdev cdc-acm usb-storage sd_mod
      usbtest vfat nls_cp437 nls_ascii nls_utf8 nls_iso8859-1 tls gcm ghash-generic ctr ${EXTRA_MODS:-}"
for m in $MODS; do
  modprobe -d "$K" -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}'
done | sort -u | while read -r f; do
  rel=${f#"$K"/lib/modules/"$KVER"/}
  mkdir -p "$R/lib/modules/$KVER/$(dirname "$rel")"
  cp "$f" "$R/lib/modules/$KVER/$rel"
done
cp "$K/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$R/lib/modules/$KVER/"
depmod -b "$R" "$KVER"

# dynamic usbip tool and its shared libraries; static guest tools as they are
for b in /usr/sbin/usbip "$@"; do
  case $b in /usr/*) dst=$b;; *) dst=/usr/bin/$(basename "$b");; esac
  cp "$b" "$R$dst"
  for l in $(ldd "$b" 2>/dev/null | grep -o '/[^ ]*\.so[^ ]*'); do
    mkdir -p "$R$(dirname "$l")" && cp -L "$l" "$R$l"
  done
done
mkdir -p "$R/usr/share/misc" "$R/usr/share/hwdata"
[ -f /usr/share/misc/usb.ids ] && cp /usr/share/misc/usb.ids "$R/usr/share/misc/" &&
  ln -s ../misc/usb.ids "$R/usr/share/hwdata/usb.ids"
echo 'root:x:0:0:root:/root:/bin/sh' > "$R/etc/passwd"
echo 'root:x:0:' > "$R/etc/group"
# stand-ins for limactl, docker and sudo: the guest plays the VM of `usbipd attach --lima/--docker`
mkdir -p "$R/opt/vm-tools" && cp "$HERE"/guest/vm-tools/* "$R/opt/vm-tools/"
cp "${INIT:-$HERE/guest/init.sh}" "$R/init" && chmod +x "$R/init"
cp "$HERE/guest/lib.sh" "$R/lib.sh"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
