#!/bin/sh
# SPDX-License-Identifier: MIT
# proxy-bench.sh - portcullis against Postfix's own before-queue proxy, in the same run.
#   tests/bench/proxy-bench.sh [build/portcullis]
#
#   anchor   smtp-source -> Postfix smtpd with smtpd_proxy_filter -> smtp-sink: Postfix's
#            before-queue proxy, which inspects no content (postconf(5) smtpd_proxy_filter)
#   relay    smtp-source -> portcullis (relay filter) -> smtp-sink
#   rules    smtp-source -> portcullis (relay + the shipped rules, deploy/rules) -> smtp-sink
#   every    smtp-source -> portcullis (relay, rdns, dnsbl, spf, dkim, dmarc, rules, ratelimit,
#            authres: README's chain; nsd on loopback answers every lookup) -> smtp-sink
#   at 5 KB, 100 KB and 1 MB, 20 sessions: msgs/s of each and portcullis' ratio to the anchor
#   (best of ROUNDS alternating runs);
#   postfix  smtp-source -> portcullis (relay) -> a real Postfix (XCLIENT from 127.0.0.1 only, as
#            README says; queued, then discarded) against smtp-source -> that Postfix, 5 KB;
#   then the RSS portcullis holds per session while 200
#   sessions send 1 MB messages through the rules at once (peak VmRSS minus idle, / 200).
# Needs root (a private Postfix instance on loopback, as tests/e2e/harness.py runs it).
# SIZES=5120,102400,1048576,10485760 (bytes; 10 MB is not in the default run, bench.sh asks for it);
# BASELINE=path/to/another/portcullis adds its relay and relay+rules gateways to the same
# alternating rounds (before/after of a change in one run); EXTRAS=0 skips the Postfix-backend
# and memory sections.
bin=$(readlink -f "${1:-build/portcullis}")
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ "$(id -u)" -ne 0 ] || ! command -v postfix > /dev/null; then
    echo "proxy-bench: needs root and postfix, skipped"; exit 0
fi
export PORTCULLIS_RUN_AS_ROOT=1  # benchmarks run as root without "user" on purpose
export PORTCULLIS_WORKERS=${PORTCULLIS_WORKERS:-1}  # one process: the figures read one pid
exec python3 - "$bin" "$root" <<'PY'
import os, pwd, resource, shutil, signal, socket, subprocess, sys, tempfile, threading, time

BIN, ROOT = sys.argv[1], sys.argv[2]
ROUNDS = int(os.environ.get("ROUNDS", "2"))
SIZES = [int(x) for x in os.environ.get("SIZES", "5120,102400,1048576").split(",")]
BASELINE = os.environ.get("BASELINE") and os.path.abspath(os.environ["BASELINE"])
EXTRAS = os.environ.get("EXTRAS", "1") != "0"
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))


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


tmp = tempfile.mkdtemp(prefix="pc-proxybench-")
os.chmod(tmp, 0o755)
procs, pfdir = [], None


def cleanup():
    for p in procs:
        p.kill()
        p.wait()
    if pfdir:
        subprocess.run(["postfix", "-c", pfdir + "/conf", "stop"], capture_output=True)
        time.sleep(0.5)
    shutil.rmtree(tmp, ignore_errors=True)


