"""Flow control between online clients (issue 12): at the DEFAULT configuration a
QoS 1 burst from a clean publisher that keeps 200 messages unacknowledged reaches
a subscriber that acknowledges everything, without a single drop; a subscriber
that stops acknowledging meets the drop policy after slow_subscriber_timeout_ms
(counted), and the publisher is not held for ever; an unrelated subscriber keeps
getting its messages meanwhile (the stall is measured and printed).

Load generators are raw sockets (MQTT 3.1.1), one thread per client: the publisher
pipelines up to WINDOW unacknowledged PUBLISHes, the subscriber acknowledges what
it reads in batches (one send per read).
"""
import re
import select
import socket
import struct
import threading
import time
import urllib.request

import pytest

import helpers
import mqttraw
from cluster import tern_cluster_fixture  # noqa: F401
from helpers import uid, wait_until

pytestmark = pytest.mark.tern_only

WINDOW = 200
PAYLOAD = 16


def metric_text(b):
    """The /metrics text of a single broker (admin_listen=127.0.0.1:0 from conftest)."""
    found = re.findall(r"admin API listening on (\S+)", b.log(current_run=True))
    if not found:
        return None
    with urllib.request.urlopen("http://%s/metrics" % found[-1], timeout=5.0) as r:
        return r.read().decode()


def sample(text, name, labels=""):
    key = "%s{%s}" % (name, labels) if labels else name
    for line in (text or "").splitlines():
        if line.startswith(key + " "):
            return float(line.split()[1])
    return None


def broker_metric(b, name, labels=""):
    wait_until(lambda: metric_text(b) is not None, 10.0, msg="the admin API")
    return sample(metric_text(b), name, labels)


def _connect(host, port, cid, clean=True):
    c = mqttraw.RawClient(host, port, version=4, timeout=10.0)
    ca = c.connect(cid, clean=clean, keepalive=60)
    assert ca.body[1] == 0, "CONNACK %r" % ca
    return c


class Subscriber(threading.Thread):
    """Subscribes `topic` at QoS 1, then reads until stopped; acknowledges every
    QoS 1 PUBLISH unless ack is False. Records (payload, arrival time)."""

    def __init__(self, host, port, topic, cid=None, clean=True, ack=True):
        super().__init__(daemon=True)
        self.cid = cid or uid("sub")
        self.c = _connect(host, port, self.cid, clean)
        sa = self.c.subscribe(1, [(topic, 1)])
        assert sa.body[2:] == b"\x01", "SUBACK %r" % sa
        self.ack = ack
        self.got = []  # (payload, monotonic time)
        self.stop = threading.Event()
        self.error = None

    def run(self):
        sk, buf = self.c.sock, bytearray()
        try:
            while not self.stop.is_set():
                r, _, _ = select.select([sk], [], [], 0.1)
                if not r:
                    continue
                data = self.recv(sk)
                if not data:
                    raise mqttraw.Closed("closed by the broker")
                buf += data
                now, acks, pos = time.monotonic(), bytearray(), 0
                while True:
                    if len(buf) - pos < 2:
                        break
                    n, mult, i = 0, 1, pos + 1
                    while i < len(buf) and buf[i] & 0x80:
                        n += (buf[i] & 0x7F) * mult
                        mult *= 128
                        i += 1
                    if i >= len(buf):
                        break
                    n += buf[i] * mult
                    i += 1
                    if len(buf) < i + n:
                        break
                    first, body = buf[pos], bytes(buf[i:i + n])
                    pos = i + n
                    if first >> 4 != mqttraw.PUBLISH:
                        continue
                    tl = struct.unpack("!H", body[:2])[0]
                    off = 2 + tl
                    if (first >> 1) & 3:
                        pid = body[off:off + 2]
                        off += 2
                        acks += b"\x40\x02" + pid
                    self.got.append((body[off:], now))
                del buf[:pos]
                if acks and self.ack:
                    sk.sendall(acks)
        except Exception as e:  # reported by the test
            self.error = e

    def recv(self, sk):
        return sk.recv(1 << 16)

    def payloads(self):
        return [p for p, _ in list(self.got)]

    def max_gap(self, since=0.0):
        """Longest wait between consecutive arrivals after `since` (monotonic)."""
        ts = [t for _, t in list(self.got) if t >= since]
        return max((b - a for a, b in zip(ts, ts[1:])), default=0.0)

    def finish(self):
        self.stop.set()
        self.join(5.0)
        self.c.close()


