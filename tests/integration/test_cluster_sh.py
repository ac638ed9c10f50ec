"""deploy/cluster.sh and deploy/drill.sh: a local three-node cluster driven through its
script, verb by verb, then a short failover drill.

The tests share one cluster (module scope) and run in file order. It uses TERN_BIN from the
environment (default build-asan/ternd), its own free port bases and a TERN_DATA in a tmp
dir, so it never touches a developer's cluster on the default ports.
"""
import json
import os
import random
import re
import signal
import socket
import subprocess
import time
import types

import pytest

import helpers

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CLUSTER_SH = os.path.join(REPO, "deploy", "cluster.sh")
DRILL_SH = os.path.join(REPO, "deploy", "drill.sh")
BIN = os.environ.get("TERN_BIN") or os.path.join(REPO, "build-asan", "ternd")
NODES = (1, 2, 3)

pytestmark = [
    pytest.mark.tern_only,
    pytest.mark.skipif(not os.access(BIN, os.X_OK), reason="ternd not built at %s" % BIN),
]


def ports_free(base):
    for p in range(base, base + 3):
        with socket.socket() as sk:
            try:
                sk.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


def free_bases():
    """Four bases (mqtt, raft, peer, admin) of three free ports each, below the ephemeral
    range and away from the defaults (1883, 7001, 7101, 8081) and the 24000s used by hand."""
    rng = random.Random(os.getpid() ^ int(time.time()))
    for _ in range(200):
        b = rng.randrange(10000, 32000, 20)
        if 23990 <= b < 25000:
            continue
        bases = (b, b + 3, b + 6, b + 9)
        if all(ports_free(x) for x in bases):
            return bases
    pytest.skip("no free port range found")


