"""The deployment files of deploy/ and the client examples of docs/operations.md.

- deploy/hosts/ternd-*.json and deploy/docker/node*.json: consistent with each other and
  with compose.yaml, and accepted by the real ternd: the three configs, with their
  addresses moved to free 127.0.0.1 ports, form a cluster with a leader;
- deploy/haproxy/haproxy.cfg passes `haproxy -c`, and a running haproxy with it (addresses
  moved to the test cluster's proxy_protocol listeners: it sends PROXY v2) serves MQTT
  and takes a drained node out (skip: no haproxy); it sends to the host configs'
  proxy_protocol listeners;
- deploy/systemd/ternd@.service passes `systemd-analyze verify` (skip: no systemd-analyze);
- failover_example.py and js/failover.mjs move their persistent session to another node
  when theirs is killed, and receive what was published meanwhile.

The Dockerfile and compose.yaml are only read (no container engine on the build machine).
"""
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

import mqttraw
from cluster import TERN_BIN, free_ports, tern_cluster_fixture  # noqa: F401
from cluster import tern_proxy_cluster_fixture  # noqa: F401
from helpers import IS_MOSQUITTO, uid

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="tern deployment files")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
DEPLOY = os.path.join(REPO, "deploy")
HOST_CONFIGS = [os.path.join(DEPLOY, "hosts", "ternd-%d.json" % n) for n in (1, 2, 3)]
DOCKER_CONFIGS = [os.path.join(DEPLOY, "docker", "node%d.json" % n) for n in (1, 2, 3)]
TERNCTL = os.path.join(os.path.dirname(TERN_BIN), "ternctl")
UNIT = os.path.join(DEPLOY, "systemd", "ternd@.service")
HAPROXY_CFG = os.path.join(DEPLOY, "haproxy", "haproxy.cfg")
JS_DIR = os.path.join(HERE, "js")
WAIT_S = 30.0


def load_strict(path):
    def no_dup(pairs):
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), "%s: duplicate key in %s" % (path, keys)
        return dict(pairs)
    with open(path) as f:
        return json.load(f, object_pairs_hook=no_dup)


def need_ternd():
    if not os.access(TERN_BIN, os.X_OK):
        pytest.skip("ternd not built at %s (set TERN_BIN)" % TERN_BIN)


# --- the configs -------------------------------------------------------------------------

@pytest.mark.parametrize("paths,prefix", [(HOST_CONFIGS, "10.0.0.1"),
                                          (DOCKER_CONFIGS, "172.28.0.1")])
def test_configs_are_consistent(paths, prefix):
    cfgs = [load_strict(p) for p in paths]
    for n, c in enumerate(cfgs, 1):
        assert c["node_id"] == n
        assert c["listen"] == "0.0.0.0:1883"
        # hosts: the private address, for the HAProxy health check (firewalled);
        # docker: loopback (docs/operations.md)
        admin_ip = "%s%d" % (prefix, n) if paths is HOST_CONFIGS else "127.0.0.1"
        assert c["admin_listen"] == admin_ip + ":8081"
        assert c["data_dir"] == "/var/lib/tern"
        assert c["members"] == cfgs[0]["members"], "members differ in %s" % paths[n - 1]
        if paths is HOST_CONFIGS:
            # the port HAProxy sends to with send-proxy-v2, on the private address
            assert c["listeners"] == [{"type": "mqtt", "bind": "%s%d:1884" % (prefix, n),
                                       "proxy_protocol": True}]
    assert [m["id"] for m in cfgs[0]["members"]] == [1, 2, 3]
    for m in cfgs[0]["members"]:
        ip = "%s%d" % (prefix, m["id"])
        assert m == {"id": m["id"], "raft": ip + ":7001", "peer": ip + ":7101",
                     "mqtt": ip + ":1883"}


def test_compose_matches_node_configs():
    with open(os.path.join(DEPLOY, "docker", "compose.yaml")) as f:
        text = f.read()
    members = load_strict(DOCKER_CONFIGS[0])["members"]
    try:
        import yaml
    except ImportError:
        for m in members:  # without PyYAML: the addresses and mounts are there
            assert "ipv4_address: " + m["raft"].split(":")[0] in text
            assert "./node%d.json:/etc/tern/ternd.json:ro" % m["id"] in text
        return
    doc = yaml.safe_load(text)
    assert doc["networks"]["tern"]["ipam"]["config"][0]["subnet"] == "172.28.0.0/24"
    for m in members:
        svc = doc["services"]["tern%d" % m["id"]]
        assert svc["networks"]["tern"]["ipv4_address"] == m["raft"].split(":")[0]
        assert "./node%d.json:/etc/tern/ternd.json:ro" % m["id"] in svc["volumes"]
        assert svc["command"] == ["--config", "/etc/tern/ternd.json"]
        assert svc["build"]["dockerfile"] == "deploy/docker/Dockerfile"


