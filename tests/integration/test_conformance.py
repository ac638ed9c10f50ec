"""Conformance with MQTT 3.1, 3.1.1 and 5.0 where tern used to depart from it
(issue 13, and the delivery-before-commit items of issue 11). One test per item,
raw packets on the wire so every byte the broker sends is checked.
docs/conformance.md is the statement these tests back.
"""
import shutil
import socket
import struct
import subprocess
import time

import pytest

import mqttraw as R
from cluster import tern_cluster_fixture  # noqa: F401  (the tern_cluster fixture)
from helpers import uid

# tern's decisions where the specifications leave a choice (docs/conformance.md),
# and tern's own settings and cluster: not a suite to run against mosquitto.
pytestmark = pytest.mark.tern_only


def unsubscribe(c, packet_id, filters, props=None):
    body = struct.pack("!H", packet_id)
    if c.version == 5:
        body += R.encode_props(props)
    for f in filters:
        body += R.s(f)
    c.send(R.packet(R.UNSUBSCRIBE, 2, body))


def connect_v31(client_id, clean=True):
    body = R.s("MQIsdp") + bytes([3, 0x02 if clean else 0]) + struct.pack("!H", 60)
    body += R.s(client_id)
    return R.packet(R.CONNECT, 0, body)


def raw_connack_bytes(c, timeout=5.0):
    """The CONNACK's fixed header and body, exactly as sent."""
    deadline = time.monotonic() + timeout
    buf = b""
    while len(buf) < 4 and time.monotonic() < deadline:
        try:
            d = c.sock.recv(4 - len(buf))
        except socket.timeout:
            continue
        if not d:
            break
        buf += d
    return buf


def recv_all(c, quiet=0.5, limit=5.0):
    """Every packet until nothing arrives for `quiet` seconds (bounded by limit)."""
    out = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            out.append(c.recv(quiet))
        except R.Timeout:
            break
        except R.Closed:
            break
    return out


# --- 1. UNSUBSCRIBE on a session that never subscribed -------------------------------

@pytest.mark.parametrize("version", [4, 5])
def test_unsubscribe_without_subscription_gets_unsuback(raw, version):
    c = raw(version)
    assert c.connect(uid("unsub")).reason == 0
    unsubscribe(c, 7, ["never/a", "never/b"])
    p = c.expect(R.UNSUBACK)
    assert p.packet_id == 7
    if version == 5:
        assert p.codes == [0x11, 0x11]  # no subscription existed
    # still connected
    c.pingreq()
    c.expect(R.PINGRESP)


# --- 2. Read your own retained write ---------------------------------------------------

@pytest.mark.parametrize("qos", [0, 1])
def test_subscribe_sees_own_earlier_retained_publishes(raw, qos):
    topic = uid("ryw")
    c = raw(4)
    c.connect(uid("ryw"))
    for i in range(3):
        c.publish("%s/%d" % (topic, i), b"v%d" % i, qos=qos, packet_id=i + 1 if qos else None,
                  retain=True)
    # at once, without waiting for the PUBACKs
    c.subscribe(10, [(topic + "/#", 0)], wait=False)
    got = recv_all(c, quiet=1.0)
    retained = sorted(p.topic for p in got if p.type == R.PUBLISH and p.retain)
    assert retained == ["%s/%d" % (topic, i) for i in range(3)], got
    for i in range(3):
        c.publish("%s/%d" % (topic, i), b"", qos=0, retain=True)


def test_subscribe_sees_retained_acked_on_other_node(tern_cluster):
    c = tern_cluster
    c.wait_ready()
    topic = uid("rywc")
    pub = c.raw(1, 4)
    pub.connect(uid("p"))
    for i in range(5):
        pub.publish("%s/%d" % (topic, i), b"x", qos=1, packet_id=i + 1, retain=True)
    for i in range(5):
        pub.expect(R.PUBACK)
    for n in (2, 3):
        sub = c.raw(n, 4)
        sub.connect(uid("s"))
        sub.subscribe(1, [(topic + "/#", 0)], wait=False)
        got = recv_all(sub, quiet=1.0)
        assert len([p for p in got if p.type == R.PUBLISH and p.retain]) == 5, (n, got)
    for i in range(5):
        pub.publish("%s/%d" % (topic, i), b"", qos=1, packet_id=20 + i, retain=True)
        pub.expect(R.PUBACK)


