#!/usr/bin/env python3
"""Traffic tool for the network-namespace tests of evsd (tests/tests/policy_netns.rs).

Pure standard library (raw AF_PACKET, ICMP, TCP and UDP sockets), so it starts fast and needs
neither ping, nc, scapy, 8021q VLAN devices nor bridge VLAN filtering, none of which every test
kernel/machine has. Every subcommand is bounded in time; results go to stdout as one JSON line
(long-running ones print READY first, once their sockets are open).

Subcommands:
  ping DST [--timeout S] [--count N] [--interval S]
                                             N ICMP (or ICMPv6, for an IPv6 DST) echoes (default
                                             1); JSON with sent/received; exit 0 iff a reply came
  serve-tcp PORT... [--seconds S] [--v6]     TCP echo server on each port (prints READY); --v6:
                                             on :: (IPv6 and IPv4) instead of 0.0.0.0
  connect DST PORT [--timeout S] [--payload] connect (IPv4 or IPv6), send, expect the echo; exit
                                             0 iff echoed
  session DST PORT [--rounds N]             one TCP connection kept open: every 0.2 s send a line
                                             and wait (1 s) for its echo; one JSON line per round,
                                             READY after the first echo; ends after 3 misses
  udp-sink PORT [--seconds S]                count UDP bytes (prints READY, JSON at the end)
  udp-blast DST PORT --seconds S --size N --mbps R   paced UDP sender
  sniff IFACE [--match k=v]... [--until k=v]... [--timeout S] [--quiet S]
        capture frames (VLAN tags recovered from the kernel's aux data); prints READY, then one
        JSON line: frames matching every --match (excluding the --until marker), and whether the
        marker (a frame matching every --until) was seen. Stops at the marker (+ --quiet S) or
        at --timeout.
  send IFACE KIND [options]                  send crafted frames (kinds: udp, dhcp-offer, arp,
                                             na: an IPv6 neighbour advertisement for --target
                                             with --tll as its target link-layer address)
  vlan-ping IFACE --vlan V --mac M --ip A --dst-ip B [--timeout S]
        act as a host on VLAN V behind a trunk (no 8021q needed): ARP for B, answer ARP for A,
        ICMP echo; exit 0 iff a tagged reply came back
  tor --trunk IFACE=V1,V2 --access IFACE=PVID [--access ...] --stats FILE
        a minimal VLAN-aware bridge (the top-of-rack switch): tagged frames of an allowed VLAN from
        the trunk go untagged to the access ports of that VLAN and back; other VLANs are dropped.
        Per-VLAN counters are rewritten to FILE (JSON) after every frame.
"""

import argparse
import json
import os
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 1 << 4
PACKET_OUTGOING = 4


def out(obj):
    print(json.dumps(obj), flush=True)


def mac_bytes(m):
    return bytes(int(x, 16) for x in m.split(":"))


def mac_str(b):
    return ":".join("%02x" % x for x in b)


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def eth(dst, src, etype, payload, vlan=None):
    h = mac_bytes(dst) + mac_bytes(src)
    if vlan is not None:
        h += struct.pack("!HH", ETH_P_8021Q, vlan & 0xFFF)
    return h + struct.pack("!H", etype) + payload


def ipv4(src, dst, proto, payload, ident=1):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0, 64, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + payload


def udp(src_ip, dst_ip, sport, dport, payload):
    ln = 8 + len(payload)
    pseudo = socket.inet_aton(src_ip) + socket.inet_aton(dst_ip) + struct.pack("!BBH", 0, 17, ln)
    h = struct.pack("!HHHH", sport, dport, ln, 0)
    c = csum(pseudo + h + payload) or 0xFFFF
    return ipv4(src_ip, dst_ip, 17, struct.pack("!HHHH", sport, dport, ln, c) + payload)


def icmp_echo(src_ip, dst_ip, ident, seq, typ=8, data=b"evs-e2e-ping"):
    h = struct.pack("!BBHHH", typ, 0, 0, ident, seq) + data
    h = h[:2] + struct.pack("!H", csum(h)) + h[4:]
    return ipv4(src_ip, dst_ip, 1, h)


