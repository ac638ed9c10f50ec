#!/bin/sh
# Failover drill against the local cluster (deploy/cluster.sh up first): QoS 1
# publishers and persistent subscribers fail over between the nodes while the nodes are
# killed and restarted in turn; prints sent / acknowledged / received / duplicated / lost
# and exits non-zero if an acknowledged message was lost.
#
#   deploy/drill.sh [--duration S (30)] [--rate MSGS_PER_S (50)] [--publishers N] [--subscribers N]
#
# Uses the same environment as cluster.sh (TERN_DATA, TERN_MQTT_BASE, ...).
set -eu
exec /usr/bin/python3 "$(dirname "$0")/drill.py" "$@"
