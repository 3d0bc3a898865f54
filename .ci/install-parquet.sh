#!/bin/sh
# Installs what the Parquet data lake's tests (tests/parquet.rs) read the files back
# with: the python packages duckdb and pyarrow, for the python3 the tests call (the
# first on PATH). Idempotent: does nothing when both import already. Wheels only, with
# a time limit on the download; prints how long it took.
set -eu

start=$(date +%s)
if python3 -c 'import duckdb, pyarrow' >/dev/null 2>&1; then
    echo "duckdb and pyarrow already installed for $(command -v python3) (0 s)"
    exit 0
fi
timeout 600 python3 -m pip install --quiet --disable-pip-version-check \
    --only-binary=:all: --timeout 60 duckdb pyarrow
python3 -c 'import duckdb, pyarrow; print("duckdb", duckdb.__version__, "pyarrow", pyarrow.__version__)'
echo "install-parquet: $(( $(date +%s) - start )) s"
