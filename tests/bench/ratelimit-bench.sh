#!/bin/bash
# SPDX-License-Identifier: MIT
# ratelimit-bench.sh - added latency per message of two rate limits (one counted at RCPT, one at
# the end of data), against a local redis-server and with the in-process store, compared with
# the same gateway without limits, in the same run.
#
#   tests/bench/ratelimit-bench.sh [build/portcullis]      N=2000 messages per variant (env)
#
# Backend: Postfix's smtp-sink (no disk). Client: one SMTP connection per variant sending N
# messages one after the other (python smtplib), timing each transaction. Variants run
# interleaved in rounds so that machine noise falls on all of them alike. Prints one summary
# line per variant and a last machine-readable line:
#   ratelimit-bench: n=... base_us=... memory_us=... redis_us=... redis_added_us=... redis_ratio=...
set -euo pipefail
export PORTCULLIS_WORKERS=${PORTCULLIS_WORKERS:-1}  # one process: the figures read one pid
bin=$(readlink -f "${1:-build/portcullis}")
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"  # port, wait_port, start_sink; the cleanup of $pids and $TMP
N=${N:-2000}
ROUNDS=${ROUNDS:-3}
bench_tmp rl-bench
dir=$TMP

rport=$(port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    >/dev/null 2>&1 &
pids+=($!)
sport=$(port)
start_sink "$sport" /dev/null
wait_port "$rport" 10
wait_port "$sport" 10

limits='limit "rcpts" { key = { "client_ip" } count = "recipients" rate = "1000000000/1h" }
    limit "msgs" { key = { "sender", "client_net" } count = "messages" rate = "1000000000/1h" }'
for v in base memory redis; do
    port=$(port)
    case $v in
        base) filters='"relay"'; rl='' ;;
        memory) filters='"relay", "ratelimit"'; rl="ratelimit { $limits }" ;;
        redis) filters='"relay", "ratelimit"'
               rl="ratelimit { store = \"redis://127.0.0.1:$rport/0\" $limits }" ;;
    esac
    cat >"$dir/$v.conf" <<EOF
hostname = "bench.test"
log = "stderr"
listener "in" { address = "127.0.0.1:$port" backend = "sink" filters = { $filters } }
backend "sink" { address = { "127.0.0.1:$sport" } identity = "none" }
relay { domains = { "example.com" } }
$rl
EOF
    "$bin" -c "$dir/$v.conf" >"$dir/$v.log" 2>&1 &
    pids+=($!)
    wait_port "$port" 10
    eval "port_$v=$port"
done

python3 - "$N" "$ROUNDS" "$port_base" "$port_memory" "$port_redis" <<'EOF'
import smtplib, statistics, sys, time
n, rounds = int(sys.argv[1]), int(sys.argv[2])
ports = dict(zip(("base", "memory", "redis"), map(int, sys.argv[3:6])))
msg = "Subject: bench\r\n\r\n" + "x" * 2000 + "\r\n"
times = {v: [] for v in ports}
for r in range(rounds):
    for v, port in ports.items():
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.ehlo("bench.client")
            for i in range(n // rounds + (50 if r == 0 else 0)):
                t = time.perf_counter()
                s.sendmail("bench%d@sender.example" % (i % 50), ["u@example.com"], msg)
                if r or i >= 50:  # the first 50 of the first round warm up
                    times[v].append((time.perf_counter() - t) * 1e6)
res = {}
for v, t in times.items():
    t.sort()
    res[v] = statistics.median(t)
    print("ratelimit-bench: %-6s n=%d median=%.0fus mean=%.0fus p99=%.0fus"
          % (v, len(t), res[v], statistics.mean(t), t[int(len(t) * 0.99) - 1]))
print("ratelimit-bench: n=%d base_us=%.0f memory_us=%.0f redis_us=%.0f memory_added_us=%.0f "
      "redis_added_us=%.0f redis_ratio=%.2f"
      % (len(times["base"]), res["base"], res["memory"], res["redis"],
         res["memory"] - res["base"], res["redis"] - res["base"], res["redis"] / res["base"]))
EOF
if grep -q "ratelimit: store error\|tempfail" "$dir/redis.log"; then
    echo "ratelimit-bench: the Redis variant had store errors or refusals; figures are void" >&2
    exit 1
fi
