#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_dns.py - rdns, dnsbl and spf end to end, with nsd serving test zones on 127.0.0.1.

Clients bind different 127.0.0.x source addresses to play different hosts:
  127.0.0.2  good host: PTR host2.test -> A 127.0.0.2, not listed; senders at good.test pass SPF
  127.0.0.3  no PTR at all
  127.0.0.4  good rDNS but listed in bl.test (127.0.0.4 -> 554 5.7.1)
  127.0.0.5  PTR that does not resolve back (forward A is 127.0.0.99)
  127.0.0.6  hostile PTR: CR, LF and a space inside a label
Skipped when nsd is not installed.
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

ZONE_TEST = r"""$ORIGIN test.
$TTL 60
@        IN SOA ns.test. host.test. 1 60 60 60 60
@        IN NS  ns.test.
ns       IN A   127.0.0.1
host2    IN A   127.0.0.2
host2    IN TXT "v=spf1 a -all"
host4    IN A   127.0.0.4
host5    IN A   127.0.0.99
good     IN TXT "v=spf1 ip4:127.0.0.2 ip4:127.0.0.4 -all"
soft     IN TXT "v=spf1 ~all"
bad      IN TXT "v=spf1 ip4:192.0.2.1 -all"
4.0.0.127.bl IN A 127.0.0.4
4.0.0.127.bl IN TXT "listed for testing"
"""

ZONE_REV = r"""$ORIGIN 127.in-addr.arpa.
$TTL 60
@        IN SOA ns.test. host.test. 1 60 60 60 60
@        IN NS  ns.test.
2.0.0    IN PTR host2.test.
4.0.0    IN PTR host4.test.
5.0.0    IN PTR host5.test.
6.0.0    IN PTR evil\013\010injected:\032header.test.
"""

MSG = "Subject: dns test\r\n\r\nhello\r\n"


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def port_in_range(lo=21100, hi=21999):
    """A UDP+TCP port in our range that nobody uses right now."""
    start = lo + os.getpid() % (hi - lo)
    for p in list(range(start, hi)) + list(range(lo, start)):
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                s = socket.socket(socket.AF_INET, kind)
                s.bind(("127.0.0.1", p))
                s.close()
            return p
        except OSError:
            continue
    raise RuntimeError("no free port in range")


class Nsd:
    """nsd serving test. and 127.in-addr.arpa. from a temporary directory."""

    def __init__(self, tmp):
        self.port = port_in_range()
        d = os.path.join(tmp, "nsd")
        os.makedirs(d)
        write(os.path.join(d, "test.zone"), ZONE_TEST)
        write(os.path.join(d, "rev.zone"), ZONE_REV)
        conf = os.path.join(d, "nsd.conf")
        write(conf, f"""server:
  ip-address: 127.0.0.1@{self.port}
  username: ""
  chroot: ""
  zonesdir: "{d}"
  pidfile: "{d}/nsd.pid"
  database: ""
  zonelistfile: "{d}/zone.list"
  xfrdfile: "{d}/xfrd.state"
  logfile: "{d}/nsd.log"
  server-count: 1
  verbosity: 1
remote-control:
  control-enable: no
zone:
  name: "test."
  zonefile: "test.zone"
zone:
  name: "127.in-addr.arpa."
  zonefile: "rev.zone"
""")
        self.proc = h.Proc(["nsd", "-d", "-c", conf], log=os.path.join(d, "out.log"))
        h.wait_port(self.port)
        time.sleep(0.3)  # zones load after the socket opens

    def close(self):
        self.proc.stop()


def conf(sink_port, ns, dnsbl_extra="", extra=""):
    return h.gateway_conf(
        h.backend_conf(sink_port), filters='"rdns", "dnsbl", "spf", "relay"',
        extra=f"""dns {{ nameservers = {{ "{ns}" }} timeout = 2s }}
dnsbl {{ sites = {{ "bl.test=127.0.0.[2..11]*2", "bl.test" }} threshold = 2 {dnsbl_extra} }}
{extra}
""")


