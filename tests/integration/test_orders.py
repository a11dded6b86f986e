"""Close orders across a fleet: 2 gateways (gwA, gwB) x 2 workers on one redis-server.

Every test opens real WebSocket clients (python websockets) in groups, publishes orders on
wsgate:orders with reply_to test:acks, and checks three things against each other: what
every client saw (exact code and reason, or still answering echoes), the per-worker
acknowledgements, and the open/close events on wsgate:events.
"""

import asyncio
import json
import os
import socket
import string
import subprocess
import time

import harness
import fleet as F
from fleet import Fleet, ack_sums, assert_closed_with, assert_open, open_clients, run, until

HERE = os.path.dirname(os.path.abspath(__file__))

CN_REASON = "服务端维护中,请稍后重连"
LONG_REASON = "é" * 150  # 300 bytes; byte 123 is the middle of an é
EMOJI_REASON = "a" * 121 + "😀" + "tail"  # the emoji is bytes 121..124: it straddles 123


def specs(per_gateway, groups_of):
    """per_gateway clients on each of gwA and gwB; groups_of(i) gives client i's groups;
    every client also joins user:<gateway>-<i>."""
    return [(gid, groups_of(i), "%s-%d" % (gid, i))
            for gid in ("gwA", "gwB") for i in range(per_gateway)]


def by_group(clients, group):
    return [c for c in clients if group in c.groups]


def others(clients, chosen):
    ids = {c.conn for c in chosen}
    return [c for c in clients if c.conn not in ids]


async def check_close_events(fl, clients, code, reason, oid, timeout=5.0):
    """Each client has exactly one close event, with the code, reason and by=order:<id>."""
    want = {c.conn for c in clients}
    await until(lambda: want <= {e["conn"] for e in fl.listener.events("close")}, timeout,
                "close events of %d clients" % len(want))
    for c in clients:
        evs = fl.listener.events("close", c.conn)
        assert len(evs) == 1, "%r: %d close events: %r" % (c, len(evs), evs)
        e = evs[0]
        assert (e["code"], e["reason"], e["by"]) == (code, reason, "order:%s" % oid), \
            "%r close event %r, expected %r %r by order:%s" % (c, e, code, reason, oid)
        assert e["gateway"] == c.gid and sorted(e["groups"]) == sorted(c.groups), (c, e)


async def apply_and_check(fl, clients, order, targets, code, reason):
    """Publishes order, checks targets closed with code/reason, everyone else still open,
    acks summing to the targets, and close events. Returns the order id."""
    before = [c for c in clients if c.open]
    oid, acks = await fl.order(order)
    await assert_closed_with(targets, code, reason)
    matched, closed = ack_sums(acks)
    assert (matched, closed) == (len(targets), len(targets)), \
        "acks of %s: matched %d closed %d, clients closed %d: %r" % (oid, matched, closed,
                                                                   len(targets), acks)
    await assert_open(others(before, targets), oid)
    await check_close_events(fl, targets, code, reason, oid)
    return oid


# --- conn, group, all ----------------------------------------------------------------------

@harness.timeout(60)
def test_conn_order_closes_exactly_those_conns_on_both_gateways():
    fl = Fleet()

    async def main():
        clients = await open_clients(fl, specs(20, lambda i: ["room:%d" % (i % 4)]))
        targets = [c for c in clients if c.gid == "gwA"][:3] + \
                  [c for c in clients if c.gid == "gwB"][5:8]
        await apply_and_check(fl, clients, {"conn": [c.conn for c in targets], "code": 4000,
                                            "reason": CN_REASON}, targets, 4000, CN_REASON)
        # one id as a plain string
        one = [c for c in clients if c.open][7]
        await apply_and_check(fl, clients, {"conn": one.conn, "code": 1000, "reason": "just you"},
                              [one], 1000, "just you")
        await F.close_all(clients)
    run(main())