class Publisher(threading.Thread):
    """Publishes n QoS 1 messages (payload: the sequence number, zero-padded) with
    up to WINDOW unacknowledged. `acked` counts PUBACKs."""

    def __init__(self, host, port, topic, n, cid=None):
        super().__init__(daemon=True)
        self.c = _connect(host, port, cid or uid("pub"))
        self.topic, self.n = topic, n
        self.acked = 0
        self.error = None
        self.done_at = None

    def run(self):
        sk, topic = self.c.sock, self.topic
        sent, rbytes = 0, 0
        try:
            while self.acked < self.n:
                out = bytearray()
                while sent < self.n and sent - self.acked < WINDOW:
                    out += mqttraw.publish_packet(topic, b"%0*d" % (PAYLOAD, sent), 1,
                                                  sent % 65535 + 1)
                    sent += 1
                if out:
                    sk.sendall(out)
                r, _, _ = select.select([sk], [], [], 60.0)
                if not r:
                    raise AssertionError("no PUBACK for 60 s (%d of %d acked)" %
                                         (self.acked, self.n))
                data = sk.recv(1 << 16)
                if not data:
                    raise mqttraw.Closed("closed by the broker")
                rbytes += len(data)  # a 3.1.1 PUBACK is 4 bytes
                self.acked = rbytes // 4
            self.done_at = time.monotonic()
        except Exception as e:
            self.error = e

    def finish(self, timeout):
        self.join(timeout)
        self.c.close()
        assert not self.is_alive(), "publisher still running: %d of %d acked" % (
            self.acked, self.n)
        assert self.error is None, self.error


def wait_received(sub, n, timeout):
    """Until sub has n messages or has not progressed for 3 s."""
    deadline, last, since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline and len(sub.got) < n:
        if len(sub.got) != last:
            last, since = len(sub.got), time.monotonic()
        elif time.monotonic() - since > 3.0:
            break
        time.sleep(0.05)


def expect_all(sub, n):
    got = sub.payloads()
    want = [b"%0*d" % (PAYLOAD, i) for i in range(n)]
    assert sub.error is None, sub.error
    assert got == want, "got %d of %d (distinct %d), first difference at %r" % (
        len(got), n, len(set(got)),
        next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None))


# --- one node ------------------------------------------------------------------


def test_qos1_burst_is_not_dropped_at_the_defaults(start_broker):
    """One node, defaults: a clean QoS 1 publisher with 200 unacknowledged and a
    subscriber that acknowledges everything: every message arrives, in order, and
    nothing is counted as dropped."""
    b = start_broker()
    n = 10000
    topic = "fc/" + uid()
    sub = Subscriber(b.host, b.port, topic)
    sub.start()
    pub = Publisher(b.host, b.port, topic, n)
    t0 = time.monotonic()
    try:
        pub.start()
        pub.finish(120.0)
        wait_received(sub, n, 60.0)
    finally:
        sub.finish()
    took = time.monotonic() - t0
    drops = broker_metric(b, "tern_dropped_messages_total", 'reason="queue_full"')
    paused = broker_metric(b, "tern_publishers_held_total")
    print("%d of %d delivered in %.2fs, queue_full drops %r, publisher held %r times" %
          (len(sub.got), n, took, drops, paused))
    expect_all(sub, n)
    assert drops == 0


