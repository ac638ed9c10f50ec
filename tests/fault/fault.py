#!/usr/bin/python3
"""The fault suite (issue 11): a three-node tern cluster in network namespaces, a
workload that runs through a series of faults, and a table per fault.

    tests/fault/run.sh              (root; builds ternd and the loss helper, cleans up)
    tests/fault/fault.py --bin build/ternd [--phases bridge,kill-9-leader] [--keep]

Each node runs in its own network namespace with one veth into a bridge in the root
namespace (a /24 of 198.18.0.0/15 no other interface uses; the bridge holds .254 so
clients in the root namespace reach the nodes; nothing is routed anywhere else).
Everything is removed on exit, also on failure and Ctrl-C.

Workload (mqttloop.py, one thread): QoS 1 publishers of sequence-numbered messages
(clean session, failing over between the nodes), one probe publisher pinned to each
node (its acknowledgements time each node's availability), persistent subscribers
(clean_session=false) of all of them, and register workers (threads) that write and
read retained messages on random nodes; the history is checked at the end.

Exit status: 0 when every phase held every promise, 1 on any loss, reorder,
linearizability violation or bound missed, 2 when the harness itself could not run.
"""
import argparse
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import mqttloop  # noqa: E402
import mqttraw  # noqa: E402

# --- what must hold (issue 11, "What must hold") -----------------------------------
LEADER_LOSS_PROGRESS_S = 1.5  # majority side acknowledging again after losing a leader
LOSSY_PROGRESS_S = 5.0  # progress under 30% loss + 50 ms delay
HEAL_RECOVERY_S = 2.0  # every node acknowledging again after a heal
WAITING_CPU_MAX_PCT = 10.0  # a node that cannot make progress, while it waits
RSS_GROWTH_MAX_MB = 64.0  # growth of a node's RSS within one phase
RSS_MAX_MB = 512.0  # any node, any time

# Bounds this build is known to miss; issue 11 stays open for them
# (docs/reliability.md, "Open"). Reported as KNOWN, they do not fail the run, so
# that everything else here - no loss, no reorder, the register checks, no crash,
# no sanitizer report, failover and recovery times, CPU while waiting, the RSS
# ceiling - gates CI. One that holds in a run is reported as such, to be taken
# off. Keys: (phase, start of the violation's text).
KNOWN_OPEN = {
    # After kill -9 under this loss two survivors commit over one lossy path: every
    # commit is a round trip on which either stream may stall, and what the failover
    # brings (re-sent tails, resumed sessions) ships at that path's pace
    # (docs/reliability.md, "Open"). Progress in loss+delay is enforced since stalled
    # streams move to a spare (session 15; 1 miss in ~130 runs in session 16). The recovery
    # after the heal: the reconnects refused while a takeover waited to commit (CI,
    # session 15) wait for it since session 16; 3 of ~110 phases that day still
    # missed (2.6-5.1 s: a follower that learned of commits 2.5 s late, its stream
    # not moved), so it stays here.
    ("kill-9-under-loss", "majority side"): "progress under 30% loss + 50 ms delay after "
                                            "kill -9, not every run",
    ("loss+delay", "recovery after the heal"): "clients back after the loss phase",
    ("kill-9-under-loss", "recovery after the heal"): "clients back after the loss phase",
}


def known_open(phase, violation):
    """Why a violation is a known open one (issue 11), or None."""
    for (name, start), why in KNOWN_OPEN.items():
        if name == phase and violation.startswith(start):
            return why
    return None

# --- the faults -----------------------------------------------------------------------
FAULT_S = 5.0  # how long a partition / SIGSTOP lasts
LOSS_FAULT_S = 8.0  # how long the loss phase lasts
LOSS_PCT = 30
DELAY_MS = 50
KILL_DOWN_S = 3.0  # a killed node stays down this long
RECOVER_WAIT_S = 10.0  # after a heal: wait at most this for every node to acknowledge
SETTLE_S = 1.0  # after recovery, before the next phase

# --- the workload ---------------------------------------------------------------------
BG_PUBLISHERS = 3  # one homed on each node, failing over
BG_RATE = 80  # msg/s each
BG_WINDOW = 300
PROBE_RATE = 20  # msg/s, one probe pinned to each node
PROBE_WINDOW = 400
SUBSCRIBERS = 2
LOAD_PUBLISHERS = 4  # the "kill -9 at load" phase: all on one follower
LOAD_RATE = 750  # msg/s each
LOAD_WINDOW = 500
LOAD_BEFORE_S = 3.0  # load runs this long before the kill
LOAD_AFTER_S = 2.0  # and this long after the restart
REGISTERS = 2
REG_WORKERS = 2  # per register
REG_OP_TIMEOUT_S = 3.0
REG_READ_WAIT_S = 2.0  # after SUBACK, for the retained message
REG_PAUSE_S = 0.15
FINAL_DRAIN_S = 20.0

MQTT_PORT, RAFT_PORT, PEER_PORT = 1883, 7001, 7101
_LEADER_RE = re.compile(r"raft: (?:node (\d+) is leader|leader is node (\d+)|(no leader)) "
                        r"\(term (\d+)\)")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print("fault: %s %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def sh(*args, check=True, ns=None, quiet=False):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in args]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(cmd), r.returncode,
                                                r.stdout.decode(errors="replace").strip()))
    return r


