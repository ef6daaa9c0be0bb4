#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_logs.py - the log as the tools that read Postfix logs see it.

A gateway in front of smtp-sink (Postfix's test server) handles deliveries and refusals of
every kind; then the real tools run over the log it wrote: pflogsumm (Debian's) must count
received, delivered and rejected right, and fail2ban-regex with our shipped filter
(deploy/fail2ban) must match every permanent refusal and nothing else. Also: exactly one line
per refusal (a refusal held until RCPT by delay_reject was logged twice), Postfix's delivery
fields, forged fields in a quoted local part, queue ids of two gateways, syslog_name, the JSON
format, SIGUSR1, and the journal (native protocol on a socket the test opens, and the bare
"<N>" lines when stderr itself is the journal).
"""
import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

ROOT = h.ROOT
MSG = "Subject: hello\r\nFrom: a@ok.test\r\nTo: u@example.com\r\n\r\nbody\r\n"
RULES = ('rule blocked_sender at mail if from.domain == "spam.test" '
         'then reject 550 5.7.1 "Sender domain refused"\n'
         'rule subject_block at header if header "Subject" == "block-me" '
         'then reject 550 5.7.1 "blocked locally"\n')
FORGED = '"x>, to=<root@example.com>, status=sent (250 forged"@example.org'


def send(port, sender="a@ok.test", rcpts=("u@example.com",), msg=MSG):
    """One transaction; the last reply (code, text)."""
    s = smtplib.SMTP("127.0.0.1", port, timeout=15)
    try:
        s.ehlo("client.test")
        code, text = s.mail(sender)
        if code != 250:
            return code, text
        ok = 0
        for r in rcpts:
            code, text = s.rcpt(r)
            ok += code == 250
        if ok == 0:
            return code, text
        return s.data(msg.encode())
    finally:
        try:
            s.quit()
        except smtplib.SMTPException:
            pass


def conf(sink_port, extra="", lmtp=False, filters='"relay", "rules"', dry_run=False):
    return f"""hostname = "gw.test"
listener "in" {{
  address = "127.0.0.1:@PORT@"
  backend = "mta"
  filters = {{ {filters} }}
  dry_run = {"true" if dry_run else "false"}
}}
backend "mta" {{
  address = {{ "127.0.0.1:{sink_port}" }}
  identity = "none"
  lmtp = {"true" if lmtp else "false"}
}}
relay {{
  mynetworks = {{ "192.0.2.0/24" }}
  domains = {{ "example.com" }}
}}
rules {{ files = {{ "@TMP@/local.rules" }} }}
{extra}
"""


class EnvGateway(h.Gateway):
    """A gateway started with extra environment variables (JOURNAL_STREAM)."""

    def __init__(self, tmp, config, env_fn):
        self.port = h.free_port()
        self.tmp = tmp
        self.path = os.path.join(tmp, f"portcullis{self.port}.conf")
        self.logpath = os.path.join(tmp, f"portcullis{self.port}.log")
        with open(self.path, "w") as f:
            f.write(config.replace("@PORT@", str(self.port)).replace("@TMP@", tmp))
        open(self.logpath, "ab").close()
        env = dict(os.environ, **env_fn(self.logpath))
        self.proc = h.Proc([h.BIN, "-c", self.path], log=self.logpath, cwd=tmp, env=env)
        h.wait_port(self.port, proc=self.proc.p)


class LogTests(unittest.TestCase):

    def setUp(self):
        self.tmp = h.tempdir()
        self.parts = []
        with open(os.path.join(self.tmp, "local.rules"), "w") as f:
            f.write(RULES)

    def tearDown(self):
        for p in reversed(self.parts):
            p.close()
        h.rmtree(self.tmp)

    def start(self, extra="", lmtp=False, fail=None):
        sink = h.Sink(self.tmp, fail=fail, lmtp=lmtp)
        self.parts.append(sink)
        gw = h.Gateway(self.tmp, conf(sink.port, extra, lmtp))
        self.parts.append(gw)
        return gw, sink

    def traffic(self, gw):
        """3 messages delivered, 3 refusals (delayed MAIL refusal at RCPT, relay denied,
        content); returns the replies."""
        r = [send(gw.port),
             send(gw.port, rcpts=("v@example.com",)),
             send(gw.port, sender=FORGED),
             send(gw.port, sender="x@spam.test"),
             send(gw.port, rcpts=("w@elsewhere.test",)),
             send(gw.port, msg=MSG.replace("Subject: hello", "Subject: block-me"))]
        codes = [c for c, _ in r]
        self.assertEqual(codes, [250, 250, 250, 550, 554, 550], r)
        return r

    def wait_log(self, gw, pattern, n=1, timeout=5):
        end = time.time() + timeout
        while time.time() < end:
            if len(re.findall(pattern, gw.log(), re.M)) >= n:
                return True
            time.sleep(0.05)
        return False

    def quiet_log(self, gw):
        """The log once the last session has said goodbye."""
        self.wait_log(gw, r"disconnect from", n=gw.log().count("connect from unknown") // 2 or 1)
        time.sleep(0.2)
        return gw.log()

    # --- Postfix-compatible lines -----------------------------------------------------------

    def test_one_line_per_refusal(self):
        """A MAIL refusal held until RCPT (delay_reject) is one line, not two; one per refused
        RCPT; each names stage, client, code, enhanced code, filter and rule."""
        gw, _ = self.start()
        s = smtplib.SMTP("127.0.0.1", gw.port, timeout=15)
        s.ehlo("client.test")
        self.assertEqual(s.mail("x@spam.test")[0], 250)  # held until RCPT
        self.assertEqual(s.rcpt("u@example.com")[0], 550)
        s.quit()
        log = self.quiet_log(gw)
        lines = [ln for ln in log.splitlines() if "Sender domain refused" in ln]
        self.assertEqual(len(lines), 1, log)
        self.assertRegex(lines[0], r"portcullis/smtpd\[\d+\]: \w+: reject: RCPT from "
                         r"unknown\[127\.0\.0\.1\]: 550 5\.7\.1 Sender domain refused; "
                         r"from=<x@spam\.test> to=<u@example\.com> proto=ESMTP "
                         r"helo=<client\.test> filter=rules rule=blocked_sender$")

    def test_delivery_line_fields(self):
        """to=, relay=name[addr]:port, delay=, delays=a/b/c/d, dsn=, status=sent, as Postfix."""
        gw, sink = self.start()
        self.assertEqual(send(gw.port, rcpts=("u@example.com", "v@example.com"))[0], 250)
        log = self.quiet_log(gw)
        qid = re.search(r"smtpd\[\d+\]: (\w+): client=unknown\[127\.0\.0\.1\]$", log, re.M)
        self.assertTrue(qid, log)
        qid = qid.group(1)
        self.assertRegex(log, rf"smtp\[\d+\]: {qid}: from=<a@ok\.test>, size=\d+, nrcpt=2 "
                         r"\(queue active\)")
        for rcpt in ("u@example.com", "v@example.com"):
            self.assertRegex(
                log, rf"smtp\[\d+\]: {qid}: to=<{re.escape(rcpt)}>, "
                rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:{sink.port}, delay=[\d.]+, "
                r"delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, dsn=2\.\d+\.\d+, status=sent \(250 ")

    def test_queue_id_format(self):
        """Long queue ids: 18 characters of digits and consonants, distinct per message."""
        gw, _ = self.start()
        for _ in range(5):
            send(gw.port)
        ids = re.findall(r": (\w+): client=", self.quiet_log(gw))
        self.assertEqual(len(ids), 5)
        self.assertEqual(len(set(ids)), 5, ids)
        for i in ids:
            self.assertRegex(i, r"^[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{18}$")

    def test_forged_fields_in_quoted_local_part(self):
        """issue 13 section 6: a quoted local part that contains ', to=<...>, status=sent (...'
        must not write a to= or status= field of its own into our lines."""
        gw, _ = self.start()
        self.assertEqual(send(gw.port, sender=FORGED)[0], 250)
        log = self.quiet_log(gw)
        self.assertNotIn("to=<root@example.com>", log)
        self.assertNotIn("status=sent (250 forged", log)
        for line in log.splitlines():
            self.assertLessEqual(line.count("status="), 1, line)
            self.assertLessEqual(line.count(" to=<"), 1, line)
        # Unambiguous: the escaped form still names the sender.
        self.assertRegex(log, r"from=<\"x\\x3e\\x2c\\x20to=\\x3croot@example\.com")
        out = self.pflogsumm(gw.logpath)
        self.assertEqual(self.totals(out)["delivered"], 1, out)
        rcpts = out.split("Recipients by message count")[1].split("\n\n")[0]
        self.assertNotIn("root@example.com", rcpts)
        self.assertIn("u@example.com", rcpts)

    def test_lmtp_reject_has_enhanced_code(self):
        """issue 12 item 7: an LMTP backend's refusal of RCPT is logged with its enhanced code."""
        gw, _ = self.start(lmtp=True, fail={"f": "RCPT"})
        code, _ = send(gw.port)
        self.assertEqual(code // 100, 5)
        log = self.quiet_log(gw)
        self.assertRegex(log, r"reject: RCPT from unknown\[127\.0\.0\.1\]: 5\d\d 5\.\d+\.\d+ "
                         r".*relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+")

    def test_two_gateways_never_share_a_queue_id(self):
        """Two gateways that start a transaction in the same second issue different ids
        (the old ids were the time in seconds and a per-process counter from 1)."""
        sink = h.Sink(self.tmp)
        self.parts.append(sink)
        gws = [h.Gateway(self.tmp, conf(sink.port)) for _ in range(2)]
        self.parts.extend(gws)
        # Start both at the beginning of a second so that they share it.
        time.sleep(1.02 - (time.time() % 1))
        ts = [threading.Thread(target=send, args=(g.port,)) for g in gws]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        ids = [sorted(set(re.findall(r": (\w+): .*status=sent", self.quiet_log(g)))) for g in gws]
        self.assertEqual([len(i) for i in ids], [1, 1], ids)
        self.assertNotEqual(ids[0][0], ids[1][0])

    # --- the tools ---------------------------------------------------------------------------

    def pflogsumm(self, path, name="portcullis"):
        r = subprocess.run(["pflogsumm", f"--syslog-name={name}", path], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    @staticmethod
    def totals(out):
        got = {}
        for what in ("received", "delivered", "rejected", "deferred", "bounced", "discarded"):
            m = re.search(rf"^\s+(\d+)\s+{what}\b", out, re.M)
            got[what] = int(m.group(1)) if m else None
        return got

    @unittest.skipUnless(os.path.exists("/usr/sbin/pflogsumm"), "pflogsumm not installed")
    def test_pflogsumm_counts(self):
        gw, _ = self.start()
        self.traffic(gw)
        self.quiet_log(gw)
        got = self.totals(self.pflogsumm(gw.logpath))
        self.assertEqual(got, {"received": 3, "delivered": 3, "rejected": 3, "deferred": 0,
                               "bounced": 0, "discarded": 0}, gw.log())

    @unittest.skipUnless(os.path.exists("/usr/sbin/pflogsumm"), "pflogsumm not installed")
    def test_syslog_name(self):
        """Two instances told apart: syslog_name names every line, and pflogsumm reads it."""
        gw, _ = self.start(extra='syslog_name = "portcullis-mx2"')
        self.traffic(gw)
        log = self.quiet_log(gw)
        self.assertNotRegex(log, r" portcullis/")
        self.assertRegex(log, r" portcullis-mx2/smtpd\[\d+\]: ")
        got = self.totals(self.pflogsumm(gw.logpath, "portcullis-mx2"))
        self.assertEqual((got["received"], got["delivered"], got["rejected"]), (3, 3, 3))

    def fail2ban(self, path, mode=None):
        """fail2ban-regex with the shipped filter; (matched, missed, hosts)."""
        conf_dir = os.path.join(self.tmp, "f2b")
        os.makedirs(os.path.join(conf_dir, "filter.d"), exist_ok=True)
        dst = os.path.join(conf_dir, "filter.d", "portcullis.conf")
        if not os.path.exists(dst):
            with open(os.path.join(ROOT, "deploy", "fail2ban", "filter.d", "portcullis.conf")) as f, \
                    open(dst, "w") as g:
                g.write(f.read())
            os.symlink("/etc/fail2ban/filter.d/common.conf",
                       os.path.join(conf_dir, "filter.d", "common.conf"))
        name = "portcullis" + (f"[mode={mode}]" if mode else "")
        r = subprocess.run(["fail2ban-regex", "-c", conf_dir, "--print-all-matched", path, name],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        m = re.search(r"^Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed",
                      r.stdout, re.M)
        self.assertTrue(m, r.stdout)
        return int(m.group(3)), int(m.group(4)), r.stdout

    @unittest.skipUnless(os.path.exists("/usr/bin/fail2ban-regex"), "fail2ban not installed")
    def test_fail2ban_filter(self):
        gw, _ = self.start()
        self.traffic(gw)
        # A web client talking to the SMTP port: a protocol offence (mode aggressive only).
        c = h.Chat(gw.port)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("GET / HTTP/1.0")[0], 421)
        c.close()
        log = self.quiet_log(gw)
        matched, _, out = self.fail2ban(gw.logpath)
        self.assertEqual(matched, 3, out)  # the three 5xx refusals, none of the deliveries
        self.assertNotIn("status=sent", out.split("Lines:")[1] if "Lines:" in out else out)
        matched, _, out = self.fail2ban(gw.logpath, "aggressive")
        self.assertEqual(matched, 4, out)
        # Delivery lines alone: nothing to ban.
        only = os.path.join(self.tmp, "deliveries.log")
        with open(only, "w") as f:
            f.writelines(ln + "\n" for ln in log.splitlines()
                         if "reject:" not in ln and "non-SMTP" not in ln)
        self.assertEqual(self.fail2ban(only, "aggressive")[0], 0)

    @unittest.skipUnless(os.path.exists("/usr/sbin/pflogsumm"), "pflogsumm not installed")
    def test_tempfail_and_dry_run(self):
        """A 4xx refusal is a "reject:" line that pflogsumm counts and fail2ban never bans on;
        a dry-run listener's would-be refusals are Postfix's "reject_warning:" lines."""
        with open(os.path.join(self.tmp, "local.rules"), "a") as f:
            f.write('rule slow_down at rcpt if rcpt.local == "later" '
                    'then tempfail 451 4.7.1 "Try again later"\n')
        gw, _ = self.start()
        self.assertEqual(send(gw.port, rcpts=("later@example.com",))[0], 451)
        log = self.quiet_log(gw)
        self.assertRegex(log, r"reject: RCPT from unknown\[127\.0\.0\.1\]: 451 4\.7\.1 Try "
                         r"again later; .* filter=rules rule=slow_down")
        self.assertEqual(self.totals(self.pflogsumm(gw.logpath))["rejected"], 1)
        self.assertEqual(self.fail2ban(gw.logpath, "aggressive")[0], 0)
        sink = h.Sink(self.tmp)
        self.parts.append(sink)
        dry = h.Gateway(self.tmp, conf(sink.port, dry_run=True))
        self.parts.append(dry)
        self.assertEqual(send(dry.port, sender="x@spam.test")[0], 250)  # dry run: delivered
        log = self.quiet_log(dry)
        self.assertNotIn("reject:", log)
        self.assertRegex(log, r"reject_warning: MAIL from unknown\[127\.0\.0\.1\]: 550 5\.7\.1 "
                         r"Sender domain refused; .*rule=blocked_sender")
        out = self.pflogsumm(dry.logpath)
        self.assertEqual(self.totals(out)["rejected"], 0)
        self.assertRegex(out, r"\s+1\s+reject warnings")
        self.assertEqual(self.fail2ban(dry.logpath, "aggressive")[0], 0)

    # --- formats and targets -----------------------------------------------------------------

    def test_json_format(self):
        """log_format = json: every line is one JSON object, and every transaction ends with
        exactly one summary object saying how it ended."""
        gw, _ = self.start(extra='log_format = "json"')
        self.traffic(gw)
        log = self.quiet_log(gw)
        objs = [json.loads(ln) for ln in log.splitlines() if ln.strip()]
        summaries = [o for o in objs if o.get("event") == "transaction"]
        self.assertEqual(sorted(o["outcome"] for o in summaries),
                         ["rejected"] * 3 + ["sent"] * 3, summaries)
        self.assertEqual(len({o["queue_id"] for o in summaries}), 6)
        sent = [o for o in summaries if o["outcome"] == "sent"]
        self.assertIn(FORGED, [o["from"] for o in sent])
        self.assertEqual(sent[0]["client"], "unknown[127.0.0.1]")
        self.assertEqual(sent[0]["dsn"][:2], "2.")
        rule = [o for o in summaries if o.get("rule") == "blocked_sender"]
        self.assertEqual(len(rule), 1)
        self.assertEqual((rule[0]["code"], rule[0]["filter"]), (550, "rules"))
        for o in objs:
            self.assertIn(o["level"], ("info", "warning", "err", "notice", "debug", "crit"))

    def test_sigusr1_reopens_logs(self):
        """issue 12 item 7: SIGUSR1 killed the daemon; now it reopens the logs."""
        gw, _ = self.start()
        os.kill(gw.pid(), signal.SIGUSR1)
        self.assertTrue(self.wait_log(gw, r"logs reopened"), gw.log())
        self.assertTrue(gw.alive())
        self.assertEqual(send(gw.port)[0], 250)

    @staticmethod
    def journal_stream(path):
        st = os.stat(path)
        return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}

    def test_stderr_connected_to_journal_is_bare(self):
        """log = stderr under systemd: no timestamp or ident of our own (the journal adds them),
        the priority as "<N>"."""
        sink = h.Sink(self.tmp)
        self.parts.append(sink)
        gw = EnvGateway(self.tmp, conf(sink.port, 'log = "stderr"'), self.journal_stream)
        self.parts.append(gw)
        send(gw.port, sender="x@spam.test")
        log = self.quiet_log(gw)
        lines = [ln for ln in log.splitlines() if ln]
        self.assertTrue(lines)
        for ln in lines:
            self.assertRegex(ln, r"^<[0-7]>\S")
            self.assertNotRegex(ln, r"^<\d>\w{3} [ \d]\d \d\d:")
        self.assertTrue(any(ln.startswith("<6>") and "reject: RCPT" in ln for ln in lines))

    @unittest.skipUnless(os.geteuid() == 0, "needs root to open /dev/log")
    def test_syslog_target(self):
        """log = syslog: facility mail, priority, and the program in the ident of each line
        (name/smtpd for the dialogue, name/smtp for the delivery); still logging after SIGUSR1
        reopened the connection. /dev/log is a socket the test opens (no syslogd in CI)."""
        path = "/dev/log"
        if os.path.exists(path):
            self.skipTest("a syslog socket exists on this host")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        got = []
        stop = threading.Event()

        def reader():
            sock.settimeout(0.2)
            while not stop.is_set():
                try:
                    got.append(sock.recv(1 << 16).decode(errors="replace"))
                except socket.timeout:
                    pass
                except OSError:
                    return
        t = threading.Thread(target=reader)
        t.start()
        try:
            gw, _ = self.start(extra='log = "syslog"\nsyslog_name = "pc-sys"')
            send(gw.port, sender="x@spam.test")
            send(gw.port)
            os.kill(gw.pid(), signal.SIGUSR1)
            time.sleep(0.3)
            send(gw.port)
            time.sleep(0.5)
        finally:
            stop.set()
            t.join()
            sock.close()
            os.unlink(path)
        mine = [g for g in got if "pc-sys/" in g]
        rej = [g for g in mine if "reject: RCPT" in g]
        self.assertEqual(len(rej), 1, got)
        self.assertRegex(rej[0], r"^<22>\w{3} [ \d]\d \d\d:\d\d:\d\d pc-sys/smtpd\[\d+\]: ")
        sent = [g for g in mine if "status=sent" in g]
        self.assertEqual(len(sent), 2, got)
        for g in sent:
            self.assertRegex(g, r"^<22>.* pc-sys/smtp\[\d+\]: \w+: to=<u@example\.com>")
        self.assertTrue(any("logs reopened" in g for g in mine), got)
        self.assertEqual(gw.log().strip(), "")  # nothing on stderr

    @unittest.skipUnless(os.geteuid() == 0, "needs root to open the journal socket")
    def test_journal_native_fields(self):
        """log = auto under systemd (JOURNAL_STREAM): the journal gets priority, identifier
        and our fields. The journal is a socket the test opens (no journald in CI)."""
        path = "/run/systemd/journal/socket"
        if os.path.exists(path):
            self.skipTest("a journal socket exists on this host")
        made_dir = not os.path.isdir("/run/systemd/journal")
        os.makedirs("/run/systemd/journal", exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        try:
            sink = h.Sink(self.tmp)
            self.parts.append(sink)
            gw = EnvGateway(self.tmp, conf(sink.port), self.journal_stream)
            self.parts.append(gw)
            entries = []

            def reader():
                # The journal reads as fast as it can: a sender blocks when the queue is full.
                sock.settimeout(3)
                try:
                    while True:
                        data = sock.recv(1 << 16)
                        entries.append(dict(kv.split("=", 1) for kv in
                                            data.decode(errors="replace").split("\n")
                                            if "=" in kv))
                except (socket.timeout, OSError):
                    pass
            t = threading.Thread(target=reader)
            t.start()
            send(gw.port, sender="x@spam.test")
            send(gw.port)
            t.join()
        finally:
            sock.close()
            os.unlink(path)
            if made_dir:
                os.rmdir("/run/systemd/journal")
        self.assertEqual(gw.log().strip(), "")  # nothing on stderr
        rej = [e for e in entries if "reject: RCPT" in e.get("MESSAGE", "")]
        self.assertEqual(len(rej), 1, entries)
        e = rej[0]
        self.assertEqual(e["PRIORITY"], "6")
        self.assertEqual(e["SYSLOG_FACILITY"], "2")  # mail
        self.assertEqual(e["SYSLOG_IDENTIFIER"], "portcullis/smtpd")
        self.assertEqual(e["PORTCULLIS_FILTER"], "rules")
        self.assertEqual(e["PORTCULLIS_RULE"], "blocked_sender")
        self.assertEqual(e["PORTCULLIS_CLIENT"], "unknown[127.0.0.1]")
        self.assertIn(e["PORTCULLIS_QUEUE_ID"], e["MESSAGE"])
        sent = [e for e in entries if "status=sent" in e.get("MESSAGE", "")]
        self.assertEqual(len(sent), 1)
        self.assertEqual(sent[0]["SYSLOG_IDENTIFIER"], "portcullis/smtp")


if __name__ == "__main__":
    unittest.main()
