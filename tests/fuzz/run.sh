#!/usr/bin/env bash
# Runs every libFuzzer target in BUILD_DIR/fuzz from its seeds in tests/fuzz/seeds.
#   tests/fuzz/run.sh BUILD_DIR smoke     a fixed count of runs with a fixed seed (make test)
#   tests/fuzz/run.sh BUILD_DIR SECONDS   each target for that long (make fuzz)
# Ends with "fuzz: N passed, M failed", one count per target; exits 1 on a failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
build="${1:-build}"
mode="${2:-smoke}"
pass=0
fail=0
for bin in "$build"/fuzz/fuzz_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin")
    corpus="$build/fuzz/corpus/$name"
    mkdir -p "$corpus"
    if [ "$mode" = smoke ]; then
        args=(-runs=30000 -seed=1)
    else
        args=(-max_total_time="$mode")
    fi
    log="$build/fuzz/$name.log"
    if "$bin" "${args[@]}" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$build/fuzz/$name-" "$corpus" "tests/fuzz/seeds/$name" >"$log" 2>&1; then
        echo "PASS $name ($(grep -Eo 'Done [0-9]+ runs' "$log" | tail -1))"
        pass=$((pass + 1))
    else
        echo "FAIL $name: see $log"
        tail -30 "$log"
        fail=$((fail + 1))
    fi
done
if [ $((pass + fail)) -eq 0 ]; then
    echo "no fuzz target built in $build/fuzz"
    fail=1
fi
echo "fuzz: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
