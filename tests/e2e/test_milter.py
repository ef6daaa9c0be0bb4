#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_milter.py - the milter door end to end, behind a real Postfix.

A private Postfix (tests/e2e/harness.py) with smtpd_milters = inet:127.0.0.1:PORT and
milter_default_action = tempfail, as deploy/postfix/milter.md tells a postmaster, calls a
gateway whose only listener has protocol = "milter". The client speaks SMTP to Postfix only.

- GTUBE is refused with our 554 5.7.1, as Postfix's own reply to the client;
- a message from mynetworks is delivered with our Authentication-Results and our DKIM signature
  (the dkim filter signs for trusted sources), inserted at the top; a forged
  Authentication-Results claiming our authserv-id is removed (smfi_chgheader by index), one of
  another ADMD is kept;
- a frozen Redis behind the ratelimit filter (on_error = tempfail) reaches the client as a 4xx;
- an envelope-only chain negotiates no header or body (SMFIP_NOHDRS, SMFIP_NOBODY);
- OpenDKIM's miltertest drives single stages (tests/e2e/miltertest/*.lua): GTUBE refused at
  end of message; a forged Authentication-Results deleted and ours inserted after an abort;
- SIGHUP reloads and SIGTERM stops a process whose libmilter thread is running (libmilter's
  own signal thread would stop the milter on either); a signal that reaches libmilter's signal
  thread all the same (sent to that thread with tgkill) makes the process log it and exit 1.

Run alone: PORTCULLIS_BIN=build/portcullis python3 tests/e2e/test_milter.py
"""
import ctypes
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
ROOT = h.ROOT


def send(port, mail_from, rcpts, msg):
    """One message to Postfix: None when accepted, else (code, text) of the refusal."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
            s.sendmail(mail_from, rcpts, msg)
        return None
    except smtplib.SMTPRecipientsRefused as e:
        code, text = list(e.recipients.values())[0]
        return code, text.decode()
    except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as e:
        return e.smtp_code, e.smtp_error.decode()


def milter_gateway(tmp, filters, extra=""):
    conf = f"""hostname = "gw.test"
listener "milter" {{
  address = "inet:127.0.0.1:@PORT@"
  protocol = "milter"
  filters = {{ {filters} }}
}}
{extra}
"""
    return h.Gateway(tmp, conf)


