"""Shared subscriptions in a three-node cluster (MQTT 5 4.8.2): each message published
to a topic reaches exactly one member of every matching group, cluster-wide, wherever
the members are (several nodes, clean and persistent members mixed). Each test gets a
fresh cluster (cluster.py); every wait is bounded.
"""
import collections
import time

import pytest

from cluster import tern_cluster_fixture  # noqa: F401  (the tern_cluster fixture)
from helpers import IS_MOSQUITTO, V5, connect_props, uid

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="tern cluster only")

N = 100
READY_S = 10.0


def persistent_kw():
    return {"clean": False, "connect_properties": connect_props(SessionExpiryInterval=3600)}


def join_group(members, base, group="g"):
    """Each member subscribes to $share/<group>/<base>/t, then to <base>/ready/<i>: the
    second route of a node is applied after its first everywhere, so once a ready probe
    from the publisher's node reaches a member, that node knows the member's group."""
    for i, m in enumerate(members):
        assert m.subscribe("$share/%s/%s/t" % (group, base), 1) == [1]
        assert m.subscribe("%s/ready/%d" % (base, i), 0) == [0]


def wait_ready(pub, members, base):
    """Publishes ready probes until every member got its own (bounded)."""
    deadline = time.monotonic() + READY_S
    pending = set(range(len(members)))
    while pending and time.monotonic() < deadline:
        for i in sorted(pending):
            pub.publish("%s/ready/%d" % (base, i), b"r", 1)
        for i in sorted(pending):
            got = members[i].drain(0.2)
            if any(m.topic == "%s/ready/%d" % (base, i) for m in got):
                pending.discard(i)
    assert not pending, "members %r never saw their ready probe" % sorted(pending)
    for m in members:
        m.drain(0.3)  # late duplicate probes


def publish_n(pub, topic, first, n, qos=1, timeout=20.0, retain=False):
    infos = [pub.publish(topic, b"%d" % i, qos, retain=retain, wait=False)
             for i in range(first, first + n)]
    deadline = time.monotonic() + timeout
    for info in infos:
        if qos:
            info.wait_for_publish(max(deadline - time.monotonic(), 0.01))
            assert info.is_published(), "publish not acknowledged in %.0fs" % timeout


def gather(members, topic, want, limit=15.0, quiet=1.0):
    """Messages on topic per member: until `want` arrived in all, then `quiet` seconds
    more (so duplicates show)."""
    got = [[] for _ in members]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and sum(map(len, got)) < want:
        for i, m in enumerate(members):
            got[i] += [x for x in m.drain(0.05) if x.topic == topic]
    for i, m in enumerate(members):
        got[i] += [x for x in m.drain(quiet if i == 0 else 0.2) if x.topic == topic]
    return [[int(x.payload) for x in g] for g in got]


def check_once(got, first, n):
    """Every payload in [first, first + n) exactly once across the members."""
    counts = collections.Counter(p for g in got for p in g)
    missing = sorted(set(range(first, first + n)) - set(counts))
    dups = sorted(p for p, k in counts.items() if k > 1)
    total = sum(map(len, got))
    assert total == n and not missing and not dups, (
        "%d messages -> %d deliveries (per member %r); missing %r, more than once %r" % (
            n, total, [len(g) for g in got], missing[:20], dups[:20]))


