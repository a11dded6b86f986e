"""Send orders: backends push messages to connections, groups and everyone.

Fleets of 2 gateways (gwA, gwB) on one redis-server, real clients (python websockets,
Node ws in send_client.js, raw sockets that stop reading), orders published on
wsgate:orders with reply_to test:acks. What every client received is checked against the
acknowledgements ({"matched","sent","dropped"} per worker) and /metrics.

Clients that must not read are "stuck": a 4 KB receive buffer and a 536-byte MSS, so the
gateway's kernel holds little for them (about 70 KB) and the rest waits in the gateway's
own output queue."""

import asyncio
import contextlib
import base64
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import threading
import time

import harness
import fleet as F
import lb
from fleet import ACKS, Fleet, assert_open, open_clients, run, until
from wsraw import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, Client, new_key, read_head, \
    request

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_ENV = dict(os.environ, NODE_PATH=os.path.join(HERE, "node_modules"))
KB = 1024
SLOW = "slow consumer"


def sanitized():
    with open(harness.WSGATE, "rb") as f:
        return b"__asan_init" in f.read()


SANITIZED = sanitized()


def send_order(target, payload, **extra):
    """A send order dict for target ({"group": ...} and the like): text for str, binary
    (base64) for bytes."""
    o = {"op": "send"}
    o.update(target)
    if isinstance(payload, bytes):
        o["binary"] = base64.b64encode(payload).decode()
    else:
        o["text"] = payload
    o.update(extra)
    return o


def sums(acks):
    """(matched, sent, dropped) summed over acks of distinct workers without errors."""
    seen = [(a["gateway"], a["worker"]) for a in acks]
    assert len(seen) == len(set(seen)), "a worker answered twice: %r" % acks
    for a in acks:
        assert "error" not in a, "error ack: %r" % a
    return (sum(a["matched"] for a in acks), sum(a["sent"] for a in acks),
            sum(a["dropped"] for a in acks))


async def acks_of(fl, oid, n=None, timeout=10.0):
    """The acks of order oid once n workers (default: all) answered."""
    want = fl.workers if n is None else n
    got = await until(lambda: len(fl.listener.acks(oid)) >= want and fl.listener.acks(oid),
                      timeout, "%d acks of %s" % (want, oid))
    return [a for a, _ in got]


async def received(client, n, timeout=10.0):
    return [await asyncio.wait_for(client.messages.get(), timeout) for _ in range(n)]


