#!/usr/bin/env python3
"""Scale benchmark (issue 19): many persistent sessions on a 3-node tern cluster, and
Mosquitto with `persistence true` holding the same sessions; then reconnect storms.

Per step N (persistent sessions, each with one subscription and --messages queued
QoS 1 messages, created through one node, the "victim", so that it owns them):
  RSS per node and bytes per session, snapshot size and time (the node's log line
  "raft: snapshot N finished (B bytes, T ms)") and the longest loop iteration
  (tern_loop_busy_max_seconds, tern_snapshot_max_seconds), PUBLISH->PUBACK p99 at a
  fixed rate while the sessions exist, the restart of one node (kill -9, start) until
  /health says ready, the catch-up of a node added empty (POST /members) until its
  applied index reaches the leader's (POST repeated on a 503, up to 3 times; the
  leader's RSS growth and its closes of the link to the new node meanwhile), and
  the storm: the victim is killed (kill -9)
  and all N sessions reconnect to the two survivors (--concurrency handshakes in
  flight) until each has session present and its whole queue. The commands per
  Raft entry during the storm come from the admin metrics
  (tern_raft_proposals_applied_total summed over the survivors against the leader's
  tern_raft_entries_appended_total).
Mosquitto: the same sessions, its RSS, the save at SIGTERM (it saves on exit), the
restart until it accepts connections and the resume of every session with its queue.

--held N: the storm with N devices connected to the victim when it is killed (their
queue delivered and not acknowledged, so it must come again from the survivors),
and the same storm for clean sessions, beside Mosquitto killed and restarted.

Everything runs under a temporary directory removed on exit; every process started
here is stopped on exit (also on error or Ctrl-C). Prints figures; asserts nothing
about speed. Standard-library Python only.
"""
import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from benchutil import free_ports

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
PROCS = []
SRC_ADDRS = ",".join("127.0.0.%d" % i for i in range(2, 18))  # 16 sources
# "(B bytes, T ms)"; since the forked snapshots "(B bytes, T ms, loop stall S us, forked)"
_SNAP_RE = re.compile(r"raft: snapshot (\d+) finished \((\d+) bytes, (\d+) ms(?:, loop stall (\d+) us)?")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_port(port, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return time.monotonic() - t0
        except OSError:
            time.sleep(0.005)
    raise RuntimeError("port %d not listening after %.0f s" % (port, timeout))


class Node:
    def __init__(self, ternd, nid, wd, settings):
        self.ternd, self.id, self.wd, self.settings = ternd, nid, wd, settings
        self.port, self.raft, self.peer, self.admin = free_ports(4)
        self.data = os.path.join(wd, "data")
        self.logp = os.path.join(wd, "ternd.log")
        self.proc = None
        os.makedirs(self.data, exist_ok=True)

    def member(self):
        return {"id": self.id, "raft": "127.0.0.1:%d" % self.raft,
                "peer": "127.0.0.1:%d" % self.peer, "mqtt": "127.0.0.1:%d" % self.port}

    def write_config(self, members, join=False):
        cfg = dict(self.settings)
        cfg.update({"node_id": self.id, "listen": "127.0.0.1:%d" % self.port,
                    "data_dir": self.data, "log_level": "info", "members": members,
                    "admin_listen": "127.0.0.1:%d" % self.admin})
        if join:
            cfg["join"] = True
        with open(os.path.join(self.wd, "ternd.json"), "w") as f:
            json.dump(cfg, f)

    def start(self):
        logf = open(self.logp, "ab")
        self.proc = subprocess.Popen(
            [self.ternd, "--config", os.path.join(self.wd, "ternd.json")],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, preexec_fn=raise_nofile)
        logf.close()
        PROCS.append(self.proc)

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def http(self, method, path, timeout=10):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.admin, path),
                                     method=method, data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return None, ""

    def ready(self):
        st, _ = self.http("GET", "/health", timeout=2)
        return st == 200

    def wait_ready(self, timeout=300):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError("node %d exited:\n%s" % (self.id, self.tail()))
            if self.ready():
                return time.monotonic() - t0
            time.sleep(0.01)
        raise RuntimeError("node %d not ready after %.0f s" % (self.id, timeout))

    def metrics(self):
        st, body = self.http("GET", "/metrics", timeout=30)
        out = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                try:
                    out[k] = float(v)
                except ValueError:
                    pass
        return out

    def rss(self):
        return rss_kb(self.proc.pid) if self.proc else 0

    def snapshots(self):
        with open(self.logp, errors="replace") as f:
            return [(int(a), int(b), int(c), int(d) if d else None)
                    for a, b, c, d in _SNAP_RE.findall(f.read())]

    def tail(self, n=15):
        try:
            with open(self.logp, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


class Cluster:
    def __init__(self, ternd, wd, settings, n=3):
        self.nodes = [Node(ternd, i, os.path.join(wd, "node%d" % i), settings)
                      for i in range(1, n + 1)]
        members = [nd.member() for nd in self.nodes]
        for nd in self.nodes:
            nd.write_config(members)
            nd.start()
        for nd in self.nodes:
            nd.wait_ready(60)

    def node(self, nid):
        return next(nd for nd in self.nodes if nd.id == nid)

    def leader(self):
        for nd in self.nodes:
            if nd.proc is not None:
                st, body = nd.http("GET", "/health")
                if body:
                    lid = json.loads(body).get("leader", 0)
                    if lid:
                        return lid
        return 0

    def stop(self):
        for nd in self.nodes:
            nd.kill(signal.SIGTERM)


def bench(args, extra, timeout):
    cmd = [args.bench, "--json", "--source-addrs", SRC_ADDRS, "--concurrency",
           str(args.concurrency), "--connect-timeout", str(timeout)] + extra
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=raise_nofile)
    PROCS.append(p)
    out, err = p.communicate(timeout=4 * timeout + 120)
    if err.strip():
        log(err.strip()[-2000:])
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError("tern-bench printed nothing: %s" % err[-500:])
    return json.loads(lines[-1])


