#!/usr/bin/env python3
"""The standard benchmark scenarios (tools/bench.sh runs this; docs/bench/README.md has the
results and how to read them).

Everything runs on this machine over loopback: a "cloud" qbridge standing in for the
upstream broker, an edge (qbridge, or mosquitto for the comparison) bridging to it, qbench
devices publishing into the edge and one qbench subscriber on the cloud. Each scenario
writes its JSON to the output directory; at the end come PNG plots (gnuplot) and a
Markdown table.

  throughput  max end-to-end msg/s, QoS 0 and 1, 64 B and 1 KiB, 1 and 100 publishers,
              TCP and QUIC south, QUIC and TCP bridge; mosquitto as the edge beside it
  fanin       10,000 QUIC devices at 1 msg/s QoS 1, keepalive 30 s, through one bridge
  handshakes  QUIC full, resumed, 0-RTT; TLS over TCP: per second and per edge CPU second
  memory      edge RSS per idle session, QUIC and TCP, at 1,000 and 10,000 sessions
  scaling     one edge worker against two on a fan-in workload

--smoke runs every scenario small and short (under a minute) into a temporary directory.
"""
import argparse
import atexit
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import base64

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HZ = os.sysconf("SC_CLK_TCK")
PROCS = []


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def cleanup():
    for p in PROCS:
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + 10
    for p in PROCS:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


atexit.register(cleanup)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


def spawn(argv, out, err, cpus=None):
    if cpus:
        argv = ["taskset", "-c", cpus] + argv
    with open(out, "w") as o, open(err, "w") as e:  # the child keeps its own copies
        p = subprocess.Popen(argv, stdout=o, stderr=e, stdin=subprocess.DEVNULL)
    PROCS.append(p)
    return p


