#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_doors.py - one table of transactions through every door gives the same decision.

One configuration has an SMTP listener (in front of smtp-sink) and a policy listener with the
same filters and rules. Each row of TABLE (client address, HELO, sender, recipients, message,
expected decision class) runs through every door in RUNNERS:

  smtp            the SMTP proxy, from the row's loopback client address
  test            "portcullis test" on the same configuration and listener
  policy          the policy door, spoken directly (the requests Postfix sends: RCPT for each
                  recipient, DATA, END-OF-MESSAGE, one instance)
  postfix-policy  a real Postfix asking the policy door (check_policy_service), the row's
                  client set with XCLIENT
  postfix-milter  a real Postfix calling the milter door (smtpd_milters), the same way

A door that does not see the message (policy) skips the rows marked body=True ("where the door
sees enough of the transaction to decide"). A door is one entry in DOORS: a runner(env, row) -> "accept" | "reject" | "tempfail", whether it sees the body, the
listener it needs and the peer it starts.
"""
import os
import smtplib
import subprocess
import sys
import unittest
from collections import namedtuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

Row = namedtuple("Row", "name client helo sender rcpts message expect body")

PLAIN = "From: a@sender.test\r\nTo: u@example.com\r\nSubject: hello\r\n\r\nJust a message.\r\n"
GTUBE = ("From: a@sender.test\r\nTo: u@example.com\r\nSubject: test\r\n\r\n"
         "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n")

C = "127.0.0.10"  # an ordinary client (loopback: the SMTP door sees the real source address)
TABLE = [
    Row("clean", C, "mail.client.test", "a@sender.test", ["u@example.com"], PLAIN, "accept",
        False),
    Row("null sender", C, "mail.client.test", "", ["u@example.com"], PLAIN, "accept", False),
    Row("relay denied", C, "mail.client.test", "a@sender.test", ["x@elsewhere.test"], PLAIN,
        "reject", False),
    Row("relay from a relay network", "127.0.0.20", "mail.client.test", "a@sender.test",
        ["x@elsewhere.test"], PLAIN, "accept", False),
    Row("blocked client (held to RCPT)", "127.0.0.77", "mail.client.test", "a@sender.test",
        ["u@example.com"], PLAIN, "reject", False),
    Row("refused HELO", C, "spam.test", "a@sender.test", ["u@example.com"], PLAIN, "reject",
        False),
    Row("greylisted HELO", C, "slow.test", "a@sender.test", ["u@example.com"], PLAIN,
        "tempfail", False),
    Row("refused sender", C, "mail.client.test", "a@bad.test", ["u@example.com"], PLAIN,
        "reject", False),
    Row("one of two recipients refused", C, "mail.client.test", "a@sender.test",
        ["nosuch@example.com", "u@example.com"], PLAIN, "accept", False),
    Row("every recipient refused", C, "mail.client.test", "a@sender.test",
        ["nosuch@example.com", "x@elsewhere.test"], PLAIN, "reject", False),
    Row("GTUBE in the body", C, "mail.client.test", "a@sender.test", ["u@example.com"], GTUBE,
        "reject", True),
]

RULES = r'''
rule blocked_client at connect if client.ip == "127.0.0.77" then reject 554 5.7.1 "Client blocked"
rule bad_helo at helo if helo == "spam.test" then reject 550 5.7.1 "HELO refused"
rule slow_helo at helo if helo == "slow.test" then tempfail 450 4.7.1 "HELO greylisted"
rule bad_sender at mail if from.domain == "bad.test" then reject 550 5.7.1 "Sender refused"
rule nosuch at rcpt if rcpt == "nosuch@example.com" then reject 550 5.1.1 "No such user"
'''


def klass(code):
    return "tempfail" if code // 100 == 4 else "reject"


def run_smtp(env, row):
    """The SMTP door, from the row's client address."""
    try:
        with smtplib.SMTP("127.0.0.1", env.gw.port, timeout=30,
                          source_address=(row.client, 0)) as s:
            s.ehlo(row.helo)
            s.sendmail(row.sender, row.rcpts, row.message)
        return "accept"
    except smtplib.SMTPRecipientsRefused as e:
        return klass(list(e.recipients.values())[-1][0])
    except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused, smtplib.SMTPHeloError) as e:
        return klass(e.smtp_code)


def run_test(env, row):
    """portcullis test on the SMTP listener: exit 0 accept, 1 reject, 2 tempfail."""
    msg = os.path.join(env.tmp, "row.eml")
    with open(msg, "w") as f:
        f.write(row.message)
    argv = [harness.BIN, "test", "-c", env.gw.path, "--listener", "smtp", "-q",
            "--client-ip", row.client, "--helo", row.helo, "--from", row.sender]
    for r in row.rcpts:
        argv += ["--rcpt", r]
    rc = subprocess.run(argv + [msg], capture_output=True, timeout=60, cwd=env.tmp).returncode
    return {0: "accept", 1: "reject", 2: "tempfail"}.get(rc, f"exit {rc}")


def policy_class(action):
    if action is None:
        return "closed"
    if action.startswith("DEFER") or action[:1] == "4":
        return "tempfail"
    if action.startswith("REJECT") or action[:1] == "5":
        return "reject"
    return None  # DUNNO, OK, PREPEND, WARN: go on


