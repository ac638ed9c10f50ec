"""A three-node ternd cluster with one network namespace per node, for fault tests.

Each node runs in its own namespace (`ip netns`), reached over a veth pair enslaved
to a bridge in the root namespace; addresses come from 198.19.K.0/24 (inside the
benchmarking range 198.18.0.0/15, routed nowhere), K picked free per cluster. The
test process (root namespace) is the clients' side at 198.19.K.254. Faults are
iptables rules inside a node's namespace, so they go away with it:

    c.isolate(n)        drop everything in and out of node n (except its loopback)
    c.loss(p)           drop a fraction p of the packets between nodes
    c.delay(ms, helper) delay packets between nodes (NFQUEUE and a helper program)
    c.heal()            remove every rule added
    c.rss_kib(n), c.cpu_s(n)   from /proc

Everything is removed at teardown, also when a test fails (namespaces, veths, the
bridge). Needs root, `ip netns` and iptables: `netns_available()` says why not.
"""
import os
import shutil
import subprocess
import time

import cluster

NS_PREFIX = "tlv"  # names: tlv<K>n<i> (namespace), tlv<K>v<i> (veth), tlv<K>br


def _run(*cmd, check=True):
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True,
                          timeout=20)


def netns_available():
    """None if network namespaces can be used here, else the reason."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return "%s not installed" % tool
    name = "%sprobe%d" % (NS_PREFIX, os.getpid() % 100000)
    try:
        _run("ip", "netns", "add", name)
    except (subprocess.CalledProcessError, OSError) as e:
        return "cannot create a network namespace: %s" % getattr(e, "stderr", e)
    try:
        r = _run("ip", "netns", "exec", name, "iptables", "-S", check=False)
        if r.returncode != 0:
            return "iptables unusable in a namespace: %s" % r.stderr.strip()
    finally:
        _run("ip", "netns", "del", name, check=False)
    return None


def _free_subnet():
    used = _run("ip", "-o", "addr", check=False).stdout
    for k in range(200, 250):
        if ("198.19.%d." % k) not in used and not os.path.exists(
                "/var/run/netns/%s%dn1" % (NS_PREFIX, k)):
            return k
    raise AssertionError("no free 198.19.K.0/24 subnet")


class NsNode(cluster.Node):
    """A cluster.Node living in namespace `ns` at address `addr` (fixed ports)."""

    def __init__(self, node_id, workdir, ns, addr):
        super().__init__(node_id, workdir, 1883, 7001, 7101, 8081)
        self.ns = ns
        self.host = addr
        self.cmd_prefix = ["ip", "netns", "exec", ns]

    def member(self):
        return {"id": self.id, "raft": "%s:7001" % self.host, "peer": "%s:7101" % self.host,
                "mqtt": "%s:1883" % self.host}

    def write_config(self, members, settings=None):
        super().write_config(members, settings)
        import json
        with open(self.config_path) as f:
            cfg = json.load(f)
        cfg["listen"] = "%s:1883" % self.host
        cfg["admin_listen"] = "%s:8081" % self.host
        # not a loopback listener: anonymous clients need saying (docs/security.md)
        cfg["allow_anonymous"] = "true"
        with open(self.config_path, "w") as f:
            json.dump(cfg, f, indent=1)

    def admin_get(self, path, timeout=3.0):
        import urllib.request
        if not self.alive():
            return None
        try:
            with urllib.request.urlopen("http://%s:8081%s" % (self.host, path),
                                        timeout=timeout) as r:
                return r.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return None

    def pid(self):
        """The ternd process (a child of `ip netns exec`, which execs it)."""
        return self.proc.pid


class NetnsCluster(cluster.Cluster):
    def __init__(self, workdir, n=3, settings=None):
        self.k = _free_subnet()
        self.bridge = "%s%dbr" % (NS_PREFIX, self.k)
        self.made = []  # ("ns", name) / ("link", name), removed in reverse
        self.rules = []  # (ns, rule args) added with -A
        self.helpers = []  # delay processes (see delay())
        try:
            self._setup_net(n)
        except BaseException:
            self._teardown_net()
            raise
        self.nodes = []
        for i in range(1, n + 1):
            wd = os.path.join(workdir, "node%d" % i)
            os.makedirs(wd, exist_ok=True)
            self.nodes.append(NsNode(i, wd, self.ns(i), self.addr(i)))
        members = [nd.member() for nd in self.nodes]
        for nd in self.nodes:
            nd.write_config(members, settings)
        self._clients = []

    def ns(self, i):
        return "%s%dn%d" % (NS_PREFIX, self.k, i)

    def addr(self, i):
        return "198.19.%d.%d" % (self.k, i)

    def _setup_net(self, n):
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self.made.append(("link", self.bridge))
        _run("ip", "addr", "add", "198.19.%d.254/24" % self.k, "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for i in range(1, n + 1):
            ns, veth = self.ns(i), "%s%dv%d" % (NS_PREFIX, self.k, i)
            _run("ip", "netns", "add", ns)
            self.made.append(("ns", ns))
            _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0",
                 "netns", ns)
            self.made.append(("link", veth))
            _run("ip", "link", "set", veth, "master", self.bridge)
            _run("ip", "link", "set", veth, "up")
            ex = ["ip", "netns", "exec", ns]
            _run(*ex, "ip", "link", "set", "lo", "up")
            _run(*ex, "ip", "addr", "add", "%s/24" % self.addr(i), "dev", "eth0")
            _run(*ex, "ip", "link", "set", "eth0", "up")

    def _teardown_net(self):
        for kind, name in reversed(self.made):
            if kind == "ns":
                _run("ip", "netns", "del", name, check=False)
            else:
                _run("ip", "link", "del", name, check=False)
        self.made = []

    def teardown(self):
        try:
            self.heal()
            return super().teardown()
        finally:
            self._teardown_net()

    # --- faults --------------------------------------------------------------
    def _iptables(self, i, *rule):
        _run("ip", "netns", "exec", self.ns(i), "iptables", "-A", *rule)
        self.rules.append((i, rule))

    def isolate(self, i):
        self._iptables(i, "INPUT", "-i", "eth0", "-j", "DROP")
        self._iptables(i, "OUTPUT", "-o", "eth0", "-j", "DROP")

    def cut_inbound(self, i):
        """Node i's listening ports unreachable (what iptables on a shared loopback by
        port does): node i still sends on the connections it opened, nothing reaches it
        on those the others opened to it."""
        # The Raft port takes UDP too (beacons, cluster/raft_beacon.h).
        for proto, port in (("tcp", "7001"), ("udp", "7001"), ("tcp", "7101"),
                            ("tcp", "1883")):
            self._iptables(i, "INPUT", "-i", "eth0", "-p", proto, "--dport", port, "-j",
                           "DROP")
            self._iptables(i, "OUTPUT", "-o", "eth0", "-p", proto, "--sport", port, "-j",
                           "DROP")

    def _between_nodes(self, direction):
        """Match packets from (src) or to (dst) another node, not the clients' side."""
        last = "198.19.%d.%d" % (self.k, len(self.nodes))
        return ["-m", "iprange", "--%s-range" % direction,
                "198.19.%d.1-%s" % (self.k, last)]

    def loss(self, p, nodes=None, clients=False):
        """Drops a fraction p of the packets arriving at each node from the other
        nodes (and from the clients too with clients=True)."""
        for i in nodes or range(1, len(self.nodes) + 1):
            match = [] if clients else self._between_nodes("src")
            self._iptables(i, "INPUT", "-i", "eth0", *match, "-m", "statistic", "--mode",
                           "random", "--probability", "%.3f" % p, "-j", "DROP")

    def delay(self, ms, helper, nodes=None, clients=False):
        """Delays every packet leaving each node by `ms` through NFQUEUE 0 and
        `helper` (a program run as `helper QUEUE MS` inside the namespace that
        accepts each queued packet MS ms later; this kernel has no sch_netem)."""
        for i in nodes or range(1, len(self.nodes) + 1):
            p = subprocess.Popen(["ip", "netns", "exec", self.ns(i), helper, "0", str(ms)],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            self.helpers.append(p)
            time.sleep(0.1)  # bound to its queue before packets are sent there
            match = [] if clients else self._between_nodes("dst")
            self._iptables(i, "OUTPUT", "-o", "eth0", *match, "-j", "NFQUEUE", "--queue-num",
                           "0")

    def heal(self):
        for i, rule in reversed(self.rules):
            _run("ip", "netns", "exec", self.ns(i), "iptables", "-D", *rule, check=False)
        self.rules = []
        for p in self.helpers:
            p.kill()
            p.wait(5)
        self.helpers = []

    # --- measurements --------------------------------------------------------
    def rss_kib(self, i):
        try:
            with open("/proc/%d/status" % self.node(i).pid()) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def cpu_s(self, i):
        """User + system CPU seconds of node i so far."""
        try:
            with open("/proc/%d/stat" % self.node(i).pid()) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(pred, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return None


class Publisher:
    """QoS 1 publisher at `rate` msg/s on one node, in a thread; reconnects when the
    node closes the connection. .acks: monotonic times of PUBACKs received."""

    def __init__(self, nd, rate, topic="tern-test/load", inflight=100, payload=b"x" * 64):
        import threading
        import helpers
        self.nd, self.rate, self.topic, self.inflight = nd, rate, topic, inflight
        self.payload = payload
        self.cid = helpers.uid("pub")
        self.acks = []
        self.sent = 0
        self.errors = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _connect(self):
        import mqttraw
        c = mqttraw.RawClient(self.nd.host, self.nd.port, version=4, timeout=2.0)
        try:
            ca = c.connect(self.cid, clean=True)
        except BaseException:
            c.close()
            raise
        if ca.reason != 0:
            c.close()
            raise OSError("CONNACK %d" % ca.reason)
        return c

    def _run(self):
        import mqttraw
        c, pid, unacked, nxt = None, 0, set(), time.monotonic()
        while not self._stop.is_set():
            try:
                if c is None:
                    c, unacked = self._connect(), set()
                now = time.monotonic()
                if now >= nxt and len(unacked) < self.inflight:
                    pid = pid % 65535 + 1
                    c.publish(self.topic, self.payload, qos=1, packet_id=pid)
                    unacked.add(pid)
                    self.sent += 1
                    nxt = max(nxt + 1.0 / self.rate, now - 1.0)
                try:
                    p = c.recv(max(0.001, min(0.02, nxt - time.monotonic())))
                except mqttraw.Timeout:
                    continue
                if p.type == mqttraw.PUBACK and p.packet_id in unacked:
                    unacked.discard(p.packet_id)
                    self.acks.append(time.monotonic())
            except (OSError, mqttraw.Closed, AssertionError, ValueError):
                self.errors += 1
                if c is not None:
                    c.close()
                c = None
                self._stop.wait(0.1)
        if c is not None:
            c.close()

    def last_ack(self):
        return self.acks[-1] if self.acks else None

    def acks_since(self, t):
        return sum(1 for a in self.acks if a >= t)

    def stop(self):
        self._stop.set()
        self._t.join(10)


class Subscriber:
    """A persistent QoS 1 subscriber on one node, in a thread, acknowledging what it
    receives (a subscriber that does not read would hold the publishers back: flow
    control). Reconnects (same session) when the node closes the connection."""

    def __init__(self, nd, topic):
        import threading
        import helpers
        self.nd, self.topic = nd, topic
        self.cid = helpers.uid("sub")
        self.received = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        if not self._ready.wait(10):
            raise AssertionError("subscriber on node %d not subscribed" % nd.id)

    def _run(self):
        import mqttraw
        c = None
        while not self._stop.is_set():
            try:
                if c is None:
                    c = mqttraw.RawClient(self.nd.host, self.nd.port, version=4, timeout=2.0)
                    if c.connect(self.cid, clean=False).reason != 0:
                        raise OSError("CONNACK refused")
                    c.subscribe(1, [(self.topic, 1)])
                    self._ready.set()
                try:
                    p = c.recv(0.05)
                except mqttraw.Timeout:
                    continue
                if p.type == mqttraw.PUBLISH:
                    self.received += 1
                    if p.qos == 1:
                        c.puback(p.packet_id)
            except (OSError, mqttraw.Closed, AssertionError, ValueError):
                if c is not None:
                    c.close()
                c = None
                self._stop.wait(0.1)
        if c is not None:
            c.close()

    def close(self):
        self._stop.set()
        self._t.join(10)
