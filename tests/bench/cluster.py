#!/usr/bin/python3
"""Redis Cluster figures: failover time, and group orders per second against one Redis.

    /usr/bin/python3 tests/bench/cluster.py [--build build] [--runs 5] [--seconds 5]
                                            [--out FILE]

failover: a 3-master, 3-replica cluster (tests/lib/rcluster.py, cluster-node-timeout
  1000 ms), one gateway x 2 workers on cluster://<all six nodes>, one client in a group
  whose channel is on the same master as wsgate:orders. That master is killed (kill -9)
  while a thread SPUBLISHes a send order to the group every 20 ms on whichever master
  serves the slot now; measured: kill -9 to the first order the client receives. Each
  run builds a new cluster. Reported: every run and the median.

fanout: 1 gateway x 2 workers; 400 groups of 2 members each (800 idle connections, the
  kernel spreading them over the workers), group channels on the 3 masters or on one
  redis-server. Two publisher processes SPUBLISH (PUBLISH against one Redis) dry-run
  close orders to random groups (parsed and matched like any order, nothing closed),
  pipelined 200 at a time, for --seconds; measured: orders the workers received on group
  channels per second (wsgate_group_channel_orders_total), after a 1 s warm-up. Redis's
  pubsub output limit is lifted for the run so that a backlog cannot cut a subscriber.
Everything runs on the same machine: on a 2-core box the publishers, the workers and
Redis share the cores, so this measures the whole path, not Redis's own ceiling.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
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
    ap.add_argument("--seconds", type=float, default=5.0)
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

def publish_loop(addrs_groups, seconds, seed):
    """addrs_groups: [(port, [group...])]; SPUBLISH (or PUBLISH with one port and
    cluster False) pipelined until the deadline."""
    import redis
    rng = random.Random(seed)
    conns = [(redis.Redis(host="127.0.0.1", port=p), gs) for p, gs in addrs_groups]
    cmd = "SPUBLISH" if len(conns) > 1 else "PUBLISH"
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        for r, gs in conns:
            pipe = r.pipeline(transaction=False)
            for _ in range(200):
                g = rng.choice(gs)
                n += 1
                order = {"op": "close", "id": "b%d-%d" % (seed, n), "group": g, "dry_run": True}
                pipe.execute_command(cmd, GROUP + g, json.dumps(order))
            pipe.execute()
    return n


def fanout_run(mode, groups, seconds):
    import websockets
    lift = ["client-output-buffer-limit pubsub 0 0 0"]
    if mode == "cluster":
        cl = rcluster.Cluster()
        for n in cl.nodes:
            n.cmd("CONFIG", "SET", "client-output-buffer-limit", "pubsub 0 0 0")
        url = cl.url
    else:
        r = harness.start_redis(config_lines=lift)
        url = r.url
    gw = gateway(url, "gwB")
    names = ["b%d" % i for i in range(groups)]
    if mode == "cluster":
        by = {}
        for g in names:
            by.setdefault(cl.owner(GROUP + g).port, []).append(g)
        parts = sorted(by.items())
    else:
        parts = [(r.port, names)]

    async def main():
        clients = []
        for g in names:
            for _ in range(2):
                clients.append(await websockets.connect(
                    "ws://127.0.0.1:%d/?group=%s" % (gw.port, g), max_queue=None))
        harness.wait_for(lambda: metric(gw, "wsgate_group_channels") >= groups, 30,
                         "group channels", 0.1)
        with multiprocessing.Pool(2) as pool:
            res = pool.starmap_async(publish_loop, [(parts, seconds + 1.0, s) for s in (1, 2)])
            time.sleep(1.0)
            c0, t0 = metric(gw, "wsgate_group_channel_orders_total"), time.monotonic()
            time.sleep(seconds)
            c1, t1 = metric(gw, "wsgate_group_channel_orders_total"), time.monotonic()
            sent = sum(res.get(120))
        for ws in clients:
            await ws.close()
        return (c1 - c0) / (t1 - t0), sent

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
    lines.append("kill -9 of a master to the first order applied again, %d runs: %s s; median "
                 "%.2f s" % (args.runs, ", ".join("%.2f" % t for t in fo), statistics.median(fo)))
    lines.append("")
    lines.append("| Redis | round | group orders received by the workers per second | "
                 "orders published |")
    lines.append("|---|---|---|---|")
    for rnd in range(1, 4):
        for mode in ("single", "cluster"):
            rate, sent = fanout_run(mode, args.groups, args.seconds)
            label = "one redis-server" if mode == "single" else "3-master cluster"
            print("fanout %s round %d: %.0f group orders/s (%d published)" % (
                label, rnd, rate, sent), flush=True)
            lines.append("| %s | %d | %.0f | %d |" % (label, rnd, rate, sent))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
