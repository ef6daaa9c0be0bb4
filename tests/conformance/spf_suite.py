#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""
NAME
    spf_suite.py - run the openspf RFC 7208 test suite through our SPF layer

DESCRIPTION
    Reads the suite's YAML (a small parser for the subset it uses: the
    machine has no PyYAML), serves each scenario's zone data from a DNS
    responder on 127.0.0.1 (UDP and TCP, a port in our range), and feeds
    every test to build/tests/conf_spf_check, which runs filters/spf.c's
    check exactly as the filter does: libspf2 on a worker thread, its
    lookups through gateway/dns.c (libunbound forwarding to the responder).

    nsd is not used here because the suite needs answers nsd cannot give:
    TIMEOUT names (never answered), TXT records with no strings, and
    names with ':' or '/' in a label. The responder follows the pyspf
    driver conventions used for the libspf2 baseline: an SPF record is
    also served as TXT when the name has no TXT, names that exist but lack
    a type get NODATA, and a TIMEOUT entry drops the question unless a
    record of the asked type is listed before it (pyspf's rule).

    Prints one line per disagreement and "spf suite: N of M pass".
    Exit status 0 unless the checker could not run.

SEE ALSO
    RFC 7208, ../shared/testdata/spf/libspf2-1.2.10-debian-results/
"""
import argparse
import ipaddress
import socket
import socketserver
import struct
import subprocess
import sys
import threading

T = {"A": 1, "NS": 2, "CNAME": 5, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SPF": 99}


# ---------------------------------------------------------------- YAML subset
def unquote(s):
    s = s.strip()
    if s.startswith('"'):
        out, i = bytearray(), 1
        while i < len(s) and s[i] != '"':
            c = s[i]
            if c == "\\":
                n = s[i + 1]
                if n == "x":
                    out.append(int(s[i + 2:i + 4], 16))
                    i += 4
                    continue
                out += {"0": b"\0", "n": b"\n", "t": b"\t", "r": b"\r", "\\": b"\\",
                        '"': b'"'}.get(n, n.encode())
                i += 2
                continue
            out += c.encode("utf-8")
            i += 1
        return bytes(out)
    if s.startswith("'"):
        return s[1:-1].replace("''", "'").encode("utf-8")
    return s.encode("utf-8")


def split_flow(s):
    """[a, "b", c] -> list of raw items"""
    s = s.strip()[1:-1]
    items, cur, q = [], "", None
    for c in s:
        if q:
            cur += c
            if c == q:
                q = None
        elif c in "\"'":
            q = c
            cur += c
        elif c == ",":
            items.append(cur)
            cur = ""
        else:
            cur += c
    if cur.strip():
        items.append(cur)
    return [i.strip() for i in items]


def strip_comment(line):
    q = None
    for i, c in enumerate(line):
        if q:
            if c == q:
                q = None
        elif c in "\"'":
            q = c
        elif c == "#" and (i == 0 or line[i - 1] == " "):
            return line[:i].rstrip()
    return line.rstrip()


def parse_suite(path):
    docs, doc, section, cur = [], None, None, None
    for raw in open(path, encoding="utf-8"):
        line = strip_comment(raw.rstrip("\n"))
        if not line.strip():
            continue
        if line == "---":
            doc = {"description": "", "tests": {}, "zonedata": {}}
            docs.append(doc)
            section = None
            continue
        if doc is None:
            continue
        ind = len(line) - len(line.lstrip())
        body = line.strip()
        if ind == 0:
            key, _, val = body.partition(":")
            section = key
            if key == "description":
                doc["description"] = val.strip()
            continue
        if section == "tests":
            if ind == 2 and body.endswith(":"):
                cur = doc["tests"].setdefault(body[:-1], {})
            elif ind == 4 and ":" in body:
                k, _, v = body.partition(":")
                v = v.strip()
                if v.startswith("["):
                    cur[k] = [unquote(x).decode("latin-1") for x in split_flow(v)]
                elif v.startswith(">") or v == "":
                    cur[k] = ""
                else:
                    cur[k] = unquote(v).decode("latin-1")
        elif section == "zonedata":
            if ind == 2 and body.endswith(":"):
                name = unquote(body[:-1]).decode("latin-1")
                cur = doc["zonedata"].setdefault(name.lower().rstrip("."), [])
            elif body.startswith("- "):
                item = body[2:].strip()
                if item == "TIMEOUT":
                    cur.append(("TIMEOUT", None))
                    continue
                typ, _, v = item.partition(":")
                v = v.strip()
                if v.startswith("["):
                    cur.append((typ, [unquote(x) for x in split_flow(v)]))
                else:
                    cur.append((typ, unquote(v)))
    return docs


# ---------------------------------------------------------------- responder
def enc_name(name):
    if isinstance(name, str):
        name = name.encode("latin-1")
    name = name.rstrip(b".")
    out = b""
    for label in name.split(b".") if name else []:
        out += bytes([min(len(label), 63)]) + label[:63]
    return out + b"\0"


def enc_strings(parts):
    out = b""
    for p in parts:
        if not p:
            out += b"\0"
        while p:
            out += bytes([len(p[:255])]) + p[:255]
            p = p[255:]
    return out


def rdata(typ, v):
    if typ == "A":
        return socket.inet_aton(v.decode())
    if typ == "AAAA":
        return ipaddress.IPv6Address(v.decode()).packed
    if typ in ("PTR", "CNAME"):
        return enc_name(v)
    if typ == "MX":
        return struct.pack("!H", int(v[0])) + enc_name(v[1])
    if typ in ("TXT", "SPF"):
        return enc_strings(v if isinstance(v, list) else [v])
    raise ValueError(typ)


class Zone:
    def __init__(self, data):
        self.data = data

    def exists(self, name):
        return name in self.data or any(n.endswith("." + name) for n in self.data)

    def records(self, name, qtype):
        recs = self.data.get(name, [])
        out = [(t, v) for t, v in recs if T.get(t) == qtype and v != b"NONE"]
        if qtype == T["TXT"] and not any(t == "TXT" for t, _ in recs):
            # pyspf convention: SPF doubles as TXT unless TXT is listed (even as NONE)
            out = [("TXT", v) for t, v in recs if t == "SPF"]
        return out

    def times_out(self, name, qtype):
        """pyspf's rule: a TIMEOUT entry bites when no record of the type was listed before it"""
        recs = self.data.get(name, [])
        spf_as_txt = qtype == T["TXT"] and not any(t == "TXT" for t, _ in recs)
        for t, v in recs:
            if t == "TIMEOUT":
                return True
            if v == b"NONE":  # "TXT: NONE": explicitly no such record
                continue
            if T.get(t) == qtype or (spf_as_txt and t == "SPF") or t == "CNAME":
                return False
        return False

    def qlen(self, q):
        i = 12
        while q[i]:
            i += 1 + q[i]
        return i + 5 - 12

    def answer(self, q):
        qid, flags = struct.unpack("!HH", q[:4])
        i, labels = 12, []
        while q[i]:
            labels.append(q[i + 1:i + 1 + q[i]])
            i += 1 + q[i]
        qname_wire = q[12:i + 1]
        qtype, qclass = struct.unpack("!HH", q[i + 1:i + 5])
        question = q[12:i + 5]
        name = b".".join(labels).decode("latin-1").lower()
        if self.times_out(name, qtype):
            return None
        answers, rcode, owner, hops = [], 0, qname_wire, 0
        while True:
            cn = [v for t, v in self.data.get(name, []) if t == "CNAME"]
            if cn and qtype != T["CNAME"] and hops < 8:
                answers.append(owner + struct.pack("!HHIH", 5, 1, 60, len(rdata("CNAME", cn[0])))
                               + rdata("CNAME", cn[0]))
                owner = enc_name(cn[0])
                name = cn[0].decode("latin-1").lower().rstrip(".")
                hops += 1
                if self.times_out(name, qtype):
                    return None
                continue
            break
        recs = self.records(name, qtype)
        for t, v in recs:
            rd = rdata(t, v)
            answers.append(owner + struct.pack("!HHIH", qtype, 1, 60, len(rd)) + rd)
        if not answers and not self.exists(name):
            rcode = 3
        hdr = struct.pack("!HHHHHH", qid, 0x8400 | (flags & 0x0100) | 0x80 | rcode, 1,
                          len(answers), 0, 0)
        return hdr + question + b"".join(answers)


class State:
    zone = Zone({})


class UDP(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        try:
            r = State.zone.answer(data)
        except Exception as e:  # a malformed question: no answer
            print("responder:", e, file=sys.stderr)
            return
        if r is None:
            return
        if len(r) > 1232:  # too big for UDP: header and question only, TC set
            flags = struct.unpack("!H", r[2:4])[0] | 0x0200
            r = r[:2] + struct.pack("!HHHHH", flags, 1, 0, 0, 0) + r[12:12 + State.zone.qlen(data)]
        sock.sendto(r, self.client_address)


class TCP(socketserver.BaseRequestHandler):
    def handle(self):
        n = struct.unpack("!H", self.request.recv(2))[0]
        q = b""
        while len(q) < n:
            q += self.request.recv(n - len(q))
        r = State.zone.answer(q)
        if r is not None:
            self.request.sendall(struct.pack("!H", len(r)) + r)


class TUDP(socketserver.ThreadingMixIn, socketserver.UDPServer):
    allow_reuse_address = True


class TTCP(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True


# ---------------------------------------------------------------- driver
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", required=True)
    ap.add_argument("--checker", required=True)
    ap.add_argument("--port", type=int, default=21953)
    ap.add_argument("--out", help="write per-test results here (id, expected, ours)")
    a = ap.parse_args()
    docs = parse_suite(a.suite)
    udp = TUDP(("127.0.0.1", a.port), UDP)
    tcp = TTCP(("127.0.0.1", a.port), TCP)
    for s in (udp, tcp):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    total = passed = 0
    rows = []
    try:
        for doc in docs:
            State.zone = Zone(doc["zonedata"])
            names = list(doc["tests"])
            lines = ""
            for n in names:
                t = doc["tests"][n]
                lines += "%s\t%s\t%s\n" % (t.get("host", ""), t.get("mailfrom", ""),
                                           t.get("helo", ""))
            # one checker process per scenario: a fresh resolver cache
            p = subprocess.run([a.checker, "127.0.0.1:%d" % a.port], input=lines.encode("latin-1"),
                               stdout=subprocess.PIPE, timeout=600)
            if p.returncode != 0:
                print("checker failed on scenario %s" % doc["description"], file=sys.stderr)
                return 2
            got = p.stdout.decode().split("\n")
            for i, n in enumerate(names):
                want = doc["tests"][n]["result"]
                want = want if isinstance(want, list) else [want]
                ours = got[i].strip() if i < len(got) else "?"
                total += 1
                ok = ours in want
                passed += ok
                tid = "%s::%s" % (doc["description"], n)
                rows.append("%s\t%s\t%s" % (tid, "|".join(want), ours))
                if not ok:
                    print("DIFF %s: expected %s, ours %s" % (tid, "|".join(want), ours))
    finally:
        udp.shutdown()
        tcp.shutdown()
        udp.server_close()
        tcp.server_close()
    if a.out:
        open(a.out, "w").write("id\texpected\tours\n" + "\n".join(rows) + "\n")
    print("spf suite: %d of %d pass" % (passed, total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
