"""Durable orders (--orders-stream) and tombstones (close orders with ttl_ms), against
a real redis-server and real gateways (tests/lib/fleet.py).

Stream: an order XADDed to the stream is applied; the same order on the stream and the
channel is applied once (one acknowledgement per worker); an entry without an id is
refused and answered; entries older than --orders-max-age and entries without the
field "order" are skipped and counted; orders added while the gateway's Redis links
were down are applied when they come back.

Tombstones: a ban (close --ttl) closes the group's members, and for its lifetime a
new connection of the group, on any gateway and on a gateway started after the ban,
completes its upgrade and is closed at once with the ban's code and reason ("by":
"tombstone" in its close event); wsgatectl tombstones lists it; unban lifts it; it
ends by itself at its ttl; a tombstone put in Redis while a gateway's subscriber was
away closes the open members once the subscriber is back; --max-tombstones bounds
what a worker holds; ttl_ms is refused where it cannot work."""

import asyncio
import json
import re
import time

import harness
import lb
from tcpproxy import CutProxy
from fleet import (Fleet, ACKS, EVENTS, assert_closed_with, assert_open, connect,
                   open_clients, order_id, run, until)

STREAM = "wsgate:orders:log"


def stream_fleet(**kw):
    flags = dict(kw.pop("flags", {}))
    flags.setdefault("--orders-stream", STREAM)
    return Fleet(flags=flags, **kw)


def metric(fl, name, **labels):
    return sum(lb.value(lb.metrics(gw.admin_port), name, **labels)
               for gw in fl.gateways.values())


def wait_stream_readers(fl):
    for gw in fl.gateways.values():
        lb.wait_ready(gw.admin_port, 10)


def xadd(fl, order):
    text = order if isinstance(order, str) else json.dumps(order)
    return fl.r.xadd(STREAM, {"order": text})


@harness.timeout(60)
def test_stream_order_applied_once_when_it_also_comes_on_the_channel():
    fl = stream_fleet()
    wait_stream_readers(fl)

    async def main():
        room = await open_clients(fl, [(g, ["room:1"], None) for g in ("gwA", "gwB")] * 2)
        other = await open_clients(fl, [(g, ["room:2"], None) for g in ("gwA", "gwB")])
        oid = order_id("dup")
        order = {"id": oid, "op": "close", "group": "room:1", "code": 4001, "reason": "once",
                 "reply_to": ACKS}
        xadd(fl, order)
        fl.publish(order)
        xadd(fl, order)  # a replay
        await assert_closed_with(room, 4001, "once")
        await until(lambda: len(fl.listener.acks(oid)) >= fl.workers, 5, "acks of %s" % oid)
        await until(lambda: metric(fl, "wsgate_stream_duplicates_total") >= 2 * fl.workers, 5,
                    "two duplicates per worker")
        acks = [a for a, _ in fl.listener.acks(oid)]
        assert len(acks) == fl.workers, "one answer per worker, got %r" % acks
        assert sum(a["closed"] for a in acks) == len(room), acks
        assert metric(fl, "wsgate_stream_orders_total") == 2 * fl.workers
        await assert_open(other)
        # A send order only on the stream: delivered once.
        sid = order_id("send")
        xadd(fl, {"id": sid, "op": "send", "group": "room:2", "text": "via stream"})
        fl.publish({"id": sid, "op": "send", "group": "room:2", "text": "via stream"})
        for c in other:
            assert await asyncio.wait_for(c.messages.get(), 5) == "via stream"
        await assert_open(other, "nothing twice")
        for c in other:
            assert c.messages.empty(), "a send order was applied twice"
    run(main())


@harness.timeout(60)
def test_stream_refuses_orders_without_id_and_skips_stale_and_bad_entries():
    fl = stream_fleet(ids=("gwA",), flags={"--orders-max-age": "1s"})
    wait_stream_readers(fl)
    gw = fl.gateways["gwA"]
    # Each worker reads from its own start: the entry must come after the later one.
    starts = [int(m) for m in re.findall(r"orders stream %s: reading from (\d+)-" % STREAM,
                                         gw.log())]
    assert len(starts) == 2, gw.log()
    start = max(starts)

    async def main():
        room = await open_clients(fl, [("gwA", ["room:9"], None)] * 2)
        # An entry stamped 100 ms after the readers' starts, added once it is over a
        # second old: skipped as stale, nothing closed.
        await until(lambda: fl.r.time()[0] * 1000 > start + 1600, 5, "1.6 s past the start")
        fl.r.xadd(STREAM, {"order": json.dumps({"id": "old", "group": "room:9"})},
                  id="%d-1" % (start + 100))
        await until(lambda: metric(fl, "wsgate_stream_skipped_stale_total") == 2, 5,
                    "the stale entry skipped by both workers")
        # No id on the stream: refused, answered.
        xadd(fl, {"group": "room:9", "reply_to": ACKS, "code": 4002})
        await until(lambda: metric(fl, "wsgate_orders_refused_total", reason="id") == 2, 5,
                    "orders without id refused")
        # No field "order": skipped, counted.
        fl.r.xadd(STREAM, {"something": "else"})
        await until(lambda: metric(fl, "wsgate_stream_skipped_bad_total") == 2, 5,
                    "entries without order skipped")
        await assert_open(room)
        assert "must carry an id" in gw.log()
    run(main())


