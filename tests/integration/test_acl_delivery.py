"""The ACL on delivery (issue 16): read access is checked for every message sent to a
client, not only when it subscribes, so a subscription that overlaps a `deny` rule
never carries the denied topics, and an ACL reloaded by SIGHUP that takes a right
away applies at once to existing subscriptions, to messages queued for an offline
session, and to retained messages. Clients are paho (MQTT 5 and 3.1.1)."""
import atexit
import os
import shutil
import signal
import tempfile

import pytest

from helpers import PahoClient, V311, V5, connect_props, uid, wait_until
from test_auth import ACL, CRED, metric, pwfile  # noqa: F401 (pwfile: a fixture)
from cluster import tern_cluster_fixture  # noqa: F401 (the tern_cluster fixture)
from conftest import is_mosquitto

pytestmark = pytest.mark.skipif(is_mosquitto(), reason="tern's configuration keys")


@pytest.fixture
def acl_broker(start_broker, pwfile, tmp_path):  # noqa: F811
    p = tmp_path / "acl"
    p.write_text(ACL)
    b = start_broker(password_file=pwfile, acl_file=str(p), allow_anonymous="true")
    b.acl_path = str(p)
    return b


def paho(b, user, version=V5, client_id=None, clean=True, props=None):
    c = PahoClient(b, client_id=client_id or uid("acld"), version=version, clean=clean,
                   connect_properties=props)
    c.c.username_pw_set(user, CRED[user])
    c.connect()
    return c


def reload_acl(b, text):
    with open(b.acl_path, "w") as f:
        f.write(text)
    before = b.log(current_run=True).count("reload: ACL file")
    b.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: b.log(current_run=True).count("reload: ACL file") > before,
               msg="ACL reload")


def topics(msgs):
    return sorted(m.topic for m in msgs)


@pytest.mark.parametrize("version", [V5, V311])
def test_reload_takes_read_away_from_a_live_subscription(acl_broker, version):
    b = acl_broker
    alice = paho(b, "alice", version)
    carol = paho(b, "carol")
    try:
        assert alice.subscribe("home/kitchen", 1) == [1]
        assert alice.subscribe("home/garden", 1) == [1]
        carol.publish("home/kitchen", b"before", 1)
        assert alice.get().payload == b"before"
        reload_acl(b, ACL.replace("topic deny home/secret", "topic deny home/kitchen"))
        for q in (0, 1, 2):
            carol.publish("home/kitchen", b"after-%d" % q, q)
        carol.publish("home/garden", b"still", 1)
        got = alice.collect(1)
        got += alice.drain(0.5)
        assert [(m.topic, m.payload) for m in got] == [("home/garden", b"still")]
        assert metric(b, "tern_acl_delivery_denied_total", "") == 3
        # The window moved on: later messages still flow.
        for i in range(40):
            carol.publish("home/kitchen", b"x", 1)
        carol.publish("home/garden", b"last", 1)
        assert alice.get().payload == b"last"
    finally:
        alice.close()
        carol.close()


def test_reload_applies_to_messages_queued_for_an_offline_session(acl_broker):
    b = acl_broker
    cid = uid("acl-offline")
    props = connect_props(SessionExpiryInterval=600)
    alice = paho(b, "alice", V5, cid, clean=False, props=props)
    assert alice.subscribe("home/kitchen", 1) == [1]
    assert alice.subscribe("home/garden", 2) == [2]
    alice.disconnect()
    alice.close()
    carol = paho(b, "carol")
    try:
        carol.publish("home/kitchen", b"k1", 1)
        carol.publish("home/garden", b"g1", 2)
        carol.publish("home/kitchen", b"k2", 2)
        reload_acl(b, ACL.replace("topic deny home/secret", "topic deny home/kitchen"))
        alice = paho(b, "alice", V5, cid, clean=False, props=props)
        try:
            got = alice.collect(1)
            got += alice.drain(0.5)
            assert [(m.topic, m.payload) for m in got] == [("home/garden", b"g1")]
        finally:
            alice.close()
    finally:
        carol.close()


