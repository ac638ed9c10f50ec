"""A minimal raw-socket MQTT 3.1.1 / 5.0 client for tests that need full control
over the bytes on the wire (acks withheld, DUP re-sends, malformed packets, silent
clients). Every receive is bounded by a timeout.
"""
import select
import socket
import struct
import time

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = (
    8, 9, 10, 11, 12, 13, 14, 15)

TYPE_NAMES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC",
              6: "PUBREL", 7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK",
              10: "UNSUBSCRIBE", 11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP",
              14: "DISCONNECT", 15: "AUTH"}

# MQTT 5 property ids
PAYLOAD_FORMAT = 0x01
MESSAGE_EXPIRY = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_ID = 0x0B
SESSION_EXPIRY = 0x11
ASSIGNED_CLIENT_ID = 0x12
SERVER_KEEPALIVE = 0x13
REASON_STRING = 0x1F
WILL_DELAY = 0x18
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_PACKET_SIZE = 0x27
USER_PROPERTY = 0x26
AUTH_METHOD = 0x15
AUTH_DATA = 0x16

_BYTE = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}
_U16 = {0x13, 0x21, 0x22, 0x23}
_U32 = {0x02, 0x11, 0x18, 0x27}
_VBI = {0x0B}
_STR = {0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F}
_BIN = {0x09, 0x16}
_PAIR = {0x26}


class Closed(Exception):
    """The broker closed the connection."""


class Timeout(AssertionError):
    """Nothing (or not the expected packet) arrived in time."""


def vbi(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def s(x):
    if isinstance(x, str):
        x = x.encode()
    return struct.pack("!H", len(x)) + x


def encode_props(props):
    """props: None, dict {id: value} or list of (id, value) (for repeats)."""
    if props is None:
        return b"\x00"
    items = props.items() if isinstance(props, dict) else props
    out = bytearray()
    for pid, val in items:
        if pid in _PAIR and isinstance(val, list):
            for k, v in val:
                out += vbi(pid) + s(k) + s(v)
            continue
        out += vbi(pid)
        if pid in _BYTE:
            out += struct.pack("!B", val)
        elif pid in _U16:
            out += struct.pack("!H", val)
        elif pid in _U32:
            out += struct.pack("!I", val)
        elif pid in _VBI:
            out += vbi(val)
        elif pid in (_STR | _BIN):
            out += s(val)
        elif pid in _PAIR:
            out += s(val[0]) + s(val[1])
        else:
            raise ValueError("unknown property %#x" % pid)
    return vbi(len(out)) + bytes(out)


def _read_vbi(buf, pos):
    mult, val = 1, 0
    for i in range(4):
        b = buf[pos]
        pos += 1
        val += (b & 0x7F) * mult
        if not b & 0x80:
            return val, pos
        mult *= 128
    raise ValueError("bad variable byte integer")


def decode_props(buf, pos):
    """Returns (dict, newpos). User properties -> list of pairs, subscription ids -> list."""
    length, pos = _read_vbi(buf, pos)
    end = pos + length
    props = {}
    while pos < end:
        pid, pos = _read_vbi(buf, pos)
        if pid in _BYTE:
            val = buf[pos]
            pos += 1
        elif pid in _U16:
            val = struct.unpack_from("!H", buf, pos)[0]
            pos += 2
        elif pid in _U32:
            val = struct.unpack_from("!I", buf, pos)[0]
            pos += 4
        elif pid in _VBI:
            val, pos = _read_vbi(buf, pos)
        elif pid in _STR or pid in _BIN:
            n = struct.unpack_from("!H", buf, pos)[0]
            val = bytes(buf[pos + 2:pos + 2 + n])
            if pid in _STR:
                val = val.decode()
            pos += 2 + n
        elif pid in _PAIR:
            n = struct.unpack_from("!H", buf, pos)[0]
            k = bytes(buf[pos + 2:pos + 2 + n]).decode()
            pos += 2 + n
            n = struct.unpack_from("!H", buf, pos)[0]
            v = bytes(buf[pos + 2:pos + 2 + n]).decode()
            pos += 2 + n
            val = (k, v)
        else:
            raise ValueError("unknown property %#x" % pid)
        if pid in _PAIR or pid in _VBI:
            props.setdefault(pid, []).append(val)
        else:
            props[pid] = val
    return props, end


def packet(ptype, flags, body):
    return bytes([(ptype << 4) | flags]) + vbi(len(body)) + body


class Packet:
    def __init__(self, first, body, version):
        self.type = first >> 4
        self.flags = first & 0x0F
        self.body = body
        self.props = {}
        self.reason = None
        self.packet_id = None
        self.topic = None
        self.payload = None
        self.codes = None
        self.session_present = None
        v5 = version == 5
        t = self.type
        if t == CONNACK:
            self.session_present = bool(body[0] & 1)
            self.reason = body[1]
            if v5 and len(body) > 2:
                self.props, _ = decode_props(body, 2)
        elif t == PUBLISH:
            self.qos = (self.flags >> 1) & 3
            self.dup = bool(self.flags & 8)
            self.retain = bool(self.flags & 1)
            n = struct.unpack_from("!H", body, 0)[0]
            self.topic = bytes(body[2:2 + n]).decode()
            pos = 2 + n
            if self.qos:
                self.packet_id = struct.unpack_from("!H", body, pos)[0]
                pos += 2
            if v5:
                self.props, pos = decode_props(body, pos)
            self.payload = bytes(body[pos:])
        elif t in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK, SUBACK):
            self.packet_id = struct.unpack_from("!H", body, 0)[0]
            pos = 2
            if t in (SUBACK, UNSUBACK):
                if v5:
                    self.props, pos = decode_props(body, pos)
                self.codes = list(body[pos:])
            else:
                self.reason = body[2] if len(body) > 2 else 0
                if v5 and len(body) > 3:
                    self.props, _ = decode_props(body, 3)
        elif t in (DISCONNECT, AUTH):
            self.reason = body[0] if body else 0
            if len(body) > 1:
                self.props, _ = decode_props(body, 1)

    @property
    def name(self):
        return TYPE_NAMES.get(self.type, str(self.type))

    def __repr__(self):
        extra = ""
        if self.type == PUBLISH:
            extra = " topic=%r qos=%d dup=%d retain=%d id=%s payload=%r props=%r" % (
                self.topic, self.qos, self.dup, self.retain, self.packet_id,
                self.payload[:40], self.props)
        elif self.reason is not None or self.packet_id is not None:
            extra = " id=%s reason=%s props=%r" % (
                self.packet_id, None if self.reason is None else hex(self.reason),
                self.props)
        elif self.codes is not None:
            extra = " codes=%r" % self.codes
        return "<%s%s>" % (self.name, extra)


