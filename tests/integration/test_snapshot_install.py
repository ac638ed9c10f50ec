"""A snapshot installed on a running follower (InstallSnapshot), and the clients that
follower holds.

The follower (node 3) is stopped with SIGSTOP, which freezes it with its TCP
connections up (so nobody declares it down, and its clients stay connected), and the
others' Raft connections to it are cut: they reach node 3's Raft port through a proxy
in this test, which drops what it holds and refuses connections while "cut". (With
SIGSTOP alone the leader keeps streaming entries into node 3's socket buffer, and node
3 catches up from those by log replay.) The others then commit enough entries with
tiny snapshot thresholds that their logs are compacted past node 3's last entry; the
proxy is restored and SIGCONT lets node 3 catch up: it can only do so by installing a
snapshot, which replaces its replicated state wholesale. Then:

1. A persistent subscriber connected to it all along keeps receiving: what was sent
   to its session while the node was stopped (DUP re-sends of what is in flight, then
   the queue) and what is published afterwards.
2. A client whose session was taken over on another node while its node was stopped
   is closed once the snapshot is in (MQTT 5: DISCONNECT 0x8E session taken over).
3. A CONNECT on node 3 whose SESSION_OPEN the others applied and compacted into the
   snapshot (node 3 running, only its Raft connections cut) is answered, the client
   can connect again, and a refused one leaves no session online without a
   connection.

That a snapshot was installed (not the log replayed) is checked twice: before SIGCONT
the other nodes' logs no longer hold the entry after the follower's last one, and
afterwards the follower's tern_snapshots_installed_total counts it.

Every wait is bounded; each test gets a fresh cluster (cluster.py).
"""
import json
import os
import select
import signal
import socket
import struct
import threading
import time
import urllib.request

import pytest

import mqttraw as R
from cluster import TERN_BIN, Cluster
from helpers import IS_MOSQUITTO, V311, uid, wait_until
from test_cluster_snapshot import snapshot_indexes

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="tern cluster only")

THRESHOLD = 16
TRAILING = 4
SETTINGS = {"raft_snapshot_threshold": THRESHOLD, "raft_snapshot_trailing": TRAILING}
VICTIM = 3
FILLER_MAX = 800  # publishes at most, to make the others compact past the follower
IN_FLIGHT = 64  # entries the victim may still hold unread when it is stopped
EXPIRY = 3600


class CutProxy:
    """TCP proxy to one address that can be cut: while cut it resets what it holds and
    every new connection. Threads are daemons; close() ends them."""

    def __init__(self, target):
        self.target = target
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.socks = set()
        self.cut_now = False
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def _reset(sk):
        try:  # RST, not FIN: the sender's next write fails at once
            sk.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            sk.close()
        except OSError:
            pass

    def _accept(self):
        while not self.closed:
            try:
                a, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                refuse = self.cut_now or self.closed
            if refuse:
                self._reset(a)
                continue
            try:
                b = socket.create_connection(self.target, timeout=2.0)
            except OSError:
                self._reset(a)
                continue
            with self.lock:  # a cut() while connecting must not miss this pair
                refuse = self.cut_now or self.closed
                if not refuse:
                    self.socks |= {a, b}
            if refuse:
                self._reset(a)
                self._reset(b)
                continue
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a, b):
        peer = {a: b, b: a}
        try:
            while not self.closed:
                r, _, _ = select.select([a, b], [], [], 0.2)
                for sk in r:
                    data = sk.recv(65536)
                    if not data:
                        return
                    peer[sk].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self.lock:
                self.socks -= {a, b}
            self._reset(a)
            self._reset(b)

    def cut(self):
        with self.lock:
            self.cut_now = True
            socks, self.socks = self.socks, set()
        for sk in socks:
            self._reset(sk)

    def heal(self):
        with self.lock:
            self.cut_now = False

    def close(self):
        self.closed = True
        self.cut()
        try:
            self.lsock.close()
        except OSError:
            pass


