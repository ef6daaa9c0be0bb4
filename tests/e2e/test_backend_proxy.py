#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_backend_proxy.py - PROXY protocol identity towards the backend (issue 15).

backend "x" { identity = "proxy" } (v2) or "proxy-v1": the header with the real client's address
and port is the first thing on every new backend connection, before the greeting is read, and such
connections are never pooled (each speaks for one client).

A real Exim 4.96 (Debian's heavy build: the light one has no PROXY support) configured as
deploy/exim/README says (hosts_proxy = 127.0.0.1, recipients verified, the gateway's sessions
recognised as proxied ones) logs and writes into its Received header the real client, 127.0.0.5
or 127.0.0.6, never the gateway's 127.0.0.1. Without the header (identity = "none") Exim refuses
the connection and the client gets a 4xx: nothing is lost.
"""
import os
import re
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from test_backend_tls import send_one  # noqa: E402

PP2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_backend(port, identity):
    return h.backend_block(port, identity)


@unittest.skipUnless(os.geteuid() == 0, "a private Exim instance needs root")
class EximBehindGateway(h.PeersCase):
    @classmethod
    def start_peers(cls):
        cls.exim = cls.keep(h.EximInstance(cls.tmp, hosts_proxy="127.0.0.1"))

    def received_for(self, subject, timeout=10):
        return h.wait_message(lambda: self.exim.messages("u"), f"Subject: {subject}".encode(),
                              timeout, pause=0.2)

    def check_real_client(self, identity):
        with h.Gateway(self.tmp, h.gateway_conf(proxy_backend(self.exim.port, identity))) as gw:
            # Two clients one after the other: a pooled connection would carry the first
            # client's header for the second.
            for src, subject in (("127.0.0.5", f"{identity}-a"), ("127.0.0.6", f"{identity}-b")):
                code, final = send_one(gw.port, subject, source=src)
                self.assertEqual((code, final[0]), (250, 250), (final, gw.log()[-2000:]))
                m = self.received_for(subject)
                self.assertIsNotNone(m, self.exim.log()[-2000:])
                top = re.search(rb"^Received: (.*?)\n(?![ \t])", m, re.S | re.M).group(1)
                self.assertRegex(top, rb"^from \[" + re.escape(src.encode()) + rb"\]",
                                 m.decode(errors="replace")[:600])
                qid = final[1].split("id=")[-1].strip()
                self.assertRegex(self.exim.log(), re.escape(qid) + r" <= a@b\.example H=\(gw\.test\) \[" +
                                 re.escape(src) + r"\]")

    def test_proxy_v2_shows_real_client(self):
        self.check_real_client("proxy")

    def test_proxy_v1_shows_real_client(self):
        self.check_real_client("proxy-v1")

    def test_direct_client_is_not_taken_for_the_gateway(self):
        # The recipe's ACL trusts proxied sessions only: a client reaching Exim itself (not
        # from hosts_proxy, so no header) relays nothing.
        import smtplib
        with smtplib.SMTP("127.0.0.1", self.exim.port, timeout=10,
                          source_address=("127.0.0.5", 0)) as s:
            s.ehlo("direct.example")
            self.assertEqual(s.mail("a@b.example")[0], 250)
            self.assertEqual(s.rcpt("u@example.com")[0] // 100, 5)

    def test_without_header_exim_refuses_and_client_gets_4xx(self):
        with h.Gateway(self.tmp, h.gateway_conf(proxy_backend(self.exim.port, "none"))) as gw:
            code, r = send_one(gw.port, "noheader", source="127.0.0.5")
            self.assertEqual(code // 100, 4, r)
        self.assertIsNone(self.received_for("noheader", timeout=1))


class FirstBytesBackend(h.Listener):
    """A backend that records what arrives before it greets (first: bytes, per connection)."""

    def __init__(self):
        self.first = []
        super().__init__()

    def session(self, c, n):
        c.settimeout(5)
        try:
            time.sleep(0.3)  # everything the gateway writes before our greeting is here now
            self.first.append(c.recv(4096))
            c.sendall(b"220 pp.test ESMTP\r\n")
            f = c.makefile("rb")
            while True:
                line = f.readline()
                if not line:
                    return
                verb = line.split()[0].upper() if line.strip() else b""
                if verb == b"EHLO":
                    c.sendall(b"250-pp.test\r\n250 PIPELINING\r\n")
                elif verb == b"DATA":
                    c.sendall(b"354 go\r\n")
                    while f.readline() not in (b".\r\n", b""):
                        pass
                    c.sendall(b"250 2.0.0 queued\r\n")
                elif verb == b"QUIT":
                    c.sendall(b"221 bye\r\n")
                    return
                else:
                    c.sendall(b"250 ok\r\n")
        except OSError:
            pass
        finally:
            c.close()


class HeaderFirst(unittest.TestCase):
    """A listener that records what arrives before it greets: the header, whole, and nothing
    else; one connection per client session (never pooled)."""

    def setUp(self):
        self.tmp = h.tempdir()
        self.backend = FirstBytesBackend()
        self.port = self.backend.port
        self.first = self.backend.first  # bytes before the greeting, per connection

    def tearDown(self):
        self.backend.close()
        h.rmtree(self.tmp)

    def run_identity(self, identity):
        with h.Gateway(self.tmp, h.gateway_conf(proxy_backend(self.port, identity))) as gw:
            for src in ("127.0.0.5", "127.0.0.6"):
                code, final = send_one(gw.port, "x", source=src)
                self.assertEqual((code, final[0]), (250, 250), (final, gw.log()[-1500:]))
            gw_port = gw.port
        # The probe's header names the gateway itself; then one connection per session.
        return self.first[1:], gw_port

    def test_v2_header_first_and_never_pooled(self):
        firsts, gw_port = self.run_identity("proxy")
        self.assertEqual(len(firsts), 2, firsts)
        for src, got in zip(("127.0.0.5", "127.0.0.6"), firsts):
            self.assertTrue(got.startswith(PP2_SIG), got)
            self.assertEqual(got[12:14], b"\x21\x11")  # v2 PROXY, TCP over IPv4
            n = int.from_bytes(got[14:16], "big")
            self.assertEqual(len(got), 16 + n, "bytes after the header before the greeting")
            self.assertEqual(socket.inet_ntoa(got[16:20]), src)
            self.assertEqual(socket.inet_ntoa(got[20:24]), "127.0.0.1")
            self.assertEqual(int.from_bytes(got[26:28], "big"), gw_port)

    def test_v1_header_first_and_never_pooled(self):
        firsts, gw_port = self.run_identity("proxy-v1")
        self.assertEqual(len(firsts), 2, firsts)
        for src, got in zip(("127.0.0.5", "127.0.0.6"), firsts):
            self.assertRegex(got.decode(), rf"^PROXY TCP4 {re.escape(src)} 127\.0\.0\.1 \d+ "
                                           rf"{gw_port}\r\n$")

    def first_header_v1(self, conf, chat):
        """The v1 header on the backend connection of one session that chat() drives."""
        with h.Gateway(self.tmp, conf) as gw:
            with h.Chat(gw.port) as c:
                chat(c)
                self.assertEqual(c.reply()[0], 220)
                self.assertEqual(c.cmd("EHLO client.example")[0], 250)
                self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
                self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250, gw.log()[-1500:])
                c.cmd("QUIT")
            port = gw.port
        return self.first[1:], port

    def test_destination_is_the_socket_not_the_configured_name(self):
        # The listener is configured by name; the header names the address the client reached.
        conf = h.gateway_conf(proxy_backend(self.port, "proxy-v1"))
        conf = conf.replace('"127.0.0.1:@PORT@"', '"localhost:@PORT@"', 1)
        firsts, port = self.first_header_v1(conf, lambda c: None)
        self.assertEqual(len(firsts), 1, firsts)
        self.assertRegex(firsts[0].decode(), rf"^PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 \d+ "
                                             rf"{port}\r\n$")

    def test_destination_from_an_inbound_proxy_header(self):
        # Behind a proxy, the client connected to the proxy's front: its header's destination.
        conf = h.gateway_conf(proxy_backend(self.port, "proxy-v1"))
        conf = conf.replace('  backend = "mta"\n', '  backend = "mta"\n  proxy_protocol = true\n'
                            '  proxy_from = { "127.0.0.1/32" }\n', 1)
        firsts, _ = self.first_header_v1(
            conf, lambda c: c.send(b"PROXY TCP4 192.0.2.7 198.51.100.25 40000 25\r\n"))
        self.assertEqual(firsts, [b"PROXY TCP4 192.0.2.7 198.51.100.25 40000 25\r\n"], firsts)


if __name__ == "__main__":
    unittest.main()
