#!/bin/sh
# Installs the servers the InfluxDB sink's integration tests start: influxd (1.x, v1
# write API and InfluxQL) and VictoriaMetrics (v2 write API). Idempotent: does nothing
# when both binaries are already on PATH. The packages' services are not started; the
# tests start their own instances on free loopback ports.
set -eu

if command -v influxd >/dev/null 2>&1 && command -v victoria-metrics >/dev/null 2>&1; then
    echo "influxd and victoria-metrics already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y influxdb victoria-metrics
influxd version || true
victoria-metrics -version || true
