# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# lib.sh - shell helpers the benchmark scripts share (bash; sourced, not run):
#
#   . "$HERE/lib.sh"
#   bench_tmp NAME        a fresh temp dir $TMP (/tmp/pc-NAME-XXXXXX, mode 755) and an EXIT trap
#                         that kills every pid in $pids and removes $TMP (KEEP=1: keeps it)
#   port                  a free loopback TCP port
#   wait_port PORT [S]    wait up to S seconds (5) until something listens on PORT, else exit 1
#   start_sink PORT LOG [ARG...]
#                         smtp-sink on 127.0.0.1:PORT (as root: -u nobody), its output in LOG,
#                         ARGs before the address; its pid in $SINK_PID and in $pids
#   calc EXPR             floating point without bc (awk), 6 decimals
#   best                  the smallest of the numbers on stdin, one a line (best of N runs)
#   run SESSIONS COUNT SIZE PORT
#                         seconds smtp-source takes for COUNT messages of SIZE bytes to PORT
#   gw_conf PORT SINK FILTERS [LIMITS [EXTRA]]
#                         a one-listener gateway configuration (relay from 127.0.0.0/8) on
#                         stdout: FILTERS as in filters = { ... }, LIMITS the lines of limits { },
#                         EXTRA lines appended at the end
# Only loopback is used. PORTCULLIS_RUN_AS_ROOT=1: benchmarks run as root without "user" on
# purpose.
export PORTCULLIS_RUN_AS_ROOT=1

pids=()
sinkuser=()
[ "$(id -u)" -eq 0 ] && sinkuser=(-u nobody)

bench_cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    [ -n "${KEEP:-}" ] || rm -rf "$TMP"
}

bench_tmp() {
    TMP=$(mktemp -d "/tmp/pc-$1-XXXXXX")
    chmod 755 "$TMP"
    trap bench_cleanup EXIT
}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
    for _ in $(seq $(( ${2:-5} * 20 ))); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "no listener on $1" >&2
    exit 1
}

start_sink() {
    local p=$1 log=$2
    shift 2
    smtp-sink "${sinkuser[@]}" "$@" -c 127.0.0.1:"$p" 1000 > "$log" 2>&1 &
    SINK_PID=$!
    pids+=("$SINK_PID")
}

calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }

best() { sort -g | head -1; }

# run SESSIONS COUNT SIZE PORT -> seconds smtp-source took to send COUNT messages of SIZE bytes
run() { local t0 t1; t0=$(date +%s.%N)
        smtp-source -s "$1" -m "$2" -l "$3" -f bench@example.org -t rcpt@example.com 127.0.0.1:"$4"
        t1=$(date +%s.%N); calc "$t1 - $t0"; }

gw_conf() {
    cat <<CONF
hostname = "bench.test"
log = "stderr"
listener "in" {
    address = "127.0.0.1:$1"
    backend = "sink"
    filters = { $3 }
}
backend "sink" {
    address = { "127.0.0.1:$2" }
}
relay {
    mynetworks = { "127.0.0.0/8" }
}
limits {
${4:-}
}
CONF
    [ -z "${5:-}" ] || printf '%s\n' "$5"
}
