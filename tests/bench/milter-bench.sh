#!/bin/sh
# SPDX-License-Identifier: MIT
# milter-bench.sh - a real Postfix with portcullis as its milter, against the same Postfix
# without a milter and with OpenDKIM's milter in our place, in one run.
#   tests/bench/milter-bench.sh [build/portcullis]
#
#   bare      smtp-source -> Postfix smtpd (no milter) -> queue -> discard
#   portcullis  the same smtpd with smtpd_milters = portcullis (dkim signing with RSA-2048,
#             the shipped rules, authres: more work than OpenDKIM's)
#   opendkim  the same smtpd with smtpd_milters = opendkim (signing with RSA-2048, Mode sv)
#   door      the same smtpd with portcullis running only authres: the cost of the milter door
#             itself (libmilter's threads, the bridge to the event loop, the header edits)
#   null      the same smtpd with tests/bench/null_milter.c (libmilter, every step continues on
#             its own thread): libmilter's own share of the door's cost
#   at 5 KB and 100 KB, 20 sessions; msgs/s of each, the ratio to bare, and the CPU seconds per
#   message of each milter process (utime+stime from /proc/PID/stat, all its threads).
# Needs root, postfix and opendkim (the package; its daemon is run privately on loopback).
bin=$(readlink -f "${1:-build/portcullis}")
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ "$(id -u)" -ne 0 ] || ! command -v postfix > /dev/null || ! command -v opendkim > /dev/null; then
    echo "milter-bench: needs root, postfix and opendkim, skipped"; exit 0
fi
export PORTCULLIS_RUN_AS_ROOT=1  # benchmarks run as root without "user" on purpose
exec python3 - "$bin" "$root" <<'PY'
import os, pwd, shutil, socket, subprocess, sys, tempfile, time

BIN, ROOT = sys.argv[1], sys.argv[2]
ROUNDS = int(os.environ.get("ROUNDS", "2"))
MSGS = int(os.environ.get("MSGS", "1500"))
TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TCK


# Not under /tmp: OpenDKIM refuses files on a path others can write to.
os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
tmp = tempfile.mkdtemp(prefix="milterbench-", dir=os.path.join(ROOT, "build"))
os.chmod(tmp, 0o755)
procs, pfdir = [], os.path.join(tmp, "postfix")


def cleanup():
    for p in procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    subprocess.run(["postfix", "-c", pfdir + "/conf", "stop"], capture_output=True)
    time.sleep(0.5)
    if os.environ.get("KEEP"):
        print("kept", tmp)
        return
    shutil.rmtree(tmp, ignore_errors=True)


