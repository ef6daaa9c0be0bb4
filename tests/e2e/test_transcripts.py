#!/usr/bin/env python3
"""test_transcripts.py - tests/transcripts/*.t through the real state machine (see its README)."""
import glob
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

TDIR = os.path.join(h.ROOT, "tests", "transcripts")


def unescape(s):
    return re.sub(rb"\\(x[0-9a-fA-F]{2}|r|n|t|\\)",
                  lambda m: {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"\\": b"\\"}.get(
                      m.group(1), bytes([int(m.group(1)[1:], 16)]) if m.group(1)[:1] == b"x"
                      else b""), s.encode())


class Transcripts(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = h.tempdir()
        cls.sink = h.Sink(cls.tmp)
        cls.gw = h.Gateway(cls.tmp, h.gateway_conf(h.backend_conf(cls.sink.port)))

    @classmethod
    def tearDownClass(cls):
        cls.gw.close()
        cls.sink.close()
        h.rmtree(cls.tmp)

    def run_transcript(self, path):
        lines = open(path, encoding="utf-8").read().splitlines()
        source = "127.0.0.1"
        if lines and lines[0].startswith("@ "):
            source = lines.pop(0)[2:].strip()
        c = h.Chat(self.gw.port, source=source)
        try:
            for n, line in enumerate(lines, 1):
                where = f"{os.path.basename(path)}:{n}: {line}"
                if not line or line.startswith("#"):
                    continue
                if line.startswith(">> "):
                    c.send(unescape(line[3:]))
                elif line == ">" or line.startswith("> "):
                    c.send(line[2:].encode() + b"\r\n")
                elif line.startswith("<. "):
                    self.assertTrue(c.closed(), where)
                elif line.startswith("<* ") or line.startswith("< "):
                    code, text = c.reply()
                    last = text.splitlines()[-1] if text else ""
                    self.assertTrue(last.startswith(line.split(" ", 1)[1]), f"{where}\n got: {text}")
                    if line.startswith("<* "):
                        self.assertGreater(len(text.splitlines()), 1, where)
                    self.assertRegex(text.splitlines()[0] if text else "", r"^\d{3}", where)
                else:
                    self.fail(f"{where}: unknown line")
        finally:
            c.close()

    def test_transcripts(self):
        files = sorted(glob.glob(os.path.join(TDIR, "*.t")))
        self.assertGreater(len(files), 3)
        for f in files:
            with self.subTest(transcript=os.path.basename(f)):
                self.run_transcript(f)


if __name__ == "__main__":
    unittest.main(verbosity=1)
