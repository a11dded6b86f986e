"""Drain: SIGTERM, drain orders and `wsgatectl drain` close every connection with 1001
spread across the window, /readyz says 503 first, and the gateway exits 0 leaving
nothing behind; a second signal hurries; --drain-delay keeps accepting; a second gateway
on the same port takes over without a failed connection.

Clients are python websockets (fleet.Client records each close frame's code, reason and
arrival time; lb.Reconnector reconnects after a 1001). Every wait polls against a deadline.
"""

import asyncio
import json
import re
import signal
import threading
import time

import harness
import fleet as F
import lb
from fleet import Fleet, assert_closed_with, assert_open, open_clients, run, until

DEFAULT_REASON = "server restarting"


def gateway(redis, gid="gwD", workers=2, **flags):
    f = {"--id": gid, "--redis": redis.url, "--log-level": "info", "--close-timeout": "1s"}
    f.update({"--" + k.replace("_", "-"): v for k, v in flags.items()})
    gw = harness.Gateway(flags=f, workers=workers).start()
    lb.wait_ready(gw.admin_port)
    return gw


def url(port, groups=()):
    return "ws://127.0.0.1:%d/?%s" % (port, "&".join("group=%s" % g for g in groups))


async def connect_many(port, n, gid, batch=100, groups=("all",)):
    clients = []
    for i in range(0, n, batch):
        clients += await asyncio.gather(*[F.connect(url(port, groups), gid, groups)
                                          for _ in range(min(batch, n - i))])
    return clients


class ReadyzPoller:
    """A thread polling /readyz in a tight loop; keeps (sent, answered, status, body)."""

    def __init__(self, port):
        self.port = port
        self.polls = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        harness.wait_for(lambda: self.polls, 5, "a first /readyz answer")

    def _run(self):
        while not self._stop:
            t = time.monotonic()
            status, body = lb.readyz(self.port, timeout=1.0)
            self.polls.append((t, time.monotonic(), status, body))

    def stop(self):
        self._stop = True
        self._thread.join(3)

    def first(self, status):
        return next((p for p in self.polls if p[2] == status), None)


async def closed_with(clients, code, reason, timeout):
    """Like fleet.assert_closed_with, but one poller for all clients: 2000 polling
    coroutines would load the event loop and delay the very close frames being timed."""
    await until(lambda: all(not c.open for c in clients), timeout,
                "%d closes" % len(clients), 0.05)
    bad = [c for c in clients if c.error or (c.code, c.reason) != (code, reason)]
    assert not bad, "%d of %d closed otherwise than %r %r, e.g. %r: %r %r %s" % (
        len(bad), len(clients), code, reason, bad[0], bad[0].code, bad[0].reason,
        bad[0].error or "")


def slices(times, t0, window, n=10):
    counts = [0] * n
    for t in times:
        i = int((t - t0) / window * n)
        counts[min(max(i, 0), n - 1)] += 1
    return counts


def wait_gone(gw, timeout=5.0):
    """The master and every worker it logged are gone, and no socket is left listening
    or established on its client or admin port."""
    pids = [gw.pid] + [pid for _, pid in gw.ready_lines()]

    def left():
        return [p for p in pids if lb.alive(p)], lb.lingering(gw.port, gw.admin_port)
    try:
        harness.wait_for(lambda: left() == ([], []), timeout, "the gateway gone")
    except AssertionError:
        raise AssertionError("%.0fs after exit, still alive: %r; sockets (state, local port, "
                             "remote port): %r" % ((timeout,) + left()))


def drain_counts(gw):
    """Sum of N over the workers' 'closing N connections over Xms' lines."""
    return sum(int(n) for n in re.findall(r"drain: listener closed; closing (\d+) connections",
                                          gw.log()))


# --- SIGTERM -------------------------------------------------------------------------------

