#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_policy.py - the Postfix policy delegation door (listener protocol = "policy").

PolicyProtocol drives the protocol with a raw socket (harness.PolicyClient): many requests per
connection, requests split across reads, malformed blocks and oversize lines closing the
connection, the actions (numeric refusals with our enhanced code, DEFER_IF_PERMIT for a held
4xx, PREPEND, WARN), and a transaction followed by its instance across requests and connections
so that a per-sasl_username message limit counts each message once.

PolicyPostfix puts a real private Postfix in front (harness.Postfix with check_policy_service in
smtpd_recipient_restrictions, smtpd_data_restrictions and smtpd_end_of_data_restrictions, as
deploy/postfix/policy.cf says): our relay and rule refusals reach the SMTP client as our code,
the 6th message of a 5-per-hour limit is deferred, keyed by sasl_username (after real SMTP AUTH
against a private Dovecot auth service, and after XCLIENT LOGIN=) and by sender, and a frozen
Redis with on_error = tempfail is a 4xx at the client.
"""
import os
import signal
import smtplib
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

RULES = r'''
rule bad_sender at mail if from.domain == "bad.test" then reject 550 5.7.1 "Sender refused by rule"
rule slow_helo at helo if helo == "slow.test" then tempfail 450 4.7.1 "HELO greylisted"
rule watch log-only at rcpt if rcpt == "watch@example.com" then reject 550 5.7.1 "watched"
rule tag at rcpt if rcpt == "tag@example.com" then add-header "X-Tagged" "yes"
rule big at eom if size > 100000 then reject 552 5.3.4 "Message too big for us"
'''


def policy_conf(tmp, filters='"relay", "rules"', extra=""):
    with open(os.path.join(tmp, "policy.rules"), "w") as f:
        f.write(RULES)
    return f"""hostname = "gw.test"
