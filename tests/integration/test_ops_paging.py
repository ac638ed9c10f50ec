"""Issue 17, finding 4 (listings): the admin API's lists are paged with a cursor.
GET /sessions and /retained take limit (at most 10000), after (the cursor: the last
key of the previous page) and prefix (client ids / topics starting with it); the
entries come in key order, and `next` is the cursor of the following page while
there is one. ternctl sessions / retained take --prefix, --after and --limit.
"""
import json
import os
import subprocess
import urllib.parse

import pytest

import mqttraw
from conftest import TERN_BIN
from helpers import uid
from test_admin import ready_admin

pytestmark = pytest.mark.tern_only

TERNCTL = os.environ.get("TERNCTL_BIN", os.path.join(os.path.dirname(TERN_BIN), "ternctl"))


def pages(admin, path, key, list_name, **params):
    got, after, n = [], None, 0
    while True:
        q = dict(params)
        if after is not None:
            q["after"] = after
        doc = admin.get(path + "?" + urllib.parse.urlencode(q))
        got += [e[key] for e in doc[list_name]]
        n += 1
        assert n < 50
        if not doc.get("next"):
            assert doc["truncated"] is False
            return got, n
        assert doc["truncated"] is True
        after = doc["next"]


def test_sessions_and_retained_paged(broker):
    admin = ready_admin(broker)
    base = uid("pg")
    ids = ["%s-%s" % (base, s) for s in ("b2", "a1", "c", "a3", "b1", "a2 x")]
    for cid in ids:
        with mqttraw.RawClient(broker.host, broker.port, version=4, timeout=5.0) as r:
            assert r.connect(cid, clean=False).reason == 0
            r.publish("%s/t/%s" % (base, cid[-2:]), b"v", qos=1, packet_id=1, retain=True)
            r.expect(mqttraw.PUBACK, 5.0)
    got, n = pages(admin, "/sessions", "client_id", "sessions", limit=2, prefix=base + "-")
    assert got == sorted(ids) and n == 3, got
    got, _ = pages(admin, "/sessions", "client_id", "sessions", limit=10,
                   prefix=base + "-a")
    assert got == sorted(i for i in ids if i.startswith(base + "-a"))
    topics = sorted("%s/t/%s" % (base, c[-2:]) for c in ids)
    got, n = pages(admin, "/retained", "topic", "retained", limit=4, prefix=base + "/")
    assert got == topics and n == 2, got
    admin.get("/sessions?limit=10001", 400)

    rc = subprocess.run([TERNCTL, "--admin", admin.addr, "sessions", "--prefix", base + "-b",
                         "--json"], capture_output=True, text=True, timeout=20)
    assert rc.returncode == 0, rc.stderr
    assert [s["client_id"] for s in json.loads(rc.stdout)["sessions"]] == sorted(
        i for i in ids if i.startswith(base + "-b"))
    rc = subprocess.run([TERNCTL, "--admin", admin.addr, "retained", "--prefix", base + "/",
                         "--limit", "2"], capture_output=True, text=True, timeout=20)
    assert rc.returncode == 0 and "--after" in rc.stdout + rc.stderr, rc.stdout + rc.stderr


def test_subscriptions_and_clients_paged(broker):
    """/subscriptions pages by (client id, filter) and /clients by (client id, peer):
    the cursor has a second half (next_filter, next_peer), so a page boundary inside
    one session's subscriptions, or between two connections of one id, skips
    nothing. ternctl --all follows the cursors to the end."""
    admin = ready_admin(broker)
    base = uid("ps")
    subs = {"%s-a" % base: ["x/1", "x/2", "x/3"], "%s-b" % base: ["y/1"],
            "%s-c" % base: ["z/2", "z/1"]}
    held = []
    try:
        for cid, filters in subs.items():
            r = mqttraw.RawClient(broker.host, broker.port, version=4, timeout=5.0)
            held.append(r)
            assert r.connect(cid, clean=False).reason == 0
            r.subscribe(1, [(f, 1) for f in filters])
        want = sorted((c, f) for c, fs in subs.items() for f in fs)
        got, after, n = [], None, 0
        while True:
            q = {"limit": 2, "prefix": base + "-"}
            if after:
                q.update(after=after[0], after_filter=after[1])
            doc = admin.get("/subscriptions?" + urllib.parse.urlencode(q))
            got += [(e["client_id"], e["filter"]) for e in doc["subscriptions"]]
            n += 1
            assert n < 10
            if not doc.get("next"):
                assert doc["truncated"] is False
                break
            after = (doc["next"], doc["next_filter"])
        assert got == want and n == 3, got
        admin.get("/subscriptions?limit=10001", 400)

        cl = admin.get("/clients?" + urllib.parse.urlencode({"prefix": base, "limit": 2}))
        assert [c["client_id"] for c in cl["clients"]] == sorted(subs)[:2]
        assert cl["truncated"] is True and cl["next"] == sorted(subs)[1]
        cl2 = admin.get("/clients?" + urllib.parse.urlencode(
            {"prefix": base, "limit": 2, "after": cl["next"],
             "after_peer": cl["next_peer"]}))
        assert [c["client_id"] for c in cl2["clients"]] == sorted(subs)[2:]
        assert cl2["truncated"] is False and "next" not in cl2
        admin.get("/clients?limit=0", 400)

        rc = subprocess.run([TERNCTL, "--admin", admin.addr, "subscriptions", "--prefix",
                             base + "-", "--limit", "1", "--all", "--json"],
                            capture_output=True, text=True, timeout=20)
        assert rc.returncode == 0, rc.stderr
        doc = json.loads(rc.stdout)
        assert [(e["client_id"], e["filter"]) for e in doc["subscriptions"]] == want
        assert doc["truncated"] is False and "next" not in doc
        rc = subprocess.run([TERNCTL, "--admin", admin.addr, "clients", "--prefix", base,
                             "--limit", "1", "--all"],
                            capture_output=True, text=True, timeout=20)
        assert rc.returncode == 0, rc.stderr
        assert all(c in rc.stdout for c in subs) and "--after" not in rc.stdout, rc.stdout
    finally:
        for r in held:
            r.close()
