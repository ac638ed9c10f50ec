"""Who may connect (issue 16): password files made by mosquitto_passwd, the
allow_anonymous rule, CONNACK codes per protocol version with paho, mosquitto_pub
and MQTT.js, SIGHUP reload, failed-attempt throttling and its metrics."""
import json
import os
import shutil
import signal
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest

from conftest import Broker, BrokerError, free_port, is_mosquitto, REPO
from helpers import PahoClient, V311, V5, uid, wait_until
from test_admin import ready_admin

pytestmark = pytest.mark.skipif(is_mosquitto(), reason="tern's configuration keys")

JS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")
TERNCTL = os.environ.get("TERNCTL_BIN", os.path.join(
    os.path.dirname(os.environ.get("TERN_BIN", os.path.join(REPO, "build", "ternd"))),
    "ternctl"))

BAD_V5, NOTAUTH_V5 = 0x86, 0x87
BAD_V3, NOTAUTH_V3 = 4, 5


def mosquitto_passwd(path, user, password, *opts):
    if not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto_passwd is not installed")
    args = ["mosquitto_passwd"] + list(opts) + ["-b", path, user, password]
    if not os.path.exists(path):
        args.insert(1, "-c")
    subprocess.run(args, check=True, capture_output=True, timeout=20)


@pytest.fixture
def pwfile(tmp_path):
    """alice (PBKDF2, $7$) and carol (the older $6$), as mosquitto_passwd writes them."""
    p = str(tmp_path / "passwd")
    mosquitto_passwd(p, "alice", "s3cret")
    mosquitto_passwd(p, "carol", "old pass", "-H", "sha512")
    with open(p) as f:
        text = f.read()
    assert "alice:$7$" in text and "carol:$6$" in text, text
    return p


def rc_int(rc):
    return rc if isinstance(rc, int) else rc.value


def paho_connect(b, version, user=None, password=None):
    """The CONNACK code paho saw (0 = accepted)."""
    c = PahoClient(b, version=version)
    if user is not None:
        c.c.username_pw_set(user, password)
    try:
        _, rc, _ = c.connect(expect_success=False)
        return rc_int(rc)
    finally:
        c.close()


def metric(b, name, labels):
    a = ready_admin(b)
    status, _, body = a.req("GET", "/metrics")
    assert status == 200
    key = "%s{%s}" % (name, labels) if labels else name
    for line in body.decode().splitlines():
        if line.startswith(key + " "):
            return int(line.split()[-1])
    raise AssertionError("no %s in /metrics" % key)


def test_mosquitto_passwd_file_paho(start_broker, pwfile):
    b = start_broker(password_file=pwfile)
    for v, bad, notauth in ((V5, BAD_V5, NOTAUTH_V5), (V311, BAD_V3, NOTAUTH_V3)):
        assert paho_connect(b, v, "alice", "s3cret") == 0
        assert paho_connect(b, v, "carol", "old pass") == 0
        assert paho_connect(b, v, "alice", "wrong") == bad
        time.sleep(0.15)  # past the first failure's 100 ms back-off
        assert paho_connect(b, v, "mallory", "s3cret") == bad
        time.sleep(0.25)
        assert paho_connect(b, v) == notauth  # anonymous: refused with a password file
        time.sleep(0.45)
    assert metric(b, "tern_auth_total", 'result="ok"') == 4
    assert metric(b, "tern_auth_total", 'result="bad_credentials"') == 4
    assert metric(b, "tern_auth_total", 'result="anonymous_refused"') == 2


