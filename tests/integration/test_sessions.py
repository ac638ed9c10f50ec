"""Wills, keepalive, persistent sessions, in-flight redelivery, QoS 2 exactly once,
session expiry."""
import time

import pytest

import mqttraw as R
from helpers import IS_MOSQUITTO, V311, V5, connect_props, props, uid
from paho.mqtt.packettypes import PacketTypes

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]


def _watch(clients, topic, version=V5):
    w = clients.new(version=version)
    w.subscribe(topic, 1)
    return w


# --- wills -------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_will_published_on_abrupt_close(clients, version):
    w = _watch(clients, "will/+", version)
    c = clients.new(version=version,
                    will={"topic": "will/a", "payload": b"gone", "qos": 1})
    c.abort()
    m = w.get(3)
    assert (m.topic, m.payload) == ("will/a", b"gone")


@pytest.mark.parametrize("version", VERSIONS)
def test_no_will_on_normal_disconnect(clients, version):
    w = _watch(clients, "willn/+", version)
    c = clients.new(version=version,
                    will={"topic": "willn/a", "payload": b"gone", "qos": 1})
    c.disconnect()
    w.expect_nothing(0.8)


def test_will_retained_flag(clients):
    c = clients.new(version=V311,
                    will={"topic": "willr/a", "payload": b"r", "qos": 1, "retain": True})
    c.abort()
    time.sleep(0.5)
    late = clients.new(version=V311)
    late.subscribe("willr/a", 1)
    m = late.get(3)
    assert m.payload == b"r" and m.retain


def test_v5_will_delay_interval(clients):
    w = _watch(clients, "wd/+")
    c = clients.new(uid("wd"), clean=True,
                    connect_properties=connect_props(SessionExpiryInterval=30),
                    will={"topic": "wd/a", "payload": b"late", "qos": 1,
                          "properties": props(PacketTypes.WILLMESSAGE,
                                              WillDelayInterval=2)})
    t0 = time.monotonic()
    c.abort()
    w.expect_nothing(1.2)
    m = w.get(3.5)
    dt = time.monotonic() - t0
    assert m.payload == b"late"
    assert dt >= 1.8, "will published after %.2fs, before its 2 s delay" % dt


def test_v5_will_delay_cancelled_by_reconnect(clients):
    cid = uid("wdc")
    w = _watch(clients, "wdc/+")
    sp = connect_props(SessionExpiryInterval=30)
    c = clients.new(cid, clean=True, connect_properties=sp,
                    will={"topic": "wdc/a", "payload": b"late", "qos": 1,
                          "properties": props(PacketTypes.WILLMESSAGE,
                                              WillDelayInterval=2)})
    c.abort()
    time.sleep(0.3)
    c2 = clients.new(cid, clean=False, connect_properties=sp)
    assert c2.connack[0].get("session present")
    w.expect_nothing(2.8)


def test_keepalive_expiry_disconnects_and_publishes_will(clients, raw):
    w = _watch(clients, "ka/+", V311)
    s = raw(version=4)
    t0 = time.monotonic()
    ack = s.connect(uid("ka"), keepalive=1,
                    will={"topic": "ka/dead", "payload": b"timeout", "qos": 1})
    assert ack.reason == 0
    # silent from now on: the broker must close us after 1.5 x keepalive.
    # mosquitto 2.0.11 checks keepalives on a coarse (~5 s) timer, so it gets longer.
    limit = 7.0 if IS_MOSQUITTO else 2.6
    s.wait_closed(limit + 0.5)
    dt = time.monotonic() - t0
    assert dt <= limit, "closed only after %.2fs" % dt
    m = w.get(2)
    assert (m.topic, m.payload) == ("ka/dead", b"timeout")


def test_keepalive_pingreq_keeps_connection(raw):
    s = raw(version=4)
    assert s.connect(uid("kp"), keepalive=1).reason == 0
    for _ in range(4):
        time.sleep(0.5)
        s.pingreq()
        s.expect(R.PINGRESP, 2)


# --- persistent sessions ---------------------------------------------------------

def test_v311_persistent_session_queues_qos1_qos2_not_qos0(clients):
    cid = uid("ps")
    sub = clients.new(cid, version=V311, clean=False)
    sub.subscribe("ps/#", 2)
    sub.disconnect()
    pub = clients.new(version=V311)
    pub.publish("ps/q0", b"zero", 0)
    pub.publish("ps/q1", b"one", 1)
    pub.publish("ps/q2", b"two", 2)
    sub2 = clients.new(cid, version=V311, clean=False, connect=False)
    present, rc, _ = sub2.connect()
    assert present, "session_present must be 1"
    msgs = sub2.collect(2) + sub2.drain(0.5)
    got = [(m.topic, m.payload, m.qos) for m in msgs]
    assert got == [("ps/q1", b"one", 1), ("ps/q2", b"two", 2)], got
    # the subscription is still there
    pub.publish("ps/q0", b"live", 0)
    assert sub2.get().payload == b"live"


