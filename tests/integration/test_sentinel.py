"""Redis Sentinel: gateways with --redis sentinel://... find the master through real
redis-sentinel processes (tests/lib/sentinels.py: one master, one replica, three
sentinels, down-after 1000 ms, failover-timeout 3000 ms, quorum 2), follow a failover
after kill -9 of the master while orders flow, resubscribe every channel on the new
master, and say clearly when no master can be found. wsgatectl takes the same URLs.

An order published while no worker is subscribed is lost (Redis pub/sub keeps
nothing): the failover test counts them, and asserts only on orders published once the
gateways are back (PUBLISH said they received them)."""

import asyncio
import json
import re
import signal
import threading
import time

import harness
import lb
import sentinels
from fleet import ORDERS, assert_closed_with, assert_open, connect, run, until
from sentinels import GROUP, Arrivals, Gateways, OrderStream, failover_once, numsub


@harness.timeout(120)
def test_failover_after_kill_9_gateways_follow_the_promoted_replica():
    dep = sentinels.Deployment()
    gws = Gateways(dep)
    gw = gws.gateways["gwS"]

    async def main():
        await until(gws.ready, 10, "/readyz 200 through the sentinels")
        assert gws.metric("wsgate_redis_connected") == 1
        watcher = await connect(gws.url("gwS", user="watch"), "gwS", [], "watch")
        arrivals = Arrivals(watcher)
        users = [await connect(gws.url("gwS", user="u%d" % i), "gwS", [], "u%d" % i)
                 for i in range(4)]
        members = [await connect(gws.url("gwS", ["room:s"]), "gwS", ["room:s"])
                   for _ in range(2)]
        old_port = dep.master_port()
        await until(lambda: numsub(old_port, GROUP + "room:s") >= 1, 5,
                    "the group channel subscribed on the master")
        stream = OrderStream(dep, "user:watch")
        took, new, lost = await failover_once(dep, gws, watcher, arrivals, stream)
        print("kill -9 of the master to the first order applied again: %.2fs "
              "(%d orders published meanwhile with no subscriber)" % (took, lost))
        assert new != old_port
        assert 0 < took < 20
        # both workers followed the switch, once each
        assert gws.metric("wsgate_redis_failovers_total") >= 2
        assert gws.metric("wsgate_redis_sentinel_queries_total") >= 2
        # every channel is back on the new master: orders, gateway, group channel
        await until(lambda: numsub(new, ORDERS) == 2, 5, "both workers on %s" % ORDERS)
        await until(lambda: numsub(new, ORDERS + ":gwS") == 2, 5, "the gateway channel")
        await until(lambda: numsub(new, GROUP + "room:s") >= 1, 5, "the group channel")
        # close orders published through the new master close exactly their targets
        c = dep.client()
        for i in range(2):
            n = c.publish(ORDERS, json.dumps({"op": "close", "group": "user:u%d" % i,
                                              "code": 4001, "reason": "after failover"}))
            assert n == 2
        await assert_closed_with(users[:2], 4001, "after failover")
        await assert_open(users[2:] + members)  # the watcher's messages are the stream's
        assert watcher.open
        # wsgatectl with the same sentinel URL: the group channel order reaches the members
        p = await asyncio.get_running_loop().run_in_executor(None, lambda: ctl(
            "close", "--group", "room:s", "--code", "4002", "--wait", "5000",
            "--redis", dep.url()))
        assert p.returncode == 0, p
        assert "closed 2 of 2 matched connections" in p.stdout, p.stdout
        await assert_closed_with(members, 4002, "")
        p = await asyncio.get_running_loop().run_in_executor(None, lambda: ctl(
            "gateways", "--redis", dep.url()))
        assert p.returncode == 0 and "gwS" in p.stdout and "redis=down" not in p.stdout, p
        stream.kill()
        assert gw.proc.poll() is None
    run(main())


def ctl(*args):
    import subprocess
    import fleet
    return subprocess.run([fleet.CTL] + list(args), stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=20, text=True)


