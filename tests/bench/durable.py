#!/usr/bin/python3
"""Orders lost during a 5-second Redis outage, with and without --orders-stream.

  WSGATE_BUILD=build /usr/bin/python3 tests/bench/durable.py [--rounds N] [--out DIR]

A steady flow of 50 send orders a second to one client (tests/lib/orderflow.py) runs
through each outage, with and without the stream, N rounds each (default 3):
  kill     redis-server killed (SIGKILL), started again 5 s later on the same port,
           with its data (AOF, appendfsync always)
  pause    redis-server stopped (SIGSTOP) for 5 s
  cut      the gateway's subscriber connections cut for 5 s by a proxy that drops their
           packets (tests/lib/tcpproxy.py); its other links pass
The publisher retries an order until Redis acknowledges it (XADD with the stream,
PUBLISH without); lost = acknowledged orders the client never received (after 6 s of
settling), duplicates = orders it received twice. Writes durable.json, durable.md and
durable.svg (a bar chart, no plotting library needed) to DIR (tests/bench/results).
Not part of make test: tests/integration/test_durable_faults.py asserts 0 lost with
the stream."""

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(os.path.dirname(HERE), "lib")]

import harness  # noqa: E402
import lb  # noqa: E402
import orderflow as OF  # noqa: E402
from tcpproxy import CutProxy  # noqa: E402

FAULTS = ("kill", "pause", "cut")
MODES = ("stream", "pubsub")


def one(fault, mode, down):
    redis = OF.DurableRedis().start()
    proxy = CutProxy(redis.port) if fault == "cut" else None
    flags = {"--redis": proxy.url if proxy else redis.url, "--id": "bench",
             "--log-level": "notice"}
    if mode == "stream":
        flags["--orders-stream"] = OF.STREAM
    gw = harness.Gateway(flags=flags, workers=2).start()
    try:
        lb.wait_ready(gw.admin_port, 10)
        f = {"kill": lambda: OF.kill_restart(redis, down),
             "pause": lambda: OF.sigstop(redis, down),
             "cut": lambda: OF.cut_subscribers(proxy, down)}[fault]()
        return asyncio.run(OF.run_flow(gw, redis.port, f,
                                       stream=OF.STREAM if mode == "stream" else None))
    finally:
        harness.cleanup_all()


def svg(summary, down):
    """Grouped bars: median orders lost per fault, stream against pub/sub only."""
    w, h, left, bottom, top = 560, 300, 60, 50, 40
    peak = max([s["lost_median"] for s in summary] + [1])
    scale = (h - bottom - top) / peak
    colors = {"stream": "#2b7a3d", "pubsub": "#c0392b"}
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="sans-serif" font-size="12">' % (w, h),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="20" font-size="14">Orders lost during a %g s Redis outage '
           '(50 orders/s, median)</text>' % (left, down)]
    gw = (w - left - 20) / len(FAULTS)
    for i, fault in enumerate(FAULTS):
        for k, mode in enumerate(MODES):
            s = [x for x in summary if x["fault"] == fault and x["mode"] == mode][0]
            bh = s["lost_median"] * scale
            x = left + i * gw + 20 + k * 60
            y = h - bottom - bh
            out.append('<rect x="%.1f" y="%.1f" width="50" height="%.1f" fill="%s"/>'
                       % (x, y, max(bh, 1), colors[mode]))
            out.append('<text x="%.1f" y="%.1f" text-anchor="middle">%g</text>'
                       % (x + 25, y - 4, s["lost_median"]))
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'
                   % (left + i * gw + 75, h - bottom + 18,
                      {"kill": "kill -9 + restart", "pause": "SIGSTOP",
                       "cut": "subscriber cut"}[fault]))
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>'
               % (left, h - bottom, w - 10, h - bottom))
    for k, mode in enumerate(MODES):
        out.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/>'
                   % (left + k * 170, h - 22, colors[mode]))
        out.append('<text x="%d" y="%d">%s</text>'
                   % (left + k * 170 + 16, h - 12,
                      "with --orders-stream" if mode == "stream" else "pub/sub only"))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--down", type=float, default=5.0)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args()
    runs = []
    for r in range(a.rounds):
        for fault in FAULTS:
            for mode in MODES:  # alternated, so load drifts touch both
                res = one(fault, mode, a.down)
                res.update(fault=fault, mode=mode, round=r + 1)
                runs.append(res)
                print(json.dumps(res), flush=True)
    summary = []
    for fault in FAULTS:
        for mode in MODES:
            rs = [x for x in runs if x["fault"] == fault and x["mode"] == mode]
            summary.append({
                "fault": fault, "mode": mode,
                "lost_median": statistics.median(x["lost"] for x in rs),
                "lost_max": max(x["lost"] for x in rs),
                "published_median": statistics.median(x["published"] for x in rs),
                "duplicates_max": max(x["duplicates"] for x in rs),
            })
    os.makedirs(a.out, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": "%s, %d CPUs" % (platform.platform(), os.cpu_count()),
            "down_s": a.down, "rounds": a.rounds, "rate_per_s": 50}
    with open(os.path.join(a.out, "durable.json"), "w") as f:
        json.dump({"meta": meta, "summary": summary, "runs": runs}, f, indent=1)
    with open(os.path.join(a.out, "durable.svg"), "w") as f:
        f.write(svg(summary, a.down))
    lines = ["# Orders lost during a %g s Redis outage" % a.down, "",
             "%s; %s; %d rounds, 50 send orders/s to one client, gateway with 2 workers; "
             "`/usr/bin/python3 tests/bench/durable.py`." % (meta["date"], meta["machine"],
                                                            a.rounds), "",
             "| outage | mode | published (median) | lost (median) | lost (max) | "
             "applied twice (max) |", "|---|---|---|---|---|---|"]
    for s in summary:
        lines.append("| %s | %s | %g | %g | %d | %d |" % (
            s["fault"], "--orders-stream" if s["mode"] == "stream" else "pub/sub only",
            s["published_median"], s["lost_median"], s["lost_max"], s["duplicates_max"]))
    lines += ["", "Per run (JSON lines):", "", "```"] + [json.dumps(x) for x in runs] + ["```"]
    with open(os.path.join(a.out, "durable.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines[:6 + len(summary) + 1]))


if __name__ == "__main__":
    main()