def test_qos1_fan_in_is_not_dropped_at_the_defaults(start_broker):
    """One node, defaults: eight clean QoS 1 publishers (200 unacknowledged each)
    into one subscriber that acknowledges everything: nothing is dropped and no
    subscriber is taken for slow (publishers released together are held again at
    once, on an entry newer than the check that released them)."""
    b = start_broker()
    n, npub = 2000, 8
    topic = "fc/" + uid()
    sub = Subscriber(b.host, b.port, topic)
    sub.start()
    pubs = [Publisher(b.host, b.port, topic, n) for _ in range(npub)]
    t0 = time.monotonic()
    try:
        for p in pubs:
            p.start()
        for p in pubs:
            p.finish(120.0)
        wait_received(sub, n * npub, 60.0)
    finally:
        sub.finish()
    took = time.monotonic() - t0
    drops = broker_metric(b, "tern_dropped_messages_total", 'reason="queue_full"')
    slow = broker_metric(b, "tern_slow_subscribers_total")
    held = broker_metric(b, "tern_publishers_held_total")
    print("fan-in: %d of %d delivered in %.2fs, queue_full drops %r, slow %r, held %r" %
          (len(sub.got), n * npub, took, drops, slow, held))
    assert sub.error is None, sub.error
    assert len(sub.got) == n * npub
    got = sub.payloads()
    for i in range(n):  # each publisher's messages arrive once each
        assert got.count(b"%0*d" % (PAYLOAD, i)) == npub
    assert drops == 0
    assert slow == 0


def test_stuck_subscriber_meets_the_drop_policy_after_the_timeout(start_broker):
    """A subscriber that reads but never acknowledges: its publisher is held back
    only for slow_subscriber_timeout_ms, then the queue meets drop_policy again
    (drops counted, the subscriber named in the log) and the publisher finishes."""
    timeout_ms = 1000
    b = start_broker(slow_subscriber_timeout_ms=timeout_ms)
    n = 5000
    topic = "fc/" + uid()
    stuck = Subscriber(b.host, b.port, topic, ack=False)
    stuck.start()
    pub = Publisher(b.host, b.port, topic, n)
    t0 = time.monotonic()
    try:
        pub.start()
        pub.finish(60.0)
    finally:
        stuck.finish()
    took = time.monotonic() - t0
    drops = broker_metric(b, "tern_dropped_messages_total", 'reason="queue_full"')
    slow = broker_metric(b, "tern_slow_subscribers_total")
    print("stuck subscriber: publisher done in %.2fs, %d delivered (in flight), "
          "queue_full drops %r, slow subscribers %r" % (took, len(stuck.got), drops,
                                                       slow))
    assert len(stuck.got) == 32  # inflight_max: the rest waits, then is dropped
    assert drops and drops > 0
    assert slow == 1
    assert stuck.cid in b.log(current_run=True)
    assert took < 30.0  # liveness: held back about timeout_ms, not for ever


def test_slow_subscriber_does_not_stall_unrelated_traffic(start_broker):
    """While one subscriber is stuck, a second subscriber of the same publisher
    waits at most about slow_subscriber_timeout_ms (measured, printed), and a
    subscriber fed by another publisher is not held up at all; both get everything."""
    timeout_ms = 1000
    b = start_broker(slow_subscriber_timeout_ms=timeout_ms)
    n = 5000
    base = "fc/" + uid()
    stuck = Subscriber(b.host, b.port, base + "/shared", ack=False)
    same = Subscriber(b.host, b.port, base + "/shared")
    other = Subscriber(b.host, b.port, base + "/other")
    subs = [stuck, same, other]
    for s in subs:
        s.start()
    p1 = Publisher(b.host, b.port, base + "/shared", n)
    p2 = Publisher(b.host, b.port, base + "/other", n)
    t0 = time.monotonic()
    try:
        p1.start()
        p2.start()
        p1.finish(60.0)
        p2.finish(60.0)
        wait_received(same, n, 30.0)
        wait_received(other, n, 30.0)
    finally:
        for s in subs:
            s.finish()
    gap_same, gap_other = same.max_gap(t0), other.max_gap(t0)
    print("longest wait between messages: same publisher as the stuck subscriber "
          "%.0f ms, other publisher %.0f ms (slow_subscriber_timeout_ms %d)" % (
              gap_same * 1000, gap_other * 1000, timeout_ms))
    expect_all(same, n)
    expect_all(other, n)
    assert gap_same < timeout_ms / 1000.0 + 5.0  # generous liveness bound
    assert gap_other < 5.0


# --- three nodes -----------------------------------------------------------------