def stop(p, timeout=15):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ  # utime, stime


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Qbridge:
    """One qbridge process from a TOML text; its ports from the first line it prints."""

    def __init__(self, b, name, toml, cpus=None):
        self.name = name
        path = os.path.join(b.work, name + ".toml")
        with open(path, "w") as f:
            f.write(toml)
        out, self.log = os.path.join(b.work, name + ".out"), os.path.join(b.work, name + ".log")
        self.p = spawn([b.qbridge, "--config", path], out, self.log, cpus)
        self.pid = self.p.pid
        for _ in range(150):
            with open(out) as f:
                line = f.readline()
            if line.endswith("\n"):
                self.ports = json.loads(line)
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not start: {open(self.log).read()[-2000:]}")

    def rest(self, path):
        req = urllib.request.Request(f"http://127.0.0.1:{self.ports['http_port']}{path}")
        req.add_header("Authorization", "Basic " + base64.b64encode(b"admin:bench").decode())
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def bridge(self):
        try:
            return self.rest("/api/v4/bridges/cloud").get("data", {})
        except Exception:
            return {}

    def wait_bridge(self):
        for _ in range(100):
            if self.bridge().get("connected"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: the bridge did not come up: {open(self.log).read()[-2000:]}")

    def stop(self):
        stop(self.p)


class Mosquitto:
    """mosquitto as the edge: a TCP listener and a bridge to the cloud's TCP listener."""

    def __init__(self, b, cloud_tcp_port):
        self.port = free_port()
        conf = os.path.join(b.work, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"""listener {self.port} 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 100000
max_inflight_messages 1000
connection cloud
address 127.0.0.1:{cloud_tcp_port}
bridge_protocol_version mqttv311
cleansession true
keepalive_interval 30
topic q0/# out 0 "" edge/
topic q1/# out 1 "" edge/
""")
        self.log = os.path.join(b.work, "mosquitto.log")
        self.p = spawn(["mosquitto", "-c", conf], self.log, self.log)
        self.pid = self.p.pid
        time.sleep(1.0)  # listener and bridge up (mosquitto prints nothing machine-readable)
        if self.p.poll() is not None:
            raise RuntimeError("mosquitto did not start: " + open(self.log).read()[-2000:])

    def stop(self):
        stop(self.p)


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Bench:
    def __init__(self, args):
        self.a = args
        self.smoke = args.smoke
        self.qbridge = args.qbridge
        self.qbench = args.qbench
        self.work = tempfile.mkdtemp(prefix="qbridge-bench-")
        # atexit runs last-registered first: the processes stop (cleanup) before this goes.
        atexit.unregister(cleanup)
        atexit.register(shutil.rmtree, self.work, True)
        atexit.register(cleanup)
        self.certs = os.path.join(self.work, "certs")
        subprocess.run([os.path.join(ROOT, "tools/demo_certs.sh"), self.certs], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.out = args.out
        os.makedirs(self.out, exist_ok=True)
        self.results = {}
        self.n = 0

    # --- topology -------------------------------------------------------------------------------
    def listener_tls(self):
        return f'certfile = "{self.certs}/server.pem"\nkeyfile = "{self.certs}/server.key"\n'

    def cloud(self):
        # The subscribers take what the cloud delivers through a shared subscription; a burst
        # they are slower for waits in the cloud's queues (not dropped at 2,048).
        return Qbridge(self, "cloud", f"""[mqtt]
max_mqueue_len = 262144

[listeners.quic]
bind = "127.0.0.1:0"
{self.listener_tls()}strict_control_stream_keepalive = true

[listeners.tcp]
bind = "127.0.0.1:0"

[http_server]
bind = "127.0.0.1:0"
username = "admin"
password = "bench"
""")

    def edge(self, cloud, bridge="quic", workers=1, cpus=None):
        server = (f"mqtt-quic://127.0.0.1:{cloud.ports['quic_port']}" if bridge == "quic"
                  else f"mqtt-tcp://127.0.0.1:{cloud.ports['tcp_port']}")
        e = Qbridge(self, "edge", f"""[dataplane]
workers = {workers}

[listeners.quic]
bind = "127.0.0.1:0"
max_connections = 20000
{self.listener_tls()}
[listeners.tcp]
bind = "127.0.0.1:0"

[listeners.ssl]
bind = "127.0.0.1:0"
{self.listener_tls()}
[http_server]
bind = "127.0.0.1:0"
username = "admin"
password = "bench"

[bridges.mqtt.cloud]
server = "{server}"
proto_ver = 5
clientid = "edge-bench"
keepalive = "10s"
quic_keepalive = "5s"
quic_idle_timeout = "30s"
ssl = {{ cacertfile = "{self.certs}/ca.pem", server_name = "localhost" }}
data_streams = 2
forwards = [
  {{ local_topic = "q1/#", remote_topic = "", prefix = "edge/", qos = 1, stream = 0 }},
  {{ local_topic = "q0/#", remote_topic = "", prefix = "edge/", qos = 0, stream = 1 }},
]
""", cpus)
        e.wait_bridge()
        return e

    def run_qbench(self, mode, transport, port, extra, name):
        self.n += 1
        out = os.path.join(self.work, f"{name}-{self.n}.json")
        err = os.path.join(self.work, f"{name}-{self.n}.log")
        argv = [self.qbench, mode, "--transport", transport, "--server", f"127.0.0.1:{port}",
                "--ca", f"{self.certs}/ca.pem"] + [str(x) for x in extra]
        p = spawn(argv, out, err)
        p.out, p.err = out, err
        return p

    @staticmethod
    def summary(p, timeout):
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            stop(p)
        try:
            with open(p.out) as f:
                return json.loads(f.readline())
        except Exception:
            log("qbench gave no summary:", open(p.err).read()[-1500:])
            return {}

    def save(self, name, data):
        self.results[name] = data
        with open(os.path.join(self.out, name + ".json"), "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")

    # --- (a) throughput ---------------------------------------------------------------------------
    def one_flow(self, edge_pid, south_port, transport, cloud, qos, size, pubs, secs, tag, edge=None):
        """pubs publishers into the edge, four subscribers sharing the stream on the cloud;
        edge CPU per delivered message over the whole run."""
        topic = f"q{qos}/{tag}"
        sub = self.run_qbench("sub", "quic", cloud.ports["quic_port"],
                              ["--topic", f"$share/bench/edge/{topic}/#", "--conns", 4, "--qos", qos,
                               "--seconds", secs + 30, "--quiet", 4], "sub")
        time.sleep(0.7)
        rate = (1000000 if size <= 64 else 300000) if qos == 0 else 400000
        c0 = cpu_seconds(edge_pid)
        pub = self.run_qbench("pub", transport, south_port,
                          ["--topic", f"{topic}/%i", "--qos", qos, "--size", size, "--conns", pubs,
                           "--rate", rate, "--seconds", secs, "--inflight", 1000], "pub")
        p = self.summary(pub, secs + 60)
        s = self.summary(sub, 60)
        c1 = cpu_seconds(edge_pid)
        got = s.get("received", 0)
        # Over the time messages arrived in, first to last (a backlog drained after the
        # publishers stopped counts against the rate), never less than the publishers ran.
        active = s.get("delivering_seconds") or sum(1 for e in s.get("series", []) if e.get("received"))
        drops = (edge.bridge().get("traffic", {}).get("drops") if edge else None)
        return {
            "qos": qos, "size": size, "publishers": pubs, "south": transport,
            "offered_msg_s": p.get("offered_rate", 0), "sent": p.get("sent", 0), "acked": p.get("acked"),
            "refused": p.get("ack_failed"),
            "delivered": got, "edge_bridge_drops": drops,
            "delivered_msg_s": got / max(p.get("seconds", secs), active, 1e-9),
            "edge_cpu_us_per_msg": (c1 - c0) * 1e6 / got if got else None,
            "latency_p50_ms": s.get("latency_p50_ms"), "latency_p99_ms": s.get("latency_p99_ms"),
            "missing": s.get("missing"), "duplicates": s.get("duplicates"),
            # Exact, where "missing" is what the subscribers could see: holes below the highest
            # sequence number each publisher reached them with (a lost tail is not a hole).
            "not_delivered": max(0, p.get("sent", 0) - (got - (s.get("duplicates") or 0))),
            "publisher_limit": p.get("limit"), "publisher_limit_reason": p.get("limit_reason"),
            "subscriber_cpu_pct": s.get("cpu_pct"), "subscriber_limit": s.get("limit"),
        }

    def throughput(self):
        secs = 1 if self.smoke else self.a.seconds
        qoss, sizes, pubs = ((0,), (64,), (1,)) if self.smoke else ((0, 1), (64, 1024), (1, 100))
        souths = ("quic",) if self.smoke else ("tcp", "quic")
        bridges = ("quic",) if self.smoke else ("quic", "tcp")
        rows = []
        # A fresh cloud and edge per row: no row inherits another's backlog.
        for bridge in bridges:
            for south in souths:
                for qos in qoss:
                    for size in sizes:
                        for n in pubs:
                            cloud = self.cloud()
                            edge = self.edge(cloud, bridge)
                            port = edge.ports["quic_port" if south == "quic" else "tcp_port"]
                            r = self.one_flow(edge.pid, port, south, cloud, qos, size, n, secs,
                                              f"{bridge}{south}{size}x{n}", edge)
                            r.update(edge="qbridge", bridge=bridge, bridge_reconnects=edge.bridge().get("reconnects"))
                            log("throughput", json.dumps(r))
                            rows.append(r)
                            edge.stop()
                            cloud.stop()
        # mosquitto as the edge, the same devices over TCP, bridging over TCP to the same cloud.
        if shutil.which("mosquitto"):
            for qos in qoss:
                for size in sizes:
                    for n in pubs:
                        cloud = self.cloud()
                        m = Mosquitto(self, cloud.ports["tcp_port"])
                        r = self.one_flow(m.pid, m.port, "tcp", cloud, qos, size, n, secs, f"mosq{size}x{n}")
                        r.update(edge="mosquitto", bridge="tcp")
                        log("throughput", json.dumps(r))
                        rows.append(r)
                        m.stop()
                        cloud.stop()
        self.save("throughput", {"seconds": secs, "rows": rows})

    # --- (b) fan-in ---------------------------------------------------------------------------------
    def fanin(self):
        conns = 200 if self.smoke else self.a.fanin_conns
        if not self.smoke and self.a.fanin_seconds < 10:
            raise ValueError("--fanin-seconds: at least 10")
        secs = 3 if self.smoke else self.a.fanin_seconds
        cloud = self.cloud()
        edge = self.edge(cloud, "quic")
        sub = self.run_qbench("sub", "quic", cloud.ports["quic_port"],
                          ["--topic", "edge/q1/fanin/#", "--qos", 1, "--seconds", secs + 120, "--quiet", 5], "sub")
        time.sleep(0.7)
        rss0 = rss_kib(edge.pid)
        c0 = cpu_seconds(edge.pid)
        pub = self.run_qbench("pub", "quic", edge.ports["quic_port"],
                          ["--topic", "q1/fanin/%i", "--qos", 1, "--conns", conns, "--conn-rate", 1,
                           "--keepalive", 30, "--ramp", 500, "--seconds", secs], "pub")
        peak = rss0
        bridge_series, t0, last_cpu = [], time.time(), c0
        while pub.poll() is None:
            peak = max(peak, rss_kib(edge.pid))
            time.sleep(1)
            # The edge's side of the bridge once a second: what it holds and how the path is.
            b, cpu = edge.bridge(), cpu_seconds(edge.pid)
            tr, qp = b.get("traffic", {}), b.get("quic_path", {})
            bridge_series.append({"t": round(time.time() - t0, 1), "tx_messages": tr.get("tx_messages"),
                                  "inflight": tr.get("inflight"), "queued": tr.get("queued"),
                                  "srtt_ms": qp.get("srtt_ms"), "cwnd_bytes": qp.get("cwnd_bytes"),
                                  "bytes_in_flight": qp.get("bytes_in_flight"), "edge_cpu_pct": 100 * (cpu - last_cpu),
                                  "rss_kib": rss_kib(edge.pid)})
            last_cpu = cpu
        p = self.summary(pub, 1)
        s = self.summary(sub, 150)
        c1 = cpu_seconds(edge.pid)
        b = edge.bridge()
        edge.stop()
        cloud.stop()
        ka = b.get("keepalive_health", {})
        r = {
            "sessions": conns, "seconds": secs, "ramp_seconds": p.get("ramp_seconds"),
            "all_connected": p.get("connected"), "connect_failures": p.get("connect_failures"),
            "device_reconnects": p.get("reconnects"), "device_pings": p.get("pings"),
            "device_pongs": p.get("pongs"), "device_ping_timeouts": p.get("ping_timeouts"),
            "device_ping_rtt": p.get("ping_rtt"), "sent": p.get("sent"), "acked": p.get("acked"),
            "refused": p.get("ack_failed"),
            "delivered": s.get("received"), "missing": s.get("missing"), "duplicates": s.get("duplicates"),
            "latency": s.get("latency"), "bridge_reconnects": b.get("reconnects"),
            "bridge_keepalive": ka, "edge_rss_kib_before": rss0, "edge_rss_kib_peak": peak,
            "edge_cpu_pct": 100 * (c1 - c0) / max(1e-9, (p.get("seconds", secs) + (p.get("ramp_seconds") or 0))),
            "publisher_limit": p.get("limit"), "publisher_cpu_pct": p.get("cpu_pct"),
            "series": s.get("series", []), "publisher_series": p.get("series", []),
            "bridge_series": bridge_series,
        }
        log("fanin", json.dumps({k: v for k, v in r.items() if "series" not in k}))
        self.save("fanin", r)

    # --- (c) handshakes ----------------------------------------------------------------------------
    def handshakes(self):
        secs = 1 if self.smoke else self.a.seconds
        inflight = 16
        cloud = self.cloud()
        edge = self.edge(cloud, "quic")
        rows = []
        for label, transport, flags in (("QUIC full", "quic", []), ("QUIC resumed", "quic", ["--resume"]),
                                         ("QUIC 0-RTT", "quic", ["--0rtt"]), ("TLS 1.3 over TCP", "tls", []),
                                         ("plain TCP", "tcp", [])):
            port = edge.ports[{"quic": "quic_port", "tls": "tls_port", "tcp": "tcp_port"}[transport]]
            c0 = cpu_seconds(edge.pid)
            p = self.summary(self.run_qbench("connect", transport, port, ["--conns", inflight, "--seconds", secs] + flags,
                                         "connect"), secs + 30)
            c1 = cpu_seconds(edge.pid)
            n = p.get("connects", 0)
            rows.append({"kind": label, "in_flight": inflight, "per_second": p.get("rate", 0), "connections": n,
                         "edge_cpu_ms_per_handshake": (c1 - c0) * 1e3 / n if n else None,
                         "per_edge_core_second": n / (c1 - c0) if c1 > c0 else None,
                         "resumed": p.get("resumed"), "early_data_accepted": p.get("early_data_accepted"),
                         "connect_p99_ms": p.get("connect_time", {}).get("p99_ms"),
                         "qbench_cpu_pct": p.get("cpu_pct"), "qbench_limit": p.get("limit")})
            log("handshakes", json.dumps(rows[-1]))
        edge.stop()
        cloud.stop()
        self.save("handshakes", {"seconds": secs, "rows": rows})

    # --- (d) memory per idle session -------------------------------------------------------------
    def memory(self):
        sizes = (200,) if self.smoke else (1000, 10000)
        rows = []
        for transport in ("quic", "tcp"):
            for n in sizes:
                cloud = self.cloud()
                edge = self.edge(cloud, "quic")
                time.sleep(0.5)
                rss0 = rss_kib(edge.pid)
                port = edge.ports["quic_port" if transport == "quic" else "tcp_port"]
                p = self.run_qbench("pub", transport, port, ["--topic", "q0/idle/%i", "--rate", 0, "--conns", n,
                                                          "--ramp", 1000, "--keepalive", 60, "--seconds", 4], "idle")
                # Sampled in the steady part: qbench's live line says how many are up.
                rss1 = 0
                for _ in range(600):
                    time.sleep(0.25)
                    lines = open(p.err).read().splitlines()
                    m = re.search(r"up +(\d+)", lines[-1]) if lines else None
                    if m and int(m.group(1)) >= n:
                        time.sleep(1.0)
                        rss1 = rss_kib(edge.pid)
                        break
                    if p.poll() is not None:
                        break
                s = self.summary(p, 60)
                edge.stop()
                cloud.stop()
                row = {"transport": transport, "sessions": n, "rss_kib_before": rss0, "rss_kib_with_sessions": rss1,
                       "bytes_per_session": (rss1 - rss0) * 1024 / n if rss1 else None,
                       "all_connected": s.get("connected")}
                log("memory", json.dumps(row))
                rows.append(row)
        self.save("memory", {"rows": rows})

    # --- scaling: one worker against two ----------------------------------------------------------
    def scaling(self):
        secs = 1 if self.smoke else self.a.seconds
        rows = []
        for workers in (1, 2):
            cloud = self.cloud()
            edge = self.edge(cloud, "tcp", workers=workers)
            r = self.one_flow(edge.pid, edge.ports["quic_port"], "quic", cloud, 0, 64, 4 if self.smoke else 100,
                              secs, f"w{workers}", edge)
            r.update(workers=workers)
            log("scaling", json.dumps(r))
            rows.append(r)
            edge.stop()
            cloud.stop()
        self.save("scaling", {"seconds": secs, "cpus": os.cpu_count(), "rows": rows})

    # --- report ---------------------------------------------------------------------------------------
    def report(self):
        # Scenarios not run this time keep their last results (--only reruns a part).
        ran_now, loaded = sorted(self.results), []
        for name in ("throughput", "fanin", "handshakes", "memory", "scaling"):
            path = os.path.join(self.out, name + ".json")
            if name not in self.results and not self.smoke and os.path.exists(path):
                with open(path) as f:
                    self.results[name] = json.load(f)
                loaded.append(name)
        meta = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True).stdout.strip(),
            "cpus": os.cpu_count(),
            "cpu_model": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), ""),
            "smoke": self.smoke,
            "scenarios_run_at_this_commit": ran_now,
        }
        self.save("meta", meta)
        md = [f"# Benchmark results ({'smoke run' if self.smoke else 'tools/bench.sh'})", "",
              f"{meta['date']}, commit {meta['commit']}, {meta['cpus']} vCPUs ({meta['cpu_model']}). Everything "
              "(edge, cloud, qbench publishers and subscriber) shares these cores over loopback: compare "
              "rows within this page, not with other machines. How each figure is made: "
              "[docs/benchmarks.md](../benchmarks.md#standard-scenarios-toolsbenchsh).", ""]
        if loaded:
            md += [f"Run at this commit: {', '.join(ran_now)}; the other sections are from an earlier run of "
                   "`tools/bench.sh` (their JSON files are unchanged).", ""]
        t = self.results.get("throughput")
        if t:
            md += ["## Throughput end to end", "",
                   f"{t['seconds']} s per row, a fresh edge and cloud per row, publishers open loop above what "
                   "the path carries (QoS 1: each publisher keeps at most 1,000 unacknowledged). Delivered = what four "
                   "subscribers sharing the stream (`$share`) on the cloud got, over the time from their first message to their last (at least the publishers' seconds). Edge "
                   "CPU = the edge process's user+sys over the run / messages delivered. Not delivered = sent - "
                   "delivered (duplicates aside): QoS 0 dropped under overload, or QoS 1 refused to the publisher "
                   "with a failure PUBACK (0x97, the bridge's queue full) - the refused column, which for qbridge "
                   "must equal it. Limit = who qbench "
                   "says held the rate back (blank: nobody it could see).", "",
                   "| edge | bridge | south | QoS | payload | publishers | delivered msg/s | edge CPU us/msg | p99 ms | not delivered | refused (QoS 1) | limit |",
                   "|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in t["rows"]:
                limit = r["publisher_limit"] if r["publisher_limit"] != "none" else (
                    "subscriber" if r.get("subscriber_limit") == "qbench" else "")
                md.append(f"| {r['edge']} | {r['bridge']} | {r['south']} | {r['qos']} | {r['size']} B | {r['publishers']} | "
                          f"{r['delivered_msg_s']:,.0f} | {fmt(r['edge_cpu_us_per_msg'], 2)} | {fmt(r['latency_p99_ms'], 2)} | "
                          f"{r.get('not_delivered', r['missing'])} | {r.get('refused') if r['qos'] else '-'} | {limit} |")
            md += ["", "![throughput](throughput.png)", ""]
            ratios = []
            for r in t["rows"]:
                if r["edge"] != "mosquitto":
                    continue
                for q in t["rows"]:
                    if (q["edge"], q["bridge"], q["south"]) == ("qbridge", "quic", "tcp") and all(
                            q[k] == r[k] for k in ("qos", "size", "publishers")):
                        ratios.append(f"QoS {r['qos']} {r['size']} B x{r['publishers']}: "
                                      f"{q['delivered_msg_s'] / max(r['delivered_msg_s'], 1):.2f}x msg/s, "
                                      f"{fmt_ratio(r['edge_cpu_us_per_msg'], q['edge_cpu_us_per_msg'])} less edge CPU per message")
            if ratios:
                md += ["qbridge (TCP devices, QUIC bridge) against mosquitto (TCP devices, TCP bridge), same run:", ""]
                md += [f"- {x}" for x in ratios] + [""]
        f = self.results.get("fanin")
        if f:
            lat = f.get("latency") or {}
            ka = f.get("bridge_keepalive") or {}
            md += ["## Fan-in", "",
                   f"{f['sessions']:,} QUIC device sessions, 1 msg/s QoS 1 each, keepalive 30 s (PINGREQ every 15 s), "
                   f"one QUIC bridge, {f['seconds']} s after a ramp of {fmt(f['ramp_seconds'], 1)} s.", "",
                   "| figure | value |", "|---|---|",
                   f"| all sessions up | {f['all_connected']} |",
                   f"| device reconnects / connect failures | {f['device_reconnects']} / {f['connect_failures']} |",
                   f"| device PINGREQs / PINGRESPs / timeouts | {f['device_pings']} / {f['device_pongs']} / {f['device_ping_timeouts']} |",
                   f"| device PINGRESP RTT p99 / max | {fmt((f['device_ping_rtt'] or {}).get('p99_ms'), 2)} / {fmt((f['device_ping_rtt'] or {}).get('max_ms'), 2)} ms |",
                   f"| sent / acknowledged / delivered | {f['sent']} / {f['acked']} / {f['delivered']} |",
                   f"| missing / duplicates | {f['missing']} / {f['duplicates']} |",
                   f"| transit latency p50 / p99 / p99.9 / max | {fmt(lat.get('p50_ms'), 2)} / {fmt(lat.get('p99_ms'), 2)} / "
                   f"{fmt(lat.get('p999_ms'), 2)} / {fmt(lat.get('max_ms'), 2)} ms |",
                   f"| bridge reconnects | {f['bridge_reconnects']} |",
                   f"| bridge PINGREQs / PINGRESP timeouts / max gap | {ka.get('pingreqs_sent')} / {ka.get('pingresp_timeouts')} / "
                   f"{fmt(ka.get('max_pingreq_gap_ms'), 0)} ms |",
                   f"| edge RSS before / peak | {f['edge_rss_kib_before']:,} / {f['edge_rss_kib_peak']:,} KiB |",
                   f"| edge CPU | {fmt(f['edge_cpu_pct'], 0)} % of a core |",
                   f"| qbench publisher CPU, limit | {fmt(f['publisher_cpu_pct'], 0)} %, {f['publisher_limit']} |",
                   "", "![fan-in](fanin.png)", ""]
        h = self.results.get("handshakes")
        if h:
            md += ["## Handshakes", "",
                   f"qbench connect with 16 in flight for {h['seconds']} s per row: connect, handshake, CONNECT, "
                   "CONNACK, close. Per edge core second = connections / edge CPU seconds (the edge's capacity per "
                   "core, whoever was the limit).", "",
                   "| kind | per second | per edge core second | edge CPU ms each | resumed | 0-RTT accepted | qbench CPU | limit |",
                   "|---|---|---|---|---|---|---|---|"]
            for r in h["rows"]:
                md.append(f"| {r['kind']} | {r['per_second']:,.0f} | {fmt(r['per_edge_core_second'], 0)} | "
                          f"{fmt(r['edge_cpu_ms_per_handshake'], 3)} | {r['resumed']} | {r['early_data_accepted']} | "
                          f"{fmt(r['qbench_cpu_pct'], 0)} % | {r['qbench_limit']} |")
            md += ["", "![handshakes](handshakes.png)", ""]
        m = self.results.get("memory")
        if m:
            md += ["## Memory per idle session", "", "Edge RSS with the sessions connected and idle (keepalive 60 s) "
                   "minus RSS before, a fresh edge per row.", "",
                   "| transport | sessions | RSS before KiB | RSS with sessions KiB | bytes per session |", "|---|---|---|---|---|"]
            for r in m["rows"]:
                md.append(f"| {r['transport']} | {r['sessions']:,} | {r['rss_kib_before']:,} | {r['rss_kib_with_sessions']:,} | "
                          f"{fmt(r['bytes_per_session'], 0)} |")
            md.append("")
        s = self.results.get("scaling")
        if s:
            md += ["## One edge worker against two", "", f"{s['cpus']} vCPUs shared by everything; 100 QUIC publishers, "
                   "QoS 0 64 B, TCP bridge.", "", "| workers | delivered msg/s | edge CPU us/msg | limit |", "|---|---|---|---|"]
            for r in s["rows"]:
                md.append(f"| {r['workers']} | {r['delivered_msg_s']:,.0f} | {fmt(r['edge_cpu_us_per_msg'], 2)} | "
                          f"{r['publisher_limit']} |")
            if len(s["rows"]) == 2 and s["rows"][0]["delivered_msg_s"]:
                md += ["", f"Two workers / one: {s['rows'][1]['delivered_msg_s'] / s['rows'][0]['delivered_msg_s']:.2f}x."]
            md.append("")
        with open(os.path.join(self.out, "README.md"), "w") as fh:
            fh.write("\n".join(md))
        self.plots()

    def plots(self):
        if not shutil.which("gnuplot"):
            log("no gnuplot: no plots")
            return
        t = self.results.get("throughput")
        if t:
            dat = os.path.join(self.work, "throughput.dat")
            with open(dat, "w") as fh:
                for r in t["rows"]:
                    label = f"{r['edge'][:4]} {r['south']}>{r['bridge']} q{r['qos']} {r['size']}B x{r['publishers']}"
                    fh.write(f"\"{label}\" {r['delivered_msg_s']:.0f}\n")
            self.gnuplot("throughput.png", f"""set style fill solid 0.6
set boxwidth 0.7
set ylabel "delivered msg/s"
set xtics rotate by -60 font ",8"
set grid ytics
set title "End-to-end throughput (one run, all processes on {os.cpu_count()} vCPUs)"
plot "{dat}" using 0:2:xtic(1) with boxes notitle""")
        f = self.results.get("fanin")
        if f and f.get("series"):
            dat = os.path.join(self.work, "fanin.dat")
            up = {round(e["t"]): e["conns_up"] for e in f.get("publisher_series", [])}
            with open(dat, "w") as fh:
                for e in f["series"]:
                    fh.write(f"{e['t']:.0f} {e['received']} {e['latency_p99_ms']:.3f} {up.get(round(e['t']), 0)}\n")
            self.gnuplot("fanin.png", f"""set xlabel "seconds (subscriber's clock)"
set ylabel "msg/s, sessions up"
set y2label "transit p99 (ms)"
set y2tics
set ytics nomirror
set grid
set key top left
set title "Fan-in: {f['sessions']:,} QUIC sessions at 1 msg/s QoS 1"
plot "{dat}" using 1:2 with lines title "delivered msg/s", \\
     "{dat}" using 1:4 with lines title "sessions up (publisher)", \\
     "{dat}" using 1:3 axes x1y2 with lines title "p99 ms" """)
        h = self.results.get("handshakes")
        if h:
            dat = os.path.join(self.work, "handshakes.dat")
            with open(dat, "w") as fh:
                for r in h["rows"]:
                    fh.write(f"\"{r['kind']}\" {r['per_second']:.0f} {r['per_edge_core_second'] or 0:.0f}\n")
            self.gnuplot("handshakes.png", f"""set style data histograms
set style fill solid 0.6
set ylabel "connections per second"
set grid ytics
set title "Handshakes: per second, and per edge CPU-second"
plot "{dat}" using 2:xtic(1) title "per second", "" using 3 title "per edge core second" """)

    def gnuplot(self, png, script):
        path = os.path.join(self.out, png)
        full = f'set terminal pngcairo size 1000,560 font "sans,10"\nset output "{path}"\n{script}\n'
        r = subprocess.run(["gnuplot"], input=full, text=True, capture_output=True)
        if r.returncode != 0:
            log("gnuplot failed for", png, r.stderr[-500:])


def fmt(v, digits):
    return "-" if v is None else f"{v:,.{digits}f}"


def fmt_ratio(base, ours):
    if not base or not ours:
        return "-"
    return f"{base / ours:.2f}x"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="every scenario small and short, into a temporary directory")
    ap.add_argument("--only", default="throughput,fanin,handshakes,memory,scaling")
    ap.add_argument("--out", default=None, help="output directory (docs/bench; smoke: a temporary one)")
    ap.add_argument("--seconds", type=int, default=5, help="seconds per throughput and handshake row")
    ap.add_argument("--fanin-conns", type=int, default=10000)
    ap.add_argument("--fanin-seconds", type=int, default=120)
    ap.add_argument("--qbridge", default=os.path.join(ROOT, "build/release/controlplane/qbridge"))
    ap.add_argument("--qbench", default=os.path.join(ROOT, "build/release/tools/qbench"))
    a = ap.parse_args()
    smoke_out = None
    if a.out is None:
        if a.smoke:
            smoke_out = a.out = tempfile.mkdtemp(prefix="qbridge-bench-smoke-")
        else:
            a.out = os.path.join(ROOT, "docs/bench")
    b = Bench(a)
    for name in a.only.split(","):
        t0 = time.time()
        getattr(b, name)()
        log(f"{name}: {time.time() - t0:.0f} s")
    b.report()
    print(open(os.path.join(a.out, "README.md")).read())
    ok = check(b.results, a.smoke)
    if smoke_out:
        shutil.rmtree(smoke_out, True)
    return 0 if ok else 1


