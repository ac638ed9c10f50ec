"""Three-node cluster tests: the replicated state (sessions, queues, in-flight and QoS 2
state, retained messages, wills) seen from clients that move between nodes, nodes that
are killed, and a cluster that loses its quorum. Each test gets a fresh cluster
(cluster.py); every wait is bounded.
"""
import signal
import threading
import time

import pytest

import helpers
import mqttraw
from cluster import tern_cluster_fixture  # noqa: F401  (the tern_cluster fixture)
from helpers import IS_MOSQUITTO, V311, V5, connect_props, uid, wait_until

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="tern cluster only")

SESSION_EXPIRY = 3600
RC_TAKEN_OVER = 0x8E
RC_SERVER_UNAVAILABLE = 0x88
V3_RC_SERVER_UNAVAILABLE = 3


def persistent(version):
    """Keyword arguments for a persistent paho session of `version`."""
    if version == V5:
        return {"clean": False,
                "connect_properties": connect_props(SessionExpiryInterval=SESSION_EXPIRY)}
    return {"clean": False}


def raw_connect(c, client_id, clean=True, expiry=None, will=None, expect_ok=True):
    props = {mqttraw.SESSION_EXPIRY: expiry} if (expiry and c.version == 5) else None
    ca = c.connect(client_id, clean=clean, will=will, props=props)
    if expect_ok:
        assert ca.reason == 0, "CONNACK refused: %r" % ca
    return ca


def publish_all(pub, items, qos, timeout=20.0):
    """Publishes (topic, payload) items without waiting in between, then waits for every
    acknowledgement (bounded)."""
    infos = [pub.publish(t, p, qos, wait=False) for t, p in items]
    deadline = time.monotonic() + timeout
    for i, info in enumerate(infos):
        if qos:
            info.wait_for_publish(max(deadline - time.monotonic(), 0.01))
            assert info.is_published(), "publish %d of %d not acknowledged in %.0fs" % (
                i, len(infos), timeout)


def payload_ints(msgs):
    return [int(m.payload) for m in msgs]


def recv_until_quiet(r, quiet=0.7, limit=5.0):
    """PUBLISH packets from a raw client until none arrives for `quiet` seconds."""
    out = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            p = r.recv(quiet)
        except mqttraw.Timeout:
            break
        assert p.type == mqttraw.PUBLISH, "expected PUBLISH, got %r" % p
        out.append(p)
    return out


def roles(c, victim):
    """(a, b, d): node a is the leader (victim "leader") or a follower (victim
    "follower"); b and d are the other two. Tests put the client on a, kill a and go on
    through b. Skips when no node's log names the leader (log line
    "raft: node N is leader")."""
    lead = c.wait_leader(5.0)
    if lead is None:
        pytest.skip("leader unknown: no \"raft: node N is leader\" log line")
    others = [n for n in (1, 2, 3) if n != lead]
    if victim == "leader":
        return lead, others[0], others[1]
    return others[0], others[1], lead


VICTIMS = pytest.mark.parametrize("victim", ["leader", "follower"])


# --- 1 ---------------------------------------------------------------------------


def test_clean_pubsub_across_nodes(tern_cluster):
    """Clean sessions: subscribers on nodes 2 (3.1.1) and 3 (5), a publisher on node 1:
    QoS 0, 1 and 2 each arrive once, in order, at min(QoS) - published right after
    the SUBACKs."""
    c = tern_cluster
    base = "cl/" + uid()
    n = 30
    subs = [c.client(3, version=V5), c.client(2, version=V311)]
    for s in subs:
        assert s.subscribe(base + "/#", 2) == [2]
    pub = c.client(1, version=V5)
    for q in (0, 1, 2):
        publish_all(pub, [("%s/q%d" % (base, q), b"%d" % i) for i in range(n)], q)
    problems = []
    for s in subs:
        msgs = s.collect(3 * n, 10.0)
        msgs += s.drain(0.5)
        for q in (0, 1, 2):
            got = [m for m in msgs if m.topic == "%s/q%d" % (base, q)]
            if payload_ints(got) != list(range(n)):
                problems.append("%s (v%d) QoS %d: got %r" % (
                    s.client_id, s.version, q, payload_ints(got)))
            bad_qos = [m.qos for m in got if m.qos != q]
            if bad_qos:
                problems.append("%s QoS %d delivered at QoS %r" % (s.client_id, q, bad_qos))
    assert not problems, "\n".join(problems)


