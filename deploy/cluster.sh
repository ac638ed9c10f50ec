#!/bin/bash
# A local three-node tern cluster on one machine, for development and drills.
#
#   deploy/cluster.sh up                 build if needed, start all nodes, wait until ready
#   deploy/cluster.sh down               stop all nodes (SIGTERM, SIGKILL after 10 s)
#   deploy/cluster.sh status             per node: pid, running, MQTT port (non-zero if any is down)
#   deploy/cluster.sh start|stop|kill|restart N
#   deploy/cluster.sh logs N [-f]        last 100 lines of node N's log (-f follows)
#   deploy/cluster.sh rolling-restart    restart the nodes one at a time, waiting for readiness
#   deploy/cluster.sh wipe               down, then delete the cluster's data directory
#
# Environment (saved by `up` in $TERN_DATA/cluster.env, so later commands need not repeat it):
#   TERN_MQTT_BASE (1883)  TERN_RAFT_BASE (7001)  TERN_PEER_BASE (7101): node i uses BASE+i-1
#   TERN_ADMIN_BASE (8081) the admin HTTP API (admin_listen), if the binary has one
#   TERN_DATA (./.cluster) configs, data and logs, one node$i folder per node; the
#                          admin API's bearer token in admin-token (made by `up`):
#                          ternctl --token-file .cluster/admin-token ...
#   TERN_BIN (build/ternd) the broker binary; only the default one is built here
#   TERN_ELECTION_MS       raft_election_timeout_ms, if set
#   TERN_NODE_TLS (1)      mutual TLS between the nodes (cluster_tls): `up` makes a cluster
#                          CA and one certificate per node in $TERN_DATA/pki
#                          (deploy/node-certs.sh); 0 = plain TCP between the nodes
#   TERN_WAIT_S (30)       how long up/start/restart wait for readiness
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NODES="1 2 3"
HOST=127.0.0.1
STOP_WAIT_S=10
PY=/usr/bin/python3

usage() {
    cat >&2 <<'EOF'
usage: cluster.sh up | down | status | rolling-restart | wipe
       cluster.sh start N | stop N | kill N | restart N     (N is 1, 2 or 3)
       cluster.sh logs N [-f]
EOF
    exit 2
}

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

# --- settings ------------------------------------------------------------------------

DEFAULT_DATA=$(realpath -m -- ./.cluster)
DATA=$(realpath -m -- "${TERN_DATA:-./.cluster}")
# `up` with TERN_DATA elsewhere leaves a pointer in the default place (when no
# cluster lives there): later commands without TERN_DATA follow it, unless that
# directory is gone (then the pointer is stale and ./.cluster is used).
if [ -z "${TERN_DATA:-}" ] && [ ! -e "$DEFAULT_DATA/.tern-cluster" ] && [ -f "$DEFAULT_DATA/cluster.env" ]; then
    moved=$(sed -n 's/^TERN_DATA=//p' "$DEFAULT_DATA/cluster.env" | tail -n 1)
    if [ -n "$moved" ] && [ -d "$moved" ]; then DATA=$moved; fi
fi
ENV_FILE=$DATA/cluster.env
MARKER=$DATA/.tern-cluster

# Explicit environment wins, then what `up` saved, then the defaults.
saved() {
    [ -f "$ENV_FILE" ] || return 0
    sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1
}
setting() {
    local name=$1 default=$2 val
    eval "val=\${$name:-}"
    [ -n "$val" ] || val=$(saved "$name")
    [ -n "$val" ] || val=$default
    printf '%s' "$val"
}

MQTT_BASE=$(setting TERN_MQTT_BASE 1883)
RAFT_BASE=$(setting TERN_RAFT_BASE 7001)
PEER_BASE=$(setting TERN_PEER_BASE 7101)
ADMIN_BASE=$(setting TERN_ADMIN_BASE 8081)
ELECTION_MS=$(setting TERN_ELECTION_MS "")
WAIT_S=$(setting TERN_WAIT_S 30)
NODE_TLS=$(setting TERN_NODE_TLS 1)
DEFAULT_BIN=$ROOT/build/ternd
BIN=$(setting TERN_BIN "$DEFAULT_BIN")
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac

