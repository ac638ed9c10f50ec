#!/bin/sh
# Installs dependencies, builds ternd if needed and runs one node in the
# foreground on 127.0.0.1:1883 (data in ./tern-data). Extra arguments go to ternd.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/deploy/install-deps.sh"
cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$ROOT/build" -j"$(nproc 2>/dev/null || echo 2)" --target ternd ternctl
exec "$ROOT/build/ternd" "$@"