# --- 2 ---------------------------------------------------------------------------


def test_retained_read_after_puback_on_every_node(tern_cluster):
    """A retained QoS 1 PUBLISH on node 1; right after its PUBACK, SUBSCRIBE on nodes 2
    and 3 both deliver it (read-index: retained state is the same everywhere)."""
    c = tern_cluster
    base = "ret/" + uid()
    pub = c.client(1, version=V311)
    subs = [c.client(2, version=V5), c.client(3, version=V311)]
    missing = []
    for i in range(20):
        topic = "%s/%d" % (base, i)
        payload = b"r%d" % i
        pub.publish(topic, payload, 1, retain=True)
        for s in subs:
            s.subscribe(topic, 1)
        for n, s in zip((2, 3), subs):
            got = s.drain(0.0)
            if not got:
                try:
                    got = [s.get(3.0)]
                except AssertionError:
                    got = []
            match = [m for m in got if m.topic == topic and m.payload == payload]
            if not match:
                missing.append("round %d: node %d got %r" % (
                    i, n, [(m.topic, m.payload) for m in got]))
            elif not match[0].retain:
                missing.append("round %d: node %d delivered it without RETAIN" % (i, n))
    assert not missing, "retained message not delivered right after PUBACK:\n" + \
        "\n".join(missing)


# --- 3 ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
def test_persistent_session_resumes_on_another_node(tern_cluster, version):
    """Subscribe QoS 1 on node 1, disconnect, 50 messages through node 2, resume on
    node 3: session present, all 50 in order, no duplicates."""
    c = tern_cluster
    topic = "ps/" + uid()
    cid = uid("ps")
    s = c.client(1, cid, version, **persistent(version))
    assert s.subscribe(topic, 1) == [1]
    s.disconnect()
    pub = c.client(2, version=V311)
    publish_all(pub, [(topic, b"%d" % i) for i in range(50)], 1)
    s2 = c.client(3, cid, version, connect=False, **persistent(version))
    present, _, _ = s2.connect()
    assert present, "no session present on node 3"
    msgs = s2.collect(50, 10.0)
    msgs += s2.drain(0.7)
    assert payload_ints(msgs) == list(range(50)), "resumed session got %r" % (
        payload_ints(msgs),)


# --- 4 ---------------------------------------------------------------------------


@VICTIMS
def test_resume_after_owner_killed_resends_inflight_with_dup(tern_cluster, victim):
    """A persistent QoS 1 subscriber on node A (the leader, or a follower) holds
    unacknowledged deliveries; A is killed -9; on node B the client gets them again
    with DUP at once (same order, same packet ids), then the rest of its queue."""
    c = tern_cluster
    a, b, d = roles(c, victim)
    topic = "kd/" + uid()
    cid = uid("kd")
    total = 50
    r = c.raw(a)
    raw_connect(r, cid, clean=False)
    assert r.subscribe(1, [(topic, 1)]).codes == [1]
    pub = c.client(d, version=V311)
    publish_all(pub, [(topic, b"%d" % i) for i in range(total)], 1)
    first = recv_until_quiet(r)
    k = len(first)
    # the in-flight window (inflight_max, default 32) keeps the rest queued
    assert 0 < k < total, "%d of %d delivered before the kill" % (k, total)
    assert [int(p.payload) for p in first] == list(range(k))
    c.kill(a, signal.SIGKILL)
    r.close()

    r2 = c.raw(b)
    ca = raw_connect(r2, cid, clean=False)
    assert ca.session_present, "session not present on node %d" % b
    again = r2.recv_publishes(k, timeout=2.5)  # at once, not on a retry timer
    assert [int(p.payload) for p in again] == list(range(k)), "re-sent %r" % again
    assert all(p.dup for p in again), "re-sent without DUP: %r" % [
        p for p in again if not p.dup]
    assert [p.packet_id for p in again] == [p.packet_id for p in first], \
        "packet ids changed: %r vs %r" % ([p.packet_id for p in first],
                                         [p.packet_id for p in again])
    for p in again:
        r2.puback(p.packet_id)
    rest = r2.recv_publishes(total - k, timeout=5.0) if total > k else []
    for p in rest:
        r2.puback(p.packet_id)
    assert [int(p.payload) for p in rest] == list(range(k, total)), "queue: %r" % rest
    assert not any(p.dup for p in rest)
    r2.expect_nothing(0.5)


