"""Raft snapshots in a three-node cluster (raft_snapshot_threshold 16, trailing 4: a
snapshot every 16 entries, 4 kept behind it).

1. A follower that was down while the others compacted their logs past its last entry
   catches up by installing a snapshot: its raft/ directory then holds a snapshot-*
   file, and persistent sessions (with their queues) and retained messages are all
   there when read through it.
2. A node whose own log was compacted (snapshot + trailing entries on disk) is
   killed -9 and restarted: it rebuilds everything from its own files.

Every wait is bounded; each test gets a fresh cluster (cluster.py).
"""
import os
import re
import signal
import time
import urllib.request

import pytest

import mqttraw
from cluster import tern_cluster_fixture  # noqa: F401  (the tern_cluster fixture)
from helpers import IS_MOSQUITTO, V311, V5, connect_props, uid, wait_until

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="tern cluster only")

THRESHOLD = 16
TRAILING = 4
SNAPSHOTS = pytest.mark.parametrize(
    "tern_cluster", [{"raft_snapshot_threshold": THRESHOLD,
                      "raft_snapshot_trailing": TRAILING}], indirect=True)

SESSION_EXPIRY = 3600
VERSIONS = (V5, V311, V5, V311)
# libraft's uv backend: snapshot-TERM-INDEX-TIMESTAMP (+ .meta), closed segments
# FIRST-LAST (16 digits each).
SNAPSHOT_RE = re.compile(r"^snapshot-(\d+)-(\d+)-(\d+)$")
SEGMENT_RE = re.compile(r"^(\d{16})-(\d{16})$")


def raft_files(node):
    try:
        return sorted(os.listdir(os.path.join(node.data_dir, "raft")))
    except OSError:
        return []


def snapshot_indexes(node):
    """Indexes of the snapshots in the node's raft/ directory."""
    return [int(m.group(2)) for m in map(SNAPSHOT_RE.match, raft_files(node)) if m]


def first_segment_index(node):
    """First index held by the node's closed segments (None: none closed)."""
    firsts = [int(m.group(1)) for m in map(SEGMENT_RE.match, raft_files(node)) if m]
    return min(firsts) if firsts else None


def persistent(version):
    if version == V5:
        return {"clean": False,
                "connect_properties": connect_props(SessionExpiryInterval=SESSION_EXPIRY)}
    return {"clean": False}


class World:
    """Persistent sessions subscribed QoS 1 to their own topic, and retained topics,
    all under one base; remembers what each session must receive."""

    def __init__(self, c, n_sessions=len(VERSIONS)):
        self.c = c
        self.base = "snap/" + uid()
        self.sessions = [(uid("sn"), VERSIONS[i % len(VERSIONS)])
                         for i in range(n_sessions)]
        self.owed = {cid: [] for cid, _ in self.sessions}
        self.retained = {}
        self.seq = 0

    def topic(self, cid):
        return "%s/s/%s" % (self.base, cid)

    def create_sessions(self, node):
        for cid, version in self.sessions:
            s = self.c.client(node, cid, version, **persistent(version))
            assert s.subscribe(self.topic(cid), 1) == [1]
            s.disconnect()

    def publish(self, node, per_session, retained):
        """QoS 1 publishes, one at a time (each its own Raft entry at least): to every
        session's topic, and `retained` retained topics (new or overwritten)."""
        pub = self.c.client(node, version=V311)
        for _ in range(per_session):
            for cid, _ in self.sessions:
                self.seq += 1
                payload = b"%d" % self.seq
                pub.publish(self.topic(cid), payload, 1)
                self.owed[cid].append(payload)
        for i in range(retained):
            self.seq += 1
            topic = "%s/r/%d" % (self.base, i % 40)
            payload = b"ret-%d" % self.seq
            pub.publish(topic, payload, 1, retain=True)
            self.retained[topic] = payload
        pub.disconnect()

    def resume_all(self, node):
        """Every session resumes on `node`: session present, then exactly what it is
        owed, in order. Disconnects normally (the sessions stay)."""
        problems = []
        for cid, version in self.sessions:
            s = self.c.client(node, cid, version, connect=False, **persistent(version))
            present, _, _ = s.connect(timeout=10.0)
            want = self.owed[cid]
            got = [m.payload for m in s.collect(len(want), 15.0)] + \
                [m.payload for m in s.drain(0.5)]
            s.disconnect()
            if not present:
                problems.append("%s (v%d): no session present on node %d" % (
                    cid, version, node))
            if got != want:
                problems.append("%s (v%d) on node %d: got %d messages, want %d; first "
                                "differences: %r" % (
                                    cid, version, node, len(got), len(want),
                                    [(g, w) for g, w in zip(got, want) if g != w][:5]))
            self.owed[cid] = []
        assert not problems, "\n".join(problems)

    def check_retained(self, node):
        s = self.c.client(node, version=V5)
        assert s.subscribe(self.base + "/r/#", 1) == [1]
        msgs = s.collect(len(self.retained), 10.0) + s.drain(0.5)
        s.disconnect()
        got = {m.topic: m.payload for m in msgs}
        assert got == self.retained, "retained on node %d: %d of %d, missing %r, wrong %r" % (
            node, len(got), len(self.retained),
            sorted(set(self.retained) - set(got))[:5],
            [t for t in got if t in self.retained and got[t] != self.retained[t]][:5])
        assert all(m.retain for m in msgs), "retained delivered without RETAIN"


