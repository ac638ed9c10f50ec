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
