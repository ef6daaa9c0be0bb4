# SPDX-License-Identifier: MIT
"""harness.py - real servers on loopback for end-to-end tests, always cleaned up.

Sink        Postfix's smtp-sink, optionally failing at a command (-f 5xx, -r 4xx, -q drop),
            dumping every message it accepts into a directory.
Postfix     a real Postfix instance in a temporary directory: its own main.cf/master.cf, queue,
            XCLIENT and XFORWARD allowed from 127.0.0.1 only (README's setting),
            example.com delivered to a Maildir,
            its log in a file (maillog_file) so tests can read the client address it saw.
Gateway     portcullis with a configuration written by the test, in the foreground.
FakeMTA     an in-process scripted SMTP server: records the exact bytes it receives (dot-stuffing,
            line endings, XCLIENT/XFORWARD lines) and fails where told (reply, drop, delay, or
            drop in the middle of the message content).
Chat        a raw SMTP client: exact bytes out, replies in.
Listener    a bare TCP listener for a hand-written peer (one thread per connection).
PeersCase   a TestCase whose peers (and gateway) live as long as the class, closed in reverse.
backend_block, wait_message, s_client_smtp: a backend "mta" block, polling for a delivered
            message, openssl s_client -starttls smtp.

Every helper is a context manager; close() is idempotent. If the gateway binary cannot serve yet
(it exits saying "not yet"), Gateway raises unittest.SkipTest so proxy tests skip instead of fail.

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
import threading
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("PORTCULLIS_BIN", os.path.join(ROOT, "build", "portcullis"))
# One process unless a test's configuration sets workers (see run.py).
os.environ.setdefault("PORTCULLIS_WORKERS", "1")
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
# The tests run as root and start the gateway without "user": say that this is meant
# (portcullis refuses to keep running as root otherwise; see run_as_root in portcullis.conf(5)).
os.environ.setdefault("PORTCULLIS_RUN_AS_ROOT", "1")
_procs = []


def read(path, binary=False):
    """A whole file, closed again (text with undecodable bytes replaced)."""
    with open(path, "rb" if binary else "r", **({} if binary else {"errors": "replace"})) as f:
        return f.read()


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=10.0, host="127.0.0.1", proc=None):
    """Wait until something accepts on host:port; give up at once if proc has exited."""
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} before listening")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port}")


class _Closing:
    """with-statement support for every helper: close() on the way out."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class Proc:
    """A child process in its own process group."""

    def __init__(self, argv, log=None, **kw):
        self.logf = open(log, "ab") if log else subprocess.DEVNULL  # O_APPEND
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


class Sink(_Closing):
    """smtp-sink on a free port; fail = {"f": "MAIL"} etc. (smtp-sink options): f = 5xx at,
    r = 4xx at, q = drop at, Q = 421 and drop at, W = "command:delay", w = delay before DATA's
    354, A = 550 abort after DATA, t = command timeout."""

    def __init__(self, tmp, fail=None, lmtp=False, flags=()):
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
        argv += [f"-{f}" for f in flags]  # e.g. "N": no DSN, "C": no XCLIENT
        argv += [f"127.0.0.1:{self.port}", "100"]
        self.proc = Proc(argv, log=os.path.join(tmp, f"sink{self.port}.log"))
        wait_port(self.port)

    def messages(self):
        """Contents of every message smtp-sink accepted, oldest first."""
        # smtp-sink opens the dump file at MAIL and removes it again when the transaction is
        # abandoned (it may vanish while we look): only files still there and non-empty count.
        found = []
        for f in glob.glob(os.path.join(self.dir, "*")):
            try:
                with open(f, "rb") as fh:
                    data = fh.read()
                mtime = os.path.getmtime(f)
            except FileNotFoundError:
                continue
            if data:
                found.append((mtime, f, data))
        return [data for _, _, data in sorted(found)]

    def close(self):
        self.proc.stop()


_postfixes = []


@atexit.register
def _stop_postfixes():
    for p in list(_postfixes):
        p.close()


