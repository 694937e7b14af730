#!/usr/bin/env bash
# dist/build.sh TARGET: static release builds of certrelayd and certrelay for a router or
# a small VPS, from this x86_64 Debian machine.
#
# TARGET is one of
#   aarch64-unknown-linux-musl        64-bit ARM (most current routers, Raspberry Pi 3/4/5)
#   armv7-unknown-linux-musleabihf    32-bit ARM with hardware floating point
#   x86_64-unknown-linux-musl         a PC, a VPS; static, runs on any distribution
# The rustup target is added when missing, and Debian's C cross compiler for ring's C and
# assembly code (gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf; plain gcc for x86_64) is
# installed with apt-get when missing. Rust's musl targets bring their own C library, so
# the GNU cross gcc only compiles ring and drives the link.
#
# The release profile (root Cargo.toml: opt-level "z", lto, one codegen unit, panic =
# "abort", strip) makes small stripped binaries. The last line printed is the folder that
# holds them. MIPS (mipsel/mips musl) is not offered: see dist/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:-}
case "$target" in
  aarch64-unknown-linux-musl)
    gcc=aarch64-linux-gnu-gcc pkgs="gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;;
  armv7-unknown-linux-musleabihf)
    gcc=arm-linux-gnueabihf-gcc pkgs="gcc-arm-linux-gnueabihf libc6-dev-armhf-cross" ;;
  x86_64-unknown-linux-musl) gcc=gcc pkgs="gcc libc6-dev" ;;
  *)
    echo "usage: dist/build.sh TARGET" >&2
    echo "  TARGET: aarch64-unknown-linux-musl, armv7-unknown-linux-musleabihf or" >&2
    echo "          x86_64-unknown-linux-musl" >&2
    exit 2
    ;;
esac

if ! rustup target list --installed | grep -qx "$target"; then
  echo "adding the Rust target $target" >&2
  rustup target add "$target"
fi
missing=
for pkg in $pkgs; do
  dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed' \
    || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  # ring's C code needs only the compiler and a few standard headers (stdint.h, string.h).
  echo "installing$missing for ring's C code" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $missing
fi

# cc-rs (ring's build script) reads CC_<target>; cargo reads the linker per target.
triple_env=$(echo "$target" | tr 'a-z-' 'A-Z_')
export "CC_${target//-/_}=$gcc"
export "CARGO_TARGET_${triple_env}_LINKER=$gcc"

started=$(date +%s)
cargo build --release --locked --target "$target" -p certrelayd -p certrelay >&2
out=target/$target/release
for bin in certrelayd certrelay; do
  # The profile strips; this only says so (and fails when a binary is missing).
  file "$out/$bin" | sed 's/, BuildID[^,]*//' >&2
done
echo "built in $(($(date +%s) - started)) s" >&2
realpath "$out"
