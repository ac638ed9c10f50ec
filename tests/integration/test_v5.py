"""MQTT 5 features: subscription options and identifiers, properties, topic alias,
receive maximum, maximum packet size, message expiry."""
import time

import pytest

import mqttraw as R
from helpers import connect_props, prop, pub_props, props, sub_opts, uid
from paho.mqtt.packettypes import PacketTypes


def test_subscription_identifier_forwarded(clients):
    sub = clients.new()
    sub.subscribe("sid/t", 1, properties=props(PacketTypes.SUBSCRIBE,
                                               SubscriptionIdentifier=42))
    pub = clients.new()
    pub.publish("sid/t", b"x", 1)
    m = sub.get()
    assert prop(m, "SubscriptionIdentifier") == [42]


def test_subscription_identifiers_two_matching_subscriptions(clients):
    sub = clients.new()
    sub.subscribe("sid2/+", 1, properties=props(PacketTypes.SUBSCRIBE,
                                                SubscriptionIdentifier=1))
    sub.subscribe("sid2/#", 1, properties=props(PacketTypes.SUBSCRIBE,
                                                SubscriptionIdentifier=2))
    sub.subscribe("sid2/a", 1)  # no identifier
    pub = clients.new()
    pub.publish("sid2/a", b"x", 1)
    msgs = [sub.get()] + sub.drain(0.5)
    assert msgs
    ids = set()
    for m in msgs:
        ids.update(prop(m, "SubscriptionIdentifier", []))
    # one copy with both ids (MQTT-3.3.4-3) or one copy per subscription with its id
    assert ids == {1, 2}


@pytest.mark.tern_only  # mosquitto sends one copy per subscription, each with its id
def test_subscription_identifiers_single_copy_carries_both(clients):
    sub = clients.new()
    sub.subscribe("sid3/+", 1, properties=props(PacketTypes.SUBSCRIBE,
                                                SubscriptionIdentifier=7))
    sub.subscribe("sid3/#", 1, properties=props(PacketTypes.SUBSCRIBE,
                                                SubscriptionIdentifier=9))
    pub = clients.new()
    pub.publish("sid3/a", b"x", 1)
    msgs = [sub.get()] + sub.drain(0.5)
    assert len(msgs) == 1
    assert sorted(prop(msgs[0], "SubscriptionIdentifier")) == [7, 9]


def test_no_local_does_not_echo(clients):
    c = clients.new()
    c.subscribe("nl5/t", options=sub_opts(1, no_local=True))
    c.publish("nl5/t", b"own", 1)
    c.expect_nothing(0.4)
    watcher = clients.new()
    watcher.subscribe("nl5/t", 1)
    c.publish("nl5/t", b"own2", 1)
    assert watcher.get().payload == b"own2"
    c.expect_nothing(0.2)


def test_retain_as_published(clients):
    rap = clients.new()
    rap.subscribe("rap/t", options=sub_opts(1, rap=True))
    norap = clients.new()
    norap.subscribe("rap/t", options=sub_opts(1, rap=False))
    pub = clients.new()
    pub.publish("rap/t", b"r", 1, retain=True)
    pub.publish("rap/t", b"n", 1, retain=False)
    a = rap.collect(2)
    b = norap.collect(2)
    assert [(m.payload, bool(m.retain)) for m in a] == [(b"r", True), (b"n", False)]
    assert [(m.payload, bool(m.retain)) for m in b] == [(b"r", False), (b"n", False)]


def test_retain_handling_0_sends_on_every_subscribe(clients):
    clients.new().publish("rh0/t", b"ret", 1, retain=True)
    sub = clients.new()
    sub.subscribe("rh0/t", options=sub_opts(1, rh=0))
    assert sub.get().payload == b"ret"
    sub.subscribe("rh0/t", options=sub_opts(1, rh=0))
    assert sub.get().payload == b"ret"


