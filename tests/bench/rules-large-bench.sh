#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# rules-large-bench.sh - the rules path with large messages, against direct, in the same run.
#
#   tests/bench/rules-large-bench.sh [build/portcullis] [older-portcullis]
#
#   throughput  smtp-source -> portcullis (relay + the shipped rules) -> smtp-sink, versus
#               smtp-source -> smtp-sink, 10 sessions, 5 KB, 100 KB, 1 MB and 10 MB messages;
#               with a second binary, both gateways run side by side and alternate with direct
#               in every round, so that their ratios come from the same run ("before/after").
#   memory      40 sessions each send a 1 MB message through the rules while the backend
#               delays its end-of-data reply by 3 s: RSS growth of the gateway per session
#               while they wait (issue 14: at most 0.5 MB held per session; MEM_SESSIONS=200
#               for more sessions, SIZES="" for this figure alone); once more without
#               the rules filter, so that the rules' own share shows.
#
# Best of ROUNDS (default 3) per figure, since these machines are noisy. Loopback only.
set -euo pipefail
export PORTCULLIS_WORKERS=${PORTCULLIS_WORKERS:-1}  # one process: the figures read one pid
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BINS=("$(readlink -f "${1:-build/portcullis}")")
[ $# -ge 2 ] && BINS+=("$(readlink -f "$2")")
ROUNDS=${ROUNDS:-3}
. "$HERE/lib.sh"  # port, wait_port, start_sink, calc, best, run, gw_conf; the cleanup of $pids and $TMP
bench_tmp rlbench

# gateway BIN GWPORT SINKPORT NAME -> starts it, prints its pid
gateway() {
    local rules="" f filters='"relay", "rules"'
    [ -z "${GW_FILTERS:-}" ] || filters=$GW_FILTERS
    for f in default gtube attachments auth spam-phrases; do rules+="\"$ROOT/rules/$f.rules\", "; done
    gw_conf "$2" "$3" "$filters" "    max_message_size = 20000000
    max_connections = 2000" "rules {
    files = { ${rules%, } }
}" > "$TMP/$4.conf"
    "$1" -c "$TMP/$4.conf" > "$TMP/$4.log" 2>&1 &
    echo $!
}

SINK=$(port)
start_sink "$SINK" "$TMP/sink.log"
GWS=(); GWPIDS=()
for i in "${!BINS[@]}"; do
    p=$(port); pid=$(gateway "${BINS[$i]}" "$p" "$SINK" "gw$i"); pids+=("$pid")
    GWS+=("$p"); GWPIDS+=("$pid")
done
wait_port "$SINK"; for p in "${GWS[@]}"; do wait_port "$p"; done

echo "rules-large-bench: $(nproc) cores, best of $ROUNDS alternating runs, relay + shipped rules"
for spec in ${SIZES-5120:2000 102400:600 1048576:100 10485760:12}; do  # SIZES="" : memory only
    size=${spec%:*}; count=${spec#*:}
    d=(); g0=(); g1=()
    for _ in $(seq "$ROUNDS"); do
        d+=("$(run 10 "$count" "$size" "$SINK")")
        g0+=("$(run 10 "$count" "$size" "${GWS[0]}")")
        [ ${#GWS[@]} -gt 1 ] && g1+=("$(run 10 "$count" "$size" "${GWS[1]}")")
    done
    bd=$(printf '%s\n' "${d[@]}" | best); b0=$(printf '%s\n' "${g0[@]}" | best)
    line=$(printf '%6s x10: direct %7.1f msgs/s, portcullis %7.1f (ratio %.2f)' \
           "$(( size / 1024 ))KB" "$(calc "$count / $bd")" "$(calc "$count / $b0")" "$(calc "$bd / $b0")")
    if [ ${#GWS[@]} -gt 1 ]; then
        b1=$(printf '%s\n' "${g1[@]}" | best)
        line+=$(printf ', older %7.1f (ratio %.2f), new/older %.2f' "$(calc "$count / $b1")" \
                "$(calc "$bd / $b1")" "$(calc "$b1 / $b0")")
    fi
    echo "throughput $line"
done

# Memory held while sessions wait for the backend's end-of-data reply.
SLOW=$(port)
start_sink "$SLOW" "$TMP/slow.log" -W .:3
wait_port "$SLOW"
# The last run is the new binary without the rules filter: what the rest of the gateway holds.
runs=("${!BINS[@]}" norules)
for i in "${runs[@]}"; do
    if [ "$i" = norules ]; then
        p=$(port); pid=$(GW_FILTERS='"relay"' gateway "${BINS[0]}" "$p" "$SLOW" memnorules)
    else
        p=$(port); pid=$(gateway "${BINS[$i]}" "$p" "$SLOW" "mem$i")
    fi
    pids+=("$pid"); wait_port "$p"
    python3 - "$pid" "$p" "$i" "${MEM_SESSIONS:-40}" <<'PY'
import socket, sys, threading, time
pid, port, which, n, size = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), 1 << 20
def rss():
    return next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS"))
line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
body = line * (size // len(line))
def one(i):
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    def cmd(c):
        if c:
            s.sendall(c)
        r = f.readline()
        while r[3:4] == b"-":
            r = f.readline()
        return r
    cmd(None); cmd(b"EHLO bench.test\r\n"); cmd(b"MAIL FROM:<a@example.org>\r\n")
    cmd(b"RCPT TO:<b@example.com>\r\n"); cmd(b"DATA\r\n")
    s.sendall(b"From: a@example.org\r\nSubject: big %d\r\n\r\n" % i + body + b".\r\n")
    done[i] = cmd(None)
    s.close()
before = rss()
done = {}
ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in ts:
    t.start()
time.sleep(2.2)  # every message is in, its verdict known; the backend holds the reply 3 s
held = rss()
for t in ts:
    t.join()
ok = sum(1 for r in done.values() if r.startswith(b"250"))
name = {"0": "new", "1": "older", "norules": "new, relay only (no rules)"}[which]
print(f"memory {name}: {n} x 1 MB, waiting for the backend "
      f"({ok} delivered): RSS {before / 1024:.1f} -> {held / 1024:.1f} MB, "
      f"{(held - before) / 1024 / n:.2f} MB held per session (target <= 0.5)")
PY
done
exit 0
