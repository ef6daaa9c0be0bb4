#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_transcripts.py - tests/transcripts through the real state machine (see its README).

One form, Postfix's: NAME.in holds only what the client sends and NAME.ref the complete expected
replies, line for line, where {{regex}} stands for a variable part (queue ids). Whole lines are
compared, so a changed reply text or enhanced code fails. PC_TRANSCRIPT_UPDATE=1 rewrites every
.ref from what the gateway answers now (PC_TRANSCRIPT_UPDATE=NAME only NAME.ref); review the diff,
then put {{...}} back for variable parts.
"""
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

    @classmethod
    def tearDownClass(cls):
        h.rmtree(cls.tmp)

    def play_in(self, path):
        """Play a .in file; the replies, one line each, as the .ref would hold them."""
        lines = h.read(path).splitlines()
        source = "127.0.0.1"
        if lines and lines[0].startswith("@from "):
            source = lines.pop(0)[6:].strip()
        out = []
        # A gateway of its own: EHLO offers what the backend offered last time, so a shared
        # gateway would make one transcript's replies depend on the ones before it.
        sink = h.Sink(self.tmp)
        self.addCleanup(sink.close)
        gw = h.Gateway(self.tmp, h.gateway_conf(h.backend_conf(sink.port)))
        self.addCleanup(gw.close)
        c = h.Chat(gw.port, source=source, timeout=5.0)

        def read(n=1):
            for _ in range(n):
                code, text = c.reply()
                if code == 0 and not text:
                    out.append("[closed]")
                    return 0
                if code == -1:
                    out.append("[timeout]")
                    return -1
                out.extend(text.splitlines())
                last = code
            return last

        try:
            data = False
            read()  # the greeting
            for line in lines:
                if not data and (not line.strip() or line.startswith("#")):
                    continue
                if line.startswith("@raw "):
                    c.send(unescape(line[5:]))
                elif line.startswith("@read "):
                    data = read(int(line[6:])) == 354
                elif not data and line == "@closed":
                    out.append("[closed]" if c.closed() else "[open]")
                elif data:
                    c.send(line.encode() + b"\r\n")
                    if line == ".":
                        data = False
                        read()
                else:
                    c.send(line.encode() + b"\r\n")
                    data = read() == 354
        finally:
            c.close()
        return out

    @staticmethod
    def ref_regex(line):
        """A .ref line as a regex: literal text, {{...}} parts are regexes."""
        parts = re.split(r"\{\{(.*?)\}\}", line)
        return "".join(p if i % 2 else re.escape(p) for i, p in enumerate(parts)) + r"\Z"

    def test_in_ref(self):
        files = sorted(glob.glob(os.path.join(TDIR, "*.in")))
        self.assertGreater(len(files), 3)
        for f in files:
            name = os.path.basename(f)
            with self.subTest(transcript=name):
                got = self.play_in(f)
                ref = f[:-3] + ".ref"
                update = os.environ.get("PC_TRANSCRIPT_UPDATE")
                if update and update in ("1", name[:-3]):
                    with open(ref, "w") as fh:
                        fh.write("\n".join(got) + "\n")
                want = h.read(ref).splitlines()
                report = "\n".join(f"{'  ' if i < len(want) and re.match(self.ref_regex(want[i]), g) else '! '}{g}"
                                   for i, g in enumerate(got))
                self.assertEqual(len(got), len(want), f"{name}: got\n{report}")
                for i, (g, w) in enumerate(zip(got, want), 1):
                    self.assertRegex(g, "^" + self.ref_regex(w), f"{name[:-3]}.ref:{i}\ngot:\n{report}")


if __name__ == "__main__":
    unittest.main(verbosity=1)
