#!/bin/sh
# SPDX-License-Identifier: MIT
# spf.sh - the openspf RFC 7208 suite through our SPF layer (filters/spf.c + gateway/dns.c).
# $1: build directory. Prints "spf suite: N of M pass"; per-test rows go to $B/spf-rfc7208.tsv.
B=${1:-build}
here=$(dirname "$0")
suite="$here/../../../shared/testdata/spf/rfc7208-tests.yml"
[ -f "$suite" ] || suite=/work/shared/testdata/spf/rfc7208-tests.yml
if [ ! -f "$suite" ]; then
    echo "spf: suite not found, skipped"
    exit 0
fi
make --no-print-directory B="$B" "$B/tests/conf_spf_check" >/dev/null || exit 1
exec python3 "$here/spf_suite.py" --suite "$suite" --checker "$B/tests/conf_spf_check" \
    --port "${SPF_SUITE_PORT:-21953}" --out "$B/spf-rfc7208.tsv"
