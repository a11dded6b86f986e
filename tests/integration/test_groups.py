"""Membership at runtime and group channels: 2 gateways (gwA, gwB) x 2 workers on one
redis-server unless a test says otherwise.

Join and leave orders are checked three ways: their acknowledgements (matched, joined or
left, refused), what a later close order does, and the groups in close events. Group
channels (wsgate:orders:group:NAME) are checked with Redis's own count of subscribers
(PUBSUB NUMSUB) and the workers' SUBSCRIBE/UNSUBSCRIBE counters: a worker subscribes
when it gets a group's first member and unsubscribes about a second after the last one
leaves. A group order is only published once NUMSUB shows every holder subscribed: Redis
does not deliver what was published before.
"""

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import time
import uuid

import harness
import fleet as F
import lb
import wsraw
from fleet import Fleet, assert_closed_with, assert_open, open_clients, run, until

GROUP = "wsgate:orders:group:"


def numsub(fl, *groups):
    """Redis's count of subscribers of each group's channel (one int for one group)."""
    counts = [n for _, n in fl.r.pubsub_numsub(*[GROUP + g for g in groups])]
    return counts[0] if len(groups) == 1 else counts


def holders(fl, clients):
    """The workers (gateway, worker) that hold clients, from their open events."""
    conns = {c.conn for c in clients}
    return {(e["gateway"], e["worker"]) for e in fl.listener.events("open") if e["conn"] in conns}


def msum(gw, name):
    """A metric of gw, summed over its samples."""
    fams = lb.metrics(gw.admin_port)
    return sum(fams[name]["samples"].values())


def fleet_sum(fl, name):
    return sum(msum(gw, name) for gw in fl.gateways.values())


def member_sums(acks, count):
    """(matched, joined or left, refused) summed over acks from distinct workers."""
    seen = [(a["gateway"], a["worker"]) for a in acks]
    assert len(seen) == len(set(seen)), "a worker answered twice: %r" % acks
    for a in acks:
        assert "error" not in a, "error ack: %r" % a
    return tuple(sum(a[k] for a in acks) for k in ("matched", count, "refused"))


async def until_numsub(fl, group, want, timeout=5.0):
    await until(lambda: numsub(fl, group) == want, timeout,
                "PUBSUB NUMSUB %s%s == %d (is %d)" % (GROUP, group, want, numsub(fl, group)))


async def close_events(fl, clients, timeout=5.0):
    """{conn: its close event} once every client has one."""
    want = {c.conn for c in clients}
    await until(lambda: want <= {e["conn"] for e in fl.listener.events("close")}, timeout,
                "close events of %d clients" % len(want))
    return {e["conn"]: e for e in fl.listener.events("close") if e["conn"] in want}


# --- join and leave orders -----------------------------------------------------------------

