"""Malformed and hostile input over raw sockets. After each, the broker must still
serve a normal client (assert_serves)."""
import socket
import struct
import threading
import time

import pytest

import mqttraw as R
from helpers import V311, PahoClient, assert_serves, uid


def _closed_with(got, allowed):
    """The packets read before the close are at most one DISCONNECT with an allowed
    reason (v5 may send one; a plain close is fine)."""
    assert all(p.type == R.DISCONNECT for p in got), got
    for p in got:
        assert p.reason in allowed, "DISCONNECT reason %#x not in %r" % (
            p.reason, [hex(a) for a in allowed])


def test_garbage_bytes_closed(broker, raw):
    c = raw()
    c.send(b"\xde\xad\xbe\xef" * 64)
    c.wait_closed(3)
    other = raw()
    other.send(bytes(range(256)))
    other.wait_closed(3)
    assert_serves(broker)


def test_first_packet_not_connect(broker, raw):
    c = raw()
    c.publish("x/y", b"no connect", 0)
    got = c.wait_closed(3)
    assert not any(p.type == R.CONNACK for p in got), got
    c2 = raw()
    c2.pingreq()
    c2.wait_closed(3)
    assert_serves(broker)


def test_v311_second_connect_closes(broker, raw):
    c = raw(version=4)
    assert c.connect(uid("cc")).reason == 0
    c.send(R.connect_packet(uid("cc2"), 4))
    got = c.wait_closed(3)
    assert not any(p.type == R.CONNACK for p in got), got
    assert_serves(broker)


def test_v5_second_connect_protocol_error(broker, raw):
    c = raw(version=5)
    assert c.connect(uid("cc5")).reason == 0
    c.send(R.connect_packet(uid("cc6"), 5))
    got = c.wait_closed(3)
    _closed_with(got, (0x82,))
    assert_serves(broker)


@pytest.mark.tern_only  # mosquitto 2.0.11 just closes the socket
def test_v5_second_connect_sends_disconnect_0x82(broker, raw):
    c = raw(version=5)
    assert c.connect(uid("cc7")).reason == 0
    c.send(R.connect_packet(uid("cc8"), 5))
    got = c.wait_closed(3)
    assert [p.reason for p in got if p.type == R.DISCONNECT] == [0x82], got


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_invalid_remaining_length_five_bytes(broker, raw, version):
    c = raw(version=version)
    assert c.connect(uid("vbi")).reason == 0
    c.send(b"\x30\xff\xff\xff\xff\x01" + b"\x00" * 16)
    got = c.wait_closed(3)
    _closed_with(got, (0x81,))
    assert_serves(broker)


def test_invalid_remaining_length_before_connect(broker, raw):
    c = raw()
    c.send(b"\x10\xff\xff\xff\xff\x7f")
    c.wait_closed(3)
    assert_serves(broker)


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_invalid_utf8_topic(broker, raw, version):
    c = raw(version=version)
    assert c.connect(uid("utf")).reason == 0
    w = PahoClient(broker, version=V311)
    w.connect()
    try:
        w.subscribe("#", 0)
        # overlong encoding of '/', invalid UTF-8 (MQTT-1.5.3-1)
        c.send(R.packet(R.PUBLISH, 0, R.s(b"bad/\xc0\xaf") +
                        (b"\x00" if version == 5 else b"") + b"x"))
        got = c.wait_closed(3)
        _closed_with(got, (0x81, 0x82, 0x90))
        w.expect_nothing(0.3)
    finally:
        w.close()
    assert_serves(broker)


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_utf8_null_character_in_topic(broker, raw, version):
    c = raw(version=version)
    assert c.connect(uid("nul")).reason == 0
    c.send(R.publish_packet(b"a\x00b".decode(), b"x", 0, version=version))
    got = c.wait_closed(3)
    _closed_with(got, (0x81, 0x82, 0x90))
    assert_serves(broker)


@pytest.mark.parametrize("topic", ["a/+/b", "a/#", "#"])
@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_publish_topic_with_wildcard(broker, raw, version, topic):
    c = raw(version=version)
    assert c.connect(uid("wc")).reason == 0
    c.publish(topic, b"x", 1, packet_id=1)
    got = c.wait_closed(3)
    # MQTT-3.3.2-2: a Topic Name must not contain wildcards; 0x90 Topic Name invalid
    _closed_with(got, (0x81, 0x82, 0x90))
    assert not any(p.type == R.PUBACK for p in got)
    assert_serves(broker)


@pytest.mark.tern_only  # tern answers a wildcard topic name with 0x90 (Topic Name invalid)
def test_v5_publish_topic_with_wildcard_disconnect_0x90(broker, raw):
    c = raw(version=5)
    assert c.connect(uid("wc90")).reason == 0
    c.publish("a/+", b"x", 0)
    got = c.wait_closed(3)
    assert [p.reason for p in got if p.type == R.DISCONNECT] == [0x90], got


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
@pytest.mark.parametrize("case", [
    "subscribe_flags_0", "pubrel_flags_0", "connect_reserved_flag",
    # mosquitto 2.0.11 neither answers nor closes on a PINGREQ with flags 1
    pytest.param("pingreq_flags", marks=pytest.mark.tern_only),
    "disconnect_flags"])