@harness.timeout(60)
def test_unknown_master_name_is_a_clear_error_not_ready_no_crash():
    dep = sentinels.Deployment(replicas=0, sentinels=2, quorum=1)
    gws = Gateways(dep, url=dep.url(name="nosuch"))
    gw = gws.gateways["gwS"]
    gw.wait_log(r"redis sentinel: no master named nosuch \(retrying\) addr=127\.0\.0\.1:\d+", 5)
    harness.wait_for(lambda: gws.metric("wsgate_redis_sentinel_errors_total") >= 4, 10,
                     "sentinel errors counted (2 workers, both sentinels)")
    status, body = lb.readyz(gw.admin_port)
    assert status == 503 and "redis" in body.lower(), (status, body)
    assert gws.metric("wsgate_redis_connected") == 0
    assert gws.metric("wsgate_redis_sentinel_failures_total") >= 4
    # rate-limited: one line per worker for the reason, however many attempts
    t0 = time.monotonic()
    a0 = gws.metric("wsgate_redis_sentinel_connect_attempts_total")
    harness.wait_for(lambda: gws.metric("wsgate_redis_sentinel_connect_attempts_total")
                     >= a0 + 6, 10, "more attempts")
    relogs = 2 * int((time.monotonic() - t0) / 10 + 1)
    assert gw.log().count("no master named nosuch") <= 2 + relogs, gw.log()
    # nothing else churns: the +switch-master links came up once and stay
    assert len(re.findall(r"redis sentinel", gw.log())) <= 4 + relogs, gw.log()
    assert gw.proc.poll() is None
    # wsgatectl says the same and exits 3 (Redis)
    p = ctl("gateways", "--redis", dep.url(name="nosuch"))
    assert p.returncode == 3 and "no master by that name" in p.stderr, p


@harness.timeout(60)
def test_all_sentinels_down_then_back():
    dep = sentinels.Deployment(replicas=0, sentinels=2, quorum=1)
    for s in dep.sentinels:
        s.kill()
    gws = Gateways(dep)
    gw = gws.gateways["gwS"]
    gw.wait_log(r"redis sentinel: Connection refused \(retrying\) addr=", 5)
    harness.wait_for(lambda: gws.metric("wsgate_redis_sentinel_connect_attempts_total") >= 10,
                     10, "attempts on both sentinels, in turn")
    status, body = lb.readyz(gw.admin_port)
    assert status == 503 and "redis" in body.lower(), (status, body)
    assert gws.metric("wsgate_redis_connected") == 0
    # "Connection refused" from either sentinel is one reason: one line per link per worker
    assert gw.log().count("redis sentinel: Connection refused") == 2, gw.log()
    assert gw.proc.poll() is None
    p = ctl("gateways", "--redis", dep.url())
    assert p.returncode == 3 and "no sentinel named a reachable master" in p.stderr, p
    # the sentinels come back (same ports, same config): the gateway finds the master
    for s in dep.sentinels:
        s.start()
    harness.wait_for(gws.ready, 15, "/readyz 200 once the sentinels are back")
    gw.wait_log(r"redis sentinel up \(master named\) attempts=\d+", 2)


@harness.timeout(90)
def test_a_sentinel_naming_a_replica_is_not_used():
    dep = sentinels.Deployment()
    replica = dep.replicas[0]
    # A stale sentinel: it watches the replica under the master's name, and names it.
    rogue = sentinels.Sentinel(dep.name, replica.port, 1).start()
    assert rogue.master_addr(dep.name) == ("127.0.0.1", replica.port)
    url = dep.url(sentinels=[rogue] + dep.sentinels)
    gws = Gateways(dep, url=url)
    gw = gws.gateways["gwS"]
    harness.wait_for(gws.ready, 15, "/readyz 200 on the real master")
    gw.wait_log(r"not a master \(ROLE says slave\) \(retrying\) addr=127\.0\.0\.1:%d"
                % replica.port, 2)
    assert gws.metric("wsgate_redis_not_master_total") >= 2
    assert numsub(dep.master.port, ORDERS) == 2
    assert numsub(replica.port, ORDERS) == 0  # nothing stayed on the replica
    # orders through the real master are applied
    async def main():
        c = await connect(gws.url("gwS", user="r"), "gwS", [], "r")
        n = dep.client().publish(ORDERS, json.dumps({"op": "close", "group": "user:r",
                                                     "code": 4003}))
        assert n == 2
        await assert_closed_with([c], 4003, "")
    run(main())
    p = ctl("gateways", "--redis", url)
    assert p.returncode == 0 and "gwS" in p.stdout, p
    assert "not a master (ROLE says slave)" in p.stderr, p
    # the +switch-master subscriptions left the rogue too, for the next sentinel
    harness.wait_for(lambda: subscribers(rogue) == 0 and subscribers(dep.sentinels[0]) == 2,
                     5, "both workers' +switch-master links on the first honest sentinel")
    old = dep.kill_master()
    dep.wait_failover(old)
    harness.wait_for(gws.ready, 15, "/readyz 200 on the promoted replica")


