"""harness.py - real servers on loopback for end-to-end tests, always cleaned up.

Sink        Postfix's smtp-sink, optionally failing at a command (-f 5xx, -r 4xx, -q drop),
            dumping every message it accepts into a directory.
Postfix     a real Postfix instance in a temporary directory: its own main.cf/master.cf, queue,
            XCLIENT and XFORWARD allowed from loopback, example.com delivered to a Maildir,
            its log in a file (maillog_file) so tests can read the client address it saw.
Gateway     portcullis with a configuration written by the test, in the foreground.
smtp_chat   a raw SMTP client: exact bytes out, replies in.

Every process is started in its own process group and stopped again by close() or at exit.
Only loopback addresses are used.
"""
import atexit
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

BIN = os.environ.get("PORTCULLIS_BIN", os.path.abspath("build/portcullis"))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
_procs = []


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=10.0, host="127.0.0.1"):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port}")


class Proc:
    """A child process in its own process group."""

    def __init__(self, argv, log=None, **kw):
        self.logf = open(log, "wb") if log else subprocess.DEVNULL
        self.p = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                  start_new_session=True, **kw)
        _procs.append(self)

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, sig)
                self.p.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait()
        if self in _procs:
            _procs.remove(self)
        if self.logf is not subprocess.DEVNULL:
            self.logf.close()


@atexit.register
def _cleanup():
    for p in list(_procs):
        p.stop(signal.SIGKILL)


class Sink:
    """smtp-sink on a free port; fail = {"f": "MAIL"} etc. (smtp-sink options)."""

    def __init__(self, tmp, fail=None, lmtp=False):
        self.port = free_port()
        self.dir = os.path.join(tmp, f"sink{self.port}")
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o777)
        argv = ["smtp-sink", "-d", os.path.join(self.dir, "%M.")]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]
        for opt, val in (fail or {}).items():
            argv += [f"-{opt}", val]
        if lmtp:
            argv.append("-L")
        argv += [f"127.0.0.1:{self.port}", "100"]
        self.proc = Proc(argv, log=os.path.join(tmp, f"sink{self.port}.log"))
        wait_port(self.port)

    def messages(self):
        """Contents of every message smtp-sink accepted, oldest first."""
        # smtp-sink opens the dump file at MAIL; it stays empty when the transaction is
        # abandoned, so only non-empty files are messages.
        files = sorted(glob.glob(os.path.join(self.dir, "*")), key=os.path.getmtime)
        out = []
        for f in files:
            with open(f, "rb") as fh:
                data = fh.read()
            if data:
                out.append(data)
        return out

    def close(self):
        self.proc.stop()


class Postfix:
    """A real Postfix instance with its own configuration directory (needs root)."""

    MASTER = """\
{addr} inet n - n - - smtpd
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""

    def __init__(self, tmp):
        self.port = free_port()
        self.dir = os.path.join(tmp, f"postfix{self.port}")
        self.conf = os.path.join(self.dir, "conf")
        self.maildir = os.path.join(self.dir, "mail")
        self.maillog = os.path.join(self.dir, "maillog")
        for d in ("conf", "queue", "data", "mail"):
            os.makedirs(os.path.join(self.dir, d))
        pf = pwd.getpwnam("postfix")
        nobody = pwd.getpwnam("nobody")
        os.chown(os.path.join(self.dir, "data"), pf.pw_uid, pf.pw_gid)
        os.chmod(self.maildir, 0o777)
        main_cf = f"""\