# --- the network ------------------------------------------------------------------------
class Net:
    """Namespaces tf<pid>n1..3, veths into bridge tf<pid>br, iptables chain TF per node."""

    def __init__(self, prefix, n=3):
        self.prefix = prefix
        self.n = n
        self.ns = ["%sn%d" % (prefix, i + 1) for i in range(n)]
        self.veth = ["%sv%d" % (prefix, i + 1) for i in range(n)]
        self.bridge = "%sbr" % prefix
        self.subnet = None
        self.ips = []
        self.loss_mode = None
        self.helpers = {}  # ns -> Popen of nfq_netem
        self.made = False

    def _pick_subnet(self):
        used = sh("ip", "-4", "route", "show", "table", "all").stdout.decode()
        used += sh("ip", "-4", "addr").stdout.decode()
        start = os.getpid() % 200
        for k in range(256):
            third = (start + k) % 256
            for second in (18, 19):
                net = "198.%d.%d." % (second, third)
                if net not in used:
                    return net
        raise RuntimeError("no free /24 in 198.18.0.0/15")

    def setup(self):
        self.made = True
        self.subnet = self._pick_subnet()
        self.ips = ["%s%d" % (self.subnet, i + 1) for i in range(self.n)]
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", self.subnet + "254/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i in range(self.n):
            ns, v = self.ns[i], self.veth[i]
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", v, "type", "veth", "peer", "name", v + "p")
            sh("ip", "link", "set", v + "p", "netns", ns)
            sh("ip", "-n", ns, "link", "set", v + "p", "name", "eth0")
            sh("ip", "-n", ns, "addr", "add", self.ips[i] + "/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "link", "set", v, "master", self.bridge)
            sh("ip", "link", "set", v, "up")
            # Partitions drop on input only, so a sender sees silence (timeouts), as
            # across a real partition, not an immediate EPERM from its own OUTPUT chain.
            sh("iptables", "-w", "-N", "TF", ns=ns)
            sh("iptables", "-w", "-I", "INPUT", "-j", "TF", ns=ns)

    def cleanup(self):
        for ns, p in list(self.helpers.items()):
            _end(p)
        self.helpers = {}
        if not self.made:
            return
        for ns in self.ns:
            sh("ip", "netns", "del", ns, check=False)
        for v in self.veth:
            sh("ip", "link", "del", v, check=False)
        sh("ip", "link", "del", self.bridge, check=False)

    # --- faults ---
    def cut(self, a, b):
        """Drops every packet between nodes a and b (1-based), both ways."""
        sh("iptables", "-w", "-A", "TF", "-s", self.ips[b - 1], "-j", "DROP", ns=self.ns[a - 1])
        sh("iptables", "-w", "-A", "TF", "-s", self.ips[a - 1], "-j", "DROP", ns=self.ns[b - 1])

    def heal_cuts(self):
        for ns in self.ns:
            sh("iptables", "-w", "-F", "TF", ns=ns)

    def detect_loss(self, helper):
        """netem where the kernel has it, else the NFQUEUE helper, else loss only."""
        ns = self.ns[0]
        if sh("tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms", ns=ns,
              check=False).returncode == 0:
            sh("tc", "qdisc", "del", "dev", "lo", "root", ns=ns, check=False)
            self.loss_mode = "netem"
        elif helper and os.access(helper, os.X_OK):
            self.loss_mode = "nfqueue"
        else:
            self.loss_mode = "statistic"
        self.helper = helper
        return self.loss_mode

    def loss_on(self, pct, delay_ms):
        for ns in self.ns:
            if self.loss_mode == "netem":
                sh("tc", "qdisc", "add", "dev", "eth0", "root", "netem", "loss", "%d%%" % pct,
                   "delay", "%dms" % delay_ms, ns=ns)
            elif self.loss_mode == "nfqueue":
                p = subprocess.Popen(["ip", "netns", "exec", ns, self.helper, "0", str(pct),
                                      str(delay_ms)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
                self.helpers[ns] = p
                line = p.stdout.readline()
                if line.strip() != b"ready":
                    raise RuntimeError("nfq_netem in %s did not start: %s" % (
                        ns, p.stderr.read().decode(errors="replace")))
                sh("iptables", "-w", "-t", "mangle", "-A", "POSTROUTING", "-o", "eth0", "-j",
                   "NFQUEUE", "--queue-num", "0", "--queue-bypass", ns=ns)
            else:
                sh("iptables", "-w", "-t", "mangle", "-A", "POSTROUTING", "-o", "eth0", "-m",
                   "statistic", "--mode", "random", "--probability", "%.2f" % (pct / 100.0),
                   "-j", "DROP", ns=ns)

    def loss_off(self):
        for ns in self.ns:
            if self.loss_mode == "netem":
                sh("tc", "qdisc", "del", "dev", "eth0", "root", ns=ns, check=False)
            else:
                sh("iptables", "-w", "-t", "mangle", "-F", "POSTROUTING", ns=ns, check=False)
        for ns, p in list(self.helpers.items()):
            _end(p)
        self.helpers = {}


def _end(p, sig=signal.SIGTERM):
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


# --- the nodes ----------------------------------------------------------------------------
class Node:
    def __init__(self, i, net, workdir, binary):
        self.id = i
        self.net = net
        self.ns = net.ns[i - 1]
        self.ip = net.ips[i - 1]
        self.dir = os.path.join(workdir, "node%d" % i)
        self.log_path = os.path.join(self.dir, "ternd.log")
        self.conf = os.path.join(self.dir, "ternd.json")
        self.bin = binary
        self.proc = None
        self.log_offset = 0
        self.stopped = False  # SIGSTOPped
        os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)

    def write_config(self, members, extra=None):
        import json
        cfg = {"node_id": self.id, "listen": "%s:%d" % (self.ip, MQTT_PORT),
               "data_dir": os.path.join(self.dir, "data"), "log_level": "info",
               "admin_listen": "127.0.0.1:8081",  # each namespace has its own loopback
               "members": members,
               # as the trials: no drop policy may explain a loss
               "queue_max": 1000000, "queue_bytes_max": 1 << 30,
               "raft_segment_bytes": 8 << 20,
               # the listeners are not on loopback, so anonymous clients need saying
               # (docs/security.md); every client comes from the bridge's address
               "allow_anonymous": "true",
               "connections_per_address_max": 0, "connect_rate_per_address": 0}
        cfg.update(extra or {})  # --set KEY=VALUE
        with open(self.conf, "w") as f:
            json.dump(cfg, f, indent=1)

    def start(self):
        with open(self.log_path, "ab") as lf:
            self.log_offset = lf.tell()
            lf.write(("=== start node %d\n" % self.id).encode())
            lf.flush()
            # ip netns exec execs ternd itself: the pid is the broker's.
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, self.bin, "--config",
                                          self.conf], stdin=subprocess.DEVNULL, stdout=lf,
                                         stderr=lf)
        self.stopped = False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def kill9(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self):
        if self.proc is None:
            return
        if self.stopped:
            self.proc.send_signal(signal.SIGCONT)
        _end(self.proc)
        self.proc = None

    def leader_view(self):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return None
        last = None
        for m in _LEADER_RE.finditer(text):
            last = m
        if last is None:
            return None
        return int(last.group(1) or last.group(2) or 0), int(last.group(4))

    def cpu_ticks(self):
        try:
            with open("/proc/%d/stat" % self.proc.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, AttributeError, IndexError):
            return None

    def rss_mb(self):
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024.0
        except (OSError, AttributeError):
            pass
        return None


