#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_proxy_protocol.py - PROXY protocol v1 and v2 in front of the gateway's listener.

A real HAProxy (tests/e2e/harness.py HAProxy, TCP mode, "send-proxy" and "send-proxy-v2") in
front of a listener with proxy_protocol = true and proxy_from = { "127.0.0.1/32" }; smtp-sink as
the backend. Clients bind loopback source addresses (127.0.0.7, 127.0.0.8) so the real client
differs from the proxy's address:

- through HAProxy (v1 and v2, IPv4 and IPv6 clients) the session's client is the real one: the
  log line shows it and the relay filter judges it (127.0.0.1 is in mynetworks, 127.0.0.7 not);
- the per-client connection limit counts the real client, not the proxy, and a closed session
  gives its slot back (no leak: sequential connections keep being admitted);
- a connection from outside proxy_from, garbage, a header cut short by the peer, and no header
  within proxy_timeout each close the connection without a greeting and with a log line;
- a header arriving in pieces is assembled; SMTP bytes after it stay for the session;
- HAProxy -> gateway -> a real Postfix backend (XCLIENT): Postfix logs the real client;
- HAProxy terminating TLS (v2 with proxy-v2-options ssl,ssl-cipher): the facts proxy.tls and
  proxy.tls_verified reach a rule, which refuses at RCPT; the plain path is not refused.

