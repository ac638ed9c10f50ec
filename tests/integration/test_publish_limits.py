"""Per-client publish limits (issue 16): publish_rate_max / publish_rate_burst (MQTT 5
PUBACK / PUBREC 0x96) and publish_quota_max / publish_quota_period_s (0x97), per
client id, kept across reconnects; MQTT 3.1.1 clients are disconnected instead of
being acknowledged and dropped. Off by default."""
import json
import math
import subprocess
import time

import pytest

import mqttraw
from conftest import TERN_BIN, is_mosquitto
from helpers import uid
from mqttraw import PUBACK, PUBREC
from test_auth import metric

pytestmark = pytest.mark.skipif(is_mosquitto(), reason="tern's configuration keys")

RATE, QUOTA = 0x96, 0x97


def raw(b, version=5, client_id=None):
    c = mqttraw.RawClient(b.host, b.port, version=version)
    assert c.connect(client_id or uid("lim"), clean=True).reason == 0
    return c


def pub_codes(c, n, qos=1, first_id=1, topic="lim/t"):
    """Publishes n messages, then reads their acks: the reason codes, in order."""
    for i in range(n):
        c.publish(topic, b"m%d" % i, qos=qos, packet_id=first_id + i)
    ack = PUBACK if qos == 1 else PUBREC
    out = []
    for _ in range(n):
        p = c.expect(ack)
        out.append(p.reason)
        if qos == 2 and p.reason < 0x80:
            c.pubrel(p.packet_id)
            c.expect(mqttraw.PUBCOMP)
    return out


def test_off_by_default(broker):
    c = raw(broker)
    try:
        assert pub_codes(c, 50) == [0] * 50
    finally:
        c.close()


def test_rate_v5_refused_with_0x96(start_broker):
    b = start_broker(publish_rate_max=1, publish_rate_burst=3)
    reader = raw(b)
    c = raw(b)
    try:
        assert reader.subscribe(1, [("lim/#", 0)]).codes == [0]
        t0 = time.monotonic()
        codes = pub_codes(c, 8)
        elapsed = time.monotonic() - t0
        # The bucket holds 3 and refills at 1/s: at most 3 + what the time taken
        # refilled go, in order, and every other gets 0x96.
        ok = codes.count(0)
        assert codes[:3] == [0, 0, 0], codes
        assert ok <= 3 + math.ceil(elapsed) and set(codes[ok:]) == {RATE}, codes
        # QoS 2: PUBREC 0x96; QoS 0: dropped.
        assert pub_codes(c, 1, qos=2, first_id=20) == [RATE]
        c.publish("lim/q0", b"dropped", qos=0)
        got = reader.recv_publishes(ok)
        assert [m.topic for m in got] == ["lim/t"] * ok
        reader.expect_nothing(0.3)
        assert metric(b, "tern_publish_limited_total", 'limit="rate"') == 8 - ok + 2
        # The bucket refills.
        time.sleep(1.1)
        assert pub_codes(c, 1, first_id=30) == [0]
    finally:
        reader.close()
        c.close()


def test_rate_kept_across_reconnects_and_per_client_id(start_broker):
    b = start_broker(publish_rate_max=1, publish_rate_burst=2)
    cid = uid("lim-re")
    c = raw(b, client_id=cid)
    assert pub_codes(c, 3) == [0, 0, RATE]
    c.disconnect()
    c.close()
    c = raw(b, client_id=cid)  # a reconnect does not refill the bucket
    other = raw(b)
    try:
        assert pub_codes(c, 1, first_id=5) == [RATE]
        assert pub_codes(other, 2) == [0, 0]
    finally:
        c.close()
        other.close()


def test_rate_v311_disconnects(start_broker):
    b = start_broker(publish_rate_max=1, publish_rate_burst=2)
    c = raw(b, version=4)
    try:
        for i in range(4):
            c.publish("lim/t", b"x", qos=1, packet_id=i + 1)
        got = c.wait_closed()
        # Two acknowledged, then closed: nothing past the limit was acknowledged.
        assert [(p.type, p.packet_id) for p in got] == [(PUBACK, 1), (PUBACK, 2)], got
    finally:
        c.close()
    assert metric(b, "tern_publish_limited_total", 'limit="rate"') == 1


def test_quota_v5_refused_with_0x97_and_kept_across_reconnects(start_broker):
    b = start_broker(publish_quota_max=3, publish_quota_period_s=3600)
    cid = uid("lim-q")
    c = raw(b, client_id=cid)
    assert pub_codes(c, 4) == [0, 0, 0, QUOTA]
    assert pub_codes(c, 1, qos=2, first_id=9) == [QUOTA]
    c.disconnect()
    c.close()
    c = raw(b, client_id=cid)
    other = raw(b)
    try:
        assert pub_codes(c, 1, first_id=11) == [QUOTA]
        assert pub_codes(other, 3) == [0, 0, 0]
        assert metric(b, "tern_publish_limited_total", 'limit="quota"') == 3
        assert metric(b, "tern_publish_limited_total", 'limit="rate"') == 0
    finally:
        c.close()
        other.close()


def test_quota_window_restarts(start_broker):
    b = start_broker(publish_quota_max=2, publish_quota_period_s=1)
    c = raw(b)
    try:
        assert pub_codes(c, 3) == [0, 0, QUOTA]
        time.sleep(1.1)
        assert pub_codes(c, 3, first_id=10) == [0, 0, QUOTA]
    finally:
        c.close()


def test_bounds_and_defaults():
    """The keys' bounds are refused with the key named; the defaults are off."""
    def ternd(*args):
        return subprocess.run([TERN_BIN, "--data-dir", "/nonexistent"] + list(args),
                              capture_output=True, text=True, timeout=10,
                              stdin=subprocess.DEVNULL)
    for key, value in (("publish_rate_max", 1000001), ("publish_rate_burst", -1),
                       ("publish_quota_period_s", 0)):
        r = ternd("--set", "%s=%s" % (key, value), "--print-config")
        assert r.returncode == 2 and key in r.stderr, (key, r.returncode, r.stderr)
    r = ternd("--print-config")
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert (cfg["publish_rate_max"], cfg["publish_rate_burst"], cfg["publish_quota_max"],
            cfg["publish_quota_period_s"]) == (0, 0, 0, 86400)