# --- 5 ---------------------------------------------------------------------------


@VICTIMS
def test_qos2_outbound_pubrel_owed_after_owner_killed(tern_cluster, victim):
    """Subscriber on node A got a QoS 2 PUBLISH and sent PUBREC (the broker answered
    PUBREL); A is killed -9 before PUBCOMP; on node B the broker sends PUBREL, never
    the PUBLISH again (a sender must not re-send PUBLISH once it sent PUBREL)."""
    c = tern_cluster
    a, b, d = roles(c, victim)
    topic = "q2o/" + uid()
    cid = uid("q2o")
    r = c.raw(a)
    raw_connect(r, cid, clean=False)
    assert r.subscribe(1, [(topic, 2)]).codes == [2]
    pub = c.client(d, version=V5)
    pub.publish(topic, b"once", 2)
    p = r.expect(mqttraw.PUBLISH)
    assert p.qos == 2 and p.payload == b"once"
    r.pubrec(p.packet_id)
    rel = r.expect(mqttraw.PUBREL)
    assert rel.packet_id == p.packet_id
    c.kill(a, signal.SIGKILL)
    r.close()

    r2 = c.raw(b)
    ca = raw_connect(r2, cid, clean=False)
    assert ca.session_present
    q = r2.recv(3.0)
    assert q.type == mqttraw.PUBREL and q.packet_id == p.packet_id, \
        "expected PUBREL %d first, got %r" % (p.packet_id, q)
    r2.pubcomp(p.packet_id)
    r2.expect_nothing(1.0)


@VICTIMS
def test_qos2_inbound_exactly_once_after_node_killed(tern_cluster, victim):
    """A persistent publisher on node A sends QoS 2 PUBLISH id 7 and gets PUBREC; A is
    killed -9; on node B it re-sends the PUBLISH (DUP) then PUBREL: PUBREC, then
    PUBCOMP, and the subscribers (on the two other nodes) get the message exactly
    once."""
    c = tern_cluster
    a, b, d = roles(c, victim)
    topic = "q2i/" + uid()
    cid = uid("q2i")
    subs = [c.client(d, version=V5), c.client(b, version=V311)]
    for s in subs:
        assert s.subscribe(topic, 2) == [2]
    r = c.raw(a)
    raw_connect(r, cid, clean=False)
    r.publish(topic, b"exactly-once", qos=2, packet_id=7)
    rec = r.expect(mqttraw.PUBREC)
    assert rec.packet_id == 7 and rec.reason < 0x80
    c.kill(a, signal.SIGKILL)
    r.close()

    r2 = c.raw(b)
    ca = raw_connect(r2, cid, clean=False)
    assert ca.session_present, "publisher's session not present on node %d" % b
    r2.publish(topic, b"exactly-once", qos=2, packet_id=7, dup=True)
    rec2 = r2.expect(mqttraw.PUBREC)
    assert rec2.packet_id == 7 and rec2.reason < 0x80
    r2.pubrel(7)
    comp = r2.expect(mqttraw.PUBCOMP)
    assert comp.packet_id == 7 and comp.reason == 0
    got = helpers.collect_from(subs, 2, timeout=5.0, settle=1.0)
    for s, msgs in zip(subs, got):
        assert [m.payload for m in msgs] == [b"exactly-once"], "%s (v%d) got %r" % (
            s.client_id, s.version, [m.payload for m in msgs])


# --- 6 ---------------------------------------------------------------------------


def test_takeover_across_nodes(tern_cluster):
    """The same client id connects to node 2 while connected to node 1: the old v5
    connection gets DISCONNECT 0x8E, the old 3.1.1 one is closed; the new ones live."""
    c = tern_cluster
    for version in (5, 4):
        cid = uid("to%d" % version)
        old = c.raw(1, version=version)
        raw_connect(old, cid)
        new = c.raw(2, version=version)
        raw_connect(new, cid)
        got = old.wait_closed(5.0)
        discs = [p for p in got if p.type == mqttraw.DISCONNECT]
        if version == 5:
            assert discs and discs[0].reason == RC_TAKEN_OVER, \
                "old v5 connection got %r before close" % got
        else:
            assert not discs, "3.1.1 server sent DISCONNECT: %r" % got
        new.pingreq()
        new.expect(mqttraw.PINGRESP, 3.0)