try:
    sink = free_port()
    user = ["-u", "nobody"] if os.getuid() == 0 else []
    procs.append(subprocess.Popen(["smtp-sink", *user, "-c", f"127.0.0.1:{sink}", "1000"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    # Postfix as a before-queue proxy in front of the same sink.
    anchor, mta = free_port(), free_port()
    pfdir = os.path.join(tmp, "postfix")
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
myhostname = anchor.test
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
maillog_file = {pfdir}/maillog
maillog_file_prefixes = {tmp}
message_size_limit = 20480000
""")
    with open(os.path.join(pfdir, "conf", "master.cf"), "w") as f:
        f.write(f"""127.0.0.1:{anchor} inet n - n - 40 smtpd
    -o smtpd_proxy_filter=127.0.0.1:{sink}
    -o smtpd_proxy_options=speed_adjust
127.0.0.1:{mta} inet n - n - 40 smtpd
    -o smtpd_authorized_xclient_hosts=127.0.0.1
    -o smtpd_client_restrictions=
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

    # portcullis twice: relay only, and relay + the shipped rules (run from the source tree,
    # whose rules/ the shipped configuration names).
    def gateway(filters, extra, backend=None):
        port = free_port()
        path = os.path.join(tmp, f"gw{port}.conf")
        with open(path, "w") as f:
            f.write(f"""hostname = "bench.test"
log = "stderr"
listener "in" {{
    address = "127.0.0.1:{port}"
    backend = "sink"
    filters = {{ {filters} }}
}}
backend "sink" {{
    address = {{ "127.0.0.1:{backend or sink}" }}
    identity = "{'xclient' if backend else 'none'}"
}}
relay {{
    mynetworks = {{ "127.0.0.0/8" }}
}}
limits {{
    max_connections = 2000
    max_message_size = 20480000
}}
{extra}
""")
        p = subprocess.Popen([BIN, "-c", path], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(tmp, f"gw{port}.log"), "w"))
        procs.append(p)
        return port, p

    # A loopback DNS server (nsd, as tests/e2e/test_dns.py runs it) for the every-filter chain:
    # PTR and A of 127.0.0.1, example.org's SPF and DMARC, an empty DNSBL zone.
    ns_port = free_port()
    nd = os.path.join(tmp, "nsd")
    os.makedirs(nd)
    soa = "@ 3600 IN SOA ns.bl.test. h.bl.test. 1 3600 600 86400 60\n@ 3600 IN NS ns.bl.test.\n"
    zones = {"bl.test": soa + "ns 3600 IN A 127.0.0.1\nclient 3600 IN A 127.0.0.1\n",
             "example.org": soa + '@ 3600 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"\n'
                                  '_dmarc 3600 IN TXT "v=DMARC1; p=none"\n',
             "127.in-addr.arpa": soa + "1.0.0 3600 IN PTR client.bl.test.\n"}
    conf = (f'server:\n ip-address: 127.0.0.1@{ns_port}\n username: ""\n chroot: ""\n'
            f' zonesdir: "{nd}"\n pidfile: "{nd}/nsd.pid"\n database: ""\n'
            f' zonelistfile: "{nd}/zl"\n xfrdfile: "{nd}/xfrd"\n logfile: "{nd}/nsd.log"\n'
            ' server-count: 1\nremote-control:\n control-enable: no\n')
    for name, text in zones.items():
        with open(os.path.join(nd, name + ".zone"), "w") as f:
            f.write(f"$ORIGIN {name}.\n" + text)
        conf += f'zone:\n name: "{name}."\n zonefile: "{name}.zone"\n'
    with open(os.path.join(nd, "nsd.conf"), "w") as f:
        f.write(conf)
    procs.append(subprocess.Popen(["nsd", "-d", "-c", os.path.join(nd, "nsd.conf")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    rules_sec = "rules {\n    files = { %s }\n}" % ", ".join(
        f'"{ROOT}/deploy/rules/{r}.rules"'
        for r in ("default", "gtube", "attachments", "auth", "spam-phrases"))
    relay_port, _ = gateway('"relay"', "")
    rules_port, rules_gw = gateway('"relay", "rules"', rules_sec)
    targets = [("anchor", anchor), ("relay", relay_port), ("rules", rules_port)]
    if BASELINE:
        BIN, mine = BASELINE, BIN
        targets += [("base relay", gateway('"relay"', "")[0]),
                    ("base rules", gateway('"relay", "rules"', rules_sec)[0])]
        BIN = mine
    mta_port, _ = gateway('"relay"', "", backend=mta)
    every_sec = rules_sec + f"""
dns {{ nameservers = {{ "127.0.0.1:{ns_port}" }} }}
dnsbl {{ sites = {{ "bl.test" }} }}
ratelimit {{
    on_error = "accept"
    limit "msgs-per-ip" {{ key = {{ "client_ip" }} count = "messages" rate = "100000000/1h" }}
}}"""
    every_port, _ = gateway('"relay", "rdns", "dnsbl", "spf", "dkim", "dmarc", "rules", '
                            '"ratelimit", "authres"', every_sec)
    targets.insert(3, ("every", every_port))
    for p in (sink, mta, mta_port, ns_port, *(port for _, port in targets)):
        try:
            wait_port(p)
        except RuntimeError:
            logs = "".join(open(os.path.join(tmp, f)).read()[-1500:] for f in os.listdir(tmp)
                           if f.endswith(".log"))
            maillog = os.path.join(pfdir, "maillog")
            logs += open(maillog).read()[-1500:] if os.path.exists(maillog) else ""
            raise RuntimeError(f"nothing listens on {p}:\n{logs}")

    def run(port, n, size, sessions=20):
        t0 = time.time()
        subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(n), "-l", str(size),
                        "-f", "bench@example.org", "-t", "rcpt@example.com", f"127.0.0.1:{port}"],
                       check=True, stdout=subprocess.DEVNULL)
        return time.time() - t0

    print(f"proxy-bench: 20 sessions, best of {ROUNDS} alternating runs; "
          "anchor = Postfix smtpd_proxy_filter -> smtp-sink")
    counts = {5120: 2000, 102400: 600, 1048576: 100}
    for size in SIZES:
        n = counts.get(size, max(20, min(2000, 100 * 1048576 // size)))
        best = {name: 1e9 for name, _ in targets}
        for _ in range(ROUNDS):
            for name, port in targets:
                best[name] = min(best[name], run(port, n, size))
        rate = {k: n / v for k, v in best.items()}
        label = f"{size // 1024}KB" if size < 1048576 else f"{size // 1048576}MB"
        print(f"{label:>6}: postfix proxy {rate['anchor']:7.0f} msgs/s, portcullis relay "
              f"{rate['relay']:7.0f} ({rate['relay'] / rate['anchor']:.2f}x), relay+rules "
              f"{rate['rules']:7.0f} ({rate['rules'] / rate['anchor']:.2f}x; target >= 1.2x), "
              f"every filter {rate['every']:7.0f} ({rate['every'] / rate['anchor']:.2f}x)")
        if BASELINE:
            print(f"{'':>6}  baseline {BASELINE}: relay {rate['base relay']:7.0f} "
                  f"({rate['base relay'] / rate['anchor']:.2f}x), relay+rules "
                  f"{rate['base rules']:7.0f} ({rate['base rules'] / rate['anchor']:.2f}x); "
                  f"this build / baseline: relay {rate['relay'] / rate['base relay']:.2f}x, "
                  f"rules {rate['rules'] / rate['base rules']:.2f}x")
    if not EXTRAS:
        sys.exit(0)

    # A real Postfix backend, reached directly and through portcullis (XCLIENT, reused
    # connections), in the same run.
    n, best = 1000, {"direct": 1e9, "gw": 1e9}
    for _ in range(ROUNDS):
        best["direct"] = min(best["direct"], run(mta, n, 5120))
        best["gw"] = min(best["gw"], run(mta_port, n, 5120))
    print(f"postfix backend 5KB: direct {n / best['direct']:7.0f} msgs/s, through portcullis "
          f"(XCLIENT) {n / best['gw']:7.0f} msgs/s, ratio {best['direct'] / best['gw']:.2f}")

    # Memory per session while 200 sessions stream 1 MB messages through the rules.
    def rss(pid):
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))

    idle, done, samples = rss(rules_gw.pid), threading.Event(), []

    def sample():
        top = 0
        while not done.is_set():
            top = max(top, rss(rules_gw.pid))
            time.sleep(0.02)
        samples.append(top)

    t = threading.Thread(target=sample)
    t.start()
    took = run(rules_port, 400, 1048576, sessions=200)
    done.set()
    t.join()
    peak = samples[0]
    print(f"memory 200 sessions x 1MB through the rules: RSS {idle / 1024:.1f} MB idle -> "
          f"{peak / 1024:.1f} MB peak, {(peak - idle) / 200 / 1024:.2f} MB per session "
          f"(target <= 0.5), {400 / took:.0f} msgs/s")
finally:
    cleanup()
PY
