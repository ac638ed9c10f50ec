#!/usr/bin/env python3
"""The loop stall of a snapshot through the real ternd (docs/benchmarks.md,
"Snapshot stalls").

For each session count and each raft_snapshot_fork mode: a fresh single node
(snapshots only when asked), tern-bench --idle --clean 0 leaves N persistent
sessions behind (offline, in batches under the descriptor limit), then POST
/snapshot a few times; prints the stall the node logged
for each (what its loop waited for), the longest event-loop iteration around them
(from tern_loop_busy_seconds: libraft's own part of a snapshot included) and the
node's RSS. Figures, not pass/fail.

usage: snapshot_stall.py [--ternd build/ternd] [--bench build/tern-bench]
                         [--modes never,always] [--snapshots 3] N...
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BATCH = 15000
FINISHED_RE = re.compile(r"raft: snapshot (\d+) finished \((\d+) bytes, (\d+) ms, "
                         r"loop stall (\d+) us, (\w+)\)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port, method, path, timeout=30.0):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def metric(port, name):
    try:
        text = http(port, "GET", "/metrics")
    except OSError:  # busy or restarting: the caller polls again
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def loop_buckets(port):
    """Cumulative tern_loop_busy_seconds buckets: {le: count}."""
    out = {}
    text = http(port, "GET", "/metrics")
    for m in re.finditer(r'^tern_loop_busy_seconds_bucket\{le="([^"]+)"\} (\d+)', text,
                         re.M):
        out[m.group(1)] = int(m.group(2))
    return out


def longest_between(before, after):
    """The bucket of the longest loop iteration between two bucket readings:
    "(lo, hi] ms"."""
    les = sorted((float(k) if k != "+Inf" else float("inf"), k) for k in after)
    total_b, total_a = before.get("+Inf", 0), after.get("+Inf", 0)
    lo = 0.0
    for v, k in les:
        above_b = total_b - before.get(k, 0)
        above_a = total_a - after.get(k, 0)
        if above_a == above_b:  # nothing new above this bound
            return "(%g, %g] ms" % (lo * 1000, v * 1000)
        lo = v
    return "> %g ms" % (lo * 1000)


def wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise SystemExit("snapshot_stall: timed out waiting for %s" % what)


def one(args, n, mode):
    work = tempfile.mkdtemp(prefix="tern-snapstall.")
    mqtt, admin = free_port(), free_port()
    log_path = os.path.join(work, "ternd.log")
    node = bench = None
    try:
        cmd = [args.ternd, "--listen", "127.0.0.1:%d" % mqtt, "--data-dir",
               os.path.join(work, "data"), "--set", "admin_listen=127.0.0.1:%d" % admin,
               "--set", "raft_snapshot_fork=%s" % mode,
               "--set", "raft_snapshot_threshold=4294967295",
               "--set", "raft_snapshot_bytes=1099511627776",
               "--set", "connections_per_address_max=0",
               "--set", "connect_rate_per_address=0",
               "--set", "allow_anonymous=true", "--set", "sessions_max=%d" % (n + 100)]
        log = open(log_path, "ab")
        node = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait(lambda: _ok(admin), 20, "the node to be ready")
        # Batches of at most BATCH connections (the descriptor limit), each
        # leaving its persistent sessions behind, offline.
        made = 0
        while made < n:
            k = min(BATCH, n - made)
            bench = subprocess.Popen(
                [args.bench, "--port", str(mqtt), "--idle", str(k), "--clean", "0",
                 "--duration", "0.5", "--concurrency", "200",
                 "--source-addrs", "127.0.0.2,127.0.0.3",
                 "--client-prefix", "snap%d-" % made],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            bench.wait(900)
            made += k
            wait(lambda: (metric(admin, "tern_sessions") or 0) >= made, 600,
                 "%d sessions" % made)
        time.sleep(1.0)
        buckets0 = loop_buckets(admin)
        rows = []
        for k in range(args.snapshots):
            http(admin, "POST", "/snapshot")
            wait(lambda: len(FINISHED_RE.findall(_read(log_path))) > k, 600,
                 "snapshot %d" % (k + 1))
            time.sleep(0.5)
        found = FINISHED_RE.findall(_read(log_path))
        rss = _rss_mb(node.pid)
        longest = longest_between(buckets0, loop_buckets(admin))
        for f in found:
            rows.append((int(f[3]), int(f[1]), int(f[2]), f[4]))
        stalls = sorted(r[0] for r in rows)
        print("%8d %-7s %7.0f %9.1f %10.2f %10.2f %9d %s" % (
            n, mode, rss, rows[-1][1] / 1048576.0, stalls[0] / 1000.0,
            stalls[-1] / 1000.0, rows[-1][2], rows[-1][3]), flush=True)
        print("         longest loop iteration during the snapshots: %s" % longest,
              flush=True)
    finally:
        for p in (bench, node):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if sys.exc_info()[0] is not None:
            sys.stderr.write(_read(log_path)[-3000:])
        shutil.rmtree(work, ignore_errors=True)


def _ok(port):
    try:
        http(port, "GET", "/health", 2.0)
        return True
    except OSError:
        return False


def _read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def _rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ternd", default=os.path.join(ROOT, "build", "ternd"))
    ap.add_argument("--bench", default=os.path.join(ROOT, "build", "tern-bench"))
    ap.add_argument("--modes", default="never,always")
    ap.add_argument("--snapshots", type=int, default=3)
    ap.add_argument("sessions", type=int, nargs="+")
    args = ap.parse_args()
    print("%8s %-7s %7s %9s %10s %10s %9s %s" % (
        "sessions", "mode", "rss_MB", "snap_MB", "stall_min", "stall_max", "total_ms",
        "how"))
    for n in args.sessions:
        for mode in args.modes.split(","):
            one(args, n, mode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
