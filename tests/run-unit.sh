#!/bin/sh
# SPDX-License-Identifier: MIT
# run-unit.sh - run check unit test binaries; fail if any fails.
rc=0
for t in "$@"; do
    CK_VERBOSITY=${CK_VERBOSITY:-normal} "$t" || { echo "FAILED: $t"; rc=1; }
done
exit $rc
