#!/bin/sh
# Installs what the Parquet output's tests read the files back with: DuckDB and pyarrow,
# for the python3 the tests call (the first on PATH). Idempotent: does nothing when both
# import already.
set -eu

if python3 -c 'import duckdb, pyarrow' >/dev/null 2>&1; then
    echo "duckdb and pyarrow already installed for $(command -v python3)"
    exit 0
fi
python3 -m pip install --quiet --disable-pip-version-check duckdb pyarrow
python3 -c 'import duckdb, pyarrow; print("duckdb", duckdb.__version__, "pyarrow", pyarrow.__version__)'
