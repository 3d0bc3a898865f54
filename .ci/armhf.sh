#!/usr/bin/env bash
# Cross-builds centinela for 32-bit Raspberry Pi OS (armhf: Pi 2, 3, Zero 2 W on the
# 32-bit image; target armv7-unknown-linux-gnueabihf) and runs the library's unit tests
# under qemu user-mode emulation, as .ci/aarch64.sh does for 64-bit. Idempotent:
# installs the cross linker, qemu and the Rust target only when missing, and prints how
# long each part took.
#
#   .ci/armhf.sh                 # cargo test --target armv7-unknown-linux-gnueabihf --lib
#   .ci/armhf.sh build --release # any other cargo command for the target
#
# The binary of a release build is target/armv7-unknown-linux-gnueabihf/release/centinela.
# (The original Pi Zero and Pi 1 are ARMv6: this binary does not run there.)
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=armv7-unknown-linux-gnueabihf
t0=$(date +%s)
mark() { echo "== [armhf +$(( $(date +%s) - t0 ))s] $*"; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

if ! command -v arm-linux-gnueabihf-gcc >/dev/null 2>&1 || ! command -v qemu-arm-static >/dev/null 2>&1; then
    mark "installing gcc-arm-linux-gnueabihf qemu-user-static"
    timeout 300 $SUDO apt-get update -qq
    timeout 600 $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-arm-linux-gnueabihf qemu-user-static >/dev/null
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
    mark "rustup target add $TARGET"
    timeout 600 rustup target add "$TARGET"
fi

export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER="qemu-arm-static -L /usr/arm-linux-gnueabihf"
# C code in dependencies (SQLite, ring) is compiled with the cross compiler too.
export CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc
export AR_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-ar

if [ "$#" -eq 0 ]; then
    set -- test --lib
fi
cmd=$1
shift
mark "cargo $cmd --target $TARGET $*"
cargo "$cmd" --target "$TARGET" "$@"
mark "done"