def test_retain_handling_1_sends_only_for_new_subscription(clients):
    clients.new().publish("rh1/t", b"ret", 1, retain=True)
    sub = clients.new()
    sub.subscribe("rh1/t", options=sub_opts(1, rh=1))
    assert sub.get().payload == b"ret"
    sub.subscribe("rh1/t", options=sub_opts(1, rh=1))
    sub.expect_nothing(0.4)


def test_retain_handling_2_never_sends(clients):
    clients.new().publish("rh2/t", b"ret", 1, retain=True)
    sub = clients.new()
    sub.subscribe("rh2/#", options=sub_opts(1, rh=2))
    sub.expect_nothing(0.4)
    clients.new().publish("rh2/t", b"live", 1)
    assert sub.get().payload == b"live"


def test_message_properties_forwarded(clients):
    sub = clients.new()
    sub.subscribe("mp/t", 1)
    pub = clients.new()
    p = pub_props(UserProperty=[("k1", "v1"), ("k2", "v2"), ("k1", "again")],
                  ContentType="application/json", ResponseTopic="mp/reply",
                  CorrelationData=b"\x00\x01corr", PayloadFormatIndicator=1)
    pub.publish("mp/t", b'{"a":1}', 1, properties=p)
    m = sub.get()
    assert prop(m, "UserProperty") == [("k1", "v1"), ("k2", "v2"), ("k1", "again")]
    assert prop(m, "ContentType") == "application/json"
    assert prop(m, "ResponseTopic") == "mp/reply"
    assert prop(m, "CorrelationData") == b"\x00\x01corr"
    assert prop(m, "PayloadFormatIndicator") == 1


def test_topic_alias_client_to_server(clients):
    pub = clients.new()
    tam = getattr(pub.connack[2], "TopicAliasMaximum", 0)
    assert tam >= 1, "broker must accept topic aliases (TopicAliasMaximum=%r)" % tam
    sub = clients.new()
    sub.subscribe("ta/#", 1)
    pub.publish("ta/one", b"1", 1, properties=pub_props(TopicAlias=1))
    pub.publish("", b"2", 1, properties=pub_props(TopicAlias=1))
    pub.publish("ta/two", b"3", 1, properties=pub_props(TopicAlias=1))  # re-map
    pub.publish("", b"4", 1, properties=pub_props(TopicAlias=1))
    got = [(m.topic, m.payload) for m in sub.collect(4)]
    assert got == [("ta/one", b"1"), ("ta/one", b"2"), ("ta/two", b"3"), ("ta/two", b"4")]
    assert not pub.disconnected.is_set()


def test_topic_alias_unknown_alias_is_protocol_error(raw):
    c = raw(version=5)
    assert c.connect(uid("tab")).reason == 0
    c.publish("", b"x", 1, packet_id=1, props={R.TOPIC_ALIAS: 5})
    got = c.wait_closed(3)
    discs = [p for p in got if p.type == R.DISCONNECT]
    assert not discs or discs[0].reason in (0x82, 0x94), got


def _receive_max_subscriber(clients, raw, topic):
    s = raw(version=5)
    assert s.connect(uid("rm"), props={R.RECEIVE_MAXIMUM: 2}).reason == 0
    s.subscribe(1, [(topic, 1)])
    pub = clients.new()
    for i in range(6):
        pub.publish(topic, b"%d" % i, 1)
    first = s.recv_publishes(2)
    assert [p.payload for p in first] == [b"0", b"1"]
    s.expect_nothing(0.5)  # window full: nothing more until an ack
    return s, first


def test_receive_maximum_limits_inflight(clients, raw):
    s, first = _receive_max_subscriber(clients, raw, "rm/t")
    got = list(first)
    deadline = time.monotonic() + 5
    acked = 0
    while len(got) < 6 and time.monotonic() < deadline:
        while acked < len(got):
            s.puback(got[acked].packet_id)
            acked += 1
        got += s.recv_publishes(1)
    assert [p.payload for p in got] == [b"%d" % i for i in range(6)]


