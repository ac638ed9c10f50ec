"""Issue 17, findings 3 and 6: identity and start-up errors.

- a node_id missing from `members` (unless joining), a data directory made by
  another node id or another cluster: exit 2, a message naming both;
- `ternd --check-config FILE` validates without opening anything (exit 0/2);
- every start-up error names the key or address and the OS reason, and nothing
  is opened before the whole configuration is validated; no start-up spin.

ternd runs with a bounded timeout; a node that should have refused but keeps
running fails the test (and is killed).
"""
import json
import os
import re
import socket
import subprocess
import time

import pytest

from cluster import tern_cluster_fixture  # noqa: F401  (the fixture)
from conftest import TERN_BIN, free_port

pytestmark = pytest.mark.tern_only


def run(args, timeout=5.0, cwd=None):
    """(exit code, stderr+stdout) of ternd; None as the code if still running."""
    p = subprocess.Popen([TERN_BIN] + args, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         cwd=cwd)
    try:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        return None, out


def members(n=3):
    ports = [free_port() for _ in range(3 * n)]
    return [{"id": i + 1, "raft": "127.0.0.1:%d" % ports[3 * i],
             "peer": "127.0.0.1:%d" % ports[3 * i + 1],
             "mqtt": "127.0.0.1:%d" % ports[3 * i + 2]} for i in range(n)]


def write_cfg(tmp_path, name="ternd.json", **keys):
    cfg = {"data_dir": str(tmp_path / "data"), "listen": "127.0.0.1:%d" % free_port(),
           "admin_listen": "127.0.0.1:0"}
    cfg.update(keys)
    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    return str(path)


def test_node_id_not_in_members(tmp_path):
    ms = members()
    cfg = write_cfg(tmp_path, node_id=5, members=ms)
    rc, out = run(["--config", cfg])
    assert rc == 2, (rc, out)
    assert "node_id 5" in out and "members" in out and "1, 2, 3" in out, out
    # Joining, it is fine to be absent from the list... but a joiner lists itself.
    rc, out = run(["--check-config", cfg])
    assert rc == 2 and "node_id 5" in out, (rc, out)


def test_check_config(tmp_path):
    ms = members()
    good = write_cfg(tmp_path, node_id=2, members=ms)
    rc, out = run(["--check-config", good])
    assert rc == 0, (rc, out)
    assert not os.path.exists(str(tmp_path / "data")), "check-config created the data dir"
    bad = write_cfg(tmp_path, name="bad.json", node_id=2, members=ms, listne="x")
    rc, out = run(["--check-config", bad])
    assert rc == 2 and "listne" in out, (rc, out)


