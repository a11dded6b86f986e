#!/usr/bin/python3
"""Redis messages per delivered message: the broadcast channel against group channels.

    /usr/bin/python3 tests/bench/group_channels.py [--build build] [--rounds 10]
                                                   [--members 1,4,16] [--out FILE]

A fleet of 4 gateways x 2 workers on one redis-server and 1 000 groups. For each size m,
1 000 x m idle connections are opened (build/wsload, spread evenly over the gateways, the
kernel spreading each gateway's over its workers) and put m to a group at random with join
orders. Then every group gets one order per round, a dry-run close (parsed and matched
like any order, nothing closed), published first on the broadcast channel wsgate:orders
{"group": NAME}, then on the group's channel wsgate:orders:group:NAME. Measured per
published order:
  - copies: what PUBLISH answered, the messages Redis sent (one per receiving worker);
  - per delivered message: copies / m, m being the connections the order is for;
  - Redis: bytes written (INFO total_net_output_bytes) and CPU (INFO used_cpu_*);
  - workers: CPU of the 8 worker processes (/proc/PID/schedstat).
The orders of a phase are all published before the next phase starts, and a phase ends
when the workers counted every copy as received.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

GROUPS = 1000
GATEWAYS = 4
WORKERS = 2
CHANNEL = "wsgate:orders"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--members", default="1,4,16")
    ap.add_argument("--out", default=None, help="also write the table (markdown) here")
    return ap.parse_args()


def cpu_ns(pid):
    """CPU time of a (single-threaded) worker in ns: the scheduler's own count."""
    with open("/proc/%d/schedstat" % pid) as f:
        return int(f.read().split()[0])


def metric(gw, name):
    import lb
    return sum(lb.metrics(gw.admin_port)[name]["samples"].values())


def redis_stats(r):
    info = r.info()
    return info["total_net_output_bytes"], info["used_cpu_user"] + info["used_cpu_sys"]


def main():
    args = parse_args()
    os.environ["WSGATE_BUILD"] = os.path.abspath(os.path.join(REPO, args.build))
    import harness
    wsload = os.path.join(harness.BUILD, "wsload")
    rows = []
    try:
        redis = harness.start_redis()
        r = redis.client()
        gws = [harness.Gateway(flags={"--redis": redis.url, "--id": "gw%d" % k,
                                      "--log-level": "notice"},
                               workers=WORKERS, echo=False).start() for k in range(GATEWAYS)]
        for gw in gws:
            harness.wait_for(lambda: gw.log().count("redis publisher up") >= WORKERS, 10,
                             "publishers")
        pids = [pid for gw in gws for pid in gw.worker_pids().values()]
        for m in [int(x) for x in args.members.split(",")]:
            rows.append(run_size(args, harness, r, gws, pids, wsload, m))
    finally:
        import harness
        harness.cleanup_all()
    head = ("| members per group | channel | copies per order | Redis messages per delivered "
            "message | Redis bytes out per order | Redis CPU per order | worker CPU per order |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    for m, res in rows:
        for kind in ("broadcast", "group"):
            x = res[kind]
            lines.append("| %d | %s | %.2f | %.2f | %.0f B | %.1f µs | %.1f µs |" % (
                m, "wsgate:orders" if kind == "broadcast" else "wsgate:orders:group:NAME",
                x["copies"], x["copies"] / m, x["bytes"], x["redis_us"], x["workers_us"]))
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


def run_size(args, harness, r, gws, pids, wsload, m):
    n = GROUPS * m
    tmp = harness.tmp_root()
    procs, id_files = [], []
    for k, gw in enumerate(gws):
        ready, ids = os.path.join(tmp, "ready-%d-%d" % (m, k)), os.path.join(tmp, "ids-%d-%d" % (
            m, k))
        procs.append(subprocess.Popen(
            [wsload, "--host", "127.0.0.1", "--port", str(gw.port), "-n", str(n // GATEWAYS),
             "--ready-file", ready, "--ids-file", ids, "--hold-ms", "3600000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        id_files.append((ready, ids))
    try:
        for ready, ids in id_files:
            harness.wait_for(lambda: os.path.exists(ready) and os.path.exists(ids), 120,
                             "wsload ready")
        conns = []
        for _, ids in id_files:
            with open(ids) as f:
                conns += [line.split("\t")[1].strip() for line in f if "\t" in line]
        assert len(conns) == n, (len(conns), n)
        random.seed(m)
        random.shuffle(conns)
        members = {"b:%d" % g: conns[g * m:(g + 1) * m] for g in range(GROUPS)}
        joined0 = sum(metric(gw, "wsgate_order_joined_total") for gw in gws)
        pipe = r.pipeline(transaction=False)
        for g, ids in members.items():
            pipe.publish(CHANNEL, json.dumps({"op": "join", "conn": ids, "groups": [g]}))
        pipe.execute()
        harness.wait_for(lambda: sum(metric(gw, "wsgate_order_joined_total") for gw in gws)
                         - joined0 == n, 60, "%d joins" % n)
        # A connection id is <gateway>-<worker>-<nonce>-<seq>: the holders of each group.
        holders = {g: len({tuple(i.split("-")[:2]) for i in ids}) for g, ids in members.items()}
        names = list(members)
        harness.wait_for(lambda: [c for _, c in r.pubsub_numsub(
            *["%s:group:%s" % (CHANNEL, g) for g in names])] == [holders[g] for g in names],
            30, "every group channel subscribed by its holders")
        res = {}
        for kind in ("broadcast", "group"):
            res[kind] = measure(args, harness, r, gws, pids, names, kind)
        print("m=%d: holders per group %.2f; %r" % (m, sum(holders.values()) / GROUPS, res),
              file=sys.stderr)
        return m, res
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, 9)
            except OSError:
                pass
            p.wait()
        harness.wait_for(lambda: not r.pubsub_channels("%s:group:*" % CHANNEL), 30,
                         "every group channel let go")


def measure(args, harness, r, gws, pids, names, kind):
    received0 = sum(metric(gw, "wsgate_orders_received_total") for gw in gws)
    cpu0 = sum(cpu_ns(p) for p in pids)
    out0, rcpu0 = redis_stats(r)
    copies = 0
    orders = 0
    for _ in range(args.rounds):
        pipe = r.pipeline(transaction=False)
        for g in names:
            if kind == "broadcast":
                pipe.publish(CHANNEL, json.dumps({"group": g, "dry_run": True}))
            else:
                pipe.publish("%s:group:%s" % (CHANNEL, g), json.dumps({"dry_run": True}))
        copies += sum(pipe.execute())
        orders += len(names)
    harness.wait_for(lambda: sum(metric(gw, "wsgate_orders_received_total") for gw in gws)
                     - received0 >= copies, 60, "every copy received")
    out1, rcpu1 = redis_stats(r)
    cpu1 = sum(cpu_ns(p) for p in pids)
    return {"copies": copies / orders, "bytes": (out1 - out0) / orders,
            "redis_us": (rcpu1 - rcpu0) * 1e6 / orders,
            "workers_us": (cpu1 - cpu0) / 1e3 / orders}


if __name__ == "__main__":
    main()
