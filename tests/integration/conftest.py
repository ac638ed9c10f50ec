"""Integration test fixtures: start the real broker binary and drive it over TCP.

Environment:
  TERN_BIN            path of ternd (default: <repo>/build/ternd)
  TERN_TEST_TARGET    "tern" (default) or "mosquitto" (runs the same tests against
                      mosquitto, tests marked tern_only are skipped)
  TERN_TEST_REQUIRE_BIN=1  fail instead of skip when ternd is not built

Fixtures:
  broker        a broker on a free 127.0.0.1 port with a fresh data dir
  start_broker  factory: start_broker(**settings) -> Broker, each setting passed as
                `--set key=value` to ternd (ignored for mosquitto unless given in
                mosquitto_conf=[lines])
  clients       factory for paho clients bound to `broker` (closed at teardown)
  raw           factory for raw socket clients bound to `broker` (closed at teardown)

A test fails if its broker exited by itself, or if the broker's log shows an
AddressSanitizer / UBSan report ("runtime error:").
"""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import helpers  # noqa: E402
import mqttraw  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
TERN_BIN = os.environ.get("TERN_BIN", os.path.join(REPO, "build", "ternd"))
TARGET = os.environ.get("TERN_TEST_TARGET", "tern").strip().lower() or "tern"
MOSQUITTO_BIN = os.environ.get("MOSQUITTO_BIN", "mosquitto")
STOP_GRACE_S = 5.0


def is_mosquitto():
    return TARGET == "mosquitto"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


class BrokerError(AssertionError):
    pass


