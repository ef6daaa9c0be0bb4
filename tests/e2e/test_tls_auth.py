#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_tls_auth.py - inbound TLS and authenticated submission against real clients.

The gateway listens as README's three listeners do: STARTTLS (with require_tls, AUTH and
require_auth, a sender login map: the submission port), implicit TLS (port 465) with AUTH, and a
plain one that offers STARTTLS only. Clients are real: swaks (--tls, --tlsc, --auth PLAIN and
LOGIN), openssl s_client -starttls smtp, Python's ssl; the backend is smtp-sink (what it stores
shows our Received header) or a real Postfix (XCLIENT LOGIN=). Certificates and the password
file are made at test time with openssl; nothing secret is committed.

The STARTTLS injection probes come from ../shared/testdata/starttls: plaintext pipelined behind
STARTTLS must never be answered inside TLS (CVE-2011-0411).
"""
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

PASSWORD = "s3cret pass"
PROBES = os.path.join(h.SHARED, "testdata", "starttls", "starttls_injection_probes.json")


def make_cert(tmp, name, cn):
    """A self-signed certificate and key for cn, made now (never committed)."""
    cert, key = os.path.join(tmp, f"{name}.pem"), os.path.join(tmp, f"{name}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", f"/CN={cn}", "-addext",
                    f"subjectAltName=DNS:{cn}"], check=True, capture_output=True)
    return cert, key


def make_passwd(tmp, users):
    """A password file of sha512-crypt hashes (openssl passwd -6)."""
    path = os.path.join(tmp, "passwd")
    with open(path, "w") as f:
        for user, pw in users.items():
            hsh = subprocess.run(["openssl", "passwd", "-6", pw], check=True, capture_output=True,
                                 text=True).stdout.strip()
            f.write(f"{user}:{hsh}\n")
    return path


def no_verify():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Client(h.Chat):
    """A raw SMTP client that can turn on TLS (Chat cannot). A timeout or a TLS error reads as
    the end of the connection: reply() gives (0, ...)."""

    def __init__(self, port, implicit=False, ctx=None, sni="gw.test"):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        if implicit:
            self.tls(ctx, sni)

    @classmethod
    def after_starttls(cls, port):
        """A client that has said EHLO x, STARTTLS, and EHLO x again inside TLS (replies not
        checked: the test's own commands show what went wrong)."""
        c = cls(port)
        c.reply()
        c.cmd("EHLO x")
        c.cmd("STARTTLS")
        c.tls()
        c.cmd("EHLO x")
        return c

    def tls(self, ctx=None, sni="gw.test"):
        self.s = (ctx or no_verify()).wrap_socket(self.s, server_hostname=sni)
        self.buf = b""
        return self.s

    def _recv(self):
        try:
            return self.s.recv(65536)
        except (socket.timeout, ConnectionResetError, ssl.SSLError):
            return b""


def swaks(port, *args, timeout=30):
    r = subprocess.run(["swaks", "-s", "127.0.0.1", "-p", str(port), "--timeout", "15", *args],
                       capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


def plain_b64(user, pw):
    import base64
    return base64.b64encode(f"\0{user}\0{pw}".encode()).decode()


class Base(unittest.TestCase):
    MAX_FAILURES = 3
    BACKEND = "sink"

    def setUp(self):
        self.tmp = h.tempdir()
        self.cert, self.key = make_cert(self.tmp, "gw", "gw.test")
        self.other, _ = make_cert(self.tmp, "other", "other.test")
        self.passwd = make_passwd(self.tmp, {"alice": PASSWORD, "bob": "bobpw"})
        with open(os.path.join(self.tmp, "senders"), "w") as f:
            f.write("alice@example.com alice\n@example.org bob\n")
        if self.BACKEND == "postfix":
            self.backend = h.Postfix(self.tmp)
        else:
            self.backend = h.Sink(self.tmp)
        self.p465 = h.free_port()
        self.p25 = h.free_port()
        conf = f"""hostname = "gw.test"
listener "submission" {{
  address = "127.0.0.1:@PORT@"
  backend = "mta"
  filters = {{ "relay" }}
  tls = "starttls"
  tls_certificate = {{ "gw.pem" }}
  tls_key = {{ "gw.key" }}
  require_tls = true
  auth = "users"
  require_auth = true
  auth_max_failures = {self.MAX_FAILURES}
  sender_login_map = "senders"
}}
listener "smtps" {{
  address = "127.0.0.1:{self.p465}"
  backend = "mta"
  filters = {{ "relay" }}
  tls = "implicit"
  tls_certificate = {{ "gw.pem", "other.pem" }}
  tls_key = {{ "gw.key", "other.key" }}
  auth = "users"
}}
listener "mx" {{
  address = "127.0.0.1:{self.p25}"
  backend = "mta"
  filters = {{ "relay" }}
  tls = "starttls"
  tls_certificate = {{ "gw.pem.both" }}
  tls_timeout = 1s
}}
auth "users" {{
  password_file = "passwd"
}}
{h.backend_conf(self.backend.port)}
relay {{
  mynetworks = {{ "10.0.0.0/8" }}
  domains = {{ "example.com" }}
}}
"""
        with open(os.path.join(self.tmp, "gw.pem.both"), "w") as f:
            f.write(h.read(self.cert) + h.read(self.key))
        self.gw = h.Gateway(self.tmp, conf)
        self.port = self.gw.port
        h.wait_port(self.p465)

    def tearDown(self):
        self.gw.close()
        self.backend.close()
        h.rmtree(self.tmp)

    def messages(self):
        if self.BACKEND == "postfix":
            return self.backend.delivered()
        end = time.time() + 5
        while time.time() < end:
            m = self.backend.messages()
            if m:
                return m
            time.sleep(0.1)
        return []


class StartTLS(Base):
    def test_swaks_starttls_auth_plain_delivers_with_esmtpsa(self):
        rc, out = swaks(self.port, "--tls", "--auth", "PLAIN", "--auth-user", "alice",
                        "--auth-password", PASSWORD, "-f", "alice@example.com", "-t",
                        "u@example.com")
        self.assertEqual(rc, 0, out)
        self.assertIn("235 2.7.0", out)
        msgs = self.messages()
        self.assertEqual(len(msgs), 1)
        self.assertRegex(msgs[0].decode(), r"with ESMTPSA id")
        self.assertRegex(msgs[0].decode(), r"\(using TLSv1\.[23] with cipher \S+ \(\d+/\d+ bits\)\)")
        time.sleep(0.3)
        log = self.gw.log()
        self.assertRegex(log, r"disconnect from .* starttls=1 auth=1")
        self.assertNotIn(PASSWORD, log)

    def test_swaks_auth_login(self):
        rc, out = swaks(self.port, "--tls", "--auth", "LOGIN", "--auth-user", "alice",
                        "--auth-password", PASSWORD, "-f", "alice@example.com", "-t",
                        "u@example.com")
        self.assertEqual(rc, 0, out)
        self.assertIn("334 VXNlcm5hbWU6", out)
        self.assertEqual(len(self.messages()), 1)

    def test_openssl_s_client_starttls(self):
        out = h.s_client_smtp(self.port, "-servername", "gw.test")
        self.assertRegex(out, r"Protocol\s*:\s*TLSv1\.[23]")
        # s_client shows only what comes inside TLS: EHLO offers AUTH, not STARTTLS again.
        self.assertRegex(out, r"250[ -]AUTH PLAIN LOGIN")
        self.assertNotRegex(out, r"250[ -]STARTTLS")  # RFC 3207 4.2
        self.assertIn("221 2.0.0", out)

    def test_tls13_one_session_ticket_and_it_resumes(self):
        # One TLS 1.3 ticket per handshake, as Postfix's server sends (OpenSSL's default is two,
        # each an encryption and a write per session); an MTA client resumes with it.
        sess = os.path.join(self.tmp, "tls.sess")
        outs = []
        for opt in ("-sess_out", "-sess_in"):
            outs.append(h.s_client_smtp(self.port, "-tls1_3", "-msg", opt, sess))
        self.assertIn("221 2.0.0", outs[0])
        self.assertEqual(outs[0].count("NewSessionTicket"), 1, outs[0])
        self.assertIn("Reused, TLSv1.3", outs[1])

    def test_tls_1_2_works_and_renegotiation_is_off(self):
        ctx = no_verify()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        c = Client(self.port)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO x")[0], 250)
        self.assertEqual(c.cmd("STARTTLS")[0], 220)
        s = c.tls(ctx)
        self.assertEqual(s.version(), "TLSv1.2")
        self.assertEqual(c.cmd("EHLO x")[0], 250)
        c.close()

    def test_no_renegotiation(self):
        # s_client's interactive "R" asks for a TLS 1.2 renegotiation: refused by the server.
        p = subprocess.Popen(["openssl", "s_client", "-tls1_2", "-starttls", "smtp", "-connect",
                              f"127.0.0.1:{self.port}"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line, pause in (("EHLO a", 1.0), ("R", 0.5), ("NOOP", 1.0)):
            time.sleep(pause)
            try:
                p.stdin.write(line + "\n")
                p.stdin.flush()
            except BrokenPipeError:
                break  # s_client gave up after the refusal
        try:
            p.stdin.close()
        except BrokenPipeError:
            pass
        p.stdin = None
        out = p.communicate(timeout=15)[0]
        self.assertIn("RENEGOTIATING", out)
        self.assertIn("no renegotiation", out)
        self.assertNotIn("250 2.0.0 Ok", out)  # the NOOP never ran in a renegotiated session

    def test_plaintext_before_tls(self):
        c = Client(self.port)
        self.assertEqual(c.reply()[0], 220)
        code, text = c.cmd("EHLO x")
        self.assertIn("STARTTLS", text)
        self.assertNotIn("AUTH", text)  # only under TLS
        self.assertEqual(c.cmd("MAIL FROM:<alice@example.com>")[:1], (530,))
        self.assertEqual(c.cmd(f"AUTH PLAIN {plain_b64('alice', PASSWORD)}")[0], 538)
        self.assertEqual(c.cmd("STARTTLS extra")[0], 501)
        c.close()

    def test_rewind_and_require_auth(self):
        c = Client(self.port)
        c.reply()
        c.cmd("EHLO before.tls")
        self.assertEqual(c.cmd("STARTTLS")[0], 220)
        c.tls()
        # The HELO given before TLS is forgotten (RFC 3207 4.2).
        self.assertEqual(c.cmd("MAIL FROM:<alice@example.com>")[0], 503)
        code, text = c.cmd("EHLO after.tls")
        self.assertNotIn("STARTTLS", text)
        self.assertIn("AUTH PLAIN LOGIN", text)
        self.assertEqual(c.cmd("STARTTLS")[0], 503)
        code, text = c.cmd("MAIL FROM:<alice@example.com>")
        self.assertEqual((code, text[:9]), (530, "530 5.7.0"))
        self.assertEqual(c.cmd(f"AUTH PLAIN {plain_b64('alice', PASSWORD)}")[0], 235)
        self.assertEqual(c.cmd(f"AUTH PLAIN {plain_b64('alice', PASSWORD)}")[0], 503)
        # The sender login map: alice owns alice@example.com, not bob's domain.
        self.assertEqual(c.cmd("MAIL FROM:<x@example.org>")[0], 553)
        self.assertEqual(c.cmd("MAIL FROM:<alice@example.com>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
        c.close()

    def test_auth_cancel_and_bad_base64(self):
        c = Client.after_starttls(self.port)
        self.assertEqual(c.cmd("AUTH LOGIN")[0], 334)
        self.assertEqual(c.cmd("*")[0], 501)
        self.assertEqual(c.cmd("AUTH PLAIN !!!")[0], 501)
        self.assertEqual(c.cmd("AUTH CRAM-MD5")[0], 504)
        self.assertEqual(c.cmd("NOOP")[0], 250)
        c.close()

    def test_wrong_password_535_then_421(self):
        c = Client.after_starttls(self.port)
        for i in range(self.MAX_FAILURES - 1):
            t0 = time.time()
            code, text = c.cmd(f"AUTH PLAIN {plain_b64('alice', 'wrong')}")
            self.assertEqual(text[:9], "535 5.7.8")
            self.assertGreaterEqual(time.time() - t0, 0.9)  # a failure's reply is delayed
        self.assertEqual(c.cmd(f"AUTH PLAIN {plain_b64('alice', 'wrong')}")[0], 421)
        self.assertEqual(c.reply()[0], 0)  # closed
        c.close()
        # The address stays locked out: even the right password is refused now.
        c = Client.after_starttls(self.port)
        self.assertEqual(c.cmd(f"AUTH PLAIN {plain_b64('alice', PASSWORD)}")[0], 421)
        c.close()
        log = self.gw.log()
        self.assertIn("SASL authentication failed for alice", log)
        self.assertNotIn("wrong", log)

    def injection(self, payload):
        """Send payload (ending in STARTTLS plus injected plaintext) in one write; return the
        first reply inside TLS to a probe of our own."""
        c = Client(self.port)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO commandinjectiontester")[0], 250)
        c.send(payload)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.buf, b"")  # nothing after our 220 in plaintext
        c.tls()
        first = c.cmd("FAKE commandinjectiontester")
        c.close()
        return first

    def test_starttls_injection_probes(self):
        with open(PROBES) as f:
            probes = json.load(f)["smtp"]
        for payload in (probes["inject_pretls_last_write"], "STARTTLS\r\nRSET\r\n"):
            code, text = self.injection(payload)
            # The injected EHLO/RSET is never answered inside TLS: the first reply there is the
            # one to our own probe.
            self.assertEqual(code, 500, (payload, text))
            self.assertFalse(re.match(r"^(250|503)", text), text)
        self.assertIn("possible command injection", self.gw.log())

    def test_sighup_reloads_certificate_bad_one_keeps_old(self):
        def fingerprint():
            c = Client(self.p465, implicit=True)
            der = c.s.getpeercert(binary_form=True)
            c.close()
            return der
        old = fingerprint()
        with open(self.cert, "w") as f:
            f.write("not a certificate\n")
        os.kill(self.gw.pid(), signal.SIGHUP)
        time.sleep(1)
        self.assertTrue(self.gw.alive())
        self.assertIn("reload failed", self.gw.log())
        self.assertEqual(fingerprint(), old)
        make_cert(self.tmp, "gw", "gw.test")
        os.kill(self.gw.pid(), signal.SIGHUP)
        time.sleep(1)
        self.assertNotEqual(fingerprint(), old)

    def test_certificate_reload_under_load(self):
        import threading
        results, stop = [], threading.Event()

        def worker():
            while not stop.is_set():
                try:
                    c = Client(self.p465, implicit=True)
                    ok = c.reply()[0] == 220 and c.cmd("EHLO x")[0] == 250
                    ok = ok and c.cmd(f"AUTH PLAIN {plain_b64('bob', 'bobpw')}")[0] == 235
                    ok = ok and c.cmd("MAIL FROM:<l@example.org>")[0] == 250
                    ok = ok and c.cmd("RCPT TO:<u@example.com>")[0] == 250
                    ok = ok and c.cmd("DATA")[0] == 354
                    if ok:
                        c.send("Subject: load\r\n\r\nbody\r\n.\r\n")
                        ok = c.reply()[0] == 250
                    c.close()
                except OSError as e:
                    ok = repr(e)
                results.append(ok)

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for i in range(3):
            time.sleep(0.7)
            make_cert(self.tmp, "gw", "gw.test")
            os.kill(self.gw.pid(), signal.SIGHUP)
        time.sleep(0.7)
        stop.set()
        for t in threads:
            t.join(30)
        self.assertGreater(len(results), 12)
        self.assertEqual([r for r in results if r is not True], [])
        self.assertEqual(self.gw.log().count("reloaded"), 3)


class Implicit(Base):
    def test_swaks_tlsc_auth(self):
        rc, out = swaks(self.p465, "--tlsc", "--auth", "PLAIN", "--auth-user", "bob",
                        "--auth-password", "bobpw", "-f", "x@example.org", "-t", "u@example.com")
        self.assertEqual(rc, 0, out)
        self.assertIn("220 gw.test", out)
        self.assertEqual(len(self.messages()), 1)

    def test_greeting_after_handshake_is_not_early_talk(self):
        c = Client(self.p465, implicit=True)
        code, text = c.reply()
        self.assertEqual(code, 220, text)
        self.assertIn("AUTH PLAIN LOGIN", c.cmd("EHLO x")[1])
        self.assertNotIn("STARTTLS", c.cmd("EHLO x")[1])
        c.close()
        self.assertNotIn("talked before the greeting", self.gw.log())

    def test_sni_chooses_the_pair(self):
        def peer(sni):
            c = Client(self.p465, implicit=True, sni=sni)
            der = c.s.getpeercert(binary_form=True)
            self.assertEqual(c.reply()[0], 220)
            c.close()
            return der
        other = ssl.PEM_cert_to_DER_cert(h.read(self.other))
        gw = ssl.PEM_cert_to_DER_cert(h.read(self.cert))
        self.assertEqual(peer("other.test"), other)
        self.assertEqual(peer("gw.test"), gw)
        self.assertEqual(peer("unknown.test"), gw)  # the first pair is the default

    def test_handshake_has_a_deadline(self):
        c = Client(self.p25)
        c.reply()
        c.cmd("EHLO x")
        self.assertEqual(c.cmd("STARTTLS")[0], 220)
        c.s.settimeout(5)
        t0 = time.time()
        self.assertEqual(c.s.recv(100), b"")  # closed, without a word in plaintext
        self.assertLess(time.time() - t0, 4)
        c.close()
        time.sleep(0.2)
        self.assertIn("handshake timeout", self.gw.log())

    def test_auth_pipelined_with_mail(self):
        c = Client(self.p465, implicit=True)
        c.reply()
        c.cmd("EHLO x")
        c.send(f"AUTH PLAIN {plain_b64('bob', 'bobpw')}\r\nMAIL FROM:<y@example.org> AUTH=<>\r\n"
               "RCPT TO:<u@example.com>\r\n")
        self.assertEqual(c.reply()[0], 235)
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send("Subject: t\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(c.reply()[0], 250)
        c.close()

    def test_plaintext_client_gets_no_greeting(self):
        c = Client(self.p465)
        c.s.settimeout(3)
        c.send("EHLO x\r\n")
        code, text = c.reply()
        self.assertNotEqual(code, 220)
        self.assertNotIn("220", text)
        c.close()
        time.sleep(0.3)
        self.assertIn("TLS handshake failed", self.gw.log())

    def test_mx_listener_offers_starttls_without_auth(self):
        c = Client(self.p25)
        c.reply()
        text = c.cmd("EHLO x")[1]
        self.assertIn("STARTTLS", text)
        self.assertNotIn("AUTH", text)
        self.assertEqual(c.cmd("AUTH PLAIN AGEAYg==")[0], 502)
        self.assertEqual(c.cmd("STARTTLS")[0], 220)
        c.tls()
        self.assertEqual(c.cmd("EHLO x")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send("Subject: t\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(c.reply()[0], 250)
        c.close()
        msg = self.messages()[0].decode()
        self.assertIn("with ESMTPS id", msg)


class PostfixBackend(Base):
    BACKEND = "postfix"

    def test_xclient_login_reaches_postfix(self):
        rc, out = swaks(self.p465, "--tlsc", "--auth", "PLAIN", "--auth-user", "alice",
                        "--auth-password", PASSWORD, "-f", "alice@example.com", "-t",
                        "u@example.com")
        self.assertEqual(rc, 0, out)
        self.assertEqual(len(self.messages()), 1)
        end = time.time() + 5
        while "sasl_username=alice" not in self.backend.log() and time.time() < end:
            time.sleep(0.2)
        self.assertIn("sasl_username=alice", self.backend.log())


class DovecotAuthServer(h._Closing):
    """A private Dovecot whose auth service checks the test's password file, listening on a
    UNIX socket for us only, as deploy/dovecot/README.md tells a postmaster (PEERS.md)."""

    def __init__(self, tmp, passwd):
        import shutil
        if shutil.which("dovecot") is None:
            raise unittest.SkipTest("dovecot-core is not installed")
        self.dir = os.path.join(tmp, f"dovecot{h.free_port()}")
        for sub in ("run", "state"):
            os.makedirs(os.path.join(self.dir, sub))
        self.socket = os.path.join(self.dir, "run", "auth-portcullis")
        conf = os.path.join(self.dir, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(f"""base_dir = {self.dir}/run
state_dir = {self.dir}/state
instance_name = pcauth{os.path.basename(self.dir)}
log_path = {self.dir}/dovecot.log
protocols =
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=CRYPT {passwd}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  unix_listener auth-portcullis {{
    mode = 0600
    user = root
  }}
}}
""")
        self.proc = h.Proc(["dovecot", "-F", "-c", conf], log=os.path.join(self.dir, "out.log"))
        end = time.time() + 10
        while not os.path.exists(self.socket) and time.time() < end:
            time.sleep(0.05)
        if not os.path.exists(self.socket):
            self.proc.stop()
            raise RuntimeError("dovecot did not start: " + h.read(os.path.join(self.dir, "out.log")))

    def log(self):
        p = os.path.join(self.dir, "dovecot.log")
        return h.read(p) if os.path.exists(p) else ""

    def close(self):
        if getattr(self, "proc", None):
            self.proc.stop()
            self.proc = None


class DovecotAuth(unittest.TestCase):
    """AUTH checked by a real Dovecot's auth service over its UNIX socket."""

    def test_dovecot_ok_and_wrong_password(self):
        tmp = h.tempdir()
        try:
            cert, key = make_cert(tmp, "gw", "gw.test")
            passwd = make_passwd(tmp, {"carol": "carolpw"})
            with DovecotAuthServer(tmp, passwd) as dv, h.Sink(tmp) as sink:
                conf = f"""hostname = "gw.test"
listener "submission" {{
  address = "127.0.0.1:@PORT@"
  backend = "mta"
  tls = "starttls"
  tls_certificate = {{ "{cert}" }}
  tls_key = {{ "{key}" }}
  auth = "dv"
  require_auth = true
}}
auth "dv" {{
  dovecot = "unix:{dv.socket}"
}}
{h.backend_conf(sink.port)}
relay {{
  mynetworks = {{ "10.0.0.0/8" }}
}}
"""
                with h.Gateway(tmp, conf) as gw:
                    rc, out = swaks(gw.port, "--tls", "--auth", "LOGIN", "--auth-user", "carol",
                                    "--auth-password", "carolpw", "-f", "c@example.net", "-t",
                                    "someone@elsewhere.example")
                    self.assertEqual(rc, 0, out)  # authenticated: relays anywhere
                    rc, out = swaks(gw.port, "--tls", "--auth", "PLAIN", "--auth-user", "carol",
                                    "--auth-password", "nope", "-f", "c@example.net", "-t",
                                    "someone@elsewhere.example")
                    self.assertNotEqual(rc, 0)
                    self.assertIn("535 5.7.8", out)
                    self.assertIn("sasl_username=carol", gw.log())
                self.assertEqual(len(sink.messages()), 1)
        finally:
            h.rmtree(tmp)


class PostfixSendsThroughUs(Base):
    """A real Postfix relays to our submission port with smtp_tls_security_level = encrypt and
    SASL credentials (bob may send as @example.org)."""

    def test_postfix_encrypt_and_sasl(self):
        gw_port = self.port

        class Sender(h.PostfixSender):
            MASTER = h.PostfixSender.MASTER + "tlsmgr unix - - n 1000? 1 tlsmgr\n"

            def _start(self, main_cf):
                main_cf += f"""smtp_tls_security_level = encrypt
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = inline:{{{{ [127.0.0.1]:{gw_port} = bob:bobpw }}}}
smtp_sasl_security_options = noanonymous
smtp_sasl_tls_security_options = noanonymous
smtp_tls_loglevel = 1
"""
                super()._start(main_cf)

        with Sender(self.tmp, gw_port) as snd:
            snd.send("x@example.org", ["u@example.com"], "Subject: via postfix\r\n\r\nbody\r\n")
            msgs = []
            end = time.time() + 30
            while not msgs and time.time() < end:
                snd.flush()
                time.sleep(0.5)
                msgs = self.backend.messages()
            self.assertEqual(len(msgs), 1, snd.log()[-3000:] + self.gw.log()[-3000:])
            self.assertIn("with ESMTPSA", msgs[0].decode())
            log = snd.log()
            self.assertRegex(log, r"(Trusted|Untrusted|Anonymous) TLS connection established")
            self.assertIn("status=sent", log)


class FactsForRules(unittest.TestCase):
    """Rules read the TLS facts: tls_version, and a client certificate's fingerprint when the
    listener asks for one (tls_ask_client_certificate)."""

    def test_rules_see_tls_facts(self):
        tmp = h.tempdir()
        try:
            make_cert(tmp, "gw", "gw.test")
            ccert, ckey = make_cert(tmp, "client", "client.test")
            der = ssl.PEM_cert_to_DER_cert(h.read(ccert))
            import hashlib
            fp = hashlib.sha256(der).hexdigest()
            with open(os.path.join(tmp, "t.rules"), "w") as f:
                f.write(f'''rule known_cert at mail
    if fact "tls_client_sha256" == "{fp}"
    then reject 550 5.7.1 "client certificate seen"
rule tls13 at rcpt
    if fact "tls_version" == "TLSv1.3"
    then reject 550 5.7.1 "TLSv1.3 seen"
''')
            with h.Sink(tmp) as sink:
                conf = f"""hostname = "gw.test"
listener "mx" {{
  address = "127.0.0.1:@PORT@"
  backend = "mta"
  filters = {{ "relay", "rules" }}
  tls = "starttls"
  tls_certificate = {{ "gw.pem" }}
  tls_key = {{ "gw.key" }}
  tls_ask_client_certificate = true
}}
{h.backend_conf(sink.port)}
relay {{
  domains = {{ "example.com" }}
}}
rules {{
  files = {{ "t.rules" }}
}}
"""
                with h.Gateway(tmp, conf) as gw:
                    for cert in (None, ccert):
                        ctx = no_verify()
                        if cert:
                            ctx.load_cert_chain(ccert, ckey)
                        c = Client(gw.port)
                        c.reply()
                        c.cmd("EHLO x")
                        c.cmd("STARTTLS")
                        c.tls(ctx)
                        c.cmd("EHLO x")
                        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
                        # delay_reject: the MAIL rule's refusal is told at RCPT
                        code, text = c.cmd("RCPT TO:<u@example.com>")
                        self.assertEqual(code, 550, text)
                        self.assertIn("client certificate seen" if cert else "TLSv1.3 seen", text)
                        c.close()
        finally:
            h.rmtree(tmp)


class Config(unittest.TestCase):
    """portcullis -t refuses a TLS or AUTH setting that cannot work, naming file and line."""

    def check(self, listener, extra=""):
        tmp = h.tempdir()
        try:
            make_cert(tmp, "gw", "gw.test")
            with open(os.path.join(tmp, "bad.pem"), "w") as f:
                f.write("not a certificate\n")
            path = os.path.join(tmp, "p.conf")
            with open(path, "w") as f:
                f.write(f'hostname = "gw.test"\nlistener "l" {{\n{listener}\n}}\n'
                        f'backend "b" {{ address = {{ "127.0.0.1:1" }} }}\n{extra}')
            r = subprocess.run([h.BIN, "-t", "-c", path], capture_output=True, text=True)
            return r.returncode, r.stdout + r.stderr
        finally:
            h.rmtree(tmp)

    def test_errors(self):
        for listener, want in (
                ('tls = "sometimes"', "expected none, starttls or implicit"),
                ('tls = "starttls"', "tls needs tls_certificate"),
                ('tls = "starttls"\ntls_certificate = { "bad.pem" }', "bad.pem"),
                ('tls = "implicit"\ntls_certificate = { "gw.pem" }\ntls_key = { "gw.key", "x" }',
                 "one per certificate"),
                ('require_tls = true', "require_tls needs tls"),
                ('require_auth = true', "require_auth needs auth"),
                ('auth = "nobody"', "no auth section named"),
                ('tls = "starttls"\ntls_certificate = { "gw.pem" }\ntls_key = { "gw.key" }\n'
                 'tls_timeout = 0s', "tls_timeout"),
                ('auth_max_failures = 0', "auth_max_failures")):
            rc, out = self.check(listener)
            self.assertNotEqual(rc, 0, listener)
            self.assertIn(want, out, listener)
            self.assertRegex(out, r"p\.conf:\d+", listener)
        rc, out = self.check('tls = "implicit"\ntls_certificate = { "gw.pem" }\n'
                             'tls_key = { "gw.key" }\nauth = "a"\nrequire_auth = true',
                             'auth "a" { dovecot = "unix:/run/dovecot/auth-client" }\n')
        self.assertEqual(rc, 0, out)


class TestSSL(Base):
    """testssl.sh (Debian's package) against the STARTTLS and the implicit TLS port: protocols,
    cipher lists, forward secrecy and the known vulnerabilities (no certificate checks: the
    test certificate is self-signed on purpose). Nothing rated HIGH or CRITICAL."""

    def scan(self, port, *args):
        import shutil
        if shutil.which("testssl") is None:
            self.skipTest("testssl.sh is not installed")
        out = os.path.join(self.tmp, f"testssl{port}.json")
        subprocess.run(["testssl", "--quiet", "--color", "0", "--warnings", "off", "-p", "-s", "-f",
                        "-U", "--jsonfile", out, *args, f"127.0.0.1:{port}"],
                       capture_output=True, timeout=600)
        with open(out) as f:
            findings = json.load(f)
        self.assertGreater(len(findings), 20)  # it did scan
        bad = [(x["id"], x["severity"], x["finding"]) for x in findings
               if x["severity"] in ("HIGH", "CRITICAL")]
        self.assertEqual(bad, [])
        return findings

    def test_starttls_and_implicit_ports(self):
        self.scan(self.port, "--starttls", "smtp")
        self.scan(self.p465)


if __name__ == "__main__":
    unittest.main()
