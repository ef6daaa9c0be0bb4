#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_metrics.py - the Prometheus endpoint, read with the real parser.

A gateway in front of smtp-sink, with rules and a rate limit in Redis, handles deliveries and
refusals; /metrics is then parsed with python3-prometheus-client's text parser (Debian's) and
the numbers must match what happened. Also: off unless enabled, 404 elsewhere, a reload
counted, spool bytes back to zero, Redis health. The scrape cost with many open sessions is
printed (never asserted: timings are noisy).
"""
import os
import signal
import socket
import sys
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from test_logs import conf, send, MSG  # noqa: E402

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # Debian's package, when python3 is not Debian's
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        text_string_to_metric_families = None

RULES = ('rule blocked_sender at mail if from.domain == "spam.test" '
         'then reject 550 5.7.1 "Sender domain refused"\n'
         'rule tag log-only at header if header "Subject" == "tag-me" then score 1\n')


@unittest.skipIf(text_string_to_metric_families is None, "python3-prometheus-client missing")
class MetricsTests(unittest.TestCase):

    def setUp(self):
        self.tmp = h.tempdir()
        self.parts = []
        with open(os.path.join(self.tmp, "local.rules"), "w") as f:
            f.write(RULES)

    def tearDown(self):
        for p in reversed(self.parts):
            p.close()
        h.rmtree(self.tmp)

    def start(self, metrics=True, extra=""):
        self.mport = h.free_port()
        sink = h.Sink(self.tmp)
        self.parts.append(sink)
        m = f'metrics {{ enabled = true address = "127.0.0.1:{self.mport}" }}\n' if metrics else ""
        gw = h.Gateway(self.tmp, conf(sink.port, m + extra))
        self.parts.append(gw)
        return gw

    def scrape(self, path="/metrics"):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.mport}{path}", timeout=10) as r:
            self.assertEqual(r.status, 200)
            self.assertTrue(r.headers["Content-Type"].startswith("text/plain; version=0.0.4"))
            return r.read().decode()

    def samples(self, text):
        """{(sample name, frozenset(labels)): value} through the real parser."""
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    @staticmethod
    def get(samples, name, **labels):
        return samples.get((name, frozenset(labels.items())), 0)

    def test_counts_match_traffic(self):
        gw = self.start()
        time.sleep(0.2)
        # The harness probed the port once: count from here.
        before = self.samples(self.scrape())
        self.assertEqual(send(gw.port)[0], 250)
        self.assertEqual(send(gw.port, msg=MSG.replace("hello", "tag-me"))[0], 250)
        self.assertEqual(send(gw.port, sender="x@spam.test")[0], 550)
        self.assertEqual(send(gw.port, rcpts=("w@elsewhere.test",))[0], 554)
        time.sleep(0.3)  # the last session's end is counted after our QUIT
        text = self.scrape()
        s = self.samples(text)
        g = lambda name, **kw: self.get(s, name, **kw) - self.get(before, name, **kw)  # noqa: E731
        self.assertEqual(g("portcullis_connections_total", listener="in"), 4, text)
        self.assertEqual(g("portcullis_connections_active"), 0, text)
        self.assertEqual(g("portcullis_transactions_total", outcome="sent"), 2, text)
        self.assertEqual(g("portcullis_transactions_total", outcome="rejected"), 2, text)
        self.assertEqual(g("portcullis_recipients_total", outcome="sent"), 2, text)
        self.assertEqual(g("portcullis_recipients_total", outcome="rejected"), 2, text)
        self.assertEqual(g("portcullis_replies_total", **{"class": "5xx"}), 2, text)
        self.assertGreaterEqual(g("portcullis_replies_total", **{"class": "2xx"}), 10, text)
        self.assertEqual(g("portcullis_replies_total", **{"class": "3xx"}), 2, text)
        self.assertEqual(g("portcullis_verdicts_total", filter="rules", action="reject"), 1, text)
        self.assertEqual(g("portcullis_rule_hits_total", rule="blocked_sender"), 1, text)
        self.assertEqual(g("portcullis_rule_hits_total", rule="tag"), 1, text)
        # Histograms: every stage that ran, consistent buckets.
        self.assertEqual(g("portcullis_stage_duration_seconds_count", stage="connect"), 4, text)
        self.assertEqual(g("portcullis_stage_duration_seconds_bucket", stage="connect",
                           le="+Inf"), 4, text)
        self.assertEqual(g("portcullis_backend_reply_duration_seconds_count", command="data"),
                         2, text)
        self.assertGreater(g("portcullis_message_bytes_total"), 100, text)
        self.assertEqual(self.get(s, "portcullis_backend_up", backend="mta"), 1, text)
        self.assertEqual(g("portcullis_spool_bytes", where="memory"), 0, text)
        self.assertGreater(self.get(s, "portcullis_start_time_seconds"), 1.6e9, text)
        # Names follow the conventions: counters end in _total, durations in _seconds.
        for fam in text_string_to_metric_families(text):
            self.assertTrue(fam.name.startswith("portcullis_"), fam.name)
            if fam.type == "histogram":
                self.assertTrue(fam.name.endswith("_seconds"), fam.name)

    def test_spool_bytes_while_a_message_is_held(self):
        """A message in the middle of DATA is counted; a big one in the file."""
        gw = self.start(extra="limits { spool_threshold = 1024 }")
        c = h.Chat(gw.port)
        c.reply()
        for line in ("EHLO c.test", "MAIL FROM:<a@ok.test>", "RCPT TO:<u@example.com>", "DATA"):
            self.assertIn(c.cmd(line)[0], (250, 354))
        c.send("Subject: x\r\n\r\n" + "y" * 78 + "\r\n" * 1)
        c.send(("z" * 998 + "\r\n") * 10)
        time.sleep(0.3)
        s = self.samples(self.scrape())
        self.assertGreater(self.get(s, "portcullis_spool_bytes", where="file"), 5000)
        c.send(".\r\n")
        self.assertEqual(c.reply()[0], 250)
        c.cmd("QUIT")
        c.close()
        time.sleep(0.3)
        s = self.samples(self.scrape())
        self.assertEqual(self.get(s, "portcullis_spool_bytes", where="file"), 0)
        self.assertEqual(self.get(s, "portcullis_spool_bytes", where="memory"), 0)

    def test_reload_counted(self):
        gw = self.start()
        os.kill(gw.pid(), signal.SIGHUP)
        end = time.time() + 5
        while time.time() < end and "reloaded" not in gw.log():
            time.sleep(0.05)
        s = self.samples(self.scrape())
        self.assertEqual(self.get(s, "portcullis_reloads_total", result="ok"), 1)

    def test_off_by_default_and_only_metrics_path(self):
        gw = self.start(metrics=False)
        self.assertNotIn("metrics:", gw.log())
        gw2 = self.start()
        with self.assertRaises(urllib.error.HTTPError) as e:
            self.scrape("/")
        self.assertEqual(e.exception.code, 404)
        self.assertTrue(gw2.alive())

    def test_redis_and_dns_health(self):
        """The rate limit store's health and latency (a real redis-server, then killed), and
        DNS lookups that get no answer (nothing listens on the name server's port)."""
        rport, dead_ns = h.free_port(), h.free_port()
        redis = h.Proc(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", self.tmp],
                       log=os.path.join(self.tmp, "redis.log"))
        self.addCleanup(redis.stop, signal.SIGKILL)
        h.wait_port(rport)
        self.mport = h.free_port()
        sink = h.Sink(self.tmp)
        self.parts.append(sink)
        extra = (f'metrics {{ enabled = true address = "127.0.0.1:{self.mport}" }}\n'
                 f'dns {{ nameservers = {{ "127.0.0.1:{dead_ns}" }} timeout = 300ms }}\n'
                 f'ratelimit {{ store = "redis://127.0.0.1:{rport}/0" store_timeout = "300ms"\n'
                 ' on_error = "accept"\n'
                 ' limit "msgs" { key = { "client_ip" } count = "messages" rate = "50/1m" } }\n'
                 'rdns { on_error = "accept" }\n')
        gw = h.Gateway(self.tmp, conf(sink.port, extra, filters='"relay", "rdns", "ratelimit"'))
        self.parts.append(gw)
        self.assertEqual(send(gw.port)[0], 250)
        s = self.samples(self.scrape())
        server = f"127.0.0.1:{rport}"
        self.assertEqual(self.get(s, "portcullis_redis_up", server=server), 1, s)
        self.assertGreaterEqual(
            self.get(s, "portcullis_redis_request_duration_seconds_count", result="ok"), 1)
        self.assertGreaterEqual(
            self.get(s, "portcullis_dns_query_duration_seconds_count", result="trylater"), 1)
        redis.stop(signal.SIGKILL)
        self.assertEqual(send(gw.port)[0], 250)  # on_error = accept
        s = self.samples(self.scrape())
        self.assertEqual(self.get(s, "portcullis_redis_up", server=server), 0, s)
        self.assertGreaterEqual(
            self.get(s, "portcullis_redis_request_duration_seconds_count", result="error") +
            self.get(s, "portcullis_redis_request_duration_seconds_count", result="unavailable"),
            1, s)

    def test_backend_down(self):
        """A backend nobody listens on: errors counted, backend_up 0, the client hears 4xx."""
        self.mport = h.free_port()
        dead = h.free_port()
        m = f'metrics {{ enabled = true address = "127.0.0.1:{self.mport}" }}\n'
        gw = h.Gateway(self.tmp, conf(dead, m + "timeouts { backend_connect = 2s }"))
        self.parts.append(gw)
        code, _ = send(gw.port)
        self.assertEqual(code // 100, 4)
        s = self.samples(self.scrape())
        self.assertEqual(self.get(s, "portcullis_backend_up", backend="mta"), 0)
        self.assertGreaterEqual(self.get(s, "portcullis_backend_errors_total", command="mail"), 1)
        self.assertEqual(self.get(s, "portcullis_transactions_total", outcome="tempfail"), 1, s)

    def test_scrape_cost(self):
        """Print the time per scrape with 0 and 1000 open sessions (for the report; timings
        are noisy, so nothing is asserted but that every scrape parses)."""
        import http.client
        gw = self.start()
        for _ in range(3):
            send(gw.port)
        idle = []
        for n in (0, 1000):
            while len(idle) < n:
                idle.append(socket.create_connection(("127.0.0.1", gw.port)))
            time.sleep(0.5)
            conn = http.client.HTTPConnection("127.0.0.1", self.mport, timeout=10)
            k = 300
            t0 = time.perf_counter()
            for _ in range(k):
                conn.request("GET", "/metrics")
                r = conn.getresponse()
                body = r.read()
                self.assertEqual(r.status, 200)
            dt = (time.perf_counter() - t0) / k
            conn.close()
            self.assertTrue(list(text_string_to_metric_families(body.decode())))
            print(f"\nscrape: {n} open sessions, {len(body)} bytes, {dt * 1e3:.3f} ms per scrape "
                  "(one keep-alive connection, client time included)", file=sys.stderr)
        for s in idle:
            s.close()


if __name__ == "__main__":
    unittest.main()
