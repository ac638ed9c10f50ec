"""Bounds of the replicated state are the cluster's, not each node's.

Three nodes; node 2 is configured with queue_max 5, the others with the default
(1000) and a session expiry cap of 60 s (node 2: none). A persistent session on node 1 is offline while 20 QoS 1 messages are
published for it. Every node's replicated state machine must hold the same queue
for it: the limits that decide the state are replicated (the LIMITS command, from
the leader's configuration), and a node whose configuration differs says so in
its log. A client of node 2 asking for a long session expiry is told the
cluster's cap, which is what every replica keeps. Leadership then moves to node 2: its limits become the cluster's, and
the nodes still agree.

Every wait is bounded; the cluster is removed at the end (cluster.py).
"""
import json
import os
import urllib.request

import pytest

import mqttraw
from cluster import TERN_BIN, Cluster, run_cluster
from helpers import IS_MOSQUITTO, V5, connect_props, uid, wait_until

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="tern cluster only")

SMALL_QUEUE = 5
MESSAGES = 20
EXPIRY_CAP = 60


@pytest.fixture
def cluster(tmp_path, request):
    if not os.access(TERN_BIN, os.X_OK):
        pytest.skip("ternd not built at %s (set TERN_BIN)" % TERN_BIN)
    c = Cluster(str(tmp_path))
    if not c.node(1).admin_port:
        pytest.skip("this ternd has no admin API")
    members = [nd.member() for nd in c.nodes]
    c.node(2).write_config(members, {"queue_max": SMALL_QUEUE})
    for i in (1, 3):
        c.node(i).write_config(members, {"session_expiry_max_s": EXPIRY_CAP})
    yield from run_cluster(request, c)


def queued_on(nd, cid):
    body = nd.admin_get("/sessions/" + cid)
    return json.loads(body)["queued"] if body else None


def queues(c, cid):
    return [queued_on(nd, cid) for nd in c.nodes]


def transfer_to(c, target):
    leader = c.leader()
    url = "http://127.0.0.1:%d/transfer-leader?to=%d" % (c.node(leader).admin_port, target)
    req = urllib.request.Request(url, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


def test_limits_are_replicated(cluster):
    c = cluster
    cid = uid("lim")
    sub = c.client(1, cid, version=V5, clean=False,
                   connect_properties=connect_props(SessionExpiryInterval=3600))
    sub.subscribe("lim/t", 1)
    sub.disconnect()
    pub = c.client(3, version=V5)
    for i in range(MESSAGES):
        pub.publish("lim/t", b"m%d" % i, 1)

    def settled():
        q = queues(c, cid)
        return None not in q and all(x == q[0] for x in q) and q[0] in (
            SMALL_QUEUE, MESSAGES)
    try:
        wait_until(settled, timeout=10, msg="every node to hold the same queue")
    except AssertionError as e:
        raise AssertionError("%s: queued per node %s" % (e, queues(c, cid)))
    # Node 2's configuration differs from the cluster's (or, if it led, the
    # others' do): a warning says which key.
    def warned():
        logs = "".join(nd.log(current_run=True) for nd in c.nodes)
        return "limits differ from the cluster's" in logs and "queue_max=" in logs
    wait_until(warned, timeout=10, msg="a warning naming queue_max")

    # While another node leads, a client of node 2 (no cap of its own) asking
    # for a longer session expiry than the cluster's cap is told the cluster's:
    # what it is told is what every replica keeps.
    assert c.wait_leader() is not None
    if c.leader() == 2:
        transfer_to(c, 1)
        wait_until(lambda: c.leader() not in (None, 2), timeout=10, msg="another leader")
    wait_until(lambda: "session_expiry_max_s=0 (cluster 60)" in c.node(2).log(
        current_run=True), timeout=10, msg="node 2 on the cluster's limits")
    ecid = uid("exp")

    def expiry_everywhere():
        docs = [nd.admin_get("/sessions/" + ecid) for nd in c.nodes]
        return None if None in docs else [json.loads(d)["expiry_s"] for d in docs]
    with mqttraw.RawClient(c.node(2).host, c.node(2).port, version=5, timeout=5.0) as r:
        ack = r.connect(ecid, clean=True, props={mqttraw.SESSION_EXPIRY: 3600})
        assert ack.reason == 0
        told = ack.props.get(mqttraw.SESSION_EXPIRY, 3600)
        wait_until(lambda: expiry_everywhere() is not None, timeout=10, msg="the session")
        assert expiry_everywhere() == [told] * 3, (told, expiry_everywhere())
        r.disconnect()

    # Node 2 leads: its queue_max becomes the cluster's.
    if c.leader() != 2:
        transfer_to(c, 2)
    wait_until(lambda: c.leader() == 2, timeout=10, msg="node 2 leads")
    wait_until(lambda: "cluster limits set from this node's configuration" in
               c.node(2).log(current_run=True), timeout=10, msg="node 2's limits applied")
    # The queue (20 or more) is over the new bound: the next message trims it
    # to 5 (drop_oldest), on every node alike.
    for i in range(3):
        pub.publish("lim/t", b"n%d" % i, 1)
    try:
        wait_until(lambda: queues(c, cid) == [SMALL_QUEUE] * 3, timeout=10,
                   msg="queues bounded by node 2's queue_max everywhere")
    except AssertionError as e:
        raise AssertionError("%s: queued per node %s" % (e, queues(c, cid)))
    views = {nd.id: json.loads(nd.admin_get("/cluster")) for nd in c.nodes}
    assert {v["limits"]["queue_max"] for v in views.values()} == {SMALL_QUEUE}, views
    assert {v["limits"]["session_expiry_max_s"] for v in views.values()} == {0}, views
    assert [views[i]["limits_as_configured"] for i in (1, 2, 3)] == [False, True, False]
