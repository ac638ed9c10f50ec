"""Issue 17, finding 1: SIGHUP (logrotate's postrotate, systemctl reload) reloads
what can change at run time and never stops the node: log_file reopened, log_level
re-read from the config file. `ternctl reload` (admin POST /reload) does the same;
the systemd unit has ExecReload.
"""
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import REPO, TERN_BIN, free_port
from helpers import wait_until

pytestmark = pytest.mark.tern_only

TERNCTL = os.environ.get("TERNCTL_BIN", os.path.join(os.path.dirname(TERN_BIN), "ternctl"))


class Node:
    def __init__(self, tmp_path, **keys):
        self.cfg_path = str(tmp_path / "ternd.json")
        self.log = str(tmp_path / "ternd.log")
        self.admin_port = free_port()
        self.keys = {"data_dir": str(tmp_path / "data"),
                     "listen": "127.0.0.1:%d" % free_port(),
                     "admin_listen": "127.0.0.1:%d" % self.admin_port,
                     "log_file": self.log, "log_level": "info"}
        self.keys.update(keys)
        self.write()
        self.out = open(str(tmp_path / "stderr.txt"), "w")
        self.proc = subprocess.Popen([TERN_BIN, "--config", self.cfg_path],
                                     stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT)

    def write(self, **keys):
        self.keys.update(keys)
        with open(self.cfg_path, "w") as f:
            json.dump(self.keys, f)

    def text(self, path=None):
        try:
            with open(path or self.log) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path)
    try:
        wait_until(lambda: "admin API listening" in n.text(), timeout=10.0,
                   msg="ternd logging to log_file")
        yield n
    finally:
        n.stop()


def test_sighup_reopens_log_file(node):
    os.rename(node.log, node.log + ".1")  # what logrotate does
    node.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reloaded" in node.text(), timeout=5.0,
               msg="a new log file after SIGHUP")
    assert node.proc.poll() is None, "SIGHUP stopped ternd"
    assert "reloaded" not in node.text(node.log + ".1")


def test_sighup_rereads_log_level(node):
    assert " DEBUG " not in node.text()
    node.write(log_level="debug")
    node.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "log level debug" in node.text(), timeout=5.0,
               msg="the new log level")
    host, port = node.keys["listen"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5.0) as sk:
        sk.sendall(b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x1e\x00\x01d")  # CONNECT
        sk.recv(4)
    wait_until(lambda: " DEBUG " in node.text(), timeout=10.0, msg="debug lines")
    assert node.proc.poll() is None


def test_sighup_keeps_running_on_a_bad_file(node):
    with open(node.cfg_path, "w") as f:
        f.write("{ not json")
    node.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in node.text(), timeout=5.0, msg="refused reload")
    assert node.proc.poll() is None


def test_ternctl_reload(node):
    node.write(log_level="warn")
    p = subprocess.run([TERNCTL, "--admin", "127.0.0.1:%d" % node.admin_port, "reload"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0 and "reloaded" in p.stdout, (p.returncode, p.stdout, p.stderr)
    assert "log level warn" in node.text()


def test_systemd_unit_has_exec_reload():
    text = open(os.path.join(REPO, "deploy", "systemd", "ternd@.service")).read()
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", text, re.M), text


def test_sighup_does_not_stop_the_node(broker):
    broker.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reloaded" in broker.log(current_run=True) or
               broker.proc.poll() is not None, timeout=5.0, msg="the reload")
    assert broker.proc.poll() is None, "SIGHUP stopped ternd (exit %s)" % broker.proc.returncode
