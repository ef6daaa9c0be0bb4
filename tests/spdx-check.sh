#!/bin/sh
# SPDX-License-Identifier: MIT
# spdx-check.sh [--fix] - every tracked C, header, Python and shell file names its licence in an
# SPDX-License-Identifier line within its first 5 lines. With --fix, add the line where it is
# missing (after a #! line, else first) and list the files changed.
cd "$(dirname "$0")/.." || exit 1
LICENSE_ID=MIT
fix=""
[ "$1" = "--fix" ] && fix=yes
if git rev-parse --git-dir >/dev/null 2>&1; then
    files=$(git ls-files '*.c' '*.h' '*.py' '*.sh' .ci/run)
else
    files=$(find . -path ./build -prune -o -type f \( -name '*.c' -o -name '*.h' -o -name '*.py' \
        -o -name '*.sh' \) -print)
fi
missing=0
for f in $files; do
    [ -f "$f" ] || continue
    head -n 5 "$f" | grep -q 'SPDX-License-Identifier:' && continue
    if [ -z "$fix" ]; then
        echo "spdx-check: $f: no SPDX-License-Identifier line"
        missing=$((missing + 1))
        continue
    fi
    case "$f" in
        *.c|*.h) line="/* SPDX-License-Identifier: $LICENSE_ID */" ;;
        *) line="# SPDX-License-Identifier: $LICENSE_ID" ;;
    esac
    tmp="$f.spdx.$$"
    if head -n 1 "$f" | grep -q '^#!'; then
        { head -n 1 "$f"; echo "$line"; tail -n +2 "$f"; } > "$tmp"
    else
        { echo "$line"; cat "$f"; } > "$tmp"
    fi
    cat "$tmp" > "$f" && rm -f "$tmp"   # keep the file's mode
    echo "spdx-check: added to $f"
done
if [ "$missing" -gt 0 ]; then
    echo "spdx-check: $missing files without a licence line; fix with tests/spdx-check.sh --fix"
    exit 1
fi
[ -n "$fix" ] || echo "spdx-check: every source file names its licence"