@pytest.mark.tern_only  # mosquitto 2.0.11 sends 2 more after a single PUBACK (3 in flight)
def test_receive_maximum_window_slides_one_per_ack(clients, raw):
    s, first = _receive_max_subscriber(clients, raw, "rm2/t")
    s.puback(first[0].packet_id)
    nxt = s.recv_publishes(1)
    assert nxt[0].payload == b"2"
    s.expect_nothing(0.3)
    s.puback(first[1].packet_id)
    s.puback(nxt[0].packet_id)
    rest = s.recv_publishes(2)
    assert [p.payload for p in rest] == [b"3", b"4"]


def test_maximum_packet_size_of_client_respected(clients):
    small = clients.new(connect_properties=connect_props(MaximumPacketSize=100))
    small.subscribe("mps/t", 1)
    other = clients.new()
    other.subscribe("mps/t", 1)
    pub = clients.new()
    pub.publish("mps/t", b"B" * 500, 1)
    pub.publish("mps/t", b"small", 1)
    assert [m.payload for m in other.collect(2)] == [b"B" * 500, b"small"]
    m = small.get()
    assert m.payload == b"small", "a packet over the client's maximum must be dropped"
    small.expect_nothing(0.2)
    assert not small.disconnected.is_set()


@pytest.mark.tern_only  # uses tern's max_packet_size config key
def test_publish_over_broker_max_packet_size_disconnects_0x95(start_broker):
    b = start_broker(max_packet_size=1024)
    c = R.RawClient(b.host, b.port, version=5)
    try:
        ack = c.connect(uid("big"))
        assert ack.reason == 0
        assert ack.props.get(R.MAXIMUM_PACKET_SIZE) == 1024
        c.publish("big/t", b"x" * 2000, 1, packet_id=1)
        got = c.wait_closed(3)
        discs = [p for p in got if p.type == R.DISCONNECT]
        assert discs and discs[0].reason == 0x95, got
    finally:
        c.close()
    from helpers import assert_serves
    assert_serves(b)


def test_publish_over_broker_max_packet_size_closes(start_broker):
    b = start_broker(max_packet_size=1024, mosquitto_conf=["max_packet_size 1024"])
    c = R.RawClient(b.host, b.port, version=5)
    try:
        assert c.connect(uid("big")).reason == 0
        c.publish("big/t", b"x" * 2000, 1, packet_id=1)
        got = c.wait_closed(3)
        assert all(p.type == R.DISCONNECT and p.reason == 0x95 for p in got), got
    finally:
        c.close()


def test_message_expiry_drops_queued_message(clients):
    cid = uid("mx")
    sp = connect_props(SessionExpiryInterval=60)
    sub = clients.new(cid, clean=False, connect_properties=sp)
    sub.subscribe("mx/t", 1)
    sub.disconnect()
    pub = clients.new()
    pub.publish("mx/t", b"short", 1, properties=pub_props(MessageExpiryInterval=1))
    pub.publish("mx/t", b"long", 1, properties=pub_props(MessageExpiryInterval=60))
    time.sleep(2.2)
    sub2 = clients.new(cid, clean=False, connect_properties=sp, connect=False)
    present, _, _ = sub2.connect()
    assert present
    msgs = [sub2.get()] + sub2.drain(0.5)
    assert [m.payload for m in msgs] == [b"long"], "expired message must be dropped"
    left = prop(msgs[0], "MessageExpiryInterval")
    assert left is not None and left <= 58, \
        "forwarded expiry must be decremented by the time queued, got %r" % left


def test_message_expiry_on_retained(clients):
    pub = clients.new()
    pub.publish("mxr/t", b"gone", 1, retain=True,
                properties=pub_props(MessageExpiryInterval=1))
    time.sleep(1.6)
    sub = clients.new()
    sub.subscribe("mxr/t", 1)
    sub.expect_nothing(0.4)

