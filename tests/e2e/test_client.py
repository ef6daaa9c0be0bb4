#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_client.py - the client side against real senders: half-close, NUL, signals, EMFILE.

HalfCloseTests  a client that shuts down its sending side (as Exim 4.96 does after pipelining
                QUIT behind the final dot) still gets every reply: after the dot, mid-pipeline,
                after QUIT; EOF in the middle of DATA abandons the message (nothing delivered).
EximTests       a real Exim 4.96 as the sending MTA (its own queue) delivering through the
                gateway to a real Exim backend (identity = "none", deploy/exim/README's ACL):
                every message arrives exactly once and leaves Exim's queue.
NulTests        NUL in content never reaches the backend: 550 5.6.0 by default, stripped with
                nul = "strip"; CR LF NUL . CR LF and CR LF . NUL CR LF never end the data.
ReceivedTests   the with-protocol of our Received header is RFC 6531's UTF8SMTP.
LmtpTests       Dovecot LMTP refusing some recipients after the data (quota, broken mailbox)
                behind a retrying Exim or Postfix (1 s retries, for a bounded time): one copy
                per good recipient, the 552 bounces, the broken mailbox stays queued.
ProcessTests    SIGUSR1 does not kill; during the SIGTERM drain a new client hears 421 4.3.2
                at once; EMFILE at accept pauses the listener (bounded CPU and log lines).
The backend for the wire tests is harness.FakeMTA (it records exact bytes).
"""
import os
import re
import resource
import signal
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def ecode(reply):
    """The enhanced status code of a reply's last line ("" if none)."""
    last = reply[1].splitlines()[-1] if reply[1] else ""
    m = re.match(r"^\d{3}[ -](\d\.\d{1,3}\.\d{1,3})\b", last)
    return m.group(1) if m else ""


def replies_until_eof(chat, limit=20):
    """Every reply until the server closes (or times out)."""
    out = []
    for _ in range(limit):
        r = chat.reply()
        if r[0] in (0, -1):
            out.append(r[0])
            return out
        out.append(r[0])
    return out


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = h.tempdir()
        self.addCleanup(h.rmtree, self.tmp)

    def mta(self, **kw):
        m = h.FakeMTA(**kw)
        self.addCleanup(m.close)
        return m

    def gateway(self, backend_port, identity="xclient", extra=""):
        gw = h.Gateway(self.tmp, h.gateway_conf(h.backend_conf(backend_port, identity),
                                                extra=extra))
        self.addCleanup(gw.close)
        return gw

    def chat(self, gw):
        c = h.Chat(gw.port)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO client.test")[0], 250)
        return c


class HalfCloseTests(Base):
    """EOF on the read side means "no more commands", not "nobody listens"."""

    def test_dot_quit_then_shutdown_gets_250_and_221(self):
        # Exactly Exim 4.96's bytes: the dot, QUIT pipelined behind it, then SHUT_WR.
        mta = self.mta(replies={".": ("DELAY", 0.5, "250 2.0.0 Ok: queued as FAKE%d")})
        gw = self.gateway(mta.port)
        c = self.chat(gw)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: half\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        c.s.shutdown(socket.SHUT_WR)
        self.assertEqual(replies_until_eof(c), [250, 221, 0])
        self.assertEqual(len(mta.accepted), 1)
        self.assertTrue(mta.accepted[0].endswith(b"body\r\n.\r\n"))

    def test_whole_pipelined_transaction_then_shutdown(self):
        mta = self.mta()
        gw = self.gateway(mta.port)
        c = self.chat(gw)
        c.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.com>\r\n"
               b"RCPT TO:<v@example.com>\r\nDATA\r\n")
        self.assertEqual([c.reply()[0] for _ in range(4)], [250, 250, 250, 354])
        c.send(b"Subject: p\r\n\r\nx\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")
        c.s.shutdown(socket.SHUT_WR)
        self.assertEqual(replies_until_eof(c), [250, 250, 250, 221, 0])
        self.assertEqual(len(mta.accepted), 1)

    def test_mid_pipeline_without_quit_gets_every_reply(self):
        mta = self.mta(replies={"RCPT": ("DELAY", 0.3, "250 2.1.5 Ok")})
        gw = self.gateway(mta.port)
        c = self.chat(gw)
        c.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.com>\r\n"
               b"RCPT TO:<v@example.com>\r\nNOOP\r\n")
        c.s.shutdown(socket.SHUT_WR)
        self.assertEqual(replies_until_eof(c), [250, 250, 250, 250, 0])
        self.assertEqual(mta.accepted, [])
        self.assertIn("lost connection after command", gw.log())

    def test_shutdown_right_after_connect_still_greets(self):
        mta = self.mta()
        gw = self.gateway(mta.port)
        c = h.Chat(gw.port)
        self.addCleanup(c.close)
        time.sleep(0.2)  # the greeting goes out first: this is not talking before it
        c.s.shutdown(socket.SHUT_WR)
        self.assertEqual(replies_until_eof(c), [220, 0])

    def test_after_quit(self):
        mta = self.mta()
        gw = self.gateway(mta.port)
        c = self.chat(gw)
        c.send(b"NOOP\r\nQUIT\r\n")
        c.s.shutdown(socket.SHUT_WR)
        self.assertEqual(replies_until_eof(c), [250, 221, 0])

    def test_eof_mid_data_abandons_the_message(self):
        mta = self.mta()
        gw = self.gateway(mta.port)
        c = self.chat(gw)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: cut\r\n\r\nno end\r\n")
        c.s.shutdown(socket.SHUT_WR)
        self.assertEqual(replies_until_eof(c), [0])
        time.sleep(0.3)
        self.assertEqual(mta.accepted, [])
        self.assertIn("lost connection after DATA", gw.log())
        # The gateway is fine afterwards.
        c2 = self.chat(gw)
        self.assertEqual(c2.cmd("QUIT")[0], 221)