class Cluster:
    def __init__(self, net, workdir, binary, extra=None):
        self.net = net
        self.nodes = [Node(i + 1, net, workdir, binary) for i in range(net.n)]
        members = [{"id": nd.id, "raft": "%s:%d" % (nd.ip, RAFT_PORT),
                    "peer": "%s:%d" % (nd.ip, PEER_PORT), "mqtt": "%s:%d" % (nd.ip, MQTT_PORT)}
                   for nd in self.nodes]
        for nd in self.nodes:
            nd.write_config(members, extra)

    def node(self, i):
        return self.nodes[i - 1]

    def addrs(self):
        return [(nd.ip, MQTT_PORT) for nd in self.nodes]

    def start_all(self):
        for nd in self.nodes:
            nd.start()

    def stop_all(self):
        for nd in self.nodes:
            if nd.alive():
                if nd.stopped:
                    nd.proc.send_signal(signal.SIGCONT)
                nd.proc.send_signal(signal.SIGTERM)
        for nd in self.nodes:
            nd.stop()

    def leader(self):
        views = {nd.id: nd.leader_view() for nd in self.nodes if nd.alive()}
        claims = [i for i, v in views.items() if v and v[0] == i]
        if len(claims) != 1:
            return None
        lead, term = views[claims[0]]
        for i, v in views.items():
            if i != lead and (v is None or v[1] > term or (v[1] == term and v[0] != lead)):
                return None
        return lead

    def wait_leader(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lead = self.leader()
            if lead:
                return lead
            time.sleep(0.05)
        return None

    def wait_ready(self, timeout):
        """Every node acknowledges a QoS 1 retained PUBLISH (so there is a leader)."""
        deadline = time.monotonic() + timeout
        pending = set(nd.id for nd in self.nodes)
        while pending and time.monotonic() < deadline:
            for i in sorted(pending):
                nd = self.node(i)
                if not nd.alive():
                    raise RuntimeError("node %d exited at startup:\n%s" % (i, tail(nd.log_path)))
                try:
                    with mqttraw.RawClient(nd.ip, MQTT_PORT, timeout=2.0) as c:
                        if c.connect("tf-ready-%d" % i, clean=True).reason != 0:
                            continue
                        c.publish("tf/ready/%d" % i, b"1", qos=1, packet_id=1, retain=True)
                        if c.expect(mqttraw.PUBACK, 2.0).packet_id == 1:
                            pending.discard(i)
                except (OSError, AssertionError, mqttraw.Closed, ValueError):
                    pass
            if pending:
                time.sleep(0.2)
        if pending:
            raise RuntimeError("nodes %s not ready after %.0fs" % (sorted(pending), timeout))


def tail(path, n=30):
    try:
        with open(path, "rb") as f:
            return b"".join(f.readlines()[-n:]).decode(errors="replace")
    except OSError:
        return "(no log)"


# --- the history ----------------------------------------------------------------------------
class Recorder:
    """What the persistent subscribers received (loop thread only until the end)."""

    def __init__(self):
        self.got = {}  # (sub cid, pub name) -> set of seqs
        self.maxseen = {}  # (sub cid, pub name) -> (seq, pub conn)
        self.dups = []  # (t, sub, pub, seq)
        self.reorders = []  # (t, sub, pub, seq, after_seq, same_pub_conn)

    def __call__(self, sub, now, payload, dup_flag):
        try:
            name, conn, seq = payload.decode().split(":")
            conn, seq = int(conn), int(seq)
        except ValueError:
            return
        key = (sub.cid, name)
        got = self.got.get(key)
        if got is None:
            got = self.got[key] = set()
        if seq in got:
            self.dups.append((now, sub.cid, name, seq))
            return
        got.add(seq)
        top = self.maxseen.get(key)
        if top is not None and seq < top[0]:
            self.reorders.append((now, sub.cid, name, seq, top[0], conn == top[1]))
        else:
            self.maxseen[key] = (seq, conn)


def bye(c):
    """DISCONNECT before the close (the broker logs a bare close as an error)."""
    try:
        c.disconnect()
    except OSError:
        pass


class Registers:
    """Retained "registers": worker threads write (retained QoS 1 PUBLISH, unique value) and
    read (a fresh connection's SUBSCRIBE, the retained message) on random nodes."""

    def __init__(self, cluster, prefix, n_regs, workers):
        self.cluster = cluster
        self.prefix = prefix
        self.topics = ["tf/reg/%s/%d" % (prefix, k) for k in range(n_regs)]
        self.workers = workers
        self.lock = threading.Lock()
        self.writes = {t: {} for t in self.topics}  # value -> [start, end or None, node]
        self.reads = {t: [] for t in self.topics}  # (start, end, value or None, node)
        self.failed_reads = 0
        self.stop_ev = threading.Event()
        self.threads = []
        self.counter = 0

    def _value(self):
        with self.lock:
            self.counter += 1
            return "%s-%d" % (self.prefix, self.counter)

    def write(self, topic, node, timeout=REG_OP_TIMEOUT_S):
        value = self._value()
        nd = self.cluster.node(node)
        start = time.monotonic()
        with self.lock:
            self.writes[topic][value] = [start, None, node]
        try:
            with mqttraw.RawClient(nd.ip, MQTT_PORT, timeout=timeout) as c:
                if c.connect("tfw-%s" % value, clean=True).reason != 0:
                    return False
                c.publish(topic, value.encode(), qos=1, packet_id=1, retain=True)
                deadline = start + timeout
                while True:
                    p = c.recv(max(0.01, deadline - time.monotonic()))
                    if p.type == mqttraw.PUBACK and p.packet_id == 1:
                        break
                end = time.monotonic()
                bye(c)
            with self.lock:
                self.writes[topic][value][1] = end
            return True
        except (OSError, AssertionError, mqttraw.Closed, ValueError):
            return False  # indeterminate: it may still take effect, at any later time

    def read(self, topic, node):
        nd = self.cluster.node(node)
        start = time.monotonic()
        try:
            with mqttraw.RawClient(nd.ip, MQTT_PORT, timeout=REG_OP_TIMEOUT_S) as c:
                if c.connect("tfr-%s-%d" % (self.prefix, int(start * 1e6)),
                             clean=True).reason != 0:
                    raise mqttraw.Closed("refused")
                c.subscribe(1, [(topic, 1)], wait=False)
                deadline = start + REG_OP_TIMEOUT_S
                subacked = None
                while True:
                    left = deadline - time.monotonic()
                    if subacked is not None:
                        # The wait for the retained message runs from the SUBACK,
                        # whenever in the read that came (not cut by the deadline).
                        left = subacked + REG_READ_WAIT_S - time.monotonic()
                    if left <= 0:
                        if subacked is None:
                            raise mqttraw.Timeout("no SUBACK")
                        value = None  # SUBACK and no retained message
                        break
                    try:
                        p = c.recv(left)
                    except mqttraw.Timeout:
                        continue
                    if p.type == mqttraw.SUBACK:
                        if p.codes and p.codes[0] == 0x80:
                            raise mqttraw.Closed("subscribe refused")
                        subacked = time.monotonic()
                    elif p.type == mqttraw.PUBLISH and p.topic == topic and p.retain:
                        value = p.payload.decode(errors="replace")
                        break
                end = time.monotonic()
                bye(c)
        except (OSError, AssertionError, mqttraw.Closed, ValueError):
            with self.lock:
                self.failed_reads += 1
            return
        with self.lock:
            self.reads[topic].append((start, end, value, node))

    def _work(self, topic, seed):
        rnd = random.Random(seed)
        while not self.stop_ev.is_set():
            node = rnd.randint(1, len(self.cluster.nodes))
            if rnd.random() < 0.5:
                self.write(topic, node)
            else:
                self.read(topic, node)
            self.stop_ev.wait(REG_PAUSE_S)

    def start(self):
        for k, t in enumerate(self.topics):
            if not self.write(t, 1 + k % len(self.cluster.nodes), timeout=10.0):
                raise RuntimeError("initial write of register %s not acknowledged" % t)
        for k, t in enumerate(self.topics):
            for w in range(self.workers):
                th = threading.Thread(target=self._work, args=(t, k * 100 + w), daemon=True)
                th.start()
                self.threads.append(th)

    def stop(self):
        self.stop_ev.set()
        for th in self.threads:
            th.join(REG_OP_TIMEOUT_S * 3)

    def check(self):
        """Per register, every read against the writes (end None: never acknowledged, so
        it may take effect at any time after its start):
          1. the value was written, by a write that started before the read ended;
          2. nothing: only if no write was acknowledged before the read began;
          3. not stale: no write W2 acknowledged before the read began such that the
             value's own write was acknowledged before W2 started;
          4. no read older than an earlier read: if read R1 ended before R2 began,
             R2's value's write must not have been acknowledged before R1's value's
             write started.
        Returns (reads checked, list of violation strings)."""
        out, n = [], 0
        inf = float("inf")
        for t in self.topics:
            writes = self.writes[t]
            acked = sorted((w[1], w[0], v) for v, w in writes.items() if w[1] is not None)
            reads = sorted(self.reads[t])
            n += len(reads)
            for (rs, re_, v, node) in reads:
                if v is None:
                    if acked and acked[0][0] < rs:
                        out.append("%s: read on node %d at %.3f returned nothing, but %s was "
                                   "acknowledged at %.3f" % (t, node, rs, acked[0][2],
                                                             acked[0][0]))
                    continue
                w = writes.get(v)
                if w is None or w[0] > re_:
                    out.append("%s: read on node %d returned %r, never written before the "
                               "read ended" % (t, node, v))
                    continue
                wend = w[1] if w[1] is not None else inf
                for (e2, s2, v2) in acked:
                    if e2 >= rs:
                        break
                    if v2 != v and wend < s2:
                        out.append("%s: stale read on node %d [%.3f, %.3f]: %r (acked %.3f) "
                                   "after %r was written [%.3f, %.3f]" % (
                                       t, node, rs, re_, v, wend, v2, s2, e2))
                        break
            for i, (rs1, re1, v1, n1) in enumerate(reads):
                if v1 is None or v1 not in writes:
                    continue
                for (rs2, re2, v2, n2) in reads[i + 1:]:
                    if rs2 <= re1 or v2 is None or v2 == v1 or v2 not in writes:
                        continue
                    e2 = writes[v2][1]
                    if e2 is not None and e2 < writes[v1][0]:
                        out.append("%s: read on node %d at %.3f returned %r, older than %r "
                                   "read on node %d that ended at %.3f" % (
                                       t, n2, rs2, v2, v1, n1, re1))
                        break
        return n, out


# --- the suite --------------------------------------------------------------------------
class Phase:
    def __init__(self, name):
        self.name = name
        self.t_begin = self.t_fault = self.t_heal = self.t_end = None
        self.majority = []  # nodes that must make progress during the fault
        self.waiting = []  # nodes that cannot, and must idle
        self.progress_bound = LEADER_LOSS_PROGRESS_S
        self.progress = {}  # node -> seconds from fault to its first ack of a new message
        self.recovery = {}  # node -> seconds from heal to the same
        self.cpu = {}  # node -> % of a core during the fault
        self.rss_start = {}
        self.rss_max = {}
        self.rss_end = {}
        self.rss_series = []  # (seconds since the fault, node, MB), kept with the logs
        self.notes = []
        self.violations = []


class Suite:
    def __init__(self, args):
        self.args = args
        self.prefix = "tf%d" % os.getpid()
        self.workdir = tempfile.mkdtemp(prefix="tern-fault-", dir=args.workdir)
        self.net = Net(self.prefix)
        self.cluster = None
        self.loop = None
        self.recorder = Recorder()
        self.pubs = []
        self.probes = []
        self.subs = []
        self.load_pubs = []
        self.load_subs = []
        self.load_sets = []  # (subscriber, its publishers), one per kill-9-at-load
        self.regs = None
        self.phases = []
        self.crashes = []  # copies of crashed nodes' data directories
        self.t0 = time.monotonic()

    # --- helpers ---
    def leader(self, timeout=10.0):
        lead = self.cluster.wait_leader(timeout)
        if not lead:
            raise RuntimeError("no leader agreed by all nodes within %.0fs" % timeout)
        return lead

    def followers(self, lead):
        return [nd.id for nd in self.cluster.nodes if nd.id != lead]

    def first_ack_after(self, node, t, until=None):
        """Seconds from t to the first PUBACK, on node's probe, of a message sent at or
        after t (None if none by `until`)."""
        for (seq, conn, ts, ta, nd) in list(self.probes[node - 1].acks):
            if ts >= t and (until is None or ta <= until):
                return ta - t
        return None

    def sample(self, ph):
        for nd in self.cluster.nodes:
            r = nd.rss_mb() if nd.alive() else None
            if r is not None:
                ph.rss_max[nd.id] = max(ph.rss_max.get(nd.id, 0.0), r)
                t = time.monotonic() - (ph.t_fault or ph.t_begin)
                ph.rss_series.append((t, nd.id, r))

    def wait(self, ph, seconds, until=None):
        """Sleeps `seconds` (or until until() is true), sampling memory."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.loop.error:
                raise RuntimeError("client loop failed: %s" % self.loop.error)
            self.check_crashes(ph)
            if until is not None and until():
                return True
            self.sample(ph)
            time.sleep(0.05)
        return until() if until is not None else True

    def check_crashes(self, ph):
        """A node that exited by itself: a violation. Its data directory is copied aside
        (kept with the logs) before it is started again, so the run goes on."""
        for nd in self.cluster.nodes:
            if nd.proc is None or nd.proc.poll() is None:
                continue
            rc = nd.proc.returncode
            when = time.monotonic() - (ph.t_fault or ph.t_begin)
            keep = os.path.join(self.workdir, "crash-node%d-%d" % (nd.id, len(self.crashes)))
            shutil.copytree(os.path.join(nd.dir, "data"), keep, symlinks=True,
                            ignore_dangling_symlinks=True)
            self.crashes.append(keep)
            ph.violations.append("node %d exited by itself (status %s) at %+.2f s of the fault; "
                                 "its data directory is in %s; log tail:\n%s" % (
                                     nd.id, rc, when, keep, tail(nd.log_path, 10)))
            log("node %d exited by itself (status %s): started again" % (nd.id, rc))
            nd.proc = None
            nd.start()

    def healthy(self):
        now = time.monotonic()
        return all(p.acks and now - p.acks[-1][3] < 0.5 for p in self.probes)

    # --- set-up ---
    def setup(self):
        log("workdir %s, namespaces %s*, binary %s" % (self.workdir, self.prefix, self.args.bin))
        self.net.setup()
        mode = self.net.detect_loss(self.args.netem_helper)
        log("network %s0/24 (bridge .254); loss/delay emulation: %s%s" % (
            self.net.subnet, mode, " (loss only, no delay)" if mode == "statistic" else ""))
        self.cluster = Cluster(self.net, self.workdir, self.args.bin, self.args.node_config)
        self.cluster.start_all()
        self.cluster.wait_ready(30)
        log("cluster ready, leader node %s" % self.leader())
        self.loop = mqttloop.Loop()
        addrs = self.cluster.addrs()
        p = self.prefix
        for k in range(SUBSCRIBERS):
            self.subs.append(mqttloop.Subscriber(self.loop, "%s-sub%d" % (p, k),
                                                 ["tf/seq/%s/#" % p, "tf/probe/%s/#" % p],
                                                 addrs, (k + 1) % 3, self.recorder))
        self.loop.start()
        for s in self.subs:
            if not s.subscribed.wait(15):
                raise RuntimeError("subscriber %s did not subscribe" % s.cid)
        for i in range(3):
            self.probes.append(self.add_pub("probe%d" % (i + 1), "tf/probe/%s/%d" % (p, i + 1),
                                            i, PROBE_RATE, PROBE_WINDOW, pinned=True))
        for k in range(BG_PUBLISHERS):
            self.pubs.append(self.add_pub("pub%d" % k, "tf/seq/%s/%d" % (p, k), k % 3,
                                          BG_RATE, BG_WINDOW))
        self.regs = Registers(self.cluster, p, REGISTERS, REG_WORKERS)
        self.regs.start()
        # A sanity check that the workload runs (not a bound): every probe
        # acknowledged within the last 0.5 s, within 10 s of the start.
        deadline = time.monotonic() + 10.0
        time.sleep(2.0)
        while not self.healthy() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not self.healthy():
            raise RuntimeError("the workload does not get acknowledgements from every node")
        log("workload running: %d publishers x %d msg/s, 3 probes x %d msg/s, %d persistent "
            "subscribers, %d registers x %d workers" % (BG_PUBLISHERS, BG_RATE, PROBE_RATE,
                                                        SUBSCRIBERS, REGISTERS, REG_WORKERS))

    def on_loop(self, factory):
        """factory(now) run on the client loop's thread (clients are made there, so the
        loop never sees one half-built); returns what it returned."""
        holder = []
        self.loop.call(lambda now: holder.append(factory(now)))
        deadline = time.monotonic() + 5
        while not holder and time.monotonic() < deadline:
            time.sleep(0.01)
        if not holder:
            raise RuntimeError("client loop not responding")
        return holder[0]

    def add_pub(self, name, topic, home, rate, window, pinned=False):
        return self.on_loop(lambda now: mqttloop.Publisher(
            self.loop, "%s-%s" % (self.prefix, name), topic, self.cluster.addrs(), home, rate,
            window, pinned))

    # --- one phase ---
    def run_phase(self, name, inject, heal, fault_s, majority, waiting, bound):
        """inject() -> starts the fault (returns the moment that counts as its start);
        heal() ends it. Measures progress of `majority` during the fault, recovery of
        every node after the heal, CPU of `waiting` during the fault."""
        ph = Phase(name)
        self.phases.append(ph)
        ph.t_begin = time.monotonic()
        if not self.wait(ph, 15.0, self.healthy):
            ph.notes.append("not every node acknowledged before the fault")
        ph.majority, ph.waiting, ph.progress_bound = majority, waiting, bound
        for nd in self.cluster.nodes:
            ph.rss_start[nd.id] = nd.rss_mb() or 0.0
        ticks0 = {nd.id: nd.cpu_ticks() for nd in self.cluster.nodes}
        log("phase %-22s fault: %s" % (name, inject.__doc__ or ""))
        ph.t_fault = inject() or time.monotonic()
        c0 = time.monotonic()
        self.wait(ph, fault_s)
        elapsed = time.monotonic() - c0
        for nd in self.cluster.nodes:
            t1 = nd.cpu_ticks() if nd.alive() else None
            if t1 is not None and ticks0.get(nd.id) is not None:
                ph.cpu[nd.id] = 100.0 * (t1 - ticks0[nd.id]) / CLK_TCK / elapsed
            ph.rss_end[nd.id] = nd.rss_mb() if nd.alive() else None
        t_heal_call = time.monotonic()
        for m in majority:
            ph.progress[m] = self.first_ack_after(m, ph.t_fault, until=t_heal_call)
        heal()
        ph.t_heal = time.monotonic()
        ok = self.wait(ph, RECOVER_WAIT_S, lambda: all(
            self.first_ack_after(nd.id, ph.t_heal) is not None for nd in self.cluster.nodes))
        for nd in self.cluster.nodes:
            ph.recovery[nd.id] = self.first_ack_after(nd.id, ph.t_heal)
        if not ok:
            ph.notes.append("not every node acknowledged within %.0fs of the heal" %
                            RECOVER_WAIT_S)
        self.wait(ph, SETTLE_S)
        self.check_crashes(ph)
        ph.t_end = time.monotonic()
        # Where a node's RSS went over the phase (seconds since the fault, node, MB):
        # which moment a growth belongs to (the fault, the heal, a restart).
        with open(os.path.join(self.workdir, "rss-%d-%s.txt" % (len(self.phases), name)),
                  "w") as f:
            f.writelines("%.2f %d %.1f\n" % x for x in ph.rss_series)
        log("phase %-22s done: progress %s, recovery %s" % (
            name, fmt_nodes(ph.progress), fmt_nodes(ph.recovery)))
        return ph

    # --- the faults ---
    def phase_leader_isolated(self):
        lead = self.leader()
        others = self.followers(lead)

        def inject():
            """leader isolated from both followers (iptables DROP in the namespaces)"""
            for o in others:
                self.net.cut(lead, o)
        self.run_phase("leader-isolated", inject, self.net.heal_cuts, FAULT_S, others, [lead],
                       LEADER_LOSS_PROGRESS_S)

    def phase_follower_split(self):
        lead = self.leader()
        f = self.followers(lead)[0]

        def inject():
            """a follower split off from both other nodes"""
            for o in (lead, self.followers(lead)[1]):
                self.net.cut(f, o)
        self.run_phase("follower-split", inject, self.net.heal_cuts, FAULT_S,
                       [lead, self.followers(lead)[1]], [f], LEADER_LOSS_PROGRESS_S)

    def phase_bridge(self):
        lead = self.leader()
        a, b = self.followers(lead)

        def inject():
            """the leader and one follower cut apart; the other follower still sees both"""
            self.net.cut(lead, a)
        self.run_phase("bridge", inject, self.net.heal_cuts, FAULT_S, [lead, b], [a],
                       LEADER_LOSS_PROGRESS_S)

    def phase_loss(self):
        def inject():
            """30% loss + 50 ms delay on every node's interface"""
            self.net.loss_on(LOSS_PCT, DELAY_MS)
        self.run_phase("loss+delay", inject, self.net.loss_off, LOSS_FAULT_S,
                       [1, 2, 3], [], LOSSY_PROGRESS_S)

    def phase_kill_under_loss(self):
        lead = self.leader()

        def inject():
            """kill -9 of the leader under 30% loss + 50 ms delay"""
            self.net.loss_on(LOSS_PCT, DELAY_MS)
            time.sleep(1.0)
            t = time.monotonic()
            self.cluster.node(lead).kill9()
            return t

        def heal():
            self.cluster.node(lead).start()
            self.net.loss_off()
        self.run_phase("kill-9-under-loss", inject, heal, KILL_DOWN_S + 2.0,
                       self.followers(lead), [], LOSSY_PROGRESS_S)

    def kill_phase(self, name, victim, doc):
        lead = self.leader()
        v = lead if victim == "leader" else self.followers(lead)[0]

        def inject():
            self.cluster.node(v).kill9()
        inject.__doc__ = doc % v

        def heal():
            self.cluster.node(v).start()
        self.run_phase(name, inject, heal, KILL_DOWN_S,
                       [nd.id for nd in self.cluster.nodes if nd.id != v], [],
                       LEADER_LOSS_PROGRESS_S)

    def phase_kill_follower(self):
        self.kill_phase("kill-9-follower", "follower", "kill -9 of a follower (node %d)")

    def phase_kill_leader(self):
        self.kill_phase("kill-9-leader", "leader", "kill -9 of the leader (node %d)")

    def phase_sigstop(self):
        lead = self.leader()

        def inject():
            """SIGSTOP of the leader for 5 s"""
            nd = self.cluster.node(lead)
            nd.signal(signal.SIGSTOP)
            nd.stopped = True

        def heal():
            nd = self.cluster.node(lead)
            nd.signal(signal.SIGCONT)
            nd.stopped = False
        self.run_phase("sigstop-leader", inject, heal, FAULT_S, self.followers(lead), [],
                       LEADER_LOSS_PROGRESS_S)

    def phase_kill_at_load(self):
        lead = self.leader()
        f1, f2 = self.followers(lead)
        p = self.prefix
        r = len(self.load_sets)  # the phase may be run more than once: its own clients
        sub = self.on_loop(lambda now: mqttloop.Subscriber(
            self.loop, "%s-load%dsub" % (p, r), ["tf/load/%s/%d/#" % (p, r)],
            self.cluster.addrs(), f2 - 1, self.recorder))
        self.load_subs.append(sub)
        pubs = []
        self.load_sets.append((sub, pubs))
        if not sub.subscribed.wait(10):
            raise RuntimeError("load subscriber did not subscribe")

        def inject():
            for k in range(LOAD_PUBLISHERS):
                pubs.append(self.add_pub("load%d-%d" % (r, k), "tf/load/%s/%d/%d" % (p, r, k),
                                         f1 - 1, LOAD_RATE, LOAD_WINDOW))
            self.load_pubs.extend(pubs)
            time.sleep(LOAD_BEFORE_S)
            t = time.monotonic()
            self.cluster.node(lead).kill9()
            self.peak_unacked = 0
            end = t + 1.0
            while time.monotonic() < end:
                self.peak_unacked = max(self.peak_unacked, max(
                    len(lp.inflight) for lp in pubs))
                time.sleep(0.02)
            return t

        def heal():
            self.cluster.node(lead).start()
            time.sleep(LOAD_AFTER_S)

            def off(now):
                for lp in pubs:
                    lp.enabled = False
            self.loop.call(off)
        inject.__doc__ = "kill -9 of the leader (node %d), %d publishers x %d msg/s on " \
                         "node %d, their subscriber on node %d" % (lead, LOAD_PUBLISHERS,
                                                                    LOAD_RATE, f1, f2)
        ph = self.run_phase("kill-9-at-load", inject, heal, KILL_DOWN_S - 1.0, [f1, f2], [],
                            LEADER_LOSS_PROGRESS_S)
        ph.notes.append("load publishers: at most %d unacknowledged each in the second after "
                        "the kill" % self.peak_unacked)

    # --- the end ---
    def finish(self):
        """Stops publishing, waits for acknowledgements and deliveries."""
        def off(now):
            for pb in self.pubs + self.probes + self.load_pubs:
                pb.enabled = False
        self.loop.call(off)
        self.regs.stop()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
                pb.inflight for pb in self.pubs + self.probes + self.load_pubs):
            time.sleep(0.1)
        deadline = time.monotonic() + FINAL_DRAIN_S
        while time.monotonic() < deadline and self.missing_total():
            time.sleep(0.2)
        self.loop.stop()

    def expected(self):
        """(subscriber, publisher) pairs: which subscriber must get which publisher's."""
        pairs = []
        for s in self.subs:
            for pb in self.pubs + self.probes:
                pairs.append((s, pb))
        for s, pubs in self.load_sets:
            for pb in pubs:
                pairs.append((s, pb))
        return pairs

    def missing_total(self):
        n = 0
        for s, pb in self.expected():
            got = self.recorder.got.get((s.cid, pb.name), ())
            n += sum(1 for a in list(pb.acks) if a[0] not in got)
        return n

    def report(self):
        lost = []  # (t_ack, sub, pub, seq, node the PUBACK came from, t_sent)
        for s, pb in self.expected():
            got = self.recorder.got.get((s.cid, pb.name), set())
            for a in pb.acks:
                if a[0] not in got:
                    lost.append((a[3], s.cid, pb.name, a[0], a[4], a[2]))
        allpubs = self.pubs + self.probes + self.load_pubs
        acks = sorted(a[3] for pb in allpubs for a in pb.acks)
        regs_n, lin = self.regs.check()
        bad = False

        # Events are the phase's from its start until the next phase starts (the gap
        # between phases is a leader look-up), the last phase's until the end.
        ends = [ph.t_begin for ph in self.phases[1:]] + [float("inf")]
        until = {id(ph): e for ph, e in zip(self.phases, ends)}

        def in_phase(t, ph):
            return ph.t_begin <= t < until[id(ph)]

        print()
        print("fault suite: %s, loss emulation %s%s" % (
            self.args.bin, self.net.loss_mode,
            " (loss only, no delay)" if self.net.loss_mode == "statistic" else ""))
        hdr = ("%-18s %7s %5s %5s %6s %8s %9s %9s  %-17s %-17s %-17s" % (
            "phase", "acked", "lost", "dups", "reord", "unavail", "progress", "recovery",
            "cpu% n1/n2/n3", "rss MB n1/n2/n3", "rss +MB n1/n2/n3"))
        print(hdr)
        print("-" * len(hdr))
        for ph in self.phases:
            n_ack = sum(1 for t in acks if in_phase(t, ph))
            n_lost = sum(1 for x in lost if in_phase(x[0], ph))
            n_dup = sum(1 for x in self.recorder.dups if in_phase(x[0], ph))
            reo_all = [x for x in self.recorder.reorders if in_phase(x[0], ph)]
            reo = [x for x in reo_all if x[5]]
            win = [ph.t_fault] + [t for t in acks if ph.t_fault <= t < ph.t_end] + [ph.t_end]
            unavail = max(b - a for a, b in zip(win, win[1:]))
            prog = max((v if v is not None else float("inf")) for v in ph.progress.values())
            rec = max((v if v is not None else float("inf")) for v in ph.recovery.values())
            cpu = "/".join("%.0f" % ph.cpu[i] if i in ph.cpu else "-" for i in (1, 2, 3))
            rss = "/".join("%.0f" % ph.rss_max[i] if i in ph.rss_max else "-" for i in (1, 2, 3))
            # The growth that RSS_GROWTH_MAX_MB bounds: the phase's peak less its start.
            grew = "/".join("%.0f" % (ph.rss_max[i] - ph.rss_start.get(i, ph.rss_max[i]))
                            if i in ph.rss_max else "-" for i in (1, 2, 3))
            print("%-18s %7d %5d %5d %6d %7.2fs %9s %9s  %-17s %-17s %-17s" % (
                ph.name, n_ack, n_lost, n_dup, len(reo), unavail, fmt_s(prog, "s"),
                fmt_s(rec, "s"),
                cpu, rss, grew))
            v = ph.violations
            if n_lost:
                v.append("%d acknowledged messages never delivered (%s)" % (
                    n_lost, describe_lost([x for x in lost if in_phase(x[0], ph)], ph.t_fault)))
            if reo:
                v.append("%d reorders on one publisher connection (first: %s seq %d after %d "
                         "at %s)" % (len(reo), reo[0][2].split("-", 1)[-1], reo[0][3],
                                     reo[0][4], reo[0][1].split("-", 1)[-1]))
            if len(reo_all) > len(reo):
                # Not an MQTT 4.6 violation: order is promised per publisher connection, and
                # a message left unacknowledged on a dead connection may commit late.
                ph.notes.append("%d received out of order across a publisher's reconnect "
                                "(not counted in reord)" % (len(reo_all) - len(reo)))
            if prog > ph.progress_bound:
                v.append("majority side (nodes %s) acknowledged new messages after %s s, bound "
                         "%.1f s (per node: %s)" % (ph.majority, fmt_s(prog), ph.progress_bound,
                                                    fmt_nodes(ph.progress)))
            if rec > HEAL_RECOVERY_S:
                v.append("recovery after the heal %s s, bound %.1f s (per node: %s)" % (
                    fmt_s(rec), HEAL_RECOVERY_S, fmt_nodes(ph.recovery)))
            for w in ph.waiting:
                if ph.cpu.get(w, 0.0) > WAITING_CPU_MAX_PCT:
                    v.append("node %d used %.0f%% of a core while it waited, bound %.0f%%" % (
                        w, ph.cpu[w], WAITING_CPU_MAX_PCT))
            for i, r in ph.rss_max.items():
                grow = r - ph.rss_start.get(i, r)
                if grow > RSS_GROWTH_MAX_MB:
                    v.append("node %d RSS grew %.0f MB in the phase (%.0f -> %.0f), bound "
                             "%.0f MB" % (i, grow, ph.rss_start[i], r, RSS_GROWTH_MAX_MB))
                if r > RSS_MAX_MB:
                    v.append("node %d RSS %.0f MB, bound %.0f MB" % (i, r, RSS_MAX_MB))
        print()
        for ph in self.phases:
            for n in ph.notes:
                print("  %s: note: %s" % (ph.name, n))
            for v in ph.violations:
                why = known_open(ph.name, v)
                if why:
                    print("  %s: KNOWN (issue 11, open: %s): %s" % (ph.name, why, v))
                else:
                    print("  %s: FAIL: %s" % (ph.name, v))
                    bad = True
            for (name, start), why in KNOWN_OPEN.items():
                if why and name == ph.name and not any(v.startswith(start)
                                                       for v in ph.violations):
                    print("  %s: known-open bound held this run: %s" % (ph.name, why))
        for s in self.subs + self.load_subs:
            for (t, node) in s.session_losses:
                where = [ph.name for ph in self.phases if in_phase(t, ph)] or ["between phases"]
                print("  %s: FAIL: persistent session of %s lost: CONNACK on node %d at %+.2f s "
                      "of the fault had no session (session present 0)" % (
                          where[0], s.cid.split("-", 1)[-1], node,
                          t - ([ph.t_fault for ph in self.phases if in_phase(t, ph)] or [t])[0]))
                bad = True
        outside = [x for x in lost if not any(in_phase(x[0], ph) for ph in self.phases)]
        if outside:
            print("  FAIL: %d acknowledged messages lost outside the phases (%s)" % (
                len(outside), describe_lost(outside, self.phases[0].t_fault if self.phases
                                            else 0.0)))
            bad = True
        for nd in self.cluster.nodes:
            text = open(nd.log_path, "rb").read().decode(errors="replace")
            for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                if marker in text:
                    i = text.index(marker)
                    print("  FAIL: sanitizer report in node %d's log (%s):\n%s" % (
                        nd.id, nd.log_path, text[max(0, i - 200):i + 3000]))
                    bad = True
                    break
        writes = sum(len(w) for w in self.regs.writes.values())
        wacked = sum(1 for w in self.regs.writes.values() for x in w.values() if x[1])
        print("  registers: %d writes (%d acknowledged), %d reads checked (%d failed to "
              "complete), %d violations" % (writes, wacked, regs_n, self.regs.failed_reads,
                                            len(lin)))
        for x in lin[:20]:
            print("  FAIL: linearizability: %s" % x)
        if lin:
            bad = True
        sent = sum(pb.sent for pb in allpubs)
        print("  publishers: %d sent, %d acknowledged, %d abandoned unacknowledged at a "
              "disconnect; subscribers received %d; client reconnects %d" % (
                  sent, len(acks), sum(pb.abandoned for pb in allpubs),
                  sum(s.received for s in self.subs + self.load_subs),
                  sum(max(0, c.connects - 1) for c in self.loop.clients)))
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print("  load generator (this process): %.1f s of CPU in %.0f s" % (
            ru.ru_utime + ru.ru_stime, time.monotonic() - self.t0))
        print("fault suite: %s" % ("FAILED" if bad else "passed"))
        return 1 if bad else 0

    def cleanup(self):
        if self.loop is not None and self.loop.thread.is_alive():
            self.loop.stop()
        if self.regs is not None:
            self.regs.stop_ev.set()
        if self.cluster is not None:
            self.cluster.stop_all()
        self.net.cleanup()