def tern_settings(args):
    return {"connect_rate_per_address": 0, "connections_per_address_max": 0,
            "max_connections": 1000000, "queue_max": 1000,
            # the default bound is 1,000,000 sessions: the 1M step's publishers and
            # probes need a few more (refused with "quota exceeded" otherwise)
            "sessions_max": 2000000}


def fixed_rate_p99(args, ports, prefix):
    r = bench(args, ["--pubs", "10", "--subs", "10", "--qos", "1", "--rate", str(args.rate),
                     "--duration", "1" if args.quick else "5", "--warmup", "0.2" if args.quick else "1", "--topics", "10", "--topic-prefix", prefix,
                     "--pub-ports", ",".join(map(str, ports)),
                     "--sub-ports", ",".join(map(str, ports))], 60)
    return r.get("ack_p99_us", 0) / 1000.0, r.get("acked", 0)


def catchup(args, lead, new):
    """POST /members for `new` (started empty with join) on the leader, until new's
    applied index reaches the leader's last index at the POST. libraft gives up a
    promotion whose catch-up round lasts over 5 s (503, the node stays a spare): the
    POST is then repeated, up to 3 times, the clock running from the first. Also the
    leader's RSS growth meanwhile (the snapshot it holds to send) and the leader-side
    closes of the link to the new node (its log)."""
    target = lead.metrics().get("tern_raft_last_index", 0)
    with open(lead.logp, "rb") as f:
        log_from = f.seek(0, 2)
    rss0 = lead.rss()
    q = "/members?id=%d&raft=127.0.0.1:%d&peer=127.0.0.1:%d&mqtt=127.0.0.1:%d" % (
        new.id, new.raft, new.peer, new.port)
    statuses, ended = [], []
    done = threading.Event()

    def add():
        for _ in range(3):
            st, _ = lead.http("POST", q, timeout=600)
            statuses.append(st)
            if st != 503:
                break
        ended.append(time.monotonic())
        done.set()
    threading.Thread(target=add, daemon=True).start()
    t0 = time.monotonic()
    caught = None
    peak = rss0
    while time.monotonic() - t0 < args.catchup_timeout:
        peak = max(peak, lead.rss())
        if caught is None:
            st, body = new.http("GET", "/metrics", timeout=5)
            m = re.search(r"^tern_raft_applied_index (\d+)", body or "", re.M)
            if m and int(m.group(1)) >= target:
                caught = time.monotonic() - t0
        if caught is not None and done.is_set():
            break
        time.sleep(0.05)
    done.wait(max(0.0, args.catchup_timeout - (time.monotonic() - t0)))
    promoted = ended[0] - t0 if ended else None
    with open(lead.logp, "rb") as f:
        f.seek(log_from)
        text = f.read().decode("utf-8", "replace")
    closes = [ln for ln in text.splitlines()
              if ("link to node %d" % new.id) in ln and "closed" in ln]
    return {"catchup_s": round(caught, 3) if caught is not None else None,
            "catchup_promoted_s": round(promoted, 3) if promoted is not None else None,
            "add_status": statuses[-1] if statuses else None, "add_statuses": statuses,
            "catchup_link_closes": len(closes),
            "catchup_first_close": closes[0][:200] if closes else None,
            "catchup_leader_rss_growth_mb": round((peak - rss0) / 1024, 1)}


