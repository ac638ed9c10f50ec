"""MQTT over TLS (issue 15, the client side): `listeners` with `mqtts`, real clients.

The PKI is made per module with the openssl CLI (tests/tls/make_certs.sh): a CA, a
server certificate for localhost/127.0.0.1, client certificates (one good, one expired,
one revoked and listed in the CRL), another CA and a client it signed.

Clients: mosquitto_pub/_sub (--cafile/--cert/--key), paho (tls_set), MQTT.js (mqtts://),
openssl s_client (ALPN, TLS 1.2 and 1.3). What the broker did is read from its admin API
(/clients, /metrics) and its log.
"""
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt
import pytest

from conftest import TERN_BIN, free_port
from helpers import IS_MOSQUITTO, uid, wait_until

pytestmark = [pytest.mark.tern_only,
              pytest.mark.skipif(IS_MOSQUITTO, reason="tern listeners")]

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
MAKE_CERTS = os.path.join(REPO, "tests", "tls", "make_certs.sh")
JS_DIR = os.path.join(HERE, "js")
T = 10.0  # liveness bound for each step


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("no openssl CLI")
    d = str(tmp_path_factory.mktemp("pki"))
    subprocess.run(["sh", MAKE_CERTS, d], check=True, timeout=60)
    return d


def p(pki, name):
    return os.path.join(pki, name)


def mqtts(pki, port, **kw):
    """An mqtts listener object; server.pem by default, extra members from kw."""
    lst = {"type": "mqtts", "bind": "127.0.0.1:%d" % port,
           "cert_file": kw.pop("cert_file", p(pki, "server.pem")),
           "key_file": kw.pop("key_file", p(pki, "server.key"))}
    lst.update(kw)
    return lst


@pytest.fixture
def tls_broker(start_broker, pki):
    """factory(**listener members) -> broker with .tls_port (an mqtts listener)."""
    def factory(extra_settings=None, **members):
        port = free_port()
        b = start_broker(listeners=json.dumps([mqtts(pki, port, **members)]),
                         **(extra_settings or {}))
        b.tls_port = port
        return b
    return factory


def admin(b, path):
    wait_until(lambda: re.search(r"admin API listening on (\S+)", b.log(current_run=True)),
               T, msg="admin address in the log")
    addr = re.findall(r"admin API listening on (\S+)", b.log(current_run=True))[-1]
    with urllib.request.urlopen("http://%s%s" % (addr, path), timeout=T) as r:
        body = r.read().decode()
    return json.loads(body) if path.startswith("/clients") else body


def metric(b, name):
    m = re.search(r"^%s (\d+)$" % name, admin(b, "/metrics"), re.M)
    assert m, "%s not in /metrics" % name
    return int(m.group(1))


def wait_metric(b, name, want):
    wait_until(lambda: metric(b, name) == want, T, msg="%s == %d" % (name, want))


def mosq_args(pki, port, cert=None, cafile="ca.pem"):
    a = ["-h", "localhost", "-p", str(port), "--cafile", p(pki, cafile)]
    if cert:
        a += ["--cert", p(pki, cert + ".pem"), "--key", p(pki, cert + ".key")]
    return a


def mosquitto_pub(pki, port, cert=None, cafile="ca.pem", topic="t/x", msg="m"):
    return subprocess.run(["mosquitto_pub"] + mosq_args(pki, port, cert, cafile) +
                          ["-t", topic, "-m", msg, "-q", "1", "-i", uid("pub")],
                          capture_output=True, text=True, timeout=T)


def need(tool):
    if not shutil.which(tool):
        pytest.skip("%s not installed" % tool)