@harness.timeout(150)
def test_sigterm_drains_2000_clients_evenly_readyz_first_and_exits_0():
    redis = harness.start_redis()
    window = 3.0
    n = 2000
    gw = gateway(redis, drain_spread="3s", drain_timeout="30s")

    async def main():
        clients = await connect_many(gw.port, n, "gwD")
        await assert_open(clients[::50], "before")
        await until(lambda: lb.value(lb.metrics(gw.admin_port), "wsgate_connections_open") == n,
                    5, "connections_open %d" % n, 0.05)
        poller = ReadyzPoller(gw.admin_port)
        t0 = time.monotonic()
        gw.signal(signal.SIGTERM)
        try:
            await closed_with(clients, 1001, DEFAULT_REASON, timeout=window + 10)
            status = await asyncio.get_running_loop().run_in_executor(
                None, gw.wait_exit, 10.0)
            t_exit = time.monotonic()
        finally:
            poller.stop()
        assert status == 0, "master exit status %s" % status
        times = sorted(c.closed_at for c in clients)
        rel = [t - t0 for t in times]
        counts = slices(times, t0, window)
        summary = "closes %.3fs..%.3fs after SIGTERM; per 10%% slice: %r" % (rel[0], rel[-1],
                                                                            counts)
        assert rel[0] < 0.2 * window, "first close late: " + summary
        assert rel[-1] > 0.8 * window, "closes bunched early: " + summary
        assert rel[-1] < window + 2.0, "last close late: " + summary
        # Even across the window: the share of closes seen by time t stays near t/window
        # (a Kolmogorov-Smirnov distance). It tolerates what a loaded machine does to the
        # observer (one asyncio loop receiving 2000 closes, descheduled for a few hundred
        # ms, sees them late and in a bunch) but not a spread that is not there: closing
        # everything at once, or in the first half, is a distance of 0.5 or more.
        ks = max(abs((i + 1) / n - min(r, window) / window) for i, r in enumerate(rel))
        assert ks < 0.2, "closes not spread evenly (distance %.2f): %s" % (ks, summary)
        # /readyz: 503 right after the signal, and never 200 once a client was closed
        first503 = poller.first(503)
        assert first503 is not None, "never saw 503: %r" % poller.polls[-5:]
        assert first503[3].strip() == "draining", first503
        assert first503[1] - t0 < 0.5, "503 only %.3fs after SIGTERM" % (first503[1] - t0)
        late200 = [p for p in poller.polls if p[2] == 200 and p[0] >= times[0]]
        assert not late200, "/readyz 200 asked %.4fs after the first close (%.4fs)" % (
            late200[0][0] - t0, times[0] - t0)
        assert any(p[0] >= times[0] for p in poller.polls), "no poll after the first close"
        assert t_exit - t0 < 30, "exit after the drain timeout"
        assert t_exit - t0 < window + 5, "exit %.2fs after SIGTERM" % (t_exit - t0)
        assert drain_counts(gw) == n, "workers drained %d connections, not %d:\n%s" % (
            drain_counts(gw), n, gw.log()[-2000:])
        assert "master exiting status=0" in gw.log()

    run(main())
    wait_gone(gw)


@harness.timeout(60)
def test_second_sigterm_skips_the_spread():
    redis = harness.start_redis()
    gw = gateway(redis, drain_spread="20s", drain_timeout="30s")

    async def main():
        clients = await connect_many(gw.port, 300, "gwD")
        t0 = time.monotonic()
        gw.signal(signal.SIGTERM)
        await until(lambda: sum(1 for c in clients if not c.open) >= 5, 5, "5 drain closes")
        early = sum(1 for c in clients if not c.open)
        t1 = time.monotonic()
        gw.signal(signal.SIGTERM)
        await closed_with(clients, 1001, DEFAULT_REASON, timeout=4)
        last = max(c.closed_at for c in clients)
        assert last - t1 < 2.0, "last close %.2fs after the second SIGTERM" % (last - t1)
        assert early < 150, "%d of 300 closed before the second signal (%.2fs)" % (early, t1 - t0)
        status = await asyncio.get_running_loop().run_in_executor(None, gw.wait_exit, 3.0)
        assert status == 0
        assert time.monotonic() - t1 < 3.0

    run(main())
    wait_gone(gw)


@harness.timeout(60)
def test_sigint_during_drain_closes_the_rest_at_once():
    redis = harness.start_redis()
    gw = gateway(redis, drain_spread="20s", drain_timeout="30s")

    async def main():
        clients = await connect_many(gw.port, 100, "gwD")
        gw.signal(signal.SIGTERM)
        await until(lambda: lb.readyz(gw.admin_port)[0] == 503, 2, "/readyz 503")
        t1 = time.monotonic()
        gw.signal(signal.SIGINT)
        await asyncio.gather(*[c.wait_closed(4) for c in clients])
        assert max(c.closed_at for c in clients) - t1 < 2.0
        codes = {(c.code, c.reason) for c in clients}
        assert codes == {(1001, DEFAULT_REASON)}, codes
        status = await asyncio.get_running_loop().run_in_executor(None, gw.wait_exit, 3.0)
        assert status == 0

    run(main())
    wait_gone(gw)


