"""Network faults against a cluster whose nodes live in their own network namespaces
(netns.py): what a node does while a peer is unreachable and after the network heals.
Needs root, `ip netns` and iptables; skipped with the reason otherwise."""
import os
import time

import pytest

import helpers
import netns

pytestmark = pytest.mark.skipif(helpers.IS_MOSQUITTO, reason="tern cluster only")

TOPIC = "tern-test/faults"


@pytest.fixture(name="ns_cluster")
def ns_cluster_fixture(request, tmp_path, monkeypatch):
    import cluster
    if not os.access(cluster.TERN_BIN, os.X_OK):
        pytest.skip("ternd not built at %s (set TERN_BIN)" % cluster.TERN_BIN)
    why = netns.netns_available()
    if why:
        pytest.skip(why)
    # Under AddressSanitizer, freed memory waits in a quarantine (256 MB) before reuse:
    # RSS would then follow what was ever allocated, not what is held.
    monkeypatch.setenv("ASAN_OPTIONS", os.environ.get("ASAN_OPTIONS", "detect_leaks=1") +
                       ":quarantine_size_mb=0:thread_local_quarantine_size_kb=0")
    c = netns.NetnsCluster(str(tmp_path), settings=getattr(request, "param", None))
    request.node._tern_brokers = c.nodes
    subs = []
    try:
        c.start_all()
        yield c, subs
    finally:
        for s in subs:
            s.close()
        errors = c.teardown()
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


def sanitized():
    """Whether ternd is built with AddressSanitizer (its allocator keeps more)."""
    import cluster
    with open(cluster.TERN_BIN, "rb") as f:
        return b"__asan_init" in f.read()


def persistent_subscribers(c, subs):
    """A persistent QoS 1 subscriber on every node, reading and acknowledging: each
    publish is then a log entry (a publish that reaches nobody durable needs none)."""
    for nd in c.nodes:
        subs.append(netns.Subscriber(nd, TOPIC))


def test_new_leader_memory_stays_bounded_while_the_old_one_is_unreachable(ns_cluster):
    """While the old leader is unreachable (its packets dropped: no FIN, no RST) the
    new leader's memory must not grow with the square of the time. libraft 0.15 sends
    the unreachable node a probe AppendEntries with every entry it lacks on each
    heartbeat; on a stream that never failed, every probe stayed queued (issue 11: 4 MB
    after 4 s, 221 MB after 44 s at 40 msg/s). Measured here, 40 msg/s for 20 s with
    a reading subscriber on every node, the new leader's RSS grew by 170 MB (ASan
    build: 252 MB), quadratically, before the links had a user timeout; 30 MB (ASan:
    114 MB), linearly, after. What is left is the probes libraft queues between two
    connection attempts; it grows with the entries the node lacks (12 MB with
    raft_glue.c setting libraft's connect retry delay to 100 ms, docs/reliability.md).
    """
    c, subs = ns_cluster
    persistent_subscribers(c, subs)
    old = c.wait_leader(10)
    assert old, "no leader"
    pub_node = next(i for i in (1, 2, 3) if i != old)
    pub = netns.Publisher(c.node(pub_node), 40, topic=TOPIC)
    try:
        assert netns.wait_for(lambda: len(pub.acks) >= 40, 10), "no publish acknowledged"
        c.isolate(old)
        new = c.wait_leader(10, exclude=(old,))
        assert new, "no new leader within 10 s"
        base = c.rss_kib(new)
        t0, peak, samples = time.monotonic(), base, []
        while time.monotonic() - t0 < 20:
            time.sleep(1)
            rss = c.rss_kib(new)
            samples.append(rss)
            peak = max(peak, rss)
        acked = pub.acks_since(t0)
    finally:
        pub.stop()
    growth_mb = (peak - base) / 1024
    print("new leader %d RSS %d KiB, then per second while node %d was cut: %s" % (
        new, base, old, samples))
    assert acked >= 400, "the majority stopped acknowledging: %d in 20 s" % acked
    bound_mb = 180 if sanitized() else 80
    assert growth_mb < bound_mb, "the new leader's RSS grew by %.1f MB in 20 s (samples %s)" % (
        growth_mb, samples)