def subscribers(sentinel):
    """Clients of a sentinel subscribed to something (the workers' +switch-master links,
    pattern subscriptions: psub=1)."""
    out = sentinel.command("CLIENT", "LIST")
    out = out.decode() if isinstance(out, bytes) else out
    return sum(1 for ln in out.splitlines() if " sub=1 " in ln or " psub=1 " in ln)


@harness.timeout(60)
def test_sentinel_and_data_node_passwords():
    dep = sentinels.Deployment(replicas=0, sentinels=2, quorum=1, password="datapw",
                               sentinel_password="senpw")
    good = dep.url(query="?sentinel_password=senpw")
    gws = Gateways(dep, url=good)
    harness.wait_for(gws.ready, 10, "/readyz 200 with both passwords")
    p = ctl("gateways", "--redis", good)
    assert p.returncode == 0 and "gwS" in p.stdout, p
    # the sentinels refuse a wrong password: a clear error, counted, never ready
    bad = Gateways(dep, ids=("gwT",), url=dep.url(query="?sentinel_password=wrong"))
    gw = bad.gateways["gwT"]
    gw.wait_log(r"redis sentinel: WRONGPASS", 5)
    harness.wait_for(lambda: bad.metric("wsgate_redis_sentinel_failures_total") >= 2, 5,
                     "refusals counted")
    assert lb.readyz(gw.admin_port)[0] == 503
    assert "senpw" not in gw.log() and "datapw" not in gw.log()


@harness.timeout(60)
def test_manual_failover_moves_every_link_off_the_demoted_master():
    """SENTINEL FAILOVER: the old master lives on as a replica, where a subscriber would
    still get replicated messages and a PUBLISH would reach nobody on the master: every
    link must leave it for the new master."""
    dep = sentinels.Deployment()
    gws = Gateways(dep)
    harness.wait_for(gws.ready, 10, "/readyz 200")
    old = dep.master_port()
    assert numsub(old, ORDERS) == 2
    assert dep.sentinels[0].command("SENTINEL", "FAILOVER", dep.name) is not None
    new = dep.wait_failover(old, timeout=30)
    harness.wait_for(lambda: numsub(new, ORDERS) == 2, 10, "both workers subscribed on %d" % new)
    harness.wait_for(lambda: numsub(old, ORDERS) == 0, 10, "nobody left on the demoted %d" % old)
    harness.wait_for(gws.ready, 10, "/readyz 200 after the failover")
    # the publishers moved too: no client but the sentinels (and this question) is left
    def gateway_clients(port):
        out = sentinels._command(port, "CLIENT", "LIST")
        out = out.decode() if isinstance(out, bytes) else out
        return [ln for ln in out.splitlines()
                if "name=sentinel-" not in ln and "cmd=client|list" not in ln]
    harness.wait_for(lambda: gateway_clients(old) == [], 10, "no gateway link left on %d" % old)
    assert len(gateway_clients(new)) >= 4  # 2 workers x (subscriber, publisher)
    c = dep.client()
    assert gws.metric("wsgate_redis_failovers_total") == 2
    async def main():
        cl = await connect(gws.url("gwS", user="m"), "gwS", [], "m")
        n = c.publish(ORDERS, json.dumps({"op": "close", "group": "user:m", "code": 4004}))
        assert n == 2
        await assert_closed_with([cl], 4004, "")
    run(main())


@harness.timeout(90)
def test_a_frozen_sentinel_is_left_and_the_failover_still_followed():
    """SIGSTOP on the sentinel both links use: its TCP stays open and silent. The
    +switch-master link's PING and the query link's deadline move them to the next
    sentinel, and a failover is followed through the two left."""
    dep = sentinels.Deployment()
    gws = Gateways(dep, flags={"--redis-timeout": "1s"})
    gw = gws.gateways["gwS"]
    harness.wait_for(gws.ready, 10, "/readyz 200")
    first = dep.sentinels[0]
    harness.wait_for(lambda: subscribers(first) == 2, 5, "both workers watching sentinel 1")
    first.proc.send_signal(signal.SIGSTOP)
    try:
        gw.wait_log(r"redis sentinel subscriber down: no answers back in 1000ms "
                    r"\(reconnecting\) addr=127\.0\.0\.1:%d" % first.port, 5)
        harness.wait_for(lambda: subscribers(dep.sentinels[1]) == 2, 5,
                         "both workers watching sentinel 2")
        dep.sentinels = dep.sentinels[1:]  # a majority of the two left names the master
        old = dep.kill_master()
        new = dep.wait_failover(old, timeout=30)
        harness.wait_for(gws.ready, 20, "/readyz 200 on the promoted replica")
        harness.wait_for(lambda: numsub(new, ORDERS) == 2, 5, "both workers on %d" % new)
        assert gws.metric("wsgate_redis_sentinel_failures_total") >= 2
    finally:
        first.proc.send_signal(signal.SIGCONT)


