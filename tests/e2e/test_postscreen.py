#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_postscreen.py - postscreen-style checks before and around the greeting, end to end.

A listener with `postscreen = true` withholds its greeting for postscreen.greet_pause from
clients outside mynetworks (here mynetworks is 127.0.0.1 alone, and the clients bind 127.0.0.2
and up), looks them up in postscreen.dnsbl_sites meanwhile (nsd serving bl.test, as in
test_dns.py), and then checks commands pipelined before our EHLO reply, HTTP verbs and bare
newlines. Each check's action: ignore, enforce (550 at every RCPT), drop (521, closed).

What the checks refused here:
- PREGREET: "EHLO" sent before the greeting: dropped with 521 5.5.1 (greet_action = drop), or
  served and its RCPT refused 550 5.5.1 (enforce); with ignore, the rules filter sees the fact;
- NON-SMTP COMMAND: "GET / HTTP/1.1" after the greeting: 521 5.5.1, closed (the default drop);
- PIPELINING: EHLO, MAIL, RCPT, DATA in one write: RCPT 550 5.5.1, DATA 554 (enforce, default);
- BARE NEWLINE: "EHLO x\\n": 521 5.5.1 (drop);
- DNSBL: 127.0.0.4, listed in bl.test: 521 5.7.1 after the pause (drop), or RCPT 550 5.7.1
  (enforce), logged with sender and recipient.
Passed: a patient client (cached: its second connection is greeted without the pause), a real
Postfix as the sending MTA, swaks (plain and --pipeline), mynetworks and a listener without
postscreen (greeted at once). SharedCache: with postscreen.store two gateways share the pass
cache in Redis (a pass at A is greeted at once by B, a failure at B forgets it for A); Redis
down is a cache miss, never a refusal.

