"""MQTT 3.1.1 clients for the fault suite, all driven by one selector loop on one thread.

One thread owns every socket and every client's state, so nothing races for a
connection (paho's threading pitfall, see tests/integration/helpers.py) and the
load generator stays light: a few thousand messages a second cost a fraction of a
core. Other threads only read what the loop appends (lists of tuples; CPython appends
are atomic) or flip flags.

Clients fail over by themselves: a connection that breaks, is refused, or stops
answering (keepalive, no PUBACK for PUBACK_STALL_S) is closed and the client connects
again, to the next node's address (rotating) or the same one (pinned).
"""
import errno
import selectors
import socket
import struct
import threading
import time

CONNECT_TIMEOUT_S = 3.0  # TCP connect + CONNACK
KEEPALIVE_S = 4  # sent in CONNECT; PINGREQ after this idle, dead after 1.5x silence
PUBACK_STALL_S = 3.0  # messages in flight and no PUBACK for this long: fail over
RECONNECT_S = 0.2  # pause before the next connection attempt
TICK_S = 0.005

PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, CONNACK = 3, 4, 8, 9, 12, 13, 2


def _s(x):
    if isinstance(x, str):
        x = x.encode()
    return struct.pack("!H", len(x)) + x


def _vbi(n):
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first, body):
    return bytes([first]) + _vbi(len(body)) + body