class Paho:
    """A paho client over TLS that records what it receives."""

    def __init__(self, pki, port, cert="client", cid=None):
        self.msgs = []
        self.connected = threading.Event()
        self.c = mqtt.Client(client_id=cid or uid("paho"), protocol=mqtt.MQTTv311)
        self.c.tls_set(ca_certs=p(pki, "ca.pem"),
                       certfile=p(pki, cert + ".pem") if cert else None,
                       keyfile=p(pki, cert + ".key") if cert else None)
        self.c.on_connect = lambda c, u, f, rc: rc == 0 and self.connected.set()
        self.c.on_message = lambda c, u, m: self.msgs.append((m.topic, m.payload))
        self.c.connect("localhost", port, keepalive=30)
        self.c.loop_start()
        assert self.connected.wait(T), "paho: no CONNACK over TLS"

    def sub(self, topic, qos=1):
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe(topic, qos)
        assert done.wait(T), "no SUBACK"

    def pub(self, topic, payload, qos=1):
        self.c.publish(topic, payload, qos).wait_for_publish(T)

    def wait_msg(self, payload):
        wait_until(lambda: any(m[1] == payload for m in self.msgs), T,
                   msg="message %r" % payload)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def s_client(port, *args, cafile=None, inp=b"Q\n"):
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
           "-servername", "localhost"] + list(args)
    if cafile:
        cmd += ["-CAfile", cafile, "-verify_return_error"]
    r = subprocess.run(cmd, input=inp, capture_output=True, timeout=T)
    return r.returncode, r.stdout.decode("utf-8", "replace") + r.stderr.decode(
        "utf-8", "replace")


# --- clients ------------------------------------------------------------------

