#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_engine.py - two doors, one transaction engine: the same decision through both.

A table of transactions (client address, HELO, sender, recipient, content) runs once through
the SMTP door (a real client talking to the gateway in front of smtp-sink) and once through
"portcullis test" on the same configuration; both must reach the same decision: accept,
discard, or a refusal with the same reply code and enhanced status code. It runs with
delay_reject on (refusals at connect, HELO and MAIL held until RCPT) and off.

The SMTP door's decision is its first refusal of the transaction (greeting, EHLO, MAIL, RCPT,
DATA or the end of the message), else accept when the message reached the backend and discard
when the gateway said 250 but nothing arrived. "portcullis test"'s decision is its exit status
and its "result" line.

Run: python3 tests/e2e/test_engine.py [-v]   (after make all; PORTCULLIS_BIN for another build)
"""
import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

RULES = r"""
rule conn_bad at connect if client.ip == "127.0.0.2" then reject 554 5.7.1 "Client refused"
rule conn_tmp at connect if client.ip == "127.0.0.4" then tempfail 450 4.7.1 "Client later"
rule conn_disc at connect if client.ip == "127.0.0.3" then discard
rule helo_bad at helo if helo == "bad.helo" then reject 550 5.7.1 "Bad HELO"
rule helo_tmp at helo if helo == "tmp.helo" then tempfail 450 4.7.1 "HELO later"
rule mail_bad at mail if from.domain == "bad.example" then reject 550 5.7.1 "Sender refused"
rule mail_tmp at mail if from.domain == "tmp.example" then tempfail 451 4.7.1 "Sender later"
rule mail_disc at mail if from.local == "discard" then discard
rule rcpt_bad at rcpt if rcpt.local == "nobody" then reject 550 5.1.1 "No such user"
rule body_bad at body if body contains "REFUSEME" then reject 554 5.7.1 "Content refused"
rule body_disc at body if body contains "DISCARDME" then discard
"""

# (name, client ip, helo, sender, recipient, body word)
CASES = [
    ("clean", "127.0.0.1", "good.helo", "a@example.org", "b@example.com", "hello"),
    ("connect refused", "127.0.0.2", "good.helo", "a@example.org", "b@example.com", "hello"),
    ("connect tempfail", "127.0.0.4", "good.helo", "a@example.org", "b@example.com", "hello"),
    ("connect discard", "127.0.0.3", "good.helo", "a@example.org", "b@example.com", "hello"),
    ("connect discard, relay denied", "127.0.0.3", "good.helo", "a@example.org",
     "b@example.net", "hello"),
    ("helo refused", "127.0.0.1", "bad.helo", "a@example.org", "b@example.com", "hello"),
    ("helo tempfail", "127.0.0.1", "tmp.helo", "a@example.org", "b@example.com", "hello"),
    ("sender refused", "127.0.0.1", "good.helo", "a@bad.example", "b@example.com", "hello"),
    ("sender tempfail", "127.0.0.1", "good.helo", "a@tmp.example", "b@example.com", "hello"),
    ("sender discard", "127.0.0.1", "good.helo", "discard@example.org", "b@example.com", "hi"),
    ("sender discard, relay denied", "127.0.0.1", "good.helo", "discard@example.org",
     "b@example.net", "hello"),
    ("connect refused, sender tempfail", "127.0.0.2", "good.helo", "a@tmp.example",
     "b@example.com", "hello"),
    ("connect refused, helo tempfail", "127.0.0.2", "tmp.helo", "a@example.org",
     "b@example.com", "hello"),
    ("helo tempfail, sender refused", "127.0.0.1", "tmp.helo", "a@bad.example",
     "b@example.com", "hello"),
    ("recipient refused", "127.0.0.1", "good.helo", "a@example.org", "nobody@example.com", "x"),
    ("relay denied", "127.0.0.1", "good.helo", "a@example.org", "b@example.net", "hello"),
    ("content refused", "127.0.0.1", "good.helo", "a@example.org", "b@example.com", "REFUSEME"),
    ("content discard", "127.0.0.1", "good.helo", "a@example.org", "b@example.com", "DISCARDME"),
]


def first_enh(text):
    m = re.match(r"\d{3}[ -](\d\.\d{1,3}\.\d{1,3})", text)
    return m.group(1) if m else ""


class Doors(unittest.TestCase):
    delay_reject = "true"

    def setUp(self):
        self.tmp = h.tempdir()
        self.addCleanup(h.rmtree, self.tmp)
        self.rules = os.path.join(self.tmp, "engine.rules")
        with open(self.rules, "w") as f:
            f.write(RULES)
        self.sink = h.Sink(self.tmp)
        self.addCleanup(self.sink.close)
        # Nobody is in mynetworks: only example.com is relayed, so "relay denied" is reachable.
        conf = h.gateway_conf(h.backend_conf(self.sink.port, identity="none"),
                              filters='"relay", "rules"',
                              extra=f'delay_reject = {self.delay_reject}\n'
                                    f'rules {{ files = {{ "{self.rules}" }} }}\n')
        conf = conf.replace('mynetworks = { "127.0.0.1/32" }', 'mynetworks = { "192.0.2.0/24" }')
        self.gw = h.Gateway(self.tmp, conf)
        self.addCleanup(self.gw.close)

    def smtp(self, n, ip, helo, sender, rcpt, word):
        """The SMTP door's decision as (outcome, code, enhanced code)."""
        c = h.Chat(self.gw.port, source=ip)
        try:
            mark = f"engine-case-{n}"
            steps = [None, f"EHLO {helo}", f"MAIL FROM:<{sender}>", f"RCPT TO:<{rcpt}>", "DATA",
                     f"Subject: {mark}\r\n\r\n{word}\r\n{mark}\r\n."]
            for line in steps:
                code, text = c.reply() if line is None else c.cmd(line)
                if code >= 400 or code <= 0:
                    out = "tempfail" if 400 <= code < 500 else "reject"
                    return (out, code, first_enh(text))
            c.cmd("QUIT")
        finally:
            c.close()
        got = any(mark.encode() in m for m in self.sink.messages())
        return ("accept" if got else "discard", 250, "2.0.0")

    def via_test(self, n, ip, helo, sender, rcpt, word):
        """portcullis test's decision on the same configuration."""
        msg = os.path.join(self.tmp, f"m{n}.eml")
        with open(msg, "w") as f:
            f.write(f"Subject: engine-case-{n}\r\n\r\n{word}\r\nengine-case-{n}\r\n")
        r = subprocess.run([h.BIN, "test", "-c", self.gw.path, "--client-ip", ip, "--helo", helo,
                            "--from", sender, "--rcpt", rcpt, msg],
                           capture_output=True, text=True, timeout=60)
        outs = {0: "accept", 1: "reject", 2: "tempfail", 3: "discard"}
        self.assertIn(r.returncode, outs, r.stdout + r.stderr)
        m = re.search(r"^result +\w+: (\d{3}) (\S+)", r.stdout, re.M)
        self.assertTrue(m, r.stdout)
        out = outs[r.returncode]
        if out in ("accept", "discard"):
            return (out, 250, "2.0.0")
        return (out, int(m.group(1)), m.group(2))

    def test_earliest_refusal_speaks(self):
        """A connect refusal held for RCPT is not replaced by a later HELO refusal."""
        case = ("127.0.0.2", "tmp.helo", "a@example.org", "b@example.com", "hello")
        want = ("reject", 554, "5.7.1")
        self.assertEqual(self.smtp(90, *case), want)
        self.assertEqual(self.via_test(91, *case), want)

    def test_same_decision(self):
        for n, (name, ip, helo, sender, rcpt, word) in enumerate(CASES):
            with self.subTest(case=name, delay_reject=self.delay_reject):
                a = self.smtp(n, ip, helo, sender, rcpt, word)
                b = self.via_test(n, ip, helo, sender, rcpt, word)
                self.assertEqual(a, b, f"{name}: smtp door {a}, portcullis test {b}")


class DoorsNoDelay(Doors):
    delay_reject = "false"


if __name__ == "__main__":
    unittest.main()