@harness.timeout(60)
def test_group_orders_carry_exact_codes_and_cut_reasons():
    """One group per reason: multibyte, 300 bytes cut to 122, an emoji straddling byte 123
    cut before it, exactly 123 bytes, empty; codes across the accepted ranges."""
    cases = [  # (group, code, reason as published)
        ("cn", 4000, CN_REASON),
        ("long", 4001, LONG_REASON),
        ("emoji", 3000, EMOJI_REASON),
        ("exact", 1000, "x" * 123),
        ("empty", 4999, ""),
        ("mixed", 1008, "ok ✓ " * 40),
        ("c1013", 1013, "try again later"),
    ]
    assert len(cut_bytes(LONG_REASON)) == 122 and cut_bytes(EMOJI_REASON) == b"a" * 121
    fl = Fleet()

    async def main():
        groups = [g for g, _, _ in cases] + ["bystanders"]
        clients = await open_clients(fl, specs(16, lambda i: [groups[i % len(groups)]]))
        for group, code, reason in cases:
            targets = by_group(clients, group)
            assert len(targets) >= 2
            await apply_and_check(fl, clients, {"group": group, "code": code, "reason": reason},
                                  targets, code, F.cut_reason(reason))
        assert all(c.open for c in by_group(clients, "bystanders"))
        await F.close_all(clients)
    run(main())


def cut_bytes(text):
    return F.cut_reason(text).encode()


@harness.timeout(60)
def test_group_list_and_user_group():
    fl = Fleet()

    async def main():
        clients = await open_clients(fl, specs(12, lambda i: ["team:%d" % (i % 3), "all-teams"]))
        targets = by_group(clients, "team:0") + by_group(clients, "team:2")
        await apply_and_check(fl, clients, {"group": ["team:0", "team:2"], "code": 4100,
                                            "reason": "teams 0 and 2"}, targets, 4100,
                              "teams 0 and 2")
        user = by_group(clients, "user:gwB-4")
        assert len(user) == 1
        await apply_and_check(fl, clients, {"group": "user:gwB-4", "code": 4101,
                                            "reason": "one user"}, user, 4101, "one user")
        await F.close_all(clients)
    run(main())


@harness.timeout(60)
def test_all_order_with_except():
    fl = Fleet()

    async def main():
        clients = await open_clients(fl, specs(20, lambda i: ["room:%d" % (i % 2)]))
        spared = [clients[3], clients[25], clients[39]]
        targets = others(clients, spared)
        oid = await apply_and_check(fl, clients, {"all": True, "except": [c.conn for c in spared],
                                                  "code": 1001, "reason": CN_REASON},
                                    targets, 1001, CN_REASON)
        await assert_open(spared, "spared")
        # except as a single string, with a group target
        more = await open_clients(fl, specs(3, lambda i: ["late"]))
        keep = more[1]
        await apply_and_check(fl, spared + more, {"group": "late", "except": keep.conn,
                                                  "code": 4002, "reason": "late"},
                              others(more, [keep]), 4002, "late")
        assert oid
        await F.close_all(clients + more)
    run(main())


@harness.timeout(60)
def test_events_carry_conn_ids_groups_and_close_details():
    fl = Fleet()

    async def main():
        clients = await open_clients(fl, specs(5, lambda i: ["ev:%d" % i, "ev:all"]))
        workers = {}
        for c in clients:
            evs = fl.listener.events("open", c.conn)
            assert len(evs) == 1, "%r: open events %r" % (c, evs)
            e = evs[0]
            assert e["gateway"] == c.gid, e
            assert sorted(e["groups"]) == sorted(c.groups), (c, e)
            assert e["remote"].startswith("127.0.0.1:"), e
            assert isinstance(e["ts"], int) and abs(e["ts"] / 1000 - time.time()) < 60, e
            assert e["worker"] in (1, 2), e
            workers[c.conn] = (e["gateway"], e["worker"])
        assert len(set(workers.values())) >= 2, "all clients on one worker: %r" % workers
        oid, acks = await fl.order({"group": "ev:all", "code": 4003, "reason": "events"})
        await assert_closed_with(clients, 4003, "events")
        await check_close_events(fl, clients, 4003, "events", oid)
        for c in clients:
            e = fl.listener.events("close", c.conn)[0]
            assert (e["gateway"], e["worker"]) == workers[c.conn], (c, e)
        # each ack counts exactly the clients of its worker
        for a in acks:
            mine = [w for w in workers.values() if w == (a["gateway"], a["worker"])]
            assert a["matched"] == a["closed"] == len(mine), (a, workers)
        # a client's own close is an event with by=client
        extra = (await open_clients(fl, [("gwB", ["ev:x"], None)]))[0]
        await extra.ws.close(4500, "client leaves")
        await until(lambda: fl.listener.events("close", extra.conn), 5, "client close event")
        e = fl.listener.events("close", extra.conn)[0]
        # (the gateway does not pass the client's own reason on: the event has "")
        assert (e["by"], e["code"]) == ("client", 4500) and isinstance(e["reason"], str), e
    run(main())