@harness.timeout(60)
def test_orders_added_while_the_gateway_was_away_from_redis_are_applied_when_it_is_back():
    proxy = CutProxy(0)
    fl = stream_fleet(ids=("gwA",), redis_url_of=lambda r, gid: proxy_to(proxy, r))
    wait_stream_readers(fl)

    async def main():
        room = await open_clients(fl, [("gwA", ["away"], None)] * 3)
        proxy.blackhole(b"")  # every link of the gateway: the bytes vanish
        oid = order_id("away")
        order = {"id": oid, "op": "close", "group": "away", "code": 4005, "reason": "later"}
        xadd(fl, order)
        fl.publish(order)
        await asyncio.sleep(1.0)  # the order's chance to arrive while away: it must not
        await assert_open(room, "away")
        proxy.restore()  # the links fail, reconnect, and read the stream from where they were
        await assert_closed_with(room, 4005, "later", timeout=10)
        assert metric(fl, "wsgate_stream_reconnects_total") >= 2
    run(main())


def proxy_to(proxy, redis):
    proxy.upstream = redis.port
    return proxy.url


# --- tombstones ------------------------------------------------------------------------

async def ctl(fl, *args):
    return await asyncio.get_running_loop().run_in_executor(
        None, lambda: fl.ctl("--redis", fl.redis.url, *args))


def refused_by_tombstone(c, code, reason):
    return (not c.open) and c.code == code and c.reason == reason


@harness.timeout(90)
def test_tombstone_refuses_reconnects_everywhere_until_unban():
    fl = Fleet()

    async def main():
        alice = await open_clients(fl, [(g, [], "alice") for g in ("gwA", "gwB")])
        bob = await open_clients(fl, [(g, [], "bob") for g in ("gwA", "gwB")])
        await until(lambda: len(list(fl.r.scan_iter("wsgate:orders:gw:*"))) >= 4, 10,
                    "4 worker heartbeat keys")
        p = await ctl(fl, "close", "--group", "user:alice", "--ttl", "60000", "--code", "4403",
                      "--reason", "revoked", "--wait", "5000")
        assert p.returncode == 0 and "closed 2 of 2" in p.stdout, p
        await assert_closed_with(alice, 4403, "revoked")
        # A reconnect, on either gateway: the upgrade completes, then the close.
        again = [await connect(fl.url(g, user="alice"), g, [], "alice") for g in ("gwA", "gwB")]
        await assert_closed_with(again, 4403, "revoked")
        for c in again:
            await until(lambda: fl.listener.events("close", c.conn), 5, "close event")
            e = fl.listener.events("close", c.conn)[0]
            assert e["by"] == "tombstone" and e["code"] == 4403, e
        await assert_open(bob)
        # A gateway started after the ban loads it before its clients come.
        gwc = harness.Gateway(flags={"--id": "gwC", "--redis": fl.redis.url,
                                     "--log-level": "info"}, workers=2).start()
        lb.wait_ready(gwc.admin_port, 10)
        late = await connect("ws://127.0.0.1:%d/?user=alice" % gwc.port, "gwC", [], "alice")
        await assert_closed_with([late], 4403, "revoked")
        assert lb.value(lb.metrics(gwc.admin_port), "wsgate_tombstone_refused_total") == 1
        assert metric(fl, "wsgate_tombstone_refused_total") == 2
        assert metric(fl, "wsgate_closes_total", initiator="tombstone") == 2
        assert metric(fl, "wsgate_tombstones") == 4
        # Listed, then lifted.
        p = await ctl(fl, "tombstones")
        assert p.returncode == 0 and "group=user:alice" in p.stdout and "code=4403" in p.stdout, p
        p = await ctl(fl, "tombstones", "--json")
        t = json.loads(p.stdout.splitlines()[0])
        assert t["group"] == "user:alice" and 55000 < t["left_ms"] <= 60000, t
        p = await ctl(fl, "unban", "--group", "user:alice", "--wait", "5000")
        # Every worker held it, gwC's too.
        assert p.returncode == 0 and "lifted 6 tombstones (6 workers answered)" in p.stdout, p
        back = await connect(fl.url("gwA", user="alice"), "gwA", [], "alice")
        await assert_open([back])
        p = await ctl(fl, "tombstones")
        assert "no tombstones in force" in p.stdout, p
        assert fl.r.hlen("wsgate:orders:tombs") == 0
        gwc.kill()
    run(main())