# --- 7 ---------------------------------------------------------------------------


@VICTIMS
def test_wills_of_killed_node(tern_cluster, victim):
    """Clients with wills (delay 0) on node A; A is killed -9; a subscriber on node B
    gets each will exactly once (node-down detection waits 3 s)."""
    c = tern_cluster
    a, b, _ = roles(c, victim)
    base = "will/" + uid()
    sub = c.client(b, version=V5)
    assert sub.subscribe(base + "/#", 1) == [1]
    wills = {}
    for name, version, clean, expiry in (("v5", 5, True, None), ("v311", 4, True, None),
                                         ("v311p", 4, False, None),
                                         ("v5p", 5, False, SESSION_EXPIRY)):
        topic = "%s/%s" % (base, name)
        r = c.raw(a, version=version)
        raw_connect(r, uid("w" + name), clean=clean, expiry=expiry,
                    will={"topic": topic, "payload": b"gone-" + name.encode(), "qos": 1})
        wills[topic] = b"gone-" + name.encode()
    c.kill(a, signal.SIGKILL)
    got = sub.drain(0)
    deadline = time.monotonic() + 12.0
    while len(got) < len(wills) and time.monotonic() < deadline:
        got += sub.drain(0.2)
    got += sub.drain(1.5)  # duplicates?
    seen = sorted((m.topic, m.payload) for m in got)
    assert seen == sorted(wills.items()), "wills received: %r" % seen


# --- 8 ---------------------------------------------------------------------------


def test_full_cluster_restart_keeps_state(tern_cluster):
    """Persistent sessions with queued messages and retained messages survive stopping
    (SIGTERM) and restarting all three nodes."""
    c = tern_cluster
    topic = "fr/" + uid()
    rbase = "frr/" + uid()
    sessions = [(uid("fr3"), V311, 1, 2), (uid("fr5"), V5, 2, 3)]  # id, version, on, resume
    for cid, version, on, _ in sessions:
        s = c.client(on, cid, version, **persistent(version))
        assert s.subscribe(topic, 1) == [1]
        s.disconnect()
    pub = c.client(3, version=V311)
    publish_all(pub, [(topic, b"%d" % i) for i in range(10)], 1)
    retained = {}
    for n in (1, 2, 3):
        p = c.client(n, version=V5)
        t = "%s/%d" % (rbase, n)
        retained[t] = b"kept-%d" % n
        p.publish(t, retained[t], 1, retain=True)
    c.close_clients()

    c.stop_all(signal.SIGTERM)
    c.start_all()

    for cid, version, _, resume in sessions:
        s = c.client(resume, cid, version, connect=False, **persistent(version))
        present, _, _ = s.connect()
        assert present, "%s: session lost in the restart" % cid
        msgs = s.collect(10, 10.0) + s.drain(0.5)
        assert payload_ints(msgs) == list(range(10)), "%s got %r" % (cid,
                                                                     payload_ints(msgs))
    for n in (1, 2, 3):
        s = c.client(n, version=V311)
        s.subscribe(rbase + "/#", 1)
        got = s.collect(3, 5.0) + s.drain(0.3)
        assert sorted((m.topic, m.payload) for m in got) == sorted(retained.items()), \
            "node %d retained after restart: %r" % (n, [(m.topic, m.payload) for m in got])


# --- 9 ---------------------------------------------------------------------------

BURST = 2000
WINDOW = 50