# --- dry_run, max_affected, gateway, unknown ids -------------------------------------------

@harness.timeout(60)
def test_dry_run_counts_and_closes_nothing():
    fl = Fleet()

    async def main():
        clients = await open_clients(fl, specs(10, lambda i: ["dry:%d" % (i % 2)]))
        oid, acks = await fl.order({"group": "dry:0", "code": 4000, "reason": "dry",
                                    "dry_run": True})
        assert sum(a["matched"] for a in acks) == len(by_group(clients, "dry:0")), acks
        for a in acks:
            assert a.get("dry_run") is True and "error" not in a, a
            assert a["closed"] in (0, a["matched"]), a
        await assert_open(clients, oid)
        assert not [e for e in fl.listener.events("close")], "a dry run closed something"
        # the same order for real
        targets = by_group(clients, "dry:0")
        await apply_and_check(fl, clients, {"group": "dry:0", "code": 4000, "reason": "wet"},
                              targets, 4000, "wet")
        await F.close_all(clients)
    run(main())


def by_worker(fl, clients):
    """Clients by the (gateway, worker) that holds them, from their open events."""
    per_worker = {}
    for c in clients:
        e = fl.listener.events("open", c.conn)[0]
        per_worker.setdefault((e["gateway"], e["worker"]), []).append(c)
    return per_worker


@harness.timeout(60)
def test_max_affected_is_per_worker_and_refuses_whole():
    fl = Fleet()

    async def main():
        clients = await open_clients(fl, specs(16, lambda i: ["max"]))
        per_worker = by_worker(fl, clients)
        assert len(per_worker) == 4, "clients on %d workers only" % len(per_worker)
        counts = sorted(len(v) for v in per_worker.values())
        # a limit below every worker's count: every worker refuses, nothing closes
        limit = counts[0] - 1
        oid, acks = await fl.order({"group": "max", "code": 4000, "reason": "max",
                                    "max_affected": limit})
        assert len(acks) == 4 and all("error" in a for a in acks), acks
        await assert_open(clients, oid)
        # a limit equal to the biggest worker's count: every worker closes its share
        oid, acks = await fl.order({"group": "max", "code": 4004, "reason": "within limit",
                                    "max_affected": counts[-1]})
        assert ack_sums(acks) == (len(clients), len(clients)), acks
        await assert_closed_with(clients, 4004, "within limit")
    run(main())


@harness.timeout(60)
def test_max_affected_splits_by_worker():
    """A limit between two workers' counts: the worker over it refuses, the others close."""
    fl = Fleet()

    async def main():
        clients = await open_clients(fl, specs(16, lambda i: ["max"]))
        per_worker = by_worker(fl, clients)
        counts = sorted(len(v) for v in per_worker.values())
        if counts[0] == counts[-1]:  # equal shares: add one client to make a difference
            extra = await open_clients(fl, [("gwA", ["max"], None)])
            e = fl.listener.events("open", extra[0].conn)[0]
            per_worker[(e["gateway"], e["worker"])].append(extra[0])
            clients += extra
            counts = sorted(len(v) for v in per_worker.values())
        limit = counts[-1] - 1
        oid, acks = await fl.order({"group": "max", "code": 4005, "reason": "split",
                                    "max_affected": limit})
        acks_by_worker = {(a["gateway"], a["worker"]): a for a in acks}
        for w, cs in per_worker.items():
            a = acks_by_worker[w]
            if len(cs) > limit:
                assert "error" in a, a
                await assert_open(cs, oid)
            else:
                assert "error" not in a and a["closed"] == len(cs), a
                await assert_closed_with(cs, 4005, "split")
    run(main())


