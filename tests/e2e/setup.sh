#!/bin/bash
# Prepares everything the kernel-client e2e suite needs on Debian bookworm (as root): host packages,
# the Debian kernel package, the static guest tools and the initramfs, cached in
# ${USBIPD_E2E_DIR:-<repo>/target/e2e}. Idempotent: skips every step whose output is up to date.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
E2E=${USBIPD_E2E_DIR:-$ROOT/target/e2e}
mkdir -p "$E2E/debs" "$E2E/bin"
log() { echo "setup: $*" >&2; }
export DEBIAN_FRONTEND=noninteractive

# 1. host packages (apt only when something is missing)
need=()
for pair in qemu-system-x86:/usr/bin/qemu-system-x86_64 busybox-static:- cpio:/usr/bin/cpio \
            kmod:/usr/sbin/depmod usbip:/usr/sbin/usbip usbutils:/usr/bin/lsusb gcc:/usr/bin/gcc \
            libc6-dev:/usr/lib/x86_64-linux-gnu/libc.a mtools:/usr/bin/mcopy tshark:/usr/bin/tshark; do
  pkg=${pair%%:*} file=${pair#*:}
  if [ "$file" = - ]; then dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  else [ -e "$file" ] || need+=("$pkg"); fi
done
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  # tshark's wireshark-common asks whether non-root users may capture: no, without asking
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  timeout 300 apt-get update -q >/dev/null
  timeout 600 apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

# 2. the kernel: the non-cloud linux-image-*-amd64 that linux-image-amd64 depends on (cloud has no USB)
kdeb() { ls "$E2E"/debs/linux-image-*-amd64_*.deb 2>/dev/null | grep -v -- -cloud- | head -1; }
if [ -z "$(kdeb)" ]; then
  kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
  KPKG=$(kpkg)
  [ -n "$KPKG" ] || { timeout 300 apt-get update -q >/dev/null; KPKG=$(kpkg); }
  [ -n "$KPKG" ] || { log "cannot resolve linux-image-amd64"; exit 1; }
  log "downloading $KPKG"
  (cd "$E2E/debs" && timeout 600 apt-get download -q "$KPKG" >&2)
fi
KDEB=$(kdeb)
KVER=$(basename "$KDEB" | sed 's/^linux-image-\(.*-amd64\)_.*/\1/')
K=$E2E/kernel
if [ ! -f "$K/.done-$KVER" ]; then
  log "unpacking $KDEB"
  rm -rf "$K" && mkdir -p "$K"
  dpkg-deb -x "$KDEB" "$K"
  depmod -b "$K" "$KVER"
  touch "$K/.done-$KVER"
fi
cmp -s "$K/boot/vmlinuz-$KVER" "$E2E/vmlinuz" 2>/dev/null || cp "$K/boot/vmlinuz-$KVER" "$E2E/vmlinuz"

# 3. static guest tools (our own small C programs)
for src in "$HERE"/guest/*.c; do
  bin=$E2E/bin/$(basename "$src" .c)
  if [ ! -x "$bin" ] || [ "$src" -nt "$bin" ]; then
    log "building $(basename "$bin")"
    gcc -O2 -Wall -static -o "$bin" "$src"
  fi
done

# 4. the initramfs, rebuilt only when one of its inputs changed
#    with our usbipd for `usbipd client` in the guest, as run.sh left it in $E2E/client (stripped)
CLIENT=$(ls "$E2E"/client/usbipd 2>/dev/null || true)
stamp=$( { echo "$KVER"; cat "$HERE/build-initramfs.sh" "$HERE/guest/init.sh" "$HERE/guest/lib.sh" "$HERE"/guest/vm-tools/*;
           sha256sum "$E2E"/bin/* $CLIENT /bin/busybox /usr/sbin/usbip; } | sha256sum | cut -d' ' -f1)
if [ ! -f "$E2E/initramfs.cpio.gz" ] || [ "$(cat "$E2E/initramfs.stamp" 2>/dev/null)" != "$stamp" ]; then
  log "building initramfs"
  KVER=$KVER "$HERE/build-initramfs.sh" "$K" "$E2E/initramfs.cpio.gz" "$E2E"/bin/* $CLIENT
  echo "$stamp" > "$E2E/initramfs.stamp"
fi
echo "$E2E"