# --- 3. Session Present after taking over a clean session ------------------------------

@pytest.mark.parametrize("version", [4, 5])
def test_session_present_0_after_taking_over_clean_session(raw, version):
    cid = uid("sp")
    a = raw(version)
    assert a.connect(cid, clean=True).session_present is False
    b = raw(version)
    props = {R.SESSION_EXPIRY: 60} if version == 5 else None
    ack = b.connect(cid, clean=False, props=props)
    assert ack.reason == 0
    assert ack.session_present is False  # nothing was resumed [MQTT-3.2.2-3]
    # and a real resume still says 1
    b.disconnect()
    b.close()
    c = raw(version)
    time.sleep(0.2)
    assert c.connect(cid, clean=False, props=props).session_present is True
    c.disconnect()
    d = raw(version)
    time.sleep(0.2)
    d.connect(cid, clean=True)
    d.disconnect()


# --- 4. Will Delay and a new connection ------------------------------------------------

def test_will_delay_cancelled_by_clean_start_reconnect(raw):
    cid, topic = uid("wd"), uid("wd/t")
    watch = raw(5)
    watch.connect(uid("watch"))
    watch.subscribe(1, [(topic, 0)])
    a = raw(5)
    a.connect(cid, props={R.SESSION_EXPIRY: 60},
              will={"topic": topic, "payload": b"gone", "props": {R.WILL_DELAY: 2}})
    a.close()  # no DISCONNECT: the will is owed after 2 s
    time.sleep(0.3)
    b = raw(5)
    assert b.connect(cid, clean=True).reason == 0  # a new connection within the delay
    watch.expect_nothing(3.0)  # [MQTT-3.1.3-9]: the will must not be sent
    b.disconnect()


def test_will_delay_zero_still_published_on_takeover(raw):
    cid, topic = uid("wd0"), uid("wd0/t")
    watch = raw(5)
    watch.connect(uid("watch"))
    watch.subscribe(1, [(topic, 0)])
    a = raw(5)
    a.connect(cid, props={R.SESSION_EXPIRY: 60}, will={"topic": topic, "payload": b"w"})
    b = raw(5)
    b.connect(cid, clean=True)
    assert watch.expect(R.PUBLISH).payload == b"w"
    b.disconnect()


# --- 5. MQTT 3.1 (MQIsdp) --------------------------------------------------------------

@pytest.mark.parametrize("cid,rc", [("", 2), ("x" * 24, 2), ("x" * 23, 0), ("a", 0)])
def test_mqtt31_client_id_length(raw, cid, rc):
    c = raw(4)
    c.send(connect_v31(cid))
    b = raw_connack_bytes(c)
    assert b[:2] == b"\x20\x02", b
    assert b[3] == rc, b
    if rc:
        c.wait_closed(3.0)


def test_mqtt31_connack_reserved_byte_is_zero(raw):
    cid = uid("v31")[:23]
    a = raw(4)
    a.send(connect_v31(cid, clean=False))
    assert raw_connack_bytes(a) == b"\x20\x02\x00\x00"
    a.send(b"\xe0\x00")
    a.close()
    time.sleep(0.2)
    b = raw(4)
    b.send(connect_v31(cid, clean=False))  # the session exists now; 3.1 cannot say so
    assert raw_connack_bytes(b) == b"\x20\x02\x00\x00"
    b.send(b"\xe0\x00")
    c = raw(4)
    time.sleep(0.2)
    c.send(connect_v31(cid, clean=True))
    assert raw_connack_bytes(c) == b"\x20\x02\x00\x00"


# --- 6. Deep topics --------------------------------------------------------------------

