"""deploy/haproxy.cfg and deploy/nginx.conf in front of two gateways, on test ports.

The configs are used as shipped, with only their placeholder ports replaced (lb.render).
HAProxy routes on each gateway's /readyz: with `fall 1`, `inter 500ms` and `timeout check
400ms` in the config, a draining gateway (503 at once) is out of rotation within about
0.9 s, and the gateways here run with --drain-delay 2s, so their listeners stay open
until HAProxy has stopped sending them clients: a reconnect never meets a closed port.
That makes "no failed handshake during a rolling restart" deterministic, not lucky.
"""

import asyncio
import signal
import time

import harness
import fleet as F
import lb
from fleet import assert_closed_with, assert_open, run, until

REASON = "rolling restart"


class Pair:
    """Redis, a listener on events and acks, and gateways gw1 and gw2 (2 workers each) on
    fixed ports so that a restarted gateway takes its predecessor's place."""

    def __init__(self, flags=None):
        self.redis = harness.start_redis()
        self.listener = F.Listener(self.redis.port)
        self.r = self.redis.client()
        self.flags = {"--drain-delay": "2s", "--drain-spread": "2s", "--drain-reason": REASON}
        self.flags.update(flags or {})
        self.ports = {gid: (harness.free_port(), harness.free_port()) for gid in ("gw1", "gw2")}
        self.gws = {}
        for gid in ("gw1", "gw2"):
            self.start(gid)

    def start(self, gid):
        listen, admin = self.ports[gid]
        gw = lb.ports_gateway(gid, self.redis.url, listen, admin, self.flags)
        gw.start()
        lb.wait_ready(admin)
        self.gws[gid] = gw
        return gw

    def publish(self, order):
        import json
        order = dict(order)
        order.setdefault("id", F.order_id())
        order.setdefault("reply_to", F.ACKS)
        assert self.r.publish(F.ORDERS, json.dumps(order)) == 4, "order reached not 4 workers"
        return order["id"]


async def connect_via(port, n, groups=("g",)):
    q = "&".join("group=%s" % g for g in groups)
    out = []
    for i in range(0, n, 25):
        out += await asyncio.gather(*[F.connect("ws://127.0.0.1:%d/?%s" % (port, q), "lb",
                                                groups) for _ in range(min(25, n - i))])
    return out


async def group_order_through(pair, front):
    """Clients through the proxy land on both gateways; a group order closes them all."""
    clients = await connect_via(front, 40)
    others = await connect_via(front, 6, groups=("h",))
    by_gw = {}
    for c in clients:
        by_gw.setdefault(lb.gateway_of(c.conn), []).append(c)
    assert set(by_gw) == {"gw1", "gw2"}, "X-Wsgate-Conn gateways through the proxy: %r" % {
        k: len(v) for k, v in by_gw.items()}
    # least connections: neither gateway is starved
    assert min(len(v) for v in by_gw.values()) >= 10, {k: len(v) for k, v in by_gw.items()}
    await assert_open(clients[:10], "via-proxy")
    oid = pair.publish({"op": "close", "group": "g", "code": 4003, "reason": "group via lb"})
    await assert_closed_with(clients, 4003, "group via lb")
    acks = await until(lambda: len(pair.listener.acks(oid)) >= 4 and pair.listener.acks(oid),
                       5, "4 acks")
    assert sum(a["closed"] for a, _ in acks) == 40, acks
    assert {a["gateway"] for a, _ in acks} == {"gw1", "gw2"}
    await assert_open(others, "untouched")


@harness.timeout(60)
def test_haproxy_group_order_closes_members_on_both_gateways():
    pair = Pair()
    hap = lb.HAProxy(pair.ports["gw1"], pair.ports["gw2"])
    hap.wait_status("gw1", "UP")
    hap.wait_status("gw2", "UP")
    run(group_order_through(pair, hap.front))


@harness.timeout(60)
def test_haproxy_marks_a_draining_gateway_down_before_its_listener_closes():
    pair = Pair({"--drain-spread": "500ms"})
    hap = lb.HAProxy(pair.ports["gw1"], pair.ports["gw2"])
    hap.wait_status("gw1", "UP")
    hap.wait_status("gw2", "UP")
    gw = pair.gws["gw1"]
    t0 = time.monotonic()
    gw.signal(signal.SIGTERM)
    hap.wait_status("gw1", "DOWN", timeout=2.0)
    t_down = time.monotonic() - t0
    assert t_down < 2.0, "HAProxy took %.2fs to see /readyz 503; drain delay is 2s" % t_down
    m = gw.wait_log(r"drain: listener closed", timeout=5)
    assert m
    assert gw.wait_exit(10) == 0

    async def main():
        # everything goes to gw2 now
        clients = await connect_via(hap.front, 10)
        assert {lb.gateway_of(c.conn) for c in clients} == {"gw2"}
    run(main())