def connect_packet(cid, clean, keepalive):
    flags = 0x02 if clean else 0
    return _packet(0x10, _s("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) +
                   _s(cid))


class Conn:
    """One client connection with failover. Subclasses handle the packets."""

    def __init__(self, loop, cid, addrs, home, clean, pinned=False, keepalive=KEEPALIVE_S):
        self.loop = loop
        self.cid = cid
        self.addrs = addrs  # list of (host, port), index = node - 1
        self.idx = home
        self.clean = clean
        self.pinned = pinned
        self.keepalive = keepalive
        self.state = "idle"
        self.next_try = 0.0
        self.sock = None
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.want_write = False
        self.deadline = 0.0
        self.last_rx = self.last_tx = 0.0
        self.connects = 0  # successful CONNACKs
        self.downs = []  # (time, node, why)
        self.running = True
        loop.add(self)

    @property
    def node(self):
        return self.idx + 1

    # --- connection lifecycle (loop thread) ---------------------------------
    def _start(self, now):
        host, port = self.addrs[self.idx]
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rc = s.connect_ex((host, port))
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            self._down(now, "connect: %s" % errno.errorcode.get(rc, rc))
            return
        self.sock = s
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.state = "tcp"
        self.deadline = now + CONNECT_TIMEOUT_S
        self.loop.sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, self)
        self.want_write = True

    def _down(self, now, why):
        if self.sock is not None:
            try:
                self.loop.sel.unregister(self.sock)
            except (KeyError, ValueError):
                pass
            self.sock.close()
            self.sock = None
        was_up = self.state == "up"
        self.state = "idle"
        self.downs.append((now, self.node, why))
        if not self.pinned:
            self.idx = (self.idx + 1) % len(self.addrs)
        self.next_try = now + RECONNECT_S
        if was_up:
            self.on_down(now)

    def close(self, now):
        self.running = False
        if self.sock is not None:
            if self.state == "up":
                try:
                    self.sock.send(b"\xe0\x00")  # DISCONNECT
                except OSError:
                    pass
            self._down(now, "closed by test")

    def send(self, data):
        self.wbuf += data
        self.last_tx = self.loop.now
        if not self.want_write:
            self._flush()

    def _flush(self):
        if self.sock is None or self.state == "tcp":
            return
        if self.wbuf:
            try:
                n = self.sock.send(self.wbuf)
                del self.wbuf[:n]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                self._down(self.loop.now, "send: %s" % e)
                return
        want = bool(self.wbuf)
        if want != self.want_write:
            self.want_write = want
            ev = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
            self.loop.sel.modify(self.sock, ev, self)

    def on_event(self, now, mask):
        if self.sock is None:
            return
        if self.state == "tcp":
            if not mask & selectors.EVENT_WRITE:
                return
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._down(now, "connect: %s" % errno.errorcode.get(err, err))
                return
            self.state = "connack"
            self.last_rx = now
            self.wbuf += connect_packet(self.cid, self.clean, self.keepalive)
            self.last_tx = now
            self._flush()
            return
        if mask & selectors.EVENT_READ:
            try:
                data = self.sock.recv(262144)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError as e:
                self._down(now, "recv: %s" % e)
                return
            if data is not None:
                if not data:
                    self._down(now, "closed by broker")
                    return
                self.last_rx = now
                self.rbuf += data
                self._parse(now)
                if self.sock is None:
                    return
        if mask & selectors.EVENT_WRITE:
            self._flush()

    def _parse(self, now):
        buf = self.rbuf
        pos = 0
        n = len(buf)
        while self.sock is not None:
            if n - pos < 2:
                break
            mult, val, p = 1, 0, pos + 1
            ok = False
            while p < n:
                b = buf[p]
                p += 1
                val += (b & 0x7F) * mult
                mult *= 128
                if not b & 0x80:
                    ok = True
                    break
            if not ok or n - p < val:
                break
            first = buf[pos]
            body = bytes(buf[p:p + val])
            pos = p + val
            self._packet(now, first, body)
        del buf[:pos]

    def _packet(self, now, first, body):
        t = first >> 4
        if self.state == "connack":
            if t != CONNACK or len(body) < 2 or body[1] != 0:
                self._down(now, "CONNACK refused (%s)" % (body[1] if len(body) > 1 else "?"))
                return
            self.state = "up"
            self.connects += 1
            self.on_up(now, bool(body[0] & 1))
            return
        if t == PINGRESP:
            return
        self.on_packet(now, t, first & 0x0F, body)

    def tick(self, now):
        if not self.running:
            return
        if self.state == "idle":
            if now >= self.next_try:
                self._start(now)
            return
        if self.state in ("tcp", "connack"):
            if now > self.deadline:
                self._down(now, "no CONNACK within %.0fs" % CONNECT_TIMEOUT_S)
            return
        if now - self.last_rx > 1.5 * self.keepalive:
            self._down(now, "keepalive: nothing heard for %.1fs" % (now - self.last_rx))
            return
        if now - self.last_tx >= self.keepalive:
            self.send(b"\xc0\x00")
        self.on_tick(now)

    # --- for subclasses -------------------------------------------------------
    def on_up(self, now, session_present):
        pass

    def on_down(self, now):
        pass

    def on_packet(self, now, ptype, flags, body):
        pass

    def on_tick(self, now):
        pass