@pytest.mark.parametrize("retain", [False, True], ids=["direct", "through-log"])
def test_clean_members_on_two_nodes_get_one_copy_per_group(tern_cluster, retain):
    """(a) Clean v5 members of one group on nodes 2 and 3, a publisher on node 1: N
    QoS 1 messages are delivered N times in all, each once; both members get a share;
    a plain subscriber of the topic still gets all N. Retained messages go through
    the log, where the replicated state machine chooses the group's node instead of
    the publisher's node."""
    c = tern_cluster
    base = "sh/" + uid()
    members = [c.client(2, version=V5), c.client(3, version=V5)]
    plain = c.client(3, version=V5)
    assert plain.subscribe(base + "/t", 1) == [1]
    join_group(members, base)
    pub = c.client(1, version=V5)
    wait_ready(pub, members, base)
    publish_n(pub, base + "/t", 0, N, retain=retain)
    got = gather(members, base + "/t", N)
    check_once(got, 0, N)
    assert all(len(g) >= N // 4 for g in got), "unfair split %r" % [len(g) for g in got]
    assert sorted(int(m.payload) for m in plain.collect(N, 10.0)) == list(range(N))


@pytest.mark.parametrize("layout", ["same-node", "two-nodes"])
def test_clean_and_persistent_members_get_one_copy_per_group(tern_cluster, layout):
    """(b) One clean and one persistent member of one group (both on node 2, or on nodes
    2 and 3), a publisher on node 1: N QoS 1 messages are delivered N times in all,
    each once, and both members get some."""
    c = tern_cluster
    base = "sh/" + uid()
    clean = c.client(2, version=V5)
    durable = c.client(2 if layout == "same-node" else 3, version=V5, **persistent_kw())
    members = [clean, durable]
    join_group(members, base)
    pub = c.client(1, version=V5)
    wait_ready(pub, members, base)
    publish_n(pub, base + "/t", 0, N)
    got = gather(members, base + "/t", N)
    check_once(got, 0, N)
    assert all(got), "a member got nothing: %r" % [len(g) for g in got]


def test_members_on_one_node_share_and_leavers_stop_receiving(tern_cluster):
    """(c) Two clean members on node 2 and one on node 3, a publisher on node 1: each
    message once; the two on node 2 split node 2's share about evenly (round robin).
    After one of them unsubscribes it gets nothing more, and after another disconnects
    the last one gets everything, each message once."""
    c = tern_cluster
    base = "sh/" + uid()
    members = [c.client(2, version=V5), c.client(2, version=V5), c.client(3, version=V5)]
    join_group(members, base)
    pub = c.client(1, version=V5)
    wait_ready(pub, members, base)
    topic = base + "/t"

    publish_n(pub, topic, 0, N)
    got = gather(members, topic, N)
    check_once(got, 0, N)
    a, b = len(got[0]), len(got[1])
    assert a and b and abs(a - b) <= max(2, (a + b) // 5), (
        "members on one node should alternate: %d and %d" % (a, b))

    members[0].unsubscribe("$share/g/%s/t" % base)
    publish_n(pub, topic, N, N)
    got = gather(members, topic, N)
    check_once(got, N, N)
    assert not got[0], "unsubscribed member still got %d" % len(got[0])
    assert got[1] and got[2], "remaining members: %r" % [len(g) for g in got]

    members[2].disconnect()
    # Node 3's route goes with its last member; until node 1 has applied that, a
    # message may still be routed there (and lost with it: clean sessions are not
    # durable). Probe until 4 in a row reach the member left on node 2.
    deadline = time.monotonic() + READY_S
    streak = 0
    while streak < 4 and time.monotonic() < deadline:
        pub.publish(topic, b"-1", 1)
        got = [m for m in members[1].drain(0.3) if m.topic == topic]
        streak = streak + 1 if got else 0
    assert streak >= 4, "node 3 still chosen after its last member left"
    members[1].drain(0.3)
    publish_n(pub, topic, 2 * N, N)
    got = gather(members[:2], topic, N)
    check_once(got, 2 * N, N)
    assert not got[0]


def test_wills_reach_one_member_of_the_group(tern_cluster):
    """(d) A will is published by the replicated state machine: with clean members of
    the group on nodes 2 and 3, each will of a client dropped on node 1 is delivered
    once in all (every node used to hand it to its own member)."""
    c = tern_cluster
    base = "sh/" + uid()
    members = [c.client(2, version=V5), c.client(3, version=V5)]
    join_group(members, base)
    pub = c.client(1, version=V5)
    wait_ready(pub, members, base)
    n = 6
    for i in range(n):
        w = c.client(1, version=V5,
                     will={"topic": base + "/t", "payload": b"%d" % i, "qos": 1})
        w.abort()  # no DISCONNECT: the will is published
    got = gather(members, base + "/t", n)
    check_once(got, 0, n)


def test_two_groups_on_one_topic_each_spread_over_their_nodes(tern_cluster):
    """(e) Groups g and h, each with a clean member on node 2 and one on node 3, a
    publisher on node 1: each group gets every message once, and in each group both
    members get a share (a choice that alternated over all groups at once would give
    g's copies all to one node and h's all to the other)."""
    c = tern_cluster
    base = "sh/" + uid()
    g = [c.client(2, version=V5), c.client(3, version=V5)]
    h = [c.client(2, version=V5), c.client(3, version=V5)]
    join_group(g, base, "g")
    for i, m in enumerate(h):
        assert m.subscribe("$share/h/%s/t" % base, 1) == [1]
        assert m.subscribe("%s/ready/%d" % (base, i + 2), 0) == [0]
    pub = c.client(1, version=V5)
    wait_ready(pub, g + h, base)
    publish_n(pub, base + "/t", 0, N)
    got = gather(g + h, base + "/t", 2 * N)
    for name, part in (("g", got[:2]), ("h", got[2:])):
        check_once(part, 0, N)
        assert all(len(x) >= N // 4 for x in part), "group %s split %r" % (
            name, [len(x) for x in part])
