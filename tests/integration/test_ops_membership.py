"""Issue 17, finding 2: every membership change is validated before anything is
written. Removing the only voter, or a node whose removal would lose the quorum,
is refused with the reason, and nothing (DATA_DIR/removed) is left behind; a
removed node says `removed` in its status.

Every wait is bounded; each test gets a fresh node or cluster.
"""
import json
import os
import subprocess

import pytest

from cluster import tern_cluster_fixture  # noqa: F401  (the fixture)
from conftest import TERN_BIN
from helpers import wait_until
from test_admin import ready_admin

pytestmark = pytest.mark.tern_only

TERNCTL = os.environ.get("TERNCTL_BIN", os.path.join(os.path.dirname(TERN_BIN), "ternctl"))


def ctl(addr, *args):
    p = subprocess.run([TERNCTL, "--admin", addr] + list(args), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=30.0)
    return p.returncode, p.stdout, p.stderr


def test_remove_only_voter_refused(broker):
    a = ready_admin(broker)
    rc, out, err = ctl(a.addr, "remove-node", "1")
    assert rc == 1 and "HTTP 409" in err and "last voter" in err, (rc, out, err)
    assert not os.path.exists(os.path.join(broker.data_dir, "removed"))
    # Still serving, also after a restart.
    broker.restart()
    a = ready_admin(broker)
    assert a.get("/cluster")["state"] == "leader"


def test_remove_losing_quorum_refused(tern_cluster):
    c = tern_cluster
    lead = c.wait_leader()
    assert lead is not None, "no leader"
    down, live = [i for i in (1, 2, 3) if i != lead]
    c.kill(down)

    def link_down():
        doc = json.loads(c.node(lead).admin_get("/cluster") or "{}")
        return any(m["id"] == down and not m["link_up"] for m in doc.get("members", []))
    wait_until(link_down, timeout=10.0, msg="the leader seeing node %d's link down" % down)
    laddr = "127.0.0.1:%d" % c.node(lead).admin_port
    # Without the live follower, the two voters left (leader and a dead node)
    # would have no quorum: refused, nothing written on the follower.
    rc, out, err = ctl(laddr, "remove-node", str(live))
    assert rc == 1 and "HTTP 409" in err and "quorum" in err, (rc, out, err)
    assert not os.path.exists(os.path.join(c.node(live).data_dir, "removed"))
    rc, out, err = ctl(laddr, "remove-node", str(lead))
    assert rc == 1 and "quorum" in err, (rc, out, err)
    # Removing the dead one keeps a quorum (two live voters of two).
    rc, out, err = ctl(laddr, "remove-node", str(down))
    assert rc == 0, (rc, out, err)


def test_removed_node_status(tern_cluster):
    c = tern_cluster
    lead = c.wait_leader()
    assert lead is not None, "no leader"
    gone = next(i for i in (1, 2, 3) if i != lead)
    rc, out, err = ctl("127.0.0.1:%d" % c.node(lead).admin_port, "remove-node", str(gone))
    assert rc == 0, (rc, out, err)
    gaddr = "127.0.0.1:%d" % c.node(gone).admin_port

    def says_removed():
        rc, out, _ = ctl(gaddr, "--json", "status")
        return rc == 0 and json.loads(out)["cluster"].get("state") == "removed"
    wait_until(says_removed, timeout=10.0, msg="removed node's status says removed")
    rc, out, _ = ctl(gaddr, "status")
    assert "removed" in out, out


@pytest.mark.parametrize("field,value", [
    ("raft", "127.0.0.1:70000"),  # atoi made it 4464
    ("peer", "127.0.0.1:65536"),
    ("raft", "127.0.0.1:0"),
    ("peer", "127.0.0.1:12x"),
    ("raft", "127.0.0.1:"),
    ("peer", ":1883"),
])
def test_add_member_with_bad_address_refused(broker, field, value):
    """A member address is HOST:PORT with a port 1-65535, checked by the one address
    parser the configuration uses too: refused with 400 naming the field, and no
    member is added."""
    a = ready_admin(broker)
    addrs = {"raft": "127.0.0.1:47001", "peer": "127.0.0.1:47002"}
    addrs[field] = value
    status, _, body = a.req("POST", "/members?id=4&raft=%s&peer=%s" % (addrs["raft"],
                                                                        addrs["peer"]))
    assert status == 400 and field.encode() in body, (status, body)
    members = [m["id"] for m in a.get("/cluster")["members"]]
    assert members == [1], members