class Postfix(_Closing):
    """A real Postfix instance with its own configuration directory (needs root).

    XCLIENT and XFORWARD are authorised exactly as README tells a postmaster: for the
    gateway's own address only (127.0.0.1, the source of its connections to 127.0.0.1).
    Postfix's check_client_access refuses the client REFUSED (a real client address, as
    XCLIENT sets it) at RCPT with 554 5.7.1.
    """

    REFUSED = "127.0.0.66"

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
tlsmgr unix - - n 1000? 1 tlsmgr
"""

    # Where check_policy_service goes (policy= in __init__), as deploy/postfix/policy.cf says
    # (here after the access checks the tests use), with its timeout and default_action.
    POLICY_LISTS = {"rcpt": "smtpd_recipient_restrictions", "data": "smtpd_data_restrictions",
                    "eod": "smtpd_end_of_data_restrictions"}

    def __init__(self, tmp, tls=None, policy=None, policy_stages=("rcpt", "data", "eod"),
                 sasl=None, milter=None, main_extra=""):
        """tls="encrypt" (or "may"): smtpd_tls_security_level with a certificate for
        backend.test signed by a CA made for this instance (self.tls = make_certs(...)).
        policy: the port of a policy service to ask (check_policy_service) in the
        restriction lists of policy_stages ("rcpt", "data", "eod"). sasl: the port of a Dovecot
        auth service (DovecotAuth) for SMTP AUTH (smtpd_sasl_type = dovecot).
        milter: "inet:127.0.0.1:PORT" makes it call that milter before queueing, as
        deploy/postfix/milter.md tells a postmaster (milter_default_action = tempfail);
        main_extra: more main.cf lines."""
        self.port = free_port()
        self.dir = os.path.join(tmp, f"postfix{self.port}")
        self.conf = os.path.join(self.dir, "conf")
        self.maildir = os.path.join(self.dir, "mail")
        self.maillog = os.path.join(self.dir, "maillog")
        for d in ("conf", "queue", "data", "mail"):
            os.makedirs(os.path.join(self.dir, d))
        pf = pwd.getpwnam("postfix")
        nobody = pwd.getpwnam("nobody")
        service = (f"check_policy_service {{ inet:127.0.0.1:{policy}, timeout=10s, "
                   f"default_action=DEFER_IF_PERMIT }}") if policy else ""
        rcpt_policy = f", {service}" if policy and "rcpt" in policy_stages else ""
        other_lists = "".join(f"{self.POLICY_LISTS[st]} = {service}\n"
                              for st in policy_stages if policy and st != "rcpt")
        sasl_lines = ("smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\n"
                      f"smtpd_sasl_path = inet:127.0.0.1:{sasl}\n") if sasl else ""
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
smtpd_authorized_xclient_hosts = 127.0.0.1
smtpd_authorized_xforward_hosts = 127.0.0.1
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = check_client_access inline:{{{{ {self.REFUSED} = 554 5.7.1 Client host refused by the backend }}}}, check_recipient_access inline:{{{{ nosuchuser@example.com = 550 5.1.1 User unknown }}}}{rcpt_policy}
{other_lists}{sasl_lines}maillog_file_prefixes = {tmp}
maillog_file = {self.maillog}
"""
        self.tls = None
        if tls:
            self.tls = make_certs(os.path.join(self.dir, "tls"), "backend.test")
            main_cf += f"""smtpd_tls_security_level = {tls}
smtpd_tls_cert_file = {self.tls["cert"]}
smtpd_tls_key_file = {self.tls["key"]}
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
"""
        if milter:
            main_cf += f"smtpd_milters = {milter}\nmilter_default_action = tempfail\n"
        main_cf += main_extra
        self._start(main_cf)

    def _start(self, main_cf):
        """Write main.cf and master.cf, check them, start, and wait for the listener."""
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(main_cf)
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(self.MASTER.format(addr=f"127.0.0.1:{self.port}"))
        self._postfix("check")
        self._postfix("start")
        _postfixes.append(self)
        wait_port(self.port, timeout=20)

    def _postfix(self, what):
        r = subprocess.run(["postfix", "-c", self.conf, what], capture_output=True, text=True)
        if r.returncode != 0 and what != "stop":
            log = read(self.maillog) if os.path.exists(self.maillog) else ""
            raise RuntimeError(f"postfix {what} failed: {r.stdout}{r.stderr}{log[-2000:]}")

    def log(self):
        return read(self.maillog) if os.path.exists(self.maillog) else ""

    def delivered(self, timeout=10.0):
        """Messages in the Maildir, waiting until the queue manager is done."""
        end = time.time() + timeout
        while True:
            files = glob.glob(os.path.join(self.maildir, "inbox", "new", "*"))
            if files or time.time() > end:
                return [read(f, binary=True) for f in files]
            time.sleep(0.1)

    def master_pid(self):
        try:
            return int(read(os.path.join(self.dir, "queue", "pid", "master.pid")).split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def close(self):
        if self not in _postfixes:
            return
        _postfixes.remove(self)
        pid = self.master_pid()
        self._postfix("stop")
        # "postfix stop" only signals the master; wait until it and its children are gone so
        # that nothing outlives the test (and the temp dir can be removed).
        end = time.time() + 10
        while pid and time.time() < end:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def make_certs(d, name):
    """A CA and a server certificate for name (SAN DNS:name) signed by it, made with openssl at
    test time: {"ca": ca.pem, "cert": NAME.pem, "key": NAME.key} under d."""
    os.makedirs(d, exist_ok=True)
    ca, ca_key = os.path.join(d, "ca.pem"), os.path.join(d, "ca.key")
    cert, key, csr = (os.path.join(d, name + x) for x in (".pem", ".key", ".csr"))
    ext = os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write(f"subjectAltName = DNS:{name}\nbasicConstraints = CA:FALSE\n")
    for argv in (
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
             "-days", "2", "-subj", "/CN=portcullis test CA"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
             "-subj", f"/CN={name}"],
            ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", "2", "-extfile", ext]):
        subprocess.run(["openssl"] + argv, check=True, capture_output=True, timeout=60)
    return {"ca": ca, "cert": cert, "key": key}


class Gateway(_Closing):
    """portcullis running on a configuration the test writes."""

    def __init__(self, tmp, config, port=None, host="127.0.0.1"):
        self.port = port or free_port()
        self.tmp = tmp
        self.path = os.path.join(tmp, f"portcullis{self.port}.conf")
        self.logpath = os.path.join(tmp, f"portcullis{self.port}.log")
        with open(self.path, "w") as f:
            f.write(config.replace("@PORT@", str(self.port)).replace("@TMP@", tmp))
        self.proc = Proc([BIN, "-c", self.path], log=self.logpath, cwd=tmp)
        try:
            wait_port(self.port, host=host, proc=self.proc.p)
        except RuntimeError:
            self.proc.stop()
            log = self.log()
            if "not yet" in log:
                raise unittest.SkipTest("the gateway cannot serve yet (" + log.strip() + ")")
            raise RuntimeError("portcullis did not start:\n" + log)

    def log(self):
        return read(self.logpath)

    def alive(self):
        return self.proc.p.poll() is None

    def pid(self):
        return self.proc.p.pid

    SANITIZER = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

    def close(self):
        """Stop the gateway; a sanitizer report in its log (an ASan build) fails the test."""
        self.proc.stop()
        log = self.log() if os.path.exists(self.logpath) else ""
        hits = [m for m in self.SANITIZER if m in log]
        if hits and not getattr(self, "_reported", False):
            self._reported = True
            at = log.index(hits[0])
            raise AssertionError(f"sanitizer report in {self.logpath}:\n{log[max(0, at - 200):at + 3000]}")


def backend_conf(sink_port, identity="xclient", lmtp=False, extra_addresses=()):
    addrs = ", ".join(f'"{a}"' for a in list(extra_addresses) + [f"127.0.0.1:{sink_port}"])
    return (f'backend "mta" {{\n  address = {{ {addrs} }}\n  identity = "{identity}"\n'
            f'  lmtp = {"true" if lmtp else "false"}\n}}\n')


def backend_block(port, identity, tls=None, extra=""):
    """backend "mta" at 127.0.0.1:port with this identity, tls (when given) and extra lines."""
    tls_line = f'  tls = "{tls}"\n' if tls is not None else ""
    return (f'backend "mta" {{\n  address = {{ "127.0.0.1:{port}" }}\n  identity = "{identity}"\n'
            f'{tls_line}{extra}}}\n')


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


class FakeMTA(_Closing):
    """A scripted SMTP backend in this process that records exactly what it receives.

    replies maps a verb ("EHLO", "XCLIENT", "MAIL", "RCPT", "DATA", ".", ...) to what to do:
      "250 2.1.0 Ok"           reply this (multi-line: lines joined with "\r\n", "250-" style)
      "DROP"                   close the connection without replying
      ("DELAY", secs, reply)   wait, then reply (or "DROP")
      ("REPLY_DROP", reply)    reply, then close (e.g. a 220 to STARTTLS and no handshake)
    drop_in_data=N closes the connection after N bytes of message content.
    data_delay=secs waits that long after its 354 before it reads the content, with a small
    receive buffer (a slow reader: the sender's socket buffer fills).
    With "CHUNKING" in ext it takes BDAT chunks too (replies["BDAT"] answers a chunk that is not
    the last; replies["."] answers LAST); sessions[i]["data"] then holds the chunks joined.
    Per connection, sessions[i] = {"commands": [lines], "data": [raw content], "raw": bytes}.
    accepted holds the raw content (up to and including CRLF.CRLF) of every message that got a
    2xx to its final dot; those are the messages the backend "queued".
    """

    EXT = ("PIPELINING", "SIZE 50000000", "8BITMIME", "ENHANCEDSTATUSCODES", "DSN", "SMTPUTF8",
           "XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT",
           "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE")

    def __init__(self, replies=None, ext=EXT, drop_in_data=None, greeting="220 fake.test ESMTP",
                 data_delay=0):
        self.replies = dict(replies or {})
        self.data_delay = data_delay
        self.ext = ext
        self.drop_in_data = drop_in_data
        self.greeting = greeting
        self.sessions = []
        self.accepted = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if data_delay:  # a small receive window, inherited by accepted connections
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.closing = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _answer(self, conn, verb, default):
        what = self.replies.get(verb, default)
        if isinstance(what, tuple) and what[0] == "DELAY":
            time.sleep(what[1])
            what = what[2]
        if isinstance(what, tuple) and what[0] == "REPLY_DROP":
            conn.sendall(what[1].encode() + b"\r\n")
            conn.close()
            return False
        if what == "DROP":
            conn.close()
            return False
        conn.sendall(what.encode() + b"\r\n")
        return not what.startswith("421")

    def _serve(self, conn):
        sess = {"commands": [], "data": [], "raw": b""}
        with self.lock:
            self.sessions.append(sess)
        buf = b""
        conn.settimeout(30)

        def fill():
            nonlocal buf
            chunk = conn.recv(65536)
            if not chunk:
                raise EOFError
            sess["raw"] += chunk
            buf += chunk

        def set_buf(rest):
            nonlocal buf
            buf = rest

        try:
            if not self._answer(conn, "CONNECT", self.greeting):
                return
            while True:
                while b"\r\n" not in buf:
                    fill()
                line, buf = buf.split(b"\r\n", 1)
                text = line.decode(errors="replace")
                sess["commands"].append(text)
                verb = text.split(" ", 1)[0].upper()
                if verb in ("EHLO", "LHLO"):
                    lines = ["fake.test"] + list(self.ext)
                    default = "\r\n".join(f"250{'-' if i < len(lines) - 1 else ' '}{x}"
                                          for i, x in enumerate(lines))
                elif verb == "XCLIENT":
                    default = self.greeting
                elif verb == "MAIL":
                    default = "250 2.1.0 Ok"
                elif verb == "RCPT":
                    default = "250 2.1.5 Ok"
                elif verb == "DATA":
                    default = "354 End data with <CR><LF>.<CR><LF>"
                elif verb == "QUIT":
                    default = "221 2.0.0 Bye"
                elif verb == "BDAT":
                    if not self._bdat(conn, sess, text, fill, lambda: buf, set_buf):
                        return
                    continue
                else:
                    default = "250 2.0.0 Ok"
                if not self._answer(conn, verb, default) or verb == "QUIT":
                    return
                if verb != "DATA" or not self.replies.get("DATA", "354").startswith("354"):
                    continue
                # Message content: up to the first CRLF.CRLF (the DATA line's own CRLF counts
                # as the first CRLF, so an empty message is just ".\r\n").
                time.sleep(self.data_delay)
                content = bytearray()
                while True:
                    if (self.drop_in_data is not None
                            and len(content) + len(buf) >= self.drop_in_data):
                        sess["data"].append(bytes(content) + buf)
                        conn.close()
                        return
                    # Only the new bytes and the 4 before them can hold the marker (linear
                    # time for a large message).
                    seen = max(len(content) - 4, 0)
                    content += buf
                    if seen:
                        end = content.find(b"\r\n.\r\n", seen)
                        take = end + 5
                    else:
                        end = (b"\r\n" + content).find(b"\r\n.\r\n")
                        take = end + 5 - 2
                    if end >= 0:
                        content, buf = bytes(content[:take]), bytes(content[take:])
                        break
                    buf = b""
                    fill()
                sess["data"].append(content)
                what = self.replies.get(".", "250 2.0.0 Ok: queued as FAKE%d")
                final = what[2] if isinstance(what, tuple) else what
                with self.lock:
                    if final.startswith("2"):
                        self.accepted.append(content)
                    final = final.replace("%d", str(len(self.accepted)))
                if not self._answer(conn, ".", what[:2] + (final,) if isinstance(what, tuple)
                                    else final):
                    return
        except (EOFError, OSError):
            pass
        finally:
            conn.close()

    def _bdat(self, conn, sess, text, fill, get_buf, set_buf):
        """BDAT n [LAST] (offered when ext has CHUNKING): read exactly n octets, then answer
        replies["BDAT"] (a chunk) or replies["."] (LAST; a 2xx makes the chunks a message)."""
        parts = text.split()
        n, last = int(parts[1]), len(parts) > 2
        while len(get_buf()) < n:
            fill()
        chunk = get_buf()[:n]
        set_buf(get_buf()[n:])
        sess.setdefault("chunks", []).append(chunk)
        if not last:
            return self._answer(conn, "BDAT", f"250 2.0.0 Ok: {n} octets")
        content = b"".join(sess.pop("chunks"))
        sess["data"].append(content)
        final = self.replies.get(".", "250 2.0.0 Ok: queued as FAKE%d")
        with self.lock:
            if final.startswith("2"):
                self.accepted.append(content)
            final = final.replace("%d", str(len(self.accepted)))
        return conn.sendall(final.encode() + b"\r\n") or True

    def hang_up_all(self, reply=None):
        """Close every open connection (optionally saying reply first), as an MTA does to
        idle clients; the listener stays."""
        with self.lock:
            for c in self.conns:
                try:
                    if reply:
                        c.sendall(reply.encode() + b"\r\n")
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def commands(self):
        """Every command line received, over all connections, in order of connection."""
        with self.lock:
            return [c for s in self.sessions for c in s["commands"]]

    def close(self):
        self.closing = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()


class Listener(_Closing):
    """A TCP listener on a free port of 127.0.0.1 for a hand-written peer: every connection, with
    its number (1, 2, ...), goes to session(conn, n) in a thread of its own. A subclass sets what
    session() needs before it calls Listener.__init__ (which starts accepting)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        n = 0
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            n += 1
            threading.Thread(target=self.session, args=(c, n), daemon=True).start()

    def session(self, conn, n):
        raise NotImplementedError

    def close(self):
        self.sock.close()


class Chat(_Closing):
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
                chunk = self._recv()
                if chunk is None:
                    return (-1, "timeout")
                if not chunk:
                    return (0, "\n".join(lines))
                self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
            line = line.rstrip(b"\r").decode(errors="replace")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return (int(line[:3]) if line[:3].isdigit() else -2, "\n".join(lines))

    def _recv(self):
        """The next bytes from the server; b"" at EOF, None on a timeout."""
        try:
            return self.s.recv(65536)
        except socket.timeout:
            return None
        except ConnectionResetError:
            return b""  # closed while our unread data was in flight: EOF

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def closed(self, timeout=3.0):
        """True when the server has closed the connection."""
        self.s.settimeout(timeout)
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True  # closed with our unread bytes still in its buffer: a reset
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


class PolicyClient(_Closing):
    """A raw Postfix policy delegation client (SMTPD_POLICY_README): attribute blocks out,
    "action=..." blocks in."""

    BASE = {"request": "smtpd_access_policy", "protocol_name": "ESMTP",
            "client_address": "192.0.2.1", "client_name": "unknown",
            "reverse_client_name": "unknown", "helo_name": "client.test",
            "sender": "a@sender.test", "recipient": "", "instance": "",
            "sasl_username": "", "size": "0"}

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    @classmethod
    def block(cls, **attrs):
        a = dict(cls.BASE, **attrs)
        return "".join(f"{k}={v}\n" for k, v in a.items() if v is not None).encode() + b"\n"

    def send(self, data):
        self.sock.sendall(data)

    def answer(self):
        """The next reply's action, or None when the server closed."""
        while b"\n\n" not in self.buf:
            try:
                d = self.sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                d = b""
            if not d:
                return None
            self.buf += d
        block, self.buf = self.buf.split(b"\n\n", 1)
        lines = block.decode().split("\n")
        assert len(lines) == 1 and lines[0].startswith("action="), block
        return lines[0][len("action="):]

    def ask(self, **attrs):
        self.send(self.block(**attrs))
        return self.answer()

    def close(self):
        self.sock.close()


def tempdir():
    d = tempfile.mkdtemp(prefix="pc-e2e-")
    os.chmod(d, 0o755)
    return d


def rmtree(d):
    shutil.rmtree(d, ignore_errors=True)


def wait_message(messages, needle, timeout, pause=0.0):
    """The first of messages() that contains needle (bytes), asked again until timeout seconds
    have passed (pause seconds between rounds); None if none did."""
    end = time.time() + timeout
    while time.time() < end:
        for m in messages():
            if needle in m:
                return m
        time.sleep(pause)
    return None


class PeersCase(unittest.TestCase):
    """A test class whose peers (Postfix, Exim, smtp-sink, a gateway, ...) live as long as the
    class, in one temporary directory cls.tmp. A subclass starts them in start_peers() and hands
    each to cls.keep(); they are closed in reverse order (the gateway before its backend), then
    the directory is removed, also when start_peers() fails halfway. The first error a close()
    raises (a sanitizer report in the gateway's log) is raised again once all are closed."""

    @classmethod
    def start_peers(cls):
        pass

    @classmethod
    def keep(cls, peer):
        cls._peers.append(peer)
        return peer

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempdir()
        cls._peers = []
        try:
            cls.start_peers()
        except BaseException:
            cls._close_peers()  # the start's own error (or SkipTest) is the one that counts
            raise

    @classmethod
    def _close_peers(cls):
        """Close every peer kept, newest first, and remove cls.tmp; the first error, if any."""
        first = None
        while cls._peers:
            try:
                cls._peers.pop().close()
            except Exception as e:  # noqa: BLE001 - close all, report the first
                first = first or e
        rmtree(cls.tmp)
        return first

    @classmethod
    def tearDownClass(cls):
        first = cls._close_peers()
        if first is not None:
            raise first


def s_client_smtp(port, *opts, timeout=20):
    """openssl s_client -starttls smtp to 127.0.0.1:port with opts; it says EHLO client.test and
    QUIT inside TLS. Returns its standard output."""
    argv = ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{port}", *opts,
            "-ign_eof"]
    r = subprocess.run(argv, input="EHLO client.test\r\nQUIT\r\n", capture_output=True,
                       text=True, timeout=timeout)
    return r.stdout