def test_a_follower_cut_off_is_back_within_2_s_of_the_heal(ns_cluster):
    """After a partition heals, a node must be back in the cluster at once, not when
    the TCP streams that stalled during the partition next retransmit: by then their
    retransmission timeout has backed off to seconds (issue 11: a follower stayed a
    candidate for 10-13 s after a heal). Measured with a follower cut for 20 s: it was
    a follower again, with every entry committed before the heal applied, 6.5 s after
    the heal before the links had a user timeout, 0.3 s after."""
    c, subs = ns_cluster
    persistent_subscribers(c, subs)
    lead = c.wait_leader(10)
    assert lead, "no leader"
    cut = next(i for i in (1, 2, 3) if i != lead)
    pub = netns.Publisher(c.node(lead), 20, topic=TOPIC)
    try:
        assert netns.wait_for(lambda: len(pub.acks) >= 20, 10), "no publish acknowledged"
        c.isolate(cut)
        time.sleep(20)
        target = c.node(lead).metric("tern_raft_last_index")
        assert target, "no log index from the leader"
        c.heal()
        healed = time.monotonic()
        node = c.node(cut)
        back = netns.wait_for(
            lambda: (node.metric("tern_raft_applied_index") or 0) >= target and
            node.metric("tern_raft_state", 'state="follower"') == 1, 15, 0.05)
        took = time.monotonic() - healed
    finally:
        pub.stop()
    print("node %d back %.2f s after the heal" % (cut, took))
    assert back and took < 2.0, (
        "node %d not a caught-up follower within 2 s of the heal (%s after %.1f s)" % (
            cut, "back" if back else "still not back", took))


def _links_between(c, a, b):
    """The established TCP connections between node a and node b, seen in a's
    namespace: {(local "addr:port", peer "addr:port")}."""
    out = netns._run("ip", "netns", "exec", c.ns(a), "ss", "-tnH", "state",
                     "established").stdout
    links = set()
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 4 and f[-1].rsplit(":", 1)[0] == c.addr(b):
            links.add((f[-2], f[-1]))
    return links


def test_idle_links_between_followers_outlast_a_lossy_spell(ns_cluster):
    """Two followers' links to each other carry nothing while they have a leader
    (libraft talks leader to follower only; the spare Raft connection and the peer
    links wait), so only keep-alive probes cross them. They must outlast a lossy
    spell: when the leader is then lost, the election's messages go over them. With a
    2 s user timeout, the kernel aborted such a link as soon as one probe (sent each
    second) or its answer was lost, and the next vote request found a dead connection
    and waited for a new one across the loss (issue 11, kill -9 under loss: the
    survivors' link to each other was reset 0.1-0.2 s into the election in 2 of 3
    runs traced, the idle links having died during the loss before the kill).
    Measured here, 20% loss for 10 s: with the 2 s user timeout every link between
    the followers was gone (2 of 2 runs); with 10 s, none (2 of 2)."""
    c, _ = ns_cluster
    lead = c.wait_leader(10)
    assert lead, "no leader"
    a, b = [i for i in (1, 2, 3) if i != lead]
    assert netns.wait_for(lambda: len(_links_between(c, a, b)) >= 2, 10), (
        "expected the spare Raft connection and the peer links between nodes %d and %d, "
        "got %r" % (a, b, _links_between(c, a, b)))
    before = _links_between(c, a, b)
    c.loss(0.2)
    try:
        time.sleep(10)
    finally:
        c.heal()
    after = _links_between(c, a, b)
    lost = before - after
    print("links between followers %d and %d: %d before, %d of them gone" % (
        a, b, len(before), len(lost)))
    assert not lost, ("idle links between followers %d and %d aborted during 10 s of 20%% "
                      "loss: %r (of %r)" % (a, b, sorted(lost), sorted(before)))


