"""Redis Cluster with sharded pub/sub: gateways on --redis cluster://... against a real
3-master, 3-replica cluster (tests/lib/rcluster.py) started by each test.

Every order channel is a sharded channel: a worker SSUBSCRIBEs to the fleet channel
(wsgate:orders), its gateway's channel and its group channels on the master of each
one's slot, one subscriber connection per master it needs; wsgatectl SPUBLISHes on the
master of the target channel's slot, following MOVED. The groups used here are chosen
so that their channels hash to three different masters. A group order is published
only once PUBSUB SHARDNUMSUB on its master shows every holder subscribed: Redis
delivers nothing published before."""

import asyncio
import json
import os
import re
import subprocess
import time

import websockets

import harness
import lb
import rcluster

CTL = os.path.join(harness.BUILD, "wsgatectl")
GROUP = "wsgate:orders:group:"


def groups_on_masters(cl, prefix):
    """{master port: group name} with one group per master, its channel on that master."""
    masters = cl.masters()
    out = {}
    for i in range(200):
        name = "%s%d" % (prefix, i)
        port = cl.owner(GROUP + name).port
        out.setdefault(port, name)
        if len(out) == len(masters):
            return out
    raise AssertionError("no group name for every master: %r" % out)


def gateway(cl_url, gid, workers=2, flags=None):
    f = {"--id": gid, "--log-level": "info", "--redis": cl_url, "--close-timeout": "1s"}
    f.update(flags or {})
    gw = harness.Gateway(flags=f, workers=workers, echo="--inbound" not in f).start()
    lb.wait_ready(gw.admin_port, 20.0)
    return gw


def ctl(url, *args, timeout=15.0):
    return subprocess.run([CTL, "--redis", url] + list(args), stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout, text=True)


def metric(gw, name):
    return sum(lb.metrics(gw.admin_port)[name]["samples"].values())


async def recv_text(ws, timeout=5.0):
    m = await asyncio.wait_for(ws.recv(), timeout)
    return m if isinstance(m, str) else m.decode()


async def expect_closed(ws, code, timeout=5.0):
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed as e:
        assert e.code == code, "closed with %s, want %s" % (e.code, code)


class ShardListener:
    """A raw SSUBSCRIBE to one sharded channel on the master of its slot (redis-py 4.3
    has no sharded pub/sub): what a backend consuming events does in a cluster."""

    def __init__(self, cl, channel):
        import socket
        node = cl.owner(channel)
        self.sock = socket.create_connection(("127.0.0.1", node.port), timeout=5)
        if cl.password:
            self.sock.sendall(b"AUTH %s\r\n" % cl.password.encode())
        self.sock.sendall(b"SSUBSCRIBE %s\r\n" % channel.encode())
        self.data = b""
        harness.wait_for(lambda: self._read() and b"ssubscribe" in self.data, 5.0,
                         "SSUBSCRIBE %s confirmed" % channel)

    def _read(self):
        import select
        while select.select([self.sock], [], [], 0)[0]:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.data += chunk
        return True

    def count(self, needle):
        self._read()
        return self.data.count(needle)


def wait_subscribers(cl, channel, n, timeout=15.0):
    harness.wait_for(lambda: cl.shardnumsub(channel) >= n, timeout,
                     "%d subscribers of %s on its master" % (n, channel), 0.05)