@harness.timeout(60)
def test_tombstone_ends_at_its_ttl_and_bad_ttls_are_refused():
    fl = Fleet(ids=("gwA",))

    async def main():
        oid, acks = await fl.order({"group": "room:t", "ttl_ms": 1500, "code": 4010,
                                    "reason": "cool down"})
        assert all("error" not in a for a in acks), acks
        c = await connect(fl.url("gwA", ["room:t"]), "gwA", ["room:t"])
        await assert_closed_with([c], 4010, "cool down")
        await until(lambda: time.time() * 1000 > json.loads(fl.r.hget("wsgate:orders:tombs",
                                                                "group:room:t"))["until"] + 50,
                    5, "the tombstone's end")
        c2 = await connect(fl.url("gwA", ["room:t"]), "gwA", ["room:t"])
        await assert_open([c2])
        for bad, key in (({"conn": "gwA-1-0-1", "ttl_ms": 1000}, "ttl"),
                         ({"all": True, "ttl_ms": 1000}, "ttl"),
                         ({"group": "g", "ttl_ms": 86400001}, "ttl"),
                         ({"group": "g", "ttl_ms": "5"}, "type"),
                         ({"op": "send", "group": "g", "text": "x", "ttl_ms": 5}, "op"),
                         ({"op": "unban", "conn": "x"}, "target")):
            _, acks = await fl.order(bad)
            assert all("error" in a for a in acks), (bad, acks)
            assert metric(fl, "wsgate_orders_refused_total", reason=key) >= 1, bad
    run(main())


@harness.timeout(60)
def test_tombstone_set_while_the_subscriber_was_away_closes_open_members_when_it_returns():
    fl = Fleet(ids=("gwA",))

    async def main():
        room = await open_clients(fl, [("gwA", ["late-ban"], None)] * 2)
        other = await open_clients(fl, [("gwA", ["fine"], None)])
        until_ms = int(time.time() * 1000) + 60000
        fl.r.hset("wsgate:orders:tombs", "group:late-ban",
                  json.dumps({"until": until_ms, "code": 4011, "reason": "missed ban", "id": "x"}))
        fl.r.hset("wsgate:orders:tombs", "group:junk", "not json")
        loads = metric(fl, "wsgate_tombstone_loads_total")
        fl.r.client_kill_filter(_type="pubsub")  # every subscriber reconnects
        await assert_closed_with(room, 4011, "missed ban", timeout=10)
        await assert_open(other)
        # Each worker loads when its own subscriber is back: poll for both.
        await until(lambda: metric(fl, "wsgate_tombstone_loads_total") >= loads + 2, 5,
                    "a load by each worker")
        await until(lambda: metric(fl, "wsgate_tombstones_bad_total") >= 2, 5,
                    "the junk field counted by each worker")
        assert metric(fl, "wsgate_tombstone_enforced_total") == 2
    run(main())


@harness.timeout(60)
def test_max_tombstones_bounds_what_a_worker_holds():
    fl = Fleet(ids=("gwA",), flags={"--max-tombstones": "2"})

    async def main():
        for g in ("a", "b", "c"):
            await fl.order({"group": "cap:" + g, "ttl_ms": 60000, "code": 4012})
        await until(lambda: metric(fl, "wsgate_tombstones_full_total") == 2, 5,
                    "the third tombstone refused by both workers")
        assert metric(fl, "wsgate_tombstones") == 4
        c = await connect(fl.url("gwA", ["cap:c"]), "gwA", ["cap:c"])
        await assert_open([c])  # not held here (counted); held in Redis for others
        assert fl.r.hexists("wsgate:orders:tombs", "group:cap:c")
        c2 = await connect(fl.url("gwA", ["cap:a"]), "gwA", ["cap:a"])
        await assert_closed_with([c2], 4012, "")
    run(main())


@harness.timeout(60)
def test_a_ban_that_comes_after_its_unban_is_not_held_again():
    """A worker may read a ban late (its stream link catching up after its subscriber
    took the unban): the ban's ts is before the unban's, so it is not held, nor stored
    in Redis again; a ban made after the unban is."""
    fl = Fleet(ids=("gwA",))

    async def main():
        now = int(time.time() * 1000)
        _, acks = await fl.order({"op": "unban", "group": "late", "ts": now - 1000})
        assert all(a.get("lifted") == 0 for a in acks), acks
        _, acks = await fl.order({"group": "late", "ttl_ms": 60000, "code": 4020,
                                  "reason": "late ban", "ts": now - 2000})
        assert all("error" not in a for a in acks), acks
        assert fl.gateways["gwA"].wait_log("tombstone group=late .*not held: an unban came after")
        c = await connect(fl.url("gwA", ["late"]), "gwA", ["late"])
        await assert_open([c])
        assert not fl.r.hexists("wsgate:orders:tombs", "group:late")
        assert metric(fl, "wsgate_tombstones_added_total") == 0
        # A ban made after the unban holds.
        await fl.order({"group": "late", "ttl_ms": 60000, "code": 4021, "reason": "new ban",
                        "ts": int(time.time() * 1000)})
        await assert_closed_with([c], 4021, "new ban")
        c2 = await connect(fl.url("gwA", ["late"]), "gwA", ["late"])
        await assert_closed_with([c2], 4021, "new ban")
    run(main())