@pytest.fixture(name="cut_cluster")
def cut_cluster_fixture(request, tmp_path):
    """Three nodes (snapshot every 16 entries, 4 kept) where nodes 1 and 2 reach node
    3's Raft port through a CutProxy; node 3 is a follower. Yields (cluster, proxy)."""
    if not os.access(TERN_BIN, os.X_OK):
        pytest.skip("ternd not built at %s (set TERN_BIN)" % TERN_BIN)
    c = Cluster(str(tmp_path), settings=SETTINGS)
    if not c.node(VICTIM).admin_port:
        pytest.skip("this ternd has no admin API")
    proxy = CutProxy(("127.0.0.1", c.node(VICTIM).raft_port))
    members = [nd.member() for nd in c.nodes]
    via = [dict(m) for m in members]
    via[VICTIM - 1]["raft"] = "127.0.0.1:%d" % proxy.port
    for nd in c.nodes:
        if nd.id != VICTIM:
            nd.write_config(via, SETTINGS)
    request.node._tern_brokers = c.nodes
    try:
        c.start_all()
        if agreed_leader(c) == VICTIM:
            moved = admin_post(c.node(VICTIM), "/transfer-leader?to=1")
            assert moved.get("leader") == 1, "leadership transfer: %r" % moved
            c.wait_ready()
        yield c, proxy
    finally:
        for nd in c.nodes:  # a node left stopped would not exit on SIGTERM
            if nd.alive():
                nd.proc.send_signal(signal.SIGCONT)
        errors = c.teardown()
        proxy.close()
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


def metric(node, name):
    v = node.metric(name)
    return None if v is None else int(v)


def admin_post(node, path):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (node.admin_port, path),
                                 data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10.0) as r:
        return json.loads(r.read().decode())


def agreed_leader(c, timeout=10.0):
    """The leader every node reports on its admin API (tern_raft_leader)."""
    views = {}

    def agreed():
        views.update({nd.id: metric(nd, "tern_raft_leader") for nd in c.nodes})
        return len(set(views.values())) == 1 and views[1]
    wait_until(agreed, timeout, interval=0.05, msg="one leader (views %r)" % views)
    return views[1]


def roles(c):
    lead = agreed_leader(c)
    assert lead != VICTIM, "leader %s" % lead
    return lead, 3 - lead  # the leader, the other node that is not the victim


def persistent_raw(c, node, version, cid, topic=None):
    """A raw client on `node` with a persistent session, subscribed QoS 1 to topic."""
    cl = c.raw(node, version=version, timeout=5.0)
    props = {R.SESSION_EXPIRY: EXPIRY} if version == 5 else None
    ack = cl.connect(cid, clean=False, keepalive=120, props=props)
    assert ack.reason == 0, "CONNACK %r" % ack
    if topic:
        sa = cl.subscribe(1, [(topic, 1)])
        assert sa.codes == [1], "SUBACK %r" % sa
    return cl


def receive_acking(cl, want, timeout):
    """Reads PUBLISHes (acking each QoS 1 one) until every payload in `want` has
    arrived at least once. Returns (payloads in arrival order, DUP count)."""
    got, dups = [], 0
    deadline = time.monotonic() + timeout
    while not set(want) <= set(got):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            p = cl.recv(left)
        except R.Timeout:
            break
        if p.type != R.PUBLISH:
            continue
        if p.qos == 1:
            cl.puback(p.packet_id)
        dups += p.dup
        got.append(p.payload)
    return got, dups


# libraft queues messages for a peer it cannot reach (a probe AppendEntries per
# heartbeat, each holding every entry the peer lacks) and trims that queue to the
# newest few at each failed connect attempt (every 100 ms). Probes queued before
# the compaction still hold the entries the snapshot replaced: healed at once, the
# victim caught up from them by log and installed no snapshot (4 runs in 6 under
# ASan; LIBRAFT_TRACE=1 showed AppendEntries 15-32 delivered before the
# InstallSnapshot). Kept cut this much longer, only messages made after the
# compaction (InstallSnapshot, empty heartbeats) are left. Well inside the 4 x
# election timeout a node keeps its clients without a quorum.
PROBES_STALE_S = 0.5