try:
    # One RSA-2048 key for both signers, readable by OpenDKIM's own user.
    key = os.path.join(tmp, "k.pem")
    subprocess.run(["openssl", "genrsa", "-out", key, "2048"], check=True, capture_output=True)
    od = pwd.getpwnam("opendkim")
    os.chown(key, od.pw_uid, od.pw_gid)
    os.chmod(key, 0o600)
    ours, odk = free_port(), free_port()
    with open(os.path.join(tmp, "pc.conf"), "w") as f:
        f.write(f"""hostname = "bench.test"
log = "stderr"
listener "milter" {{
    address = "inet:127.0.0.1:{ours}"
    protocol = "milter"
    filters = {{ "dkim", "rules", "authres" }}
}}
rules {{ files = {{ "{ROOT}/rules/default.rules", "{ROOT}/rules/gtube.rules", "{ROOT}/rules/spam-phrases.rules" }} }}
dkim {{
    key_table = {{ "k example.org:s1:{key}" }}
    signing_table = {{ "*@example.org k" }}
}}
""")
    gw = subprocess.Popen([BIN, "-c", os.path.join(tmp, "pc.conf")], cwd=tmp,
                          stdout=open(os.path.join(tmp, "gw.log"), "w"), stderr=subprocess.STDOUT)
    procs.append(gw)
    light = free_port()
    with open(os.path.join(tmp, "door.conf"), "w") as f:
        f.write(f"""hostname = "bench.test"
log = "stderr"
listener "milter" {{
    address = "inet:127.0.0.1:{light}"
    protocol = "milter"
    filters = {{ "authres" }}
}}
""")
    door = subprocess.Popen([BIN, "-c", os.path.join(tmp, "door.conf")], cwd=tmp,
                            stdout=open(os.path.join(tmp, "door.log"), "w"),
                            stderr=subprocess.STDOUT)
    procs.append(door)
    nullbin, null = os.path.join(tmp, "null_milter"), free_port()
    subprocess.run(["cc", "-O2", "-o", nullbin, os.path.join(ROOT, "tests/bench/null_milter.c"),
                    "-lmilter", "-lpthread"], check=True)
    nm = subprocess.Popen([nullbin, f"inet:{null}@127.0.0.1"])
    procs.append(nm)
    with open(os.path.join(tmp, "opendkim.conf"), "w") as f:
        f.write(f"""Syslog no
Mode sv
Socket inet:{odk}@127.0.0.1
Domain example.org
Selector s1
KeyFile {key}
InternalHosts 127.0.0.1
UserID opendkim
PidFile {tmp}/opendkim.pid
""")
    dk = subprocess.Popen(["opendkim", "-f", "-x", os.path.join(tmp, "opendkim.conf")],
                          stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "od.log"), "w"))
    procs.append(dk)
    wait_port(ours)
    wait_port(odk)

    wait_port(light)
    wait_port(null)
    ports = {"bare": free_port(), "portcullis": free_port(), "opendkim": free_port(),
             "door": free_port(), "null": free_port()}
    for d in ("conf", "queue", "data"):
        os.makedirs(os.path.join(pfdir, d))
    pf = pwd.getpwnam("postfix")
    os.chown(os.path.join(pfdir, "data"), pf.pw_uid, pf.pw_gid)
    with open(os.path.join(pfdir, "conf", "main.cf"), "w") as f:
        f.write(f"""compatibility_level = 3.6
queue_directory = {pfdir}/queue
data_directory = {pfdir}/data
mail_owner = postfix
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mta.test
mydestination =
default_transport = discard
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_peername_lookup = no
milter_default_action = tempfail
maillog_file = {pfdir}/maillog
maillog_file_prefixes = {tmp}
message_size_limit = 20480000
""")
    with open(os.path.join(pfdir, "conf", "master.cf"), "w") as f:
        f.write(f"""127.0.0.1:{ports['bare']} inet n - n - 40 smtpd
127.0.0.1:{ports['portcullis']} inet n - n - 40 smtpd
    -o smtpd_milters=inet:127.0.0.1:{ours}
127.0.0.1:{ports['opendkim']} inet n - n - 40 smtpd
    -o smtpd_milters=inet:127.0.0.1:{odk}
127.0.0.1:{ports['door']} inet n - n - 40 smtpd
    -o smtpd_milters=inet:127.0.0.1:{light}
127.0.0.1:{ports['null']} inet n - n - 40 smtpd
    -o smtpd_milters=inet:127.0.0.1:{null}
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
proxymap unix - - n - - proxymap
error unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
""")
    r = subprocess.run(["postfix", "-c", pfdir + "/conf", "start"], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError("postfix: " + r.stdout + r.stderr)
    for p in ports.values():
        wait_port(p)

    def run(port, n, size):
        t0 = time.time()
        subprocess.run(["smtp-source", "-s", "20", "-m", str(n), "-l", str(size),
                        "-f", "bench@example.org", "-t", "rcpt@example.com", f"127.0.0.1:{port}"],
                       check=True)
        return time.time() - t0

    pid = {"portcullis": gw.pid, "opendkim": dk.pid, "door": door.pid, "null": nm.pid}
    print(f"milter bench: {os.cpu_count()} cores, best of {ROUNDS} alternating runs, "
          f"{MSGS} messages, 20 sessions")
    for size, n in ((5120, MSGS), (102400, MSGS // 3)):
        best, us = {}, {}
        for _ in range(ROUNDS):
            for name, port in ports.items():
                c0 = cpu(pid[name]) if name in pid else 0
                t = run(port, n, size)
                if name in pid:
                    us[name] = min(us.get(name, 1e9), (cpu(pid[name]) - c0) * 1e6 / n)
                best[name] = min(best.get(name, 1e9), t)
        rate = {k: n / v for k, v in best.items()}
        print(f"{size // 1024:4d}KB: Postfix alone {rate['bare']:6.0f} msgs/s; "
              f"with portcullis {rate['portcullis']:6.0f} ({rate['portcullis'] / rate['bare']:.2f}x); "
              f"with OpenDKIM {rate['opendkim']:6.0f} ({rate['opendkim'] / rate['bare']:.2f}x); "
              f"milter CPU per message: portcullis {us['portcullis']:.0f} us, "
              f"OpenDKIM {us['opendkim']:.0f} us")
        print(f"{size // 1024:4d}KB: the door alone (authres only) {rate['door']:6.0f} msgs/s "
              f"({rate['door'] / rate['bare']:.2f}x), {us['door']:.0f} us CPU per message; "
              f"libmilter doing nothing {rate['null']:6.0f} msgs/s ({rate['null'] / rate['bare']:.2f}x), "
              f"{us['null']:.0f} us CPU per message")
    log = open(os.path.join(pfdir, "maillog")).read().splitlines()
    bad = [l for l in log if "milter" in l and ("warning" in l or "reject" in l)]
    if bad:
        print(f"milter-bench: Postfix logged {len(bad)} milter warnings or refusals, e.g. {bad[0]}")
finally:
    cleanup()
PY
