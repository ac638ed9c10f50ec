"""Issue 17, finding 5: cluster.sh finds a running cluster from its saved settings
wherever TERN_DATA pointed at `up`: later `status` and `down` without TERN_DATA (or
the port bases) act on that cluster, as the README says. Run from a tmp working
directory so that the default ./.cluster is the test's, never the repository's.
"""
import os
import subprocess

import pytest

from test_cluster_sh import BIN, CLUSTER_SH, Cluster

pytestmark = [
    pytest.mark.tern_only,
    pytest.mark.skipif(not os.access(BIN, os.X_OK), reason="ternd not built at %s" % BIN),
]


def sh(env, cwd, *args):
    return subprocess.run([CLUSTER_SH] + list(args), env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=150)


def test_moved_data_found_later(tmp_path):
    c = Cluster(str(tmp_path))
    c.data = str(tmp_path / "elsewhere" / "cl")
    c.env["TERN_DATA"] = c.data
    cwd = str(tmp_path / "work")
    os.makedirs(cwd)
    bare = {k: v for k, v in c.env.items() if not k.startswith("TERN_")}
    try:
        r = sh(c.env, cwd, "up")
        assert r.returncode == 0, r.stdout + r.stderr
        r = sh(bare, cwd, "status")
        assert r.returncode == 0 and r.stdout.count("running") == 3, r.stdout + r.stderr
        r = sh(bare, cwd, "down")
        assert r.returncode == 0, r.stdout + r.stderr
        r = sh(c.env, cwd, "status")
        assert r.returncode != 0 and "running" not in r.stdout.replace("not running", ""), (
            "still running after a down without TERN_DATA:\n" + r.stdout)
    finally:
        sh(c.env, cwd, "down")


def test_stale_pointer_is_not_followed(tmp_path):
    """A pointer left in ./.cluster to a data directory that no longer exists (a
    test's tmp dir, a deleted TERN_DATA) is ignored: the commands act on ./.cluster
    (the quick start's `up` once started its cluster inside a dead test's directory)."""
    cwd = tmp_path / "work"
    (cwd / ".cluster").mkdir(parents=True)
    gone = tmp_path / "gone" / "cluster"
    (cwd / ".cluster" / "cluster.env").write_text("TERN_DATA=%s\n" % gone)
    bare = {k: v for k, v in os.environ.items() if not k.startswith("TERN_")}
    r = sh(bare, str(cwd), "down")
    assert r.returncode == 0, r.stdout + r.stderr
    assert str(gone) not in r.stdout and str(cwd / ".cluster") in r.stdout, r.stdout
    assert not gone.exists()