for v in "$MQTT_BASE" "$RAFT_BASE" "$PEER_BASE" "$ADMIN_BASE" "$WAIT_S" ${ELECTION_MS:+"$ELECTION_MS"}; do
    case $v in '' | *[!0-9]*) die "port bases, TERN_WAIT_S and TERN_ELECTION_MS must be numbers, got '$v'" ;; esac
done

save_settings() {
    cat >"$ENV_FILE" <<EOF
TERN_MQTT_BASE=$MQTT_BASE
TERN_RAFT_BASE=$RAFT_BASE
TERN_PEER_BASE=$PEER_BASE
TERN_ADMIN_BASE=$ADMIN_BASE
TERN_ELECTION_MS=$ELECTION_MS
TERN_WAIT_S=$WAIT_S
TERN_NODE_TLS=$NODE_TLS
TERN_BIN=$BIN
EOF
    if [ "$DATA" != "$DEFAULT_DATA" ] && [ ! -e "$DEFAULT_DATA/.tern-cluster" ]; then
        mkdir -p "$DEFAULT_DATA"
        printf 'TERN_DATA=%s\n' "$DATA" >"$DEFAULT_DATA/cluster.env"
    fi
}

mqtt_port() { echo $((MQTT_BASE + $1 - 1)); }
raft_port() { echo $((RAFT_BASE + $1 - 1)); }
peer_port() { echo $((PEER_BASE + $1 - 1)); }
admin_port() { echo $((ADMIN_BASE + $1 - 1)); }
node_dir() { echo "$DATA/node$1"; }
conf_file() { echo "$DATA/node$1/ternd.json"; }
log_file() { echo "$DATA/node$1/ternd.log"; }
pid_file() { echo "$DATA/node$1/ternd.pid"; }

# --- build and configs -----------------------------------------------------------------

# Sources newer than the binary (tests, build trees, git and clusters skipped).
stale() {
    [ -x "$1" ] || return 0
    [ -n "$(find "$ROOT" \( -path "$ROOT/tests" -o -name 'build*' -o -name .git -o -name '.cluster*' \) -prune \
        -o \( -name '*.c' -o -name '*.h' -o -name CMakeLists.txt -o -name '*.cmake' \) -newer "$1" -print |
        head -n 1)" ]
}

build_if_needed() {
    "$ROOT/deploy/install-deps.sh"
    if [ "$BIN" != "$DEFAULT_BIN" ]; then
        [ -x "$BIN" ] || die "TERN_BIN=$BIN is not an executable (build it, or unset TERN_BIN)"
        return 0
    fi
    if stale "$BIN"; then
        echo "cluster.sh: building $BIN (RelWithDebInfo)"
        cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
        cmake --build "$ROOT/build" -j2 --target ternd ternctl
    fi
}

# Whether $BIN knows the admin_listen key (config keys are literals in the binary).
has_admin() {
    grep -qaF admin_listen "$BIN"
}

# The admin API's bearer token, one per cluster, if the binary knows the key.
TOKEN_FILE=$DATA/admin-token
has_token() {
    grep -qaF admin_token_file "$BIN"
}
make_token() {
    has_token || return 0
    [ -s "$TOKEN_FILE" ] && return 0
    (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$TOKEN_FILE.tmp" &&
        echo >>"$TOKEN_FILE.tmp" && mv "$TOKEN_FILE.tmp" "$TOKEN_FILE")
}

# Mutual TLS between the nodes, if asked for and the binary knows the key.
PKI=$DATA/pki
node_tls() {
    [ "$NODE_TLS" != 0 ] && grep -qaF cluster_tls "$BIN"
}
make_node_certs() {
    node_tls || return 0
    # shellcheck disable=SC2086
    sh "$ROOT/deploy/node-certs.sh" "$PKI" $NODES || die "cannot make the node certificates"
}