@harness.timeout(60)
def test_join_and_leave_orders_acks_limits_and_events():
    fl = Fleet(flags={"--max-groups": "3"})

    async def main():
        clients = await open_clients(fl, [(gid, ["lobby"], None) for gid in ("gwA", "gwB")
                                          for _ in range(4)])
        a, b = clients[0], clients[4]  # one on each gateway
        # Two connections on two gateways join a room and a user group (a backend may);
        # a name given twice is one membership.
        _, acks = await fl.order({"op": "join", "conn": [a.conn, b.conn],
                                  "groups": ["room:1", "user:zed", "room:1"]})
        assert member_sums(acks, "joined") == (2, 2, 0), acks
        _, acks = await fl.order({"op": "join", "conn": [a.conn, b.conn],
                                  "groups": ["room:1"]})
        assert member_sums(acks, "joined") == (2, 0, 0), acks  # members already
        # A fourth group would pass --max-groups 3: refused whole, nothing joined.
        _, acks = await fl.order({"op": "join", "conn": a.conn, "groups": ["room:2", "lobby"]})
        assert member_sums(acks, "joined") == (1, 0, 1), acks
        # A group target with except: 8 in the lobby, a spared, b at its limit.
        _, acks = await fl.order({"op": "join", "group": "lobby", "except": a.conn,
                                  "groups": ["room:3"]})
        assert member_sums(acks, "joined") == (7, 6, 1), acks
        # A dry run joins nothing.
        _, acks = await fl.order({"op": "join", "all": True, "groups": ["dry"], "dry_run": True})
        assert member_sums(acks, "joined") == (8, 0, 0) and all(x["dry_run"] for x in acks)
        # Leave: a group a is in and one it is not.
        _, acks = await fl.order({"op": "leave", "conn": a.conn, "groups": ["room:1", "nowhere"]})
        assert member_sums(acks, "left") == (1, 1, 0), acks
        # max_affected refuses the whole order on a worker that matches more.
        _, acks = await fl.order({"op": "leave", "group": "room:3", "groups": ["room:3"],
                                  "max_affected": 0})
        errors = [x for x in acks if "error" in x]
        assert errors and all("max_affected exceeded" in x["error"] for x in errors), acks
        # Bad group names are refused by every worker, with the reason.
        for bad in (["a\nb"], [""], ["x" * 129], "room:1"):
            _, acks = await fl.order({"op": "join", "all": True, "groups": bad})
            assert all("error" in x and "groups" in x["error"] for x in acks), (bad, acks)
        # What the orders did shows in what a close order matches...
        _, acks = await fl.order({"group": "room:1", "code": 4021, "reason": "room 1"})
        assert F.ack_sums(acks) == (1, 1), acks
        await assert_closed_with([b], 4021, "room 1")
        await assert_open([c for c in clients if c is not b])
        # ... and in the groups of close events.
        rest = [c for c in clients if c is not b]
        _, acks = await fl.order({"all": True, "code": 4022, "reason": "bye"})
        await assert_closed_with(rest, 4022, "bye")
        ev = await close_events(fl, clients)
        assert sorted(ev[b.conn]["groups"]) == ["lobby", "room:1", "user:zed"], ev[b.conn]
        assert sorted(ev[a.conn]["groups"]) == ["lobby", "user:zed"], ev[a.conn]
        for c in rest[1:]:
            assert sorted(ev[c.conn]["groups"]) == ["lobby", "room:3"], ev[c.conn]
        assert fleet_sum(fl, "wsgate_order_joined_total") == 8
        assert fleet_sum(fl, "wsgate_order_left_total") == 1
        assert fleet_sum(fl, "wsgate_order_join_refused_total") == 2
    run(main())


@harness.timeout(90)
def test_join_of_1100_connections_runs_in_batches_and_answers_once():
    """More matches than one batch (1024): a job carries the join over loop turns."""
    redis = harness.start_redis()
    gw = harness.Gateway(flags={"--redis": redis.url, "--id": "gwA"}, workers=1).start()
    listener = F.Listener(redis.port, channels=(F.ACKS,))
    r = redis.client()
    harness.wait_for(lambda: "redis publisher up" in gw.log(), 5, "the publisher")
    socks = [wsraw.Client.open(gw.port, path="/?group=crowd") for _ in range(1100)]
    try:
        for op, key in (("join", "joined"), ("leave", "left")):
            oid = F.order_id(op)
            assert r.publish("wsgate:orders", json.dumps(
                {"id": oid, "op": op, "group": "crowd", "groups": ["big"],
                 "reply_to": F.ACKS})) == 1
            acks = harness.wait_for(lambda: listener.acks(oid), 10, "the %s ack" % op)
            assert len(acks) == 1 and acks[0][0]["matched"] == 1100 and \
                acks[0][0][key] == 1100, acks
            gw.wait_log(r"order done id=%s op=%s matched=1100 %s=1100" % (oid, op, key))
            harness.wait_for(lambda: r.pubsub_numsub(GROUP + "big")[0][1] == (op == "join"),
                             5, "big's channel after the %s" % op)
        assert len(listener.acks(oid)) == 1
    finally:
        for s in socks:
            s.close()


# --- group channels ------------------------------------------------------------------------

