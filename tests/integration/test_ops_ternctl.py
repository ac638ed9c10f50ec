"""Issue 17, finding 4: ternctl that finds the right cluster and forgives the order
of its words.

- TERN_ADMIN (one address, or a comma-separated list tried in turn);
- the cluster id and name in every status (and in GET /cluster);
- options anywhere on the line; with --json, errors are JSON too;
- `status --wait-ready SECONDS`: non-zero while not ready;
- write commands follow the leader, found among the addresses given or the
  members' admin addresses.
"""
import json
import os
import subprocess
import time

import pytest

from cluster import tern_cluster_fixture  # noqa: F401  (the fixture)
from conftest import TERN_BIN, free_port
from helpers import wait_until
from test_admin import ready_admin

pytestmark = pytest.mark.tern_only

TERNCTL = os.environ.get("TERNCTL_BIN", os.path.join(os.path.dirname(TERN_BIN), "ternctl"))


def ctl(*args, env=None, timeout=30.0):
    e = {k: v for k, v in os.environ.items() if k != "TERN_ADMIN"}
    e.update(env or {})
    p = subprocess.run([TERNCTL] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=timeout, env=e)
    return p.returncode, p.stdout, p.stderr


def test_tern_admin_env_and_list(broker):
    a = ready_admin(broker)
    rc, out, err = ctl("status", env={"TERN_ADMIN": a.addr})
    assert rc == 0 and "node 1" in out, (rc, out, err)
    dead = "127.0.0.1:%d" % free_port()
    rc, out, err = ctl("status", env={"TERN_ADMIN": dead + "," + a.addr})
    assert rc == 0 and "node 1" in out, (rc, out, err)
    rc, out, err = ctl("--admin", dead + "," + a.addr, "status")
    assert rc == 0 and "node 1" in out, (rc, out, err)


def test_cluster_id_and_name_in_status(broker):
    a = ready_admin(broker)
    doc = a.get("/cluster")
    assert doc["cluster_name"] == "tern" and len(doc["cluster_id"]) == 16, doc
    rc, out, err = ctl("--admin", a.addr, "status")
    assert rc == 0 and 'cluster "tern" (id %s)' % doc["cluster_id"] in out, out
    with open(os.path.join(broker.data_dir, "identity")) as f:
        assert "cluster_id %s\n" % doc["cluster_id"] in f.read()


def test_options_anywhere_and_json_errors(broker):
    a = ready_admin(broker)
    rc, out, err = ctl("status", "--json", "--admin", a.addr)
    assert rc == 0, (rc, out, err)
    assert json.loads(out)["cluster"]["node_id"] == 1
    rc, out, err = ctl("session", "show", "no-such-session", "--json", "--admin", a.addr)
    assert rc == 1, (rc, out, err)
    doc = json.loads(out)
    assert doc["status"] == 404 and "error" in doc, doc
    rc, out, err = ctl("--json", "--admin", "127.0.0.1:%d" % free_port(), "status")
    assert rc == 1 and "error" in json.loads(out), (rc, out, err)


def test_wait_ready(tern_cluster):
    c = tern_cluster
    addr = "127.0.0.1:%d" % c.node(1).admin_port
    rc, out, err = ctl("status", "--wait-ready", "10", "--admin", addr)
    assert rc == 0, (rc, out, err)
    c.kill(2)
    c.kill(3)
    wait_until(lambda: ctl("status", "--admin", addr)[1].count("NOT READY") == 1,
               timeout=15.0, msg="node 1 not ready")
    t0 = time.monotonic()
    rc, out, err = ctl("status", "--wait-ready", "1", "--admin", addr)
    assert rc != 0 and "not ready" in err, (rc, out, err)
    assert time.monotonic() - t0 >= 1.0


def test_write_follows_the_leader(tern_cluster):
    c = tern_cluster
    lead = c.wait_leader()
    assert lead is not None
    f1, f2 = [i for i in (1, 2, 3) if i != lead]
    addrs = ",".join("127.0.0.1:%d" % c.node(i).admin_port for i in (f1, lead))
    # Asked of a follower first: it follows to the leader in the list.
    rc, out, err = ctl("remove-node", str(f2), env={"TERN_ADMIN": addrs})
    assert rc == 0 and out == "node %d removed\n" % f2, (rc, out, err)


def test_add_node_waits_for_a_long_catch_up():
    """POST /members answers once the new node has caught up, which for a large
    state takes several of libraft's 5 s catch-up rounds (docs/operations.md,
    "Adding a node"): ternctl must wait for that answer rather than give up at its
    10 s I/O timeout while the leader carries on. A server that answers after 12 s
    stands in for such a leader."""
    import http.server
    import threading

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            time.sleep(12.0)
            body = json.dumps({"id": 4, "voter": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Slow)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        rc, out, err = ctl("--admin", "127.0.0.1:%d" % srv.server_address[1], "add-node", "4",
                           "127.0.0.1:7004", "127.0.0.1:7104", "127.0.0.1:1887")
        assert rc == 0, (rc, out, err)
    finally:
        srv.shutdown()
        srv.server_close()