members_json() {
    local i sep=""
    printf '['
    for i in $NODES; do
        printf '%s\n    {"id": %d, "raft": "%s:%d", "peer": "%s:%d", "mqtt": "%s:%d"}' "$sep" "$i" \
            "$HOST" "$(raft_port "$i")" "$HOST" "$(peer_port "$i")" "$HOST" "$(mqtt_port "$i")"
        sep=","
    done
    printf '\n  ]'
}

write_config() {
    local i=$1 dir
    dir=$(node_dir "$i")
    mkdir -p "$dir/data"
    {
        printf '{\n  "node_id": %d,\n  "listen": "%s:%d",\n  "data_dir": "%s",\n' \
            "$i" "$HOST" "$(mqtt_port "$i")" "$dir/data"
        printf '  "log_level": "info",\n'
        # Binaries with the admin API bind it by default: give each node its own port.
        ! has_admin || printf '  "admin_listen": "%s:%d",\n' "$HOST" "$(admin_port "$i")"
        ! has_token || printf '  "admin_token_file": "%s",\n' "$TOKEN_FILE"
        [ -z "$ELECTION_MS" ] || printf '  "raft_election_timeout_ms": %d,\n' "$ELECTION_MS"
        ! node_tls || printf '  "cluster_tls": {"cert_file": "%s", "key_file": "%s", "ca_file": "%s"},\n' \
            "$PKI/node-$i.pem" "$PKI/node-$i.key" "$PKI/ca.pem"
        printf '  "members": %s\n}\n' "$(members_json)"
    } >"$(conf_file "$i").tmp"
    mv "$(conf_file "$i").tmp" "$(conf_file "$i")"
}

prepare() {
    mkdir -p "$DATA"
    touch "$MARKER"
    save_settings
    make_token
    make_node_certs
    local i
    for i in $NODES; do write_config "$i"; done
}

# --- processes -----------------------------------------------------------------------

node_pid() {
    local f pid
    f=$(pid_file "$1")
    [ -f "$f" ] || return 1
    pid=$(cat "$f")
    case $pid in '' | *[!0-9]*) return 1 ;; esac
    echo "$pid"
}

# Running (or still exiting: it may hold its ports), and really this node's ternd, not a
# recycled pid. A zombie has exited.
running() {
    local pid stat cmd
    pid=$(node_pid "$1") || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    case $stat in Z* | X*) return 1 ;; esac
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    # An empty command line: the process is past releasing its memory, still exiting.
    [ -z "$cmd" ] || case $cmd in *" --config $(conf_file "$1") "*) ;; *) return 1 ;; esac
}

start_process() {
    local i=$1 log
    log=$(log_file "$i")
    echo "=== start $(date -u +%Y-%m-%dT%H:%M:%SZ): $BIN --config $(conf_file "$i")" >>"$log"
    # setsid: the node outlives this shell and ^C in it; no job control, so $! is ternd itself.
    setsid nohup "$BIN" --config "$(conf_file "$i")" </dev/null >>"$log" 2>&1 &
    echo $! >"$(pid_file "$i")"
}

# Waits up to $2 seconds for node $1's process to exit.
wait_exit() {
    local i=$1 ticks=$(($2 * 10))
    while running "$i" && [ "$ticks" -gt 0 ]; do
        sleep 0.1
        ticks=$((ticks - 1))
    done
    ! running "$i"
}

# Sends $2 to every node of $1 that runs; SIGKILL those still up after STOP_WAIT_S.
signal_nodes() {
    local nodes=$1 sig=$2 i pid left
    for i in $nodes; do
        if pid=$(node_pid "$i") && running "$i"; then
            kill "-$sig" "$pid" 2>/dev/null || true
        fi
    done
    for i in $nodes; do
        wait_exit "$i" "$STOP_WAIT_S" && continue
        echo "cluster.sh: node $i did not exit within ${STOP_WAIT_S}s of SIG$sig: SIGKILL" >&2
        if pid=$(node_pid "$i"); then kill -KILL "$pid" 2>/dev/null || true; fi
        wait_exit "$i" 5 || die "node $i (pid $pid) survived SIGKILL"
    done
    for i in $nodes; do
        if [ -f "$(pid_file "$i")" ]; then
            left=$(node_pid "$i" || echo '?')
            echo "=== stopped ($sig) $(date -u +%Y-%m-%dT%H:%M:%SZ): pid $left" >>"$(log_file "$i")"
            rm -f "$(pid_file "$i")"
        fi
    done
}