@harness.timeout(60)
def test_group_channel_order_reaches_exactly_the_members():
    fl = Fleet()

    async def main():
        members = await open_clients(fl, [(gid, ["room:x"], None) for gid in ("gwA", "gwB")
                                          for _ in range(3)])
        others = await open_clients(fl, [(gid, ["room:y"], None) for gid in ("gwA", "gwB")
                                         for _ in range(3)] + [("gwA", [], None)])
        hold = holders(fl, members)
        await until_numsub(fl, "room:x", len(hold))
        ch = GROUP + "room:x"
        # On room:x's channel nothing but room:x is a target.
        for bad in ({"group": "room:y"}, {"conn": others[0].conn}, {"all": True}):
            _, acks = await fl.order(dict(bad, code=4000), channel=ch, workers=len(hold))
            assert {(x["gateway"], x["worker"]) for x in acks} == hold, acks
            assert all("error" in x for x in acks), (bad, acks)
        await assert_open(members + others, "after refusals")
        # The order reaches the holders only, and closes the members only.
        oid = F.order_id("gc")
        n = fl.publish({"id": oid, "code": 4031, "reason": "room x", "reply_to": F.ACKS}, ch)
        assert n == len(hold), (n, hold)
        acks = await until(lambda: len(fl.listener.acks(oid)) >= len(hold) and
                           fl.listener.acks(oid), 5, "acks of the group channel order")
        assert {(x["gateway"], x["worker"]) for x, _ in acks} == hold, acks
        assert F.ack_sums([x for x, _ in acks]) == (len(members), len(members))
        await assert_closed_with(members, 4031, "room x")
        await assert_open(others, "after the group order")
        # The broadcast channel still works beside group channels: a list of groups
        # matches a connection in two of them once.
        both = await open_clients(fl, [("gwA", ["room:y", "room:z"], None)])
        _, acks = await fl.order({"group": ["room:y", "room:z"], "code": 4032, "reason": "yz"})
        assert F.ack_sums(acks) == (7, 7), acks
        await assert_closed_with(others[:6] + both, 4032, "yz")
        await assert_open(others[6:])
        # Every group channel is let go once its members are gone.
        await until_numsub(fl, "room:x", 0)
        await until(lambda: fleet_sum(fl, "wsgate_group_channels") == 0, 5, "no group channel")
        assert fleet_sum(fl, "wsgate_group_channel_orders_total") == 4 * len(hold)
    run(main())


@harness.timeout(60)
def test_wsgatectl_close_group_uses_the_group_channel():
    fl = Fleet()

    async def ctl(*args):
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: fl.ctl(*args, "--redis", fl.redis.url))

    async def main():
        members = await open_clients(fl, [("gwA", ["ctl:g"], None), ("gwB", ["ctl:g"], None)])
        bystander = await open_clients(fl, [("gwB", ["ctl:h"], None)])
        hold = holders(fl, members)
        await until_numsub(fl, "ctl:g", len(hold))
        before = fleet_sum(fl, "wsgate_orders_received_total")
        p = await ctl("close", "--group", "ctl:g", "--code", "4033", "--wait", "5000")
        assert p.returncode == 0, p
        assert "closed 2 of 2 matched connections on 2 gateways (%d workers answered)" % len(
            hold) in p.stdout, p.stdout
        await assert_closed_with(members, 4033, "")
        await assert_open(bystander)
        # Only the holders received it: no other worker counted an order.
        assert fleet_sum(fl, "wsgate_orders_received_total") == before + len(hold)
        # A group nobody holds: nobody receives it, and that is no error.
        p = await ctl("close", "--group", "ctl:none", "--wait", "2000")
        assert p.returncode == 0 and "no worker holds a member of group ctl:none" in p.stderr, p
        assert "closed 0 of 0" in p.stdout, p.stdout
    run(main())