def check(results, smoke):
    """What must hold for the run to count: every acknowledged QoS 1 message delivered once,
    no reconnects in the fan-in, every throughput row carried something."""
    ok = True
    for r in results.get("throughput", {}).get("rows", []):
        if not r["delivered"]:
            log("throughput: nothing delivered:", json.dumps(r))
            ok = False
        # QoS 1: every message the edge accepted (PUBACK success) arrived once, and none it
        # refused (failure PUBACK 0x97: the bridge's queue was full) arrived: a publisher told
        # "refused" may send it again.
        # (A message whose PUBACK had not come back when the publisher stopped waiting counts
        # as neither accepted nor refused: delivered may exceed accepted by those.)
        accepted = (r["acked"] or 0) - (r["refused"] or 0)
        unrefused = (r["sent"] or 0) - (r["refused"] or 0)
        exact = r["acked"] == r["sent"]
        if r["qos"] == 1 and r["edge"] == "qbridge" and (
                r["duplicates"] or r["delivered"] < accepted or r["delivered"] > unrefused
                or (exact and r["delivered"] != accepted)):
            log("throughput: QoS 1 accepted messages lost, duplicated, or refused ones delivered:", json.dumps(r))
            ok = False
    f = results.get("fanin")
    if f:
        if not f["all_connected"] or f["device_reconnects"] or f["bridge_reconnects"]:
            log("fanin: sessions did not all stay up")
            ok = False
        if f["delivered"] != (f["acked"] or 0) - (f["refused"] or 0) or f["missing"] or f["duplicates"]:
            log("fanin: acknowledged messages not delivered exactly once")
            ok = False
    for r in results.get("handshakes", {}).get("rows", []):
        if not r["connections"]:
            log("handshakes: none completed:", r["kind"])
            ok = False
    for r in results.get("memory", {}).get("rows", []):
        if not r["all_connected"] or not r["rss_kib_with_sessions"]:
            log("memory: sessions did not all come up:", json.dumps(r))
            ok = False
    return ok


if __name__ == "__main__":
    sys.exit(main())