@harness.timeout(90)
def test_cluster_group_orders_reach_members_across_shards():
    cl = rcluster.Cluster()
    gws = [gateway(cl.seeds(2), "gwA"), gateway(cl.seeds(2), "gwB")]
    groups = groups_on_masters(cl, "team")
    # wsgatectl's first seed serves none of these channels' slots at least once: MOVED.
    ctl_url = "cluster://127.0.0.1:%d,127.0.0.1:%d" % (cl.nodes[-1].port, cl.nodes[0].port)

    events = ShardListener(cl, "wsgate:events")

    async def main():
        clients = {}
        for name in groups.values():
            clients[name] = [await websockets.connect(
                "ws://127.0.0.1:%d/?group=%s" % (gw.port, name)) for gw in gws]
        for name in groups.values():
            wait_subscribers(cl, GROUP + name, 2)  # one worker on each gateway holds members
        # Events go out with SPUBLISH on the master of wsgate:events.
        harness.wait_for(lambda: events.count(b'"type":"open"') == 6, 5.0, "6 open events")
        # Every worker subscribed to the fleet channel and its gateway's, on their masters.
        assert cl.shardnumsub("wsgate:orders") == 4
        assert cl.shardnumsub("wsgate:orders:gwA") == 2
        assert cl.shardnumsub("wsgate:orders:gwB") == 2

        for port, name in groups.items():
            p = ctl(ctl_url, "send", "--group", name, "--text", "to-" + name, "--wait", "5000")
            assert p.returncode == 0, p.stderr
            assert "sent to 2 of 2 matched" in p.stdout, p.stdout
            for ws in clients[name]:
                assert await recv_text(ws) == "to-" + name
        # A fleet-wide order travels on wsgate:orders, one shard, to every worker.
        p = ctl(ctl_url, "send", "--all", "--text", "everyone", "--wait", "5000")
        assert p.returncode == 0, p.stderr
        assert "sent to 6 of 6 matched" in p.stdout and "4 workers answered" in p.stdout, p.stdout
        for name in groups.values():
            for ws in clients[name]:
                assert await recv_text(ws) == "everyone"  # and nothing of the other groups
        # A close of one group: its members close with the code, the others stay.
        first, *rest = list(groups.values())
        p = ctl(ctl_url, "close", "--group", first, "--code", "4001", "--wait", "5000")
        assert p.returncode == 0, p.stderr
        assert "closed 2 of 2 matched" in p.stdout, p.stdout
        for ws in clients[first]:
            await expect_closed(ws, 4001)
        for name in rest:
            for ws in clients[name]:
                await ws.ping()
                assert ws.open
        # Gateway channels too, by a raw SPUBLISH on the master of their slot.
        order = {"op": "send", "id": "gw-only", "all": True, "text": "gwB only"}
        assert cl.spublish("wsgate:orders:gwB", json.dumps(order)) == 2
        for name in rest:
            assert await recv_text(clients[name][1]) == "gwB only"
            with_timeout = asyncio.wait_for(clients[name][0].recv(), 0.3)
            try:
                got = await with_timeout
                raise AssertionError("gwA got %r" % got)
            except asyncio.TimeoutError:
                pass
        for cs in clients.values():
            for ws in cs:
                await ws.close()

    asyncio.run(main())
    p = ctl(ctl_url, "gateways")
    assert p.returncode == 0 and "gwA" in p.stdout and "gwB" in p.stdout, p.stdout + p.stderr
    for gw in gws:
        fams = lb.metrics(gw.admin_port)
        # Each worker: subscribers on the masters of wsgate:orders, its gateway's channel
        # and its groups' channels: at least 1 and at most 3 each.
        assert 2 <= lb.value(fams, "wsgate_redis_shards_connected") <= 6
        assert lb.value(fams, "wsgate_redis_cluster_maps_total") >= 2
        assert lb.value(fams, "wsgate_redis_connected") == 1
    # Half the gateways' seeds do not serve their gateway channel: their SETs and
    # SPUBLISHes went where the map says, so nothing was redirected... unless the
    # announce went out before the map was known; nothing was dropped either way.
    assert sum(metric(gw, "wsgate_redis_publish_dropped_total") for gw in gws) == 0


@harness.timeout(120)
def test_cluster_master_killed_orders_keep_arriving():
    cl = rcluster.Cluster(node_timeout_ms=1000)
    gw = gateway(cl.url, "gwF", flags={"--redis-timeout": "2s"})
    victim = cl.owner("wsgate:orders")
    # A group on the same master as the fleet channel: both must move to the new master.
    name = next(n for n in ("f%d" % i for i in range(500)) if cl.owner(GROUP + n) is victim)
    others = [n for n in cl.alive() if n is not victim]

    async def main():
        ws = await websockets.connect("ws://127.0.0.1:%d/?group=%s" % (gw.port, name))
        wait_subscribers(cl, GROUP + name, 1)
        order = {"op": "send", "id": "before", "group": name, "text": "before"}
        assert cl.spublish(GROUP + name, json.dumps(order)) == 1
        assert await recv_text(ws) == "before"
        t_kill = cl.kill_master(victim.port)
        # Orders published every 50 ms through the failover, on whichever master serves
        # the slot now (none while the cluster elects one).
        got = []

        async def reader():
            while True:
                text = await recv_text(ws, 30.0)
                got.append((time.monotonic(), text))

        task = asyncio.ensure_future(reader())
        seq = 0
        deadline = time.monotonic() + 40.0
        while time.monotonic() < deadline and len(got) < 5:
            seq += 1
            order = {"op": "send", "id": "o%d" % seq, "group": name,
                     "text": "n%d" % seq}
            try:
                owner = cl.owner(GROUP + name, via=others[0])
                if owner is not victim:
                    owner.cmd("SPUBLISH", GROUP + name, json.dumps(order))
            except Exception:
                pass
            await asyncio.sleep(0.05)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        assert len(got) >= 5, "orders stopped arriving after the master was killed: %r" % got
        back = got[0][0] - t_kill
        print("cluster failover: first order applied %.2fs after kill -9; got %r" % (
            back, [(round(t - t_kill, 3), x) for t, x in got]))
        # In order, none twice.
        nums = [int(t[1:]) for _, t in got]
        assert nums == sorted(set(nums)), nums
        # The fleet channel moved too: --all reaches the client, via wsgatectl.
        url = "cluster://" + ",".join("127.0.0.1:%d" % n.port for n in others)
        p = ctl(url, "send", "--all", "--text", "after", "--wait", "5000")
        assert p.returncode == 0 and "sent to 1 of 1 matched" in p.stdout, p.stdout + p.stderr
        assert await recv_text(ws) == "after"
        p = ctl(url, "close", "--group", name, "--code", "4002", "--wait", "5000")
        assert p.returncode == 0 and "closed 1 of 1" in p.stdout, p.stdout + p.stderr
        await expect_closed(ws, 4002)
        return back

    back = asyncio.run(main())
    assert back < 20.0, back
    log = gw.log()
    assert re.search(r"redis shard subscriber 127\.0\.0\.1:%d down" % victim.port, log), log
    assert lb.value(lb.metrics(gw.admin_port), "wsgate_redis_connected") == 1
    assert metric(gw, "wsgate_redis_cluster_maps_total") >= 4


