"""In-session retry (retry_interval_s): off by default, re-sends in-flight
messages with DUP while the client stays connected when set."""
import pytest

import mqttraw as R
from helpers import PahoClient, uid

pytestmark = pytest.mark.tern_only  # tern config key retry_interval_s


def test_no_resend_by_default(start_broker):
    b = start_broker()
    s = R.RawClient(b.host, b.port)
    pub = PahoClient(b)
    try:
        assert s.connect(uid("nr")).reason == 0
        s.subscribe(1, [("nr/t", 1)])
        pub.connect()
        pub.publish("nr/t", b"x", 1)
        assert s.expect(R.PUBLISH).payload == b"x"
        s.expect_nothing(2.5)  # no ack sent, still nothing re-sent
    finally:
        s.close()
        pub.close()


def test_resend_unacked_with_dup(start_broker):
    b = start_broker(retry_interval_s=1)
    s = R.RawClient(b.host, b.port)
    pub = PahoClient(b)
    try:
        assert s.connect(uid("rs")).reason == 0
        s.subscribe(1, [("rs/t", 1), ("rs/q2", 2)])
        pub.connect()
        pub.publish("rs/t", b"one", 1)
        first = s.expect(R.PUBLISH)
        assert first.payload == b"one" and not first.dup
        again = s.expect(R.PUBLISH, 4)
        assert again.payload == b"one" and again.dup
        assert again.packet_id == first.packet_id
        s.puback(again.packet_id)
        # QoS 2 after PUBREC: the retry is a PUBREL, not the PUBLISH
        pub.publish("rs/q2", b"two", 2)
        p2 = s.expect(R.PUBLISH)
        s.pubrec(p2.packet_id)
        rel = s.expect(R.PUBREL)
        assert rel.packet_id == p2.packet_id
        rel2 = s.expect(R.PUBREL, 4)
        assert rel2.packet_id == p2.packet_id
        s.pubcomp(p2.packet_id)
        s.expect_nothing(2.5)
    finally:
        s.close()
        pub.close()
