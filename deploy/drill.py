"""Failover drill against the local cluster of deploy/cluster.sh (run it via deploy/drill.sh).

Publishers send QoS 1 messages at a steady rate while persistent subscribers (clean
session off) receive them; meanwhile the nodes are killed (SIGKILL) and started again one
after the other. Every client fails over by cycling through the three node addresses.
At the end it counts, over all subscribers: messages sent, acknowledged by the broker
(PUBACK), received, received more than once, and lost (acknowledged but never received
by a subscriber). Exits 1 if anything acknowledged was lost, or if nothing was
acknowledged at all.
"""
import argparse
import os
import subprocess
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER_SH = os.path.join(HERE, "cluster.sh")
NODES = (1, 2, 3)
CONNACK_WAIT_S = 5.0
DOWN_S = 1.5  # how long a killed node stays down
SETTLE_S = 1.0  # pause after a node is back before the next kill
ACK_WAIT_S = 20.0  # at the end: for outstanding PUBACKs, then for deliveries


def log(t0, text):
    print("drill: %6.1fs %s" % (time.monotonic() - t0, text), flush=True)


def mqtt_base():
    """As cluster.sh: the environment, else what `cluster.sh up` saved, else 1883."""
    if os.environ.get("TERN_MQTT_BASE"):
        return int(os.environ["TERN_MQTT_BASE"])
    data = os.path.realpath(os.environ.get("TERN_DATA") or "./.cluster")
    try:
        with open(os.path.join(data, "cluster.env")) as f:
            for line in f:
                if line.startswith("TERN_MQTT_BASE="):
                    return int(line.split("=", 1)[1])
    except OSError:
        pass
    return 1883


class FailoverClient:
    """A paho client on its own thread that reconnects, node after node, until stopped."""

    def __init__(self, client_id, addrs, first, clean):
        self.addrs = addrs
        self.index = first
        self.c = mqtt.Client(client_id=client_id, clean_session=clean,
                             protocol=mqtt.MQTTv311)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        # Only the network thread writes (publish() from another thread would race it
        # for paho's packet queue and could reorder PUBLISHes on the wire).
        self.c.on_socket_register_write = lambda c, u, sock: None
        self.connected = threading.Event()
        self.connects = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.thread.join(10)
        try:
            self.c.disconnect()
        except (OSError, ValueError):
            pass

    def on_session(self, session_present):
        """Called on the network thread after each successful CONNACK."""

    def _on_connect(self, c, userdata, flags, rc):
        if rc != 0:
            return  # refused: _run moves on to the next node
        self.connects += 1
        self.on_session(bool(flags.get("session present")))
        self.connected.set()

    def _on_disconnect(self, c, userdata, rc):
        self.connected.clear()

    def _run(self):
        while not self.stopping.is_set():
            host, port = self.addrs[self.index % len(self.addrs)]
            try:
                self.c.connect(host, port, keepalive=5)
                self._serve()
            except (OSError, ValueError):
                pass
            self.connected.clear()
            self.index += 1
            self.stopping.wait(0.1)

    def _serve(self):
        deadline = time.monotonic() + CONNACK_WAIT_S
        while not self.stopping.is_set():
            if self.c.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                return
            if not self.connected.is_set() and time.monotonic() > deadline:
                return  # no CONNACK: try another node


class Subscriber(FailoverClient):
    def __init__(self, client_id, addrs, first, topic):
        super().__init__(client_id, addrs, first, clean=False)
        self.topic = topic
        self.received = {}  # (publisher, seq) -> times received
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.sessions_lost = 0
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda c, u, mid, granted: self.subscribed.set()

    def on_session(self, session_present):
        # The session (and its subscription and queue) must survive every failover.
        if not session_present:
            if self.subscribed.is_set():
                self.sessions_lost += 1
            self.c.subscribe(self.topic, qos=1)

    def _on_message(self, c, userdata, msg):
        try:
            pub, seq = msg.payload.decode().split(":")
            key = (pub, int(seq))
        except ValueError:
            return
        with self.lock:
            self.received[key] = self.received.get(key, 0) + 1