listener "policy" {{
  address = "127.0.0.1:@PORT@"
  protocol = "policy"
  filters = {{ {filters} }}
}}
relay {{
  mynetworks = {{ }}
  domains = {{ "example.com" }}
}}
rules {{ files = {{ "@TMP@/policy.rules" }} }}
{extra}
"""


def limit_conf(key, store=None, on_error="tempfail"):
    store_line = f'store = "redis://127.0.0.1:{store}/0"' if store else ""
    return f"""ratelimit {{
  {store_line}
  store_timeout = "300ms"
  on_error = "{on_error}"
  limit "five" {{ key = {{ "{key}" }} count = "messages" rate = "5/1h" }}
}}
"""


class PolicyProtocol(unittest.TestCase):
    extra = ""
    filters = '"relay", "rules"'

    def setUp(self):
        self.tmp = harness.tempdir()
        self.addCleanup(harness.rmtree, self.tmp)
        self.gw = harness.Gateway(self.tmp, policy_conf(self.tmp, self.filters, self.extra))
        self.addCleanup(self.gw.close)

    def client(self):
        c = harness.PolicyClient(self.gw.port)
        self.addCleanup(c.close)
        return c

    def test_many_requests_per_connection(self):
        c = self.client()
        blocks = b"".join(c.block(protocol_state="RCPT", instance=f"1.2.3.{i}",
                                  recipient=f"u{i}@example.com") for i in range(200))
        c.send(blocks)  # all at once: answered one by one, in order
        self.assertEqual([c.answer() for _ in range(200)], ["DUNNO"] * 200)
        self.assertIn("Relay access denied",
                      c.ask(protocol_state="RCPT", instance="9.9", recipient="x@elsewhere.test"))

    def test_transaction_table_is_bounded(self):
        c = self.client()
        n = 4096 + 100  # transactions left open (RCPT, never END-OF-MESSAGE)
        c.send(b"".join(c.block(protocol_state="RCPT", instance=f"t.{i}",
                                recipient="u@example.com") for i in range(n)))
        self.assertEqual([c.answer() for _ in range(n)], ["DUNNO"] * n)
        self.assertIn("policy: 4096 transactions open: forgot 1 of the oldest (lately t.0)",
                      self.gw.log())
        self.assertEqual(self.gw.log().count("transactions open: forgot"), 1)  # not 100 lines

    def test_recipients_per_transaction_bounded(self):
        c = self.client()
        n = 1000  # limits.max_recipients (default)
        c.send(b"".join(c.block(protocol_state="RCPT", instance="m.1",
                                recipient=f"u{i}@example.com") for i in range(n + 2)))
        answers = [c.answer() for _ in range(n + 2)]
        self.assertEqual(answers[:n], ["DUNNO"] * n)
        self.assertEqual(answers[n:], ["452 4.5.3 Error: too many recipients"] * 2)

    def test_request_split_across_reads(self):
        c = self.client()
        data = c.block(protocol_state="RCPT", instance="7.7", recipient="x@elsewhere.test")
        for i in range(0, len(data), 7):
            c.send(data[i:i + 7])
            time.sleep(0.005)
        self.assertEqual(c.answer(), "554 5.7.1 <x@elsewhere.test>: Relay access denied")

    def assert_closed(self, data, why):
        c = self.client()
        c.send(data)
        self.assertIsNone(c.answer(), data[:80])
        self.assertIn(why, self.gw.log())
        # The service goes on for everyone else.
        self.assertEqual(self.client().ask(protocol_state="RCPT", recipient="u@example.com"),
                         "DUNNO")

    def test_line_without_equals_closes(self):
        self.assert_closed(b"request=smtpd_access_policy\nprotocol_state RCPT\n\n",
                           'malformed request (a line without "=")')

    def test_oversize_line_closes(self):
        # No newline needed: 2 KB without one is already too long.
        self.assert_closed(b"request=smtpd_access_policy\nsender=" + b"a" * 5000,
                           "malformed request (a line too long)")

    def test_too_many_attributes_closes(self):
        self.assert_closed(b"".join(b"x%d=y\n" % i for i in range(70)) + b"\n",
                           "malformed request (too many attributes)")

    def test_empty_block_and_control_bytes_close(self):
        self.assert_closed(b"\n", "malformed request (an empty request)")
        self.assert_closed(b"request=smtpd_access_policy\nsender=a\x01b\n\n",
                           "malformed request (a control character in a value)")

    def test_unknown_request_closes(self):
        self.assert_closed(b"request=something_else\n\n", "request something_else unknown")

    def test_vrfy_and_etrn_dunno(self):
        c = self.client()
        self.assertEqual(c.ask(protocol_state="VRFY"), "DUNNO")
        self.assertEqual(c.ask(protocol_state="ETRN"), "DUNNO")

    def test_rule_refusal_is_our_code(self):
        c = self.client()
        # MAIL: the rule's refusal is held until RCPT (delay_reject); Postfix delays a 5xx
        # itself, so it is said as it is.
        self.assertEqual(c.ask(protocol_state="MAIL", instance="5.1", sender="x@bad.test"),
                         "550 5.7.1 Sender refused by rule")
        self.assertEqual(c.ask(protocol_state="RCPT", instance="5.1", sender="x@bad.test",
                               recipient="u@example.com"), "550 5.7.1 Sender refused by rule")

    def test_held_tempfail_is_defer_if_permit(self):
        c = self.client()
        self.assertEqual(c.ask(protocol_state="MAIL", instance="6.1", helo_name="slow.test"),
                         "DEFER_IF_PERMIT 4.7.1 HELO greylisted")
        self.assertEqual(c.ask(protocol_state="RCPT", instance="6.1", helo_name="slow.test",
                               recipient="u@example.com"), "450 4.7.1 HELO greylisted")

    def test_log_only_rule_is_warn(self):
        c = self.client()
        a = c.ask(protocol_state="RCPT", instance="8.1", recipient="watch@example.com")
        self.assertEqual(a, "WARN portcullis: log-only rule watch matched")
        self.assertEqual(c.ask(protocol_state="RCPT", instance="8.1",
                               recipient="u@example.com"), "DUNNO")

    def test_size_is_postfix_size(self):
        c = self.client()
        self.assertEqual(c.ask(protocol_state="RCPT", instance="s.1", recipient="u@example.com",
                               size="0"), "DUNNO")
        # DATA after a SIZE=-less MAIL: nothing known yet; the real size at END-OF-MESSAGE
        # comes too late, the content stages ran at DATA.
        self.assertEqual(c.ask(protocol_state="DATA", instance="s.1", size="0"), "DUNNO")
        # A client that declared SIZE=200000: refused at DATA.
        self.assertEqual(c.ask(protocol_state="DATA", instance="s.2", size="200000"),
                         "552 5.3.4 Message too big for us")
        # Asked only at END-OF-MESSAGE (no RCPT, no DATA request): the real size.
        self.assertEqual(c.ask(protocol_state="END-OF-MESSAGE", instance="s.3", size="300000",
                               recipient=""), "552 5.3.4 Message too big for us")

    def test_added_header_is_prepend_at_data(self):
        c = self.client()
        self.assertEqual(c.ask(protocol_state="RCPT", instance="9.1",
                               recipient="tag@example.com"), "DUNNO")
        self.assertEqual(c.ask(protocol_state="DATA", instance="9.1"), "PREPEND X-Tagged: yes")
        self.assertEqual(c.ask(protocol_state="END-OF-MESSAGE", instance="9.1"), "DUNNO")


    def test_reload_applies_to_the_next_transaction(self):
        c = self.client()  # Postfix keeps its connection across a reload
        ask = dict(protocol_state="RCPT", sender="x@late.test", recipient="u@example.com")
        self.assertEqual(c.ask(instance="r.1", **ask), "DUNNO")
        with open(os.path.join(self.tmp, "policy.rules"), "a") as f:
            f.write('rule late at mail if from.domain == "late.test" '
                    'then reject 550 5.7.1 "Late rule"\n')
        os.kill(self.gw.pid(), signal.SIGHUP)
        end = time.time() + 10
        while "reloaded" not in self.gw.log() and time.time() < end:
            time.sleep(0.1)
        self.assertEqual(c.ask(instance="r.2", **ask), "550 5.7.1 Late rule")


class PolicyLimits(PolicyProtocol):
    """A per-sasl_username message limit, in-process store, through the raw protocol."""
    filters = '"relay", "rules", "ratelimit"'
    extra = limit_conf("auth_user")

    def message(self, clients, n, user, eod=True):
        """One transaction's requests, spread over the given connections in turn."""
        inst = f"{user}.{n}"
        steps = [dict(protocol_state="RCPT", recipient="u@example.com"),
                 dict(protocol_state="RCPT", recipient="v@example.com"),
                 dict(protocol_state="DATA", recipient_count="2")]
        if eod:
            steps.append(dict(protocol_state="END-OF-MESSAGE", recipient_count="2", size="300"))
        answers = []
        for i, st in enumerate(steps):
            answers.append(clients[i % len(clients)].ask(instance=inst, sasl_username=user, **st))
        return answers

    def test_sixth_message_deferred_counted_once(self):
        a, b = self.client(), self.client()
        for n in range(5):
            # DATA and END-OF-MESSAGE of one instance, on two connections: one message.
            self.assertEqual(self.message([a, b], n, "alice"), ["DUNNO"] * 4, f"message {n + 1}")
        r = self.message([a], 5, "alice")
        self.assertEqual(r[:2], ["DUNNO", "DUNNO"])
        self.assertRegex(r[2], r"^450 4\.7\.1 .*try again in")
        self.assertEqual(r[3], r[2])  # END-OF-MESSAGE hears the same, nothing counted again
        self.assertEqual(self.message([b], 0, "bob"), ["DUNNO"] * 4)
        self.assertIn("filter=ratelimit rule=five", self.gw.log())

    def test_many_requests_per_connection(self):
        pass  # covered by the parent; here the chain differs only by ratelimit

    def test_data_only_counts_too(self):
        c = self.client()
        for n in range(5):
            self.assertEqual(self.message([c], n, "carol", eod=False), ["DUNNO"] * 3)
        self.assertRegex(self.message([c], 5, "carol", eod=False)[2], r"^450 4\.7\.1 ")


