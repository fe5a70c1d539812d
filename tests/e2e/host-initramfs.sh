# Sourced by run-host.sh and bench-host.sh (after binary.sh): builds $E2E/initramfs-host.cpio.gz, the
# host-passthrough guest (guest/host-init.sh as /init, guest/host-bench.sh for its bench mode), with
# xhci and usbip-host, our server (stripped: the release build keeps debug info) and the kernel's
# usbipd; rebuilt only when an input changed.
# udevd for the guest's hotplug checks with udevd running: Debian's udev package, unpacked (udevadm
# is systemd-udevd too, and needs no libsystemd-shared)
if [ ! -x "$E2E/udev/bin/udevadm" ]; then
  echo "setup: downloading udev" >&2
  rm -f "$E2E"/debs/udev_*.deb
  (cd "$E2E/debs" && timeout 600 apt-get download -q udev >&2)
  rm -rf "$E2E/udev" && dpkg-deb -x "$E2E"/debs/udev_*.deb "$E2E/udev"
fi
mkdir -p "$E2E/host"
strip -o "$E2E/host/usbipd.new" "$BIN"
cmp -s "$E2E/host/usbipd.new" "$E2E/host/usbipd" && rm "$E2E/host/usbipd.new" ||
  mv "$E2E/host/usbipd.new" "$E2E/host/usbipd"
HOST_FILES=("$E2E/host/usbipd" /usr/sbin/usbipd "$E2E/bin/e2e-evkeys" "$E2E/bin/e2e-hidread"
            "$E2E/bin/e2e-usbreset" "$E2E/udev/bin/udevadm" "$HERE/guest/host-bench.sh")
stamp=$( { echo "$KVER"; cat "$HERE/build-initramfs.sh" "$HERE/guest/host-init.sh" "$HERE/guest/lib.sh";
           sha256sum "${HOST_FILES[@]}" /bin/busybox /usr/sbin/usbip; } | sha256sum | cut -d' ' -f1)
if [ ! -f "$E2E/initramfs-host.cpio.gz" ] || [ "$(cat "$E2E/initramfs-host.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "setup: building initramfs-host" >&2
  KVER=$KVER EXTRA_MODS="xhci-pci usbip-host" INIT="$HERE/guest/host-init.sh" \
    "$HERE/build-initramfs.sh" "$E2E/kernel" "$E2E/initramfs-host.cpio.gz" "${HOST_FILES[@]}"
  echo "$stamp" > "$E2E/initramfs-host.stamp"
fi
