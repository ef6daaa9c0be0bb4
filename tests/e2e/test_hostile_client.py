#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_hostile_client.py - what one hostile client can take from the gateway: time and memory.

Deadlines (RFC 5321 4.5.3.2): a command line must be complete within timeouts.command of the
moment we are ready for it, and the message content must keep up limits.min_data_rate with at
most timeouts.data of silence, however the bytes are spaced. A client that trickles one byte at a
time is cut within those bounds (an idle timer between bytes would let it stay for ever).

Memory follows the unit of work: a session must not grow with the number of commands it sends.
RSS is measured over 1,000,000 pipelined EHLO/NOOP/RSET (with a HELO rule that scores) and over
60,000 MAIL/RSET with SPF (whose Received-SPF text used to go into the session's memory); the
growth must stay under a bound. The sanitizer build keeps freed memory in its quarantine, so the
bounds are asserted on the plain build only.

Command limits: past limits.max_junk_commands (NOOP, RSET, VRFY, HELP, repeated HELO/EHLO; the
count starts again after each delivered message) or limits.max_commands in one session, the
client hears 421 4.7.0 and the connection closes. Reply codes and enhanced codes are asserted.
"""
import os
import shutil
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def ecode(r):
    """The enhanced status code of a reply (code, text), or ''."""
    parts = r[1].split("\n")[-1][4:].split(" ", 1)
    return parts[0] if parts and parts[0][:1].isdigit() else ""


def conf(backend, timeouts="", limits="", filters='"relay"', extra=""):
    """The harness configuration with our timeouts and limits sections."""
    c = h.gateway_conf(backend, filters=filters, extra=extra)
    if timeouts:
        c = c.replace("timeouts {\n  command = 10s\n  data = 10s\n", "timeouts {\n" + timeouts)
    if limits:
        c += "limits {\n" + limits + "}\n"
    return c


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS"))


def sanitized(pid):
    """True when the gateway runs with ASan (its quarantine keeps freed memory)."""
    with open(f"/proc/{pid}/maps") as f:
        return "libasan" in f.read()


def pipeline(port, unit, count, per_unit, source="127.0.0.1", helo="warm.example"):
    """Send unit (per_unit commands) count times, pipelined, while a thread reads every reply.
    Returns (replies, first reply that is not 250) and leaves the session open."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60, source_address=(source, 0))
    f = s.makefile("rb")
    f.readline()
    s.sendall(f"EHLO {helo}\r\n".encode())
    while f.readline()[3:4] != b" ":
        pass
    want = count * per_unit
    state = {"n": 0, "bad": None}

    def reader():
        # The count is kept as it goes, and a read error is reported as the bad reply, so that
        # a failure says how far the session got and why it stopped.
        try:
            while state["n"] < want:
                line = f.readline()
                if not line:
                    break
                if line[3:4] == b" ":
                    state["n"] += 1
                    if not line.startswith(b"250") and state["bad"] is None:
                        state["bad"] = line
        except OSError as e:
            if state["bad"] is None:
                state["bad"] = f"read error after {state['n']} replies: {e!r}"

    t = threading.Thread(target=reader)
    t.start()
    batch, sent = unit * 1000, 0
    try:
        while sent < count:
            k = min(1000, count - sent)
            s.sendall(batch if k == 1000 else unit * k)
            sent += k
    except OSError:
        pass
    t.join(600)  # a loaded machine (make check beside other work) is slow, not wrong
    return s, state["n"], state["bad"]


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = h.tempdir()
        self.addCleanup(h.rmtree, self.tmp)
        self.sink = h.Sink(self.tmp)
        self.addCleanup(self.sink.close)

    def gateway(self, **kw):
        gw = h.Gateway(self.tmp, conf(h.backend_conf(self.sink.port), **kw))
        self.addCleanup(gw.close)
        return gw

    def chat(self, gw, ehlo=True):
        c = h.Chat(gw.port)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        if ehlo:
            self.assertEqual(c.cmd("EHLO client.test")[0], 250)
        return c


class DeadlineTests(Base):
    TIMEOUTS = "  command = 2s\n  data = 2s\n"

    def trickle(self, c, data, gap, limit):
        """Send data one byte every gap seconds until the server closes or limit seconds pass;
        returns the seconds it took the server to close (None if it never did)."""
        t0 = time.time()
        c.s.settimeout(gap)
        i = 0
        while time.time() - t0 < limit:
            try:
                c.s.send(data[i % len(data):i % len(data) + 1])
            except OSError:
                return time.time() - t0
            i += 1
            try:
                chunk = c.s.recv(4096)
                if not chunk:
                    return time.time() - t0
                c.buf += chunk
            except socket.timeout:
                pass
            except OSError:
                return time.time() - t0
        return None

    # One byte every 0.2 s of a command line that never ends: the line has timeouts.command
    # (2 s) to be complete, however often a byte arrives.
    def test_trickled_command_line_is_cut_at_the_command_deadline(self):
        gw = self.gateway(timeouts=self.TIMEOUTS)
        c = self.chat(gw)
        took = self.trickle(c, b"NOOP" + b"x" * 1000, 0.2, 15)
        self.assertIsNotNone(took, "a trickling client kept the session for 15 s")
        self.assertLess(took, 2 + 2.5)
        r = c.reply()
        self.assertEqual((r[0], ecode(r)), (421, "4.4.2"), r)

    # Three bytes ("a" CRLF) every 0.2 s in DATA is 15 bytes/s, far below min_data_rate: the
    # message content is cut about timeouts.data after the 354, and nothing is delivered.
    def test_trickled_message_is_cut_at_the_data_deadline(self):
        gw = self.gateway(timeouts=self.TIMEOUTS)
        c = self.chat(gw)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        took = self.trickle(c, b"a\r\n", 0.2 / 3, 15)
        self.assertIsNotNone(took, "a trickling client kept the DATA phase for 15 s")
        self.assertLess(took, 2 + 2.5)
        r = c.reply()
        self.assertEqual((r[0], ecode(r)), (421, "4.4.2"), r)
        self.assertEqual(self.sink.messages(), [])

    # A client that keeps up the minimum rate may take longer than timeouts.data in all: each
    # byte buys 1/min_data_rate seconds (never more than timeouts.data ahead).
    def test_steady_message_longer_than_the_data_timeout_is_accepted(self):
        gw = self.gateway(timeouts=self.TIMEOUTS, limits="  min_data_rate = 1000\n")
        c = self.chat(gw)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send("Subject: slow\r\n\r\n")
        line = b"y" * 998 + b"\r\n"
        t0 = time.time()
        while time.time() - t0 < 3.5:
            c.send(line * 2)  # 2000 bytes every 0.5 s: 4000 bytes/s
            time.sleep(0.5)
        r = c.cmd(".")
        self.assertEqual(r[0], 250, r)
        self.assertEqual(len(self.sink.messages()), 1)

    # Waiting for our own slow filter or backend is not the client's time: the deadline only
    # runs while we wait for the client.
    def test_backend_wait_does_not_count_against_the_client(self):
        mta = h.FakeMTA(replies={"RCPT": ("DELAY", 3, "250 2.1.5 Ok")})
        self.addCleanup(mta.close)
        gw = h.Gateway(self.tmp, conf(h.backend_conf(mta.port), timeouts=self.TIMEOUTS))
        self.addCleanup(gw.close)
        c = self.chat(gw)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)