def test_qos1_burst_to_a_persistent_subscriber_on_another_node(tern_cluster):
    """Three nodes, defaults: publisher on node 1, persistent subscriber on node 3
    that acknowledges everything: every message arrives and no node drops any."""
    c = tern_cluster
    n = 10000
    topic = "fc/" + uid()
    s_node, p_node = c.node(3), c.node(1)
    cid = uid("psub")
    sub = Subscriber(s_node.host, s_node.port, topic, cid=cid, clean=False)
    sub.start()
    pub = Publisher(p_node.host, p_node.port, topic, n)
    t0 = time.monotonic()
    try:
        pub.start()
        pub.finish(180.0)
        wait_received(sub, n, 60.0)
    finally:
        sub.finish()
    took = time.monotonic() - t0
    drops = {nd.id: nd.metric("tern_dropped_messages_total", 'reason="queue_full"')
             for nd in c.nodes}
    paused = p_node.metric("tern_publishers_held_total")
    print("%d of %d delivered in %.2fs, queue_full drops by node %r, publisher held on its "
          "node %r times" % (len(sub.got), n, took, drops, paused))
    expect_all(sub, n)
    assert all(d == 0 for d in drops.values()), drops


class SlowSubscriber(Subscriber):
    """A healthy but slow reader: after each read (and its acks) it sleeps `pause_s`,
    so the broker can send it only what fits in its in-flight window per pause."""

    def __init__(self, *args, pause_s=0.005, **kw):
        super().__init__(*args, **kw)
        self.pause_s = pause_s
        self.c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    def recv(self, sk):
        time.sleep(self.pause_s)
        return sk.recv(4096)


def rss_kb(nd):
    """Resident memory of a node's process (kB), or None."""
    try:
        with open("/proc/%d/status" % nd.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, AttributeError):
        return None
    return None


def test_qos1_burst_to_a_slow_clean_subscriber_on_another_node(tern_cluster):
    """Three nodes, defaults: a fast clean QoS 1 publisher on node 1, a clean QoS 1
    subscriber on node 2 that reads slowly but acknowledges all it reads. Its queue is
    in node 2's local FSM and fills from forwards on the peer link: node 2 must hold
    the publisher back through the link (as on one node) instead of meeting the drop
    policy. Every message arrives, no node counts a drop, and node 2's queue stays
    bounded (its peak and node 2's memory are printed)."""
    c = tern_cluster
    n = 20000
    topic = "fc/" + uid()
    s_node, p_node = c.node(2), c.node(1)
    sub = SlowSubscriber(s_node.host, s_node.port, topic)
    sub.start()
    # the route (ROUTE_ADD) must reach node 1 before the first PUBLISH there
    probe = _connect(p_node.host, p_node.port, uid("probe"))
    try:
        def routed():
            probe.publish(topic, b"probe", qos=0)
            time.sleep(0.1)
            return len(sub.got) > 0
        wait_until(routed, 10.0, msg="the subscriber's route on node 1")
    finally:
        probe.close()
    time.sleep(0.3)
    del sub.got[:]
    rss0 = rss_kb(s_node)
    pub = Publisher(p_node.host, p_node.port, topic, n)
    peak_queue, peak_rss = 0.0, rss0 or 0
    t0 = time.monotonic()
    try:
        pub.start()
        deadline = time.monotonic() + 180.0
        while pub.is_alive() and time.monotonic() < deadline:
            q = s_node.metric("tern_queued_messages", 'store="local"') or 0.0
            peak_queue = max(peak_queue, q)
            peak_rss = max(peak_rss, rss_kb(s_node) or 0)
            time.sleep(0.05)
        pub.finish(1.0)
        wait_received(sub, n, 120.0)
    finally:
        sub.finish()
    took = time.monotonic() - t0
    drops = {nd.id: (nd.metric("tern_dropped_messages_total", 'reason="queue_full"'),
                     nd.metric("tern_dropped_messages_total", 'reason="peer_link_full"'))
             for nd in c.nodes}
    held = p_node.metric("tern_publishers_held_total")
    slow = s_node.metric("tern_slow_subscribers_total")
    parked = s_node.metric("tern_forwards_parked_total")
    print("slow clean subscriber on another node: %d of %d delivered in %.2fs; drops by "
          "node (queue_full, peer_link_full) %r; publisher held %r times; subscriber "
          "slow %r; forwards parked on node 2 %r; node 2 queue peak %.0f, RSS %r -> "
          "peak %r kB" % (len(sub.got), n, took, drops, held, slow, parked, peak_queue,
                          rss0, peak_rss))
    expect_all(sub, n)
    assert all(d == (0, 0) for d in drops.values()), drops
    assert slow == 0