@harness.timeout(60)
def test_numsub_follows_membership_with_a_one_second_linger():
    fl = Fleet(ids=("gwA",))
    gw = fl.gateways["gwA"]

    def counts():
        return (msum(gw, "wsgate_group_subscribe_commands_total"),
                msum(gw, "wsgate_group_unsubscribe_commands_total"))

    async def main():
        clients = await open_clients(fl, [("gwA", [], None)] * 3)
        by_worker = {}
        for c in clients:
            by_worker.setdefault(holders(fl, [c]).pop(), []).append(c)
        c1, c2 = next(v for v in by_worker.values() if len(v) >= 2)[:2]  # 3 clients, 2 workers
        assert numsub(fl, "linger") == 0
        subs, unsubs = counts()
        # The first member: one SUBSCRIBE.
        await fl.order({"op": "join", "conn": c1.conn, "groups": ["linger", "marker"]})
        await until(lambda: numsub(fl, "linger", "marker") == [1, 1], 3, "both channels")
        assert counts() == (subs + 1, unsubs), counts()
        # The last member leaves: subscribed for about a second more, then not.
        t0 = time.monotonic()
        await fl.order({"op": "leave", "conn": c1.conn, "groups": ["linger", "marker"]})
        await until(lambda: numsub(fl, "linger", "marker") == [0, 0], 3, "both let go")
        dt = time.monotonic() - t0
        assert 0.8 <= dt <= 2.0, "unsubscribed %.2fs after the last member left" % dt
        assert counts() == (subs + 1, unsubs + 1), counts()  # one UNSUBSCRIBE for both
        # Churn: the last member leaves and another comes within the second: Redis hears
        # nothing about linger. marker, left at the same moment, shows when the second
        # is over.
        await fl.order({"op": "join", "conn": c1.conn, "groups": ["linger", "marker"]})
        await until(lambda: numsub(fl, "linger", "marker") == [1, 1], 3, "both again")
        subs, unsubs = counts()
        await fl.order({"op": "leave", "conn": c1.conn, "groups": ["linger", "marker"]})
        await fl.order({"op": "join", "conn": c2.conn, "groups": ["linger"]})
        await until(lambda: numsub(fl, "marker") == 0, 3, "marker let go")
        assert numsub(fl, "linger") == 1
        assert counts() == (subs, unsubs + 1), counts()  # marker's UNSUBSCRIBE only
        # A member that closes is a member that leaves.
        await c2.ws.close()
        await until_numsub(fl, "linger", 0, 3)
        assert counts() == (subs, unsubs + 2), counts()
        # Connect-time groups subscribe the same way.
        c3 = (await open_clients(fl, [("gwA", ["linger"], None)]))[0]
        await until_numsub(fl, "linger", 1, 3)
        await c3.ws.close()
        await until(lambda: fleet_sum(fl, "wsgate_group_channels") == 0, 5, "no group channel")
    run(main())


@harness.timeout(90)
def test_group_channels_come_back_after_a_redis_restart():
    fl = Fleet()

    async def main():
        r1 = await open_clients(fl, [(gid, ["rs:1"], None) for gid in ("gwA", "gwB")
                                     for _ in range(3)])
        r2 = await open_clients(fl, [("gwA", [], None), ("gwB", [], None)])
        _, acks = await fl.order({"op": "join", "conn": [c.conn for c in r2], "groups": ["rs:2"]})
        assert member_sums(acks, "joined") == (2, 2, 0)
        h1, h2 = holders(fl, r1), holders(fl, r2)
        await until_numsub(fl, "rs:1", len(h1))
        await until_numsub(fl, "rs:2", len(h2))
        gen = fl.listener.generation
        fl.restart_redis()
        await asyncio.get_running_loop().run_in_executor(None, fl.wait_subscribed, 2, 20.0)
        await until(lambda: fl.listener.generation > gen, 10, "the listener's resubscription")
        await until_numsub(fl, "rs:1", len(h1))
        await until_numsub(fl, "rs:2", len(h2))
        await until(lambda: fleet_sum(fl, "wsgate_group_channels") == len(h1) + len(h2), 5,
                    "the group channels gauge after the restart")
        oid = F.order_id("rs")
        assert fl.publish({"id": oid, "code": 4041, "reason": "after", "reply_to": F.ACKS},
                          GROUP + "rs:2") == len(h2)
        await assert_closed_with(r2, 4041, "after")
        await assert_open(r1, "after the rs:2 order")
        await until(lambda: len(fl.listener.acks(oid)) == len(h2), 5, "acks")
    run(main())


