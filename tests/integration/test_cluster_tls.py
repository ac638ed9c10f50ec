"""Mutual TLS between nodes (cluster_tls, docs/security.md): a three-node cluster whose
Raft transport and peer links are TLS with a certificate per node (CN "node-N") from a
cluster CA made by deploy/node-certs.sh. Replication across a failover; a node with a
certificate of another CA, or of the cluster CA but naming another node, is refused by
the others (and logs why); plain TCP to the TLS ports changes nothing; openssl s_client
sees that a client certificate is required; SIGHUP reads the certificate again.
"""
import json
import os
import signal
import socket
import struct
import subprocess
import time

import pytest

import helpers
from cluster import TERN_BIN, Cluster, make_node_certs, run_cluster
from helpers import IS_MOSQUITTO, V5, connect_props, uid, wait_until

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="tern cluster only")

make_certs = make_node_certs


def tls_settings(pki, node_id, cert_id=None):
    cid = node_id if cert_id is None else cert_id
    return {"cluster_tls": {"cert_file": os.path.join(pki, "node-%d.pem" % cid),
                            "key_file": os.path.join(pki, "node-%d.key" % cid),
                            "ca_file": os.path.join(pki, "ca.pem")}}


def configure(c, pki, node_id, cert_id=None, ca_dir=None):
    """Node node_id's config with cluster_tls: its own certificate from pki, or another
    one (cert_id, ca_dir)."""
    members = [nd.member() for nd in c.nodes]
    s = tls_settings(ca_dir or pki, node_id, cert_id)
    c.node(node_id).write_config(members, s)


@pytest.fixture(name="tls_cluster")
def tls_cluster_fixture(request, tmp_path):
    if not os.access(TERN_BIN, os.X_OK):
        pytest.skip("ternd not built at %s (set TERN_BIN)" % TERN_BIN)
    pki = make_certs(str(tmp_path / "pki"), [1, 2, 3])
    c = Cluster(str(tmp_path))
    c.pki = pki
    for nd in c.nodes:
        configure(c, pki, nd.id)
    yield from run_cluster(request, c)


def publish_acked(c, n, topic, payload, timeout=10.0):
    p = c.client(n, version=helpers.V311)
    info = p.publish(topic, payload, 1, wait=False)
    info.wait_for_publish(timeout)
    assert info.is_published(), "publish through node %d not acknowledged" % n
    p.disconnect()


def raft_term(nd):
    v = nd.leader_view()
    return v[1] if v else None


# --- replication over TLS ------------------------------------------------------------


def test_persistent_session_across_failover(tls_cluster):
    """A persistent QoS 1 session on a follower, 30 messages through the leader, the
    leader killed -9, 30 more through the other follower: the session resumes on that
    node with all 60 in order. Every node logged mutual TLS."""
    c = tls_cluster
    for nd in c.nodes:
        assert "mutual TLS between nodes" in nd.log(), nd.log_tail()
    lead = c.wait_leader(10.0)
    assert lead is not None
    a, b = [n for n in (1, 2, 3) if n != lead]
    topic = "tls/" + uid()
    cid = uid("tls")
    props = connect_props(SessionExpiryInterval=3600)
    s = c.client(a, cid, V5, clean=False, connect_properties=props)
    assert s.subscribe(topic, 1) == [1]
    s.disconnect()
    pub = c.client(lead, version=helpers.V311)
    infos = [pub.publish(topic, b"%d" % i, 1, wait=False) for i in range(30)]
    for info in infos:
        info.wait_for_publish(10.0)
        assert info.is_published()
    pub.close()
    c.kill(lead, signal.SIGKILL)
    assert c.wait_leader(15.0, exclude=(lead,)) is not None, "no new leader"
    pub2 = c.client(b, version=helpers.V311)
    infos = [pub2.publish(topic, b"%d" % i, 1, wait=False) for i in range(30, 60)]
    for info in infos:
        info.wait_for_publish(15.0)
        assert info.is_published()
    s2 = c.client(b, cid, V5, clean=False, connect=False, connect_properties=props)
    present, _, _ = s2.connect()
    assert present, "no session present on node %d" % b
    msgs = s2.collect(60, 15.0) + s2.drain(0.7)
    assert [int(m.payload) for m in msgs] == list(range(60))
    c.start(lead)  # teardown wants every node running
    c.wait_ready()


# --- who may join ----------------------------------------------------------------------


