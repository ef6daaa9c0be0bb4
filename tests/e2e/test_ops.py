#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_ops.py - running portcullis as a service: config paths, privilege drop, the systemd
notify protocol (against a NOTIFY_SOCKET datagram socket the test opens), socket activation
(LISTEN_FDS/LISTEN_PID set by the test), SIGUSR1, the command line and its exit codes, and
"portcullis test" with DNS filters answered from a zone file.
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

DEPLOY_CONF = os.path.join(h.ROOT, "deploy", "portcullis.conf")
h.BIN = os.path.abspath(h.BIN)  # the tests start it from other directories


def base_conf(port, extra="", filters='"relay"'):
    return (f'listener "in" {{ address = "127.0.0.1:{port}" backend = "local" '
            f'filters = {{ {filters} }} }}\n'
            'backend "local" { maildir = "Maildir" }\n'
            'relay { mynetworks = { "127.0.0.0/8" } domains = { "example.com" } }\n' + extra)


def banner(port, timeout=5.0):
    """The first line the server sends."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        return s.makefile("rb").readline().decode()


def proc_ids(pid):
    """(uids, gids, groups) from /proc/PID/status."""
    st = {}
    for line in h.read(f"/proc/{pid}/status").splitlines():
        k, _, v = line.partition(":")
        st[k] = v.split()
    return st["Uid"], st["Gid"], st["Groups"]


class Daemon:
    """The gateway as a child with its own environment; stderr into a log file."""

    def __init__(self, tmp, conf, env=None, argv_prefix=(), pass_fds=()):
        self.tmp = tmp
        self.path = os.path.join(tmp, "gw.conf")
        self.logpath = os.path.join(tmp, "gw.log")
        with open(self.path, "w") as f:
            f.write(conf)
        e = dict(os.environ)
        e.pop("PORTCULLIS_RUN_AS_ROOT", None)
        e.update(env or {})
        self.log_f = open(self.logpath, "ab")
        self.p = subprocess.Popen(list(argv_prefix) + [h.BIN, "-c", self.path], cwd=tmp, env=e,
                                  stdout=self.log_f, stderr=subprocess.STDOUT,
                                  pass_fds=pass_fds, start_new_session=True)

    def log(self):
        return h.read(self.logpath)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log_f.close()


class OpsCase(unittest.TestCase):
    def setUp(self):
        self.tmp = h.tempdir()
        os.chmod(self.tmp, 0o755)
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            d.stop()
        h.rmtree(self.tmp)

    def daemon(self, conf, **kw):
        d = Daemon(self.tmp, conf, **kw)
        self.daemons.append(d)
        return d


class ConfigPathTests(OpsCase):
    def test_shipped_config_checks_from_any_directory(self):
        # The unit runs in /var/lib/portcullis: rule files must not depend on the cwd.
        r = subprocess.run([h.BIN, "-t", "-c", DEPLOY_CONF], cwd=self.tmp, capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_relative_rule_file_and_list_resolve_against_their_file(self):
        sub = os.path.join(self.tmp, "etc")
        os.makedirs(os.path.join(sub, "rules", "lists"))
        with open(os.path.join(sub, "rules", "lists", "bad"), "w") as f:
            f.write("example.org\n")
        with open(os.path.join(sub, "rules", "local.rules"), "w") as f:
            f.write('list bad domains "lists/bad"\n'
                    'rule r at mail if from.domain in list bad then reject\n')
        conf = os.path.join(sub, "portcullis.conf")
        with open(conf, "w") as f:
            f.write('rules { files = { "rules/local.rules" } }\n')
        r = subprocess.run([h.BIN, "-t", "-c", conf], cwd="/", capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        os.remove(os.path.join(sub, "rules", "lists", "bad"))
        r = subprocess.run([h.BIN, "-t", "-c", conf], cwd="/", capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 78, r.stderr)
        self.assertIn(os.path.join(sub, "rules", "lists", "bad"), r.stderr)


class PrivilegeTests(OpsCase):
    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest("needs root")

    def test_drops_to_user(self):
        port = h.free_port()
        d = self.daemon(base_conf(port, 'user = "nobody"\ngroup = "nogroup"\n'))
        h.wait_port(port, proc=d.p)
        self.assertTrue(banner(port).startswith("220 "))
        nobody = pwd.getpwnam("nobody")
        import grp
        nogroup = grp.getgrnam("nogroup").gr_gid
        uids, gids, groups = proc_ids(d.p.pid)
        self.assertEqual(uids, [str(nobody.pw_uid)] * 4, d.log())
        self.assertEqual(gids, [str(nogroup)] * 4, d.log())
        self.assertNotIn("0", groups)
        self.assertIn("running as nobody", d.log())

    def test_refuses_root_without_user(self):
        port = h.free_port()
        d = self.daemon(base_conf(port))
        self.assertEqual(d.p.wait(timeout=30), 78, d.log())
        self.assertIn("refusing to run as root", d.log())

    def test_run_as_root_is_explicit(self):
        port = h.free_port()
        d = self.daemon(base_conf(port, "run_as_root = yes\n"))
        h.wait_port(port, proc=d.p)
        self.assertEqual(proc_ids(d.p.pid)[0], ["0"] * 4)

    def test_unknown_user_is_a_config_error(self):
        port = h.free_port()
        d = self.daemon(base_conf(port, 'user = "no-such-user-here"\n'))
        self.assertEqual(d.p.wait(timeout=30), 78, d.log())
        self.assertIn("no such user", d.log())
        r = subprocess.run([h.BIN, "-t", "-c", d.path], capture_output=True, text=True)
        self.assertEqual(r.returncode, 78)
        self.assertIn('user "no-such-user-here": no such user', r.stderr)
        with open(d.path, "w") as f:
            f.write(base_conf(port, 'user = "nobody"\ngroup = "no-such-group-here"\n'))
        r = subprocess.run([h.BIN, "-t", "-c", d.path], capture_output=True, text=True)
        self.assertEqual(r.returncode, 78)
        self.assertIn("no such group", r.stderr)


class NotifyTests(OpsCase):
    def notify_socket(self):
        path = os.path.join(self.tmp, "notify")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(path)
        s.settimeout(10)
        self.addCleanup(s.close)
        return s, path

    def expect(self, s, what, seen):
        """Read datagrams until one contains the line `what`; return that datagram."""
        end = time.time() + 10
        while time.time() < end:
            msg = s.recv(4096).decode()
            seen.append(msg)
            if what in msg.split("\n"):
                return msg
        self.fail(f"no {what} in {seen}")

    def test_notify_protocol(self):
        s, path = self.notify_socket()
        port = h.free_port()
        d = self.daemon(base_conf(port, "run_as_root = yes\n"),
                        env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
        seen = []
        msg = self.expect(s, "READY=1", seen)
        # READY only once the listeners are bound: a connection succeeds right now.
        self.assertTrue(banner(port).startswith("220 "))
        self.assertRegex(msg, r"STATUS=serving: \d+ sessions open")
        self.expect(s, "WATCHDOG=1", seen)
        self.expect(s, "WATCHDOG=1", seen)
        d.p.send_signal(signal.SIGHUP)
        msg = self.expect(s, "RELOADING=1", seen)
        self.assertRegex(msg, r"MONOTONIC_USEC=\d+")
        self.expect(s, "READY=1", seen)
        self.assertRegex("".join(seen), r"1 reloads")
        d.p.send_signal(signal.SIGTERM)
        self.expect(s, "STOPPING=1", seen)
        self.assertEqual(d.p.wait(timeout=30), 0, d.log())

    def test_no_ready_when_a_listener_cannot_bind(self):
        s, path = self.notify_socket()
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        self.addCleanup(ls.close)
        d = self.daemon(base_conf(ls.getsockname()[1], "run_as_root = yes\n"),
                        env={"NOTIFY_SOCKET": path})
        self.assertEqual(d.p.wait(timeout=30), 69, d.log())
        s.settimeout(0.2)
        seen = []
        try:
            while True:
                seen.append(s.recv(4096).decode())
        except socket.timeout:
            pass
        self.assertFalse([m for m in seen if "READY=1" in m.split("\n")], seen)

    def test_no_watchdog_without_watchdog_usec(self):
        s, path = self.notify_socket()
        port = h.free_port()
        self.daemon(base_conf(port, "run_as_root = yes\n"), env={"NOTIFY_SOCKET": path})
        seen = []
        self.expect(s, "READY=1", seen)
        s.settimeout(0.5)
        try:
            while True:
                seen.append(s.recv(4096).decode())
        except socket.timeout:
            pass
        self.assertFalse([m for m in seen if "WATCHDOG=1" in m.split("\n")], seen)


def activate(fd):
    """argv prefix: the socket at fd becomes fd 3, LISTEN_PID the gateway's (exec keeps $$)."""
    move = "" if fd == 3 else f"exec 3<&{fd}; exec {fd}<&-; "
    return ["sh", "-c", move + 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"']


class SocketActivationTests(OpsCase):
    def test_uses_passed_socket(self):
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(16)
        port = ls.getsockname()[1]
        # The child gets the socket as fd 3 and LISTEN_PID = its own pid (exec keeps it).
        fd = ls.fileno()
        d = self.daemon(base_conf(port, "run_as_root = yes\n"),
                        argv_prefix=activate(fd),
                        pass_fds=(fd,))
        # We still hold the socket too, so the gateway could not have bound this port itself.
        h.wait_port(port, proc=d.p)
        self.assertTrue(banner(port).startswith("220 "))
        self.assertIn("(socket from systemd)", d.log())
        ls.close()

    def test_unmatched_socket_is_closed(self):
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(16)
        fd = ls.fileno()
        port = h.free_port()
        d = self.daemon(base_conf(port, "run_as_root = yes\n"),
                        argv_prefix=activate(fd),
                        pass_fds=(fd,))
        h.wait_port(port, proc=d.p)
        self.assertIn("matches no listener address", d.log())
        self.assertNotIn("(socket from systemd)", d.log())
        ls.close()


class SignalTests(OpsCase):
    def test_usr1_reopens_logs(self):
        port = h.free_port()
        d = self.daemon(base_conf(port, 'run_as_root = yes\nlog = "syslog"\n'))
        h.wait_port(port, proc=d.p)
        d.p.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        self.assertIsNone(d.p.poll(), d.log())
        self.assertTrue(banner(port).startswith("220 "))


class InstallTests(OpsCase):
    def make_install(self, *args):
        b = os.path.dirname(os.path.abspath(h.BIN))
        # -o: never rebuild the binary under test (an ASan build must stay an ASan build).
        r = subprocess.run(["make", "-s", "--no-print-directory", "-C", h.ROOT, "-o",
                            os.path.join(b, "portcullis"), f"B={b}", "install", *args],
                           capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, MAKEFLAGS=""))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r.stdout

    def test_destdir_layout(self):
        d = os.path.join(self.tmp, "dest")
        self.make_install(f"DESTDIR={d}", "PREFIX=/usr", "unitdir=/lib/systemd/system")
        for f in ("usr/sbin/portcullis", "usr/share/man/man8/portcullis.8",
                  "usr/share/man/man5/portcullis.conf.5", "usr/share/man/man5/portcullis.rules.5",
                  "etc/portcullis/portcullis.conf", "etc/portcullis/rules/default.rules",
                  "etc/portcullis/rules/lists/freemail.domains",
                  "lib/systemd/system/portcullis.service", "usr/lib/sysusers.d/portcullis.conf",
                  "usr/lib/tmpfiles.d/portcullis.conf",
                  "usr/share/portcullis/fail2ban/filter.d/portcullis.conf",
                  "usr/share/portcullis/fail2ban/jail.d/portcullis.conf"):
            self.assertTrue(os.path.isfile(os.path.join(d, f)), f)
        unit = h.read(os.path.join(d, "lib/systemd/system/portcullis.service"))
        self.assertIn("ExecStart=/usr/sbin/portcullis -c /etc/portcullis/portcullis.conf\n", unit)
        self.assertIn("Type=notify", unit)
        self.assertRegex(unit, r"ExecReload=\S+ -c \S+ -t\nExecReload=/bin/kill -HUP")
        self.assertIn("u portcullis", h.read(os.path.join(d, "usr/lib/sysusers.d/portcullis.conf")))
        b = os.path.dirname(os.path.abspath(h.BIN))
        r = subprocess.run(["make", "-s", "--no-print-directory", "-C", h.ROOT, f"B={b}",
                            f"DESTDIR={d}", "PREFIX=/usr", "unitdir=/lib/systemd/system",
                            "uninstall"], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, MAKEFLAGS=""))
        self.assertEqual(r.returncode, 0, r.stderr)
        left = sorted(os.path.relpath(os.path.join(dp, f), d)
                      for dp, _, fs in os.walk(d) for f in fs)
        self.assertTrue(left and all(f.startswith("etc/portcullis/") for f in left), left)

    def test_prefix_install_checks_and_verifies(self):
        p = os.path.join(self.tmp, "p")
        self.make_install(f"PREFIX={p}", f"sysconfdir={p}/etc")
        conf = os.path.join(p, "etc", "portcullis", "portcullis.conf")
        binary = os.path.join(p, "sbin", "portcullis")
        # The installed configuration is valid wherever the daemon starts.
        r = subprocess.run([binary, "-t", "-c", conf], cwd="/", capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        unit = os.path.join(p, "lib", "systemd", "system", "portcullis.service")
        self.assertIn(f"ExecStart={binary} -c {conf}", h.read(unit))
        if shutil.which("systemd-analyze"):
            r = subprocess.run(["systemd-analyze", "verify", "--man=no", unit],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # A reinstall keeps the postmaster's edits.
        with open(conf, "a") as f:
            f.write("# edited\n")
        out = self.make_install(f"PREFIX={p}", f"sysconfdir={p}/etc")
        self.assertIn("keep", out)
        self.assertTrue(h.read(conf).endswith("# edited\n"))


class BuildTests(OpsCase):
    def make_n(self, *args):
        """make -n (print, do not run) in a scratch build directory."""
        return subprocess.run(["make", "-n", "--no-print-directory", "-C", h.ROOT,
                               f"B={self.tmp}/b", *args], capture_output=True, text=True,
                              timeout=120, env=dict(os.environ, MAKEFLAGS=""))

    def test_builder_flags_are_honoured(self):
        r = self.make_n("V=1", "WERROR=0", "CFLAGS=-O0 -g3", "CPPFLAGS=-DPC_TEST_CPP=1",
                        "LDFLAGS=-Wl,-z,now", f"{self.tmp}/b/portcullis")
        self.assertEqual(r.returncode, 0, r.stderr)
        cc = [line for line in r.stdout.splitlines() if " -c -o " in line and "main.c" in line]
        self.assertTrue(cc, r.stdout[-2000:])
        # Ours are still there (the build works), the builder's come last and win.
        for flag in ("-std=gnu11", "-I.", "-DPC_TEST_CPP=1", "-O0 -g3"):
            self.assertIn(flag, cc[0])
        self.assertNotIn("-Werror", cc[0])
        self.assertLess(cc[0].index("-std=gnu11"), cc[0].index("-O0"))
        ld = [line for line in r.stdout.splitlines() if " -o " in line and "/portcullis " in line]
        self.assertIn("-Wl,-z,now", ld[0])
        # Only libraries the code calls: libmilter since the milter door (gateway/milter.c).
        self.assertIn("-lmilter", ld[0])
        r = self.make_n("WERROR=1", f"{self.tmp}/b/gateway/main.o")
        self.assertIn("-Werror", r.stdout)

    def test_verbose_shows_commands(self):
        def build(*args):
            obj = f"{self.tmp}/b/lib/buf.o"
            if os.path.exists(obj):
                os.remove(obj)
            return subprocess.run(["make", "--no-print-directory", "-C", h.ROOT,
                                   f"B={self.tmp}/b", *args, obj], capture_output=True,
                                  text=True, timeout=120, env=dict(os.environ, MAKEFLAGS=""))
        quiet = build()
        self.assertEqual(quiet.returncode, 0, quiet.stderr)
        self.assertIn("CC      lib/buf.c", quiet.stdout)
        self.assertNotIn("-std=gnu11", quiet.stdout)
        loud = build("V=1")
        self.assertEqual(loud.returncode, 0, loud.stderr)
        self.assertRegex(loud.stdout, r"(?m)^\S*(cc|gcc)\b.* -c -o \S+/lib/buf\.o lib/buf\.c$")

    def test_missing_pkg_config_module_is_named(self):
        r = self.make_n("PKGS=libevent no-such-module-here", "all")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("pkg-config cannot find: no-such-module-here", r.stderr)


class SpdxTests(OpsCase):
    def test_check_fails_and_fix_repairs(self):
        repo = os.path.join(self.tmp, "repo")
        os.makedirs(os.path.join(repo, "tests"))
        shutil.copy(os.path.join(h.ROOT, "tests", "spdx-check.sh"), os.path.join(repo, "tests"))
        with open(os.path.join(repo, "a.c"), "w") as f:
            f.write("int a;\n")
        with open(os.path.join(repo, "b.sh"), "w") as f:
            f.write("#!/bin/sh\necho b\n")
        git = ["git", "-C", repo, "-c", "user.name=t", "-c", "user.email=t@example.org"]
        subprocess.run(git + ["init", "-q"], check=True)
        subprocess.run(git + ["add", "."], check=True)
        script = os.path.join(repo, "tests", "spdx-check.sh")
        r = subprocess.run([script], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("a.c", r.stdout)
        self.assertIn("b.sh", r.stdout)
        r = subprocess.run([script, "--fix"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertEqual(subprocess.run([script], capture_output=True).returncode, 0)
        self.assertTrue(h.read(os.path.join(repo, "a.c")).startswith(
            "/* SPDX-License-Identifier: MIT */\nint a;"))
        self.assertTrue(h.read(os.path.join(repo, "b.sh")).startswith(
            "#!/bin/sh\n# SPDX-License-Identifier: MIT\n"))


class CommandLineTests(OpsCase):
    def run_bin(self, *args, **kw):
        return subprocess.run([h.BIN, *args], capture_output=True, text=True, timeout=60, **kw)

    def test_help_and_version(self):
        for opt in ("-h", "--help"):
            r = self.run_bin(opt)
            self.assertEqual(r.returncode, 0)
            self.assertIn("portcullis test", r.stdout)
            self.assertIn("78", r.stdout)
        r = self.run_bin("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^portcullis \d")

    def test_exit_codes(self):
        r = self.run_bin("--no-such-option")
        self.assertEqual(r.returncode, 64)
        self.assertIn("usage:", r.stderr)
        self.assertEqual(self.run_bin("extra-argument").returncode, 64)
        self.assertEqual(self.run_bin("-t", "-c", "/nonexistent.conf").returncode, 78)
        bad = os.path.join(self.tmp, "bad.conf")
        with open(bad, "w") as f:
            f.write("limits { max_recipients = 0 }\n")
        self.assertEqual(self.run_bin("-t", "-c", bad).returncode, 78)
        # A listener that cannot bind: EX_UNAVAILABLE.
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        conf = os.path.join(self.tmp, "busy.conf")
        with open(conf, "w") as f:
            f.write(base_conf(ls.getsockname()[1], "run_as_root = yes\n"))
        self.assertEqual(self.run_bin("-c", conf).returncode, 69)
        ls.close()

    def test_default_config_path(self):
        r = self.run_bin("-t")
        if os.path.exists("/etc/portcullis/portcullis.conf"):
            self.skipTest("a portcullis is installed here")
        self.assertEqual(r.returncode, 78)
        self.assertIn("/etc/portcullis/portcullis.conf", r.stderr)

    def test_test_command_exit_codes(self):
        self.assertEqual(self.run_bin("test").returncode, 64)
        r = self.run_bin("test", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--dns-zone", r.stdout)
        msg = os.path.join(self.tmp, "m.eml")
        with open(msg, "w") as f:
            f.write("From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n")
        r = self.run_bin("test", "-c", "/nonexistent.conf", msg)
        self.assertEqual(r.returncode, 78)
        r = self.run_bin("test", "-c", DEPLOY_CONF, os.path.join(self.tmp, "missing.eml"))
        self.assertEqual(r.returncode, 66)

    def test_test_command_runs_dns_filters_offline(self):
        conf = os.path.join(self.tmp, "dns.conf")
        with open(conf, "w") as f:
            f.write(base_conf(2525, 'dnsbl { sites = { "bl.test" } threshold = 1 }\n',
                              filters='"dnsbl", "relay"'))
        zone = os.path.join(self.tmp, "test.zone")
        with open(zone, "w") as f:
            f.write("; offline answers\n1.2.0.192.bl.test. 300 IN A 127.0.0.2\n")
        msg = os.path.join(self.tmp, "m.eml")
        with open(msg, "w") as f:
            f.write("From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n")
        base = ["test", "-c", conf, "--dns-zone", zone, "--from", "a@example.org",
                "--rcpt", "b@example.com"]
        r = self.run_bin(*base, "--client-ip", "192.0.2.1", msg)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("bl.test", r.stdout)
        r = self.run_bin(*base, "--client-ip", "192.0.2.9", msg)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(zone, "a") as f:
            f.write("this is not a record\n")
        r = self.run_bin(*base, "--client-ip", "192.0.2.9", msg)
        self.assertEqual(r.returncode, 78)
        self.assertIn("test.zone:3:", r.stderr)


if __name__ == "__main__":
    unittest.main()
