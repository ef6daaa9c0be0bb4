#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_rules.py - the rules filter end to end, through the SMTP proxy.

Starts portcullis on 127.0.0.1 (ports 23000-23999) with the shipped rule files plus a rule file
of its own, delivering into a temporary Maildir, and talks SMTP to it with smtplib:

- GTUBE is refused with 554 5.7.1, an .exe attachment with 550 5.7.1;
- clean mail is delivered with the X-Portcullis-Score header;
- SIGHUP with a changed rule file swaps the rules; SIGHUP with a broken rule file keeps the old
  rules and logs every error as file:line:col;
- portcullis -t lists every error of a broken rule file.

Run: python3 tests/e2e/test_rules.py [--binary build/portcullis]   (or PORTCULLIS_BIN=...)
Every process started here is stopped again, also when a test fails.
"""
import email.message
import os
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import unittest

BIN = os.environ.get("PORTCULLIS_BIN", "build/portcullis")
os.environ.setdefault("PORTCULLIS_RUN_AS_ROOT", "1")  # root without "user" is meant here
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PORT_LO, PORT_HI = 23000, 23999
_next_port = [PORT_LO + (os.getpid() % 400) * 2]
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def free_port():
    """A port of our range that we can bind right now."""
    for _ in range(PORT_HI - PORT_LO):
        p = _next_port[0]
        _next_port[0] = PORT_LO if p >= PORT_HI else p + 1
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port in %d-%d" % (PORT_LO, PORT_HI))


def wait_port(port, proc, timeout=10.0):
    """Until portcullis accepts on port (or died)."""
    until = time.time() + timeout
    while time.time() < until:
        if proc.poll() is not None:
            raise RuntimeError("portcullis exited with %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("portcullis did not listen on %d" % port)


def send(port, msg, to="bob@example.com"):
    """One message; (code, text) of the final reply, or of the refusal."""
    msg = msg.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # bytes are sent as they are
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as c:
        c.ehlo("client.example.org")
        try:
            c.sendmail("alice@example.org", [to], msg)
            return 250, ""
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error.decode()
        except smtplib.SMTPRecipientsRefused as e:
            code, text = list(e.recipients.values())[0]
            return code, text.decode()


def plain(subject, body="Hello.\n"):
    """A small text message as bytes."""
    m = email.message.EmailMessage()
    m["From"] = "alice@example.org"
    m["To"] = "bob@example.com"
    m["Subject"] = subject
    m["Date"] = "Mon, 07 Oct 2002 09:00:00 +0000"
    m["Message-ID"] = "<%s@example.org>" % time.time()
    m.set_content(body)
    return m.as_bytes()


class RulesE2E(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="pc-rules-e2e-")
        d = self.tmp.name
        self.maildir = os.path.join(d, "Maildir")
        self.local_rules = os.path.join(d, "local.rules")
        self.write_rules('rule local_block at header if header "Subject" == "block-me" '
                         'then reject 550 5.7.1 "blocked locally"\n')
        self.port = free_port()
        shipped = ", ".join('"%s"' % os.path.join(ROOT, "rules", f) for f in
                            ("default.rules", "gtube.rules", "attachments.rules",
                             "spam-phrases.rules"))
        self.conf = os.path.join(d, "portcullis.conf")
        with open(self.conf, "w") as f:
            f.write('hostname = "mx.test"\n'
                    'listener "in" { address = "127.0.0.1:%d" backend = "m" '
                    'filters = { "relay", "rules" } }\n'
                    'backend "m" { maildir = "%s" }\n'
                    'relay { mynetworks = { "192.0.2.0/24" } domains = { "example.com" } }\n'
                    'rules { files = { %s, "%s" } }\n'
                    % (self.port, self.maildir, shipped, self.local_rules))
        self.log = open(os.path.join(d, "log"), "w+")
        self.proc = subprocess.Popen([BIN, "-c", self.conf], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        try:
            wait_port(self.port, self.proc)
        except Exception:
            self.tearDown()
            raise

    def tearDown(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.tmp.cleanup()

    def write_rules(self, text):
        with open(self.local_rules, "w") as f:
            f.write(text)

    def logtext(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def delivered(self):
        new = os.path.join(self.maildir, "new")
        if not os.path.isdir(new):
            return []
        out = []
        for n in sorted(os.listdir(new)):
            with open(os.path.join(new, n), "rb") as f:
                out.append(f.read())
        return out

    def reload(self, marker_count):
        """SIGHUP, then wait until the log shows one more reload outcome."""
        self.proc.send_signal(signal.SIGHUP)
        until = time.time() + 10
        while time.time() < until:
            t = self.logtext()
            if t.count("reload") > marker_count:
                return t
            time.sleep(0.05)
        self.fail("no reload line in the log")

    def test_gtube_exe_clean(self):
        code, text = send(self.port, plain("test", GTUBE + "\n"))
        self.assertEqual(code, 554)
        self.assertIn("5.7.1", text)
        m = email.message.EmailMessage()
        m["From"] = "alice@example.org"
        m["Subject"] = "tool"
        m.set_content("see attached")
        m.add_attachment(b"MZ\x90\x00", maintype="application", subtype="octet-stream",
                         filename="setup.exe")
        code, text = send(self.port, m.as_bytes())
        self.assertEqual(code, 550)
        self.assertIn("5.7.1", text)
        self.assertEqual(self.delivered(), [])
        self.assertEqual(send(self.port, plain("lunch"))[0], 250)
        got = self.delivered()
        self.assertEqual(len(got), 1)
        self.assertIn(b"X-Portcullis-Score: ", got[0])
        log = self.logtext()
        self.assertIn("rule=gtube", log)
        self.assertIn("rule=banned_attachment", log)

    def test_reload_swaps_and_keeps(self):
        self.assertEqual(send(self.port, plain("block-me"))[0], 550)
        self.assertEqual(send(self.port, plain("swap-me"))[0], 250)
        n = self.logtext().count("reload")
        self.write_rules('rule local_block at header if header "Subject" == "swap-me" '
                         'then reject 550 5.7.1 "blocked locally"\n')
        self.reload(n)
        self.assertEqual(send(self.port, plain("swap-me"))[0], 550)
        self.assertEqual(send(self.port, plain("block-me"))[0], 250)
        # A broken file: every error logged with file:line:col, the old rules stay.
        n = self.logtext().count("reload")
        self.write_rules('rule a at helo if nosuch == "x" then accept\n'
                         'rule b at header if header "S" ~ /(/ then reject\n')
        log = self.reload(n)
        self.assertIn(self.local_rules + ":1:19: unknown field", log)
        self.assertIn(self.local_rules + ":2:36: bad regular expression", log)
        self.assertEqual(send(self.port, plain("swap-me"))[0], 550)

    def test_lint(self):
        self.write_rules('rule a at mail if header "X" exists then accept\n'
                         'rule b at rcpt if rcpt ~ /x/ then reject 450\n')
        r = subprocess.run([BIN, "-t", "-c", self.conf], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 78)  # EX_CONFIG
        self.assertIn(self.local_rules + ":1:19: header is not known yet at stage mail", r.stderr)
        self.assertIn(self.local_rules + ":2:42: reply code \"450\" must be 5xx", r.stderr)


if __name__ == "__main__":
    if "--binary" in sys.argv:
        i = sys.argv.index("--binary")
        BIN = sys.argv[i + 1]
        del sys.argv[i:i + 2]
    BIN = os.path.abspath(BIN)
    unittest.main()
