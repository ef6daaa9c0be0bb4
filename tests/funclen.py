#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""funclen.py - function length figures of the C tree: median, 90th percentile, longest five.

A function is a definition in clang-format's layout: its opening brace alone at column 0 on the
line after the signature, its closing brace alone at column 0. Its length is the number of lines
from the line after "{" to the line before "}". Not part of make check: a figure for reviews.

Usage: tests/funclen.py [DIR|FILE...]   (default: lib core gateway filters policy rules)
"""
import os
import re
import statistics
import sys

DIRS = ["lib", "core", "gateway", "filters", "policy", "rules"]
NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def files(args):
    for a in args or DIRS:
        if os.path.isfile(a):
            yield a
        elif os.path.isdir(a):
            for root, _, names in os.walk(a):
                for n in sorted(names):
                    if n.endswith(".c"):
                        yield os.path.join(root, n)


def functions(path):
    """(name, length) of each function defined in path."""
    with open(path, errors="replace") as f:
        lines = f.read().split("\n")
    out = []
    i = 0
    while i < len(lines):
        if lines[i] == "{" and i > 0:
            # The signature: back to the line that starts at column 0 with a name and "(".
            j = i - 1
            while j > 0 and (lines[j][:1] in (" ", "\t") or lines[j] == ""):
                j -= 1
            m = NAME.search(lines[j])
            k = i + 1
            while k < len(lines) and lines[k] != "}":
                k += 1
            if m:
                out.append((f"{path}:{m.group(1)}", k - i - 1))
            i = k
        i += 1
    return out


def main():
    fns = [f for p in files(sys.argv[1:]) for f in functions(p)]
    if not fns:
        print("no functions found")
        return 1
    lens = sorted(n for _, n in fns)
    p90 = lens[min(len(lens) - 1, int(round(0.9 * (len(lens) - 1))))]
    print(f"functions {len(lens)}  median {statistics.median(lens):g}  p90 {p90}")
    for name, n in sorted(fns, key=lambda f: -f[1])[:5]:
        print(f"  {n:5d}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
