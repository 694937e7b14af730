#!/usr/bin/env bash
# dist/build.sh TARGET: static release builds of certrelayd and certrelay for a router or
# a small VPS, from this x86_64 Debian machine.
#
# TARGET is one of
#   aarch64-unknown-linux-musl        64-bit ARM (most current routers, Raspberry Pi 3/4/5)
#   armv7-unknown-linux-musleabihf    32-bit ARM with hardware floating point
#   x86_64-unknown-linux-musl         a PC, a VPS; static, runs on any distribution
#   mipsel-unknown-linux-musl         32-bit little-endian MIPS (MT7621 and older routers)
# mips-unknown-linux-musl (big-endian) is refused with the reason: see dist/README.md.
#
# How the standard library comes:
#   - the rustup target (rust-std), added when missing: aarch64, armv7, x86_64;
#   - otherwise (mipsel is tier 3 and has none; armv7's download can fail) a nightly
#     toolchain with the rust-src component builds it (`cargo +nightly -Z build-std`). Rust's
#     musl targets then lack the C library and start files their rust-std brings, so
#     Debian's musl-dev for that architecture is fetched with apt-get into
#     target/cross-sysroot/TARGET (a private apt state: the system's dpkg architectures
#     are not changed), and the cross gcc's libgcc_eh stands in for libunwind.
# Debian's C cross compiler (gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf,
# gcc-mipsel-linux-gnu; plain gcc for x86_64) compiles ring's C and assembly code and
# drives the link; it is installed with apt-get when missing.
#
# The release profile (root Cargo.toml: opt-level "z", lto, one codegen unit, panic =
# "abort", strip) makes small stripped binaries. The last line printed is the folder that
# holds them.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:-}
tier3=
static=
case "$target" in
  aarch64-unknown-linux-musl)
    gcc=aarch64-linux-gnu-gcc pkgs="gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
    debarch=arm64 muslarch=aarch64-linux-musl ;;
  armv7-unknown-linux-musleabihf)
    gcc=arm-linux-gnueabihf-gcc pkgs="gcc-arm-linux-gnueabihf libc6-dev-armhf-cross"
    debarch=armhf muslarch=arm-linux-musleabihf ;;
  x86_64-unknown-linux-musl)
    gcc=gcc pkgs="gcc libc6-dev" debarch=amd64 muslarch=x86_64-linux-musl ;;
  mipsel-unknown-linux-musl)
    gcc=mipsel-linux-gnu-gcc pkgs="gcc-mipsel-linux-gnu libc6-dev-mipsel-cross"
    # Rust's MIPS musl targets link dynamically unless told (OpenWrt's musl is shared).
    debarch=mipsel muslarch=mipsel-linux-musl tier3=1 static="-C target-feature=+crt-static" ;;
  mips-unknown-linux-musl)
    echo "dist/build.sh: mips-unknown-linux-musl cannot be built here: it is tier 3 (no" >&2
    echo "  rust-std), and Debian dropped its big-endian mips port after Debian 10, so there" >&2
    echo "  is no musl-dev:mips (libc.a, crt1.o) to link with. Build it in the OpenWrt SDK" >&2
    echo "  (dist/openwrt/Makefile), whose toolchain has a MIPS musl libc." >&2
    exit 1
    ;;
  *)
    echo "usage: dist/build.sh TARGET" >&2
    echo "  TARGET: aarch64-unknown-linux-musl, armv7-unknown-linux-musleabihf," >&2
    echo "          x86_64-unknown-linux-musl or mipsel-unknown-linux-musl" >&2
    exit 2
    ;;
esac

apt_install() { # PACKAGE... (those not installed yet)
  local missing= pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed' \
      || missing="$missing $pkg"
  done
  [ -n "$missing" ] || return 0
  echo "installing$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $missing
}

# The standard library: the rustup target, else nightly's rust-src.
cargo=(cargo)
why_not_rustup=
if [ -n "$tier3" ]; then
  why_not_rustup="$target is a tier 3 target: rustup has no rust-std for it"
elif ! rustup target list --installed | grep -qx "$target"; then
  echo "adding the Rust target $target" >&2
  if ! err=$(rustup target add "$target" 2>&1); then
    why_not_rustup="\`rustup target add $target\` failed: $(printf '%s\n' "$err" \
      | grep -m 1 '^error' || printf '%s\n' "$err" | tail -n 1)"
  fi