def stopped(c, proxy, publisher, extra=None):
    """SIGSTOP the victim and cut the others' Raft connections to it, run extra()
    (e.g. a takeover), then publish filler through `publisher` until the other nodes'
    logs are compacted past the victim's last entry (so it must install a snapshot);
    then heal, SIGCONT (also on failure) and wait until it has applied past that
    snapshot. Returns {retained topic: payload} of the filler."""
    nd = c.node(VICTIM)
    stopped_at = metric(nd, "tern_raft_last_index")
    assert stopped_at is not None, "no admin API: cannot tell where node 3 stopped"
    others = [o for o in c.nodes if o.id != VICTIM]
    nd.proc.send_signal(signal.SIGSTOP)
    proxy.cut()
    try:
        if extra:
            extra()
        pub = c.client(publisher, version=V311)
        filler = "fill/" + uid()

        # A snapshot at S keeps entries from S - TRAILING + 1: the victim needs
        # stopped_at + 1, so every other node must have one with S - TRAILING > that.
        # Plus IN_FLIGHT: entries sent to the victim between the metric read and
        # the SIGSTOP sit in its socket buffer and append once it runs again (the
        # test then saw a catch-up by log and no install, about 1 run in 3).
        def compacted():
            return all(snapshot_indexes(o) and
                       max(snapshot_indexes(o)) - TRAILING > stopped_at + 1 + IN_FLIGHT
                       for o in others)
        n = 0
        retained = {}
        while n < 8 or not compacted():  # every filler topic retained at least once
            assert n < FILLER_MAX, "no compaction past %d after %d publishes" % (
                stopped_at, n)
            # retained, so each is a log entry (a clean QoS 1 publish is not)
            topic = "%s/%d" % (filler, n % 8)
            pub.publish(topic, b"x%d" % n, 1, retain=True)
            retained[topic] = b"x%d" % n
            n += 1
        pub.disconnect()
        target = min(max(snapshot_indexes(o)) for o in others)
        time.sleep(PROBES_STALE_S)
    finally:
        proxy.heal()
        nd.proc.send_signal(signal.SIGCONT)
    # Caught up through the snapshot (its applied index jumps over the gap).
    wait_until(lambda: (metric(nd, "tern_raft_applied_index") or 0) >= target, 20.0,
               msg="node 3 applied index %s >= %d" % (
                   metric(nd, "tern_raft_applied_index"), target))
    return retained