def xclient_send(port, mail_from, rcpts, msg, addr="192.0.2.10", login=None, helo="client.test"):
    """One message through Postfix after XCLIENT (README's xclient host is 127.0.0.1; addr None:
    no XCLIENT, the client is 127.0.0.1, in Postfix's mynetworks but not in our relay's).
    None when accepted, else (code, text) of the first refusal."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.ehlo("client.test")
            if addr:
                args = f"ADDR={addr} NAME=[UNAVAILABLE]" + (f" LOGIN={login}" if login else "")
                code, text = s.docmd("XCLIENT", args)
                assert code == 220, (code, text)
                s.ehlo_resp = s.helo_resp = None
                s.ehlo(helo)
            refused = s.sendmail(mail_from, rcpts, msg)
            if refused:
                code, text = list(refused.values())[0]
                return (code, text.decode())
        return None
    except smtplib.SMTPRecipientsRefused as e:
        code, text = list(e.recipients.values())[0]
        return (code, text.decode())
    except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as e:
        return (e.smtp_code, e.smtp_error.decode())


MSG = "From: a@sender.test\r\nTo: u@example.com\r\nSubject: t\r\n\r\nhello\r\n"


def auth_send(port, user, password="secret"):
    """One message after SMTP AUTH PLAIN: None when accepted, else (code, text)."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.ehlo("client.test")
            s.login(user, password)
            s.sendmail("a@sender.test", ["u@example.com"], MSG)
        return None
    except smtplib.SMTPRecipientsRefused as e:
        code, text = list(e.recipients.values())[0]
        return (code, text.decode())
    except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as e:
        return (e.smtp_code, e.smtp_error.decode())