class DurablePublisher:
    """A backend that must not lose an order: each send order (to group user:watch, text
    "seq N", id "d-N") is XADDed to the orders stream on the master the sentinels name,
    then WAITs until a replica has it (while the master has one: after the failover the
    new master has none), and is PUBLISHed on the channel too, the fast path. An order
    whose XADD or WAIT failed (the master died) is sent again, same id, on the new
    master: the gateways apply each id once. acked: the numbers sent and confirmed."""

    def __init__(self, dep, total, every=0.02):
        self.dep, self.total, self.every = dep, total, every
        self.acked, self.retries, self.last_error = [], 0, None
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        harness._live.append(self)

    def _send(self, c, seq):
        order = json.dumps({"op": "send", "id": "d-%d" % seq, "group": "user:watch",
                            "text": "seq %d" % seq})
        c.xadd(STREAM, {"order": order}, maxlen=100000, approximate=True)
        if c.info("replication").get("connected_slaves", 0) > 0 and \
                c.execute_command("WAIT", 1, 1000) < 1:
            raise RuntimeError("no replica has it yet")
        c.publish(ORDERS, order)

    def _run(self):
        c, seq = None, 1
        while not self._stop and seq <= self.total:
            try:
                if c is None:
                    c = self.dep.client()
                self._send(c, seq)
                self.acked.append(seq)
                seq += 1
                time.sleep(self.every)
            except Exception as e:  # noqa: BLE001 - the master died: ask the sentinels again
                self.retries += 1
                self.last_error = repr(e)
                c = None
                time.sleep(0.05)

    def kill(self):
        self._stop = True
        self._thread.join(5)

    def dump(self):
        return "---- durable publisher: %d acked, %d retries, last error %s ----" % (
            len(self.acked), self.retries, self.last_error)


STREAM = "wsgate:orders:log"


@harness.timeout(120)
def test_failover_with_the_orders_stream_applies_every_order_exactly_once():
    """kill -9 of the master while a backend adds orders to the stream (and publishes
    them): the gateways follow the promoted replica, their stream readers resume there
    from the last entry they read, and the watcher gets every order, each exactly once,
    in order: none lost in the failover, none applied twice (stream and channel)."""
    dep = sentinels.Deployment()
    gws = Gateways(dep, flags={"--orders-stream": STREAM})
    total = 200

    async def main():
        await until(gws.ready, 10, "/readyz 200 through the sentinels")
        watcher = await connect(gws.url("gwS", user="watch"), "gwS", [], "watch")
        arrivals = Arrivals(watcher)
        pub = DurablePublisher(dep, total)
        await until(lambda: len(arrivals.got) >= 20, 10, "orders flowing before the kill")
        old = dep.kill_master()
        new = dep.wait_failover(old, timeout=30)
        assert new != old
        await until(lambda: len(pub.acked) == total, 60, "every order sent and confirmed")
        await until(lambda: len(arrivals.got) >= total, 20, "every order applied")
        await asyncio.sleep(0.5)  # a duplicate would come right behind
        got = [s for s, _ in arrivals.got]
        assert got == list(range(1, total + 1)), \
            "lost %s, twice %s" % (sorted(set(range(1, total + 1)) - set(got)),
                                   sorted({s for s in got if got.count(s) > 1}))
        assert pub.retries > 0, "the failover never interrupted the publisher"
        # The watch links answer their PINGs: none was dropped for silence.
        assert "sentinel subscriber down: no answers" not in gws.gateways["gwS"].log()
        assert gws.metric("wsgate_stream_duplicates_total") >= total  # the channel's copies
        pub.kill()
        print("%d orders through a failover, %d sends retried, each applied once"
              % (total, pub.retries))
    run(main())
