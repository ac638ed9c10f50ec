"""The PROXY protocol (issue 18): listeners with `"proxy_protocol": true`.

- a raw socket sends a v1 and a v2 header (v4, v6, v4-mapped, TLVs, split over
  several writes) then CONNECT: /clients and the log show the header's address;
- a connection without a valid header (none, garbage, broken, too long, nothing
  at all) is closed, counted and logged; other clients are not affected;
- connections_per_address_max, the failed-password slow-down and allow_anonymous's
  loopback rule go by the header's address;
- on an mqtts listener the header comes before the TLS handshake;
- HAProxy (deploy/haproxy/haproxy.cfg, send-proxy-v2) in front of a local cluster:
  a paho client bound to 127.0.0.7 shows up as 127.0.0.7 on the node that serves it.

Header addresses from 198.18.0.0/15 are only bytes in the header: every connection
is on loopback.
"""
import json
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt
import pytest

import mqttraw
from cluster import tern_proxy_cluster_fixture  # noqa: F401
from conftest import free_port
from helpers import IS_MOSQUITTO, uid, wait_until

pytestmark = [pytest.mark.tern_only,
              pytest.mark.skipif(IS_MOSQUITTO, reason="tern listeners")]

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
T = 10.0  # liveness bound for each step
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
NOT_AUTHORIZED_V3 = 5
BAD_CREDENTIALS_V3 = 4


def v1(src, sport, dst="127.0.0.1", dport=1884):
    fam = "TCP6" if ":" in src else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def v2(src=None, sport=0, dst=None, dport=1884, tlvs=b"", local=False):
    """A v2 header: PROXY over TCP/IPv4 or IPv6 (by src), or LOCAL."""
    if local:
        fam, body = 0x00, tlvs
    elif ":" in src:
        fam = 0x21
        body = (socket.inet_pton(socket.AF_INET6, src) +
                socket.inet_pton(socket.AF_INET6, dst or "::1") +
                struct.pack("!HH", sport, dport) + tlvs)
    else:
        fam = 0x11
        body = (socket.inet_aton(src) + socket.inet_aton(dst or "127.0.0.1") +
                struct.pack("!HH", sport, dport) + tlvs)
    return V2_SIG + bytes([0x20 if local else 0x21, fam]) + struct.pack("!H", len(body)) + body


def proxy_listener(port, **kw):
    lst = {"type": "mqtt", "bind": "127.0.0.1:%d" % port, "proxy_protocol": True}
    lst.update(kw)
    return lst


@pytest.fixture
def proxied(start_broker):
    """factory(**settings) -> broker with .proxy_port, a proxy_protocol listener
    besides its plain `listen`."""
    def factory(listener=None, **settings):
        port = free_port()
        b = start_broker(listeners=json.dumps([listener or proxy_listener(port)]),
                         **settings)
        b.proxy_port = port
        return b
    return factory


def admin_addr(b):
    wait_until(lambda: re.search(r"admin API listening on (\S+)", b.log(current_run=True)),
               T, msg="admin address in the log")
    return re.findall(r"admin API listening on (\S+)", b.log(current_run=True))[-1]


def admin_get(addr, path):
    with urllib.request.urlopen("http://%s%s" % (addr, path), timeout=T) as r:
        return r.read().decode()


def peers(b):
    """client id -> peer, from GET /clients."""
    body = json.loads(admin_get(admin_addr(b), "/clients"))
    return {c["client_id"]: c["peer"] for c in body["clients"]}


def metric(b, name, labels=""):
    key = "%s{%s}" % (name, labels) if labels else name
    for line in admin_get(admin_addr(b), "/metrics").splitlines():
        if line.startswith(key + " "):
            return float(line.split()[1])
    return None


def raw(b, port=None):
    return mqttraw.RawClient(b.host, port or b.proxy_port, timeout=T)


def connack_after(b, header, cid=None, **kw):
    """A connection to the proxy port that sends header and CONNECT in one write:
    (client, CONNACK reason)."""
    c = raw(b)
    c.send(header + mqttraw.connect_packet(cid or uid("pp"), 4, **kw))
    return c, c.expect(mqttraw.CONNACK).reason


