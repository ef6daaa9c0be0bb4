#!/bin/sh
# SPDX-License-Identifier: MIT
# tls-backend-bench.sh - what STARTTLS to the backend costs (backend "x" { tls = "encrypt" }).
#   tests/bench/tls-backend-bench.sh [build/portcullis]
#
# One real Postfix (smtpd_tls_security_level = may, a certificate made with openssl, XCLIENT from
# 127.0.0.1 as README says), and SESSIONS sessions of one 5 KB message each, CONC at a time, from
# Python's smtplib (the same client code in every row; a new TLS session per connection):
#   direct-plain   client -> Postfix
#   direct-tls     client -STARTTLS-> Postfix
#   gw-none        client -> portcullis (relay) -> Postfix            (backend tls = "none")
#   gw-encrypt     client -> portcullis (relay) -STARTTLS-> Postfix    (backend tls = "encrypt")
# msgs/s of each (best of ROUNDS), and the ratios gw-encrypt / direct-tls (what the proxy costs
# when the hop behind it is encrypted) and gw-encrypt / gw-none (what backend TLS costs us).
# Needs root (a private Postfix instance, as tests/e2e/harness.py runs it).
bin=$(readlink -f "${1:-build/portcullis}")
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ "$(id -u)" -ne 0 ] || ! command -v postfix > /dev/null; then
    echo "tls-backend-bench: needs root and postfix, skipped"; exit 0
fi
export PORTCULLIS_RUN_AS_ROOT=1 PORTCULLIS_BIN="$bin"
exec python3 - "$root" <<'PY'
import os, smtplib, sys, threading, time

sys.path.insert(0, os.path.join(sys.argv[1], "tests", "e2e"))
import harness as h  # noqa: E402

SESSIONS = int(os.environ.get("SESSIONS", "200"))
CONC = int(os.environ.get("CONC", "20"))
ROUNDS = int(os.environ.get("ROUNDS", "2"))
BODY = "Subject: bench\r\n\r\n" + ("x" * 76 + "\r\n") * 66  # about 5 KB


def run(port, starttls):
    """SESSIONS sessions, CONC at a time; msgs/s."""
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
                with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
                    s.ehlo("bench.example")
                    if starttls:
                        s.starttls()
                        s.ehlo("bench.example")
                    s.sendmail("a@b.example", ["u@example.com"], BODY)
            except Exception as e:  # noqa: BLE001 - counted, reported
                errors.append(repr(e))

    t0 = time.time()
    ts = [threading.Thread(target=worker) for _ in range(CONC)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.time() - t0
    if errors:
        print(f"  {len(errors)} errors, first: {errors[0]}")
    return (SESSIONS - len(errors)) / dt


def backend(port, tls):
    return (f'backend "mta" {{\n  address = {{ "127.0.0.1:{port}" }}\n  identity = "xclient"\n'
            f'  tls = "{tls}"\n}}\n')


tmp = h.tempdir()
pf = h.Postfix(tmp, tls="may")
try:
    best = {}
    for _ in range(ROUNDS):
        for name, tls in (("gw-none", "none"), ("gw-encrypt", "encrypt")):
            with h.Gateway(tmp, h.gateway_conf(backend(pf.port, tls))) as gw:
                best[name] = max(best.get(name, 0), run(gw.port, False))
        best["direct-plain"] = max(best.get("direct-plain", 0), run(pf.port, False))
        best["direct-tls"] = max(best.get("direct-tls", 0), run(pf.port, True))
    for k in ("direct-plain", "direct-tls", "gw-none", "gw-encrypt"):
        print(f"{k:14s} {best[k]:7.1f} msgs/s")
    print(f"gw-encrypt / direct-tls = {best['gw-encrypt'] / best['direct-tls']:.2f}")
    print(f"gw-encrypt / gw-none    = {best['gw-encrypt'] / best['gw-none']:.2f}")
finally:
    pf.close()
    h.rmtree(tmp)
PY
