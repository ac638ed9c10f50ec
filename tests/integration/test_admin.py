"""Admin HTTP API and ternctl (docs/operations.md), against one node; plus drain's
server reference and leadership transfer on a small three-node cluster.

Each broker gets admin_listen=127.0.0.1:0 from the fixture; the bound address is
read from its log ("admin API listening on HOST:PORT").
"""
import http.client
import json
import os
import random
import re
import socket
import subprocess
import time

import pytest

import mqttraw as R
from conftest import REPO, TERN_BIN, Broker, free_port
from helpers import V311, V5, PahoClient, connect_props, uid, wait_until

pytestmark = pytest.mark.tern_only

TERNCTL = os.environ.get("TERNCTL_BIN",
                         os.path.join(os.path.dirname(TERN_BIN), "ternctl"))
HTTP_TIMEOUT = 10.0
CTL_TIMEOUT = 20.0
PERSIST = connect_props(SessionExpiryInterval=300)


# --- helpers -----------------------------------------------------------------

def admin_addr(b, timeout=5.0):
    """HOST:PORT of the broker's admin API, from the log of its current run."""
    found = []

    def look():
        text = b.log(current_run=True)
        found[:] = re.findall(r"admin API listening on (\S+)", text)
        return bool(found)
    wait_until(look, timeout, msg="the admin API address in the log")
    return found[-1]


class Admin:
    def __init__(self, addr):
        self.addr = addr
        self.host, port = addr.rsplit(":", 1)
        self.port = int(port)

    def req(self, method, path):
        """(status, headers dict, body bytes)."""
        c = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT)
        try:
            c.request(method, path)
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def json(self, method, path, expect=200):
        status, headers, body = self.req(method, path)
        assert headers.get("Content-Type") == "application/json", headers
        doc = json.loads(body)
        assert status == expect, (method, path, status, doc)
        return doc

    def get(self, path, expect=200):
        return self.json("GET", path, expect)


def ready_admin(b):
    """The broker's Admin, once it reports ready (a single node elects itself)."""
    a = Admin(admin_addr(b))
    wait_until(lambda: a.req("GET", "/health")[0] == 200, msg="GET /health 200")
    return a


@pytest.fixture
def admin(broker):
    return ready_admin(broker)


def ctl(addr, *args, timeout=CTL_TIMEOUT):
    if not os.access(TERNCTL, os.X_OK):
        pytest.skip("ternctl not built at %s" % TERNCTL)
    cmd = [TERNCTL] + (["--admin", addr] if addr else []) + list(args)
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def raw_exchange(admin, data, timeout=HTTP_TIMEOUT):
    """Sends raw bytes, returns the whole answer (the server closes after one)."""
    with socket.create_connection((admin.host, admin.port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


def by_id(items, cid, key="client_id"):
    hits = [x for x in items if x[key] == cid]
    assert len(hits) == 1, (cid, items)
    return hits[0]


def parse_prometheus(text):
    """{(name, labels): value}; checks every line's syntax and TYPE declarations."""
    types, samples = {}, {}
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-z_]+="[^"\n]*",?)*\})? '
                         r'(-?[0-9.eE+]+)$')
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram"), line
            assert name not in types, "TYPE given twice: " + line
            types[name] = kind
            continue
        if line.startswith("# HELP ") or not line:
            continue
        m = line_re.match(line)
        assert m, "not a Prometheus sample line: %r" % line
        name = m.group(1)
        family = name
        for suffix in ("_bucket", "_count", "_sum"):
            if name.endswith(suffix) and types.get(name[:-len(suffix)]) == "histogram":
                family = name[:-len(suffix)]
        assert family in types, "sample without TYPE: %r" % line
        if types[family] == "counter":
            assert name.endswith("_total"), line
        samples[(name, m.group(2) or "")] = float(m.group(4))
    return samples


# 3 MiB through the Raft log: 48 retained messages of 64 KiB under PREFIX/.
LOG_LOAD = 48


