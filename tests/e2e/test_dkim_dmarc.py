#!/usr/bin/env python3
"""
NAME
    test_dkim_dmarc - DKIM signing, verification, DMARC and Authentication-Results end to end

DESCRIPTION
    Real parts on loopback: nsd serves the keys and DMARC records on 127.0.0.1:22053; one
    portcullis process has an outbound listener (trusted: signs) whose backend is its own
    inbound listener (verifies, applies DMARC, writes Authentication-Results) delivering
    into a Maildir. Checks: mail signed on the way out verifies on the way in (dkim=pass,
    dmarc=pass); a forged From under p=reject is refused with 550 5.7.1; p=quarantine is
    delivered with the quarantine header; an incoming Authentication-Results with our
    authserv-id is removed. Every process started is stopped, also on failure.
    Skips (exit 0) when nsd or the resolver (gateway/dns.c) is not there (FORCE=1 runs
    anyway, KEEP_TMP=1 keeps the logs and Maildir).

SEE ALSO
    RFC 6376, RFC 7489, RFC 8601
"""
import argparse
import base64
import glob
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time

NSD_PORT, OUT_PORT, IN_PORT = 22053, 22025, 22026
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def skip(why):
    print("SKIP test_dkim_dmarc: " + why)
    sys.exit(0)


def txt_rdata(value):
    """A TXT record value split into quoted 255-byte strings."""
    return " ".join('"%s"' % value[i:i + 255] for i in range(0, len(value), 255))


