#!/usr/bin/env python3
"""Side-by-side benchmark of evsd, Open vSwitch with DPDK and dpdk-testpmd (the ceiling).

Run through benches/run.sh, which builds, installs what is missing, reserves hugepages and mounts a
private hugetlbfs, then calls this script. Every switch forwards on CPU 1 (SW_CPU) and the same
generator, evs-pktgen, runs on CPU 0 (GEN_CPU). Windows alternate between the switches; before each
window the core-to-core round trip is measured (the host moves the vCPUs), and steal and the CPU
share of the two busy threads are recorded for the window.

Python 3 standard library only.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

GEN_CPU = 0
SW_CPU = 1
MAC_A = "02:00:00:00:00:01"
MAC_B = "02:00:00:00:00:02"
IP_A = "10.0.0.1"
IP_B = "10.0.0.2"
OVS_LIB = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"
OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"

ENV = {}          # paths given by run.sh
PROFILE = False   # --profile: perf record the switch during each window
CHILDREN = []     # every Popen we started (own session each: killed by process group id)
PREFIXES = []     # DPDK --file-prefix values we used (runtime dirs removed at the end)


def log(*a):
    print("[bench %s]" % time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# processes

def spawn(cmd, logfile, env=None, stdin=None):
    f = open(logfile, "ab")
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=stdin,
                         env=env, start_new_session=True)
    f.close()
    CHILDREN.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=10):
    """Stops one child we started (its whole process group, by id)."""
    if p is None or p.poll() is not None:
        return
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        return
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def stop_all():
    for p in reversed(CHILDREN):
        stop(p, timeout=5)
    for x in PREFIXES:
        shutil.rmtree("/var/run/dpdk/" + x, ignore_errors=True)


def run(cmd, env=None, check=True, timeout=60):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed: %s %s" % (" ".join(cmd), r.stdout, r.stderr))
    return r.stdout


def wait_for(pred, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.02)
    raise RuntimeError("timed out waiting for " + what)


# ----------------------------------------------------------------------------------------------
# machine state

def cpu_stat():
    """{cpu: (busy+idle jiffies, steal jiffies)} from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                v = [int(x) for x in m.group(2).split()]
                out[int(m.group(1))] = (sum(v[:8]), v[7])
    return out


def steal_pct(a, b):
    r = {}
    for c in a:
        tot = b[c][0] - a[c][0]
        r[c] = round(100.0 * (b[c][1] - a[c][1]) / tot, 2) if tot > 0 else 0.0
    return r


def thread_runtimes(pid):
    """{tid: CPU time in ns} of every thread of a process."""
    out = {}
    try:
        for t in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                    out[t] = int(f.read().split()[0])
            except OSError:
                pass
    except OSError:
        pass
    return out


def busiest_share(before, after, wall):
    """CPU share of the thread that ran most between two thread_runtimes() samples."""
    d = [after[t] - before.get(t, 0) for t in after]
    return round(max(d) / 1e9 / wall, 3) if d and wall > 0 else None


def proc_status(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])  # kB
    except OSError:
        pass
    return None


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def busy_others():
    """Processes other than ours using CPU now (for the record)."""
    mine = {p.pid for p in CHILDREN if p.poll() is None} | {os.getpid()}
    out = run(["ps", "-eo", "pid,pcpu,comm", "--sort=-pcpu", "--no-headers"], check=False)
    busy = []
    for line in out.splitlines()[:8]:
        pid, pcpu, comm = line.split(None, 2)
        if float(pcpu) >= 10 and int(pid) not in mine:
            busy.append("%s(%s%%)" % (comm, pcpu))
    return busy


def pingpong():
    out = run([ENV["PKTGEN"], "pingpong", "--cpus", "%d,%d" % (GEN_CPU, SW_CPU),
               "--iters", "100000", "--json"], timeout=30)
    return round(json.loads(out)["round_trip_ns"], 1)


# ----------------------------------------------------------------------------------------------
# the generator

def gen_ports(work, server):
    extra = ",server=1" if server else ""
    return ["--port", "virtio_user0,path=%s/a.sock,queues=1,mac=%s%s" % (work, MAC_A, extra),
            "--port", "virtio_user1,path=%s/b.sock,queues=1,mac=%s%s" % (work, MAC_B, extra)]


class Generator:
    """One evs-pktgen run; calls on_start() when its measuring window starts."""

    def __init__(self, work, server, args, duration, warmup, tag):
        self.prefix = "evsb-gen-%d-%s" % (os.getpid(), tag)
        PREFIXES.append(self.prefix)
        cmd = [ENV["PKTGEN"], "-l", str(GEN_CPU), "-m", "256", "--huge-dir", ENV["HUGE_DIR"],
               "--file-prefix", self.prefix, "--json", "--duration", str(duration),
               "--warmup", str(warmup), "--link-timeout", "30",
               "--eal-arg=--log-level=lib.eal:notice"] + gen_ports(work, server) + args
        self.cmd = cmd
        self.log = open(os.path.join(work, "gen.log"), "a")
        self.log.write("\n$ %s\n" % " ".join(cmd))
        self.log.flush()
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, start_new_session=True)
        CHILDREN.append(self.p)
        self.started = threading.Event()
        self.ended = threading.Event()
        self.hooks = []
        self.end_hooks = []
        self.timeout = duration + warmup + 60
        self.t = threading.Thread(target=self._stderr, daemon=True)
        self.t.start()

    def _stderr(self):
        for line in self.p.stderr:
            self.log.write(line)
            self.log.flush()
            for marker, hooks, ev in (("window start", self.hooks, self.started),
                                      ("window end", self.end_hooks, self.ended)):
                if marker in line and not ev.is_set():
                    for h in hooks:
                        try:
                            t = time.time()
                            h()
                            self.log.write("hook %s: %.3f s\n" % (h.__name__, time.time() - t))
                        except Exception as e:  # a failed hook must not hang the window
                            self.log.write("hook failed: %r\n" % e)
                    self.log.flush()
                    ev.set()

    def result(self):
        timer = threading.Timer(self.timeout, lambda: stop(self.p, signal.SIGKILL))
        timer.start()
        out = self.p.stdout.read()
        self.p.wait()
        timer.cancel()
        self.t.join(timeout=60)  # the end hook (switch counters) may still be running
        if self.p.returncode != 0:
            raise RuntimeError("evs-pktgen exited with %s (see gen.log)" % self.p.returncode)
        return json.loads(out)


