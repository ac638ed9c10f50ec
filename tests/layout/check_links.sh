#!/bin/sh
# The layers' direction at link time: a library may use what the libraries below
# it define, never what one above defines (the include paths stop a header that
# points up; this stops a declaration written by hand, or a function moved up).
#   usage: check_links.sh NM LIB...   (libraries from the bottom layer up)
set -u
nm=$1
shift
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
i=0
for lib in "$@"; do
    i=$((i + 1))
    "$nm" -g --defined-only "$lib" 2>/dev/null | awk 'NF == 3 && $2 ~ /[TDBR]/ {print $3}' |
        sort -u >"$tmp/def.$i"
    "$nm" -g --undefined-only "$lib" 2>/dev/null | awk '{print $NF}' | sort -u >"$tmp/undef.$i"
done
n=$i
i=1
for lower in "$@"; do
    j=$((i + 1))
    while [ $j -le $n ]; do
        up=$(comm -12 "$tmp/undef.$i" "$tmp/def.$j")
        if [ -n "$up" ]; then
            upper=$(eval "echo \${$j}")
            echo "layout: $(basename "$lower") calls up into $(basename "$upper"): $(echo $up)"
            fail=1
        fi
        j=$((j + 1))
    done
    i=$((i + 1))
done
[ $fail = 0 ] && echo "layout: no library calls into one above it ($n libraries)"
exit $fail