@harness.timeout(120)
def test_haproxy_rolling_restart_every_client_reconnects_without_a_failed_handshake():
    pair = Pair()
    hap = lb.HAProxy(pair.ports["gw1"], pair.ports["gw2"])
    hap.wait_status("gw1", "UP")
    hap.wait_status("gw2", "UP")
    url = "ws://127.0.0.1:%d/?group=roll" % hap.front
    n = 200

    async def main():
        rs = []
        for i in range(0, n, 25):
            rs += [lb.Reconnector(url).start() for _ in range(25)]
            await until(lambda: all(r.connected for r in rs), 10, "%d clients" % len(rs))
        first = {r: lb.gateway_of(r.conn) for r in rs}
        on = {g: sum(1 for v in first.values() if v == g) for g in ("gw1", "gw2")}
        assert min(on.values()) >= n // 4, "leastconn spread: %r" % on

        for gid in ("gw1", "gw2"):
            other = "gw2" if gid == "gw1" else "gw1"
            old = pair.gws[gid]
            victims = [r for r in rs if r.connected and lb.gateway_of(r.conn) == gid]
            sessions_before = {r: len(r.sessions) for r in victims}
            old.signal(signal.SIGTERM)
            # HAProxy sees /readyz 503 within inter + timeout check, before the 2s delay
            await until(lambda: hap.server_status().get(gid, "").startswith("DOWN"), 2,
                        "haproxy: %s DOWN" % gid, 0.05)
            status = await asyncio.get_running_loop().run_in_executor(None, old.wait_exit, 15)
            assert status == 0, "%s exit status %s" % (gid, status)
            # each victim got 1001 with the reason and is connected again, to the other one
            await until(lambda: all(r.connected and len(r.sessions) > sessions_before[r]
                                    for r in victims), 10, "%d clients of %s back" % (
                                        len(victims), gid))
            for r in victims:
                s = r.sessions[sessions_before[r] - 1]
                assert (s["code"], s["reason"]) == (1001, REASON), \
                    "%s closed with %r %r" % (s["conn"], s["code"], s["reason"])
                assert lb.gateway_of(r.conn) == other, \
                    "a client of draining %s reconnected to %s" % (gid, r.conn)
            # the replacement on the same ports; HAProxy needs rise 2 good checks
            pair.start(gid)
            await until(lambda: hap.server_status().get(gid, "") == "UP", 5,
                        "haproxy: new %s UP" % gid, 0.05)

        failures = [(r.sessions[-1]["conn"] if r.sessions else None, f)
                    for r in rs for f in r.failures]
        assert not failures, "%d failed handshakes, e.g. %r" % (len(failures), failures[:5])
        assert all(r.connected for r in rs)
        # and HAProxy hid nothing: no connection error, retry or redispatch to a server
        for name, row in hap.server_rows().items():
            errs = {k: row[k] for k in ("econ", "eresp", "wretr", "wredis") if row[k] not in
                    ("", "0")}
            assert not errs, "haproxy %s: %r" % (name, errs)
        moved = sum(1 for r in rs if len(r.sessions) >= 2)
        assert moved >= n, "only %d of %d clients were moved" % (moved, n)
        for r in rs:
            for s in r.sessions[:-1]:
                assert (s["code"], s["reason"]) == (1001, REASON), (s, r.sessions)
        # every client is on gw1' now: least connections sends new ones to gw2'
        assert {lb.gateway_of(r.conn) for r in rs} == {"gw1"}
        fresh = await connect_via(hap.front, 20)
        assert {lb.gateway_of(c.conn) for c in fresh} == {"gw2"}
        await asyncio.gather(*[r.stop() for r in rs])

    run(main())


@harness.timeout(60)
def test_nginx_group_order_and_a_drain_moves_clients():
    pair = Pair({"--drain-delay": "0s", "--drain-spread": "1s"})
    ngx = lb.Nginx(pair.ports["gw1"][0], pair.ports["gw2"][0])

    async def main():
        await group_order_through(pair, ngx.front)
        url = "ws://127.0.0.1:%d/?group=n" % ngx.front
        rs = [lb.Reconnector(url).start() for _ in range(40)]
        await until(lambda: all(r.connected for r in rs), 10, "40 clients via nginx")
        victims = [r for r in rs if lb.gateway_of(r.conn) == "gw1"]
        assert victims, "no client on gw1"
        pair.gws["gw1"].signal(signal.SIGTERM)
        status = await asyncio.get_running_loop().run_in_executor(
            None, pair.gws["gw1"].wait_exit, 10)
        assert status == 0
        await until(lambda: all(r.connected and lb.gateway_of(r.conn) == "gw2" for r in rs), 10,
                    "every client on gw2")
        for r in victims:
            assert (r.sessions[0]["code"], r.sessions[0]["reason"]) == (1001, REASON), r.sessions
        # passive checks + proxy_next_upstream: a refused upstream is retried on the other
        failures = [f for r in rs for f in r.failures]
        assert not failures, "%d failed handshakes via nginx: %r" % (len(failures), failures[:5])
        await asyncio.gather(*[r.stop() for r in rs])

    run(main())