def test_a_leaders_stream_that_waits_on_retransmissions_is_kept(ns_cluster):
    """A Raft stream whose data is in flight and not acknowledged for a while is TCP's
    to retransmit (and the 10 s user timeout's to give up on). The transport's pump
    closed any stream with nothing acknowledged for 2 s; on a lossy path that happened
    with the peer alive (a segment lost three or four times over), and the new
    connection had to be made across the same loss (issue 11: the only follower's
    stream after a kill under loss, then a second election). The pump's own rule is
    for a peer that stopped reading, whose window is closed. Here the leader's packets
    to one follower's Raft port are dropped for 3 s: before, the pump closed that
    stream at 2 s ("no progress for"); it must stay, and carry on after."""
    c, _ = ns_cluster
    lead = c.wait_leader(10)
    assert lead, "no leader"
    f = next(i for i in (1, 2, 3) if i != lead)
    raft = "%s:7001" % c.addr(f)
    before = {l for l in _links_between(c, lead, f) if l[1] == raft}
    assert before, "no Raft stream from node %d to node %d" % (lead, f)
    c._iptables(lead, "OUTPUT", "-o", "eth0", "-d", c.addr(f), "-p", "tcp", "--dport",
                "7001", "-j", "DROP")
    try:
        time.sleep(3)
    finally:
        c.heal()
    after = {l for l in _links_between(c, lead, f) if l[1] == raft}
    closed = [ln for ln in c.node(lead).log().splitlines()
              if "link to node %d" % f in ln and "closed" in ln]
    print("leader %d's Raft stream to node %d: %r before, %r after; closes logged: %r" % (
        lead, f, sorted(before), sorted(after), closed))
    assert before <= after and not closed, (
        "the leader gave up its stream to node %d after 3 s of retransmissions: %r" % (
            f, closed))

def test_a_leader_keeps_its_term_while_its_followers_results_wait(ns_cluster):
    """On a lossy network a follower's stream of AppendEntries results to its leader
    stalls now and then for a second or more (one segment retransmitted again and
    again) while the leader's own stream to it goes on being acknowledged. The
    leader's check-quorum (2 election timeouts here, cluster/raft_timing.h) counted
    only Raft messages received, so it stepped down under a follower that was there,
    and the cluster went without a leader for another election (issue 11, kill -9
    under loss: a second election 1-3 s after the first). Here both followers' packets
    to the leader's Raft port are dropped for 3 s, the leader's to them are not:
    before, the leader had stepped down by the end in 4 of 4 runs (after 1.5 s it
    still led in 1 of 1); it must keep its term and its leadership."""
    c, _ = ns_cluster
    lead = c.wait_leader(10)
    assert lead, "no leader"
    node = c.node(lead)
    term = node.metric("tern_raft_term")
    assert term, "no term from the leader"
    for i in (1, 2, 3):
        if i != lead:
            c._iptables(i, "OUTPUT", "-o", "eth0", "-d", c.addr(lead), "-p", "tcp",
                        "--dport", "7001", "-j", "DROP")
    try:
        time.sleep(3)
        during = (node.metric("tern_raft_term"),
                  node.metric("tern_raft_state", 'state="leader"'))
    finally:
        c.heal()
    heard = node.metric("tern_raft_followers_heard_by_ack_total")
    print("leader %d, term %s; after 3 s of its followers' results dropped: term %s, "
          "leader %s; followers heard by their acknowledgements: %s" % (
              lead, term, during[0], during[1], heard))
    assert during == (term, 1), (
        "node %d lost its leadership (term %s -> %s, leader %s) while its followers' "
        "results were held back and its own stream to them went on" % (
            lead, term, during[0], during[1]))


