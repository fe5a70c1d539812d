#!/bin/sh
# Stands in for the C compiler and archiver of the Apple targets in scripts/check-apple.sh: ring
# (rustls's crypto) compiles C and assembly in its build script, which needs the macOS SDK that
# Linux does not have. The check only type-checks and lints Rust and never links, so the objects
# and the archive may be empty: this writes the files it is asked for, empty, and succeeds.
out=
for a in "$@"; do
  [ "$out" = next ] && out=$a && continue
  case $a in
    -o) out=next;;
    *.a) : > "$a";;
  esac
done
[ -n "$out" ] && [ "$out" != next ] && : > "$out"
exit 0