def rogue_node3(c, tmp_path, **kw):
    """Node 3 stopped, its data wiped, restarted with another certificate: returns the
    log offset of its new run."""
    nd = c.node(3)
    c.kill(3, signal.SIGTERM)
    subprocess.run(["rm", "-rf", nd.data_dir], check=True)
    os.makedirs(nd.data_dir)
    configure(c, c.pki, 3, **kw)
    marks = {n: len(c.node(n).log()) for n in (1, 2)}
    nd.start()
    return marks


def assert_kept_out(c, marks, retained_topic):
    """Node 3 never learns the cluster's state: no leader in its log, the retained
    message does not reach it; nodes 1 and 2 go on committing."""
    nd = c.node(3)
    time.sleep(3.0)  # a few election timeouts and reconnects
    assert nd.alive(), nd.log_tail()
    view = nd.leader_view()
    assert view is None or view[0] == 0, "node 3 learnt a leader: %s" % nd.log_tail()
    publish_acked(c, 1, "tls/after/" + uid(), b"x")
    snap = nd.admin_get("/cluster")
    if snap is not None:
        assert retained_topic not in snap
    return {n: c.node(n).log()[marks[n]:] for n in (1, 2)}


def test_certificate_of_another_ca_cannot_join(tls_cluster, tmp_path):
    """Node 3 restarted (empty data) with a certificate "node-3" from another CA: nodes
    1 and 2 refuse its connections (logged: the certificate check), node 3's own log says
    why its connections fail, it never learns a leader, and 1 and 2 keep committing."""
    c = tls_cluster
    retained = "tls/ret/" + uid()
    p = c.client(1, version=helpers.V311)
    p.publish(retained, b"secret", 1, retain=True)
    p.disconnect()
    other = make_certs(str(tmp_path / "other"), [3])
    marks = rogue_node3(c, tmp_path, ca_dir=other)
    logs = assert_kept_out(c, marks, retained)
    refused = [n for n in (1, 2) if "TLS connection from" in logs[n] and "refused" in logs[n]]
    assert refused, "no refusal logged by nodes 1, 2:\n%s" % (logs,)
    assert any("certificate" in logs[n].lower() or "unknown ca" in logs[n] for n in refused)
    assert all((c.node(n).metric("tern_cluster_tls_refused_total") or 0) > 0
               for n in refused)
    own = c.node(3).log(current_run=True)
    assert "TLS connection to node" in own and "refused" in own, own[-3000:]
    # node 3 back with its own certificate (and empty data): it catches up
    c.kill(3, signal.SIGTERM)
    configure(c, c.pki, 3)
    c.start(3)
    c.wait_ready()


def test_certificate_naming_another_node_is_refused(tls_cluster, tmp_path):
    """Node 3 restarted (empty data) with node 2's certificate (the cluster CA's): node
    1 dialling node 3 finds node 2's name and refuses; node 3 dialling node 1 speaks as
    node 3 with node 2's certificate and is refused. Node 3 learns nothing."""
    c = tls_cluster
    marks = rogue_node3(c, tmp_path, cert_id=2)
    logs = assert_kept_out(c, marks, "tls/none")
    both = logs[1] + logs[2]
    assert "certificate names node 2, not node 3" in both or \
        "speaks as node 3 with node 2's certificate: refused" in both, both[-3000:]
    c.kill(3, signal.SIGTERM)
    configure(c, c.pki, 3)
    c.start(3)
    c.wait_ready()


# --- plain TCP and openssl s_client -----------------------------------------------------


def libraft_handshake(node_id, address):
    a = address.encode() + b"\0"
    a += b"\0" * ((8 - len(a) % 8) % 8)
    return struct.pack("<QQQ", 1, node_id, len(a)) + a


def test_plain_tcp_to_tls_ports_is_refused(tls_cluster):
    """Plain TCP to every node's Raft and peer ports, speaking libraft's handshake and a
    peer frame in the clear: each connection is closed, each node logs it, and the
    cluster keeps its leader and term and commits."""
    c = tls_cluster
    lead = c.wait_leader(10.0)
    term = raft_term(c.node(lead))
    marks = {nd.id: len(nd.log()) for nd in c.nodes}
    for nd in c.nodes:
        for port, data in ((nd.raft_port, libraft_handshake(1, "127.0.0.1:1") + b"\0" * 64),
                           (nd.peer_port, struct.pack("<IBI", 9, 1, 1) + b"abcd")):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            try:
                s.sendall(data)
                s.settimeout(5.0)
                got = b""
                try:
                    while True:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        got += chunk
                except (ConnectionResetError, socket.timeout) as e:
                    assert not isinstance(e, socket.timeout), \
                        "node %d port %d kept a plain connection open" % (nd.id, port)
                assert b"\x16\x03" not in got[:0]  # whatever came back, it was closed
            finally:
                s.close()
    for nd in c.nodes:
        wait_until(lambda: nd.log()[marks[nd.id]:].count("refused") >= 2, 5.0,
                   msg="node %d logged both refusals" % nd.id)
    publish_acked(c, lead, "tls/plain/" + uid(), b"ok")
    assert c.leader() == lead and raft_term(c.node(lead)) == term
    for nd in c.nodes:
        refused = nd.metric("tern_cluster_tls_refused_total")
        assert refused is not None and refused >= 2, "node %d counted %s" % (nd.id, refused)


