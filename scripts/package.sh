#!/usr/bin/env bash
# Packages an already built usbipd for Homebrew and distributions; no build step of its own.
# The service definitions come from the binary itself (`usbipd service-file`), so they are
# exactly what `usbipd extension install` would write.
#
# Usage: scripts/package.sh [BINARY] [OUT_DIR]
#   BINARY   default target/release/usbipd
#   OUT_DIR  default dist
# Environment: TARGET (default: rustc's host triple, else `uname -sm`), BASE_URL (where the
# tarball will be published, for the Homebrew formula), SOURCE_DATE_EPOCH (reproducible tar).
#
# Produces in OUT_DIR:
#   usbipd-VERSION-TARGET.tar.gz         bin/usbipd, lib/systemd/system/usbipd-extension.service
#                                        (ExecStart=/usr/bin/usbipd), share/usbipd/
#                                        dev.usbipd.extension.plist and homebrew.mxcl.usbipd.plist
#                                        (/usr/local/bin/usbipd), docs,
#                                        share/man/man1/*.1, bash/zsh/fish completions
#   usbipd-VERSION-TARGET.tar.gz.sha256
#   usbipd.rb                            Homebrew formula from packaging/homebrew/usbipd.rb.in
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
base_url="${BASE_URL:-https://example.invalid/usbipd/releases/download/v$version}"

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
    -e "s|@URL@|$base_url/$name.tar.gz|g" \
    -e "s|@SHA256@|$sha|g" \
    "$root/packaging/homebrew/usbipd.rb.in" > "$out/usbipd.rb"

echo "$tarball"
echo "$tarball.sha256"
echo "$out/usbipd.rb"
