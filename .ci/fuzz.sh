#!/usr/bin/env bash
# Fuzzes what centinela reads from outside (MQTT payloads, topic mappings, line
# protocol, configuration, replay CSV) with libFuzzer, each target for FUZZ_SECONDS
# (default 30). The corpus in fuzz/corpus/<target> is kept in the repository; what a
# run adds stays in this checkout. A crash fails the run and prints its input.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-30}
t0=$(date +%s)
say() { echo "== [fuzz +$(( $(date +%s) - t0 ))s] $*"; }

if ! rustup toolchain list | grep -q '^nightly'; then
    say "installing the nightly toolchain (libFuzzer needs it)"
    if ! timeout 600 rustup toolchain install nightly --profile minimal; then
        echo "SKIPPED: the nightly toolchain cannot be installed here"
        exit 0
    fi
fi
if ! command -v cargo-fuzz >/dev/null; then
    say "cargo install cargo-fuzz"
    timeout 900 cargo install cargo-fuzz --locked --quiet
fi
# Safe Rust: panics and assertion failures are what is looked for, so no sanitizer
# (it would cost build and run time and find nothing more).
say "build (debug: quick to build, and every overflow check on)"
timeout 1200 cargo +nightly fuzz build --dev --sanitizer none
status=0
for t in decode mapping line_protocol config replay_csv; do
    log=$(mktemp)
    if timeout $(( secs + 120 )) cargo +nightly fuzz run --dev --sanitizer none "$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        runs=$(grep -oP 'stat::number_of_executed_units:\s*\K\d+' "$log" || echo "?")
        rate=$(grep -oP 'stat::average_exec_per_sec:\s*\K\d+' "$log" || echo "?")
        say "$t: $runs runs in ${secs}s ($rate/s), corpus $(ls "fuzz/corpus/$t" | wc -l) inputs, nothing found"
    else
        say "$t: FAILED"
        grep -E "panicked|ERROR|SUMMARY|Test unit written|Base64" "$log" | head -20 || true
        tail -40 "$log"
        status=1
    fi
    rm -f "$log"
done
exit $status