def test_subscriber_keeps_receiving_after_snapshot_install(cut_cluster):
    c, proxy = cut_cluster
    lead, other = roles(c)
    victim = VICTIM
    topic = "snapinst/" + uid()
    subs = {v: persistent_raw(c, victim, v, uid("keep%d-" % v), topic) for v in (5, 4)}
    # A clean subscriber too: its state is in node 3's local FSM, its messages come
    # over the peer link by the replicated routes.
    clean = c.raw(victim, version=4, timeout=5.0)
    assert clean.connect(uid("clean"), clean=True, keepalive=120).reason == 0
    assert clean.subscribe(1, [(topic, 1)]).codes == [1]
    pub = c.client(other, version=V311)
    pub.publish(topic, b"before", 1)
    for v, s in list(subs.items()) + [("clean", clean)]:
        got, _ = receive_acking(s, [b"before"], 10.0)
        assert got == [b"before"], "%s before the stop: %r" % (v, got)
    installed_before = metric(c.node(victim), "tern_snapshots_installed_total") or 0

    # 30 messages while the node is stopped: 20 go in flight (inflight_max), 10 queue.
    during = [b"during-%d" % i for i in range(30)]

    def publish_during():
        p = c.client(lead, version=V311)
        for m in during:
            p.publish(topic, m, 1)
        p.disconnect()

    retained = stopped(c, proxy, other, publish_during)
    after = [b"after-%d" % i for i in range(10)]
    for m in after:
        pub.publish(topic, m, 1)
    want = during + after
    problems = []
    for v, s in subs.items():
        got, dups = receive_acking(s, want, 20.0)
        missing = [m for m in want if m not in got]
        firsts = [m for i, m in enumerate(got) if m not in got[:i]]
        if missing:
            problems.append("v%d subscriber on node %d: %d of %d messages missing "
                            "after the snapshot install (first missing %r; got %d, %d DUP)"
                            % (v, victim, len(missing), len(want), missing[:3], len(got),
                               dups))
        elif firsts != want:
            problems.append("v%d: out of order: %r" % (v, firsts[:12]))
        elif dups == 0:  # 20 of them were in flight when the snapshot came
            problems.append("v%d: no DUP re-send of what was in flight" % v)
    # Clean: not durable, so what was forwarded while the node was stopped may or
    # may not be there; what is published after must be, on the same connection.
    got, _ = receive_acking(clean, after, 10.0)
    missing = [m for m in after if m not in got]
    if missing:
        problems.append("clean subscriber on node %d: missing %r" % (victim, missing))
    # Retained messages are the snapshot's (and what applied after it).
    rc = c.raw(victim, version=4, timeout=5.0)
    assert rc.connect(uid("ret"), clean=True).reason == 0
    base = next(iter(retained)).rsplit("/", 1)[0]
    rc.subscribe(1, [(base + "/#", 0)])
    got = {}
    try:
        for p in rc.recv_publishes(len(retained), 10.0):
            got[p.topic] = p.payload
    except R.Timeout as e:
        problems.append("retained on node %d: %s" % (victim, e))
    if got and got != retained:
        problems.append("retained on node %d: %r, want %r" % (victim, got, retained))
    assert not problems, "\n".join(problems)
    installed = metric(c.node(victim), "tern_snapshots_installed_total")
    assert installed is not None and installed > installed_before, (
        "node %d installed no snapshot (tern_snapshots_installed_total %s)" % (
            victim, installed))


def test_takeover_inside_snapshot_fences_old_connection(cut_cluster):
    c, proxy = cut_cluster
    lead, other = roles(c)
    victim = VICTIM
    topic = "snapfence/" + uid()
    ids = {5: uid("fence5-"), 4: uid("fence4-")}
    old = {v: persistent_raw(c, victim, v, ids[v], topic) for v in (5, 4)}
    new = {}
    installed_before = metric(c.node(victim), "tern_snapshots_installed_total") or 0

    def take_over():
        for v in (5, 4):
            cl = c.raw(other, version=v, timeout=5.0)
            props = {R.SESSION_EXPIRY: EXPIRY} if v == 5 else None
            ack = cl.connect(ids[v], clean=False, keepalive=120, props=props)
            assert ack.reason == 0 and ack.session_present, "takeover CONNACK %r" % ack
            new[v] = cl

    stopped(c, proxy, lead, take_over)
    problems = []
    for v, cl in old.items():
        try:
            got = cl.wait_closed(10.0)
        except R.Timeout:
            problems.append("v%d: old connection on node %d still open 10 s after the "
                            "snapshot that holds its takeover" % (v, victim))
            continue
        if v == 5:
            disc = [p for p in got if p.type == R.DISCONNECT]
            if not disc or disc[-1].reason != 0x8E:
                problems.append("v5: closed without DISCONNECT 0x8E: %r" % got)
    assert not problems, "\n".join(problems)
    installed = metric(c.node(victim), "tern_snapshots_installed_total")
    assert installed is not None and installed > installed_before, (
        "node %d installed no snapshot (tern_snapshots_installed_total %s)" % (
            victim, installed))

    # The sessions live on where they were taken over.
    p = c.client(victim, version=V311)
    p.publish(topic, b"to-new", 1)
    for v, cl in new.items():
        got, _ = receive_acking(cl, [b"to-new"], 10.0)
        assert b"to-new" in got, "v%d taken-over session: %r" % (v, got)



