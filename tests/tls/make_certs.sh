#!/bin/sh
# Makes the test PKI under DIR with the openssl CLI (tests/unit/test_tls.c,
# tests/integration/test_tls.py, tests/bench/compare.sh):
#   ca.pem/ca.key          the test CA
#   server.pem/server.key  CN=localhost, SAN DNS:localhost, IP:127.0.0.1
#   server2.pem/.key       the same names, another key and serial (reload tests)
#   client.pem/.key        CN=device-1
#   expired.pem/.key       CN=expired, valid 2020-01-01 to 2020-01-02
#   revoked.pem/.key       CN=revoked, listed in crl.pem
#   crl.pem                the CA's CRL (revokes revoked.pem)
#   other-ca.pem, other.pem/.key  an unrelated CA and a client it signed
# Everything is RSA 2048, fast enough to make per test run.
set -eu
DIR=$1
mkdir -p "$DIR"
cd "$DIR"
mkdir -p db
: > db/index.txt
echo 1000 > db/serial
cat > ca.cnf <<CNF
[ca]
default_ca = test_ca
[test_ca]
dir = .
database = db/index.txt
serial = db/serial
new_certs_dir = db
certificate = ca.pem
private_key = ca.key
default_md = sha256
default_days = 30
default_crl_days = 30
policy = any
unique_subject = no
copy_extensions = copy
[any]
commonName = supplied
[server_ext]
basicConstraints = CA:FALSE
subjectAltName = DNS:localhost, IP:127.0.0.1
extendedKeyUsage = serverAuth
[client_ext]
basicConstraints = CA:FALSE
extendedKeyUsage = clientAuth
CNF
q() { "$@" > /dev/null 2>&1 || { echo "failed: $*" >&2; "$@"; exit 1; }; }
q openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 \
    -subj "/CN=tern test CA"
q openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.pem \
    -days 30 -subj "/CN=other CA"
sign() { # NAME CN EXT [extra openssl ca args]
    name=$1 cn=$2 ext=$3
    shift 3
    q openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" \
        -subj "/CN=$cn"
    q openssl ca -batch -config ca.cnf -extensions "$ext" -in "$name.csr" \
        -out "$name.pem" -notext "$@"
}
sign server localhost server_ext
sign server2 localhost server_ext
sign client device-1 client_ext
sign revoked revoked client_ext
sign expired expired client_ext -startdate 20200101000000Z -enddate 20200102000000Z
q openssl ca -batch -config ca.cnf -revoke revoked.pem
q openssl ca -batch -config ca.cnf -gencrl -out crl.pem
q openssl req -newkey rsa:2048 -nodes -keyout other.key -out other.csr -subj "/CN=other"
q openssl x509 -req -in other.csr -CA other-ca.pem -CAkey other-ca.key \
    -CAcreateserial -out other.pem -days 30
