#!/bin/sh
# The whole test suite, from a bare Debian 12 machine: installs dependencies,
# builds with -Werror under ASan+UBSan, runs the cmocka unit tests, the libFuzzer
# targets briefly, the integration tests against the real ternd (paho,
# mosquitto clients, MQTT.js), a smoke run of the benchmark harness and the fault
# suite (a three-node cluster in network namespaces; needs root, skipped otherwise).
#
#   tests/run.sh            everything
#   TERN_FUZZ_SECONDS=N     seconds per fuzz target (default 20)
#   TERN_SKIP="fuzz bench"  skip stages (unit, fuzz, integration, bench, fault)
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
FUZZ_SECONDS=${TERN_FUZZ_SECONDS:-15}
SKIP=${TERN_SKIP:-}
JOBS=$(nproc 2>/dev/null || echo 2)

skip() { case " $SKIP " in *" $1 "*) return 0 ;; esac; return 1; }
stage() { printf '\n=== %s ===\n' "$*"; }

stage "dependencies"
"$ROOT/deploy/install-deps.sh"

stage "build (ASan + UBSan, -Werror)"
cmake -S "$ROOT" -B "$ROOT/build-asan" -DCMAKE_BUILD_TYPE=Debug -DTERN_SANITIZE=ON >/dev/null
cmake --build "$ROOT/build-asan" -j"$JOBS"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

if ! skip unit; then
    stage "unit tests (cmocka)"
    ctest --test-dir "$ROOT/build-asan" --output-on-failure -j"$JOBS"
fi

if ! skip fuzz; then
    stage "fuzz targets (${FUZZ_SECONDS}s each)"
    CC=clang cmake -S "$ROOT" -B "$ROOT/build-fuzz" -DCMAKE_BUILD_TYPE=Debug -DTERN_FUZZ=ON >/dev/null
    cmake --build "$ROOT/build-fuzz" -j"$JOBS" --target fuzz_codec fuzz_cmd fuzz_snapshot fuzz_tls fuzz_pwfile fuzz_acl fuzz_proxy fuzz_ws fuzz_scram fuzz_lz4 fuzz_frames fuzz_beacon
    for t in codec cmd snapshot tls pwfile acl proxy ws scram lz4 frames beacon; do
        corpus="$ROOT/build-fuzz/corpus-$t"
        mkdir -p "$corpus"
        [ -d "$ROOT/tests/fuzz/corpus/$t" ] && cp -n "$ROOT/tests/fuzz/corpus/$t"/* "$corpus"/ 2>/dev/null || true
        "$ROOT/build-fuzz/fuzz_$t" -max_total_time="$FUZZ_SECONDS" -print_final_stats=0 \
            -artifact_prefix="$ROOT/build-fuzz/crash-$t-" "$corpus" >"$ROOT/build-fuzz/fuzz_$t.log" 2>&1 ||
            { tail -40 "$ROOT/build-fuzz/fuzz_$t.log"; echo "fuzz_$t: FAILED"; exit 1; }
        echo "fuzz_$t: ok ($(grep -c . "$ROOT/build-fuzz/fuzz_$t.log") log lines)"
    done
fi

if ! skip integration; then
    stage "integration tests (real ternd; paho, mosquitto clients, MQTT.js)"
    TERN_BIN="$ROOT/build-asan/ternd" /usr/bin/python3 -m pytest -q "$ROOT/tests/integration"
fi

if ! skip bench; then
    if [ -x "$ROOT/tests/bench/smoke.sh" ]; then
        stage "benchmark harness smoke run (no speed asserted)"
        cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
        cmake --build "$ROOT/build" -j"$JOBS"
        "$ROOT/tests/bench/smoke.sh"
    fi
fi

if ! skip fault; then
    # A RelWithDebInfo ternd (build/, as the bench stage): the suite's bounds are
    # timings and CPU shares, which ASan's slowdown would distort.
    stage "fault suite (partitions, loss, kill -9, SIGSTOP; docs/reliability.md)"
    "$ROOT/tests/fault/run.sh"
fi

stage "all tests passed"
