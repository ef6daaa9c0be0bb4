#!/usr/bin/env python3
"""test_ratelimit.py - the ratelimit filter end to end, through the SMTP proxy.

Starts a real redis-server and one or two portcullis processes on 127.0.0.1 (ports 24100-24199),
delivering into a temporary Maildir, and talks SMTP to them with smtplib:

- 5 messages per minute: 5 go through, the 6th gets 450 4.7.1 with when to retry;
- two gateways sharing one Redis enforce one combined limit;
- a connection flood gets a 421 4.7.0 greeting;
- Redis stopped: on_error = accept lets mail through, and the limit holds again once Redis is back;
- Redis frozen (SIGSTOP): the session goes on after the store timeout.

Run: python3 tests/e2e/test_ratelimit.py [--binary build/portcullis]   (or PORTCULLIS_BIN=...)
Every process started here is stopped again, also when a test fails.
"""
import os
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import unittest

BIN = os.environ.get("PORTCULLIS_BIN", "build/portcullis")
PORT_LO, PORT_HI = 24100, 24199
_next_port = [PORT_LO + (os.getpid() % 40) * 2]


def free_port():
    """A port of our range that we can bind right now."""
    for _ in range(PORT_HI - PORT_LO):
        p = _next_port[0]
        _next_port[0] = PORT_LO if p >= PORT_HI else p + 1
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port in %d-%d" % (PORT_LO, PORT_HI))


def wait_port(port, proc, what, timeout=10.0):
    """Until something accepts on port (or the process died)."""
    until = time.time() + timeout
    while time.time() < until:
        if proc.poll() is not None:
            raise RuntimeError("%s exited with %s" % (what, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s did not listen on %d" % (what, port))


class Env(unittest.TestCase):
    """One Redis, gateways on demand; everything torn down by addCleanup."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory(prefix="pc-rl-e2e.")
        self.addCleanup(self.dir.cleanup)
        self.redis_port = free_port()
        self.redis = None
        self.start_redis()

    def start_redis(self):
        p = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(self.kill, p)
        wait_port(self.redis_port, p, "redis-server")
        self.redis = p

    def kill(self, p):
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
            p.kill()
        p.wait()

    def gateway(self, limits, on_error="accept", extra=""):
        """A portcullis with relay + ratelimit in front of a Maildir; returns (port, log path)."""
        port = free_port()
        n = len(os.listdir(self.dir.name))
        conf = os.path.join(self.dir.name, "gw%d.conf" % n)
        log = os.path.join(self.dir.name, "gw%d.log" % n)
        with open(conf, "w") as f:
            f.write("""hostname = "mx%(n)d.test"
listener "in" { address = "127.0.0.1:%(port)d" filters = { "relay", "ratelimit" } }
backend "local" { maildir = "%(dir)s/Maildir%(n)d" }
relay { domains = { "example.com" } }
ratelimit {
    store = "redis://127.0.0.1:%(rport)d/0"
    store_timeout = "300ms"
    timeout = "20s"
    on_error = "%(onerr)s"
    %(extra)s
    %(limits)s
}
""" % dict(n=n, port=port, dir=self.dir.name, rport=self.redis_port, onerr=on_error,
           limits=limits, extra=extra))
        lf = open(log, "w")
        self.addCleanup(lf.close)
        p = subprocess.Popen([BIN, "-c", conf], stdout=lf, stderr=subprocess.STDOUT)
        self.addCleanup(self.kill, p)
        wait_port(port, p, "portcullis")
        return port, log

    def send(self, port, sender="a@sender.example"):
        """One message; None when accepted, else (code, text)."""
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
                s.sendmail(sender, ["u@example.com"], "Subject: t\r\n\r\nhello\r\n")
            return None
        except smtplib.SMTPDataError as e:
            return (e.smtp_code, e.smtp_error.decode())
        except smtplib.SMTPConnectError as e:
            return (e.smtp_code, e.smtp_error.decode())
        except smtplib.SMTPServerDisconnected as e:
            return (0, str(e))


MSGS5 = 'limit "msgs" { key = { "client_ip" } count = "messages" rate = "5/1m" }'


class RateLimitE2E(Env):
    def test_sixth_message_450(self):
        port, _ = self.gateway(MSGS5)
        for i in range(5):
            self.assertIsNone(self.send(port), "message %d" % (i + 1))
        code, text = self.send(port)
        self.assertEqual(code, 450)
        self.assertTrue(text.startswith("4.7.1 "), text)
        self.assertIn("try again in", text)

    def test_two_gateways_share_one_limit(self):
        a, _ = self.gateway(MSGS5)
        b, _ = self.gateway(MSGS5)
        for i in range(5):
            self.assertIsNone(self.send(a if i % 2 else b), "message %d" % (i + 1))
        self.assertEqual(self.send(a)[0], 450)
        self.assertEqual(self.send(b)[0], 450)

    def test_connection_flood_421(self):
        # 4 per minute: the readiness probe in gateway() was the first connection.
        port, _ = self.gateway(
            'limit "conn" { key = { "client_ip" } count = "connections" rate = "4/1m" }')
        for i in range(3):
            self.assertIsNone(self.send(port), "connection %d" % (i + 1))
        r = self.send(port)
        self.assertIsNotNone(r)
        self.assertEqual(r[0], 421, r)
        self.assertIn("4.7.0", r[1])

    def test_redis_stopped_then_back(self):
        port, log = self.gateway(MSGS5, on_error="accept")
        for i in range(5):
            self.assertIsNone(self.send(port))
        self.kill(self.redis)
        # Down: on_error = accept lets mail through, the gateway stays up.
        for i in range(3):
            self.assertIsNone(self.send(port), "with redis down, message %d" % (i + 1))
        with open(log) as f:
            self.assertIn("store error", f.read())
        # Back (empty, as after a restart without persistence): counting starts again.
        self.start_redis()
        ok = False
        for _ in range(100):
            time.sleep(0.1)
            with open(log) as f:
                if "is back" in f.read():
                    ok = True
                    break
            self.send(port)
        self.assertTrue(ok, "no reconnect")
        results = [self.send(port) for _ in range(6)]
        self.assertEqual(results[-1][0], 450, results)

    def test_redis_frozen_session_goes_on(self):
        port, log = self.gateway(MSGS5, on_error="tempfail")
        self.assertIsNone(self.send(port))
        self.redis.send_signal(signal.SIGSTOP)
        try:
            r = self.send(port)
        finally:
            self.redis.send_signal(signal.SIGCONT)
        # The store's 300 ms timeout answered (not the chain's 20 s backstop): 451 4.3.0.
        self.assertEqual(r[0], 451, r)
        with open(log) as f:
            text = f.read()
        self.assertIn("timed out", text)
        self.assertNotIn("ratelimit check timed out", text)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--binary":
        BIN = sys.argv[2]
        del sys.argv[1:3]
    BIN = os.path.abspath(BIN)
    unittest.main(verbosity=2)
