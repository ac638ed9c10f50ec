"""paho-mqtt (v1 API) wrapper used by the integration tests.

Each PahoClient runs its own network loop thread (not loop_start: that one reconnects
automatically, which would hide takeovers and disconnects). Every wait is bounded.
"""
import itertools
import os
import queue
import shutil
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

IS_MOSQUITTO = os.environ.get("TERN_TEST_TARGET", "").strip().lower() == "mosquitto"
V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5
TIMEOUT = 5.0

_ids = itertools.count(1)


def uid(prefix="c"):
    return "%s-%d-%d" % (prefix, int(time.time() * 1000) % 100000, next(_ids))


def props(ptype, **kw):
    """props(PacketTypes.PUBLISH, MessageExpiryInterval=5, UserProperty=[("a","b")])."""
    p = Properties(ptype)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def pub_props(**kw):
    return props(PacketTypes.PUBLISH, **kw)


def connect_props(**kw):
    return props(PacketTypes.CONNECT, **kw)


def prop(msg, name, default=None):
    p = getattr(msg, "properties", None)
    if p is None:
        return default
    return getattr(p, name, default)


class PahoClient:
    def __init__(self, broker, client_id=None, version=V5, clean=True, keepalive=30,
                 will=None, connect_properties=None):
        """will: dict(topic, payload, qos=0, retain=False, properties=None)."""
        self.broker = broker
        self.version = version
        self.client_id = uid() if client_id is None else client_id
        self.clean = clean
        self.keepalive = keepalive
        self.connect_properties = connect_properties
        if version == V5:
            self.c = mqtt.Client(client_id=self.client_id, protocol=V5)
        else:
            self.c = mqtt.Client(client_id=self.client_id, clean_session=clean,
                                 protocol=V311)
        if will:
            self.c.will_set(will["topic"], will.get("payload"), will.get("qos", 0),
                            will.get("retain", False), will.get("properties"))
        self.messages = queue.Queue()
        self.connacked = threading.Event()
        self.disconnected = threading.Event()
        self.connack = None  # (flags dict, rc, properties)
        self.disconnect_rc = None
        self._subacks = {}
        self._sub_ev = threading.Condition()
        self._stop = threading.Event()
        self._thread = None
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        # Without loop_start() paho writes from whichever thread queues a packet, so
        # publish() on the test thread and our loop thread pop and send from the same
        # queue at once, and can put PUBLISHes on the wire out of order. A (no-op)
        # write-registration callback makes paho leave all writing to the loop thread.
        self.c.on_socket_register_write = lambda c, u, sock: None

    # callbacks (network thread)
    def _on_connect(self, c, u, flags, rc, properties=None):
        self.connack = (flags, rc, properties)
        self.connacked.set()

    def _on_disconnect(self, c, u, rc, properties=None):
        self.disconnect_rc = rc
        self.disconnected.set()

    def _on_message(self, c, u, msg):
        self.messages.put(msg)

    def _on_subscribe(self, c, u, mid, granted, properties=None):
        with self._sub_ev:
            self._subacks[mid] = granted
            self._sub_ev.notify_all()

    def _on_unsubscribe(self, c, u, mid, *rest):
        with self._sub_ev:
            self._subacks[mid] = rest[1] if len(rest) > 1 else []
            self._sub_ev.notify_all()

    def _loop(self):
        while not self._stop.is_set():
            try:
                rc = self.c.loop(timeout=0.02)
            except (OSError, ValueError):  # socket closed under us (abort/disconnect)
                rc = mqtt.MQTT_ERR_CONN_LOST
            if rc != mqtt.MQTT_ERR_SUCCESS:
                self.disconnected.set()
                break

    # API
    def connect(self, timeout=TIMEOUT, expect_success=True):
        """Returns (session_present: bool, rc, properties)."""
        kw = {}
        if self.version == V5:
            kw["clean_start"] = self.clean
            kw["properties"] = self.connect_properties
        self.c.connect(self.broker.host, self.broker.port, self.keepalive, **kw)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        if not self.connacked.wait(timeout):
            raise AssertionError("no CONNACK within %.1fs for %s" % (timeout, self.client_id))
        flags, rc, p = self.connack
        if expect_success:
            assert rc == 0, "connect refused: %s" % rc
        return bool(flags.get("session present")), rc, p

    def subscribe(self, topic, qos=0, options=None, properties=None, timeout=TIMEOUT):
        """Returns the granted QoS / reason code list (ints)."""
        if options is not None:
            res, mid = self.c.subscribe(topic, options=options, properties=properties)
        else:
            res, mid = self.c.subscribe(topic, qos, properties=properties)
        assert res == mqtt.MQTT_ERR_SUCCESS, "subscribe failed locally: %s" % res
        granted = self._wait_ack(mid, timeout, topic)
        return [g.value if hasattr(g, "value") else g for g in granted]

    def unsubscribe(self, topic, timeout=TIMEOUT):
        res, mid = self.c.unsubscribe(topic)
        assert res == mqtt.MQTT_ERR_SUCCESS
        self._wait_ack(mid, timeout, topic)

    def _wait_ack(self, mid, timeout, what):
        deadline = time.monotonic() + timeout
        with self._sub_ev:
            while mid not in self._subacks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no SUBACK/UNSUBACK for %r" % (what,))
                self._sub_ev.wait(left)
            return self._subacks.pop(mid)

    def publish(self, topic, payload=b"", qos=0, retain=False, properties=None,
                wait=True, timeout=TIMEOUT):
        info = self.c.publish(topic, payload, qos, retain, properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, "publish failed locally: %s" % info.rc
        if wait and qos > 0:
            info.wait_for_publish(timeout)
            assert info.is_published(), "publish of %r not acknowledged in %.1fs" % (
                topic, timeout)
        return info

    def get(self, timeout=TIMEOUT):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("%s: no message within %.1fs" % (self.client_id, timeout))

    def collect(self, n, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            left = deadline - time.monotonic()
            try:
                out.append(self.messages.get(timeout=max(left, 0.001)))
            except queue.Empty:
                raise AssertionError("%s: got %d of %d messages: %r" % (
                    self.client_id, len(out), n, [(m.topic, m.payload[:30]) for m in out]))
        return out

    def drain(self, timeout=0.3):
        """All messages arriving within timeout."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                return out

    def expect_nothing(self, timeout=0.5):
        got = self.drain(timeout)
        assert not got, "%s: unexpected messages %r" % (
            self.client_id, [(m.topic, m.payload[:40]) for m in got])

    def disconnect(self, properties=None, timeout=TIMEOUT):
        """Normal DISCONNECT."""
        if self._thread is None:
            return
        self.c.disconnect(properties=properties)
        self.disconnected.wait(timeout)
        self._stop.set()
        self._thread.join(timeout)
        self._thread = None

    def abort(self):
        """Closes the TCP connection without DISCONNECT."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(TIMEOUT)
            self._thread = None
        sock = self.c.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def close(self):
        if self._thread is not None:
            try:
                if not self.disconnected.is_set():
                    self.c.disconnect()
                    self.disconnected.wait(1.0)
            except Exception:
                pass
        self.abort()


class Clients:
    """Factory fixture object: creates clients bound to a broker and closes them all."""

    def __init__(self, broker):
        self.broker = broker
        self.all = []

    def new(self, client_id=None, version=V5, clean=True, broker=None, connect=True,
            **kw):
        c = PahoClient(broker or self.broker, client_id, version, clean, **kw)
        self.all.append(c)
        if connect:
            c.connect()
        return c

    def close(self):
        for c in self.all:
            try:
                c.close()
            except Exception:
                pass


def sub_opts(qos=0, no_local=False, rap=False, rh=0):
    return SubscribeOptions(qos=qos, noLocal=no_local, retainAsPublished=rap,
                            retainHandling=rh)


SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:")


def sanitizer_excerpt(text):
    """The first ASan/UBSan/LSan report in a ternd log (from a little before it), or
    None."""
    hits = [text.index(m) for m in SANITIZER_MARKERS if m in text]
    if not hits:
        return None
    i = min(hits)
    return text[max(0, i - 300):i + 3000]


class LogFile:
    """The log of a ternd process the tests started: log_path, and start_offset
    where the output of its current run begins."""
    start_offset = 0

    def log(self, current_run=False):
        try:
            with open(self.log_path, "rb") as f:
                if current_run:
                    f.seek(self.start_offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=60):
        return "\n".join(self.log().splitlines()[-n:])

    def sanitizer_report(self):
        return sanitizer_excerpt(self.log())


SHIM_DIR = os.path.join(os.path.dirname(__file__), "shim")


def preload_shim(name, out_dir, monkeypatch):
    """Builds tests/integration/shim/NAME.c and puts it in LD_PRELOAD (before the
    sanitizer runtime, which must then not insist on coming first); skips the test
    without a C compiler. The caller starts the broker, then drops LD_PRELOAD so
    that only the broker runs under it."""
    import pytest
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler for the %s shim" % name)
    so = os.path.join(str(out_dir), name + ".so")
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", so,
                    os.path.join(SHIM_DIR, name + ".c"), "-ldl"],
                   check=True, capture_output=True, timeout=60)
    monkeypatch.setenv("LD_PRELOAD", so)
    monkeypatch.setenv("ASAN_OPTIONS", "detect_leaks=1:verify_asan_link_order=0")
    return so


def wait_until(pred, timeout=TIMEOUT, interval=0.02, msg="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, msg))


def assert_serves(b, timeout=TIMEOUT):
    """The broker still accepts a normal client and routes a message through it."""
    c = PahoClient(b, version=V311)
    try:
        c.connect(timeout)
        t = "health/" + c.client_id
        c.subscribe(t, 1)
        c.publish(t, b"ok", 1)
        m = c.get(timeout)
        assert m.payload == b"ok"
    finally:
        c.close()


def collect_from(cs, n, timeout=TIMEOUT, settle=0.2):
    """Collects messages from several clients until n in total arrived (bounded), then
    waits `settle` seconds for unexpected extra ones. Returns one list per client."""
    out = [[] for _ in cs]
    deadline = time.monotonic() + timeout
    while sum(map(len, out)) < n and time.monotonic() < deadline:
        for i, c in enumerate(cs):
            out[i] += c.drain(0.01)
    for i, c in enumerate(cs):
        out[i] += c.drain(settle if i == 0 else 0.01)
    return out