@harness.timeout(60)
def test_drain_timeout_cuts_what_the_spread_has_not_reached():
    """--drain-timeout (from the signal) ends the drain even though --drain-spread is
    longer: what is still open then is cut, and the master still exits 0."""
    redis = harness.start_redis()
    gw = gateway(redis, drain_spread="20s", drain_timeout="1500ms")

    async def main():
        clients = await connect_many(gw.port, 200, "gwD")
        t0 = time.monotonic()
        gw.signal(signal.SIGTERM)
        status = await asyncio.get_running_loop().run_in_executor(None, gw.wait_exit, 6.0)
        t_exit = time.monotonic() - t0
        assert status == 0, "exit status %s" % status
        assert 1.3 < t_exit < 4.0, "exit %.2fs after SIGTERM with a 1.5s drain timeout" % t_exit
        await until(lambda: all(not c.open for c in clients), 5, "every client closed", 0.05)
        # the spread reached a few (1.5s of 20s); the rest end at the timeout, all at once
        spread = [c for c in clients if c.closed_at - t0 < 1.4]
        cut = [c for c in clients if c.closed_at - t0 >= 1.4]
        assert len(spread) < 60 and len(cut) > 140, \
            "%d closed by the spread, %d at the timeout" % (len(spread), len(cut))
        assert all((c.code, c.reason) == (1001, DEFAULT_REASON) for c in spread), spread[:3]
        if cut:
            span = max(c.closed_at for c in cut) - min(c.closed_at for c in cut)
            assert span < 0.5, "the cut took %.2fs" % span
        assert all(c.closed_at - t0 < t_exit + 0.5 for c in clients)

    run(main())
    wait_gone(gw)


@harness.timeout(60)
def test_drain_delay_keeps_accepting_while_readyz_is_503():
    redis = harness.start_redis()
    delay = 2.0
    gw = gateway(redis, drain_delay="2s", drain_spread="500ms", drain_reason="deploy 7")

    async def main():
        old = await connect_many(gw.port, 50, "gwD")
        t0 = time.monotonic()
        gw.signal(signal.SIGTERM)
        await until(lambda: lb.readyz(gw.admin_port)[0] == 503, 0.5, "/readyz 503 at once")
        # new connections keep succeeding until the delay ends
        late = []
        while time.monotonic() < t0 + delay - 0.4:
            late += await connect_many(gw.port, 5, "gwD")
            await asyncio.sleep(0)  # lets the clients' reader tasks run
        assert all(c.closed_at is None or c.closed_at >= t0 + delay - 0.1 for c in old + late), \
            "a close before the delay ended"
        # then the listener closes: a connect is refused

        async def refused():
            try:
                _, w = await asyncio.open_connection("127.0.0.1", gw.port)
                w.close()
                return False
            except OSError:
                return True
        deadline = time.monotonic() + delay + 1.5
        while not await refused():
            assert time.monotonic() < deadline, "still accepting %.2fs after SIGTERM" % (
                time.monotonic() - t0)
            await asyncio.sleep(0.02)  # poll interval
        assert time.monotonic() - t0 >= delay - 0.1, "listener closed before the delay"
        await assert_closed_with(old + late, 1001, "deploy 7", timeout=5)
        first = min(c.closed_at for c in old + late) - t0
        assert first >= delay - 0.1, "first close %.2fs after SIGTERM, delay %.1fs" % (first,
                                                                                       delay)
        assert len(late) >= 20, "only %d connections during the delay" % len(late)
        status = await asyncio.get_running_loop().run_in_executor(None, gw.wait_exit, 5.0)
        assert status == 0

    run(main())
    wait_gone(gw)


# --- orders and wsgatectl ------------------------------------------------------------------

@harness.timeout(60)
def test_drain_order_drains_only_that_gateway_then_gateway_channel():
    fl = Fleet(flags={"--drain-spread": "10s"})
    a, b = fl.gateways["gwA"], fl.gateways["gwB"]

    async def main():
        ca = await open_clients(fl, [("gwA", ["x"], None)] * 60)
        cb = await open_clients(fl, [("gwB", ["x"], None)] * 60)
        oid = F.order_id("drain")
        t0 = time.monotonic()
        n = fl.publish({"id": oid, "op": "drain", "gateway": "gwA", "reason": "deploy 42",
                        "spread_ms": 1000, "reply_to": F.ACKS})
        assert n == 4, "drain order reached %d subscribers" % n
        await until(lambda: lb.readyz(a.admin_port)[0] == 503, 1, "gwA /readyz 503")
        await assert_closed_with(ca, 1001, "deploy 42", timeout=5)
        rel = sorted(c.closed_at - t0 for c in ca)
        assert rel[-1] - rel[0] > 0.5 and rel[-1] < 3.0, "spread_ms 1000 gave %.3f..%.3f" % (
            rel[0], rel[-1])
        acks = await until(lambda: len(fl.listener.acks(oid)) >= 2 and fl.listener.acks(oid),
                           5, "2 acks of the drain order")
        assert {(d["gateway"], d["worker"]) for d, _ in acks} == {("gwA", 1), ("gwA", 2)}, acks
        assert all("error" not in d for d, _ in acks), acks
        status = await asyncio.get_running_loop().run_in_executor(None, a.wait_exit, 5.0)
        assert status == 0
        await assert_open(cb, "gwB-after")
        assert lb.readyz(b.admin_port)[0] == 200
        # on the gateway's own channel
        oid2 = F.order_id("drain")
        assert fl.publish({"id": oid2, "op": "drain", "gateway": "gwB", "reason": "bye",
                           "spread_ms": 300, "reply_to": F.ACKS}, F.ORDERS + ":gwB") == 2
        await assert_closed_with(cb, 1001, "bye", timeout=5)
        status = await asyncio.get_running_loop().run_in_executor(None, b.wait_exit, 5.0)
        assert status == 0

    run(main())
    wait_gone(a)
    wait_gone(b)