def test_mosquitto_pub_with_passwords(start_broker, pwfile):
    if not shutil.which("mosquitto_pub"):
        pytest.skip("mosquitto_pub is not installed")
    b = start_broker(password_file=pwfile)

    def pub(version, *cred):
        r = subprocess.run(["mosquitto_pub", "-h", b.host, "-p", str(b.port), "-V", version,
                            "-t", "t/auth", "-m", "x", "-i", uid("mp")] + list(cred),
                           capture_output=True, text=True, timeout=20)
        time.sleep(0.45)  # no throttling between the cases
        return r.returncode, r.stderr

    assert pub("mqttv311", "-u", "alice", "-P", "s3cret")[0] == 0
    assert pub("mqttv5", "-u", "carol", "-P", "old pass")[0] == 0
    rc, err = pub("mqttv311", "-u", "alice", "-P", "nope")
    assert rc != 0 and "bad user name or password" in err.lower(), err
    rc, err = pub("mqttv5", "-u", "alice", "-P", "nope")
    assert rc != 0 and "bad user name or password" in err.lower(), err
    rc, err = pub("mqttv311")
    assert rc != 0 and "not authori" in err.lower(), err
    rc, err = pub("mqttv5")
    assert rc != 0 and "not authori" in err.lower(), err
    # mosquitto_sub: refused at CONNECT, it exits with the broker's reason.
    for version in ("mqttv311", "mqttv5"):
        r = subprocess.run(["mosquitto_sub", "-h", b.host, "-p", str(b.port), "-V", version,
                            "-t", "t/#", "-C", "1", "-W", "5", "-u", "carol", "-P", "x"],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode != 0 and "bad user name or password" in r.stderr.lower(), (
            version, r.stderr)
        time.sleep(0.45)


def js_connect(b, version, user=None, password=None):
    env = dict(os.environ, TERN_HOST=b.host, TERN_PORT=str(b.port), TERN_V=str(version))
    if user is not None:
        env["TERN_USER"], env["TERN_PASS"] = user, password
    r = subprocess.run(["node", "auth.mjs"], cwd=JS_DIR, env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_mqttjs_with_passwords(start_broker, pwfile):
    if not shutil.which("node") or not os.path.isdir(os.path.join(JS_DIR, "node_modules",
                                                                  "mqtt")):
        pytest.skip("node or MQTT.js is not installed")
    b = start_broker(password_file=pwfile)
    assert js_connect(b, 5, "alice", "s3cret") == {"ok": True}
    assert js_connect(b, 4, "carol", "old pass") == {"ok": True}
    assert js_connect(b, 5, "alice", "bad")["code"] == BAD_V5
    time.sleep(0.15)
    assert js_connect(b, 4, "nobody", "bad")["code"] == BAD_V3
    assert js_connect(b, 5)["code"] == NOTAUTH_V5
    assert js_connect(b, 4)["code"] == NOTAUTH_V3


def test_loopback_quick_start_is_anonymous(start_broker):
    b = start_broker()
    assert paho_connect(b, V5) == 0
    assert paho_connect(b, V311) == 0


def test_non_loopback_listener_refuses_anonymous(tmp_path):
    # Bound to every address, reached (and only reached) over loopback. The
    # setting overrides the fixture's --listen 127.0.0.1:PORT.
    port = free_port()
    b = Broker(str(tmp_path / "any"), {"listen": "0.0.0.0:%d" % port}, port=port)
    try:
        b.start()
        assert paho_connect(b, V5) == NOTAUTH_V5
        assert paho_connect(b, V311) == NOTAUTH_V3
        assert "allow_anonymous" not in b.log(current_run=True)
    finally:
        b.stop()
        assert not b.sanitizer_report()


def test_allow_anonymous_true_with_password_file(start_broker, pwfile):
    b = start_broker(password_file=pwfile, allow_anonymous="true")
    assert paho_connect(b, V5) == 0
    # A user name is still checked.
    assert paho_connect(b, V5, "alice", "wrong") == BAD_V5
    time.sleep(0.15)
    assert paho_connect(b, V5, "alice", "s3cret") == 0


def test_allow_anonymous_false_on_loopback(start_broker):
    b = start_broker(allow_anonymous="false")
    assert paho_connect(b, V5) == NOTAUTH_V5
    # No password file: a user name cannot be checked, so it is refused.
    assert paho_connect(b, V311, "alice", "x") == BAD_V3


def test_failures_are_throttled_per_address(start_broker, pwfile):
    b = start_broker(password_file=pwfile)
    assert paho_connect(b, V5, "alice", "bad") == BAD_V5
    # At once again: refused without a check, even with the right password.
    assert paho_connect(b, V5, "alice", "s3cret") == BAD_V5
    assert metric(b, "tern_auth_total", 'result="throttled"') >= 1
    time.sleep(0.15)
    assert paho_connect(b, V5, "alice", "s3cret") == 0


def test_sighup_reloads_password_file(start_broker, pwfile):
    b = start_broker(password_file=pwfile)
    assert paho_connect(b, V5, "dave", "new") == BAD_V5
    mosquitto_passwd(pwfile, "dave", "new")
    b.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload: password file" in b.log(current_run=True),
               msg="the reload in the log")
    time.sleep(0.15)
    assert paho_connect(b, V5, "dave", "new") == 0
    # A broken file is refused and the users loaded before still work.
    with open(pwfile, "a") as f:
        f.write("eve:plaintext\n")
    b.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "keeping the 3 users" in b.log(current_run=True),
               msg="the failed reload in the log")
    assert paho_connect(b, V5, "dave", "new") == 0
    assert metric(b, "tern_auth_reloads_total", 'result="failed"') == 1


