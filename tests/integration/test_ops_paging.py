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
