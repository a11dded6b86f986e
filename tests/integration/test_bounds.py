"""Memory bounds: --max-outbound (a client that does not read its output is closed with
1013 "slow consumer"), --max-pending (a worker's budget for partly received messages) and
--max-jobs (close orders running at once). Each bound is checked by what clients see, by
its counter, and by the workers' resident memory before, during and after the load.

Clients that must not read are "stuck": a 4 KB receive buffer and a 536-byte MSS, so the
gateway's kernel send buffer for them stays near 70 KB instead of growing to megabytes,
and what the kernel does not take is certain to wait in the gateway's own queue."""

import json
import os
import re
import selectors
import socket
import struct
import threading
import time

import harness
import fleet as F
import lb
from wsraw import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, Client, frame,
                   new_key, read_head, request)

KB = 1024
SLOW = "slow consumer"
BUSY = "message buffer budget exceeded"


def sanitized():
    """True for a `make SANITIZE=1` build: ASan's redzones and shadow memory add to every
    allocation, so the memory checks allow for them (and its quarantine is turned off,
    so freed memory is reused as it is without ASan)."""
    with open(harness.WSGATE, "rb") as f:
        return b"__asan_init" in f.read()


SANITIZED = sanitized()


def stuck(port):
    """An upgraded client whose socket will hardly take anything (see the module text)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    key = new_key()
    s.sendall(request(key=key))
    r = read_head(s)
    assert r.status == 101, r.status_line
    return Client(s, r.rest, r)


def rss(pids):
    """Resident bytes of these processes (VmRSS from /proc)."""
    total = 0
    for pid in pids:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


class Peak:
    """The highest resident memory of pids seen while the load runs: a sampler thread
    reads /proc every 5 ms (a measurement, not a synchronisation)."""

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
        return self.peak

    def check(self, budget, margin, what):
        """The peak so far and the memory now both stay within before + budget + margin
        (under ASan: twice the budget, and more margin)."""
        if SANITIZED:
            budget, margin = budget * 2, margin * 2
        now = rss(self.pids)
        self.peak = max(self.peak, now)
        limit = self.before + budget + margin
        summary = "%s: before %.1f MB, peak +%.1f MB, now +%.1f MB, budget %.1f MB + %.1f MB" % (
            what, self.before / 1e6, (self.peak - self.before) / 1e6, (now - self.before) / 1e6,
            budget / 1e6, margin / 1e6)
        print(summary)
        assert self.peak <= limit and now <= limit, summary


def metric(gw, name, **labels):
    return lb.value(lb.metrics(gw.admin_port), name, **labels)


def wait_metric(gw, name, want, timeout=10.0, **labels):
    harness.wait_for(lambda: metric(gw, name, **labels) == want, timeout,
                     "%s%r == %r (now %r)" % (name, labels, want, metric(gw, name, **labels)))


def gateway(flags, redis=None):
    f = {"--workers": "1", "--log-level": "info"}
    if redis is not None:
        f["--redis"] = redis.url
    f.update(flags)
    env = None
    if SANITIZED:
        opts = os.environ.get("ASAN_OPTIONS", "")
        env = {"ASAN_OPTIONS": (opts + ":" if opts else "") + "quarantine_size_mb=0"}
    gw = harness.Gateway(flags=f, env=env).start()
    if redis is not None:
        gw.wait_log(re.escape(F.PUBLISHER))
    return gw


def push(clients, data, timeout=20.0):
    """Sends data on every client as fast as each socket takes it, never reading. A client
    is done when all of it is sent or when the gateway closed it (reset, or EOF seen as
    an error): the loop ends on what the gateway does, not on a guess of time."""
    sel = selectors.DefaultSelector()
    for c in clients:
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_WRITE, [c, 0])
    deadline = time.monotonic() + timeout
    while sel.get_map():
        left = deadline - time.monotonic()
        assert left > 0, "%d clients neither sent everything nor were closed" % len(sel.get_map())
        for key, _ in sel.select(min(left, 0.5)):
            st = key.data
            try:
                st[1] += key.fileobj.send(data[st[1]:])
                if st[1] < len(data):
                    continue
            except BlockingIOError:
                continue
            except OSError:  # reset by the gateway's close
                pass
            sel.unregister(key.fileobj)
    sel.close()


def read_until_close(c, timeout=10.0):
    """Data messages (reassembled, pings skipped) up to the close frame: (messages, close)."""
    msgs, deadline = [], time.monotonic() + timeout
    op, data = None, b""
    while True:
        f = c.recv_frame(max(0.0, deadline - time.monotonic()))
        assert not f.masked and f.rsv == 0, "bad server frame %r" % f
        if f.opcode in (OP_PING, OP_PONG):
            continue
        if f.opcode == OP_CLOSE:
            assert op is None, "close frame inside a message: a frame was cut short"
            return msgs, f
        assert (f.opcode == OP_CONT) == (op is not None), "unexpected frame %r" % f
        op = op or f.opcode
        data += f.payload
        if f.fin:
            msgs.append(data)
            op, data = None, b""


# --- --max-outbound ------------------------------------------------------------------------

@harness.timeout(30)
def test_output_past_max_outbound_finishes_the_frame_begun_then_closes_1013():
    """An echo the kernel does not take passes --max-outbound: the frame already begun on
    the wire is finished, the close frame goes next (the message after it is not echoed),
    the event says by "slow", and the counters count each client once."""
    redis = harness.start_redis()
    listener = F.Listener(redis.port)
    gw = gateway({"--max-outbound": "64k", "--close-timeout": "10s"}, redis)
    clients = [stuck(gw.port) for _ in range(3)]
    big = [os.urandom(512 * KB) for _ in clients]
    for c, b in zip(clients, big):
        c.send(frame(OP_BINARY, b) + frame(OP_TEXT, "after"))
    ids = {c.conn_id for c in clients}
    harness.wait_for(lambda: ids <= {e["conn"] for e in listener.events("close")}, 10,
                     "close events of the 3 clients")
    for c in clients:
        evs = listener.events("close", c.conn_id)
        assert len(evs) == 1, evs
        e = evs[0]
        assert (e["code"], e["reason"], e["by"]) == (1013, SLOW, "slow"), e
    for c, b in zip(clients, big):
        msgs, close = read_until_close(c)  # the client reads again: its output drains
        assert [len(m) for m in msgs] == [len(b)] and msgs[0] == b, \
            "expected the one echo begun on the wire, got %r" % [len(m) for m in msgs]
        assert (close.close_code, close.close_reason) == (1013, SLOW.encode()), close
        c.send_frame(OP_CLOSE, close.payload[:2])
        c.expect_eof(5)
    assert metric(gw, "wsgate_slow_consumer_closes_total") == 3
    assert metric(gw, "wsgate_closes_total", initiator="slow") == 3
    assert metric(gw, "wsgate_close_frames_sent_total", code="1013") == 3
    assert "by=slow" in gw.log()


@harness.timeout(30)
def test_output_still_queued_at_the_keepalive_drops_unsent_messages_and_closes_1013():
    """A client that stopped reading (under --max-outbound) is not cut by the keepalive
    with a TCP reset: it gets 1013, after the messages the kernel holds and the one begun
    on the wire; the messages not begun are dropped, and none is cut short."""
    gw = gateway({"--max-outbound": "256k", "--ping-interval": "1s", "--close-timeout": "10s"})
    c = stuck(gw.port)
    msgs = [struct.pack("!I", i) + os.urandom(2044) for i in range(125)]  # 250 KB of echoes
    c.send(b"".join(frame(OP_BINARY, m) for m in msgs))
    wait_metric(gw, "wsgate_slow_consumer_closes_total", 1, timeout=10)
    got, close = read_until_close(c)
    assert (close.close_code, close.close_reason) == (1013, SLOW.encode()), close
    assert got == msgs[:len(got)], "echoes out of order or changed"
    assert 0 < len(got) < len(msgs) // 2, \
        "%d of %d echoes arrived: expected those queued unbegun to be dropped" % (len(got),
                                                                                  len(msgs))
    c.send_frame(OP_CLOSE, close.payload[:2])
    c.expect_eof(5)
    assert metric(gw, "wsgate_closes_total", initiator="slow") == 1
    assert metric(gw, "wsgate_closes_total", initiator="timeout") == 0


@harness.timeout(40)
def test_200_clients_that_never_read_stay_within_max_outbound():
    """200 clients send echo requests and never read: each worker's memory stays within
    200 x --max-outbound (and a message buffer each) before, during and after; every one
    is closed as a slow consumer at the keepalive, and the memory is released."""
    n, limit = 200, 64 * KB
    gw = gateway({"--workers": "2", "--max-outbound": "64k", "--ping-interval": "1s",
                  "--close-timeout": "1s", "--log-level": "notice"})
    clients = [stuck(gw.port) for _ in range(n)]
    peak = Peak(list(gw.worker_pids().values()))
    data = b"".join(frame(OP_BINARY, os.urandom(4 * KB)) for _ in range(100))  # 400 KB
    push(clients, data)  # echoes past what the kernel takes: every queue fills
    wait_metric(gw, "wsgate_slow_consumer_closes_total", n, timeout=10)
    peak.check(n * (limit + 8 * KB), 6 * 1024 * KB, "during")
    wait_metric(gw, "wsgate_connections_open", 0, timeout=10)
    wait_metric(gw, "wsgate_outbound_bytes", 0, timeout=5)
    assert metric(gw, "wsgate_closes_total", initiator="slow") == n
    peak.stop()
    peak.check(n * (limit + 8 * KB), 6 * 1024 * KB, "after")
    for c in clients:
        c.close()


# --- --max-pending -------------------------------------------------------------------------

@harness.timeout(30)
def test_partial_messages_past_max_pending_close_1013_and_the_budget_comes_back():
    """60 clients each hold 200 KB of an unfinished message against a 4 MiB budget: 20
    fit, 40 are closed with 1013; memory stays within the budget; the 20 still answer
    pings, finish their messages and get them echoed, and the budget is free again."""
    budget, part = 4 * 1024 * KB, 200 * KB
    fits = budget // part
    gw = gateway({"--max-pending": "4m", "--max-message": "1m", "--close-timeout": "10s"})
    clients = [Client.open(gw.port) for _ in range(60)]
    peak = Peak(list(gw.worker_pids().values()))
    first = [os.urandom(part) for _ in clients]
    for c, p in zip(clients, first):
        c.send_frame(OP_BINARY, p, fin=False)
    wait_metric(gw, "wsgate_pending_budget_closes_total", len(clients) - fits)
    wait_metric(gw, "wsgate_pending_bytes", fits * part)
    peak.check(budget, 2 * 1024 * KB, "during")
    held, closed = [], []
    for c, p in zip(clients, first):
        c.send_frame(OP_PING, "still here?")
        f = c.recv_frame(5)
        if f.opcode == OP_PONG:
            held.append((c, p))
            continue
        assert f.opcode == OP_CLOSE and (f.close_code, f.close_reason) == (1013, BUSY.encode()), f
        closed.append(c)
    assert len(held) == fits and len(closed) == len(clients) - fits, (len(held), len(closed))
    assert metric(gw, "wsgate_closes_total", initiator="busy") == len(closed)
    for c, p in held:
        c.send_frame(OP_CONT, "end")
        f = c.recv_frame(10)
        assert (f.opcode, f.fin, f.payload) == (OP_BINARY, True, p + b"end"), f
    wait_metric(gw, "wsgate_pending_bytes", 0)
    late = Client.open(gw.port)  # the budget is free again
    late.send_frame(OP_BINARY, os.urandom(part), fin=False)
    late.send_frame(OP_PING, "and now?")
    assert late.recv_frame(5).opcode == OP_PONG
    peak.stop()
    peak.check(budget, 2 * 1024 * KB, "after")


# --- --max-jobs ----------------------------------------------------------------------------

def publish_spread_orders(r, ids, code=4000):
    pipe = r.pipeline(transaction=False)
    for oid in ids:
        pipe.publish(F.ORDERS, json.dumps({"op": "close", "all": True, "code": code,
                                           "spread_ms": 3600000, "id": oid,
                                           "reply_to": F.ACKS}))
    pipe.execute()


def wait_acks(listener, ids, timeout=10.0):
    """{id: ack} once every id has exactly one answer."""
    harness.wait_for(lambda: all(listener.acks(o) for o in ids), timeout,
                     "answers to %d orders" % len(ids))
    out = {}
    for o in ids:
        acks = listener.acks(o)
        assert len(acks) == 1, "%s answered %d times: %r" % (o, len(acks), acks)
        out[o] = acks[0][0]
    return out


@harness.timeout(40)
def test_spread_orders_past_max_jobs_are_refused_and_jobs_without_connections_end():
    """1 000 hour-long spread orders for all of 2 000 connections: 20 run (--max-jobs 20),
    980 get a nack on reply_to and count as refused "jobs"; memory stays within 20 jobs.
    When the clients go, the 20 jobs, left with nothing to close, end at once (their
    acks arrive) instead of holding their lists for an hour."""
    n, jobs, orders = 2000, 20, 1000
    redis = harness.start_redis()
    listener = F.Listener(redis.port)
    gw = gateway({"--max-jobs": str(jobs), "--log-level": "notice"}, redis)
    gw.wait_log(re.escape(F.SUBSCRIBED))
    clients = [Client.open(gw.port) for _ in range(n)]
    wait_metric(gw, "wsgate_connections_open", n)
    peak = Peak(list(gw.worker_pids().values()))
    ids = ["spread-%d" % i for i in range(orders)]
    publish_spread_orders(redis.client(), ids)
    nacks = wait_acks(listener, ids[jobs:])
    for a in nacks.values():
        assert a["error"].startswith("too many jobs"), a
    assert not any(listener.acks(o) for o in ids[:jobs]), "a running job answered early"
    assert metric(gw, "wsgate_orders_refused_total", reason="jobs") == orders - jobs
    wait_metric(gw, "wsgate_order_jobs", jobs)
    per_job = n * 12 + 4 * KB  # a counter and a due moment per connection, and the job
    peak.check(jobs * per_job, 3 * 1024 * KB, "during")

    for c in clients:
        c.close()
    acks = wait_acks(listener, ids[:jobs])
    for a in acks.values():
        # Jobs are matched in turn (apply.c's FIFO): a job matched after earlier spread
        # jobs began may find the few connections their first due moments already closed
        # (about one every 1.8 s per job on an hour-long spread of 2 000).
        assert "error" not in a and n - 100 <= a["matched"] <= n, a
    wait_metric(gw, "wsgate_order_jobs", 0)
    peak.stop()
    peak.check(jobs * per_job, 3 * 1024 * KB, "after")


@harness.timeout(30)
def test_a_later_order_for_the_same_connections_ends_earlier_spread_jobs():
    """Ten hour-long spread orders hold 500 connections; a later order closes them all
    now. The ten jobs have nothing left to do: they end (and answer) at once, and every
    connection was closed exactly once between them."""
    n = 500
    redis = harness.start_redis()
    listener = F.Listener(redis.port)
    gw = gateway({"--log-level": "notice"}, redis)
    gw.wait_log(re.escape(F.SUBSCRIBED))
    clients = [Client.open(gw.port) for _ in range(n)]
    wait_metric(gw, "wsgate_connections_open", n)
    ids = ["spread-%d" % i for i in range(10)]
    r = redis.client()
    publish_spread_orders(r, ids)
    wait_metric(gw, "wsgate_order_jobs", len(ids))
    r.publish(F.ORDERS, json.dumps({"op": "close", "all": True, "code": 4001, "id": "now",
                                    "reply_to": F.ACKS}))
    acks = wait_acks(listener, ids + ["now"])
    for a in acks.values():
        assert "error" not in a, a
    assert sum(a["closed"] for a in acks.values()) == n, acks
    assert all(acks[o]["matched"] == n for o in ids), acks
    wait_metric(gw, "wsgate_order_jobs", 0)
    for c in clients:
        c.close()
