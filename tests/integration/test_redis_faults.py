"""Redis faults a gateway must see in time, and recover from without hammering Redis:
a frozen redis-server (SIGSTOP), a black hole that accepts TCP and never answers, a
wrong password, a restart.

The bounds come from the design, with slack for a loaded two-core machine: a link is
dropped when an awaited answer (a reply, or a heartbeat the worker published to its
own subscriber, one a second) is not back within --redis-timeout (3 s by default),
checked every 100 ms; /readyz and the gauges follow within a 50 ms tick. Reconnects
wait a random 50-100% of a backoff that doubles from 100 ms to 1 s."""

import calendar
import re
import select
import signal
import socket
import threading
import time

import harness
import fleet as F
import lb

TIMEOUT = 3.0  # --redis-timeout's default
BEAT = 1.0  # heartbeat period
BACKOFF_MAX = 1.0
SLACK = 2.0
NOTICE = TIMEOUT + BEAT + 0.15 + SLACK  # a frozen Redis shows in /readyz within this


def connected(gw):
    return lb.value(lb.metrics(gw.admin_port), "wsgate_redis_connected")


def by_link(gw, name):
    fams = lb.metrics(gw.admin_port)
    return {link: lb.value(fams, name, link=link) for link in ("subscriber", "publisher")}


def not_ready(gw):
    status, body = lb.readyz(gw.admin_port)
    return status == 503 and "redis" in body.lower() and connected(gw) == 0


LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z \w+ (w\d+) (.*)$", re.M)


def log_times(text, what):
    """[(epoch seconds, worker)] of the log lines in text that contain what."""
    out = []
    for m in LINE.finditer(text):
        if what in m.group(4):
            t = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
            out.append((t + int(m.group(2)) / 1000.0, m.group(3)))
    return out