@harness.timeout(120)
def test_10000_groups_subscribe_in_a_few_batched_commands():
    """More channels than may wait for confirmation at once (8 192): whole commands of
    1 024 channels, on joins and again after a Redis restart."""
    fl = Fleet(ids=("gwA",), workers=1, flags={"--max-groups": "1024"})
    gw = fl.gateways["gwA"]
    names = ["many:%d:%d" % (i, k) for i in range(10) for k in range(1000)]

    def channels():
        return msum(gw, "wsgate_group_channels")

    def commands():
        return (msum(gw, "wsgate_group_subscribe_commands_total"),
                msum(gw, "wsgate_group_unsubscribe_commands_total"))

    async def main():
        clients = await open_clients(fl, [("gwA", [], None)] * 10)
        for i, c in enumerate(clients):
            _, acks = await fl.order({"op": "join", "conn": c.conn,
                                      "groups": names[i * 1000:(i + 1) * 1000]})
            assert member_sums(acks, "joined") == (1, 1, 0), acks
        await until(lambda: channels() == 10000, 10, "10000 group channels")
        subs, unsubs = commands()
        assert subs == 10, "%d SUBSCRIBE commands for 10 joins of 1000" % subs
        assert numsub(fl, *names) == [1] * 10000
        # After a restart, all of them again: 10 commands of up to 1024 channels.
        gen = fl.listener.generation
        fl.restart_redis()
        await asyncio.get_running_loop().run_in_executor(None, fl.wait_subscribed, 2, 20.0)
        await until(lambda: fl.listener.generation > gen, 10, "the listener's resubscription")
        await until(lambda: channels() == 10000, 10, "10000 group channels again")
        assert commands()[0] - subs == 10, commands()
        assert numsub(fl, *names) == [1] * 10000
        # Everyone leaves everything: a second later, whole UNSUBSCRIBE commands.
        for i in range(0, 10000, 4000):
            await fl.order({"op": "leave", "all": True, "groups": names[i:i + 4000]})
        await until(lambda: channels() == 0, 5, "no group channel")
        assert 10 <= commands()[1] - unsubs <= 12, commands()
        assert numsub(fl, *names) == [0] * 10000
    run(main())


# --- signed orders -------------------------------------------------------------------------

K1 = "k1:first-secret-0123456789abcdef"


def seal(order, key=K1):
    kid, secret = key.split(":", 1)
    body = json.dumps(order)
    sig = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    return json.dumps({"kid": kid, "sig": sig, "body": body})


@harness.timeout(60)
def test_signed_group_channel_order_must_name_its_group():
    """The signature covers the body, not the channel: an order that leaves its group
    out could be published again on another group's channel."""
    fl = Fleet(ids=("gwA",), extra=["--order-key", K1])

    async def main():
        a = await open_clients(fl, [("gwA", ["sg:a"], None)])
        await until_numsub(fl, "sg:a", 1)

        def order(**kw):
            return dict({"id": str(uuid.uuid4()), "ts": int(time.time() * 1000), "code": 4051,
                         "reply_to": F.ACKS}, **kw)
        unnamed = order()
        assert fl.publish(seal(unnamed), GROUP + "sg:a") == 1
        acks = await until(lambda: fl.listener.acks(unnamed["id"]), 5, "the refusal")
        assert "must name its group" in acks[0][0]["error"], acks
        await assert_open(a)
        named = order(group="sg:a")
        assert fl.publish(seal(named), GROUP + "sg:a") == 1
        await assert_closed_with(a, 4051, "")
    run(main())


# --- the README ----------------------------------------------------------------------------

@harness.timeout(60)
def test_readme_join_and_group_channel_snippets():
    """The two redis-cli blocks of README's membership and group channel sections, run as
    written: alice's connections join room:7, then room:7's channel closes them."""
    from test_snippets import snippet
    fl = Fleet()
    env = dict(os.environ, WSGATE_REDIS=fl.redis.url)

    def sh(name):
        return subprocess.run(["sh", "-c", snippet(name, "sh")], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, env=env, timeout=30)

    async def main():
        alice = await open_clients(fl, [("gwA", [], "alice"), ("gwB", [], "alice")])
        bob = await open_clients(fl, [("gwA", [], "bob"), ("gwB", ["room:8"], "bob")])
        p = await asyncio.get_running_loop().run_in_executor(None, sh, "join-redis-cli")
        assert p.returncode == 0 and p.stdout.strip() == str(fl.workers), p
        hold = holders(fl, alice)
        await until_numsub(fl, "room:7", len(hold))
        p = await asyncio.get_running_loop().run_in_executor(None, sh, "group-channel-redis-cli")
        assert p.returncode == 0 and p.stdout.strip() == str(len(hold)), p
        await assert_closed_with(alice, 4001, "room closed")
        await assert_open(bob)
        ev = await close_events(fl, alice)
        assert all(sorted(e["groups"]) == ["room:7", "user:alice"] and e["by"] == "order:kick-7"
                   for e in ev.values()), ev
    run(main())
