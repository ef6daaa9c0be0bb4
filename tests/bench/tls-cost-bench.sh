#!/bin/sh
# SPDX-License-Identifier: MIT
# tls-cost-bench.sh - system calls and instructions per TLS session and per TLS message.
#   tests/bench/tls-cost-bench.sh [build/portcullis [baseline-binary]]      (S, M, N from the env)
#
# Counts, not time, so that a noisy shared machine still gives repeatable before/after figures.
# The gateway (one worker) runs a listener with tls = "starttls" in front of smtp-sink; the client
# is Python's smtplib + ssl, one session at a time (no concurrency: every count is the gateway's
# own work, never a side effect of load). Printed for each binary:
#   strace -c -f -p GATEWAY while S sessions run (after one warm-up session):
#     plain/session     EHLO, one 5 KB message, QUIT, without TLS
#     tls/session       the same with STARTTLS (a full handshake: no resumption)
#     tls/message       ((S sessions of 1 + M messages) - (S sessions of 1 message)) / (S * M):
#                       one more message inside a TLS session (plain/message: the same without)
#   and the five most frequent calls of the tls/session row;
#   callgrind: instructions per STARTTLS session ((2 + N sessions) - (2 sessions)) / N, from two
#   runs of the gateway under valgrind (start-up and certificate loading cancel out);
#   CPU ms (user + system) of the gateway per STARTTLS session, C (300) sessions one at a time,
#   best of 3 with the binaries alternating (time, so noisier than the counts);
#   with root and Postfix: a plain session (one message) through the gateway to a real Postfix
#   (smtpd_tls_security_level = may, XCLIENT as README says), backend tls = "none" and
#   "encrypt" (a STARTTLS handshake to Postfix in every session): the gateway's system calls
#   per session of each (be-none/session, be-encrypt/session).
# With a baseline binary the same figures are printed for it, in the same run, with the ratios.
bin=$(readlink -f "${1:-build/portcullis}")
base=${2:+$(readlink -f "$2")}
root=$(cd "$(dirname "$0")/../.." && pwd)
if ! command -v smtp-sink > /dev/null || ! command -v strace > /dev/null; then
    echo "tls-cost-bench: needs smtp-sink and strace, skipped"; exit 0
fi
export PORTCULLIS_RUN_AS_ROOT=1 PORTCULLIS_WORKERS=1
exec python3 - "$root" "$bin" "$base" <<'PY'
import os, shutil, signal, smtplib, ssl, subprocess, sys, time

sys.path.insert(0, os.path.join(sys.argv[1], "tests", "e2e"))
import harness as h  # noqa: E402

BINS = [b for b in sys.argv[2:4] if b]
S = int(os.environ.get("S", "20"))
M = int(os.environ.get("M", "10"))
N = int(os.environ.get("N", "10"))
C = int(os.environ.get("C", "300"))
BODY = "Subject: bench\r\n\r\n" + ("x" * 76 + "\r\n") * 66  # about 5 KB
CTX = ssl.create_default_context()
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE


def session(port, starttls, msgs):
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.ehlo("bench.example")
        if starttls:
            s.starttls(context=CTX)
            s.ehlo("bench.example")
        for _ in range(msgs):
            s.sendmail("a@b.example", ["u@example.com"], BODY)


def conf(tmp, sink_port, tls):
    c = h.gateway_conf(h.backend_conf(sink_port, identity="none"))
    c = c.replace('  filters = { "relay" }\n',
                  f'  filters = {{ "relay" }}\n  tls = "starttls"\n'
                  f'  tls_certificate = {{ "{tls["cert"]}" }}\n'
                  f'  tls_key = {{ "{tls["key"]}" }}\n', 1)
    return c + 'log = "stderr"\n'


def strace_calls(pid, fn):
    """Calls of every kind while fn() runs: {name: count} and the total."""
    out = os.path.join(TMP, "strace.txt")
    st = subprocess.Popen(["strace", "-c", "-f", "-q", "-o", out, "-p", str(pid)])
    time.sleep(1.0)  # attached
    fn()
    time.sleep(0.3)  # the last session's teardown
    st.send_signal(signal.SIGINT)
    st.wait()
    calls, total = {}, 0
    for line in open(out):
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit():
            n = int(f[3])
            if f[-1] == "total":
                total = n
            else:
                calls[f[-1]] = n
    return calls, total


