#!/bin/sh
# SPDX-License-Identifier: MIT
# run-regress.sh - replay each fuzz target's regression inputs (tests/fuzz/regress/TARGET/).
rc=0
here=$(dirname "$0")
for bin in "$@"; do
    name=$(basename "$bin" | sed 's/^regress_fuzz_//')
    dir="$here/regress/$name"
    mkdir -p "$dir"
    # The seed corpus (tests/fuzz/seeds/NAME/) is replayed too: known-good inputs must stay so.
    "$bin" "$dir" "$here/seeds/$name" || { echo "FAILED: $bin"; rc=1; }
done
exit $rc