Run alone: PORTCULLIS_BIN=build/portcullis python3 tests/e2e/test_postscreen.py
"""
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

PAUSE = 2.0  # seconds; the bounds below leave a wide margin on both sides


def conf(sink_port, ps="", extra="", filters='"relay"', second_listener=False):
    c = harness.gateway_conf(harness.backend_conf(sink_port, identity="none"), filters=filters,
                             extra='mynetworks = { "127.0.0.1/32" }\n'
                                   'postscreen {\n  greet_pause = %dms\n  %s\n}\n%s'
                                   % (PAUSE * 1000, ps, extra))
    c = c.replace('  filters = {', '  postscreen = true\n  filters = {', 1)
    if second_listener:
        c += ('listener "plain" {\n  address = "127.0.0.1:@PORT2@"\n  backend = "mta"\n'
              '  filters = { "relay" }\n}\n')
    return c


class Client:
    """A raw SMTP client bound to a loopback source, for byte-exact timing and pipelining."""

    def __init__(self, port, source="127.0.0.2"):
        self.t0 = time.monotonic()
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20,
                                          source_address=(source, 0))
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def reply(self):
        """One whole reply (all its lines) as text; "" at end of input."""
        lines = []
        while True:
            while b"\n" not in self.buf:
                chunk = self.s.recv(4096)
                if not chunk:
                    return "\n".join(lines)
                self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
            line = line.decode().rstrip("\r")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    def closed(self):
        try:
            return self.buf == b"" and self.s.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.s.close()


class Postscreen(unittest.TestCase):
    def setUp(self):
        self.tmp = harness.tempdir()
        self.addCleanup(harness.rmtree, self.tmp)
        self.sink = harness.Sink(self.tmp)
        self.addCleanup(self.sink.close)

    def gateway(self, ps="", extra="", filters='"relay"', second_listener=False):
        c = conf(self.sink.port, ps, extra, filters, second_listener)
        self.port2 = harness.free_port()
        gw = harness.Gateway(self.tmp, c.replace("@PORT2@", str(self.port2)))
        self.addCleanup(gw.close)
        return gw

    def client(self, gw, source="127.0.0.2", port=None):
        c = Client(port or gw.port, source)
        self.addCleanup(c.close)
        return c

    def wait_log(self, gw, text, timeout=10.0):
        end = time.time() + timeout
        while text not in gw.log():
            self.assertLess(time.time(), end, "%r not in the log:\n%s" % (text, gw.log()[-2000:]))
            time.sleep(0.05)

    def greeted_after(self, gw, source="127.0.0.2", port=None):
        """Seconds from connect to the 220, then QUIT."""
        c = self.client(gw, source, port)
        r = c.reply()
        took = time.monotonic() - c.t0
        self.assertTrue(r.startswith("220 gw.test"), r)
        c.send(b"QUIT\r\n")
        self.assertTrue(c.reply().startswith("221"))
        return took

    # --- talk before the greeting -------------------------------------------------------

    def test_pregreet_drop(self):
        gw = self.gateway('greet_action = "drop"')
        c = self.client(gw)
        c.send(b"EHLO bot.example\r\n")
        r = c.reply()
        took = time.monotonic() - c.t0
        self.assertEqual(r, "521 5.5.1 Protocol error: talked before the greeting")
        self.assertTrue(c.closed())
        self.assertLess(took, PAUSE, "dropped at once, not after the pause")
        self.wait_log(gw, "postscreen: PREGREET after 0.")
        self.assertIn("from [127.0.0.2]", gw.log())
        self.assertIn("EHLO bot.example (action=drop)", gw.log())
        # A client that failed is not cached: the next connection waits again.
        self.assertGreater(self.greeted_after(gw), PAUSE - 0.1)

    def test_pregreet_by_design_not_timing(self):
        """The byte arrives while the greeting is withheld: caught even with an empty chain
        whose connect stage is instant (the old check depended on timing)."""
        gw = self.gateway('greet_action = "drop"', filters="")
        for _ in range(3):
            c = self.client(gw)
            time.sleep(0.3)  # well after connect, well before the end of the pause
            c.send(b"H")
            self.assertEqual(c.reply(), "521 5.5.1 Protocol error: talked before the greeting")

    def test_pregreet_enforce(self):
        gw = self.gateway('greet_action = "enforce"')
        c = self.client(gw)
        c.send(b"EHLO bot.example\r\n")
        self.assertTrue(c.reply().startswith("220 gw.test"))
        self.assertTrue(c.reply().startswith("250-gw.test"))
        c.send(b"MAIL FROM:<a@sender.example>\r\n")
        self.assertEqual(c.reply(), "250 2.1.0 Ok")
        c.send(b"RCPT TO:<u@example.com>\r\n")
        self.assertEqual(c.reply(), "550 5.5.1 Protocol error: talked before the greeting")
        c.send(b"DATA\r\n")
        self.assertTrue(c.reply().startswith("554 5.5.1"))
        c.send(b"QUIT\r\n")
        self.assertTrue(c.reply().startswith("221"))
        self.assertEqual(self.sink.messages(), [])
        log = gw.log()
        self.assertIn("(action=enforce)", log)
        self.assertRegex(log, r"reject: RCPT from .*550 5\.5\.1 Protocol error: talked before "
                              r"the greeting; from=<a@sender\.example> to=<u@example\.com>")

    def test_pregreet_ignore_fact_for_rules(self):
        rules = os.path.join(self.tmp, "ps.rules")
        with open(rules, "w") as f:
            f.write('rule early at rcpt if fact "postscreen_fail" == "pregreet" '
                    'then reject 550 5.7.1 "early talker seen by rules"\n')
        gw = self.gateway('greet_action = "ignore"', filters='"relay", "rules"',
                          extra='rules { files = { "%s" } }\n' % rules)
        c = self.client(gw)
        c.send(b"EHLO bot.example\r\n")
        self.assertTrue(c.reply().startswith("220 gw.test"))
        self.assertTrue(c.reply().startswith("250-gw.test"))
        c.send(b"MAIL FROM:<a@sender.example>\r\n")
        self.assertTrue(c.reply().startswith("250"))
        c.send(b"RCPT TO:<u@example.com>\r\n")
        self.assertEqual(c.reply(), "550 5.7.1 early talker seen by rules")
        self.assertIn("(action=ignore)", gw.log())

    # --- the pass cache -----------------------------------------------------------------

    def test_patient_client_passes_and_is_cached(self):
        gw = self.gateway()
        first = self.greeted_after(gw)
        self.assertGreater(first, PAUSE - 0.1)
        second = self.greeted_after(gw)
        self.assertLess(second, PAUSE / 2, "a cached client is greeted without the pause")
        log = gw.log()
        self.assertIn("postscreen: PASS NEW [127.0.0.2]", log)
        self.assertIn("postscreen: PASS OLD [127.0.0.2]", log)
        # Another client is not the cached one.
        self.assertGreater(self.greeted_after(gw, source="127.0.0.3"), PAUSE - 0.1)

    def test_mynetworks_and_plain_listener_skip(self):
        gw = self.gateway(second_listener=True)
        self.assertLess(self.greeted_after(gw, source="127.0.0.1"), PAUSE / 2)
        self.assertLess(self.greeted_after(gw, port=self.port2), PAUSE / 2)

    def test_hangup_during_pause(self):
        gw = self.gateway()
        c = self.client(gw)
        time.sleep(0.2)
        c.close()
        self.wait_log(gw, "postscreen: HANGUP after 0.")
        self.assertGreater(self.greeted_after(gw), PAUSE - 0.1)  # not cached
        self.assertTrue(gw.alive())

    def test_metrics_per_check_action_and_result(self):
        mport = harness.free_port()
        gw = self.gateway('greet_action = "drop"',
                          extra=f'metrics {{ enabled = true address = "127.0.0.1:{mport}" }}\n')
        c = self.client(gw)
        c.send(b"EHLO bot.example\r\n")
        self.assertTrue(c.reply().startswith("521 5.5.1"))
        self.assertGreater(self.greeted_after(gw, source="127.0.0.3"), PAUSE - 0.1)
        self.assertLess(self.greeted_after(gw, source="127.0.0.3"), PAUSE / 2)
        self.greeted_after(gw, source="127.0.0.1")
        h = self.client(gw, source="127.0.0.4")
        time.sleep(0.2)
        h.close()
        self.wait_log(gw, "postscreen: HANGUP after 0.")
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10) as r:
            text = r.read().decode()
        for line in ('portcullis_postscreen_failures_total{check="pregreet",action="drop"} 1',
                     'portcullis_postscreen_results_total{result="pass_new"} 1',
                     'portcullis_postscreen_results_total{result="pass_old"} 1',
                     'portcullis_postscreen_results_total{result="hangup"} 1'):
            self.assertIn(line + "\n", text, text)
        # mynetworks: ours, and the harness's own readiness connections from 127.0.0.1
        self.assertRegex(text, r'portcullis_postscreen_results_total\{result="skip"\} [1-9]')

    # --- checks in the session ----------------------------------------------------------

    def test_http_get_dropped(self):
        gw = self.gateway()
        c = self.client(gw)
        self.assertTrue(c.reply().startswith("220 gw.test"))
        c.send(b"GET / HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        self.assertEqual(c.reply(), "521 5.5.1 Protocol error: non-SMTP command")
        self.assertTrue(c.closed())
        self.wait_log(gw, "postscreen: NON-SMTP COMMAND after ")
        self.assertIn(": GET (action=drop)", gw.log())

    def test_pipelining_before_ehlo(self):
        gw = self.gateway()
        c = self.client(gw)
        self.assertTrue(c.reply().startswith("220 gw.test"))
        c.send(b"EHLO bot.example\r\nMAIL FROM:<a@sender.example>\r\n"
               b"RCPT TO:<u@example.com>\r\nDATA\r\n")
        self.assertTrue(c.reply().startswith("250-gw.test"))
        self.assertEqual(c.reply(), "250 2.1.0 Ok")
        self.assertEqual(c.reply(),
                         "550 5.5.1 Protocol error: commands pipelined before PIPELINING was "
                         "offered")
        self.assertTrue(c.reply().startswith("554 5.5.1"))
        self.assertEqual(self.sink.messages(), [])
        self.assertIn("postscreen: PIPELINING after ", gw.log())
        self.assertIn(": EHLO bot.example (action=enforce)", gw.log())

    def test_pipelining_after_ehlo_is_fine(self):
        gw = self.gateway()
        c = self.client(gw)
        self.assertTrue(c.reply().startswith("220 gw.test"))
        c.send(b"EHLO good.example\r\n")
        self.assertIn("PIPELINING", c.reply())
        c.send(b"MAIL FROM:<a@sender.example>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n")
        self.assertTrue(c.reply().startswith("250"))
        self.assertTrue(c.reply().startswith("250"))
        self.assertTrue(c.reply().startswith("354"))
        c.send(b"Subject: t\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        self.assertTrue(c.reply().startswith("250"))
        self.assertEqual(len(self.sink.messages()), 1)
        self.assertNotIn("PIPELINING after", gw.log())

    def test_bare_newline_in_command(self):
        gw = self.gateway('bare_newline_action = "drop"')
        c = self.client(gw)
        self.assertTrue(c.reply().startswith("220 gw.test"))
        c.send(b"EHLO bot.example\n")
        self.assertEqual(c.reply(), "521 5.5.1 Protocol error: bare newline in a command")
        self.assertTrue(c.closed())
        self.wait_log(gw, "postscreen: BARE NEWLINE after ")

    def test_bare_newline_ignored_by_default(self):
        gw = self.gateway()
        c = self.client(gw)
        self.assertTrue(c.reply().startswith("220 gw.test"))
        c.send(b"EHLO bot.example\n")
        self.assertTrue(c.reply().startswith("250-gw.test"))
        self.assertIn("(action=ignore)", gw.log())

    # --- DNS lists during the pause -----------------------------------------------------

    def dns_gateway(self, action):
        if not shutil.which("nsd"):
            self.skipTest("needs nsd")
        from test_dns import Nsd
        ns = Nsd(self.tmp)
        self.addCleanup(ns.close)
        return self.gateway('dnsbl_sites = { "bl.test=127.0.0.[2..11]*2" }\n'
                            '  dnsbl_threshold = 2\n  dnsbl_action = "%s"' % action,
                            extra='dns { nameservers = { "127.0.0.1:%d" } timeout = 2s }\n'
                                  % ns.port)

    def test_dnsbl_drop(self):
        gw = self.dns_gateway("drop")
        c = self.client(gw, source="127.0.0.4")
        self.assertEqual(c.reply(),
                         "521 5.7.1 Service unavailable; client [127.0.0.4] blocked using bl.test")
        self.assertTrue(c.closed())
        self.assertIn("postscreen: DNSBL rank 2 for [127.0.0.4]", gw.log())
        # An unlisted client passes the same pause.
        self.assertGreater(self.greeted_after(gw, source="127.0.0.2"), PAUSE - 0.1)

    def test_dnsbl_enforce(self):
        gw = self.dns_gateway("enforce")
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=20,
                          source_address=("127.0.0.4", 0)) as s:
            s.ehlo("listed.example")
            s.mail("a@sender.example")
            code, text = s.rcpt("u@example.com")
            self.assertEqual(code, 550)
            self.assertEqual(text.decode(),
                             "5.7.1 Service unavailable; client [127.0.0.4] blocked using bl.test")
        self.assertRegex(gw.log(), r"reject: RCPT from .*\[127\.0\.0\.4\].*blocked using bl\.test;"
                                   r" from=<a@sender\.example> to=<u@example\.com>")
        self.assertEqual(self.sink.messages(), [])

    # --- real senders -------------------------------------------------------------------

    def test_postfix_sender_passes(self):
        if os.geteuid() != 0 or not os.path.exists("/usr/sbin/postfix"):
            self.skipTest("needs root and postfix")
        gw = self.gateway()
        pf = harness.PostfixSender(self.tmp, gw.port, bind="127.0.0.2")
        self.addCleanup(pf.close)
        pf.send("a@sender.example", ["u@example.com"], "Subject: via postfix\r\n\r\nhi\r\n")
        end = time.time() + 60
        while not self.sink.messages() and time.time() < end:
            time.sleep(0.3)
        self.assertEqual(len(self.sink.messages()), 1, pf.log()[-2000:])
        log = gw.log()
        self.assertIn("postscreen: PASS NEW [127.0.0.2]", log)
        self.assertNotIn("postscreen: PREGREET", log)
        self.assertNotIn("postscreen: PIPELINING", log)

    def test_swaks_passes(self):
        if not shutil.which("swaks"):
            self.skipTest("needs swaks")
        gw = self.gateway()
        for extra in ([], ["--pipeline"]):
            r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % gw.port,
                                "--local-interface", "127.0.0.2", "--from", "a@sender.example",
                                "--to", "u@example.com", "--timeout", "20"] + extra,
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout[-1500:])
        self.assertEqual(len(self.sink.messages()), 2)
        self.assertNotIn("action=", gw.log())


class SharedCache(unittest.TestCase):
    """postscreen.store: the pass cache in Redis, shared by two gateways."""

    def setUp(self):
        if not shutil.which("redis-server"):
            self.skipTest("needs redis-server")
        self.tmp = harness.tempdir()
        self.addCleanup(harness.rmtree, self.tmp)
        self.sink = harness.Sink(self.tmp)
        self.addCleanup(self.sink.close)
        self.redis_port = harness.free_port()

    def start_redis(self):
        p = harness.Proc(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no", "--dir", self.tmp],
                         log=os.path.join(self.tmp, "redis.log"))
        self.addCleanup(p.stop)
        harness.wait_port(self.redis_port)

    def gateway(self):
        c = conf(self.sink.port, 'store = "redis://127.0.0.1:%d/0"' % self.redis_port)
        gw = harness.Gateway(self.tmp, c)
        self.addCleanup(gw.close)
        return gw

    greeted_after = Postscreen.greeted_after
    client = Postscreen.client

    def test_pass_at_one_gateway_is_known_at_the_other(self):
        self.start_redis()
        a, b = self.gateway(), self.gateway()
        time.sleep(0.5)  # both connected to Redis
        self.assertGreater(self.greeted_after(a), PAUSE - 0.1)
        self.assertLess(self.greeted_after(b), PAUSE / 2, "cached in Redis by the other gateway")
        self.assertIn("postscreen: PASS OLD [127.0.0.2]", b.log())
        keys = subprocess.run(["redis-cli", "-p", str(self.redis_port), "--scan", "--pattern",
                               "portcullis:ps:*"], capture_output=True, text=True).stdout.split()
        self.assertEqual(len(keys), 1, keys)
        # A failure at B (an HTTP verb, dropped) forgets the client for A too.
        c = self.client(b)
        self.assertTrue(c.reply().startswith("220"))
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        self.assertTrue(c.reply().startswith("521"))
        end = time.time() + 5
        while subprocess.run(["redis-cli", "-p", str(self.redis_port), "EXISTS", keys[0]],
                             capture_output=True, text=True).stdout.strip() != "0":
            self.assertLess(time.time(), end)
            time.sleep(0.05)
        self.assertGreater(self.greeted_after(a), PAUSE - 0.1)

    def test_store_down_is_a_miss(self):
        gw = self.gateway()  # nothing listens on the Redis port
        self.assertGreater(self.greeted_after(gw), PAUSE - 0.1)
        self.assertGreater(self.greeted_after(gw), PAUSE - 0.1)
        self.assertTrue(gw.alive())


if __name__ == "__main__":
    unittest.main(verbosity=2)