def test_mosquitto_clients_with_client_certificates(tls_broker, pki):
    need("mosquitto_sub")
    b = tls_broker(ca_file=p(pki, "ca.pem"), crl_file=p(pki, "crl.pem"),
                   require_certificate=True)
    sub = subprocess.Popen(["mosquitto_sub"] + mosq_args(pki, b.tls_port, "client") +
                           ["-t", "tls/m", "-C", "1", "-W", "10", "-i", uid("sub"), "-q", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: any(c["state"] == "active" and c["tls"]
                               for c in admin(b, "/clients")["clients"]), T,
                   msg="the subscriber connected over TLS")
        time.sleep(0.2)  # its SUBSCRIBE follows the CONNACK
        r = mosquitto_pub(pki, b.tls_port, "client", topic="tls/m", msg="over-tls")
        assert r.returncode == 0, r.stderr
        out, err = sub.communicate(timeout=T)
        assert out.strip() == "over-tls", err
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    assert metric(b, "tern_tls_handshakes_total") >= 2
    assert metric(b, "tern_tls_handshake_failures_total") == 0


def test_paho_tls_set(tls_broker, pki):
    b = tls_broker()
    a = Paho(pki, b.tls_port, cert=None)
    c = Paho(pki, b.tls_port, cert=None)
    try:
        a.sub("tls/paho")
        big = os.urandom(200000)  # many TLS records
        c.pub("tls/paho", b"small", qos=1)
        c.pub("tls/paho", big, qos=1)
        a.wait_msg(b"small")
        a.wait_msg(big)
    finally:
        a.close()
        c.close()


def test_plain_and_tls_listeners_together(tls_broker, pki, clients):
    """A message published on the plain listener reaches a TLS subscriber."""
    b = tls_broker()
    clients.broker = b
    a = Paho(pki, b.tls_port, cert=None)
    try:
        a.sub("both/t")
        plain = mqtt.Client(client_id=uid("plain"))
        plain.connect(b.host, b.port)
        plain.loop_start()
        plain.publish("both/t", b"from-plain", 1).wait_for_publish(T)
        a.wait_msg(b"from-plain")
        plain.disconnect()
        plain.loop_stop()
    finally:
        a.close()


def test_mqttjs_over_mqtts(tls_broker, pki):
    need("node")
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "mqtt")):
        pytest.skip("no node_modules in %s (npm ci)" % JS_DIR)
    b = tls_broker(ca_file=p(pki, "ca.pem"), require_certificate=True)
    script = r"""
import mqtt from 'mqtt';
import fs from 'node:fs';
const [port, dir] = process.argv.slice(2);
const opts = {port: Number(port), host: 'localhost', protocol: 'mqtts', protocolVersion: 5,
  ca: fs.readFileSync(dir + '/ca.pem'), cert: fs.readFileSync(dir + '/client.pem'),
  key: fs.readFileSync(dir + '/client.key'), reconnectPeriod: 0, connectTimeout: 8000};
const c = mqtt.connect(opts);
const fail = (e) => { console.error('error', e && e.message); process.exit(1); };
c.on('error', fail);
setTimeout(() => fail(new Error('timeout')), 9000);
c.on('connect', () => {
  c.subscribe('js/tls', {qos: 1}, (err) => {
    if (err) fail(err);
    c.publish('js/tls', 'hello-js', {qos: 1});
  });
});
c.on('message', (t, m) => { console.log('got', t, m.toString()); c.end(false, () => process.exit(0)); });
"""
    path = os.path.join(JS_DIR, "tls_check_%d.mjs" % os.getpid())
    with open(path, "w") as f:
        f.write(script)
    try:
        r = subprocess.run(["node", path, str(b.tls_port), pki], cwd=JS_DIR,
                           capture_output=True, text=True, timeout=30)
    finally:
        os.unlink(path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "got js/tls hello-js" in r.stdout


def test_s_client_alpn_and_versions(tls_broker, pki):
    need("openssl")
    b = tls_broker()
    ca = p(pki, "ca.pem")
    for ver, name in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        rc, out = s_client(b.tls_port, ver, "-alpn", "mqtt", cafile=ca)
        assert rc == 0, out
        assert "ALPN protocol: mqtt" in out, out
        assert re.search(r"Protocol\s*:\s*%s" % name, out) or ("New, %s" % name) in out, out
        assert "Verify return code: 0 (ok)" in out, out
    # No ALPN, or only others: served without.
    rc, out = s_client(b.tls_port, "-alpn", "x-other", cafile=ca)
    assert rc == 0 and "No ALPN negotiated" in out, out
    rc, out = s_client(b.tls_port, cafile=ca)
    assert rc == 0 and "No ALPN negotiated" in out, out


def test_tls_min_version_1_3_refuses_1_2(tls_broker, pki):
    need("openssl")
    b = tls_broker(tls_min_version="1.3")
    rc, out = s_client(b.tls_port, "-tls1_2", cafile=p(pki, "ca.pem"))
    assert rc != 0, out
    rc, out = s_client(b.tls_port, "-tls1_3", cafile=p(pki, "ca.pem"))
    assert rc == 0, out
    wait_metric(b, "tern_tls_handshake_failures_total", 1)
    assert "unsupported protocol" in b.log(current_run=True)


# --- refusals -----------------------------------------------------------------

def test_wrong_ca_refused(tls_broker, pki):
    need("mosquitto_pub")
    b = tls_broker(ca_file=p(pki, "ca.pem"), require_certificate=True)
    # The client does not trust the server's CA.
    r = mosquitto_pub(pki, b.tls_port, "client", cafile="other-ca.pem")
    assert r.returncode != 0
    # The server does not trust the client's CA.
    r = mosquitto_pub(pki, b.tls_port, "other")
    assert r.returncode != 0
    wait_until(lambda: "unable to get local issuer certificate" in b.log(current_run=True),
               T, msg="the reason in the log")
    assert metric(b, "tern_tls_handshake_failures_total") >= 1


@pytest.mark.parametrize("cert,reason", [
    ("expired", "certificate has expired"),
    ("revoked", "certificate revoked"),
    (None, "peer did not return a certificate"),
])
def test_client_certificate_refused(tls_broker, pki, cert, reason):
    need("mosquitto_pub")
    b = tls_broker(ca_file=p(pki, "ca.pem"), crl_file=p(pki, "crl.pem"),
                   require_certificate=True)
    r = mosquitto_pub(pki, b.tls_port, cert)
    assert r.returncode != 0, "a %s client certificate was accepted" % cert
    wait_metric(b, "tern_tls_handshake_failures_total", 1)
    log = b.log(current_run=True)
    assert re.search(r"TLS handshake failed: .*%s" % reason, log), log[-2000:]
    # The good certificate still gets in.
    assert mosquitto_pub(pki, b.tls_port, "client").returncode == 0


def test_use_identity_as_username(tls_broker, pki):
    b = tls_broker(ca_file=p(pki, "ca.pem"), require_certificate=True,
                   use_identity_as_username=True)
    a = Paho(pki, b.tls_port, cert="client", cid="ident-1")
    try:
        cl = [c for c in admin(b, "/clients")["clients"] if c["client_id"] == "ident-1"]
        assert cl and cl[0]["tls"] is True and cl[0]["username"] == "device-1", cl
    finally:
        a.close()


def test_garbage_handshake_closes_only_that_connection(tls_broker, pki):
    b = tls_broker()
    a = Paho(pki, b.tls_port, cert=None)
    try:
        a.sub("g/t")
        s = socket.create_connection(("127.0.0.1", b.tls_port), timeout=T)
        # A plain MQTT CONNECT on the TLS port.
        s.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
        data = s.recv(100)  # an alert, then the close
        while data:
            data = s.recv(100)
        s.close()
        wait_metric(b, "tern_tls_handshake_failures_total", 1)
        assert re.search(r"TLS handshake failed: .*wrong version number",
                         b.log(current_run=True))
        a.pub("g/t", b"still-here")
        a.wait_msg(b"still-here")
    finally:
        a.close()


def test_handshake_timeout(tls_broker, pki):
    b = tls_broker(extra_settings={"tls_handshake_timeout_ms": 300})
    s = socket.create_connection(("127.0.0.1", b.tls_port), timeout=T)
    try:
        t0 = time.monotonic()
        assert s.recv(10) == b""  # closed by the broker, not by our timeout
        assert time.monotonic() - t0 < T
    finally:
        s.close()
    wait_metric(b, "tern_tls_handshake_failures_total", 1)
    assert "not done within tls_handshake_timeout_ms" in b.log(current_run=True)


# --- reload -------------------------------------------------------------------

def cert_fingerprint(path):
    r = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-fingerprint",
                        "-sha256"], capture_output=True, text=True, check=True)
    return r.stdout.strip().split("=", 1)[1]