class EximTests(Base):
    """Exim 4.96 as the sending MTA and as the backend, both real."""

    def wait(self, cond, timeout):
        end = time.time() + timeout
        while time.time() < end:
            if cond():
                return True
            time.sleep(0.2)
        return cond()

    def test_exim_sender_through_gateway_to_exim_backend_exactly_once(self):
        backend = h.EximInstance(self.tmp, name="eximbe")
        self.addCleanup(backend.close)
        gw = self.gateway(backend.port, identity="none")
        sender = h.EximInstance(self.tmp, relay_port=gw.port, name="eximtx")
        self.addCleanup(sender.close)
        sender.send("a@sender.test", ["u@example.com"], "Subject: one\r\n\r\nfirst\r\n")
        sender.send("a@sender.test", ["u@example.com", "v@example.com"],
                    "Subject: two\r\n\r\nsecond\r\n")
        ok = self.wait(lambda: len(backend.messages("u")) >= 2 and backend.messages("v")
                       and sender.queue() == "", 20)
        # A couple of Exim retry intervals more: nothing arrives twice.
        time.sleep(2.5)
        self.assertTrue(ok, "not delivered; sender log:\n" + sender.log() + "\ngateway log:\n" +
                        gw.log())
        self.assertEqual(len(backend.messages("u")), 2, backend.log())
        self.assertEqual(len(backend.messages("v")), 1, backend.log())
        self.assertEqual(sender.queue(), "")
        slog = sender.log()
        self.assertEqual(len(re.findall(r" (=>|->) ", slog)), 3, slog)
        self.assertNotIn(" == ", slog)  # never deferred
        self.assertEqual(gw.log().count("status=sent"), 3, gw.log())  # a line per recipient
        # Our Received header is on top at the backend, naming Exim's address.
        top = backend.messages("v")[0].split(b"Subject: two", 1)[0]
        self.assertIn(b"(portcullis)", top)

    def test_exim_backend_refuses_unknown_user_in_session(self):
        backend = h.EximInstance(self.tmp, name="eximbe")
        self.addCleanup(backend.close)
        gw = self.gateway(backend.port, identity="none")
        c = self.chat(gw)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        r = c.cmd("RCPT TO:<nobody@example.com>")
        self.assertEqual(r[0], 550, r)
        self.assertEqual(c.cmd("RCPT TO:<w@example.com>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertTrue(self.wait(lambda: len(backend.messages("w")) == 1, 10))


class NulTests(Base):
    """NUL never reaches the backend, and never hides or forges the end of data."""

    SEQS = (b"\r\n\x00.\r\n", b"\r\n.\x00\r\n")

    def send(self, gw, content):
        c = self.chat(gw)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(content)
        r = c.reply()
        self.assertEqual(c.cmd("QUIT")[0], 221)
        return r

    def test_nul_refused_by_default(self):
        mta = self.mta()
        gw = self.gateway(mta.port)
        for seq in self.SEQS + (b"\r\nnul\x00inside\r\n",):
            with self.subTest(seq=seq):
                r = self.send(gw, b"Subject: n\r\n\r\nfirst" + seq +
                              b"MAIL FROM:<evil@evil.example>\r\nRCPT TO:<v@example.com>\r\n"
                              b"DATA\r\nsmuggled\r\n.\r\n")
                self.assertEqual((r[0], ecode(r)), (550, "5.6.0"), r)
        self.assertEqual(mta.accepted, [])
        self.assertFalse(any("evil@" in c for c in mta.commands()))

    def test_nul_stripped_when_configured(self):
        mta = self.mta()
        gw = self.gateway(mta.port, extra='nul = "strip"\n')
        for seq in self.SEQS:
            with self.subTest(seq=seq):
                before = len(mta.accepted)
                r = self.send(gw, b"Subject: n\r\n\r\nfirst" + seq +
                              b"MAIL FROM:<evil@evil.example>\r\nRCPT TO:<v@example.com>\r\n"
                              b"DATA\r\nsmuggled\r\n.\r\n")
                self.assertEqual(r[0], 250, r)
                self.assertEqual(len(mta.accepted), before + 1)
                data = mta.accepted[-1]
                self.assertNotIn(b"\x00", data)
                self.assertEqual(data.count(b"\r\n.\r\n"), 1, data)
                self.assertTrue(data.endswith(b"smuggled\r\n.\r\n"), data)
        # "NUL ." is content: the dot arrives, stuffed; ". NUL" is an unstuffed empty line.
        self.assertIn(b"first\r\n..\r\nMAIL FROM:<evil", mta.accepted[0])
        self.assertIn(b"first\r\n\r\nMAIL FROM:<evil", mta.accepted[1])
        self.assertFalse(any("evil@" in c for c in mta.commands()))
        self.assertIn("NUL characters removed", gw.log())


class ReceivedTests(Base):
    def test_with_protocol_is_utf8smtp(self):
        mta = self.mta()
        gw = self.gateway(mta.port)
        for params, want in (("", b" with ESMTP id "), (" SMTPUTF8", b" with UTF8SMTP id ")):
            c = self.chat(gw)
            self.assertEqual(c.cmd("MAIL FROM:<a@b.example>" + params)[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 354)
            c.send(b"Subject: r\r\n\r\nx\r\n.\r\n")
            self.assertEqual(c.reply()[0], 250)
            c.cmd("QUIT")
            top = mta.accepted[-1].split(b"Subject: r", 1)[0]
            self.assertIn(want, top)
            self.assertNotIn(b"UTF8ESMTP", top)


class LmtpTests(Base):
    """A real Dovecot LMTP backend that takes a message for some recipients and refuses it for
    others after the data, driven by a real retrying MTA (Exim, 1 s retries)."""

    def lmtp_gateway(self, dov):
        gw = h.Gateway(self.tmp, h.gateway_conf(h.backend_conf(dov.port, "none", lmtp=True)))
        self.addCleanup(gw.close)
        return gw

    def observe(self, dov, done, limit=30, after=3, poke=None):
        """Let the sender retry until done() (at most limit seconds), then `after` seconds
        more; never more than one copy per good recipient at any time. poke() (if given)
        runs every other second: a queue flush, as a postmaster would."""
        end, settled, n = time.time() + limit, None, 0
        while time.time() < end and (settled is None or time.time() < settled):
            time.sleep(0.5)
            n += 1
            if poke and n % 4 == 0:
                poke()
            self.assertLessEqual(len(dov.messages("u")), 1, "duplicate for u")
            self.assertLessEqual(len(dov.messages("v")), 1, "duplicate for v")
            if settled is None and done():
                settled = time.time() + after

    def test_one_recipient_per_transaction(self):
        dov = h.DovecotLMTP(self.tmp)
        self.addCleanup(dov.close)
        gw = self.lmtp_gateway(dov)
        c = self.chat(gw)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
        for _ in range(30):  # flow control, not errors: never "too many errors"
            r = c.cmd("RCPT TO:<v@example.com>")
            self.assertEqual((r[0], ecode(r)), (452, "4.5.3"), r)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: one\r\n\r\nx\r\n.\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<v@example.com>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: two\r\n\r\nx\r\n.\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual((len(dov.messages("u")), len(dov.messages("v"))), (1, 1))
        self.assertRegex(gw.log(), r"to=<u@example.com>, .*status=sent")
        self.assertRegex(gw.log(), r"to=<v@example.com>, .*status=sent")

    def test_partial_failure_with_retrying_mta_no_duplicates_permanent_bounces(self):
        dov = h.DovecotLMTP(self.tmp)
        self.addCleanup(dov.close)
        gw = self.lmtp_gateway(dov)
        sender = h.EximInstance(self.tmp, relay_port=gw.port, name="eximtx")
        self.addCleanup(sender.close)
        body = "Subject: quota\r\n\r\n" + ("x" * 70 + "\r\n") * 40  # > 1k: over quota
        sender.send("a@sender.test", ["u@example.com", "over@example.com", "v@example.com",
                                      "broken@example.com"], body)
        # A bounded time of real retries (Exim retries every second).
        self.observe(dov, lambda: len(dov.messages("v")) == 1 and "** over@" in sender.log()
                     and "== broken@" in sender.log())
        slog = sender.log()
        info = "\nsender:\n" + slog + "\ngateway:\n" + gw.log()[-4000:]
        self.assertEqual(len(dov.messages("u")), 1, info)
        self.assertEqual(len(dov.messages("v")), 1, info)
        # Exim delivered each good recipient once, bounced the permanent failure with 552 ...
        self.assertEqual(len(re.findall(r" (=>|->) u@example.com", slog)), 1, info)
        self.assertEqual(len(re.findall(r" (=>|->) v@example.com", slog)), 1, info)
        self.assertRegex(slog, r"\*\* over@example.com .*552", info)
        # ... and keeps retrying the temporary one, which is never delivered.
        self.assertRegex(slog, r"== broken@example.com .*4\d\d", info)
        self.assertEqual(dov.messages("broken"), [])
        self.assertIn("broken@example.com", sender.queue())
        # The 552 came after the data while v and broken were told 452: the client heard 451
        # then, and the 552 at RCPT on its retry (Exim 4.96 would have bounced v with it).
        self.assertRegex(gw.log(), r"reject: END-OF-MESSAGE .*: 451 4\.5\.3 .*\(552 5\.2\.2 .*"
                                   r"to=<over@example.com>")
        self.assertRegex(gw.log(), r"reject: RCPT .*: 552 5.2.2 .*to=<over@example.com>")

    def test_partial_failure_with_retrying_postfix(self):
        dov = h.DovecotLMTP(self.tmp)
        self.addCleanup(dov.close)
        gw = self.lmtp_gateway(dov)
        sender = h.PostfixSender(self.tmp, gw.port)
        self.addCleanup(sender.close)
        body = "Subject: quota\r\n\r\n" + ("x" * 70 + "\r\n") * 40  # > 1k: over quota
        sender.send("a@sender.test", ["u@example.com", "over@example.com", "v@example.com",
                                      "broken@example.com"], body)
        self.observe(dov, lambda: len(dov.messages("v")) == 1 and
                     re.search(r"to=<over@example.com>, .*status=bounced", sender.log()),
                     poke=sender.flush)
        slog = sender.log()
        info = "\nsender:\n" + slog[-6000:] + "\ngateway:\n" + gw.log()[-4000:]
        self.assertEqual(len(dov.messages("u")), 1, info)
        self.assertEqual(len(dov.messages("v")), 1, info)
        self.assertEqual(len(re.findall(r"to=<u@example.com>, .*status=sent", slog)), 1, info)
        self.assertEqual(len(re.findall(r"to=<v@example.com>, .*status=sent", slog)), 1, info)
        self.assertRegex(slog, r"to=<over@example.com>, .*status=bounced .*552", info)
        self.assertRegex(slog, r"to=<broken@example.com>, .*status=deferred", info)
        self.assertNotRegex(slog, r"to=<broken@example.com>, .*status=(sent|bounced)", info)
        self.assertEqual(dov.messages("broken"), [])
        self.assertIn("broken@example.com", sender.queue())

    def test_broken_mailbox_first_does_not_starve_the_others(self):
        dov = h.DovecotLMTP(self.tmp)
        self.addCleanup(dov.close)
        gw = self.lmtp_gateway(dov)
        sender = h.EximInstance(self.tmp, relay_port=gw.port, name="eximtx")
        self.addCleanup(sender.close)
        sender.send("a@sender.test", ["broken@example.com", "v@example.com"],
                    "Subject: starve\r\n\r\nx\r\n")
        self.observe(dov, lambda: len(dov.messages("v")) == 1)
        self.assertEqual(len(dov.messages("v")), 1, sender.log() + gw.log())
        self.assertEqual(dov.messages("broken"), [])
        self.assertIn("broken@example.com", sender.queue())


def cpu_seconds(pid):
    """User + system CPU time of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ProcessTests(Base):
    def test_sigusr1_does_not_kill(self):
        mta = self.mta()
        gw = self.gateway(mta.port)
        os.kill(gw.pid(), signal.SIGUSR1)
        time.sleep(0.3)
        self.assertTrue(gw.alive())
        c = self.chat(gw)
        self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_drain_refuses_new_clients_with_421_then_exits_cleanly(self):
        mta = self.mta()
        gw = self.gateway(mta.port)
        old = self.chat(gw)  # an open session keeps the drain going
        os.kill(gw.pid(), signal.SIGTERM)
        time.sleep(0.3)
        self.assertTrue(gw.alive())
        t0 = time.time()
        new = h.Chat(gw.port, timeout=5)
        self.addCleanup(new.close)
        r = new.reply()
        self.assertEqual((r[0], ecode(r)), (421, "4.3.2"), r)
        self.assertLess(time.time() - t0, 3)
        self.assertTrue(new.closed())
        # The old session finishes normally, then the process exits by itself.
        self.assertEqual(old.cmd("NOOP")[0], 250)
        self.assertEqual(old.cmd("QUIT")[0], 221)
        gw.proc.p.wait(timeout=10)
        self.assertEqual(gw.proc.p.returncode, 0)
        log = gw.log()
        for bad in h.Gateway.SANITIZER:
            self.assertNotIn(bad, log)

    def test_drain_cut_short_exits_without_leak(self):
        # A session still open when the drain ends (a second SIGTERM, or the grace period) is
        # abandoned with the process; the ASan build must not report a leak for it.
        mta = self.mta()
        gw = self.gateway(mta.port)
        c = self.chat(gw)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
        os.kill(gw.pid(), signal.SIGTERM)
        time.sleep(0.3)
        os.kill(gw.pid(), signal.SIGTERM)
        gw.proc.p.wait(timeout=20)
        self.assertEqual(gw.proc.p.returncode, 0, gw.log()[-3000:])
        for bad in h.Gateway.SANITIZER:
            self.assertNotIn(bad, gw.log())
        self.assertEqual(mta.accepted, [])

    def test_emfile_pauses_accept_with_bounded_cpu_and_log(self):
        mta = self.mta()
        gw = self.gateway(mta.port)
        pid = gw.pid()
        nfd = len(os.listdir(f"/proc/{pid}/fd"))
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        # Only the soft limit: raising a hard limit again needs CAP_SYS_RESOURCE.
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (nfd + 4, hard))
        clients = []
        try:
            for _ in range(12):  # more clients than descriptors left
                clients.append(socket.create_connection(("127.0.0.1", gw.port), timeout=5))
            time.sleep(0.5)
            before_cpu, before_log = cpu_seconds(pid), gw.log().count("accept:")
            time.sleep(3)
            cpu = cpu_seconds(pid) - before_cpu
            lines = gw.log().count("accept:") - before_log
            self.assertTrue(gw.alive())
            # A spinning listener burns the whole 3 s and writes a line per attempt.
            self.assertLess(cpu, 1.0, f"{cpu:.2f}s CPU in 3s while out of descriptors")
            self.assertLessEqual(lines, 2, f"{lines} accept error lines in 3s")
            self.assertGreaterEqual(gw.log().count("accept:"), 1)
        finally:
            for s in clients:
                s.close()
        # Descriptors free again: the listener resumes by itself.
        time.sleep(1.5)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        c = h.Chat(gw.port, timeout=5)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)


if __name__ == "__main__":
    unittest.main()
