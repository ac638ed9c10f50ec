#!/bin/sh
# Installs everything tern needs to build, test and benchmark, from Debian packages.
# Idempotent: packages already present are skipped, so a second run is quick.
set -eu

PKGS="build-essential cmake pkg-config clang libclang-rt-14-dev clang-format
libuv1-dev libssl-dev libraft-dev liblz4-dev libcjson-dev libcmocka-dev
python3 python3-paho-mqtt python3-pytest gnuplot-nox mosquitto mosquitto-clients curl
ca-certificates procps iproute2 prometheus iptables libnetfilter-queue-dev haproxy chromium"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

# MQTT.js interop tests need node and npm; a machine that already has them (from any
# source) keeps its own, since Debian's npm conflicts with NodeSource's nodejs.
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"

if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "install-deps: installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q --no-install-recommends $missing
fi

# Debian's mosquitto package starts a broker on 1883 where systemd runs; tern only
# needs the binary (tests and benchmarks start their own on free ports), and the
# local cluster wants 1883. Stop the service we just installed, not one that was
# there before.
case " $missing " in
*" mosquitto "*)
    if [ -d /run/systemd/system ] && systemctl is-enabled --quiet mosquitto 2>/dev/null; then
        echo "install-deps: disabling the mosquitto service (tern uses port 1883)"
        ${SUDO:-} systemctl disable --now mosquitto || true
    fi
    ;;
esac
# haproxy: the tests run their own (deploy/haproxy/haproxy.cfg on free ports); the
# service Debian starts is not needed.
case " $missing " in
*" haproxy "*)
    if [ -d /run/systemd/system ] && systemctl is-enabled --quiet haproxy 2>/dev/null; then
        echo "install-deps: disabling the haproxy service (the tests start their own)"
        ${SUDO:-} systemctl disable --now haproxy || true
    fi
    ;;
esac
# prometheus: only promtool is needed (the tests check deploy/prometheus/alerts.yml);
# its server would scrape and listen on 9090.
case " $missing " in
*" prometheus "*)
    if [ -d /run/systemd/system ] && systemctl is-enabled --quiet prometheus 2>/dev/null; then
        echo "install-deps: disabling the prometheus service (only promtool is used)"
        ${SUDO:-} systemctl disable --now prometheus prometheus-node-exporter || true
    fi
    ;;
esac

# The Node packages of the interop tests (tests/integration/js: MQTT.js, and
# playwright-core, which drives Debian's chromium for the browser test and downloads
# no browser of its own), from the lock file. Only in a source tree; a failure here
# leaves those tests to skip, not the install to fail.
JS_DIR="$(cd "$(dirname "$0")/.." && pwd)/tests/integration/js"
if [ -f "$JS_DIR/package-lock.json" ] && command -v npm >/dev/null 2>&1 &&
    { [ ! -d "$JS_DIR/node_modules/mqtt" ] || [ ! -d "$JS_DIR/node_modules/playwright-core" ]; }; then
    echo "install-deps: npm ci in tests/integration/js"
    (cd "$JS_DIR" && npm ci --no-audit --no-fund) ||
        echo "install-deps: npm ci failed: the MQTT.js and browser tests will skip"
fi