class PostfixSender(Postfix):
    """A real Postfix as the *sending* MTA: mail submitted to its port (from loopback) goes to
    relayhost [127.0.0.1]:relay_port from the source address bind, with backoff times short
    enough that a deferred message is retried within a test (PEERS.md)."""

    def __init__(self, tmp, relay_port, bind="127.0.0.1"):
        self.port = free_port()
        self.dir = os.path.join(tmp, f"postfix{self.port}")
        self.conf = os.path.join(self.dir, "conf")
        self.maildir = os.path.join(self.dir, "mail")
        self.maillog = os.path.join(self.dir, "maillog")
        for d in ("conf", "queue", "data", "mail"):
            os.makedirs(os.path.join(self.dir, d))
        pf = pwd.getpwnam("postfix")
        os.chown(os.path.join(self.dir, "data"), pf.pw_uid, pf.pw_gid)
        main_cf = f"""\
compatibility_level = 3.6
queue_directory = {self.dir}/queue
data_directory = {self.dir}/data
mail_owner = postfix
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = sender.test
mydestination =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{relay_port}
smtp_bind_address = {bind}
minimal_backoff_time = 1s
maximal_backoff_time = 2s
queue_run_delay = 1s
maillog_file_prefixes = {tmp}
maillog_file = {self.maillog}
"""
        self._start(main_cf)

    def flush(self):
        """Ask the queue manager to retry deferred mail now (postqueue -f)."""
        subprocess.run(["postqueue", "-c", self.conf, "-f"], capture_output=True)

    # (helper "client") submit and look at the queue, for the LMTP tests in test_client.py
    def send(self, mail_from, rcpts, msg):
        """Submit one message by SMTP (smtplib) to this Postfix."""
        import smtplib
        with smtplib.SMTP("127.0.0.1", self.port, timeout=20) as s:
            s.ehlo("submitter.test")
            return s.sendmail(mail_from, rcpts, msg)

    def queue(self):
        """postqueue -p, or "" when the queue is empty."""
        r = subprocess.run(["postqueue", "-c", self.conf, "-p"], capture_output=True,
                           text=True, timeout=30)
        return r.stdout.strip() if "Mail queue is empty" not in r.stdout else ""