def test_v311_clean_session_discards_session(clients):
    cid = uid("cs")
    sub = clients.new(cid, version=V311, clean=False)
    sub.subscribe("cs/t", 1)
    sub.disconnect()
    clients.new(version=V311).publish("cs/t", b"queued", 1)
    c = clients.new(cid, version=V311, clean=True)
    assert not c.connack[0].get("session present")
    c.expect_nothing(0.5)
    c.disconnect()
    c2 = clients.new(cid, version=V311, clean=False)
    assert not c2.connack[0].get("session present")


@pytest.mark.tern_only  # mosquitto runs without persistence in this suite
@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_persistent_session_survives_restart(start_broker, kill):
    from helpers import PahoClient
    b = start_broker()
    cid = uid("psr")
    sub = PahoClient(b, cid, version=V311, clean=False)
    sub.connect()
    sub.subscribe("psr/t", 1)
    sub.disconnect()
    pub = PahoClient(b, version=V311)
    pub.connect()
    pub.publish("psr/t", b"kept", 1)
    pub.close()
    b.restart(kill=kill)
    sub2 = PahoClient(b, cid, version=V311, clean=False)
    try:
        present, _, _ = sub2.connect()
        assert present
        assert sub2.get().payload == b"kept"
    finally:
        sub2.close()


def test_v5_session_expiry(clients):
    cid = uid("se")
    c = clients.new(cid, clean=False, connect_properties=connect_props(SessionExpiryInterval=1))
    c.subscribe("se/t", 1)
    c.disconnect()
    clients.new().publish("se/t", b"x", 1)
    time.sleep(2.2)
    c2 = clients.new(cid, clean=False,
                     connect_properties=connect_props(SessionExpiryInterval=60))
    assert not c2.connack[0].get("session present"), "session must have expired"
    c2.expect_nothing(0.4)


def test_v5_session_kept_before_expiry(clients):
    cid = uid("sk")
    c = clients.new(cid, clean=False, connect_properties=connect_props(SessionExpiryInterval=5))
    c.subscribe("sk/t", 1)
    c.disconnect()
    clients.new().publish("sk/t", b"x", 1)
    c2 = clients.new(cid, clean=False,
                     connect_properties=connect_props(SessionExpiryInterval=5))
    assert c2.connack[0].get("session present")
    assert c2.get().payload == b"x"


def test_v5_session_expiry_zero_ends_at_disconnect(clients):
    cid = uid("s0")
    c = clients.new(cid, clean=False)  # no SessionExpiryInterval -> 0
    c.subscribe("s0/t", 1)
    c.disconnect()
    c2 = clients.new(cid, clean=False)
    assert not c2.connack[0].get("session present")


# --- in-flight redelivery, QoS 2 -----------------------------------------------