def test_v1_header_names_the_client(proxied):
    b = proxied(allow_anonymous=True)
    cid = uid("pp-v1")
    c, rc = connack_after(b, v1("198.18.0.9", 45678, dport=b.proxy_port), cid)
    with c:
        assert rc == 0
        assert peers(b)[cid] == "198.18.0.9:45678"
        # a v6 client behind the same balancer
        cid6 = uid("pp-v1-6")
        c6, rc6 = connack_after(b, v1("2001:db8::5", 1234, "2001:db8::1"), cid6)
        with c6:
            assert rc6 == 0
            assert peers(b)[cid6] == "[2001:db8::5]:1234"
        # the plain listener is not a proxy listener: its clients are as they are
        with raw(b, b.port) as p:
            pcid = uid("pp-plain")
            assert p.connect(pcid).reason == 0
            assert peers(b)[pcid].startswith("127.0.0.1:")
    log = b.log(current_run=True)
    assert re.search(r"198\.18\.0\.9:45678: PROXY v1 from 127\.0\.0\.1:\d+", log), log[-3000:]
    wait_until(lambda: re.search(r"198\.18\.0\.9:45678 %s: closing" % cid,
                                 b.log(current_run=True)), T, msg="close logged")
    assert metric(b, "tern_proxy_headers_total") == 2
    assert metric(b, "tern_proxy_refused_total") == 0


def test_v2_header_split_tlvs_and_v6(proxied):
    b = proxied(allow_anonymous=True)
    # header in three writes, then CONNECT in a fourth
    cid = uid("pp-v2")
    h = v2("198.18.0.10", 50000, tlvs=b"\x04\x00\x03abc" + b"\x02\x00\x05a.b.c")
    with raw(b) as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for part in (h[:5], h[5:15], h[15:]):
            c.send(part)
            time.sleep(0.05)
        assert c.connect(cid).reason == 0
        assert peers(b)[cid] == "198.18.0.10:50000"
    for src, want in (("2001:db8::7", "[2001:db8::7]:4242"),
                      ("::ffff:198.18.0.11", "198.18.0.11:4242")):
        cid = uid("pp-v2")
        c, rc = connack_after(b, v2(src, 4242), cid)
        with c:
            assert rc == 0
            assert peers(b)[cid] == want
    # LOCAL (a balancer's health check): the connection's own address stands
    cid = uid("pp-local")
    c, rc = connack_after(b, v2(local=True), cid)
    with c:
        assert rc == 0
        assert peers(b)[cid].startswith("127.0.0.1:")
    assert re.search(r"198\.18\.0\.10:50000: PROXY v2 from 127\.0\.0\.1:\d+",
                     b.log(current_run=True))
    assert metric(b, "tern_proxy_headers_total") == 4


def test_refused_without_a_valid_header(proxied):
    b = proxied(allow_anonymous=True, proxy_header_timeout_ms=500)
    # clients that stay connected throughout: one through the proxy port, one plain
    keep, rc = connack_after(b, v1("198.18.0.12", 1000), uid("pp-keep"))
    assert rc == 0
    plain = raw(b, b.port)
    assert plain.connect(uid("pp-plain")).reason == 0
    bad = {
        "missing": mqttraw.connect_packet(uid("pp-bad"), 4),
        "garbage": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "bad port": b"PROXY TCP4 198.18.0.1 127.0.0.1 99999 1\r\n",
        "v1 too long": b"PROXY UNKNOWN " + b"x" * 200,
        "v2 too long": V2_SIG + b"\x21\x11" + struct.pack("!H", 4000) + bytes(100),
        "v2 bad TLV": v2("198.18.0.1", 1, tlvs=b"\x01\x00\x09h2"),
        "partial": b"PROXY TCP4 198.18",
        "silent": b"",
    }
    try:
        for name, data in bad.items():
            with raw(b) as c:
                t0 = time.monotonic()
                if data:
                    c.send(data)
                got = c.wait_closed(T)
                assert got == [], "%s: the broker answered %r" % (name, got)
                print("%s: closed after %.2f s" % (name, time.monotonic() - t0))
        assert metric(b, "tern_proxy_refused_total") == len(bad)
        log = b.log(current_run=True)
        for why in ("PROXY protocol: not a PROXY protocol header",
                    "PROXY protocol: PROXY v1: bad port",
                    "PROXY protocol: PROXY v1: no CRLF within 107 bytes",
                    "PROXY protocol: PROXY v2: header longer than 1040 bytes",
                    "PROXY protocol: PROXY v2: TLV longer than the header",
                    "PROXY protocol: no header within proxy_header_timeout_ms"):
            assert re.search(r"127\.0\.0\.1:\d+ : closing: %s" % re.escape(why), log), why
        # nothing else was affected
        keep.pingreq()
        assert keep.expect(mqttraw.PINGRESP).type == mqttraw.PINGRESP
        plain.pingreq()
        assert plain.expect(mqttraw.PINGRESP).type == mqttraw.PINGRESP
        c, rc = connack_after(b, v2("198.18.0.13", 7), uid("pp-after"))
        c.close()
        assert rc == 0
    finally:
        keep.close()
        plain.close()


