#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_backend_peers.py - the backend side against real peers: identity and capabilities.

Postfix is configured as README tells a postmaster: XCLIENT (and XFORWARD) authorised for the
gateway's own address only, 127.0.0.1, which is where the gateway's connections to it come from.
Postfix checks XCLIENT authorisation against the client XCLIENT has set, so a connection that
spoke for one client cannot be switched to the next: each client must reach Postfix with its own
address and HELO on every transaction, reused connections or not, and a client that Postfix's
check_client_access refuses is refused whatever came before.

Capabilities: the gateway learns the backend's EHLO (a probe at start and at reload) and never
offers or accepts SMTPUTF8 or DSN that the backend does not take (smtp-sink -N has no DSN).
Memory: 1,000 reloads with traffic keep RSS within a bound (pooled backend connections must not
keep old configuration generations alive).
"""
import os
import re
import signal
import smtplib
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def wait_for(cond, timeout=15.0):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    return cond()


def session(port, src, helo, msgs, rcpt="u@example.com", mail_params=""):
    """One client session from src: EHLO helo, then each (subject, helo-or-None) message; a
    new HELO name before a message when given. Returns [(rcpt reply, final reply)]."""
    c = h.Chat(port, source=src)
    out = []
    try:
        assert c.reply()[0] == 220
        assert c.cmd(f"EHLO {helo}")[0] == 250
        for subject, new_helo in msgs:
            if new_helo:
                assert c.cmd(f"EHLO {new_helo}")[0] == 250
            r = c.cmd(f"MAIL FROM:<a@b.example>{mail_params}")
            if r[0] != 250:
                out.append((r, r))
                continue
            rr = c.cmd(f"RCPT TO:<{rcpt}>")
            if rr[0] != 250:
                c.cmd("RSET")
                out.append((rr, rr))
                continue
            assert c.cmd("DATA")[0] == 354
            c.send(f"Subject: {subject}\r\n\r\nbody\r\n.\r\n")
            out.append((rr, c.reply()))
        c.cmd("QUIT")
    finally:
        c.close()
    return out


@unittest.skipUnless(os.geteuid() == 0, "a private Postfix instance needs root")
class PostfixIdentityTests(h.PeersCase):
    """Issue 12 items 1 and 2, issue 13 section 6, with a real Postfix."""

    @classmethod
    def start_peers(cls):
        cls.pf = cls.keep(h.Postfix(cls.tmp))

    def delivered(self, subject, timeout=15.0):
        def find():
            got = [m for m in self.pf.delivered(timeout=0) if f"Subject: {subject}\n".encode() in m]
            return got or None
        return wait_for(find, timeout) or []

    def postfix_received(self, msg):
        """Postfix's own Received header (the first one)."""
        return msg.split(b"Received: from", 2)[1].split(b"by backend.test", 1)[0]

    def test_each_client_own_identity_and_helo_every_transaction(self):
        gw = h.Gateway(self.tmp, h.gateway_conf(h.backend_conf(self.pf.port)))
        self.addCleanup(gw.close)
        refused = h.Postfix.REFUSED
        # In turn, one after the other (so that an idle connection to Postfix would be reused):
        # allowed clients, the client Postfix refuses, an allowed one again, and one session
        # with two transactions and a new HELO name before the second.
        plan = [("127.0.0.2", "helo-two.test", [("id-a", None)]),
                ("127.0.0.3", "helo-three.test", [("id-b", None)]),
                (refused, "helo-refused.test", [("id-c", None)]),
                ("127.0.0.2", "helo-two-again.test", [("id-d", None)]),
                ("127.0.0.5", "first-name.test", [("id-e", None), ("id-f", "second-name.test")])]
        results = {}
        for src, helo, msgs in plan:
            for (subject, new_helo), (rr, final) in zip(msgs, session(gw.port, src, helo, msgs)):
                results[subject] = (src, new_helo or helo, rr, final)
        # The refused client is refused, right after an allowed one, with Postfix's own reply.
        src, helo, rr, final = results.pop("id-c")
        self.assertEqual((rr[0], rr[1][4:9]), (554, "5.7.1"), rr)
        self.assertRegex(self.pf.log(), rf"reject: RCPT from unknown\[{re.escape(refused)}\]: 554 "
                                        rf"5\.7\.1 .*helo=<helo-refused\.test>")
        for subject, (src, helo, rr, final) in results.items():
            with self.subTest(subject=subject, client=src, helo=helo):
                self.assertEqual(final[0], 250, final)
                qid = final[1].split()[-1]
                # Postfix's log: this transaction came from the real client...
                self.assertTrue(wait_for(lambda: f"{qid}: client=unknown[{src}]" in self.pf.log()),
                                self.pf.log()[-3000:])
                # ...and its Received header names the client's own HELO and address.
                msgs = self.delivered(subject)
                self.assertEqual(len(msgs), 1, subject)
                self.assertIn(f" {helo} (unknown [{src}])".encode(), self.postfix_received(msgs[0]))
        # The gateway reaches Postfix from 127.0.0.1 only, the one address XCLIENT trusts.
        conns = re.findall(r"smtpd\[\d+\]: connect from (\S+)", self.pf.log())
        self.assertTrue(conns)
        self.assertEqual(set(conns), {"localhost[127.0.0.1]"}, conns)
        self.assertTrue(gw.alive())

    def test_xforward_every_transaction_and_new_helo(self):
        # identity = "xforward": Postfix resets XFORWARD attributes after each transaction,
        # so each transaction of a session carries them again (orig_client in Postfix's log).
        gw = h.Gateway(self.tmp, h.gateway_conf(h.backend_conf(self.pf.port, identity="xforward")))
        self.addCleanup(gw.close)
        msgs = [("xf-1", None), ("xf-2", None), ("xf-3", "xf-new-name.test")]
        out = session(gw.port, "127.0.0.7", "xf-name.test", msgs)
        for (subject, _), (rr, final) in zip(msgs, out):
            with self.subTest(subject=subject):
                self.assertEqual(final[0], 250, final)
                qid = final[1].split()[-1]
                self.assertTrue(wait_for(lambda: re.search(
                    rf"{qid}: client=\S+, orig_client=unknown\[127\.0\.0\.7\]", self.pf.log())),
                    self.pf.log()[-3000:])
        m = self.delivered("xf-3")
        self.assertEqual(len(m), 1)
        self.assertIn(b"xf-new-name.test", m[0].split(b"by gw.test", 1)[0])

    def test_capabilities_probed_before_the_first_client(self):
        # Postfix offers DSN and SMTPUTF8: the very first EHLO after start says so, and DSN
        # requests reach Postfix (its "sender delivery status notification" for NOTIFY=SUCCESS).
        gw = h.Gateway(self.tmp, h.gateway_conf(h.backend_conf(self.pf.port)))
        self.addCleanup(gw.close)
        self.assertIn("offers", gw.log())
        s = smtplib.SMTP("127.0.0.1", gw.port, timeout=10, source_address=("127.0.0.8", 0))
        s.ehlo("dsn.test")
        self.assertTrue(s.has_extn("dsn"), s.esmtp_features)
        self.assertTrue(s.has_extn("smtputf8"), s.esmtp_features)
        s.mail("a@b.example", ["RET=HDRS", "ENVID=env123"])
        code, _ = s.rcpt("u@example.com", ["NOTIFY=SUCCESS", "ORCPT=rfc822;u@example.com"])
        self.assertEqual(code, 250)
        code, text = s.data(b"Subject: dsn-probe\r\n\r\nbody\r\n")
        self.assertEqual(code, 250, text)
        s.quit()
        qid = text.split()[-1].decode()
        self.assertTrue(wait_for(lambda: f"{qid}: sender delivery status notification"
                                 in self.pf.log()), self.pf.log()[-3000:])


