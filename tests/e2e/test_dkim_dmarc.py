#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""
NAME
    test_dkim_dmarc - DKIM signing and verification, DMARC and Authentication-Results end to end

DESCRIPTION
    Real parts on loopback: nsd serves the keys and DMARC records; one portcullis has an
    outbound listener (trusted: the dkim filter signs) whose backend is its own inbound
    listener (verifies, applies DMARC, writes Authentication-Results), which delivers to
    smtp-sink. Checks: mail signed on the way out verifies on the way in (dkim=pass,
    dmarc=pass) and an Authentication-Results claiming our authserv-id is gone; a forged
    From under p=reject is refused with 550 5.7.1; p=quarantine is delivered marked;
    DMARC passes on SPF alignment with the spf filter in the chain, and fails without it.

SEE ALSO
    RFC 6376, RFC 7489, RFC 8601
"""
import base64
import os
import shutil
import subprocess
import time
import unittest

import harness as h


def txt_rdata(value):
    """A TXT value as quoted 255-byte character-strings."""
    return " ".join('"%s"' % value[i:i + 255] for i in range(0, len(value), 255))


def pubkey_b64(pem, ed25519):
    der = subprocess.run(["openssl", "pkey", "-in", pem, "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return base64.b64encode(der[-32:] if ed25519 else der).decode()


def send(port, mailfrom, rcpt, msg):
    """One transaction with the raw client; the final reply (code, text)."""
    c = h.Chat(port)
    try:
        for line in ("EHLO client.test", f"MAIL FROM:<{mailfrom}>", f"RCPT TO:<{rcpt}>"):
            if line.startswith("EHLO"):
                c.reply()
            code, text = c.cmd(line)
            assert code == 250, (line, code, text)
        code, text = c.cmd("DATA")
        assert code == 354, (code, text)
        c.send(msg.replace("\r\n", "\n").replace("\n", "\r\n") + ".\r\n")
        return c.reply()
    finally:
        c.close()


@unittest.skipUnless(shutil.which("nsd") and shutil.which("smtp-sink"), "needs nsd and smtp-sink")
class DkimDmarc(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = h.tempdir()
        ed, rsa = os.path.join(cls.tmp, "ed.pem"), os.path.join(cls.tmp, "rsa.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", ed], check=True,
                       capture_output=True)
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", rsa], check=True, capture_output=True)
        # A root zone, so that every other name is a clean NXDOMAIN (SPF none, no policy).
        with open(os.path.join(cls.tmp, "root.zone"), "w") as z:
            z.write("$ORIGIN .\n$TTL 60\n. IN SOA ns. hostmaster. 1 3600 600 86400 60\n"
                    ". IN NS ns.\nns. IN A 127.0.0.1\n"
                    "e1._domainkey.example.test. IN TXT %s\nr1._domainkey.example.test. IN TXT %s\n"
                    '_dmarc.example.test. IN TXT "v=DMARC1; p=reject"\n'
                    '_dmarc.quar.test. IN TXT "v=DMARC1; p=quarantine"\n'
                    'spf.test. IN TXT "v=spf1 ip4:127.0.0.1 -all"\n'
                    '_dmarc.spf.test. IN TXT "v=DMARC1; p=reject"\n'
                    % (txt_rdata("v=DKIM1; k=ed25519; p=" + pubkey_b64(ed, True)),
                       txt_rdata("v=DKIM1; k=rsa; p=" + pubkey_b64(rsa, False))))
        cls.nsd_port = h.free_port()
        t = cls.tmp
        with open(os.path.join(t, "nsd.conf"), "w") as c:
            c.write(f'server:\n ip-address: 127.0.0.1@{cls.nsd_port}\n username: ""\n chroot: ""\n'
                    f' zonesdir: "{t}"\n database: ""\n pidfile: "{t}/nsd.pid"\n'
                    f' logfile: "{t}/nsd.log"\n xfrdfile: "{t}/xfrd"\n zonelistfile: "{t}/zl"\n'
                    'remote-control:\n control-enable: no\n'
                    'zone:\n name: "."\n zonefile: "root.zone"\n')
        cls.nsd = h.Proc(["nsd", "-d", "-c", os.path.join(t, "nsd.conf")])
        for _ in range(200):
            if os.path.exists(f"{t}/nsd.log") and "nsd started" in open(f"{t}/nsd.log").read():
                break
            time.sleep(0.025)
        cls.sink = h.Sink(t)
        cls.in_port = h.free_port()
        conf = f"""hostname = "mx.e2e.test"