def test_bad_password_file_stops_start(tmp_path):
    p = tmp_path / "bad"
    p.write_text("# users\nalice:secret\n")
    b = Broker(str(tmp_path / "b"), {"password_file": str(p)})
    try:
        with pytest.raises(BrokerError, match="line 2: not a"):
            b.start()
    finally:
        b.stop()


def test_ternctl_passwd_writes_what_mosquitto_reads(start_broker, tmp_path):
    if not os.access(TERNCTL, os.X_OK):
        pytest.skip("ternctl not built at %s" % TERNCTL)
    p = str(tmp_path / "passwd")
    r = subprocess.run([TERNCTL, "passwd", p, "zoe"], input="pw of zoe\n",
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([TERNCTL, "passwd", "--iterations", "20000", p, "yan"],
                       input="yan pw\n", capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    with open(p) as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("zoe:$7$1000$") and lines[1].startswith("yan:$7$20000$")
    assert oct(os.stat(p).st_mode & 0o777) == "0o600"
    # Replacing a user keeps one line for it.
    r = subprocess.run([TERNCTL, "passwd", p, "zoe"], input="second\n",
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    with open(p) as f:
        assert sum(1 for ln in f if ln.startswith("zoe:")) == 1
    b = start_broker(password_file=p)
    assert paho_connect(b, V5, "zoe", "second") == 0
    assert paho_connect(b, V311, "yan", "yan pw") == 0
    # And Mosquitto's own tool accepts the file (it rewrites it with -U only for
    # plain text; adding a user keeps our lines as they are).
    mosquitto_passwd(p, "xavier", "x")
    with open(p) as f:
        assert any(ln.startswith("yan:$7$20000$") for ln in f)


# --- ACL -------------------------------------------------------------------------------

import mqttraw  # noqa: E402
from mqttraw import PUBACK, PUBREC  # noqa: E402

ACL = """# anonymous clients: the rules before the first user
topic read public/#

user alice
topic readwrite home/#
topic deny home/secret
topic write cmd/+

user carol
topic readwrite #

pattern readwrite devices/%c/#
pattern read users/%u/in
"""


@pytest.fixture
def acl_broker(start_broker, pwfile, tmp_path):
    p = tmp_path / "acl"
    p.write_text(ACL)
    b = start_broker(password_file=pwfile, acl_file=str(p), allow_anonymous="true")
    b.acl_path = str(p)
    return b


CRED = {"alice": "s3cret", "carol": "old pass"}


def raw(b, version, user=None, client_id=None, **kw):
    c = mqttraw.RawClient(b.host, b.port, version=version)
    ack = c.connect(client_id or uid("acl"), username=user,
                    password=CRED.get(user) if user else None, **kw)
    assert ack.reason == 0, ack
    return c


def sub_code(c, flt, pid=1):
    return c.subscribe(pid, [(flt, 1)]).codes[0]


def test_acl_publish_v5_refused_with_0x87(acl_broker):
    b = acl_broker
    reader = raw(b, 5, "carol")
    alice = raw(b, 5, "alice")
    try:
        assert sub_code(reader, "#") == 1
        alice.publish("public/news", b"no", qos=1, packet_id=1)
        assert alice.expect(PUBACK).reason == 0x87
        alice.publish("home/secret", b"no", qos=2, packet_id=2)
        assert alice.expect(PUBREC).reason == 0x87
        alice.publish("public/qos0", b"no", qos=0)
        alice.publish("home/kitchen", b"yes", qos=1, packet_id=3)
        assert alice.expect(PUBACK).reason == 0
        got = reader.recv_publishes(1)
        assert [m.topic for m in got] == ["home/kitchen"]
        reader.expect_nothing(0.3)
        assert metric(b, "tern_acl_denied_total", 'access="write"') == 3
    finally:
        reader.close()
        alice.close()


def test_acl_publish_v311_acked_not_delivered(acl_broker):
    b = acl_broker
    reader = raw(b, 5, "carol")
    alice = raw(b, 4, "alice")
    try:
        assert sub_code(reader, "#") == 1
        alice.publish("public/news", b"no", qos=1, packet_id=1)
        assert alice.expect(PUBACK).packet_id == 1  # acknowledged, as Mosquitto does
        alice.publish("home/secret", b"no", qos=2, packet_id=2)
        assert alice.expect(PUBREC).packet_id == 2
        alice.publish("cmd/go", b"yes", qos=1, packet_id=3)
        alice.expect(PUBACK)
        got = reader.recv_publishes(1)
        assert [m.topic for m in got] == ["cmd/go"]
        reader.expect_nothing(0.3)
    finally:
        reader.close()
        alice.close()


def test_acl_subscribe_codes_per_version(acl_broker):
    b = acl_broker
    for v, refused in ((5, 0x87), (4, 0x80)):
        alice = raw(b, v, "alice")
        anon = raw(b, v)
        try:
            assert sub_code(alice, "home/kitchen") == 1
            assert sub_code(alice, "home/+/x") == 1
            # Beside `topic deny home/secret`: granted, home/secret filtered per
            # message (test_acl_delivery.py).
            assert sub_code(alice, "home/#") == 1
            assert sub_code(alice, "home/secret") == refused
            assert sub_code(alice, "cmd/go") == refused  # write only
            assert sub_code(alice, "public/#") == refused  # anonymous rules are not hers
            assert sub_code(alice, "#") == refused
            assert sub_code(anon, "public/#") == 1
            assert sub_code(anon, "home/kitchen") == refused
            assert sub_code(anon, "#") == refused
        finally:
            alice.close()
            anon.close()


def test_acl_shared_subscriptions_check_the_inner_filter(acl_broker):
    alice = raw(acl_broker, 5, "alice")
    try:
        assert sub_code(alice, "$share/g/home/kitchen") == 1
        assert sub_code(alice, "$share/g/public/#") == 0x87
        assert sub_code(alice, "$share/home/secret") == 0x87  # group "home"
    finally:
        alice.close()


def test_acl_retained_only_where_readable(acl_broker):
    b = acl_broker
    carol = raw(b, 5, "carol")
    alice = raw(b, 5, "alice")
    try:
        for i, t in enumerate(("home/kitchen", "home/secret", "public/x")):
            carol.publish(t, b"r-" + t.encode(), qos=1, packet_id=i + 1, retain=True)
            assert carol.expect(PUBACK).reason == 0
        assert sub_code(alice, "home/kitchen") == 1
        got = alice.recv_publishes(1)
        assert [(m.topic, m.retain) for m in got] == [("home/kitchen", True)]
        assert sub_code(alice, "home/secret", pid=2) == 0x87
        assert sub_code(alice, "public/+", pid=3) == 0x87
        alice.expect_nothing(0.3)
    finally:
        carol.close()
        alice.close()


def test_acl_patterns_with_hostile_ids(acl_broker):
    b = acl_broker
    good = raw(b, 5, "alice", client_id="dev1")
    try:
        good.publish("devices/dev1/t", b"x", qos=1, packet_id=9)
        assert good.expect(PUBACK).reason == 0
        good.publish("devices/dev2/t", b"x", qos=1, packet_id=10)
        assert good.expect(PUBACK).reason == 0x87
        assert sub_code(good, "devices/dev1/#") == 1
        assert sub_code(good, "devices/dev2/#") == 0x87
        assert sub_code(good, "devices/+/t") == 0x87
        assert sub_code(good, "users/alice/in") == 1
        assert sub_code(good, "users/carol/in") == 0x87
    finally:
        good.close()
    for hostile in ("#", "+", "a/b", "dev1/#", "+/+"):
        c = raw(b, 5, "alice", client_id=hostile)
        try:
            assert sub_code(c, "devices/#") == 0x87, hostile
            assert sub_code(c, "devices/+/#") == 0x87, hostile
            assert sub_code(c, "devices/%s/#" % hostile.split("/")[0].replace(
                "#", "x").replace("+", "y")) == 0x87, hostile
            c.publish("devices/a/b/t", b"x", qos=1, packet_id=5)
            assert c.expect(PUBACK).reason == 0x87, hostile
            # Her own rules still work.
            assert sub_code(c, "home/kitchen") == 1, hostile
        finally:
            c.close()
    # An anonymous client gets no %u pattern.
    anon = raw(b, 5, client_id="anon-dev")
    try:
        assert sub_code(anon, "devices/anon-dev/x") == 1
        assert sub_code(anon, "users//in") == 0x87
    finally:
        anon.close()


def test_acl_will_not_allowed_is_not_published(acl_broker):
    b = acl_broker
    reader = raw(b, 5, "carol")
    try:
        assert sub_code(reader, "#") == 1
        bad = raw(b, 5, "alice", will={"topic": "public/will", "payload": b"bad"})
        bad.sock.close()  # no DISCONNECT: the will is due
        good = raw(b, 5, "alice", will={"topic": "home/will", "payload": b"good"})
        good.sock.close()
        got = reader.recv_publishes(1)
        assert [(m.topic, m.payload) for m in got] == [("home/will", b"good")]
        reader.expect_nothing(0.5)
        assert "will on a topic the ACL does not allow" in b.log(current_run=True)
    finally:
        reader.close()


def test_acl_resumed_session_rechecked(acl_broker):
    """The node that resumes a session checks its stored subscriptions against its
    own ACL (here: the ACL changed on SIGHUP, as when another node's differs)."""
    b = acl_broker
    props = {mqttraw.SESSION_EXPIRY: 600}
    alice = raw(b, 5, "alice", client_id="resume-1", clean=False, props=props)
    assert sub_code(alice, "home/kitchen") == 1
    assert sub_code(alice, "home/garden", pid=2) == 1
    alice.disconnect()
    alice.close()
    with open(b.acl_path, "w") as f:
        f.write(ACL.replace("topic deny home/secret", "topic deny home/kitchen"))
    b.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload: ACL file" in b.log(current_run=True), msg="ACL reload")
    carol = raw(b, 5, "carol")
    alice = raw(b, 5, "alice", client_id="resume-1", clean=False, props=props)
    try:
        # The removal is proposed at the resume; proposals of one node apply in order,
        # so the PUBLISHes below come after it.
        wait_until(lambda: metric(b, "tern_acl_resume_unsubscribed_total", "") == 1,
                   msg="the resume check")
        for i, t in enumerate(("home/kitchen", "home/garden")):
            carol.publish(t, b"x", qos=1, packet_id=i + 1)
            carol.expect(PUBACK)
        got = alice.recv_publishes(1)
        assert [m.topic for m in got] == ["home/garden"]
        alice.expect_nothing(0.4)
        assert "stored subscriptions this node's ACL does not allow" in b.log(True)
    finally:
        carol.close()
        alice.close()


# --- admin API token ---------------------------------------------------------------

def test_admin_token_required_except_health(start_broker, tmp_path):
    import http.client
    from test_admin import admin_addr
    token = "t0ken-" + os.urandom(12).hex()
    tf = tmp_path / "admin-token"
    tf.write_text(token + "\n")
    b = start_broker(admin_token_file=str(tf))
    addr = admin_addr(b)
    host, port = addr.rsplit(":", 1)

    def get(path, auth=None):
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            c.request("GET", path, headers={"Authorization": auth} if auth else {})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    wait_until(lambda: get("/health")[0] == 200, msg="GET /health 200 without a token")
    st, hdr, body = get("/cluster")
    assert st == 401 and hdr.get("WWW-Authenticate", "").startswith("Bearer"), (st, hdr)
    assert "bearer token" in json.loads(body)["error"]
    assert get("/cluster", "Bearer wrong-" + token)[0] == 401
    assert get("/cluster", "Bearer " + token[:-1])[0] == 401
    assert get("/cluster", "Basic " + token)[0] == 401
    assert get("/metrics", "Bearer " + token + "x")[0] == 401
    st, _, body = get("/cluster", "Bearer " + token)
    assert st == 200 and json.loads(body)["node_id"] == 1
    st, _, body = get("/metrics", "bearer " + token)
    assert st == 200 and b"tern_admin_unauthorized_total 5" in body
    if not os.access(TERNCTL, os.X_OK):
        pytest.skip("ternctl not built at %s" % TERNCTL)
    env = {k: v for k, v in os.environ.items() if k != "TERN_ADMIN_TOKEN"}

    def ctl(*args, **extra):
        return subprocess.run([TERNCTL, "--admin", addr] + list(args) + ["status"],
                              capture_output=True, text=True, timeout=20,
                              env=dict(env, **extra))
    r = ctl()
    assert r.returncode == 1 and "bearer token" in r.stderr, r.stdout + r.stderr
    r = ctl("--token-file", str(tf))
    assert r.returncode == 0 and "health: ready" in r.stdout, r.stdout + r.stderr
    r = ctl(TERN_ADMIN_TOKEN=token)
    assert r.returncode == 0, r.stdout + r.stderr
    r = ctl(TERN_ADMIN_TOKEN="nope-" + token)
    assert r.returncode == 1


def test_admin_token_file_too_short_stops_start(tmp_path):
    tf = tmp_path / "short"
    tf.write_text("abc\n")
    b = Broker(str(tmp_path / "b"), {"admin_token_file": str(tf)})
    try:
        with pytest.raises(BrokerError, match="the token must be 16 to 512 bytes"):
            b.start()
    finally:
        b.stop()


def test_cluster_digests_in_admin_api(start_broker, pwfile, tmp_path):
    import hashlib
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    b = start_broker(password_file=pwfile, acl_file=str(acl))
    a = ready_admin(b)
    doc = a.get("/cluster")
    with open(pwfile, "rb") as f:
        assert doc["auth"]["password_file_sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert doc["auth"]["acl_file_sha256"] == hashlib.sha256(ACL.encode()).hexdigest()
    assert doc["auth"]["allow_anonymous"] is False


# --- limits ------------------------------------------------------------------------

def test_subscriptions_max_per_session(start_broker):
    b = start_broker(subscriptions_max=3)
    for v, refused in ((5, 0x97), (4, 0x80)):
        c = raw(b, v)
        try:
            codes = c.subscribe(1, [("a/1", 1), ("a/2", 1), ("a/3", 1), ("a/4", 1)]).codes
            assert codes == [1, 1, 1, refused], codes
            assert sub_code(c, "a/2", pid=2) == 1  # a replacement, not a new one
            assert sub_code(c, "a/5", pid=3) == refused
            c.send(mqttraw.packet(mqttraw.UNSUBSCRIBE, 2, b"\x00\x04" +
                                  (b"\x00" if v == 5 else b"") + mqttraw.s("a/1")))
            c.expect(mqttraw.UNSUBACK)
            assert sub_code(c, "a/5", pid=5) == 1
        finally:
            c.close()
    assert metric(b, "tern_subscriptions_refused_total", "") == 4


def closed_at_once(b, timeout=3.0):
    """Whether a new TCP connection is closed by the broker before any CONNECT."""
    import socket
    s = socket.create_connection((b.host, b.port), timeout=timeout)
    try:
        s.settimeout(timeout)
        try:
            return s.recv(1) == b""
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
    finally:
        s.close()


def test_connections_per_address_max(start_broker):
    b = start_broker(connections_per_address_max=3, connect_rate_per_address=0,
                     connect_timeout_ms=60000)
    held = [raw(b, 5) for _ in range(2)]
    import socket
    third = socket.create_connection((b.host, b.port), timeout=3)  # no CONNECT yet
    try:
        assert closed_at_once(b, timeout=1.0)  # the 4th from 127.0.0.1
        held.pop().close()
        wait_until(lambda: not closed_at_once(b, timeout=0.3), msg="a slot again")
        assert metric(b, "tern_connections_limited_total", 'limit="per_address"') >= 1
    finally:
        third.close()
        for c in held:
            c.close()


def test_connect_rate_per_address(start_broker):
    import socket
    b = start_broker(connect_rate_per_address=5, connections_per_address_max=0,
                     connect_timeout_ms=60000)
    time.sleep(1.05)  # a fresh one-second window for 127.0.0.1 (the fixture probed)
    t0 = time.monotonic()
    socks = [socket.create_connection((b.host, b.port), timeout=3) for _ in range(8)]
    opened_s = time.monotonic() - t0
    try:
        closed = []
        for s in socks:
            s.settimeout(0.5)
            try:
                closed.append(s.recv(1) == b"")
            except socket.timeout:
                closed.append(False)
            except ConnectionResetError:
                closed.append(True)
        if opened_s < 0.9:  # all eight within one window: exactly three refused
            assert sum(closed) == 3, (closed, opened_s)
        else:
            assert any(closed), (closed, opened_s)
        assert metric(b, "tern_connections_limited_total", 'limit="rate"') == sum(closed)
    finally:
        for s in socks:
            s.close()
    time.sleep(1.05)
    assert paho_connect(b, V5) == 0  # a new second, a new budget


def test_ternctl_status_flags_nodes_whose_files_differ(start_broker, pwfile, tmp_path):
    if not os.access(TERNCTL, os.X_OK):
        pytest.skip("ternctl not built at %s" % TERNCTL)
    from test_admin import admin_addr
    acl1, acl2 = tmp_path / "acl1", tmp_path / "acl2"
    acl1.write_text(ACL)
    acl2.write_text(ACL + "topic read extra/#\n")
    a = start_broker(password_file=pwfile, acl_file=str(acl1))
    b = start_broker(password_file=pwfile, acl_file=str(acl1))
    c = start_broker(password_file=pwfile, acl_file=str(acl2))
    addrs = [admin_addr(x) for x in (a, b, c)]
    for x in (a, b, c):
        ready_admin(x)

    def status(*which):
        args = [TERNCTL]
        for w in which:
            args += ["--admin", w]
        return subprocess.run(args + ["status"], capture_output=True, text=True,
                              timeout=30)
    r = status(addrs[0], addrs[1])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("same") == 2 and "DIFFER" not in r.stdout, r.stdout
    r = status(*addrs)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [ln for ln in r.stdout.splitlines() if addrs[2] in ln]
    assert lines and "DIFFER" in lines[0], r.stdout
    assert "1 node(s) enforce other password/ACL files" in r.stdout
    r = status(addrs[0])
    assert r.returncode == 0 and "auth: password_file " in r.stdout, r.stdout


# --- a client certificate as the user name -------------------------------------------

def test_use_identity_as_username_with_acl(start_broker, pwfile, tmp_path):
    """An mqtts listener with use_identity_as_username: the certificate's CN
    (device-1) is the user, no password needed, and the ACL's `user device-1`
    rules apply to it."""
    import test_tls
    if not shutil.which("openssl"):
        pytest.skip("no openssl CLI")
    pki = str(tmp_path / "pki")
    os.makedirs(pki)
    subprocess.run(["sh", test_tls.MAKE_CERTS, pki], check=True, timeout=60)
    acl = tmp_path / "acl"
    acl.write_text(ACL + "\nuser device-1\ntopic readwrite dev/device-1/#\n")
    port = free_port()
    lst = test_tls.mqtts(pki, port, ca_file=test_tls.p(pki, "ca.pem"),
                         require_certificate=True, use_identity_as_username=True)
    b = start_broker(password_file=pwfile, acl_file=str(acl), listeners=json.dumps([lst]))
    reader = raw(b, 5, "carol")
    dev = test_tls.Paho(pki, port, cert="client", cid="dev-1")  # no user name, no password
    try:
        assert sub_code(reader, "dev/#") == 1
        dev.pub("dev/other/x", b"denied")  # 3.1.1: acknowledged, not delivered
        dev.pub("dev/device-1/x", b"allowed")
        got = reader.recv_publishes(1)
        assert [(m.topic, m.payload) for m in got] == [("dev/device-1/x", b"allowed")]
        reader.expect_nothing(0.3)
        assert metric(b, "tern_acl_denied_total", 'access="write"') == 1
    finally:
        dev.close()
        reader.close()
