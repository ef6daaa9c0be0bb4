#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_greylist.py - the greylist filter end to end, through the SMTP proxy.

Real servers on loopback (tests/e2e/harness.py): redis-server, smtp-sink as the backend, two
gateways with the chain relay + greylist sharing one Redis, delays made short (2 s):

- the first attempt at gateway A gets 451 4.7.1 with the seconds to wait; a retry too early at
  gateway B is deferred too; after the delay the retry at B is accepted and reaches the backend,
  and so does another client of the same /24 at A (the key is shared in Redis);
- the relay filter's mynetworks (127.0.0.1) is not greylisted;
- Redis down: on_error = accept lets mail through (fact "greylist" = "error" logged),
  on_error = tempfail answers 451 4.3.0; no crash, and greylisting works again once Redis is back;
- the in-process store (no Redis) greylists and passes the same way;
- a real Postfix as the sending MTA (bound to 127.0.0.2) is deferred, retries on its own and
  gets the message through;
- GreylistSharedStores: the same two-gateway exchange with the store behind Redis Sentinel
  (three sentinels, `sentinels` + `sentinel_master`) and on a six-node Redis Cluster
  (`store = "redis-cluster://..."`): deferred (451 4.7.1) at A, accepted at B after the delay.

Run alone: PORTCULLIS_BIN=build/portcullis python3 tests/e2e/test_greylist.py
"""
import glob
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


class Greylist(unittest.TestCase):
    def setUp(self):
        self.tmp = harness.tempdir()
        self.addCleanup(harness.rmtree, self.tmp)
        self.sink = harness.Sink(self.tmp)
        self.addCleanup(self.sink.close)
        self.redis_port = harness.free_port()
        self.redis = None

    def start_redis(self):
        self.redis = harness.Proc(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.tmp],
            log=os.path.join(self.tmp, "redis%d.log" % time.time_ns()))
        self.addCleanup(self.redis.stop, signal.SIGKILL)
        harness.wait_port(self.redis_port)

    def gateway(self, on_error="tempfail", store=True, delay="2s"):
        store_line = 'store = "redis://127.0.0.1:%d/0"' % self.redis_port if store else ""
        extra = """greylist {
  %s
  store_timeout = "300ms"
  timeout = "20s"
  on_error = "%s"
  delay = "%s"
  retry_window = "1m"
  lifetime = "1h"
}
""" % (store_line, on_error, delay)
        conf = harness.gateway_conf(harness.backend_conf(self.sink.port, identity="none"),
                                    filters='"relay", "greylist"', extra=extra)
        gw = harness.Gateway(self.tmp, conf)
        self.addCleanup(gw.close)
        return gw

    def send(self, gw, source="127.0.0.2", sender="a@sender.example", rcpt="u@example.com"):
        """One message over its own connection: None when accepted, else (code, text)."""
        try:
            with smtplib.SMTP("127.0.0.1", gw.port, timeout=30,
                              source_address=(source, 0)) as s:
                s.sendmail(sender, [rcpt], "Subject: t\r\n\r\nhello\r\n")
            return None
        except smtplib.SMTPRecipientsRefused as e:
            code, text = list(e.recipients.values())[0]
            return (code, text.decode())
        except (smtplib.SMTPDataError, smtplib.SMTPConnectError) as e:
            return (e.smtp_code, e.smtp_error.decode())
        except smtplib.SMTPServerDisconnected as e:
            return (0, str(e))

    def test_two_gateways_share_redis(self):
        self.start_redis()
        a = self.gateway()
        b = self.gateway()
        code, text = self.send(a)
        self.assertEqual(code, 451, text)
        self.assertRegex(text, r"^4\.7\.1 <u@example.com>: Greylisted, try again in [12] seconds")
        code, text = self.send(b)  # too early, at the other gateway: the same record
        self.assertEqual(code, 451, text)
        self.assertEqual(len(self.sink.messages()), 0)
        time.sleep(2.2)
        self.assertIsNone(self.send(b))
        self.assertIsNone(self.send(a, source="127.0.0.3"))  # same /24, sender, recipient
        self.assertEqual(len(self.sink.messages()), 2)
        self.assertIn("greylist: retry from", b.log())
        # Another recipient is another triplet; the key in Redis is a digest under the prefix.
        self.assertEqual(self.send(a, rcpt="v@example.com")[0], 451)
        keys = subprocess.run(["redis-cli", "-p", str(self.redis_port), "--scan", "--pattern",
                               "portcullis:gl:*"], capture_output=True, text=True).stdout.split()
        self.assertEqual(len(keys), 2, keys)
        for k in keys:
            self.assertRegex(k, r"^portcullis:gl:[0-9a-f]{64}$")
        ttls = sorted(int(subprocess.run(["redis-cli", "-p", str(self.redis_port), "PTTL", k],
                                         capture_output=True, text=True).stdout) for k in keys)
        self.assertTrue(0 < ttls[0] <= 60000 and 60000 < ttls[1] <= 3600000, ttls)

    def test_trusted_client_not_greylisted(self):
        self.start_redis()
        gw = self.gateway()
        self.assertIsNone(self.send(gw, source="127.0.0.1"))
        self.assertEqual(len(self.sink.messages()), 1)

    def test_redis_down_on_error(self):
        # Nothing listens on the Redis port.
        acc = self.gateway(on_error="accept")
        self.assertIsNone(self.send(acc))
        self.assertIn("filter greylist could not decide", acc.log())
        tmp = self.gateway(on_error="tempfail")
        code, text = self.send(tmp)
        self.assertEqual(code, 451, text)
        self.assertTrue(text.startswith("4.3.0 Greylisting service unavailable"), text)
        self.assertEqual(len(self.sink.messages()), 1)
        # Redis comes up: greylisting works again without a restart of the gateways.
        self.start_redis()
        end = time.time() + 10
        while True:
            r = self.send(tmp, sender="b@sender.example")
            if r and r[0] == 451 and "4.7.1" in r[1]:
                break
            self.assertLess(time.time(), end, r)
            time.sleep(0.3)
        self.assertTrue(acc.alive() and tmp.alive())

    def test_in_process_store(self):
        gw = self.gateway(store=False)
        code, text = self.send(gw)
        self.assertEqual(code, 451, text)
        time.sleep(2.2)
        self.assertIsNone(self.send(gw))
        self.assertIsNone(self.send(gw))
        self.assertEqual(self.send(gw, sender="other@sender.example")[0], 451)
        self.assertEqual(len(self.sink.messages()), 2)

    def test_postfix_retries_through_greylisting(self):
        if os.geteuid() != 0 or not os.path.exists("/usr/sbin/postfix"):
            self.skipTest("needs root and postfix")
        self.start_redis()
        gw = self.gateway()
        pf = harness.PostfixSender(self.tmp, gw.port, bind="127.0.0.2")
        self.addCleanup(pf.close)
        with smtplib.SMTP("127.0.0.1", pf.port, timeout=30) as s:
            s.sendmail("a@sender.example", ["u@example.com"], "Subject: via postfix\r\n\r\nhi\r\n")
        end = time.time() + 60
        while not self.sink.messages() and time.time() < end:
            time.sleep(0.5)
            pf.flush()
        self.assertEqual(len(self.sink.messages()), 1, pf.log()[-3000:])
        log = pf.log()
        self.assertRegex(log, r"status=deferred .*451 4\.7\.1 <u@example.com>: Greylisted")
        self.assertIn("status=sent", log)
        self.assertIn("greylist: retry from", gw.log())


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port)] + list(args), capture_output=True,
                          text=True, timeout=20).stdout


class GreylistSharedStores(unittest.TestCase):
    """greylist { store } through the rate limit store factory: Sentinel and Cluster."""

    def setUp(self):
        if not shutil.which("redis-server"):
            self.skipTest("needs redis-server")
        self.tmp = harness.tempdir()
        self.addCleanup(harness.rmtree, self.tmp)
        self.sink = harness.Sink(self.tmp)
        self.addCleanup(self.sink.close)

    def redis(self, port, *extra, name="redis"):
        d = os.path.join(self.tmp, "%s-%d" % (name, port))
        os.mkdir(d)
        p = harness.Proc(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save",
                          "", "--appendonly", "no", "--dir", d] + list(extra),
                         log=os.path.join(d, "log"))
        self.addCleanup(p.stop, signal.SIGKILL)
        harness.wait_port(port)
        return p

    def gateway(self, store_lines):
        extra = """greylist {
  %s
  store_timeout = "500ms"
  timeout = "20s"
  delay = "2s"
  retry_window = "1m"
  lifetime = "1h"
}
""" % store_lines
        conf = harness.gateway_conf(harness.backend_conf(self.sink.port, identity="none"),
                                    filters='"relay", "greylist"', extra=extra)
        gw = harness.Gateway(self.tmp, conf)
        self.addCleanup(gw.close)
        return gw

    def send(self, gw, source="127.0.0.2"):
        return Greylist.send(self, gw, source=source)

    def exchange(self, a, b):
        """Deferred at A (retrying while the store connects), too early at B, passes at B."""
        end = time.time() + 15
        while True:
            r = self.send(a)
            if r and r[0] == 451 and "4.7.1" in r[1]:
                break
            self.assertLess(time.time(), end, r)  # 451 4.3.0 while the store still connects
            time.sleep(0.3)
        self.assertRegex(r[1], r"^4\.7\.1 <u@example.com>: Greylisted, try again in [12] seconds")
        code, text = self.send(b)
        self.assertEqual(code, 451, text)
        self.assertIn("4.7.1", text)
        self.assertEqual(len(self.sink.messages()), 0)
        time.sleep(2.2)
        self.assertIsNone(self.send(b))
        self.assertEqual(len(self.sink.messages()), 1)
        self.assertIn("greylist: retry from", b.log())

    def test_sentinel(self):
        mport = harness.free_port()
        self.redis(mport, name="master")
        sports = [harness.free_port() for _ in range(3)]
        for i, sp in enumerate(sports):
            conf = os.path.join(self.tmp, "sentinel%d.conf" % i)
            with open(conf, "w") as f:
                f.write("port %d\nbind 127.0.0.1\nsentinel monitor pcmaster 127.0.0.1 %d 2\n"
                        "sentinel down-after-milliseconds pcmaster 1000\n" % (sp, mport))
            p = harness.Proc(["redis-server", conf, "--sentinel"],
                             log=os.path.join(self.tmp, "sentinel%d.log" % i))
            self.addCleanup(p.stop, signal.SIGKILL)
            harness.wait_port(sp)
        lines = 'sentinels = { %s }\n  sentinel_master = "pcmaster"' % ", ".join(
            '"127.0.0.1:%d"' % sp for sp in sports)
        a, b = self.gateway(lines), self.gateway(lines)
        self.exchange(a, b)
        self.assertEqual(len(redis_cli(mport, "--scan", "--pattern", "portcullis:gl:*").split()),
                         1)

    def test_cluster(self):
        ports = [harness.free_port() for _ in range(6)]
        for p in ports:
            # The bus port would be port + 10000, maybe taken: choose it too.
            self.redis(p, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                       "--cluster-node-timeout", "1000", "--cluster-port",
                       str(harness.free_port()), name="node")
        r = subprocess.run(["redis-cli", "--cluster", "create"] +
                           ["127.0.0.1:%d" % p for p in ports] +
                           ["--cluster-replicas", "1", "--cluster-yes"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout[-800:] + r.stderr[-800:])
        end = time.time() + 20
        while not all("cluster_state:ok" in redis_cli(p, "CLUSTER", "INFO") for p in ports):
            self.assertLess(time.time(), end, "the cluster did not come up")
            time.sleep(0.1)
        # Seeds: one node each gateway; both learn the whole map from it.
        a = self.gateway('store = "redis-cluster://127.0.0.1:%d"' % ports[0])
        b = self.gateway('store = "redis-cluster://127.0.0.1:%d,127.0.0.1:%d"' % (ports[3],
                                                                                 ports[4]))
        self.exchange(a, b)
        held = [p for p in ports if redis_cli(p, "--scan", "--pattern", "portcullis:gl:*").split()
                and "role:master" in redis_cli(p, "INFO", "replication")]
        self.assertEqual(len(held), 1, "the greylist key lives on one master")


if __name__ == "__main__":
    unittest.main(verbosity=2)