listener "out" {{
  address = "127.0.0.1:@PORT@"
  backend = "in"
  trusted = true
  filters = {{ "relay", "dkim", "authres" }}
}}
listener "in" {{
  address = "127.0.0.1:{cls.in_port}"
  backend = "mta"
  filters = {{ "relay", "spf", "dkim", "dmarc", "authres" }}
}}
backend "in" {{
  address = "127.0.0.1:{cls.in_port}"
  identity = "none"
}}
{h.backend_conf(cls.sink.port, identity="none")}
dns {{
  nameservers = {{ "127.0.0.1:{cls.nsd_port}" }}
}}
relay {{
  mynetworks = {{ "127.0.0.1/32" }}
  domains = {{ "example.net" }}
}}
dkim {{
  mynetworks = {{}}
  key_table = {{ "ed example.test:e1:{ed}", "rsa example.test:r1:{rsa}" }}
  signing_table = {{ "*@example.test ed" }}
}}
"""
        cls.gw = h.Gateway(t, conf)
        h.wait_port(cls.in_port)

    @classmethod
    def tearDownClass(cls):
        cls.gw.close()
        cls.sink.close()
        cls.nsd.stop()
        h.rmtree(cls.tmp)

    def delivered(self, marker, timeout=10.0):
        end = time.time() + timeout
        while time.time() < end:
            try:
                msgs = self.sink.messages()
            except FileNotFoundError:  # smtp-sink removed an empty dump file mid-listing
                msgs = []
            for m in msgs:
                if marker.encode() in m:
                    return m.decode("latin-1")
            time.sleep(0.05)
        self.fail(f"no message with {marker!r} delivered; log:\n" + self.gw.log()[-3000:])

    def test_signed_out_verified_in(self):
        code, text = send(self.gw.port, "ann@example.test", "bob@example.net",
                          "From: Ann <ann@example.test>\nTo: bob@example.net\nSubject: signed-1\n"
                          "Authentication-Results: mx.e2e.test; dkim=pass header.d=forged.test\n"
                          "\nhello\n")
        self.assertEqual(code, 250, text)
        m = self.delivered("Subject: signed-1")
        self.assertIn("DKIM-Signature: v=1; a=ed25519-sha256;", m)
        self.assertIn("dkim=pass header.d=example.test header.s=e1 header.a=ed25519-sha256", m)
        self.assertIn("dmarc=pass (p=reject) header.from=example.test", m)
        self.assertNotIn("forged.test", m)

    def test_forged_from_rejected(self):
        code, text = send(self.in_port, "x@attacker.example", "bob@example.net",
                          "From: CEO <ceo@example.test>\nTo: bob@example.net\nSubject: wire\n\npay\n")
        self.assertEqual(code, 550, text)
        self.assertIn("5.7.1", text)

    def test_quarantine_marked(self):
        code, text = send(self.in_port, "x@attacker.example", "bob@example.net",
                          "From: q@quar.test\nTo: bob@example.net\nSubject: quar-1\n\nq\n")
        self.assertEqual(code, 250, text)
        m = self.delivered("Subject: quar-1")
        self.assertIn("X-DMARC-Quarantine: policy=quarantine; header.from=quar.test", m)
        self.assertIn("dmarc=fail (p=quarantine) header.from=quar.test", m)

    def test_spf_alignment(self):
        code, text = send(self.in_port, "bounce@spf.test", "bob@example.net",
                          "From: a@spf.test\nTo: bob@example.net\nSubject: spf-1\n\nx\n")
        self.assertEqual(code, 250, text)
        m = self.delivered("Subject: spf-1")
        self.assertIn("spf=pass smtp.mailfrom=spf.test", m)
        self.assertIn("dkim=none", m)
        self.assertIn("dmarc=pass (p=reject) header.from=spf.test", m)
        # the same From with somebody else's envelope: not aligned, refused
        code, text = send(self.in_port, "x@attacker.example", "bob@example.net",
                          "From: a@spf.test\nTo: bob@example.net\nSubject: spf-2\n\nx\n")
        self.assertEqual(code, 550, text)

    def test_multiple_from_rejected(self):
        code, text = send(self.in_port, "x@attacker.example", "bob@example.net",
                          "From: <first@attacker.example>\nFrom: <ceo@example.test>\nTo: bob@example.net\n"
                          "Subject: two\n\nx\n")
        self.assertEqual(code, 550, text)


if __name__ == "__main__":
    unittest.main()