class Publisher(threading.Thread):
    """QoS 1 publisher over a raw 3.1.1 connection with a window; on any connection
    problem it reconnects (to the next node that accepts) and re-sends everything not
    acknowledged. `acked` holds the sequence numbers acknowledged."""

    def __init__(self, cluster, nodes, topic, name, count, deadline):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.nodes = list(nodes)
        self.topic = topic
        self.name = name
        self.count = count
        self.deadline = deadline
        self.acked = set()
        self.acked_by = {}  # seq -> (node, connection number) that acknowledged it
        self.reconnects = []
        self.error = None

    def _connect(self):
        while time.monotonic() < self.deadline:
            for n in self.nodes:
                nd = self.cluster.node(n)
                try:
                    r = mqttraw.RawClient(nd.host, nd.port, version=4, timeout=3.0)
                except OSError:
                    continue
                try:
                    ca = r.connect(uid(self.name), clean=True)
                    if ca.reason == 0:
                        return r, n
                except (OSError, mqttraw.Closed, AssertionError):
                    pass
                r.close()
            time.sleep(0.2)
        raise AssertionError("%s: could not reconnect" % self.name)

    def run(self):
        try:
            self._run()
        except BaseException as e:  # reported by the test
            self.error = e

    def _run(self):
        pending = list(range(self.count))
        r, node = self._connect()
        self.node = node
        while pending and time.monotonic() < self.deadline:
            inflight = {}  # packet id -> seq
            pid = 0
            try:
                while (pending or inflight) and time.monotonic() < self.deadline:
                    while pending and len(inflight) < WINDOW:
                        seq = pending.pop(0)
                        pid = pid % 65535 + 1
                        inflight[pid] = seq
                        r.publish(self.topic, b"%s-%d" % (self.name.encode(), seq), qos=1,
                                  packet_id=pid)
                    p = r.recv(3.0)
                    if p.type == mqttraw.PUBACK and p.packet_id in inflight:
                        seq = inflight.pop(p.packet_id)
                        self.acked.add(seq)
                        self.acked_by[seq] = (node, len(self.reconnects))
            except (OSError, mqttraw.Closed, mqttraw.Timeout) as e:
                pending = sorted(set(pending) | set(inflight.values()))
                r.close()
                r, node = self._connect()
                self.reconnects.append((repr(e), node))
                continue
            break
        r.close()
        if pending:
            raise AssertionError("%s: %d not sent before the deadline" % (self.name,
                                                                          len(pending)))


class Subscriber(threading.Thread):
    """Persistent QoS 1 subscriber (raw 3.1.1) that records every payload and acks it;
    reconnects (persistent session) when its connection drops."""

    def __init__(self, cluster, nodes, topic, deadline):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.nodes = list(nodes)
        self.topic = topic
        self.cid = uid("burst-sub")
        self.deadline = deadline
        self.counts = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.reconnects = []
        self.error = None
        self.r = self._connect(first=True)

    def _connect(self, first=False):
        while time.monotonic() < self.deadline:
            for n in self.nodes:
                nd = self.cluster.node(n)
                try:
                    r = mqttraw.RawClient(nd.host, nd.port, version=4, timeout=3.0)
                    ca = r.connect(self.cid, clean=False)
                    if ca.reason == 0:
                        if first:
                            assert r.subscribe(1, [(self.topic, 1)]).codes == [1]
                        return r
                    r.close()
                except (OSError, mqttraw.Closed, AssertionError):
                    pass
            time.sleep(0.2)
        raise AssertionError("subscriber could not reconnect")

    def run(self):
        try:
            while not self.stop.is_set():
                try:
                    p = self.r.recv(0.2)
                except mqttraw.Timeout:
                    continue
                except (OSError, mqttraw.Closed) as e:
                    self.r.close()
                    self.r = self._connect()
                    self.reconnects.append(repr(e))
                    continue
                if p.type != mqttraw.PUBLISH:
                    continue
                with self.lock:
                    self.counts[p.payload] = self.counts.get(p.payload, 0) + 1
                try:
                    self.r.puback(p.packet_id)
                except OSError:
                    pass
        except BaseException as e:
            self.error = e
        finally:
            self.r.close()

    def received(self):
        with self.lock:
            return dict(self.counts)


def _ranges(seqs):
    """[1, 2, 3, 7] -> "1-3, 7"."""
    out = []
    for x in sorted(seqs):
        if out and out[-1][1] == x - 1:
            out[-1][1] = x
        else:
            out.append([x, x])
    return ", ".join("%d-%d" % (a, b) if a != b else "%d" % a for a, b in out)


