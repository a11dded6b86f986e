"""A fleet for close-order tests: gateways on one real redis-server, a Redis listener
and asyncio WebSocket clients that record how and when they were closed.

Built on harness.py: every process is started and killed through it, and the listener
registers itself there too, so its messages are printed when a test fails and it is
stopped in cleanup_all(). Every wait polls against a deadline.
"""

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import threading
import time

import harness

ACKS = "test:acks"  # reply_to of every order the tests publish
EVENTS = "wsgate:events"
ORDERS = "wsgate:orders"
SUBSCRIBED = "redis subscriber up (subscribed)"
PUBLISHER = "redis publisher up"
CTL = os.path.join(harness.BUILD, "wsgatectl")

_ids = itertools.count(1)


def order_id(prefix="o"):
    return "%s%d-%d" % (prefix, os.getpid(), next(_ids))


def cut_reason(text):
    """What a close frame may carry of text: at most 123 bytes, cut on a code point."""
    b = text.encode("utf-8")
    if len(b) <= 123:
        return text
    n = 123
    while n > 0 and (b[n] & 0xC0) == 0x80:  # b[n] is the first byte left out
        n -= 1
    return b[:n].decode("utf-8")


# --- Redis ---------------------------------------------------------------------------------

class RedisOnPort(harness.Redis):
    """A redis-server on a given port (a restart of one that was killed), in a new dir."""

    def __init__(self, port):
        self.port = port
        self.dir = os.path.join(harness.tmp_root(), "redis-%d-%d" % (port, next(_ids)))
        os.makedirs(self.dir)
        self.log_path = os.path.join(self.dir, "redis.log")
        self.config_lines = []
        self.proc = None


class Listener:
    """A thread subscribed to some channels that keeps every message with its arrival time.

    It reconnects when Redis goes away; `generation` counts completed subscriptions, so a
    test can wait until it is subscribed again after a restart."""

    def __init__(self, port, channels=(EVENTS, ACKS)):
        import redis
        self._redis = redis
        self.port = port
        self.channels = list(channels)
        self.msgs = []  # (channel, decoded JSON or raw bytes, time.monotonic())
        self.generation = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        harness._live.append(self)
        harness.wait_for(lambda: self.generation >= 1, 5, "the listener's SUBSCRIBE")

    def _run(self):
        while not self._stop:
            try:
                r = self._redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2,
                                      socket_connect_timeout=1)
                p = r.pubsub()
                p.subscribe(*self.channels)
                confirmed = 0
                while not self._stop:
                    m = p.get_message(timeout=0.05)
                    if m is None:
                        continue
                    if m["type"] == "subscribe":
                        confirmed += 1
                        if confirmed == len(self.channels):
                            self.generation += 1
                    elif m["type"] == "message":
                        ch = m["channel"].decode()
                        try:
                            data = json.loads(m["data"])
                        except ValueError:
                            data = m["data"]
                        with self._lock:
                            self.msgs.append((ch, data, time.monotonic()))
                p.close()
            except (self._redis.RedisError, OSError):
                self.errors += 1
                time.sleep(0.05)  # pace reconnects while Redis is down; not a synchronisation

    def on(self, channel):
        with self._lock:
            return [(d, t) for c, d, t in self.msgs if c == channel]

    def events(self, type_=None, conn=None):
        return [d for d, _ in self.on(EVENTS)
                if isinstance(d, dict) and (type_ is None or d.get("type") == type_)
                and (conn is None or d.get("conn") == conn)]

    def acks(self, oid, channel=ACKS):
        return [(d, t) for d, t in self.on(channel) if isinstance(d, dict) and d.get("id") == oid]

    def kill(self):
        self._stop = True
        self._thread.join(2)

    def dump(self):
        with self._lock:
            tail = self.msgs[-80:]
        return "---- listener (%d messages, last %d) ----\n%s" % (
            len(self.msgs), len(tail), "\n".join("%s %r" % (c, d) for c, d, _ in tail))


# --- gateways ------------------------------------------------------------------------------