class MilterPostfix(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = h.tempdir()
        # RSA: libopendkim 2.11.0 leaks every Ed25519 signing key (see tests/unit/test_dkim.c),
        # which LeakSanitizer would report against the ASan gateway.
        ed = os.path.join(cls.tmp, "rsa.pem")
        subprocess.run(["openssl", "genrsa", "-out", ed, "2048"], check=True, capture_output=True)
        local = os.path.join(cls.tmp, "local.rules")
        with open(local, "w") as f:
            f.write('rule tag_me at header if header "Subject" ~ /tag-me/ '
                    'then add-header "X-Tagged" "yes"\n'
                    'rule drop_me at header if header "Subject" ~ /discard-me/ then discard\n')
        extra = f"""rules {{ files = {{ "{ROOT}/rules/gtube.rules", "{local}" }} }}
dkim {{
  key_table = {{ "ed example.test:e1:{ed}" }}
  signing_table = {{ "*@example.test ed" }}
}}
"""
        cls.gw = milter_gateway(cls.tmp, '"dkim", "rules", "authres"', extra)
        cls.pf = h.Postfix(cls.tmp, milter=f"inet:127.0.0.1:{cls.gw.port}")

    @classmethod
    def tearDownClass(cls):
        cls.pf.close()
        cls.gw.close()
        h.rmtree(cls.tmp)

    def delivered(self, marker, timeout=15.0):
        end = time.time() + timeout
        while time.time() < end:
            for m in self.pf.delivered(timeout=0.2):
                if marker.encode() in m:
                    return m.decode()
            time.sleep(0.1)
        self.fail(f"{marker} not delivered:\n{self.pf.log()[-2000:]}\n{self.gw.log()[-2000:]}")

    def test_gtube_refused_with_our_code(self):
        r = send(self.pf.port, "a@example.org", ["u@example.com"],
                 "From: a@example.org\r\nSubject: gtube\r\n\r\n" + GTUBE + "\r\n")
        self.assertIsNotNone(r, "GTUBE was accepted")
        self.assertEqual(r[0], 554, r)
        self.assertTrue(r[1].startswith("5.7.1 "), r)
        end = time.time() + 10  # postlogd writes Postfix's log after the reply
        while "milter-reject: END-OF-MESSAGE" not in self.pf.log() and time.time() < end:
            time.sleep(0.1)
        self.assertIn("milter-reject: END-OF-MESSAGE", self.pf.log())
        self.assertIn("rule=gtube", self.gw.log())

    def test_authres_dkim_and_forged_field(self):
        msg = ("Authentication-Results: gw.test; dkim=pass header.d=forged.test\r\n"
               "Authentication-Results: other.test; spf=pass smtp.mailfrom=x.test\r\n"
               "From: a@example.test\r\nTo: u@example.com\r\nSubject: signed-1\r\n\r\n"
               "hello\r\n")
        self.assertIsNone(send(self.pf.port, "a@example.test", ["u@example.com"], msg))
        m = self.delivered("signed-1")
        head = m.split("\n\n", 1)[0]
        self.assertNotIn("forged.test", head)
        self.assertIn("Authentication-Results: other.test; spf=pass", head)
        self.assertRegex(head, r"\nAuthentication-Results: gw\.test;")
        self.assertIn("DKIM-Signature: v=1; a=rsa-sha256;", head)
        self.assertIn("d=example.test", head)
        self.assertIn("s=e1", head)
        # At the top: our fields come before the message's own (Postfix's Received is ours too).
        self.assertLess(head.index("DKIM-Signature:"), head.index("From: a@example.test"))
        self.assertLess(head.index("Authentication-Results: gw.test"),
                        head.index("Authentication-Results: other.test"))
        # Our log names the MTA's queue id beside ours.
        self.assertRegex(self.gw.log(), r"milter: MTA queue id [0-9A-F]+")

    def test_added_header_and_discard(self):
        self.assertIsNone(send(self.pf.port, "a@example.org", ["u@example.com"],
                               "From: a@example.org\r\nSubject: tag-me\r\n\r\nhi\r\n"))
        self.assertIn("\nX-Tagged: yes\n", self.delivered("tag-me"))
        # Discard: the client hears 250, Postfix drops the message (SMFIS_DISCARD).
        self.assertIsNone(send(self.pf.port, "a@example.org", ["u@example.com"],
                               "From: a@example.org\r\nSubject: discard-me\r\n\r\nhi\r\n"))
        end = time.time() + 10
        while "milter-discard" not in self.pf.log() and time.time() < end:
            time.sleep(0.1)
        self.assertIn("milter-discard: END-OF-MESSAGE", self.pf.log())
        self.assertFalse(any(b"discard-me" in m for m in self.pf.delivered(timeout=0.5)))

    def test_reload_and_log_reopen_keep_serving(self):
        os.kill(self.gw.pid(), signal.SIGHUP)
        end = time.time() + 10
        while "reloaded" not in self.gw.log() and time.time() < end:
            time.sleep(0.05)
        self.assertIn("reloaded", self.gw.log())
        self.assertTrue(self.gw.alive())
        self.assertIsNone(send(self.pf.port, "a@example.org", ["u@example.com"],
                               "From: a@example.org\r\nSubject: after-hup\r\n\r\nhi\r\n"))
        self.assertIn("Authentication-Results: gw.test", self.delivered("after-hup"))
        self.assertNotIn("libmilter stopped serving", self.gw.log())


class MilterTempfail(unittest.TestCase):
    """A failure on our side (Redis frozen, on_error = tempfail) is a 4xx at the client."""

    def test_frozen_redis_is_4xx(self):
        tmp = h.tempdir()
        self.addCleanup(h.rmtree, tmp)
        port = h.free_port()
        redis = h.Proc(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", tmp], log=os.path.join(tmp, "redis.log"))
        self.addCleanup(redis.stop, signal.SIGKILL)
        h.wait_port(port)
        extra = f"""ratelimit {{
  store = "redis://127.0.0.1:{port}/0"
  store_timeout = "300ms"
  on_error = "tempfail"
  limit "msgs" {{ key = {{ "client_ip" }} count = "messages" rate = "50/1m" }}
}}
"""
        gw = milter_gateway(tmp, '"ratelimit"', extra)
        self.addCleanup(gw.close)
        pf = h.Postfix(tmp, milter=f"inet:127.0.0.1:{gw.port}")
        self.addCleanup(pf.close)
        msg = "From: a@example.org\r\nSubject: t\r\n\r\nhello\r\n"
        self.assertIsNone(send(pf.port, "a@example.org", ["u@example.com"], msg))
        os.kill(redis.p.pid, signal.SIGSTOP)
        try:
            r = send(pf.port, "a@example.org", ["u@example.com"], msg)
        finally:
            os.kill(redis.p.pid, signal.SIGCONT)
        self.assertIsNotNone(r, "accepted while Redis was frozen")
        self.assertEqual(r[0] // 100, 4, r)
        self.assertTrue(r[1].startswith("4.3.0"), r)
        end = time.time() + 10  # postlogd writes Postfix's log after the reply
        while "milter-reject" not in pf.log() and time.time() < end:
            time.sleep(0.1)
        self.assertIn("milter-reject", pf.log())


@unittest.skipUnless(shutil.which("miltertest"), "miltertest (package miltertest) not installed")
class MilterTest(unittest.TestCase):
    """miltertest scripts, one per concern, against a gateway with rules and authres."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = h.tempdir()
        cls.gw = milter_gateway(cls.tmp, '"rules", "authres"',
                                f'rules {{ files = {{ "{ROOT}/rules/gtube.rules" }} }}\n')

    @classmethod
    def tearDownClass(cls):
        cls.gw.close()
        h.rmtree(cls.tmp)

    def run_script(self, name):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "miltertest", name)
        env = dict(os.environ, MILTER_SOCK=f"inet:{self.gw.port}@127.0.0.1")
        r = subprocess.run(["miltertest", "-s", script], env=env, capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr + self.gw.log()[-2000:])

    def test_gtube_stages(self):
        self.run_script("gtube.lua")
        self.assertIn("MTA queue id MT0001", self.gw.log())
        self.assertRegex(self.gw.log(), r"reject: END-OF-MESSAGE from client\.test\[192\.0\.2\.10\]: "
                                        r"554 5\.7\.1 .*helo=<client\.test> filter=rules")

    def test_authres_edits_after_abort(self):
        self.run_script("authres.lua")
        self.assertIn('removed 1 Authentication-Results claiming "gw.test"', self.gw.log())


class MilterConf(unittest.TestCase):
    """-t: the protocol option and what a milter listener may not have."""

    def check(self, text):
        tmp = h.tempdir()
        self.addCleanup(h.rmtree, tmp)
        path = os.path.join(tmp, "c.conf")
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([h.BIN, "-c", path, "-t"], capture_output=True, text=True)
        return r.returncode, r.stderr

    def test_errors(self):
        rc, err = self.check('listener "m" {\n address = "inet:127.0.0.1:8891"\n'
                             ' protocol = "milter"\n}\n'
                             'listener "n" {\n address = "127.0.0.1:8892"\n protocol = "milter"\n}\n'
                             'listener "o" {\n protocol = "lmtp"\n}\n'
                             'listener "p" {\n protocol = "policy"\n backend = "mta"\n}\n'
                             'backend "mta" {\n address = { "127.0.0.1:25" }\n}\n')
        self.assertEqual(rc, 78, err)
        self.assertRegex(err, r':\d+: listener "n": one milter listener per process')
        self.assertRegex(err, r':\d+: listener "n": bad milter address "127.0.0.1:8892"')
        self.assertRegex(err, r':\d+: listener "o": protocol must be smtp, milter or policy')
        self.assertRegex(err, r':\d+: listener "p": a policy listener has no backend')
        self.assertNotIn('listener "m"', err)

    def test_good(self):
        for a in ("inet:127.0.0.1:8891", "inet6:[::1]:8891", "unix:/run/portcullis/m.sock"):
            rc, err = self.check(f'listener "m" {{\n address = "{a}"\n protocol = "milter"\n'
                                 ' filters = { "authres" }\n}\n')
            self.assertEqual(rc, 0, a + ": " + err)


class MilterDown(unittest.TestCase):
    """milter_default_action = tempfail (the recipe's): no gateway listening is a 4xx."""

    def test_gateway_down_is_4xx(self):
        tmp = h.tempdir()
        self.addCleanup(h.rmtree, tmp)
        pf = h.Postfix(tmp, milter=f"inet:127.0.0.1:{h.free_port()}")
        self.addCleanup(pf.close)
        r = send(pf.port, "a@example.org", ["u@example.com"], "Subject: t\r\n\r\nhi\r\n")
        self.assertIsNotNone(r, "accepted without its milter")
        self.assertEqual(r[0] // 100, 4, r)


class MilterProgress(unittest.TestCase):
    """A slow end of message (Redis frozen, a 9 s store timeout) outlives Postfix's
    milter_content_timeout (6 s) only because the door calls smfi_progress every 5 s: the client
    hears our 451 4.3.0, not Postfix's milter_default_action (451 4.7.1)."""

    def test_progress_keeps_postfix_waiting(self):
        tmp = h.tempdir()
        self.addCleanup(h.rmtree, tmp)
        port = h.free_port()
        redis = h.Proc(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", tmp], log=os.path.join(tmp, "redis.log"))
        self.addCleanup(redis.stop, signal.SIGKILL)
        h.wait_port(port)
        extra = f"""ratelimit {{
  store = "redis://127.0.0.1:{port}/0"
  store_timeout = "9s"
  timeout = "20s"
  on_error = "tempfail"
  limit "msgs" {{ key = {{ "client_ip" }} count = "messages" rate = "50/1m" }}
}}
"""
        gw = milter_gateway(tmp, '"ratelimit", "authres"', extra)
        self.addCleanup(gw.close)
        pf = h.Postfix(tmp, milter=f"inet:127.0.0.1:{gw.port}",
                       main_extra="milter_content_timeout = 6s\n")
        self.addCleanup(pf.close)
        msg = "From: a@example.org\r\nSubject: t\r\n\r\nhello\r\n"
        self.assertIsNone(send(pf.port, "a@example.org", ["u@example.com"], msg))
        os.kill(redis.p.pid, signal.SIGSTOP)
        try:
            t0 = time.time()
            r = send(pf.port, "a@example.org", ["u@example.com"], msg)
            took = time.time() - t0
        finally:
            os.kill(redis.p.pid, signal.SIGCONT)
        self.assertIsNotNone(r)
        self.assertEqual((r[0], r[1][:5]), (451, "4.3.0"), (r, pf.log()[-1500:]))
        self.assertGreater(took, 8, r)


class MilterSignals(unittest.TestCase):
    """SIGTERM drains and stops a process that runs libmilter's threads: a milter session in
    flight finishes (libmilter's smfi_stop would drop it; the door does not call it)."""

    def test_sigterm_stops(self):
        tmp = h.tempdir()
        self.addCleanup(h.rmtree, tmp)
        gw = milter_gateway(tmp, '"relay"')
        self.addCleanup(gw.close)
        # An envelope-only chain: the MTA will be told not to send the header or the body.
        self.assertIn("envelope only", gw.log())
        os.kill(gw.pid(), signal.SIGTERM)
        try:
            rc = gw.proc.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.fail("did not stop on SIGTERM:\n" + gw.log())
        self.assertEqual(rc, 0, gw.log())
        self.assertIn("portcullis stopped", gw.log())
        self.assertNotIn("libmilter stopped serving", gw.log())

    def test_sigterm_drains_a_session_in_flight(self):
        tmp = h.tempdir()
        self.addCleanup(h.rmtree, tmp)
        gw = milter_gateway(tmp, '"authres"')
        self.addCleanup(gw.close)
        pf = h.Postfix(tmp, milter=f"inet:127.0.0.1:{gw.port}")
        self.addCleanup(pf.close)
        s = smtplib.SMTP("127.0.0.1", pf.port, timeout=60)
        s.ehlo("client.test")
        s.mail("a@example.org")
        s.rcpt("u@example.com")  # the milter session is open now
        os.kill(gw.pid(), signal.SIGTERM)
        time.sleep(0.5)
        self.assertTrue(gw.alive(), "stopped with a milter session in flight")
        code, _ = s.data("From: a@example.org\r\nSubject: drained\r\n\r\nhi\r\n")
        s.quit()
        self.assertEqual(code, 250)
        self.assertEqual(gw.proc.p.wait(timeout=10), 0, gw.log())
        m = [x for x in pf.delivered() if b"drained" in x]
        self.assertTrue(m and b"Authentication-Results: gw.test" in m[0], pf.log()[-1500:])

    def test_libmilter_signal_thread_exits_1(self):
        tmp = h.tempdir()
        self.addCleanup(h.rmtree, tmp)
        gw = milter_gateway(tmp, '"relay"')
        self.addCleanup(gw.close)
        pid, libc, hit = gw.pid(), ctypes.CDLL(None, use_errno=True), 0
        for _ in range(50):
            for tid in map(int, os.listdir(f"/proc/{pid}/task")):
                try:
                    with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                        nr = f.read().split()[0]
                except (OSError, IndexError):
                    continue
                if tid != pid and nr == "128":  # rt_sigtimedwait: libmilter's sigwait thread
                    hit += libc.syscall(234, pid, tid, signal.SIGHUP) == 0  # tgkill
            if hit:
                break
            time.sleep(0.1)
        self.assertTrue(hit, "no thread in sigwait")
        try:
            rc = gw.proc.p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.fail("libmilter stopped, the process did not:\n" + gw.log())
        log = gw.log()
        self.assertEqual(rc, 1, log)
        self.assertIn("milter: libmilter stopped serving", log)


if __name__ == "__main__":
    unittest.main()
