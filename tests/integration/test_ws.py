"""MQTT over WebSockets (issue 18): `ws` and `wss` listeners, real clients.

Clients: paho (transport="websockets"), MQTT.js in Node over ws:// and wss://
(js/ws.test.mjs), headless Chromium driven by playwright-core loading a page that
uses the browser build of MQTT.js (js/browser.mjs), and a raw socket speaking RFC 6455
by hand for what no client library sends: bad upgrades, unmasked, text and oversized
frames, fragments and pings. What the broker did is read from /metrics and its log.
"""
import base64
import hashlib
import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from conftest import free_port
from helpers import IS_MOSQUITTO, uid, wait_until
from test_tls import MAKE_CERTS, admin, metric, p, wait_metric

pytestmark = [pytest.mark.tern_only,
              pytest.mark.skipif(IS_MOSQUITTO, reason="tern listeners")]

HERE = os.path.dirname(os.path.abspath(__file__))
JS_DIR = os.path.join(HERE, "js")
T = 10.0  # liveness bound for each step
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("no openssl CLI")
    d = str(tmp_path_factory.mktemp("pki"))
    subprocess.run(["sh", MAKE_CERTS, d], check=True, timeout=60)
    return d


@pytest.fixture
def ws_broker(start_broker):
    """factory(extra_settings, **members) -> broker with .ws_port (a ws listener)."""
    def factory(extra_settings=None, **members):
        port = free_port()
        lst = {"type": "ws", "bind": "127.0.0.1:%d" % port}
        lst.update(members)
        b = start_broker(listeners=json.dumps([lst]), **(extra_settings or {}))
        b.ws_port = port
        return b
    return factory


# --- a WebSocket client by hand --------------------------------------------------

