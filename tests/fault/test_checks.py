"""The fault suite's own checks, on made-up histories: each violation they must catch,
and the concurrent cases they must accept. Runs without root or a broker:
    /usr/bin/python3 -m pytest -q tests/fault/test_checks.py
"""
import os
import threading
import time
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fault  # noqa: E402

T = "tf/reg/x/0"


def regs(writes, reads):
    """writes: {value: (start, end or None)}; reads: [(start, end, value)]."""
    r = fault.Registers.__new__(fault.Registers)
    r.topics = [T]
    r.writes = {T: {v: [s, e, 1] for v, (s, e) in writes.items()}}
    r.reads = {T: [(s, e, v, 2) for (s, e, v) in reads]}
    return r.check()


def test_sequential_history_passes():
    n, bad = regs({"a": (0, 1), "b": (2, 3)}, [(1.5, 1.8, "a"), (3.5, 3.9, "b")])
    assert n == 2 and bad == []


def test_read_concurrent_with_write_may_return_either():
    w = {"a": (0, 1), "b": (2, 4)}
    assert regs(w, [(3, 3.5, "a")])[1] == []
    assert regs(w, [(3, 3.5, "b")])[1] == []


def test_unacknowledged_write_may_appear_any_time_after_it_started():
    w = {"a": (0, 1), "b": (2, None)}
    assert regs(w, [(10, 11, "b"), (12, 13, "b")])[1] == []
    # ... and a later read of the older, acknowledged value is not stale by itself
    assert regs(w, [(10, 11, "a")])[1] == []


def test_stale_read_is_caught():
    n, bad = regs({"a": (0, 1), "b": (2, 3)}, [(4, 5, "a")])
    assert len(bad) == 1 and "stale" in bad[0]


def test_value_never_written_or_from_the_future_is_caught():
    assert "never written" in regs({"a": (0, 1)}, [(2, 3, "zzz")])[1][0]
    assert "never written" in regs({"a": (0, 1), "b": (5, 6)}, [(2, 3, "b")])[1][0]


def test_empty_read_after_an_acknowledged_write_is_caught():
    assert "nothing" in regs({"a": (0, 1)}, [(2, 3, None)])[1][0]
    assert regs({"a": (0, 1)}, [(0.2, 0.5, None)])[1] == []  # concurrent with the write


def test_read_older_than_an_earlier_read_is_caught():
    # b's write is unacknowledged (could land any time), so each read alone is fine, but
    # once a read saw b, a later read must not go back to a, which finished before b began
    w = {"a": (0, 1), "b": (2, None)}
    bad = regs(w, [(3, 4, "b"), (5, 6, "a")])[1]
    assert len(bad) == 1 and "older than" in bad[0]
    assert regs(w, [(3, 4, "a"), (5, 6, "b")])[1] == []


class FakeSub:
    cid = "tfx-sub0"


def test_recorder_counts_duplicates_and_reorders():
    r = fault.Recorder()
    s = FakeSub()
    for i, payload in enumerate([b"tfx-pub0:1:0", b"tfx-pub0:1:1", b"tfx-pub0:1:1",
                                 b"tfx-pub0:1:3", b"tfx-pub0:1:2", b"tfx-pub0:2:5",
                                 b"tfx-pub0:1:6", b"tfx-pub0:2:8", b"tfx-pub0:1:7"]):
        r(s, float(i), payload, False)
    assert [d[3] for d in r.dups] == [1]
    # 2 after 3 on one publisher connection; 7 (connection 1) after 8 (connection 2):
    # across a reconnect, told apart
    assert [(x[3], x[4], x[5]) for x in r.reorders] == [(2, 3, True), (7, 8, False)]


class _SlowBroker:
    """A one-connection MQTT 3.1.1 stand-in on loopback: CONNACK at once, the SUBACK
    `delay` seconds after the SUBSCRIBE, and the retained PUBLISH `gap` seconds
    after that (a slow commit, then a retransmission on a lossy path)."""

    def __init__(self, topic, payload, delay, gap):
        import socket
        self.topic, self.payload, self.delay, self.gap = topic, payload, delay, gap
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.port = self.srv.getsockname()[1]
        self.th = threading.Thread(target=self._serve, daemon=True)
        self.th.start()

    def _serve(self):
        import struct
        conn, _ = self.srv.accept()
        conn.settimeout(10)
        with conn:
            conn.recv(1024)  # CONNECT
            conn.sendall(bytes([0x20, 2, 0, 0]))
            buf = b""
            while not buf:
                buf = conn.recv(1024)  # SUBSCRIBE, packet id at bytes 2-3
            time.sleep(self.delay)
            conn.sendall(bytes([0x90, 3]) + buf[2:4] + bytes([1]))
            time.sleep(self.gap)
            t = self.topic.encode()
            body = struct.pack("!H", len(t)) + t + struct.pack("!H", 1) + self.payload
            conn.sendall(bytes([0x33, len(body)]) + body)  # QoS 1, retain
            try:
                while conn.recv(1024):
                    pass
            except OSError:
                pass

    def close(self):
        self.srv.close()


def test_read_waits_for_the_retained_message_after_a_late_suback(monkeypatch):
    """The read waits REG_READ_WAIT_S after its SUBACK for the retained message before
    it concludes there is none. A SUBACK late in the read's own deadline cut that wait
    short (here to ~0.5 s, the message following 0.8 s later), and the check then
    reported the register as lost."""
    b = _SlowBroker(T, b"v1", fault.REG_OP_TIMEOUT_S - 0.5, 0.8)
    try:
        monkeypatch.setattr(fault, "MQTT_PORT", b.port)
        r = fault.Registers.__new__(fault.Registers)
        r.cluster = type("C", (), {"node": lambda self, n: type("N", (), {
            "ip": "127.0.0.1"})()})()
        r.prefix = "t"
        r.lock = threading.Lock()
        r.reads = {T: []}
        r.failed_reads = 0
        r.read(T, 1)
    finally:
        b.close()
    assert r.failed_reads == 0
    assert [v for (_, _, v, _) in r.reads[T]] == ["v1"], r.reads[T]