def test_per_address_limit_is_the_header_address(proxied):
    b = proxied(allow_anonymous=True, connections_per_address_max=2)
    open_ = []
    try:
        for _ in range(2):
            c, rc = connack_after(b, v1("198.18.0.20", 1000 + len(open_)))
            open_.append(c)
            assert rc == 0
        # a third from the same client address: refused, before any CONNACK
        with raw(b) as c:
            c.send(v1("198.18.0.20", 2000) + mqttraw.connect_packet(uid("pp"), 4))
            assert c.wait_closed(T) == []
        assert metric(b, "tern_connections_limited_total", 'limit="per_address"') == 1
        # another client address behind the same balancer (4th from 127.0.0.1)
        c, rc = connack_after(b, v1("198.18.0.21", 3000))
        open_.append(c)
        assert rc == 0
        # the balancer's own address is not counted for its clients
        c = raw(b, b.port)
        open_.append(c)
        assert c.connect(uid("pp-plain")).reason == 0
        assert re.search(r"198\.18\.0\.20:2000: refused: connections_per_address_max",
                         b.log(current_run=True))
    finally:
        for c in open_:
            c.close()


def mosquitto_passwd(path, user, password):
    if not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto_passwd is not installed")
    subprocess.run(["mosquitto_passwd", "-c", "-b", path, user, password], check=True,
                   timeout=30, capture_output=True)


def test_failed_password_slowdown_is_per_header_address(proxied, tmp_path):
    pw = str(tmp_path / "passwd")
    mosquitto_passwd(pw, "alice", "s3cret")
    b = proxied(password_file=pw)

    def attempt(src):
        c, rc = connack_after(b, v1(src, 1), username="alice", password="wrong")
        c.close()
        assert rc == BAD_CREDENTIALS_V3
        return metric(b, "tern_auth_total", 'result="throttled"')

    # Failures from one client address until one is throttled (the wait after a
    # failure is 100 ms, doubling: a slow machine needs a few rounds).
    throttled = 0
    for _ in range(6):
        throttled = attempt("198.18.0.22")
        if throttled:
            break
    assert throttled == 1
    # at once, another client address behind the same balancer: checked, not slowed
    attempt("198.18.0.23")
    assert metric(b, "tern_auth_total", 'result="throttled"') == 1
    time.sleep(0.3)  # past 198.18.0.23's own wait after its failure (100 ms)
    c, rc = connack_after(b, v1("198.18.0.23", 2), username="alice", password="s3cret")
    c.close()
    assert rc == 0


def test_anonymous_auto_goes_by_the_client_address(proxied):
    # Both listeners on loopback and no password file: allow_anonymous auto lets
    # anonymous clients in on loopback. Through the proxy listener, loopback is
    # the client's address in the header, not the balancer's.
    b = proxied()
    for header, want in ((v1("198.18.0.30", 1), NOT_AUTHORIZED_V3),
                         (v2("2001:db8::30", 1), NOT_AUTHORIZED_V3),
                         (v2(local=True), NOT_AUTHORIZED_V3),  # no address: unknown
                         (b"PROXY UNKNOWN\r\n", NOT_AUTHORIZED_V3),
                         (v1("127.0.0.30", 1), 0),
                         (v2("::1", 1), 0)):
        c, rc = connack_after(b, header)
        c.close()
        assert rc == want, header
    with raw(b, b.port) as c:
        assert c.connect(uid("pp-plain")).reason == 0
    assert metric(b, "tern_auth_total", 'result="anonymous_refused"') == 4


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("no openssl CLI")
    d = str(tmp_path_factory.mktemp("pki"))
    subprocess.run(["sh", os.path.join(REPO, "tests", "tls", "make_certs.sh"), d],
                   check=True, timeout=60, capture_output=True)
    return d


