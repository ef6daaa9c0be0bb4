#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_workers.py - workers = N: a parent and N worker processes on SO_REUSEPORT listeners.

Real smtp-sink behind the gateway. Each log line carries the pid of the process that wrote it,
so the tests tell the workers apart by it: both take connections, a SIGHUP to the parent
reaches every worker (and a broken file reaches none), SIGTERM to the parent drains a
transaction in flight in whichever worker holds it, a SIGKILLed worker is replaced and the
replacement serves, only the parent speaks to systemd (SCM_CREDENTIALS on NOTIFY_SOCKET),
/metrics serves the instance's totals (a dead worker's counts included, so counters never go
back) and session ids are unique across workers.

Run alone: PORTCULLIS_BIN=build/portcullis PORTCULLIS_RUN_AS_ROOT=1 python3 tests/e2e/test_workers.py
"""
import os
import re
import signal
import smtplib
import socket
import struct
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

CONNECT = re.compile(r"\[(\d+)\]: S[0-9a-f]+: connect from")
SESSION = re.compile(r"\[\d+\]: (S[0-9a-f]+): connect from")
SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")
STARTED = re.compile(r"worker (\d+) started, pid (\d+)")
MSG = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: w\r\n\r\nbody\r\n"


def wait_for(pred, timeout=10.0, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def samples(text):
    """{'name{labels}': value} of an exposition (labels as rendered)."""
    out = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def kill_quietly(pid):
    """SIGKILL a worker a test froze, if it is still there (a failed test must not hang)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Workers(unittest.TestCase):
    def setUp(self):
        self.tmp = h.tempdir()
        self.addCleanup(h.rmtree, self.tmp)
        self.sink = h.Sink(self.tmp)
        self.addCleanup(self.sink.close)

    def gateway(self, extra="", banner="ESMTP"):
        conf = h.gateway_conf(h.backend_conf(self.sink.port),
                              extra=f'workers = 2\nbanner = "{banner}"\n' + extra)
        gw = h.Gateway(self.tmp, conf)
        self.addCleanup(gw.close)
        # The port answers as soon as the parent has bound it; wait for both workers.
        self.assertTrue(wait_for(lambda: "portcullis started" in gw.log()), gw.log())
        return gw

    def workers(self, gw):
        """{index: pid} of the workers started last."""
        return {int(i): int(p) for i, p in STARTED.findall(gw.log())}

    def send(self, gw, n):
        for _ in range(n):
            with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
                c.sendmail("a@example.org", ["b@example.com"], MSG)

    def test_milter_listener_in_worker_zero_alone(self):
        # libmilter binds its own socket and runs one smfi_main per process: the parent must not
        # bind it, worker 0 serves it, worker 1 serves SMTP only (both start).
        mport = h.free_port()
        gw = self.gateway(f'listener "milter" {{ address = "inet:127.0.0.1:{mport}" '
                          f'protocol = "milter" filters = {{ "relay" }} }}\n')
        self.assertEqual(len(set(self.workers(gw).values())), 2, gw.log())
        self.assertIn("served by worker 0 alone", gw.log())
        with socket.create_connection(("127.0.0.1", mport), timeout=5):
            pass
        self.send(gw, 4)
        self.assertTrue(wait_for(lambda: len(self.sink.messages()) == 4), gw.log())

    def test_both_workers_serve_mail(self):
        mport = h.free_port()
        gw = self.gateway(f'metrics {{ enabled = true address = "127.0.0.1:{mport}" }}\n')
        pids = set(self.workers(gw).values())
        self.assertEqual(len(pids), 2)
        self.assertNotIn(gw.pid(), pids)
        self.send(gw, 24)
        self.assertTrue(wait_for(lambda: len(self.sink.messages()) == 24), len(self.sink.messages()))
        served = set(int(p) for p in CONNECT.findall(gw.log()))
        # SO_REUSEPORT hashes the 4-tuple: 24 connections all on one of 2 sockets is 2^-23.
        self.assertEqual(served, pids, gw.log())
        body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read()
        self.assertIn(b"\nportcullis_workers 2\n", body)
        self.assertIn(b"sum over all of them", body)

    def scrape(self, mport):
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as r:
            return samples(r.read().decode())

    def hold_on(self, gw, pid):
        """An open session on worker pid (others that land elsewhere are closed)."""
        for _ in range(64):
            n = len(CONNECT.findall(gw.log()))
            c = h.Chat(gw.port)
            self.assertEqual(c.reply()[0], 220)
            self.assertTrue(wait_for(lambda: len(CONNECT.findall(gw.log())) > n))
            if int(CONNECT.findall(gw.log())[n]) == pid:
                return c
            c.cmd("QUIT")
            c.close()
        self.fail("no connection reached worker pid %d" % pid)

    def test_metrics_are_the_instance_totals(self):
        # Worker 0 serves /metrics; the figures are both workers' work, and a SIGKILLed
        # worker's counts stay in the sum after its replacement: no counter goes back.
        mport = h.free_port()
        gw = self.gateway(f'metrics {{ enabled = true address = "127.0.0.1:{mport}" }}\n')
        pids = set(self.workers(gw).values())
        self.assertTrue(wait_for(lambda: self.scrape(mport)))
        before = self.scrape(mport)  # the harness probed the port: count from here
        served_before = len(CONNECT.findall(gw.log()))
        self.send(gw, 24)
        self.assertTrue(wait_for(lambda: len(self.sink.messages()) == 24))
        # Both workers served (SO_REUSEPORT: 24 connections on one of 2 sockets is 2^-23).
        self.assertEqual(set(int(p) for p in CONNECT.findall(gw.log())[served_before:]), pids)
        conn = 'portcullis_connections_total{listener="in"}'
        sent = 'portcullis_transactions_total{outcome="sent"}'
        rcpt = 'portcullis_recipients_total{outcome="sent"}'
        size = "portcullis_message_bytes_total"
        connect = 'portcullis_stage_duration_seconds_count{stage="connect"}'
        # The last session's end is counted just after our QUIT.
        self.assertTrue(wait_for(lambda: self.scrape(mport)["portcullis_connections_active"] == 0))
        s = self.scrape(mport)
        d = lambda k: s.get(k, 0) - before.get(k, 0)  # noqa: E731
        self.assertEqual(d(conn), 24, conn)
        self.assertEqual(d(sent), 24, sent)
        self.assertEqual(d(rcpt), 24, rcpt)
        self.assertEqual(d(connect), 24, connect)
        self.assertEqual(d('portcullis_replies_total{class="3xx"}'), 24)  # one 354 each
        self.assertEqual(d(size), 24 * len(MSG), size)
        self.assertEqual(s["portcullis_workers"], 2)
        self.assertEqual(s['portcullis_backend_up{backend="mta"}'], 1)
        started = s["portcullis_start_time_seconds"]  # the parent's start
        self.assertLessEqual(abs(started - time.time()), 120)
        # A worker dies holding a session: its counts stay, nothing goes back, what it held
        # (the open connection) leaves the gauge, its replacement adds to the counts.
        old = self.workers(gw)
        held = self.hold_on(gw, old[1])
        self.assertTrue(wait_for(lambda: self.scrape(mport)["portcullis_connections_active"] == 1))
        s = pre = self.scrape(mport)
        os.kill(old[1], signal.SIGKILL)
        self.assertTrue(wait_for(lambda: self.workers(gw)[1] != old[1], timeout=10), gw.log())
        self.assertTrue(wait_for(lambda: gw.log().count("of 2 started") == 3), gw.log())
        after = self.scrape(mport)
        for k, v in s.items():
            if k.endswith("_total") or "_seconds_" in k:
                self.assertGreaterEqual(after.get(k, 0), v, k)
        self.assertEqual(after[conn], s[conn])
        self.assertEqual(after[size], s[size])
        self.assertEqual(after["portcullis_connections_active"], 0)
        self.assertEqual(after["portcullis_start_time_seconds"], started)
        held.close()
        served_before = len(CONNECT.findall(gw.log()))
        self.send(gw, 24)
        self.assertTrue(wait_for(lambda: len(self.sink.messages()) == 48))
        self.assertEqual(set(int(p) for p in CONNECT.findall(gw.log())[served_before:]),
                         {old[0], self.workers(gw)[1]})
        self.assertTrue(wait_for(lambda: self.scrape(mport)["portcullis_connections_active"] == 0))
        s = self.scrape(mport)
        self.assertEqual(s[conn] - pre[conn], 24, conn)
        self.assertEqual(d(sent), 48, sent)
        self.assertEqual(d(size), 48 * len(MSG), size)

    def test_session_ids_are_unique_in_the_instance(self):
        gw = self.gateway()
        pids = set(self.workers(gw).values())
        self.send(gw, 24)
        self.assertEqual(set(int(p) for p in CONNECT.findall(gw.log())), pids, gw.log())
        ids = SESSION.findall(gw.log())
        self.assertGreaterEqual(len(ids), 24)
        self.assertEqual(len(set(ids)), len(ids), sorted(ids))

    def test_reload_reaches_every_worker(self):
        mport = h.free_port()
        gw = self.gateway(f'metrics {{ enabled = true address = "127.0.0.1:{mport}" }}\n',
                          banner="OLD")
        pids = set(self.workers(gw).values())
        with open(gw.path) as f:
            conf = f.read()
        with open(gw.path, "w") as f:
            f.write(conf.replace('banner = "OLD"', 'banner = "NEW"'))
        os.kill(gw.pid(), signal.SIGHUP)
        reloaded = re.compile(r"\[(\d+)\]: reloaded ")
        self.assertTrue(wait_for(lambda: set(map(int, reloaded.findall(gw.log()))) == pids),
                        gw.log())
        for _ in range(12):
            with h.Chat(gw.port) as c:
                code, text = c.reply()
                self.assertEqual((code, text.split()[-1]), (220, "NEW"))
        # A broken file: the parent says so and no worker is told.
        with open(gw.path, "w") as f:
            f.write(conf + "\nno_such_parameter = 1\n")
        os.kill(gw.pid(), signal.SIGHUP)
        self.assertTrue(wait_for(lambda: "workers not told" in gw.log()), gw.log())
        time.sleep(0.5)
        self.assertEqual(len(reloaded.findall(gw.log())), 2, gw.log())
        self.send(gw, 2)
        # One reload each way, though two workers reloaded and the parent alone refused.
        s = self.scrape(mport)
        self.assertEqual(s['portcullis_reloads_total{result="ok"}'], 1)
        self.assertEqual(s['portcullis_reloads_total{result="failed"}'], 1)

    def test_sigterm_drains_a_transaction_in_flight(self):
        gw = self.gateway()
        c = h.Chat(gw.port)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO client.test")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.com>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: drain\r\n\r\nfirst half\r\n")
        os.kill(gw.pid(), signal.SIGTERM)
        self.assertTrue(wait_for(lambda: gw.log().count("stopping; waiting") == 2), gw.log())
        # The idle worker exits at once and its socket leaves the group (the parent let go of
        # it too): a new client lands on the draining worker and hears 421 at once.
        self.assertTrue(wait_for(lambda: "stopped: exit status 0" in gw.log()), gw.log())
        with h.Chat(gw.port) as late:
            self.assertEqual(late.reply()[0], 421)
        c.send(b"second half\r\n.\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(gw.proc.p.wait(timeout=20), 0, gw.log())
        self.assertTrue(any(b"second half" in m for m in self.sink.messages()))
        self.assertNotIn("died", gw.log())

    def test_killed_worker_is_replaced(self):
        gw = self.gateway()
        old = self.workers(gw)
        os.kill(old[1], signal.SIGKILL)
        self.assertTrue(wait_for(lambda: self.workers(gw)[1] != old[1], timeout=10), gw.log())
        self.assertIn("died: killed by signal 9", gw.log())
        new = self.workers(gw)[1]
        self.assertTrue(wait_for(lambda: gw.log().count("of 2 started") == 3), gw.log())
        before = len(CONNECT.findall(gw.log()))
        self.send(gw, 24)
        served = set(int(p) for p in CONNECT.findall(gw.log())[before:])
        self.assertEqual(served, {old[0], new}, gw.log())
        self.assertTrue(wait_for(lambda: len(self.sink.messages()) == 24))

    def test_stuck_worker_is_killed_and_replaced(self):
        # SIGSTOP freezes worker 1's loop as a library call that never returns would: its
        # heartbeat goes silent, the parent SIGKILLs it after worker_timeout and replaces it.
        gw = self.gateway('worker_timeout = 2s\n')
        old = self.workers(gw)
        self.addCleanup(lambda: kill_quietly(old[1]))
        os.kill(old[1], signal.SIGSTOP)
        self.assertTrue(wait_for(lambda: self.workers(gw)[1] != old[1], timeout=20), gw.log())
        self.assertRegex(gw.log(), rf"worker 1 pid {old[1]} stuck for \d+s: killed")
        self.assertIn("died: killed by signal 9", gw.log())
        new = self.workers(gw)[1]
        self.assertTrue(wait_for(lambda: gw.log().count("of 2 started") == 3), gw.log())
        before = len(CONNECT.findall(gw.log()))
        self.send(gw, 24)
        served = set(int(p) for p in CONNECT.findall(gw.log())[before:])
        self.assertEqual(served, {old[0], new}, gw.log())
        self.assertTrue(wait_for(lambda: len(self.sink.messages()) == 24))

    def test_idle_workers_are_not_killed(self):
        # The shortest worker_timeout: an idle loop still beats every second.
        gw = self.gateway('worker_timeout = 2s\n')
        old = self.workers(gw)
        time.sleep(5)
        self.send(gw, 2)
        self.assertEqual(self.workers(gw), old, gw.log())
        self.assertNotIn("stuck", gw.log())
        self.assertNotIn("died", gw.log())

    def test_draining_worker_is_not_stuck(self):
        # A worker draining a slow transaction for longer than worker_timeout still turns its
        # loop: it finishes the transaction and is not killed.
        gw = self.gateway('worker_timeout = 2s\n')
        c = h.Chat(gw.port)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("EHLO client.test")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.org>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.com>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        os.kill(gw.pid(), signal.SIGTERM)
        self.assertTrue(wait_for(lambda: gw.log().count("stopping; waiting") == 2), gw.log())
        time.sleep(5)
        c.send(b"Subject: slow\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertEqual(gw.proc.p.wait(timeout=20), 0, gw.log())
        self.assertNotIn("stuck", gw.log())
        self.assertNotIn("died", gw.log())

    def test_socket_activation_shares_one_socket(self):
        ls = socket.socket()
        self.addCleanup(ls.close)
        ls.bind(("127.0.0.1", 0))
        ls.listen(64)
        port, fd = ls.getsockname()[1], ls.fileno()
        conf = h.gateway_conf(h.backend_conf(self.sink.port), extra="workers = 2\n")
        path = os.path.join(self.tmp, "sa.conf")
        logpath = os.path.join(self.tmp, "sa.log")
        with open(path, "w") as f:
            f.write(conf.replace("@PORT@", str(port)))
        # The socket becomes fd 3 and LISTEN_PID the gateway's own pid (exec keeps $$).
        move = "" if fd == 3 else f"exec 3<&{fd}; exec {fd}<&-; "
        argv = ["sh", "-c", move + 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"', h.BIN, "-c", path]
        p = h.Proc(argv, log=logpath, cwd=self.tmp, pass_fds=(fd,))
        self.addCleanup(p.stop)
        log = lambda: h.read(logpath)  # noqa: E731
        self.assertTrue(wait_for(lambda: "portcullis started" in log()), log())
        self.assertIn("socket from systemd, shared by every worker", log())
        for _ in range(6):
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
                c.sendmail("a@example.org", ["b@example.com"], MSG)
        self.assertTrue(wait_for(lambda: len(self.sink.messages()) == 6))
        os.kill(p.p.pid, signal.SIGTERM)
        self.assertEqual(p.p.wait(timeout=20), 0, log())

    def test_only_the_parent_notifies_systemd(self):
        path = os.path.join(self.tmp, "notify.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        s.bind(path)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        os.environ["NOTIFY_SOCKET"] = path
        try:
            gw = self.gateway()
        finally:
            del os.environ["NOTIFY_SOCKET"]
        seen = []

        def expect(word):
            s.settimeout(10)
            while True:
                data, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(12))
                pid = next(struct.unpack("iII", d)[0] for lv, ty, d in anc
                           if ty == socket.SCM_CREDENTIALS)
                seen.append((pid, data.decode()))
                if word in data.decode():
                    return
        expect("READY=1")
        os.kill(gw.pid(), signal.SIGHUP)
        expect("RELOADING=1")
        expect("READY=1")
        os.kill(gw.pid(), signal.SIGTERM)
        expect("STOPPING=1")
        self.assertEqual(gw.proc.p.wait(timeout=20), 0, gw.log())
        self.assertEqual({pid for pid, _ in seen}, {gw.pid()}, seen)


if __name__ == "__main__":
    unittest.main()