def test_qos1_fan_in_to_a_slow_clean_subscriber_on_another_node(tern_cluster):
    """Three nodes, defaults: four clean QoS 1 publishers, two on node 1 and two on
    node 3, into one slow clean subscriber on node 2: their forwards arrive on two
    links at once, and what they sent before the hold reached them must fit in the
    queue. Nothing is dropped; each publisher's messages arrive once each."""
    c = tern_cluster
    n, topic = 5000, "fc/" + uid()
    s_node = c.node(2)
    sub = SlowSubscriber(s_node.host, s_node.port, topic)
    sub.start()
    for nd in (c.node(1), c.node(3)):
        probe = _connect(nd.host, nd.port, uid("probe"))
        try:
            def routed():
                before = len(sub.got)
                probe.publish(topic, b"probe", qos=0)
                time.sleep(0.1)
                return len(sub.got) > before
            wait_until(routed, 10.0, msg="the subscriber's route on node %d" % nd.id)
        finally:
            probe.close()
    time.sleep(0.3)
    del sub.got[:]
    pubs = [Publisher(nd.host, nd.port, topic, n)
            for nd in (c.node(1), c.node(1), c.node(3), c.node(3))]
    t0 = time.monotonic()
    try:
        for p in pubs:
            p.start()
        for p in pubs:
            p.finish(240.0)
        wait_received(sub, n * len(pubs), 120.0)
    finally:
        sub.finish()
    took = time.monotonic() - t0
    drops = {nd.id: (nd.metric("tern_dropped_messages_total", 'reason="queue_full"'),
                     nd.metric("tern_dropped_messages_total", 'reason="peer_link_full"'))
             for nd in c.nodes}
    held = {nd.id: nd.metric("tern_publishers_held_total") for nd in c.nodes}
    parked = s_node.metric("tern_forwards_parked_total")
    print("fan-in to a slow clean subscriber on another node: %d of %d delivered in "
          "%.2fs; drops by node (queue_full, peer_link_full) %r; held by node %r; "
          "forwards parked on node 2 %r" % (len(sub.got), n * len(pubs), took, drops,
                                            held, parked))
    assert sub.error is None, sub.error
    got = sub.payloads()
    assert all(d == (0, 0) for d in drops.values()), drops
    assert len(got) == n * len(pubs)
    for i in range(0, n, 97):  # each publisher's messages arrive once each
        assert got.count(b"%0*d" % (PAYLOAD, i)) == len(pubs)


def _routed(nd, sub, topic):
    """Until a QoS 0 probe published on node nd reaches sub (its route is there)."""
    probe = _connect(nd.host, nd.port, uid("probe"))
    try:
        def arrived():
            before = len(sub.got)
            probe.publish(topic, b"probe", qos=0)
            time.sleep(0.1)
            return len(sub.got) > before
        wait_until(arrived, 10.0, msg="a route of node %d's subscriber" % nd.id)
    finally:
        probe.close()


@pytest.mark.parametrize("tern_cluster", [{"slow_subscriber_timeout_ms": 1000}],
                         indirect=True)
