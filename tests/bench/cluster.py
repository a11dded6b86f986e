#!/usr/bin/python3
"""Redis Cluster figures: failover time, and group orders per second against one Redis.

    /usr/bin/python3 tests/bench/cluster.py [--build build] [--runs 5] [--orders 200000]
                                            [--out FILE]

failover: a 3-master, 3-replica cluster (tests/lib/rcluster.py, cluster-node-timeout
  1000 ms), one gateway x 2 workers on cluster://<all six nodes>, one client in a group
  whose channel is on the same master as wsgate:orders. That master is killed (kill -9)
  while a thread SPUBLISHes a send order to the group every 20 ms on whichever master
  serves the slot now; measured: kill -9 to the first order the client receives. Each
  run builds a new cluster. Reported: every run and the median.

fanout: 1 gateway x 2 workers; 400 groups of 2 members each (800 idle connections, the
  kernel spreading them over the workers), group channels on the 3 masters or on one
  redis-server. --orders dry-run close orders to random groups (parsed and matched like
  any order, nothing closed) are written by three `redis-cli --pipe` at once: one per
  master with SPUBLISH, or three to the one redis-server with PUBLISH. Measured: copies
  the workers received on group channels (wsgate_group_channel_orders_total; an order
  whose 2 members sit on both workers is 2) per second, from the start of the pipes to
  the last copy counted. Redis's pubsub output limit is lifted for the run so that a
  backlog cannot cut a subscriber. --runs 0 skips the failover part.
Everything runs on the same machine: on a 2-core box the publishers, the workers and
Redis share the cores, so this measures the whole path, not Redis's own ceiling.
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

import harness  # noqa: E402
import lb  # noqa: E402
import rcluster  # noqa: E402

GROUP = "wsgate:orders:group:"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--orders", type=int, default=200000)
    ap.add_argument("--groups", type=int, default=400)
    ap.add_argument("--out", default=None)
    return ap.parse_args()


def gateway(url, gid, workers=2):
    f = {"--id": gid, "--log-level": "notice", "--redis": url}
    gw = harness.Gateway(flags=f, workers=workers).start()
    lb.wait_ready(gw.admin_port, 20.0)
    return gw


def metric(gw, name):
    return sum(lb.metrics(gw.admin_port)[name]["samples"].values())


# --- failover ------------------------------------------------------------------------------

def failover_run():
    import websockets
    cl = rcluster.Cluster(node_timeout_ms=1000)
    gw = gateway(cl.url, "gwF")
    victim = cl.owner("wsgate:orders")
    name = next(n for n in ("f%d" % i for i in range(500)) if cl.owner(GROUP + n) is victim)
    others = [n for n in cl.alive() if n is not victim]
    stop = threading.Event()

    def publisher():
        seq = 0
        while not stop.is_set():
            seq += 1
            order = {"op": "send", "id": "o%d" % seq, "group": name, "text": "n%d" % seq}
            try:
                owner = cl.owner(GROUP + name, via=others[seq % len(others)])
                if owner is not victim:
                    owner.cmd("SPUBLISH", GROUP + name, json.dumps(order))
            except Exception:
                pass
            time.sleep(0.02)

    async def main():
        ws = await websockets.connect("ws://127.0.0.1:%d/?group=%s" % (gw.port, name))
        harness.wait_for(lambda: cl.shardnumsub(GROUP + name) >= 1, 15, "subscribed", 0.05)
        t_kill = cl.kill_master(victim.port)
        th = threading.Thread(target=publisher, daemon=True)
        th.start()
        try:
            await asyncio.wait_for(ws.recv(), 60)
            return time.monotonic() - t_kill
        finally:
            stop.set()
            th.join()

    try:
        return asyncio.run(main())
    finally:
        harness.cleanup_all()


# --- fan-out -------------------------------------------------------------------------------

def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def fanout_run(mode, groups, orders):
    """Returns (copies the workers received per second, copies, seconds)."""
    import websockets
    if mode == "cluster":
        cl = rcluster.Cluster()
        for n in cl.nodes:
            n.cmd("CONFIG", "SET", "client-output-buffer-limit", "pubsub 0 0 0")
        url = cl.url
    else:
        r = harness.start_redis(config_lines=["client-output-buffer-limit pubsub 0 0 0"])
        url = r.url
    gw = gateway(url, "gwB")
    names = ["b%d" % i for i in range(groups)]
    rng = random.Random(7)
    owner = {g: cl.owner(GROUP + g).port for g in names} if mode == "cluster" else {}
    # Three redis-cli --pipe publishers in both modes: one per master in the cluster,
    # three on the one redis-server.
    by = {}
    for i in range(orders):
        g = rng.choice(names)
        order = json.dumps({"op": "close", "id": "b%d" % i, "group": g, "dry_run": True})
        if mode == "cluster":
            by.setdefault(owner[g], []).append(resp("SPUBLISH", GROUP + g, order))
        else:
            by.setdefault(i % 3, []).append(resp("PUBLISH", GROUP + g, order))
    files = []
    for k, cmds in by.items():
        path = os.path.join(harness.tmp_root(), "pipe-%d" % k)
        with open(path, "wb") as f:
            f.write(b"".join(cmds))
        files.append((k if mode == "cluster" else r.port, path))

    async def main():
        clients = []
        for g in names:
            for _ in range(2):
                clients.append(await websockets.connect(
                    "ws://127.0.0.1:%d/?group=%s" % (gw.port, g), max_queue=None))
        harness.wait_for(lambda: metric(gw, "wsgate_group_channels") >= groups, 30,
                         "group channels", 0.1)
        c0 = metric(gw, "wsgate_group_channel_orders_total")
        t0 = time.monotonic()
        procs = []
        for port, path in files:
            with open(path, "rb") as f:
                procs.append(subprocess.Popen(["redis-cli", "-p", str(port), "--pipe"], stdin=f,
                                              stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
        last, t_last = c0, t0
        while True:
            time.sleep(0.05)
            c = metric(gw, "wsgate_group_channel_orders_total")
            now = time.monotonic()
            if c != last:
                last, t_last = c, now
            elif all(p.poll() is not None for p in procs) and now - t_last > 1.0:
                break
            if now - t0 > 120:
                raise AssertionError("workers still receiving after 120 s")
        for ws in clients:
            await ws.close()
        lost = [l for l in gw.log().splitlines() if " down" in l or "stall" in l]
        if lost:
            print("\n".join(lost[:10]), flush=True)
        return (last - c0) / (t_last - t0), last - c0, t_last - t0

    try:
        return asyncio.run(main())
    finally:
        harness.cleanup_all()


def main():
    args = parse_args()
    os.environ["WSGATE_BUILD"] = os.path.abspath(args.build)
    harness.BUILD = os.environ["WSGATE_BUILD"]
    harness.WSGATE = os.path.join(harness.BUILD, "wsgate")
    lines = ["# Redis Cluster figures", ""]
    fo = []
    for i in range(args.runs):
        t = failover_run()
        fo.append(t)
        print("failover run %d: first order applied %.2f s after kill -9" % (i + 1, t), flush=True)
    if fo:
        lines.append("kill -9 of a master to the first order applied again, %d runs: %s s; "
                     "median %.2f s" % (args.runs, ", ".join("%.2f" % t for t in fo),
                                         statistics.median(fo)))
        lines.append("")
    lines.append("| Redis | round | group order copies received by the workers per second | "
                 "received |")
    lines.append("|---|---|---|---|")
    for rnd in range(1, 4):
        for mode in ("single", "cluster"):
            rate, got, secs = fanout_run(mode, args.groups, args.orders)
            label = "one redis-server" if mode == "single" else "3-master cluster"
            print("fanout %s round %d: %.0f copies/s (%d in %.2f s)" % (
                label, rnd, rate, got, secs), flush=True)
            lines.append("| %s | %d | %.0f | %d in %.2f s |" % (label, rnd, rate, got, secs))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
