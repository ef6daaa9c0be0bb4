#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench.sh - portcullis against a direct baseline, side by side in the same run.
#
#   throughput  smtp-source -> portcullis -> smtp-sink  vs  smtp-source -> smtp-sink,
#               20 sessions, 5 KB and 100 KB messages: msgs/s of both and their ratio
#   latency     one sequential session: added milliseconds per message
#   memory      RSS of portcullis holding 5,000 idle connections, and once they have closed
#   cpu         CPU time per message of portcullis (on-CPU nanoseconds of all its threads,
#               /proc/PID/task/*/schedstat) against smtp-source (its rusage) and smtp-sink's
#               together in the same run, 5 KB, relay filter; ROUNDS runs, their median ratio
#   syscalls    system calls per message of portcullis (strace -c -f on it during a run)
#   workers     workers = 1 against workers = 2. Unpinned, as before (source, sink and gateway
#               share the cores, so it cannot show the target). Pinned, with >= 4 CPUs: the
#               gateway on CPU 0, then on CPUs 0-1 (taskset, which its workers inherit), the
#               load generators (smtp-source, smtp-sink) on the others: msgs/s of both, their
#               ratio, and how busy the gateway's and the load's CPUs were (a load side near
#               100% makes the ratio a lower bound). Fewer CPUs: the line says why and how.
#               BENCH_PIN=1 forces the pinned run anyway (GW1_CPUS, GW2_CPUS, LOAD_CPUS
#               choose the sets), BENCH_PIN=0 skips it.
#
# Each throughput figure is the best of ROUNDS alternating runs, because these machines are noisy.
# Only loopback is used. Sub-benchmarks of other parts (tests/bench/*-bench.sh) run afterwards
# (BENCH_SUBS=0: not), their output kept; proxy-bench.sh at 5 KB, 100 KB, 1 MB and 10 MB (the
# sizes of issue 14's target; PROXY_SIZES=bytes,... for others). The last lines are one table of
# issue 14's targets (figure, measured, target, met?) gathered from every line above.
set -euo pipefail
export PORTCULLIS_WORKERS=${PORTCULLIS_WORKERS:-1}  # one process: the figures read one pid
BIN=$(readlink -f "${1:-build/portcullis}")
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"  # port, wait_port, start_sink, calc, best, gw_conf; the cleanup of $pids and $TMP
ROUNDS=${ROUNDS:-3}
MSGS=${MSGS:-3000}
bench_tmp bench
OUT="$TMP/figures.txt"  # every figure line, for the summary table at the end
: > "$OUT"
say() { printf "$@" | tee -a "$OUT"; }

SINK=$(port); GW=$(port)
start_sink "$SINK" "$TMP/sink.log"; SINKPID=$SINK_PID
gw_conf "$GW" "$SINK" '"relay"' "    max_connections = 20000" "workers = 1" > "$TMP/bench.conf"
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
"$BIN" -c "$TMP/bench.conf" > "$TMP/gw.log" 2>&1 & GWPID=$!; pids+=($GWPID)
wait_port "$SINK"; wait_port "$GW"

