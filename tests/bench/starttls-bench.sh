#!/bin/sh
# SPDX-License-Identifier: MIT
# starttls-bench.sh - what STARTTLS from the client costs us, next to what it costs Postfix.
#   tests/bench/starttls-bench.sh [build/portcullis]      (ROUNDS, SESSIONS, CONC from the env)
#
# Load: Python's smtplib (smtp-source has no STARTTLS), SESSIONS sessions of one 5 KB message
# each, CONC (20) at a time, every session a new connection and, with STARTTLS, a new TLS session
# (no resumption). The same client code in every row, alternating, best of ROUNDS:
#   gw-plain    client -> portcullis (listener tls = "starttls", one worker) -> smtp-sink
#   gw-tls      client -STARTTLS-> portcullis -> smtp-sink
#   pf-plain    client -> Postfix smtpd (smtpd_tls_security_level = may; delivers to discard:)
#   pf-tls      client -STARTTLS-> Postfix smtpd
# Both servers use the same certificate (made with openssl at run time). Printed: msgs/s of each,
# the two TLS/plain ratios, and "us relative to Postfix" = our ratio / Postfix's ratio (target:
# >= 1.0, TLS costs us no more, relatively, than it costs Postfix); and portcullis's CPU ms per
# session (utime+stime from /proc/PID/stat) plain and TLS, and the wall time TLS adds per message
# for each (the ratio alone punishes a fast plaintext path), since a Python client may be the
# bottleneck: a run whose client used >= 90% of a CPU is marked "client-bound".
# Needs root (a private Postfix instance, as tests/e2e/harness.py runs it).
bin=$(readlink -f "${1:-build/portcullis}")
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ "$(id -u)" -ne 0 ] || ! command -v postfix > /dev/null || ! command -v smtp-sink > /dev/null; then
    echo "starttls-bench: needs root, postfix and smtp-sink, skipped"; exit 0
fi
export PORTCULLIS_RUN_AS_ROOT=1 PORTCULLIS_BIN="$bin"
export PORTCULLIS_WORKERS="${PORTCULLIS_WORKERS:-1}"  # one process, as bench.sh (CPU: pid + workers)
exec python3 - "$root" <<'PY'
import os, resource, smtplib, ssl, sys, threading, time

sys.path.insert(0, os.path.join(sys.argv[1], "tests", "e2e"))
import harness as h  # noqa: E402

SESSIONS = int(os.environ.get("SESSIONS", "200"))
CONC = int(os.environ.get("CONC", "20"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
BODY = "Subject: bench\r\n\r\n" + ("x" * 76 + "\r\n") * 66  # about 5 KB
HZ = os.sysconf("SC_CLK_TCK")
# One client context for all sessions (a context per session would add a CA load to the client's
# cost); smtplib never passes a saved session, so every connection still makes a full handshake.
CTX = ssl.create_default_context()
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE


def cpu_ms(pid):
    """utime + stime of pid and its live children (the workers, with PORTCULLIS_WORKERS > 1), in
    ms: fields 14 and 15 of /proc/PID/stat, counted after the comm."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        kids = [int(k) for k in f.read().split()]
    return (int(fields[11]) + int(fields[12])) * 1000 / HZ + sum(cpu_ms(k) for k in kids)


def self_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def session(port, starttls):
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.ehlo("bench.example")
        if starttls:
            s.starttls(context=CTX)
            s.ehlo("bench.example")
        s.sendmail("a@b.example", ["u@example.com"], BODY)


def run(port, starttls):
    """SESSIONS sessions, CONC at a time: (msgs/s, client CPU share of one core)."""
    left = [SESSIONS]
    lock = threading.Lock()
    errors = []

    def worker():
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            try:
                session(port, starttls)
            except Exception as e:  # noqa: BLE001 - counted, reported
                errors.append(repr(e))

    c0, t0 = self_cpu(), time.time()
    ts = [threading.Thread(target=worker) for _ in range(CONC)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.time() - t0
    if errors:
        print(f"  {len(errors)} errors, first: {errors[0]}")
    return (SESSIONS - len(errors)) / dt, (self_cpu() - c0) / dt


def gateway_conf(sink_port, tls):
    conf = h.gateway_conf(h.backend_conf(sink_port))
    return conf.replace('  filters = { "relay" }\n',
                        f'  filters = {{ "relay" }}\n  tls = "starttls"\n'
                        f'  tls_certificate = {{ "{tls["cert"]}" }}\n'
                        f'  tls_key = {{ "{tls["key"]}" }}\n', 1)


def measure(best, name, port, starttls, pid=None):
    before = cpu_ms(pid) if pid else 0
    rate, client = run(port, starttls)
    if rate > best.get(name, (0,))[0]:
        per = (cpu_ms(pid) - before) / SESSIONS if pid else None
        best[name] = (rate, client, per)


def report(best):
    for k in ("gw-plain", "gw-tls", "pf-plain", "pf-tls"):
        rate, client, per = best[k]
        cpu = f"  portcullis {per:5.2f} CPU ms/session" if per is not None else ""
        bound = "  client-bound" if client >= 0.9 else ""
        print(f"{k:9s} {rate:7.1f} msgs/s  (client {client * 100:3.0f}% CPU){cpu}{bound}")
    ours = best["gw-tls"][0] / best["gw-plain"][0]
    theirs = best["pf-tls"][0] / best["pf-plain"][0]
    print(f"TLS/plain: portcullis {ours:.2f}, Postfix {theirs:.2f}")
    print(f"us relative to Postfix = {ours / theirs:.2f} (target >= 1.00)")
    # The ratio punishes a fast plaintext path: also the time TLS adds per message (at CONC).
    added = {k: 1000 / best[k + "-tls"][0] - 1000 / best[k + "-plain"][0] for k in ("gw", "pf")}
    print(f"TLS adds per message (1/rate): portcullis {added['gw']:.2f} ms, Postfix {added['pf']:.2f} ms")
    print(f"portcullis CPU per TLS session {best['gw-tls'][2]:.2f} ms vs plain "
          f"{best['gw-plain'][2]:.2f} ms (+{best['gw-tls'][2] - best['gw-plain'][2]:.2f} ms)")
    if any(v[1] >= 0.9 for v in best.values()):
        print("note: the Python client saturated a CPU in some rows; msgs/s there measure the "
              "client, the CPU ms/session column measures portcullis")


def main():
    tmp = h.tempdir()
    pf = h.Postfix(tmp, tls="may", main_extra="virtual_transport = discard:\n")
    # smtp-sink without -d: it keeps nothing, so the gateway rows pay no disk writes either
    # (Postfix queues each message, as it must; that stays in its figures).
    sink_port = h.free_port()
    sink = h.Proc(["smtp-sink", "-u", "nobody", f"127.0.0.1:{sink_port}", "100"],
                  log=os.path.join(tmp, "sink.log"))
    h.wait_port(sink_port)
    try:
        best = {}
        with h.Gateway(tmp, gateway_conf(sink_port, pf.tls)) as gw:
            for _ in range(ROUNDS):
                measure(best, "gw-plain", gw.port, False, gw.pid())
                measure(best, "pf-plain", pf.port, False)
                measure(best, "gw-tls", gw.port, True, gw.pid())
                measure(best, "pf-tls", pf.port, True)
        report(best)
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    finally:
        sink.stop()
        pf.close()
        h.rmtree(tmp)


main()
PY
