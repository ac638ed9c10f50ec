"""Retained messages."""
import pytest

from helpers import V311, V5

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_delivered_on_subscribe_with_retain_flag(clients, version):
    pub = clients.new(version=version)
    pub.publish("r/a", b"kept", 1, retain=True)
    sub = clients.new(version=version)
    sub.subscribe("r/a", 1)
    m = sub.get()
    assert (m.topic, m.payload, m.retain, m.qos) == ("r/a", b"kept", True, 1)
    sub.expect_nothing(0.2)


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_flag_cleared_for_live_delivery(clients, version):
    sub = clients.new(version=version)
    sub.subscribe("rl/a", 1)
    pub = clients.new(version=version)
    pub.publish("rl/a", b"live", 1, retain=True)
    m = sub.get()
    # MQTT-3.3.1-9: retain is 0 when forwarded to an established subscription
    # (v5 default Retain As Published = 0 gives the same)
    assert m.payload == b"live" and not m.retain


def test_retained_replaced(clients):
    pub = clients.new()
    pub.publish("r/rep", b"one", 1, retain=True)
    pub.publish("r/rep", b"two", 1, retain=True)
    sub = clients.new()
    sub.subscribe("r/rep", 1)
    assert sub.get().payload == b"two"
    sub.expect_nothing(0.3)


def test_retained_deleted_by_empty_payload(clients):
    pub = clients.new(version=V311)
    pub.publish("r/del", b"one", 1, retain=True)
    pub.publish("r/del", b"", 1, retain=True)
    sub = clients.new(version=V311)
    sub.subscribe("r/#", 1)
    sub.expect_nothing(0.5)


def test_retained_delivered_on_wildcard_subscribe(clients):
    pub = clients.new()
    for t in ("rw/a", "rw/b/c", "rw/d", "other/x"):
        pub.publish(t, t.encode(), 1, retain=True)
    sub = clients.new()
    sub.subscribe("rw/#", 1)
    msgs = sub.collect(3)
    assert sorted(m.topic for m in msgs) == ["rw/a", "rw/b/c", "rw/d"]
    assert all(m.retain for m in msgs)
    sub.expect_nothing(0.3)
    sub2 = clients.new()
    sub2.subscribe("rw/+", 0)
    msgs = sub2.collect(2)
    assert sorted(m.topic for m in msgs) == ["rw/a", "rw/d"]
    assert all(m.retain and m.qos == 0 for m in msgs)


def test_retained_delivered_again_on_resubscribe(clients):
    pub = clients.new(version=V311)
    pub.publish("rr/a", b"again", 1, retain=True)
    sub = clients.new(version=V311)
    sub.subscribe("rr/a", 1)
    assert sub.get().payload == b"again"
    sub.subscribe("rr/a", 1)
    m = sub.get()
    assert m.payload == b"again" and m.retain


def test_retained_qos0_publish_is_retained(clients):
    pub = clients.new()
    pub.publish("r0/a", b"zero", 0, retain=True)
    # a QoS 1 round trip on the same connection orders after the QoS 0 publish
    pub.publish("r0/sync", b"", 1)
    sub = clients.new()
    sub.subscribe("r0/a", 2)
    m = sub.get()
    assert m.payload == b"zero" and m.qos == 0 and m.retain


@pytest.mark.tern_only  # the mosquitto config of these tests has persistence false
@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_retained_survive_restart(start_broker, kill):
    from helpers import PahoClient
    b = start_broker()
    pub = PahoClient(b, version=V311)
    pub.connect()
    pub.publish("rs/a", b"durable", 1, retain=True)
    pub.close()
    b.restart(kill=kill)
    sub = PahoClient(b, version=V311)
    sub.connect()
    try:
        sub.subscribe("rs/a", 1)
        assert sub.get().payload == b"durable"
    finally:
        sub.close()
