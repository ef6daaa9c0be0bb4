#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# relay-callgrind.sh - instructions per 5 KB message through the relay filter alone (callgrind)
#
#   tests/bench/relay-callgrind.sh [build/portcullis]
#
# Two runs of the gateway under callgrind, one with 1 message and one with 1 + N (N=20), both
# smtp-source's 5 KB; the difference over N is the gateway's instructions per message, without
# start-up. Repeatable (instruction counts, not time). KEEP=1 keeps the
# callgrind.out files in $TMP for callgrind_annotate. Loopback only. Measures the per-message
# fixed costs (metrics, logging, session set-up) that a 5 KB message is dominated by.
set -euo pipefail
BIN=$(readlink -f "${1:-build/portcullis}")
HERE=$(cd "$(dirname "$0")" && pwd)
N=${N:-20}
SIZE=${SIZE:-5120}
export PORTCULLIS_RUN_AS_ROOT=1 PORTCULLIS_WORKERS=1
TMP=$(mktemp -d /tmp/pc-relaycg-XXXXXX)
chmod 755 "$TMP"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "${KEEP:-}" ] || rm -rf "$TMP"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "no listener on $1" >&2; exit 1; }
sinkuser=(); [ "$(id -u)" -eq 0 ] && sinkuser=(-u nobody)

SINK=$(port)
smtp-sink "${sinkuser[@]}" -c 127.0.0.1:"$SINK" 100 > "$TMP/sink.log" 2>&1 & pids+=($!)

# instr COUNT -> instructions of the whole gateway run that carried COUNT messages
instr() {
    local gw pid
    gw=$(port)
    cat > "$TMP/gw.conf" <<CONF
hostname = "bench.test"
log = "stderr"
listener "in" {
    address = "127.0.0.1:$gw"
    backend = "sink"
    filters = { "relay" }
}
backend "sink" {
    address = { "127.0.0.1:$SINK" }
}
relay {
    mynetworks = { "127.0.0.0/8" }
}
limits {
    max_message_size = 20000000
}
CONF
    valgrind -q --tool=callgrind --callgrind-out-file="$TMP/callgrind.out.$1" \
        "$BIN" -c "$TMP/gw.conf" > "$TMP/gw.$1.log" 2>&1 & pid=$!
    wait_port "$gw"
    smtp-source -s 1 -m "$1" -l "$SIZE" -f bench@example.org -t rcpt@example.com 127.0.0.1:"$gw"
    kill -TERM "$pid"; wait "$pid" || true
    awk '/^summary:/ { print $2 }' "$TMP/callgrind.out.$1"
}
wait_port "$SINK"
one=$(instr 1); many=$(instr $((N + 1)))
awk -v a="$one" -v b="$many" -v n="$N" -v s="$SIZE" 'BEGIN {
    printf "callgrind relay, %d KB message: %.0f instructions per message (%.2f per byte)\n",
           s / 1024, (b - a) / n, (b - a) / n / s }'
