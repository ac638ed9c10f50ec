"""A three-node ternd cluster for multi-process integration tests.

Fixture `tern_cluster` (import `tern_cluster_fixture` into the test module):
    c.node(n)          Node n (1..3): .host, .port (MQTT), .log(), .log_tail(), .alive()
    c.kill(n, sig)     signal a node (default SIGKILL) and wait for it to exit
    c.start(n)         start a stopped node again (same ports, same data dir)
    c.restart(n, sig)  kill(n, sig) then start(n)
    c.stop_all() / c.start_all()
    c.wait_ready()     every running node accepts CONNECT, a QoS 1 PUBLISH is acked
    c.leader()         the node id whose log says it is the leader, or None
    c.client(n, ...)   connected paho client (helpers.PahoClient) on node n, closed at teardown
    c.raw(n, version)  mqttraw.RawClient on node n, closed at teardown

Fixture `tern_proxy_cluster` (import `tern_proxy_cluster_fixture`): the same, and every
node has a `proxy_protocol` listener too, on nd.proxy_port.

Extra config keys for every node: parametrize the fixture indirectly,
    @pytest.mark.parametrize("tern_cluster", [{"queue_max": 100000}], indirect=True)

Environment: TERN_BIN (default <repo>/build-asan/ternd); TERN_TEST_NODE_TLS=1 runs every
cluster with mutual TLS between its nodes (cluster_tls, a CA and node certificates made
by deploy/node-certs.sh in the test's directory).

Teardown stops every node (SIGTERM, SIGKILL after 5 s) and fails the test if a node
exited by itself, did not stop on SIGTERM, or any log holds a sanitizer report.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import json
import urllib.request

import pytest

import helpers
import mqttraw

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
TERN_BIN = os.environ.get("TERN_BIN", os.path.join(REPO, "build-asan", "ternd"))
STOP_GRACE_S = 5.0
READY_TIMEOUT_S = 20.0
NODES = 3

NODE_TLS = os.environ.get("TERN_TEST_NODE_TLS") == "1"

_LEADER_RE = re.compile(r"raft: (?:node (\d+) is leader|leader is node (\d+)|(no leader)) "
                        r"\(term (\d+)\)")


def _supports_admin():
    """Whether this ternd has the admin HTTP API (then each node gets its own port:
    the default 8081 would collide between the three nodes)."""
    try:
        out = subprocess.run([TERN_BIN, "--help"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"admin_listen" in out.stdout + out.stderr


def make_node_certs(d, ids):
    """A cluster CA (made once) and certificates "node-ID" under d (deploy/node-certs.sh)."""
    subprocess.run(["sh", os.path.join(REPO, "deploy", "node-certs.sh"), d] +
                   [str(i) for i in ids], check=True, capture_output=True, timeout=60)
    return d


def free_ports(n):
    """n distinct free ports on 127.0.0.1 (all bound at once so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            sk = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sk.bind(("127.0.0.1", 0))
            socks.append(sk)
        return [sk.getsockname()[1] for sk in socks]
    finally:
        for sk in socks:
            sk.close()



def backtraces(pid, log_path):
    """Where a node that does not stop is stuck: every thread's stack (gdb, when
    installed) appended to its log; returns a note saying so, or ""."""
    if not shutil.which("gdb"):
        return ""
    try:
        out = subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx", "-ex",
                              "thread apply all bt 30"], capture_output=True, timeout=60,
                             text=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    with open(log_path, "a") as log:
        log.write("=== backtraces of the node that did not stop\n" + out)
    return " (backtraces in %s)" % log_path