def test_mqtts_header_before_the_handshake(proxied, pki):
    port = free_port()
    b = proxied(listener=proxy_listener(
        port, type="mqtts", cert_file=os.path.join(pki, "server.pem"),
        key_file=os.path.join(pki, "server.key")), allow_anonymous=True)
    b.proxy_port = port
    ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.pem"))
    cid = uid("pp-tls")
    sk = socket.create_connection(("127.0.0.1", port), timeout=T)
    try:
        sk.sendall(v2("198.18.0.40", 8883))
        with ctx.wrap_socket(sk, server_hostname="localhost") as ts:
            sk = None
            ts.sendall(mqttraw.connect_packet(cid, 4))
            assert ts.recv(4) == b"\x20\x02\x00\x00"
            assert peers(b)[cid] == "198.18.0.40:8883"
            body = json.loads(admin_get(admin_addr(b), "/clients"))
            assert [c["tls"] for c in body["clients"] if c["client_id"] == cid] == [True]
        # TLS without the header first: refused as not a PROXY header
        with socket.create_connection(("127.0.0.1", port), timeout=T) as s2:
            with pytest.raises((ssl.SSLError, OSError)):
                with ctx.wrap_socket(s2, server_hostname="localhost") as t2:
                    t2.sendall(mqttraw.connect_packet(uid("pp"), 4))
                    if not t2.recv(4):
                        raise ConnectionResetError("closed")
        wait_until(lambda: metric(b, "tern_proxy_refused_total") == 1, T,
                   msg="refusal counted")
        assert metric(b, "tern_tls_handshake_failures_total") == 0
    finally:
        if sk:
            sk.close()


# --- HAProxy in front of a cluster ---------------------------------------------------------

def test_haproxy_send_proxy_v2_shows_the_client(tern_proxy_cluster, tmp_path):
    """deploy/haproxy/haproxy.cfg (send-proxy-v2 to each node's proxy listener): a
    paho client bound to 127.0.0.7 is 127.0.0.7 on the node, not HAProxy's 127.0.0.1."""
    if not shutil.which("haproxy"):
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    from test_deploy_files import haproxy_for
    path, port = haproxy_for(tern_proxy_cluster, str(tmp_path))
    proc = subprocess.Popen(["haproxy", "-db", "-f", path], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    clients = []
    try:
        for src in ("127.0.0.7", "127.0.0.8"):
            got = threading.Event()
            connected = threading.Event()
            cid = uid("pp-ha")
            c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv311)
            c.on_connect = lambda cl, u, f, rc, ev=connected: rc == 0 and ev.set()
            c.on_message = lambda cl, u, m, ev=got: ev.set()
            deadline = time.monotonic() + 30
            while True:  # until HAProxy is up and a node answers through it
                assert proc.poll() is None, proc.stdout.read().decode()
                try:
                    c.connect("127.0.0.1", port, 30, bind_address=src)
                    break
                except OSError:
                    assert time.monotonic() < deadline, "haproxy not accepting"
                    time.sleep(0.2)
            c.loop_start()
            clients.append(c)
            assert connected.wait(T), "no CONNACK through haproxy"
            topic = "pp/haproxy/%s" % uid()
            c.subscribe(topic, 1)
            time.sleep(0.2)
            wait_until(lambda: c.publish(topic, b"hi", 1) and got.wait(0.5), T,
                       msg="own message back through haproxy")
            lhost, lport = c.socket().getsockname()[:2]
            assert lhost == src
            want = "%s:%d" % (src, lport)
            seen = {}
            for nd in tern_proxy_cluster.nodes:
                body = json.loads(nd.admin_get("/clients") or '{"clients": []}')
                for cl in body["clients"]:
                    if cl["client_id"] == cid:
                        seen[nd.id] = cl["peer"]
            assert list(seen.values()) == [want], seen
            nd = tern_proxy_cluster.node(list(seen)[0])
            assert re.search(r"%s: PROXY v2 from 127\.0\.0\.1:\d+" % re.escape(want),
                             nd.log(current_run=True))
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