class Publisher(Conn):
    """Clean-session QoS 1 publisher of sequence-numbered messages at a steady rate.

    Payload "NAME:CONN:SEQ" (CONN counts this publisher's connections). Messages left
    unacknowledged when a connection ends are abandoned, not re-sent: only PUBACKed
    ones are owed to subscribers."""

    def __init__(self, loop, name, topic, addrs, home, rate, window, pinned=False):
        super().__init__(loop, name, addrs, home, clean=True, pinned=pinned)
        self.name = name
        self.topic_b = _s(topic)
        self.rate = rate
        self.window = window
        self.enabled = True
        self.seq = 0
        self.conn_no = 0
        self.next_pid = 1
        self.inflight = {}  # pid -> (seq, t_sent)
        self.acks = []  # (seq, conn, t_sent, t_ack, node)
        self.sent = 0
        self.abandoned = 0
        self.tokens = 0.0
        self.last_fill = None
        self.last_progress = 0.0

    def on_up(self, now, session_present):
        self.conn_no += 1
        self.inflight = {}
        self.last_progress = now
        self.last_fill = now
        self.tokens = 1.0

    def on_down(self, now):
        self.abandoned += len(self.inflight)
        self.inflight = {}

    def on_tick(self, now):
        if self.inflight and now - self.last_progress > PUBACK_STALL_S:
            self._down(now, "no PUBACK for %.1fs" % (now - self.last_progress))
            return
        dt = now - self.last_fill
        self.last_fill = now
        if not self.enabled:
            return
        self.tokens = min(self.tokens + self.rate * dt, max(1.0, self.rate * 0.05))
        if self.tokens < 1.0 or len(self.inflight) >= self.window:
            return
        out = bytearray()
        while self.tokens >= 1.0 and len(self.inflight) < self.window:
            pid = self.next_pid
            while pid in self.inflight:
                pid = pid % 65535 + 1
            self.next_pid = pid % 65535 + 1
            seq = self.seq
            self.seq += 1
            payload = ("%s:%d:%d" % (self.name, self.conn_no, seq)).encode()
            body = self.topic_b + struct.pack("!H", pid) + payload
            out += bytes([0x32]) + _vbi(len(body)) + body
            if not self.inflight:
                self.last_progress = now
            self.inflight[pid] = (seq, now)
            self.tokens -= 1.0
            self.sent += 1
        self.send(bytes(out))

    def on_packet(self, now, ptype, flags, body):
        if ptype != PUBACK or len(body) < 2:
            return
        pid = struct.unpack_from("!H", body, 0)[0]
        ent = self.inflight.pop(pid, None)
        if ent is None:
            return
        self.last_progress = now
        self.acks.append((ent[0], self.conn_no, ent[1], now, self.node))


class Subscriber(Conn):
    """Persistent (clean_session=false) QoS 1 subscriber; acknowledges every message and
    hands it to the recorder."""

    def __init__(self, loop, cid, filters, addrs, home, recorder):
        super().__init__(loop, cid, addrs, home, clean=False)
        self.filters = filters
        self.recorder = recorder
        self.subscribed = threading.Event()
        self.sessions_lost = 0
        self.session_losses = []  # (time, node): CONNACK without the session
        self.received = 0

    def on_up(self, now, session_present):
        if session_present:
            return
        if self.subscribed.is_set():
            self.sessions_lost += 1  # the cluster forgot a persistent session
            self.session_losses.append((now, self.node))
        body = struct.pack("!H", 1)
        for f in self.filters:
            body += _s(f) + b"\x01"
        self.send(_packet(0x82, body))

    def on_packet(self, now, ptype, flags, body):
        if ptype == SUBACK:
            if all(c != 0x80 for c in body[2:]):
                self.subscribed.set()
            return
        if ptype != PUBLISH:
            return
        qos = (flags >> 1) & 3
        n = struct.unpack_from("!H", body, 0)[0]
        pos = 2 + n
        if qos:
            pid = struct.unpack_from("!H", body, pos)[0]
            pos += 2
            self.send(_packet(0x40, struct.pack("!H", pid)))
        self.received += 1
        self.recorder(self, now, body[pos:], bool(flags & 8))


class Loop:
    """The one thread that runs every client."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self.clients = []
        self.now = time.monotonic()
        self.stop_ev = threading.Event()
        self.calls = []  # functions to run on the loop thread
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True, name="mqttloop")
        self.error = None

    def add(self, c):
        self.clients.append(c)

    def call(self, fn):
        """Runs fn(now) on the loop thread (soon)."""
        with self.lock:
            self.calls.append(fn)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stop_ev.set()
        self.thread.join(10)

    def _run(self):
        try:
            while not self.stop_ev.is_set():
                for key, mask in self.sel.select(TICK_S):
                    self.now = time.monotonic()
                    key.data.on_event(self.now, mask)
                self.now = time.monotonic()
                if self.calls:
                    with self.lock:
                        calls, self.calls = self.calls, []
                    for fn in calls:
                        fn(self.now)
                for c in self.clients:
                    c.tick(self.now)
            now = time.monotonic()
            for c in self.clients:
                c.close(now)
        except Exception as e:  # reported by the suite: a harness bug must not pass silently
            import traceback
            self.error = "%r\n%s" % (e, traceback.format_exc())
