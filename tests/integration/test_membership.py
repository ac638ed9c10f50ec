"""Runtime membership changes (ternctl add-node / remove-node, admin /members).

1. A fourth node, started with `join`, is added with `ternctl add-node` on the leader
   (a follower answers 409 naming the leader). The others compacted their logs
   (raft_snapshot_threshold 16), so it catches up from a snapshot. A persistent
   session created before resumes on node 4 with its queued messages, and a
   retained message is visible there.
2. A node (a follower, or the leader itself) is removed with `ternctl remove-node`:
   the three others keep working; the removed node refuses clients (CONNACK rc 3)
   and logs why, also after a restart.

Every wait is bounded; each test gets a fresh cluster (cluster.py).
"""
import os
import signal
import subprocess
import time

import pytest

import mqttraw
from cluster import TERN_BIN, tern_cluster_fixture  # noqa: F401  (the fixture)
from helpers import IS_MOSQUITTO, uid, wait_until

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="tern cluster only")

TERNCTL = os.environ.get("TERNCTL_BIN", os.path.join(os.path.dirname(TERN_BIN), "ternctl"))
CTL_TIMEOUT = 30.0
SETTINGS = {"raft_snapshot_threshold": 16, "raft_snapshot_trailing": 4}
REMOVED_MSG = ("this node (id %d) is not a member of the cluster any more: remove its "
               "data directory to join again as a new member")


def ctl(node, *args):
    if not os.access(TERNCTL, os.X_OK):
        pytest.skip("ternctl not built at %s" % TERNCTL)
    if not node.admin_port:
        pytest.skip("this ternd has no admin API")
    cmd = [TERNCTL, "--admin", "127.0.0.1:%d" % node.admin_port] + list(args)
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=CTL_TIMEOUT)
    return p.returncode, p.stdout, p.stderr


def raft_files(node):
    try:
        return os.listdir(os.path.join(node.data_dir, "raft"))
    except OSError:
        return []


def connack_rc(node, timeout=3.0):
    """CONNACK return code of a clean 3.1.1 CONNECT (None: closed without one)."""
    try:
        with mqttraw.RawClient(node.host, node.port, version=4, timeout=timeout) as r:
            return r.connect(uid("x"), clean=True).reason
    except mqttraw.Closed:
        return None


def serves(node):
    """The node accepts a client and a QoS 1 PUBLISH through it is acknowledged."""
    try:
        with mqttraw.RawClient(node.host, node.port, version=4, timeout=2.0) as r:
            if r.connect(uid("probe"), clean=True).reason != 0:
                return False
            r.publish("member-test/probe", b"1", qos=1, packet_id=1)
            return r.expect(mqttraw.PUBACK, 2.0).packet_id == 1
    except (OSError, AssertionError, mqttraw.Closed, ValueError):
        return False


def publish_n(node, topic, n, retain_last=False):
    with mqttraw.RawClient(node.host, node.port, version=4, timeout=5.0) as r:
        assert r.connect(uid("pub"), clean=True).reason == 0
        for i in range(n):
            r.publish(topic, b"%d" % i, qos=1, packet_id=i + 1,
                      retain=retain_last and i == n - 1)
            assert r.expect(mqttraw.PUBACK, 5.0).packet_id == i + 1


def receive_ints(r, n, limit=10.0):
    got = []
    deadline = time.monotonic() + limit
    while len(got) < n and time.monotonic() < deadline:
        p = r.expect(mqttraw.PUBLISH, max(0.1, deadline - time.monotonic()))
        if p.qos:
            r.puback(p.packet_id)
        got.append(int(p.payload))
    return got