class CapabilityTests(unittest.TestCase):
    """Issue 12 item 5: advertise and accept only what the backend takes."""

    def setUp(self):
        self.tmp = h.tempdir()
        self.addCleanup(h.rmtree, self.tmp)

    def test_backend_without_dsn(self):
        sink = h.Sink(self.tmp, flags=("N",))  # smtp-sink without DSN
        self.addCleanup(sink.close)
        gw = h.Gateway(self.tmp, h.gateway_conf(h.backend_conf(sink.port, identity="none")))
        self.addCleanup(gw.close)
        c = h.Chat(gw.port)
        self.addCleanup(c.close)
        c.reply()
        code, text = c.cmd("EHLO first.test")  # the first client after start
        self.assertEqual(code, 250)
        self.assertNotIn("DSN", text.split("\n"), text)
        # DSN requests the path cannot honour are refused, not accepted and dropped.
        for mail in ("MAIL FROM:<a@b.example> RET=HDRS", "MAIL FROM:<a@b.example> ENVID=x1"):
            r = c.cmd(mail)
            self.assertEqual((r[0], r[1][4:9]), (555, "5.5.4"), (mail, r))
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        for rcpt in ("RCPT TO:<u@example.com> NOTIFY=NEVER",
                     "RCPT TO:<u@example.com> ORCPT=rfc822;u@example.com"):
            r = c.cmd(rcpt)
            self.assertEqual((r[0], r[1][4:9]), (555, "5.5.4"), (rcpt, r))
        self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send("Subject: no-dsn\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(len(sink.messages()), 1)

    def test_backend_that_loses_dsn_after_the_probe(self):
        # The probe saw DSN; the real connection does not: 451 4.3.3 (the client retries and
        # our EHLO no longer offers DSN), never a 250 that drops the request.
        mta = h.FakeMTA()
        self.addCleanup(mta.close)
        gw = h.Gateway(self.tmp, h.gateway_conf(h.backend_conf(mta.port, identity="none")))
        self.addCleanup(gw.close)
        s = smtplib.SMTP("127.0.0.1", gw.port, timeout=10)
        s.ehlo("x")
        self.assertTrue(s.has_extn("dsn"))
        mta.ext = tuple(e for e in h.FakeMTA.EXT if e != "DSN")
        code, text = s.mail("a@b.example", ["RET=FULL"])
        self.assertEqual((code, text[:5]), (451, b"4.3.3"), text)
        s.ehlo("x")
        self.assertFalse(s.has_extn("dsn"), s.esmtp_features)
        s.quit()
        self.assertFalse(any("RET=" in c for c in mta.commands()))

    def test_reload_probes_the_new_backend(self):
        good = h.FakeMTA()
        self.addCleanup(good.close)
        sink = h.Sink(self.tmp, flags=("N",))
        self.addCleanup(sink.close)
        conf = h.gateway_conf(h.backend_conf(good.port, identity="none"))
        gw = h.Gateway(self.tmp, conf)
        self.addCleanup(gw.close)

        def ehlo():
            s = smtplib.SMTP("127.0.0.1", gw.port, timeout=10)
            s.ehlo("x")
            features = dict(s.esmtp_features)
            s.quit()
            return features

        self.assertIn("dsn", ehlo())
        with open(gw.path, "w") as f:
            f.write(h.gateway_conf(h.backend_conf(sink.port, identity="none"))
                    .replace("@PORT@", str(gw.port)))
        gw.proc.p.send_signal(signal.SIGHUP)
        self.assertTrue(wait_for(lambda: gw.log().count("offers") >= 2, 10), gw.log())
        self.assertNotIn("dsn", ehlo())


    def test_silent_backend_start_bounded_and_safe(self):
        # A backend that never greets: the start waits for the probe a bounded time, then
        # serves, offering neither DSN nor SMTPUTF8 (unknown means only what is safe).
        mta = h.FakeMTA(replies={"CONNECT": ("DELAY", 20, "220 late")})
        self.addCleanup(mta.close)
        t0 = time.monotonic()
        gw = h.Gateway(self.tmp, h.gateway_conf(h.backend_conf(mta.port, identity="none")))
        self.addCleanup(gw.close)
        self.assertLess(time.monotonic() - t0, 9.0)
        self.assertIn("capabilities unknown", gw.log())
        s = smtplib.SMTP("127.0.0.1", gw.port, timeout=10)
        s.ehlo("x")
        self.assertFalse(s.has_extn("dsn") or s.has_extn("smtputf8"), s.esmtp_features)
        s.quit()


class ReloadMemoryTests(unittest.TestCase):
    """Issue 13 section 3: idle pooled backend connections must not pin old configuration
    generations (RSS grew about 16 MB over 300 reloads with traffic before)."""

    def test_rss_flat_over_1000_reloads_with_traffic(self):
        tmp = h.tempdir()
        self.addCleanup(h.rmtree, tmp)
        mta = h.FakeMTA()
        self.addCleanup(mta.close)
        gw = h.Gateway(tmp, h.gateway_conf(h.backend_conf(mta.port, identity="none")))
        self.addCleanup(gw.close)

        def rss():
            with open(f"/proc/{gw.pid()}/status") as f:
                return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS"))

        def send():
            s = smtplib.SMTP("127.0.0.1", gw.port, timeout=10)
            s.ehlo("x")
            s.sendmail("a@b.example", ["u@example.com"], b"Subject: r\r\n\r\nx\r\n")
            s.quit()

        with open(f"/proc/{gw.pid()}/maps") as f:
            if "libasan" in f.read():
                self.skipTest("under ASan, RSS measures its quarantine of freed memory")
        send()
        before = rss()
        for i in range(1000):
            gw.proc.p.send_signal(signal.SIGHUP)
            send()  # a round trip: the signal has been handled before the next one
        grown = rss() - before
        self.assertGreaterEqual(gw.log().count("reloaded"), 1000)
        self.assertEqual(len(mta.accepted), 1001)
        self.assertTrue(gw.alive())
        self.assertLess(grown, 6 * 1024, f"RSS grew by {grown} KB over 1000 reloads")


if __name__ == "__main__":
    unittest.main(verbosity=1)
