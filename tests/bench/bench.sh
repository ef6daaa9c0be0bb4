#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench.sh - portcullis against a direct baseline, side by side in the same run.
#
#   throughput  smtp-source -> portcullis -> smtp-sink  vs  smtp-source -> smtp-sink,
#               20 sessions, 5 KB and 100 KB messages: msgs/s of both and their ratio
#   latency     one sequential session: added milliseconds per message
#   memory      RSS of portcullis holding 5,000 idle connections
#   cpu         CPU time per message of portcullis (utime+stime from /proc/PID/stat) against
#               smtp-source and smtp-sink's together in the same run, 5 KB, relay filter
#   syscalls    system calls per message of portcullis (strace -c -f on it during a run)
#   workers     throughput with workers = 1 and workers = 2 against direct, 5 KB, 40 sessions
#
# Each throughput figure is the best of ROUNDS alternating runs, because these machines are noisy.
# Only loopback is used. Sub-benchmarks of other parts (tests/bench/*-bench.sh) run afterwards.
set -euo pipefail
export PORTCULLIS_WORKERS=${PORTCULLIS_WORKERS:-1}  # one process: the figures read one pid
BIN=$(readlink -f "${1:-build/portcullis}")
export PORTCULLIS_RUN_AS_ROOT=1  # benchmarks run as root without "user" on purpose
HERE=$(cd "$(dirname "$0")" && pwd)
ROUNDS=${ROUNDS:-3}
MSGS=${MSGS:-3000}
TMP=$(mktemp -d /tmp/pc-bench-XXXXXX)
chmod 755 "$TMP"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "no listener on $1" >&2; exit 1; }

SINK=$(port); GW=$(port)
sinkuser=(); [ "$(id -u)" -eq 0 ] && sinkuser=(-u nobody)
smtp-sink "${sinkuser[@]}" -c 127.0.0.1:"$SINK" 1000 > "$TMP/sink.log" 2>&1 & SINKPID=$!; pids+=($SINKPID)
cat > "$TMP/bench.conf" <<CONF
hostname = "bench.test"
log = "stderr"
listener "in" {
    address = "127.0.0.1:$GW"
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
    max_connections = 20000
}
workers = 1
CONF
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
"$BIN" -c "$TMP/bench.conf" > "$TMP/gw.log" 2>&1 & GWPID=$!; pids+=($GWPID)
wait_port "$SINK"; wait_port "$GW"

# run SESSIONS COUNT SIZE PORT -> seconds
run() { local t0 t1; t0=$(date +%s.%N)
        smtp-source -s "$1" -m "$2" -l "$3" -f bench@example.org -t rcpt@example.com 127.0.0.1:"$4"
        t1=$(date +%s.%N); calc "$t1 - $t0"; }
best() { sort -g | head -1; }
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }  # floating point without bc

throughput() { # SIZE COUNT
    local d=() g=()
    for _ in $(seq "$ROUNDS"); do d+=("$(run 20 "$2" "$1" "$SINK")"); g+=("$(run 20 "$2" "$1" "$GW")"); done
    local bd bg
    bd=$(printf '%s\n' "${d[@]}" | best); bg=$(printf '%s\n' "${g[@]}" | best)
    printf 'throughput %6s x20 sessions: direct %7.0f msgs/s, portcullis %7.0f msgs/s, ratio %.2f (target >= 0.45)\n' \
        "$(( $1 / 1024 ))KB" "$(calc "$2 / $bd")" "$(calc "$2 / $bg")" "$(calc "$bd / $bg")"
}

echo "portcullis bench: $(nproc) cores, best of $ROUNDS alternating runs"
throughput 5120 "$MSGS"
throughput 102400 $(( MSGS / 3 ))

# workers = 2 beside the single process: a second gateway on its own port, same backend.
GW2=$(port)
sed -e "s/127.0.0.1:$GW\"/127.0.0.1:$GW2\"/" -e 's/^workers = 1$/workers = 2/' "$TMP/bench.conf" > "$TMP/bench2.conf"
"$BIN" -c "$TMP/bench2.conf" > "$TMP/gw2.log" 2>&1 & GW2PID=$!; pids+=($GW2PID)
wait_port "$GW2"
sleep 0.5  # every worker up (the parent binds before it forks)
scaling() { # SIZE COUNT SESSIONS
    local d=() a=() b=() bd ba bb
    for _ in $(seq "$ROUNDS"); do
        d+=("$(run "$3" "$2" "$1" "$SINK")"); a+=("$(run "$3" "$2" "$1" "$GW")"); b+=("$(run "$3" "$2" "$1" "$GW2")")
    done
    bd=$(printf '%s\n' "${d[@]}" | best); ba=$(printf '%s\n' "${a[@]}" | best); bb=$(printf '%s\n' "${b[@]}" | best)
    printf 'workers %6s x%d sessions: direct %7.0f msgs/s, workers=1 %7.0f (ratio %.2f), workers=2 %7.0f (ratio %.2f); 2 vs 1: %.2fx (target >= 1.8 with the load generator elsewhere; here source, sink and gateway share %d cores)\n' \
        "$(( $1 / 1024 ))KB" "$3" "$(calc "$2 / $bd")" "$(calc "$2 / $ba")" "$(calc "$bd / $ba")" \
        "$(calc "$2 / $bb")" "$(calc "$bd / $bb")" "$(calc "$ba / $bb")" "$(nproc)"
}
scaling 5120 "$MSGS" 40
kill "$GW2PID"

