"""Issue 17, identity: the cluster id is made at bootstrap and kept in the Raft log
(CLUSTER_ID, docs/commands.md) and in each data directory (DATA_DIR/identity).

1. A node added at run time (`join`, `ternctl add-node`) learns the id from the log
   or from a snapshot, writes it to its identity file, and GET /cluster and
   `ternctl status` show the same id on every node, the joined one included (also
   after it restarts). Every identity file is then marked `replicated 1`.
   (Members whose configurations differ, so derive other ids, take the first
   leader's: test_snapshot_install.py runs such a cluster, through a proxy.)
2. A node whose data directory says one cluster id while the replicated state in it
   says another (here: the Raft files of another cluster's node copied in) stops
   with exit 2 and a message naming both ids.
3. A node whose identity file was lost while its Raft files stayed takes the id
   back from the log (it used to make a new random one).

Every wait is bounded; each test gets a fresh cluster or its own data directories.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import time

import pytest

import mqttraw
from cluster import TERN_BIN, tern_cluster_fixture  # noqa: F401  (the fixture)
from conftest import free_port
from helpers import IS_MOSQUITTO, uid, wait_until

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="tern only")

TERNCTL = os.environ.get("TERNCTL_BIN", os.path.join(os.path.dirname(TERN_BIN), "ternctl"))
COMPACT = {"raft_snapshot_threshold": 16, "raft_snapshot_trailing": 4}


def ctl(port, *args):
    p = subprocess.run([TERNCTL, "--admin", "127.0.0.1:%d" % port] + list(args),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=30.0)
    return p.returncode, p.stdout, p.stderr


def cluster_doc(nd):
    try:
        return json.loads(nd.admin_get("/cluster") or "{}")
    except ValueError:
        return {}


def identity_id(data_dir):
    with open(os.path.join(data_dir, "identity")) as f:
        m = re.search(r"^cluster_id ?(.*)$", f.read(), re.M)
    assert m, "no cluster_id line in %s/identity" % data_dir
    return m.group(1)


def publish_acked(host, port, n=1, topic="identity/t", retain=False):
    """QoS 1 PUBLISHes, each acknowledged; retained ones go through the log."""
    with mqttraw.RawClient(host, port, version=4, timeout=5.0) as r:
        assert r.connect(uid("pub"), clean=True).reason == 0
        for i in range(n):
            r.publish(topic, b"%d" % i, qos=1, packet_id=i + 1, retain=retain)
            assert r.expect(mqttraw.PUBACK, 5.0).packet_id == i + 1


def serves(nd):
    try:
        publish_acked(nd.host, nd.port)
        return True
    except (OSError, AssertionError, mqttraw.Closed, ValueError):
        return False


@pytest.mark.parametrize("tern_cluster,via", [({}, "log"), (COMPACT, "snapshot")],
                         indirect=["tern_cluster"])
def test_joined_node_reports_cluster_id(tern_cluster, via):
    c = tern_cluster
    lead = c.wait_leader()
    assert lead is not None, "no leader"
    ids = {i: cluster_doc(c.node(i)).get("cluster_id") for i in (1, 2, 3)}
    want = ids[1]
    assert re.fullmatch(r"[0-9a-f]{16}", want or ""), ids
    assert set(ids.values()) == {want}, ids
    if via == "snapshot":  # compact the logs: node 4 catches up from a snapshot
        publish_acked(c.node(2).host, c.node(2).port, n=40, retain=True)
        lead = c.wait_leader()
        assert lead is not None, "no leader"
        wait_until(lambda: any(f.startswith("snapshot-") for f in
                               os.listdir(os.path.join(c.node(lead).data_dir, "raft"))),
                   timeout=20.0, msg="a snapshot on the leader")

    nd4 = c.add_node(COMPACT if via == "snapshot" else None)
    c.start(nd4.id)
    m = nd4.member()
    rc, out, err = ctl(c.node(lead).admin_port, "add-node", "4", m["raft"], m["peer"],
                       m["mqtt"])
    assert rc == 0, (rc, out, err)
    wait_until(lambda: serves(nd4), timeout=20.0, interval=0.2, msg="node 4 serving")

    def joined_id():
        return cluster_doc(nd4).get("cluster_id")
    try:
        wait_until(lambda: joined_id() == want, timeout=10.0, interval=0.2,
                   msg="node 4 reporting cluster id %s" % want)
    finally:
        print("GET /cluster cluster_id: nodes 1-3 %s, node 4 %r" % (want, joined_id()))
    assert identity_id(nd4.data_dir) == want
    for nd in c.nodes:  # each has seen the id applied: a replicated one from now on
        wait_until(lambda: "replicated 1\n" in open(os.path.join(nd.data_dir,
                                                                  "identity")).read(),
                   timeout=10.0, msg="node %d's identity marked replicated" % nd.id)
    rc, out, err = ctl(nd4.admin_port, "status")
    assert rc == 0 and "(id %s)" % want in out, (rc, out, err)
    # Kept across a restart: it is in the identity file now.
    c.restart(nd4.id)
    wait_until(lambda: joined_id() == want, timeout=10.0, interval=0.2,
               msg="restarted node 4 reporting cluster id %s" % want)
    assert "cluster id %s" % want in nd4.log(current_run=True)


def start_single(tmp_path, name, data_dir, listen, raft, **keys):
    cfg = {"data_dir": data_dir, "listen": listen, "raft_address": raft,
           "admin_listen": "127.0.0.1:0", "log_level": "debug"}
    cfg.update(keys)
    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    return str(path)


def run_until_serving(cfg_path, port, timeout=15.0, n=1):
    """Starts ternd, waits until n retained QoS 1 PUBLISHes are acknowledged,
    stops it."""
    p = subprocess.Popen([TERN_BIN, "--config", cfg_path], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert p.poll() is None, p.communicate()[0]
            try:
                publish_acked("127.0.0.1", port, n=n, retain=True)
                break
            except (OSError, AssertionError, mqttraw.Closed, ValueError):
                assert time.monotonic() < deadline, "not serving"
                time.sleep(0.1)
    finally:
        p.terminate()
        try:
            p.communicate(timeout=10.0)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()


@pytest.mark.parametrize("via", ["log", "snapshot"])
def test_data_dir_of_another_cluster_id(tmp_path, via):
    """Two single-node clusters of the same name and node id, A and B; A's Raft
    files copied into B's data directory: B's identity says B, the log (or the
    snapshot) says A. From a snapshot, B stops before its MQTT listener opens."""
    port, raft = free_port(), "127.0.0.1:%d" % free_port()
    listen = "127.0.0.1:%d" % port
    da, db = str(tmp_path / "a"), str(tmp_path / "b")
    keys = COMPACT if via == "snapshot" else {}
    cfg_a = start_single(tmp_path, "a.json", da, listen, raft, **keys)
    cfg_b = start_single(tmp_path, "b.json", db, listen, raft)
    run_until_serving(cfg_a, port, n=40 if via == "snapshot" else 1)
    run_until_serving(cfg_b, port)
    id_a, id_b = identity_id(da), identity_id(db)
    assert id_a and id_b and id_a != id_b, (id_a, id_b)
    if via == "snapshot":
        assert any(f.startswith("snapshot-") for f in os.listdir(os.path.join(da, "raft")))
    shutil.rmtree(os.path.join(db, "raft"))
    shutil.copytree(os.path.join(da, "raft"), os.path.join(db, "raft"))

    p = subprocess.Popen([TERN_BIN, "--config", cfg_b], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = p.communicate(timeout=15.0)[0]
        rc = p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        out, rc = p.communicate()[0], None
    print("exit %s; last lines:\n%s" % (rc, "\n".join(out.splitlines()[-3:])))
    assert rc == 2, (rc, out[-2000:])
    line = next((ln for ln in out.splitlines() if id_a in ln and id_b in ln), None)
    assert line is not None, out[-2000:]
    if via == "snapshot":
        assert "listening on" not in out, out[-2000:]
    # B's identity file is left as it was: the refusal changed nothing.
    assert identity_id(db) == id_b
    with socket.socket() as sk:  # and nothing is left listening
        assert sk.connect_ex(("127.0.0.1", port)) != 0


def test_lost_identity_file_learnt_back(tmp_path):
    """An identity file lost while the Raft files stay: the id comes back from the
    log (a new random one would name another cluster than the state's)."""
    port, raft = free_port(), "127.0.0.1:%d" % free_port()
    d = str(tmp_path / "d")
    cfg = start_single(tmp_path, "n.json", d, "127.0.0.1:%d" % port, raft)
    run_until_serving(cfg, port)
    before = identity_id(d)
    os.unlink(os.path.join(d, "identity"))
    run_until_serving(cfg, port)
    after = identity_id(d)
    print("cluster id before %s, after the identity file was lost %s" % (before, after))
    assert after == before
