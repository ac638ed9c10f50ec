#!/bin/bash
# Fan-out with and without an ACL file, to see what the per-delivery read check
# costs (issue 16). One publisher, SUBS subscribers on one topic, QoS 0 and 1.
#   tests/bench/acl_fanout.sh [BUILD_DIR] [SUBS] [DURATION_S] [FILTER]
# FILTER: the subscribers' filter ("bench/t/0", the default, is covered by a
# read rule and overlaps no deny rule; "bench/#" overlaps `deny bench/secret/#`,
# so each delivery through it is checked).
# Prints one line per case: ACL or not, QoS, deliveries/s, the broker's CPU time
# per delivery, loss.
set -eu
BUILD=${1:-build}
SUBS=${2:-100}
DUR=${3:-5}
FILTER=${4:-bench/t/0}
W=$(mktemp -d)
PID=
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT INT TERM
cat >"$W/acl" <<ACL
topic readwrite bench/#
topic deny bench/secret/#
topic read \$SYS/#
pattern read devices/%c/#
pattern write devices/%c/out
pattern read users/%u/in
ACL
port=$((20000 + $$ % 20000))
for acl in none file; do
    extra=""
    [ "$acl" = file ] && extra="--set acl_file=$W/acl"
    rm -rf "$W/data"
    mkdir -p "$W/data"
    # shellcheck disable=SC2086
    "$BUILD/ternd" --listen 127.0.0.1:$port --data-dir "$W/data" --log-level warn \
        --set admin_listen=127.0.0.1:0 --set allow_anonymous=true \
        --set inflight_max=65535 --set receive_maximum=65535 $extra \
        2>"$W/log" &
    PID=$!
    i=0
    while ! (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null; do
        i=$((i + 1)); [ $i -gt 200 ] && { cat "$W/log"; exit 1; }; sleep 0.05
    done 2>/dev/null || true
    sleep 0.3
    for q in 0 1; do
        # The broker's CPU time (user + system) per delivery: on a shared machine
        # a steadier figure than deliveries per second.
        cpu0=$(awk '{print $14 + $15}' /proc/$PID/stat)
        "$BUILD/tern-bench" --port $port --pubs 1 --subs "$SUBS" --qos $q --size 16 \
            --duration "$DUR" --warmup 1 --sub-filter "$FILTER" --json >"$W/out.json"
        cpu1=$(awk '{print $14 + $15}' /proc/$PID/stat)
        python3 -c "import json,os; d=json.load(open('$W/out.json')); t=os.sysconf('SC_CLK_TCK'); print('acl=%-4s qos=%d deliveries/s=%9.0f broker_cpu_us/delivery=%.3f loss=%s' % ('$acl', $q, d['received_per_s'], ($cpu1-$cpu0)/t*1e6/max(d['received'],1), d.get('loss')))"
    done
    kill "$PID"; wait "$PID" 2>/dev/null || true
    PID=
done