class CommandLimitTests(Base):
    def test_junk_commands_past_the_limit_get_421(self):
        gw = self.gateway(limits="  max_junk_commands = 5\n")
        c = self.chat(gw)
        for cmd in ("NOOP", "RSET", "VRFY u", "HELP", "EHLO again.test"):
            self.assertIn(c.cmd(cmd)[0], (250, 252, 214), cmd)
        r = c.cmd("NOOP")
        self.assertEqual((r[0], ecode(r)), (421, "4.7.0"), r)
        self.assertTrue(c.closed())
        self.assertIn("too many junk commands", gw.log())

    def test_junk_count_starts_again_after_a_delivered_message(self):
        gw = self.gateway(limits="  max_junk_commands = 3\n")
        c = self.chat(gw)
        for _ in range(3):
            self.assertEqual(c.cmd("NOOP")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        self.assertEqual(c.cmd("Subject: x\r\n\r\nbody\r\n.")[0], 250)
        for _ in range(3):
            self.assertEqual(c.cmd("NOOP")[0], 250)
        self.assertEqual(c.cmd("NOOP")[0], 421)

    def test_commands_past_the_session_limit_get_421(self):
        gw = self.gateway(limits="  max_commands = 100\n")
        c = self.chat(gw)  # EHLO is command 1
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        c.send("".join(f"RCPT TO:<u{i}@example.com>\r\n" for i in range(98)))
        codes = [c.reply()[0] for _ in range(98)]
        self.assertEqual(set(codes), {250})
        r = c.cmd("RCPT TO:<last@example.com>")
        self.assertEqual((r[0], ecode(r)), (421, "4.7.0"), r)
        self.assertTrue(c.closed())
        self.assertEqual(self.sink.messages(), [])


HELO_RULES = """rule helo_suspect at helo
    if helo contains "suspect"
    then score 3
threshold 10 reject 554 5.7.1 "Message rejected as spam"
"""


class MemoryTests(Base):
    def rules_conf(self):
        path = os.path.join(self.tmp, "helo.rules")
        with open(path, "w") as f:
            f.write(HELO_RULES)
        return f'rules {{\n  files = {{ "{path}" }}\n}}\n'

    # A second EHLO replaces what the filters found about the first (RFC 5321 4.1.4): four
    # EHLOs with a name worth 3 points must not add up to 12 and refuse the message.
    def test_repeated_ehlo_does_not_add_up_the_helo_score(self):
        gw = self.gateway(filters='"relay", "rules"', extra=self.rules_conf())
        c = self.chat(gw, ehlo=False)
        for _ in range(4):
            self.assertEqual(c.cmd("EHLO suspect.example")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        r = c.cmd("Subject: x\r\n\r\nbody\r\n.")
        self.assertEqual(r[0], 250, r)

    def test_rss_flat_over_a_million_ehlo_noop_rset(self):
        gw = self.gateway(filters='"relay", "rules"', extra=self.rules_conf(),
                          limits="  max_commands = 100000000\n  max_junk_commands = 100000000\n")
        if sanitized(gw.pid()):
            self.skipTest("ASan's quarantine holds freed memory; the plain build asserts this")
        name = ("suspect." + "a" * 60 + ".") * 3 + "example"  # 200 bytes, worth 3 points
        unit = f"EHLO {name}\r\nNOOP\r\nRSET\r\n".encode()
        before = rss_kb(gw.pid())
        s, n, bad = pipeline(gw.port, unit, 333334, 3)
        grown = rss_kb(gw.pid()) - before
        s.close()
        self.assertEqual((n, bad), (1000002, None))
        print(f"\n  1,000,002 EHLO/NOOP/RSET: RSS {before} KB, +{grown} KB", file=sys.stderr)
        self.assertLess(grown, 8 * 1024, f"RSS grew by {grown} KB over 1,000,002 commands")

    @unittest.skipUnless(shutil.which("nsd"), "nsd not installed")
    def test_rss_flat_over_60000_mail_rset_with_spf(self):
        from test_dns import Nsd  # the zones of test_dns: good.test passes SPF from 127.0.0.2
        nsd = Nsd(self.tmp)
        self.addCleanup(nsd.close)
        gw = self.gateway(filters='"spf", "relay"',
                          extra=f'dns {{ nameservers = {{ "127.0.0.1:{nsd.port}" }} }}\n',
                          limits="  max_commands = 100000000\n  max_junk_commands = 100000000\n")
        if sanitized(gw.pid()):
            self.skipTest("ASan's quarantine holds freed memory; the plain build asserts this")
        # Warm up (resolver cache, backend pool), then measure.
        s, n, bad = pipeline(gw.port, b"MAIL FROM:<a@good.test>\r\nRSET\r\n", 2000, 2,
                             source="127.0.0.2", helo="host2.test")
        s.close()
        self.assertEqual((n, bad), (4000, None))
        before = rss_kb(gw.pid())
        s, n, bad = pipeline(gw.port, b"MAIL FROM:<a@good.test>\r\nRSET\r\n", 60000, 2,
                             source="127.0.0.2", helo="host2.test")
        grown = rss_kb(gw.pid()) - before
        s.close()
        self.assertEqual((n, bad), (120000, None))
        print(f"\n  60,000 MAIL/RSET with SPF: RSS {before} KB, +{grown} KB", file=sys.stderr)
        self.assertLess(grown, 3 * 1024, f"RSS grew by {grown} KB over 60,000 MAIL/RSET")


    # A burst of idle connections must not leave the process at its peak once they are gone:
    # the freed heap goes back to the system (server.c on_trim, every 5 s).
    def test_memory_of_closed_connections_is_returned(self):
        n = 2000
        gw = self.gateway(limits=f"  max_connections = {n + 100}\n"
                                 f"  max_connections_per_ip = {n + 100}\n")
        if sanitized(gw.pid()):
            self.skipTest("ASan's quarantine holds freed memory; the plain build asserts this")
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < n + 200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 200), hard))
        before = rss_kb(gw.pid())
        socks = []
        try:
            for _ in range(n):
                socks.append(socket.create_connection(("127.0.0.1", gw.port)))
            greeted = 0
            for s in socks:
                s.settimeout(30)
                greeted += s.recv(64).startswith(b"220")
            self.assertEqual(greeted, n)
            peak = rss_kb(gw.pid())
        finally:
            for s in socks:
                s.close()
        grown = peak - before
        self.assertGreater(grown, 8 * 1024, "the burst did not grow the heap: nothing to measure")
        deadline, kept = time.time() + 30, grown
        while time.time() < deadline:
            kept = rss_kb(gw.pid()) - before
            if kept < grown / 2:
                break
            time.sleep(0.5)
        print(f"\n  {n} idle connections: RSS {before} KB, +{grown} KB at the peak, "
              f"+{kept} KB once closed", file=sys.stderr)
        self.assertLess(kept, grown / 2, f"{kept} of {grown} KB still held after the burst")


