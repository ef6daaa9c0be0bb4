#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_ratelimit.py - the ratelimit filter end to end, through the SMTP proxy.

Real servers on loopback (tests/e2e/harness.py): redis-server, smtp-sink as the backend, one or
two gateways with the chain relay + ratelimit. The client is smtplib or the harness's raw Chat.

- 5 messages per minute: 5 reach the backend, the 6th gets 450 4.7.1 with when to retry and
  never reaches the backend; another client address has its own counter;
- two gateways sharing one Redis enforce one combined limit;
- a connection flood gets a 421 4.7.0 greeting and is closed;
- Redis stopped: on_error = accept lets mail through, no crash, and the limit holds again once
  Redis is back; Redis frozen (SIGSTOP): the store timeout answers and the session goes on;
- the in-process store gives the same answers as Redis for one gateway;
- counters survive a reload (SIGHUP) and a restart; pipelined RCPTs are answered in order.

Run alone: PORTCULLIS_BIN=build/portcullis python3 tests/e2e/test_ratelimit.py
"""
import os
import signal
import smtplib
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MSGS5 = 'limit "msgs" { key = { "client_ip" } count = "messages" rate = "5/1m" }'


class RateLimit(unittest.TestCase):
    def setUp(self):
        self.tmp = harness.tempdir()
        self.addCleanup(harness.rmtree, self.tmp)
        self.sink = harness.Sink(self.tmp)
        self.addCleanup(self.sink.close)
        self.redis_port = harness.free_port()
        self.redis = None
        self.start_redis()

    def start_redis(self):
        self.redis = harness.Proc(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.tmp],
            log=os.path.join(self.tmp, "redis%d.log" % time.time_ns()))
        self.addCleanup(self.redis.stop, signal.SIGKILL)
        harness.wait_port(self.redis_port)

    def stop_redis(self):
        self.redis.stop(signal.SIGKILL)

    def gateway(self, limits, on_error="accept", store=True):
        store_line = 'store = "redis://127.0.0.1:%d/0"' % self.redis_port if store else ""
        extra = """ratelimit {
  %s
  store_timeout = "300ms"
  timeout = "20s"
  on_error = "%s"
  %s
}
""" % (store_line, on_error, limits)
        conf = harness.gateway_conf(harness.backend_conf(self.sink.port, identity="none"),
                                    filters='"relay", "ratelimit"', extra=extra)
        gw = harness.Gateway(self.tmp, conf)
        self.addCleanup(gw.close)
        return gw

    def send(self, gw, source="127.0.0.1", sender="a@sender.example"):
        """One message over its own connection: None when accepted, else (code, text)."""
        try:
            with smtplib.SMTP("127.0.0.1", gw.port, timeout=30,
                              source_address=(source, 0)) as s:
                s.sendmail(sender, ["u@example.com"], "Subject: t\r\n\r\nhello\r\n")
            return None
        except smtplib.SMTPDataError as e:
            return (e.smtp_code, e.smtp_error.decode())
        except smtplib.SMTPRecipientsRefused as e:
            code, text = list(e.recipients.values())[0]
            return (code, text.decode())
        except smtplib.SMTPConnectError as e:
            return (e.smtp_code, e.smtp_error.decode())
        except smtplib.SMTPServerDisconnected as e:
            return (0, str(e))

    def wait_log(self, gw, text, timeout=15.0):
        end = time.time() + timeout
        while time.time() < end:
            if text in gw.log():
                return True
            time.sleep(0.1)
        return False

    def test_sixth_message_450(self):
        gw = self.gateway(MSGS5)
        for i in range(5):
            self.assertIsNone(self.send(gw), "message %d" % (i + 1))
        code, text = self.send(gw)
        self.assertEqual(code, 450, text)
        self.assertTrue(text.startswith("4.7.1 "), text)
        self.assertRegex(text, r"try again in 1[12] seconds")
        # The refused message never reached the backend; another client is not limited.
        self.assertEqual(len(self.sink.messages()), 5)
        self.assertIsNone(self.send(gw, source="127.0.0.2"))
        self.assertEqual(len(self.sink.messages()), 6)
        self.assertIn("filter=ratelimit rule=msgs", gw.log())

    def test_two_gateways_share_one_limit(self):
        a = self.gateway(MSGS5)
        b = self.gateway(MSGS5)
        for i in range(5):
            self.assertIsNone(self.send(a if i % 2 else b), "message %d" % (i + 1))
        self.assertEqual(self.send(a)[0], 450)
        self.assertEqual(self.send(b)[0], 450)
        self.assertEqual(len(self.sink.messages()), 5)

    def test_connection_flood_421(self):
        # 4 per minute per address: the harness's readiness probe is the first connection.
        gw = self.gateway(
            'limit "conn" { key = { "client_ip" } count = "connections" rate = "4/1m" }')
        for i in range(3):
            c = harness.Chat(gw.port)
            self.assertEqual(c.reply()[0], 220, "connection %d" % (i + 1))
            c.close()
        c = harness.Chat(gw.port)
        code, text = c.reply()
        self.assertEqual(code, 421, text)
        self.assertIn("4.7.0", text)
        self.assertTrue(c.closed())
        c.close()

    def test_redis_stopped_then_back(self):
        gw = self.gateway(MSGS5, on_error="accept")
        for i in range(5):
            self.assertIsNone(self.send(gw))
        self.stop_redis()
        for i in range(3):
            self.assertIsNone(self.send(gw), "with redis down, message %d" % (i + 1))
        self.assertIn("store error", gw.log())
        self.assertTrue(gw.alive())
        # Back, empty (no persistence): the gateway reconnects by itself and counts again.
        self.start_redis()
        back = False
        for _ in range(100):
            if "ratelimit: redis 127.0.0.1:%d is back" % self.redis_port in gw.log():
                back = True
                break
            self.send(gw, source="127.0.0.3")  # any check makes it notice
            time.sleep(0.1)
        self.assertTrue(back, "no reconnect:\n" + gw.log()[-2000:])
        results = [self.send(gw, source="127.0.0.4") for _ in range(6)]
        self.assertEqual(results[:5], [None] * 5)
        self.assertEqual(results[5] and results[5][0], 450, "%r\n%s" % (results, gw.log()[-3000:]))

    def test_redis_frozen_session_goes_on(self):
        gw = self.gateway(MSGS5, on_error="tempfail")
        self.assertIsNone(self.send(gw))
        os.kill(self.redis.p.pid, signal.SIGSTOP)
        try:
            r = self.send(gw)
        finally:
            os.kill(self.redis.p.pid, signal.SIGCONT)
        # The store's 300 ms timeout answered (not the chain's 20 s backstop): 451 4.3.0.
        self.assertEqual(r[0], 451, r)
        self.assertIn("4.3.0", r[1])
        self.assertIn("request timed out", gw.log())
        self.assertNotIn("ratelimit check timed out", gw.log())
        self.assertTrue(gw.alive())

    def test_pipelined_recipients(self):
        # Each RCPT waits for Redis; pipelined commands are answered in order all the same.
        gw = self.gateway('limit "rc" { key = { "sender_domain" } count = "recipients" '
                          'rate = "3/1h" }')
        c = harness.Chat(gw.port)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO pipe.test")[0], 250)
        c.send("MAIL FROM:<a@Pipe.example>\r\n" +
               "".join("RCPT TO:<u%d@example.com>\r\n" % i for i in range(5)) + "DATA\r\n")
        codes = [c.reply()[0] for _ in range(7)]
        self.assertEqual(codes, [250, 250, 250, 250, 450, 450, 354])
        c.send("Subject: p\r\n\r\nhi\r\n.\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        c.close()
        msgs = self.sink.messages()
        self.assertEqual(len(msgs), 1)
        self.assertEqual(msgs[0].count(b"X-Rcpt-Args:"), 3, msgs[0][:600])

    def test_counters_survive_reload_and_restart(self):
        gw = self.gateway(MSGS5)
        for i in range(3):
            self.assertIsNone(self.send(gw))
        os.kill(gw.proc.p.pid, signal.SIGHUP)
        self.assertTrue(self.wait_log(gw, "reloaded"), gw.log()[-2000:])
        for i in range(2):
            self.assertIsNone(self.send(gw), "after reload, message %d" % (i + 4))
        self.assertEqual(self.send(gw)[0], 450)
        # A new gateway process on the same Redis still refuses: the count is in Redis.
        gw.close()
        gw2 = self.gateway(MSGS5)
        self.assertEqual(self.send(gw2)[0], 450)
        self.assertEqual(len(self.sink.messages()), 5)

    def test_memory_store_same_answers(self):
        limits = ('limit "msgs" { key = { "client_ip" } count = "messages" rate = "3/1m" }\n'
                  'limit "rc" { key = { "sender" } count = "recipients" rate = "4/1m" }')
        got = []
        for store in (True, False):
            gw = self.gateway(limits, store=store)
            seq = []
            for i in range(6):
                r = self.send(gw, source="127.0.0.%d" % (10 + (i % 2) + (0 if store else 5)),
                              sender="s%d@x.example" % (1 if store else 2))
                seq.append(r[0] if r else 250)
            got.append(seq)
            gw.close()
        self.assertEqual(got[0], got[1])
        self.assertEqual(got[0], [250, 250, 250, 250, 450, 450])


if __name__ == "__main__":
    unittest.main(verbosity=2)