# ----------------------------------------------------------------------------------------------
# scenarios

# kind: "tput" (Mpps), "cps" (handshakes), "update" (rule changes while forwarding), "startup"
SCENARIOS = [
    dict(id="P1", name="L2 learning switch, 1 flow", kind="tput", model="l2",
         gen=["--bidir", "--flows", "1"]),
    dict(id="P1-imix", name="P1, IMIX 7:4:1", kind="tput", model="l2",
         gen=["--bidir", "--flows", "1", "--imix"]),
    dict(id="P1-1518", name="P1, 1518-byte frames", kind="tput", model="l2",
         gen=["--bidir", "--flows", "1", "--size", "1518"]),
    dict(id="P2", name="L2 learning switch, 10k flows", kind="tput", model="l2",
         gen=["--bidir", "--flows", "10000", "--vary", "src-ip,dst-ip,sport,dport"]),
    dict(id="P3", name="security group (conntrack), 10k connections", kind="tput", model="sg",
         gen=["--bidir", "--flows", "10000", "--vary", "sport,dport"]),
    dict(id="P4", name="full port-group pipeline, 10k connections", kind="tput", model="full",
         gen=["--bidir", "--flows", "10000", "--vary", "sport,dport"]),
    # Connections are never closed: the window is short and both conntrack tables are raised to
    # 4M entries so neither fills (evsd's default 1M filled after ~490k connections: then every
    # new connection was refused).
    dict(id="P5", name="new TCP connections/s through the security group", kind="cps",
         model="sg", warmup=0.5, window=2.0, ct_max=4 << 20,
         gen=["--mode", "handshake", "--proto", "tcp", "--dport", "80"]),
    # Offered load below evsd's P3 capacity (~1 Mpps total), so losses come from the update.
    dict(id="P6", name="10k rule changes while forwarding (0.25 Mpps each way)", kind="update",
         model="sg", gen=["--bidir", "--flows", "10000", "--vary", "sport,dport",
                          "--rate-pps", "250000"]),
    dict(id="P7", name="resident memory and time to first forwarded packet", kind="startup",
         model="l2", gen=["--flows", "1", "--rate-pps", "1000000", "--sample-every", "0"]),
]


def evsd_model(kind):
    """The evsd model (TOML) of a scenario. Port a: 02:..:01/10.0.0.1, port b: ..:02/10.0.0.2."""
    pg = '[[port_groups]]\nname = "pg"\ntype = "access"\nvlan = 100\n'
    sg = ""
    sga = sgb = ""
    if kind in ("sg", "full"):
        # a: may open connections (egress any); b: accepts them (ingress any IPv4), opens none.
        # Replies are allowed by conntrack both ways. Same meaning as the OVS ct() rules.
        sg = ('[[security_groups]]\nname = "client"\n'
              '[[security_groups.rules]]\ndirection = "egress"\nethertype = "IPv4"\n'
              '[[security_groups]]\nname = "server"\n'
              '[[security_groups.rules]]\ndirection = "ingress"\nethertype = "IPv4"\n')
        sga = 'security_group = "client"\n'
        sgb = 'security_group = "server"\n'
    if kind == "full":
        pg += ('dhcp_isolation = true\nip_mac_binding = true\n'
               'shaping = { average_mbps = 100000.0, burst_mbit = 1000.0 }\n')
    ports = ('[[ports]]\nname = "a"\nmac = "%s"\nips = ["%s"]\nport_group = "pg"\n%s'
             '[[ports]]\nname = "b"\nmac = "%s"\nips = ["%s"]\nport_group = "pg"\n%s'
             % (MAC_A, IP_A, sga, MAC_B, IP_B, sgb))
    return pg + sg + ports