N=1000
d=(); g=()
for _ in $(seq "$ROUNDS"); do d+=("$(run 1 $N 5120 "$SINK")"); g+=("$(run 1 $N 5120 "$GW")"); done
bd=$(printf '%s\n' "${d[@]}" | best); bg=$(printf '%s\n' "${g[@]}" | best)
printf 'latency one session, 5KB: direct %.3f ms/msg, portcullis %.3f ms/msg, added %.3f ms/msg, ratio %.2f (target < 1 ms added)\n' \
    "$(calc "$bd * 1000 / $N")" "$(calc "$bg * 1000 / $N")" "$(calc "($bg - $bd) * 1000 / $N")" "$(calc "$bg / $bd")"

# CPU seconds (user + system) a process has used so far: /proc/PID/stat fields 14 and 15.
TCK=$(getconf CLK_TCK)
cpu_of() { awk -v t="$TCK" '{ printf "%.6f", ($14 + $15) / t }' /proc/"$1"/stat; }
# cpu_run SESSIONS COUNT SIZE PORT -> smtp-source's own CPU seconds (its rusage, as a child)
cpu_run() { python3 -c 'import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print("%.6f" % (r.ru_utime + r.ru_stime))' smtp-source -s "$1" -m "$2" -l "$3" -f bench@example.org -t rcpt@example.com 127.0.0.1:"$4"; }

N=$MSGS
g0=$(cpu_of "$GWPID"); k0=$(cpu_of "$SINKPID")
src=$(cpu_run 20 "$N" 5120 "$GW")
g1=$(cpu_of "$GWPID"); k1=$(cpu_of "$SINKPID")
gw_us=$(calc "($g1 - $g0) * 1e6 / $N"); ss_us=$(calc "($src + $k1 - $k0) * 1e6 / $N")
printf 'cpu 5KB x20 sessions, relay: portcullis %.1f us/msg, smtp-source+smtp-sink %.1f us/msg, ratio %.2f (target <= 0.6)\n' \
    "$gw_us" "$ss_us" "$(calc "$gw_us / $ss_us")"

# System calls per message: strace counts every call of every thread of the gateway.
if command -v strace > /dev/null; then
    N=$(( MSGS / 3 ))
    strace -c -f -q -o "$TMP/strace.txt" -p "$GWPID" & ST=$!
    sleep 1
    run 20 "$N" 5120 "$GW" > /dev/null
    kill -INT "$ST"; wait "$ST" 2>/dev/null || true
    calls=$(awk '$NF == "total" { print $4 }' "$TMP/strace.txt")
    top=$(awk '$1 ~ /^[0-9.]+$/ && $NF != "total" && NF >= 5 { c = (NF == 6 ? $4 : $4); printf "%s %s\n", c, $NF }' \
          "$TMP/strace.txt" | sort -rn | head -5 | awk -v n="$N" '{ printf "%s %.1f, ", $2, $1 / n }')
    printf 'syscalls 5KB x20 sessions, relay: %.1f per message (target <= 40): %s\n' "$(calc "$calls / $N")" "${top%, }"
else
    echo "syscalls: strace not installed, skipped"
fi

python3 - "$GWPID" "$GW" <<'PY'
import resource, socket, sys, time
pid, port, n = int(sys.argv[1]), int(sys.argv[2]), 5000
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 200, n + 200))
def rss():
    return next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS"))
before, socks = rss(), []
for i in range(n):
    socks.append(socket.create_connection(("127.0.0.1", port)))
time.sleep(1.5)
greeted = 0
for s in socks:
    s.settimeout(2)
    try:
        greeted += s.recv(64).startswith(b"220")
    except OSError:
        pass
after = rss()
print(f"memory {n} idle connections ({greeted} greeted): RSS {before / 1024:.1f} MB -> {after / 1024:.1f} MB "
      f"({(after - before) * 1024 / n / 1024:.1f} KB each; target < 64 MB)")
for s in socks:
    s.close()
PY

[ "${BENCH_SUBS:-1}" = 0 ] && exit 0  # BENCH_SUBS=0: the main figures only
for sub in "$HERE"/*-bench.sh; do
    [ -x "$sub" ] && { echo "--- $(basename "$sub")"; "$sub" "$BIN" || echo "$(basename "$sub") failed"; }
done
exit 0
