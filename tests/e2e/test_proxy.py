#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_proxy.py - the SMTP proxy end to end against real backends on loopback.

smtp-sink (with faults at each stage) and a real Postfix instance (XCLIENT) as backends; the
embedded Maildir backend; relay restriction; smuggling sequences from
../shared/testdata/smuggling; input bounds; pipelining; config check and reload.
Every reply is asserted by code and enhanced code, never by text.
"""
import json
import os
import signal
import smtplib
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

MSG = "Subject: hello\r\nFrom: a@b.example\r\nTo: u@example.com\r\n\r\nbody line\r\n.leading dot\r\n"


def send(port, msg=MSG, rcpts=("u@example.com",), source="127.0.0.1", sender="a@b.example"):
    """One transaction with smtplib; returns the DATA reply (code, text) or raises."""
    s = smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=15)
    try:
        s.ehlo("client.test")
        code, text = s.mail(sender)
        if code != 250:
            return code, text
        for r in rcpts:
            code, text = s.rcpt(r)
            if code != 250:
                return code, text
        return s.data(msg.encode())
    finally:
        try:
            s.quit()
        except smtplib.SMTPException:
            pass


class SinkTests(unittest.TestCase):
    """Gateway in front of smtp-sink."""

    def setUp(self):
        self.tmp = h.tempdir()
        self.parts = []

    def tearDown(self):
        for p in reversed(self.parts):
            p.close()
        h.rmtree(self.tmp)

    def start(self, fail=None, extra="", identity="xclient", lmtp=False, extra_addresses=()):
        sink = h.Sink(self.tmp, fail=fail, lmtp=lmtp)
        self.parts.append(sink)
        gw = h.Gateway(self.tmp, h.gateway_conf(h.backend_conf(sink.port, identity, lmtp,
                                                               extra_addresses), extra=extra))
        self.parts.append(gw)
        return sink, gw

    def test_delivery_relays_queue_id_and_restuffs(self):
        sink, gw = self.start()
        code, text = send(gw.port)
        self.assertEqual(code, 250, text)
        self.assertTrue(text.startswith(b"2.0.0"), text)
        msgs = sink.messages()
        self.assertEqual(len(msgs), 1)
        m = msgs[0]
        self.assertIn(b"Received: from client.test", m)
        self.assertIn(b"by gw.test (portcullis)", m)
        # smtp-sink stores what it unstuffed: the line must come back with exactly one dot.
        self.assertIn(b"\n.leading dot", m)
        self.assertNotIn(b"..leading", m)
        self.assertIn(b"X-Client-Addr: 127.0.0.1", m)  # XCLIENT reached the sink

    def test_relay_denied_and_routing(self):
        sink, gw = self.start()
        c = h.Chat(gw.port, source="127.0.0.2")
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO x")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        code, text = c.cmd("RCPT TO:<u@foreign.example>")
        self.assertEqual(code, 554)
        self.assertIn("5.7.1", text)
        for rcpt in ("u%foreign.example@example.com", "foreign.example!u@example.com",
                     "@example.com:u@foreign.example"):
            code, text = c.cmd(f"RCPT TO:<{rcpt}>")
            self.assertEqual(code, 554, rcpt)
            self.assertIn("5.7.1", text)
        self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(sink.messages(), [])

    def test_backend_refuses_mail_and_rcpt(self):
        for opt, cmd, cls in (("f", "MAIL", 5), ("r", "MAIL", 4), ("f", "RCPT", 5),
                              ("r", "RCPT", 4)):
            with self.subTest(opt=opt, cmd=cmd):
                sink, gw = self.start(fail={opt: cmd})
                code, _ = send(gw.port)
                self.assertEqual(code // 100, cls)
                self.assertEqual(sink.messages(), [])
                gw.close(), sink.close()
                self.parts.clear()

    def test_backend_faults_after_data_never_250(self):
        # refusal at DATA, after the final dot (hard, soft), and a drop instead of a reply
        for fail, cls in (({"f": "DATA"}, 5), ({"r": "DATA"}, 4), ({"f": "."}, 5),
                          ({"r": "."}, 4), ({"q": "."}, 4), ({"q": "DATA"}, 4)):
            with self.subTest(fail=fail):
                sink, gw = self.start(fail=fail)
                code, text = send(gw.port)
                self.assertEqual(code // 100, cls, text)
                gw.close(), sink.close()
                self.parts.clear()

    def test_backend_down_gives_4xx(self):
        port = h.free_port()
        gw = h.Gateway(self.tmp, h.gateway_conf(h.backend_conf(port)))
        self.parts.append(gw)
        code, text = send(gw.port)
        self.assertEqual(code, 451)
        self.assertTrue(text.startswith(b"4.4.1"), text)

    def test_failover_to_second_address(self):
        dead = h.free_port()
        sink, gw = self.start(extra_addresses=(f"127.0.0.1:{dead}",))
        self.assertEqual(send(gw.port)[0], 250)
        self.assertEqual(len(sink.messages()), 1)

    def test_lmtp_backend(self):
        # One recipient per transaction with LMTP: the second RCPT hears 452 4.5.3 and goes in
        # a transaction of its own (see LmtpTests in test_client.py, with a real Dovecot).
        sink, gw = self.start(lmtp=True)
        self.assertEqual(send(gw.port, rcpts=("a@example.com", "b@example.com"))[0], 452)
        self.assertEqual(send(gw.port, rcpts=("a@example.com",))[0], 250)
        self.assertEqual(send(gw.port, rcpts=("b@example.com",))[0], 250)
        self.assertEqual(len(sink.messages()), 2)

    def smuggle(self, seq, normalize):
        sink, gw = self.start(extra='bare_newline = "normalize"' if normalize else "")
        c = h.Chat(gw.port)
        c.reply()
        c.cmd("EHLO x")
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: s\r\n\r\nfirst" + seq + b"MAIL FROM:<evil@evil.example>\r\n"
               b"RCPT TO:<victim@example.com>\r\nDATA\r\nsmuggled\r\n.\r\n")
        code, text = c.reply()
        c.cmd("QUIT")
        msgs = sink.messages()
        gw.close(), sink.close()
        self.parts.clear()
        return code, text, msgs

    def test_smuggling_sequences(self):
        path = os.path.join(h.SHARED, "testdata", "smuggling", "eod_sequences.json")
        if not os.path.exists(path):
            self.skipTest("../shared/testdata/smuggling is not there")
        d = json.load(open(path))
        seqs = {bytes.fromhex(v["hex"]) for v in d["smtpsmug_tests"].values()}
        for k in ("sec_consult_inbound", "sec_consult_outbound"):
            seqs |= {bytes.fromhex(v["hex"]) for v in d.get(k, [])}
        if "postfix_20240106_note" in d:  # CRLF . CR CRLF is not an end of data either
            seqs.add(bytes.fromhex(d["postfix_20240106_note"]["hex"]))
        self.assertGreater(len(seqs), 8)
        for seq in sorted(seqs):
            for normalize in (False, True):
                with self.subTest(seq=seq, normalize=normalize):
                    code, text, msgs = self.smuggle(seq, normalize)
                    # Never two messages, never the smuggled envelope at the backend.
                    self.assertLessEqual(len(msgs), 1)
                    for m in msgs:
                        self.assertNotIn(b"evil@evil.example>", m.split(b"\n\n")[0])
                        self.assertIn(b"smuggled", m)
                    bare = any(b in seq.replace(b"\r\n", b"") for b in (b"\r", b"\n"))
                    if (bare and not normalize) or b"\x00" in seq:  # NUL: refused by default
                        self.assertEqual(code, 550, text)
                        self.assertIn("5.6.0", text)
                        self.assertEqual(msgs, [])
                    else:
                        self.assertEqual(code, 250, text)
                        self.assertEqual(len(msgs), 1)

    def test_smtpsmug_pipelining(self):
        # smtpsmug's pipelining test: mail 1 ends with CRLF.CRLF and mail 2's MAIL, RCPT, DATA,
        # content and CRLF.CRLF follow in the same write. Mail 1 is delivered once, alone;
        # mail 2's content came before its 354, so it is refused and never delivered.
        sink, gw = self.start()
        c = h.Chat(gw.port)
        c.reply()
        c.cmd("EHLO x")
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: one\r\n\r\nfirst\r\n.\r\nMAIL FROM:<evil@evil.example>\r\n"
               b"RCPT TO:<victim@example.com>\r\nDATA\r\nSubject: two\r\n\r\nsmuggled\r\n"
               b".\r\n")
        replies = [c.reply() for _ in range(4)]
        self.assertEqual([r[0] for r in replies[:3]], [250, 250, 250], replies)
        self.assertEqual((replies[3][0], replies[3][1][4:9]), (554, "5.5.0"), replies)
        self.assertTrue(c.closed())
        msgs = sink.messages()
        self.assertEqual(len(msgs), 1, msgs)
        self.assertIn(b"first", msgs[0])
        self.assertNotIn(b"smuggled", msgs[0])
        self.assertNotIn(b"evil@evil.example", msgs[0])

    def test_bounds(self):
        sink, gw = self.start(extra="limits {\n max_message_size = 20000\n max_recipients = 3\n"
                                    " max_command_length = 600\n max_errors = 5\n}\n")
        c = h.Chat(gw.port)
        c.reply()
        self.assertEqual(c.cmd("EHLO x")[0], 250)
        code, text = c.cmd("MAIL FROM:<a@b.example> SIZE=30000")
        self.assertEqual((code, text[4:9]), (552, "5.3.4"))
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        for i in range(3):
            self.assertEqual(c.cmd(f"RCPT TO:<u{i}@example.com>")[0], 250)
        code, text = c.cmd("RCPT TO:<u9@example.com>")
        self.assertEqual((code, text[4:9]), (452, "4.5.3"))
        code, text = c.cmd("NOOP " + "x" * 700)
        self.assertEqual((code, text[4:9]), (500, "5.5.2"))
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: big\r\n\r\n" + b"y" * 70 + b"\r\n" * 1 + (b"z" * 998 + b"\r\n") * 30
               + b".\r\n")
        code, text = c.reply()
        self.assertEqual((code, text[4:9]), (552, "5.3.4"))
        # errors so far: 552, 452, 500, 552 -> one more reaches max_errors = 5
        code, text = c.cmd("BOGUS")
        self.assertEqual(code, 500)
        code, text = c.reply()
        self.assertEqual((code, text[4:9]), (421, "4.7.0"))
        self.assertTrue(c.closed())
        self.assertEqual(sink.messages(), [])

    def test_header_section_bound(self):
        sink, gw = self.start(extra="limits {\n max_header_size = 2048\n}\n")
        msg = "Subject: x\r\n" + "".join(f"X-H{i}: {'v' * 60}\r\n" for i in range(100)) + "\r\nb\r\n"
        code, text = send(gw.port, msg=msg)
        self.assertEqual(code, 552)
        self.assertTrue(text.startswith(b"5.3.4"))

    def test_pipelining(self):
        sink, gw = self.start()
        c = h.Chat(gw.port)
        c.reply()
        ehlo = c.cmd("EHLO x")[1]
        self.assertIn("PIPELINING", ehlo)
        c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.com>\r\nRCPT TO:<v@example.com>\r\n"
               "DATA\r\n")
        self.assertEqual([c.reply()[0] for _ in range(4)], [250, 250, 250, 354])
        c.send("Subject: p\r\n\r\nx\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")
        self.assertEqual([c.reply()[0] for _ in range(4)], [250, 250, 250, 221])
        self.assertEqual(len(sink.messages()), 1)

    def test_content_before_354_is_refused(self):
        sink, gw = self.start()
        c = h.Chat(gw.port)
        c.reply()
        c.cmd("EHLO x")
        c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n"
               "Subject: x\r\n\r\nbody\r\n.\r\n")
        self.assertEqual([c.reply()[0] for _ in range(2)], [250, 250])
        code, text = c.reply()
        self.assertEqual((code, text[4:9]), (554, "5.5.0"))
        self.assertTrue(c.closed())
        self.assertEqual(sink.messages(), [])

    def test_verbs(self):
        sink, gw = self.start()
        c = h.Chat(gw.port)
        c.reply()
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 503)  # no HELO yet
        self.assertEqual(c.cmd("HELO x")[0], 250)
        for cmd, code in (("VRFY u", 252), ("EXPN list", 502), ("HELP", 214), ("NOOP", 250),
                          ("TURN", 502), ("SEND FROM:<a@b>", 502), ("SOML FROM:<a@b>", 502),
                          ("SAML FROM:<a@b>", 502), ("XYZZY", 500), ("RCPT TO:<u@example.com>",
                                                                     503), ("DATA", 503),
                          ("RSET", 250), ("MAIL FROM:<a b>", 501)):
            got, text = c.cmd(cmd)
            self.assertEqual(got, code, cmd)
            self.assertRegex(text, r"^\d{3}[ -]\d\.\d{1,3}\.\d{1,3} ", cmd)
        self.assertEqual(c.cmd("QUIT")[0], 221)


class MaildirTests(unittest.TestCase):
    """The embedded default backend."""

    def test_maildir_delivery_with_received_on_top(self):
        tmp = h.tempdir()
        try:
            gw = h.Gateway(tmp, 'hostname = "gw.test"\nlistener "in" { address = "127.0.0.1:@PORT@" '
                                'backend = "local" }\nbackend "local" { maildir = "@TMP@/Maildir" }\n'
                                'relay { domains = { "example.com" } }\n')
            try:
                self.assertEqual(send(gw.port)[0], 250)
                new = os.path.join(tmp, "Maildir", "new")
                files = os.listdir(new)
                self.assertEqual(len(files), 1)
                m = open(os.path.join(new, files[0]), "rb").read()
                self.assertTrue(m.startswith(b"Received: from client.test"), m[:80])
                self.assertIn(b"\n.leading dot\n", m)
            finally:
                gw.close()
        finally:
            h.rmtree(tmp)


@unittest.skipUnless(os.geteuid() == 0, "a private Postfix instance needs root")
class PostfixTests(unittest.TestCase):
    """A real Postfix behind the gateway, identity passed with XCLIENT."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = h.tempdir()
        cls.pf = h.Postfix(cls.tmp)
        cls.gw = h.Gateway(cls.tmp, h.gateway_conf(h.backend_conf(cls.pf.port)))

    @classmethod
    def tearDownClass(cls):
        cls.gw.close()
        cls.pf.close()
        h.rmtree(cls.tmp)

    def test_real_client_ip_reaches_postfix(self):
        # Several sessions from different addresses: pooled backend connections are
        # re-identified, so each shows its own client address in Postfix's log.
        ids = []
        for n, src in enumerate(("127.0.0.2", "127.0.0.3", "127.0.0.2")):
            code, text = send(self.gw.port, source=src,
                              msg=MSG.replace("Subject: hello", f"Subject: ip-token-{n}"))
            self.assertEqual(code, 250, text)
            self.assertIn(b"queued as", text)  # Postfix's own queue id, relayed
            ids.append((src, text.split()[-1].decode()))
        deadline = time.time() + 10
        while time.time() < deadline:
            log = self.pf.log()
            if all(f"{qid}: client=unknown[{src}]" in log for src, qid in ids):
                break
            time.sleep(0.2)
        for src, qid in ids:
            self.assertIn(f"{qid}: client=unknown[{src}]", self.pf.log())
        # Exactly one copy of each landed in the Maildir, with the content intact.
        deadline = time.time() + 15
        while time.time() < deadline:
            got = [m for m in self.pf.delivered() if b"ip-token-" in m]
            if len(got) >= 3:
                break
            time.sleep(0.2)
        for n in range(3):
            copies = [m for m in got if f"Subject: ip-token-{n}\n".encode() in m]
            self.assertEqual(len(copies), 1, f"ip-token-{n}: {len(copies)} copies")
            self.assertIn(b"\n.leading dot\n", copies[0])
            self.assertIn(b"by gw.test (portcullis)", copies[0])
            # Postfix's own Received header names the real client too (XCLIENT ADDR).
            pf_received = copies[0].split(b"by backend.test", 1)[0]
            self.assertIn(f"[{ids[n][0]}]".encode(), pf_received)

    def test_xforward_reaches_postfix(self):
        # identity = "xforward": Postfix logs the forwarded client as orig_client.
        with h.Gateway(self.tmp, h.gateway_conf(h.backend_conf(self.pf.port,
                                                                identity="xforward"))) as gw:
            code, text = send(gw.port, source="127.0.0.6",
                              msg=MSG.replace("Subject: hello", "Subject: xforward-token"))
            self.assertEqual(code, 250, text)
            qid = text.split()[-1].decode()
            deadline = time.time() + 10
            while time.time() < deadline and f"{qid}: client=" not in self.pf.log():
                time.sleep(0.2)
            self.assertRegex(self.pf.log(), rf"{qid}: client=\S+, orig_client=unknown\[127\.0\.0\.6\]")

    def test_unknown_user_refused_in_session(self):
        c = h.Chat(self.gw.port)
        c.reply()
        c.cmd("EHLO x")
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        # Postfix refuses this user: its 550 5.1.1 reaches the client in the session,
        # and the transaction goes on for the other recipient.
        code, text = c.cmd("RCPT TO:<nosuchuser@example.com>")
        self.assertEqual((code, text[4:9]), (550, "5.1.1"))
        self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send("Subject: t\r\n\r\nx\r\n.\r\n")
        self.assertEqual(c.reply()[0], 250)
        c.cmd("QUIT")