def start_until_listening(cfg_path, port, timeout=10.0):
    p = subprocess.Popen([TERN_BIN, "--config", cfg_path], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert p.poll() is None, p.communicate()[0]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return p
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise AssertionError("not listening")


def stop(p):
    p.terminate()
    try:
        return p.communicate(timeout=10.0)[0]
    except subprocess.TimeoutExpired:
        p.kill()
        return p.communicate()[0]


def test_data_dir_of_another_node(tmp_path):
    port = free_port()
    cfg = write_cfg(tmp_path, node_id=1, listen="127.0.0.1:%d" % port)
    stop(start_until_listening(cfg, port))
    cfg2 = write_cfg(tmp_path, name="other.json", node_id=7, listen="127.0.0.1:%d" % port)
    rc, out = run(["--config", cfg2])
    assert rc == 2, (rc, out)
    assert "node 1" in out and "node_id 7" in out, out


def test_data_dir_of_another_cluster(tmp_path):
    port = free_port()
    cfg = write_cfg(tmp_path, cluster_name="blue", listen="127.0.0.1:%d" % port)
    stop(start_until_listening(cfg, port))
    cfg2 = write_cfg(tmp_path, name="other.json", cluster_name="green",
                     listen="127.0.0.1:%d" % port)
    rc, out = run(["--config", cfg2])
    assert rc == 2, (rc, out)
    assert '"blue"' in out and '"green"' in out, out


def test_cluster_id_in_status_and_data_dir(tmp_path):
    """Every member derives the same cluster id from the bootstrap configuration."""
    ms = members()
    ids = set()
    for i in (1, 2):
        port = free_port()
        cfg = write_cfg(tmp_path, name="n%d.json" % i, node_id=i, members=ms,
                        data_dir=str(tmp_path / ("d%d" % i)))
        rc, out = run(["--check-config", cfg])
        assert rc == 0, out
        m = re.search(r"cluster id ([0-9a-f]{16})", out)
        assert m, out
        ids.add(m.group(1))
    assert len(ids) == 1, ids


def test_listen_host_name_exit_2(tmp_path):
    rc, out = run(["--data-dir", str(tmp_path / "d"), "--listen", "localhost:%d" % free_port()])
    assert rc == 2 and "listen" in out and "localhost" in out, (rc, out)


def test_admin_host_name_nothing_opened(tmp_path):
    port = free_port()
    rc, out = run(["--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:%d" % port,
                   "--admin", "localhost:%d" % free_port()])
    assert rc == 2 and "admin_listen" in out and "localhost" in out, (rc, out)
    assert not os.path.exists(str(tmp_path / "d")), "data dir created before validation"


def test_data_dir_is_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    rc, out = run(["--data-dir", str(f), "--listen", "127.0.0.1:%d" % free_port()])
    assert rc == 2 and "data_dir" in out and "not a directory" in out, (rc, out)


def test_raft_port_in_use_names_reason(tmp_path):
    sk = socket.socket()
    try:
        sk.bind(("127.0.0.1", 0))
        sk.listen(1)
        busy = "127.0.0.1:%d" % sk.getsockname()[1]
        rc, out = run(["--data-dir", str(tmp_path / "d"), "--listen",
                       "127.0.0.1:%d" % free_port(), "--set", "raft_address=" + busy])
    finally:
        sk.close()
    assert rc == 1, (rc, out)
    assert busy in out and ("address already in use" in out.lower()), out


@pytest.mark.parametrize("key", ["listen", "admin_listen", "peer"])
def test_port_in_use_names_key_and_reason(tmp_path, key):
    """The MQTT, admin and peer ports, like the Raft one: the key, the address and
    the OS reason; exit 1 (not a configuration error), nothing left running."""
    sk = socket.socket()
    try:
        sk.bind(("127.0.0.1", 0))
        sk.listen(1)
        busy = "127.0.0.1:%d" % sk.getsockname()[1]
        ms = members()
        if key == "peer":
            ms[0]["peer"] = busy
        cfg = write_cfg(tmp_path, node_id=1, members=ms,
                        **({key: busy} if key != "peer" else {}))
        rc, out = run(["--config", cfg])
    finally:
        sk.close()
    assert rc == 1, (rc, out)
    assert "%s: cannot listen on %s: address already in use" % (key, busy) in out, out


def test_no_startup_spin(tern_cluster):
    """Event-loop iterations in a three-node cluster's first seconds: a loop that
    spins (an idle handle left running, a zero-delay timer) makes millions; an idle
    node makes a few hundred. CPU seconds are printed."""
    c = tern_cluster
    time.sleep(1.0)
    for nd in c.nodes:
        with open("/proc/%d/stat" % nd.proc.pid) as f:
            st = f.read().rsplit(")", 1)[1].split()
        cpu = (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")
        m = re.search(r"^tern_loop_busy_seconds_count (\d+)$", nd.admin_get("/metrics") or "",
                      re.M)
        assert m, "no loop metric"
        print("node %d: %s loop iterations, %.2f s CPU since start" % (nd.id, m.group(1), cpu))
        assert int(m.group(1)) < 100000, "node %d spins: %s iterations" % (nd.id, m.group(1))
