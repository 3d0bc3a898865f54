#!/usr/bin/env bash
# Installs what the notification tests need: aiosmtpd (a real SMTP server, run with
# Debian's /usr/bin/python3) and swaks. Idempotent: does nothing when both are present.
set -euo pipefail

if /usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null && command -v swaks >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq python3-aiosmtpd swaks >/dev/null
/usr/bin/python3 -c 'import aiosmtpd'