def syscalls(binary, sink_port, tls):
    os.environ["PORTCULLIS_BIN"] = binary
    h.BIN = binary
    with h.Gateway(TMP, conf(TMP, sink_port, tls)) as gw:
        session(gw.port, True, 1)  # warm-up
        runs = {}
        for name, starttls, msgs in (("plain", False, 1), ("plainM", False, 1 + M),
                                     ("tls", True, 1), ("tlsM", True, 1 + M)):
            runs[name] = strace_calls(gw.pid(), lambda: [session(gw.port, starttls, msgs)
                                                         for _ in range(S)])
    per = {"plain/session": runs["plain"][1] / S,
           "plain/message": (runs["plainM"][1] - runs["plain"][1]) / (S * M),
           "tls/session": runs["tls"][1] / S,
           "tls/message": (runs["tlsM"][1] - runs["tls"][1]) / (S * M)}
    top = sorted(runs["tls"][0].items(), key=lambda kv: -kv[1])[:6]
    return per, ", ".join(f"{k} {v / S:.1f}" for k, v in top)


def backend_syscalls(binary, pf):
    """System calls per plain session through the gateway to Postfix, backend TLS off and on."""
    h.BIN = binary
    per = {}
    for mode in ("none", "encrypt"):
        be = (f'backend "mta" {{\n  address = {{ "127.0.0.1:{pf.port}" }}\n'
              f'  identity = "xclient"\n  tls = "{mode}"\n}}\n')
        with h.Gateway(TMP, h.gateway_conf(be) + 'log = "stderr"\n') as gw:
            session(gw.port, False, 1)  # warm-up
            per[f"be-{mode}/session"] = strace_calls(gw.pid(), lambda: [
                session(gw.port, False, 1) for _ in range(S)])[1] / S
    return per


def cpu_ms(pid):
    """utime + stime of pid (the one worker process), ms."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def cpu_per_session(binary, sink_port, tls):
    """The gateway's CPU (user + system) per STARTTLS session, C sessions one at a time."""
    h.BIN = binary
    with h.Gateway(TMP, conf(TMP, sink_port, tls)) as gw:
        session(gw.port, True, 1)
        before = cpu_ms(gw.pid())
        for _ in range(C):
            session(gw.port, True, 1)
        return (cpu_ms(gw.pid()) - before) / C


def instructions(binary, sink_port, tls, sessions):
    path = os.path.join(TMP, f"cg.conf")
    port = h.free_port()
    with open(path, "w") as f:
        f.write(conf(TMP, sink_port, tls).replace("@PORT@", str(port)).replace("@TMP@", TMP))
    out = os.path.join(TMP, f"callgrind.{sessions}")
    p = subprocess.Popen(["valgrind", "-q", "--tool=callgrind", f"--callgrind-out-file={out}",
                          binary, "-c", path], cwd=TMP, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    h.wait_port(port, timeout=120)
    for _ in range(sessions):
        session(port, True, 1)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)
    for line in open(out):
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError("no callgrind summary")


TMP = h.tempdir()
os.chmod(TMP, 0o755)
tls = h.make_certs(os.path.join(TMP, "certs"), "gw.test")
sink_port = h.free_port()
sink = h.Proc(["smtp-sink", "-u", "nobody", f"127.0.0.1:{sink_port}", "100"],
              log=os.path.join(TMP, "sink.log"))
h.wait_port(sink_port)
pf = None
if os.geteuid() == 0 and shutil.which("postfix"):
    pf = h.Postfix(TMP, tls="may", main_extra="virtual_transport = discard:\n")
try:
    res = {}
    for b in BINS:
        per, top = syscalls(b, sink_port, tls)
        if pf:
            per.update(backend_syscalls(b, pf))
        cg = None
        if shutil.which("valgrind"):
            cg = (instructions(b, sink_port, tls, 2 + N) - instructions(b, sink_port, tls, 2)) / N
        res[b] = (per, cg)
        print(f"{b}:")
        print("  syscalls " + ", ".join(f"{k} {v:.1f}" for k, v in per.items()))
        print(f"  tls/session by call: {top}")
        if cg is not None:
            print(f"  callgrind {cg / 1e6:.2f} M instructions per STARTTLS session")
    # CPU time, user and system (the system calls' kernel work, which callgrind does not see):
    # best of 3, the binaries alternating. Time, so noisier than the counts above.
    cpu = {}
    for _ in range(3):
        for b in BINS:
            cpu[b] = min(cpu.get(b, 1e9), cpu_per_session(b, sink_port, tls))
    for b in BINS:
        print(f"{b}: {cpu[b]:.3f} CPU ms per STARTTLS session (user + system, best of 3 x {C})")
    if len(BINS) == 2:
        print(f"CPU per STARTTLS session, first / baseline: {cpu[BINS[0]] / cpu[BINS[1]]:.2f}")
        (a, ca), (b, cb) = res[BINS[0]], res[BINS[1]]
        print("ratios (first / baseline): " +
              ", ".join(f"{k} {a[k] / b[k]:.2f}" for k in a) +
              (f", callgrind/session {ca / cb:.3f}" if ca and cb else ""))
finally:
    sink.stop()
    if pf:
        pf.close()
    h.rmtree(TMP)
PY
