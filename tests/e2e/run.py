#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""run.py - run every end-to-end test script (tests/e2e/test_*.py) and sum up.

Each script is a self-contained unittest program that starts the real servers it needs on
loopback and stops them again. It finds the gateway binary in $PORTCULLIS_BIN. The last line
printed is the one CI reads, exactly "N passed, N failed, N skipped" (nothing else on it).
Exit status 1 if anything failed.
"""
import argparse
import glob
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="build/portcullis")
    ap.add_argument("--timeout", type=int, default=1500, help="seconds per script (a hang guard: test_tls_auth runs testssl, 4-11 minutes on a loaded 2-core machine)")
    ap.add_argument("scripts", nargs="*", help="only these (default: all test_*.py)")
    a = ap.parse_args()
    env = dict(os.environ, PORTCULLIS_BIN=os.path.abspath(a.binary), PYTHONUNBUFFERED="1")
    # Tests run as root and start the gateway without "user" (see run_as_root).
    env.setdefault("PORTCULLIS_RUN_AS_ROOT", "1")
    # workers = 0 (the default) means one per CPU; tests that count per-process state (per-IP
    # limits, in-process rate limits, metrics) assume one process unless they set workers.
    env.setdefault("PORTCULLIS_WORKERS", "1")
    scripts = a.scripts or sorted(glob.glob(os.path.join(HERE, "test_*.py")))
    passed = failed = skipped = 0
    for script in scripts:
        name = os.path.basename(script)
        t0 = time.time()
        try:
            p = subprocess.run([sys.executable, script], cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=a.timeout)
            out, rc = p.stdout + p.stderr, p.returncode
        except subprocess.TimeoutExpired as e:
            out, rc = ((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes)
                       else (e.stdout or "")) + "\nTIMEOUT\n", -1
        ran = re.findall(r"^Ran (\d+) tests?", out, re.M)
        n = sum(int(x) for x in ran)
        # "expected failures" (known bugs marked in the test) pass; unexpected successes fail
        # so that the marker is removed once the bug is fixed.
        f = sum(int(x) for x in re.findall(r"(?<!expected )\b(?:failures|errors|unexpected "
                                           r"successes)=(\d+)", out))
        s = sum(int(x) for x in re.findall(r"skipped=(\d+)", out))
        xf = sum(int(x) for x in re.findall(r"expected failures=(\d+)", out))
        if rc != 0 and f == 0:
            f = 1  # the script died or timed out without a unittest summary
        s = min(s, max(n - f, 0))  # skipped subtests are counted one by one; count tests
        passed += max(n - f - s, 0)
        failed += f
        skipped += s
        status = "ok" if rc == 0 else "FAILED"
        known = f", {xf} known bugs (expectedFailure)" if xf else ""
        print(f"{name}: {status} ({n} tests, {f} failed, {s} skipped{known}, "
              f"{time.time() - t0:.1f}s)")
        if rc != 0:
            print("\n".join("    " + line for line in out.splitlines()[-60:]))
        sys.stdout.flush()
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