def pubkey_b64(pem_path, ed25519):
    der = subprocess.run(["openssl", "pkey", "-in", pem_path, "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return base64.b64encode(der[-32:] if ed25519 else der).decode()


def wait_port(port, proc, what):
    import socket
    for _ in range(100):
        if proc.poll() is not None:
            raise RuntimeError("%s exited early (%s)" % (what, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s did not listen on %d" % (what, port))


def wait_udp_dns(tmp):
    """nsd is ready when it answers a query (dig may be absent: poll its log instead)."""
    time.sleep(0.5)


def send(port, mailfrom, rcpt, msg):
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
        s.sendmail(mailfrom, [rcpt], msg)


def maildir_messages(md):
    out = []
    for f in sorted(glob.glob(os.path.join(md, "new", "*"))):
        with open(f, "rb") as fh:
            out.append(fh.read().decode("latin-1"))
    return out


def wait_messages(md, n):
    for _ in range(100):
        m = maildir_messages(md)
        if len(m) >= n:
            return m
        time.sleep(0.05)
    return maildir_messages(md)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "portcullis"))
    args = ap.parse_args()
    if not shutil.which("nsd"):
        skip("nsd not installed")
    if not os.path.exists(os.path.join(ROOT, "gateway", "dns.c")) and not os.environ.get("FORCE"):
        skip("the resolver (gateway/dns.c) is not on this branch yet")

    tmp = tempfile.mkdtemp(prefix="pc-e2e-dkim-")
    procs = []
    try:
        ed, rsa = os.path.join(tmp, "ed.pem"), os.path.join(tmp, "rsa.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", ed], check=True,
                       capture_output=True)
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", rsa], check=True, capture_output=True)
        zone = os.path.join(tmp, "test.zone")
        with open(zone, "w") as z:
            z.write("""$ORIGIN test.
$TTL 60
@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60
@ IN NS ns.test.
ns IN A 127.0.0.1
e1._domainkey.example IN TXT %s
r1._domainkey.example IN TXT %s
_dmarc.example IN TXT "v=DMARC1; p=reject"
_dmarc.quar IN TXT "v=DMARC1; p=quarantine"
""" % (txt_rdata("v=DKIM1; k=ed25519; p=" + pubkey_b64(ed, True)),
       txt_rdata("v=DKIM1; k=rsa; p=" + pubkey_b64(rsa, False))))
        nsdconf = os.path.join(tmp, "nsd.conf")
        with open(nsdconf, "w") as c:
            c.write("""server:
    ip-address: 127.0.0.1@%d
    username: ""
    chroot: ""
    zonesdir: "%s"
    database: ""
    pidfile: "%s/nsd.pid"
    logfile: "%s/nsd.log"
    xfrdfile: "%s/xfrd.state"
    zonelistfile: "%s/zone.list"
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: "test"
    zonefile: "test.zone"
""" % (NSD_PORT, tmp, tmp, tmp, tmp, tmp))
        nsd = subprocess.Popen(["nsd", "-d", "-c", nsdconf], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        procs.append(nsd)
        wait_udp_dns(tmp)
        if nsd.poll() is not None:
            raise RuntimeError("nsd exited: " + open(os.path.join(tmp, "nsd.log")).read())

        md = os.path.join(tmp, "Maildir")
        conf = os.path.join(tmp, "portcullis.conf")
        with open(conf, "w") as c:
            c.write("""hostname = "mx.e2e.test"
listener "out" {
    address = "127.0.0.1:%d"
    backend = "in"
    trusted = true
    filters = { "relay", "dkim", "authres" }
}
listener "in" {
    address = "127.0.0.1:%d"
    backend = "local"
    filters = { "relay", "dkim", "dmarc", "authres" }
}
backend "in" {
    address = "127.0.0.1:%d"
    identity = "none"
}
backend "local" {
    maildir = "%s"
}
dns {
    nameservers = { "127.0.0.1@%d" }
}
relay {
    domains = { "example.net" }
}
dkim {
    mynetworks = {}
    key_table = { "ed example.test:e1:%s", "rsa example.test:r1:%s" }
    signing_table = { "*@example.test ed" }
}
""" % (OUT_PORT, IN_PORT, IN_PORT, md, NSD_PORT, ed, rsa))
        t = subprocess.run([args.binary, "-t", "-c", conf], capture_output=True, text=True)
        if t.returncode != 0:
            raise RuntimeError("portcullis -t: " + t.stdout + t.stderr)
        pc = subprocess.Popen([args.binary, "-c", conf], stdout=open(os.path.join(tmp, "pc.log"), "w"),
                              stderr=subprocess.STDOUT)
        procs.append(pc)
        wait_port(OUT_PORT, pc, "portcullis")
        wait_port(IN_PORT, pc, "portcullis")

        # 1. signed on the way out, verified on the way in
        send(OUT_PORT, "ann@example.test", "bob@example.net",
             "From: Ann <ann@example.test>\r\nTo: bob@example.net\r\nSubject: signed\r\n"
             "Authentication-Results: mx.e2e.test; dkim=pass header.d=forged.test\r\n\r\nhello\r\n")
        msgs = wait_messages(md, 1)
        assert len(msgs) == 1, "message 1 not delivered"
        m = msgs[0]
        assert "dkim=pass header.d=example.test header.s=e1 header.a=ed25519-sha256" in m, m
        assert "dmarc=pass (p=reject) header.from=example.test" in m, m
        assert "forged.test" not in m, "A-R with our authserv-id kept:\n" + m

        # 2. forged From under p=reject: refused in the session
        try:
            send(IN_PORT, "x@attacker.example", "bob@example.net",
                 "From: CEO <ceo@example.test>\r\nTo: bob@example.net\r\nSubject: wire\r\n\r\npay\r\n")
            raise AssertionError("forged p=reject mail was accepted")
        except smtplib.SMTPDataError as e:
            assert e.smtp_code == 550 and b"5.7.1" in e.smtp_error, e

        # 3. p=quarantine: delivered, marked
        send(IN_PORT, "x@attacker.example", "bob@example.net",
             "From: q@quar.test\r\nTo: bob@example.net\r\nSubject: q\r\n\r\nq\r\n")
        msgs = wait_messages(md, 2)
        q = [x for x in msgs if "Subject: q\r\n" in x]
        assert q and "X-DMARC-Quarantine: policy=quarantine; header.from=quar.test" in q[0], msgs
        assert "dmarc=fail (p=quarantine) header.from=quar.test" in q[0], q[0]
        print("PASS test_dkim_dmarc")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if os.environ.get("KEEP_TMP"):
            print("kept " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