@harness.timeout(60)
def test_gateway_field_and_gateway_channel_only_that_gateway():
    fl = Fleet()

    async def main():
        clients = await open_clients(fl, specs(10, lambda i: ["g"]))
        gw_b = [c for c in clients if c.gid == "gwB"]
        gw_a = [c for c in clients if c.gid == "gwA"]
        # "gateway":"gwB" on the fleet channel: gwA's workers ignore it without an answer
        oid, acks = await fl.order({"group": "g", "gateway": "gwB", "code": 4006,
                                    "reason": "only B"}, workers=2)
        await assert_closed_with(gw_b, 4006, "only B")
        await assert_open(gw_a, oid)
        for a in fl.listener.acks(oid):
            assert a[0]["gateway"] == "gwB", "gwA answered an order for gwB: %r" % (a,)
        assert ack_sums(acks) == (len(gw_b), len(gw_b)), acks
        # wsgate:orders:gwA, no gateway field: only gwA
        more = await open_clients(fl, specs(4, lambda i: ["g"]))
        oid, acks = await fl.order({"group": "g", "code": 4007, "reason": "only A"},
                                   channel="wsgate:orders:gwA", workers=2)
        assert {a["gateway"] for a in acks} == {"gwA"}, acks
        await assert_closed_with(gw_a + [c for c in more if c.gid == "gwA"], 4007, "only A")
        await assert_open([c for c in more if c.gid == "gwB"], oid)
        # a gateway that does not exist: nobody closes anything
        n = fl.publish({"id": "nobody", "op": "close", "all": True, "gateway": "gwZ",
                        "code": 4000, "reply_to": F.ACKS})
        assert n == 4
        oid, _ = await fl.order({"conn": "none-such"})  # processed after the gwZ order
        await assert_open([c for c in more if c.gid == "gwB"], oid)
        assert not fl.listener.acks("nobody"), fl.listener.acks("nobody")
    run(main())


@harness.timeout(60)
def test_unknown_ids_and_groups_are_not_an_error():
    fl = Fleet()

    async def main():
        clients = await open_clients(fl, specs(4, lambda i: ["known"]))
        for target in ({"conn": "gwA-9-deadbeef-1"}, {"conn": ["x", "y", clients[0].conn + "0"]},
                       {"group": "no-such-group"}, {"group": ["a", "b"]}):
            oid, acks = await fl.order(dict(target, code=4000, reason="nobody"))
            assert ack_sums(acks) == (0, 0), (target, acks)
        # a mix of unknown and known ids closes the known one
        await apply_and_check(fl, clients, {"conn": ["nope", clients[5].conn], "code": 4008,
                                            "reason": "mixed"}, [clients[5]], 4008, "mixed")
    run(main())


# --- refusals ------------------------------------------------------------------------------

def too_many_targets():
    """10001 distinct short conn ids, under 64 KiB."""
    digits = string.digits + string.ascii_letters
    ids = list(digits) + [a + b for a in digits for b in digits]
    ids += [a + b + c for a in digits for b in digits for c in digits][:10001 - len(ids)]
    return {"conn": ids}


REFUSALS = [  # (name, order fields or raw text, whether each worker answers with an error)
    ("not JSON", '{"op":"close","group":"r",', False),
    ("JSON array", '[1,2]', False),
    ("op not a string", {"op": 1, "group": "r"}, True),
    ("unknown op", {"op": "explode", "group": "r"}, True),
    ("group a number", {"group": 5}, True),
    ("conn an object", {"conn": {"a": 1}}, True),
    ("empty group list", {"group": []}, True),
    ("group list with a number", {"group": ["r", 7]}, True),
    ("all false", {"all": False}, True),
    ("all a string", {"all": "yes"}, True),
    ("code a string", {"group": "r", "code": "4000"}, True),
    ("code a float", {"group": "r", "code": 4000.5}, True),
    ("reason a number", {"group": "r", "reason": 12}, True),
    ("spread_ms negative", {"group": "r", "spread_ms": -1}, True),
    ("spread_ms over an hour", {"group": "r", "spread_ms": 3600001}, True),
    ("spread_ms a string", {"group": "r", "spread_ms": "10"}, True),
    ("dry_run a string", {"group": "r", "dry_run": "true"}, True),
    ("max_affected negative", {"group": "r", "max_affected": -1}, True),
    ("max_affected a string", {"group": "r", "max_affected": "5"}, True),
    ("except a number", {"group": "r", "except": 3}, True),
    ("group name over 128 bytes", {"group": "r" * 129}, True),
    ("empty group name", {"group": ""}, True),
    ("no target", {"code": 4000}, True),
    ("conn and group", {"conn": "x", "group": "r"}, True),
    ("group and all", {"group": "r", "all": True}, True),
    ("conn and all", {"conn": "x", "all": True}, True),
    ("over 64 KiB", {"group": ["r"] + ["pad%05d" % i for i in range(6000)]}, True),
    ("over 10000 targets", too_many_targets(), True),
    ("except pushing targets over 10000",
     {"group": "r", "except": ["%x" % i for i in range(10000)]}, True),
] + [("code %d" % c, {"group": "r", "code": c}, True)
     for c in (0, 999, 1004, 1005, 1006, 1010, 1015, 1016, 2999, 5000, 65536 + 4000, -4000)]