def test_stuck_clean_subscriber_on_another_node(tern_cluster):
    """A clean subscriber on node 2 that reads but never acknowledges: the publisher
    on node 1 is held through the link for about slow_subscriber_timeout_ms, then
    node 2 lets it go (its queue meets drop_policy, counted there, the subscriber is
    named in its log) and the publisher finishes. Meanwhile a second subscriber of
    the same topic on node 2, and one fed by another publisher on node 1, get
    everything; their longest waits are printed."""
    c = tern_cluster
    n, timeout_ms = 5000, 1000
    base = "fc/" + uid()
    s_node, p_node = c.node(2), c.node(1)
    stuck = Subscriber(s_node.host, s_node.port, base + "/shared", ack=False)
    same = Subscriber(s_node.host, s_node.port, base + "/shared")
    other = Subscriber(s_node.host, s_node.port, base + "/other")
    subs = [stuck, same, other]
    for s in subs:
        s.start()
    _routed(p_node, same, base + "/shared")
    _routed(p_node, other, base + "/other")
    time.sleep(0.3)
    for s in subs:
        del s.got[:]
    p1 = Publisher(p_node.host, p_node.port, base + "/shared", n)
    p2 = Publisher(p_node.host, p_node.port, base + "/other", n)
    t0 = time.monotonic()
    try:
        p1.start()
        p2.start()
        p1.finish(60.0)
        p2.finish(60.0)
        wait_received(same, n, 30.0)
        wait_received(other, n, 30.0)
    finally:
        for s in subs:
            s.finish()
    took = time.monotonic() - t0
    drops = s_node.metric("tern_dropped_messages_total", 'reason="queue_full"')
    slow = s_node.metric("tern_slow_subscribers_total")
    gap_same, gap_other = same.max_gap(t0), other.max_gap(t0)
    print("stuck clean subscriber on another node: publishers done in %.2fs, stuck got %d "
          "(in flight), queue_full drops on node 2 %r, slow %r; longest wait: same topic "
          "%.0f ms, other publisher %.0f ms (slow_subscriber_timeout_ms %d)" % (
              took, len(stuck.got), drops, slow, gap_same * 1000, gap_other * 1000,
              timeout_ms))
    expect_all(same, n)
    expect_all(other, n)
    assert len(stuck.got) == 32  # inflight_max
    assert drops and drops > 0
    assert slow == 1
    assert stuck.cid in s_node.log(current_run=True)
    assert took < 30.0  # liveness: held back about timeout_ms, not for ever
    assert gap_same < timeout_ms / 1000.0 + 5.0  # generous liveness bounds
    assert gap_other < 5.0


@pytest.mark.parametrize("tern_cluster", [{"slow_subscriber_timeout_ms": 60000}],
                         indirect=True)
def test_hold_for_a_lost_node_ends_with_its_lease(tern_cluster):
    """A publisher on node 1 held for a stuck clean subscriber on node 2 (with a
    slow_subscriber_timeout_ms of a minute, so only node 2 could let it go): when
    node 2 is killed, node 1 reads the publisher again once the hold's lease ends
    (1 s without a renewal), not after the minute. The wait is printed."""
    c = tern_cluster
    topic = "fc/" + uid()
    s_node, p_node = c.node(2), c.node(1)
    stuck = Subscriber(s_node.host, s_node.port, topic, ack=False)
    stuck.start()
    _routed(p_node, stuck, topic)
    pub = Publisher(p_node.host, p_node.port, topic, 10 ** 6)
    try:
        pub.start()
        # held: no PUBACK progress for a while
        deadline, last, since = time.monotonic() + 30.0, -1, time.monotonic()
        while time.monotonic() < deadline:
            if pub.acked != last:
                last, since = pub.acked, time.monotonic()
            elif time.monotonic() - since > 1.5:
                break
            time.sleep(0.05)
        assert time.monotonic() - since > 1.5, "the publisher was not held"
        assert p_node.metric("tern_connections_held") == 1
        held_at = pub.acked
        t_kill = time.monotonic()
        c.kill(2)
        deadline = time.monotonic() + 30.0
        while pub.acked == held_at and time.monotonic() < deadline and pub.is_alive():
            time.sleep(0.01)
        waited = time.monotonic() - t_kill
        print("publisher held for a stuck subscriber on a killed node: read again %.0f ms "
              "after the kill (lease 1,000 ms; slow_subscriber_timeout_ms 60,000)" %
              (waited * 1000))
        assert pub.acked > held_at, "still held %.1f s after the node was killed" % waited
        assert waited < 10.0  # liveness: the lease, far below the minute
    finally:
        pub.n = 0  # let its loop end
        pub.join(5.0)
        pub.c.close()
        stuck.finish()