def test_cluster_url_refused_when_malformed():
    for url, says in (("cluster://", "host is missing"), ("cluster://h:1/3", "no database"),
                      ("cluster://h:1,", "empty node")):
        gw = harness.Gateway(flags={"--redis": url}, workers=1)
        gw.start(wait_ready=False)
        assert gw.wait_exit(10.0) != 0
        assert says in gw.log(), gw.log()
        p = ctl(url, "send", "--all", "--text", "x")
        assert p.returncode == 2 and says in p.stderr, p.stderr


def node_id(node):
    return node.cmd("CLUSTER", "MYID").decode()


@harness.timeout(90)
def test_cluster_slot_migration_follows_the_channel():
    """A group channel's slot is moved to another master (CLUSTER SETSLOT, as a reshard
    does): Redis pushes sunsubscribe to the subscribers on the old master; the worker
    learns the new map and SSUBSCRIBEs on the new master, where the next order arrives."""
    cl = rcluster.Cluster()
    gw = gateway(cl.url, "gwM", workers=1)
    name = "mig"
    channel = GROUP + name
    src = cl.owner(channel)
    dst = next(cl.node(p) for p in cl.masters() if p != src.port)
    slot = cl.slot(channel)

    async def main():
        ws = await websockets.connect("ws://127.0.0.1:%d/?group=%s" % (gw.port, name))
        wait_subscribers(cl, channel, 1)
        sun0 = metric(gw, "wsgate_redis_cluster_sunsubscribed_total")
        src_id, dst_id = node_id(src), node_id(dst)
        dst.cmd("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.cmd("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        dst.cmd("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        src.cmd("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        harness.wait_for(lambda: int(dst.cmd("PUBSUB", "SHARDNUMSUB", channel)[1]) == 1, 15.0,
                         "the worker subscribed on the new master", 0.05)
        assert int(src.cmd("PUBSUB", "SHARDNUMSUB", channel)[1]) == 0
        assert metric(gw, "wsgate_redis_cluster_sunsubscribed_total") > sun0
        order = {"op": "send", "id": "moved", "group": name, "text": "after the move"}
        assert int(dst.cmd("SPUBLISH", channel, json.dumps(order))) == 1
        assert await recv_text(ws) == "after the move"
        await ws.close()

    asyncio.run(main())
    assert "unsubscribed %s: its slot %d moved" % (channel, slot) in gw.log(), gw.log()


@harness.timeout(90)
def test_cluster_with_password_inbound_publish_and_stream():
    """Every node requires a password: the gateways AUTH on every connection they open.
    Client messages go out with SPUBLISH (--inbound publish) on the master of
    wsgate:in's slot, or with XADD (--inbound stream) on the master of the stream's."""
    cl = rcluster.Cluster(password="s3cret")
    pub = gateway(cl.seeds(1), "gwP", workers=1, flags={"--inbound": "publish"})
    stream = gateway(cl.seeds(1), "gwS", workers=1,
                     flags={"--inbound": "stream", "--inbound-stream": "in:stream"})
    inbound = ShardListener(cl, "wsgate:in")
    name = "pw"

    async def main():
        a = await websockets.connect("ws://127.0.0.1:%d/?group=%s" % (pub.port, name))
        b = await websockets.connect("ws://127.0.0.1:%d/?group=%s" % (stream.port, name))
        await a.send("hello over the shard")
        await b.send("hello into the stream")
        harness.wait_for(lambda: inbound.count(b"hello over the shard") == 1, 5.0,
                         "the client message SPUBLISHed on wsgate:in")
        owner = cl.owner("in:stream")
        harness.wait_for(lambda: owner.cmd("XLEN", "in:stream") == 1, 5.0, "XADD on its master")
        entry = owner.cmd("XRANGE", "in:stream", "-", "+")[0][1]
        assert b"hello into the stream" in entry[b"msg"], entry
        wait_subscribers(cl, GROUP + name, 2)
        p = ctl(cl.seeds(2), "send", "--group", name, "--text", "with a password", "--wait",
                "5000")
        assert p.returncode == 0 and "sent to 2 of 2 matched" in p.stdout, p.stdout + p.stderr
        assert await recv_text(a) == "with a password"
        assert await recv_text(b) == "with a password"
        await a.close()
        await b.close()

    asyncio.run(main())
    # A wrong password is refused, said, and counted, never retried in a hot loop.
    bad = harness.Gateway(flags={"--redis": cl.seeds(1).replace("s3cret", "wrong"),
                                 "--id": "gwX", "--log-level": "info"}, workers=1).start()
    bad.wait_log(r"WRONGPASS|invalid username-password", 10.0)
    harness.wait_for(lambda: metric(bad, "wsgate_redis_refused_total") >= 1, 5.0, "refused")
    assert lb.readyz(bad.admin_port)[0] == 503
    # The backoff (100 ms doubling to 1 s) holds for a seed that refuses: about 6
    # attempts in 3 s, where asking for the map every 200 ms would make 15.
    a0 = metric(bad, "wsgate_redis_connect_attempts_total")
    time.sleep(3.0)
    tried = metric(bad, "wsgate_redis_connect_attempts_total") - a0
    assert 1 <= tried <= 8, tried
    p = ctl(cl.seeds(1).replace("s3cret", "wrong"), "send", "--all", "--text", "x")
    assert p.returncode == 3 and "AUTH failed" in p.stderr, p.stderr


@harness.timeout(90)
def test_cluster_worker_channel_orders_stream_and_tombstones():
    """The links other than pub/sub follow the slot map too: the orders stream is read
    on the master of its slot (an order only XADDed there is applied), tombstones live
    in the hash <channel>:tombs on its master (a ban keeps a new member out, wsgatectl
    lists it), and an order for one connection goes to its worker's channel
    <channel>:worker:<prefix>, SSUBSCRIBEd on its master."""
    cl = rcluster.Cluster()
    stream = "wsgate:orders:log"
    gw = gateway(cl.seeds(2), "gwT", workers=1, flags={"--orders-stream": stream})
    gw.wait_log(r"redis orders stream up", 15.0)
    gw.wait_log(r"redis tombstones up", 15.0)
    events = ShardListener(cl, "wsgate:events")
    url = cl.seeds(3)

    async def main():
        one = await websockets.connect("ws://127.0.0.1:%d/?group=t1" % gw.port)
        harness.wait_for(lambda: events.count(b'"type":"open"') == 1, 5.0, "open event")
        conn = re.search(rb'"conn":"([^"]+)"', events.data).group(1).decode()
        p = ctl(url, "--orders-stream", stream, "close", "--conn", conn, "--code", "4003",
                "--wait", "5000")
        assert p.returncode == 0 and "closed 1 of 1" in p.stdout, p.stdout + p.stderr
        await expect_closed(one, 4003)

        # From the stream alone: XADD on its master, nothing published.
        reader = await websockets.connect("ws://127.0.0.1:%d/?group=t2" % gw.port)
        wait_subscribers(cl, GROUP + "t2", 1)
        order = {"id": "from-stream", "op": "send", "group": "t2", "text": "via the stream"}
        cl.owner(stream).cmd("XADD", stream, "*", "order", json.dumps(order))
        assert await recv_text(reader) == "via the stream"

        banned = await websockets.connect("ws://127.0.0.1:%d/?group=t3" % gw.port)
        wait_subscribers(cl, GROUP + "t3", 1)
        p = ctl(url, "--orders-stream", stream, "close", "--group", "t3", "--code", "4004",
                "--ttl", "60000", "--wait", "5000")
        assert p.returncode == 0 and "closed 1 of 1" in p.stdout, p.stdout + p.stderr
        await expect_closed(banned, 4004)
        assert cl.owner("wsgate:orders:tombs").cmd("HLEN", "wsgate:orders:tombs") == 1
        again = await websockets.connect("ws://127.0.0.1:%d/?group=t3" % gw.port)
        await expect_closed(again, 4004)
        p = ctl(url, "tombstones")
        assert p.returncode == 0 and "t3" in p.stdout, p.stdout + p.stderr
        await reader.close()

    asyncio.run(main())
    assert events.count(b'"by":"tombstone"') == 1, events.data[-2000:]