def order_text(name, fields, i):
    if isinstance(fields, str):
        return fields.encode()
    o = {"id": "refused-%d" % i, "op": "close", "code": 4000, "reason": name,
         "reply_to": F.ACKS}
    o.update(fields)
    text = json.dumps(o, ensure_ascii=False, separators=(",", ":")).encode()
    if name == "over 64 KiB":
        assert len(text) > 64 * 1024 and len(o["group"]) < 10000, len(text)
    elif name == "over 10000 targets":
        assert len(text) < 64 * 1024, len(text)
    return text


@harness.timeout(90)
def test_every_refusal_closes_nothing_then_a_good_order_works():
    fl = Fleet()

    async def main():
        clients = await open_clients(fl, specs(10, lambda i: ["r"]))
        failures = []
        for i, (name, fields, acked) in enumerate(REFUSALS):
            text = order_text(name, fields, i)
            n = fl.publish(text)
            assert n == 4, "%s: %d receivers" % (name, n)
            # a later order on the same channel is answered after this one was handled
            await fl.order({"conn": "sentinel"})
            acks = [a for a, _ in fl.listener.acks("refused-%d" % i)]
            if acked:
                if len(acks) != 4 or not all(isinstance(a.get("error"), str) and a["error"]
                                             and "matched" not in a for a in acks):
                    failures.append("%s: expected 4 error acks, got %r" % (name, acks))
                elif {(a["gateway"], a["worker"]) for a in acks} != \
                        {("gwA", 1), ("gwA", 2), ("gwB", 1), ("gwB", 2)}:
                    failures.append("%s: acks from %r" % (name, acks))
            else:
                assert not acks, (name, acks)
            if not all(c.open for c in clients):
                failures.append("%s closed %r" % (name, [c for c in clients if not c.open]))
                break
        await assert_open(clients, "after refusals")
        assert not fl.listener.events("close"), fl.listener.events("close")
        assert not failures, "\n".join(failures)
        await apply_and_check(fl, clients, {"group": "r", "code": 4009, "reason": CN_REASON},
                              clients, 4009, CN_REASON)
    run(main())


@harness.timeout(60)
def test_refused_reason_with_nul_or_bad_utf8_is_answered():
    """A reason holding NUL, or bytes that are not UTF-8, is refused and closes nothing;
    with reply_to each worker says so, as for every other refusal: the order's id and
    reply_to are well-formed strings even when the reason is not."""
    fl = Fleet()

    async def main():
        clients = await open_clients(fl, specs(4, lambda i: ["r"]))
        head = b'{"op":"close","group":"r","code":4000,"reply_to":"test:acks","id":"%s",'
        bad = {  # id -> order text; the reason is the last field
            "nul": b'"reason":"a\\u0000b"}',              # JSON escape of NUL
            "bad-utf8-ff": b'"reason":"a\xff\xfeb"}',       # bytes never in UTF-8
            "bad-utf8-cut": b'"reason":"ok \xe6\x9c"}',     # a 3-byte sequence cut short
            "lone-surrogate": b'"reason":"\\ud800x"}',    # JSON escape of a lone surrogate
        }
        bad = {oid: head % oid.encode() + tail for oid, tail in bad.items()}
        for text in bad.values():
            assert fl.publish(text) == 4
        await fl.order({"conn": "sentinel"})  # answered after the orders above were handled
        await assert_open(clients, "after NUL and bad UTF-8")
        assert not fl.listener.events("close"), fl.listener.events("close")
        missing = []
        for oid in bad:
            acks = [a for a, _ in fl.listener.acks(oid)]
            if len(acks) != 4 or not all(a.get("error") for a in acks):
                missing.append("%s: %r -> acks %r" % (oid, bad[oid], acks))
        assert not missing, "refused without an answer to reply_to:\n" + "\n".join(missing)
    run(main())