def upgrade_request(path="/mqtt", key=None, proto="mqtt", extra=(), drop=(), origin=None):
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    headers = [("Host", "127.0.0.1"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
               ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]
    if proto is not None:
        headers.append(("Sec-WebSocket-Protocol", proto))
    if origin is not None:
        headers.append(("Origin", origin))
    headers = [h for h in headers if h[0] not in drop] + list(extra)
    text = "GET %s HTTP/1.1\r\n" % path + "".join("%s: %s\r\n" % h for h in headers)
    return (text + "\r\n").encode(), key


def frame(opcode, payload, fin=True, mask=True, length=None):
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack(">H", n)
    else:
        head += bytes([m | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawWS:
    """A socket that upgrades by hand and reads server frames."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=T)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            d = self.s.recv(4096)
            if not d:
                break
            self.buf += d
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head.decode("latin-1")

    def upgrade(self, **kw):
        req, key = upgrade_request(**kw)
        self.send(req)
        head = self.read_head()
        return head, key

    def _need(self, n):
        while len(self.buf) < n:
            d = self.s.recv(65536)
            if not d:
                raise EOFError("closed with %d of %d bytes" % (len(self.buf), n))
            self.buf += d

    def read_frame(self):
        """(fin, opcode, payload); the server's frames are never masked."""
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "masked server frame"
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            n, off = struct.unpack(">H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, off = struct.unpack(">Q", self.buf[2:10])[0], 10
        self._need(off + n)
        payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def read_close(self):
        """The close frame's code, skipping data frames; then the server closes."""
        while True:
            fin, op, payload = self.read_frame()
            if op == 0x8:
                return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None

    def eof(self):
        """True once the server closed the TCP connection (bounded)."""
        self.s.settimeout(T)
        try:
            while True:
                d = self.s.recv(4096)
                if not d:
                    return True
        except (ConnectionResetError, socket.timeout):
            return False

    def close(self):
        self.s.close()


def connect_packet(cid):
    """MQTT 3.1.1 CONNECT, clean session, keepalive 60."""
    var = b"\x00\x04MQTT\x04\x02\x00\x3c"
    pl = struct.pack(">H", len(cid)) + cid.encode()
    body = var + pl
    return bytes([0x10, len(body)]) + body


def accept_of(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


# --- paho ------------------------------------------------------------------------

class PahoWS:
    """A paho client over WebSockets that records what it receives."""

    def __init__(self, port, path="/mqtt", tls_ca=None, cid=None):
        self.msgs = []
        self.connected = threading.Event()
        self.rc = None
        self.c = mqtt.Client(client_id=cid or uid("pws"), protocol=mqtt.MQTTv311,
                             transport="websockets")
        self.c.ws_set_options(path=path)
        if tls_ca:
            self.c.tls_set(ca_certs=tls_ca)

        def on_connect(c, u, f, rc):
            self.rc = rc
            if rc == 0:
                self.connected.set()
        self.c.on_connect = on_connect
        self.c.on_message = lambda c, u, m: self.msgs.append((m.topic, m.payload))
        self.error = None
        try:  # paho does the upgrade inside connect(): a refusal raises
            self.c.connect("127.0.0.1", port, keepalive=30)
        except Exception as e:  # noqa: BLE001 (any refusal; asserted by the caller)
            self.error = e
        self.c.loop_start()

    def wait_connected(self):
        assert self.connected.wait(T), "paho over websockets did not connect"
        return self

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_paho_over_ws(ws_broker, clients):
    """paho over ws:// subscribes; a TCP client and a ws client publish to it."""
    b = ws_broker()
    sub = PahoWS(b.ws_port).wait_connected()
    pub = PahoWS(b.ws_port).wait_connected()
    try:
        r = sub.c.subscribe("ws/t", qos=1)
        assert r[0] == 0
        time.sleep(0.3)
        pub.c.publish("ws/t", b"over-ws", qos=1).wait_for_publish()
        tcp = clients.new(broker=b)
        tcp.publish("ws/t", b"over-tcp", qos=0)
        wait_until(lambda: len(sub.msgs) >= 2, T, msg="2 messages over websockets")
        assert sorted(m[1] for m in sub.msgs) == [b"over-tcp", b"over-ws"]
        # A large message crosses several TCP reads and frames both ways.
        big = os.urandom(300000)
        pub.c.publish("ws/t", big, qos=1).wait_for_publish()
        wait_until(lambda: len(sub.msgs) >= 3, T, msg="the large message")
        assert sub.msgs[2][1] == big
        assert metric(b, "tern_ws_handshakes_total") == 2
        assert metric(b, "tern_ws_handshake_failures_total") == 0
        cl = admin(b, "/clients")["clients"]
        ws_ids = sorted(c["client_id"] for c in cl if c["websocket"])
        assert ws_ids == sorted([sub.c._client_id.decode(), pub.c._client_id.decode()]), cl
        assert [c["websocket"] for c in cl if c["client_id"] == tcp.client_id] == [False]
    finally:
        sub.stop()
        pub.stop()


def test_paho_over_wss(start_broker, pki):
    """paho over wss:// (TLS under WebSockets) to a subscriber over ws://."""
    ws_port, wss_port = free_port(), free_port()
    b = start_broker(listeners=json.dumps([
        {"type": "ws", "bind": "127.0.0.1:%d" % ws_port},
        {"type": "wss", "bind": "127.0.0.1:%d" % wss_port,
         "cert_file": p(pki, "server.pem"), "key_file": p(pki, "server.key")}]))
    sub = PahoWS(ws_port).wait_connected()
    pub = PahoWS(wss_port, tls_ca=p(pki, "ca.pem")).wait_connected()
    try:
        sub.c.subscribe("wss/paho", qos=1)
        time.sleep(0.3)
        pub.c.publish("wss/paho", b"secure", qos=1).wait_for_publish()
        wait_until(lambda: sub.msgs == [("wss/paho", b"secure")], T, msg="over wss")
        assert metric(b, "tern_tls_handshakes_total") == 1
        assert metric(b, "tern_ws_handshakes_total") == 2
        cl = admin(b, "/clients")["clients"]
        assert sorted((c["tls"], c["websocket"]) for c in cl) == [(False, True), (True, True)]
    finally:
        sub.stop()
        pub.stop()


def test_paho_path(ws_broker):
    """A listener with its own path: paho with that path connects, with /mqtt not."""
    b = ws_broker(path="/ws/broker")
    ok = PahoWS(b.ws_port, path="/ws/broker").wait_connected()
    bad = PahoWS(b.ws_port, path="/mqtt")
    try:
        wait_metric(b, "tern_ws_handshake_failures_total", 1)
        assert not bad.connected.is_set()
        assert "no WebSocket endpoint at this path" in b.log(current_run=True)
    finally:
        ok.stop()
        bad.stop()


# --- the handshake ---------------------------------------------------------------

BAD_UPGRADES = [
    # (what, request kwargs, HTTP status)
    ("wrong path", dict(path="/nope"), 404),
    ("no Upgrade", dict(drop=("Upgrade",)), 400),
    ("no Connection", dict(drop=("Connection",)), 400),
    ("bad key", dict(key="not-a-key"), 400),
    ("no key", dict(drop=("Sec-WebSocket-Key",)), 400),
    ("version 8", dict(drop=("Sec-WebSocket-Version",),
                       extra=(("Sec-WebSocket-Version", "8"),)), 426),
    ("no subprotocol", dict(proto=None), 400),
    ("other subprotocol", dict(proto="wamp"), 400),
    ("origin not allowed", dict(origin="https://evil.example"), 403),
    ("no origin", dict(origin=None), 403),
]
GOOD_ORIGIN = "https://good.example"


def test_bad_handshakes(ws_broker, clients):
    """Each refused with its HTTP status and closed, counted; other connections go on."""
    b = ws_broker(allowed_origins=["https://good.example"])
    good = PahoWS(b.ws_port)  # paho sends no Origin: refused here
    good.stop()
    wait_metric(b, "tern_ws_handshake_failures_total", 1)
    # A hand-made client with the right Origin, and a TCP one, stay connected.
    keep = RawWS(b.ws_port)
    head, key = keep.upgrade(extra=(("Origin", "https://good.example"),))
    assert head.startswith("HTTP/1.1 101 "), head
    assert "Sec-WebSocket-Accept: %s" % accept_of(key) in head
    assert "Sec-WebSocket-Protocol: mqtt" in head
    keep.send(frame(0x2, connect_packet(uid("keep"))))
    assert keep.read_frame()[2][:2] == b"\x20\x02"  # CONNACK
    tcp = clients.new(broker=b)
    try:
        for i, (what, kw, status) in enumerate(BAD_UPGRADES):
            r = RawWS(b.ws_port)
            try:
                head, _ = r.upgrade(**dict(dict(origin=GOOD_ORIGIN), **kw))
                assert head.startswith("HTTP/1.1 %d " % status), (what, head)
                assert r.eof(), "%s: not closed after the refusal" % what
            finally:
                r.close()
        # Over ws_handshake_bytes_max (default 8192).
        r = RawWS(b.ws_port)
        req, _ = upgrade_request(extra=(("X-Pad", "a" * 9000),), origin=GOOD_ORIGIN)
        r.send(req)
        assert r.read_head().startswith("HTTP/1.1 431 ")
        assert r.eof()
        r.close()
        wait_metric(b, "tern_ws_handshake_failures_total", len(BAD_UPGRADES) + 2)
        # mqttv3.1 alone is taken (old clients).
        r = RawWS(b.ws_port)
        head, _ = r.upgrade(proto="mqttv3.1", extra=(("Origin", "https://GOOD.example"),))
        assert "Sec-WebSocket-Protocol: mqttv3.1" in head, head
        r.close()
        # The connections that were fine all along still are.
        keep.send(frame(0x2, b"\xc0\x00"))  # PINGREQ
        assert keep.read_frame()[2] == b"\xd0\x00"
        assert tcp.c.is_connected()
    finally:
        keep.close()


def test_handshake_timeout(ws_broker):
    """An upgrade request that never ends is closed at ws_handshake_timeout_ms."""
    b = ws_broker(extra_settings={"ws_handshake_timeout_ms": "300"})
    r = RawWS(b.ws_port)
    try:
        r.send(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        assert r.eof()
        assert time.monotonic() - t0 < T
        wait_metric(b, "tern_ws_handshake_failures_total", 1)
        assert "upgrade not done within ws_handshake_timeout_ms" in b.log(current_run=True)
    finally:
        r.close()


# --- frames ----------------------------------------------------------------------

def opened(b):
    r = RawWS(b.ws_port)
    head, _ = r.upgrade()
    assert head.startswith("HTTP/1.1 101 "), head
    return r


def test_fragments_ping_close(ws_broker):
    """CONNECT in three fragments with a ping between them; pong, CONNACK; close."""
    b = ws_broker()
    r = opened(b)
    try:
        pkt = connect_packet(uid("frag"))
        r.send(frame(0x2, pkt[:3], fin=False) + frame(0x9, b"hello") +
               frame(0x0, pkt[3:10], fin=False) + frame(0x0, pkt[10:]))
        fin, op, payload = r.read_frame()
        assert (op, payload) == (0xA, b"hello")
        fin, op, payload = r.read_frame()
        assert (op, payload[:4]) == (0x2, b"\x20\x02\x00\x00")
        # Two packets in one frame: SUBSCRIBE and PINGREQ.
        sub = b"\x82\x08\x00\x01\x00\x03a/b\x00"
        r.send(frame(0x2, sub + b"\xc0\x00"))
        got = b""
        while len(got) < 7:
            got += r.read_frame()[2]
        assert got == b"\x90\x03\x00\x01\x00" + b"\xd0\x00"
        # DISCONNECT then a close frame: the close is echoed, the TCP connection ends.
        r.send(frame(0x2, b"\xe0\x00") + frame(0x8, struct.pack(">H", 1000)))
        assert r.read_close() == 1000
        assert r.eof()
        assert metric(b, "tern_ws_protocol_errors_total") == 0
    finally:
        r.close()


BAD_FRAMES = [
    ("unmasked", lambda: frame(0x2, b"\x10\x00", mask=False), 1002),
    ("text", lambda: frame(0x1, b"hello"), 1003),
    ("oversized", lambda: frame(0x2, b"", length=70000)[:14], 1009),
    ("reserved opcode", lambda: frame(0x3, b"x"), 1002),
    ("continuation first", lambda: frame(0x0, b"x"), 1002),
]


def test_bad_frames(ws_broker, clients):
    """Unmasked, text, oversized frames: close with the code, counted; others unaffected."""
    b = ws_broker(extra_settings={"max_packet_size": "65536"})
    other = PahoWS(b.ws_port).wait_connected()
    got = []
    other.c.subscribe("still/here", qos=0)
    try:
        for i, (what, make, code) in enumerate(BAD_FRAMES):
            r = opened(b)
            try:
                if what != "unmasked":  # some after CONNECT, some before
                    r.send(frame(0x2, connect_packet(uid("bad"))))
                    assert r.read_frame()[2][:2] == b"\x20\x02"
                r.send(make())
                assert r.read_close() == code, what
                assert r.eof(), "%s: not closed" % what
            finally:
                r.close()
            wait_metric(b, "tern_ws_protocol_errors_total", i + 1)
        # A frame of exactly max_packet_size is fine (a large PUBLISH).
        tcp = clients.new(broker=b)
        tcp.publish("still/here", b"x" * 1000, qos=0)
        wait_until(lambda: len(other.msgs) == 1, T, msg="the other client still delivers")
        assert other.c.is_connected()
    finally:
        other.stop()


# --- MQTT.js in Node and in Chromium -----------------------------------------------

def ensure_node_modules(*mods):
    if not shutil.which("node"):
        pytest.skip("node is not installed")
    if all(os.path.isdir(os.path.join(JS_DIR, "node_modules", m)) for m in mods):
        return
    if not shutil.which("npm"):
        pytest.skip("node_modules missing in %s and npm is not installed" % JS_DIR)
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS_DIR,
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.skip("`npm ci` failed in %s: %s" % (JS_DIR, (r.stderr or r.stdout)[-800:]))


def run_node(script, env, timeout=90):
    try:
        r = subprocess.run(["node", "--test", "--test-force-exit", "--test-reporter=spec",
                            script], cwd=JS_DIR, env=dict(os.environ, **env),
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout or b""
        pytest.fail("node %s timed out:\n%s" % (script, out.decode("utf-8", "replace")
                                                  if isinstance(out, bytes) else out))
    out = r.stdout + r.stderr
    assert r.returncode == 0, "%s failed:\n%s" % (script, out[-6000:])
    assert "fail 0" in out, out[-3000:]
    return out


def test_mqttjs_ws_and_wss(start_broker, pki):
    """MQTT.js (Node) over ws:// and wss:// (a wss listener: TLS under WebSockets)."""
    ensure_node_modules("mqtt")
    ws_port, wss_port = free_port(), free_port()
    b = start_broker(listeners=json.dumps([
        {"type": "ws", "bind": "127.0.0.1:%d" % ws_port},
        {"type": "wss", "bind": "127.0.0.1:%d" % wss_port, "path": "/secure",
         "cert_file": p(pki, "server.pem"), "key_file": p(pki, "server.key")}]))
    out = run_node("ws.test.mjs", {
        "TERN_WS_URL": "ws://127.0.0.1:%d/mqtt" % ws_port,
        "TERN_WSS_URL": "wss://localhost:%d/secure" % wss_port,
        "TERN_TCP_URL": "mqtt://127.0.0.1:%d" % b.port,
        "TERN_CA": p(pki, "ca.pem")})
    assert "pass" in out
    assert metric(b, "tern_ws_handshakes_total") >= 4
    assert metric(b, "tern_tls_handshakes_total") >= 1
    assert metric(b, "tern_ws_protocol_errors_total") == 0


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def test_browser_chromium(ws_broker):
    """Headless Chromium loads a page that connects with MQTT.js over WebSockets,
    subscribes, publishes and shows the message; the page's own origin is allowed,
    the same page from another origin is refused (403)."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.skip("chromium is not installed (deploy/install-deps.sh installs it)")
    ensure_node_modules("mqtt", "playwright-core")
    web = os.path.join(JS_DIR, "web")
    handler = lambda *a, **kw: _Quiet(*a, directory=JS_DIR, **kw)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    http_port = httpd.server_address[1]
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        b = ws_broker(allowed_origins=["http://127.0.0.1:%d" % http_port])
        page = "web/index.html?url=ws://127.0.0.1:%d/mqtt" % b.ws_port
        out = run_node("browser.test.mjs", {
            "TERN_CHROMIUM": chromium,
            "TERN_PAGE_OK": "http://127.0.0.1:%d/%s" % (http_port, page),
            "TERN_PAGE_OTHER_ORIGIN": "http://localhost:%d/%s" % (http_port, page)},
            timeout=120)
        assert "pass" in out
        assert os.path.isdir(web)
        assert metric(b, "tern_ws_handshakes_total") >= 1
        assert metric(b, "tern_ws_handshake_failures_total") >= 1  # the other origin
        assert "Origin not allowed" in b.log(current_run=True)
    finally:
        httpd.shutdown()
        httpd.server_close()
