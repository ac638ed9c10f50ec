#!/bin/sh
# Makes a cluster CA and node certificates for mutual TLS between nodes
# (cluster_tls, docs/security.md), with the openssl command line:
#
#   deploy/node-certs.sh DIR ID...
#
#   DIR/ca.pem, DIR/ca.key            the cluster CA (made once: kept if there)
#   DIR/node-ID.pem, DIR/node-ID.key  one per ID: CN "node-ID" (what the other
#                                     nodes check), serverAuth + clientAuth
#                                     (every node is both), signed by the CA
#
# Keys are ECDSA P-256 (a handshake costs less than with RSA), mode 0600;
# certificates are valid NODE_CERT_DAYS (default 825) days, the CA ten years.
# A node certificate that exists is kept (delete it to make a new one). The CA
# key signs nothing else: keep it off the nodes on a real deployment.
set -eu
[ $# -ge 2 ] || { echo "usage: node-certs.sh DIR ID..." >&2; exit 2; }
DIR=$1
shift
DAYS=${NODE_CERT_DAYS:-825}
command -v openssl > /dev/null || { echo "node-certs.sh: openssl not found" >&2; exit 1; }
mkdir -p "$DIR"
umask 077
q() { "$@" > /dev/null 2>&1 || { echo "node-certs.sh: failed: $*" >&2; "$@"; exit 1; }; }
if [ ! -f "$DIR/ca.pem" ] || [ ! -f "$DIR/ca.key" ]; then
    q openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$DIR/ca.key" -out "$DIR/ca.pem" -days 3650 \
        -subj "/CN=tern cluster CA $(date -u +%Y%m%d%H%M%S)"
fi
for id in "$@"; do
    case $id in '' | *[!0-9]* | 0*) echo "node-certs.sh: bad node id '$id'" >&2; exit 2 ;; esac
    [ -f "$DIR/node-$id.pem" ] && [ -f "$DIR/node-$id.key" ] && continue
    q openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$DIR/node-$id.key" -out "$DIR/node-$id.csr" -subj "/CN=node-$id"
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:node-%s\n' \
        "$id" > "$DIR/node-$id.ext"
    q openssl x509 -req -in "$DIR/node-$id.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" \
        -CAcreateserial -days "$DAYS" -sha256 -extfile "$DIR/node-$id.ext" \
        -out "$DIR/node-$id.pem"
    rm -f "$DIR/node-$id.csr" "$DIR/node-$id.ext"
done
chmod 644 "$DIR/ca.pem"