def test_a_leader_and_its_only_follower_outlast_a_stalled_stream(ns_cluster):
    """Kill -9 under loss left two nodes, and a new leader's one Raft stream to its
    only follower stalled for 2-3 s now and then (one segment retransmitted again and
    again at a 0.6-1 s timeout): the follower's election timer ran out, the leader's
    quorum check failed, and a second election took the cluster 1.5-3 s more (issue
    11; traced with LIBRAFT_TRACE). Here the third node is stopped and the leader's
    TCP to the follower's Raft port is dropped for 3 s: before, the follower had left
    its leader or the leader its term by the end; both must hold (the leader's
    beacons, cluster/raft_beacon.h, say it is alive by datagrams that no stream holds
    up), and the stream carries on after."""
    import signal
    c, _ = ns_cluster
    lead = c.wait_leader(10)
    assert lead, "no leader"
    f, g = [i for i in (1, 2, 3) if i != lead]
    term = c.node(lead).metric("tern_raft_term")
    assert term, "no term from the leader"
    c.node(g).proc.send_signal(signal.SIGSTOP)
    try:
        c._iptables(lead, "OUTPUT", "-o", "eth0", "-d", c.addr(f), "-p", "tcp", "--dport",
                    "7001", "-j", "DROP")
        time.sleep(3)
        during = {i: (c.node(i).metric("tern_raft_term"), c.node(i).metric("tern_raft_leader"))
                  for i in (lead, f)}
    finally:
        c.heal()
        c.node(g).proc.send_signal(signal.SIGCONT)
    kept = c.node(f).metric("tern_raft_beacons_kept_total")
    print("leader %d, term %s, node %d stopped; after 3 s of the leader's stream to node "
          "%d dropped: %r; timers kept by beacons: %s" % (lead, term, g, f, during, kept))
    assert during == {lead: (term, lead), f: (term, lead)}, (
        "leader %d and its follower %d parted (term, leader per node: %r; term was %s) "
        "while only the leader's stream to the follower was held back" % (
            lead, f, during, term))


def _busiest_raft_stream(c, a, b):
    """The local port of node a's established TCP connection to node b's Raft port
    that has carried the most (its Raft stream; the others are spares), or None."""
    out = netns._run("ip", "netns", "exec", c.ns(a), "ss", "-tniH", "state", "established",
                     "dst", "%s:7001" % c.addr(b)).stdout
    best, port = -1, None
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):
            f = line.split()
            local = f[-2] if len(f) >= 4 else ""
            continue
        acked = [int(w.split(":")[1]) for w in line.split() if w.startswith("bytes_acked:")]
        if acked and acked[0] > best and ":" in local:
            best, port = acked[0], local.rsplit(":", 1)[1]
    return port


def test_commits_go_on_while_the_one_stream_to_the_only_follower_stalls(ns_cluster):
    """With one follower left (kill -9 under loss), every commit is a round trip on the
    leader's one Raft stream to it, and that stream stalled for 1-3 s now and then
    (its head segment lost again and again, a retransmission timer of 0.6-1 s): every
    publish on the cluster waited for it, though the follower, the path and a spare
    connection to the same port were all there (issue 11). Here the third node is
    stopped and only that one stream's packets are lost, for 3 s, with publishes
    going on: acknowledgements must go on during the stall, not after it."""
    import signal
    c, subs = ns_cluster
    lead = c.wait_leader(10)
    assert lead, "no leader"
    f, g = [i for i in (1, 2, 3) if i != lead]
    subs.extend(netns.Subscriber(c.node(i), TOPIC) for i in (lead, f))
    pub = netns.Publisher(c.node(lead), 20, topic=TOPIC)
    try:
        assert netns.wait_for(lambda: len(pub.acks) >= 20, 10), "no publish acknowledged"
        c.node(g).proc.send_signal(signal.SIGSTOP)
        port = _busiest_raft_stream(c, lead, f)
        assert port, "no Raft stream from node %d to node %d" % (lead, f)
        # Dropped on the follower's side, as a lossy path does: the leader's kernel
        # counts them in flight and retransmits (dropped on its own way out, they
        # would not count as sent at all).
        c._iptables(f, "INPUT", "-i", "eth0", "-s", c.addr(lead), "-p", "tcp", "--sport",
                    port, "--dport", "7001", "-j", "DROP")
        t0 = time.monotonic()
        time.sleep(3)
        during = pub.acks_since(t0 + 1.5)
        times = [t0] + [a for a in pub.acks if a >= t0] + [time.monotonic()]
        gap = max(b - a for a, b in zip(times, times[1:]))
    finally:
        c.heal()
        c.node(g).proc.send_signal(signal.SIGCONT)
        pub.stop()
    moved = c.node(lead).metric("tern_raft_streams_moved_total")
    print("leader %d's stream to node %d (port %s) dropped 3 s: %d publishes acknowledged "
          "in its last 1.5 s, longest wait %.2f s; streams moved: %s" % (
              lead, f, port, during, gap, moved))
    assert during >= 10, (
        "publishes waited on one stalled stream: %d acknowledged in the last 1.5 s of the "
        "3 s that the leader's stream to node %d (port %s) was dropped" % (during, f, port))