class Broker(helpers.LogFile):
    """One broker process. host/port/data_dir/log_path; restart(), log(), stop()."""

    def __init__(self, workdir, settings=None, mosquitto_conf=(), port=None):
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = workdir
        self.data_dir = os.path.join(workdir, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.log_path = os.path.join(workdir, "broker.log")
        self.settings = dict(settings or {})
        self.mosquitto_conf = list(mosquitto_conf)
        self.proc = None
        self.kind = TARGET
        self.problems = []  # e.g. needed SIGKILL at stop
        self.reported = False
        self.start_offset = 0

    # --- command line --------------------------------------------------------
    def command(self):
        if self.kind == "mosquitto":
            conf = os.path.join(self.workdir, "mosquitto.conf")
            lines = [
                "listener %d 127.0.0.1" % self.port,
                "allow_anonymous true",
                "persistence false",
                "max_inflight_messages 20",
                "max_queued_messages 1000",
                "log_dest stderr",
                "log_type all",
            ] + self.mosquitto_conf
            with open(conf, "w") as f:
                f.write("\n".join(lines) + "\n")
            return [MOSQUITTO_BIN, "-c", conf]
        # admin_listen: a random port, or parallel brokers would collide on 8081
        # (test_admin.py reads the bound one from the log); a setting overrides it.
        cmd = [TERN_BIN, "--listen", "%s:%d" % (self.host, self.port),
               "--data-dir", self.data_dir, "--log-level", "debug",
               "--set", "admin_listen=127.0.0.1:0"]
        for k, v in self.settings.items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            cmd += ["--set", "%s=%s" % (k, v)]
        return cmd

    # --- lifecycle -----------------------------------------------------------
    def start(self, timeout=10.0):
        env = dict(os.environ)
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        cmd = self.command()
        with open(self.log_path, "ab") as log:
            self.start_offset = log.tell()
            log.write(("=== start: %s\n" % " ".join(cmd)).encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, env=env, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError("broker exited at startup with %s:\n%s" % (
                    self.proc.returncode, self.log_tail()))
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.03)
        self.stop()
        raise BrokerError("broker not listening on %d after %.0fs:\n%s" % (
            self.port, timeout, self.log_tail()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, kill=False):
        """SIGTERM (or SIGKILL if kill=True), SIGKILL after 5 s. Returns the exit code."""
        if self.proc is None:
            return None
        p = self.proc
        if p.poll() is None:
            p.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                p.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.problems.append("broker did not exit within %.0fs of SIGTERM; "
                                     "sent SIGKILL" % STOP_GRACE_S)
                p.kill()
                p.wait(5)
        self.proc = None
        if not kill and p.returncode is not None and p.returncode < 0 and \
                p.returncode not in (-signal.SIGTERM, -signal.SIGKILL):
            self.problems.append("broker died with signal %d while shutting down on "
                                 "SIGTERM" % -p.returncode)
        with open(self.log_path, "ab") as log:
            log.write(("=== stopped: exit %s\n" % p.returncode).encode())
        return p.returncode

    def restart(self, kill=False, timeout=10.0):
        """Stops (SIGTERM, or SIGKILL with kill=True) and starts again on the same port
        with the same data dir."""
        self.stop(kill=kill)
        return self.start(timeout)



def pytest_configure(config):
    config.addinivalue_line(
        "markers", "tern_only: checks tern-specific behaviour (reason strings, config "
        "keys, or where mosquitto deviates from the spec); skipped on mosquitto")


def pytest_collection_modifyitems(config, items):
    if is_mosquitto():
        if not _which(MOSQUITTO_BIN):
            skip = pytest.mark.skip(reason="mosquitto not installed")
            for item in items:
                item.add_marker(skip)
            return
        skip = pytest.mark.skip(reason="tern_only: not applicable to mosquitto")
        for item in items:
            if "tern_only" in item.keywords:
                item.add_marker(skip)
    elif not os.access(TERN_BIN, os.X_OK):
        if os.environ.get("TERN_TEST_REQUIRE_BIN") == "1":
            return  # fixtures will fail loudly
        skip = pytest.mark.skip(reason="ternd not built at %s (set TERN_BIN, or "
                                "TERN_TEST_TARGET=mosquitto)" % TERN_BIN)
        for item in items:
            item.add_marker(skip)


def _which(name):
    from shutil import which
    return which(name)


def pytest_report_header(config):
    return "tern integration target: %s (%s)" % (
        TARGET, MOSQUITTO_BIN if is_mosquitto() else TERN_BIN)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.passed:
        if rep.when == "call" and rep.failed:
            # add the broker log tail to failures, it is usually what explains them
            for b in getattr(item, "_tern_brokers", []):
                rep.sections.append(("broker log (%s:%d)" % (b.kind, b.port),
                                     b.log_tail(80)))
        return
    for b in getattr(item, "_tern_brokers", []):
        problem = None
        if b.proc is not None and b.proc.poll() is not None:
            problem = "broker exited by itself with %s during the test:\n%s" % (
                b.proc.returncode, b.log_tail())
        else:
            rpt = b.sanitizer_report()
            if rpt:
                problem = "sanitizer report in broker log:\n" + rpt
        if problem:
            b.reported = True  # teardown does not report the same broker again
            rep.outcome = "failed"
            rep.longrepr = problem
            return


@pytest.fixture
def start_broker(request, tmp_path):
    brokers = []
    request.node._tern_brokers = brokers

    def factory(mosquitto_conf=(), **settings):
        wd = str(tmp_path / ("broker%d" % len(brokers)))
        os.makedirs(wd, exist_ok=True)
        b = Broker(wd, settings, mosquitto_conf)
        brokers.append(b)
        # free_port() is from the ephemeral range: a client socket elsewhere on
        # the machine can take it before the broker binds. Only a first start
        # may move to another port (a restart must keep its clients' port).
        for attempt in range(3):
            try:
                return b.start()
            except BrokerError as e:
                if "address already in use" not in str(e) or attempt == 2:
                    raise
                b.port = free_port()
        return b

    yield factory

    errors = []
    for b in brokers:
        if b.reported:
            b.stop()
            continue
        if b.proc is not None and b.proc.poll() is not None:
            errors.append("broker on port %d exited by itself with %s:\n%s" % (
                b.port, b.proc.returncode, b.log_tail()))
            b.proc = None
        b.stop()
        rpt = b.sanitizer_report()
        if rpt:
            errors.append("sanitizer report in broker log (port %d):\n%s" % (b.port, rpt))
        errors += b.problems
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture
def broker(start_broker):
    return start_broker()


@pytest.fixture
def clients(broker):
    cs = helpers.Clients(broker)
    yield cs
    cs.close()


@pytest.fixture
def raw(broker):
    made = []

    def factory(version=4, b=None, **kw):
        br = b or broker
        c = mqttraw.RawClient(br.host, br.port, version=version, **kw)
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close()