@harness.timeout(60)
def test_wsgatectl_drain_wait_gets_acks_and_gateway_exits_0():
    fl = Fleet(flags={"--drain-spread": "10s"})
    a, b = fl.gateways["gwA"], fl.gateways["gwB"]

    async def main():
        ca = await open_clients(fl, [("gwA", ["x"], None)] * 40)
        cb = await open_clients(fl, [("gwB", ["x"], None)] * 40)
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(None, lambda: fl.ctl(
            "--redis", fl.redis.url, "drain", "--gateway", "gwA", "--reason", "ctl drain",
            "--spread", "500", "--wait", "8000"))
        assert out.returncode == 0, "wsgatectl drain: %d\n%s%s" % (out.returncode, out.stdout,
                                                                   out.stderr)
        assert re.search(r"drain of gwA: 40 connections, 40 closed \(2 workers answered\)",
                         out.stdout), out.stdout
        await assert_closed_with(ca, 1001, "ctl drain", timeout=5)
        status = await loop.run_in_executor(None, a.wait_exit, 5.0)
        assert status == 0
        await assert_open(cb, "gwB-after")
        out = await loop.run_in_executor(None, lambda: fl.ctl(
            "--redis", fl.redis.url, "drain", "--gateway", "gwB", "--spread", "0",
            "--wait", "8000", "--json"))
        assert out.returncode == 0, out.stdout + out.stderr
        lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
        assert len([x for x in lines if x.get("worker") is not None]) == 2, out.stdout
        await assert_closed_with(cb, 1001, DEFAULT_REASON, timeout=5)
        status = await loop.run_in_executor(None, b.wait_exit, 5.0)
        assert status == 0

    run(main())
    wait_gone(a)
    wait_gone(b)


# --- zero-downtime restart on one host -----------------------------------------------------

@harness.timeout(90)
def test_same_port_restart_moves_clients_without_a_failed_connection():
    redis = harness.start_redis()
    a = gateway(redis, "gwA", drain_spread="2s")
    # B on A's port (SO_REUSEPORT), its own admin port
    b = harness.Gateway(flags={"--id": "gwB", "--redis": redis.url, "--log-level": "info",
                               "--listen": "127.0.0.1:%d" % a.port}, workers=2)
    b.port = a.port

    async def main():
        rs = [lb.Reconnector(url(a.port)).start() for _ in range(100)]
        await until(lambda: all(r.connected for r in rs), 15, "100 clients connected")
        assert {lb.gateway_of(r.conn) for r in rs} == {"gwA"}
        b.start()
        lb.wait_ready(b.admin_port)
        # a prober opens a fresh connection every few ms for the whole drain
        probes = {"ok": 0, "failed": []}
        stop = asyncio.Event()

        async def prober():
            import websockets
            while not stop.is_set():
                try:
                    ws = await websockets.connect(url(a.port), open_timeout=5,
                                                  close_timeout=1, ping_interval=None)
                    probes["ok"] += 1
                    await ws.close()
                except Exception as e:  # noqa: BLE001 - a failed connection is the failure
                    probes["failed"].append(repr(e))
                await asyncio.sleep(0.005)  # pacing, not a synchronisation
        tasks = [asyncio.ensure_future(prober()) for _ in range(4)]
        a.signal(signal.SIGTERM)
        status = await asyncio.get_running_loop().run_in_executor(None, a.wait_exit, 10.0)
        await until(lambda: all(r.connected and lb.gateway_of(r.conn) == "gwB" for r in rs),
                    10, "every client reconnected to gwB")
        stop.set()
        await asyncio.gather(*tasks)
        assert status == 0
        for r in rs:
            first = r.sessions[0]
            assert (first["code"], first["reason"]) == (1001, DEFAULT_REASON), r.sessions
            assert not r.failures, "reconnect failures: %r" % r.failures
        assert not probes["failed"], "%d of %d new connections failed during the drain: %r" % (
            len(probes["failed"]), len(probes["failed"]) + probes["ok"], probes["failed"][:5])
        assert probes["ok"] >= 50, probes
        await asyncio.gather(*[r.stop() for r in rs])

    run(main())