def run_policy(env, row):
    """The policy door, as Postfix asks it: RCPT per recipient, DATA, END-OF-MESSAGE."""
    env.instance += 1
    c = harness.PolicyClient(env.policy_port)
    with c:
        common = dict(instance=f"doors.{env.instance}", client_address=row.client,
                      helo_name=row.helo, sender=row.sender)
        last, kept = None, 0
        for r in row.rcpts:
            k = policy_class(c.ask(protocol_state="RCPT", recipient=r, **common))
            if k is None:
                kept += 1
            else:
                last = k
        if kept == 0:
            return last
        for st in ("DATA", "END-OF-MESSAGE"):
            k = policy_class(c.ask(protocol_state=st, recipient_count=str(kept), **common))
            if k:
                return k
    return "accept"


def run_postfix_policy(env, row):
    """A real Postfix asking the policy door; the row's client and HELO through XCLIENT."""
    return run_postfix(env.postfix, row)


def run_postfix(postfix, row):
    """One row through a real Postfix, the row's client and HELO set with XCLIENT."""
    try:
        with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as s:
            s.ehlo("submitter.test")
            code, text = s.docmd("XCLIENT", f"ADDR={row.client} NAME=[UNAVAILABLE]")
            assert code == 220, (code, text)
            s.ehlo_resp = s.helo_resp = None
            s.ehlo(row.helo)
            s.sendmail(row.sender, row.rcpts, row.message)
        return "accept"
    except smtplib.SMTPRecipientsRefused as e:
        return klass(list(e.recipients.values())[-1][0])
    except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused, smtplib.SMTPHeloError) as e:
        return klass(e.smtp_code)


# A door: its runner, whether it sees the message body, the listener it needs (config text, with
# env.policy_port and friends; "" when it shares another's) and the peers it starts once the
# gateway is up (or None).
Door = namedtuple("Door", "name run sees_body listener start")
CHAIN = '"relay", "rules"'


def smtp_listener(env):
    return f"""listener "smtp" {{
  address = "127.0.0.1:@PORT@"
  backend = "sink"
  filters = {{ {CHAIN} }}
}}
"""


def policy_listener(env):
    env.policy_port = harness.free_port()
    return f"""listener "policy" {{
  address = "127.0.0.1:{env.policy_port}"
  protocol = "policy"
  filters = {{ {CHAIN} }}
}}
"""


def start_policy(env):
    harness.wait_port(env.policy_port)


def start_postfix_policy(env):
    env.postfix = harness.Postfix(env.tmp, policy=env.policy_port)
    env.peers.append(env.postfix)


def milter_listener(env):
    env.milter_port = harness.free_port()
    return f"""listener "milter" {{
  address = "inet:127.0.0.1:{env.milter_port}"
  protocol = "milter"
  filters = {{ {CHAIN} }}
}}
"""


def start_postfix_milter(env):
    harness.wait_port(env.milter_port)
    env.postfix_milter = harness.Postfix(env.tmp, milter=f"inet:127.0.0.1:{env.milter_port}")
    env.peers.append(env.postfix_milter)


def run_postfix_milter(env, row):
    """A real Postfix asking the milter door; the row's client and HELO through XCLIENT."""
    return run_postfix(env.postfix_milter, row)


DOORS = [
    Door("smtp", run_smtp, True, smtp_listener, None),
    Door("test", run_test, True, None, None),  # the "smtp" listener, without the network
    Door("policy", run_policy, False, policy_listener, start_policy),
    Door("postfix-policy", run_postfix_policy, False, None, start_postfix_policy),
    Door("postfix-milter", run_postfix_milter, True, milter_listener, start_postfix_milter),
]


class Doors(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.tempdir()
        cls.peers = []
        cls.sink = harness.Sink(cls.tmp)
        cls.peers.append(cls.sink)
        with open(os.path.join(cls.tmp, "doors.rules"), "w") as f:
            f.write(RULES)
        cls.instance = 0
        listeners = "".join(d.listener(cls) for d in DOORS if d.listener)
        conf = f"""hostname = "gw.test"
{listeners}
backend "sink" {{
  address = {{ "127.0.0.1:{cls.sink.port}" }}
  identity = "none"
}}
relay {{
  mynetworks = {{ "127.0.0.20/32" }}
  domains = {{ "example.com" }}
}}
rules {{ files = {{ "@TMP@/doors.rules", "{harness.ROOT}/rules/gtube.rules" }} }}
"""
        cls.gw = harness.Gateway(cls.tmp, conf)
        cls.peers.append(cls.gw)
        for d in DOORS:
            if d.start:
                d.start(cls)

    @classmethod
    def tearDownClass(cls):
        for p in reversed(cls.peers):
            p.close()
        harness.rmtree(cls.tmp)

    def test_same_decision_through_every_door(self):
        got = {}
        for door in DOORS:
            for row in TABLE:
                if row.body and not door.sees_body:
                    continue
                with self.subTest(door=door.name, row=row.name):
                    got[door.name, row.name] = door.run(self, row)
                    self.assertEqual(got[door.name, row.name], row.expect,
                                     f"{door.name}: {row.name}\n{self.gw.log()[-1500:]}")
        if os.environ.get("DOORS_SHOW"):
            print(got)
        # Every door decided every row it could see.
        self.assertEqual(len(got), sum(len([r for r in TABLE if d.sees_body or not r.body])
                                       for d in DOORS))


if __name__ == "__main__":
    unittest.main()