class Fleet:
    """Gateways gwA, gwB, ... each with `workers` workers, on one redis-server, and a
    listener subscribed to the events channel and test:acks before any client connects."""

    def __init__(self, ids=("gwA", "gwB"), workers=2, flags=None, extra=None, env=None,
                 redis_config=None, redis_url_of=None):
        """redis_config: redis.conf lines (harness.Redis); redis_url_of(redis, gid): the
        --redis URL gateway gid uses (default redis.url); env: added to each gateway's."""
        self.redis = harness.start_redis(config_lines=redis_config)
        self.listener = Listener(self.redis.port)
        self.gateways = {}
        for gid in ids:
            f = {"--id": gid, "--log-level": "info", "--close-timeout": "1s",
                 "--redis": redis_url_of(self.redis, gid) if redis_url_of else self.redis.url}
            f.update(flags or {})
            self.gateways[gid] = harness.Gateway(flags=f, workers=workers, extra=extra,
                                                 env=env).start()
        self.wait_subscribed(1)
        self.r = self.redis.client()

    @property
    def workers(self):
        return sum(gw.workers for gw in self.gateways.values())

    def wait_subscribed(self, rounds, timeout=15.0):
        """Waits until every worker of every gateway logged `rounds` subscriptions and as
        many publisher connections (acks and events are published on the latter)."""
        for gid, gw in self.gateways.items():
            for line in (SUBSCRIBED, PUBLISHER):
                harness.wait_for(lambda: gw.log().count(line) >= gw.workers * rounds,
                                 timeout, "%s: %d x '%s'" % (gid, gw.workers * rounds, line))

    def url(self, gid, groups=(), user=None, extra=""):
        q = ["group=%s" % g for g in groups] + (["user=%s" % user] if user else [])
        return "ws://127.0.0.1:%d/?%s%s" % (self.gateways[gid].port, "&".join(q), extra)

    def restart_redis(self):
        """Kills redis-server and starts a new, empty one on the same port."""
        port = self.redis.port
        self.redis.kill()
        self.redis = RedisOnPort(port).start()
        self.r = self.redis.client()

    def publish(self, order, channel=ORDERS):
        """Publishes an order (a dict, or str/bytes as is); returns the receiver count."""
        if isinstance(order, dict):
            order = json.dumps(order, ensure_ascii=False)
        return self.r.publish(channel, order)

    async def order(self, order, channel=ORDERS, workers=None, timeout=5.0):
        """Publishes a dict order with a fresh id and reply_to test:acks and waits for an
        answer from `workers` workers (default: all). Returns (id, acks)."""
        order = dict(order)
        order.setdefault("id", order_id())
        order.setdefault("op", "close")
        order.setdefault("reply_to", ACKS)
        want = self.workers if workers is None else workers
        n = self.publish(order, channel)
        assert n >= want, "order %s reached %d subscribers, expected %d" % (order["id"], n, want)
        acks = await until(lambda: len(self.listener.acks(order["id"])) >= want and
                           self.listener.acks(order["id"]), timeout,
                           "%d acks of %s" % (want, order["id"]))
        return order["id"], [a for a, _ in acks]

    def ctl(self, *args, timeout=15.0, env=None):
        """Runs build/wsgatectl (env: added to ours); returns CompletedProcess with text
        stdout and stderr."""
        if not os.access(CTL, os.X_OK):
            raise AssertionError("%s is not built (run make)" % CTL)
        return subprocess.run([CTL] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, text=True, env=dict(os.environ, **(env or {})))


def ack_sums(acks):
    """(matched, closed) summed over acks, which must be distinct workers without errors."""
    seen = [(a["gateway"], a["worker"]) for a in acks]
    assert len(seen) == len(set(seen)), "a worker answered twice: %r" % acks
    for a in acks:
        assert "error" not in a, "error ack: %r" % a
    return sum(a["matched"] for a in acks), sum(a["closed"] for a in acks)


# --- asyncio clients -----------------------------------------------------------------------

