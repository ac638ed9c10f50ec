#!/usr/bin/python3
"""Failover time of a persistent session in a three-node tern cluster.

Each trial starts a fresh cluster on 127.0.0.1 and picks a victim node: the
Raft leader (--kill leader, the worst case: an election comes first) or a
follower. A persistent (clean session 0) QoS 1 subscriber connects to the
victim, a publisher on another node publishes --messages QoS 1 messages (all
PUBACKed, so committed), which the subscriber receives without acknowledging
them (the in-flight window fills, the rest stay queued); then the victim is
killed with SIGKILL. The subscriber reconnects to a surviving node at once when
its socket closes, and we time, from the kill:
  detect   the subscriber's socket reports the close,
  connack  CONNACK (session present) from node 2,
  first    the first message of the session received on node 2,
  all      every message received (each acknowledged as it arrives).
The client's reconnect is included. Prints one JSON object (per trial values
and median / max over trials). Every wait is bounded.

Only standard library; raw MQTT 3.1.1 so nothing hides a retry.
"""
import argparse
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

TOPIC = "fo/t"
CLIENT = "fo-sub"


_given = set()


def free_port():
    """A free port below the ephemeral range (outgoing connections take those)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            top = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        top = 32768
    top = max(top, 21024)
    for _ in range(500):
        port = random.randrange(20000, top)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError("no free port")


# ---- minimal MQTT 3.1.1 -------------------------------------------------------------


def vbi(n):
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mstr(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def packet(first, body):
    return bytes([first]) + vbi(len(body)) + body


class Conn:
    def __init__(self, port, timeout=2.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def read(self, deadline):
        """Next (type, flags, body); None at the deadline; raises EOFError on close."""
        while True:
            pkt = self._parse()
            if pkt:
                return pkt
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return None
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, OSError):
                data = b""
            if not data:
                raise EOFError
            self.buf += data

    def _parse(self):
        b = self.buf
        if len(b) < 2:
            return None
        n, mul, i = 0, 1, 1
        while True:
            if i >= len(b):
                return None
            n += (b[i] & 0x7F) * mul
            mul *= 128
            i += 1
            if not b[i - 1] & 0x80:
                break
        if len(b) < i + n:
            return None
        self.buf = b[i + n:]
        return b[0] >> 4, b[0] & 0x0F, b[i:i + n]

    def connect(self, client, clean, deadline):
        flags = 0x02 if clean else 0x00
        body = mstr("MQTT") + bytes([4, flags]) + struct.pack("!H", 30) + mstr(client)
        self.send(packet(0x10, body))
        while True:
            pkt = self.read(deadline)
            if pkt is None:
                raise TimeoutError("no CONNACK")
            if pkt[0] == 2:
                return pkt[2][0] & 1, pkt[2][1]  # session present, return code

    def subscribe(self, topic, qos, deadline):
        self.send(packet(0x82, struct.pack("!H", 1) + mstr(topic) + bytes([qos])))
        while True:
            pkt = self.read(deadline)
            if pkt is None:
                raise TimeoutError("no SUBACK")
            if pkt[0] == 9:
                if pkt[2][2] >= 0x80:
                    raise RuntimeError("subscription refused")
                return

    def publish(self, topic, payload, pid):
        self.send(packet(0x32, mstr(topic) + struct.pack("!H", pid) + payload))

    def puback(self, pid):
        self.send(packet(0x40, struct.pack("!H", pid)))


def parse_publish(flags, body):
    tlen = struct.unpack("!H", body[:2])[0]
    off = 2 + tlen
    pid = None
    if (flags >> 1) & 3:
        pid = struct.unpack("!H", body[off:off + 2])[0]
        off += 2
    return pid, body[off:]


# ---- cluster --------------------------------------------------------------------------


class Cluster:
    def __init__(self, ternd, workdir, extra):
        self.ternd, self.workdir, self.extra = ternd, workdir, extra
        self.procs = {}
        ids = (1, 2, 3)
        self.mqtt = {i: free_port() for i in ids}
        members = [{"id": i, "raft": "127.0.0.1:%d" % free_port(),
                    "peer": "127.0.0.1:%d" % free_port(),
                    "mqtt": "127.0.0.1:%d" % self.mqtt[i]} for i in ids]
        self.logs = {}
        for i in ids:
            d = os.path.join(workdir, "n%d" % i)
            os.makedirs(d, exist_ok=True)
            cfg = {"node_id": i, "listen": "127.0.0.1:%d" % self.mqtt[i],
                   "data_dir": d, "log_level": "info", "members": members,
                   "admin_listen": "127.0.0.1:0"}
            path = os.path.join(workdir, "n%d.json" % i)
            with open(path, "w") as f:
                json.dump(cfg, f)
            self.logs[i] = os.path.join(workdir, "n%d.log" % i)
            args = [ternd, "--config", path] + [a for kv in extra for a in ("--set", kv)]
            with open(self.logs[i], "w") as log:
                self.procs[i] = subprocess.Popen(args, stdout=log, stderr=log)

    def leader(self):
        """Highest-term leader named in the logs, or 0."""
        best = (-1, 0)
        for i, path in self.logs.items():
            try:
                text = open(path).read()
            except OSError:
                continue
            for m in re.finditer(r"node (\d+) is leader \(term (\d+)\)", text):
                best = max(best, (int(m.group(2)), int(m.group(1))))
            for m in re.finditer(r"leader is node (\d+) \(term (\d+)\)", text):
                best = max(best, (int(m.group(2)), int(m.group(1))))
        return best[1]

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError("node %d exited: see %s" % (i, self.logs[i]))
            if self.leader():
                try:  # every node answers a CONNECT: the cluster can commit
                    for i in self.procs:
                        c = Conn(self.mqtt[i])
                        rc = c.connect("fo-probe%d" % i, True, time.monotonic() + 2)[1]
                        c.close()
                        if rc != 0:
                            raise OSError
                    return
                except (OSError, EOFError, TimeoutError):
                    pass
            time.sleep(0.05)
        raise RuntimeError("cluster not ready in %.0f s" % timeout)

    def kill9(self, i):
        self.procs[i].send_signal(signal.SIGKILL)

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


# ---- one trial ------------------------------------------------------------------------


def trial(args, n):
    work = os.path.join(args.workdir, "%s%d" % (args.kill, n))
    shutil.rmtree(work, ignore_errors=True)  # a stale Raft config would not start
    os.makedirs(work)
    cl = Cluster(args.ternd, work, args.set)
    sub = pub = None
    try:
        cl.wait_ready(20)
        leader = cl.leader()
        victim = leader if args.kill == "leader" else min(set((1, 2, 3)) - {leader})
        others = sorted(set((1, 2, 3)) - {victim})
        sub = Conn(cl.mqtt[victim])
        sub.connect(CLIENT, False, time.monotonic() + 5)
        sub.subscribe(TOPIC, 1, time.monotonic() + 5)
        pub = Conn(cl.mqtt[others[0]])
        pub.connect("fo-pub", True, time.monotonic() + 5)
        for k in range(args.messages):
            pub.publish(TOPIC, b"%06d" % k, k + 1)
        acked, deadline = 0, time.monotonic() + 10
        while acked < args.messages:
            pkt = pub.read(deadline)
            if pkt is None:
                raise RuntimeError("publisher: %d of %d PUBACKs" % (acked, args.messages))
            acked += pkt[0] == 4
        # The subscriber sees its in-flight window and acknowledges nothing.
        seen_before, deadline = 0, time.monotonic() + 0.3
        while True:
            pkt = sub.read(deadline)
            if pkt is None:
                break
            seen_before += pkt[0] == 3
        if cl.leader() != leader:
            raise RuntimeError("leader changed before the kill")

        t0 = time.monotonic()
        cl.kill9(victim)
        try:
            while sub.read(t0 + 10) is not None:
                pass
            raise RuntimeError("subscriber socket still open 10 s after kill -9")
        except EOFError:
            t_detect = time.monotonic()
        sub.close()
        sub = None
        t_connack, present, attempts = None, 0, 0
        while time.monotonic() < t0 + 20:
            attempts += 1
            port = cl.mqtt[others[(attempts - 1) % 2]]
            try:
                sub = Conn(port)
                present, rc = sub.connect(CLIENT, False, time.monotonic() + 5)
                if rc == 0:
                    t_connack = time.monotonic()
                    break
            except (OSError, EOFError, TimeoutError):
                pass
            if sub:
                sub.close()
                sub = None
            time.sleep(0.05)
        if t_connack is None:
            raise RuntimeError("no CONNACK from a surviving node in 20 s")
        got, t_first, t_all, dups = set(), None, None, 0
        deadline = time.monotonic() + 15
        while len(got) < args.messages:
            pkt = sub.read(deadline)
            if pkt is None:
                break
            if pkt[0] != 3:
                continue
            pid, payload = parse_publish(pkt[1], pkt[2])
            if t_first is None:
                t_first = time.monotonic()
            if payload in got:
                dups += 1
            got.add(payload)
            if pid is not None:
                sub.puback(pid)
        t_all = time.monotonic() if len(got) == args.messages else None
        ms = lambda t: round((t - t0) * 1000, 1) if t else None  # noqa: E731
        return {"trial": n, "killed": victim, "killed_was_leader": victim == leader,
                "seen_before_kill": seen_before, "detect_ms": ms(t_detect),
                "connack_ms": ms(t_connack), "connect_attempts": attempts,
                "session_present": present, "first_ms": ms(t_first),
                "all_ms": ms(t_all), "received": len(got), "duplicates": dups}
    finally:
        for c in (sub, pub):
            if c:
                c.close()
        cl.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ternd", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--kill", choices=("leader", "follower"), default="leader",
                    help="which node the subscriber is on and we kill (leader)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="passed to every ternd as --set")
    args = ap.parse_args()
    trials = []
    for n in range(1, args.trials + 1):
        try:
            r = trial(args, n)
        except Exception as e:  # one bad trial is reported, not fatal
            r = {"trial": n, "error": str(e)}
        print("failover: %s" % json.dumps(r), file=sys.stderr)
        trials.append(r)
    out = {"kill": args.kill, "messages": args.messages, "trials": trials}
    for key in ("detect_ms", "connack_ms", "first_ms", "all_ms"):
        vals = [t[key] for t in trials if t.get(key) is not None]
        out[key.replace("_ms", "_median_ms")] = round(statistics.median(vals), 1) if vals else None
        out[key.replace("_ms", "_max_ms")] = max(vals) if vals else None
    ok = [t for t in trials if t.get("first_ms") is not None]
    out["ok_trials"] = len(ok)
    out["lost"] = sum(args.messages - t.get("received", 0) for t in trials if "error" not in t)
    print(json.dumps(out, separators=(",", ":")))
    return 0 if len(ok) == len(trials) else 1


if __name__ == "__main__":
    sys.exit(main())