# --- readiness -------------------------------------------------------------------------

accepting() {
    timeout 1 bash -c "exec 3<>/dev/tcp/$HOST/$(mqtt_port "$1")" 2>/dev/null
}

# Prints the nodes among "$@" that are ready. Ready today: the node accepts an MQTT
# connection and acknowledges a QoS 1 retained PUBLISH (an empty payload: it deletes
# nothing real) - retained messages go through the Raft log, so the ack also proves a
# leader and a quorum. This is deliberately the client's path rather than the admin
# API's GET /health: it proves what the script promises (clients can connect and
# get acknowledgements) and works with a binary built without the admin API.
ready_nodes() {
    local args="" i
    for i in "$@"; do args="$args $i:$(mqtt_port "$i")"; done
    # shellcheck disable=SC2086
    "$PY" - $args <<'EOF'
import os, socket, struct, sys, threading

def s(b):
    return struct.pack("!H", len(b)) + b

def packet(t, body):
    n, rl = len(body), b""
    while True:
        d, n = n % 128, n // 128
        rl += bytes([d | (0x80 if n else 0)])
        if not n:
            return bytes([t]) + rl + body

def recv_packet(sk):
    t = sk.recv(1)
    if not t:
        raise OSError("closed")
    n, mul = 0, 1
    while True:
        d = sk.recv(1)[0]
        n += (d & 127) * mul
        mul *= 128
        if not d & 128:
            break
    body = b""
    while len(body) < n:
        chunk = sk.recv(n - len(body))
        if not chunk:
            raise OSError("closed")
        body += chunk
    return t[0], body

def probe(node, port, ok):
    cid = ("tern-ready-%s-%d" % (node, os.getpid())).encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as sk:
            sk.settimeout(3)
            sk.sendall(packet(0x10, s(b"MQTT") + bytes([4, 2, 0, 30]) + s(cid)))
            t, body = recv_packet(sk)
            if t != 0x20 or body[1] != 0:
                return
            sk.sendall(packet(0x33, s(b"tern/ready/node" + node.encode()) + b"\x00\x01"))
            t, body = recv_packet(sk)
            if t == 0x40 and body == b"\x00\x01":
                ok.append(node)
            sk.sendall(b"\xe0\x00")
    except (OSError, IndexError):
        pass

ok, threads = [], []
for arg in sys.argv[1:]:
    node, port = arg.split(":")
    threads.append(threading.Thread(target=probe, args=(node, int(port), ok)))
for t in threads:
    t.start()
for t in threads:
    t.join()
print(" ".join(sorted(ok)))
EOF
}

# The leader named by the latest leadership line of node $1's log since its last start.
leader_in_log() {
    local log
    log=$(log_file "$1")
    [ -f "$log" ] || return 0
    awk '/^=== start/ { l = "" }
         /raft: node [0-9]+ is leader/ { l = $0; sub(/.*raft: node /, "", l); sub(/ .*/, "", l) }
         /raft: leader is node [0-9]+/ { l = $0; sub(/.*leader is node /, "", l); sub(/ .*/, "", l) }
         /raft: no leader/ { l = "" }
         END { print l }' "$log"
}

say_leader() {
    local l k
    # Nodes log leader changes from a 50 ms timer: give the logs a moment.
    for k in $(seq 1 20); do
        l=$(leader)
        [ -n "$l" ] && break
        sleep 0.1
    done
    echo "leader: ${l:+node }${l:-unknown}"
}