def arp(op, sha, spa, tha, tpa):
    return struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, op, mac_bytes(sha),
                       socket.inet_aton(spa), mac_bytes(tha), socket.inet_aton(tpa))


def neighbour_advert(src_ip, dst_ip, target, tll):
    """ICMPv6 neighbour advertisement (solicited unless to all-nodes, override) in IPv6."""
    src, dst = socket.inet_pton(socket.AF_INET6, src_ip), socket.inet_pton(socket.AF_INET6, dst_ip)
    flags = 0x20 if dst_ip == "ff02::1" else 0x60
    body = struct.pack("!BBHB3x", 136, 0, 0, flags) + socket.inet_pton(socket.AF_INET6, target)
    if tll:
        body += b"\x02\x01" + mac_bytes(tll)
    pseudo = src + dst + struct.pack("!I3xB", len(body), 58)
    body = body[:2] + struct.pack("!H", csum(pseudo + body)) + body[4:]
    return struct.pack("!IHBB", 6 << 28, len(body), 58, 255) + src + dst + body


def dhcp_offer(server_ip, client_mac, yiaddr):
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 2, 1, 6, 0, 0x1234abcd, 0, 0x8000,
                        b"\0" * 4, socket.inet_aton(yiaddr), socket.inet_aton(server_ip),
                        b"\0" * 4, mac_bytes(client_mac) + b"\0" * 10, b"", b"")
    opts = b"\x63\x82\x53\x63" + b"\x35\x01\x02" + b"\x36\x04" + socket.inet_aton(server_ip)
    opts += b"\x01\x04\xff\xff\xff\x00" + b"\x33\x04\x00\x00\x0e\x10" + b"\xff"
    return bootp + opts


# ---------------------------------------------------------------------------- frame parsing

def parse(frame):
    """Decodes the fields the tests match on; a missing field is absent from the dict."""
    f = {"len": len(frame)}
    if len(frame) < 14:
        return f
    f["dst_mac"] = mac_str(frame[0:6])
    f["src_mac"] = mac_str(frame[6:12])
    etype = struct.unpack("!H", frame[12:14])[0]
    off = 14
    if etype == ETH_P_8021Q and len(frame) >= 18:
        f["vlan"] = struct.unpack("!H", frame[14:16])[0] & 0xFFF
        etype = struct.unpack("!H", frame[16:18])[0]
        off = 18
    else:
        f["vlan"] = 0
    f["ethertype"] = etype
    p = frame[off:]
    if etype == ETH_P_ARP and len(p) >= 28:
        f["arp_op"] = struct.unpack("!H", p[6:8])[0]
        f["arp_sha"] = mac_str(p[8:14])
        f["arp_spa"] = socket.inet_ntoa(p[14:18])
        f["arp_tpa"] = socket.inet_ntoa(p[24:28])
    elif etype == ETH_P_IP and len(p) >= 20:
        ihl = (p[0] & 15) * 4
        f["ip_src"] = socket.inet_ntoa(p[12:16])
        f["ip_dst"] = socket.inet_ntoa(p[16:20])
        f["ip_proto"] = p[9]
        l4 = p[ihl:]
        if p[9] in (6, 17) and len(l4) >= 4:
            f["sport"], f["dport"] = struct.unpack("!HH", l4[:4])
            if p[9] == 17:
                f["payload"] = l4[8:].decode("latin-1")
        elif p[9] == 1 and len(l4) >= 8:
            f["icmp_type"] = l4[0]
            f["icmp_id"], f["icmp_seq"] = struct.unpack("!HH", l4[4:8])
    return f


def matches(f, conds):
    for k, v in conds:
        if k == "payload_has":
            if v not in f.get("payload", ""):
                return False
        elif str(f.get(k)) != v:
            return False
    return True


def kv(items):
    res = []
    for it in items or []:
        k, _, v = it.partition("=")
        if k in ("ethertype",) and v.startswith("0x"):
            v = str(int(v, 16))
        res.append((k, v.lower() if k.endswith("mac") else v))
    return res