def fmt_s(v, unit=""):
    if v is None or v == float("inf"):
        return "none"
    return "%.2f%s" % (v, unit)


def fmt_nodes(d):
    return ", ".join("n%d %s" % (k, fmt_s(v)) for k, v in sorted(d.items())) or "-"


def describe_lost(xs, t_fault):
    """Per (publisher, subscriber): how many, which seqs, the nodes that acknowledged
    them and when (seconds relative to the fault)."""
    by = {}
    for (t, sub, pub, seq, node, ts) in xs:
        by.setdefault((sub, pub), []).append((seq, t - t_fault, node, ts - t_fault))
    parts = []
    for (sub, pub), ent in sorted(by.items()):
        ent.sort()
        parts.append("%s->%s: %d, seq %d..%d, sent %+.2f..%+.2f s, acked by node %s at "
                     "%+.2f..%+.2f s" % (
                         pub.split("-", 1)[-1], sub.split("-", 1)[-1], len(ent), ent[0][0],
                         ent[-1][0], min(e[3] for e in ent), max(e[3] for e in ent),
                         "/".join(str(n) for n in sorted(set(e[2] for e in ent))),
                         min(e[1] for e in ent), max(e[1] for e in ent)))
    return "; ".join(parts[:12]) + ("; ..." if len(parts) > 12 else "")


