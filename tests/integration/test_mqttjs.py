"""Runs the MQTT.js test script (tests/integration/js, node:test) against the broker."""
import os
import shutil
import subprocess

import pytest

JS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")


def _ensure_node_modules():
    if not shutil.which("node"):
        pytest.skip("node is not installed")
    if os.path.isdir(os.path.join(JS_DIR, "node_modules", "mqtt")):
        return
    if not shutil.which("npm"):
        pytest.skip("node_modules missing in %s and npm is not installed" % JS_DIR)
    try:
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS_DIR,
                           capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.skip("node_modules missing in %s and `npm ci` timed out" % JS_DIR)
    if r.returncode != 0:
        pytest.skip("node_modules missing in %s and `npm ci` failed: %s" % (
            JS_DIR, (r.stderr or r.stdout)[-800:]))


def test_mqttjs_suite(broker):
    _ensure_node_modules()
    env = dict(os.environ, TERN_HOST=broker.host, TERN_PORT=str(broker.port))
    try:
        r = subprocess.run(["node", "--test", "--test-force-exit", "--test-reporter=spec",
                            "mqtt.test.mjs"],
                           cwd=JS_DIR, env=env, capture_output=True, text=True,
                           timeout=90)
    except subprocess.TimeoutExpired as e:
        out = e.stdout or b""
        if isinstance(out, bytes):
            out = out.decode("utf-8", "replace")
        pytest.fail("node --test timed out:\n%s" % out)
    out = r.stdout + r.stderr
    assert r.returncode == 0, "MQTT.js tests failed:\n" + out[-6000:]
    assert "# fail 0" in out or "fail 0" in out, out[-3000:]
