#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_bdat.py - CHUNKING/BDAT (RFC 3030) from a raw client through the gateway to real peers.

swaks and smtplib do not speak BDAT, so the client here is a raw socket (harness.Chat). Backends:
a real Postfix (configured as README says; it offers CHUNKING, so the gateway sends BDAT on) and
smtp-sink (no CHUNKING: the gateway sends DATA, dot-stuffed). The chunks' octets are counted,
never searched for an end of data: every fake end-of-data sequence of
../shared/testdata/smuggling/eod_sequences.json, and the real CR LF . CR LF, inside a chunk or
straddling two chunks, must stay content of one message and never start a second one. Chunks
pipelined after a failed one are read and thrown away (never commands, never message). A real
Exim 4.96 sends BDAT to us when we offer CHUNKING. Towards the backend, messages over 1 MiB go in
several BDAT chunks; a scripted backend (FakeMTA) refuses a chunk, which a real one does not do
on demand.
"""
import json
import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

SMUGGLING = os.path.join(h.SHARED, "testdata", "smuggling", "eod_sequences.json")


def smuggling_sequences():
    """Every distinct fake end-of-data sequence in the shared file, plus the real one."""
    with open(SMUGGLING) as f:
        d = json.load(f)
    seqs = [v["hex"] for v in d["smtpsmug_tests"].values()]
    seqs += [v["hex"] for v in d["sec_consult_inbound"] + d["sec_consult_outbound"]]
    seqs.append(d["postfix_20240106_note"]["hex"])
    seqs.append("0d0a2e0d0a")  # CR LF . CR LF: the end of DATA, but only content in BDAT
    out = []
    for x in seqs:
        if bytes.fromhex(x) not in out:
            out.append(bytes.fromhex(x))
    return out


def lf(b):
    """Maildir files (Postfix) and smtp-sink dumps store lines with LF."""
    return b.replace(b"\r\n", b"\n")


def bdat(chunk, last=False):
    return b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if last else b"") + chunk


def open_txn(c, rcpt="u@example.com"):
    assert c.reply()[0] == 220
    r = c.cmd("EHLO client.test")
    assert r[0] == 250, r
    assert c.cmd("MAIL FROM:<a@sender.example>")[0] == 250
    r = c.cmd(f"RCPT TO:<{rcpt}>")
    assert r[0] == 250, r
    return r


def wait_for(cond, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    return cond()


# Date and Message-ID present: Postfix adds neither, so the delivered file ends with MSG exactly.
HDRS = b"From: <a@sender.example>\r\nDate: Wed, 02 Dec 2026 05:00:00 +0000\r\n"
MSG = (b"Subject: chunked\r\n" + HDRS + b"Message-ID: <1@sender.example>\r\n\r\nline one\r\n"
       b".a line that starts with a dot\r\n..two dots\r\n.\r\nlast line\r\n")


class BdatPostfix(h.PeersCase):
    """Postfix behind the gateway: it offers CHUNKING, so BDAT goes on to it."""

    @classmethod
    def start_peers(cls):
        cls.pf = cls.keep(h.Postfix(cls.tmp))

    def setUp(self):
        for f in h.glob.glob(os.path.join(self.pf.maildir, "inbox", "new", "*")):
            os.unlink(f)
        extra = "limits {\n  max_message_size = 20000\n}\n"
        self.gw = h.Gateway(self.tmp, h.gateway_conf(h.backend_conf(self.pf.port), extra=extra))

    def tearDown(self):
        self.gw.close()

    def delivered(self, n, timeout=15.0):
        return wait_for(lambda: len(self.pf.delivered(0)) >= n and self.pf.delivered(0),
                        timeout) or []

    def test_ehlo_offers_chunking_not_binarymime(self):
        with h.Chat(self.gw.port) as c:
            c.reply()
            code, text = c.cmd("EHLO client.test")
            self.assertEqual(code, 250)
            self.assertIn("CHUNKING", text)
            self.assertNotIn("BINARYMIME", text)
            self.assertEqual(c.cmd("MAIL FROM:<a@b.example> BODY=BINARYMIME")[0], 501)

    def test_startup_log_lists_backend_chunking(self):
        """The backend probe's "offers" line names CHUNKING (Postfix offers it)."""
        line = wait_for(lambda: re.search(r"backend mta: \S+ offers[^\n]*", self.gw.log()))
        self.assertTrue(line, self.gw.log()[-2000:])
        self.assertIn(" CHUNKING", line.group(0))

    def test_chunks_delivered_byte_exact(self):
        # Split inside a CR LF pair, inside a line and right after a dot.
        cuts = [MSG[:20], MSG[20:57], MSG[57:58], MSG[58:]]
        with h.Chat(self.gw.port) as c:
            open_txn(c)
            for i, part in enumerate(cuts[:-1]):
                c.send(bdat(part))
                code, text = c.reply()
                self.assertEqual(code, 250, text)
                self.assertIn(f"{len(part)} octets", text)
            c.send(bdat(cuts[-1], last=True))
            code, text = c.reply()
            self.assertEqual(code, 250, text)
            self.assertEqual(c.cmd("QUIT")[0], 221)
        got = self.delivered(1)
        self.assertEqual(len(got), 1)
        self.assertTrue(got[0].endswith(lf(MSG)), got[0][-400:])
        self.assertIn(b"by gw.test (portcullis)", got[0])
        self.gw.close()  # the pooled connection ends: Postfix logs its command counts
        self.assertTrue(wait_for(lambda: re.search(r"disconnect from .* bdat=1\b", self.pf.log())),
                        "the gateway did not send BDAT to Postfix:\n" + self.pf.log()[-2000:])

    def test_pipelined_bdat_with_rset(self):
        m2 = b"Subject: second\r\n" + HDRS + b"Message-ID: <2@sender.example>\r\n\r\nbody two\r\n"
        with h.Chat(self.gw.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO client.test")[0], 250)
            c.send(b"MAIL FROM:<a@sender.example>\r\nRCPT TO:<u@example.com>\r\n" +
                   bdat(MSG[:30]) + bdat(MSG[30:], last=True) +
                   b"RSET\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<u@example.com>\r\n" +
                   bdat(b"") + bdat(m2, last=True) + b"QUIT\r\n")
            codes = [c.reply()[0] for _ in range(10)]
            self.assertEqual(codes, [250, 250, 250, 250, 250, 250, 250, 250, 250, 221])
        got = self.delivered(2)
        self.assertEqual(len(got), 2)
        self.assertEqual(sorted(g.endswith(lf(MSG)) or g.endswith(lf(m2)) for g in got), [True, True])

    def test_bdat_0_last(self):
        with h.Chat(self.gw.port) as c:
            open_txn(c)
            c.send(bdat(MSG))
            self.assertEqual(c.reply()[0], 250)
            c.send(b"BDAT 0 LAST\r\n")
            code, text = c.reply()
            self.assertEqual(code, 250, text)
        got = self.delivered(1)
        self.assertEqual(len(got), 1)
        self.assertTrue(got[0].endswith(lf(MSG)))

    def test_data_after_bdat_is_503(self):
        with h.Chat(self.gw.port) as c:
            open_txn(c)
            c.send(bdat(MSG[:10]))
            self.assertEqual(c.reply()[0], 250)
            self.assertEqual(c.cmd("DATA")[0], 503)
            c.send(bdat(MSG[10:], last=True))
            code, text = c.reply()
            self.assertEqual(code, 250, text)
        got = self.delivered(1)
        self.assertTrue(got and got[0].endswith(lf(MSG)))

    def test_failed_chunk_then_pipelined_chunks_discarded(self):
        # The first chunk is over max_message_size: read and discarded, 552. The chunks
        # pipelined behind it hold SMTP commands: they are discarded too (503 each), never
        # served (no 214 for HELP) and never part of a message.
        evil = (b"HELP\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<u@example.com>\r\n"
                b"DATA\r\nSubject: smuggled\r\n\r\n.\r\nHELP\r\n")
        with h.Chat(self.gw.port) as c:
            open_txn(c)
            c.send(bdat(b"x" * 30000 + b"\r\n" + evil) + bdat(evil) + bdat(evil, last=True) +
                   b"RSET\r\n")
            codes = [c.reply()[0] for _ in range(4)]
            self.assertEqual(codes, [552, 503, 503, 250])
            self.assertEqual(c.cmd("NOOP")[0], 250)  # nothing else is queued behind
            # A new transaction after RSET works.
            self.assertEqual(c.cmd("MAIL FROM:<a@sender.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
            c.send(bdat(MSG, last=True))
            self.assertEqual(c.reply()[0], 250)
        got = self.delivered(1)
        time.sleep(1)
        got = self.pf.delivered(0)
        self.assertEqual(len(got), 1)
        self.assertTrue(got[0].endswith(lf(MSG)))
        self.assertNotIn(b"smuggled", b"".join(got))

    def test_size_limit_over_chunks(self):
        # Each chunk is under the limit, their sum is not: the chunk that passes it is read
        # whole and answered 552; nothing reaches the backend.
        with h.Chat(self.gw.port) as c:
            open_txn(c)
            c.send(bdat(b"a" * 9998 + b"\r\n"))
            self.assertEqual(c.reply()[0], 250)
            c.send(bdat(b"b" * 10998 + b"\r\nHELP\r\n", last=True) + b"NOOP\r\n")
            self.assertEqual(c.reply()[0], 552)
            self.assertEqual(c.reply()[0], 250)  # NOOP, not a 214 for the HELP inside
        time.sleep(1)
        self.assertEqual(self.pf.delivered(0), [])
        self.assertRegex(self.gw.log(), r"reject: BDAT .*552 5\.3\.4")

    def test_bdat_without_mail_is_read_and_refused(self):
        with h.Chat(self.gw.port) as c:
            self.assertEqual(c.reply()[0], 220)
            self.assertEqual(c.cmd("EHLO client.test")[0], 250)
            c.send(bdat(b"HELP\r\n") + b"NOOP\r\n")
            self.assertEqual(c.reply()[0], 503)
            self.assertEqual(c.reply()[0], 250)

    def test_bad_bdat_syntax_closes(self):
        for arg in ("x", "-1", "1 LAST x", "12345678901234567890", "5 FIRST", ""):
            with h.Chat(self.gw.port) as c:
                self.assertEqual(c.reply()[0], 220)
                self.assertEqual(c.cmd("EHLO client.test")[0], 250)
                code, text = c.cmd(("BDAT " + arg).strip())
                self.assertEqual(code, 501, (arg, text))
                self.assertTrue(c.closed(), arg)

    def test_smuggling_sequences_in_chunks(self):
        """Every fake end-of-data (and the real one) inside a chunk and across two: at most
        one message at the backend, never a smuggled one."""
        n = 0
        for seq in smuggling_sequences():
            body = (b"Subject: s\r\n\r\nbefore" + seq + b"MAIL FROM:<evil@x.example>\r\n"
                    b"RCPT TO:<u@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n"
                    + seq + b"after\r\n")
            cut = body.index(seq) + len(seq) // 2 + 1
            for chunks in ([body], [body[:cut], body[cut:]]):
                with h.Chat(self.gw.port) as c:
                    open_txn(c)
                    for part in chunks[:-1]:
                        c.send(bdat(part))
                        self.assertEqual(c.reply()[0], 250)
                    c.send(bdat(chunks[-1], last=True) + b"QUIT\r\n")
                    code, text = c.reply()
                    self.assertIn(code, (250, 550), (seq, text))
                    n += code == 250
                    self.assertEqual(c.reply()[0], 221)
        got = self.delivered(n)
        time.sleep(1)
        got = self.pf.delivered(0)
        self.assertEqual(len(got), n)
        self.assertFalse([g for g in got if b"\nSubject: smuggled" in g.split(b"\n\n")[0]])


class BdatLarge(unittest.TestCase):
    """A 2.5 MB message in client chunks of odd sizes goes to Postfix in 1 MiB BDAT chunks
    (two, then the rest with LAST), byte-exact."""

    def test_large_message_in_several_chunks(self):
        tmp = h.tempdir()
        try:
            with h.Postfix(tmp) as pf:
                gw = h.Gateway(tmp, h.gateway_conf(h.backend_conf(pf.port)))
                try:
                    line = b"0123456789" * 7 + b".\r\n.x\r\n"
                    msg = (b"Subject: big\r\n" + HDRS + b"Message-ID: <3@sender.example>\r\n\r\n"
                           + line * (2500000 // len(line)))
                    with h.Chat(gw.port, timeout=30) as c:
                        open_txn(c)
                        off, step = 0, 333331
                        while off + step < len(msg):
                            c.send(bdat(msg[off:off + step]))
                            self.assertEqual(c.reply()[0], 250)
                            off += step
                        c.send(bdat(msg[off:], last=True))
                        code, text = c.reply()
                        self.assertEqual(code, 250, text)
                    got = wait_for(lambda: pf.delivered(0), 30)
                    self.assertEqual(len(got), 1)
                    self.assertTrue(got[0].endswith(lf(msg)))
                finally:
                    gw.close()
                self.assertTrue(wait_for(lambda: re.search(r"disconnect from .* bdat=3\b",
                                                           pf.log())), pf.log()[-2000:])
        finally:
            h.rmtree(tmp)


def mail_sessions(mta):
    return [x for x in mta.sessions if any(c.startswith("MAIL") for c in x["commands"])]


class BdatBackendFaults(unittest.TestCase):
    """Faults a real backend does not produce on demand (a scripted one, FakeMTA)."""

    def run_two(self, replies):
        """A 1.5 MB message (two BDAT chunks to the backend), then a small one, one session."""
        tmp = h.tempdir()
        try:
            with h.FakeMTA(replies=replies, ext=h.FakeMTA.EXT + ("CHUNKING",)) as mta:
                gw = h.Gateway(tmp, h.gateway_conf(h.backend_conf(mta.port, identity="none")))
                try:
                    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 1500
                    out = []
                    with h.Chat(gw.port, timeout=30) as c:
                        open_txn(c)
                        c.send(bdat(big, last=True))
                        out.append(c.reply())
                        self.assertEqual(c.cmd("MAIL FROM:<a@sender.example>")[0], 250)
                        self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
                        c.send(bdat(MSG, last=True))
                        out.append(c.reply())
                    return out, mta
                finally:
                    gw.close()
        finally:
            h.rmtree(tmp)

    def test_refused_chunk_ends_the_backend_connection(self):
        # The backend refuses the first (not last) chunk: we send no more of the message, the
        # client hears the refusal, and the next message goes on a new connection.
        out, mta = self.run_two({"BDAT": "452 4.3.1 Insufficient system storage"})
        self.assertEqual(out[0][0], 452, out)
        self.assertEqual(out[1][0], 250, out)
        sessions = mail_sessions(mta)  # the capability probe's connection has no MAIL
        self.assertEqual(len(sessions), 2)
        first = [x for x in sessions[0]["commands"] if x.startswith("BDAT")]
        self.assertEqual(first, ["BDAT 1048576"])
        self.assertEqual(len(mta.accepted), 1)
        self.assertTrue(mta.accepted[0].endswith(MSG))

    def test_chunks_add_up(self):
        out, mta = self.run_two({})
        self.assertEqual([o[0] for o in out], [250, 250])
        self.assertEqual(len(mail_sessions(mta)), 1)  # one connection, reused
        cmds = [x for x in mail_sessions(mta)[0]["commands"] if x.startswith("BDAT")]
        self.assertEqual(cmds[0], "BDAT 1048576")
        self.assertTrue(cmds[1].endswith(" LAST"), cmds)
        self.assertFalse(any(x.startswith("DATA") for x in mta.commands()))


class BdatRulesMaildir(unittest.TestCase):
    """The engine sees a chunked message as it sees DATA's: a body rule (GTUBE) matches a
    string cut by a chunk boundary; a clean message lands in the Maildir backend byte-exact."""

    GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

    def test_body_rule_across_chunks_and_maildir(self):
        tmp = h.tempdir()
        try:
            maildir = os.path.join(tmp, "Maildir")
            rules = os.path.join(h.ROOT, "rules", "gtube.rules")
            conf = h.gateway_conf(f'backend "mta" {{\n  maildir = "{maildir}"\n}}\n',
                                  filters='"relay", "rules"',
                                  extra=f'rules {{\n  files = {{ "{rules}" }}\n}}\n')
            gw = h.Gateway(tmp, conf)
            try:
                spam = b"Subject: spam\r\n\r\nhello " + self.GTUBE + b"\r\n"
                cut = spam.index(self.GTUBE) + 20
                with h.Chat(gw.port) as c:
                    open_txn(c)
                    c.send(bdat(spam[:cut]) + bdat(spam[cut:], last=True))
                    self.assertEqual(c.reply()[0], 250)
                    code, text = c.reply()
                    self.assertEqual(code, 554, text)
                    self.assertEqual(c.cmd("MAIL FROM:<a@sender.example>")[0], 250)
                    self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
                    c.send(bdat(MSG[:50]) + bdat(MSG[50:]) + b"BDAT 0 LAST\r\n")
                    self.assertEqual([c.reply()[0] for _ in range(3)], [250, 250, 250])
                files = h.glob.glob(os.path.join(maildir, "new", "*"))
                self.assertEqual(len(files), 1)
                got = h.read(files[0], binary=True)
                self.assertTrue(got.endswith(lf(MSG)), got[-300:])  # LF: the Maildir convention
            finally:
                gw.close()
        finally:
            h.rmtree(tmp)


class BdatSink(h.PeersCase):
    """smtp-sink behind the gateway: BDAT in, DATA out (dot-stuffed, CRLF)."""

    @classmethod
    def start_peers(cls):
        cls.sink = cls.keep(h.Sink(cls.tmp))
        conf = h.gateway_conf(h.backend_conf(cls.sink.port, identity="none"),
                              extra='bare_newline = "normalize"\nnul = "strip"\n')
        cls.gw = cls.keep(h.Gateway(cls.tmp, conf))

    def test_data_out_byte_exact(self):
        before = len(self.sink.messages())
        with h.Chat(self.gw.port) as c:
            open_txn(c)
            c.send(bdat(MSG[:41]) + bdat(MSG[41:], last=True))
            self.assertEqual(c.reply()[0], 250)
            code, text = c.reply()
            self.assertEqual(code, 250, text)
        got = wait_for(lambda: self.sink.messages()[before:])
        self.assertEqual(len(got), 1)
        self.assertTrue(got[0].endswith(lf(MSG) + b"\n"), got[0][-300:])  # sink adds a LF

    def test_smuggling_sequences_become_one_message(self):
        """With bare newlines normalised, every sequence is delivered inside the one message;
        the dot-stuffed DATA towards smtp-sink never ends early."""
        for seq in smuggling_sequences():
            before = len(self.sink.messages())
            body = (b"Subject: s\r\n\r\nbefore" + seq + b"MAIL FROM:<evil@x.example>\r\n"
                    b"RCPT TO:<u@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n"
                    + seq + b"after\r\n")
            cut = body.index(seq) + len(seq) // 2 + 1
            with h.Chat(self.gw.port) as c:
                open_txn(c)
                c.send(bdat(body[:cut]) + bdat(body[cut:], last=True))
                self.assertEqual(c.reply()[0], 250)
                code, text = c.reply()
                self.assertEqual(code, 250, (seq, text))
            got = wait_for(lambda: self.sink.messages()[before:])
            time.sleep(0.2)
            got = self.sink.messages()[before:]
            self.assertEqual(len(got), 1, seq)
            self.assertIn(b"\nafter\n", got[0], seq)
            self.assertIn(b"Subject: smuggled", got[0], seq)  # as content of the one message


class BdatOff(unittest.TestCase):
    """A listener with chunking = false: no CHUNKING in EHLO, BDAT is 502, DATA still works."""

    def setUp(self):
        self.tmp = h.tempdir()
        self.addCleanup(h.rmtree, self.tmp)
        self.sink = h.Sink(self.tmp)
        self.addCleanup(self.sink.close)
        conf = h.gateway_conf(h.backend_conf(self.sink.port, identity="none"))
        conf = conf.replace('  backend = "mta"\n', '  backend = "mta"\n  chunking = false\n', 1)
        self.gw = h.Gateway(self.tmp, conf)
        self.addCleanup(self.gw.close)

    def test_no_chunking_bdat_502_data_works(self):
        with h.Chat(self.gw.port) as c:
            self.assertEqual(c.reply()[0], 220)
            code, text = c.cmd("EHLO client.test")
            self.assertEqual(code, 250)
            self.assertNotIn("CHUNKING", text)
            self.assertEqual(c.cmd("MAIL FROM:<a@sender.example>")[0], 250)
            self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
            code, text = c.cmd("BDAT 0 LAST")
            self.assertEqual((code, text[:9]), (502, "502 5.5.1"), text)
            self.assertEqual(c.cmd("DATA")[0], 354)
            code, text = c.cmd("Subject: off\r\n\r\nchunking-off\r\n.")
            self.assertEqual(code, 250, text)
        got = wait_for(lambda: self.sink.messages())
        self.assertTrue(got and b"chunking-off" in got[-1], got)


class BdatEximSender(unittest.TestCase):
    """A real Exim 4.96 sends to the gateway: it uses BDAT when we offer CHUNKING."""

    def test_exim_sends_bdat(self):
        tmp = h.tempdir()
        try:
            with h.Postfix(tmp) as pf:
                gw = h.Gateway(tmp, h.gateway_conf(h.backend_conf(pf.port)))
                try:
                    with h.EximInstance(tmp, relay_port=gw.port) as ex:
                        body = "Subject: from exim\r\n\r\n" + "x" * 100 + "\r\n.dot line\r\n"
                        ex.send("a@sender.example", ["u@example.com"], body)
                        got = wait_for(lambda: pf.delivered(0), 30)
                        self.assertEqual(len(got), 1, ex.log())
                        self.assertIn(b"\n.dot line\n", got[0])
                        self.assertIn(b"Subject: from exim", got[0])
                    self.assertTrue(wait_for(lambda: re.search(r"disconnect from .* bdat=1\b",
                                                               gw.log())), gw.log()[-2000:])
                finally:
                    gw.close()
        finally:
            h.rmtree(tmp)


if __name__ == "__main__":
    unittest.main()