def served_fingerprint(port, ca):
    rc, out = s_client(port, "-showcerts", cafile=ca)
    assert rc == 0, out
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    der = ssl.PEM_cert_to_DER_cert(pem.group(0))
    import hashlib
    h = hashlib.sha256(der).hexdigest().upper()
    return ":".join(h[i:i + 2] for i in range(0, len(h), 2))


def test_sighup_reloads_certificates_and_keeps_connections(tls_broker, pki, tmp_path):
    need("openssl")
    live = tmp_path / "live"
    live.mkdir()
    cert, key = str(live / "cert.pem"), str(live / "key.pem")
    shutil.copy(p(pki, "server.pem"), cert)
    shutil.copy(p(pki, "server.key"), key)
    b = tls_broker(cert_file=cert, key_file=key)
    ca = p(pki, "ca.pem")
    assert served_fingerprint(b.tls_port, ca) == cert_fingerprint(p(pki, "server.pem"))
    a = Paho(pki, b.tls_port, cert=None)
    try:
        a.sub("r/t")
        shutil.copy(p(pki, "server2.pem"), cert)
        shutil.copy(p(pki, "server2.key"), key)
        b.proc.send_signal(signal.SIGHUP)
        wait_metric(b, "tern_tls_reloads_total", 1)
        assert b.alive()
        # A new connection sees the new certificate ...
        assert served_fingerprint(b.tls_port, ca) == cert_fingerprint(p(pki, "server2.pem"))
        # ... the established one goes on.
        a.pub("r/t", b"after-reload")
        a.wait_msg(b"after-reload")

        # A bad new file: the old (server2) stays, and the log says why.
        with open(cert, "w") as f:
            f.write("not a certificate\n")
        b.proc.send_signal(signal.SIGHUP)
        wait_metric(b, "tern_tls_reload_failures_total", 1)
        assert re.search(r"reload: listeners\[0\]\.cert_file: cannot use .*keeping the "
                         r"certificates loaded before", b.log(current_run=True))
        assert served_fingerprint(b.tls_port, ca) == cert_fingerprint(p(pki, "server2.pem"))
        a.pub("r/t", b"after-bad-reload")
        a.wait_msg(b"after-bad-reload")

        # ternctl reload (POST /reload) does the same, and says when it failed.
        r = ternctl(b, "reload")
        assert r.returncode != 0 and "cert_file: cannot use" in r.stdout + r.stderr, r
        shutil.copy(p(pki, "server.pem"), cert)
        shutil.copy(p(pki, "server.key"), key)
        r = ternctl(b, "reload")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "TLS files loaded again on 1 listener(s)" in r.stdout
        assert served_fingerprint(b.tls_port, ca) == cert_fingerprint(p(pki, "server.pem"))
        a.pub("r/t", b"after-ternctl-reload")
        a.wait_msg(b"after-ternctl-reload")
    finally:
        a.close()