def log_load_payload(i):
    """64 KiB that do not compress: the log then holds about what was published
    (entries of a large batch are stored LZ4-compressed)."""
    return random.Random(i).randbytes(65536)


def publish_log_load(b, prefix):
    c = PahoClient(b, version=V311)
    try:
        c.connect()
        for i in range(LOG_LOAD):
            c.publish("%s/%d" % (prefix, i), log_load_payload(i), 1, retain=True)
    finally:
        c.close()


def expect_log_load(b, prefix):
    c = PahoClient(b, version=V311)
    try:
        c.connect()
        c.subscribe(prefix + "/#", 1)
        got = {m.topic: m.payload for m in c.collect(LOG_LOAD, 10.0)}
    finally:
        c.close()
    last = "%s/%d" % (prefix, LOG_LOAD - 1)
    assert len(got) == LOG_LOAD and got[last] == log_load_payload(LOG_LOAD - 1)


# --- read endpoints --------------------------------------------------------------

def test_health_and_cluster(admin):
    status, _, body = admin.req("GET", "/health")
    assert status == 200
    h = json.loads(body)
    assert h["live"] is True and h["ready"] is True and h["draining"] is False
    c = admin.get("/cluster")
    assert c["node_id"] == 1 and c["leader"] == 1 and c["state"] == "leader"
    assert c["term"] >= 1 and 1 <= c["applied_index"] <= c["last_index"]
    assert c["pending_proposals"] >= 0 and c["ready"] is True
    assert c["limits_as_configured"] is True and c["limits"]["queue_max"] == 1000
    assert c["limits"]["drop_policy"] == "drop_oldest"
    [m] = c["members"]
    assert m["id"] == 1 and m["self"] and m["leader"] and m["link_up"]
    assert m["role"] == "voter"