def last_index(node):
    v = node.metric("tern_raft_last_index")
    return None if v is None else int(v)


@SNAPSHOTS
def test_follower_catches_up_from_snapshot(tern_cluster):
    """Node 3 is stopped; ~220 entries go through node 1 (several snapshots on nodes 1
    and 2, their logs compacted past node 3's last entry); node 3 comes back, installs
    a snapshot, and serves every session's queue and every retained message."""
    c = tern_cluster
    n3 = c.node(3)
    stopped_at = last_index(n3)
    c.kill(3, signal.SIGTERM)
    if stopped_at is None:  # no admin API: the log of node 3 was short anyway
        stopped_at = 64
    c.wait_ready()
    w = World(c)
    w.create_sessions(1)
    w.publish(1, per_session=40, retained=50)

    # Nodes 1 and 2 compacted: the entries after node 3's last one are gone from their
    # logs (a snapshot at S keeps only S - TRAILING + 1 ...), so node 3 needs a snapshot.
    for n in (1, 2):
        snaps = snapshot_indexes(c.node(n))
        assert snaps, "node %d took no snapshot: raft/ holds %r" % (n, raft_files(c.node(n)))
        assert max(snaps) - TRAILING > stopped_at + 1, (
            "node %d: last snapshot at %d does not cover node 3's gap (stopped at %d)" % (
                n, max(snaps), stopped_at))
    assert not snapshot_indexes(n3) or max(snapshot_indexes(n3)) <= stopped_at

    c.start(3)
    wait_until(lambda: any(i > stopped_at + 1 for i in snapshot_indexes(n3)), 20.0,
               msg="node 3 has a snapshot past its old log (raft/: %r)" % raft_files(n3))
    c.wait_ready()
    w.check_retained(3)
    w.resume_all(3)

    # Node 3 goes on applying after the snapshot: more through node 2, read on node 3.
    w.publish(2, per_session=5, retained=5)
    w.resume_all(3)
    w.check_retained(3)