def s_client(port, *args, hold=1.0, timeout=10):
    """openssl s_client's exit status and output; stdin is held open `hold` seconds, so
    that with TLS 1.3 (where the client finishes its handshake first) the server's
    verdict on the client's certificate arrives before it quits."""
    p = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] +
                         list(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        time.sleep(hold)
        out, _ = p.communicate(b"", timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, out.decode("utf-8", "replace")


def test_s_client_shows_client_certificate_required(tls_cluster):
    """openssl s_client against a node's Raft port: without a certificate the handshake
    ends in "certificate required" (and the server asks for one from the cluster CA);
    with node 1's certificate it verifies node 2's (return code 0)."""
    c = tls_cluster
    nd = c.node(2)
    ca = os.path.join(c.pki, "ca.pem")
    for port in (nd.raft_port, nd.peer_port):
        rc, out = s_client(port, "-CAfile", ca)
        assert "certificate required" in out, out[-2000:]
        rc, out = s_client(port, "-tls1_2", "-CAfile", ca)
        assert "Acceptable client certificate CA names" in out and "tern cluster CA" in out
        assert rc != 0 or "handshake failure" in out or "alert" in out, out[-2000:]
        rc, out = s_client(port, "-CAfile", ca, "-cert", os.path.join(c.pki, "node-1.pem"),
                           "-key", os.path.join(c.pki, "node-1.key"))
        assert "Verify return code: 0 (ok)" in out and "CN = node-2" in out, out[-2000:]
    publish_acked(c, 1, "tls/s_client/" + uid(), b"ok")


def test_sighup_reloads_the_node_certificate(tls_cluster):
    """Node 2's certificate replaced (a new key, the same CA) and SIGHUP: new
    connections get the new certificate, the cluster keeps committing."""
    c = tls_cluster
    nd = c.node(2)
    pem = os.path.join(c.pki, "node-2.pem")

    def fingerprint():
        _, out = s_client(nd.raft_port, "-CAfile", os.path.join(c.pki, "ca.pem"),
                          "-cert", os.path.join(c.pki, "node-1.pem"),
                          "-key", os.path.join(c.pki, "node-1.key"), "-showcerts")
        begin = out.find("-----BEGIN CERTIFICATE-----")
        return out[begin:out.find("-----END CERTIFICATE-----", begin)]

    before = fingerprint()
    assert before
    os.remove(pem)
    os.remove(os.path.join(c.pki, "node-2.key"))
    make_certs(c.pki, [2])
    with open(pem) as f:
        new = f.read()
    nd.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "cluster_tls files read again" in nd.log(current_run=True), 5.0,
               msg="reload logged")
    after = fingerprint()
    assert after != before and after.strip() in new
    publish_acked(c, 2, "tls/reload/" + uid(), b"ok")


def test_bad_cluster_tls_file_stops_ternd(tmp_path):
    """A key that is not the certificate's: --check-config and a start both exit 2
    before opening anything, naming the member and OpenSSL's reason."""
    if not os.access(TERN_BIN, os.X_OK):
        pytest.skip("ternd not built at %s (set TERN_BIN)" % TERN_BIN)
    pki = make_certs(str(tmp_path / "pki"), [1, 2])
    cfg = dict(tls_settings(pki, 1), node_id=1, listen="127.0.0.1:0",
               admin_listen="127.0.0.1:0", data_dir=str(tmp_path / "data"))
    cfg["cluster_tls"]["key_file"] = os.path.join(pki, "node-2.key")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    for flag in ("--check-config", "--config"):
        r = subprocess.run([TERN_BIN, flag, str(path)], capture_output=True, text=True,
                           timeout=20)
        assert r.returncode == 2, (flag, r.returncode, r.stderr)
        assert "cluster_tls.key_file: cannot use" in r.stderr, r.stderr
        assert "key values mismatch" in r.stderr, r.stderr
    assert not (tmp_path / "data").exists(), "a data directory was made"