# A queue bound below the burst would drop by policy (drop_oldest) while the
# subscriber lags; this test is about the replication, not the bound.
@pytest.mark.parametrize("tern_cluster", [{"queue_max": 100000}], indirect=True)
def test_leader_kill_during_burst_loses_no_acked_message(tern_cluster):
    """2000 QoS 1 messages from two windowed publishers (one on the leader, one on a
    follower) to a persistent subscriber on the other follower; the leader is killed -9
    mid-burst; publishers reconnect and re-send what was not acknowledged. Every
    acknowledged message reaches the subscriber (duplicates allowed, reported)."""
    c = tern_cluster
    lead = c.wait_leader(5.0) or 1
    f1, f2 = [n for n in (1, 2, 3) if n != lead]
    topic = "burst/" + uid()
    deadline = time.monotonic() + 90.0
    sub = Subscriber(c, [f2, f1], topic, deadline)
    sub.start()
    pubs = [Publisher(c, [lead, f1, f2], topic, "a", BURST // 2, deadline),
            Publisher(c, [f1, f2], topic, "b", BURST // 2, deadline)]
    for p in pubs:
        p.start()
    helpers.wait_until(lambda: sum(len(p.acked) for p in pubs) >= BURST // 3 or
                       any(not p.is_alive() for p in pubs), 60.0, msg="a third acked")
    acked_at_kill = sum(len(p.acked) for p in pubs)
    c.kill(lead, signal.SIGKILL)
    for p in pubs:
        p.join(max(deadline - time.monotonic(), 1.0))
        assert not p.is_alive(), "publisher %s still running" % p.name
    acked = set()
    for p in pubs:
        acked |= {b"%s-%d" % (p.name.encode(), s) for s in p.acked}

    # wait until the subscriber has everything, or stops making progress for 5 s
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last_change < 5.0:
        got = sub.received()
        if acked <= set(got):
            break
        if len(got) != last:
            last, last_change = len(got), time.monotonic()
        time.sleep(0.1)
    time.sleep(0.5)
    sub.stop.set()
    sub.join(5.0)
    got = sub.received()
    missing = sorted(acked - set(got))
    dups = {k: v for k, v in got.items() if v > 1}
    info = ("leader %d killed after %d acks; publishers: %s; subscriber reconnects %r; "
            "acked %d, received %d distinct, %d duplicated" % (
                lead, acked_at_kill,
                ["%s: %d acked, reconnects %r, error %r" % (p.name, len(p.acked),
                                                           p.reconnects, p.error)
                 for p in pubs], sub.reconnects, len(acked), len(got), len(dups)))
    for p in pubs:
        assert p.error is None, "%s\n%s" % (p.error, info)
    assert sub.error is None, "%s\n%s" % (sub.error, info)
    assert len(acked) == BURST, "not every message acknowledged\n" + info
    if missing:
        by = {}
        for m in missing:
            name, seq = m.decode().rsplit("-", 1)
            p = [p for p in pubs if p.name == name][0]
            by.setdefault((name, p.acked_by.get(int(seq))), []).append(int(seq))
        detail = "; ".join("%s acked on (node, connection) %s: %s" % (n, k, _ranges(v))
                           for (n, k), v in sorted(by.items(), key=str))
        drops = {nd.id: nd.metric("tern_dropped_messages_total", 'reason="queue_full"')
                 for nd in c.nodes if nd.alive()}
        raise AssertionError("%d acknowledged messages lost: %s\nqueue_full drops by "
                             "node: %r\n%s" % (len(missing), detail, drops, info))
    print(info)  # shown with -s / -rP: how the run went


# --- 10 --------------------------------------------------------------------------


@pytest.mark.parametrize("survivor", ["leader", "follower"])
def test_quorum_loss_disconnects_and_refuses(tern_cluster, survivor):
    """Two nodes killed: a v5 client on the remaining node (the old leader, or a
    follower) gets DISCONNECT 0x88 within ~5 s, and new CONNECTs are refused (v5 0x88,
    3.1.1 return code 3)."""
    c = tern_cluster
    a, b, d = roles(c, survivor)
    v = c.raw(a, version=5)
    raw_connect(v, uid("q"))
    c.kill(b, signal.SIGKILL)
    c.kill(d, signal.SIGKILL)
    t0 = time.monotonic()
    got = v.wait_closed(6.0)
    took = time.monotonic() - t0
    discs = [p for p in got if p.type == mqttraw.DISCONNECT]
    assert discs and discs[0].reason == RC_SERVER_UNAVAILABLE, \
        "v5 client got %r before close (%.1fs)" % (got, took)
    n5 = c.raw(a, version=5)
    ca = raw_connect(n5, uid("q5"), expect_ok=False)
    assert ca.reason == RC_SERVER_UNAVAILABLE, "v5 CONNECT without quorum: %r" % ca
    n4 = c.raw(a, version=4)
    ca = raw_connect(n4, uid("q4"), expect_ok=False)
    assert ca.reason == V3_RC_SERVER_UNAVAILABLE, "3.1.1 CONNECT without quorum: %r" % ca


@pytest.mark.parametrize("survivor", ["leader", "follower"])
def test_connect_behind_an_uncommitted_open_waits_for_it(tern_cluster, survivor):
    """A device whose CONNECT waits for its session to open (the other two nodes
    stopped for a moment, as on a lossy network) gives up and connects again, twice.
    The newest CONNECT must wait for the first one's SESSION_OPEN and then take the
    session over, not be refused at once (it was, 0x89 Server busy: the client went
    into its back-off and was still away well after the cluster had recovered); the
    one it replaced is closed unanswered."""
    c = tern_cluster
    a, b, d = roles(c, survivor)
    cid = uid("behind")
    props = {mqttraw.SESSION_EXPIRY: 600}
    stopped = [c.node(b).proc, c.node(d).proc]
    for p in stopped:
        p.send_signal(signal.SIGSTOP)
    try:
        first = c.raw(a, version=5)
        first.connect(cid, clean=False, props=props, expect_connack=False)
        time.sleep(0.3)
        second = c.raw(a, version=5)
        second.connect(cid, clean=False, props=props, expect_connack=False)
        time.sleep(0.2)
        third = c.raw(a, version=5, timeout=8.0)
        third.connect(cid, clean=False, props=props, expect_connack=False)
        replaced = second.wait_closed(3.0)
        try:  # nothing is answered before the session can open
            early = third.recv(0.3)
        except mqttraw.Timeout:
            early = None
    finally:
        for p in stopped:
            p.send_signal(signal.SIGCONT)
    assert replaced == [], "the replaced CONNECT got %r" % replaced
    assert early is None, "CONNECT answered while no quorum: %r" % early
    ca = third.expect(mqttraw.CONNACK, 8.0)
    assert ca.reason == 0, "newest CONNECT refused: %r" % ca
    # It holds the session: a PUBLISH is acknowledged on it.
    third.publish("behind/x", b"1", qos=1, packet_id=1)
    ack = third.expect(mqttraw.PUBACK, 8.0)
    assert ack.reason == 0, "PUBLISH on the newest connection: %r" % ack


# --- 11 --------------------------------------------------------------------------


@pytest.mark.parametrize("tern_cluster", [{"write_buffer_max": 1 << 28}], indirect=True)
def test_backed_up_peer_link_pauses_the_publisher(tern_cluster):
    """The node holding the only subscriber is frozen (SIGSTOP), so the publisher's
    node cannot write its forwards: instead of dropping them past the link's bound,
    it stops reading the publisher. A publisher whose messages go to the third
    node meanwhile is not held up. After SIGCONT every message arrives, in order,
    and the publisher is read again."""
    c = tern_cluster
    lead, sub_node, third = roles(c, "leader")  # the leader keeps its quorum meanwhile
    pub_node = lead
    base = "bp/" + uid()
    sub = c.client(sub_node, version=V311)
    assert sub.subscribe(base + "/#", 0) == [0]
    other = c.client(third, version=V311)
    assert other.subscribe(base + "-other", 1) == [1]
    pub = c.client(pub_node, version=V311)
    pub2 = c.client(pub_node, version=V311)
    pn = c.node(pub_node)
    if pn.metric("tern_connections_paused") is None:
        pytest.skip("this ternd has no admin API")
    victim = c.node(sub_node).proc
    n, size = 320, 64 * 1024  # 20 MiB: past the kernel's socket buffers and 4 MiB
    victim.send_signal(signal.SIGSTOP)
    try:
        for i in range(n):
            pub.publish(base + "/x", (b"%06d" % i).ljust(size, b"."), 0, wait=False)
        wait_until(lambda: pn.metric("tern_connections_paused") == 1, 15.0,
                   msg="the publisher paused (tern_connections_paused 1)")
        # The link to the third node is fine: its publisher and subscriber go on.
        for i in range(50):
            pub2.publish(base + "-other", b"%d" % i, 1)
        assert [int(m.payload) for m in other.collect(50, 10.0)] == list(range(50))
        assert pn.metric("tern_connections_paused") == 1
    finally:
        victim.send_signal(signal.SIGCONT)
    msgs = sub.collect(n, 30.0)
    got = [int(m.payload[:6]) for m in msgs]
    assert got == list(range(n)), "got %d of %d, first wrong at %r" % (
        len(got), n, next((i for i, g in enumerate(got) if g != i), None))
    wait_until(lambda: pn.metric("tern_connections_paused") == 0, 5.0,
               msg="the publisher read again (tern_connections_paused 0)")
    assert pn.metric("tern_publishers_paused_total") >= 1
    assert pn.metric("tern_dropped_messages_total", 'reason="peer_link_full"') == 0


def _tcp_nodelay_of_connections(pid):
    """{(local port, peer port): TCP_NODELAY} for the connected TCP sockets of `pid`
    (None if the kernel does not allow reading them here)."""
    import socket
    socks = _tcp_opts_of_connections(pid, [(socket.IPPROTO_TCP, socket.TCP_NODELAY)])
    return None if socks is None else {k: v[0] for k, v in socks.items()}


def _tcp_opts_of_connections(pid, opts):
    """{(local port, peer port): (value of each (level, option) in opts)} for the
    connected TCP sockets of `pid`, read through pidfd_getfd (Linux >= 5.6, x86_64
    syscall numbers); None if the kernel does not allow it here."""
    import ctypes
    import os
    import platform
    import socket
    if platform.machine() != "x86_64":
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(434, pid, 0)  # pidfd_open
    if pidfd < 0:
        return None
    out = {}
    try:
        for name in os.listdir("/proc/%d/fd" % pid):
            try:
                if not os.readlink("/proc/%d/fd/%s" % (pid, name)).startswith("socket:"):
                    continue
            except OSError:
                continue
            fd = libc.syscall(438, pidfd, int(name), 0)  # pidfd_getfd
            if fd < 0:
                return None
            s = socket.socket(fileno=fd)
            try:
                if s.family != socket.AF_INET or s.type != socket.SOCK_STREAM:
                    continue
                try:
                    peer = s.getpeername()
                except OSError:
                    continue  # a listener
                out[(s.getsockname()[1], peer[1])] = tuple(
                    s.getsockopt(level, opt) for level, opt in opts)
            finally:
                s.close()
    finally:
        os.close(pidfd)
    return out


def test_every_connection_of_a_node_has_tcp_nodelay(tern_cluster):
    """Nagle's algorithm on any connection between nodes (Raft's own transport
    included) makes commits wait for delayed ACKs (~40 ms): none may have it."""
    c = tern_cluster
    c.client(1, version=V311)  # and a client connection too
    for n in (1, 2, 3):
        socks = _tcp_nodelay_of_connections(c.node(n).proc.pid)
        if socks is None:
            pytest.skip("cannot inspect another process's sockets here")
        assert len(socks) >= 4, "node %d: expected Raft and peer connections, got %r" % (
            n, socks)
        off = [k for k, v in socks.items() if not v]
        assert not off, "node %d: connections without TCP_NODELAY (local, peer port): %r" % (
            n, off)


def test_every_link_between_nodes_times_out_a_dead_peer(tern_cluster):
    """A link to a node that vanished without a FIN (partition, power loss) must fail
    within seconds, not after TCP's ~15 minutes of retransmissions: while it stays "up",
    libraft queues a probe AppendEntries on it every heartbeat (the new leader's memory
    grew quadratically, issue 11) and after a heal it sits in retransmission back-off.
    So every Raft and peer connection, outgoing and accepted, has TCP_USER_TIMEOUT and
    keep-alive (which also catches a link that carries nothing)."""
    import socket
    c = tern_cluster
    c.client(1, version=V311)  # a client connection: not a link, not checked
    link_ports = set()
    for nd in c.nodes:
        link_ports |= {nd.raft_port, nd.peer_port}
    opts = [(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
            (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)]
    for n in (1, 2, 3):
        socks = _tcp_opts_of_connections(c.node(n).proc.pid, opts)
        if socks is None:
            pytest.skip("cannot inspect another process's sockets here")
        links = {k: v for k, v in socks.items() if k[0] in link_ports or k[1] in link_ports}
        # peer links: one outgoing and one accepted per other node (Raft's come and go)
        assert len(links) >= 4, "node %d: expected Raft and peer links, got %r" % (
            n, links)
        bad = {k: v for k, v in links.items()
               if not (0 < v[0] <= 10000 and v[1] and 0 < v[2] <= 10)}
        assert not bad, ("node %d: links without a user timeout <= 10 s and keep-alive "
                         "(local, peer port): (TCP_USER_TIMEOUT ms, SO_KEEPALIVE, "
                         "TCP_KEEPIDLE s) %r" % (n, bad))