class Publisher(FailoverClient):
    def __init__(self, name, addrs, first, topic):
        super().__init__(name, addrs, first, clean=True)
        self.name = name
        self.topic = topic
        self.sent = 0
        self.acked = set()  # seqs
        self.inflight = {}  # mid -> seq
        self.early = set()  # mids acknowledged before publish() returned them
        self.lock = threading.Lock()
        self.c.on_publish = self._on_publish

    def _on_publish(self, c, userdata, mid):
        with self.lock:
            if mid in self.inflight:
                self.acked.add(self.inflight.pop(mid))
            else:
                self.early.add(mid)

    def publish_next(self):
        """Publishes one message if connected (paho re-sends unacked ones itself on reconnect)."""
        if not self.connected.is_set():
            return
        seq = self.sent
        # No lock of ours is held here: paho calls on_publish under its own locks.
        info = self.c.publish(self.topic, "%s:%d" % (self.name, seq), qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            return
        self.sent += 1
        with self.lock:
            if info.mid in self.early:
                self.early.discard(info.mid)
                self.acked.add(seq)
            else:
                self.inflight[info.mid] = seq

    def unacked(self):
        with self.lock:
            return self.sent - len(self.acked)


def cluster(t0, *args):
    r = subprocess.run([CLUSTER_SH] + [str(a) for a in args], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=120)
    out = r.stdout.decode(errors="replace").strip().splitlines()
    log(t0, "cluster.sh %s: %s%s" % (" ".join(map(str, args)), "ok" if r.returncode == 0 else
                                      "FAILED (exit %d)" % r.returncode,
                                      "" if r.returncode == 0 else "\n" + "\n".join(out[-20:])))
    return r.returncode == 0


def chaos(t0, end, failures, stop):
    """Kills and restarts the nodes in turn until `end`; always leaves them all running."""
    i = 0
    stop.wait(1.0)
    while not stop.is_set() and time.monotonic() + DOWN_S + SETTLE_S < end:
        node = NODES[i % len(NODES)]
        i += 1
        if not cluster(t0, "kill", node):
            failures.append("kill %d" % node)
        stop.wait(DOWN_S)
        if not cluster(t0, "start", node):
            failures.append("start %d" % node)
        stop.wait(SETTLE_S)
    return i


def wait_until(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def main():
    ap = argparse.ArgumentParser(prog="drill.sh", description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=30.0, help="seconds (default 30)")
    ap.add_argument("--rate", type=float, default=50.0,
                    help="messages per second over all publishers (default 50)")
    ap.add_argument("--publishers", type=int, default=2, help="(default 2)")
    ap.add_argument("--subscribers", type=int, default=2, help="(default 2)")
    a = ap.parse_args()
    if a.duration <= 0 or a.rate <= 0 or a.publishers < 1 or a.subscribers < 1:
        ap.error("--duration and --rate must be positive, --publishers/--subscribers >= 1")

    t0 = time.monotonic()
    if subprocess.run([CLUSTER_SH, "status"], stdout=subprocess.DEVNULL,
                      timeout=60).returncode != 0:
        print("drill: the cluster is not fully up; start it with deploy/cluster.sh up",
              file=sys.stderr)
        return 1
    base = mqtt_base()
    addrs = [("127.0.0.1", base + n - 1) for n in NODES]
    run = uuid.uuid4().hex[:8]
    topic = "drill/%s" % run
    subs = [Subscriber("drill-%s-sub%d" % (run, k), addrs, k, topic + "/#")
            for k in range(a.subscribers)]
    pubs = [Publisher("drill-%s-pub%d" % (run, k), addrs, k + 1, "%s/%d" % (topic, k))
            for k in range(a.publishers)]
    for s in subs:
        s.start()
    if not all(s.subscribed.wait(15) for s in subs):
        print("drill: subscribers could not subscribe within 15 s", file=sys.stderr)
        return 1
    for p in pubs:
        p.start()
    log(t0, "%d publishers, %d persistent subscribers, %.0f msgs/s for %.0f s on %s" % (
        len(pubs), len(subs), a.rate, a.duration, ", ".join("%s:%d" % x for x in addrs)))

    end = time.monotonic() + a.duration
    failures, stop = [], threading.Event()
    kills = []
    chaos_thread = threading.Thread(target=lambda: kills.append(chaos(t0, end, failures, stop)),
                                    daemon=True)
    chaos_thread.start()
    interval, tick, start = 1.0 / a.rate, 0, time.monotonic()
    while time.monotonic() < end:
        pubs[tick % len(pubs)].publish_next()
        tick += 1
        time.sleep(max(0.0, start + interval * tick - time.monotonic()))
    chaos_thread.join(180)
    stop.set()

    log(t0, "publishing stopped; waiting for acknowledgements and deliveries")
    wait_until(lambda: all(p.unacked() == 0 for p in pubs), ACK_WAIT_S)
    acked = {(p.name, seq) for p in pubs for seq in list(p.acked)}

    def missing():
        n = 0
        for s in subs:
            with s.lock:
                n += sum(1 for k in acked if k not in s.received)
        return n

    wait_until(lambda: missing() == 0, ACK_WAIT_S)
    for c in pubs + subs:
        c.stop()

    sent = sum(p.sent for p in pubs)
    received = dup = lost = 0
    for s in subs:
        with s.lock:
            received += len(s.received)
            dup += sum(n - 1 for n in s.received.values())
            lost += sum(1 for k in acked if k not in s.received)
    lost_sessions = sum(s.sessions_lost for s in subs)
    log(t0, "%d node kills, %d client reconnects, %d persistent sessions lost" % (
        kills[0] if kills else 0, sum(c.connects - 1 for c in pubs + subs), lost_sessions))
    if subprocess.run([CLUSTER_SH, "status"], stdout=subprocess.DEVNULL,
                      timeout=60).returncode != 0:
        failures.append("status at the end (a node is down)")
    if failures:
        log(t0, "cluster.sh failed: %s" % ", ".join(failures))
    print("drill: sent %d acknowledged %d received %d (of %d expected: %d subscribers) "
          "duplicated %d lost %d" % (sent, len(acked), received, len(acked) * len(subs),
                                      len(subs), dup, lost), flush=True)
    why = ["acknowledged messages were lost"] if lost else []
    why += [] if acked else ["nothing was acknowledged"]
    why += ["the cluster did not recover (%s)" % ", ".join(failures)] if failures else []
    if why:
        print("drill: FAILED: %s" % "; ".join(why), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