async def until(pred, timeout, what, interval=0.01):
    """The asyncio twin of harness.wait_for: polls pred() without blocking the loop."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        await asyncio.sleep(interval)


class Client:
    """One websockets client. A reader task queues messages and records the close frame:
    code, reason and the monotonic time it arrived (None while open)."""

    def __init__(self, ws, gid, groups, user=None):
        self.ws = ws
        self.gid = gid
        self.groups = list(groups) + (["user:%s" % user] if user else [])
        self.conn = ws.response_headers.get("X-Wsgate-Conn")
        assert self.conn, "101 without X-Wsgate-Conn"
        self.closed_at = None
        self.code = self.reason = None
        self.error = None
        self.messages = asyncio.Queue()
        self.task = asyncio.ensure_future(self._read())
        _clients.append(self)

    async def _read(self):
        import websockets
        try:
            while True:
                await self.messages.put(await self.ws.recv())
        except websockets.ConnectionClosed as e:
            self.closed_at = time.monotonic()
            if e.rcvd is not None:
                self.code, self.reason = e.rcvd.code, e.rcvd.reason
            else:
                self.error = "no close frame received (%r)" % e
        except Exception as e:  # noqa: BLE001 - recorded for the assertion that follows
            self.closed_at = time.monotonic()
            self.error = repr(e)

    @property
    def open(self):
        return self.closed_at is None

    async def echo(self, text, timeout=3.0):
        """Proves the connection is open: a message comes back."""
        assert self.open, "%s (%s) is closed: %s %r %s" % (self.conn, self.gid, self.code,
                                                          self.reason, self.error or "")
        await self.ws.send(text)
        got = await asyncio.wait_for(self.messages.get(), timeout)
        assert got == text, "%s echoed %r for %r" % (self.conn, got, text)

    async def wait_closed(self, timeout=5.0):
        await until(lambda: not self.open, timeout, "close of %s" % self.conn)
        await asyncio.wait_for(self.ws.wait_closed(), timeout)

    def __repr__(self):
        return "<%s %s %s>" % (self.conn, self.gid, ",".join(self.groups))


async def connect(url, gid, groups, user=None, timeout=5.0):
    import websockets
    ws = await websockets.connect(url, open_timeout=timeout, close_timeout=2, ping_interval=None,
                                  max_size=None, max_queue=None)
    return Client(ws, gid, groups, user)


async def open_clients(fleet, specs, batch=50, wait_events=True, timeout=10.0):
    """specs: [(gateway id, [groups], user or None)]. Connects them in batches and, unless
    told not to, waits for each one's open event."""
    clients = []
    for i in range(0, len(specs), batch):
        clients += await asyncio.gather(*[
            connect(fleet.url(gid, groups, user), gid, groups, user)
            for gid, groups, user in specs[i:i + batch]])
    if wait_events:
        want = {c.conn for c in clients}
        await until(lambda: want <= {e["conn"] for e in fleet.listener.events("open")},
                    timeout, "open events of %d clients" % len(want))
    return clients


async def assert_open(clients, tag="still-open"):
    """Every client answers an echo: no close frame came before it."""
    await asyncio.gather(*[c.echo("%s %s" % (tag, c.conn)) for c in clients])


async def assert_closed_with(clients, code, reason, timeout=5.0):
    await asyncio.gather(*[c.wait_closed(timeout) for c in clients])
    for c in clients:
        assert c.error is None, "%r: %s" % (c, c.error)
        assert (c.code, c.reason) == (code, reason), \
            "%r closed with %r %r, expected %r %r" % (c, c.code, c.reason, code, reason)


async def close_all(clients):
    await asyncio.gather(*[c.ws.close() for c in clients if c.open], return_exceptions=True)


_clients = []  # every Client of this test process, closed at the end of run()


def run(coro):
    """Runs a test's coroutine; then closes the clients it left open (close handshake,
    bounded by each client's close_timeout)."""
    async def main():
        try:
            return await coro
        finally:
            await close_all(_clients)
            del _clients[:]
    return asyncio.run(main())


def which_chromium():
    return shutil.which("chromium") or ("/usr/bin/chromium"
                                        if os.path.exists("/usr/bin/chromium") else None)
