"""A step of the wall clock (NTP, `date -s`) must not close connections.

ternd runs under an LD_PRELOAD shim (shim/clock_step.c, built here) that shifts
CLOCK_REALTIME by the seconds written in a file. Clients with a keepalive ping
the broker through a step of one hour backwards, then two hours forwards: their
connections stay open and keep working, because keepalive and connect timeouts
are measured on a monotonic clock. The wall clock still goes into commands (it
is what message and session expiry are measured in): the broker's log lines,
stamped with the wall clock, show the step took effect.

Every wait is bounded; the broker and files are removed by the fixtures.
"""
import re
import time

import pytest

import mqttraw
from helpers import IS_MOSQUITTO, preload_shim, uid

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="tern only (LD_PRELOAD shim)")

KEEPALIVE_S = 2
STAMP_RE = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.\d{3}Z ", re.M)


@pytest.fixture
def stepped_broker(start_broker, tmp_path, monkeypatch):
    preload_shim("clock_step", tmp_path, monkeypatch)
    step_file = tmp_path / "step"
    step_file.write_text("0")
    monkeypatch.setenv("TERN_CLOCK_STEP_FILE", str(step_file))
    b = start_broker()
    monkeypatch.delenv("LD_PRELOAD")  # only the broker runs under the shim
    return b, step_file


def last_stamp(b):
    """Wall-clock time (epoch seconds) of the broker's last log line."""
    with open(b.log_path, "rb") as f:
        stamps = STAMP_RE.findall(f.read())
    assert stamps, "no log line"
    return time.mktime(time.strptime(stamps[-1].decode() + " UTC", "%Y-%m-%dT%H:%M:%S %Z"))


def log_something(b):
    """Makes the broker log a line now (a client connects at debug level)."""
    with mqttraw.RawClient(b.host, b.port, version=4, timeout=5.0) as r:
        r.connect(uid("stamp"), clean=True)
        r.disconnect()


def ping_through(clients, seconds):
    """Every client pings every 0.5 s for `seconds`: each gets its PINGRESP."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for c in clients:
            c.pingreq()
            c.expect(mqttraw.PINGRESP, timeout=2.0)
        time.sleep(0.5)


def test_wall_clock_step_keeps_connections(stepped_broker):
    b, step_file = stepped_broker
    v4 = mqttraw.RawClient(b.host, b.port, version=4, timeout=5.0)
    v5 = mqttraw.RawClient(b.host, b.port, version=5, timeout=5.0)
    try:
        assert v4.connect(uid("ka4"), clean=True, keepalive=KEEPALIVE_S).reason == 0
        assert v5.connect(uid("ka5"), clean=True, keepalive=KEEPALIVE_S).reason == 0
        topic = "clock/" + uid("t")
        v5.subscribe(1, [(topic, 1)])
        ping_through([v4, v5], 1.0)
        log_something(b)
        before = last_stamp(b)

        for step in (-3600, 3600):  # one hour back, then back to now + 1 hour
            step_file.write_text(str(step))
            # Quiet for a few sweeps of the connection timer (250 ms), well
            # within 1.5 x keepalive: a packet would reset the idle time.
            time.sleep(0.8)
            log_something(b)
            seen = last_stamp(b)
            # The broker's wall clock moved (the shim works)...
            assert abs(seen - before - step) < 120, (seen, before, step)
            # ...and the connections did not notice: keepalive still served,
            # past three sweeps of the connection timer and 1.5 x keepalive.
            ping_through([v4, v5], 1.5 * KEEPALIVE_S + 1)
            v4.publish(topic, b"after step %d" % step, qos=1, packet_id=7)
            v4.expect(mqttraw.PUBACK)
            p = v5.expect(mqttraw.PUBLISH)
            assert p.payload == b"after step %d" % step
            v5.puback(p.packet_id)
        assert b.alive()
    finally:
        v4.close()
        v5.close()
