#!/usr/bin/env bash
# Builds the Debian packages with cargo-deb (metadata under [package.metadata.deb] in
# Cargo.toml) and tests them (tests/deb_package.rs): as root with dpkg, the amd64 one is
# installed, checked, removed and purged; the arm64 one is unpacked, compared with the
# amd64 one and its binary run under qemu. Idempotent: installs cargo-deb only when
# missing (it stays in ~/.cargo/bin for the next run). Each part says how long it took.
#
#   .ci/deb.sh               # amd64 and arm64 packages, then their tests
#   .ci/deb.sh amd64         # only the given architectures (amd64, arm64)
#
# The packages land in target/debian/ (centinela_<version>-1_<arch>.deb). The arm64
# build is bounded by DEB_ARM64_TIMEOUT seconds (default 2400).
set -euo pipefail
cd "$(dirname "$0")/.."

t0=$(date +%s)
mark() { echo "== [deb +$(( $(date +%s) - t0 ))s] $*"; }

if ! cargo deb --version >/dev/null 2>&1; then
    mark "cargo install cargo-deb --locked"
    cargo install cargo-deb --locked --quiet
fi
mark "$(cargo deb --version)"

archs=${*:-amd64 arm64}

# The host binary writes the man page and the completions (the same for every
# architecture), so it is built first whatever the packages asked for.
# cargo-deb takes the binaries from cargo's target directory (CARGO_TARGET_DIR when
# set) and the other assets from ./target/deb-assets.
host_bin=${CARGO_TARGET_DIR:-target}/release/centinela
mark "cargo build --release"
cargo build --release --quiet
mkdir -p target/deb-assets
"$host_bin" man | gzip -9n >target/deb-assets/centinela.1.gz
"$host_bin" completions bash >target/deb-assets/centinela.bash
"$host_bin" completions zsh >target/deb-assets/_centinela
"$host_bin" completions fish >target/deb-assets/centinela.fish

debs=()
for arch in $archs; do
    case $arch in
        amd64)
            mark "cargo deb (amd64)"
            out=$(cargo deb --no-build --no-strip)
            ;;
        arm64)
            mark "cross-build for aarch64 (release)"
            timeout "${DEB_ARM64_TIMEOUT:-2400}" bash .ci/aarch64.sh build --release --quiet
            mark "cargo deb (arm64)"
            out=$(cargo deb --no-build --no-strip --target aarch64-unknown-linux-gnu)
            ;;
        *)
            echo "unknown architecture $arch (amd64, arm64)" >&2
            exit 2
            ;;
    esac
    deb=$(printf '%s\n' "$out" | tail -n 1)
    debs+=("$deb")
    size=$(stat -c %s "$deb")
    echo "   $deb: $size bytes ($(( (size + 524288) / 1048576 )) MiB)"
    dpkg-deb --field "$deb" Package Version Architecture Installed-Size Depends | sed 's/^/   /'
done

# The tests take each package by its absolute path (cargo-deb 3.x prints an absolute
# one, older versions a relative one).
test_env=()
for deb in "${debs[@]}"; do
    case $deb in /*) path=$deb ;; *) path=$PWD/$deb ;; esac
    if ! [ -f "$path" ]; then
        echo "no package at $path: cargo deb said $deb" >&2
        exit 1
    fi
    case $path in
        *_amd64.deb) test_env+=("CENTINELA_DEB=$path") ;;
        *_arm64.deb) test_env+=("CENTINELA_DEB_ARM64=$path") ;;
    esac
done
mark "tests/deb_package.rs: amd64 installed (dpkg -i, ExecStartPre, dpkg -r, dpkg --purge); arm64 unpacked and run under qemu"
env "${test_env[@]}" cargo test --test deb_package -- --nocapture 2>&1
mark "done"
