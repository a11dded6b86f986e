#!/usr/bin/python3
"""wsgate at scale: 1 000 000 idle connections against one gateway on this machine.

    python3 tests/bench/scale.py --out tests/bench/results       # make bench-scale
    python3 tests/bench/scale.py -n 200000 --workers 11 --procs 11 --out /tmp/s

One fresh redis-server and one fresh gateway (`--workers 52`: 20 000 open files per
process), then build/wsload ramps N connections, 500 handshakes in flight, from --procs
client processes over --sources loopback source addresses, and holds them idle while the
figures are read:

- gateway RSS per connection: summed VmRSS of the master and workers, read right after the
  workers are ready (cold, as a user meets it) and while N connections are held;
- the load generator's RSS per connection, read the same way;
- handshakes per second of the ramp and its latency;
- the kernel's share: Slab (SReclaimable + SUnreclaim) from /proc/meminfo before and after,
  which holds both ends' sockets, files and epoll entries, and PageTables; the CPU time the
  machine spent in the kernel (system + softirq) during the ramp, from /proc/stat.

The machine is shared: Slab and CPU figures are machine-wide and include whatever else ran
meanwhile. Writes scale.md and scale.json to --out. Not part of make test or make bench.
"""

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (helpers: processes, redis, the server, wsload)
from bench import BenchError, log  # noqa: E402


def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0]) * 1024
    return out


def sockstat():
    out = {}
    with open("/proc/net/sockstat") as f:
        for line in f:
            k, v = line.split(":", 1)
            it = v.split()
            out[k] = {it[i]: int(it[i + 1]) for i in range(0, len(it) - 1, 2)}
    return out


def tcp_ext():
    """Listen queue and SYN counters from /proc/net/netstat (TcpExt)."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            d = dict(zip(names.split()[1:], (int(x) for x in values.split()[1:])))
            return {k: d.get(k, 0) for k in ("ListenOverflows", "ListenDrops", "TCPReqQFullDrop",
                                              "SyncookiesSent", "TCPTimeouts")}
    return {}


def cpu_ticks():
    """Machine-wide (busy user+nice, system+irq+softirq) clock ticks."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = v[:7]
    return user + nice, system + irq + softirq


def tree_rss_median(pid, samples=3, gap=0.5):
    vals = []
    for _ in range(samples):
        vals.append(bench.tree_rss(pid))
        time.sleep(gap)
    return int(statistics.median(vals))


def fmt_bytes(n):
    for unit, div in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if abs(n) >= div:
            return f"{n / div:,.2f} {unit}"
    return f"{n:,.0f} B"