# --- Redis restart -------------------------------------------------------------------------

@harness.timeout(90)
def test_redis_restart_next_order_is_applied():
    fl = Fleet()

    async def main():
        clients = await open_clients(fl, specs(10, lambda i: ["rs:%d" % (i % 2)]))
        await apply_and_check(fl, clients, {"group": "rs:0", "code": 4010, "reason": "before"},
                              by_group(clients, "rs:0"), 4010, "before")
        gen = fl.listener.generation
        fl.restart_redis()
        # every worker resubscribes and reconnects its publisher (acks and events go out
        # on the publisher: an order applied before it is back is answered to nobody)
        await asyncio.get_running_loop().run_in_executor(None, fl.wait_subscribed, 2, 20.0)
        await until(lambda: fl.listener.generation > gen, 10, "the listener's resubscription")
        await assert_open(by_group(clients, "rs:1"), "across the restart")
        targets = by_group(clients, "rs:1")
        await apply_and_check(fl, clients, {"group": "rs:1", "code": 4011, "reason": CN_REASON},
                              targets, 4011, CN_REASON)
    run(main())


# --- spread --------------------------------------------------------------------------------

@harness.timeout(120)
def test_spread_ms_spreads_500_closes_over_the_window():
    fl = Fleet()
    window = 2.0

    async def main():
        clients = await open_clients(fl, specs(250, lambda i: ["big"]), batch=50, timeout=30)
        small = await open_clients(fl, specs(2, lambda i: ["small"]))
        oid = F.order_id("spread")
        t0 = time.monotonic()
        assert fl.publish({"id": oid, "op": "close", "group": "big", "code": 4012,
                           "reason": "spread", "spread_ms": int(window * 1000),
                           "reply_to": F.ACKS}) == 4
        await until(lambda: len(fl.listener.acks(oid)) >= 4, window + 5, "4 acks of " + oid)
        await assert_closed_with(clients, 4012, "spread", timeout=window + 3)
        times = sorted(c.closed_at - t0 for c in clients)
        span = times[-1] - times[0]
        first_half = sum(1 for t in times if t < window / 2)
        summary = "closes from %.3fs to %.3fs after publishing (span %.3fs), %d in the first " \
                  "half of the window" % (times[0], times[-1], span, first_half)
        print(summary)  # shown by the runner when the test fails
        assert span >= 1.2, "closes not spread: " + summary
        assert times[-1] <= window + 1.5, "closes late: " + summary
        window_100ms = max(sum(1 for t in times if s <= t < s + 0.1) for s in times)
        assert window_100ms < len(times) / 2, \
            "%d of %d closes within 100 ms: %s" % (window_100ms, len(times), summary)
        assert 0.1 * len(times) <= first_half <= 0.9 * len(times), summary
        acks = fl.listener.acks(oid)
        assert ack_sums([a for a, _ in acks]) == (500, 500), acks
        # each worker answers after its last close went out
        for a, t in acks:
            mine = [c.closed_at for c in clients
                    if (fl.listener.events("open", c.conn)[0]["gateway"],
                        fl.listener.events("open", c.conn)[0]["worker"])
                    == (a["gateway"], a["worker"])]
            assert mine and t >= max(mine) - 0.1, \
                "ack %r at %.3fs before its last close at %.3fs" % (a, t - t0, max(mine) - t0)
        await assert_open(small, oid)
        await check_close_events(fl, clients[:50], 4012, "spread", oid)
    run(main())


# --- upgrade refusals ----------------------------------------------------------------------