compatibility_level = 3.6
queue_directory = {self.dir}/queue
data_directory = {self.dir}/data
mail_owner = postfix
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = backend.test
mydestination =
alias_maps =
alias_database =
virtual_mailbox_domains = example.com
virtual_mailbox_base = {self.maildir}
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:{nobody.pw_uid}
virtual_gid_maps = static:{nobody.pw_gid}
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_authorized_xforward_hosts = 127.0.0.0/8
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = check_recipient_access inline:{{{{ nosuchuser@example.com = 550 5.1.1 User unknown }}}}
maillog_file_prefixes = {tmp}
maillog_file = {self.maillog}
"""
        open(os.path.join(self.conf, "main.cf"), "w").write(main_cf)
        open(os.path.join(self.conf, "master.cf"), "w").write(
            self.MASTER.format(addr=f"127.0.0.1:{self.port}"))
        self._postfix("check")
        self._postfix("start")
        wait_port(self.port, timeout=20)

    def _postfix(self, what):
        r = subprocess.run(["postfix", "-c", self.conf, what], capture_output=True, text=True)
        if r.returncode != 0 and what != "stop":
            log = open(self.maillog).read() if os.path.exists(self.maillog) else ""
            raise RuntimeError(f"postfix {what} failed: {r.stdout}{r.stderr}{log[-2000:]}")

    def log(self):
        return open(self.maillog).read() if os.path.exists(self.maillog) else ""

    def delivered(self, timeout=10.0):
        """Messages in the Maildir, waiting until the queue manager is done."""
        end = time.time() + timeout
        while True:
            files = glob.glob(os.path.join(self.maildir, "inbox", "new", "*"))
            if files or time.time() > end:
                return [open(f, "rb").read() for f in files]
            time.sleep(0.1)

    def close(self):
        self._postfix("stop")


class Gateway:
    """portcullis running on a configuration the test writes."""

    def __init__(self, tmp, config, port=None):
        self.port = port or free_port()
        self.tmp = tmp
        self.path = os.path.join(tmp, f"portcullis{self.port}.conf")
        self.logpath = os.path.join(tmp, f"portcullis{self.port}.log")
        open(self.path, "w").write(config.replace("@PORT@", str(self.port)).replace("@TMP@", tmp))
        self.proc = Proc([BIN, "-c", self.path], log=self.logpath, cwd=tmp)
        try:
            wait_port(self.port)
        except RuntimeError:
            raise RuntimeError("portcullis did not start:\n" + self.log())

    def log(self):
        return open(self.logpath, errors="replace").read()

    def alive(self):
        return self.proc.p.poll() is None

    def close(self):
        self.proc.stop()


def backend_conf(sink_port, identity="xclient", lmtp=False, extra_addresses=()):
    addrs = ", ".join(f'"{a}"' for a in list(extra_addresses) + [f"127.0.0.1:{sink_port}"])
    return (f'backend "mta" {{\n  address = {{ {addrs} }}\n  identity = "{identity}"\n'
            f'  lmtp = {"true" if lmtp else "false"}\n}}\n')


def gateway_conf(backend, filters='"relay"', extra=""):
    return f"""hostname = "gw.test"
listener "in" {{
  address = "127.0.0.1:@PORT@"
  backend = "mta"
  filters = {{ {filters} }}
}}
{backend}
relay {{
  mynetworks = {{ "127.0.0.1/32" }}
  domains = {{ "example.com" }}
}}
timeouts {{
  command = 10s
  data = 10s
  backend_connect = 3s
  backend_greeting = 5s
  backend_command = 5s
  backend_data_init = 5s
  backend_data_done = 5s
}}
{extra}
"""


class Chat:
    """A raw SMTP client: send exact bytes, read whole (multi-line) replies."""

    def __init__(self, port, source="127.0.0.1", timeout=10.0):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                          source_address=(source, 0))
        self.buf = b""

    def send(self, data):
        self.s.sendall(data if isinstance(data, bytes) else data.encode())

    def reply(self):
        """The next complete reply as (code, text of all lines); (0, '') on EOF."""
        lines = []
        while True:
            while b"\n" not in self.buf:
                try:
                    chunk = self.s.recv(65536)
                except socket.timeout:
                    return (-1, "timeout")
                if not chunk:
                    return (0, "\n".join(lines))
                self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
            line = line.rstrip(b"\r").decode(errors="replace")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return (int(line[:3]) if line[:3].isdigit() else -2, "\n".join(lines))

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def closed(self, timeout=3.0):
        """True when the server has closed the connection."""
        self.s.settimeout(timeout)
        try:
            return self.s.recv(1) == b""
        except (socket.timeout, ConnectionResetError):
            return False

    def close(self):
        self.s.close()


def tempdir():
    d = tempfile.mkdtemp(prefix="pc-e2e-")
    os.chmod(d, 0o755)
    return d


def rmtree(d):
    shutil.rmtree(d, ignore_errors=True)