def test_wildcard_beside_a_deny_rule_is_filtered_per_message(acl_broker):
    """Mosquitto's behaviour: home/# is accepted beside `topic deny home/secret`,
    and home/secret is never delivered through it, retained or not."""
    b = acl_broker
    alice = paho(b, "alice")
    carol = paho(b, "carol")
    try:
        carol.publish("home/secret", b"retained secret", 1, retain=True)
        carol.publish("home/kitchen", b"retained kitchen", 1, retain=True)
        assert alice.subscribe("home/#", 1) == [1]
        got = alice.collect(1)
        got += alice.drain(0.4)
        assert [(m.topic, m.payload) for m in got] == [("home/kitchen", b"retained kitchen")]
        carol.publish("home/secret", b"live secret", 1)
        carol.publish("home/secret/deeper", b"deeper", 1)
        carol.publish("home/kitchen", b"live kitchen", 1)
        got = alice.collect(2)
        got += alice.drain(0.4)
        assert topics(got) == ["home/kitchen", "home/secret/deeper"]
        # A filter that only reaches denied topics is still refused at SUBSCRIBE.
        assert alice.subscribe("home/secret", 1) == [0x87]
    finally:
        alice.close()
        carol.close()


def test_pattern_rules_apply_per_delivery(acl_broker):
    """A %c pattern: the device reads only its own subtree, and a reload that adds a
    deny pattern under it stops those messages on the live subscription."""
    b = acl_broker
    dev = paho(b, "alice", V5, "dev7")
    carol = paho(b, "carol")
    try:
        assert dev.subscribe("devices/dev7/#", 1) == [1]
        carol.publish("devices/dev7/cfg", b"a", 1)
        assert dev.get().payload == b"a"
        reload_acl(b, ACL + "pattern deny devices/%c/cfg\n")
        carol.publish("devices/dev7/cfg", b"b", 1)
        carol.publish("devices/dev7/cmd", b"c", 1)
        got = dev.collect(1)
        got += dev.drain(0.4)
        assert [(m.topic, m.payload) for m in got] == [("devices/dev7/cmd", b"c")]
    finally:
        dev.close()
        carol.close()


# --- across nodes ----------------------------------------------------------------------

# The cluster fixture takes its settings at collection: the ACL file is made here,
# removed when pytest exits (also when no test of the module ran).
_ACL_DIR = tempfile.mkdtemp(prefix="tern-acl-delivery-")
atexit.register(shutil.rmtree, _ACL_DIR, True)
_CLUSTER_ACL = os.path.join(_ACL_DIR, "acl")
with open(_CLUSTER_ACL, "w") as _f:
    _f.write("topic readwrite acl-cl/#\ntopic deny acl-cl/+/secret\n")


@pytest.mark.parametrize("tern_cluster", [{"acl_file": _CLUSTER_ACL}], indirect=True)
def test_checked_on_the_subscriber_node(tern_cluster):
    """A publisher on node 1; a clean subscriber on node 2 (the message forwarded over
    the peer link) and a persistent one on node 3 (through the log): their filter
    overlaps the deny rule, and neither gets the denied topic."""
    c = tern_cluster
    base = "acl-cl/" + uid()
    clean = c.client(2, version=V311)
    durable = c.client(3, client_id=uid("acl-p"), version=V5, clean=False,
                       connect_properties=connect_props(SessionExpiryInterval=300))
    for s in (clean, durable):
        assert s.subscribe(base + "/#", 1) == [1]
    pub = c.client(1, version=V5)
    for t in ("secret", "open", "secret", "open2"):
        pub.publish("%s/%s" % (base, t), b"m", 1)
    for s in (clean, durable):
        got = s.collect(2, 10.0) + s.drain(0.5)
        assert sorted(m.topic for m in got) == [base + "/open", base + "/open2"], (
            s.client_id, [m.topic for m in got])