def http_status(port, target, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n" % target).encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        line = data.split(b"\r\n", 1)[0].decode("latin-1")
        assert line.startswith("HTTP/1.1 "), "status line %r" % line
        return int(line.split()[1])
    finally:
        s.close()


def test_too_many_groups_or_long_group_name_is_400():
    gw = harness.start_gateway(flags={"--max-groups": "3"})
    cases = [
        ("/?group=a&group=b&group=c", 101),
        ("/?group=a&group=b&group=c&group=d", 400),
        ("/?group=a&group=b&user=u", 101),
        ("/?group=a&group=b&group=c&user=u", 400),
        ("/?group=" + "g" * 128, 101),
        ("/?group=" + "g" * 129, 400),
        ("/?user=" + "u" * 200, 400),
    ]
    got = [(t[:60], http_status(gw.port, t)) for t, _ in cases]
    assert got == [(t[:60], s) for t, s in cases], got
    gw16 = harness.start_gateway()  # default --max-groups 16
    assert http_status(gw16.port, "/?" + "&".join("group=g%d" % i for i in range(16))) == 101
    assert http_status(gw16.port, "/?" + "&".join("group=g%d" % i for i in range(17))) == 400


# --- wsgatectl -----------------------------------------------------------------------------

def holders(fl, clients):
    """The workers (gateway, worker) that hold clients, from their open events."""
    conns = {c.conn for c in clients}
    return {(e["gateway"], e["worker"]) for e in fl.listener.events("open") if e["conn"] in conns}


@harness.timeout(90)
def test_wsgatectl_close_wait_summary_and_exit_codes():
    fl = Fleet()
    url = fl.redis.url

    async def ctl(*args):
        return await asyncio.get_running_loop().run_in_executor(None, lambda: fl.ctl(*args))

    async def main():
        clients = await open_clients(fl, specs(6, lambda i: ["ctl:%d" % (i % 3)]))
        g0 = by_group(clients, "ctl:0")
        # wsgatectl waits for every live worker; heartbeats are written every few seconds
        await until(lambda: len(list(fl.r.scan_iter("wsgate:orders:gw:*"))) >= 4, 10,
                    "4 worker heartbeat keys")
        # One group goes to its group channel: the workers holding members answer.
        p = await ctl("close", "--group", "ctl:0", "--code", "4013", "--reason", CN_REASON,
                      "--wait", "5000", "--redis", url)
        assert p.returncode == 0, p
        want = "closed %d of %d matched connections on 2 gateways (%d workers answered)" % (
            len(g0), len(g0), len(holders(fl, g0)))
        assert want in p.stdout, "%r not in %r" % (want, p.stdout)
        await assert_closed_with(g0, 4013, CN_REASON)
        await assert_open(others(clients, g0))
        # --dry-run --json: one ack a line, nothing closed
        g1 = by_group(clients, "ctl:1")
        p = await ctl("close", "--group", "ctl:1", "--dry-run", "--wait", "5000", "--json",
                      "--redis", url)
        assert p.returncode == 0, p
        acks = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
        assert len(acks) == len(holders(fl, g1)) and sum(a["matched"] for a in acks) == len(g1), \
            p.stdout
        await assert_open(g1, "after dry run")
        # --conn and --except
        p = await ctl("close", "--group", "ctl:1", "--except", g1[0].conn, "--code", "4014",
                      "--reason", "ctl", "--wait", "5000", "--redis", url)
        assert p.returncode == 0 and "closed %d of %d" % (len(g1) - 1, len(g1) - 1) in p.stdout, p
        await assert_closed_with(g1[1:], 4014, "ctl")
        p = await ctl("close", "--conn", g1[0].conn, "--gateway", g1[0].gid, "--code", "4015",
                      "--wait", "5000", "--redis", url)
        assert p.returncode == 0 and "closed 1 of 1" in p.stdout, p
        await g1[0].wait_closed()
        assert g1[0].code == 4015, g1[0].code
        # --max-affected exceeded: a worker refuses, exit 1, nothing closed
        g2 = by_group(clients, "ctl:2")
        p = await ctl("close", "--group", "ctl:2", "--max-affected", "0", "--wait", "5000",
                      "--redis", url)
        assert p.returncode == 1, p
        await assert_open(g2, "after max-affected")
        # bad arguments: exit 2, nothing published
        for bad in (["--group", "ctl:2", "--code", "1005"], ["--group", "ctl:2", "--code", "5000"],
                    ["--group", "ctl:2", "--all"], [], ["--group", "ctl:2", "--spread", "-1"],
                    ["--conn", "x", "--bogus"]):
            p = await ctl("close", *bad, "--redis", url)
            assert p.returncode == 2, (bad, p)
        await assert_open(g2, "after bad arguments")
        # Redis unreachable: exit 3
        p = await ctl("close", "--group", "ctl:2", "--redis",
                      "redis://127.0.0.1:%d" % harness.free_port())
        assert p.returncode == 3, p
        p = await ctl("gateways", "--redis", "redis://127.0.0.1:%d" % harness.free_port())
        assert p.returncode == 3, p
        # a good order after all that
        p = await ctl("close", "--all", "--code", "4016", "--reason", "bye", "--wait", "5000",
                      "--redis", url)
        assert p.returncode == 0 and "closed %d of %d" % (len(g2), len(g2)) in p.stdout, p
        await assert_closed_with(g2, 4016, "bye")
    run(main())


@harness.timeout(60)
def test_wsgatectl_gateways_lists_both_with_counts():
    fl = Fleet()

    async def main():
        clients = await open_clients(fl, specs(3, lambda i: ["gw"]) + [("gwB", ["gw"], None)])

        def listed():
            p = fl.ctl("gateways", "--json", "--redis", fl.redis.url)
            assert p.returncode == 0, p
            rows = {}
            for line in p.stdout.splitlines():
                row = json.loads(line)
                rows[row["gateway"]] = row
            want = {"gwA": 3, "gwB": 4}
            ok = set(rows) == set(want) and all(rows[g]["conns"] == n for g, n in want.items())
            return rows if ok else None
        rows = await until(listed, 15, "gateways --json listing gwA 3 and gwB 4 connections",
                           interval=0.2)
        for g in ("gwA", "gwB"):
            assert rows[g]["workers"] == 2 and rows[g]["draining"] is False, rows
        p = fl.ctl("gateways", "--redis", fl.redis.url)
        assert p.returncode == 0, p
        lines = sorted(l for l in p.stdout.splitlines() if l.strip())
        assert len(lines) == 2, p.stdout
        assert lines[0].split()[0] == "gwA" and "workers=2" in lines[0] and "conns=3" in lines[0]
        assert lines[1].split()[0] == "gwB" and "conns=4" in lines[1], lines
        await F.close_all(clients)
    run(main())


# --- a Node client -------------------------------------------------------------------------

@harness.timeout(60)
def test_node_ws_client_sees_group_order():
    fl = Fleet()
    script = os.path.join(HERE, "orders_client.js")
    env = dict(os.environ, NODE_PATH=os.path.join(HERE, "node_modules"))

    async def main():
        others_ = await open_clients(fl, specs(2, lambda i: ["node:other"]))
        procs = []
        for gid in ("gwA", "gwB"):
            p = await asyncio.create_subprocess_exec(
                "node", script, fl.url(gid, ["node:room"]), stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env=env, cwd=HERE)
            procs.append(p)
        conns = []
        for p in procs:
            line = json.loads(await asyncio.wait_for(p.stdout.readline(), 10))
            assert line.get("event") == "open" and line.get("conn"), line
            conns.append(line["conn"])
        await until(lambda: set(conns) <= {e["conn"] for e in fl.listener.events("open")}, 5,
                    "open events of the node clients")
        oid, acks = await fl.order({"group": "node:room", "code": 4017, "reason": EMOJI_REASON})
        assert ack_sums(acks) == (2, 2), acks
        for p in procs:
            out = (await asyncio.wait_for(p.stdout.read(), 10)).decode()
            events = [json.loads(l) for l in out.splitlines() if l.strip()]
            close = [e for e in events if e.get("event") == "close"]
            assert close and close[0]["code"] == 4017 and \
                close[0]["reason"] == F.cut_reason(EMOJI_REASON), out
            assert await asyncio.wait_for(p.wait(), 5) == 0
        await assert_open(others_, oid)
    run(main())
