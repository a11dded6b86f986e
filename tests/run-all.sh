#!/usr/bin/env bash
# Runs every test from zero: the ASan unit tests, then the integration tests against
# BUILD_DIR/wsgate. Ends with the plain line "N passed, M failed"; exits 1 on any failure.
#   tests/run-all.sh [BUILD_DIR]      (default: build)
set -euo pipefail

cd "$(dirname "$0")/.."
build="${1:-build}"
py=/usr/bin/python3
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# counts LOG: prints "N M" from the last "N passed, M failed" line of LOG, or nothing
counts() {
    sed -nE 's/^([A-Za-z_-]+: )?([0-9]+) passed, ([0-9]+) failed.*$/\2 \3/p' "$1" | tail -n 1
}

total_pass=0
total_fail=0

# run NAME CMD...: runs CMD with its output shown and kept, then adds its counts.
# A suite that ends without a count line, or exits non-zero with no failure counted,
# counts as one failure.
run() {
    local name="$1" rc=0 c p f
    shift
    echo "== $name: $*"
    "$@" >"$tmp/$name.log" 2>&1 || rc=$?
    cat "$tmp/$name.log"
    c="$(counts "$tmp/$name.log")"
    if [ -z "$c" ]; then
        echo "$name: no result line (exit $rc)"
        p=0 f=1
    else
        read -r p f <<<"$c"
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
            echo "$name: exit $rc with no failure counted"
            f=1
        fi
    fi
    echo "$name: $p passed, $f failed"
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
}

run unit make --no-print-directory unit
# libFuzzer targets of common/'s parsers: a fixed-seed, fixed-count pass (make fuzz runs longer).
run fuzz tests/fuzz/run.sh "$build" smoke
export WSGATE_BUILD="$build"
run integration "$py" tests/integration/run.py
# A quick version of make bench: small N, one round, checks that every close arrives
# with the right code on wsgate and on the Node peer (figures are not judged here).
run bench-smoke "$py" tests/bench/bench.py --build "$build" --smoke --out "$tmp/bench-smoke"

echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
