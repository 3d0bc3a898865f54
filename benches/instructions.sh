#!/usr/bin/env bash
# Instructions per reading of decode → rules → SQLite writer for a fixed input
# (examples/per_reading.rs), counted by valgrind: two runs of different lengths,
# subtracted, so start-up cancels out. Usage: benches/instructions.sh [SERIES] [R1] [R2]
# (default 10000 3 8). Needs `cargo build --release --example per_reading` and valgrind.
set -euo pipefail
series=${1:-10000}
r1=${2:-3}
r2=${3:-8}
bin=${PER_READING_BIN:-target/release/examples/per_reading}
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$series" "$1" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
a=$(count "$r1")
b=$(count "$r2")
readings=$(( series * (r2 - r1) ))
echo "series=$series rounds=$r1,$r2 instructions=$a,$b per_reading=$(( (b - a) / readings ))"