def test_dockerfile_runtime_packages_match_install_deps():
    with open(os.path.join(DEPLOY, "docker", "Dockerfile")) as f:
        docker = f.read()
    with open(os.path.join(DEPLOY, "install-deps.sh")) as f:
        deps = f.read()
    for dev in ("libuv1-dev", "libssl-dev", "libraft-dev", "liblz4-dev", "libcjson-dev",
                "libcmocka-dev", "cmake", "pkg-config"):
        assert dev in deps and dev in docker, dev
    runtime = docker.split("FROM debian:12\n", 1)[1]
    for lib in ("libuv1 ", "libraft2 ", "liblz4-1 ", "libcjson1 ", "libssl3"):
        assert lib in runtime, lib
    assert "-dev" not in runtime.split("COPY --from")[0]
    assert "USER tern" in runtime and "HEALTHCHECK" in runtime


def localize(paths, workdir):
    """Copies of the configs with every member address on a free 127.0.0.1 port (the
    same port for the same address in every copy), listen on the node's own MQTT
    port, its own admin port and data dir. Returns [(path, config)]."""
    cfgs = [load_strict(p) for p in paths]
    addrs = sorted({m[k] for m in cfgs[0]["members"] for k in ("raft", "peer", "mqtt")})
    ports = free_ports(len(addrs) + len(cfgs))
    moved = {a: "127.0.0.1:%d" % p for a, p in zip(addrs, ports)}
    out = []
    for i, c in enumerate(cfgs):
        c["members"] = [{k: (moved[v] if k != "id" else v) for k, v in m.items()}
                        for m in c["members"]]
        me = [m for m in c["members"] if m["id"] == c["node_id"]][0]
        c["listen"] = me["mqtt"]
        for lst, port in zip(c.get("listeners", []), free_ports(len(c.get("listeners", [])))):
            lst["bind"] = "127.0.0.1:%d" % port
        c["admin_listen"] = "127.0.0.1:%d" % ports[len(addrs) + i]
        c["data_dir"] = os.path.join(workdir, "data%d" % c["node_id"])
        path = os.path.join(workdir, os.path.basename(paths[i]))
        with open(path, "w") as f:
            json.dump(c, f)
        out.append((path, c))
    return out