# On-CPU seconds of a process, all its threads (nanoseconds, /proc/PID/task/*/schedstat field 1):
# finer than the clock ticks of /proc/PID/stat.
cpu_of() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ t += $1 } END { printf "%.6f", t / 1e9 }'; }
# cpu_run SESSIONS COUNT SIZE PORT [taskset CPUS] -> smtp-source's own CPU seconds (its rusage)
cpu_run() { python3 -c 'import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print("%.6f" % (r.ru_utime + r.ru_stime))' ${5:+taskset -c "$5"} smtp-source -s "$1" -m "$2" -l "$3" -f bench@example.org -t rcpt@example.com 127.0.0.1:"$4"; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

throughput() { # SIZE COUNT
    local d=() g=()
    for _ in $(seq "$ROUNDS"); do d+=("$(run 20 "$2" "$1" "$SINK")"); g+=("$(run 20 "$2" "$1" "$GW")"); done
    local bd bg
    bd=$(printf '%s\n' "${d[@]}" | best); bg=$(printf '%s\n' "${g[@]}" | best)
    say 'throughput %6s x20 sessions: direct %7.0f msgs/s, portcullis %7.0f msgs/s, ratio %.2f (target >= 0.45)\n' \
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
    say 'workers unpinned %6s x%d sessions: direct %7.0f msgs/s, workers=1 %7.0f (ratio %.2f), workers=2 %7.0f (ratio %.2f); 2 vs 1: %.2fx (not the target figure: source, sink and gateway share %d cores)\n' \
        "$(( $1 / 1024 ))KB" "$3" "$(calc "$2 / $bd")" "$(calc "$2 / $ba")" "$(calc "$bd / $ba")" \
        "$(calc "$2 / $bb")" "$(calc "$bd / $bb")" "$(calc "$ba / $bb")" "$(nproc)"
}
scaling 5120 "$MSGS" 40
kill "$GW2PID"

# Workers pinned: the gateway alone on 1 then 2 CPUs, the load generators on the others.
NCPU=$(nproc)
WHY_NOT="workers = 1 -> 2 needs CPUs of its own for the gateway (1, then 2) and for the load generators, which spend about twice the gateway's CPU per message (see cpu): at least 4 CPUs, 6 for the load side to keep up with 2 workers"
HOW="on such a machine this script pins the gateway with taskset -c 0, then 0,1 (its workers inherit it) and smtp-source and smtp-sink to CPUs 2 and up"
EXPECT="design expectation: workers share nothing on the message path (each has its own loop, SO_REUSEPORT listener, backend connections, metrics and limits; no lock is shared), so throughput grows with the CPUs given to the gateway until the load generator, the backend or the network binds: >= 1.8x from 1 to 2 workers, and close to 16x with 16 cores"
pinned() { # SIZE COUNT SESSIONS
    local gw1=${GW1_CPUS:-0} gw2=${GW2_CPUS:-0,1} load=${LOAD_CPUS:-2-$((NCPU - 1))}
    local size=$1 count=$2 sessions=$3
    local psink pa pb a=() b=() ba bb
    psink=$(port); pa=$(port); pb=$(port)
    taskset -c "$load" smtp-sink "${sinkuser[@]}" -c 127.0.0.1:"$psink" 1000 > "$TMP/psink.log" 2>&1 & local pspid=$!; pids+=($pspid)
    sed -e "s/127.0.0.1:$GW\"/127.0.0.1:$pa\"/" -e "s/127.0.0.1:$SINK\"/127.0.0.1:$psink\"/" "$TMP/bench.conf" > "$TMP/pin1.conf"
    sed -e "s/127.0.0.1:$GW\"/127.0.0.1:$pb\"/" -e "s/127.0.0.1:$SINK\"/127.0.0.1:$psink\"/" -e 's/^workers = 1$/workers = 2/' \
        "$TMP/bench.conf" > "$TMP/pin2.conf"
    taskset -c "$gw1" "$BIN" -c "$TMP/pin1.conf" > "$TMP/pin1.log" 2>&1 & local p1=$!; pids+=($p1)
    taskset -c "$gw2" "$BIN" -c "$TMP/pin2.conf" > "$TMP/pin2.log" 2>&1 & local p2=$!; pids+=($p2)
    wait_port "$psink"; wait_port "$pa"; wait_port "$pb"; sleep 0.5
    # busy PID... -> on-CPU seconds of these processes and all their children's threads
    busy() { local t=0 p c; for p in "$@"; do t=$(calc "$t + $(cpu_of "$p")");
             for c in $(pgrep -P "$p"); do t=$(calc "$t + $(cpu_of "$c")"); done; done; echo "$t"; }
    # one PORT GWPID SESSIONS COUNT -> "seconds gateway-cpu load-cpu" of one run
    one() { local t0 t1 g0 g1 k0 k1 src
            g0=$(busy "$2"); k0=$(busy "$pspid"); t0=$(date +%s.%N)
            src=$(cpu_run "$3" "$4" "$size" "$1" "$load")
            t1=$(date +%s.%N); g1=$(busy "$2"); k1=$(busy "$pspid")
            echo "$(calc "$t1 - $t0") $(calc "$g1 - $g0") $(calc "$src + $k1 - $k0")"; }
    for _ in $(seq "$ROUNDS"); do  # alternating; the best run of each
        a+=("$(one "$pa" "$p1" "$sessions" "$count")"); b+=("$(one "$pb" "$p2" "$sessions" "$count")")
    done
    ba=$(printf '%s\n' "${a[@]}" | sort -g | head -1); bb=$(printf '%s\n' "${b[@]}" | sort -g | head -1)
    local nl ta ga la tb gb lb
    nl=$(taskset -c "$load" nproc)
    read -r ta ga la <<< "$ba"; read -r tb gb lb <<< "$bb"
    say 'workers pinned %dKB x%d sessions: workers=1 on CPU %s %7.0f msgs/s (gateway CPU busy %.0f%%), workers=2 on CPUs %s %7.0f msgs/s (busy %.0f%%); load on CPUs %s busy %.0f%% / %.0f%%; 2 vs 1: %.2fx (target >= 1.8%s)\n' \
        $(( size / 1024 )) "$sessions" "$gw1" "$(calc "$count / $ta")" "$(calc "$ga * 100 / $ta / $(taskset -c "$gw1" nproc)")" "$gw2" "$(calc "$count / $tb")" \
        "$(calc "$gb * 100 / $tb / $(taskset -c "$gw2" nproc)")" "$load" "$(calc "$la * 100 / $ta / $nl")" "$(calc "$lb * 100 / $tb / $nl")" \
        "$(calc "$ta / $tb")" "${FORCED:-}"
    kill "$p1" "$p2" "$pspid"
}
if [ "${BENCH_PIN:-}" != 0 ] && { [ "$NCPU" -ge 4 ] || [ "${BENCH_PIN:-}" = 1 ]; } && command -v taskset > /dev/null; then
    [ "$NCPU" -lt 4 ] && { FORCED="; forced on $NCPU CPUs, which overlap: not a valid figure"
                           : "${LOAD_CPUS:=$((NCPU - 1))}"; }
    pinned 5120 "$MSGS" 40
else
    say 'workers pinned: not measurable here (%d CPUs): %s; %s; %s\n' "$NCPU" "$WHY_NOT" "$HOW" "$EXPECT"
fi

N=1000
d=(); g=()
for _ in $(seq "$ROUNDS"); do d+=("$(run 1 $N 5120 "$SINK")"); g+=("$(run 1 $N 5120 "$GW")"); done
bd=$(printf '%s\n' "${d[@]}" | best); bg=$(printf '%s\n' "${g[@]}" | best)
say 'latency one session, 5KB: direct %.3f ms/msg, portcullis %.3f ms/msg, added %.3f ms/msg, ratio %.2f (target < 1 ms added)\n' \
    "$(calc "$bd * 1000 / $N")" "$(calc "$bg * 1000 / $N")" "$(calc "($bg - $bd) * 1000 / $N")" "$(calc "$bg / $bd")"


N=$MSGS
ratios=(); gws=(); sss=()
for _ in $(seq "$ROUNDS"); do
    g0=$(cpu_of "$GWPID"); k0=$(cpu_of "$SINKPID")
    src=$(cpu_run 20 "$N" 5120 "$GW")
    g1=$(cpu_of "$GWPID"); k1=$(cpu_of "$SINKPID")
    gws+=("$(calc "($g1 - $g0) * 1e6 / $N")"); sss+=("$(calc "($src + $k1 - $k0) * 1e6 / $N")")
    ratios+=("$(calc "${gws[-1]} / ${sss[-1]}")")
done
lo=$(printf '%s\n' "${ratios[@]}" | sort -g | head -1); hi=$(printf '%s\n' "${ratios[@]}" | sort -g | tail -1)
say 'cpu 5KB x20 sessions, relay: portcullis %.1f us/msg, smtp-source+smtp-sink %.1f us/msg, ratio %.2f (median of %d runs, %.2f-%.2f; target <= 0.6)\n' \
    "$(printf '%s\n' "${gws[@]}" | median)" "$(printf '%s\n' "${sss[@]}" | median)" \
    "$(printf '%s\n' "${ratios[@]}" | median)" "$ROUNDS" "$lo" "$hi"

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
    say 'syscalls 5KB x20 sessions, relay: %.1f per message (target <= 40): %s\n' "$(calc "$calls / $N")" "${top%, }"
else
    say 'syscalls: strace not installed, skipped\n'
fi

python3 - "$GWPID" "$GW" <<'PY' | tee -a "$OUT"
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
time.sleep(6)  # the loop gives freed heap back every 5 s (server.c on_trim)
print(f"memory after closing them: RSS {rss() / 1024:.1f} MB ({(rss() - before) / 1024:.1f} MB above idle)")
PY

if [ "${BENCH_SUBS:-1}" != 0 ]; then  # BENCH_SUBS=0: the main figures only
    for sub in "$HERE"/*-bench.sh; do
        [ -x "$sub" ] || continue
        echo "--- $(basename "$sub")"
        # proxy-bench: every size of issue 14's target, 5 KB to 10 MB (PROXY_SIZES to change)
        pre=(); [ "$(basename "$sub")" != proxy-bench.sh ] || pre=(env SIZES="${PROXY_SIZES:-5120,102400,1048576,10485760}")
        { "${pre[@]}" "$sub" "$BIN" || echo "$(basename "$sub") failed"; } 2>&1 | tee "$TMP/sub-$(basename "$sub" .sh).txt"
    done
fi

# The targets of issue 14, each with the figure above that measures it.
echo "--- issue 14 targets (ratios from this run)"
python3 - "$TMP" "${BENCH_SUBS:-1}" <<'PY'
import glob, os, re, sys
tmp, subs = sys.argv[1], sys.argv[2] != "0"
main = open(os.path.join(tmp, "figures.txt")).read()
sub = {os.path.basename(f)[4:-4]: open(f).read() for f in glob.glob(os.path.join(tmp, "sub-*.txt"))}
rows = []
def row(figure, measured, target, met):
    rows.append((figure, measured, target, met))
def le(v, t):
    return "yes" if v <= t else "NO"
def ge(v, t):
    return "yes" if v >= t else "NO"
m = re.search(r"^cpu .* ratio ([0-9.]+) \(median of (\d+) runs, ([0-9.]+)-([0-9.]+)", main, re.M)
row("CPU/msg 5KB relay vs source+sink", f"{float(m[1]):.2f} (runs {m[3]}-{m[4]})" if m else "not measured",
    "<= 0.6", le(float(m[1]), 0.6) if m else "-")
m = re.search(r"^syscalls .*: ([0-9.]+) per message", main, re.M)
row("syscalls per message 5KB relay", f"{float(m[1]):.1f}" if m else "not measured (strace)",
    "<= 40", le(float(m[1]), 40) if m else "-")
pb = sub.get("proxy-bench", "")
sizes = re.findall(r"^\s*(\d+[KM]B): postfix proxy .*relay\+rules\s+\d+ \(([0-9.]+)x", pb, re.M)
for size, x in sizes:
    row(f"rules vs Postfix proxy {size}", f"{float(x):.2f}x", ">= 1.2x", ge(float(x), 1.2))
if not sizes:
    for size in ("5KB", "100KB", "1MB"):
        row(f"rules vs Postfix proxy {size}", "not run" if not subs else "not measured (postfix?)",
            ">= 1.2x", "-")
if not any(s == "10MB" for s, _ in sizes):
    row("rules vs Postfix proxy 10MB", "not in proxy-bench" if pb else "not run", ">= 1.2x", "-")
m = re.search(r"^memory 200 sessions .*?([0-9.]+) MB per session", pb, re.M)
row("RSS/session, 200 x 1MB through rules", f"{float(m[1]):.2f} MB" if m else "not run",
    "<= 0.5 MB", le(float(m[1]), 0.5) if m else "-")
m = re.search(r"^memory new: (\d+) x 1 MB.*?([0-9.]+) MB held per session", sub.get("rules-large-bench", ""), re.M)
row(f"RSS/session held, {m[1] if m else 'N'} x 1MB waiting", f"{float(m[2]):.2f} MB" if m else "not run",
    "<= 0.5 MB", le(float(m[2]), 0.5) if m else "-")
m = re.search(r"^workers pinned .*2 vs 1: ([0-9.]+)x \(target >= 1.8(;[^)]*)?\)", main, re.M)
if m:
    row("workers 2 vs 1, pinned", f"{float(m[1]):.2f}x", ">= 1.8x",
        "invalid (forced)" if m[2] else ge(float(m[1]), 1.8))
else:
    n = re.search(r"^workers pinned: not measurable here \((\d+) CPUs\)", main, re.M)
    row("workers 2 vs 1, pinned", f"not measurable ({n[1]} CPUs)" if n else "not run", ">= 1.8x", "-")
w = max(len(r[0]) for r in rows)
c = max(len(r[1]) for r in rows)
print(f"{'figure':<{w}}  {'measured':<{c}}  {'target':<9}  met?")
for f, v, t, ok in rows:
    print(f"{f:<{w}}  {v:<{c}}  {t:<9}  {ok}")
PY
exit 0