DEEP = "/".join(["d"] * 1100)


def test_deep_filter_refused_in_suback(raw):
    for version, code in ((4, 0x80), (5, 0x8F)):
        c = raw(version)
        c.connect(uid("deep"))
        p = c.subscribe(1, [(DEEP, 0), ("ok/#", 0)])
        assert p.codes == [code, 0], (version, p)


def test_deep_retained_publish_refused(raw):
    # 5.0 QoS 1: PUBACK with topic name invalid, nothing stored
    c = raw(5)
    c.connect(uid("deep"))
    c.publish(DEEP, b"x", qos=1, packet_id=1, retain=True)
    p = c.expect(R.PUBACK)
    assert p.reason == 0x90, p
    # 3.1.1 has no negative PUBACK: the connection is closed, no success
    d = raw(4)
    d.connect(uid("deep"))
    d.publish(DEEP, b"x", qos=1, packet_id=1, retain=True)
    got = d.wait_closed(3.0)
    assert not [p for p in got if p.type == R.PUBACK], got


# --- 7. $SYS is the broker's -----------------------------------------------------------

def test_client_publish_to_sys_refused(start_broker):
    b = start_broker(sys_interval_s=1)
    sub = R.RawClient(b.host, b.port, 4)
    p5 = R.RawClient(b.host, b.port, 5)
    p4 = R.RawClient(b.host, b.port, 4)
    try:
        sub.connect(uid("sys"))
        sub.subscribe(1, [("$SYS/broker/uptime", 0)])
        p5.connect(uid("f5"))
        p4.connect(uid("f4"))
        p5.publish("$SYS/broker/uptime", b"forged5", qos=1, packet_id=1)
        assert p5.expect(R.PUBACK).reason == 0x87  # not authorized
        p5.publish("$SYS/broker/uptime", b"forged5q0", qos=0)
        p4.publish("$SYS/broker/uptime", b"forged4", qos=1, packet_id=1)
        p4.expect(R.PUBACK)
        p4.publish("$SYS/x", b"forged4r", qos=0, retain=True)
        got = recv_all(sub, quiet=1.5, limit=4.0)
        payloads = [p.payload for p in got if p.type == R.PUBLISH]
        assert payloads and not [x for x in payloads if x.startswith(b"forged")], payloads
        late = R.RawClient(b.host, b.port, 4)
        try:
            late.connect(uid("late"))
            late.subscribe(1, [("$SYS/x", 0)])
            late.expect_nothing(0.5)
        finally:
            late.close()
    finally:
        for c in (sub, p5, p4):
            c.close()


# --- 8. DISCONNECT with a reason, then a drain -----------------------------------------

def test_disconnect_reason_then_orderly_close_for_a_writing_client(start_broker):
    """Receive Maximum exceeded: DISCONNECT 0x93, and a client that is still writing
    (its PUBRELs) must not get a reset: the broker half-closes and drains."""
    b = start_broker(receive_maximum=2)
    c = R.RawClient(b.host, b.port, 5, timeout=5.0)
    try:
        c.connect(uid("rm"))
        c.send(b"".join(R.publish_packet("rm/t", b"x", qos=2, packet_id=i + 1, version=5)
                        for i in range(3)))
        got = []
        while not [p for p in got if p.type == R.DISCONNECT]:
            got.append(c.recv(5.0))
        assert got[-1].reason == 0x93, got
        # the client, not yet aware, goes on writing for half a second
        for i in range(10):
            c.sock.sendall(R.packet(R.PUBREL, 2, struct.pack("!H", i + 1)))
            time.sleep(0.05)
        c.sock.settimeout(5.0)
        assert c.sock.recv(100) == b""  # an orderly end (FIN), not ECONNRESET
    finally:
        c.close()