def connect_inside_snapshot(c, proxy):
    """Node 3 keeps running with its Raft connections cut (its clients stay: the cut is
    shorter than the no-quorum grace), a v5 client CONNECTs there, and its SESSION_OPEN
    (forwarded to the leader over the peer link) is applied by the others and compacted
    into a snapshot before node 3 hears of it. Returns (client id, CONNACK or None)."""
    lead, other = roles(c)
    nd = c.node(VICTIM)
    stopped_at = metric(nd, "tern_raft_last_index")
    others = [o for o in c.nodes if o.id != VICTIM]
    installed_before = metric(nd, "tern_snapshots_installed_total") or 0
    cid = uid("open-in-snap")
    cl = c.raw(VICTIM, version=5, timeout=5.0)
    proxy.cut()
    try:
        cl.connect(cid, clean=False, keepalive=120, props={R.SESSION_EXPIRY: EXPIRY},
                   expect_connack=False)
        pub = c.client(other, version=V311)
        filler = "fill/" + uid()
        n = 0
        while not all(snapshot_indexes(o) and
                      max(snapshot_indexes(o)) - TRAILING > stopped_at + 1
                      for o in others):
            assert n < FILLER_MAX, "no compaction past %d" % stopped_at
            pub.publish("%s/%d" % (filler, n % 8), b"x", 1, retain=True)
            n += 1
        pub.disconnect()
        target = min(max(snapshot_indexes(o)) for o in others)
        time.sleep(PROBES_STALE_S)
    finally:
        proxy.heal()
    wait_until(lambda: (metric(nd, "tern_raft_applied_index") or 0) >= target, 20.0,
               msg="node 3 caught up")
    assert (metric(nd, "tern_snapshots_installed_total") or 0) > installed_before, (
        "no snapshot installed")
    try:
        ack = cl.expect(R.CONNACK, 12.0)  # connect_timeout_ms is 10 s
    except (R.Timeout, R.Closed):
        ack = None
    cl.close()
    return cid, ack


def test_connect_whose_open_is_inside_snapshot(cut_cluster):
    """The client gets an answer (CONNACK, accepted or refused) and can connect with
    that id again."""
    c, proxy = cut_cluster
    cid, ack = connect_inside_snapshot(c, proxy)
    problems = []
    if ack is None:
        problems.append("no CONNACK for a CONNECT whose SESSION_OPEN is inside the "
                        "snapshot")
    again = c.raw(VICTIM, version=5, timeout=5.0)
    ack2 = again.connect(cid, clean=False, keepalive=120, props={R.SESSION_EXPIRY: EXPIRY})
    if ack2.reason != 0:
        problems.append("reconnect with the same id refused: %r (first CONNACK %r)" % (
            ack2, ack))
    assert not problems, "\n".join(problems)


def test_refused_connect_inside_snapshot_leaves_no_online_session(cut_cluster):
    """Refused (0x88), the client has no connection: the session its SESSION_OPEN
    opened must not stay online on node 3 (no will, no expiry until it comes back)."""
    c, proxy = cut_cluster
    cid, ack = connect_inside_snapshot(c, proxy)
    assert ack is not None, "no CONNACK"
    if ack.reason == 0:
        pytest.skip("the CONNECT was accepted: its session is rightly online")

    def session():
        body = c.node(1).admin_get("/sessions/" + cid)
        return json.loads(body) if body else None
    try:
        wait_until(lambda: not (session() or {}).get("online"), 5.0, interval=0.1,
                   msg="the refused client's session offline")
    except AssertionError:
        raise AssertionError("refused with %r, yet its session is %r" % (ack, session()))
