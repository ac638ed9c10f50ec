"""Interoperability with the mosquitto command line clients (mosquitto_pub / _sub)."""
import queue
import shutil
import subprocess
import threading

import pytest

from helpers import PahoClient, V311, uid

pytestmark = pytest.mark.skipif(
    not (shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub")
         and shutil.which("stdbuf")),
    reason="mosquitto_pub/mosquitto_sub not installed")

VERSIONS = [pytest.param("mqttv311", id="v311"), pytest.param("mqttv5", id="v5")]
FMT = "%t|%q|%r|%p"


class Sub:
    """mosquitto_sub running in the background, started with -d so that we can wait
    for its SUBACK before publishing."""

    def __init__(self, broker, topic, version, qos=0, count=1, extra=(), wait_suback=True):
        # stdbuf: mosquitto_sub block-buffers stdout into a pipe (we read SUBACK live)
        self.cmd = ["stdbuf", "-oL", "mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-V",
                    version, "-t", topic, "-q", str(qos), "-C", str(count), "-W", "8",
                    "-d", "-F", FMT] + list(extra)
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines = queue.Queue()
        self.all = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        if wait_suback:
            self.wait_for("SUBACK")

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, needle, timeout=5):
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("%r not seen from mosquitto_sub: %r" % (needle, self.all))
            if line is None:
                raise AssertionError("mosquitto_sub exited before %r: %r" % (needle, self.all))
            self.all.append(line)
            if needle in line:
                return line

    def finish(self, timeout=10):
        """Waits for exit; returns (returncode, message lines as (topic, qos, retain, payload))."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("mosquitto_sub did not exit: %r" % self.all)
        self.t.join(5)
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.all.append(line)
        msgs = []
        for line in self.all:
            if line.startswith("Client ") or line.count("|") < 3:
                continue
            t, q, r, p = line.split("|", 3)
            msgs.append((t, int(q), int(r), p))
        return self.proc.returncode, msgs

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


def pub(broker, version, topic, message, qos=0, extra=()):
    cmd = ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-V", version,
           "-t", topic, "-m", message, "-q", str(qos)] + list(extra)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, "mosquitto_pub failed: %s %s" % (r.stdout, r.stderr)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_cli_pub_sub_qos(broker, version, qos):
    s = Sub(broker, "cli/q", version, qos=qos, count=1)
    try:
        pub(broker, version, "cli/q", "hello %d" % qos, qos)
        rc, msgs = s.finish()
    finally:
        s.kill()
    assert rc == 0
    assert msgs == [("cli/q", qos, 0, "hello %d" % qos)]


@pytest.mark.parametrize("version", VERSIONS)
def test_cli_retained(broker, version):
    pub(broker, version, "cli/ret", "kept", 1, ["-r"])
    s = Sub(broker, "cli/#", version, qos=1, count=1, wait_suback=False)
    try:
        rc, msgs = s.finish()
    finally:
        s.kill()
    assert rc == 0 and msgs == [("cli/ret", 1, 1, "kept")]
    # delete it
    pub(broker, version, "cli/ret", "", 1, ["-r"])
    s = Sub(broker, "cli/#", version, qos=1, count=1, extra=["-W", "1"], wait_suback=False)
    rc, msgs = s.finish()
    assert msgs == [], "retained message should be deleted: %r" % msgs


@pytest.mark.parametrize("version", VERSIONS)
def test_cli_persistent_session(broker, version):
    cid = uid("clips")
    extra = ["-c", "-i", cid] + (["-x", "60"] if version == "mqttv5" else [])
    # subscribe, then exit as soon as the subscription is acknowledged (-E)
    s = Sub(broker, "clips/t", version, qos=1, count=1, extra=extra + ["-E"],
            wait_suback=False)
    rc, _ = s.finish()
    assert rc == 0, s.all
    pub(broker, version, "clips/t", "while offline", 1)
    s = Sub(broker, "clips/t", version, qos=1, count=1, extra=extra, wait_suback=False)
    try:
        rc, msgs = s.finish()
    finally:
        s.kill()
    assert rc == 0 and msgs == [("clips/t", 1, 0, "while offline")], s.all


@pytest.mark.parametrize("version", VERSIONS)
def test_cli_will(broker, version):
    w = PahoClient(broker, version=V311)
    w.connect()
    try:
        w.subscribe("cliwill/#", 1)
        s = Sub(broker, "cliwill/none", version, qos=0, count=1,
                extra=["--will-topic", "cliwill/dead", "--will-payload", "bye",
                       "--will-qos", "1"])
        s.kill()  # SIGKILL: the connection closes without DISCONNECT
        m = w.get(3)
        assert (m.topic, m.payload) == ("cliwill/dead", b"bye")
    finally:
        w.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_cli_many_messages(broker, version):
    s = Sub(broker, "clim/t", version, qos=1, count=50)
    try:
        # one mosquitto_pub sending 50 lines (-l reads stdin, one message per line)
        cmd = ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-V", version,
               "-t", "clim/t", "-q", "1", "-l"]
        r = subprocess.run(cmd, input="".join("m%d\n" % i for i in range(50)),
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        rc, msgs = s.finish()
    finally:
        s.kill()
    assert [m[3] for m in msgs] == ["m%d" % i for i in range(50)]