def evsd_update_model_json(n):
    """P6: the SG model with n extra ingress rules on b (one TCP port from one /32 each)."""
    rules = [{"direction": "ingress", "ethertype": "IPv4"}]
    for i in range(n):
        rules.append({"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                      "port_min": 1000 + i % 50000, "port_max": 1000 + i % 50000,
                      "remote": {"cidr": "172.%d.%d.%d/32" % (16 + i // 65536 % 16,
                                                                 i // 256 % 256, i % 256)}})
    return {
        "port_groups": [{"name": "pg", "type": "access", "vlan": 100}],
        "security_groups": [
            {"name": "client", "rules": [{"direction": "egress", "ethertype": "IPv4"}]},
            {"name": "server", "rules": rules}],
        "ports": [
            {"name": "a", "mac": MAC_A, "ips": [IP_A], "port_group": "pg",
             "security_group": "client"},
            {"name": "b", "mac": MAC_B, "ips": [IP_B], "port_group": "pg",
             "security_group": "server"}],
    }


def ovs_flows(kind):
    """OpenFlow 1.3 rules with the meaning of the evsd model. Port 1 = a, port 2 = b."""
    if kind == "l2":
        return ["actions=NORMAL"]
    # Per-port stateful security groups, as evsd (and OpenStack's OVS firewall driver) apply
    # them: the sender's egress rules in the sender's conntrack zone, then the receiver's ingress
    # rules in the receiver's zone (zone = port number): two ct() per packet.
    def ct_pair(t_ct1, t_sg1, t_ct2, t_sg2, after):
        return [
            "table=%d,priority=100,in_port=1,ip,actions=ct(table=%d,zone=1)" % (t_ct1, t_sg1),
            "table=%d,priority=100,in_port=2,ip,actions=ct(table=%d,zone=2)" % (t_ct1, t_sg1),
            # a (client): egress any IPv4; b (server): no egress rule, replies only.
            "table=%d,priority=100,in_port=1,ip,ct_state=+trk+new,"
            "actions=ct(commit,zone=1),goto_table:%d" % (t_sg1, t_ct2),
            "table=%d,priority=100,in_port=1,ip,ct_state=+trk+est,actions=goto_table:%d"
            % (t_sg1, t_ct2),
            "table=%d,priority=100,in_port=2,ip,ct_state=+trk+est,actions=goto_table:%d"
            % (t_sg1, t_ct2),
            "table=%d,priority=0,actions=drop" % t_sg1,
            "table=%d,priority=100,in_port=1,ip,actions=ct(table=%d,zone=2)" % (t_ct2, t_sg2),
            "table=%d,priority=100,in_port=2,ip,actions=ct(table=%d,zone=1)" % (t_ct2, t_sg2),
            # b (server): ingress any IPv4; a (client): no ingress rule, replies only.
            "table=%d,priority=100,in_port=1,ip,ct_state=+trk+new,"
            "actions=ct(commit,zone=2),%s" % (t_sg2, after[0]),
            "table=%d,priority=100,in_port=1,ip,ct_state=+trk+est,actions=%s" % (t_sg2, after[0]),
            "table=%d,priority=100,in_port=2,ip,ct_state=+trk+est,actions=%s" % (t_sg2, after[1]),
            "table=%d,priority=0,actions=drop" % t_sg2,
        ]
    if kind == "sg":
        return ["table=0,priority=0,actions=drop"] + ct_pair(0, 1, 2, 3, ("output:2", "output:1"))
    # full: DHCP isolation, IP-MAC binding, meter, access VLAN 100 (tagged inside the switch,
    # stripped on output), security groups, L2 forwarding by the ports' MACs.
    f = []
    for port, mac, ip in ((1, MAC_A, IP_A), (2, MAC_B, IP_B)):
        f += [
            "table=0,priority=300,in_port=%d,udp,tp_src=67,actions=drop" % port,
            "table=0,priority=200,in_port=%d,dl_src=%s,ip,nw_src=%s,"
            "actions=meter:1,mod_vlan_vid:100,goto_table:1" % (port, mac, ip),
            "table=0,priority=200,in_port=%d,dl_src=%s,arp,arp_spa=%s,"
            "actions=meter:1,mod_vlan_vid:100,goto_table:5" % (port, mac, ip),
        ]
    f += ["table=0,priority=0,actions=drop"]
    f += ct_pair(1, 2, 3, 4, ("goto_table:5", "goto_table:5"))
    f += [
        "table=5,priority=100,dl_vlan=100,dl_dst=%s,actions=strip_vlan,output:1" % MAC_A,
        "table=5,priority=100,dl_vlan=100,dl_dst=%s,actions=strip_vlan,output:2" % MAC_B,
        "table=5,priority=50,dl_vlan=100,dl_dst=ff:ff:ff:ff:ff:ff,actions=strip_vlan,ALL",
        "table=5,priority=0,actions=drop",
    ]
    return f


def ovs_update_flows(n):
    """P6: n flows with the meaning of the n SG rules of evsd_update_model_json."""
    out = []
    for i in range(n):
        out.append("table=3,priority=110,in_port=1,tcp,ct_state=+trk+new,nw_src=172.%d.%d.%d,"
                   "tp_dst=%d,actions=ct(commit,zone=2),output:2"
                   % (16 + i // 65536 % 16, i // 256 % 256, i % 256, 1000 + i % 50000))
    return out


# ----------------------------------------------------------------------------------------------
# the switches

class Evsd:
    name = "evsd"
    ct_max = 1 << 20

    def __init__(self, work):
        self.work = work
        self.p = None
        self.ctl = os.path.join(work, "evsd.sock")

    def start(self, model, client=False):
        prefix = "evsb-evsd-%d" % os.getpid()
        PREFIXES.append(prefix)
        role = "client" if client else "server"
        cfg = ('[eal]\ncores = "%d"\nno_huge = false\nmemory_mb = 512\nhuge_dir = "%s"\n'
               'file_prefix = "%s"\nargs = ["--no-pci", "--log-level=lib.eal:notice", '
               '"--log-level=lib.vhost.config:warning"]\n'
               '[dataplane]\ncores = [%d]\nidle_sleep_us = 0\nmbufs = 16383\n'
               'control_socket = "%s"\nstate_dir = "%s/state"\n'
               '[switch]\nct_max_entries = %d\n\n%s\n'
               '[[attach]]\nport = "a"\nvhost = { socket = "%s/a.sock", role = "%s" }\n'
               '[[attach]]\nport = "b"\nvhost = { socket = "%s/b.sock", role = "%s" }\n'
               % (GEN_CPU, ENV["HUGE_DIR"], prefix, SW_CPU, self.ctl, self.work, self.ct_max,
                  evsd_model(model),
                  self.work, role, self.work, role))
        path = os.path.join(self.work, "evsd.toml")
        with open(path, "w") as f:
            f.write(cfg)
        self.t_exec = time.time()
        # Every scenario starts from its own config, not from a model an earlier scenario
        # applied at run time (P6) and evsd saved in its state directory.
        self.p = spawn([ENV["EVSD"], "run", "-c", path, "--discard-state"],
                       os.path.join(self.work, "evsd.log"))
        if not client:
            wait_for(lambda: self._sockets() or self.p.poll() is not None, 30, "evsd sockets")
            if self.p.poll() is not None:
                raise RuntimeError("evsd exited early (see evsd.log)")

    def _sockets(self):
        return all(os.path.exists(os.path.join(self.work, s)) for s in ("a.sock", "b.sock"))

    def ctl_cmd(self, *args, timeout=60):
        return run([ENV["EVSD"], "ctl", "-s", self.ctl] + list(args), timeout=timeout)

    def window_start(self):
        self.ctl_cmd("stats-reset")

    def collect(self):
        th = json.loads(self.ctl_cmd("--json", "show", "threads"))
        t = [x for x in th if x.get("core") == SW_CPU] or th
        cpp = t[0].get("cycles_per_packet") if t else None
        ports = json.loads(self.ctl_cmd("--json", "show", "ports"))
        # Per port: what evsd counted and dropped (by reason) in the window, to tell a switch
        # drop from a generator one.
        pc = {p["name"]: {k: p.get(k) for k in ("rx_packets", "tx_packets", "drops",
                                                 "egress_drops", "pmd")} for p in ports}
        return {"cycles_per_packet": cpp, "busy_pct": t[0].get("busy_pct") if t else None,
                "threads": th, "ports": pc}

    def apply_update(self, n):
        path = os.path.join(self.work, "update.json")
        with open(path, "w") as f:
            json.dump(evsd_update_model_json(n), f)
        t = time.time()
        self.ctl_cmd("apply", path, timeout=120)
        return time.time() - t

    def stop(self):
        if self.p and self.p.poll() is None:
            try:
                self.ctl_cmd("shutdown", timeout=10)
                self.p.wait(timeout=10)
            except Exception:
                pass
        stop(self.p)
        for s in ("a.sock", "b.sock"):
            try:
                os.unlink(os.path.join(self.work, s))
            except OSError:
                pass


class Ovs:
    name = "ovs"
    ct_max = None

    def __init__(self, work):
        self.work = work
        self.dir = os.path.join(work, "ovs")
        self.env = dict(os.environ, OVS_RUNDIR=self.dir, OVS_LOGDIR=self.dir, OVS_DBDIR=self.dir,
                        OVS_SYSCONFDIR=self.dir)
        self.db = "unix:%s/db.sock" % self.dir
        self.br = "evsbench%d" % (os.getpid() % 100000)
        self.pdb = self.p = None

    def vsctl(self, *a):
        return run(["ovs-vsctl", "--db=" + self.db, "--no-wait", "--timeout=30"] + list(a),
                   env=self.env)

    def appctl(self, *a):
        return run(["ovs-appctl", "-t", "%s/ovs-vswitchd.%d.ctl" % (self.dir, self.p.pid)]
                   + list(a), env=self.env)

    def ofctl(self, *a, timeout=60):
        return run(["ovs-ofctl", "-O", "OpenFlow13"] + list(a), env=self.env, timeout=timeout)

    def start(self, model, client=False):
        # OVS is always the vhost-user client here (dpdkvhostuserclient): the generator serves.
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        run(["ovsdb-tool", "create", "%s/conf.db" % self.dir, OVS_SCHEMA])
        self.pdb = spawn(["ovsdb-server", "%s/conf.db" % self.dir,
                          "--remote=punix:%s/db.sock" % self.dir,
                          "--unixctl=%s/ovsdb-server.ctl" % self.dir,
                          "--pidfile=%s/ovsdb-server.pid" % self.dir],
                         os.path.join(self.dir, "ovsdb-server.log"), env=self.env)
        wait_for(lambda: os.path.exists("%s/db.sock" % self.dir), 10, "ovsdb-server socket")
        prefix = "evsb-ovs-%d" % os.getpid()
        PREFIXES.append(prefix)
        self.vsctl("init")
        self.vsctl("set", "Open_vSwitch", ".",
                   "other_config:dpdk-init=true",
                   "other_config:dpdk-lcore-mask=0x%x" % (1 << GEN_CPU),
                   "other_config:pmd-cpu-mask=0x%x" % (1 << SW_CPU),
                   "other_config:dpdk-socket-mem=512",
                   "other_config:dpdk-hugepage-dir=%s" % ENV["HUGE_DIR"],
                   'other_config:dpdk-extra="--file-prefix=%s --no-pci --no-telemetry '
                   '--in-memory --log-level=lib.eal:notice"' % prefix)
        self.vsctl("add-br", self.br, "--", "set", "bridge", self.br, "datapath_type=netdev",
                   "protocols=OpenFlow10,OpenFlow13")
        for i, n in ((1, "a"), (2, "b")):
            self.vsctl("add-port", self.br, n, "--", "set", "Interface", n,
                       "type=dpdkvhostuserclient",
                       "options:vhost-server-path=%s/%s.sock" % (self.work, n),
                       "ofport_request=%d" % i)
        link = os.path.join(self.dir, "ovs-vswitchd")
        os.symlink(OVS_LIB, link)  # ovs-appctl finds the daemon by this program name
        self.t_exec = time.time()
        self.p = spawn([link, self.db, "--pidfile=%s/ovs-vswitchd.pid" % self.dir,
                        "-vconsole:off", "--log-file=%s/ovs-vswitchd.log" % self.dir],
                       os.path.join(self.dir, "ovs-vswitchd.out"), env=self.env)
        ctl = "%s/ovs-vswitchd.%d.ctl" % (self.dir, self.p.pid)
        wait_for(lambda: os.path.exists(ctl) or self.p.poll() is not None, 60, "ovs-vswitchd")
        if self.p.poll() is not None:
            raise RuntimeError("ovs-vswitchd exited (see %s/ovs-vswitchd.log)" % self.dir)
        mgmt = "%s/%s.mgmt" % (self.dir, self.br)
        wait_for(lambda: os.path.exists(mgmt) or self.p.poll() is not None, 60, "OVS bridge")
        if self.p.poll() is not None:
            raise RuntimeError("ovs-vswitchd exited (see %s/ovs-vswitchd.log)" % self.dir)
        if model == "full":
            self.ofctl("add-meter", self.br, "meter=1,kbps,burst,band=type=drop,rate=100000000,"
                       "burst_size=1000000")
        flows = os.path.join(self.dir, "flows.txt")
        with open(flows, "w") as f:
            f.write("\n".join(ovs_flows(model)) + "\n")
        if self.ct_max:
            self.appctl("dpctl/ct-set-maxconns", str(self.ct_max))
        self.ofctl("del-flows", self.br)
        self.ofctl("add-flows", self.br, flows)

    def window_start(self):
        self.appctl("dpif-netdev/pmd-stats-clear")

    def collect(self):
        out = self.appctl("dpif-netdev/pmd-stats-show")
        m = re.search(r"avg processing cycles per packet:\s*([\d.]+)", out)
        b = re.search(r"processing cycles:\s*\d+\s*\(([\d.]+)%\)", out)
        return {"cycles_per_packet": float(m.group(1)) if m else None,
                "busy_pct": float(b.group(1)) if b else None, "pmd_stats": out}

    def apply_update(self, n):
        path = os.path.join(self.dir, "update.txt")
        with open(path, "w") as f:
            f.write("\n".join(ovs_update_flows(n)) + "\n")
        t = time.time()
        self.ofctl("add-flows", self.br, path, timeout=120)
        return time.time() - t

    def stop(self):
        if self.p and self.p.poll() is None:
            try:
                self.appctl("exit")
                self.p.wait(timeout=15)
            except Exception:
                pass
        stop(self.p)
        stop(self.pdb)


class Testpmd:
    name = "testpmd"

    def __init__(self, work):
        self.work = work
        self.p = None

    def start(self, model, client=False):
        prefix = "evsb-tp-%d" % os.getpid()
        PREFIXES.append(prefix)
        c = ",client=1" if client else ""
        cmd = ["stdbuf", "-oL", "dpdk-testpmd", "--lcores", "0@%d,1@%d" % (GEN_CPU, SW_CPU),
               "--in-memory", "--huge-dir", ENV["HUGE_DIR"], "-m", "512", "--no-pci",
               "--no-telemetry", "--file-prefix", prefix, "--log-level=lib.eal:notice",
               "--log-level=lib.vhost.config:warning",
               "--vdev", "net_vhost0,iface=%s/a.sock,queues=1%s" % (self.work, c),
               "--vdev", "net_vhost1,iface=%s/b.sock,queues=1%s" % (self.work, c), "--",
               "--forward-mode=io", "--nb-cores=1", "--total-num-mbufs=16384", "--auto-start",
               "--stats-period", "1000"]
        self.t_exec = time.time()
        self.p = spawn(cmd, os.path.join(self.work, "testpmd.log"), stdin=subprocess.DEVNULL)
        if not client:
            wait_for(lambda: (os.path.exists(self.work + "/a.sock")
                              and os.path.exists(self.work + "/b.sock"))
                     or self.p.poll() is not None, 30, "testpmd sockets")
            if self.p.poll() is not None:
                raise RuntimeError("testpmd exited early (see testpmd.log)")

    def window_start(self):
        pass

    def collect(self):
        return {"cycles_per_packet": None, "busy_pct": None}

    def stop(self):
        stop(self.p, signal.SIGINT)
        for s in ("a.sock", "b.sock"):
            try:
                os.unlink(os.path.join(self.work, s))
            except OSError:
                pass


# ----------------------------------------------------------------------------------------------
# one window

def window(sw, scn, duration, warmup, tag):
    """Runs one window of scenario scn on switch sw; returns the record."""
    work = ENV["WORK"]
    rec = {"scenario": scn["id"], "switch": sw.name, "load_before": loadavg(),
           "others_busy": busy_others()}
    rec["round_trip_ns"] = pingpong()
    kind = scn["kind"]
    # Who is the vhost-user server: evsd and testpmd serve (the generator connects), OVS is the
    # client of the generator's sockets; in P7 every switch is the client so the generator is up
    # first and the switch's start-up is timed from its exec.
    gen_server = sw.name == "ovs" or kind == "startup"
    state = {}

    def on_start():
        if kind != "startup":
            sw.window_start()
        if PROFILE and sw.p:
            # Software clock sampling (no hardware counters in this VM) of the switch process.
            state["perf_data"] = os.path.join(work, "perf-%s.data" % tag)
            state["perf"] = spawn(["perf", "record", "-q", "-e", "cpu-clock", "-F", "4999",
                                   "-p", str(sw.p.pid), "-o", state["perf_data"]],
                                  os.path.join(work, "perf.log"))
        state["stat0"] = cpu_stat()
        state["t0"] = time.time()
        state["sw_rt0"] = thread_runtimes(sw.p.pid)

    def on_end():
        # At the generator's window end, so the switch's counters cover the window only.
        wall = time.time() - state["t0"]
        rec["steal_pct"] = steal_pct(state["stat0"], cpu_stat())
        rec["switch_cpu_share"] = busiest_share(state["sw_rt0"], thread_runtimes(sw.p.pid), wall)
        rec.update(sw.collect())
        if state.get("perf"):
            stop(state["perf"], signal.SIGINT)

    try:
        if gen_server:
            g = Generator(work, True, scn["gen"], duration, warmup, tag)
            g.hooks.append(on_start)
            g.end_hooks.append(on_end)
            # virtio_user servers listen one after the other: b.sock appears once a is taken.
            wait_for(lambda: os.path.exists(os.path.join(work, "a.sock"))
                     or g.p.poll() is not None, 30, "generator socket")
            if kind == "startup":
                time.sleep(0.2)
            sw.start(scn["model"], client=True)
        else:
            sw.start(scn["model"], client=False)
            g = Generator(work, False, scn["gen"], duration, warmup, tag)
            g.hooks.append(on_start)
            g.end_hooks.append(on_end)
        if kind == "update":
            g.started.wait(timeout=warmup + 60)
            time.sleep(duration / 4)
            rec["apply_s"] = round(sw.apply_update(10000), 3)
        if kind == "startup":
            g.started.wait(timeout=warmup + 60)
            time.sleep(min(1.0, duration / 2))
            rec["rss_kb"] = proc_status(sw.p.pid, "VmRSS")
            rec["hugetlb_kb"] = proc_status(sw.p.pid, "HugetlbPages")
        res = g.result()
        rec["gen_cpu_share"] = round(res.get("cpu_share", 0), 3)
        if "steal_pct" not in rec:
            raise RuntimeError("the generator's window never ended")
        rec["gen"] = res
        if state.get("perf_data"):
            rep = run(["perf", "report", "-i", state["perf_data"], "--stdio", "--no-children",
                       "--sort", "comm,sym", "--percent-limit", "0.7"], check=False, timeout=120)
            rec["profile"] = [l for l in rep.splitlines() if l.strip() and not l.startswith("#")]
        if kind == "cps":
            rec["value"] = res.get("cps")
        else:
            rec["value"] = res.get("rx_mpps")
        if kind == "startup":
            fr = res.get("first_rx_unix_ns") or 0
            rec["first_packet_s"] = round(fr / 1e9 - sw.t_exec, 3) if fr else None
        rec["load_after"] = loadavg()
        steal = max((rec.get("steal_pct") or {0: 0}).values())
        share = min(rec.get("switch_cpu_share") or 0, rec.get("gen_cpu_share") or 0)
        # Both threads busy-poll: a share well below 1 means another process took the core.
        rec["disturbed"] = steal > 5 or share < 0.9
    except Exception as e:
        rec["error"] = str(e)
        log("  %s %s: ERROR %s" % (scn["id"], sw.name, e))
    finally:
        sw.stop()
        try:
            stop(g.p)
        except NameError:
            pass
        for s in ("a.sock", "b.sock"):
            try:
                os.unlink(os.path.join(work, s))
            except OSError:
                pass
    return rec


# ----------------------------------------------------------------------------------------------
# reports

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(records, scenarios, switches):
    summ = []
    for scn in scenarios:
        row = {"id": scn["id"], "name": scn["name"], "kind": scn["kind"]}
        for sw in switches:
            rs = [r for r in records if r["scenario"] == scn["id"] and r["switch"] == sw
                  and "error" not in r]
            if not rs:
                if any(r["scenario"] == scn["id"] and r["switch"] == sw for r in records):
                    row[sw] = {"error": [r.get("error") for r in records
                                         if r["scenario"] == scn["id"] and r["switch"] == sw][0]}
                continue
            good = [r for r in rs if not r.get("disturbed")] or rs
            vals = [r["value"] for r in good if r.get("value") is not None]
            d = {"windows": len(rs), "used": len(good),
                 "median": med(vals), "min": min(vals) if vals else None,
                 "max": max(vals) if vals else None,
                 "cycles_per_packet": med([r.get("cycles_per_packet") for r in good]),
                 "round_trip_ns": med([r.get("round_trip_ns") for r in good]),
                 "loss_pct": med([r["gen"].get("loss_pct") for r in good]),
                 "lat_p99_ns": med([(r["gen"].get("latency") or {}).get("p99_ns")
                                    for r in good])}
            if scn["kind"] == "update":
                d["apply_s"] = med([r.get("apply_s") for r in good])
                d["lost"] = med([r["gen"].get("loss_packets") for r in good])
            if scn["kind"] == "startup":
                d["rss_mb"] = med([(r.get("rss_kb") or 0) / 1024 for r in good])
                d["hugetlb_mb"] = med([(r.get("hugetlb_kb") or 0) / 1024 for r in good])
                d["first_packet_s"] = med([r.get("first_packet_s") for r in good])
            row[sw] = d
        e, o, c = (row.get(s, {}).get("median") for s in ("evsd", "ovs", "testpmd"))
        row["evsd_vs_ovs"] = round(e / o, 2) if e and o else None
        row["evsd_vs_ceiling"] = round(e / c, 2) if e and c else None
        summ.append(row)
    return summ


def fmt(x, nd=2):
    if x is None:
        return "–"
    if isinstance(x, float):
        return ("%." + str(nd) + "f") % x
    return str(x)


def spread(d, scale=1.0, nd=2):
    if not d or d.get("median") is None:
        return (d or {}).get("error") and "error" or "–"
    m = d["median"] * scale
    if d["windows"] > 1:
        return "%s (%s–%s)" % (fmt(m, nd), fmt(d["min"] * scale, nd), fmt(d["max"] * scale, nd))
    return fmt(m, nd)


def markdown(meta, summ):
    L = ["# evsd vs Open vSwitch-DPDK vs testpmd (ceiling)", "",
         "Run %s, mode %s (%s × %s s windows, warm-up %s s), switch PMD on CPU %d, generator "
         "(evs-pktgen) on CPU %d, hugepages. Load average before: %s; after: %s. Other busy "
         "processes at start: %s. evsd and evs-pktgen built with the %s profile%s." % (
             meta["timestamp"], meta["mode"], meta["rounds"], meta["window_s"],
             meta["warmup_s"], SW_CPU, GEN_CPU, meta["load_start"], meta["load_end"],
             ", ".join(meta["others_busy_start"]) or "none", meta.get("evsd_profile", "release"),
             "" if meta.get("evsd_profile", "release") == "release"
             else " (not the product's figures: a smoke run of the harness)"),
         "",
         "Throughput: Mpps delivered by the switch, both directions summed (64-byte frames unless "
         "noted); median (min–max) of the undisturbed windows. cyc/pkt: busy cycles per packet "
         "of the switch's forwarding core (evsd: `evsd ctl show threads`; OVS: `pmd-stats-show` "
         "avg processing cycles per packet). rt: core-to-core round trip before the windows "
         "(50–80 ns near, 300+ ns far).", "",
         "| scenario | evsd | OVS | ceiling | evsd/OVS | evsd/ceil | evsd cyc/pkt | OVS cyc/pkt "
         "| rt ns | evsd loss % | OVS loss % |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summ:
        if r["kind"] != "tput":
            continue
        e, o, c = r.get("evsd", {}), r.get("ovs", {}), r.get("testpmd", {})
        L.append("| %s %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["id"], r["name"], spread(e), spread(o), spread(c), fmt(r["evsd_vs_ovs"]),
            fmt(r["evsd_vs_ceiling"]), fmt(e.get("cycles_per_packet"), 0),
            fmt(o.get("cycles_per_packet"), 0),
            "/".join(fmt(x.get("round_trip_ns"), 0) for x in (e, o, c) if x),
            fmt(e.get("loss_pct")), fmt(o.get("loss_pct"))))
    L += ["", "| scenario | evsd | OVS | ceiling | evsd/OVS |", "|---|---|---|---|---|"]
    for r in summ:
        e, o, c = r.get("evsd", {}), r.get("ovs", {}), r.get("testpmd", {})
        if r["kind"] == "cps":
            L.append("| %s %s (kconn/s, ACKs reaching B) | %s | %s | %s | %s |" % (
                r["id"], r["name"], spread(e, 1e-3, 1), spread(o, 1e-3, 1), spread(c, 1e-3, 1),
                fmt(r["evsd_vs_ovs"])))
        elif r["kind"] == "update":
            L.append("| %s %s: time to apply 10k changes (s) / packets lost / Mpps | %s / %s / %s "
                     "| %s / %s / %s | – | – |" % (
                         r["id"], r["name"], fmt(e.get("apply_s"), 3), fmt(e.get("lost"), 0),
                         fmt(e.get("median")), fmt(o.get("apply_s"), 3), fmt(o.get("lost"), 0),
                         fmt(o.get("median"))))
        elif r["kind"] == "startup":
            L.append("| %s %s: RSS MB (+hugetlb MB) / exec→first packet s | %s (+%s) / %s | "
                     "%s (+%s) / %s | %s (+%s) / %s | – |" % (
                         r["id"], r["name"], fmt(e.get("rss_mb"), 1), fmt(e.get("hugetlb_mb"), 0),
                         fmt(e.get("first_packet_s"), 3), fmt(o.get("rss_mb"), 1),
                         fmt(o.get("hugetlb_mb"), 0), fmt(o.get("first_packet_s"), 3),
                         fmt(c.get("rss_mb"), 1), fmt(c.get("hugetlb_mb"), 0),
                         fmt(c.get("first_packet_s"), 3)))
    errs = [(r["id"], s, r[s]["error"]) for r in summ for s in ("evsd", "ovs", "testpmd")
            if isinstance(r.get(s), dict) and "error" in r[s]]
    if errs:
        L += ["", "Errors:"] + ["- %s %s: %s" % e for e in errs]
    L += ["", "Raw windows (steal, CPU shares, latency, per-direction rates): %s" %
          meta["json_file"], ""]
    return "\n".join(L)


def svg(summ, title):
    rows = [r for r in summ if r["kind"] == "tput"]
    sws = [("evsd", "#2b7bba"), ("ovs", "#e08a1e"), ("testpmd", "#8c8c8c")]
    vmax = max([r.get(s, {}).get("max") or 0 for r in rows for s, _ in sws] + [1])
    W, H, left, top, bottom = 900, 420, 60, 40, 90
    gw = (W - left - 20) / max(len(rows), 1)
    bw = gw * 0.8 / len(sws)
    ph = H - top - bottom
    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
         'font-family="sans-serif" font-size="11">' % (W, H),
         '<rect width="100%" height="100%" fill="white"/>',
         '<text x="%d" y="20" font-size="14">%s</text>' % (left, title)]
    for i in range(6):
        v = vmax * i / 5
        y = top + ph - ph * i / 5
        o.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (left, W - 20, y, y))
        o.append('<text x="%d" y="%.1f" text-anchor="end">%.1f</text>' % (left - 5, y + 4, v))
    o.append('<text x="15" y="%d" transform="rotate(-90 15 %d)">Mpps</text>'
             % (top + ph / 2, top + ph / 2))
    for gi, r in enumerate(rows):
        x0 = left + gi * gw + gw * 0.1
        for si, (s, col) in enumerate(sws):
            d = r.get(s) or {}
            v = d.get("median")
            if v is None:
                continue
            h = ph * v / vmax
            x = x0 + si * bw
            o.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>'
                     % (x, top + ph - h, bw - 2, h, col))
            if d.get("min") is not None and d.get("windows", 1) > 1:
                y1, y2 = top + ph - ph * d["min"] / vmax, top + ph - ph * d["max"] / vmax
                xm = x + (bw - 2) / 2
                o.append('<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="black"/>'
                         % (xm, xm, y1, y2))
            o.append('<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%.2f</text>'
                     % (x + bw / 2, top + ph - h - 3, v))
        o.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'
                 % (x0 + gw * 0.4, top + ph + 15, r["id"]))
    for si, (s, col) in enumerate(sws):
        x = left + si * 150
        o.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/>' % (x, H - 40, col))
        o.append('<text x="%d" y="%d">%s</text>'
                 % (x + 16, H - 30, {"testpmd": "testpmd io (ceiling)", "ovs": "OVS-DPDK"}
                    .get(s, s)))
    o.append("</svg>")
    return "\n".join(o)


# ----------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s windows")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--window", type=float)
    ap.add_argument("--warmup", type=float)
    ap.add_argument("--only", help="comma-separated scenario ids (P1,P3,...)")
    ap.add_argument("--switches", default="evsd,ovs,testpmd")
    ap.add_argument("--wait-idle", type=float, default=None,
                    help="wait up to this many seconds for load average < --max-load")
    ap.add_argument("--max-load", type=float, default=1.0)
    ap.add_argument("--profile", action="store_true",
                    help="sample the switch with perf (cpu-clock) in each window; top symbols "
                         "go to the JSON")
    a = ap.parse_args()
    global PROFILE
    PROFILE = a.profile
    for k in ("EVSD", "PKTGEN", "HUGE_DIR", "WORK", "RESULTS"):
        ENV[k] = os.environ[k]
    rounds = a.rounds or (1 if a.quick else 3)
    # 3 rounds of 5 s windows per switch and scenario keep the full run under 20 minutes.
    win = a.window or (2.0 if a.quick else 5.0)
    warm = a.warmup if a.warmup is not None else (1.0 if a.quick else 2.0)
    wait_idle = a.wait_idle if a.wait_idle is not None else (0 if a.quick else 120)
    scenarios = SCENARIOS
    if a.only:
        ids = a.only.split(",")
        scenarios = [s for s in SCENARIOS if s["id"] in ids]
    names = a.switches.split(",")

    end = time.time() + wait_idle
    while loadavg()[0] > a.max_load and time.time() < end:
        log("load average %s > %s (others: %s): waiting" % (loadavg(), a.max_load,
                                                            ", ".join(busy_others())))
        time.sleep(30)

    def on_signal(sig, frm):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)

    work = ENV["WORK"]
    ts = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    meta = {"timestamp": ts, "mode": "quick" if a.quick else "full", "rounds": rounds,
            "window_s": win, "warmup_s": warm, "load_start": loadavg(),
            "others_busy_start": busy_others(), "uname": os.uname().release,
            "evsd_profile": os.environ.get("BENCH_PROFILE", "release"),
            "json_file": "benches/results/%s.json" % ts}
    records = []
    t_start = time.time()
    try:
        for scn in scenarios:
            sws = [n for n in names if not (n == "testpmd" and scn["kind"] == "update")]
            for rnd in range(rounds):
                order = sws[rnd % len(sws):] + sws[:rnd % len(sws)]  # alternate who goes first
                for n in order:
                    sw = {"evsd": Evsd, "ovs": Ovs, "testpmd": Testpmd}[n](work)
                    if scn.get("ct_max"):
                        sw.ct_max = scn["ct_max"]
                    rec = window(sw, scn, min(win, scn.get("window", win)),
                                 min(warm, scn.get("warmup", warm)),
                                 "%s-%s-%d" % (scn["id"], n, rnd))
                    rec["round"] = rnd
                    records.append(rec)
                    v = rec.get("value")
                    log("%-8s %-8s round %d: %s  cyc/pkt %s  rt %s ns  steal %s  %s" % (
                        scn["id"], n, rnd,
                        ("%.3f kcps" % (v / 1e3)) if scn["kind"] == "cps" and v else
                        ("%.3f Mpps" % v if v is not None else "-"),
                        fmt(rec.get("cycles_per_packet"), 0), rec.get("round_trip_ns"),
                        rec.get("steal_pct"),
                        " ".join("%s=%s" % (k, rec[k]) for k in
                                 ("apply_s", "rss_kb", "first_packet_s", "error",
                                  "disturbed") if rec.get(k) is not None)))
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
    finally:
        stop_all()
    meta["load_end"] = loadavg()
    meta["elapsed_s"] = round(time.time() - t_start, 1)
    summ = summarize(records, scenarios, names)
    os.makedirs(ENV["RESULTS"], exist_ok=True)
    out = {"meta": meta, "summary": summ, "windows": records}
    path = os.path.join(ENV["RESULTS"], "%s.json" % ts)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    md = markdown(meta, summ)
    # A --quick smoke run must not replace the last real table.
    latest = "latest-quick" if a.quick else "latest"
    with open(os.path.join(ENV["RESULTS"], latest + ".md"), "w") as f:
        f.write(md)
    with open(os.path.join(ENV["RESULTS"], latest + ".svg"), "w") as f:
        f.write(svg(summ, "Mpps through one forwarding core (%s, %s)" % (ts, meta["mode"])))
    print(md)
    log("done in %.0f s; results in %s" % (meta["elapsed_s"], path))
    return 0 if records and not all("error" in r for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