class BlackHole:
    """A TCP proxy in front of redis-server that can freeze: then it forwards nothing
    either way on the connections it holds, and accepts new ones that it never answers.
    thaw() closes what it held and forwards new connections again."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.frozen = False
        self.accepted = 0
        self.accepted_frozen = 0
        self.pairs = {}  # socket -> its peer, while forwarded
        self.held = []  # sockets taken while frozen
        self.turns = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        harness._live.append(self)

    def _close_pair(self, s):
        peer = self.pairs.pop(s, None)
        self.pairs.pop(peer, None)
        for x in (s, peer):
            if x is not None:
                x.close()

    def _run(self):
        while not self._stop:
            watch = [self.lsock] + ([] if self.frozen else list(self.pairs))
            readable, _, _ = select.select(watch, [], [], 0.01)
            for s in readable:
                if s is self.lsock:
                    c, _ = self.lsock.accept()
                    self.accepted += 1
                    if self.frozen:
                        self.accepted_frozen += 1
                        self.held.append(c)
                        continue
                    u = socket.create_connection(("127.0.0.1", self.upstream))
                    self.pairs[c], self.pairs[u] = u, c
                elif not self.frozen and s in self.pairs:
                    try:
                        data = s.recv(65536)
                        if data:
                            self.pairs[s].sendall(data)
                            continue
                    except OSError:
                        pass
                    self._close_pair(s)
            self.turns += 1

    def _next_turns(self):
        """Waits for two more turns of the loop: a change of `frozen` is in effect."""
        t = self.turns
        harness.wait_for(lambda: self.turns >= t + 2, 2, "the black hole's loop")

    def freeze(self):
        self.frozen = True
        self._next_turns()

    def thaw(self):
        self.frozen = False
        self._next_turns()
        for s in self.held:
            s.close()
        self.held = []

    def kill(self):
        self._stop = True
        self._thread.join(2)
        for s in list(self.pairs) + self.held + [self.lsock]:
            s.close()

    def dump(self):
        return "---- black hole on %d: %d accepted, %d while frozen, frozen=%s ----" % (
            self.port, self.accepted, self.accepted_frozen, self.frozen)


@harness.timeout(60)
def test_sigstop_redis_flips_readyz_and_gauge_within_the_timeout():
    redis = harness.start_redis()
    gw = harness.Gateway(flags={"--redis": redis.url}).start()
    lb.wait_ready(gw.admin_port)
    assert connected(gw) == 1
    redis.proc.send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        harness.wait_for(lambda: not_ready(gw), NOTICE,
                         "/readyz 503 naming Redis and wsgate_redis_connected 0 after SIGSTOP")
        took = time.monotonic() - t0
        # nothing is declared dead before its deadline
        assert took >= TIMEOUT - 0.5, "flipped %.2fs after SIGSTOP, before the timeout" % took
        timeouts = by_link(gw, "wsgate_redis_timeouts_total")
        assert timeouts["subscriber"] >= 1 and timeouts["publisher"] >= 1, timeouts
        gw.wait_log(r"redis subscriber down: no heartbeats back in 3000ms", 2)
        gw.wait_log(r"redis publisher down: no replies back in 3000ms", 2)
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    harness.wait_for(lambda: lb.readyz(gw.admin_port)[0] == 200 and connected(gw) == 1,
                     BACKOFF_MAX + SLACK, "/readyz 200 after SIGCONT")


@harness.timeout(60)
def test_black_hole_redis_is_not_ready_and_a_bare_connect_does_not_count():
    redis = harness.start_redis()
    hole = BlackHole(redis.port)
    gw = harness.Gateway(flags={"--redis": "redis://127.0.0.1:%d" % hole.port}).start()
    lb.wait_ready(gw.admin_port)
    hole.freeze()
    harness.wait_for(lambda: not_ready(gw), NOTICE, "/readyz 503 once Redis went silent")
    harness.wait_for(lambda: min(by_link(gw, "wsgate_redis_timeouts_total").values()) >= 2,
                     NOTICE, "both workers' links dropped for silence")
    # Both workers reconnect both links to the hole, which accepts and never answers:
    # they stay down, and each attempt is dropped at its setup deadline.
    held, t0 = hole.accepted_frozen, by_link(gw, "wsgate_redis_timeouts_total")
    ready_seen = []

    def attempts_timed_out():
        ready_seen.append(lb.readyz(gw.admin_port)[0] == 200)
        now = by_link(gw, "wsgate_redis_timeouts_total")
        return hole.accepted_frozen >= held + 4 and all(now[k] >= t0[k] + 2 for k in now)
    harness.wait_for(attempts_timed_out, BACKOFF_MAX + TIMEOUT + 0.15 + SLACK,
                     "4 silent connections accepted and dropped at their deadline")
    assert not any(ready_seen), "ready while Redis answered nothing"
    assert not_ready(gw)
    hole.thaw()
    harness.wait_for(lambda: lb.readyz(gw.admin_port)[0] == 200, BACKOFF_MAX + SLACK,
                     "/readyz 200 once Redis answers again")


@harness.timeout(60)
def test_wrong_password_retries_at_a_bounded_rate_and_never_counts_as_up():
    redis = harness.start_redis(password="right")
    gw = harness.Gateway(flags={"--redis": "redis://:wrong@127.0.0.1:%d" % redis.port}).start()
    r = redis.client()

    def conns():
        return int(r.info("stats")["total_connections_received"])
    # Past the first doublings (100, 200, 400, 800 ms) of 2 workers x 2 links, and this
    # client: every wait is now 0.5-1 s.
    harness.wait_for(lambda: conns() >= 4 * 6 + 1, 10, "6 attempts per link")
    window = 4.0
    conns0 = conns()
    lines0 = len(gw.log().splitlines())
    time.sleep(window)  # the measurement window, not a synchronisation
    made = conns() - conns0
    lines = gw.log().splitlines()[lines0:]
    # 2 workers x 2 links, at most one attempt per 0.5 s each: 4 x (4 / 0.5 + 1) = 36
    # (today's main made about 100 in 4 s).
    assert made <= 36, "%d connections to Redis in %.0fs" % (made, window)
    # One "still down" line per link per 10 s at most.
    assert len(lines) <= 4, "%d log lines in %.0fs:\n%s" % (len(lines), window,
                                                              "\n".join(lines[:20]))
    assert lb.readyz(gw.admin_port)[0] == 503
    assert "redis publisher up" not in gw.log() and "redis subscriber up" not in gw.log(), \
        "a link counted as up before its AUTH was accepted"
    gw.wait_log(r"error w\d redis subscriber: WRONGPASS", 1)
    gw.wait_log(r"error w\d redis publisher: WRONGPASS", 1)
    refused = by_link(gw, "wsgate_redis_refused_total")
    assert refused["subscriber"] >= 2 and refused["publisher"] >= 2, refused
    # The operator fixes the password: the gateway is back within one capped backoff.
    r.config_set("requirepass", "wrong")
    harness.wait_for(lambda: lb.readyz(gw.admin_port)[0] == 200, BACKOFF_MAX + SLACK,
                     "/readyz 200 once the password is right")


@harness.timeout(60)
def test_redis_restart_every_worker_back_within_two_seconds():
    redis = harness.start_redis()
    gw = harness.Gateway(flags={"--redis": redis.url}, workers=4).start()
    lb.wait_ready(gw.admin_port)
    port = redis.port
    mark = len(gw.log())
    redis.kill()
    harness.wait_for(lambda: lb.readyz(gw.admin_port)[0] == 503, 2, "/readyz 503 after a kill")
    # The outage, a scenario length and not a synchronisation: 5 s, so every backoff
    # has reached its cap (waits of 100, 200, 400 and 800 ms at most come first).
    time.sleep(5)
    back = time.time()  # before redis-server starts: the figure can only be too high
    redis = F.RedisOnPort(port).start()

    def ups(what):
        return log_times(gw.log()[mark:], what)
    harness.wait_for(lambda: len(ups(F.SUBSCRIBED)) >= 4 and len(ups(F.PUBLISHER)) >= 4,
                     10, "4 subscribers and 4 publishers up again")
    delays = sorted((t - back, "%s %s" % (w, what)) for what in (F.SUBSCRIBED, F.PUBLISHER)
                    for t, w in ups(what))
    summary = ", ".join("%s %.2fs" % (w, d) for d, w in delays)
    print(summary)
    assert delays[-1][0] <= 2.0, "a link came back %.2fs after Redis: %s" % (delays[-1][0],
                                                                             summary)
    lb.wait_ready(gw.admin_port, 2)
