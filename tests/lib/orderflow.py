"""A steady flow of orders through a Redis fault, counted end to end.

A publisher thread sends numbered send orders for group "flow" ({"id": "flow-R-N",
"op": "send", "group": "flow", "text": "N"}) every `period` seconds: with a stream, it
XADDs each (MAXLEN ~ 100000, field "order") and then PUBLISHes it once, best effort;
without, it PUBLISHes it. An order counts as published once Redis acknowledged the
XADD (stream) or the PUBLISH (no stream); until then the publisher retries the same
order, same id, as a careful backend would. One WebSocket client in group "flow"
records every text it receives. lost = published orders the client never received;
duplicates = orders it received more than once.

Used by tests/integration/test_durable_faults.py (asserts) and tests/bench/durable.py
(measures)."""

import asyncio
import collections
import itertools
import json
import os
import signal
import subprocess
import threading
import time

import harness

ORDERS = "wsgate:orders"
STREAM = "wsgate:orders:log"
_runs = itertools.count(1)


class DurableRedis(harness.Redis):
    """A redis-server that keeps what it acknowledged (AOF, fsync on every write) and
    can be killed and started again on the same port and directory."""

    def start(self, timeout=10.0):
        import shutil
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", self.dir],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.dir)
        if self not in harness._live:
            harness._live.append(self)
        harness.wait_for(self._pong, timeout, "redis-server PING on port %d" % self.port, 0.02)
        return self


class Publisher:
    def __init__(self, redis_port, stream=None, period=0.02, channel=ORDERS):
        import redis
        self.r = redis.Redis(host="127.0.0.1", port=redis_port, socket_timeout=0.5,
                             socket_connect_timeout=0.5)
        self.redis = redis
        self.stream = stream
        self.period = period
        self.channel = channel
        self.run_id = next(_runs)
        self.published = set()
        self.attempts = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def order(self, n):
        return json.dumps({"id": "flow-%d-%d-%d" % (os.getpid(), self.run_id, n), "op": "send",
                           "group": "flow", "text": str(n)})

    def _send(self, text):
        """True once Redis acknowledged the order's durable step."""
        self.attempts += 1
        if self.stream is not None:
            self.r.xadd(self.stream, {"order": text}, maxlen=100000, approximate=True)
            try:
                self.r.publish(self.channel, text)
            except (self.redis.RedisError, OSError):
                pass  # the stream holds it: the channel is only the fast path
            return True
        self.r.publish(self.channel, text)
        return True

    def _run(self):
        n = 1
        next_at = time.monotonic()
        while not self._stop.is_set():
            text = self.order(n)
            try:
                self._send(text)
                self.published.add(n)
                n += 1
            except (self.redis.RedisError, OSError):
                self.failures += 1
                self._stop.wait(0.02)  # Redis away: try the same order again shortly
                continue
            next_at += self.period
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(5)


async def run_flow(gw, redis_port, fault, stream=None, before=1.0, after=2.0, settle=6.0,
                   period=0.02):
    """Connects a client in group flow to gateway gw, waits until an order reaches it,
    runs the publisher for `before` s, calls fault() (blocking, in a thread), runs
    `after` s more, stops, and waits up to `settle` s for the published orders to
    arrive. Returns a dict of counts."""
    import websockets
    ws = await websockets.connect("ws://127.0.0.1:%d/?group=flow" % gw.port, ping_interval=None,
                                  close_timeout=2, max_queue=None)
    got = collections.Counter()

    async def reader():
        try:
            async for m in ws:
                got[m] += 1
        except websockets.ConnectionClosed:
            pass
    task = asyncio.ensure_future(reader())
    pub = Publisher(redis_port, stream, period)
    try:
        # Warm-up: the group's channel and the stream reader are in place.
        import redis
        r = redis.Redis(host="127.0.0.1", port=redis_port, socket_timeout=2)
        deadline = time.monotonic() + 10
        k = 0
        while not any(str(m).startswith("warm") for m in got):
            assert time.monotonic() < deadline, "no warm-up order reached the client"
            k += 1
            r.publish(ORDERS, json.dumps({"op": "send", "group": "flow", "text": "warm%d" % k}))
            await asyncio.sleep(0.1)
        r.close()
        pub.start()
        await asyncio.sleep(before)  # the steady flow before the fault: load, not a sync
        t0 = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, fault)
        fault_s = time.monotonic() - t0
        await asyncio.sleep(after)
        pub.stop()
        want = {str(n) for n in pub.published}
        deadline = time.monotonic() + settle
        while not want <= set(got) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        received = {m for m in got if not m.startswith("warm")}
        return {
            "published": len(pub.published),
            "attempts": pub.attempts,
            "received": len(received & want),
            "lost": len(want - received),
            "duplicates": sum(1 for m in received if got[m] > 1),
            "unconfirmed_received": len(received - want),
            "fault_s": round(fault_s, 2),
            "client_open": not task.done(),
        }
    finally:
        pub.stop()
        await ws.close()
        task.cancel()


def kill_restart(redis, down=5.0):
    """kill -9, down seconds without Redis, then the same port and data again."""
    def fault():
        redis.proc.send_signal(signal.SIGKILL)
        redis.proc.wait()
        redis._log.close()
        time.sleep(down)  # the outage itself
        redis.start()
    return fault


def sigstop(redis, down=5.0):
    def fault():
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(down)  # the outage itself
        finally:
            redis.proc.send_signal(signal.SIGCONT)
    return fault


def cut_subscribers(proxy, down=5.0):
    def fault():
        proxy.blackhole(b"SUBSCRIBE")
        try:
            time.sleep(down)  # the outage itself
        finally:
            proxy.restore()
    return fault
