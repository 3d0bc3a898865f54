#!/usr/bin/env bash
# Cross-builds centinela for 64-bit Raspberry Pi OS (aarch64-unknown-linux-gnu) and runs
# the library's unit tests under qemu user-mode emulation. Idempotent: installs the
# cross linker, qemu and the Rust target only when missing.
#
#   .ci/aarch64.sh                 # cargo test --release --target aarch64-unknown-linux-gnu --lib
#   .ci/aarch64.sh build --release # any other cargo command for the target
#
# The unit tests are built in the release profile, as the binary that ships: a release
# build after them (`.ci/deb.sh arm64`) reuses their compiled dependencies. (The
# release profile has no debug assertions or overflow checks; the x86_64 tests in CI
# run with both.) The binary of a release build is
# target/aarch64-unknown-linux-gnu/release/centinela.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || ! command -v qemu-aarch64-static >/dev/null 2>&1; then
    echo "== installing gcc-aarch64-linux-gnu qemu-user-static"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu qemu-user-static >/dev/null
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
    echo "== rustup target add $TARGET"
    rustup target add "$TARGET"
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
# C code in dependencies (SQLite, ring) is compiled with the cross compiler too.
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar

if [ "$#" -eq 0 ]; then
    set -- test --release --lib
fi
cmd=$1
shift
t0=$(date +%s)
echo "== cargo $cmd --target $TARGET $*"
cargo "$cmd" --target "$TARGET" "$@"
echo "== cargo $cmd --target $TARGET $*: $(( $(date +%s) - t0 )) s"
