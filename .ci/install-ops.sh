#!/bin/sh
# Installs what the service-packaging and operations tests use: systemd-analyze
# (package systemd), which checks systemd/centinela.service offline
# (tests/systemd_unit.rs), and promtool (package prometheus), which lints what /metrics
# answers (tests/self_metrics.rs). Idempotent: installs only what is not on PATH. No
# service is started (the prometheus package's own service stays stopped where
# policy-rc.d forbids starts, as on CI; elsewhere it is stopped and disabled again).
set -eu

start=$(date +%s)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

missing=""
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
if [ -z "$missing" ]; then
    echo "systemd-analyze and promtool already installed"
    exit 0
fi

timeout 300 $SUDO apt-get update -qq
# shellcheck disable=SC2086 # one word per package
timeout 600 $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
case $missing in
    *prometheus*)
        if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
            $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
        fi
        ;;
esac
systemd-analyze --version | head -n 1
promtool --version 2>&1 | head -n 1
echo "install-ops: $(( $(date +%s) - start )) s"
