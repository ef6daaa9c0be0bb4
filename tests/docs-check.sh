#!/bin/sh
# SPDX-License-Identifier: MIT
# docs-check.sh - every parameter "portcullis -p" prints has a .TP entry in portcullis.conf.5.
# Filter sections document their common "timeout" and "on_error" once, under FILTERS.
bin=${1:-build/portcullis}
man=$(dirname "$0")/../deploy/portcullis.conf.5
missing=0
# -p prints the parameter table; a -p that fails must not pass as "nothing undocumented".
params=$("$bin" -p) || { echo "docs-check: $bin -p failed"; exit 1; }
[ -n "$params" ] || { echo "docs-check: $bin -p printed nothing"; exit 1; }
for name in $(printf '%s\n' "$params" | sed 's/ = .*//'); do
    case "$name" in
        *.timeout|*.on_error) base=${name##*.}; sec=${name%%.*}
            [ "$sec" = dns ] || name=$base ;;
    esac
    if ! grep -qx ".B $name" "$man"; then
        echo "docs-check: parameter $name is not documented in deploy/portcullis.conf.5"
        missing=$((missing + 1))
    fi
done
if [ "$missing" -gt 0 ]; then
    echo "docs-check: $missing undocumented parameters"; exit 1
fi
echo "docs-check: every parameter is documented"
