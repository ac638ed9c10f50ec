"""Issue 17, finding 8: metrics by the Prometheus conventions, and the alert rules
and dashboard shipped with them.

- histograms have _bucket, _sum and _count; durations are in seconds (no
  *_microseconds); the Raft state is a label, not a numeric enum;
- process_* metrics (RSS, fds, CPU seconds, start time), tern_build_info,
  tern_peer_up{peer=...} and the replication lag per peer;
- deploy/prometheus/alerts.yml passes `promtool check rules` and uses only
  metrics a live node exposes; so do the queries of the Grafana dashboard in
  deploy/grafana/.
"""
import json
import os
import re
import shutil
import subprocess

import pytest

from cluster import tern_cluster_fixture  # noqa: F401  (the fixture)
from conftest import REPO
from test_admin import parse_prometheus as parse_metrics, ready_admin

pytestmark = pytest.mark.tern_only

ALERTS = os.path.join(REPO, "deploy", "prometheus", "alerts.yml")
DASHBOARD = os.path.join(REPO, "deploy", "grafana", "tern.json")


def scrape(admin):
    status, _, body = admin.req("GET", "/metrics")
    assert status == 200
    return body.decode()


def families(text):
    """Metric names a scrape exposes, histogram series included."""
    return set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{|\s)", text, re.M))


def test_conventions(broker):
    text = scrape(ready_admin(broker))
    s = parse_metrics(text)
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    for name, kind in types.items():
        if kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                assert any(k[0] == name + suffix for k in s), "%s has no %s" % (name, suffix)
    assert not [n for n in types if "microseconds" in n or "milliseconds" in n], types
    assert s[("tern_raft_state", '{state="leader"}')] == 1
    assert s[("tern_raft_state", '{state="follower"}')] == 0
    for name in ("process_resident_memory_bytes", "process_open_fds",
                 "process_cpu_seconds_total", "process_start_time_seconds",
                 "process_max_fds"):
        assert s[(name, "")] > 0, name
    assert any(k[0] == "tern_build_info" for k in s)


def test_peer_metrics(tern_cluster):
    c = tern_cluster
    lead = c.wait_leader()
    assert lead is not None
    text = c.node(lead).admin_get("/metrics")
    s = parse_metrics(text)
    peers = [i for i in (1, 2, 3) if i != lead]
    for p in peers:
        assert s[("tern_peer_up", '{peer="%d"}' % p)] == 1, text
        assert ("tern_peer_replication_lag_entries", '{peer="%d"}' % p) in s
    c.kill(peers[0])
    from helpers import wait_until
    wait_until(lambda: parse_metrics(c.node(lead).admin_get("/metrics"))[
        ("tern_peer_up", '{peer="%d"}' % peers[0])] == 0, timeout=10.0, msg="peer down")


def rule_exprs():
    text = open(ALERTS).read()
    return re.findall(r"^\s*expr:\s*(.+)$", text, re.M), text


def metric_names_in(expr):
    words = set(re.findall(r"\b(tern_[a-z0-9_]+|process_[a-z0-9_]+|up)\b", expr))
    return {w for w in words if w != "up"}


def test_alert_rules_check_and_exist(broker):
    exprs, text = rule_exprs()
    for alert in ("TernNoLeader", "TernQuorumAtRisk", "TernPeerDown",
                  "TernReplicationLagGrowing", "TernMessagesDropped", "TernDiskFilling"):
        assert "alert: %s" % alert in text, alert
    have = families(scrape(ready_admin(broker)))
    have |= {"tern_peer_up", "tern_peer_replication_lag_entries"}  # only with peers
    for e in exprs:
        missing = metric_names_in(e) - have
        assert not missing, "alerts.yml uses metrics ternd has not: %s" % missing
    if not shutil.which("promtool"):
        pytest.skip("promtool not installed (deploy/install-deps.sh: prometheus)")
    r = subprocess.run(["promtool", "check", "rules", ALERTS], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dashboard_queries_use_existing_metrics(broker):
    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = []

    def walk(o):
        if isinstance(o, dict):
            if isinstance(o.get("expr"), str):
                exprs.append(o["expr"])
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(dash)
    assert len(exprs) >= 6
    have = families(scrape(ready_admin(broker)))
    have |= {"tern_peer_up", "tern_peer_replication_lag_entries"}
    for e in exprs:
        missing = metric_names_in(e) - have
        assert not missing, "dashboard query %r uses metrics ternd has not: %s" % (e, missing)