fi
if [ -n "$why_not_rustup" ]; then
  nightly_src=
  if sysroot=$(rustup run nightly rustc --print sysroot 2>/dev/null); then
    nightly_src=$sysroot/lib/rustlib/src/rust/library
  fi
  if [ -z "$nightly_src" ] || [ ! -d "$nightly_src/std" ]; then
    echo "dist/build.sh: cannot build $target:" >&2
    echo "  $why_not_rustup," >&2
    if [ -z "$nightly_src" ]; then
      echo "  and there is no nightly toolchain to build the standard library with." >&2
    else
      echo "  and the nightly toolchain lacks the rust-src component." >&2
    fi
    echo "  Needed: either the rustup target (its rust-std download), or" >&2
    echo "  \`rustup toolchain install nightly --component rust-src\`." >&2
    exit 1
  fi
  echo "$why_not_rustup; building the standard library with nightly's rust-src" >&2
  cargo=(cargo +nightly -Z build-std=std,panic_abort)
fi

# cc-rs (ring's build script) reads CC_<target>; cargo reads the linker per target.
apt_install $pkgs
triple_env=$(echo "$target" | tr 'a-z-' 'A-Z_')
export "CC_${target//-/_}=$gcc"
export "CARGO_TARGET_${triple_env}_LINKER=$gcc"

if [ ${#cargo[@]} -gt 1 ]; then
  # What rust-std would have brought: musl's libc.a and start files, and a libunwind.a.
  sysroot=$PWD/target/cross-sysroot/$target
  lib=$sysroot/lib
  if [ ! -f "$lib/libc.a" ]; then
    apt=$sysroot/apt
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/etc/parts" "$lib"
    : >"$apt/status"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]" \
      "http://deb.debian.org/debian bookworm main" >"$apt/etc/sources.list"
    opts=(-o "APT::Architecture=$debarch" -o "APT::Architectures::=$debarch"
      -o "Dir::State::Lists=$apt/lists" -o "Dir::State::status=$apt/status"
      -o "Dir::Cache=$apt/cache" -o "Dir::Etc::SourceList=$apt/etc/sources.list"
      -o "Dir::Etc::SourceParts=$apt/etc/parts" -o "APT::Sandbox::User=root")
    echo "fetching Debian's musl-dev:$debarch (musl's libc.a and start files)" >&2
    apt-get "${opts[@]}" update -q >&2
    (cd "$apt" && apt-get "${opts[@]}" download "musl-dev:$debarch" >&2)
    rm -rf "$sysroot/deb"
    dpkg-deb -x "$apt"/musl-dev_*_"$debarch".deb "$sysroot/deb"
    cp "$sysroot/deb/usr/lib/$muslarch"/{crt1.o,crti.o,crtn.o,rcrt1.o,Scrt1.o,libc.a} "$lib/"
  fi
  # std's unwind crate links a static libunwind for musl; with panic = "abort" only
  # backtraces use it, and gcc's own unwinder (libgcc_eh) does that, with musl's answer
  # to the glibc call it makes (dist/musl/dl_find_object.c).
  if [ ! -f "$lib/libunwind.a" ] || [ dist/musl/dl_find_object.c -nt "$lib/libunwind.a" ]; then
    cp "$("$gcc" -print-file-name=libgcc_eh.a)" "$lib/libunwind.a.new"
    "$gcc" -Os -fPIC -Wall -Wextra -Werror -c dist/musl/dl_find_object.c -o "$lib/dl_find_object.o"
    ar rs "$lib/libunwind.a.new" "$lib/dl_find_object.o"
    mv "$lib/libunwind.a.new" "$lib/libunwind.a"
  fi
  # No self-contained start files (there are none in the toolchain for this target):
  # gcc finds musl's crt1.o and the rest first in -B, libc.a and libunwind.a in -L.
  flags="-C link-self-contained=no -L native=$lib -C link-arg=-B$lib${static:+ $static}"
  export "CARGO_TARGET_${triple_env}_RUSTFLAGS=$flags"
fi

started=$(date +%s)
"${cargo[@]}" build --release --locked --target "$target" -p certrelayd -p certrelay >&2
out=target/$target/release
for bin in certrelayd certrelay; do
  # The profile strips; this only says so (and fails when a binary is missing).
  file "$out/$bin" | sed 's/, BuildID[^,]*//' >&2
  if ! file "$out/$bin" | grep -q 'statically linked'; then
    echo "dist/build.sh: $out/$bin is not statically linked" >&2
    exit 1
  fi
done
echo "built in $(($(date +%s) - started)) s" >&2
realpath "$out"