def http(method, addr, path, timeout=3.0):
    """(status, JSON body) of an admin API request; (None, None) if unreachable."""
    req = urllib.request.Request("http://%s%s" % (addr, path), method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except (OSError, ValueError):
        return None, None


def stop_all(procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    rcs = []
    for p in procs:
        try:
            rcs.append(p.wait(10))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
            rcs.append("no exit within 10 s of SIGTERM")
    return rcs


@pytest.mark.parametrize("paths", [HOST_CONFIGS, DOCKER_CONFIGS], ids=["hosts", "docker"])
def test_configs_start_a_cluster(paths, tmp_path):
    need_ternd()
    nodes = localize(paths, str(tmp_path))
    procs, logs = [], []
    try:
        for path, c in nodes:
            log = open(os.path.join(str(tmp_path), "node%d.log" % c["node_id"]), "wb+")
            logs.append(log)
            procs.append(subprocess.Popen([TERN_BIN, "--config", path], stdout=log,
                                          stderr=log, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + WAIT_S
        ready = {}
        while len(ready) < 3 and time.monotonic() < deadline:
            for p, (_, c) in zip(procs, nodes):
                assert p.poll() is None, "node %d exited: %s" % (c["node_id"], p.returncode)
                st, body = http("GET", c["admin_listen"], "/health")
                if st == 200:
                    ready[c["node_id"]] = body["leader"]
            time.sleep(0.1)
        assert len(ready) == 3 and len(set(ready.values())) == 1, ready
        st, cl = http("GET", nodes[0][1]["admin_listen"], "/cluster")
        assert [m["mqtt"] for m in cl["members"]] == [m["mqtt"] for m in nodes[0][1]["members"]]
        if os.access(TERNCTL, os.X_OK):
            r = subprocess.run([TERNCTL, "--admin", nodes[0][1]["admin_listen"], "status"],
                               capture_output=True, text=True, timeout=15)
            assert r.returncode == 0 and "health: ready" in r.stdout, r.stdout + r.stderr
    finally:
        rcs = stop_all(procs)
        text = ""
        for log in logs:
            log.seek(0)
            text += log.read().decode("utf-8", "replace")
            log.close()
    assert rcs == [0, 0, 0], "exit codes on SIGTERM: %s\n%s" % (rcs, text[-4000:])
    assert "listening on" in text
    for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
        assert marker not in text, text[-4000:]


# --- systemd -----------------------------------------------------------------------------

def test_systemd_unit(tmp_path):
    with open(UNIT) as f:
        unit = f.read()
    for line in ("Type=simple", "ExecStart=/usr/local/bin/ternd --config /etc/tern/%i.json",
                 "Restart=on-failure", "RestartSec=1", "LimitNOFILE=1048576", "User=tern",
                 "StateDirectory=tern", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ReadWritePaths=/var/lib/tern", "PrivateTmp=yes"):
        assert "\n" + line + "\n" in unit, line
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    need_ternd()
    # verify wants an existing ExecStart binary and an instance of the template
    with open(os.path.join(str(tmp_path), "ternd@.service"), "w") as f:
        f.write(unit.replace("/usr/local/bin/ternd", TERN_BIN))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no",
                        os.path.join(str(tmp_path), "ternd@node1.service")],
                       capture_output=True, text=True, timeout=60)
    out = (r.stdout + r.stderr).strip()
    # parse errors are warnings with exit 0: any output is a failure
    assert r.returncode == 0 and not out, out


# --- haproxy -----------------------------------------------------------------------------

def need_haproxy():
    if not shutil.which("haproxy"):
        pytest.skip("haproxy is not installed (apt-get install haproxy)")


def test_haproxy_config_is_valid():
    need_haproxy()
    r = subprocess.run(["haproxy", "-c", "-f", HAPROXY_CFG], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def haproxy_for(cluster, workdir):
    """haproxy.cfg with the frontend on a free port and the servers (and their health
    check ports) on the test cluster's nodes (their proxy_protocol listeners: the file
    sends PROXY v2); no syslog, no user switch, and a maxconn that needs no more
    descriptors than a test machine allows."""
    with open(HAPROXY_CFG) as f:
        cfg = f.read()
    port = free_ports(1)[0]
    cfg = re.sub(r"\n    (log /dev/log local0|user haproxy|group haproxy)\n", "\n", cfg)
    cfg = cfg.replace("    log global\n", "")
    cfg = re.sub(r"maxconn \d+", "maxconn 1000", cfg)
    cfg = cfg.replace("    bind :1883\n", "    bind 127.0.0.1:%d\n" % port)
    cfg = cfg.replace(" check port 8081 ", " check ")
    for n in (1, 2, 3):
        nd = cluster.node(n)
        cfg = re.sub(r"server tern%d \S+\n" % n, "server tern%d 127.0.0.1:%d port %d\n" % (
            n, nd.proxy_port, nd.admin_port), cfg)
    path = os.path.join(workdir, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(cfg)
    return path, port


def test_haproxy_balances_and_skips_drained_node(tern_proxy_cluster, tmp_path):
    tern_cluster = tern_proxy_cluster
    need_haproxy()
    if not tern_cluster.node(1).admin_port:
        pytest.skip("this ternd has no admin API")
    path, port = haproxy_for(tern_cluster, str(tmp_path))
    proc = subprocess.Popen(["haproxy", "-db", "-f", path], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    admin = "127.0.0.1:%d" % tern_cluster.node(1).admin_port
    try:
        peers = set()
        deadline = time.monotonic() + WAIT_S
        while len(peers) < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                with mqttraw.RawClient("127.0.0.1", port, timeout=3.0) as c:
                    if c.connect(uid("lb")).reason == 0:
                        peers |= who_serves(tern_cluster)
            except (OSError, mqttraw.Closed, AssertionError):
                time.sleep(0.2)
        assert peers == {1, 2, 3}, "leastconn reached %s" % peers
        st, body = http("POST", admin, "/drain?node=1")
        assert st == 200, body
        # 2 failed checks 2 s apart; then no connection goes to node 1
        time.sleep(5)
        for _ in range(6):
            with mqttraw.RawClient("127.0.0.1", port, timeout=3.0) as c:
                assert c.connect(uid("lb")).reason == 0
                assert 1 not in who_serves(tern_cluster)
    finally:
        http("POST", admin, "/undrain?node=1")
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def who_serves(cluster):
    """Ids of the nodes with a live client whose id starts with "lb-"."""
    out = set()
    for n in (1, 2, 3):
        st, body = http("GET", "127.0.0.1:%d" % cluster.node(n).admin_port, "/clients")
        if st == 200 and any(c["client_id"].startswith("lb") for c in body["clients"]):
            out.add(n)
    return out


# --- the client failover examples --------------------------------------------------------

def test_doc_examples_are_the_files():
    """docs/operations.md shows failover_example.py and js/failover.mjs verbatim."""
    with open(os.path.join(REPO, "docs", "operations.md")) as f:
        doc = f.read()
    for path, lang in ((os.path.join(HERE, "failover_example.py"), "python"),
                       (os.path.join(JS_DIR, "failover.mjs"), "js")):
        with open(path) as f:
            code = f.read().rstrip("\n")
        assert "```%s\n%s\n```" % (lang, code) in doc, \
            "docs/operations.md does not show %s as it is" % path


class Script:
    """A failover example running as a child process; its output lines in a queue."""

    def __init__(self, cmd, cwd):
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines = []
        self.q = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.q.put(line.rstrip("\n"))

    def wait_for(self, pattern, timeout=WAIT_S):
        """The first match of pattern in a line not seen by an earlier wait_for."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.q.get(timeout=max(0.01, left))
            except queue.Empty:
                line = None
            if line is not None:
                self.lines.append(line)
                m = re.search(pattern, line)
                if m:
                    return m
            elif left <= 0:
                raise AssertionError("no line matching %r within %.0fs; output:\n%s" % (
                    pattern, timeout, "\n".join(self.lines[-40:])))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def publish(cluster, payloads, avoid):
    """QoS 1 PUBLISH of each payload to example/t through a running node other than
    `avoid`, retried until acknowledged (the killed node may have been the leader)."""
    for p in payloads:
        deadline = time.monotonic() + WAIT_S
        while True:
            for n in cluster.alive_ids():
                if n == avoid:
                    continue
                nd = cluster.node(n)
                try:
                    with mqttraw.RawClient(nd.host, nd.port, timeout=3.0) as c:
                        if c.connect(uid("pub")).reason != 0:
                            continue
                        c.publish("example/t", p, qos=1, packet_id=1)
                        if c.expect(mqttraw.PUBACK, 3.0).packet_id == 1:
                            break
                except (OSError, mqttraw.Closed, AssertionError):
                    continue
            else:
                assert time.monotonic() < deadline, "PUBLISH %r not acknowledged" % p
                time.sleep(0.2)
                continue
            break


def node_at(cluster, addr):
    port = int(addr.rsplit(":", 1)[1])
    return [n for n in (1, 2, 3) if cluster.node(n).port == port][0]


def subscribed(cluster, client_id):
    """Waits until the session of client_id has its subscription in the replicated state."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for n in cluster.alive_ids():
            st, body = http("GET", "127.0.0.1:%d" % cluster.node(n).admin_port,
                            "/sessions/" + client_id)
            if st == 200 and body.get("subscriptions", 0) >= 1:
                return
        time.sleep(0.1)
    raise AssertionError("session %s never subscribed" % client_id)


def run_kill_failover(cluster, script, client_id):
    """The script connects, subscribes; its node is killed; messages published
    meanwhile arrive after it resumed its session on another node."""
    hosts = ",".join("127.0.0.1:%d" % cluster.node(n).port for n in (1, 2, 3))
    first = script(hosts)
    try:
        m = first.wait_for(r"connected to (\S+) .*session_present=(\d)")
        was = node_at(cluster, m.group(1))
        assert m.group(2) == "0"
        subscribed(cluster, client_id)
        publish(cluster, [b"before"], avoid=None)
        first.wait_for(r"received example/t before")
        cluster.kill(was, signal.SIGKILL)
        publish(cluster, [b"gap-%d" % i for i in range(5)], avoid=was)
        m = first.wait_for(r"connected to (\S+) .*session_present=1")
        assert node_at(cluster, m.group(1)) != was
        for i in range(5):
            first.wait_for(r"received example/t gap-%d$" % i)
    finally:
        first.stop()
    cluster.start(was)  # the fixture's teardown expects every node running


@pytest.fixture
def cluster_with_admin(tern_cluster):
    if not tern_cluster.node(1).admin_port:
        pytest.skip("this ternd has no admin API")
    return tern_cluster


def python_example(hosts):
    return Script([sys.executable, "-u", os.path.join(HERE, "failover_example.py"), hosts],
                  HERE)


def test_python_example_fails_over(cluster_with_admin):
    run_kill_failover(cluster_with_admin, python_example, "failover-example")


def test_python_example_follows_server_reference(cluster_with_admin):
    """A drained node disconnects MQTT 5 clients with 0x9C and a Server Reference; the
    example reconnects to that node, not to the next one of its list."""
    c = cluster_with_admin
    s = python_example(",".join("127.0.0.1:%d" % c.node(n).port for n in (1, 2, 3)))
    was = None
    try:
        m = s.wait_for(r"connected to (\S+) .*session_present=0")
        was = node_at(c, m.group(1))
        subscribed(c, "failover-example")
        st, body = http("POST", "127.0.0.1:%d" % c.node(was).admin_port, "/drain?node=%d" % was)
        assert st == 200 and body["server_reference"], body
        s.wait_for(r"disconnected rc=.*")
        m = s.wait_for(r"connected to (\S+) .*session_present=1")
        assert m.group(1) == body["server_reference"]
        publish(c, [b"after-drain"], avoid=was)
        s.wait_for(r"received example/t after-drain$")
    finally:
        s.stop()
        if was:
            http("POST", "127.0.0.1:%d" % c.node(was).admin_port, "/undrain?node=%d" % was)


def test_js_example_fails_over(cluster_with_admin):
    if not shutil.which("node"):
        pytest.skip("node is not installed")
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "mqtt")):
        if not shutil.which("npm"):
            pytest.skip("no node_modules in %s and npm is not installed" % JS_DIR)
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS_DIR,
                           capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            pytest.skip("`npm ci` failed in %s: %s" % (JS_DIR, r.stderr[-800:]))
    run_kill_failover(cluster_with_admin,
                      lambda hosts: Script(["node", "failover.mjs", hosts], JS_DIR),
                      "failover-example-js")


# --- the shipped files together (issue 17, finding 7) --------------------------------------

def haproxy_seconds(v):
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", v)
    assert m, "timeout %r" % v
    return int(m.group(1)) * {"ms": 0.001, None: 0.001, "s": 1, "m": 60, "h": 3600,
                              "d": 86400}[m.group(2)]


def test_haproxy_reaches_what_host_configs_expose():
    """The health check port is each host's admin_listen port, on the address the
    server line names (not loopback), and the idle timeouts exceed 1.5 x the longest
    keepalive the hosts allow (max_keepalive_s, 65535 if unset)."""
    text = open(HAPROXY_CFG).read()
    live = [ln.split("#")[0].strip() for ln in text.splitlines()]
    live = [ln for ln in live if ln]
    check_port = None
    for ln in live:
        m = re.match(r"default-server .*\bport (\d+)", ln)
        if m:
            check_port = int(m.group(1))
    servers = [ln.split()[2] for ln in live if ln.startswith("server ")]
    cfgs = [load_strict(p) for p in HOST_CONFIGS]
    assert len(servers) == len(cfgs)
    # send-proxy-v2 to every server, and each server address a proxy_protocol
    # listener of its host (a plain one would refuse the header as MQTT)
    sends_proxy = any(re.match(r"default-server .*\bsend-proxy-v2\b", ln) for ln in live)
    for ln in live:
        if ln.startswith("server "):
            sends_proxy_here = sends_proxy or "send-proxy-v2" in ln.split()
            assert sends_proxy_here, "no send-proxy-v2 for %s" % ln
    for srv, c in zip(servers, cfgs):
        proxied = [lst["bind"] for lst in c.get("listeners", []) if lst.get("proxy_protocol")]
        assert srv in proxied, "haproxy sends PROXY v2 to %s, not a proxy_protocol " \
            "listener of node %d (%s)" % (srv, c["node_id"], proxied)
        host = srv.rsplit(":", 1)[0]
        ahost, aport = c["admin_listen"].rsplit(":", 1)
        if check_port is not None:
            assert ahost == host and int(aport) == check_port, (
                "haproxy checks %s:%d but node %d's admin API is on %s" % (
                    host, check_port, c["node_id"], c["admin_listen"]))
    keepalive = max(c.get("max_keepalive_s", 65535) for c in cfgs)
    for side in ("client", "server"):
        t = [ln.split()[2] for ln in live if ln.startswith("timeout %s " % side)]
        assert t, "no timeout %s" % side
        assert haproxy_seconds(t[0]) > 1.5 * keepalive, (
            "timeout %s %s caps keepalive %d s (needs > %.0f s)" % (
                side, t[0], keepalive, 1.5 * keepalive))
