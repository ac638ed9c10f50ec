"""A new leader's memory while the old leader is dead and its address drops SYNs.

What kill-9-under-loss showed (docs/reliability.md, "Branch rss"): libraft 0.15 queues
every message to a peer while a connection attempt to it is in progress, and trims
that queue to 3 only when the attempt fails. A new leader knows nothing of the dead
node's log (match index 0), so after the first failed send every heartbeat's
AppendEntries to it holds the whole log (16 + 40 bytes of libraft's memory per
entry), and an attempt that waits for a SYN-ACK (loss, a dead host, a full backlog)
queues one per heartbeat for the attempt's 500 ms.

Here on loopback, without root: a three-node cluster, a log of ENTRIES entries, the
leader killed, its Raft port taken by a listener whose backlog is full (the kernel
then drops the SYNs), and the new leader's RSS followed for WATCH_S. Needs a build
without a sanitizer (ASan's quarantine keeps freed memory): TERN_BIN=build/ternd.

    TERN_BIN=build/ternd python3 -m pytest -q tests/fault/test_dead_peer.py
"""
import os
import signal
import socket
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import mqttraw  # noqa: E402
from cluster import TERN_BIN, tern_cluster_fixture  # noqa: E402,F401

ENTRIES = 20000  # one retained QoS 1 PUBLISH at a time: one entry each
WATCH_S = 4.0
# The whole log's queued copies, before: ~33 per 500 ms attempt x 56 B x ENTRIES
# = 37 MB. One held copy is 1.1 MB; the rest is the new leader's own work.
GROWTH_MAX_MB = 16.0


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def sanitized(path):
    with open(path, "rb") as f:
        return b"__asan_init" in f.read()


@pytest.mark.skipif(not os.access(TERN_BIN, os.X_OK) or sanitized(TERN_BIN),
                    reason="needs a ternd built without a sanitizer (TERN_BIN)")
@pytest.mark.parametrize("tern_cluster", [{"raft_snapshot_threshold": 1000000,
                                           "raft_snapshot_bytes": 1 << 40}], indirect=True)
def test_new_leader_memory_with_dead_unreachable_peer(tern_cluster):
    c = tern_cluster
    c.wait_ready()
    lead = c.wait_leader()
    assert lead is not None
    nd = c.node(lead)
    cl = mqttraw.RawClient(nd.host, nd.port, timeout=10.0)
    cl.connect("fill", clean=True)
    deadline = time.monotonic() + 120.0
    for i in range(ENTRIES):
        assert time.monotonic() < deadline, "log not filled in 120 s (%d entries)" % i
        cl.publish("fill/x", b"x" * 64, qos=1, packet_id=i % 65535 + 1, retain=True)
        cl.expect(mqttraw.PUBACK)
    cl.close()

    holes = []
    try:
        c.kill(lead, signal.SIGKILL)
        # Its Raft port: listening, never accepting, the accept queue full.
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", nd.raft_port))
        ls.listen(0)
        holes.append(ls)
        for _ in range(3):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", nd.raft_port))
            holes.append(s)
        new = c.wait_leader(timeout=10.0, exclude=(lead,))
        assert new is not None, "no new leader within 10 s"
        pid = c.node(new).proc.pid
        start = rss_mb(pid)
        peak, t_end = start, time.monotonic() + WATCH_S
        while time.monotonic() < t_end:
            peak = max(peak, rss_mb(pid))
            time.sleep(0.02)
        print("new leader node %d: RSS %.0f -> peak %.0f MB (+%.0f) over %.0f s, %d entries"
              % (new, start, peak, peak - start, WATCH_S, ENTRIES))
        assert peak - start <= GROWTH_MAX_MB, (
            "new leader's RSS grew %.0f MB (%.0f -> %.0f) with a dead peer that drops "
            "SYNs, bound %.0f MB" % (peak - start, start, peak, GROWTH_MAX_MB))
    finally:
        for s in holes:
            s.close()