def test_reserved_flag_bits(broker, raw, version, case):
    c = raw(version=version)
    if case == "connect_reserved_flag":
        # connect flags bit 0 is reserved and must be 0 (MQTT-3.1.2-3)
        c.send(R.connect_packet(uid("rf"), version, flags_override=0x03))
        got = c.wait_closed(3)
        assert not any(p.type == R.CONNACK and p.reason == 0 for p in got), got
        assert_serves(broker)
        return
    assert c.connect(uid("rf")).reason == 0
    if case == "subscribe_flags_0":
        body = struct.pack("!H", 1) + (b"\x00" if version == 5 else b"") + R.s("a/b") + b"\x01"
        c.send(R.packet(R.SUBSCRIBE, 0, body))
    elif case == "pubrel_flags_0":
        c.publish("a/b", b"x", 2, packet_id=5)
        assert c.expect(R.PUBREC).packet_id == 5
        c.send(R.packet(R.PUBREL, 0, struct.pack("!H", 5)))
    elif case == "pingreq_flags":
        c.send(b"\xc1\x00")
    elif case == "disconnect_flags":
        c.send(b"\xe4\x00")
    got = c.wait_closed(3)
    assert not any(p.type in (R.SUBACK, R.PUBCOMP, R.PINGRESP) for p in got), got
    _closed_with([p for p in got if p.type == R.DISCONNECT], (0x81, 0x82))
    assert_serves(broker)


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_publish_qos3(broker, raw, version):
    c = raw(version=version)
    assert c.connect(uid("q3")).reason == 0
    body = R.s("a/b") + struct.pack("!H", 1) + (b"\x00" if version == 5 else b"") + b"x"
    c.send(R.packet(R.PUBLISH, 0x06, body))
    got = c.wait_closed(3)
    _closed_with(got, (0x81, 0x82))
    assert_serves(broker)


def test_subscribe_invalid_filter_rejected_or_closed(broker, raw):
    c = raw(version=5)
    assert c.connect(uid("bf")).reason == 0
    c.subscribe(3, [("a/#/b", 1)], wait=False)
    try:
        p = c.recv(3)
    except R.Closed:
        return assert_serves(broker)
    if p.type == R.SUBACK:
        assert p.codes == [0x8F], p  # Topic Filter invalid
    else:
        assert p.type == R.DISCONNECT and p.reason in (0x81, 0x82, 0x8F), p
    assert_serves(broker)


def test_half_open_partial_packet_does_not_block_others(broker, raw):
    c = raw()
    full = R.connect_packet(uid("half"), 4)
    c.send(full[:5])  # then stall
    assert_serves(broker)
    c2 = raw()
    assert c2.connect(uid("half2")).reason == 0
    c.send(full[5:9])  # still incomplete
    assert_serves(broker)


@pytest.mark.tern_only  # tern config key connect_timeout_ms
def test_half_open_closed_after_connect_timeout(start_broker):
    b = start_broker(connect_timeout_ms=1000)
    c = R.RawClient(b.host, b.port)
    silent = R.RawClient(b.host, b.port)
    try:
        t0 = time.monotonic()
        c.send(R.connect_packet(uid("half"), 4)[:7])
        assert_serves(b)
        c.wait_closed(4)
        silent.wait_closed(1.5)
        assert time.monotonic() - t0 < 4.5
        assert_serves(b)
    finally:
        c.close()
        silent.close()


@pytest.mark.tern_only  # tern config key write_buffer_max; mosquitto drops instead
def test_slow_reader_disconnected_others_served(start_broker):
    b = start_broker(write_buffer_max=65536)
    slow = R.RawClient(b.host, b.port, rcvbuf=4096)
    pub = PahoClient(b, version=V311)
    try:
        assert slow.connect(uid("slow")).reason == 0
        slow.subscribe(1, [("flood/t", 0)])
        pub.connect()
        payload = b"F" * 4096
        for i in range(1500):  # ~6 MB, far beyond socket buffers + 64 KiB
            pub.publish("flood/t", payload, 0, wait=False)
            if i % 100 == 99:
                pub.publish("flood/sync", b"", 1)  # pace the publisher
        assert_serves(b)
        # the slow client is closed by the broker: draining ends with EOF, not with a
        # full 6 MB stream
        n = slow.drain_until_closed(10)
        assert n < 1500 * 4096, "slow reader got everything (%d bytes), not disconnected" % n
        assert_serves(b)
    finally:
        slow.close()
        pub.close()


def test_200_concurrent_connections(broker):
    socks = []
    try:
        for i in range(200):
            c = R.RawClient(broker.host, broker.port, version=4 if i % 2 else 5)
            socks.append(c)
            c.send(R.connect_packet("many-%d" % i, c.version))
        for c in socks:
            assert c.expect(R.CONNACK, 10).reason == 0
        for c in socks[::2]:
            c.disconnect()
        for c in socks[1::2]:
            c.close()  # abrupt
        for c in socks[::2]:
            c.wait_closed(5)
    finally:
        for c in socks:
            c.close()
    assert_serves(broker)


def test_connect_disconnect_churn_threads(broker):
    errors = []

    def worker(k):
        try:
            for j in range(25):
                c = R.RawClient(broker.host, broker.port, version=4 + (j % 2))
                try:
                    assert c.connect("churn-%d-%d" % (k, j)).reason == 0
                    c.disconnect()
                finally:
                    c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not any(t.is_alive() for t in ts), "churn workers hung"
    assert not errors, errors
    assert_serves(broker)


def test_client_id_too_long_or_binary_handled(broker, raw):
    c = raw(version=4)
    c.send(R.connect_packet("x" * 30000, 4))
    try:
        p = c.recv(3)
        assert p.type == R.CONNACK
    except R.Closed:
        pass
    c.close()
    assert_serves(broker)


def test_abrupt_reset_mid_packet(broker):
    s = socket.create_connection((broker.host, broker.port), timeout=3)
    s.sendall(R.connect_packet(uid("rst"), 4))
    s.sendall(b"\x30\x20\x00\x03a/b")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST
    assert_serves(broker)