def ternctl(b, *args):
    admin(b, "/clients")  # the address is in the log
    addr = re.findall(r"admin API listening on (\S+)", b.log(current_run=True))[-1]
    return subprocess.run([os.path.join(os.path.dirname(TERN_BIN), "ternctl"), "--admin",
                           addr] + list(args), capture_output=True, text=True, timeout=T)


def test_sighup_does_not_stop_a_plain_node(broker, clients):
    """Issue 17 item 1: kill -HUP used to end ternd (no handler)."""
    broker.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert broker.alive(), "ternd ended on SIGHUP"
    c = clients.new()
    c.connect()


# --- configuration ------------------------------------------------------------

def run_ternd(tmp_path, *args):
    return subprocess.run([TERN_BIN, "--data-dir", str(tmp_path / "d"),
                           "--set", "admin_listen=127.0.0.1:0"] + list(args),
                          capture_output=True, text=True, timeout=T)


def test_bad_tls_files_exit_2_naming_the_key(tmp_path, pki):
    port = free_port()
    cases = [
        ({"cert_file": p(pki, "missing.pem")}, r"listeners\[0\]\.cert_file: cannot use"),
        ({"key_file": p(pki, "client.key")}, r"listeners\[0\]\.key_file: .*mismatch"),
        ({"ca_file": p(pki, "ca.pem"), "crl_file": p(pki, "ca.pem")},
         r"listeners\[0\]\.crl_file: no CRL"),
        ({"ciphers": "NOPE"}, r"listeners\[0\]\.ciphers: "),
        ({"tls_min_version": "1.0"}, r"listeners\[0\]\.tls_min_version: must be one of"),
    ]
    for members, want in cases:
        lst = json.dumps([mqtts(pki, port, **members)])
        r = run_ternd(tmp_path, "--listen", "127.0.0.1:%d" % free_port(),
                      "--set", "listeners=" + lst)
        assert r.returncode == 2, (members, r.returncode, r.stderr)
        assert re.search(want, r.stderr), (members, r.stderr)
    # Nothing was bound: the port is still free.
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_duplicate_bind_exit_2(tmp_path, pki):
    port = free_port()
    lst = json.dumps([{"type": "mqtt", "bind": "127.0.0.1:%d" % port}])
    r = run_ternd(tmp_path, "--listen", "127.0.0.1:%d" % port, "--set", "listeners=" + lst)
    assert r.returncode == 2, r.stderr
    assert "listeners[0].bind: \"127.0.0.1:%d\" is the address of listen" % port in r.stderr


def test_listen_none_serves_only_the_tls_listener(tmp_path, pki):
    tls_port = free_port()
    lst = json.dumps([mqtts(pki, tls_port)])
    log = open(str(tmp_path / "ternd.log"), "w")
    proc = subprocess.Popen([TERN_BIN, "--data-dir", str(tmp_path / "d"), "--listen", "none",
                             "--log-level", "debug", "--set", "admin_listen=127.0.0.1:0",
                             "--set", "listeners=" + lst], stdout=log, stderr=log)
    try:
        wait_until(lambda: "listening on 127.0.0.1:%d (mqtts)" % tls_port in
                   open(str(tmp_path / "ternd.log")).read(), T, msg="the TLS listener")
        a = Paho(pki, tls_port, cert=None)
        a.sub("none/t")
        a.pub("none/t", b"tls-only")
        a.wait_msg(b"tls-only")
        a.close()
        assert "(mqtt)" not in open(str(tmp_path / "ternd.log")).read()
    finally:
        proc.terminate()
        proc.wait(T)
        log.close()
    r = run_ternd(tmp_path, "--listen", "none")
    assert r.returncode == 2 and 'listen: "none" and no listeners' in r.stderr, r.stderr
