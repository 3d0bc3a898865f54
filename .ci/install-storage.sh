#!/bin/sh
# Installs what the storage fault tests use: the sqlite3 shell (the documented `.recover`
# route for a damaged database) and chattr (e2fsprogs) for an immutable database file.
# The tests mount a small tmpfs and use chattr: they run as root. Idempotent.
set -eu

if command -v sqlite3 >/dev/null 2>&1 && command -v chattr >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y sqlite3 e2fsprogs
