#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# callgrind.sh - instructions per message through the gateway (callgrind), without start-up.
#
#   tests/bench/callgrind.sh [build/portcullis]                  FILTERS=relay (default)
#   FILTERS=rules tests/bench/callgrind.sh [build/portcullis]
#
#   FILTERS=relay   the relay filter alone, smtp-source's 5 KB messages, N=20: the per-message
#                   fixed costs (metrics, logging, session set-up) that a 5 KB message is
#                   dominated by
#   FILTERS=rules   relay + the shipped rules, 1 MB messages, N=4 (rule compilation cancels out
#                   too). Instructions are not time: PCRE2's JIT literal search is vectorised
#                   (few instructions per byte, fast), a scalar scan that does fewer instructions
#                   can still be slower; check a change with a timing too.
#
# Two runs of the gateway under callgrind, one with 1 message and one with 1 + N, both of SIZE
# bytes (env; the defaults above); the difference over N is the gateway's instructions per
# message. Repeatable (instruction counts, not time). KEEP=1 keeps the callgrind.out files in
# $TMP for callgrind_annotate. Loopback only.
set -euo pipefail
BIN=$(readlink -f "${1:-build/portcullis}")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/lib.sh"
FILTERS=${FILTERS:-relay}
case $FILTERS in
    relay) N=${N:-20}; SIZE=${SIZE:-5120}; filters='"relay"'; extra="" ;;
    rules) N=${N:-4}; SIZE=${SIZE:-1048576}; filters='"relay", "rules"'
           rules=""
           for f in default gtube attachments auth spam-phrases; do rules+="\"$ROOT/rules/$f.rules\", "; done
           extra="rules {
    files = { ${rules%, } }
}" ;;
    *) echo "callgrind.sh: FILTERS=relay or FILTERS=rules" >&2; exit 2 ;;
esac
export PORTCULLIS_WORKERS=1
bench_tmp "cg-$FILTERS"

SINK=$(port)
start_sink "$SINK" "$TMP/sink.log"

# instr COUNT -> instructions of the whole gateway run that carried COUNT messages
instr() {
    local gw pid
    gw=$(port)
    gw_conf "$gw" "$SINK" "$filters" "    max_message_size = 20000000" "$extra" > "$TMP/gw.conf"
    valgrind -q --tool=callgrind --callgrind-out-file="$TMP/callgrind.out.$1" \
        "$BIN" -c "$TMP/gw.conf" > "$TMP/gw.$1.log" 2>&1 & pid=$!
    wait_port "$gw" 60
    smtp-source -s 1 -m "$1" -l "$SIZE" -f bench@example.org -t rcpt@example.com 127.0.0.1:"$gw"
    kill -TERM "$pid"; wait "$pid" || true
    awk '/^summary:/ { print $2 }' "$TMP/callgrind.out.$1"
}
wait_port "$SINK"
one=$(instr 1); many=$(instr $((N + 1)))
if [ "$FILTERS" = relay ]; then
    awk -v a="$one" -v b="$many" -v n="$N" -v s="$SIZE" 'BEGIN {
        printf "callgrind relay, %d KB message: %.0f instructions per message (%.2f per byte)\n",
               s / 1024, (b - a) / n, (b - a) / n / s }'
else
    awk -v a="$one" -v b="$many" -v n="$N" -v s="$SIZE" 'BEGIN {
        printf "callgrind relay+rules, %d KB message: %.1f M instructions per message (%.2f per byte)\n",
               s / 1024, (b - a) / n / 1e6, (b - a) / n / s }'
fi