class HAProxy(_Closing):
    """A real HAProxy in TCP mode in front of a port, sending the PROXY protocol header
    (send="send-proxy" for v1, "send-proxy-v2" for v2), as PEERS.md describes. It listens on
    127.0.0.1 and [::1] (the same port)."""

    def __init__(self, tmp, target_port, send="send-proxy", tls_pem=None):
        """tls_pem: certificate and key in one file; the frontend then terminates TLS (implicit
        TLS, like port 465) and v2 passes what it negotiated in the SSL TLV."""
        self.port = free_port()
        ssl = f" ssl crt {tls_pem}" if tls_pem else ""
        self.path = os.path.join(tmp, f"haproxy{self.port}.cfg")
        self.logpath = os.path.join(tmp, f"haproxy{self.port}.log")
        with open(self.path, "w") as f:
            f.write(f"""global
    maxconn 200
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:{self.port}{ssl}
    bind [::1]:{self.port}{ssl}
    default_backend be
backend be
    server gw 127.0.0.1:{target_port} {send}
""")
        self.proc = Proc(["haproxy", "-f", self.path, "-db"], log=self.logpath)
        wait_port(self.port, proc=self.proc.p)

    def log(self):
        return read(self.logpath)

    def close(self):
        self.proc.stop()


# --- Exim 4.96 (helper "client"): a sending MTA with its own queue, and a backend ----------

