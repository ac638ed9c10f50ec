#!/bin/sh
# The fault suite (tests/fault/fault.py, docs/reliability.md): a three-node cluster in
# network namespaces under partitions, loss, kills and pauses, with a table per phase.
#
#   tests/fault/run.sh [fault.py options, e.g. --phases loss,sigstop --keep]
#   TERN_BIN      the ternd to test (default: build/ternd, built here RelWithDebInfo)
#
# Needs root and `ip netns`; exits 0 after a clear message where the machine has
# neither (nothing was tested then), 77 with TERN_FAULT_REQUIRED=1. Whatever fault.py
# leaves behind (it cleans up itself, also on failure and Ctrl-C) is removed here too:
# its namespaces and links are named tf<its pid>*.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=/usr/bin/python3

unavailable() {
    echo "fault suite SKIPPED: $*"
    [ "${TERN_FAULT_REQUIRED:-0}" = 1 ] && exit 77
    exit 0
}

# The suite's own checks (loss/reorder accounting, the register history) on made-up
# histories: no root needed.
"$PY" -m pytest -q -p no:cacheprovider "$ROOT/tests/fault/test_checks.py"

[ "$(id -u)" -eq 0 ] || unavailable "needs root (network namespaces, iptables)"
command -v ip >/dev/null 2>&1 || unavailable "no ip command (iproute2)"
command -v iptables >/dev/null 2>&1 || unavailable "no iptables"
probe=tfprobe$$
ip netns add "$probe" 2>/dev/null || unavailable "ip netns add fails here (no network namespaces)"
ip netns del "$probe"

BIN=${TERN_BIN:-}
if [ -z "$BIN" ]; then
    # Not ASan: the suite's bounds are timings and CPU shares, which ASan's 2-3x
    # slowdown would distort; the integration tests run the same code under ASan.
    cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    nice -n 10 cmake --build "$ROOT/build" -j"$(nproc 2>/dev/null || echo 2)" --target ternd
    BIN=$ROOT/build/ternd
fi

# A new leader's memory while a dead peer's address drops SYNs (loopback; skipped for
# a sanitizer build, whose quarantine keeps freed memory): tests/fault/test_dead_peer.py.
TERN_BIN="$BIN" "$PY" -m pytest -q -p no:cacheprovider "$ROOT/tests/fault/test_dead_peer.py"

# The loss/delay helper for kernels without sch_netem (fault.py uses netem if present).
HELPER=$ROOT/build/fault/nfq_netem
mkdir -p "$ROOT/build/fault"
if [ ! -x "$HELPER" ] || [ "$ROOT/tests/fault/nfq_netem.c" -nt "$HELPER" ]; then
    cc -std=c11 -Wall -Wextra -Werror -O2 -o "$HELPER" "$ROOT/tests/fault/nfq_netem.c" \
        -lnetfilter_queue || {
        echo "fault: cannot build nfq_netem (libnetfilter-queue-dev missing?): loss without delay"
        HELPER=
    }
fi

# fault.py's run folder goes under this one, so that the nodes' data (segments of
# 8 MiB each) goes with the namespaces even if fault.py itself was killed.
WORK=$(mktemp -d /tmp/tern-fault-run.XXXXXX)
keep=0
for a in "$@"; do [ "$a" = --keep ] && keep=1; done
child=
cleanup() {
    status=$?
    if [ -n "$child" ]; then
        kill -TERM "$child" 2>/dev/null && wait "$child" 2>/dev/null || true
        for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^tf${child}n" || true); do
            ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
            ip netns del "$ns" 2>/dev/null || true
        done
        for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' |
            grep "^tf${child}\(br\|v[0-9]\)" || true); do
            ip link del "$l" 2>/dev/null || true
        done
        child=
    fi
    # A passing run leaves nothing; a failing one keeps its logs (and copies of
    # crashed nodes' data) for a look, without the nodes' live data; so does --keep.
    if [ "$status" = 0 ] && [ "$keep" = 0 ]; then
        rm -rf "$WORK"
    else
        [ "$keep" = 1 ] || for d in "$WORK"/*/node*/data; do [ -d "$d" ] && rm -rf "$d"; done
        echo "fault suite: logs kept in $WORK" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$PY" "$ROOT/tests/fault/fault.py" --bin "$BIN" ${HELPER:+--netem-helper "$HELPER"} \
    --workdir "$WORK" "$@" &
child=$!
rc=0
wait "$child" || rc=$?
exit "$rc" # cleanup runs on EXIT, and sees rc