class Node(helpers.LogFile):
    """One ternd of the cluster. Duck-types conftest.Broker for the report hook."""

    kind = "tern"

    def __init__(self, node_id, workdir, mqtt_port, raft_port, peer_port, admin_port=None):
        self.id = node_id
        self.admin_port = admin_port  # None: this ternd has no admin API
        self.host = "127.0.0.1"
        self.port = mqtt_port
        self.proxy_port = None  # a proxy_protocol listener (add_proxy_listeners)
        self.raft_port = raft_port
        self.peer_port = peer_port
        self.workdir = workdir
        self.data_dir = os.path.join(workdir, "data")
        self.log_path = os.path.join(workdir, "ternd.log")
        self.config_path = os.path.join(workdir, "ternd.json")
        self.proc = None
        self.problems = []
        self.reported = False
        self.start_offset = 0  # log offset of the current run
        os.makedirs(self.data_dir, exist_ok=True)

    def member(self):
        return {"id": self.id, "raft": "127.0.0.1:%d" % self.raft_port,
                "peer": "127.0.0.1:%d" % self.peer_port,
                "mqtt": "127.0.0.1:%d" % self.port}

    def write_config(self, members, settings=None):
        cfg = dict(settings or {})
        cfg.update({"node_id": self.id, "listen": "127.0.0.1:%d" % self.port,
               "data_dir": self.data_dir, "log_level": "debug", "members": members})
        pki = getattr(self, "pki", None)
        if pki and "cluster_tls" not in cfg:
            cfg["cluster_tls"] = {"cert_file": os.path.join(pki, "node-%d.pem" % self.id),
                                  "key_file": os.path.join(pki, "node-%d.key" % self.id),
                                  "ca_file": os.path.join(pki, "ca.pem")}
        if self.admin_port:
            cfg["admin_listen"] = "127.0.0.1:%d" % self.admin_port
        with open(self.config_path, "w") as f:
            json.dump(cfg, f, indent=1)

    def start(self, timeout=10.0):
        assert not self.alive(), "node %d already running" % self.id
        env = dict(os.environ)
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        # cmd_prefix: e.g. ["ip", "netns", "exec", NS] (netns.py); it must exec ternd
        cmd = getattr(self, "cmd_prefix", []) + [TERN_BIN, "--config", self.config_path]
        with open(self.log_path, "ab") as log:
            self.start_offset = log.tell()
            log.write(("=== start node %d: %s\n" % (self.id, " ".join(cmd))).encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                raise AssertionError("node %d exited at startup with %s:\n%s" % (
                    self.id, rc, self.log_tail()))
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.03)
        self.stop(signal.SIGKILL)
        raise AssertionError("node %d not listening on %d after %.0fs:\n%s" % (
            self.id, self.port, timeout, self.log_tail()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, sent=False):
        """Sends sig (unless `sent`: the caller already did), SIGKILL after 5 s if it was
        something else and the node is still running. Returns the exit code."""
        p = self.proc
        if p is None:
            return None
        signalled = sent or p.poll() is None
        t0 = time.monotonic()
        if signalled:
            if not sent:
                p.send_signal(sig)
            try:
                p.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.problems.append("node %d did not exit within %.0fs of signal %d; sent "
                                     "SIGKILL%s" % (self.id, STOP_GRACE_S, sig,
                                                    backtraces(p.pid, self.log_path)))
                p.kill()
                p.wait(5)
        else:
            self.problems.append("node %d had exited by itself with %s" % (self.id,
                                                                         p.returncode))
        self.proc = None
        rc = p.returncode
        if signalled and sig == signal.SIGTERM and rc != 0 and rc != -signal.SIGKILL:
            self.problems.append("node %d exited with %s on SIGTERM" % (self.id, rc))
        with open(self.log_path, "ab") as log:
            log.write(("=== stopped node %d: exit %s after %.2f s\n" %
                       (self.id, rc, time.monotonic() - t0)).encode())
        return rc


    def admin_get(self, path, timeout=3.0):
        """Body of GET path on the node's admin API, or None (no API / not answering)."""
        if not self.admin_port or not self.alive():
            return None
        url = "http://127.0.0.1:%d%s" % (self.admin_port, path)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return None

    def metric(self, name, labels=""):
        """A sample of the node's /metrics (e.g. "tern_dropped_messages_total",
        'reason="queue_full"') as a number, or None."""
        text = self.admin_get("/metrics")
        if text is None:
            return None
        key = "%s{%s}" % (name, labels) if labels else name
        for line in text.splitlines():
            if line.startswith(key + " "):
                try:
                    return float(line.split()[1])
                except ValueError:
                    return None
        return None

    def leader_view(self):
        """(leader id or 0, term) from the last leader line of the current run."""
        last = None
        for m in _LEADER_RE.finditer(self.log(current_run=True)):
            last = m
        if last is None:
            return None
        leader = int(last.group(1) or last.group(2) or 0)
        return leader, int(last.group(4))


class Cluster:
    def __init__(self, workdir, n=NODES, settings=None):
        """settings: extra config keys for every node (e.g. {"queue_max": 100000})."""
        admin = _supports_admin()
        per = 4 if admin else 3
        ports = free_ports(per * n)
        self.nodes = []
        for i in range(n):
            wd = os.path.join(workdir, "node%d" % (i + 1))
            os.makedirs(wd, exist_ok=True)
            p = ports[per * i:per * (i + 1)]
            self.nodes.append(Node(i + 1, wd, p[0], p[1], p[2], p[3] if admin else None))
        self.pki = None
        if NODE_TLS:
            self.pki = make_node_certs(os.path.join(workdir, "pki"), range(1, n + 1))
            for nd in self.nodes:
                nd.pki = self.pki
        members = [nd.member() for nd in self.nodes]
        for nd in self.nodes:
            nd.write_config(members, settings)
        self._clients = []

    def node(self, n):
        return self.nodes[n - 1]

    def add_proxy_listeners(self, settings=None):
        """Before start: every node also gets a `proxy_protocol` listener on a port of
        its own, nd.proxy_port (the port a balancer with send-proxy-v2 uses)."""
        members = [nd.member() for nd in self.nodes]
        for nd, port in zip(self.nodes, free_ports(len(self.nodes))):
            nd.proxy_port = port
            s = dict(settings or {})
            s["listeners"] = [{"type": "mqtt", "bind": "127.0.0.1:%d" % port,
                               "proxy_protocol": True}]
            nd.write_config(members, s)

    def alive_ids(self):
        return [nd.id for nd in self.nodes if nd.alive()]

    # --- lifecycle -----------------------------------------------------------
    def start_all(self, ready=True):
        for nd in self.nodes:
            if not nd.alive():
                nd.start()
        if ready:
            self.wait_ready()

    def stop_all(self, sig=signal.SIGTERM):
        """Signals every running node at once (a node left alone without quorum would
        take longer to stop), then waits for each."""
        sent = []
        for nd in self.nodes:
            if nd.alive():
                nd.proc.send_signal(sig)
                sent.append(nd)
        for nd in self.nodes:
            nd.stop(sig, sent=nd in sent)

    def kill(self, n, sig=signal.SIGKILL):
        return self.node(n).stop(sig)

    def start(self, n):
        return self.node(n).start()

    def restart(self, n, sig=signal.SIGTERM, ready=True):
        self.kill(n, sig)
        self.start(n)
        if ready:
            self.wait_ready()

    def wait_ready(self, timeout=READY_TIMEOUT_S):
        """Every running node accepts a CONNECT, and a QoS 1 PUBLISH is acknowledged
        through one of them (so there is a leader that commits)."""
        deadline = time.monotonic() + timeout
        pending = [nd for nd in self.nodes if nd.alive()]
        acked = False
        last_err = None
        while pending or not acked:
            if time.monotonic() > deadline:
                raise AssertionError(
                    "cluster not ready after %.0fs (nodes not accepting: %s, publish acked: "
                    "%s, last error: %s)\n%s" % (timeout, [nd.id for nd in pending], acked,
                                                 last_err, self._tails()))
            for nd in list(pending or [nd for nd in self.nodes if nd.alive()]):
                try:
                    ok, pub_ok = self._probe(nd, publish=not acked)
                except (OSError, AssertionError, mqttraw.Closed, ValueError) as e:
                    last_err = "node %d: %r" % (nd.id, e)
                    continue
                if ok and nd in pending:
                    pending.remove(nd)
                acked = acked or pub_ok
            if pending or not acked:
                time.sleep(0.1)

    @staticmethod
    def _probe(nd, publish):
        with mqttraw.RawClient(nd.host, nd.port, version=4, timeout=2.0) as c:
            ca = c.connect(helpers.uid("ready"), clean=True)
            if ca.reason != 0:
                return False, False
            if not publish:
                return True, False
            c.publish("tern-test/ready", b"1", qos=1, packet_id=1)
            ack = c.expect(mqttraw.PUBACK, 2.0)
            return True, ack.packet_id == 1

    def leader(self):
        """The running node whose latest leader line says it is the leader, if every
        other running node's latest line agrees (None if unknown)."""
        views = {nd.id: nd.leader_view() for nd in self.nodes if nd.alive()}
        claims = [i for i, v in views.items() if v and v[0] == i]
        if len(claims) != 1:
            return None
        lead, term = views[claims[0]]
        for i, v in views.items():
            if i != lead and (v is None or v[1] > term or (v[1] == term and v[0] != lead)):
                return None
        return lead

    def wait_leader(self, timeout=10.0, exclude=()):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lead = self.leader()
            if lead is not None and lead not in exclude:
                return lead
            time.sleep(0.05)
        return None

    # --- clients -------------------------------------------------------------
    def client(self, n, client_id=None, version=helpers.V5, clean=True, connect=True,
               **kw):
        c = helpers.PahoClient(self.node(n), client_id, version, clean, **kw)
        self._clients.append(c)
        if connect:
            c.connect()
        return c

    def raw(self, n, version=4, timeout=5.0):
        nd = self.node(n)
        c = mqttraw.RawClient(nd.host, nd.port, version=version, timeout=timeout)
        self._clients.append(c)
        return c

    def close_clients(self):
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass
        self._clients = []

    # --- teardown ------------------------------------------------------------
    def _tails(self, n=30):
        return "\n".join("--- node %d log tail:\n%s" % (nd.id, nd.log_tail(n))
                         for nd in self.nodes)

    def teardown(self):
        self.close_clients()
        errors = []
        for nd in self.nodes:
            if nd.proc is not None and nd.proc.poll() is not None:
                errors.append("node %d exited by itself with %s:\n%s" % (
                    nd.id, nd.proc.returncode, nd.log_tail()))
                nd.proc = None
        self.stop_all(signal.SIGTERM)
        for nd in self.nodes:
            errors += nd.problems
            rpt = nd.sanitizer_report()
            if rpt and not nd.reported:
                errors.append("sanitizer report in node %d log (%s):\n%s" % (
                    nd.id, nd.log_path, rpt))
        return errors


@pytest.fixture(name="tern_cluster")
def tern_cluster_fixture(request, tmp_path):
    if not os.access(TERN_BIN, os.X_OK):
        pytest.skip("ternd not built at %s (set TERN_BIN)" % TERN_BIN)
    # extra config keys: @pytest.mark.parametrize("tern_cluster", [{...}], indirect=True)
    c = Cluster(str(tmp_path), settings=getattr(request, "param", None))
    yield from run_cluster(request, c)


@pytest.fixture(name="tern_proxy_cluster")
def tern_proxy_cluster_fixture(request, tmp_path):
    """tern_cluster whose nodes also have a proxy_protocol listener (nd.proxy_port)."""
    if not os.access(TERN_BIN, os.X_OK):
        pytest.skip("ternd not built at %s (set TERN_BIN)" % TERN_BIN)
    settings = getattr(request, "param", None)
    c = Cluster(str(tmp_path), settings=settings)
    c.add_proxy_listeners(settings)
    yield from run_cluster(request, c)


def run_cluster(request, c):
    """A fixture's body for a configured, not yet started Cluster: starts it, yields
    it, tears it down (failing the test on what teardown found)."""
    # conftest's report hook adds these nodes' log tails to failures
    request.node._tern_brokers = c.nodes
    try:
        c.start_all()
    except BaseException:
        c.teardown()
        raise
    yield c
    errors = c.teardown()
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


def _cluster_add_node(self, settings=None, join=True):
    """Appends node N+1, not started: its config lists the current members and itself,
    with `join` (it waits for `ternctl add-node`). Returns the Node; start it with
    c.start(id). Teardown stops it with the others."""
    admin = _supports_admin()
    ports = free_ports(4 if admin else 3)
    i = len(self.nodes) + 1
    wd = os.path.join(os.path.dirname(self.nodes[0].workdir), "node%d" % i)
    os.makedirs(wd, exist_ok=True)
    nd = Node(i, wd, ports[0], ports[1], ports[2], ports[3] if admin else None)
    if getattr(self, "pki", None):
        nd.pki = make_node_certs(self.pki, [i])
    cfg = dict(settings or {})
    if join:
        cfg["join"] = True
    nd.write_config([x.member() for x in self.nodes] + [nd.member()], cfg)
    self.nodes.append(nd)  # the same list the report hook holds
    return nd


Cluster.add_node = _cluster_add_node
