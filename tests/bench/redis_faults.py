#!/usr/bin/python3
"""Redis fault figures: how soon a gateway notices a frozen Redis, how hard it retries a
wrong password, how far apart its workers come back after a Redis restart.

  WSGATE_BUILD=build /usr/bin/python3 tests/bench/redis_faults.py [--rounds N]

Not part of make test (tests/integration/test_redis_faults.py checks the bounds); this
prints the figures behind them, for a before/after comparison of two builds:
  freeze   SIGSTOP redis-server: seconds until /readyz answers 503 and until
           wsgate_redis_connected is 0 (polled every 20 ms, given up after 30 s)
  password redis-server with requirepass, gateway with a wrong one: connections Redis
           received and gateway log lines in 8 s (2 workers), after the first second
  restart  redis-server killed, down for 6 s, started again on the same port: for each
           worker, seconds from Redis answering PING to its "subscriber up" log line
"""

import argparse
import calendar
import os
import re
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(os.path.dirname(HERE), "lib")]

import harness  # noqa: E402
import fleet  # noqa: E402
import lb  # noqa: E402

LINE_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z \w+ (w\d+) (.*)$", re.M)


def log_times(gw, text):
    """[(epoch seconds, worker)] of every log line containing text."""
    out = []
    for m in LINE_TS.finditer(gw.log()):
        if text in m.group(4):
            t = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
            out.append((t + int(m.group(2)) / 1000.0, m.group(3)))
    return out


def poll(pred, limit):
    """Seconds until pred() is true, or None after limit seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


def connected(gw):
    try:
        return lb.value(lb.metrics(gw.admin_port), "wsgate_redis_connected")
    except AssertionError:
        return None


def freeze():
    redis = harness.start_redis()
    gw = harness.Gateway(flags={"--redis": redis.url, "--log-level": "info"}).start()
    lb.wait_ready(gw.admin_port)
    redis.proc.send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    seen = {}

    def both_gone():
        if "ready" not in seen and lb.readyz(gw.admin_port)[0] == 503:
            seen["ready"] = time.monotonic() - t0
        if "gauge" not in seen and connected(gw) == 0:
            seen["gauge"] = time.monotonic() - t0
        return len(seen) == 2
    poll(both_gone, 30)
    ready_gone, gauge_gone = seen.get("ready"), seen.get("gauge")
    redis.proc.send_signal(signal.SIGCONT)
    back = poll(lambda: lb.readyz(gw.admin_port)[0] == 200, 30)
    fmt = lambda v: "> 30 s" if v is None else "%.2f s" % v  # noqa: E731
    print("freeze: /readyz 503 after %s, wsgate_redis_connected 0 after %s; "
          "ready again %s after SIGCONT" % (fmt(ready_gone), fmt(gauge_gone), fmt(back)))
    gw.kill()
    redis.kill()


def password():
    redis = harness.start_redis(password="right")
    url = "redis://:wrong@127.0.0.1:%d" % redis.port
    gw = harness.Gateway(flags={"--redis": url, "--log-level": "notice"})
    gw.start(wait_ready=False)
    gw.wait_ready(2)
    time.sleep(1)  # past the first attempts: the figure is the steady rate
    auth = redis.client()
    c0 = int(auth.info("stats")["total_connections_received"])
    l0 = len(gw.log().splitlines())
    time.sleep(8)  # the measurement window
    c1 = int(auth.info("stats")["total_connections_received"])
    l1 = len(gw.log().splitlines())
    redis_lines = sum(1 for line in gw.log().splitlines() if " redis " in line)
    print("password: %d connections to Redis and %d log lines in 8 s (2 workers); "
          "%d lines about Redis since the start, 9 s ago" % (c1 - c0, l1 - l0, redis_lines))
    gw.kill()
    redis.kill()


def restart(rounds):
    redis = harness.start_redis()
    gw = harness.Gateway(flags={"--redis": redis.url, "--log-level": "info"},
                         workers=4).start()
    lb.wait_ready(gw.admin_port)
    for i in range(rounds):
        port = redis.port
        seen = len(log_times(gw, fleet.SUBSCRIBED))
        redis.kill()
        time.sleep(6)  # the outage: long enough for every backoff to reach its cap
        redis = fleet.RedisOnPort(port)
        back = time.time()  # before redis-server starts: the figures can only be too high
        redis.start()
        harness.wait_for(lambda: len(log_times(gw, fleet.SUBSCRIBED)) >= seen + 4, 30,
                         "4 resubscriptions")
        ups = sorted((t - back, w) for t, w in log_times(gw, fleet.SUBSCRIBED)[seen:])
        print("restart %d: resubscribed %s; spread %.2f s" % (
            i + 1, ", ".join("%s %.2f s" % (w, t) for t, w in ups), ups[-1][0] - ups[0][0]))
    gw.kill()
    redis.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("what", nargs="*", default=["freeze", "password", "restart"])
    a = ap.parse_args()
    print("build: %s" % harness.BUILD)
    try:
        for w in a.what:
            restart(a.rounds) if w == "restart" else globals()[w]()
    finally:
        harness.cleanup_all()


if __name__ == "__main__":
    main()
