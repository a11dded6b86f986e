#!/usr/bin/python3
"""Sentinel failover figure: seconds from kill -9 of the Redis master to the first order
applied again, through real redis-sentinel processes.

  WSGATE_BUILD=build /usr/bin/python3 tests/bench/sentinel_failover.py [--rounds N]

Each round starts afresh (tests/lib/sentinels.py): one master, one replica, three
sentinels (down-after-milliseconds 1000, failover-timeout 3000, quorum 2) and one
gateway with 2 workers on --redis sentinel://...; a client of user "watch" receives a
send order published every 20 ms on whatever master the sentinels name. The master is
killed with SIGKILL; the figure is the time until the client receives the first order
published after the kill. Also printed: when the sentinels named the new master, and
orders PUBLISH delivered to no worker (lost without a durable stream).
Not part of make test (tests/integration/test_sentinel.py checks the behaviour).
"""

import argparse
import asyncio
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(os.path.dirname(HERE), "lib")]

import harness  # noqa: E402
import fleet  # noqa: E402
import sentinels  # noqa: E402


def one_round():
    dep = sentinels.Deployment()
    gws = sentinels.Gateways(dep)

    async def main():
        await fleet.until(gws.ready, 10, "/readyz 200")
        watcher = await fleet.connect(gws.url("gwS", user="watch"), "gwS", [], "watch")
        arrivals = sentinels.Arrivals(watcher)
        stream = sentinels.OrderStream(dep, "user:watch")
        t0 = time.monotonic()
        took, new, lost = await sentinels.failover_once(dep, gws, watcher, arrivals, stream)
        stream.kill()
        return took, lost, t0
    try:
        return fleet.run(main())
    finally:
        harness.cleanup_all()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    took = []
    for i in range(args.rounds):
        t, lost, _ = one_round()
        took.append(t)
        print("round %d: kill -9 to first order applied %.2f s, orders lost %d" % (i + 1, t, lost),
              flush=True)
    print("median %.2f s, min %.2f s, max %.2f s over %d rounds (down-after 1000 ms, "
          "failover-timeout 3000 ms, quorum 2 of 3)" % (statistics.median(took), min(took),
                                                        max(took), len(took)))


if __name__ == "__main__":
    main()