class DsnParamTests(Base):
    """NOTIFY and ORCPT reach the backend and its DSNs only as RFC 3461 and RFC 6533 allow."""

    def setUp(self):
        super().setUp()
        self.mta = h.FakeMTA()
        self.addCleanup(self.mta.close)
        self.gw = h.Gateway(self.tmp, conf(h.backend_conf(self.mta.port)))
        self.addCleanup(self.gw.close)

    def rcpt(self, params, mail="MAIL FROM:<a@b.example>"):
        c = self.chat(self.gw)
        self.assertEqual(c.cmd(mail)[0], 250)
        c.send(b"RCPT TO:<u@example.com> " + params + b"\r\n")
        r = c.reply()
        c.cmd("QUIT")
        rcpts = [x for x in self.mta.commands() if x.upper().startswith("RCPT")]
        return r, rcpts

    def test_bad_notify_and_orcpt_are_refused_before_the_backend(self):
        for bad in (b"NOTIFY=NEVER,SUCCESS", b"NOTIFY=SOMETIMES", b"ORCPT=rfc822;a\xc3\xa9@x.example",
                    b"ORCPT=rfc822;a+0D+0AX:y@x.example", b"ORCPT=rfc822", b"ORCPT=utf-8;a+b@x"):
            with self.subTest(bad):
                r, rcpts = self.rcpt(bad)
                self.assertEqual((r[0], ecode(r)), (501, "5.5.4"), r)
                self.assertEqual(rcpts, [])

    def test_good_notify_and_orcpt_reach_the_backend(self):
        r, rcpts = self.rcpt(b"NOTIFY=SUCCESS,DELAY ORCPT=rfc822;u+2Bx@example.com")
        self.assertEqual(r[0], 250, r)
        self.assertEqual(rcpts, ["RCPT TO:<u@example.com> NOTIFY=SUCCESS,DELAY "
                                 "ORCPT=rfc822;u+2Bx@example.com"])

    def test_utf8_orcpt_needs_smtputf8(self):
        r, _ = self.rcpt("ORCPT=utf-8;\u00fc@example.com".encode())
        self.assertEqual((r[0], ecode(r)), (501, "5.5.4"), r)
        r, rcpts = self.rcpt("ORCPT=utf-8;\u00fc@example.com".encode(),
                             mail="MAIL FROM:<a@b.example> SMTPUTF8")
        self.assertEqual(r[0], 250, r)
        self.assertEqual(len(rcpts), 1)

if __name__ == "__main__":
    unittest.main()