def run(cfg):
    need = cfg.n * 12 * 1024 + (2 << 30)  # ~10.3 KB of kernel per connection, both ends
    avail = meminfo()["MemAvailable"]
    if avail < need:
        raise BenchError(f"MemAvailable is {fmt_bytes(avail)}; {cfg.n} connections need about "
                         f"{fmt_bytes(need)} (kernel sockets of both ends, gateway, client)")
    per_worker = -(-cfg.n // cfg.workers)
    per_proc = -(-cfg.n // cfg.procs)
    # SO_REUSEPORT spreads connections by hash: a worker's share varies by about its square
    # root (140 at 19 000), and a worker takes 19 968 (20 000 files, 32 kept spare)
    if per_worker > 19500 or per_proc > 19800:
        raise BenchError(f"{per_worker} connections per worker or {per_proc} per client process: "
                         "the hard limit is 20 000 open files per process; raise --workers/--procs")
    tmp = tempfile.mkdtemp(prefix="wsscale-")
    logdir = os.path.join(cfg.out, "logs")
    os.makedirs(logdir, exist_ok=True)
    res = {"n": cfg.n, "workers": cfg.workers, "procs": cfg.procs, "sources": cfg.sources,
           "inflight": cfg.inflight}
    redis = bench.Redis(logdir)
    srv = None
    try:
        srv = bench.Server("wsgate", cfg, redis, cfg.workers, os.path.join(logdir, "scale-server.log"),
                           extra=["--ping-interval", cfg.ping_interval])
        res["server_cmd"] = shlex.join(srv.cmd)
        srv.wait_ready(timeout=120)
        time.sleep(1.0)
        gw0 = tree_rss_median(srv.proc.pid)
        mem0, sock0, cpu0, ext0 = meminfo(), sockstat(), cpu_ticks(), tcp_ext()
        ready = os.path.join(tmp, "ready")
        ramp_ms = max(120000, cfg.n // 2)  # 1 M: 500 s, for a slow machine
        cmd = bench.wsload_cmd(cfg, srv, redis, cfg.n, ready=ready, hold_ms=3600000,
                               extra=["--inflight", str(cfg.inflight), "--procs", str(cfg.procs),
                                      "--sources", str(cfg.sources), "--ramp-timeout", str(ramp_ms)])
        res["wsload_cmd"] = shlex.join(cmd)
        log(f"ramping {cfg.n} connections: {res['wsload_cmd']}")
        t0 = time.monotonic()
        done = threading.Event()
        progress = []  # (s since start, TCP sockets in use on both ends, 1-min load average)

        def sample():
            while not done.wait(5.0):
                with open("/proc/loadavg") as f:
                    la = float(f.read().split()[0])
                progress.append((round(time.monotonic() - t0, 1),
                                 sockstat().get("TCP", {}).get("inuse"), la))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            load = bench.start_background(cmd, os.path.join(logdir, "scale-wsload.log"), ready,
                                          ramp_ms / 1000 + 60)
        finally:
            done.set()
            sampler.join()
        res["ramp_wall_s"] = round(time.monotonic() - t0, 1)
        res["progress"] = progress
        cpu1, ext1 = cpu_ticks(), tcp_ext()
        with open(ready) as f:
            ramp = json.load(f)["ramp"]
        log(f"ramp done: {ramp.get('ok')} ok, {ramp.get('failed')} failed, {ramp.get('rate'):.0f}/s; "
            "letting it settle")
        time.sleep(5.0)
        gw1 = tree_rss_median(srv.proc.pid)
        cl1 = tree_rss_median(load.pid)
        mem1, sock1 = meminfo(), sockstat()
        alive = load.poll() is None and srv.proc.poll() is None
    finally:
        bench.kill_all()
        if srv is not None:
            srv.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    ok = ramp.get("ok") or 0
    slab = (mem1["Slab"] - mem0["Slab"])
    sunr = (mem1["SUnreclaim"] - mem0["SUnreclaim"])
    ptab = (mem1["PageTables"] - mem0["PageTables"])
    gw = gw1 - gw0
    user_t, sys_t = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    res.update({
        "ok": ok, "failed": ramp.get("failed"), "fail_reasons": ramp.get("fail_reasons"),
        "alive_at_end": alive,
        "rate": ramp.get("rate"), "lat_p50": ramp.get("lat_p50"), "lat_p99": ramp.get("lat_p99"),
        "lat_max": ramp.get("lat_max"),
        "gateway_rss_ready": gw0, "gateway_rss_held": gw1,
        "gateway_bytes_per_conn": gw / ok if ok else None,
        "client_rss_held": cl1, "client_bytes_per_conn": cl1 / ok if ok else None,
        "slab_delta": slab, "sunreclaim_delta": sunr, "pagetables_delta": ptab,
        "kernel_bytes_per_conn": (slab + ptab) / ok if ok else None,
        "kernel_share_of_memory": (slab + ptab) / (slab + ptab + gw + cl1) if ok else None,
        "kernel_share_of_cpu": sys_t / (user_t + sys_t) if user_t + sys_t else None,
        "tcp_inuse": sock1.get("TCP", {}).get("inuse"), "tcp_inuse_before": sock0.get("TCP", {}).get("inuse"),
        "tcp_mem_pages": sock1.get("TCP", {}).get("mem"),
        "mem_available_before": mem0["MemAvailable"], "mem_available_held": mem1["MemAvailable"],
        "tcp_ext_during_ramp": {k: ext1[k] - ext0.get(k, 0) for k in ext1},
        "max_loadavg_during_ramp": max((p[2] for p in res["progress"]), default=None),
        "ramp": ramp,
    })
    return res


def report(cfg, res, machine):
    L = ["# wsgate at scale: idle connections on one machine", ""]
    L.append(f"Generated by `tests/bench/scale.py` on {machine['date']}; one run.")
    L.append("")
    L.append(f"- Machine: {machine['nproc']} CPUs, {machine['cpu']}, {machine['memory_gib']} GiB, "
             f"Linux {machine['kernel']}; load average at start {machine['loadavg_at_start']}")
    L.append(f"- Software: wsgate {machine['wsgate_commit']}, {machine['redis']}")
    L.append(f"- Gateway: `{res['server_cmd']}`")
    L.append(f"- Load: `{res['wsload_cmd']}`")
    L.append("")
    if res.get("error"):
        L += [f"**The run failed**: {res['error']}", ""]
    else:
        ok = res["ok"]
        L += ["| metric | value |", "|---|---|"]
        rows = [
            ("connections held", f"{ok:,} of {res['n']:,} ({res['failed']} failed)"),
            ("handshakes/s over the ramp", f"{res['rate']:,.0f}/s (ramp {res['ramp_wall_s']} s)"),
            ("handshake latency p50 / p99", f"{bench.fmt(res['lat_p50'])} / {bench.fmt(res['lat_p99'])} ms"),
            ("gateway RSS, workers ready", fmt_bytes(res["gateway_rss_ready"])),
            ("gateway RSS, connections held", fmt_bytes(res["gateway_rss_held"])),
            ("**gateway RSS per idle connection (cold)**", f"**{res['gateway_bytes_per_conn']:,.0f} B**"),
            ("load generator RSS per connection", f"{res['client_bytes_per_conn']:,.0f} B"),
            ("kernel: Slab + PageTables growth, both ends", fmt_bytes(res["slab_delta"] + res["pagetables_delta"])
             + f" (SUnreclaim {fmt_bytes(res['sunreclaim_delta'])})"),
            ("kernel bytes per connection, both ends", f"{res['kernel_bytes_per_conn']:,.0f} B"),
            ("kernel's share of the memory added", f"{100 * res['kernel_share_of_memory']:.0f} %"),
            ("kernel's share of busy CPU time during the ramp (machine-wide)",
             f"{100 * res['kernel_share_of_cpu']:.0f} %"),
            ("TCP sockets in use (sockstat), held", f"{res['tcp_inuse']:,}"),
            ("highest 1-minute load average during the ramp", bench.fmt(res["max_loadavg_during_ramp"])),
            ("during the ramp (TcpExt)", ", ".join(f"{k} {v:,}" for k, v in res["tcp_ext_during_ramp"].items())),
            ("MemAvailable before / held", f"{fmt_bytes(res['mem_available_before'])} / "
                                           f"{fmt_bytes(res['mem_available_held'])}"),
        ]
        L += [f"| {k} | {v} |" for k, v in rows]
        L.append("")
        L.append("Gateway RSS is summed VmRSS of the master and every worker, read right after the "
                 "workers were ready and again while the connections were held idle (median of 3 "
                 "reads each). Kernel figures are machine-wide: Slab holds both ends' TCP sockets, "
                 "socket inodes, files and epoll entries, none of which any RSS shows.")
    L.append("")
    with open(os.path.join(cfg.out, "scale.md"), "w") as f:
        f.write("\n".join(L))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1000000)
    ap.add_argument("--workers", type=int, default=52, help="gateway workers (52)")
    ap.add_argument("--procs", type=int, default=52, help="wsload processes (52)")
    ap.add_argument("--sources", type=int, default=200,
                    help="loopback source addresses (200: with 32 the kernel's port search slows the ramp)")
    ap.add_argument("--inflight", type=int, default=500)
    ap.add_argument("--ping-interval", default="10m",
                    help="the gateway's keepalive (10m): at the default 30s, 1 000 000 connections "
                         "are 33 000 ping/pong exchanges a second, which starve a ramp on 2 cores")
    ap.add_argument("--out", default=os.path.join(bench.ROOT, "tests", "bench", "results"))
    ap.add_argument("--build", default=os.path.join(bench.ROOT, "build"))
    cfg = ap.parse_args()
    cfg.wsgate = os.path.abspath(os.path.join(cfg.build, "wsgate"))
    cfg.wsload = os.path.abspath(os.path.join(cfg.build, "wsload"))
    cfg.out = os.path.abspath(cfg.out)
    os.makedirs(cfg.out, exist_ok=True)
    for tool in (cfg.wsgate, cfg.wsload):
        if not os.access(tool, os.X_OK):
            sys.exit(f"scale: {tool} is missing: build it first (make all {os.path.relpath(cfg.wsload, bench.ROOT)})")
    helptext = bench.subprocess.run([cfg.wsgate, "--help"], capture_output=True, text=True).stdout
    cfg.wsgate_has_admin = "--admin" in helptext
    cfg.wsgate_has_drain_flags = "--drain-spread" in helptext
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    machine = bench.machine_info()
    started = time.monotonic()
    try:
        res = run(cfg)
    except BenchError as e:
        res = {"n": cfg.n, "workers": cfg.workers, "procs": cfg.procs, "sources": cfg.sources,
               "error": str(e), "server_cmd": "", "wsload_cmd": ""}
    finally:
        bench.kill_all()
    res["seconds"] = round(time.monotonic() - started, 1)
    res["machine"] = machine
    with open(os.path.join(cfg.out, "scale.json"), "w") as f:
        json.dump(res, f, indent=1)
    report(cfg, res, machine)
    log(f"wrote {cfg.out}/scale.md, scale.json ({res['seconds']} s)")
    if res.get("error"):
        print(f"scale: FAILED: {res['error']}", file=sys.stderr)
        sys.exit(1)
    print(f"scale: {res['ok']:,} held, {res['gateway_bytes_per_conn']:,.0f} B of gateway RSS each, "
          f"{res['rate']:,.0f} handshakes/s, kernel {res['kernel_bytes_per_conn']:,.0f} B each "
          f"({100 * res['kernel_share_of_memory']:.0f} % of the memory added)")
    sys.exit(0 if res["ok"] == cfg.n and res["alive_at_end"] else 1)


if __name__ == "__main__":
    main()
