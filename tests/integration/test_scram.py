"""MQTT 5 enhanced authentication with SCRAM-SHA-256 (issue 16), against the real
broker, with a client written here from RFC 5802 / RFC 7677 (hashlib, hmac) over
raw MQTT 5 (mqttraw): CONNECT with Authentication Method "SCRAM-SHA-256" and
client-first, AUTH 0x18 server-first, AUTH 0x18 client-final, CONNACK with
server-final (checked by the client) or 0x87; another method 0x8C. Users come from
`ternctl passwd --scram`."""
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import time

import pytest

import mqttraw
from conftest import is_mosquitto
from helpers import PahoClient, V5, uid
from mqttraw import AUTH, AUTH_DATA, AUTH_METHOD, CONNACK, DISCONNECT, SUBACK
from test_auth import TERNCTL, metric, mosquitto_passwd

pytestmark = pytest.mark.skipif(is_mosquitto(), reason="tern's SCRAM and config keys")

METHOD = "SCRAM-SHA-256"
CONTINUE = 0x18
NOT_AUTHORIZED, BAD_METHOD = 0x87, 0x8C


# --- the client side of SCRAM-SHA-256 (RFC 5802 section 3, RFC 7677) ------------------

def _h(data):
    return hashlib.sha256(data).digest()


def _hmac(key, data):
    return hmac.new(key, data, hashlib.sha256).digest()


