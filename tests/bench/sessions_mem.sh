#!/bin/bash
# Broker memory per persistent session with one subscription (docs/benchmarks.md,
# "Timers and memory at scale"). A fresh ternd gets N MQTT 3.1.1 persistent
# sessions from tern-bench, each subscribed to dev/<i> (QoS 1); prints VmRSS before
# and 1 s after the last SUBACK, and bytes per session, then the same once no
# snapshot is running (the idle figure).
#
#   tests/bench/sessions_mem.sh N [offline|online] [ternd args...]
#
# offline (default): each client disconnects after its SUBACK, so N is not bound
# by file descriptors (only --concurrency connections are open at a time; the
# sources 127.0.0.2-65 keep ephemeral ports and TIME_WAIT apart). online: the N
# connections stay open (N < the fd limit). Environment: TERND (build/ternd),
# TERN_BENCH (build/tern-bench), PORT (18990), INSPECT=1: before stopping the
# broker, also print its Raft log and snapshot metrics, its memory map summary
# and glibc's malloc_stats() (through gdb), to see where the bytes are.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TERND=${TERND:-$ROOT/build/ternd}
BENCH=${TERN_BENCH:-$ROOT/build/tern-bench}
PORT=${PORT:-18990}
N=$1
MODE=${2:-offline}
shift $(($# >= 2 ? 2 : 1))
case "$MODE" in
offline) HOW=--idle-offline ;;
online) HOW=--idle-subscribe ;;
*) echo "mode: offline or online" >&2; exit 2 ;;
esac
WORK=$(mktemp -d /tmp/tern-sessions-mem.XXXXXX)
PID=
trap '[ -z "$PID" ] || { kill $PID 2>/dev/null; wait $PID 2>/dev/null; }; rm -rf "$WORK"' EXIT
"$TERND" --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$((PORT + 1))" \
    --data-dir "$WORK/data" --log-level warn "$@" >"$WORK/ternd.log" 2>&1 &
PID=$!
for _ in $(seq 50); do # up to 5 s for the listener
    grep -q VmRSS /proc/$PID/status 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/$PORT) \
        2>/dev/null && break
    sleep 0.1
done
SRC=$(seq -s, -f "127.0.0.%g" 2 65)
"$BENCH" --port "$PORT" --idle "$N" $HOW --clean 0 --qos 1 --topic-prefix dev \
    --rss-pid $PID --concurrency 300 --duration 2 --source-addrs "$SRC" \
    --connect-timeout 1800 >"$WORK/bench.txt" 2>&1 || true
grep -E "^connected|RSS" "$WORK/bench.txt"
awk -v n="$N" '/broker RSS/ { printf "%.0f bytes per session\n", ($6 - $3) * 1024 / n }' \
    "$WORK/bench.txt"
# The sample above may fall in a snapshot, while the broker holds the snapshot's
# bytes (~110 B a session) for libraft: the idle figure is taken again once no
# snapshot child has run for 2 s (at most 30 s of waiting).
quiet=0
for _ in $(seq 60); do
    if pgrep -P $PID >/dev/null; then quiet=0; else quiet=$((quiet + 1)); fi
    [ $quiet -ge 4 ] && break
    sleep 0.5
done
RSS0=$(awk '/broker RSS/ { print $3 }' "$WORK/bench.txt")
RSS1=$(awk '/VmRSS/ { print $2 }' /proc/$PID/status)
[ -z "$RSS0" ] || awk -v n="$N" -v a="$RSS0" -v b="$RSS1" \
    'BEGIN { printf "settled (no snapshot running): broker RSS %d kB, %.0f bytes per session\n", b, (b - a) * 1024 / n }'
if [ "${INSPECT:-0}" = 1 ]; then
    curl -s "http://127.0.0.1:$((PORT + 1))/metrics" |
        grep -E "^tern_(raft_(last|applied)_index|raft_entries_appended_total|snapshots_taken_total|sessions) "
    grep -E "^(Rss|Anon|AnonHugePages|Private_Dirty)" /proc/$PID/smaps_rollup
    # Every mapping with more than 1 MiB resident: the brk heap, thread arenas, mmaps.
    awk '/^[0-9a-f]+-[0-9a-f]+ / { m = $1 " " $6 } /^Rss:/ && $2 > 1024 { print m, $2 " kB" }' \
        /proc/$PID/smaps
    # The Raft log kept in memory: the entries after the last snapshot's index
    # less raft_snapshot_trailing, whose bytes are in the segments listed here.
    ls -l "$WORK/data/raft" | awk 'NR > 1 && $NF !~ /^open-/ { print $5, $NF }'
    gdb -q -batch -p $PID -ex 'call (void)malloc_stats()' >/dev/null 2>&1
    sleep 0.5
    grep -E "^(Arena|system bytes|in use bytes|Total|max mmap)" "$WORK/ternd.log"
fi