EXIM_CACHE = os.environ.get("PC_EXIM_CACHE", "/var/cache/portcullis/exim")
EXIM_PACKAGES = ("exim4-daemon-light", "exim4-base")
# Debian's light build has no PROXY protocol (hosts_proxy); the heavy one does.
EXIM_HEAVY_CACHE = os.environ.get("PC_EXIM_HEAVY_CACHE", "/var/cache/portcullis/exim-heavy")


def exim_binary(cache=EXIM_CACHE, packages=EXIM_PACKAGES):
    """The exim4 binary unpacked from the Debian packages (exim4 conflicts with postfix as an
    installed package, so it is never installed): EXIM_CACHE/root/usr/sbin/exim4. Downloaded
    and unpacked on first use when we are root (deploy/install-deps.sh does the same); the
    Debian-exim user it is built for is created if missing. None when it cannot run here."""
    root = os.path.join(cache, "root")
    exe = os.path.join(root, "usr", "sbin", "exim4")
    if not os.path.exists(exe) and os.geteuid() == 0:
        try:
            os.makedirs(cache, exist_ok=True)
            subprocess.run(["apt-get", "download", *packages], cwd=cache,
                           capture_output=True, timeout=300)
            for deb in glob.glob(os.path.join(cache, "exim4-*.deb")):
                subprocess.run(["dpkg-deb", "-x", deb, root], capture_output=True, timeout=120)
        except (OSError, subprocess.SubprocessError):
            return None
    if not os.path.exists(exe):
        return None
    try:
        pwd.getpwnam("Debian-exim")
    except KeyError:
        if os.geteuid() != 0:
            return None
        subprocess.run(["useradd", "-r", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin",
                        "-U", "Debian-exim"], capture_output=True)
    try:
        ok = subprocess.run([exe, "-C", "/dev/null", "-bV"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return exe if ok else None


class EximInstance(_Closing):
    """A private Exim 4.96 daemon on a loopback port, in its own scratch directory.

    relay_port=P: a *sending* MTA. It takes mail for any domain from 127.0.0.1 (send() submits
      with smtplib) into its own queue and delivers it by SMTP to 127.0.0.1:P (the gateway),
      retrying deferred messages every retry_every seconds; queue() lists what is still queued.
    relay_port=None: a *backend* configured as deploy/exim/README says (the gateway's address
      only, recipients verified): example.com users `users` are delivered into Maildirs under
      DIR/mail/USER/, anyone else is refused at RCPT. messages(user) reads them back.
    log() is Exim's mainlog (<= delivered, => sent, == deferred, ** bounced).
    Runs as `exim4 -C CONF -bdf -oP PIDFILE`; stopped by its pid.
    """

    def __init__(self, tmp, relay_port=None, users=("u", "v", "w"), retry_every=1,
                 name="exim", hosts_proxy=None):
        """hosts_proxy="127.0.0.1": a backend that takes the client's identity from a PROXY
        protocol header (deploy/exim/README); runs Debian's heavy build, which has it."""
        if hosts_proxy:
            self.exe = exim_binary(EXIM_HEAVY_CACHE, ("exim4-daemon-heavy",))
        else:
            self.exe = exim_binary()
        if self.exe is None:
            raise unittest.SkipTest("Exim 4.96 is not available (deploy/install-deps.sh "
                                    "downloads exim4-daemon-light into " + EXIM_CACHE +
                                    " and exim4-daemon-heavy into " + EXIM_HEAVY_CACHE + ")")
        self.dir = os.path.join(tmp, f"{name}{free_port()}")
        self.port = free_port()
        ent = pwd.getpwnam("Debian-exim")
        for sub in ("", "spool", "log", "mail"):
            d = os.path.join(self.dir, sub)
            os.makedirs(d, exist_ok=True)
            os.chown(d, ent.pw_uid, ent.pw_gid)
            os.chmod(d, 0o755)
        self.conf = os.path.join(self.dir, "exim.conf")
        self.pidfile = os.path.join(self.dir, "exim.pid")
        main = f"""keep_environment =
exim_path = {self.exe}
spool_directory = {self.dir}/spool
log_file_path = {self.dir}/log/%slog
local_interfaces = <; 127.0.0.1.{self.port}
primary_hostname = {name}.test
qualify_domain = {name}.test
host_lookup =
rfc1413_hosts =
never_users =
exim_user = Debian-exim
exim_group = Debian-exim
trusted_users = root
smtp_banner = $smtp_active_hostname ESMTP Exim $version_number $tod_full
tls_advertise_hosts =
"""
        if hosts_proxy:
            main += f"hosts_proxy = {hosts_proxy}\n"
        if relay_port:
            conf = main + f"""domainlist local_domains =
acl_smtp_rcpt = acl_check_rcpt
begin acl
acl_check_rcpt:
  accept hosts = 127.0.0.1
  deny message = relay not permitted
begin routers
to_gateway:
  driver = manualroute
  route_list = * 127.0.0.1
  transport = to_gateway
  self = send
  no_more
begin transports
to_gateway:
  driver = smtp
  port = {relay_port}
  allow_localhost
  hosts_avoid_tls = *
begin retry
* * F,10m,{retry_every}s
"""
        else:
            # Behind a PROXY header the client is the real one: only a proxied session (which
            # hosts_proxy allows from the gateway alone) came through the gateway.
            via_gateway = ("condition = ${if bool{$proxy_session}}" if hosts_proxy
                           else "hosts = +gateway")
            conf = main + f"""domainlist local_domains = example.com
hostlist gateway = 127.0.0.1
acl_smtp_rcpt = acl_check_rcpt
begin acl
acl_check_rcpt:
  warn logwrite = rcpt check: client [$sender_host_address]:$sender_host_port proxy_session=$proxy_session proxy [$proxy_external_address]:$proxy_external_port local [$proxy_local_address]:$proxy_local_port
  accept {via_gateway}
         domains = +local_domains
         verify = recipient
  deny message = relay not permitted
begin routers
maildir_users:
  driver = accept
  domains = +local_domains
  local_parts = {" : ".join(users)}
  transport = maildir
begin transports
maildir:
  driver = appendfile
  directory = {self.dir}/mail/$local_part_data
  maildir_format
  create_directory
  delivery_date_add
  envelope_to_add
  return_path_add
  user = Debian-exim
  group = Debian-exim
  mode = 0644
begin retry
* * F,10m,{retry_every}s
"""
        with open(self.conf, "w") as f:
            f.write(conf)
        os.chmod(self.conf, 0o644)
        self.proc = Proc([self.exe, "-C", self.conf, "-bdf", "-oP", self.pidfile] +
                         ([f"-q{retry_every}s"] if relay_port else []),
                         log=os.path.join(self.dir, "stderr.log"))
        try:
            wait_port(self.port, proc=self.proc.p)
        except RuntimeError:
            self.proc.stop()
            raise RuntimeError("exim did not start:\n" + self.log() +
                               read(os.path.join(self.dir, "stderr.log")))

    def send(self, mail_from, rcpts, msg):
        """Submit one message by SMTP; returns Exim's final reply."""
        import smtplib
        with smtplib.SMTP("127.0.0.1", self.port, timeout=20) as s:
            s.ehlo("submitter.test")
            return s.sendmail(mail_from, rcpts, msg)

    def log(self):
        p = os.path.join(self.dir, "log", "mainlog")
        return read(p) if os.path.exists(p) else ""

    def queue(self):
        """Exim's queue listing (empty when every message is delivered or bounced)."""
        r = subprocess.run([self.exe, "-C", self.conf, "-bp"], capture_output=True, text=True,
                           timeout=30)
        return r.stdout.strip()

    def messages(self, user):
        """The messages delivered into USER's Maildir (backend mode), as bytes."""
        out = []
        for sub in ("new", "cur"):
            for p in sorted(glob.glob(os.path.join(self.dir, "mail", user, sub, "*"))):
                out.append(read(p, binary=True))
        return out

    def close(self):
        if getattr(self, "proc", None):
            self.proc.stop()
            self.proc = None


# --- Dovecot LMTP (helper "client"): a backend that answers per recipient --------------------

class DovecotAuth(_Closing):
    """A private Dovecot 2.3 running only its auth service, on a loopback port, for Postfix's
    SMTP AUTH (smtpd_sasl_type = dovecot, smtpd_sasl_path = inet:127.0.0.1:PORT). users: name
    -> password (PLAIN and LOGIN mechanisms)."""

    def __init__(self, tmp, users=None):
        if shutil.which("dovecot") is None:
            raise unittest.SkipTest("dovecot-core is not installed")
        users = users or {"alice": "secret", "bob": "secret"}
        self.port = free_port()
        self.dir = os.path.join(tmp, f"dovecot-auth{self.port}")
        for sub in ("", "run", "state"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        with open(os.path.join(self.dir, "users"), "w") as f:
            f.write("".join(f"{u}:{{PLAIN}}{pw}::::::\n" for u, pw in users.items()))
        self.conf = os.path.join(self.dir, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write(f"""base_dir = {self.dir}/run
state_dir = {self.dir}/state
instance_name = pcauth{self.port}
log_path = {self.dir}/dovecot.log
protocols = none
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = {self.dir}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  inet_listener {{
    address = 127.0.0.1
    port = {self.port}
  }}
}}
service anvil {{
  chroot =
}}
""")
        self.proc = Proc(["dovecot", "-F", "-c", self.conf],
                         log=os.path.join(self.dir, "stderr.log"))
        try:
            wait_port(self.port, proc=self.proc.p)
        except RuntimeError:
            self.proc.stop()
            raise RuntimeError("dovecot did not start:\n" + self.log() +
                               read(os.path.join(self.dir, "stderr.log")))

    def log(self):
        p = os.path.join(self.dir, "dovecot.log")
        return read(p) if os.path.exists(p) else ""

    def close(self):
        if getattr(self, "proc", None):
            self.proc.stop()
            self.proc = None


class DovecotLMTP(_Closing):
    """A private Dovecot 2.3 LMTP server on a loopback port (`dovecot -F -c CONF`).

    users: local parts delivered into Maildirs under DIR/mail/USER (as the `mail` user).
    over_quota: users with quota_rule = *:storage=1k (any real message is refused after the
      data with 552 5.2.2, a permanent per-recipient failure).
    broken: users whose mailbox is a regular file (a temporary per-recipient failure).
    Anyone else is refused at RCPT (550 5.1.1). messages(user) reads a Maildir back; log()
    is Dovecot's log.
    """

    def __init__(self, tmp, users=("u", "v"), over_quota=("over",), broken=("broken",)):
        if shutil.which("dovecot") is None or not os.path.exists("/usr/lib/dovecot/lmtp"):
            raise unittest.SkipTest("dovecot-core and dovecot-lmtpd are not installed")
        self.dir = os.path.join(tmp, f"dovecot{free_port()}")
        self.port = free_port()
        mail = pwd.getpwnam("mail")
        for sub in ("", "run", "state", "mail"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        os.chown(os.path.join(self.dir, "mail"), mail.pw_uid, mail.pw_gid)
        lines = []
        for u in users:
            lines.append(f"{u}::{mail.pw_uid}:{mail.pw_gid}::{self.dir}/mail/{u}::")
        for u in over_quota:
            lines.append(f"{u}::{mail.pw_uid}:{mail.pw_gid}::{self.dir}/mail/{u}::"
                         "userdb_quota_rule=*:storage=1k")
        for u in broken:
            bad = os.path.join(self.dir, "mail", u)
            with open(bad, "w") as f:
                f.write("not a directory\n")
            lines.append(f"{u}::{mail.pw_uid}:{mail.pw_gid}::{bad}::"
                         f"userdb_mail=maildir:{bad}/Maildir")
        with open(os.path.join(self.dir, "users"), "w") as f:
            f.write("\n".join(lines) + "\n")
        self.conf = os.path.join(self.dir, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write(f"""base_dir = {self.dir}/run
state_dir = {self.dir}/state
instance_name = pc{self.port}
log_path = {self.dir}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_plugins = quota
lmtp_rcpt_check_quota = no
passdb {{
  driver = passwd-file
  args = username_format=%n {self.dir}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {self.dir}/users
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.port}
  }}
}}
service anvil {{
  chroot =
}}
plugin {{
  quota = maildir:User quota
}}
""")
        self.proc = Proc(["dovecot", "-F", "-c", self.conf],
                         log=os.path.join(self.dir, "stderr.log"))
        try:
            wait_port(self.port, proc=self.proc.p)
        except RuntimeError:
            self.proc.stop()
            raise RuntimeError("dovecot did not start:\n" + self.log() +
                               read(os.path.join(self.dir, "stderr.log")))

    def log(self):
        p = os.path.join(self.dir, "dovecot.log")
        return read(p) if os.path.exists(p) else ""

    def messages(self, user):
        out = []
        for sub in ("new", "cur"):
            for p in sorted(glob.glob(os.path.join(self.dir, "mail", user, "Maildir", sub, "*"))):
                out.append(read(p, binary=True))
        return out

    def close(self):
        if getattr(self, "proc", None):
            self.proc.stop()
            self.proc = None