# The leader the running nodes agree on, or nothing.
leader() {
    local i l agreed=""
    for i in $NODES; do
        running "$i" || continue
        l=$(leader_in_log "$i")
        [ -n "$l" ] || return 0
        [ -z "$agreed" ] || [ "$agreed" = "$l" ] || return 0
        agreed=$l
    done
    echo "$agreed"
}

log_tails() {
    local i
    for i in "$@"; do
        echo "--- node $i: $(log_file "$i") (last 30 lines)" >&2
        tail -n 30 "$(log_file "$i")" >&2 2>/dev/null || true
    done
}

# Waits until every node of "$@" runs and is ready; on timeout or a dead node, prints
# the log tails and fails.
wait_ready() {
    local deadline=$((SECONDS + WAIT_S)) i ready pending
    while :; do
        for i in "$@"; do
            running "$i" && continue
            echo "cluster.sh: node $i is not running (exited?)" >&2
            log_tails "$i"
            return 1
        done
        ready=" $(ready_nodes "$@") "
        pending=""
        for i in "$@"; do
            case $ready in *" $i "*) ;; *) pending="$pending $i" ;; esac
        done
        [ -n "$pending" ] || return 0
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "cluster.sh: node(s)$pending not ready after ${WAIT_S}s" >&2
            log_tails "$@"
            return 1
        fi
        sleep 0.3
    done
}

# --- verbs -----------------------------------------------------------------------------

summary() {
    local i
    echo "tern cluster: $DATA"
    echo "binary: $BIN"
    local admin=admin
    has_admin || admin="admin(reserved)"
    printf '%-5s %-8s %-16s %-16s %-16s %-16s %s\n' node pid mqtt raft peer "$admin" log
    for i in $NODES; do
        printf '%-5s %-8s %-16s %-16s %-16s %-16s %s\n' "$i" "$(node_pid "$i" || echo -)" \
            "$HOST:$(mqtt_port "$i")" "$HOST:$(raft_port "$i")" "$HOST:$(peer_port "$i")" \
            "$HOST:$(admin_port "$i")" "$(log_file "$i")"
    done
    if node_tls; then echo "between nodes: mutual TLS (cluster CA and node certificates in $PKI)"
    else echo "between nodes: plain TCP (TERN_NODE_TLS=0 or a binary without cluster_tls)"; fi
    say_leader
    echo "try:    mosquitto_sub -h $HOST -p $(mqtt_port 1) -t 'demo/#' -v &"
    echo "        mosquitto_pub -h $HOST -p $(mqtt_port 2) -t demo/hello -m world -q 1"
    echo "stop:   $0 down"
}

start_nodes() {
    local i started=""
    for i in "$@"; do
        if running "$i"; then
            echo "node $i: already running (pid $(node_pid "$i"))"
        else
            start_process "$i"
            started="$started $i"
        fi
    done
    [ -z "$started" ] || echo "started node(s)$started"
}

cmd_up() {
    build_if_needed
    prepare
    # shellcheck disable=SC2086
    start_nodes $NODES
    # shellcheck disable=SC2086
    wait_ready $NODES || exit 1
    summary
}

cmd_down() {
    local i any=""
    for i in $NODES; do running "$i" && any=1; done
    signal_nodes "$NODES" TERM
    if [ -n "$any" ]; then echo "cluster stopped ($DATA)"; else echo "no node running in $DATA"; fi
}

cmd_status() {
    local i pid state port bad=0
    for i in $NODES; do
        pid=$(node_pid "$i" || echo -)
        if running "$i"; then state=running; else
            state=down
            bad=1
        fi
        if accepting "$i"; then port=accepting; else
            port="not accepting"
            bad=1
        fi
        printf 'node %s: pid %-8s %-8s mqtt %s:%s %s\n' "$i" "$pid" "$state" "$HOST" "$(mqtt_port "$i")" "$port"
    done
    say_leader
    return "$bad"
}

