#!/bin/sh
# Installs what the service-packaging tests use: systemd-analyze (package systemd),
# which checks systemd/centinela.service offline (tests/systemd_unit.rs). Idempotent:
# does nothing when systemd-analyze is already on PATH. No service is started.
set -eu

if command -v systemd-analyze >/dev/null 2>&1; then
    echo "systemd-analyze already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y systemd
systemd-analyze --version | head -n 1