@unittest.skipUnless(shutil.which("nsd"), "nsd not installed")
class DnsTests(unittest.TestCase):
    def setUp(self):
        self.tmp = h.tempdir()
        self.parts = []

    def tearDown(self):
        for p in reversed(self.parts):
            p.close()
        h.rmtree(self.tmp)

    def start(self, dead_dns=False, dnsbl_extra="", extra=""):
        sink = h.Sink(self.tmp)
        self.parts.append(sink)
        if dead_dns:
            ns = f"127.0.0.1:{port_in_range(21900, 21999)}"  # nobody answers there
        else:
            nsd = Nsd(self.tmp)
            self.parts.append(nsd)
            ns = f"127.0.0.1:{nsd.port}"
        gw = h.Gateway(self.tmp, conf(sink.port, ns, dnsbl_extra, extra))
        self.parts.append(gw)
        return sink, gw

    def session(self, gw, source, sender, helo="client.test"):
        """Banner, EHLO, MAIL, RCPT; returns the RCPT (or MAIL) reply and the chat."""
        c = h.Chat(gw.port, source=source)
        code, text = c.reply()
        self.assertEqual(code, 220, text)
        self.assertEqual(c.cmd(f"EHLO {helo}")[0], 250)
        code, text = c.cmd(f"MAIL FROM:<{sender}>")
        if code != 250:
            return code, text, c
        code, text = c.cmd("RCPT TO:<u@example.com>")
        return code, text, c

    def test_clean_host_passes_with_received_spf(self):
        sink, gw = self.start()
        code, text, c = self.session(gw, "127.0.0.2", "a@good.test", helo="host2.test")
        self.assertEqual(code, 250, text)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(MSG + ".\r\n")
        code, text = c.reply()
        self.assertEqual(code, 250, text)
        c.cmd("QUIT")
        m = sink.messages()[-1]
        self.assertIn(b"Received-SPF: pass (gw.test: domain of a@good.test designates 127.0.0.2",
                      m)
        self.assertIn(b"from host2.test", m)  # the verified name in Received
        self.assertIn("rdns: host2.test[127.0.0.2] ptr=host2.test result=pass", gw.log())

    def test_no_ptr_refused_at_rcpt(self):
        sink, gw = self.start()
        code, text, c = self.session(gw, "127.0.0.3", "a@soft.test")
        self.assertEqual(code, 550, text)
        self.assertIn("5.7.25", text)
        c.close()

    def test_forward_mismatch_refused(self):
        sink, gw = self.start()
        code, text, c = self.session(gw, "127.0.0.5", "a@soft.test")
        self.assertEqual(code, 550, text)
        self.assertIn("5.7.25", text)
        self.assertIn("ptr=host5.test result=fail", gw.log())

    def test_listed_host_refused_naming_the_list(self):
        sink, gw = self.start()
        code, text, c = self.session(gw, "127.0.0.4", "a@good.test")
        self.assertEqual(code, 554, text)
        self.assertIn("5.7.1", text)
        self.assertIn("bl.test", text)

    def test_allow_network_skips_dnsbl(self):
        sink, gw = self.start(dnsbl_extra='allow_networks = { "127.0.0.4/32" }')
        code, text, c = self.session(gw, "127.0.0.4", "a@good.test")
        self.assertEqual(code, 250, text)
        c.close()

    def test_spf_fail_refused_softfail_continues(self):
        sink, gw = self.start()
        code, text, c = self.session(gw, "127.0.0.2", "a@bad.test")
        self.assertEqual(code, 550, text)
        self.assertIn("5.7.23", text)
        c.close()
        code, text, c = self.session(gw, "127.0.0.2", "a@soft.test")
        self.assertEqual(code, 250, text)
        c.close()
        self.assertIn("mailfrom=soft.test result=softfail", gw.log())

    def test_null_sender_checks_helo(self):
        sink, gw = self.start()
        code, text, c = self.session(gw, "127.0.0.2", "", helo="host2.test")
        self.assertEqual(code, 250, text)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(MSG + ".\r\n")
        self.assertEqual(c.reply()[0], 250)
        c.close()
        m = sink.messages()[-1]
        self.assertIn(b"Received-SPF: pass", m)
        self.assertIn(b"identity=helo;", m)

    def test_refusal_at_connect_without_delay(self):
        sink, gw = self.start(extra="delay_reject = false")
        c = h.Chat(gw.port, source="127.0.0.3")
        code, text = c.reply()
        self.assertEqual(code // 100, 5, text)
        self.assertIn("5.7.25", text)
        c.close()

    def test_rdns_reject_stage_rcpt_overrides(self):
        sink, gw = self.start(extra='delay_reject = false\nrdns { reject_stage = "rcpt" }')
        code, text, c = self.session(gw, "127.0.0.3", "a@soft.test")
        self.assertEqual(code, 550, text)
        self.assertIn("5.7.25", text)
        c.close()
        self.assertRegex(gw.log(), r"reject: RCPT from unknown\[127\.0\.0\.3\]: 550 5\.7\.25 .*"
                                   r"from=<a@soft\.test> to=<u@example\.com>")

    def test_unanswered_list_that_could_decide_is_4xx(self):
        # nsd refuses names outside its zones: the list is "try later", and its weight (2)
        # could reach the threshold
        sink, gw = self.start(extra="")
        gw.close()
        nsd = self.parts[1]
        gw2 = h.Gateway(self.tmp, conf(sink.port, f"127.0.0.1:{nsd.port}")
                        .replace('"bl.test" }', '"bl.test", "down.example=127.0.0.2*2" }'))
        self.parts.append(gw2)
        code, text, c = self.session(gw2, "127.0.0.2", "a@good.test")
        self.assertTrue(400 <= code < 500, f"{code} {text}")
        c.close()

    def test_dns_outage_is_4xx_never_5xx(self):
        sink, gw = self.start(dead_dns=True)
        code, text, c = self.session(gw, "127.0.0.2", "a@good.test")
        self.assertTrue(400 <= code < 500, f"{code} {text}")
        c.close()

    def test_hostile_ptr_never_reaches_log_or_headers(self):
        sink, gw = self.start()
        code, text, c = self.session(gw, "127.0.0.6", "a@soft.test")
        self.assertEqual(code, 550, text)
        self.assertIn("5.7.25", text)
        log = gw.log()
        self.assertNotIn("injected:", log.replace("\\013\\010injected:", ""))
        self.assertIn("malformed PTR name", log)
        for line in log.splitlines():
            self.assertNotIn("\r", line)


if __name__ == "__main__":
    unittest.main(verbosity=2)
