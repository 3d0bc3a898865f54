#!/usr/bin/env bash
# Builds the Debian packages with cargo-deb (metadata under [package.metadata.deb] in
# Cargo.toml) and, as root with dpkg, installs, checks, removes and purges the amd64 one
# (tests/deb_package.rs). Idempotent: installs cargo-deb only when missing (it stays in
# ~/.cargo/bin for the next run).
#
#   .ci/deb.sh               # amd64 and arm64 packages, then the install test
#   .ci/deb.sh amd64         # only the given architectures (amd64, arm64)
#
# The packages land in target/debian/ (centinela_<version>-1_<arch>.deb).
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
mark "cargo build --release"
cargo build --release --quiet
mkdir -p target/deb-assets
target/release/centinela man | gzip -9n >target/deb-assets/centinela.1.gz
target/release/centinela completions bash >target/deb-assets/centinela.bash
target/release/centinela completions zsh >target/deb-assets/_centinela
target/release/centinela completions fish >target/deb-assets/centinela.fish

debs=()
for arch in $archs; do
    case $arch in
        amd64)
            mark "cargo deb (amd64)"
            out=$(cargo deb --no-build --no-strip)
            ;;
        arm64)
            mark "cross-build for aarch64 (release)"
            bash .ci/aarch64.sh build --release --quiet
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

for deb in "${debs[@]}"; do
    case $deb in
        *_amd64.deb)
            mark "install test: dpkg -i, ExecStartPre, dpkg -r, dpkg --purge"
            # cargo-deb names the package by an absolute path (3.x) or a relative one.
            case $deb in /*) path=$deb ;; *) path=$PWD/$deb ;; esac
            if ! [ -f "$path" ]; then
                echo "no package at $path: cargo deb said $deb" >&2
                exit 1
            fi
            CENTINELA_DEB=$path cargo test --test deb_package -- --nocapture 2>&1
            ;;
    esac
done
mark "done"
