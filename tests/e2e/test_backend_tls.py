#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_backend_tls.py - STARTTLS towards the backend (issue 9: backend "x" { tls = ... }).

A real Postfix with smtpd_tls_security_level = encrypt (a certificate for backend.test signed by
a CA made with openssl for the test) behind the gateway, XCLIENT authorised for 127.0.0.1 only as
README says:
  tls = encrypt and verify deliver (over TLS: Postfix logs the TLS connection and writes ESMTPS);
  verify with the wrong tls_name is a 4xx at MAIL and nothing is delivered;
  none gets Postfix's "530 Must issue a STARTTLS command first", which the client sees as 451;
  pooled connections (identity none) stay TLS: two sessions, one connection, both ESMTPS.
Faults no real peer produces on demand come from FakeMTA:
  a backend that says 220 to STARTTLS and then hangs up (handshake failure): encrypt gives the
  client 451 with no MAIL sent anywhere; may retries the same address in plaintext (as Postfix's
  smtp client does) and delivers;
  a backend whose EHLO lacks STARTTLS (stripped by a man in the middle, or never configured):
  encrypt gives 451 and sends no MAIL; may delivers in plaintext.
"""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def send_one(port, subject, rcpt="u@example.com", source="127.0.0.1"):
    """One message; returns (MAIL reply code, final reply code or None)."""
    c = h.Chat(port, source=source)
    try:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.example")[0] == 250
        r = c.cmd("MAIL FROM:<a@b.example>")
        if r[0] != 250:
            c.cmd("QUIT")
            return r[0], r
        rr = c.cmd(f"RCPT TO:<{rcpt}>")
        if rr[0] != 250:
            c.cmd("QUIT")
            return rr[0], rr
        assert c.cmd("DATA")[0] == 354
        c.send(f"Subject: {subject}\r\n\r\nbody\r\n.\r\n")
        final = c.reply()
        c.cmd("QUIT")
        return r[0], final
    finally:
        c.close()


def tls_backend(port, tls, identity="xclient", extra=""):
    return h.backend_block(port, identity, tls=tls, extra=extra)


@unittest.skipUnless(os.geteuid() == 0, "a private Postfix instance needs root")
class PostfixRequiresTls(h.PeersCase):
    @classmethod
    def start_peers(cls):
        cls.pf = cls.keep(h.Postfix(cls.tmp, tls="encrypt"))

    def delivered_with(self, subject, timeout=15):
        return h.wait_message(lambda: self.pf.delivered(timeout=0.5),
                              f"Subject: {subject}".encode(), timeout)

    def test_encrypt_delivers_over_tls(self):
        with h.Gateway(self.tmp, h.gateway_conf(tls_backend(self.pf.port, "encrypt"))) as gw:
            code, final = send_one(gw.port, "enc1", source="127.0.0.9")
            self.assertEqual(code, 250)
            self.assertEqual(final[0], 250, final)
            m = self.delivered_with("enc1")
            self.assertIsNotNone(m, self.pf.log()[-3000:])
            # Postfix's own Received header says the hop from us was TLS, and XCLIENT still
            # told it who the client was.
            self.assertRegex(m, rb"Received: from client\.example \(unknown \[127\.0\.0\.9\]\)\s+"
                                rb"\(using TLSv1\.[23] .*\s+.*\s+.*\s+by backend\.test \(Postfix\) "
                                rb"with ESMTPS")
            self.assertIn("TLS", gw.log())

    def test_large_spooled_message_over_tls_arrives_intact(self):
        # A body spooled to a file and with no line to stuff is sent from the spool without
        # sendfile under TLS (the bytes must be encrypted); one with dot lines is stuffed.
        lines = [b"%06d " % i + bytes(range(33, 127)) * 2 for i in range(3000)]
        extra = f'spool_dir = "{self.tmp}"\nlimits {{\n spool_threshold = 4096\n}}\n'
        conf = h.gateway_conf(tls_backend(self.pf.port, "encrypt"), extra=extra)
        with h.Gateway(self.tmp, conf) as gw:
            for subject, dots in (("big1", False), ("big2", True)):
                body = [(b"." + ln if dots and i % 5 == 0 else ln) for i, ln in enumerate(lines)]
                c = h.Chat(gw.port)
                try:
                    self.assertEqual(c.reply()[0], 220)
                    c.cmd("EHLO client.example")
                    self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
                    self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
                    self.assertEqual(c.cmd("DATA")[0], 354)
                    wire = b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n"
                                    for ln in body)
                    c.send(f"Subject: {subject}\r\n\r\n".encode() + wire + b".\r\n")
                    self.assertEqual(c.reply()[0], 250)
                    c.cmd("QUIT")
                finally:
                    c.close()
                m = self.delivered_with(subject)
                self.assertIsNotNone(m, self.pf.log()[-3000:])
                got = m.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1]
                self.assertEqual(got, b"".join(ln + b"\n" for ln in body))
            self.assertIn("TLS", gw.log())

    def test_verify_delivers(self):
        extra = f'  tls_ca = "{self.pf.tls["ca"]}"\n  tls_name = "backend.test"\n'
        with h.Gateway(self.tmp, h.gateway_conf(tls_backend(self.pf.port, "verify",
                                                            extra=extra))) as gw:
            code, final = send_one(gw.port, "ver1")
            self.assertEqual((code, final[0]), (250, 250), (final, gw.log()))
            self.assertIsNotNone(self.delivered_with("ver1"))
            self.assertIn("verified", gw.log())

    def test_verify_wrong_name_is_4xx_and_nothing_delivered(self):
        extra = f'  tls_ca = "{self.pf.tls["ca"]}"\n  tls_name = "other.test"\n'
        with h.Gateway(self.tmp, h.gateway_conf(tls_backend(self.pf.port, "verify",
                                                            extra=extra))) as gw:
            code, r = send_one(gw.port, "wrongname")
            self.assertEqual(code // 100, 4, r)
            self.assertRegex(gw.log(), "TLS handshake failed.*(verif|certificate)")
        self.assertIsNone(self.delivered_with("wrongname", timeout=2))

    def test_verify_wrong_ca_is_4xx(self):
        other = h.make_certs(os.path.join(self.tmp, "otherca"), "backend.test")
        extra = f'  tls_ca = "{other["ca"]}"\n  tls_name = "backend.test"\n'
        with h.Gateway(self.tmp, h.gateway_conf(tls_backend(self.pf.port, "verify",
                                                            extra=extra))) as gw:
            code, r = send_one(gw.port, "wrongca")
            self.assertEqual(code // 100, 4, r)
        self.assertIsNone(self.delivered_with("wrongca", timeout=2))

    def test_none_gets_530_as_451(self):
        with h.Gateway(self.tmp, h.gateway_conf(tls_backend(self.pf.port, "none"))) as gw:
            code, r = send_one(gw.port, "plain")
            self.assertEqual(code, 451, r)
            self.assertIn("4.7.0", r[1])
            self.assertIn("530", gw.log())
        self.assertIsNone(self.delivered_with("plain", timeout=2))

    def test_failed_handshake_fails_over_to_next_address(self):
        bad = h.FakeMTA(replies={"STARTTLS": ("REPLY_DROP", "220 2.0.0 Ready")},
                        ext=h.FakeMTA.EXT + ("STARTTLS",))
        try:
            be = (f'backend "mta" {{\n  address = {{ "127.0.0.1:{bad.port}", '
                  f'"127.0.0.1:{self.pf.port}" }}\n  tls = "encrypt"\n}}\n')
            with h.Gateway(self.tmp, h.gateway_conf(be)) as gw:
                code, final = send_one(gw.port, "failover")
                self.assertEqual((code, final[0]), (250, 250), (final, gw.log()))
        finally:
            bad.close()
        self.assertIsNotNone(self.delivered_with("failover"))
        self.assertFalse([c for c in bad.commands() if c.upper().startswith("MAIL")])

    def test_pooled_connection_keeps_tls(self):
        with h.Gateway(self.tmp, h.gateway_conf(tls_backend(self.pf.port, "encrypt",
                                                            identity="none"))) as gw:
            before = self.pf.log().count("connect from")
            for i in range(3):
                code, final = send_one(gw.port, f"pool{i}")
                self.assertEqual((code, final[0]), (250, 250), final)
            for i in range(3):
                m = self.delivered_with(f"pool{i}")
                self.assertIsNotNone(m)
                self.assertIn(b"with ESMTPS", m)
            # One connection (plus the capability probe) carried all three sessions.
            self.assertLessEqual(self.pf.log().count("connect from") - before, 2,
                                 self.pf.log()[-3000:])


class FakeTlsFaults(unittest.TestCase):
    STARTTLS_EXT = h.FakeMTA.EXT + ("STARTTLS",)

    def setUp(self):
        self.tmp = h.tempdir()

    def tearDown(self):
        h.rmtree(self.tmp)

    def run_fake(self, tls, ext, replies=None):
        fake = h.FakeMTA(replies=replies, ext=ext)
        try:
            with h.Gateway(self.tmp, h.gateway_conf(tls_backend(fake.port, tls))) as gw:
                code, final = send_one(gw.port, "fault")
                log = gw.log()
        finally:
            fake.close()
        return code, final, fake, log

    def mails(self, fake):
        return [c for c in fake.commands() if c.upper().startswith("MAIL")]

    def test_handshake_failure_encrypt_is_451_no_plaintext(self):
        code, r, fake, log = self.run_fake("encrypt", self.STARTTLS_EXT,
                                           {"STARTTLS": ("REPLY_DROP", "220 2.0.0 Ready")})
        self.assertEqual(code, 451, r)
        self.assertEqual(self.mails(fake), [])
        self.assertEqual(fake.accepted, [])
        self.assertIn("TLS handshake failed", log)

    def test_handshake_failure_may_retries_plaintext(self):
        code, final, fake, log = self.run_fake("may", self.STARTTLS_EXT,
                                               {"STARTTLS": ("REPLY_DROP", "220 2.0.0 Ready")})
        self.assertEqual((code, final[0]), (250, 250), (final, log))
        self.assertEqual(len(fake.accepted), 1)
        self.assertIn("retrying in plaintext", log)
        # The retry said no STARTTLS: one STARTTLS in all (probe aside, which never says it).
        self.assertEqual(sum(c == "STARTTLS" for c in fake.commands()), 1)

    def test_stripped_starttls_encrypt_is_451(self):
        code, r, fake, log = self.run_fake("encrypt", h.FakeMTA.EXT)
        self.assertEqual(code, 451, r)
        self.assertEqual(self.mails(fake), [])
        self.assertIn("STARTTLS not offered", log)

    def test_stripped_starttls_may_delivers_plaintext(self):
        code, final, fake, log = self.run_fake("may", h.FakeMTA.EXT)
        self.assertEqual((code, final[0]), (250, 250), (final, log))
        self.assertEqual(len(fake.accepted), 1)

    def test_starttls_refused_encrypt_is_451(self):
        code, r, fake, log = self.run_fake("encrypt", self.STARTTLS_EXT,
                                           {"STARTTLS": "454 4.7.0 TLS not available"})
        self.assertEqual(code, 451, r)
        self.assertEqual(self.mails(fake), [])


class TlsFake(h.Listener):
    """A backend that really speaks STARTTLS (Python's ssl, a certificate for backend.test) and
    appends `inject` to its 220 to STARTTLS, in the same write: a reply sent in plaintext that
    a client must never take for the answer to a command it sends under TLS."""

    def __init__(self, tmp, inject=b"", handshake_delay=0):
        import ssl
        self.certs = h.make_certs(os.path.join(tmp, "fakecerts"), "backend.test")
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(self.certs["cert"], self.certs["key"])
        self.inject = inject
        self.handshake_delay = handshake_delay
        self.log = []  # (connection number, tls?, line)
        self.accepted = 0
        super().__init__()

    def session(self, c, n):
        tls = False
        try:
            c.settimeout(10)
            c.sendall(b"220 backend.test ESMTP\r\n")
            f = c.makefile("rb")
            while True:
                line = f.readline()
                if not line:
                    return
                self.log.append((n, tls, line.strip().decode(errors="replace")))
                verb = line.split()[0].upper() if line.strip() else b""
                if verb == b"EHLO":
                    ext = b"" if tls else b"250-STARTTLS\r\n"
                    c.sendall(b"250-backend.test\r\n" + ext + b"250 PIPELINING\r\n")
                elif verb == b"STARTTLS" and not tls:
                    c.sendall(b"220 2.0.0 Ready to start TLS\r\n" + self.inject)
                    time.sleep(self.handshake_delay)
                    c = self.ctx.wrap_socket(c, server_side=True)
                    f = c.makefile("rb")
                    tls = True
                elif verb == b"DATA":
                    c.sendall(b"354 go\r\n")
                    while f.readline() not in (b".\r\n", b""):
                        pass
                    self.accepted += 1
                    c.sendall(b"250 2.0.0 queued as TLSFAKE\r\n")
                elif verb == b"QUIT":
                    c.sendall(b"221 bye\r\n")
                    return
                else:
                    c.sendall(b"250 ok\r\n")
        except OSError:
            pass
        finally:
            c.close()


class ResponseInjection(unittest.TestCase):
    """RFC 3207 4.2 seen from the client side: what follows the 220 to STARTTLS was sent before
    TLS and is discarded, never read as the reply to the EHLO we send under TLS."""

    def setUp(self):
        self.tmp = h.tempdir()

    def tearDown(self):
        h.rmtree(self.tmp)

    def test_injected_reply_after_220_is_discarded(self):
        # Would the injected 250 answer our EHLO under TLS, the real EHLO reply would then be
        # a surplus and MAIL would meet the wrong reply: the transaction would fail.
        fake = TlsFake(self.tmp, inject=b"250-backend.test\r\n250 XCLIENT ADDR NAME\r\n")
        try:
            extra = f'  tls_ca = "{fake.certs["ca"]}"\n  tls_name = "backend.test"\n'
            conf = h.gateway_conf(tls_backend(fake.port, "verify", identity="none", extra=extra))
            with h.Gateway(self.tmp, conf) as gw:
                code, final = send_one(gw.port, "inj")
                log = gw.log()
        finally:
            fake.close()
        self.assertEqual((code, final[0]), (250, 250), (final, log))
        self.assertEqual(fake.accepted, 1)
        # MAIL went only under TLS, and no XCLIENT (offered by the injection only) was sent.
        mails = [(n, tls) for n, tls, line in fake.log if line.upper().startswith("MAIL")]
        self.assertTrue(mails and all(tls for _, tls in mails), fake.log)
        self.assertFalse([x for x in fake.log if x[2].upper().startswith("XCLIENT")], fake.log)


class ClientGoneDuringHandshake(unittest.TestCase):
    """The client hangs up while the gateway's handshake with the backend is still running: the
    backend object outlives the session until the handshake ends (no use after free: run it
    with the ASan build), and the gateway serves the next client."""

    def setUp(self):
        self.tmp = h.tempdir()

    def tearDown(self):
        h.rmtree(self.tmp)

    def test_client_gone_mid_handshake(self):
        fake = TlsFake(self.tmp, handshake_delay=1.5)
        try:
            conf = h.gateway_conf(tls_backend(fake.port, "encrypt", identity="none"))
            with h.Gateway(self.tmp, conf) as gw:
                c = h.Chat(gw.port)
                assert c.reply()[0] == 220
                assert c.cmd("EHLO client.example")[0] == 250
                c.send("MAIL FROM:<a@b.example>\r\n")
                time.sleep(0.5)  # the gateway is in the handshake now
                c.close()
                time.sleep(2.5)  # the handshake ends (or times out) with nobody waiting
                self.assertTrue(gw.alive())
                fake.handshake_delay = 0
                code, final = send_one(gw.port, "after")
                self.assertEqual((code, final[0]), (250, 250), (final, gw.log()))
        finally:
            fake.close()


if __name__ == "__main__":
    unittest.main()