@pytest.mark.parametrize("victim", ["follower", "leader"])
@pytest.mark.parametrize("tern_cluster", [SETTINGS], indirect=True)
def test_add_then_remove_node(tern_cluster, victim):
    c = tern_cluster
    lead = c.wait_leader()
    assert lead is not None, "no leader"
    follower = next(i for i in (1, 2, 3) if i != lead)

    # A persistent session with messages queued for it, and a retained message.
    sid = uid("keep")
    with mqttraw.RawClient(c.node(1).host, c.node(1).port, version=4, timeout=5.0) as r:
        assert r.connect(sid, clean=False).reason == 0
        r.subscribe(1, [("member-test/q", 1)])
    base = uid("m")
    publish_n(c.node(2), "member-test/q", 10)
    publish_n(c.node(3), base + "/r", 40, retain_last=True)  # compacts the logs

    # The leader's log no longer starts at entry 1: node 4 needs a snapshot.
    wait_until(lambda: any(f.startswith("snapshot-") for f in raft_files(c.node(lead))),
               timeout=10.0, msg="a snapshot on the leader")

    # Node 4 joins: refused by a follower, done by the leader.
    nd4 = c.add_node(SETTINGS)
    c.start(nd4.id)
    m = nd4.member()
    rc, _, err = ctl(c.node(follower), "add-node", "4", m["raft"], m["peer"], m["mqtt"])
    assert rc == 1 and "HTTP 409" in err and "leader" in err, err
    rc, out, err = ctl(c.node(lead), "add-node", "4", m["raft"], m["peer"], m["mqtt"])
    assert rc == 0 and out == "node 4 added\n", (rc, out, err)
    wait_until(lambda: serves(nd4), timeout=20.0, interval=0.2, msg="node 4 serving")
    assert any(f.startswith("snapshot-") for f in raft_files(nd4))

    # The session resumes on node 4 with its queue; the retained message is there.
    with mqttraw.RawClient(nd4.host, nd4.port, version=4, timeout=5.0) as r:
        ca = r.connect(sid, clean=False)
        assert ca.reason == 0 and ca.session_present
        assert sorted(receive_ints(r, 10)) == list(range(10))
    with mqttraw.RawClient(nd4.host, nd4.port, version=4, timeout=5.0) as r:
        assert r.connect(uid("ret"), clean=True).reason == 0
        r.subscribe(1, [(base + "/r", 0)])
        p = r.expect(mqttraw.PUBLISH, 5.0)
        assert p.retain and p.payload == b"39"

    # A node leaves (the leader itself, or a follower); the three others carry on.
    lead = c.wait_leader()
    assert lead is not None, "no leader"
    gone = lead if victim == "leader" else next(i for i in (1, 2, 3) if i != lead)
    rest = [i for i in (1, 2, 3, 4) if i != gone]
    msg = REMOVED_MSG % gone
    on_gone = uid("gone")  # a client of the leaving node: fenced, resumes elsewhere
    held = c.raw(gone)
    assert held.connect(on_gone, clean=False).reason == 0
    rc, out, err = ctl(c.node(lead), "remove-node", str(gone))
    assert rc == 0 and out == "node %d removed\n" % gone, (rc, out, err)
    with pytest.raises(mqttraw.Closed):
        held.recv(10.0)
    for i in rest:
        wait_until(lambda: serves(c.node(i)), timeout=20.0, interval=0.2,
                   msg="node %d serving" % i)
    wait_until(lambda: msg in c.node(gone).log(), timeout=10.0,
               msg="node %d logging its removal" % gone)
    wait_until(lambda: connack_rc(c.node(gone)) == 3, timeout=10.0,
               msg="node %d refusing clients" % gone)
    with mqttraw.RawClient(c.node(rest[0]).host, c.node(rest[0]).port, version=4,
                           timeout=5.0) as r:
        ca = r.connect(on_gone, clean=False)
        assert ca.reason == 0 and ca.session_present
    rc, _, err = ctl(c.node(c.wait_leader(exclude=(gone,))), "remove-node", str(gone))
    assert rc == 1 and "HTTP 404" in err, err

    # Restarted, it still refuses and says why; the cluster is unaffected.
    c.kill(gone, signal.SIGTERM)
    c.start(gone)
    wait_until(lambda: msg in c.node(gone).log(current_run=True), timeout=10.0,
               msg="restarted node %d logging its removal" % gone)
    assert connack_rc(c.node(gone)) == 3
    assert serves(c.node(rest[0]))


def test_add_node_not_running_then_retry(tern_cluster):
    """An add whose node is not up gives up (it stays a spare) and may be repeated;
    adding a voter again is refused."""
    c = tern_cluster
    lead = c.wait_leader()
    assert lead is not None, "no leader"
    nd4 = c.add_node()
    m = nd4.member()
    args = ("add-node", "4", m["raft"], m["peer"], m["mqtt"])
    rc, _, err = ctl(c.node(lead), *args)
    assert rc == 1 and "HTTP 503" in err and "did not catch up" in err, err
    c.start(nd4.id)
    rc, out, err = ctl(c.node(lead), *args)
    assert rc == 0 and out == "node 4 added\n", (rc, out, err)
    rc, _, err = ctl(c.node(lead), *args)
    assert rc == 1 and "HTTP 409" in err and "already a member" in err, err
    wait_until(lambda: serves(nd4), timeout=20.0, interval=0.2, msg="node 4 serving")
