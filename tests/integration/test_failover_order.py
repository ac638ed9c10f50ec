"""A leader lost at load: every acknowledged message is delivered, each publisher's
messages arrive in order (MQTT 4.6), whatever the number of proposals the node made
while the lost ones were being re-sent.

Four clean QoS 1 publishers on one follower keep WINDOW messages unacknowledged each,
their persistent subscriber is on the other follower, and the leader is killed (-9) or
stopped (SIGSTOP for 5 s) once a third of the messages are acknowledged. Neither the
publishers' node nor the subscriber's is touched, so no client needs to reconnect:
every message a subscriber receives for the first time must have a higher sequence
than every earlier one of its publisher.
"""
import os
import signal
import threading
import time

import pytest

import mqttraw
from cluster import tern_cluster_fixture  # noqa: F401  (the tern_cluster fixture)
from helpers import IS_MOSQUITTO, uid, wait_until

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="tern cluster only")

PUBLISHERS = 4
PER_PUBLISHER = 3000
WINDOW = 500  # unacknowledged QoS 1 PUBLISHes per publisher
STOP_S = 5.0


class Publisher(threading.Thread):
    """Raw 3.1.1 QoS 1 publisher keeping WINDOW in flight; records what was PUBACKed.
    Any connection problem ends it (the test says so): its node is not the victim."""

    def __init__(self, node, topic, name, deadline):
        super().__init__(daemon=True)
        self.node, self.topic, self.name, self.deadline = node, topic, name, deadline
        self.acked = set()
        self.error = None

    def run(self):
        try:
            r = mqttraw.RawClient(self.node.host, self.node.port, version=4, timeout=10.0)
            assert r.connect(uid("pub-" + self.name), clean=True).reason == 0
            inflight, nxt, pid = {}, 0, 0
            while (nxt < PER_PUBLISHER or inflight) and time.monotonic() < self.deadline:
                while nxt < PER_PUBLISHER and len(inflight) < WINDOW:
                    pid = pid % 65535 + 1
                    inflight[pid] = nxt
                    r.publish(self.topic, b"%d" % nxt, qos=1, packet_id=pid)
                    nxt += 1
                p = r.recv(10.0)
                if p.type == mqttraw.PUBACK and p.packet_id in inflight:
                    self.acked.add(inflight.pop(p.packet_id))
            r.close()
        except BaseException as e:  # reported by the test
            self.error = e


class Subscriber(threading.Thread):
    """Persistent QoS 1 subscriber: records (publisher, sequence) in arrival order."""

    def __init__(self, node, prefix):
        super().__init__(daemon=True)
        self.r = mqttraw.RawClient(node.host, node.port, version=4, timeout=5.0)
        assert self.r.connect(uid("sub"), clean=False).reason == 0
        assert self.r.subscribe(1, [(prefix + "#", 1)]).codes == [1]
        self.prefix = prefix
        self.arrivals = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.error = None

    def run(self):
        try:
            while not self.stop.is_set():
                try:
                    p = self.r.recv(0.2)
                except mqttraw.Timeout:
                    continue
                if p.type != mqttraw.PUBLISH:
                    continue
                name = p.topic[len(self.prefix):]
                with self.lock:
                    self.arrivals.append((name, int(p.payload)))
                self.r.puback(p.packet_id)
        except BaseException as e:
            self.error = e
        finally:
            self.r.close()

    def snapshot(self):
        with self.lock:
            return list(self.arrivals)


def check(arrivals, acked):
    """(lost, reorders): acknowledged but never received; first deliveries that came
    after a higher sequence of the same publisher."""
    seen, high, reorders = {}, {}, []
    for name, seq in arrivals:
        s = seen.setdefault(name, set())
        if seq not in s and seq < high.get(name, -1):
            reorders.append((name, seq, high[name]))
        s.add(seq)
        high[name] = max(high.get(name, -1), seq)
    lost = {name: sorted(a - seen.get(name, set())) for name, a in acked.items()}
    return {k: v for k, v in lost.items() if v}, reorders