def saslname(user):
    return user.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    def __init__(self, user, password, cnonce=None):
        self.user = user
        self.password = password.encode()
        self.cnonce = cnonce or base64.b64encode(os.urandom(18)).decode()
        self.client_first_bare = "n=%s,r=%s" % (saslname(user), self.cnonce)
        self.server_signature = None

    def first(self):
        return ("n,," + self.client_first_bare).encode()

    def final(self, server_first, nonce=None):
        """client-final-message for server_first (bytes); nonce overrides r=."""
        sf = server_first.decode()
        attrs = dict(a.split("=", 1) for a in sf.split(","))
        assert attrs["r"].startswith(self.cnonce), sf
        salt, iters = base64.b64decode(attrs["s"]), int(attrs["i"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, iters)
        client_key = _hmac(salted, b"Client Key")
        stored_key = _h(client_key)
        without_proof = "c=biws,r=" + (nonce or attrs["r"])
        auth_message = ",".join((self.client_first_bare, sf, without_proof)).encode()
        signature = _hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self.server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return (without_proof + ",p=" + base64.b64encode(proof).decode()).encode()

    def verify(self, server_final):
        assert server_final.decode() == "v=" + base64.b64encode(
            self.server_signature).decode(), server_final


def test_client_against_rfc7677_example():
    """The client above reproduces the RFC 7677 section 3 exchange (user "user",
    password "pencil"), so what it tells the broker is what the RFC means."""
    c = ScramClient("user", "pencil", cnonce="rOprNGfwEbeRWgbNEkqO")
    assert c.first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    sf = (b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
          b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    assert c.final(sf) == (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                           b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    c.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


# --- the broker -----------------------------------------------------------------------

def ternctl_passwd(path, user, password, *opts):
    r = subprocess.run([TERNCTL, "passwd"] + list(opts) + [path, user],
                       input=password + "\n", capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def users(tmp_path):
    """alice and "b,o=b" with SCRAM verifiers, carol with Mosquitto's $7$."""
    p = str(tmp_path / "passwd")
    ternctl_passwd(p, "alice", "s3cret", "--scram")
    ternctl_passwd(p, "b,o=b", "pw2", "--scram", "--iterations", "5000")
    mosquitto_passwd(p, "carol", "old pass")
    with open(p) as f:
        text = f.read()
    assert re.search(r"^alice:SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:"
                     r"[A-Za-z0-9+/=]+$", text, re.M), text
    assert "b,o=b:SCRAM-SHA-256$5000:" in text and "carol:$7$" in text
    return p


@pytest.fixture
def scram_broker(start_broker, users, tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic readwrite home/#\n")
    return start_broker(password_file=users, acl_file=str(acl), connect_timeout_ms=800)


def begin(b, user, password, client_id=None, props=None, **kw):
    """CONNECT with client-first; returns (raw client, ScramClient, first reply)."""
    sc = ScramClient(user, password)
    c = mqttraw.RawClient(b.host, b.port, version=5)
    p = {AUTH_METHOD: METHOD, AUTH_DATA: sc.first()}
    p.update(props or {})
    reply = c.connect(client_id or uid("scram"), props=p, expect_connack=False, **kw)
    return c, sc, c.recv()


def scram_connect(b, user, password, **kw):
    """The whole exchange; returns (client, CONNACK)."""
    c, sc, auth = begin(b, user, password, **kw)
    if auth.type != AUTH:
        return c, auth
    assert auth.reason == CONTINUE and auth.props[AUTH_METHOD] == METHOD, auth
    c.auth(CONTINUE, {AUTH_METHOD: METHOD, AUTH_DATA: sc.final(auth.props[AUTH_DATA])})
    ack = c.expect(CONNACK)
    if ack.reason == 0:
        assert ack.props[AUTH_METHOD] == METHOD
        sc.verify(ack.props[AUTH_DATA])  # the broker knows the verifier too
    return c, ack


def test_scram_success_and_the_user_is_the_acl_user(scram_broker):
    b = scram_broker
    c, ack = scram_connect(b, "alice", "s3cret")
    try:
        assert ack.reason == 0, ack
        assert c.subscribe(1, [("home/#", 1)]).codes == [1]  # alice's ACL rules
        assert c.subscribe(2, [("other/x", 1)]).codes == [NOT_AUTHORIZED]
        c.publish("home/kitchen", b"hi", qos=1, packet_id=3)
        got = sorted((p.type, p.payload) for p in (c.recv(), c.recv()))
        assert got == [(mqttraw.PUBLISH, b"hi"), (mqttraw.PUBACK, None)], got
    finally:
        c.close()
    # A name with ',' and '=' (saslname escapes) and another iteration count.
    c, ack = scram_connect(b, "b,o=b", "pw2")
    c.close()
    assert ack.reason == 0, ack
    assert metric(b, "tern_auth_scram_total", 'result="ok"') == 2


def test_wrong_password_and_unknown_user_get_0x87(scram_broker):
    b = scram_broker
    c, ack = scram_connect(b, "alice", "wrong")
    c.close()
    assert ack.reason == NOT_AUTHORIZED and AUTH_DATA not in ack.props, ack
    time.sleep(0.15)  # past the failure's back-off
    # An unknown user gets a server-first like a real one (16-byte salt, the
    # file's iteration count, the same salt each time), and fails at the proof.
    salts = []
    for pause in (0.25, 0.45):  # the back-off doubles with each failure
        c, sc, auth = begin(b, "mallory", "s3cret")
        assert auth.type == AUTH, auth
        attrs = dict(a.split("=", 1) for a in auth.props[AUTH_DATA].decode().split(","))
        assert len(base64.b64decode(attrs["s"])) == 16
        assert attrs["i"] in ("4096", "5000") and attrs["r"].startswith(sc.cnonce)
        salts.append(attrs["s"])
        c.auth(CONTINUE, {AUTH_METHOD: METHOD, AUTH_DATA: sc.final(auth.props[AUTH_DATA])})
        assert c.expect(CONNACK).reason == NOT_AUTHORIZED
        c.close()
        time.sleep(pause)
    assert salts[0] == salts[1]
    # A $7$ user (mosquitto_passwd) has no verifier: SCRAM fails for carol...
    c, ack = scram_connect(b, "carol", "old pass")
    c.close()
    assert ack.reason == NOT_AUTHORIZED
    time.sleep(0.85)
    assert metric(b, "tern_auth_scram_total", 'result="failed"') == 4
    # ... while passwords in CONNECT work for both kinds of entry.
    for user, pw in (("carol", "old pass"), ("alice", "s3cret")):
        p = PahoClient(b, version=V5)
        p.c.username_pw_set(user, pw)
        try:
            assert p.connect(expect_success=False)[1] == 0, user
        finally:
            p.close()


def test_tampered_exchanges_are_refused(scram_broker):
    b = scram_broker
    # The client's final with another nonce than the server's.
    c, sc, auth = begin(b, "alice", "s3cret")
    c.auth(CONTINUE, {AUTH_METHOD: METHOD,
                      AUTH_DATA: sc.final(auth.props[AUTH_DATA], nonce=sc.cnonce + "x")})
    assert c.expect(CONNACK).reason == NOT_AUTHORIZED
    c.close()
    time.sleep(0.15)
    # Channel binding asked for (SCRAM-SHA-256-PLUS is not offered).
    c = mqttraw.RawClient(b.host, b.port, version=5)
    c.connect(uid("cb"), props={AUTH_METHOD: METHOD,
                                AUTH_DATA: b"p=tls-unique,,n=alice,r=abc"},
              expect_connack=False)
    assert c.expect(CONNACK).reason == NOT_AUTHORIZED
    c.close()
    time.sleep(0.25)
    # CONNECT's User Name must be the SCRAM user.
    c, sc, reply = begin(b, "alice", "s3cret", username="carol")
    assert reply.type == CONNACK and reply.reason == NOT_AUTHORIZED, reply
    c.close()
    time.sleep(0.45)
    # AUTH with another method, or re-authentication: protocol errors, closed.
    c, sc, auth = begin(b, "alice", "s3cret")
    c.auth(CONTINUE, {AUTH_METHOD: "PLAIN", AUTH_DATA: b"x"})
    c.wait_closed()
    c.close()
    c, ack = scram_connect(b, "alice", "s3cret")
    assert ack.reason == 0
    c.auth(0x19, {AUTH_METHOD: METHOD, AUTH_DATA: b"n,,n=alice,r=abc"})
    got = c.wait_closed()
    assert [(p.type, p.reason) for p in got] == [(DISCONNECT, 0x82)], got
    c.close()


def test_other_methods_get_0x8c(scram_broker, start_broker):
    c = mqttraw.RawClient(scram_broker.host, scram_broker.port, version=5)
    ack = c.connect(uid("m"), props={AUTH_METHOD: "PLAIN", AUTH_DATA: b"\0alice\0s3cret"})
    c.close()
    assert ack.reason == BAD_METHOD
    assert metric(scram_broker, "tern_auth_scram_total", 'result="bad_method"') == 1
    # Without a password file there are no users: SCRAM itself is not offered.
    plain = start_broker()
    c = mqttraw.RawClient(plain.host, plain.port, version=5)
    ack = c.connect(uid("m"), props={AUTH_METHOD: METHOD, AUTH_DATA: b"n,,n=a,r=b"})
    c.close()
    assert ack.reason == BAD_METHOD


def test_exchange_is_bounded_by_connect_timeout(scram_broker):
    """A client that stops after server-first is closed by connect_timeout_ms
    (800 ms here) counted from the accept."""
    b = scram_broker
    t0 = time.monotonic()
    c, sc, auth = begin(b, "alice", "s3cret")
    assert auth.type == AUTH
    try:
        got = c.wait_closed(timeout=5.0)
    finally:
        c.close()
    assert all(p.type != CONNACK for p in got), got
    assert time.monotonic() - t0 >= 0.7
    assert "connect_timeout_ms" in b.log(current_run=True)


def js_scram(b, user, password):
    js = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")
    if not shutil.which("node") or not os.path.isdir(os.path.join(js, "node_modules",
                                                                  "mqtt")):
        pytest.skip("node or MQTT.js is not installed")
    env = dict(os.environ, TERN_HOST=b.host, TERN_PORT=str(b.port), TERN_USER=user,
               TERN_PASS=password)
    r = subprocess.run(["node", "scram.mjs"], cwd=js, env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_mqttjs_enhanced_authentication(scram_broker):
    """MQTT.js's AUTH support (handleAuth) with SCRAM written over node:crypto."""
    assert js_scram(scram_broker, "alice", "s3cret") == {"ok": True, "verified": True}
    assert js_scram(scram_broker, "b,o=b", "pw2") == {"ok": True, "verified": True}
    got = js_scram(scram_broker, "alice", "wrong")
    assert got.get("code") == NOT_AUTHORIZED, got
