#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""layers-check.py [ROOT] - the include lines keep the house layered and free of circles.

Layers, lowest first (STYLE.md lesson 17; README "Layout"). A file may include a header of
its own folder or of a lower layer, never of a higher one:

    0  lib/      generic utilities, knowing nothing of mail
    1  core/     session, transaction, message, verdict, chain, filter interface, services
                 (resolver, worker pool), errors, transaction log
    2  policy/   rate-limit and greylist stores
    3  rules/    the rule language
    4  filters/  one file per check, and the registry of filters
    5  gateway/  the engine and the doors, main()

Each folder has a rank of its own, so two folders can never include each other. Within the
layers, a module is a .c file with its .h of the same name (and x_int.h, the private header
of module x); module A depends on module B
when a file of A includes B's header. A circle of modules (A -> B -> ... -> A) fails too:
it means neither can be understood, tested or replaced without the other.

A library wrapped for one check (libspf2, libopendkim) lives beside its filter: filters/x.c
and x.h are the glue, filters/x_filter.c the filter shell. The glue is a layer below its
shell: it must not include the filter interface or the chain (WRAPPER_FORBIDS).

Only '#include "..."' lines are read (system headers are outside the house); tests/ and
other folders not listed are not checked. Exit status 1 and one line per finding on
failure. --self-test runs the check on a small tree with one upward include and one circle
and fails unless the check finds both.
"""
import os
import re
import sys
import tempfile

RANKS = {"lib": 0, "core": 1, "policy": 2, "rules": 3, "filters": 4, "gateway": 5}
# Known upward includes still to remove, each with its reason. Keep this list short and
# shrinking: an entry here is a design bug we know about, not a permission. Empty since the
# core reads its settings from core/settings.h, filled by gateway/conf.c.
EXCEPTIONS = set()
WRAPPER_FORBIDS = ("core/filter.h", "core/chain.h")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def scan(root):
    """every checked file -> [(line number, included path relative to root)]"""
    files = {}
    for folder in RANKS:
        top = os.path.join(root, folder)
        for dirpath, _, names in os.walk(top):
            for name in sorted(names):
                if not name.endswith((".c", ".h")):
                    continue
                path = os.path.relpath(os.path.join(dirpath, name), root)
                incs = []
                with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
                    for n, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if m:
                            inc = m.group(1)
                            if "/" not in inc:  # "x.h" beside the file
                                inc = os.path.join(os.path.dirname(path), inc)
                            incs.append((n, os.path.normpath(inc)))
                files[path] = incs
    return files


def module(path):
    """x.c, x.h and x_int.h (the private header of x) are one module"""
    m = os.path.splitext(path)[0]
    return m[:-4] if m.endswith("_int") else m


def check(root):
    files = scan(root)
    problems = []
    graph = {}
    for path, incs in sorted(files.items()):
        src = path.split(os.sep)[0]
        for n, inc in incs:
            dst = inc.split(os.sep)[0]
            if dst in RANKS and RANKS[dst] > RANKS[src] and (path, inc) not in EXCEPTIONS:
                problems.append(f"{path}:{n}: upward include of {inc} "
                                f"({src}/ is layer {RANKS[src]}, {dst}/ is layer {RANKS[dst]})")
            shell = module(path) + "_filter.c"
            if src == "filters" and shell in files and inc in WRAPPER_FORBIDS:
                problems.append(f"{path}:{n}: library glue includes {inc} "
                                f"(only its filter shell {shell} may)")
            a, b = module(path), module(inc)
            if a != b and inc in files and (path, inc) not in EXCEPTIONS:
                graph.setdefault(a, {}).setdefault(b, f"{path}:{n}")
    # circles: depth-first search, reporting each circle once by its smallest member
    seen_cycles = set()
    state = {}
    stack = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for nxt in sorted(graph.get(m, {})):
            if state.get(nxt) == 1:
                cyc = stack[stack.index(nxt):]
                i = cyc.index(min(cyc))
                key = tuple(cyc[i:] + cyc[:i])
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    ring = list(key) + [key[0]]
                    where = ", ".join(graph[x][y] for x, y in zip(ring, ring[1:]))
                    problems.append("include circle: " + " -> ".join(ring) + f" ({where})")
            elif state.get(nxt) is None:
                visit(nxt)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return problems


def self_test():
    """the check must be able to fail: one upward include and one circle, both found"""
    tree = {
        "lib/a.h": "",
        "core/b.h": '#include "lib/a.h"\n#include "filters/c.h"\n',  # upward
        "filters/c.h": '#include "core/b.h"\n',
        "policy/x.h": "",
        "policy/x.c": '#include "policy/x.h"\n#include "policy/y.h"\n',  # x -> y
        "policy/y.h": "",
        "policy/y.c": '#include "policy/y.h"\n#include "x.h"\n',  # y -> x: a circle
        "gateway/ok.c": '#include "core/b.h"\n',
        "core/filter.h": "",
        "filters/w.c": '#include "core/filter.h"\n',  # glue reaching for the filter interface
        "filters/w_filter.c": '#include "core/filter.h"\n',
    }
    with tempfile.TemporaryDirectory() as root:
        for path, text in tree.items():
            os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
            with open(os.path.join(root, path), "w") as f:
                f.write(text)
        problems = check(root)
    want = ["core/b.h:2: upward include of filters/c.h",
            "include circle: core/b -> filters/c -> core/b",
            "include circle: policy/x -> policy/y -> policy/x",
            "filters/w.c:1: library glue includes core/filter.h"]
    missing = [w for w in want if not any(p.startswith(w) for p in problems)]
    extra = [p for p in problems if not any(p.startswith(w) for w in want)]
    for p in missing:
        print(f"layers-check self-test: not found: {p}")
    for p in extra:
        print(f"layers-check self-test: unexpected: {p}")
    return 1 if missing or extra else 0


def main():
    args = sys.argv[1:]
    if args and args[0] == "--self-test":
        return self_test()
    root = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    problems = check(root)
    for p in problems:
        print(f"layers-check: {p}")
    if problems:
        print(f"layers-check: {len(problems)} problem(s)")
        return 1
    print(f"layers-check: {len(scan(root))} files, layers {' < '.join(RANKS)}: no upward include, no circle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