@pytest.mark.parametrize("tern_cluster", [{"queue_max": 100000}], indirect=True)
@pytest.mark.parametrize("fault", ["kill", "stop"])
def test_leader_lost_at_load_keeps_acks_and_order(tern_cluster, fault):
    c = tern_cluster
    lead = c.wait_leader(5.0) or 1
    pub_node, sub_node = [n for n in (1, 2, 3) if n != lead]
    prefix = "order/%s/" % uid()
    deadline = time.monotonic() + 90.0
    sub = Subscriber(c.node(sub_node), prefix)
    sub.start()
    pubs = [Publisher(c.node(pub_node), prefix + "p%d" % i, "p%d" % i, deadline)
            for i in range(PUBLISHERS)]
    for p in pubs:
        p.start()
    total = PUBLISHERS * PER_PUBLISHER
    wait_until(lambda: sum(len(p.acked) for p in pubs) >= total // 3 or
               any(p.error for p in pubs), 60.0, msg="a third acknowledged")
    acked_at_fault = sum(len(p.acked) for p in pubs)
    victim = c.node(lead)
    if fault == "kill":
        c.kill(lead, signal.SIGKILL)
    else:
        victim.proc.send_signal(signal.SIGSTOP)
        time.sleep(STOP_S)
        victim.proc.send_signal(signal.SIGCONT)
    for p in pubs:
        p.join(max(deadline - time.monotonic(), 1.0))
    acked = {p.name: set(p.acked) for p in pubs}
    want = sum(len(a) for a in acked.values())
    end = time.monotonic() + 30.0
    while len(set(sub.snapshot())) < want and time.monotonic() < end:
        time.sleep(0.1)
    time.sleep(0.5)
    sub.stop.set()
    sub.join(5.0)
    arrivals = sub.snapshot()
    lost, reorders = check(arrivals, acked)
    info = ("fault %s of leader %d after %d acks; acked %d of %d; received %d "
            "(%d distinct); publisher errors %r; subscriber error %r" % (
                fault, lead, acked_at_fault, want, total, len(arrivals),
                len(set(arrivals)), [p.error for p in pubs if p.error], sub.error))
    print(info)
    assert not lost, "acknowledged but lost: %s\n%s" % (
        {k: "%d (first %r)" % (len(v), v[:5]) for k, v in lost.items()}, info)
    assert not reorders, "%d out of order, e.g. %r\n%s" % (len(reorders), reorders[:5],
                                                            info)
    assert sub.error is None, info
    for p in pubs:
        assert p.error is None, info
    assert want == total, "not every message acknowledged\n" + info


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_node_without_leader_waits_without_spinning(tern_cluster):
    """The other two nodes stopped (SIGSTOP) with proposals of this node in hand:
    while it waits for a leader it uses no more than a tenth of a core."""
    c = tern_cluster
    lead = c.wait_leader(5.0) or 1
    n = [x for x in (1, 2, 3) if x != lead][0]
    nd = c.node(n)
    r = mqttraw.RawClient(nd.host, nd.port, version=4, timeout=5.0)
    assert r.connect(uid("spin"), clean=True).reason == 0
    others = [c.node(x) for x in (1, 2, 3) if x != n]
    for o in others:
        o.proc.send_signal(signal.SIGSTOP)
    try:
        for i in range(20):  # retained: each is a proposal that cannot commit
            r.publish("spin/%d" % i, b"x", qos=1, packet_id=i + 1, retain=True)
        time.sleep(1.0)
        t0, w0 = cpu_seconds(nd.proc.pid), time.monotonic()
        time.sleep(3.0)
        share = (cpu_seconds(nd.proc.pid) - t0) / (time.monotonic() - w0)
    finally:
        for o in others:
            o.proc.send_signal(signal.SIGCONT)
        r.close()
    print("CPU while waiting: %.1f%% of a core" % (share * 100))
    assert share < 0.10, "node %d used %.0f%% of a core waiting for a leader" % (
        n, share * 100)


def test_restarted_node_answers_only_the_connect_it_was_sent(tern_cluster):
    """A persistent client reconnecting to a node that restarts after kill -9: the
    node replays its log, which holds the client's SESSION_OPEN from before, while
    the client's new CONNECT waits. The old entry must not answer the new CONNECT
    (it did: CONNACK session present 0, with the epoch from before the kill, then
    PUBLISHes acknowledged on a fenced session). Every reconnect must resume the
    session (present 1) and every acknowledged message reach the subscriber."""
    c = tern_cluster
    sub_node, pub_node = 1, 3
    topic = "restart/%s" % uid()
    sub = Subscriber(c.node(sub_node), topic + "/")
    sub.start()
    pid_ = uid("pub")
    acked, presents, seq = set(), [], 0
    try:
        for rnd in range(3):
            nd = c.node(pub_node)
            r = None
            end = time.monotonic() + 30.0
            while r is None and time.monotonic() < end:
                try:
                    r = mqttraw.RawClient(nd.host, nd.port, version=4, timeout=5.0)
                    ca = r.connect(pid_, clean=False)
                    if ca.reason != 0:
                        r.close()
                        r = None
                        time.sleep(0.05)
                        continue
                    presents.append(ca.session_present)
                except (OSError, mqttraw.Closed, mqttraw.Timeout):
                    if r:
                        r.close()
                    r = None
                    time.sleep(0.02)
            assert r is not None, "round %d: no CONNACK from node %d" % (rnd, pub_node)
            try:
                for _ in range(50):
                    seq += 1
                    r.publish(topic + "/p", b"%d" % seq, qos=1, packet_id=seq % 65535 + 1)
                    p = r.recv(5.0)
                    if p.type == mqttraw.PUBACK:
                        acked.add(seq)
            except (OSError, mqttraw.Closed, mqttraw.Timeout):
                pass
            r.close()
            c.kill(pub_node, signal.SIGKILL)
            c.start(pub_node)  # returns once it listens: the CONNECT races the replay
        end = time.monotonic() + 20.0
        while time.monotonic() < end:
            got = {s for _, s in sub.snapshot()}
            if acked <= got:
                break
            time.sleep(0.1)
    finally:
        sub.stop.set()
        sub.join(5.0)
    got = {s for _, s in sub.snapshot()}
    lost = sorted(acked - got)
    print("presents %r, acked %d, received %d" % (presents, len(acked), len(got)))
    assert not lost, "%d acknowledged messages lost, e.g. %r; session present %r" % (
        len(lost), lost[:5], presents)
    assert presents[1:] == [1] * (len(presents) - 1), \
        "a reconnect did not resume the session: present %r" % presents