# The phases in their order: name (as the table prints it) -> Suite method.
PHASES = {"leader-isolated": "phase_leader_isolated", "follower-split": "phase_follower_split",
          "bridge": "phase_bridge", "kill-9-follower": "phase_kill_follower",
          "kill-9-leader": "phase_kill_leader", "loss+delay": "phase_loss",
          "kill-9-under-loss": "phase_kill_under_loss", "sigstop-leader": "phase_sigstop",
          "kill-9-at-load": "phase_kill_at_load"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="the ternd to test")
    ap.add_argument("--netem-helper", help="nfq_netem binary (used where sch_netem is absent)")
    ap.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset of: " +
                    ", ".join(PHASES))
    ap.add_argument("--workdir", default=None, help="parent of the run's folder (default /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the node logs and data")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a node configuration key for every node (JSON value, else a "
                    "string), e.g. --set raft_election_timeout_ms=1000; for experiments")
    args = ap.parse_args()
    import json
    args.node_config = {}
    for kv in args.set:
        k, _, v = kv.partition("=")
        try:
            args.node_config[k] = json.loads(v)
        except ValueError:
            args.node_config[k] = v
    # A helper asked for and missing would fall back to loss without the delay, and
    # every figure of the loss phases would be of a milder fault (session 12).
    if args.netem_helper and not os.access(args.netem_helper, os.X_OK):
        ap.error("--netem-helper %s: not an executable (tests/fault/run.sh builds it)" %
                 args.netem_helper)
    phases = [p for p in args.phases.split(",") if p]
    for p in phases:
        if p not in PHASES:
            ap.error("unknown phase %r" % p)
    if os.geteuid() != 0:
        print("fault: needs root (network namespaces, iptables)", file=sys.stderr)
        return 2

    def on_term(sig, frame):
        raise KeyboardInterrupt("signal %d" % sig)
    # SIGINT too: started in the background by a shell, a process inherits it ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_term)

    suite = Suite(args)
    rc = 2
    t0 = time.monotonic()
    try:
        suite.setup()
        for p in phases:
            getattr(suite, PHASES[p])()
        suite.finish()
        rc = suite.report()
    except KeyboardInterrupt as e:
        log("interrupted (%s): cleaning up" % (e or "Ctrl-C"))
        rc = 130
    except RuntimeError as e:
        log("harness error: %s" % e)
        for nd in (suite.cluster.nodes if suite.cluster else []):
            print("--- node %d log tail:\n%s" % (nd.id, tail(nd.log_path, 15)))
        rc = 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second ^C must not stop the clean-up
        suite.cleanup()
        if rc == 0 and not args.keep:
            shutil.rmtree(suite.workdir, ignore_errors=True)
        else:
            for nd in (suite.cluster.nodes if suite.cluster else []):
                shutil.rmtree(os.path.join(nd.dir, "data"), ignore_errors=True)
            log("node logs kept in %s" % suite.workdir)
        log("%.0f s in all" % (time.monotonic() - t0))
    return rc


if __name__ == "__main__":
    sys.exit(main())