class Cluster:
    def __init__(self, tmp):
        self.data = os.path.join(tmp, "cluster")
        self.cwd = tmp  # so `up`'s pointer (./.cluster/cluster.env) stays in tmp
        self.mqtt, raft, peer, admin = free_bases()
        self.env = dict(os.environ, TERN_BIN=BIN, TERN_DATA=self.data,
                        TERN_MQTT_BASE=str(self.mqtt), TERN_RAFT_BASE=str(raft),
                        TERN_PEER_BASE=str(peer), TERN_ADMIN_BASE=str(admin),
                        TERN_WAIT_S="60")
        self.env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        self.env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")

    def run(self, *args, timeout=150, script=CLUSTER_SH):
        return subprocess.run([script] + [str(a) for a in args], env=self.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, cwd=self.cwd, universal_newlines=True)

    def ok(self, *args, **kw):
        r = self.run(*args, **kw)
        assert r.returncode == 0, "cluster.sh %s: exit %d\n%s\n%s" % (
            " ".join(map(str, args)), r.returncode, r.stdout, r.stderr)
        return r.stdout

    def port(self, n):
        return self.mqtt + n - 1

    def broker(self, n):
        return types.SimpleNamespace(host="127.0.0.1", port=self.port(n))

    def pid(self, n):
        try:
            with open(os.path.join(self.data, "node%d" % n, "ternd.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def log(self, n):
        try:
            with open(os.path.join(self.data, "node%d" % n, "ternd.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def sanitizer_reports(self):
        out = []
        for n in NODES:
            text = self.log(n)
            report = helpers.sanitizer_excerpt(text)
            if report:
                out.append("node %d:\n%s" % (n, report))
        return out


def alive(pid):
    if pid is None:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("cluster_sh")))
    yield c
    # Whatever happened, stop what this module started (cluster.sh signals only its pids).
    c.run("down", timeout=60)


def status_lines(out):
    return {int(m.group(1)): m.group(0)
            for m in re.finditer(r"^node (\d): .*$", out, re.M)}


def test_bad_arguments_print_usage_and_exit_2(cluster):
    for args in ([], ["frobnicate"], ["start"], ["start", "4"], ["stop", "x"],
                 ["kill", "1", "2"], ["up", "now"], ["logs"], ["logs", "1", "-x"],
                 ["status", "-v"], ["restart", "0"]):
        r = cluster.run(*args, timeout=30)
        assert r.returncode == 2, (args, r.returncode, r.stdout, r.stderr)
        assert "usage:" in r.stderr, (args, r.stderr)
        assert r.stdout == "", (args, r.stdout)
    assert not os.path.exists(cluster.data), "a bad command must not create anything"


def test_status_before_up_fails(cluster):
    r = cluster.run("status", timeout=30)
    assert r.returncode != 0
    assert len(status_lines(r.stdout)) == 3


def test_up_starts_three_ready_nodes(cluster):
    out = cluster.ok("up")
    for n in NODES:
        assert "127.0.0.1:%d" % cluster.port(n) in out
        assert os.path.join(cluster.data, "node%d" % n, "ternd.log") in out
        assert alive(cluster.pid(n)), "node %d not running after up" % n
    assert re.search(r"leader: node [123]", out), out
    st = cluster.ok("status")
    lines = status_lines(st)
    assert sorted(lines) == [1, 2, 3]
    for n, line in lines.items():
        assert "running" in line and "accepting" in line and "not accepting" not in line, line


def test_up_turns_on_mutual_tls_between_nodes(cluster):
    """`up` made a cluster CA and one certificate per node (keys mode 0600), every node's
    config names its own in cluster_tls, and every node logged mutual TLS."""
    pki = os.path.join(cluster.data, "pki")
    assert os.path.isfile(os.path.join(pki, "ca.pem"))
    for n in NODES:
        key = os.path.join(pki, "node-%d.key" % n)
        assert os.stat(key).st_mode & 0o077 == 0, "%s readable by others" % key
        r = subprocess.run(["openssl", "x509", "-in", os.path.join(pki, "node-%d.pem" % n),
                            "-noout", "-subject"], capture_output=True, text=True)
        assert "CN = node-%d" % n in r.stdout, r.stdout
        with open(os.path.join(cluster.data, "node%d" % n, "ternd.json")) as f:
            cfg = json.load(f)
        assert cfg["cluster_tls"]["cert_file"] == os.path.join(pki, "node-%d.pem" % n)
        assert "mutual TLS between nodes" in cluster.log(n), cluster.log(n)[-2000:]


def test_up_again_starts_nothing(cluster):
    pids = [cluster.pid(n) for n in NODES]
    out = cluster.ok("up")
    assert out.count("already running") == 3, out
    assert [cluster.pid(n) for n in NODES] == pids


def test_messages_cross_nodes(cluster):
    sub = helpers.PahoClient(cluster.broker(1), version=helpers.V311)
    pub = helpers.PahoClient(cluster.broker(2), version=helpers.V311)
    try:
        sub.connect()
        sub.subscribe("clsh/cross", qos=1)
        pub.connect()
        pub.publish("clsh/cross", b"hello", qos=1)
        m = sub.get(timeout=10)
        assert (m.topic, m.payload) == ("clsh/cross", b"hello")
    finally:
        sub.close()
        pub.close()


def test_stop_makes_status_fail_and_start_brings_it_back(cluster):
    pid = cluster.pid(2)
    cluster.ok("stop", 2)
    assert not alive(pid)
    r = cluster.run("status")
    assert r.returncode != 0
    lines = status_lines(r.stdout)
    assert "down" in lines[2] and "not accepting" in lines[2], lines[2]
    assert "running" in lines[1] and "running" in lines[3]
    out = cluster.ok("start", 2)
    assert "ready" in out
    assert alive(cluster.pid(2)) and cluster.pid(2) != pid
    cluster.ok("status")


def test_kill_and_restart(cluster):
    pid = cluster.pid(3)
    cluster.ok("kill", 3)
    assert not alive(pid)
    assert "=== stopped (KILL)" in cluster.log(3)
    assert cluster.run("status").returncode != 0
    cluster.ok("restart", 3)  # a stopped node: restart starts it
    assert alive(cluster.pid(3))
    pid1 = cluster.pid(1)
    cluster.ok("restart", 1)  # a running node: stopped, then started again
    assert not alive(pid1) and alive(cluster.pid(1)) and cluster.pid(1) != pid1
    cluster.ok("status")


def test_logs(cluster):
    out = cluster.ok("logs", 1)
    assert "listening on 127.0.0.1:%d" % cluster.port(1) in out
    assert len(out.splitlines()) <= 100
    p = subprocess.Popen([CLUSTER_SH, "logs", "2", "-f"], env=cluster.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        time.sleep(1.0)
        assert p.poll() is None, "logs -f should keep following"
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        out, _ = p.communicate(timeout=10)
    assert b"listening on" in out


def test_rolling_restart_keeps_queued_messages(cluster):
    cid = helpers.uid("clsh-roll")
    s = helpers.PahoClient(cluster.broker(1), client_id=cid, version=helpers.V311, clean=False)
    s.connect()
    s.subscribe("clsh/roll", qos=1)
    s.close()
    pub = helpers.PahoClient(cluster.broker(2), version=helpers.V311)
    pub.connect()
    for i in range(5):
        pub.publish("clsh/roll", b"m%d" % i, qos=1)
    pub.close()

    pids = [cluster.pid(n) for n in NODES]
    out = cluster.ok("rolling-restart", timeout=170)
    assert out.count("rolling-restart: node") == 3, out
    for n, old in zip(NODES, pids):
        assert not alive(old) and alive(cluster.pid(n)), "node %d was not restarted" % n
    cluster.ok("status")

    s = helpers.PahoClient(cluster.broker(3), client_id=cid, version=helpers.V311, clean=False)
    try:
        present, rc, _ = s.connect(timeout=10)
        assert present, "the persistent session did not survive the rolling restart"
        got = sorted(m.payload for m in s.collect(5, timeout=10))
        assert got == [b"m%d" % i for i in range(5)]
    finally:
        s.close()


def test_drill_loses_nothing(cluster):
    r = cluster.run("--duration", "8", "--rate", "40", script=DRILL_SH, timeout=150)
    assert r.returncode == 0, "drill failed:\n%s\n%s" % (r.stdout, r.stderr)
    m = re.search(r"sent (\d+) acknowledged (\d+) received (\d+).* duplicated (\d+) lost (\d+)",
                  r.stdout)
    assert m, r.stdout
    sent, acked, received, dup, lost = map(int, m.groups())
    assert lost == 0 and acked > 0 and received >= acked, r.stdout
    assert "cluster.sh kill 1: ok" in r.stdout and "cluster.sh start 1: ok" in r.stdout, r.stdout
    cluster.ok("status")


def test_drill_bad_arguments(cluster):
    r = cluster.run("--duration", "x", script=DRILL_SH, timeout=30)
    assert r.returncode == 2 and "usage" in r.stderr


def test_down(cluster):
    pids = [cluster.pid(n) for n in NODES]
    out = cluster.ok("down", timeout=60)
    assert "stopped" in out
    for n, pid in zip(NODES, pids):
        assert not alive(pid), "node %d still running after down" % n
        assert "=== stopped (TERM)" in cluster.log(n)
    r = cluster.run("status")
    assert r.returncode != 0
    assert all("down" in line for line in status_lines(r.stdout).values())


def test_no_sanitizer_reports_in_node_logs(cluster):
    reports = cluster.sanitizer_reports()
    assert not reports, "\n\n".join(reports)


def test_wipe(cluster):
    cluster.ok("wipe")
    assert not os.path.exists(cluster.data)


def test_wipe_refuses_a_directory_that_is_not_a_cluster(cluster, tmp_path):
    d = tmp_path / "not-a-cluster"
    d.mkdir()
    (d / "precious").write_text("keep me")
    env = dict(cluster.env, TERN_DATA=str(d))
    r = subprocess.run([CLUSTER_SH, "wipe"], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30, universal_newlines=True)
    assert r.returncode != 0 and "not a cluster directory" in r.stderr
    assert (d / "precious").read_text() == "keep me"
