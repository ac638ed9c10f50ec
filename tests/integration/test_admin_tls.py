"""HTTPS on admin_listen (issue 16): admin_tls_cert_file / admin_tls_key_file make
the admin API speak TLS only (the bearer token no longer travels in clear),
admin_tls_ca_file requires client certificates; Python's ssl and ternctl
(--ca-file, --cert, --key) as clients. The PKI is tests/tls/make_certs.sh."""
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess

import pytest

from conftest import REPO, Broker, BrokerError, is_mosquitto
from helpers import wait_until
from test_admin import admin_addr, ctl

pytestmark = pytest.mark.skipif(is_mosquitto(), reason="tern's admin API")

MAKE_CERTS = os.path.join(REPO, "tests", "tls", "make_certs.sh")
TOKEN = "t0ken-for-the-admin-api-tests"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("no openssl CLI")
    d = str(tmp_path_factory.mktemp("pki"))
    subprocess.run(["sh", MAKE_CERTS, d], check=True, timeout=60)
    return d


def https(addr, path, ca, cert=None, token=None, host="localhost"):
    h, port = addr.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert[0], cert[1])
    c = http.client.HTTPSConnection(h, int(port), timeout=10, context=ctx)
    # Check the certificate against `host` while connecting to the address.
    c.sock = ctx.wrap_socket(socket.create_connection((h, int(port)), timeout=10),
                             server_hostname=host)
    try:
        c.request("GET", path, headers={"Authorization": "Bearer " + token} if token else {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_https_admin_api_with_token(start_broker, pki, tmp_path):
    tok = tmp_path / "token"
    tok.write_text(TOKEN + "\n")
    b = start_broker(admin_tls_cert_file=os.path.join(pki, "server.pem"),
                     admin_tls_key_file=os.path.join(pki, "server.key"),
                     admin_token_file=str(tok))
    addr = admin_addr(b)
    assert "(HTTPS)" in b.log(current_run=True)
    ca = os.path.join(pki, "ca.pem")
    wait_until(lambda: https(addr, "/health", ca)[0] == 200, msg="GET /health over TLS")
    assert https(addr, "/cluster", ca)[0] == 401
    status, body = https(addr, "/cluster", ca, token=TOKEN)
    assert status == 200 and "node_id" in json.loads(body), body
    # Plain HTTP on the same port gets no answer (the TLS server sees no hello).
    h, port = addr.rsplit(":", 1)
    with socket.create_connection((h, int(port)), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(10)
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
        assert b"HTTP/1.1 200" not in data
    # A client that does not trust the certificate fails its handshake.
    with pytest.raises(ssl.SSLError):
        https(addr, "/health", os.path.join(pki, "other-ca.pem"))
    wait_until(lambda: "admin API: TLS handshake failed" in b.log(current_run=True),
               msg="the failed handshake logged")
    # ternctl: --ca-file, to the address (IP SAN) and to the name (DNS SAN).
    rc, out, err = ctl(addr, "--ca-file", ca, "--token-file", str(tok), "--json", "status")
    assert rc == 0 and json.loads(out)["cluster"]["leader"] == 1, (rc, out, err)
    rc, out, err = ctl("localhost:" + port, "--ca-file", ca, "--token-file", str(tok),
                       "--json", "status")
    assert rc == 0, (rc, out, err)
    rc, out, err = ctl(addr, "--ca-file", os.path.join(pki, "other-ca.pem"), "status")
    assert rc != 0 and "TLS handshake" in err, (rc, out, err)
    rc, out, err = ctl(addr, "status")  # plain HTTP to an HTTPS port
    assert rc != 0


def test_https_admin_api_with_client_certificates(start_broker, pki):
    ca = os.path.join(pki, "ca.pem")
    b = start_broker(admin_tls_cert_file=os.path.join(pki, "server.pem"),
                     admin_tls_key_file=os.path.join(pki, "server.key"),
                     admin_tls_ca_file=ca)
    addr = admin_addr(b)
    cert = (os.path.join(pki, "client.pem"), os.path.join(pki, "client.key"))
    wait_until(lambda: https(addr, "/health", ca, cert=cert)[0] == 200,
               msg="GET /health with a client certificate")
    for bad in (None, (os.path.join(pki, "other.pem"), os.path.join(pki, "other.key"))):
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            https(addr, "/health", ca, cert=bad)
    rc, out, err = ctl(addr, "--ca-file", ca, "--cert", cert[0], "--key", cert[1],
                       "--json", "status")
    assert rc == 0, (rc, out, err)
    rc, out, err = ctl(addr, "--ca-file", ca, "status")
    assert rc != 0, (rc, out, err)


def test_bad_admin_tls_files_stop_the_start(pki, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    cases = (({"admin_tls_cert_file": str(bad),
               "admin_tls_key_file": os.path.join(pki, "server.key")}, "admin_tls_cert_file"),
             ({"admin_tls_cert_file": os.path.join(pki, "server.pem"),
               "admin_tls_key_file": os.path.join(pki, "client.key")}, "admin_tls_"),
             ({"admin_tls_ca_file": os.path.join(pki, "ca.pem")}, "admin_tls_ca_file"))
    for i, (settings, key) in enumerate(cases):
        b = Broker(str(tmp_path / ("b%d" % i)), settings)
        try:
            with pytest.raises(BrokerError, match=key):
                b.start()
        finally:
            b.stop()