cmd_start() {
    [ -x "$BIN" ] || die "$BIN not found: run '$0 up' first"
    prepare
    start_nodes "$1"
    wait_ready "$1" || exit 1
    echo "node $1 ready on $HOST:$(mqtt_port "$1")"
}

cmd_stop() {
    running "$1" || echo "node $1: not running"
    signal_nodes "$1" TERM
}

cmd_kill() {
    running "$1" || echo "node $1: not running"
    signal_nodes "$1" KILL
}

cmd_logs() {
    local log
    log=$(log_file "$1")
    [ -f "$log" ] || die "no log for node $1 at $log"
    if [ "$2" = -f ]; then exec tail -n 100 -f "$log"; fi
    tail -n 100 "$log"
}

# Asks node $1 (the leader) to hand leadership to another node and waits (bounded)
# until the logs name a new leader. Best effort: without ternctl, or if the transfer
# fails, the restart goes on and an election picks the next leader.
transfer_leadership() {
    local ctl k
    ctl="$(dirname "$BIN")/ternctl"
    [ -x "$ctl" ] || ctl="$ROOT/build/ternctl"
    [ -x "$ctl" ] || return 0
    local tok=()
    [ ! -s "$TOKEN_FILE" ] || tok=(--token-file "$TOKEN_FILE")
    "$ctl" --admin "$HOST:$(admin_port "$1")" "${tok[@]}" transfer-leader >/dev/null 2>&1 ||
        return 0
    for k in $(seq 1 50); do
        [ "$(leader)" != "$1" ] && [ -n "$(leader)" ] && return 0
        sleep 0.1
    done
}

cmd_rolling_restart() {
    local i order l
    # shellcheck disable=SC2086
    wait_ready $NODES || die "the cluster is not healthy: not restarting anything"
    # The leader goes last, so leadership moves once rather than up to three times,
    # and before it stops it hands leadership over (ternctl transfer-leader), so no
    # election timeout is spent with proposals waiting.
    l=$(leader)
    order=""
    for i in $NODES; do [ "$i" = "$l" ] || order="$order $i"; done
    [ -z "$l" ] || order="$order $l"
    for i in $order; do
        echo "rolling-restart: node $i"
        [ "$i" = "$l" ] && transfer_leadership "$i"
        signal_nodes "$i" TERM
        start_process "$i"
        # shellcheck disable=SC2086
        wait_ready $NODES || exit 1
    done
    echo "rolling-restart: done"
    summary
}

cmd_wipe() {
    if [ ! -d "$DATA" ]; then
        echo "nothing to wipe at $DATA"
        return 0
    fi
    [ -f "$MARKER" ] || die "$DATA has no $(basename "$MARKER") marker: not a cluster directory, not deleting it"
    signal_nodes "$NODES" TERM
    rm -rf "$DATA"
    echo "wiped $DATA"
}

node_arg() {
    case ${1:-} in 1 | 2 | 3) ;; *) usage ;; esac
}

main() {
    [ $# -ge 1 ] || usage
    local verb=$1
    shift
    case $verb in
    up | down | status | rolling-restart | wipe)
        [ $# -eq 0 ] || usage
        ;;
    start | stop | kill | restart)
        [ $# -eq 1 ] || usage
        node_arg "$1"
        ;;
    logs)
        local n="" f=""
        while [ $# -gt 0 ]; do
            case $1 in
            -f) [ -z "$f" ] || usage; f=-f ;;
            1 | 2 | 3) [ -z "$n" ] || usage; n=$1 ;;
            *) usage ;;
            esac
            shift
        done
        [ -n "$n" ] || usage
        cmd_logs "$n" "$f"
        return
        ;;
    *) usage ;;
    esac
    case $verb in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    start) cmd_start "$1" ;;
    stop) cmd_stop "$1" ;;
    kill) cmd_kill "$1" ;;
    restart)
        cmd_stop "$1"
        cmd_start "$1"
        ;;
    rolling-restart) cmd_rolling_restart ;;
    wipe) cmd_wipe ;;
    esac
}

main "$@"