class PolicyPostfix(unittest.TestCase):
    """A real Postfix asks us (check_policy_service)."""

    def setUp(self):
        self.tmp = harness.tempdir()
        self.addCleanup(harness.rmtree, self.tmp)
        self.redis_port = harness.free_port()
        self.redis = harness.Proc(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.tmp], log=os.path.join(self.tmp, "redis.log"))
        self.addCleanup(self.redis.stop, signal.SIGKILL)
        harness.wait_port(self.redis_port)

    def start(self, key, sasl=None):
        self.gw = harness.Gateway(self.tmp, policy_conf(
            self.tmp, '"relay", "rules", "ratelimit"', limit_conf(key, store=self.redis_port)))
        self.addCleanup(self.gw.close)
        self.pf = harness.Postfix(self.tmp, policy=self.gw.port, sasl=sasl)
        self.addCleanup(self.pf.close)

    def test_relay_and_rule_refusals_are_our_codes(self):
        self.start("sender")
        # Postfix's own relay check lets 127.0.0.1 (its mynetworks) relay; ours does not.
        code, text = xclient_send(self.pf.port, "a@sender.test", ["x@elsewhere.test"], MSG,
                                  addr=None)
        # Postfix puts "<rcpt>: Recipient address rejected:" before the text it is given.
        self.assertEqual((code, text[:6]), (554, "5.7.1 "), text)
        self.assertTrue(text.endswith("<x@elsewhere.test>: Relay access denied"), text)
        self.assertIn("filter=relay", self.gw.log())
        code, text = xclient_send(self.pf.port, "a@bad.test", ["u@example.com"], MSG)
        self.assertEqual((code, text[:6]), (550, "5.7.1 "), text)
        self.assertTrue(text.endswith(": Sender refused by rule"), text)
        self.assertIsNone(xclient_send(self.pf.port, "a@sender.test", ["u@example.com"], MSG))
        self.assertEqual(len(self.pf.delivered()), 1)
        self.assertIn("Sender refused by rule", self.pf.log())

    def sixth_deferred(self, **kw):
        for n in range(5):
            self.assertIsNone(xclient_send(self.pf.port, "a@sender.test", ["u@example.com"], MSG,
                                           **kw), f"message {n + 1}\n{self.gw.log()[-2000:]}")
        code, text = xclient_send(self.pf.port, "a@sender.test", ["u@example.com"], MSG, **kw)
        self.assertEqual(code, 450, text)
        self.assertRegex(text, r"^4\.7\.1 .*try again in")

    def test_sixth_message_of_a_sasl_user_deferred(self):
        # Real SMTP AUTH: Postfix authenticates against Dovecot and sends sasl_username.
        auth = harness.DovecotAuth(self.tmp)
        self.addCleanup(auth.close)
        self.start("auth_user", sasl=auth.port)
        for n in range(5):
            self.assertIsNone(auth_send(self.pf.port, "alice"), f"message {n + 1}")
        code, text = auth_send(self.pf.port, "alice")
        self.assertEqual(code, 450, text)
        self.assertRegex(text, r"^4\.7\.1 .*try again in")
        # Another user is not limited: the count is per user, not per client address.
        self.assertIsNone(auth_send(self.pf.port, "bob"))
        end = time.time() + 10
        while len(self.pf.delivered()) < 6 and time.time() < end:
            time.sleep(0.2)
        self.assertEqual(len(self.pf.delivered()), 6)
        self.assertIn("sasl_username=alice", self.pf.log())

    def test_xclient_login_is_a_sasl_user(self):
        # Postfix's XCLIENT LOGIN= sets sasl_username too (a proxy in front of Postfix).
        self.start("auth_user")
        self.sixth_deferred(login="carol")

    def test_sixth_message_of_a_sender_deferred(self):
        self.start("sender")
        self.sixth_deferred()

    def test_frozen_redis_is_4xx(self):
        self.start("sender")
        self.assertIsNone(xclient_send(self.pf.port, "a@sender.test", ["u@example.com"], MSG))
        os.kill(self.redis.p.pid, signal.SIGSTOP)
        try:
            code, text = xclient_send(self.pf.port, "a@sender.test", ["u@example.com"], MSG)
        finally:
            os.kill(self.redis.p.pid, signal.SIGCONT)
        self.assertEqual(code // 100, 4, text)
        self.assertEqual((code, text[:5]), (451, "4.3.0"), text)


class PolicyConfig(unittest.TestCase):
    """portcullis -t on policy listeners."""

    def check(self, text):
        tmp = harness.tempdir()
        self.addCleanup(harness.rmtree, tmp)
        path = os.path.join(tmp, "p.conf")
        with open(path, "w") as f:
            f.write(text)
        import subprocess
        return subprocess.run([harness.BIN, "-t", "-c", path], capture_output=True, text=True)

    LISTENER = 'listener "pol" {\n  address = "127.0.0.1:10040"\n  protocol = "%s"\n%s}\n'

    def test_body_rules_warned(self):
        r = self.check(self.LISTENER % ("policy", '  filters = { "relay", "rules" }\n') +
                       'rules { files = { "%s/rules/gtube.rules" } }\n' % harness.ROOT)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('listener "pol" (protocol policy): 1 rules at the header or body stage '
                      "see no header and no body there", r.stderr)
        # The same chain on an SMTP listener sees the message: no warning.
        r = self.check(self.LISTENER % ("smtp", '  filters = { "relay", "rules" }\n') +
                       'rules { files = { "%s/rules/gtube.rules" } }\n' % harness.ROOT)
        self.assertEqual((r.returncode, r.stderr), (0, ""))

    def test_policy_listener_has_no_backend(self):
        r = self.check(self.LISTENER % ("policy", '  backend = "local"\n'))
        self.assertEqual(r.returncode, 78)
        self.assertIn('listener "pol": a policy listener has no backend', r.stderr)

    def test_unknown_protocol(self):
        r = self.check(self.LISTENER % ("lmtp", ""))
        self.assertEqual(r.returncode, 78)
        self.assertIn('protocol must be smtp, milter or policy, not "lmtp"', r.stderr)


if __name__ == "__main__":
    unittest.main()