@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_unacked_qos1_redelivered_with_dup_on_reconnect(clients, raw, version):
    cid = uid("dup")
    cprops = {R.SESSION_EXPIRY: 60} if version == 5 else None
    s = raw(version=version)
    assert s.connect(cid, clean=False, props=cprops).reason == 0
    s.subscribe(1, [("dup/t", 1)])
    clients.new().publish("dup/t", b"m1", 1)
    p = s.expect(R.PUBLISH)
    assert p.payload == b"m1" and not p.dup
    s.close()  # no PUBACK
    s2 = raw(version=version)
    t0 = time.monotonic()
    ack = s2.connect(cid, clean=False, props=cprops)
    assert ack.reason == 0 and ack.session_present
    p2 = s2.expect(R.PUBLISH, 1.5)
    dt = time.monotonic() - t0
    assert p2.payload == b"m1" and p2.dup and p2.qos == 1
    assert p2.packet_id == p.packet_id
    assert dt < 1.0, "redelivery must be immediate, took %.2fs" % dt
    s2.puback(p2.packet_id)
    s2.expect_nothing(0.4)


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_qos2_exactly_once_across_reconnect_pubrel_resent(clients, raw, version):
    cid = uid("q2")
    cprops = {R.SESSION_EXPIRY: 60} if version == 5 else None
    s = raw(version=version)
    assert s.connect(cid, clean=False, props=cprops).reason == 0
    s.subscribe(1, [("q2/t", 2)])
    clients.new().publish("q2/t", b"once", 2)
    p = s.expect(R.PUBLISH)
    assert p.qos == 2 and p.payload == b"once"
    s.pubrec(p.packet_id)
    # the broker answers with PUBREL; we drop the connection before PUBCOMP
    rel = s.expect(R.PUBREL)
    assert rel.packet_id == p.packet_id
    s.close()
    s2 = raw(version=version)
    ack = s2.connect(cid, clean=False, props=cprops)
    assert ack.reason == 0 and ack.session_present
    rel2 = s2.recv(1.5)
    assert rel2.type == R.PUBREL and rel2.packet_id == p.packet_id, \
        "expected PUBREL (not the PUBLISH again), got %r" % rel2
    s2.pubcomp(rel2.packet_id)
    s2.expect_nothing(0.5)


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_qos2_pubrec_sent_then_disconnect_before_pubrel(clients, raw, version):
    """The subscriber's PUBREC was sent but the connection dropped before it got the
    PUBREL: on resume the broker sends PUBREL, never the PUBLISH again."""
    cid = uid("q2b")
    cprops = {R.SESSION_EXPIRY: 60} if version == 5 else None
    s = raw(version=version)
    assert s.connect(cid, clean=False, props=cprops).reason == 0
    s.subscribe(1, [("q2b/t", 2)])
    clients.new().publish("q2b/t", b"once", 2)
    p = s.expect(R.PUBLISH)
    s.pubrec(p.packet_id)
    s.close()  # immediately, PUBREL may or may not have been read
    time.sleep(0.2)
    s2 = raw(version=version)
    assert s2.connect(cid, clean=False, props=cprops).session_present
    got = []
    try:
        while True:
            got.append(s2.recv(0.8))
    except R.Timeout:
        pass
    assert [x.type for x in got] == [R.PUBREL], got


def test_inbound_qos2_duplicate_delivered_once(clients, raw):
    w = _watch(clients, "in2/t", V311)
    w2 = clients.new(version=V311)
    w2.subscribe("in2/t", 2)
    p = raw(version=4)
    assert p.connect(uid("in2")).reason == 0
    p.publish("in2/t", b"dupme", 2, packet_id=7)
    rec = p.expect(R.PUBREC)
    assert rec.packet_id == 7
    p.publish("in2/t", b"dupme", 2, packet_id=7, dup=True)
    rec2 = p.expect(R.PUBREC)
    assert rec2.packet_id == 7
    p.pubrel(7)
    assert p.expect(R.PUBCOMP).packet_id == 7
    assert [m.payload for m in [w.get()] + w.drain(0.5)] == [b"dupme"]
    assert [m.payload for m in [w2.get()] + w2.drain(0.2)] == [b"dupme"]


def test_inbound_qos2_duplicate_after_reconnect_delivered_once(clients, raw):
    w = _watch(clients, "in2r/t", V311)
    cid = uid("in2r")
    p = raw(version=4)
    assert p.connect(cid, clean=False).reason == 0
    p.publish("in2r/t", b"x", 2, packet_id=9)
    assert p.expect(R.PUBREC).packet_id == 9
    p.close()
    p2 = raw(version=4)
    assert p2.connect(cid, clean=False).session_present
    p2.publish("in2r/t", b"x", 2, packet_id=9, dup=True)
    assert p2.expect(R.PUBREC).packet_id == 9
    p2.pubrel(9)
    assert p2.expect(R.PUBCOMP).packet_id == 9
    assert [m.payload for m in [w.get()] + w.drain(0.5)] == [b"x"]


def test_qos1_puback_only_after_delivery_to_persistent_session(clients, raw):
    """A QoS 1 publish to an offline persistent session is acknowledged and then
    delivered on resume."""
    cid = uid("ack")
    s = raw(version=4)
    assert s.connect(cid, clean=False).reason == 0
    s.subscribe(1, [("ack/t", 1)])
    s.disconnect()
    s.close()
    p = raw(version=4)
    assert p.connect(uid("ackp")).reason == 0
    p.publish("ack/t", b"v", 1, packet_id=3)
    assert p.expect(R.PUBACK).packet_id == 3
    s2 = raw(version=4)
    assert s2.connect(cid, clean=False).session_present
    m = s2.expect(R.PUBLISH)
    assert m.payload == b"v"
    s2.puback(m.packet_id)