class Raw:
    """A raw packet socket on one interface that sees VLAN tags the kernel moved to aux data."""

    def __init__(self, iface):
        self.s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.s.bind((iface, 0))
        self.iface = iface

    def recv(self, timeout):
        """One received (not outgoing) frame with its VLAN tag restored, or None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.s], [], [], left)
            if not r:
                return None
            data, anc, _flags, addr = self.s.recvmsg(65535, socket.CMSG_SPACE(32))
            if addr[2] == PACKET_OUTGOING:
                continue
            for lvl, typ, cd in anc:
                if lvl == SOL_PACKET and typ == PACKET_AUXDATA and len(cd) >= 20:
                    status, _l, _sl, _m, _n, tci, tpid = struct.unpack("IIIHHHH", cd[:20])
                    if status & TP_STATUS_VLAN_VALID:
                        tpid = tpid or ETH_P_8021Q
                        data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
            return data

    def send(self, frame):
        self.s.send(frame)


# ---------------------------------------------------------------------------- subcommands

def cmd_ping(a):
    """--count echoes, one every --interval s; each waits up to --timeout for its reply (a late
    reply to an earlier echo still counts). Exit 0 iff at least one reply came back."""
    v6 = ":" in a.dst
    if v6:
        # The kernel fills in an ICMPv6 raw socket's checksum.
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    got = set()
    sent = 0
    t0 = time.monotonic()
    # The last echo gets the full timeout; the earlier ones at least an interval.
    end = t0 + (a.count - 1) * a.interval + a.timeout
    next_tx = t0
    while time.monotonic() < end and len(got) < a.count:
        now = time.monotonic()
        if sent < a.count and now >= next_tx:
            sent += 1
            pkt = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, ident, sent) + b"evs-e2e-ping"
            if not v6:
                pkt = pkt[:2] + struct.pack("!H", csum(pkt)) + pkt[4:]
            s.sendto(pkt, (a.dst, 0))
            next_tx = now + a.interval
        wait_until = min(end, next_tx) if sent < a.count else end
        r, _, _ = select.select([s], [], [], max(0, wait_until - time.monotonic()))
        if not r:
            continue
        data, addr = s.recvfrom(2048)
        ihl = 0 if v6 else (data[0] & 15) * 4
        if len(data) < ihl + 8:
            continue
        t, _c, _ck, i, seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
        same = addr[0] == a.dst or (v6 and socket.inet_pton(socket.AF_INET6, addr[0].split("%")[0])
                                    == socket.inet_pton(socket.AF_INET6, a.dst))
        if t == (129 if v6 else 0) and i == ident and same:
            got.add(seq)
    out({"reply": bool(got), "from": a.dst, "sent": sent, "received": len(got),
         "secs": round(time.monotonic() - t0, 3)})
    return 0 if got else 1


def cmd_serve_tcp(a):
    socks = []
    for p in a.ports:
        s = socket.socket(socket.AF_INET6 if a.v6 else socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::" if a.v6 else "0.0.0.0", p))
        s.listen(16)
        socks.append(s)
    out({"ready": True, "ports": a.ports})
    print("READY", flush=True)
    conns = []
    deadline = time.monotonic() + a.seconds
    while time.monotonic() < deadline:
        r, _, _ = select.select(socks + conns, [], [], 0.5)
        for s in r:
            if s in socks:
                c, _ = s.accept()
                conns.append(c)
            else:
                try:
                    d = s.recv(4096)
                except OSError:
                    d = b""
                if d:
                    s.sendall(d)
                else:
                    conns.remove(s)
                    s.close()
    return 0


def cmd_connect(a):
    s = socket.socket(socket.AF_INET6 if ":" in a.dst else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(a.timeout)
    t0 = time.monotonic()
    try:
        s.connect((a.dst, a.port))
        msg = (a.payload + "\n").encode()
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            d = s.recv(4096)
            if not d:
                break
            got += d
        ok = got == msg
        out({"connected": True, "echoed": ok, "secs": round(time.monotonic() - t0, 3)})
        return 0 if ok else 1
    except (OSError, socket.timeout) as e:
        out({"connected": False, "error": str(e) or type(e).__name__,
             "secs": round(time.monotonic() - t0, 3)})
        return 1


def cmd_session(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect((a.dst, a.port))
    s.settimeout(1)
    misses = 0
    buf = b""
    for i in range(a.rounds):
        msg = ("round %d\n" % i).encode()
        ok = False
        try:
            s.sendall(msg)
            deadline = time.monotonic() + 1
            while msg not in buf and time.monotonic() < deadline:
                d = s.recv(4096)
                if not d:
                    break
                buf += d
            ok = msg in buf
        except (OSError, socket.timeout):
            ok = False
        if ok:
            buf = buf.split(msg, 1)[1]
        out({"round": i, "ok": ok})
        if ok and i == 0:
            print("READY", flush=True)
        misses = 0 if ok else misses + 1
        if misses >= 3:
            break
        time.sleep(0.2)
    out({"done": True, "misses": misses})
    return 0


def cmd_stream(a):
    """One TCP connection to an echo server, a line every `interval` for `seconds`, never
    reconnecting: prints, every 0.2 s, how many bytes it sent and got echoed, and its local port
    (the same socket throughout). READY after the first echo. Exits 1 at the first socket error."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((a.dst, a.port))
    except OSError as e:
        out({"connected": False, "error": str(e) or type(e).__name__})
        return 1
    lport = s.getsockname()[1]
    s.setblocking(False)
    sent = echoed = n = 0
    ready = False
    t0 = time.monotonic()
    next_send = next_report = t0
    err = None
    while time.monotonic() < t0 + a.seconds:
        now = time.monotonic()
        if now >= next_send:
            msg = ("line %d\n" % n).encode()
            try:
                k = s.send(msg)
                sent += k
                if k == len(msg):
                    n += 1
            except BlockingIOError:
                pass
            except OSError as e:
                err = str(e) or type(e).__name__
                break
            next_send = now + a.interval
        r, _, _ = select.select([s], [], [], max(0.0, min(next_send, next_report) - now))
        if r:
            try:
                d = s.recv(65536)
            except BlockingIOError:
                d = None
            except OSError as e:
                err = str(e) or type(e).__name__
                break
            if d == b"":
                err = "connection closed by the server"
                break
            if d:
                echoed += len(d)
                if not ready:
                    ready = True
                    print("READY", flush=True)
        if time.monotonic() >= next_report:
            out({"port": lport, "sent": sent, "echoed": echoed,
                 "secs": round(time.monotonic() - t0, 3)})
            next_report = time.monotonic() + 0.2
    out({"port": lport, "sent": sent, "echoed": echoed, "done": True, "error": err})
    return 1 if err else 0


