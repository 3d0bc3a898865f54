#!/bin/sh
# Installs what the Parquet data lake's tests (tests/parquet.rs) read the files back
# with: the python packages duckdb and pyarrow, for the python3 the tests call (the
# first on PATH). Idempotent: does nothing when both import already. Wheels only, with
# a time limit on every network step; prints how long it took.
set -eu

start=$(date +%s)
done_in() { echo "install-parquet: $(( $(date +%s) - start )) s"; }
if python3 -c 'import duckdb, pyarrow' >/dev/null 2>&1; then
    echo "duckdb and pyarrow already installed for $(command -v python3)"
    done_in
    exit 0
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
    timeout 300 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq python3-pip >/dev/null
fi
pip_install() {
    timeout 600 python3 -m pip install --quiet --disable-pip-version-check \
        --only-binary=:all: --timeout 60 "$@" duckdb pyarrow
}
# Debian's own python3 refuses pip outside a virtualenv (PEP 668); these are test
# readers on a CI machine, so install them anyway there.
pip_install || pip_install --break-system-packages
python3 -c 'import duckdb, pyarrow; print("duckdb", duckdb.__version__, "pyarrow", pyarrow.__version__)'
done_in
