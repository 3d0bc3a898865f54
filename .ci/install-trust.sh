#!/bin/sh
# Installs the openssl command, which the embedded broker's TLS listener test uses to
# make a self-signed certificate. Idempotent: does nothing when it is on PATH.
set -eu

if command -v openssl >/dev/null 2>&1; then
    echo "openssl already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y openssl
openssl version