def cmd_udp_sink(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("0.0.0.0", a.port))
    print("READY", flush=True)
    n = b = 0
    deadline = time.monotonic() + a.seconds
    while time.monotonic() < deadline:
        r, _, _ = select.select([s], [], [], 0.2)
        if r:
            d = s.recv(65535)
            n += 1
            b += len(d)
    out({"packets": n, "bytes": b})
    return 0


def cmd_udp_blast(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    payload = b"x" * a.size
    pps = a.mbps * 1e6 / 8 / (a.size + 42)
    t0 = time.monotonic()
    end = t0 + a.seconds
    sent = errors = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = int((now - t0) * pps) + 1
        while sent < due:
            try:
                s.sendto(payload, (a.dst, a.port))
                sent += 1
            except OSError:
                errors += 1
                break
        time.sleep(0.0005)
    el = time.monotonic() - t0
    out({"packets": sent, "errors": errors, "secs": round(el, 3),
         "offered_mbps": round(sent * (a.size + 42) * 8 / el / 1e6, 2)})
    return 0


def cmd_sniff(a):
    r = Raw(a.iface)
    conds, until = kv(a.match), kv(a.until)
    print("READY", flush=True)
    seen = []
    marker = False
    deadline = time.monotonic() + a.timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        fr = r.recv(left)
        if fr is None:
            break
        f = parse(fr)
        if until and matches(f, until):
            if not marker:
                marker = True
                deadline = min(deadline, time.monotonic() + a.quiet)
            continue
        if matches(f, conds):
            seen.append(f)
            if a.count and len(seen) >= a.count and not until:
                break
    out({"matched": len(seen), "marker": marker, "frames": seen[:20]})
    return 0


def cmd_send(a):
    r = Raw(a.iface)
    vlan = a.vlan
    for _ in range(a.repeat):
        if a.kind == "udp":
            body = udp(a.src_ip, a.dst_ip, a.sport, a.dport, a.payload.encode())
            fr = eth(a.dst_mac, a.src_mac, ETH_P_IP, body, vlan)
        elif a.kind == "dhcp-offer":
            body = udp(a.src_ip, "255.255.255.255", 67, 68,
                       dhcp_offer(a.src_ip, "02:00:00:00:99:99", a.yiaddr))
            fr = eth("ff:ff:ff:ff:ff:ff", a.src_mac, ETH_P_IP, body, vlan)
        elif a.kind == "na":
            body = neighbour_advert(a.src_ip, a.dst_ip, a.target, a.tll)
            fr = eth(a.dst_mac, a.src_mac, ETH_P_IPV6, body, vlan)
        elif a.kind == "arp":
            body = arp(1, a.src_mac, a.src_ip, "00:00:00:00:00:00", a.dst_ip)
            fr = eth("ff:ff:ff:ff:ff:ff", a.src_mac, ETH_P_ARP, body, vlan)
        else:
            raise SystemExit("unknown kind " + a.kind)
        if len(fr) < 60:
            fr += b"\0" * (60 - len(fr))
        r.send(fr)
    out({"sent": a.repeat, "kind": a.kind})
    return 0


def cmd_vlan_ping(a):
    r = Raw(a.iface)
    ident = os.getpid() & 0xFFFF
    deadline = time.monotonic() + a.timeout
    dst_mac = None
    next_tx = 0.0
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_tx:
            if dst_mac is None:
                r.send(eth("ff:ff:ff:ff:ff:ff", a.mac, ETH_P_ARP,
                           arp(1, a.mac, a.ip, "00:00:00:00:00:00", a.dst_ip), a.vlan))
            else:
                r.send(eth(dst_mac, a.mac, ETH_P_IP, icmp_echo(a.ip, a.dst_ip, ident, 1), a.vlan))
            next_tx = now + 0.3
        fr = r.recv(max(0.0, min(next_tx, deadline) - time.monotonic()))
        if fr is None:
            continue
        f = parse(fr)
        if f.get("vlan") != a.vlan:
            continue
        if f.get("ethertype") == ETH_P_ARP:
            if f.get("arp_op") == 2 and f.get("arp_spa") == a.dst_ip:
                dst_mac = f["arp_sha"]
                next_tx = 0.0
            elif f.get("arp_op") == 1 and f.get("arp_tpa") == a.ip:
                r.send(eth(f["arp_sha"], a.mac, ETH_P_ARP,
                           arp(2, a.mac, a.ip, f["arp_sha"], f["arp_spa"]), a.vlan))
        elif (f.get("icmp_type") == 0 and f.get("icmp_id") == ident
              and f.get("ip_src") == a.dst_ip):
            out({"reply": True, "vlan": a.vlan, "dst_mac": dst_mac})
            return 0
    out({"reply": False, "vlan": a.vlan, "arp_resolved": dst_mac is not None})
    return 1


def cmd_tor(a):
    trunk_if, vl = a.trunk.split("=")
    allowed = {int(v) for v in vl.split(",")}
    access = {}
    for x in a.access:
        i, p = x.split("=")
        access[i] = int(p)
    socks = {trunk_if: Raw(trunk_if)}
    for i in access:
        socks[i] = Raw(i)
    stats = {"from_trunk": {}, "from_trunk_untagged": 0, "dropped_vlans": {}, "to_trunk": {}}

    def dump():
        tmp = a.stats + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(stats, fh)
        os.replace(tmp, a.stats)

    def inc(d, k):
        d[str(k)] = d.get(str(k), 0) + 1

    dump()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("READY", flush=True)
    by_fd = {s.s.fileno(): (i, s) for i, s in socks.items()}
    while True:
        r, _, _ = select.select([s.s for s in socks.values()], [], [], 1.0)
        for so in r:
            name, raw = by_fd[so.fileno()]
            fr = raw.recv(0.001)
            if fr is None:
                continue
            f = parse(fr)
            if name == trunk_if:
                v = f.get("vlan", 0)
                if v == 0:
                    stats["from_trunk_untagged"] += 1
                    continue
                inc(stats["from_trunk"], v)
                if v not in allowed:
                    inc(stats["dropped_vlans"], v)
                    continue
                untagged = fr[:12] + fr[16:]
                for i, pvid in access.items():
                    if pvid == v:
                        socks[i].send(untagged)
            else:
                pvid = access[name]
                if f.get("vlan", 0) != 0:
                    continue
                inc(stats["to_trunk"], pvid)
                socks[trunk_if].send(fr[:12] + struct.pack("!HH", ETH_P_8021Q, pvid) + fr[12:])
                for i, p in access.items():
                    if i != name and p == pvid:
                        socks[i].send(fr)
            dump()


def main():
    p = argparse.ArgumentParser()
    sp = p.add_subparsers(dest="cmd", required=True)
    x = sp.add_parser("ping")
    x.add_argument("dst")
    x.add_argument("--timeout", type=float, default=1.0)
    x.add_argument("--count", type=int, default=1)
    x.add_argument("--interval", type=float, default=0.2)
    x = sp.add_parser("serve-tcp")
    x.add_argument("ports", type=int, nargs="+")
    x.add_argument("--seconds", type=float, default=300)
    x.add_argument("--v6", action="store_true")
    x = sp.add_parser("connect")
    x.add_argument("dst")
    x.add_argument("port", type=int)
    x.add_argument("--timeout", type=float, default=2.0)
    x.add_argument("--payload", default="hello evs")
    x = sp.add_parser("session")
    x.add_argument("dst")
    x.add_argument("port", type=int)
    x.add_argument("--rounds", type=int, default=300)
    x = sp.add_parser("stream")
    x.add_argument("dst")
    x.add_argument("port", type=int)
    x.add_argument("--seconds", type=float, default=120)
    x.add_argument("--interval", type=float, default=0.05)
    x = sp.add_parser("udp-sink")
    x.add_argument("port", type=int)
    x.add_argument("--seconds", type=float, default=10)
    x = sp.add_parser("udp-blast")
    x.add_argument("dst")
    x.add_argument("port", type=int)
    x.add_argument("--seconds", type=float, default=3)
    x.add_argument("--size", type=int, default=1400)
    x.add_argument("--mbps", type=float, default=100)
    x = sp.add_parser("sniff")
    x.add_argument("iface")
    x.add_argument("--match", action="append")
    x.add_argument("--until", action="append")
    x.add_argument("--timeout", type=float, default=5)
    x.add_argument("--quiet", type=float, default=0.2)
    x.add_argument("--count", type=int, default=0)
    x = sp.add_parser("send")
    x.add_argument("iface")
    x.add_argument("kind", choices=["udp", "dhcp-offer", "arp", "na"])
    x.add_argument("--target")
    x.add_argument("--tll")
    x.add_argument("--src-mac", required=True)
    x.add_argument("--dst-mac", default="ff:ff:ff:ff:ff:ff")
    x.add_argument("--src-ip", default="0.0.0.0")
    x.add_argument("--dst-ip", default="255.255.255.255")
    x.add_argument("--sport", type=int, default=4000)
    x.add_argument("--dport", type=int, default=9999)
    x.add_argument("--payload", default="evs-e2e")
    x.add_argument("--vlan", type=int)
    x.add_argument("--yiaddr", default="10.9.9.9")
    x.add_argument("--repeat", type=int, default=1)
    x = sp.add_parser("vlan-ping")
    x.add_argument("iface")
    x.add_argument("--vlan", type=int, required=True)
    x.add_argument("--mac", required=True)
    x.add_argument("--ip", required=True)
    x.add_argument("--dst-ip", required=True)
    x.add_argument("--timeout", type=float, default=3)
    x = sp.add_parser("tor")
    x.add_argument("--trunk", required=True)
    x.add_argument("--access", action="append", default=[])
    x.add_argument("--stats", required=True)
    a = p.parse_args()
    fn = {"ping": cmd_ping, "serve-tcp": cmd_serve_tcp, "connect": cmd_connect, "session": cmd_session, "stream": cmd_stream,
          "udp-sink": cmd_udp_sink, "udp-blast": cmd_udp_blast, "sniff": cmd_sniff,
          "send": cmd_send, "vlan-ping": cmd_vlan_ping, "tor": cmd_tor}[a.cmd]
    sys.exit(fn(a))


if __name__ == "__main__":
    main()
