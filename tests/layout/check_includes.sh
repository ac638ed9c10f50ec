#!/bin/sh
# What the per-folder libraries cannot enforce (system headers are always on the
# path): the pure layers reach no libuv, raft, OpenSSL or socket header (node/auth
# and node/stream may use libcrypto, not libssl), and no
# source reaches into another folder with a relative include.
#   usage: check_includes.sh CC SOURCE_DIR
set -u
cc=$1
src=$2
inc="$src/include"
fail=0

# folder | include dirs it builds with | headers it must never reach
check() {
    dir=$1 dirs=$2 banned=$3
    for f in "$src"/$dir/*.c; do
        [ -e "$f" ] || continue
        deps=$($cc -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -M $dirs "$f") || {
            echo "layout: cannot preprocess $f"
            fail=1
            continue
        }
        hit=$(printf '%s\n' "$deps" | tr ' \\' '\n\n' | grep -E "$banned")
        if [ -n "$hit" ]; then
            echo "layout: ${f#$src/} reaches $(echo $hit | tr '\n' ' ')"
            fail=1
        fi
    done
}

net='/(uv|uv/.*|raft|raft/.*)\.h$|/openssl/|/sys/socket\.h$|/netinet/|/arpa/|/cjson/'
check storage/base "-I$inc/base" "$net"
check storage "-I$inc/base -I$inc/state" "$net"
check node/codec "-I$inc/base -I$inc/codec" "$net"
check node/auth "-I$inc/base -I$inc/auth" '/(uv|raft)\.h$|/sys/socket\.h$|/cjson/'
check node/tls "-I$inc/base -I$inc/tls" '/(uv|raft)\.h$|/sys/socket\.h$'
check node/stream "-I$inc/base -I$inc/stream" '/(uv|raft)\.h$|/openssl/ssl\.h$|/cjson/'

# A relative include into another folder would go around the libraries.
up=$(grep -rn '#include "\.\./' "$src/storage" "$src/cluster" "$src/node" 2>/dev/null)
if [ -n "$up" ]; then
    echo "layout: relative includes across folders:"
    echo "$up" | sed "s|$src/||"
    fail=1
fi
[ $fail = 0 ] && echo "layout: storage/ and node/{codec,auth,tls,stream} reach no libuv or raft header"
exit $fail