def test_a_beacon_is_taken_only_from_its_senders_raft_address(ns_cluster):
    """Beacons restart a follower's election timer, so one that names the leader but
    comes from anywhere else (here the clients' side of the bridge) must be refused,
    as must a datagram that is not a beacon; the follower keeps its leader through it
    and counts each in tern_raft_beacons_refused_total."""
    import socket
    import struct
    c, _ = ns_cluster
    lead = c.wait_leader(10)
    assert lead, "no leader"
    f = next(i for i in (1, 2, 3) if i != lead)
    nd = c.node(f)
    term = int(nd.metric("tern_raft_term"))
    refused = nd.metric("tern_raft_beacons_refused_total")
    forged = b"TBCN" + struct.pack("<B3xQQQ", 1, term, lead, f)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for payload in (forged, b"junk", forged + b"x", b"\0" * 32):
            s.sendto(payload, (c.addr(f), 7001))
    deadline = time.time() + 5
    after = refused
    while time.time() < deadline and (after or 0) < (refused or 0) + 4:
        time.sleep(0.1)
        after = nd.metric("tern_raft_beacons_refused_total")
    print("node %d refused %s -> %s; leader %s" % (f, refused, after,
                                                   nd.metric("tern_raft_leader")))
    assert refused is not None and after >= refused + 4, (
        "node %d took a forged or malformed beacon (refused %s -> %s)" % (f, refused, after))
    assert nd.metric("tern_raft_leader") == lead


def test_a_reset_from_a_leader_whose_beacons_go_on_is_not_its_death(ns_cluster):
    """A follower takes a reset of its stream to the leader as the leader's process
    gone and elects at once (a killed process's kernel resets its connections). Under
    30% loss a live leader's node reset such a stream now and then (the fault suite,
    loss+delay: 2 of ~60 runs), and the follower then had no leader for 1.7 s, left
    its leader's AppendEntries unread and sent its clients away (0x88). A leader whose
    beacons still arrive is alive: here the leader's node resets what this follower
    sends to its Raft port for 0.3 s, beacons (UDP) untouched; the follower must keep
    its leader throughout and not log the leader gone."""
    c, _ = ns_cluster
    lead = c.wait_leader(10)
    assert lead, "no leader"
    f = next(i for i in (1, 2, 3) if i != lead)
    nd = c.node(f)
    assert netns.wait_for(lambda: nd.metric("tern_raft_leader") == lead, 10)
    before = len(nd.log(current_run=True))
    c._iptables(lead, "INPUT", "-i", "eth0", "-p", "tcp", "-s", c.addr(f), "--dport",
                "7001", "-j", "REJECT", "--reject-with", "tcp-reset")
    leaders = []
    try:
        end = time.time() + 0.3
        while time.time() < end:
            leaders.append(nd.metric("tern_raft_leader"))
            time.sleep(0.02)
    finally:
        c.heal()
    end = time.time() + 2.0
    while time.time() < end:
        leaders.append(nd.metric("tern_raft_leader"))
        time.sleep(0.02)
    log = nd.log(current_run=True)[before:]
    resets = log.count("connection reset by peer")
    print("node %d: %d resets logged; leader samples %s" % (f, resets, sorted(set(
        str(x) for x in leaders))))
    assert resets, "the rule reset nothing (node %d's log):\n%s" % (f, log[-2000:])
    assert "process gone" not in log, (
        "node %d took a reset from live leader %d for its death:\n%s" % (f, lead, log))
    assert all(x == lead for x in leaders), (
        "node %d lost its leader %d after a reset: %s" % (f, lead, leaders))
