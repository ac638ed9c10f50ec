"""CONNECT / CONNACK, client identifiers, takeover."""
import pytest

import mqttraw as R
from helpers import V311, V5, uid


def test_v311_connack_clean_session_no_session_present(clients):
    c = clients.new(version=V311, clean=True)
    assert c.connack[1] == 0


def test_v311_session_present_flag(clients):
    cid = uid("sp")
    c = clients.new(cid, version=V311, clean=False)
    assert not c.connack[0].get("session present"), "first connect of a new client id must not have session present"
    c.subscribe("sp/t", 1)
    c.disconnect()
    c2 = clients.new(cid, version=V311, clean=False, connect=False)
    present, rc, _ = c2.connect()
    assert present, "persistent session must be present on reconnect"
    c2.disconnect()
    c3 = clients.new(cid, version=V311, clean=True, connect=False)
    present, rc, _ = c3.connect()
    assert not present, "clean session must report session present 0"


def test_v5_session_present_flag(clients):
    from helpers import connect_props
    cid = uid("sp5")
    c = clients.new(cid, version=V5, clean=False, connect=False,
                    connect_properties=connect_props(SessionExpiryInterval=60))
    present, rc, _ = c.connect()
    assert not present
    c.subscribe("sp5/t", 1)
    c.disconnect()
    c2 = clients.new(cid, version=V5, clean=False, connect=False,
                     connect_properties=connect_props(SessionExpiryInterval=60))
    present, rc, _ = c2.connect()
    assert present
    c2.disconnect()
    c3 = clients.new(cid, version=V5, clean=True, connect=False)
    present, rc, _ = c3.connect()
    assert not present, "clean start must report session present 0"


def test_v5_empty_client_id_gets_assigned_identifier(raw):
    c = raw(version=5)
    ack = c.connect("", clean=True)
    assert ack.reason == 0
    assigned = ack.props.get(R.ASSIGNED_CLIENT_ID)
    assert assigned, "CONNACK must carry an Assigned Client Identifier: %r" % ack
    c2 = raw(version=5)
    ack2 = c2.connect("", clean=True)
    assert ack2.props.get(R.ASSIGNED_CLIENT_ID) not in (None, assigned)


def test_v311_empty_client_id_clean_session_accepted(raw):
    c = raw(version=4)
    ack = c.connect("", clean=True)
    assert ack.reason == 0
    assert not ack.session_present
    c.pingreq()
    assert c.expect(R.PINGRESP).type == R.PINGRESP


def test_v311_empty_client_id_persistent_rejected_identifier(raw):
    c = raw(version=4)
    ack = c.connect("", clean=False)
    assert ack.reason == 2, "expected CONNACK rc 2 (identifier rejected): %r" % ack
    assert not ack.session_present
    c.wait_closed(3)


def test_v311_unsupported_protocol_level_refused(raw):
    c = raw(version=4)
    c.send(R.connect_packet("badlevel", version=4).replace(b"MQTT\x04", b"MQTT\x07"))
    got = c.wait_closed(3)
    if got:
        assert got[0].type == R.CONNACK and got[0].reason in (1, 0x84), got


def test_v311_session_takeover_closes_first_connection(raw):
    cid = uid("take")
    a = raw(version=4)
    assert a.connect(cid).reason == 0
    b = raw(version=4)
    assert b.connect(cid).reason == 0
    a.wait_closed(3)
    b.pingreq()
    b.expect(R.PINGRESP)


def test_v5_session_takeover_closes_first_connection(raw):
    cid = uid("take5c")
    a = raw(version=5)
    assert a.connect(cid).reason == 0
    b = raw(version=5)
    assert b.connect(cid).reason == 0
    got = a.wait_closed(3)
    assert all(p.type == R.DISCONNECT for p in got), got
    b.pingreq()
    b.expect(R.PINGRESP)


@pytest.mark.tern_only  # mosquitto 2.0.11 closes the old connection without DISCONNECT
def test_v5_session_takeover_disconnect_0x8e(raw):
    cid = uid("take5")
    a = raw(version=5)
    assert a.connect(cid).reason == 0
    b = raw(version=5)
    assert b.connect(cid).reason == 0
    got = a.wait_closed(3)
    disc = [p for p in got if p.type == R.DISCONNECT]
    assert disc and disc[0].reason == 0x8E, "expected DISCONNECT 0x8E, got %r" % got
    b.pingreq()
    b.expect(R.PINGRESP)