def test_drain_after_disconnect_is_bounded(start_broker):
    b = start_broker(receive_maximum=1)
    c = R.RawClient(b.host, b.port, 5, timeout=5.0)
    try:
        c.connect(uid("rmb"))
        c.send(R.publish_packet("rmb/t", b"x", qos=2, packet_id=1, version=5) +
               R.publish_packet("rmb/t", b"x", qos=2, packet_id=2, version=5))
        c.sock.setblocking(False)
        t0 = time.monotonic()
        closed = False
        while time.monotonic() - t0 < 8 and not closed:  # keep writing, never stop
            try:
                c.sock.send(b"\xc0\x00" * 512)
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            try:
                if c.sock.recv(65536) == b"":
                    closed = True
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed = True
            time.sleep(0.01)
        assert closed, "broker kept a connection that never stops writing"
    finally:
        c.close()


# --- 9. Wrong-type acknowledgements ----------------------------------------------------

def _deliver(raw, version, qos, persistent):
    topic = uid("ack/t")
    s = raw(version)
    props = {R.SESSION_EXPIRY: 60} if (version == 5 and persistent) else None
    s.connect(uid("acks"), clean=not persistent, props=props)
    s.subscribe(1, [(topic, qos)])
    p = raw(version)
    p.connect(uid("accp"))
    p.publish(topic, b"m", qos=qos, packet_id=1)
    if qos == 2:
        p.expect(R.PUBREC)
        p.pubrel(1)
        p.expect(R.PUBCOMP)
    else:
        p.expect(R.PUBACK)
    m = s.expect(R.PUBLISH)
    assert m.qos == qos
    return s, m


@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("qos,wrong", [(1, "pubrec"), (1, "pubcomp"), (2, "puback"),
                                       (2, "pubcomp")])
def test_wrong_type_ack_is_protocol_error(raw, version, qos, wrong, persistent):
    s, m = _deliver(raw, version, qos, persistent)
    getattr(s, wrong)(m.packet_id)
    got = s.wait_closed(3.0)
    if version == 5:
        d = [p for p in got if p.type == R.DISCONNECT]
        assert d and d[0].reason == 0x82, got


@pytest.mark.parametrize("version", [4, 5])
def test_ack_of_unknown_id_is_ignored(raw, version):
    s, m = _deliver(raw, version, 1, False)
    s.puback(m.packet_id)
    s.puback(m.packet_id)  # late duplicate
    s.pubcomp(999)
    s.pingreq()
    s.expect(R.PINGRESP)


@pytest.mark.parametrize("version", [4, 5])
def test_pubrec_of_unknown_id_gets_pubrel(raw, version):
    c = raw(version)
    c.connect(uid("prec"))
    c.pubrec(4242)
    p = c.expect(R.PUBREL)
    assert p.packet_id == 4242
    if version == 5:
        assert p.reason == 0x92  # packet identifier not found


# --- issue 11: clean subscribers see only what is committed ----------------------------

def test_qos2_dup_resend_before_commit_delivered_once(raw):
    topic = uid("dup2")
    s = raw(4)
    s.connect(uid("s"))
    s.subscribe(1, [(topic, 2)])
    p = raw(4)
    p.connect(uid("p"), clean=False)  # persistent publisher: the id is held in the log
    one = R.publish_packet(topic, b"once", qos=2, packet_id=9, retain=True)
    dup = R.publish_packet(topic, b"once", qos=2, packet_id=9, retain=True, dup=True)
    p.send(one + dup)  # the re-send arrives before the first copy commits
    got = recv_all(s, quiet=1.0)
    pubs = [x for x in got if x.type == R.PUBLISH]
    assert len(pubs) == 1, got
    p.expect(R.PUBREC)
    p.pubrel(9)
    p.expect(R.PUBCOMP)
    p.publish(topic, b"", qos=0, retain=True)
    p.disconnect()


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_retained_reaches_clean_subscriber_only_after_commit(raw, qos):
    """A retained PUBLISH goes to clean subscribers from the commit, in the
    publisher's order with the non-retained ones around it (held behind it)."""
    topic = uid("ord")
    s = raw(4)
    s.connect(uid("s"))
    s.subscribe(1, [(topic, 0)])  # QoS 0: no in-flight window to wait on
    p = raw(4)
    p.connect(uid("p"))
    pkts = b""
    for i in range(30):
        pkts += R.publish_packet(topic, b"%d" % i, qos=qos, packet_id=i + 1 if qos else None,
                                 retain=(i % 3 == 0))
    p.send(pkts)
    got = [x for x in recv_all(s, quiet=1.0) if x.type == R.PUBLISH]
    assert [int(x.payload) for x in got] == list(range(30)), got
    p.publish(topic, b"", qos=0, retain=True)


