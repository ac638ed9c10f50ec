#!/usr/bin/env bash
# CI smoke test for the benchmark harness: runs compare.sh --quick against the
# brokers that exist and checks that every table has numbers (messages received,
# connections made). Never asserts a speed: the machine is shared and noisy.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TMP=$(mktemp -d /tmp/tern-bench-smoke.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
OUT="$TMP/bench.md"

timeout 300 "$ROOT/tests/bench/compare.sh" --quick --out "$OUT"

cols="mosquitto"
[ -x "${TERND:-$ROOT/build/ternd}" ] && cols="$cols tern"

fail=0
for broker in $cols; do
    # Table rows "| case | metric | tern | mosquitto | ratio |": fields 2..6 for awk.
    col=5
    [ "$broker" = tern ] && col=4
    bad=$(awk -F'|' -v c="$col" '
        /^\| / && NF == 7 && $3 ~ /received msg\/s|deliveries\/s|connected|delivered|connections\/s/ {
            v = $(c); gsub(/ /, "", v)
            n++
            if (v !~ /^[0-9.]+$/ || v + 0 <= 0) print $2 "/" $3 ": " v
        }
        END { if (n < 10) print "only " n " rows with counts" }' "$OUT")
    if [ -n "$bad" ]; then
        echo "smoke: $broker has empty or zero results:" >&2
        echo "$bad" >&2
        fail=1
    else
        echo "smoke: $broker: all scenarios produced counts"
    fi
done
# Scenario 8 (tern only): one value column; every throughput row and the failover
# row (first message after the kill) must have a number.
if [ -x "${TERND:-$ROOT/build/ternd}" ]; then
    bad=$(awk -F'|' '
        /^### 8\)/ { in8 = 1 }
        in8 && /^\| / && NF == 5 && $3 ~ /committed msg\/s|received msg\/s/ {
            v = $4; gsub(/ /, "", v); n++
            if (v !~ /^[0-9.]+$/ || v + 0 <= 0) print $2 "/" $3 ": " v
        }
        in8 && /^\| leader / {
            v = $5; gsub(/ /, "", v); n++
            if (v !~ /^[0-9.]+$/ || v + 0 <= 0) print "failover first message: " v
        }
        END { if (n < 5) print "cluster: only " n " rows with counts" }' "$OUT")
    if [ -n "$bad" ]; then
        echo "smoke: cluster has empty or zero results:" >&2
        echo "$bad" >&2
        fail=1
    else
        echo "smoke: cluster: all cases produced counts"
    fi
fi
# The scale benchmark (tests/bench/scale.py), tiny: 1000 sessions, 500 held. Every
# session must resume with session present and its whole queue (counts, not speed).
if [ -x "${TERND:-$ROOT/build/ternd}" ] && [ -x "$ROOT/build/tern-bench" ]; then
    if timeout 120 python3 "$ROOT/tests/bench/scale.py" --ternd "${TERND:-$ROOT/build/ternd}" \
        --quick --steps 1000 --held 500 --rate 200 --out "$TMP/scale.json" >/dev/null 2>"$TMP/scale.err"; then
        bad=$(python3 - "$TMP/scale.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
bad = []
for s in r["tern"]:
    n = s["sessions"]
    if s["storm_present"] != n or s["storm_complete"] != n or s["queued"] != 10 * n:
        bad.append("tern %d: %s" % (n, s))
for m in r["mosquitto"]:
    if m["resume_present"] != m["sessions"]:
        bad.append("mosquitto: %s" % m)
h = r["held"] or {}
for k in ("persistent", "clean"):
    if k not in h or h[k]["resumed"] != h["sessions"]:
        bad.append("held %s: %s" % (k, h.get(k)))
if not r["tern"]:
    bad.append("no tern step")
print("\n".join(bad))
PY
)
    else
        bad="scale.py failed: $(tail -5 "$TMP/scale.err")"
    fi
    if [ -n "$bad" ]; then
        echo "smoke: scale benchmark:" >&2
        echo "$bad" >&2
        fail=1
    else
        echo "smoke: scale: every session resumed with its queue"
    fi
fi
if [ "$fail" != 0 ]; then
    cat "$OUT" >&2
    exit 1
fi
echo "smoke: ok"
