#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_tls_io.py - how the gateway reads and writes a TLS connection (gateway/tls.c, bevio.c).

Replies under TLS are encrypted and written in the call that makes them (SSL_write when nothing
is queued), and OpenSSL reads ahead (a batch of records per read, not a header and then a body):
  - counted with strace on the gateway: 20 commands in a TLS session cost no epoll_ctl (libevent's
    write event is never needed) and one read each;
  - records that OpenSSL has read ahead are never left waiting: a client that sends its Finished
    and EHLO in one segment, then a whole pipelined transaction and then a message of many
    records in one write each, gets every reply (libevent 2.1 looks only at SSL_pending, which
    does not count read-ahead records, so without the kick these would wait for ever);
  - a 600 KB message sent in one burst passes the input high mark and still completes;
  - a client that reads nothing until it has sent 6000 pipelined RSETs (a small receive buffer)
    gets every reply, in order: writes that the socket cannot take fall back to libevent's;
  - QUIT, close_notify and a half-close in one segment still get the 221;
  - a TLS 1.3 KeyUpdate that asks for ours (openssl s_client's "K") is answered ahead of our
    next reply, and the talk goes on under the new keys.
The client is Python's ssl with memory BIOs, so that the test decides which records share a
write. Implicit TLS (port 465) takes the same path after its handshake.
"""
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class TlsPipe:
    """An SMTP client whose TLS records are built in memory and sent when it says so."""

    def __init__(self, port, rcvbuf=None):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(15)
        self.s.connect(("127.0.0.1", port))
        self.buf = b""
        self.tls = None

    def _recv(self):
        data = self.s.recv(65536)
        if not data:
            raise EOFError("connection closed")
        return data

    def _fill(self):
        """More plaintext into self.buf."""
        if self.tls is None:
            self.buf += self._recv()
            return
        while True:
            try:
                self.buf += self.tls.read(65536)
                return
            except ssl.SSLWantReadError:
                self.inc.write(self._recv())

    def reply(self):
        lines = []
        while True:
            while b"\n" not in self.buf:
                self._fill()
            line, self.buf = self.buf.split(b"\n", 1)
            line = line.rstrip(b"\r").decode()
            lines.append(line)
            if line[3:4] != "-":
                return int(line[:3]), "\n".join(lines)

    def queue(self, data):
        """Plain: send now. TLS: one record, held until flush()."""
        data = data.encode() if isinstance(data, str) else data
        if self.tls is None:
            self.s.sendall(data)
        else:
            self.tls.write(data)

    def flush(self):
        data = self.out.read()
        if data:
            self.s.sendall(data)

    def cmd(self, line):
        self.queue(line + "\r\n")
        if self.tls is not None:
            self.flush()
        return self.reply()

    def starttls(self, hold_finished=False):
        """STARTTLS and a handshake; hold_finished keeps our last flight for the next flush()."""
        assert self.cmd("STARTTLS")[0] == 220
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out, server_hostname="gw.test")
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                self.inc.write(self._recv())
        if not hold_finished:
            self.flush()

    def close(self):
        self.s.close()


class TlsIo(h.PeersCase):
    @classmethod
    def start_peers(cls):
        certs = h.make_certs(os.path.join(cls.tmp, "certs"), "gw.test")
        cls.sink = cls.keep(h.Sink(cls.tmp))
        conf = h.gateway_conf(h.backend_conf(cls.sink.port, identity="none"), extra="""limits {
  max_commands = 100000
  max_junk_commands = 100000
  max_message_size = 10000000
}
""")
        conf = conf.replace('  filters = { "relay" }\n',
                            f'  filters = {{ "relay" }}\n  tls = "starttls"\n'
                            f'  tls_certificate = {{ "{certs["cert"]}" }}\n'
                            f'  tls_key = {{ "{certs["key"]}" }}\n', 1)
        cls.gw = cls.keep(h.Gateway(cls.tmp, conf))

    def session(self, hold_finished=False, rcvbuf=None):
        c = TlsPipe(self.gw.port, rcvbuf)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO client.example")[0], 250)
        c.starttls(hold_finished)
        return c

    @unittest.skipUnless(shutil.which("strace") and os.geteuid() == 0, "needs strace and root")
    def test_replies_cost_no_epoll_ctl_and_one_read(self):
        c = self.session()
        self.assertEqual(c.cmd("EHLO client.example")[0], 250)
        out = os.path.join(self.tmp, "strace.txt")
        st = subprocess.Popen(["strace", "-f", "-q", "-e", "trace=epoll_ctl,read,write",
                               "-o", out, "-p", str(self.gw.pid())])
        try:
            time.sleep(1.5)  # attached (the count below does not depend on when)
            for _ in range(20):
                self.assertEqual(c.cmd("RSET")[0], 250)
            time.sleep(0.3)
        finally:
            st.send_signal(signal.SIGINT)
            st.wait(timeout=10)
        with open(out) as f:
            calls = [w[1].split("(")[0] for w in (line.split() for line in f)
                     if len(w) > 1 and "(" in w[1]]
        # Before: two epoll_ctl per reply (libevent adds and removes its write event) and three
        # reads per command (record header, body, EAGAIN).
        self.assertLessEqual(calls.count("epoll_ctl"), 2, calls)
        self.assertLessEqual(calls.count("read"), 22, calls)
        self.assertGreaterEqual(calls.count("write"), 20, calls)

    def test_finished_and_ehlo_in_one_segment(self):
        c = self.session(hold_finished=True)
        c.queue("EHLO client.example\r\n")
        c.flush()  # our Finished and the EHLO record together
        self.assertEqual(c.reply()[0], 250)

    def test_pipelined_records_in_one_write(self):
        c = self.session()
        self.assertEqual(c.cmd("EHLO client.example")[0], 250)
        for line in ["MAIL FROM:<a@b.example>"] + ["RCPT TO:<u@example.com>"] * 5 + ["DATA"]:
            c.queue(line + "\r\n")
        c.flush()
        codes = [c.reply()[0] for _ in range(7)]
        self.assertEqual(codes, [250] * 6 + [354])
        c.queue("Subject: many records\r\n\r\n")
        for i in range(60):
            c.queue(f"line {i} " + "x" * 60 + "\r\n")
        c.queue(".\r\n")
        c.flush()
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_message_past_the_input_high_mark_in_one_burst(self):
        c = self.session()
        self.assertEqual(c.cmd("EHLO client.example")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@b.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<u@example.com>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        body = "Subject: big\r\n\r\n" + ("y" * 998 + "\r\n") * 600 + ".\r\n"
        for i in range(0, len(body), 16384):
            c.queue(body[i:i + 16384])
        c.flush()
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_reader_that_waits_gets_every_reply_in_order(self):
        n = 6000
        c = self.session(rcvbuf=4096)
        self.assertEqual(c.cmd("EHLO client.example")[0], 250)
        for _ in range(n):
            c.queue("RSET\r\n")
        data = c.out.read()
        sender = threading.Thread(target=c.s.sendall, args=(data,))
        sender.start()
        time.sleep(1.0)  # the gateway's output backs up meanwhile (the test does not rely on it)
        codes = [c.reply()[0] for _ in range(n)]
        sender.join(timeout=30)
        self.assertEqual(codes, [250] * n)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertTrue(self.gw.alive())

    def test_quit_then_close_notify_and_half_close_still_gets_221(self):
        # QUIT, our close_notify and a TCP half-close in one segment: the gateway has read all
        # three at once (read-ahead) and still answers the QUIT before it sees the end.
        c = self.session()
        self.assertEqual(c.cmd("EHLO client.example")[0], 250)
        c.queue("QUIT\r\n")
        try:
            c.tls.unwrap()
        except ssl.SSLWantReadError:
            pass  # our close_notify is written; theirs has not come yet
        c.flush()
        c.s.shutdown(socket.SHUT_WR)
        self.assertEqual(c.reply()[0], 221)

    def test_key_update_requested_is_answered_and_talk_goes_on(self):
        # s_client's interactive "K" sends a TLS 1.3 KeyUpdate that asks for ours in return:
        # OpenSSL sends it ahead of our next reply, in whichever SSL_write comes first (ours at
        # once, or libevent's), and the session goes on under the new keys.
        p = subprocess.Popen(["openssl", "s_client", "-tls1_3", "-msg", "-starttls", "smtp",
                              "-connect", f"127.0.0.1:{self.gw.port}"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        # (Lines that start with Q or R are s_client's quit and renegotiate: none here.)
        for line, pause in (("EHLO a", 1.0), ("K", 0.5), ("NOOP", 0.5), ("K", 0.5),
                            ("NOOP", 0.5)):
            time.sleep(pause)
            p.stdin.write(line + "\n")
            p.stdin.flush()
        time.sleep(1.0)
        p.stdin.close()
        p.stdin = None
        out = p.communicate(timeout=15)[0]
        self.assertEqual(out.count(">>> TLS 1.3, Handshake [length 0005], KeyUpdate"), 2, out)
        self.assertEqual(out.count("<<< TLS 1.3, Handshake [length 0005], KeyUpdate"), 2, out)
        self.assertEqual(out.count("250 2.0.0 Ok"), 2, out)

if __name__ == "__main__":
    unittest.main()
