#!/bin/sh
# SPDX-License-Identifier: MIT
# run.sh - every conformance suite: each executable tests/conformance/*.sh (but this one)
# runs with the build directory as $1. Fails if any suite fails to run.
B=${1:-build}
here=$(dirname "$0")
rc=0
for t in "$here"/*.sh; do
    [ "$(basename "$t")" = run.sh ] && continue
    [ -x "$t" ] || continue
    echo "== $(basename "$t")"
    "$t" "$B" || { echo "FAILED: $t"; rc=1; }
done
exit $rc