def test_errors(admin):
    doc = admin.get("/nope", 404)
    assert "no endpoint" in doc["error"]
    doc = admin.json("PUT", "/cluster", 405)
    assert "GET" in doc["error"]
    status, headers, _ = admin.req("POST", "/sessions/x")
    assert status == 405 and headers["Allow"] == "GET, DELETE"
    admin.json("POST", "/sessions", 405)
    admin.json("GET", "/drain", 405)
    admin.get("/sessions/", 404)
    admin.get("/sessions/%zz", 400)
    admin.get("/sessions/a%00b", 400)
    admin.get("/sessions?limit=abc", 400)
    admin.get("/sessions?limit=0", 400)
    out = raw_exchange(admin, b"GARBAGE\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out
    out = raw_exchange(admin, b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 9000 +
                       b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413 "), out[:100]
    # Node ids fit the 24 bits a proposal id keeps of them: refused before the
    # leader check, so a single node answers it too.
    doc = admin.json("POST", "/members?id=16777216&raft=127.0.0.1:1&peer=127.0.0.1:2",
                     400)
    assert doc["error"] == "id: must be a node id (1 to 16777215)", doc
    # The node is still fine after bad requests.
    assert admin.get("/health")["ready"] is True


def test_clients(admin, clients):
    a = clients.new(uid("cl5"), version=V5, clean=False, connect_properties=PERSIST,
                    keepalive=40)
    b = clients.new(uid("cl3"), version=V311, keepalive=20)
    doc = admin.get("/clients")
    # The fixture's startup probe (no CONNECT) may still be listed: count ours.
    assert sum(1 for x in doc["clients"] if x["client_id"]) == 2
    assert doc["truncated"] is False
    ca = by_id(doc["clients"], a.client_id)
    assert ca["protocol"] == 5 and ca["persistent"] is True
    assert ca["keepalive_s"] == 40 and ca["session_expiry_s"] == 300
    assert ca["state"] == "active" and ca["peer"].startswith("127.0.0.1:")
    cb = by_id(doc["clients"], b.client_id)
    assert cb["protocol"] == 4 and cb["persistent"] is False
    doc = admin.get("/clients?limit=1")
    assert len(doc["clients"]) == 1 and doc["truncated"] is True


def test_sessions_and_subscriptions(admin, clients):
    cid = uid("sess")
    c = clients.new(cid, version=V5, clean=False, connect_properties=PERSIST)
    c.subscribe("adm/s/+", 1)
    c.subscribe("adm/t/#", 2)
    one = by_id(admin.get("/sessions")["sessions"], cid)
    assert one["online"] is True and one["owner"] == 1 and one["expiry_s"] == 300
    assert one["subscriptions"] == 2 and one["protocol"] == 5
    c.disconnect()
    p = clients.new(version=V311)
    p.publish("adm/s/x", b"12345", 1)
    p.publish("adm/t/y", b"abc", 1)

    def queued():
        s = admin.get("/sessions/" + cid)
        return s["online"] is False and s["queued"] == 2
    wait_until(queued, msg="two queued messages")
    s = admin.get("/sessions/" + cid)
    assert s["queued_bytes"] >= 8  # payloads (the FSM may count topics too)
    subs = {x["filter"]: x for x in s["subscription_list"]}
    assert set(subs) == {"adm/s/+", "adm/t/#"}
    assert subs["adm/s/+"]["qos"] == 1 and subs["adm/t/#"]["qos"] == 2
    all_subs = admin.get("/subscriptions")
    mine = [x for x in all_subs["subscriptions"] if x["client_id"] == cid]
    assert sorted(x["filter"] for x in mine) == ["adm/s/+", "adm/t/#"]
    admin.get("/sessions/nosuch", 404)
    admin.json("DELETE", "/sessions/nosuch", 404)


def test_kick_connected_persistent_session(admin, raw):
    cid = uid("kick")
    c = raw(version=5)
    assert c.connect(cid, clean=False, props={R.SESSION_EXPIRY: 600}).reason == 0
    c.subscribe(1, [("kick/#", 1)])
    doc = admin.json("DELETE", "/sessions/" + cid)
    assert doc == {"deleted_session": cid}
    d = c.expect(R.DISCONNECT)
    assert d.reason == 0x98  # administrative action
    admin.get("/sessions/" + cid, 404)
    again = raw(version=5)
    ack = again.connect(cid, clean=False, props={R.SESSION_EXPIRY: 600})
    assert ack.reason == 0 and ack.session_present is False


def test_kick_url_encoded_id(admin, clients):
    cid = "dev/ice %d+?" % (int(time.time()) % 1000)
    clients.new(cid, version=V311, clean=False)
    enc = "".join("%%%02X" % b for b in cid.encode())
    assert admin.get("/sessions/" + enc)["client_id"] == cid
    admin.json("DELETE", "/sessions/" + enc)
    admin.get("/sessions/" + enc, 404)


def test_retained_list_and_delete(admin, clients):
    p = clients.new(version=V311)
    p.publish("adm/r/a b", b"hello", 1, retain=True)
    p.publish("adm/r/two", b"xy", 0, retain=True)
    wait_until(lambda: admin.get("/retained")["total"] == 2, msg="2 retained")
    doc = admin.get("/retained")
    assert doc["total_bytes"] == 7
    r = {x["topic"]: x for x in doc["retained"]}
    assert r["adm/r/a b"]["payload_bytes"] == 5 and r["adm/r/a b"]["qos"] == 1
    assert admin.json("DELETE", "/retained/adm%2Fr%2Fa%20b") == {
        "deleted_retained": "adm/r/a b"}
    admin.json("DELETE", "/retained/adm%2Fr%2Fa%20b", 404)
    admin.json("DELETE", "/retained/adm/r/%2B", 400)
    assert [x["topic"] for x in admin.get("/retained")["retained"]] == ["adm/r/two"]
    s = clients.new(version=V311)
    s.subscribe("adm/r/#", 1)
    m = s.get()
    assert m.topic == "adm/r/two"
    s.expect_nothing(0.5)


def test_metrics(admin, clients):
    status, headers, body = admin.req("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    before = parse_prometheus(body.decode())
    for name in ("tern_connections", "tern_connections_accepted_total",
                 "tern_bytes_received_total", "tern_bytes_sent_total",
                 "tern_sessions", "tern_retained_messages", "tern_retained_bytes",
                 "tern_raft_term", "tern_raft_last_index", "tern_raft_applied_index",
                 "tern_raft_pending_proposals", "tern_uptime_seconds"):
        assert (name, "") in before, name
    for reason in ("queue_full", "expired", "qos0_offline", "too_large", "slow_client"):
        assert ("tern_dropped_messages_total", '{reason="%s"}' % reason) in before
    q1 = ("tern_messages_received_total", '{qos="1"}')
    sent1 = ("tern_messages_sent_total", '{qos="1"}')
    c = clients.new(version=V5)
    c.subscribe("adm/m", 1)
    c.publish("adm/m", b"x" * 100, 1, retain=True)
    c.get()
    after = parse_prometheus(admin.req("GET", "/metrics")[2].decode())
    assert after[q1] == before[q1] + 1
    assert after[sent1] == before[sent1] + 1
    assert after[("tern_connections", "")] >= 1  # (the fixture's probe may linger)
    assert after[("tern_connections_accepted_total", "")] >= \
        before[("tern_connections_accepted_total", "")] + 1
    assert after[("tern_bytes_received_total", "")] > \
        before[("tern_bytes_received_total", "")] + 100
    assert after[("tern_retained_messages", "")] == before[("tern_retained_messages", "")] + 1
    assert after[("tern_raft_applied_index", "")] > before[("tern_raft_applied_index", "")]
    # The retained QoS 1 PUBLISH went through the log: its commit is counted, in
    # every bucket from the one its latency fell in up to +Inf.
    commits = ("tern_commit_latency_seconds_count", "")
    assert after[commits] > before[commits]
    assert after[("tern_commit_latency_seconds_bucket", '{le="+Inf"}')] == after[commits]
    assert after[("tern_commit_latency_seconds_bucket", '{le="0.1"}')] <= after[commits]
    assert after[("tern_commit_latency_max_seconds", "")] > 0


def test_snapshot_by_log_bytes(start_broker):
    """libraft counts entries; raft_snapshot_bytes also bounds the bytes of log a node
    keeps: with a threshold no load reaches, 3 MiB of retained messages through the
    log make the node take a snapshot (1 MiB bound), and the messages survive it."""
    b = start_broker(raft_snapshot_threshold=1000000, raft_snapshot_bytes=1 << 20)
    a = ready_admin(b)
    snaps = ("tern_snapshots_taken_total", "")
    assert parse_prometheus(a.req("GET", "/metrics")[2].decode())[snaps] == 0
    publish_log_load(b, "snapbytes")
    taken = []

    def snapshotted():
        taken[:] = [parse_prometheus(a.req("GET", "/metrics")[2].decode())[snaps]]
        return taken[0] >= 1
    wait_until(snapshotted, 5.0, msg="a snapshot after 3 MiB of log")
    expect_log_load(b, "snapbytes")


def test_raft_segment_size(start_broker):
    """raft_segment_bytes sizes the log segment files libraft allocates up front
    (each new segment stalls the node for ~30 ms, so the default is 32 MiB); with
    1 MiB segments, 3 MiB of retained messages span several of them, and a
    restart loads them all back."""
    small = start_broker(raft_segment_bytes=1 << 20)
    default = start_broker()
    for b, size in ((small, 1 << 20), (default, 32 << 20)):
        ready_admin(b)
        raft = os.path.join(b.data_dir, "raft")

        def open_segments():
            return [os.path.getsize(os.path.join(raft, f))
                    for f in os.listdir(raft) if f.startswith("open-")]
        wait_until(lambda: open_segments() and set(open_segments()) == {size},
                   msg="open segments of %d bytes in %s" % (size, raft))
    publish_log_load(small, "segs")
    closed = [f for f in os.listdir(os.path.join(small.data_dir, "raft"))
              if re.fullmatch(r"\d{16}-\d{16}", f)]
    assert len(closed) >= 2, closed
    small.restart()
    expect_log_load(small, "segs")


def test_sys_topics(start_broker):
    b = start_broker(sys_interval_s=1)
    c = PahoClient(b, version=V311)
    try:
        c.connect()
        c.subscribe("$SYS/#", 0)
        got = {}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(got) < 7:
            for m in c.drain(0.2):
                got[m.topic] = m.payload.decode()
        assert re.fullmatch(r"\d+ seconds", got["$SYS/broker/uptime"]), got
        assert got["$SYS/broker/version"].startswith("tern ")
        assert got["$SYS/broker/clients/connected"] == "1"
        assert int(got["$SYS/broker/messages/received"]) >= 0
        assert int(got["$SYS/broker/messages/sent"]) >= 0
        assert int(got["$SYS/broker/tern/raft/term"]) >= 1
        assert got["$SYS/broker/tern/raft/leader"] == "1"
    finally:
        c.close()


# --- operations --------------------------------------------------------------------

def test_transfer_leader_single_node(admin):
    doc = admin.json("POST", "/transfer-leader", 409)
    assert doc["leader"] == 1
    admin.json("POST", "/transfer-leader?to=1", 400)
    admin.json("POST", "/transfer-leader?to=7", 404)
    admin.json("POST", "/transfer-leader?to=x", 400)


def test_snapshot(admin, broker, clients):
    p = clients.new(version=V311)
    p.publish("adm/snap", b"s", 1, retain=True)
    doc = admin.json("POST", "/snapshot", 202)
    assert doc["snapshot"] == "requested" and doc["applied_index"] >= 2
    raft_dir = os.path.join(broker.data_dir, "raft")
    wait_until(lambda: any(f.startswith("snapshot-") for f in os.listdir(raft_dir)),
               msg="a snapshot file")
    broker.restart()
    a2 = ready_admin(broker)
    assert [x["topic"] for x in a2.get("/retained")["retained"]] == ["adm/snap"]


def test_drain_single_node(admin, raw):
    v5 = raw(version=5)
    assert v5.connect(uid("d5")).reason == 0
    v3 = raw(version=4)
    assert v3.connect(uid("d3")).reason == 0
    assert admin.json("POST", "/drain", 400)
    doc = admin.json("POST", "/drain?node=2", 409)
    assert doc["node"] == 2 and "node 2" in doc["error"]
    doc = admin.json("POST", "/drain?node=1")
    # closed: ours, plus the fixture's startup probe if it is still open
    assert doc["draining"] is True and doc["closed"] >= 2
    assert doc["server_reference"] is None
    d = v5.expect(R.DISCONNECT)
    assert d.reason == 0x9C and 0x1C not in d.props  # no other member to name
    with pytest.raises(R.Closed):
        v3.recv(5)
    # New clients are refused in their protocol's terms.
    ack = raw(version=5).connect(uid("n5"))
    assert ack.reason == 0x9C and 0x1C not in ack.props
    assert raw(version=4).connect(uid("n3")).reason == 3
    status, _, body = admin.req("GET", "/health")
    assert status == 503 and json.loads(body)["draining"] is True
    assert admin.json("POST", "/undrain?node=1") == {"draining": False}
    assert raw(version=5).connect(uid("u5")).reason == 0
    assert admin.get("/health")["ready"] is True


# --- ternctl -------------------------------------------------------------------------

def test_ternctl_read_commands(admin, clients):
    a = admin.addr
    cid = uid("ctl")
    c = clients.new(cid, version=V5, clean=False, connect_properties=PERSIST)
    c.subscribe("ctl/+/x", 1)
    c.publish("ctl/ret", b"abc", 1, retain=True)

    rc, out, err = ctl(a, "status")
    assert rc == 0, err
    assert "node 1: leader" in out and "health: ready" in out
    assert re.search(r"^ID\s+RAFT\s+MQTT\s+ADMIN\s+ROLE", out, re.M)
    rc, out, _ = ctl(a, "--json", "status")
    doc = json.loads(out)
    assert rc == 0 and doc["health"]["ready"] is True and doc["cluster"]["leader"] == 1
    rc, out, _ = ctl(a, "members")
    assert rc == 0 and re.search(r"^1\s+\S+\s+\S+\s+\S+\s+voter\s+yes\s+yes\s+up", out, re.M)
    rc, out, _ = ctl(a, "clients")
    assert rc == 0 and cid in out and out.startswith("CLIENT_ID")
    rc, out, _ = ctl(a, "sessions")
    assert rc == 0 and re.search(r"^%s\s+1\s+yes\s+300\s" % re.escape(cid), out, re.M)
    rc, out, _ = ctl(a, "--json", "sessions")
    assert rc == 0 and by_id(json.loads(out)["sessions"], cid)["online"] is True
    rc, out, _ = ctl(a, "session", "show", cid)
    assert rc == 0 and "ctl/+/x" in out and re.search(r"^expiry_s\s+300$", out, re.M)
    rc, out, _ = ctl(a, "subscriptions")
    assert rc == 0 and re.search(r"^%s\s+ctl/\+/x\s+1\s" % re.escape(cid), out, re.M)
    rc, out, _ = ctl(a, "retained")
    assert rc == 0 and re.search(r"^ctl/ret\s+3\s+1$", out, re.M)
    rc, out, _ = ctl(a, "metrics")
    assert rc == 0 and parse_prometheus(out)[("tern_sessions", "")] >= 1


def test_ternctl_write_commands(admin, clients):
    a = admin.addr
    cid = uid("ctlk")
    clients.new(cid, version=V311, clean=False)
    p = clients.new(version=V311)
    p.publish("ctl/del me", b"z", 1, retain=True)

    rc, out, err = ctl(a, "kick", cid)
    assert (rc, out) == (0, "session %s deleted\n" % cid), err
    rc, out, err = ctl(a, "kick", cid)
    assert rc == 1 and out == "" and err == 'ternctl: no session "%s" (HTTP 404)\n' % cid
    rc, out, err = ctl(a, "retained", "delete", "ctl/del me")
    assert (rc, out) == (0, "retained message on ctl/del me deleted\n"), err
    rc, _, err = ctl(a, "retained", "delete", "ctl/del me")
    assert rc == 1 and "no retained message" in err
    rc, out, err = ctl(a, "snapshot")
    assert rc == 0 and out.startswith("snapshot requested at applied index"), err
    rc, out, err = ctl(a, "transfer-leader")
    assert rc == 1 and "no other voter" in err and "HTTP 409" in err
    rc, out, err = ctl(a, "drain", "2")
    assert rc == 1 and "ask node 2" in err
    rc, out, err = ctl(a, "drain", "1")
    assert rc == 0 and re.fullmatch(r"node 1 drained: \d+ connections closed\n", out), err
    rc, out, _ = ctl(a, "--json", "status")
    assert json.loads(out)["health"]["draining"] is True
    rc, out, err = ctl(a, "undrain", "1")
    assert (rc, out) == (0, "node 1 accepts clients again\n"), err


@pytest.mark.parametrize("args", [
    [], ["bogus"], ["kick"], ["kick", "a", "b"], ["session"], ["session", "x"],
    ["session", "show"], ["retained", "delete"], ["drain"], ["drain", "abc"],
    ["undrain", "0"], ["transfer-leader", "x"], ["status", "extra"], ["--bogus", "status"],
    ["--admin"], ["--admin", "nohostport", "status"], ["--admin", "h:99999", "status"],
])
def test_ternctl_usage_errors(args):
    rc, out, err = ctl(None, *args)
    assert rc == 2 and out == "" and "usage: ternctl" in err, (args, rc, err)


def test_ternctl_membership_usage_errors():
    for args in (["add-node", "4"], ["add-node", "x", "1.2.3.4:1", "1.2.3.4:2", "1.2.3.4:3"],
                 ["add-node", "4", "host:1", "1.2.3.4:2", "1.2.3.4:3"],
                 ["add-node", "16777216", "1.2.3.4:1", "1.2.3.4:2", "1.2.3.4:3"],
                 ["remove-node"], ["remove-node", "0"], ["remove-node", "16777216"]):
        rc, out, err = ctl(None, *args)
        assert rc == 2 and out == "" and "usage: ternctl" in err, (args, rc, err)


def test_ternctl_node_down():
    addr = "127.0.0.1:%d" % free_port()
    for args in (["status"], ["kick", "x"], ["metrics"]):
        rc, out, err = ctl(addr, *args)
        assert rc == 1 and out == ""
        assert err == "ternctl: cannot reach %s: Connection refused\n" % addr
    # With --json the error is JSON too, on stdout (issue 17).
    rc, out, err = ctl(addr, "--json", "sessions")
    assert rc == 1 and err == ""
    assert json.loads(out) == {"error": "cannot reach %s: Connection refused" % addr,
                               "status": 0}


def test_ternctl_help():
    rc, out, _ = ctl(None, "--help")
    assert rc == 0 and "transfer-leader" in out and "add-node" in out


# --- three nodes: drain's server reference, leadership transfer --------------------

@pytest.fixture
def cluster3(tmp_path):
    """Three ternd on one machine; returns [(Broker, Admin)] in node id order."""
    ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
    members = ",".join("%d=127.0.0.1:%d/127.0.0.1:%d/127.0.0.1:%d" % (i + 1, r, p, m)
                       for i, (r, p, m) in enumerate(ports))
    nodes = []
    try:
        for i, (_, _, mqtt) in enumerate(ports):
            wd = str(tmp_path / ("node%d" % (i + 1)))
            os.makedirs(wd, exist_ok=True)
            b = Broker(wd, {"node_id": i + 1, "members": members}, port=mqtt)
            b.start()
            nodes.append(b)
        admins = [Admin(admin_addr(b)) for b in nodes]  # ready below

        def all_ready():
            return all(a.req("GET", "/health")[0] == 200 for a in admins)
        wait_until(all_ready, 20, 0.2, "three ready nodes")
        yield list(zip(nodes, admins))
    finally:
        for b in nodes:
            b.stop()
        errors = [b.sanitizer_report() for b in nodes if b.sanitizer_report()]
        assert not errors, errors[0]


def test_cluster_drain_server_reference_and_transfer(cluster3, raw):
    leader = cluster3[0][1].get("/cluster")["leader"]
    follower = next(i for i in range(3) if i + 1 != leader)
    fb, fa = cluster3[follower]
    # Members and their links, as the follower sees them.
    c = fa.get("/cluster")
    assert len(c["members"]) == 3 and c["leader"] == leader
    assert all(m["link_up"] for m in c["members"])
    assert {m["mqtt"] for m in c["members"]} == {"127.0.0.1:%d" % b.port
                                                 for b, _ in cluster3}

    # Drain a node: its v5 client is sent to another member.
    v5 = raw(version=5, b=fb)
    assert v5.connect(uid("moved")).reason == 0
    others = {"127.0.0.1:%d" % b.port for i, (b, _) in enumerate(cluster3) if i != follower}
    doc = fa.json("POST", "/drain?node=%d" % (follower + 1))
    assert doc["closed"] == 1 and doc["server_reference"] in others
    d = v5.expect(R.DISCONNECT)
    assert d.reason == 0x9C and d.props.get(0x1C) in others
    ack = raw(version=5, b=fb).connect(uid("refused"))
    assert ack.reason == 0x9C and ack.props.get(0x1C) in others
    fa.json("POST", "/undrain?node=%d" % (follower + 1))

    # Leadership transfer: a follower refuses and names the leader; the leader moves.
    doc = fa.json("POST", "/transfer-leader", 409)
    assert doc["leader"] == leader
    la = cluster3[leader - 1][1]
    doc = la.json("POST", "/transfer-leader?to=%d" % (follower + 1))
    assert doc["leader"] == follower + 1
    wait_until(lambda: fa.get("/cluster")["state"] == "leader", 10, 0.1,
               "node %d to lead" % (follower + 1))
    rc, out, err = ctl(fa.addr, "status")
    assert rc == 0 and "node %d: leader" % (follower + 1) in out, err