def test_retained_not_delivered_before_commit(tern_cluster):
    """Two of three nodes gone: a retained PUBLISH on the last one cannot commit,
    so its clean subscriber must not get it (nor the publisher a PUBACK)."""
    c = tern_cluster
    c.wait_ready()
    topic = uid("nocommit")
    sub = c.raw(1, 4)
    sub.connect(uid("s"))
    sub.subscribe(1, [(topic, 0)])
    pub = c.raw(1, 4)
    pub.connect(uid("p"))
    c.kill(2)
    c.kill(3)
    pub.publish(topic, b"not durable", qos=1, packet_id=1, retain=True)
    try:
        p = sub.recv(1.5)
    except (R.Timeout, R.Closed):
        p = None
    assert p is None or p.type != R.PUBLISH, p
    c.start(2)
    c.start(3)


# --- 10. MQTT 5 property errors, on the wire (the codec cases: tests/unit/test_codec.c) --

@pytest.mark.parametrize("props,reason", [
    ({R.PAYLOAD_FORMAT: 2}, 0x82),             # payload format indicator outside 0/1
    ({R.TOPIC_ALIAS: 0}, 0x82),                # topic alias 0
    ({R.TOPIC_ALIAS: 65535}, 0x94),            # over the broker's topic alias maximum
    ([(R.CONTENT_TYPE, "a"), (R.CONTENT_TYPE, "b")], 0x82),  # a duplicate property
    ({R.SUBSCRIPTION_ID: 1}, 0x82),            # only the server sends it
])
def test_v5_property_errors_disconnect_with_reason(raw, props, reason):
    c = raw(5)
    ack = c.connect(uid("prop"))
    assert ack.props[R.TOPIC_ALIAS_MAXIMUM] < 65535
    c.publish("p/t", b"x", qos=1, packet_id=1, props=props)
    got = c.wait_closed(3.0)
    d = [p for p in got if p.type == R.DISCONNECT]
    assert d and d[0].reason == reason, got
    assert not [p for p in got if p.type == R.PUBACK], got


@pytest.mark.skipif(not (shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub")),
                    reason="mosquitto_pub/mosquitto_sub not installed")
def test_mqtt31_with_mosquitto_clients(broker):
    """An independent 3.1 client: mosquitto_sub/_pub -V mqttv31, a QoS 1 round trip,
    and a client id over 23 characters refused."""
    topic = uid("v31/t")
    sub = subprocess.Popen(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port),
                            "-V", "mqttv31", "-i", "v31sub", "-t", topic, "-q", "1",
                            "-C", "1", "-W", "10"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "v31sub" not in broker.log():
            time.sleep(0.05)
        time.sleep(0.3)  # its SUBSCRIBE follows the CONNACK
        pub = subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port),
                              "-V", "mqttv31", "-i", "v31pub", "-t", topic, "-q", "1",
                              "-m", "hello31"], capture_output=True, text=True, timeout=10)
        assert pub.returncode == 0, pub.stderr
        out, err = sub.communicate(timeout=10)
        assert out.strip() == "hello31", (out, err)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait(5)
    bad = subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port),
                          "-V", "mqttv31", "-i", "x" * 24, "-t", topic, "-m", "no"],
                         capture_output=True, text=True, timeout=10)
    assert bad.returncode != 0
    assert "identifier rejected" in (bad.stderr + bad.stdout).lower(), bad