def stuck(port, path="/"):
    """An upgraded raw client whose socket will hardly take anything (module text)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(request(path=path, key=new_key()))
    r = read_head(s)
    assert r.status == 101, r.status_line
    return Client(s, r.rest, r)


def read_until_close(c, timeout=10.0):
    """(messages as (opcode, payload), close frame) of a raw client, pings skipped."""
    msgs, deadline = [], time.monotonic() + timeout
    while True:
        f = c.recv_frame(max(0.0, deadline - time.monotonic()))
        assert not f.masked and f.rsv == 0 and f.fin, "bad server frame %r" % f
        if f.opcode in (OP_PING, OP_PONG):
            continue
        if f.opcode == OP_CLOSE:
            return msgs, f
        assert f.opcode in (OP_TEXT, OP_BINARY), "unexpected frame %r" % f
        msgs.append((f.opcode, f.payload))


def rss(pids):
    total = 0
    for pid in pids:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


class Peak:
    """The highest resident memory of pids while a load runs (a sampler thread reading
    /proc every 5 ms: a measurement, not a synchronisation)."""

    def __init__(self, pids):
        self.pids = pids
        self.before = rss(pids)
        self.peak = self.before
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, rss(self.pids))
            time.sleep(0.005)

    def stop(self):
        self._stop = True
        self._thread.join(2)
        self.peak = max(self.peak, rss(self.pids))
        return self.peak - self.before


def worker_pids(*gateways):
    return [pid for gw in gateways for pid in gw.worker_pids().values()]


def metric(gw, name, **labels):
    return lb.value(lb.metrics(gw.admin_port), name, **labels)


class Node:
    """send_client.js: N Node ws clients in one process (see the script's header)."""

    @classmethod
    async def start(cls, n, urls, timeout=30.0):
        self = cls()
        self.proc = await asyncio.create_subprocess_exec(
            "node", os.path.join(HERE, "send_client.js"), str(n), *urls,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=NODE_ENV, cwd=HERE, limit=64 * 1024 * 1024)  # a report is one long line
        line = await self.line(timeout)
        assert line.get("event") == "open" and len(line["conns"]) == n, line
        self.conns = line["conns"]
        return self

    async def line(self, timeout):
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        assert raw, "send_client.js exited (%s)" % self.proc.returncode
        line = json.loads(raw)
        assert line.get("event") != "error", line
        return line

    async def command(self, cmd, timeout=20.0):
        self.proc.stdin.write((cmd + "\n").encode())
        await self.proc.stdin.drain()
        return await self.line(timeout)

    async def report(self):
        r = await self.command("report")
        assert r["event"] == "report", r
        return r["conns"]

    async def stop(self):
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


def seq_message(k, size):
    head = "seq:%d:" % k
    return head + "x" * (size - len(head))


# --- delivery --------------------------------------------------------------------------

MESSAGES = [
    "hello é 服务 😀",
    bytes(range(256)),
    b"",
    "",
    os.urandom(125),
    os.urandom(126),
    os.urandom(65535),
    os.urandom(65536),
    ("é服😀ß" * 20000)[:50000],  # 150 KB of multi-byte UTF-8: an order over 64 KiB
    os.urandom(300 * KB),
    "\x00 a NUL and a tab\t",
]


@harness.timeout(90)
def test_members_get_each_message_once_in_publish_order_others_none():
    """40 messages published back to back to a group on 2 gateways x 2 workers, one member
    spared: every other member receives each exactly once, in publish order, byte for byte
    (text with multi-byte UTF-8, binary of every header length); the spared member and the
    non-members none; acks and /metrics count what was sent."""
    fl = Fleet()

    async def main():
        room = await open_clients(fl, [(g, ["room:1"], None) for g in ("gwA", "gwB")] * 4 +
                                  [(g, ["room:1", "room:2"], None) for g in ("gwA", "gwB")])
        others = await open_clients(fl, [(g, ["room:2"], None) for g in ("gwA", "gwB")] * 2)
        spared, members = room[0], room[1:]
        msgs = [MESSAGES[i % len(MESSAGES)] for i in range(40)]
        msgs = [("%d:" % i + m) if isinstance(m, str) else (b"%d:" % i + m)
                for i, m in enumerate(msgs)]
        oids = []
        for m in msgs:
            oids.append(F.order_id("s"))
            fl.publish(send_order({"group": "room:1"}, m, id=oids[-1], reply_to=F.ACKS,
                                  **{"except": spared.conn}))
        for oid, m in zip(oids, msgs):
            assert sums(await acks_of(fl, oid)) == (len(members), len(members), 0), \
                fl.listener.acks(oid)
        for c in members:
            got = await received(c, len(msgs))
            assert got == msgs, "%r got %r" % (c, [g[:20] for g in got])
        # Nothing more: the next message each client gets is its own echo.
        await assert_open(room + others, "after the sends")
        # /metrics: one pushed message per member and order
        total = len(members) * len(msgs)
        pushed = sum(metric(gw, "wsgate_pushed_messages_total") for gw in fl.gateways.values())
        nbytes = sum(metric(gw, "wsgate_pushed_bytes_total") for gw in fl.gateways.values())
        assert pushed == total, (pushed, total)
        want_bytes = len(members) * sum(len(m.encode() if isinstance(m, str) else m)
                                        for m in msgs)
        assert nbytes == want_bytes, (nbytes, want_bytes)
        # one delivery sample per order and worker that sent it
        samples = sum(1 for oid in oids for a in fl.listener.acks(oid) if a[0]["sent"] > 0)
        count = sum(metric(gw, "wsgate_push_delivery_seconds_count")
                    for gw in fl.gateways.values())
        assert count == samples, (count, samples)
    run(main())


@harness.timeout(60)
def test_conn_list_and_all_with_except_and_gateway():
    """conn lists reach exactly those ids on whichever gateway holds them; all reaches
    everyone but the spared; gateway limits a send to one gateway."""
    fl = Fleet()

    async def main():
        cs = await open_clients(fl, [(g, ["g"], None) for g in ("gwA", "gwB")] * 3)
        chosen = [cs[0], cs[3], cs[5]]
        oid, acks = await fl.order(send_order({"conn": [c.conn for c in chosen] + ["gwA-9-x-1"]},
                                              "to three"))
        assert sums(acks) == (3, 3, 0), acks
        for c in chosen:
            assert await received(c, 1) == ["to three"]
        oid, acks = await fl.order(send_order({"all": True}, b"\x01all",
                                              **{"except": [cs[1].conn, cs[2].conn]}))
        assert sums(acks) == (4, 4, 0), acks
        for c in cs:
            if c not in (cs[1], cs[2]):
                assert await received(c, 1) == [b"\x01all"], c
        oid, acks = await fl.order(send_order({"group": "g", "gateway": "gwB"}, "only gwB"),
                                   workers=2)
        assert all(a["gateway"] == "gwB" for a in acks) and sums(acks) == (3, 3, 0), acks
        for c in cs:
            if c.gid == "gwB":
                assert await received(c, 1) == ["only gwB"], c
        await assert_open(cs, "after conn, all and gateway sends")
    run(main())


@harness.timeout(60)
def test_message_then_close_reach_the_client_in_that_order():
    """A send then a close for the same group, published back to back: each member gets
    the message, then the close frame. A send published after the close reaches nobody:
    it matches nothing, and nothing is sent after a close frame."""
    fl = Fleet()

    async def main():
        cs = await open_clients(fl, [(g, ["mc"], None) for g in ("gwA", "gwB")] * 2)
        after = F.order_id("after")
        pipe = fl.r.pipeline(transaction=False)
        pipe.publish(F.ORDERS, json.dumps(send_order({"group": "mc"}, "before the close")))
        pipe.publish(F.ORDERS, json.dumps({"group": "mc", "code": 4002, "reason": "then this"}))
        pipe.publish(F.ORDERS, json.dumps(send_order({"group": "mc"}, "after the close",
                                                     id=after, reply_to=F.ACKS)))
        pipe.execute()
        for c in cs:
            assert await received(c, 1) == ["before the close"], c
            await c.wait_closed()
            assert (c.code, c.reason) == (4002, "then this"), (c, c.code, c.reason)
            assert c.messages.empty(), "%r got more after the close" % c
        assert sums(await acks_of(fl, after)) == (0, 0, 0)
    run(main())


@contextlib.asynccontextmanager
async def strace_of(pid, calls, name):
    """Runs the block with process pid under strace, tracing only calls; the list it
    yields holds strace's lines once the block is done."""
    need = subprocess.run(["sh", "-c", "command -v strace"], capture_output=True)
    assert need.returncode == 0, "strace is missing (make deps-test installs it)"
    trace = os.path.join(harness.tmp_root(), name)
    lines = []
    st = subprocess.Popen(["strace", "-qq", "-p", str(pid), "-o", trace, "-e",
                           "trace=" + calls])
    try:
        await until(lambda: os.path.exists(trace), 5, "strace attached")
        await asyncio.sleep(0.5)  # strace writes its file before it has attached
        yield lines
    finally:
        st.terminate()
        st.wait(5)
    with open(trace) as f:
        lines.extend(f.readlines())


@harness.timeout(60)
def test_orders_applied_in_one_loop_turn_leave_in_one_system_call():
    """Four orders for one connection that reach its worker together (the worker is
    stopped while they are published, so its subscriber reads them at once) are applied
    in one loop turn: three messages and a close frame leave in one system call, in
    order (strace counts the worker's sends)."""
    fl = Fleet(ids=("gwA",), workers=1)
    gw = fl.gateways["gwA"]

    async def main():
        c = (await open_clients(fl, [("gwA", ["one"], None)]))[0]
        pid = list(gw.worker_pids().values())[0]
        async with strace_of(pid, "sendto,sendmsg,writev,write", "sends.strace") as lines:
            os.kill(pid, signal.SIGSTOP)
            try:
                for i in range(3):
                    fl.r.publish(F.ORDERS, json.dumps(send_order({"conn": c.conn}, "m%d" % i)))
                fl.r.publish(F.ORDERS, json.dumps({"conn": c.conn, "code": 4005,
                                                   "reason": "last"}))
            finally:
                os.kill(pid, signal.SIGCONT)
            assert await received(c, 3) == ["m0", "m1", "m2"]
            await c.wait_closed()
            assert (c.code, c.reason) == (4005, "last"), (c.code, c.reason)
        frames = 3 * (2 + 2) + (2 + 2 + 4)  # three 2-byte texts, then the close frame
        # hiredis writes to Redis with write(): these are the client's
        sends = [line for line in lines if line.startswith(("sendto(", "sendmsg("))]
        assert len(sends) == 1 and sends[0].rstrip().endswith("= %d" % frames), sends
        at = [sends[0].index(x) for x in ("m0", "m1", "m2", "last")]
        assert at == sorted(at), sends
    run(main())


@harness.timeout(60)
def test_redis_reads_and_writes_cost_no_epoll_ctl():
    """The worker's Redis links keep their read event registered and write what hiredis
    queued at the end of the loop turn: 100 orders read one at a time (each one PUBLISHed
    after the last was delivered) and their 100 acknowledgements cost no epoll_ctl
    (hiredis's own libevent adapter made two per read and two per write)."""
    fl = Fleet(ids=("gwA",), workers=1)
    gw = fl.gateways["gwA"]

    async def main():
        c = (await open_clients(fl, [("gwA", ["one"], None)]))[0]
        pid = list(gw.worker_pids().values())[0]
        async with strace_of(pid, "epoll_ctl,recvfrom,read", "epoll.strace") as lines:
            for i in range(100):
                fl.r.publish(F.ORDERS, json.dumps(send_order({"conn": c.conn}, "m%d" % i,
                                                             id="e%d" % i, reply_to=F.ACKS)))
                assert await received(c, 1) == ["m%d" % i]
            await until(lambda: len(fl.listener.acks("e99")) == 1, 5, "the last ack")
        reads = [ln for ln in lines if ln.startswith("read(")]
        ctl = [ln for ln in lines if ln.startswith("epoll_ctl(")]
        assert len(reads) >= 100, "the orders were not read one by one: %d reads" % len(reads)
        assert len(ctl) <= 5, "%d epoll_ctl calls for %d reads:\n%s" % (
            len(ctl), len(reads), "".join(ctl[:10]))
    run(main())


@harness.timeout(60)
def test_a_close_ordered_while_data_is_queued_goes_after_that_data():
    """A client that does not read holds 4 x 64 KiB in its output queue (by reference);
    a close order then queues the close frame behind them: when the client reads again it
    gets all four, byte for byte, then the close; a send ordered after the close is not
    delivered."""
    fl = Fleet(flags={"--close-timeout": "20s"})
    gw = fl.gateways["gwA"]

    async def main():
        s = stuck(gw.port, "/?group=q")
        await until(lambda: fl.listener.events("open", s.conn_id), 5, "open event")
        big = [os.urandom(64 * KB) for _ in range(4)]
        for b in big:
            oid, acks = await fl.order(send_order({"conn": s.conn_id}, b))
            assert sums(acks) == (1, 1, 0), acks
        await until(lambda: metric(gw, "wsgate_outbound_bytes") > 64 * KB, 5,
                    "output queued for the stuck client")
        oid, acks = await fl.order({"conn": s.conn_id, "code": 4003, "reason": "after the data"})
        assert F.ack_sums(acks) == (1, 1), acks
        oid, acks = await fl.order(send_order({"conn": s.conn_id}, b"too late"))
        assert sums(acks) == (0, 0, 0), acks
        msgs, close = await asyncio.get_running_loop().run_in_executor(
            None, lambda: read_until_close(s, 20))
        assert [m for _, m in msgs] == big, [len(m) for _, m in msgs]
        assert (close.close_code, close.close_reason) == (4003, b"after the data"), close
        s.send_frame(OP_CLOSE, close.payload[:2])
        s.expect_eof(5)
    run(main())


@harness.timeout(60)
def test_drain_sends_the_close_after_queued_data():
    """On drain, a connection's 1001 goes after the messages queued for it: a client that
    was not reading reads them all, then the close, within --drain-timeout."""
    redis = harness.start_redis()
    listener = F.Listener(redis.port)
    gw = harness.Gateway(flags={"--workers": "1", "--redis": redis.url, "--log-level": "info",
                                "--drain-spread": "0s", "--drain-timeout": "20s",
                                "--close-timeout": "20s"}).start()
    gw.wait_log(re.escape(F.PUBLISHER))
    r = redis.client()
    s = stuck(gw.port, "/?group=d")
    harness.wait_for(lambda: listener.events("open", s.conn_id), 5, "open event")
    big = [os.urandom(64 * KB) for _ in range(3)]
    for i, b in enumerate(big):
        oid = F.order_id("d")
        r.publish(F.ORDERS, json.dumps(send_order({"group": "d"}, b, id=oid,
                                                  reply_to=F.ACKS)))
        harness.wait_for(lambda: listener.acks(oid), 5, "ack of %s" % oid)
    harness.wait_for(lambda: metric(gw, "wsgate_outbound_bytes") > 64 * KB, 5,
                     "output queued for the stuck client")
    gw.signal(signal.SIGTERM)
    msgs, close = read_until_close(s, 20)
    assert [m for _, m in msgs] == big, [len(m) for _, m in msgs]
    assert close.close_code == 1001, close
    s.send_frame(OP_CLOSE, close.payload[:2])
    s.expect_eof(5)
    assert gw.wait_exit(10) == 0


# --- ordering of jobs in batches -------------------------------------------------------

@harness.timeout(150)
def test_send_and_close_jobs_in_batches_keep_their_order_per_connection():
    """Jobs larger than one batch (1 100 members on each of 2 workers, batches of 1 024):
    a send then a close, published back to back, reach every member in that order; a
    close then a send leave every member with the close only (the send waits for the
    close job to finish, then matches nothing)."""
    fl = Fleet(workers=1)

    async def phase(group, first, second, node):
        pipe = fl.r.pipeline(transaction=False)
        ids = []
        for o in (first, second):
            ids.append(F.order_id(group))
            pipe.publish(F.ORDERS, json.dumps(dict(o, group=group, id=ids[-1],
                                                   reply_to=F.ACKS)))
        pipe.execute()
        done = await node.command("closed", 60)
        assert done["event"] == "done", done
        return [await acks_of(fl, i) for i in ids], await node.report()

    async def main():
        n = 2200
        a = await Node.start(n, [fl.url("gwA", ["fifo:a"]), fl.url("gwB", ["fifo:a"])])
        b = await Node.start(n, [fl.url("gwA", ["fifo:b"]), fl.url("gwB", ["fifo:b"])])
        msg = seq_message(0, 64)
        (send_acks, close_acks), rep = await phase(
            "fifo:a", send_order({}, msg), {"code": 4000, "reason": "after"}, a)
        assert sums(send_acks) == (n, n, 0), send_acks
        assert F.ack_sums(close_acks) == (n, n), close_acks
        bad = {k: v for k, v in rep.items()
               if v != {"count": 1, "bytes": 64, "bad": None, "close": [4000, "after"],
                        "after": 1}}
        assert not bad, "%d of %d: %r" % (len(bad), n, list(bad.items())[:3])
        (close_acks, send_acks), rep = await phase(
            "fifo:b", {"code": 4001, "reason": "first"}, send_order({}, msg), b)
        assert F.ack_sums(close_acks) == (n, n), close_acks
        assert sums(send_acks) == (0, 0, 0), send_acks
        bad = {k: v for k, v in rep.items() if v["count"] != 0 or v["close"] != [4001, "first"]}
        assert not bad, "%d of %d: %r" % (len(bad), n, list(bad.items())[:3])
        await a.stop()
        await b.stop()
    run(main())


# --- slow consumers and memory ---------------------------------------------------------

@harness.timeout(150)
def test_slow_reader_is_closed_1013_while_1000_members_keep_receiving():
    """1 000 Node clients and one raw client that stops reading, in one group across
    2 gateways x 2 workers (--max-outbound 128k). 80 messages of 4 KiB, each published
    once the members have the previous one: the stuck client is closed with 1013 `slow
    consumer` once its queue would pass the limit (an ack says dropped 1, /metrics counts
    it, its event says by "slow"), having received a prefix of the messages in order; every
    member receives all 80 in order; the workers' memory stays flat. Prints the delivery
    latency to the group (publish to the last member's receipt, and the histogram's)."""
    # The stuck client reads its close only after the 80 rounds: --close-timeout must
    # not cut it first.
    fl = Fleet(flags={"--max-outbound": "128k", "--log-level": "notice",
                      "--close-timeout": "30s"})
    gwa = fl.gateways["gwA"]
    n, count, size = 1000, 80, 4 * KB

    async def main():
        node = await Node.start(n, [fl.url("gwA", ["big"]), fl.url("gwB", ["big"])])
        s = stuck(gwa.port, "/?group=big")
        await until(lambda: {s.conn_id} | set(node.conns) <=
                    {e["conn"] for e in fl.listener.events("open")}, 10, "open events")
        peak = Peak(worker_pids(*fl.gateways.values()))
        oids, lat = [], []
        for k in range(count):
            oids.append(F.order_id("big"))
            t0 = time.monotonic_ns()
            fl.publish(send_order({"group": "big"}, seq_message(k, size), id=oids[-1],
                                  reply_to=F.ACKS))
            done = await node.command("expect %d" % (k + 1))
            lat.append((int(done["at_ns"]) - t0) / 1e6)
        grew = peak.stop()
        rep = await node.report()
        bad = {k: v for k, v in rep.items()
               if (v["count"], v["bytes"], v["bad"], v["close"]) != (count, count * size, None,
                                                                     None)}
        assert not bad, "%d members: %r" % (len(bad), list(bad.items())[:3])
        acks = [await acks_of(fl, oid) for oid in oids]
        dropped = [k for k, a in enumerate(acks) if sums(a)[2] > 0]
        assert len(dropped) == 1 and sums(acks[dropped[0]])[2] == 1, dropped
        for k, a in enumerate(acks):
            assert sums(a)[:2] == ((n + 1, n + 1) if k < dropped[0] else
                                   (n + 1, n) if k == dropped[0] else (n, n)), (k, a)
        msgs, close = await asyncio.get_running_loop().run_in_executor(
            None, lambda: read_until_close(s, 20))
        assert (close.close_code, close.close_reason) == (1013, SLOW.encode()), close
        assert [m for _, m in msgs] == [seq_message(k, size).encode()
                                        for k in range(len(msgs))], "out of order"
        assert 0 < len(msgs) <= dropped[0], (len(msgs), dropped[0])
        ev = fl.listener.events("close", s.conn_id)
        assert len(ev) == 1 and (ev[0]["code"], ev[0]["by"]) == (1013, "slow"), ev
        assert metric(gwa, "wsgate_push_dropped_total") == 1
        assert metric(gwa, "wsgate_slow_consumer_closes_total") == 1
        pushed = sum(metric(gw, "wsgate_pushed_messages_total") for gw in fl.gateways.values())
        assert pushed == sum(sums(a)[1] for a in acks), pushed
        limit = (40 if SANITIZED else 20) * 1024 * 1024
        print("workers' RSS grew %.1f MB at most (limit %.0f MB)" % (grew / 1e6, limit / 1e6))
        assert grew < limit, grew
        hist, hsum, hcount = [], 0.0, 0.0
        for gw in fl.gateways.values():
            _, s_, c_ = lb.histogram(lb.metrics(gw.admin_port), "wsgate_push_delivery_seconds")
            hsum, hcount = hsum + s_, hcount + c_
        lat.sort()
        print("group of %d on 2 gateways x 2 workers, %d B messages: publish to last member "
              "median %.2f ms, p90 %.2f ms, max %.2f ms; worker histogram mean %.3f ms over "
              "%d samples" % (n, size, statistics.median(lat), lat[int(len(lat) * 0.9)],
                              lat[-1], 1000 * hsum / hcount, hcount))
        await node.stop()
    run(main())


@harness.timeout(120)
def test_64k_message_to_1000_members_is_shared_not_copied():
    """4 messages of 64 KiB to 1 000 members that do not read: each output queue holds
    about 3 of them (the kernel the rest), which /metrics counts as some 190 MB of queued
    output, yet the worker's resident memory grows by a few MB: one frame per message,
    referenced by every queue. Members that read again get every byte."""
    redis = harness.start_redis()
    listener = F.Listener(redis.port)
    gw = harness.Gateway(flags={"--workers": "1", "--redis": redis.url, "--log-level": "notice",
                                "--max-outbound": "1m"}).start()
    gw.wait_log(re.escape(F.PUBLISHER))
    r = redis.client()
    n = 1000
    clients = [stuck(gw.port, "/?group=rss") for _ in range(n)]
    harness.wait_for(lambda: metric(gw, "wsgate_connections_open") == n, 10, "1000 open")
    big = [os.urandom(64 * KB) for _ in range(4)]
    peak = Peak(worker_pids(gw))
    for b in big:
        oid = F.order_id("rss")
        r.publish(F.ORDERS, json.dumps(send_order({"group": "rss"}, b, id=oid,
                                                  reply_to=F.ACKS)))
        acks = harness.wait_for(lambda: listener.acks(oid), 10, "ack of %s" % oid)
        assert sums([a for a, _ in acks]) == (n, n, 0), acks
    queued = harness.wait_for(
        lambda: (lambda v: v if v > n * 64 * KB else 0)(metric(gw, "wsgate_outbound_bytes")),
        5, "output queued")
    grew = peak.stop()
    limit = (16 if SANITIZED else 8) * 1024 * 1024
    print("4 x 64 KiB to %d members: %.0f MB queued as counted per connection, resident "
          "memory grew %.1f MB (limit %.0f MB)" % (n, queued / 1e6, grew / 1e6, limit / 1e6))
    assert grew < limit, grew
    for c in clients[:5]:
        for b in big:
            op, data = c.recv_message(10)
            assert (op, data) == (OP_BINARY, b), len(data)
    for c in clients:
        c.close()
    harness.wait_for(lambda: metric(gw, "wsgate_outbound_bytes") == 0, 10, "queues freed")


# --- limits and filters ----------------------------------------------------------------

@harness.timeout(60)
def test_max_send_refuses_text_and_binary_counted_after_decoding():
    """--max-send 1k: 1 024 bytes of text or binary pass (binary counted after base64,
    1 368 characters on the wire), one byte more is refused with an error ack and counted
    as "payload"; multi-byte text counts its bytes, not its characters; the 64 KiB limit
    still holds for other orders."""
    fl = Fleet(flags={"--max-send": "1k"})

    async def main():
        (c,) = await open_clients(fl, [("gwA", ["ms"], None)])
        good = ["a" * 1024, "é" * 512, os.urandom(1024)]
        bad = ["a" * 1025, "é" * 513, os.urandom(1025)]
        for m in good:
            oid, acks = await fl.order(send_order({"group": "ms"}, m))
            assert sums(acks) == (1, 1, 0), acks
        for m in bad:
            oid, acks = await fl.order(send_order({"group": "ms"}, m))
            assert len(acks) == 4 and all("--max-send" in a.get("error", "") for a in acks), acks
        oid, acks = await fl.order({"group": "ms", "code": 4000, "reason": "x" * 10,
                                    "pad": "p" * (64 * KB)})
        assert all("more than 65536" in a.get("error", "") for a in acks), acks
        assert await received(c, 3) == good
        await assert_open([c], "after the refusals")
        refused = sum(metric(gw, "wsgate_orders_refused_total", reason="payload")
                      for gw in fl.gateways.values())
        assert refused == 3 * 4, refused
    run(main())


@harness.timeout(60)
def test_send_dry_run_and_max_affected():
    """dry_run counts and sends nothing; max_affected is per worker and refuses the whole
    send on a worker over it."""
    fl = Fleet()

    async def main():
        cs = await open_clients(fl, [("gwA", ["dr"], None)] * 4 + [("gwB", ["dr"], None)])
        oid, acks = await fl.order(send_order({"group": "dr"}, "dry", dry_run=True))
        assert sums(acks) == (5, 0, 0) and all(a.get("dry_run") for a in acks), acks
        per_worker = {}
        for c in cs:
            per_worker[(c.gid, c.conn.split("-")[1])] = per_worker.get(
                (c.gid, c.conn.split("-")[1]), 0) + 1
        most = max(per_worker.values())
        oid, acks = await fl.order(send_order({"group": "dr"}, "capped",
                                              max_affected=most - 1))
        errors = [a for a in acks if "error" in a]
        assert errors and all("max_affected exceeded" in a["error"] for a in errors), acks
        ok = [a for a in acks if "error" not in a]
        got = sum(a["sent"] for a in ok)
        oid, acks = await fl.order(send_order({"group": "dr"}, "all of them", max_affected=5))
        assert sums(acks) == (5, 5, 0), acks
        for c in cs:
            first = await received(c, 1)
            if first == ["capped"]:
                got -= 1
                first = await received(c, 1)
            assert first == ["all of them"], (c, first)
        assert got == 0
        await assert_open(cs, "after dry run and max_affected")
    run(main())


# --- the worker's channel -------------------------------------------------------------------

@harness.timeout(60)
def test_connection_orders_on_the_worker_channel_reach_that_worker_only():
    """<channel>:worker:<the id without its last -N> is the channel of the worker that
    holds the connection: only it receives an order published there (PUBLISH answers 1),
    and wsgatectl publishes orders for connections of one worker there."""
    fl = Fleet()
    url = fl.redis.url

    async def main():
        cs = await open_clients(fl, [(g, ["w"], None) for g in ("gwA", "gwB")] * 3)
        await until(lambda: len(list(fl.r.scan_iter("wsgate:orders:gw:*"))) >= 4, 10,
                    "4 worker heartbeat keys")
        c = cs[0]
        channel = "wsgate:orders:worker:" + c.conn.rsplit("-", 1)[0]
        assert fl.r.execute_command("PUBSUB", "NUMSUB", channel)[1] == 1
        order = {"op": "send", "id": "wk-1", "conn": c.conn, "text": "to its worker",
                 "reply_to": ACKS}
        assert fl.r.publish(channel, json.dumps(order)) == 1
        assert await received(c, 1) == ["to its worker"]
        acks = await acks_of(fl, "wk-1", 1)
        assert [(a["gateway"], a["worker"], a["matched"]) for a in acks] == \
            [(c.gid, int(c.conn.split("-")[1]), 1)], acks
        # Every other worker never saw it: no "order done" line in their logs.
        logs = "".join(gw.log() for gw in fl.gateways.values())
        assert logs.count("order done id=wk-1 ") == 1, logs
        # wsgatectl: the connections of one worker go there; one answer.
        same = [x.conn for x in cs if x.conn.rsplit("-", 1)[0] == c.conn.rsplit("-", 1)[0]]
        p = await asyncio.get_running_loop().run_in_executor(None, lambda: subprocess.run(
            [F.CTL, "send", *sum((["--conn", x] for x in same), []), "--text", "ctl",
             "--wait", "5000", "--redis", url], capture_output=True, timeout=30))
        out = p.stdout.decode()
        assert p.returncode == 0 and "sent to %d of %d" % (len(same), len(same)) in out \
            and "(1 worker answered)" in out, p
        for x in cs:
            if x.conn in same:
                assert await received(x, 1) == ["ctl"]
        # Connections of two workers: the fleet's channel, every worker answers.
        other = next(x for x in cs if x.conn.rsplit("-", 1)[0] != c.conn.rsplit("-", 1)[0])
        p = await asyncio.get_running_loop().run_in_executor(None, lambda: subprocess.run(
            [F.CTL, "send", "--conn", c.conn, "--conn", other.conn, "--text", "two",
             "--wait", "5000", "--redis", url], capture_output=True, timeout=30))
        out = p.stdout.decode()
        assert p.returncode == 0 and "sent to 2 of 2" in out and "(4 workers answered)" in out, p
        assert await received(c, 1) == ["two"] and await received(other, 1) == ["two"]
        for x in cs:  # nothing else reached anyone
            assert x.messages.empty(), (x, x.messages.get_nowait())
        await assert_open(cs, "after worker channel orders")
    run(main())


# --- wsgatectl send ----------------------------------------------------------------------

@harness.timeout(90)
def test_wsgatectl_send_text_binary_file_stdin_wait_json():
    fl = Fleet()
    url = fl.redis.url

    def ctl(*args, stdin=None):
        return subprocess.run([F.CTL] + list(args), input=stdin, capture_output=True,
                              timeout=30)

    async def actl(*args, stdin=None):
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: ctl(*args, stdin=stdin))

    async def main():
        cs = await open_clients(fl, [(g, ["ctl"], None) for g in ("gwA", "gwB")] * 2)
        other = (await open_clients(fl, [("gwB", ["nope"], None)]))[0]
        await until(lambda: len(list(fl.r.scan_iter("wsgate:orders:gw:*"))) >= 4, 10,
                    "4 worker heartbeat keys")
        p = await actl("send", "--group", "ctl", "--text", "héllo ✓", "--wait", "5000",
                       "--redis", url)
        assert p.returncode == 0, p
        # One group: the order goes on its group channel, so only the workers holding
        # members (PUBLISH's receivers) answer.
        assert re.search(r"sent to 4 of 4 matched connections on 2 gateways \([1-4] workers? "
                         r"answered\), 0 dropped \(slow consumers\)", p.stdout.decode()), p.stdout
        for c in cs:
            assert await received(c, 1) == ["héllo ✓"]
        blob = os.urandom(200 * KB)
        path = os.path.join(harness.tmp_root(), "blob.bin")
        with open(path, "wb") as f:
            f.write(blob)
        p = await actl("send", "--group", "ctl", "--binary-file", path, "--except", cs[0].conn,
                       "--wait", "5000", "--json", "--redis", url)
        assert p.returncode == 0, p
        acks = [json.loads(line) for line in p.stdout.decode().splitlines()
                if line.startswith("{")]
        # only the workers holding members of the group answer (its group channel)
        assert 1 <= len(acks) <= 4 and sums(acks) == (3, 3, 0), acks
        for c in cs[1:]:
            assert await received(c, 1) == [blob]
        p = await actl("send", "--conn", cs[0].conn, "--stdin", "--wait", "5000",
                       "--redis", url, stdin="from stdin ∞\n".encode())
        assert p.returncode == 0 and "sent to 1 of 1" in p.stdout.decode(), p
        assert await received(cs[0], 1) == ["from stdin ∞\n"]
        p = await actl("send", "--all", "--binary-file", "-", "--redis", url,
                       stdin=b"\x00\xff")
        assert p.returncode == 0 and p.stdout.decode().startswith("ctl-"), p
        for c in cs + [other]:
            assert await received(c, 1) == [b"\x00\xff"]
        p = await actl("send", "--group", "ctl", "--text", "dry", "--dry-run", "--wait",
                       "5000", "--redis", url)
        assert p.returncode == 0 and "would send to 4 of 4" in p.stdout.decode(), p
        # bad arguments: exit 2, nothing published
        for bad, stdin in ((["--group", "ctl"], None),
                           (["--group", "ctl", "--text", "a", "--stdin"], None),
                           (["--text", "a"], None),
                           (["--group", "ctl", "--stdin"], b"\xff\xfe"),
                           (["--group", "ctl", "--binary-file", path + ".missing"], None),
                           (["--group", "ctl", "--code", "4000", "--text", "a"], None)):
            p = await actl("send", *bad, "--redis", url, stdin=stdin)
            assert p.returncode == 2, (bad, p)
        p = subprocess.run([F.CTL, "send", "--group", "ctl", "--binary-file", "-", "--redis",
                            url], input=os.urandom(1024 * KB + 1), capture_output=True,
                           timeout=30)
        assert p.returncode == 2 and b"--max-send" in p.stderr, p
        await assert_open(cs + [other], "after the bad arguments")
    run(main())