def tern_step(args, wd, n):
    """One growth step on a fresh 3-node cluster. Returns a dict of figures."""
    res = {"sessions": n}
    c = Cluster(args.ternd, os.path.join(wd, "tern%d" % n), tern_settings(args))
    try:
        lid = c.leader()
        victim = next(nd for nd in c.nodes if nd.id != lid)
        other = next(nd for nd in c.nodes if nd.id not in (lid, victim.id))
        base = {nd.id: nd.rss() for nd in c.nodes}
        topics = max(1, n // 1000)
        t_to = min(3000, max(120, n // 200))
        cr = bench(args, ["--sessions", "create", "--subs", str(n), "--topics", str(topics),
                          "--messages", str(args.messages), "--client-prefix", "sc%d-" % n,
                          "--topic-prefix", "scale%d" % n, "--port", str(victim.port)], t_to)
        res["create_s"] = cr["create_s"]
        res["create_failures"] = cr["connect_failures"]
        res["create_retries"] = cr.get("retries", 0)
        res["published"] = cr["acked"]
        time.sleep(0.5 if args.quick else 2)  # apply on every node
        rss = {nd.id: nd.rss() for nd in c.nodes}
        res["rss_mb"] = {nd.id: round(rss[nd.id] / 1024, 1) for nd in c.nodes}
        res["bytes_per_session"] = round(max((rss[i] - base[i]) * 1024 / n for i in rss))
        m = c.node(lid).metrics()
        res["queued"] = m.get('tern_queued_messages{store="replicated"}', 0)
        # snapshot on every node (the leader last)
        for nd in [victim, other, c.node(lid)]:
            before = len(nd.snapshots())
            t0 = time.monotonic()
            nd.http("POST", "/snapshot", timeout=120)
            while len(nd.snapshots()) == before and time.monotonic() - t0 < 120:
                time.sleep(0.05)
        snaps = [nd.snapshots()[-1] for nd in c.nodes if nd.snapshots()]
        res["snapshot_bytes"] = max(s[1] for s in snaps) if snaps else 0
        res["snapshot_ms"] = max(s[2] for s in snaps) if snaps else 0
        ms = [nd.metrics() for nd in c.nodes]
        # the loop stall: logged per snapshot since the forked snapshots; before
        # them the whole serialisation ran on the loop (tern_snapshot_max_seconds)
        stalls = [s[3] for s in snaps if s[3] is not None]
        if stalls:
            res["snapshot_stall_ms"] = round(max(stalls) / 1000, 1)
        else:
            res["snapshot_stall_ms"] = round(max(x.get("tern_snapshot_max_seconds", 0)
                                                 for x in ms) * 1000, 1)
        res["loop_max_ms"] = round(max(x.get("tern_loop_busy_max_seconds", 0)
                                       for x in ms) * 1000, 1)
        ports = [nd.port for nd in c.nodes]
        try:
            res["puback_p99_ms"], _ = fixed_rate_p99(args, ports, "rate%d" % n)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
            res["puback_p99_ms"] = None
            log("fixed-rate run failed: %s" % e)
        # restart of one follower that does not own the sessions
        other.kill()
        t0 = time.monotonic()
        other.start()
        other.wait_ready(600)
        res["restart_s"] = round(time.monotonic() - t0, 3)
        # a node added empty
        new = Node(args.ternd, 4, os.path.join(wd, "tern%d" % n, "node4"), tern_settings(args))
        c.nodes.append(new)
        new.write_config([nd.member() for nd in c.nodes], join=True)
        new.start()
        wait_port(new.port, 30)
        res.update(catchup(args, c.node(c.leader()), new))
        # back to three voters before the storm
        st, _ = c.node(c.leader()).http("DELETE", "/members/4", timeout=60)
        new.kill(signal.SIGTERM)
        c.nodes.remove(new)
        time.sleep(0.2 if args.quick else 1)
        if args.no_storm:
            return res
        # the storm: kill the owner, resume everything on the survivors
        lid = c.leader()
        if lid == victim.id:
            lid = 0
        surv = [nd for nd in c.nodes if nd is not victim]
        before = [nd.metrics() for nd in surv]
        victim.kill()
        t_kill = time.monotonic()
        # without the queues (the publishers refused) nobody would ever finish
        expect = args.messages if res["queued"] >= n * args.messages else 0
        res["storm_expect"] = expect
        rr = bench(args, ["--sessions", "resume", "--subs", str(n), "--topics", str(topics),
                          "--messages", str(args.messages), "--client-prefix", "sc%d-" % n,
                          "--expect", str(expect), "--sub-ports", ",".join(str(nd.port) for nd in surv)], t_to)
        res["storm_wall_s"] = round(time.monotonic() - t_kill, 3)
        res["storm_s"] = rr["resume_s"]
        res["storm_present"] = rr["session_present"]
        res["storm_complete"] = rr["goals"] - rr["not_present"]
        res["storm_retries"] = rr["retries"]
        res["storm_failures"] = rr["connect_failures"]
        after = [nd.metrics() for nd in surv]
        props = sum(a.get("tern_raft_proposals_applied_total", 0) -
                    b.get("tern_raft_proposals_applied_total", 0) for a, b in zip(after, before))
        ents = sum(a.get("tern_raft_entries_appended_total", 0) -
                   b.get("tern_raft_entries_appended_total", 0) for a, b in zip(after, before))
        res["storm_proposals"] = int(props)
        res["storm_entries"] = int(ents)
        res["storm_per_entry"] = round(props / ents, 1) if ents else None
    finally:
        c.stop()
        shutil.rmtree(os.path.join(wd, "tern%d" % n), ignore_errors=True)
    return res


class Mosquitto:
    def __init__(self, wd):
        self.wd = wd
        os.makedirs(wd, exist_ok=True)
        self.port = free_ports(1)[0]
        self.conf = os.path.join(wd, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\n"
                    "persistence_location %s/\nautosave_interval 3600\n"
                    "max_queued_messages 1000\nmax_connections -1\nlog_type error\n"
                    "set_tcp_nodelay true\nuser root\n" % (self.port, wd))
            # user root: as root it would switch to user mosquitto, which cannot write
            # the temporary directory (no database, nothing restored)
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(["mosquitto", "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.wd, "log"), "ab"),
                                     preexec_fn=raise_nofile)
        PROCS.append(self.proc)
        return wait_port(self.port, 60)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(120)
        self.proc = None

    def db_bytes(self):
        p = os.path.join(self.wd, "mosquitto.db")
        return os.path.getsize(p) if os.path.exists(p) else 0


def mosquitto_step(args, wd, n):
    res = {"sessions": n}
    mq = Mosquitto(os.path.join(wd, "mosq%d" % n))
    try:
        mq.start()
        base = rss_kb(mq.proc.pid)
        topics = max(1, n // 1000)
        t_to = min(3000, max(120, n // 200))
        cr = bench(args, ["--sessions", "create", "--subs", str(n), "--topics", str(topics),
                          "--messages", str(args.messages), "--client-prefix", "mc%d-" % n,
                          "--topic-prefix", "mscale%d" % n, "--port", str(mq.port)], t_to)
        res["create_s"] = cr["create_s"]
        time.sleep(0.2 if args.quick else 1)
        r = rss_kb(mq.proc.pid)
        res["rss_mb"] = round(r / 1024, 1)
        res["bytes_per_session"] = round((r - base) * 1024 / n)
        t0 = time.monotonic()
        mq.stop(signal.SIGTERM)  # saves on exit
        res["save_s"] = round(time.monotonic() - t0, 3)
        res["db_bytes"] = mq.db_bytes()
        t0 = time.monotonic()
        mq.start()
        res["restart_s"] = round(time.monotonic() - t0, 3)
        rr = bench(args, ["--sessions", "resume", "--subs", str(n), "--topics", str(topics),
                          "--messages", str(args.messages), "--client-prefix", "mc%d-" % n,
                          "--port", str(mq.port)], t_to)
        res["resume_s"] = rr["resume_s"]
        res["resume_present"] = rr["session_present"]
        res["resume_complete"] = rr["goals"] - rr["not_present"]
    finally:
        mq.stop(signal.SIGKILL)
        shutil.rmtree(mq.wd, ignore_errors=True)
    return res


def held_storms(args, wd, n):
    """n devices connected to one node when it is killed: persistent (queue in flight,
    unacknowledged) and clean; Mosquitto killed and restarted with the clean ones."""
    out = {"sessions": n}
    for kind in ("persistent", "clean"):
        c = Cluster(args.ternd, os.path.join(wd, "held%s" % kind), tern_settings(args))
        try:
            lid = c.leader()
            victim = next(nd for nd in c.nodes if nd.id != lid)
            surv = [nd for nd in c.nodes if nd is not victim]
            pre = "h%s-" % kind[0]
            extra = ["--subs", str(n), "--client-prefix", pre, "--port", str(victim.port)]
            if kind == "persistent":
                bench(args, ["--sessions", "create", "--topics", str(max(1, n // 1000)),
                             "--messages", str(args.messages), "--topic-prefix", "held"] +
                      extra, 300)
                extra += ["--no-ack", "--messages", str(args.messages)]
            else:
                extra += ["--clean", "1", "--expect", "0"]
            before = [nd.metrics() for nd in surv]
            out[kind] = held_run(args, extra, [nd.port for nd in surv], victim.kill)
            after = [nd.metrics() for nd in surv]
            props = sum(a.get("tern_raft_proposals_applied_total", 0) -
                        b.get("tern_raft_proposals_applied_total", 0)
                        for a, b in zip(after, before))
            ents = sum(a.get("tern_raft_entries_appended_total", 0) -
                       b.get("tern_raft_entries_appended_total", 0)
                       for a, b in zip(after, before))
            out[kind]["proposals"] = int(props)
            out[kind]["entries"] = int(ents)
        finally:
            c.stop()
            shutil.rmtree(os.path.join(wd, "held%s" % kind), ignore_errors=True)
    if args.no_mosquitto or not shutil.which("mosquitto"):
        return out
    mq = Mosquitto(os.path.join(wd, "mosqheld"))
    try:
        mq.start()

        def kill_restart():
            mq.stop(signal.SIGKILL)
            mq.start()
        out["mosquitto_clean"] = held_run(
            args, ["--subs", str(n), "--client-prefix", "hm-", "--port", str(mq.port),
                   "--clean", "1", "--expect", "0"], [mq.port], kill_restart)
    finally:
        mq.stop(signal.SIGKILL)
        shutil.rmtree(mq.wd, ignore_errors=True)
    return out


def held_run(args, extra, failover_ports, kill):
    cmd = [args.bench, "--json", "--source-addrs", SRC_ADDRS, "--concurrency",
           str(args.concurrency), "--connect-timeout", "120", "--sessions", "resume",
           "--hold", "--duration", "300", "--failover-ports",
           ",".join(map(str, failover_ports))] + extra
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=raise_nofile)
    PROCS.append(p)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 180:
        line = p.stderr.readline()
        if not line or "holding" in line:
            break
    time.sleep(0.2 if args.quick else 1)
    kill()
    out, err = p.communicate(timeout=600)
    r = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    return {"held": r["goals"], "dropped": r["storm_drops"], "resumed": r["storm_goals"],
            "present": r["storm_present"], "storm_s": r["storm_s"],
            "retries": r["retries"], "failures": r["connect_failures"]}


def png_plot(path, steps, mosq):
    """Two panels against sessions (log x): RSS bytes per session; seconds of the
    storm, the restarts and Mosquitto's resume. gnuplot (optional): skipped if
    it is not installed."""
    if not shutil.which("gnuplot") or not steps:
        log("plot skipped: gnuplot is not installed" if steps else "plot skipped: no data")
        return
    d = tempfile.mkdtemp(prefix="tern-scale-plot-")
    try:
        with open(os.path.join(d, "t.dat"), "w") as f:
            for s in steps:
                f.write("%d %s %s %s\n" % (s["sessions"], s["bytes_per_session"],
                                           s["storm_s"], s["restart_s"]))
        with open(os.path.join(d, "m.dat"), "w") as f:
            for m in mosq:
                f.write("%d %s %s %s\n" % (m["sessions"], m["bytes_per_session"],
                                           m["resume_s"], m["restart_s"]))
        has_m = bool(mosq)
        mplot1 = ', "m.dat" u 1:2 w lp lw 2 pt 5 t "Mosquitto (persistence true)"' if has_m else ""
        mplot2 = (', "m.dat" u 1:3 w lp lw 2 pt 5 t "Mosquitto: resume all (after restart)"'
                  ', "m.dat" u 1:4 w lp lw 2 pt 4 t "Mosquitto: restart"') if has_m else ""
        script = """set terminal pngcairo size 960,520 font ",10"
set output "%s"
set multiplot layout 1,2
set logscale x
set grid
set key outside below vertical
set xlabel "persistent sessions (1 subscription, 10 queued QoS 1 each)"
set ylabel "bytes of RSS per session"
set yrange [0:*]
plot "t.dat" u 1:2 w lp lw 2 pt 7 t "tern (largest of 3 nodes)"%s
set ylabel "seconds"
set logscale y
set yrange [*:*]
plot "t.dat" u 1:3 w lp lw 2 pt 7 t "tern: kill -9 storm, all resumed with queue", \\
     "t.dat" u 1:4 w lp lw 2 pt 6 t "tern: restart of one node to ready"%s
unset multiplot
""" % (os.path.abspath(path), mplot1, mplot2)
        r = subprocess.run(["gnuplot"], input=script, text=True, cwd=d,
                           capture_output=True, timeout=60)
        if r.returncode != 0:
            log("gnuplot failed: " + r.stderr[-500:])
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ternd", default=os.path.join(REPO, "build", "ternd"))
    ap.add_argument("--bench", default=os.path.join(REPO, "build", "tern-bench"))
    ap.add_argument("--steps", default="10000,100000")
    ap.add_argument("--messages", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=300)
    ap.add_argument("--rate", type=int, default=2000, help="fixed QoS 1 msg/s for the p99")
    ap.add_argument("--held", type=int, default=10000, help="held-storm devices (0: skip)")
    ap.add_argument("--no-mosquitto", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="shorter waits and a 1 s fixed-rate run (the CI smoke)")
    ap.add_argument("--catchup-timeout", type=float, default=180,
                    help="bound on the catch-up of the added node (s)")
    ap.add_argument("--no-storm", action="store_true",
                    help="stop each step after the catch-up (no kill -9 storm)")
    ap.add_argument("--out", help="write the JSON results here")
    ap.add_argument("--png", help="write the plot here (gnuplot; skipped without it)")
    ap.add_argument("--replot", help="only plot the JSON results of an earlier --out")
    args = ap.parse_args()
    if args.replot:
        with open(args.replot) as f:
            r = json.load(f)
        png_plot(args.png, r["tern"], r["mosquitto"])
        return
    raise_nofile()
    wd = tempfile.mkdtemp(prefix="tern-scale-")
    results = {"tern": [], "mosquitto": [], "held": None}

    def cleanup(*_):
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    pass
        shutil.rmtree(wd, ignore_errors=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        for n in [int(x) for x in args.steps.split(",") if x]:
            log("== tern %d" % n)
            results["tern"].append(tern_step(args, wd, n))
            log(json.dumps(results["tern"][-1]))
            if not args.no_mosquitto and shutil.which("mosquitto"):
                log("== mosquitto %d" % n)
                results["mosquitto"].append(mosquitto_step(args, wd, n))
                log(json.dumps(results["mosquitto"][-1]))
        if args.held:
            log("== held storms %d" % args.held)
            results["held"] = held_storms(args, wd, args.held)
            log(json.dumps(results["held"]))
    finally:
        cleanup()
        print(json.dumps(results, indent=1))
        if args.out:
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1)
        if args.png:
            png_plot(args.png, results["tern"], results["mosquitto"])


if __name__ == "__main__":
    main()