def connect_packet(client_id="", version=4, clean=True, keepalive=60, will=None,
                   props=None, username=None, password=None, flags_override=None):
    """will: dict(topic=, payload=, qos=0, retain=False, props=None)."""
    flags = 0
    if clean:
        flags |= 0x02
    if will:
        flags |= 0x04 | (will.get("qos", 0) << 3) | (0x20 if will.get("retain") else 0)
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    if flags_override is not None:
        flags = flags_override
    body = s("MQTT") + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == 5:
        body += encode_props(props)
    body += s(client_id)
    if will:
        if version == 5:
            body += encode_props(will.get("props"))
        body += s(will["topic"]) + s(will.get("payload", b""))
    if username is not None:
        body += s(username)
    if password is not None:
        body += s(password)
    return packet(CONNECT, 0, body)


def publish_packet(topic, payload=b"", qos=0, packet_id=None, retain=False, dup=False,
                   props=None, version=4):
    if isinstance(payload, str):
        payload = payload.encode()
    flags = (qos << 1) | (1 if retain else 0) | (8 if dup else 0)
    body = s(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    if version == 5:
        body += encode_props(props)
    return packet(PUBLISH, flags, body + payload)


class RawClient:
    def __init__(self, host, port, version=4, timeout=5.0, rcvbuf=None):
        self.version = version
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = bytearray()
        self.closed = False

    # --- sending -------------------------------------------------------------
    def send(self, data):
        self.sock.sendall(data)

    def connect(self, client_id="", clean=True, keepalive=60, will=None, props=None,
                expect_connack=True, **kw):
        self.send(connect_packet(client_id, self.version, clean, keepalive, will, props,
                                 **kw))
        if expect_connack:
            return self.expect(CONNACK)
        return None

    def publish(self, topic, payload=b"", qos=0, packet_id=None, retain=False, dup=False,
                props=None):
        self.send(publish_packet(topic, payload, qos, packet_id, retain, dup, props,
                                 self.version))

    def _ack(self, ptype, flags, packet_id, reason=None):
        body = struct.pack("!H", packet_id)
        if reason is not None:
            body += bytes([reason])
        self.send(packet(ptype, flags, body))

    def puback(self, pid, reason=None):
        self._ack(PUBACK, 0, pid, reason)

    def pubrec(self, pid, reason=None):
        self._ack(PUBREC, 0, pid, reason)

    def pubrel(self, pid, reason=None):
        self._ack(PUBREL, 2, pid, reason)

    def pubcomp(self, pid, reason=None):
        self._ack(PUBCOMP, 0, pid, reason)

    def subscribe(self, packet_id, filters, props=None, wait=True):
        """filters: list of (filter, options_byte) or a single filter string (QoS 0)."""
        if isinstance(filters, str):
            filters = [(filters, 0)]
        body = struct.pack("!H", packet_id)
        if self.version == 5:
            body += encode_props(props)
        for f, opts in filters:
            body += s(f) + bytes([opts])
        self.send(packet(SUBSCRIBE, 2, body))
        if wait:
            return self.expect(SUBACK)
        return None

    def auth(self, reason, props=None):
        """AUTH (MQTT 5): reason 0x18 continue / 0x19 re-authenticate."""
        self.send(packet(AUTH, 0, bytes([reason]) + encode_props(props)))

    def pingreq(self):
        self.send(b"\xc0\x00")

    def disconnect(self, reason=None, props=None):
        if self.version == 5 and (reason is not None or props is not None):
            body = bytes([reason or 0]) + (encode_props(props) if props else b"")
        else:
            body = b""
        self.send(packet(DISCONNECT, 0, body))

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    # --- receiving -----------------------------------------------------------
    def _parse_one(self):
        buf = self.buf
        if len(buf) < 2:
            return None
        mult, val, pos = 1, 0, 1
        while True:
            if pos >= len(buf):
                return None
            b = buf[pos]
            val += (b & 0x7F) * mult
            pos += 1
            if not b & 0x80:
                break
            mult *= 128
            if pos > 4:
                raise ValueError("broker sent a bad remaining length")
        if len(buf) < pos + val:
            return None
        first = buf[0]
        body = bytes(buf[pos:pos + val])
        del buf[:pos + val]
        return Packet(first, body, self.version)

    def recv(self, timeout=None):
        """Next packet. Raises Timeout if none in time, Closed on EOF/reset."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            p = self._parse_one()
            if p is not None:
                return p
            if self.closed:
                raise Closed("connection closed by broker")
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("no packet within %.1fs" % timeout)
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                continue
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            except socket.timeout:
                continue
            if not data:
                self.closed = True
                continue
            self.buf += data

    def expect(self, ptype, timeout=None):
        """Next packet, which must be of type ptype (PINGRESPs are skipped)."""
        while True:
            p = self.recv(timeout)
            if p.type == PINGRESP and ptype != PINGRESP:
                continue
            if p.type != ptype:
                raise AssertionError("expected %s, got %r" % (TYPE_NAMES[ptype], p))
            return p

    def recv_publishes(self, n, timeout=None):
        out = []
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("got %d of %d PUBLISH: %r" % (len(out), n, out))
            out.append(self.expect(PUBLISH, left))
        return out

    def expect_nothing(self, timeout):
        """Asserts no packet arrives within timeout (connection may stay open)."""
        try:
            p = self.recv(timeout)
        except Timeout:
            return
        raise AssertionError("unexpected packet %r" % p)

    def wait_closed(self, timeout=None):
        """Reads until the broker closes the connection. Returns the packets read before
        the close. Raises Timeout if still open after timeout."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        got = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("connection still open after %.1fs (read %r)" % (timeout, got))
            try:
                got.append(self.recv(left))
            except Closed:
                return got
            except ValueError:
                # unparseable bytes from broker: treat as end
                self.buf.clear()

    def drain_until_closed(self, timeout):
        """Reads raw bytes (no parsing) until EOF. Returns bytes count. Raises Timeout."""
        deadline = time.monotonic() + timeout
        n = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("connection still open after %.1fs (%d bytes read)" % (timeout, n))
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                continue
            try:
                data = self.sock.recv(1 << 20)
            except (ConnectionResetError, BrokenPipeError):
                return n
            if not data:
                return n
            n += len(data)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
