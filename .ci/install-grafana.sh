#!/bin/sh
# Installs what tests/grafana.rs reads the Grafana dashboards with when no Grafana can
# run: the python package grafana-foundation-sdk (Grafana's dashboard model), for the
# python3 the tests call (the first on PATH), at the version grafana/check-dashboards.py
# was written against. Idempotent: does nothing when that version imports already.
# Wheels only, with a time limit on every network step; prints how long it took.
set -eu

SDK_VERSION='1769699998!10.1.0'
start=$(date +%s)
done_in() { echo "install-grafana: $(( $(date +%s) - start )) s"; }
have() {
    python3 -c "import sys, importlib.metadata as m; import grafana_foundation_sdk; sys.exit(m.version('grafana-foundation-sdk') != '$SDK_VERSION')" >/dev/null 2>&1
}
if have; then
    echo "grafana-foundation-sdk $SDK_VERSION already installed for $(command -v python3)"
    done_in
    exit 0
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
    timeout 300 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq python3-pip >/dev/null
fi
pip_install() {
    timeout 600 python3 -m pip install --quiet --disable-pip-version-check \
        --only-binary=:all: --timeout 60 "$@" "grafana-foundation-sdk==$SDK_VERSION"
}
# Debian's own python3 refuses pip outside a virtualenv (PEP 668); this is a test
# reader on a CI machine, so install it anyway there.
pip_install || pip_install --break-system-packages
have
echo "grafana-foundation-sdk $SDK_VERSION"
done_in
