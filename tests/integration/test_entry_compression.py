"""Raft entries of a large batch are stored LZ4-compressed (cluster/raft_fsm.h,
raft_entry_compression), and so are a follower's proposal batches to its leader
(cluster/peer.h); every replica applies them to the same state, from the network
and from its own log after a restart.

Three nodes. Retained messages with compressible 4 KiB payloads (sensor-style
JSON) are published on a follower and on the leader; then every node's
/state/digest agrees and every node serves them byte for byte, and the leader's
metrics count entries stored compressed that store fewer bytes than they hold.
Every node is then stopped and started again, so that it replays the compressed
entries from its log: the digests agree again and the messages are the same.
With raft_entry_compression "none" nothing is compressed and the rest holds.

A compressed proposal frame that is malformed (too short, a length beyond the
peer frame bound, a block that does not decompress to its length), sent to the
leader's peer port as if from a member, is dropped with a warning, and the
leader goes on acknowledging.

Every wait is bounded; the cluster is removed at the end (cluster.py).
"""
import hashlib
import json
import os
import socket
import struct

import pytest

import mqttraw
from cluster import TERN_BIN, Cluster, run_cluster
from cluster import tern_cluster_fixture  # noqa: F401  (the tern_cluster fixture)
from helpers import IS_MOSQUITTO, uid, wait_until
from test_catchup import retained_on

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="tern cluster only")

MESSAGES = 12  # per node published on
PAYLOAD = 4096


@pytest.fixture(params=["lz4", "none"])
def cluster(tmp_path, request):
    if not os.access(TERN_BIN, os.X_OK):
        pytest.skip("ternd not built at %s (set TERN_BIN)" % TERN_BIN)
    settings = {} if request.param == "lz4" else {"raft_entry_compression": "none"}
    c = Cluster(str(tmp_path), settings=settings)
    if not c.node(1).admin_port:
        pytest.skip("this ternd has no admin API")
    c.compression = request.param
    yield from run_cluster(request, c)


def payload(i):
    """Text like a device's report: compressible, different per message."""
    rec = {"device": "line-4/press-%d" % i, "status": "ok", "celsius": 21.5 + i,
           "samples": [round(0.25 * k + i, 2) for k in range(40)]}
    text = json.dumps(rec).encode()
    return (text * (PAYLOAD // len(text) + 1))[:PAYLOAD]


def publish_retained(node, base, first):
    want = {}
    with mqttraw.RawClient(node.host, node.port, version=4, timeout=20.0) as r:
        assert r.connect(uid("pub"), clean=True).reason == 0
        for i in range(first, first + MESSAGES):
            topic = "%s/%d" % (base, i)
            r.publish(topic, payload(i), qos=1, packet_id=i + 1, retain=True)
            assert r.expect(mqttraw.PUBACK, 20.0).packet_id == i + 1
            want[topic] = hashlib.sha256(payload(i)).hexdigest()
    return want


def digests(c):
    got = {}
    for nd in c.nodes:
        body = nd.admin_get("/state/digest", timeout=10.0)
        got[nd.id] = json.loads(body)["crc32c"] if body else None
    return got


def agree(c):
    d = digests(c)
    return None not in d.values() and len(set(d.values())) == 1


def test_replicas_apply_compressed_entries_alike(cluster):
    c = cluster
    lead = c.wait_leader()
    assert lead is not None, "no leader"
    follower = next(nd for nd in c.nodes if nd.id != lead)
    base = uid("lz4")
    want = publish_retained(follower, base, 0)
    want.update(publish_retained(c.node(lead), base, MESSAGES))

    assert wait_until(lambda: agree(c), timeout=20.0, msg="the digests agree"), digests(c)
    for nd in c.nodes:
        assert retained_on(nd, base, len(want)) == want, "node %d" % nd.id

    nd = c.node(lead)
    compressed = nd.metric("tern_raft_entries_compressed_total")
    held = nd.metric("tern_raft_entry_bytes_total", 'form="commands"')
    stored = nd.metric("tern_raft_entry_bytes_total", 'form="stored"')
    print("leader: %s entries compressed, %s bytes of commands stored in %s" % (
        compressed, held, stored))
    assert held >= 2 * MESSAGES * PAYLOAD
    # The follower's publishes went to the leader as compressed peer frames.
    sent = follower.metric("tern_peer_proposal_batches_compressed_total")
    if c.compression == "lz4":
        assert compressed >= 2 * MESSAGES
        assert stored * 3 < held
        assert sent >= MESSAGES
    else:
        assert compressed == 0
        assert stored >= held
        assert sent == 0

    # Every node replays its log, the compressed entries included, from disk.
    c.stop_all()
    c.start_all()
    assert c.wait_leader() is not None, "no leader after the restart"
    assert wait_until(lambda: agree(c), timeout=30.0, msg="the digests agree again"), \
        digests(c)
    for nd in c.nodes:
        assert retained_on(nd, base, len(want)) == want, "node %d after restart" % nd.id


PEER_PROPOSE_LZ4 = 4  # cluster/peer.h


def peer_frame(ftype, sender, payload):
    """[u32 length][u8 type][u32 from][payload], little-endian (cluster/peer.h)."""
    return struct.pack("<IBI", len(payload) + 5, ftype, sender) + payload


def test_malformed_compressed_proposals_are_dropped(tern_cluster):
    c = tern_cluster
    lead = c.wait_leader()
    assert lead is not None, "no leader"
    nd = c.node(lead)
    sender = next(n.id for n in c.nodes if n.id != lead)
    bad = [b"\x01\x02",                                        # no length
           struct.pack("<I", 0x7FFFFFFF) + b"\x00" * 64,        # beyond the bound
           struct.pack("<I", 1000) + bytes(range(256)) * 2]     # not an LZ4 block of 1000
    with socket.create_connection((nd.host, nd.peer_port), timeout=5.0) as s:
        for payload in bad:
            s.sendall(peer_frame(PEER_PROPOSE_LZ4, sender, payload))
        assert wait_until(
            lambda: nd.log().count("dropped a compressed proposal batch") >= len(bad),
            timeout=10.0, msg="the leader drops the three"), nd.log_tail()
    assert nd.alive()
    with mqttraw.RawClient(nd.host, nd.port, version=4, timeout=10.0) as r:
        assert r.connect(uid("after"), clean=True).reason == 0
        r.publish("after/bad", b"x", qos=1, packet_id=1)
        assert r.expect(mqttraw.PUBACK, 10.0).packet_id == 1