class CommandLineTests(unittest.TestCase):
    def test_check_config(self):
        tmp = h.tempdir()
        try:
            good = os.path.join(tmp, "good.conf")
            open(good, "w").write('listener "a" { address = "127.0.0.1:2525" }\n')
            self.assertEqual(subprocess.run([h.BIN, "-c", good, "-t"]).returncode, 0)
            bad = os.path.join(tmp, "bad.conf")
            open(bad, "w").write('\n\nlimits {\n  max_recipients = 0\n}\n')
            r = subprocess.run([h.BIN, "-c", bad, "-t"], capture_output=True, text=True)
            self.assertNotEqual(r.returncode, 0)
            self.assertRegex(r.stderr, r"bad\.conf:4: ")
            r = subprocess.run([h.BIN, "-V"], capture_output=True, text=True)
            self.assertRegex(r.stdout, r"^portcullis \d")
        finally:
            h.rmtree(tmp)

    def test_reload_swaps_only_valid_config(self):
        tmp = h.tempdir()
        try:
            sink = h.Sink(tmp)
            conf = h.gateway_conf(h.backend_conf(sink.port))
            gw = h.Gateway(tmp, conf)
            try:
                self.assertEqual(send(gw.port, source="127.0.0.2",
                                      rcpts=("u@other.example",))[0], 554)
                open(gw.path, "w").write(conf.replace('"example.com"', '"example.com", '
                                                      '"other.example"').replace("@PORT@",
                                                                                 str(gw.port)))
                gw.proc.p.send_signal(signal.SIGHUP)
                time.sleep(0.5)
                self.assertEqual(send(gw.port, source="127.0.0.2",
                                      rcpts=("u@other.example",))[0], 250)
                open(gw.path, "a").write('limits { max_errors = 0 }\n')
                gw.proc.p.send_signal(signal.SIGHUP)
                time.sleep(0.5)
                self.assertIn("reload failed", gw.log())
                self.assertTrue(gw.alive())
                self.assertEqual(send(gw.port, source="127.0.0.2",
                                      rcpts=("u@other.example",))[0], 250)
            finally:
                gw.close()
                sink.close()
        finally:
            h.rmtree(tmp)


if __name__ == "__main__":
    unittest.main(verbosity=1)