@SNAPSHOTS
@pytest.mark.parametrize("victim", [1, 3])
def test_restart_with_compacted_log_keeps_everything(tern_cluster, victim):
    """Enough entries that every node's own log is compacted (snapshot + trailing
    entries on disk, the first segments deleted); the victim is killed -9 and restarted
    and then serves everything from its own files: sessions with queues, retained."""
    c = tern_cluster
    w = World(c)
    w.create_sessions(2)
    w.publish(2, per_session=30, retained=60)
    node = c.node(victim)
    wait_until(lambda: snapshot_indexes(node), 10.0,
               msg="node %d has a snapshot (raft/: %r)" % (victim, raft_files(node)))
    first = first_segment_index(node)
    assert first is None or first > 1, (
        "node %d log not compacted: raft/ holds %r" % (victim, raft_files(node)))

    c.kill(victim, signal.SIGKILL)
    c.start(victim)
    c.wait_ready()
    w.check_retained(victim)
    w.resume_all(victim)

    # and after a graceful restart of the whole cluster, from every node's own disk
    w.publish(1, per_session=3, retained=3)
    c.stop_all(signal.SIGTERM)
    c.start_all()
    w.check_retained(1)
    w.check_retained(2)
    w.check_retained(3)
    w.resume_all(victim)


def _retain(node, topics, payload):
    """QoS 1 retained PUBLISHes on node (each one a log entry), all acknowledged."""
    with mqttraw.RawClient(node.host, node.port, version=4, timeout=5.0) as m:
        assert m.connect(uid("ret"), clean=True).reason == 0
        for i, t in enumerate(topics):
            m.publish(t, payload, qos=1, packet_id=i % 60000 + 1, retain=True)
            assert m.expect(mqttraw.PUBACK, 5.0).packet_id == i % 60000 + 1


def _snapshot_now(node):
    req = urllib.request.Request("http://127.0.0.1:%d/snapshot" % node.admin_port,
                                 data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        r.read()


@pytest.mark.parametrize("tern_cluster", [{"raft_snapshot_trailing": 16,
                                           "raft_segment_bytes": 1 << 20}], indirect=True)
def test_leader_restarted_after_its_snapshot_catches_up(tern_cluster):
    """The fault suite's rare crash (kill-9-at-load, issue 11): a leader takes a
    snapshot that compacts entry 1 out of its log (here forced, the others have
    none), is killed -9, and a new leader is elected while it is down. The new
    leader's sends to it fail before it ever answered, so libraft 0.15 probes it
    from index 1 (next = match + 1) with the whole log. Started again, it must catch
    up and serve what was written meanwhile (libraft alone: "No log entries found at
    index 1", the node unavailable for good, or a SIGSEGV)."""
    c = tern_cluster
    c.wait_ready()
    lead = c.wait_leader()
    assert lead, "no leader"
    x = c.node(lead)
    other = c.node(lead % 3 + 1)
    # > 1 MiB of entries, so that the first segment is deleted by the snapshot
    # (random: entries of a large batch are stored compressed)
    _retain(other, ["snap/%d" % i for i in range(200)], os.urandom(8000))
    _snapshot_now(x)
    wait_until(lambda: snapshot_indexes(x) and (first_segment_index(x) or 0) > 1, 10.0,
               msg="node %d compacted entry 1 away (raft/: %r)" % (lead, raft_files(x)))
    c.kill(lead, signal.SIGKILL)
    new = c.wait_leader(exclude=(lead,))
    assert new, "no new leader without node %d" % lead
    _retain(c.node(new), ["after/%d" % i for i in range(20)], b"y" * 100)
    time.sleep(1.5)  # the new leader's sends to the dead node fail meanwhile
    c.start(lead)
    wait_until(lambda: "proposals continue at" in x.log(current_run=True) or not x.alive(),
               15.0, msg="node %d caught up after its restart:\n%s" % (lead, x.log_tail()))
    assert x.alive(), "node %d died after its restart:\n%s" % (lead, x.log_tail())
    assert "proposals continue at" in x.log(current_run=True), x.log_tail()
    # what was written while it was down reads back through it
    with mqttraw.RawClient(x.host, x.port, version=4, timeout=5.0) as m:
        assert m.connect(uid("rd"), clean=True).reason == 0
        m.subscribe(1, [("after/19", 1)])
        got = m.expect(mqttraw.PUBLISH, 5.0)
        assert got.payload == b"y" * 100
