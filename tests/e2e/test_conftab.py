#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_conftab - the configuration table seen from the command line (issue 16):
-p -c prints effective values, -n only what differs from the defaults, -t reports every
error with its line, the top-level mynetworks is the one trust definition (dkim verifies mail
from a client outside it), and a chain whose filters read results not yet computed is refused.
Runs build/portcullis directly; no peer is needed."""
import os
import subprocess
import tempfile
import unittest

BIN = os.path.abspath(os.environ.get("PORTCULLIS_BIN") or os.path.join(os.path.dirname(__file__), "..", "..", "build", "portcullis"))


def run(args, conf=None):
    """run - portcullis with args (and -c conf written to a file); (rc, stdout, stderr)"""
    d = tempfile.mkdtemp(prefix="pc-conftab-")
    path = os.path.join(d, "p.conf")
    if conf is not None:
        with open(path, "w") as f:
            f.write(conf)
        args = args + ["-c", path]
    p = subprocess.run([BIN] + args, capture_output=True, text=True, cwd=d, timeout=30)
    return p.returncode, p.stdout, p.stderr, path, d


class Print(unittest.TestCase):
    def test_p_with_c_prints_effective_values(self):
        rc, out, err, path, _ = run(["-p"], 'hostname = "mx.example.org"\n'
                                    'limits { max_recipients = 7 }\n')
        self.assertEqual(rc, 0, err)
        self.assertIn('hostname = "mx.example.org"\n', out)
        self.assertIn("limits.max_recipients = 7\n", out)
        self.assertIn("limits.max_errors = 20\n", out)  # defaults too
        for line in out.splitlines():
            self.assertRegex(line, r"^\S+ = \S", line)  # every parameter has a value

    def test_p_shows_filter_defaults_from_their_rows(self):
        # A filter's options are rows of the one table: -p prints their defaults, the nested
        # ratelimit limit section's too, and the common timeout/on_error of every filter.
        rc, out, err, _, _ = run(["-p"])
        self.assertEqual(rc, 0, err)
        for want in ("rdns.max_names = 10", "dnsbl.reject_code = 554", "greylist.delay = \"5m\"",
                     "ratelimit.limit.burst = 0", "dkim.min_key_bits = 1024",
                     "rules.timeout = \"30s\"", "spf.on_error = \"tempfail\""):
            self.assertIn(want + "\n", out)

    def test_n_prints_only_changes(self):
        rc, out, err, _, _ = run(["-n"], 'limits { max_recipients = 7 max_errors = 20 }\n'
                                 'mynetworks = { "127.0.0.1/32" }\n')
        self.assertEqual(rc, 0, err)
        self.assertEqual(sorted(out.splitlines()),
                         ['limits.max_recipients = 7', 'mynetworks = {"127.0.0.1/32"}'])


class Check(unittest.TestCase):
    def test_t_reports_every_error_with_its_line(self):
        rc, out, err, path, _ = run(["-t"], 'banner = "x"\n'
                                    'limits {\n  max_recipients = 0\n'
                                    '  max_errors = 100000\n}\n'
                                    'timeouts { data = "soon" }\n')
        self.assertEqual(rc, 78)
        lines = err.strip().splitlines()
        self.assertEqual(len(lines), 3, err)
        self.assertTrue(lines[0].startswith(path + ":3: ") and "max_recipients" in lines[0], err)
        self.assertTrue(lines[1].startswith(path + ":4: ") and "max_errors" in lines[1], err)
        self.assertTrue(lines[2].startswith(path + ":6: ") and "data" in lines[2], err)

    def test_bounds_keyed_by_full_path(self):
        # dnsbl.threshold has its own bound; limits' names do not leak into filter sections.
        rc, _, err, path, _ = run(["-t"], 'dnsbl {\n threshold = 0\n}\n')
        self.assertEqual(rc, 78)
        self.assertIn(path + ":2: dnsbl.threshold = 0 is out of range", err)

    def test_filter_option_bounds_at_the_option_line(self):
        # A filter's integer option is bounded by its row, reported at the option's own line
        # (not the section's), every one of them, nested sections included.
        rc, _, err, path, _ = run(["-t"], 'rdns {\n reject = true\n max_names = 11\n}\n'
                                  'greylist {\n\n ipv4_prefix = 33\n}\n'
                                  'ratelimit {\n limit "a" {\n  rate = "5/1m"\n  burst = -1\n }\n}\n')
        self.assertEqual(rc, 78)
        lines = err.strip().splitlines()
        self.assertEqual(lines, [path + ":3: rdns.max_names = 11 is out of range [1, 10]",
                                 path + ":7: greylist.ipv4_prefix = 33 is out of range [8, 32]",
                                 path + ":12: ratelimit.limit.burst = -1 is out of range "
                                 "[0, 1000000000000]"], err)

    def test_duration_error_names_the_rows_bound(self):
        # Each duration row has its own bounds; the error prints them, not a fixed "1d".
        rc, _, err, path, _ = run(["-t"], 'postscreen {\n cache_ttl = "31d"\n}\n'
                                  'timeouts {\n data = "2d"\n}\n'
                                  'postscreen {\n store_timeout = "5ms"\n}\n')
        self.assertEqual(rc, 78)
        self.assertIn(path + ':2: cache_ttl: bad duration "31d" (use e.g. 30s, 5m, 250ms; '
                      'at most 30d)', err)
        self.assertIn(path + ':5: data: bad duration "2d" (use e.g. 30s, 5m, 250ms; '
                      'at most 1d)', err)
        self.assertIn('store_timeout: bad duration "5ms" (use e.g. 30s, 5m, 250ms; '
                      'from 10ms to 1m)', err)

    def test_t_goes_on_after_a_syntax_error(self):
        # libconfuse stops at a syntax error; -t reports it at its line, then checks the rest:
        # a bad value further down, the rule file the rules section names, a second syntax
        # error. Exit status 78 (portcullis(8)).
        rc, out, err, path, d = run(["-t"], 'banner = "x"\n'
                                    'limits { max_recipients = = 3 }\n'
                                    'hostname = "a..b"\n'
                                    'rules { files = { "missing.rules" } }\n'
                                    'bogus_option = 1\n'
                                    'smtputf8 = maybe\n')
        self.assertEqual(rc, 78, err)
        lines = err.strip().splitlines()
        self.assertEqual(lines[0], path + ":2: unexpected token '='", err)
        self.assertIn(path + ':3: hostname "a..b" is not a valid domain name', lines, err)
        self.assertIn(path + ":5: no such option 'bogus_option'", lines, err)
        self.assertTrue(any(":6: " in x and "smtputf8" in x for x in lines), err)
        self.assertTrue(any("missing.rules" in x and "cannot read" in x for x in lines), err)

    def test_filter_order(self):
        cases = [('{ "relay", "dmarc", "spf", "dkim" }', 'filter "dmarc" needs "spf"'),
                 ('{ "relay", "spf", "dmarc" }', 'filter "dmarc" needs "dkim"'),
                 ('{ "relay", "authres", "spf" }', 'filter "authres" must come after "spf"'),
                 ('{ "greylist", "relay" }', 'filter "greylist" must come after "relay"')]
        for chain, want in cases:
            rc, _, err, path, _ = run(["-t"], 'listener "in" {\n address = "127.0.0.1:2599"\n'
                                      ' filters = %s\n}\n' % chain)
            self.assertEqual(rc, 78, chain)
            self.assertIn(path + ":3: ", err, chain)  # the line of "filters ="
            self.assertIn(want, err, chain)
        rc, _, err, _, _ = run(["-t"], 'listener "in" {\n address = "127.0.0.1:2599"\n'
                               ' filters = { "relay", "spf", "dkim", "dmarc", "authres" }\n}\n')
        self.assertEqual(rc, 0, err)

    def test_ratelimit_rule_needs_rules(self):
        conf = ('listener "in" {\n address = "127.0.0.1:2599"\n filters = { "relay", "ratelimit" }\n}\n'
                'ratelimit {\n limit "a" { rate = "5/1m" rule = "x" }\n}\n')
        rc, _, err, _, _ = run(["-t"], conf)
        self.assertEqual(rc, 78)
        self.assertIn('needs "rules" earlier', err)


class Trust(unittest.TestCase):
    def test_dkim_verifies_outside_mynetworks(self):
        d = tempfile.mkdtemp(prefix="pc-conftab-")
        # RSA: under LeakSanitizer, "portcullis test" signing with an Ed25519 key reports a leak
        # inside libopendkim's key load (not ours), which would hide what this test checks.
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", os.path.join(d, "rsa.pem")],
                       check=True, capture_output=True)
        conf = os.path.join(d, "a.conf")
        with open(conf, "w") as f:
            f.write('mynetworks = { "127.0.0.1/32" }\n'
                    'listener "in" {\n address = "127.0.0.1:2599"\n filters = { "relay", "dkim" }\n}\n'
                    'relay { domains = { "example.test" } }\n'
                    'dkim {\n key_table = { "rsa example.test:r1:rsa.pem" }\n'
                    ' signing_table = { "*@example.test rsa" }\n}\n')
        msg = os.path.join(d, "m.eml")
        with open(msg, "wb") as f:
            f.write(b"From: a@example.test\r\nTo: b@example.test\r\nSubject: x\r\n\r\nhi\r\n")

        def mode(ip):
            p = subprocess.run([BIN, "test", "-c", conf, "--client-ip", ip, "--from",
                                "a@example.test", "--rcpt", "b@example.test", msg],
                               capture_output=True, text=True, timeout=30)
            self.assertIn("dkim_mode=", p.stdout, p.stderr)
            return p.stdout.split("dkim_mode=")[1].split()[0]
        self.assertEqual(mode("127.0.0.1"), "sign")
        self.assertEqual(mode("127.0.0.2"), "verify")  # was "sign": dkim had its own 127/8


if __name__ == "__main__":
    unittest.main()