Run alone: PORTCULLIS_BIN=build/portcullis python3 tests/e2e/test_proxy_protocol.py
"""
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def has_v6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@unittest.skipUnless(shutil.which("haproxy"), "haproxy is not installed")
class ProxyProtocol(unittest.TestCase):
    def setUp(self):
        self.tmp = harness.tempdir()
        self.addCleanup(harness.rmtree, self.tmp)
        self.sink = harness.Sink(self.tmp)
        self.addCleanup(self.sink.close)

    def gateway(self, per_ip=50, timeout="5s", filters='"relay"', extra=""):
        conf = harness.gateway_conf(harness.backend_conf(self.sink.port, identity="none"),
                                    filters=filters, extra=extra)
        line = '  filters = { %s }\n' % filters
        conf = conf.replace(line, line + '  proxy_protocol = true\n'
                            '  proxy_from = { "127.0.0.1/32" }\n'
                            '  proxy_timeout = "%s"\n' % timeout)
        conf += ('limits {\n  max_connections_per_ip = %d\n  connection_limit_exceptions = { }\n}\n'
                 % per_ip)
        # The harness's readiness probe connects without a header: it is closed, and logged.
        gw = harness.Gateway(self.tmp, conf)
        self.addCleanup(gw.close)
        return gw

    def haproxy(self, gw, send):
        hp = harness.HAProxy(self.tmp, gw.port, send=send)
        self.addCleanup(hp.close)
        return hp

    def wait_log(self, gw, text, timeout=10.0):
        end = time.time() + timeout
        while time.time() < end:
            if text in gw.log():
                return True
            time.sleep(0.1)
        return False

    def relay_check(self, port, source, family=socket.AF_INET):
        """EHLO, MAIL, RCPT to a foreign domain through the proxy: the RCPT reply code."""
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        with smtplib.SMTP(host, port, timeout=20, source_address=(source, 0)) as s:
            s.ehlo("client.test")
            s.mail("a@sender.example")
            code, _ = s.rcpt("u@elsewhere.example")
            code2, _ = s.rcpt("u@example.com")
            self.assertEqual(code2, 250)
            return code

    def check_version(self, send, version):
        gw = self.gateway()
        hp = self.haproxy(gw, send)
        self.assertEqual(self.relay_check(hp.port, "127.0.0.7"), 554)
        self.assertTrue(self.wait_log(gw, "PROXY v%d from 127.0.0.1: client 127.0.0.7" % version))
        self.assertIn("connect from unknown[127.0.0.7]", gw.log())
        # The proxy's own address in mynetworks: a client there may relay (the header said so).
        self.assertEqual(self.relay_check(hp.port, "127.0.0.1"), 250)
        if has_v6_loopback():
            self.assertEqual(self.relay_check(hp.port, "::1", socket.AF_INET6), 554)
            self.assertTrue(self.wait_log(gw, "client ::1"))

    def test_haproxy_send_proxy_v1(self):
        self.check_version("send-proxy", 1)

    def test_haproxy_send_proxy_v2(self):
        self.check_version("send-proxy-v2", 2)

    def test_per_client_limit_counts_real_client(self):
        gw = self.gateway(per_ip=2)
        hp = self.haproxy(gw, "send-proxy-v2")
        a = [harness.Chat(hp.port, source="127.0.0.7") for _ in range(2)]
        for c in a:
            self.addCleanup(c.close)
            self.assertEqual(c.reply()[0], 220)
        third = harness.Chat(hp.port, source="127.0.0.7")
        self.addCleanup(third.close)
        code, text = third.reply()
        self.assertEqual(code, 421, text)
        self.assertIn("4.7.0", text)
        # Another client behind the same proxy is not counted with the first.
        other = harness.Chat(hp.port, source="127.0.0.8")
        self.addCleanup(other.close)
        self.assertEqual(other.reply()[0], 220)
        for c in a + [other]:
            c.cmd("QUIT")
            c.close()
        # Closed sessions give their slots back, to the address they were charged to.
        time.sleep(0.5)
        for i in range(5):
            c = harness.Chat(hp.port, source="127.0.0.7")
            self.assertEqual(c.reply()[0], 220, "connection %d" % i)
            c.cmd("QUIT")
            c.close()

    def test_refusals_close_with_log_line(self):
        gw = self.gateway(timeout="1s")
        # Not from a proxy we know: closed before anything is said.
        c = harness.Chat(gw.port, source="127.0.0.9")
        self.assertEqual(c.reply()[0], 0)
        c.close()
        self.assertTrue(self.wait_log(gw, "connection from 127.0.0.9, which is not in proxy_from"))
        # Garbage instead of a header.
        c = harness.Chat(gw.port)
        c.send("EHLO client.test\r\n")
        self.assertEqual(c.reply()[0], 0)
        c.close()
        self.assertTrue(self.wait_log(gw, "bad PROXY header from 127.0.0.1: not a PROXY"))
        # A v1 header that breaks the rules (a leading zero).
        c = harness.Chat(gw.port)
        c.send("PROXY TCP4 192.0.2.01 192.0.2.2 1000 25\r\n")
        self.assertEqual(c.reply()[0], 0)
        c.close()
        self.assertTrue(self.wait_log(gw, "v1: bad IPv4 address"))
        # Cut short by the peer.
        c = harness.Chat(gw.port)
        c.send(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00")
        c.s.shutdown(socket.SHUT_WR)
        self.assertEqual(c.reply()[0], 0)
        c.close()
        self.assertTrue(self.wait_log(gw, "closed before the end of the PROXY header"))
        # Nothing within proxy_timeout (1 s), even with a byte now and then: a deadline.
        c = harness.Chat(gw.port)
        t0 = time.time()
        for part in ("PROXY ", "TCP4 "):
            c.send(part)
            time.sleep(0.4)
        self.assertEqual(c.reply()[0], 0)
        self.assertLess(time.time() - t0, 5)
        c.close()
        self.assertTrue(self.wait_log(gw, "no complete PROXY header in time"))
        self.assertTrue(gw.alive())

    def test_tls_facts_from_v2(self):
        """HAProxy terminates TLS and passes its facts (SSL TLV); a rule reads them."""
        pem = os.path.join(self.tmp, "haproxy.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=mx.test", "-keyout", pem + ".key", "-out", pem + ".crt"],
                       check=True, capture_output=True)
        with open(pem, "w") as f:
            f.write(open(pem + ".crt").read() + open(pem + ".key").read())
        with open(os.path.join(self.tmp, "proxy.rules"), "w") as f:
            f.write('rule proxied_tls13 at mail\n'
                    '    if fact "proxy.tls" == "TLSv1.3" and fact "proxy.tls_verified" == "no"\n'
                    '    then reject 550 5.7.1 "seen TLSv1.3 at the proxy"\n')
        gw = self.gateway(filters='"relay", "rules"',
                          extra='rules { files = { "@TMP@/proxy.rules" } }\n')
        tls = harness.HAProxy(self.tmp, gw.port, send="send-proxy-v2 proxy-v2-options ssl,ssl-cipher",
                              tls_pem=pem)
        self.addCleanup(tls.close)
        plain = self.haproxy(gw, "send-proxy-v2")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        with smtplib.SMTP_SSL("127.0.0.1", tls.port, timeout=20, context=ctx,
                              source_address=("127.0.0.7", 0)) as s:
            s.ehlo("client.test")
            s.mail("a@sender.example")  # delay_reject: the refusal comes at RCPT
            code, text = s.rcpt("u@example.com")
            self.assertEqual(code, 550, text)
            self.assertIn(b"seen TLSv1.3 at the proxy", text)
        self.assertTrue(self.wait_log(gw, "client 127.0.0.7 tls=TLSv1.3"))
        with smtplib.SMTP("127.0.0.1", plain.port, timeout=20,
                          source_address=("127.0.0.7", 0)) as s:
            s.ehlo("client.test")
            s.mail("a@sender.example")
            self.assertEqual(s.rcpt("u@example.com")[0], 250)

    def test_real_client_reaches_postfix(self):
        """HAProxy -> gateway -> a real Postfix (XCLIENT): Postfix logs the client behind the
        balancer, not the balancer."""
        if os.geteuid() != 0 or not os.path.exists("/usr/sbin/postfix"):
            self.skipTest("needs root and postfix")
        pf = harness.Postfix(self.tmp)
        self.addCleanup(pf.close)
        conf = harness.gateway_conf(harness.backend_conf(pf.port))
        line = '  filters = { "relay" }\n'
        conf = conf.replace(line, line + '  proxy_protocol = true\n'
                            '  proxy_from = { "127.0.0.1/32" }\n')
        gw = harness.Gateway(self.tmp, conf)
        self.addCleanup(gw.close)
        hp = self.haproxy(gw, "send-proxy")
        with smtplib.SMTP("127.0.0.1", hp.port, timeout=30,
                          source_address=("127.0.0.7", 0)) as s:
            s.ehlo("client.test")
            s.mail("a@sender.example")
            self.assertEqual(s.rcpt("u@example.com")[0], 250)
            code, text = s.data("Subject: via haproxy\r\n\r\nhi\r\n")
            self.assertEqual(code, 250, text)
        qid = text.split()[-1].decode()
        end = time.time() + 10
        while time.time() < end and "%s: client=" % qid not in pf.log():
            time.sleep(0.2)
        self.assertIn("%s: client=unknown[127.0.0.7]" % qid, pf.log())

    def test_header_in_pieces_then_smtp(self):
        gw = self.gateway()
        c = harness.Chat(gw.port)
        self.addCleanup(c.close)
        c.send("PROXY TCP4 192.0.2.1 ")
        time.sleep(0.3)
        c.send("192.0.2.2 40000 25\r")
        time.sleep(0.3)
        c.send("\n")
        code, text = c.reply()
        self.assertEqual(code, 220, text)
        self.assertTrue(self.wait_log(gw, "connect from unknown[192.0.2.1]:40000"))
        self.assertEqual(c.cmd("EHLO client.test")[0], 250)
        c.cmd("QUIT")


if __name__ == "__main__":
    unittest.main(verbosity=2)
