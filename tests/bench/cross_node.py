#!/usr/bin/env python3
"""Cross-node clean-session throughput of one or more ternd builds, side by side,
at the DEFAULT configuration (no raised bounds): a three-node cluster on 127.0.0.1
per run, tern-bench with 200 QoS 1 unacknowledged per publisher (as compare.sh
--defaults). Runs are interleaved (build A, build B, A, B ...) so drift on a shared
machine hits all alike; each figure is the median of --repeat runs.

    tests/bench/cross_node.py --ternd build/ternd --ternd /tmp/base/build/ternd

Cases (publisher on node 1):
  cross-q1   1 -> 1, QoS 1, subscriber on node 3 (forwarded over the peer link)
  cross-q0   1 -> 1, QoS 0, subscriber on node 3
  same-q1    1 -> 1, QoS 1, subscriber on node 1 (no forward: the local path)
  fanin-q1   8 -> 1, QoS 1, publishers on nodes 1 and 2, subscriber on node 3
Prints a Markdown table: received msg/s (median), loss (sum over the runs) and the
drops the nodes counted (tern_dropped_messages_total, queue_full + peer_link_full).
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchutil import free_ports

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))

CASES = {
    "cross-q1": dict(qos=1, pubs=1, pub_nodes=[1], sub_node=3),
    "cross-q0": dict(qos=0, pubs=1, pub_nodes=[1], sub_node=3),
    "same-q1": dict(qos=1, pubs=1, pub_nodes=[1], sub_node=1),
    "fanin-q1": dict(qos=1, pubs=8, pub_nodes=[1, 2], sub_node=3),
}


class Cluster:
    def __init__(self, ternd, workdir):
        self.ternd, self.workdir = ternd, workdir
        ports = free_ports(12)
        self.mqtt = ports[0:3]
        self.admin = ports[9:12]
        members = [{"id": i + 1, "raft": "127.0.0.1:%d" % ports[3 + i],
                    "peer": "127.0.0.1:%d" % ports[6 + i],
                    "mqtt": "127.0.0.1:%d" % self.mqtt[i]} for i in range(3)]
        self.procs = []
        for i in range(3):
            d = os.path.join(workdir, "n%d" % (i + 1))
            os.makedirs(d)
            cfg = {"node_id": i + 1, "listen": "127.0.0.1:%d" % self.mqtt[i],
                   "data_dir": d, "log_level": "info", "members": members,
                   "admin_listen": "127.0.0.1:%d" % self.admin[i]}
            with open(d + ".json", "w") as f:
                json.dump(cfg, f)
            log = open(d + ".log", "wb")
            self.procs.append(subprocess.Popen([ternd, "--config", d + ".json"],
                                               stdout=log, stderr=log,
                                               stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            logs = [open(os.path.join(workdir, "n%d.log" % (i + 1)), "rb").read()
                    for i in range(3)]
            if all(re.search(rb"is leader|leader is node", lg) for lg in logs):
                time.sleep(0.5)
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.1)
        self.stop()
        raise SystemExit("cluster did not start (%s)" % workdir)

    def drops(self):
        total = 0.0
        for port in self.admin:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                        timeout=5) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("tern_dropped_messages_total{") and (
                            "queue_full" in line or "peer_" in line):
                        total += float(line.split()[1])
        return total

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def run_case(bench, cl, name, spec, args, run_id):
    pub_ports = ",".join(str(cl.mqtt[n - 1]) for n in spec["pub_nodes"])
    cmd = [bench, "--json", "--pubs", str(spec["pubs"]), "--subs", "1", "--topics", "1",
           "--qos", str(spec["qos"]), "--size", "16", "--window", "200",
           "--duration", str(args.duration), "--warmup", "1", "--grace", "3",
           "--pub-ports", pub_ports, "--sub-ports", str(cl.mqtt[spec["sub_node"] - 1]),
           "--topic-prefix", "xn/%s/%d" % (name, run_id)]
    out = subprocess.run(cmd, capture_output=True, text=True,
                         timeout=args.duration + 120)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not line:
        raise SystemExit("tern-bench failed: %s" % out.stderr[-500:])
    return json.loads(line[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ternd", action="append", required=True)
    ap.add_argument("--bench", default=os.path.join(ROOT, "build", "tern-bench"))
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cases", default=",".join(CASES))
    args = ap.parse_args()
    cases = args.cases.split(",")
    res = {(t, c): [] for t in args.ternd for c in cases}
    drops = {(t, c): 0.0 for t in args.ternd for c in cases}
    work = tempfile.mkdtemp(prefix="tern-xn.")
    try:
        run_id = 0
        for r in range(args.repeat):
            for t in args.ternd:
                for c in cases:
                    run_id += 1
                    cl = Cluster(t, os.path.join(work, "r%d" % run_id))
                    try:
                        j = run_case(args.bench, cl, c, CASES[c], args, run_id)
                        time.sleep(0.5)
                        drops[(t, c)] += cl.drops()
                    finally:
                        cl.stop()
                    res[(t, c)].append(j)
                    print("run %d %s %s: %.0f msg/s, loss %d" % (
                        r + 1, t, c, j["received_per_s"], j["loss"]), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| case | " + " | ".join(args.ternd) + " |")
    print("|---|" + "---|" * len(args.ternd))
    for c in cases:
        cells = []
        for t in args.ternd:
            js = res[(t, c)]
            med = statistics.median(j["received_per_s"] for j in js)
            loss = sum(j["loss"] for j in js)
            exp = sum(j["expected"] for j in js)
            cells.append("%.0f msg/s, loss %d of %d, drops counted %d" % (
                med, loss, exp, drops[(t, c)]))
        print("| %s | %s |" % (c, " | ".join(cells)))


if __name__ == "__main__":
    main()
