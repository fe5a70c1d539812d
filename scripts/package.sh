#!/usr/bin/env bash
# Packages an already built usbipd for Homebrew and distributions; no build step of its own.
# The service definitions come from the binary itself (`usbipd service-file`), so they are
# exactly what `usbipd extension install` would write.
#
# Usage: scripts/package.sh [BINARY] [OUT_DIR]
#   BINARY   default target/release/usbipd
#   OUT_DIR  default dist
# Environment: TARGET (default: rustc's host triple, else `uname -sm`), HOMEPAGE (the project's
# page, for the Homebrew formula), BASE_URL (where the tarball will be published, for the
# formula; default HOMEPAGE/releases/download/vVERSION), SOURCE_DATE_EPOCH (reproducible tar),
# STATIC=1: also the static Linux binaries (x86_64 and aarch64 musl, scripts/build-static.sh,
# the one build step here; cached in target/static), checked with `file`.
#
# Produces in OUT_DIR:
#   usbipd-VERSION-TARGET.tar.gz         bin/usbipd, lib/systemd/system/usbipd-extension.service
#                                        (ExecStart=/usr/bin/usbipd), share/usbipd/
#                                        dev.usbipd.extension.plist and homebrew.mxcl.usbipd.plist
#                                        (/usr/local/bin/usbipd), docs,
#                                        share/man/man1/*.1, bash/zsh/fish completions
#   usbipd-VERSION-TARGET.tar.gz.sha256
#   usbipd.rb                            Homebrew formula from packaging/homebrew/usbipd.rb.in
# and with STATIC=1:
#   usbipd-VERSION-ARCH-unknown-linux-musl(.sha256)  the static binaries, to drop into a VM or a
#                                        container image; also in the tarball as
#                                        share/usbipd/linux/usbipd-ARCH-linux, where
#                                        `usbipd attach --lima/--docker` finds them
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-$root/target/release/usbipd}"
out="${2:-$root/dist}"

[ -x "$bin" ] || { echo "package.sh: $bin is not an executable (build it first: cargo build --release)" >&2; exit 1; }

version="$("$bin" --version | awk '{print $2}')"
[ -n "$version" ] || { echo "package.sh: cannot read the version from $bin --version" >&2; exit 1; }
if [ -z "${TARGET:-}" ]; then
  TARGET="$(rustc -vV 2>/dev/null | sed -n 's/^host: //p' || true)"
  [ -n "$TARGET" ] || TARGET="$(uname -s | tr 'A-Z' 'a-z')-$(uname -m)"
fi
name="usbipd-$version-$TARGET"
homepage="${HOMEPAGE:-https://example.invalid/usbipd}"
base_url="${BASE_URL:-$homepage/releases/download/v$version}"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
dir="$stage/$name"
mkdir -p "$dir/bin" "$dir/lib/systemd/system" "$dir/share/usbipd" "$dir/share/doc/usbipd" \
         "$dir/share/bash-completion/completions" "$dir/share/zsh/site-functions" \
         "$dir/share/fish/vendor_completions.d"
install -m 0755 "$bin" "$dir/bin/usbipd"
"$bin" service-file systemd --exe /usr/bin/usbipd > "$dir/lib/systemd/system/usbipd-extension.service"
"$bin" service-file launchd --exe /usr/local/bin/usbipd > "$dir/share/usbipd/dev.usbipd.extension.plist"
"$bin" service-file launchd-daemon --exe /usr/local/bin/usbipd > "$dir/share/usbipd/homebrew.mxcl.usbipd.plist"
# Man pages and completions come from the binary's own command-line definition.
"$bin" manpages "$dir/share/man/man1" > /dev/null
"$bin" completions bash > "$dir/share/bash-completion/completions/usbipd"
"$bin" completions zsh > "$dir/share/zsh/site-functions/_usbipd"
"$bin" completions fish > "$dir/share/fish/vendor_completions.d/usbipd.fish"
static_out=()
if [ "${STATIC:-0}" = 1 ]; then
  mkdir -p "$dir/share/usbipd/linux"
  for arch in x86_64 aarch64; do
    target=$arch-unknown-linux-musl
    built=$("$root/scripts/build-static.sh" "$target")
    # `file` says e.g. "ELF 64-bit LSB executable, ARM aarch64, ..., statically linked, stripped"
    desc=$(file -b "$built")
    want=$([ $arch = x86_64 ] && echo x86-64 || echo aarch64)
    case $desc in
      *"$want"*static*) ;;
      *) echo "package.sh: $built is not a static $arch executable: $desc" >&2; exit 1;;
    esac
    echo "$target: $(stat -c %s "$built") bytes: $desc" >&2
    install -m 0755 "$built" "$dir/share/usbipd/linux/usbipd-$arch-linux"
    static_out+=("$built:usbipd-$version-$target")
  done
fi
for doc in README.md ARCHITECTURE.md LICENSE LICENSE-MIT LICENSE-APACHE; do
  [ -f "$root/$doc" ] && install -m 0644 "$root/$doc" "$dir/share/doc/usbipd/"
done

mkdir -p "$out"
tarball="$out/$name.tar.gz"
tar --sort=name --owner=0 --group=0 --numeric-owner \
    --mtime="@${SOURCE_DATE_EPOCH:-0}" -C "$stage" -cf - "$name" | gzip -n > "$tarball"
sha="$(sha256sum "$tarball" | awk '{print $1}')"
echo "$sha  $name.tar.gz" > "$tarball.sha256"

sed -e "s|@VERSION@|$version|g" \
    -e "s|@HOMEPAGE@|$homepage|g" \
    -e "s|@URL@|$base_url/$name.tar.gz|g" \
    -e "s|@SHA256@|$sha|g" \
    "$root/packaging/homebrew/usbipd.rb.in" > "$out/usbipd.rb"

for pair in "${static_out[@]}"; do
  install -m 0755 "${pair%%:*}" "$out/${pair#*:}"
  (cd "$out" && sha256sum "${pair#*:}" > "${pair#*:}.sha256")
  echo "$out/${pair#*:}"
done
echo "$tarball"
echo "$tarball.sha256"
echo "$out/usbipd.rb"