@harness.timeout(60)
def test_signed_send_larger_than_64k_through_wsgatectl():
    """With --order-key the gateway opens the envelope with the send limit, not the 64 KiB
    one: wsgatectl signs a 300 KiB message and every member gets it; an unsigned send is
    refused unanswered."""
    key = "k1:" + "s3cret-send-0123456789abcdef"
    fl = Fleet(extra=["--order-key", key])

    async def main():
        cs = await open_clients(fl, [(g, ["sig"], None) for g in ("gwA", "gwB")])
        await until(lambda: len(list(fl.r.scan_iter("wsgate:orders:gw:*"))) >= 4, 10,
                    "4 worker heartbeat keys")
        blob = os.urandom(300 * KB)
        path = os.path.join(harness.tmp_root(), "signed.bin")
        with open(path, "wb") as f:
            f.write(blob)
        p = await asyncio.get_running_loop().run_in_executor(None, lambda: fl.ctl(
            "--order-key", key, "send", "--group", "sig", "--binary-file", path, "--wait", "5000",
            "--redis", fl.redis.url))
        assert p.returncode == 0 and "sent to 2 of 2" in p.stdout, p
        for c in cs:
            assert await received(c, 1) == [blob]
        fl.publish(send_order({"group": "sig"}, "unsigned"))
        await until(lambda: sum(metric(gw, "wsgate_orders_refused_total", reason="unsigned")
                                for gw in fl.gateways.values()) == 4, 5, "4 unsigned refusals")
        await assert_open(cs, "after the unsigned send")
    run(main())
