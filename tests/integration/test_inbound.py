"""Client messages to backends (--inbound): every message reaches Redis once as a JSON
envelope with the connection's metadata (publish: a subscriber counts them; stream:
XRANGE and a consumer group read them, MAXLEN caps the stream), JWT's sub and jti in it,
backpressure while Redis is stopped (reading stops, memory stays bounded, everything
flows when it is back), drop mode counts, and --echo still echoes."""

import base64
import json
import os
import signal
import socket
import time

import harness
import lb
import wsraw
from fleet import Listener
from lb import value

CHANNEL = "t:in"


def gateway(redis, mode, workers=2, flags=None):
    f = {"--redis": redis.url, "--id": "gwI", "--log-level": "info"}
    f.update(flags or {})
    return harness.Gateway(flags=f, workers=workers, echo=False,
                           extra=["--inbound", mode]).start()


def wait_publisher(gw):
    harness.wait_for(lambda: gw.log().count("redis publisher up") >= gw.workers, 10,
                     "every worker's publisher up")


def metric(gw, name, **labels):
    return value(lb.metrics(gw.admin_port), name, **labels)


def payload(i, j):
    """Message j of client i: text, binary (bytes that are not UTF-8), or a text sent
    in three fragments."""
    kind = j % 3
    if kind == 1:
        return "binary", bytes([0xff, i, j]) + os.urandom(8) + b"\x00"
    return ("text" if kind == 0 else "frag"), "c%d m%d \u00e9 %s" % (i, j, "x" * (j * 7))


def send_message(cl, kind, data):
    if kind == "binary":
        cl.send_frame(0x2, data)
    elif kind == "text":
        cl.send_frame(0x1, data.encode())
    else:
        b = data.encode()
        cl.send(wsraw.frame(0x1, b[:3], fin=False) + wsraw.frame(0x0, b[3:5], fin=False)
                + wsraw.frame(0x0, b[5:], fin=True))


def body(env):
    if "binary" in env:
        return base64.b64decode(env["binary"])
    return env["text"]


def check_envelopes(envs, clients, sent, gw_id="gwI"):
    """Every message of every client exactly once (duplicates allowed when dedup), in
    order per connection, with its metadata."""
    by_conn = {}
    for e in envs:
        by_conn.setdefault(e["conn"], []).append(e)
    for i, (cl, groups, user) in enumerate(clients):
        got = by_conn.get(cl.conn_id, [])
        want = [d for _, d in sent[i]]
        assert [body(e) for e in got] == want, "client %d: %d of %d messages, or out of order" % (
            i, len(got), len(want))
        for e in got:
            assert e["gateway"] == gw_id and str(e["worker"]) == cl.worker, e
            assert sorted(e["groups"]) == sorted(groups), e
            assert e.get("user") == user, e
            assert isinstance(e["ts"], int) and abs(e["ts"] / 1000 - time.time()) < 60, e
        seqs = [e["seq"] for e in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs


def open_clients(gw, n, group_of=lambda i: ["room:1", "g%d" % (i % 3)], user_of=lambda i: "u%d" % i):
    out = []
    for i in range(n):
        groups, user = group_of(i), user_of(i)
        q = "&".join(["group=%s" % g for g in groups] + (["user=%s" % user] if user else []))
        cl = wsraw.Client.open(gw.port, path="/?" + q)
        out.append((cl, groups + (["user:%s" % user] if user else []), user))
    return out


@harness.timeout(60)
def test_publish_mode_delivers_every_message_with_its_metadata():
    redis = harness.start_redis()
    lis = Listener(redis.port, channels=(CHANNEL,))
    gw = gateway(redis, "publish", flags={"--inbound-channel": CHANNEL})
    wait_publisher(gw)
    clients = open_clients(gw, 20, user_of=lambda i: "u%d" % i if i % 4 else None)
    sent = [[] for _ in clients]
    for j in range(50):
        for i, (cl, _, _) in enumerate(clients):
            kind, data = payload(i, j)
            send_message(cl, kind, data)
            sent[i].append((kind, data))
    harness.wait_for(lambda: len(lis.on(CHANNEL)) >= 1000, 20, "1000 messages on " + CHANNEL)
    envs = [d for d, _ in lis.on(CHANNEL)]
    assert len(envs) == 1000, len(envs)
    check_envelopes(envs, clients, sent)
    assert metric(gw, "wsgate_inbound_messages_total", mode="publish") == 1000
    assert metric(gw, "wsgate_inbound_dropped_total", reason="full") == 0
    nbytes = sum(len(d if isinstance(d, bytes) else d.encode()) for s in sent for _, d in s)
    assert metric(gw, "wsgate_inbound_bytes_total") == nbytes


def stream_envelopes(r, stream):
    return [json.loads(f[b"msg"]) for _, f in r.xrange(stream)]


@harness.timeout(60)
def test_stream_mode_every_entry_read_by_a_consumer_group_and_maxlen_caps_it():
    redis = harness.start_redis()
    r = redis.client()
    gw = gateway(redis, "stream", flags={"--inbound-stream": "s:all"})
    capped = gateway(redis, "stream", workers=1,
                     flags={"--inbound-stream": "s:cap", "--inbound-maxlen": "100"})
    wait_publisher(gw)
    wait_publisher(capped)
    r.xgroup_create("s:all", "backend", id="0", mkstream=True)
    clients = open_clients(gw, 10)
    sent = [[] for _ in clients]
    for j in range(30):
        for i, (cl, _, _) in enumerate(clients):
            kind, data = payload(i, j)
            send_message(cl, kind, data)
            sent[i].append((kind, data))
    harness.wait_for(lambda: r.xlen("s:all") >= 300, 20, "300 entries in s:all")
    envs = stream_envelopes(r, "s:all")
    assert len(envs) == 300 and all(set(e) >= {"conn", "groups", "ts"} for e in envs)
    check_envelopes(envs, clients, sent)
    got = r.xreadgroup("backend", "c1", {"s:all": ">"}, count=1000)
    entries = got[0][1]
    assert len(entries) == 300
    assert r.xack("s:all", "backend", *[eid for eid, _ in entries]) == 300
    assert metric(gw, "wsgate_inbound_messages_total", mode="stream") == 300

    cl = wsraw.Client.open(capped.port, path="/?group=cap")
    for k in range(1000):
        cl.send_frame(0x1, b"m%d" % k)
    harness.wait_for(lambda: metric(capped, "wsgate_inbound_messages_total", mode="stream") == 1000,
                     20, "1000 entries streamed")
    n = r.xlen("s:cap")
    assert 100 <= n < 300, "MAXLEN ~ 100 left %d entries" % n
    last = json.loads(r.xrevrange("s:cap", count=1)[0][1][b"msg"])
    assert last["text"] == "m999" and last["groups"] == ["cap"] and "user" not in last


@harness.timeout(40)
def test_jwt_sub_and_jti_are_in_the_envelope():
    import jwt
    import uuid
    secret = "wsgate-test-secret-0123456789abcdef"
    redis = harness.start_redis()
    r = redis.client()
    gw = gateway(redis, "stream", workers=1, flags={"--jwt-secret": secret})
    wait_publisher(gw)
    jti = uuid.uuid4().hex
    now = int(time.time())
    tok = jwt.encode({"sub": "alice", "exp": now + 60, "jti": jti, "groups": ["room:9"]}, secret,
                     algorithm="HS256")
    cl = wsraw.Client.open(gw.port, path="/?token=" + tok)
    cl.send_frame(0x1, b"hi")
    harness.wait_for(lambda: r.xlen("wsgate:in") >= 1, 10, "one entry in wsgate:in")
    e = stream_envelopes(r, "wsgate:in")[0]
    assert e["user"] == "alice" and e["jti"] == jti and e["text"] == "hi", e
    assert e["conn"] == cl.conn_id and "user:alice" in e["groups"], e


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


class Pusher:
    """A client that sends 1 KiB text messages without blocking, counting those the
    kernel took whole; the rest of a message cut by a full send buffer is kept."""

    def __init__(self, port, i):
        self.cl = wsraw.Client.open(port, path="/?group=bp&user=p%d" % i)
        self.cl.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        self.cl.sock.setblocking(False)
        self.i = i
        self.sent = 0
        self.rest = b""

    def push(self, limit):
        """Sends until the kernel refuses or limit messages are out; True if it refused."""
        while self.sent < limit:
            if not self.rest:
                msg = b"p%d-%06d-" % (self.i, self.sent) + b"y" * 1000
                self.rest = wsraw.frame(0x1, msg)
            try:
                n = self.cl.sock.send(self.rest)
            except BlockingIOError:
                return True
            self.rest = self.rest[n:]
            if not self.rest:
                self.sent += 1
        return False

    def finish(self):
        self.cl.sock.setblocking(True)
        self.cl.sock.settimeout(10)
        if self.rest:
            self.cl.sock.sendall(self.rest)
            self.rest = b""
            self.sent += 1


@harness.timeout(90)
def test_backpressure_with_redis_stopped_pauses_reading_and_everything_flows_after():
    redis = harness.start_redis()
    r = redis.client()
    gw = gateway(redis, "stream", workers=1,
                 flags={"--inbound-max-pending": "2m", "--redis-timeout": "500ms"})
    wait_publisher(gw)
    wpid = list(gw.worker_pids().values())[0]
    pushers = [Pusher(gw.port, i) for i in range(10)]
    rss0 = rss_kb(wpid)
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        # Each client sends until its socket is full: the gateway stopped reading it.
        deadline = time.monotonic() + 30
        full = set()
        while len(full) < len(pushers):
            assert time.monotonic() < deadline, "clients still sending: %s" % [
                p.sent for p in pushers]
            for p in pushers:
                if p.i not in full and p.push(100000):
                    if metric(gw, "wsgate_inbound_paused_connections") == len(pushers):
                        full.add(p.i)
        # Blocked for good: the kernel takes nothing more while Redis is stopped.
        harness.wait_for(lambda: metric(gw, "wsgate_inbound_paused_connections") == 10, 5,
                         "10 paused connections")
        sent_stopped = sum(p.sent for p in pushers)
        assert not any(not p.push(p.sent + 1000) for p in pushers)
        pending = metric(gw, "wsgate_inbound_pending_bytes")
        assert pending <= 2 * 1024 * 1024, pending
        grown = rss_kb(wpid) - rss0
        assert grown < 16 * 1024, "worker RSS grew %d KiB with Redis stopped" % grown
        # Stopped past --redis-timeout: the publisher is dropped with XADDs in flight,
        # which are sent again when it is back (at least once).
        gw.wait_log("redis publisher down", timeout=5)
        assert not any(not p.push(p.sent + 1000) for p in pushers)
        print("sent while stopped: %d messages (%d KiB); worker RSS +%d KiB; held %d bytes"
              % (sent_stopped, sent_stopped * 1030 // 1024, grown, pending))
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    for p in pushers:
        p.finish()
    total = sum(p.sent for p in pushers)
    harness.wait_for(lambda: metric(gw, "wsgate_inbound_messages_total", mode="stream") >= total,
                     30, "%d entries streamed" % total)
    harness.wait_for(lambda: metric(gw, "wsgate_inbound_paused_connections") == 0, 5,
                     "every client read again")
    envs = stream_envelopes(r, "wsgate:in")
    uniq = {(e["conn"], e["seq"]): e["text"] for e in envs}
    assert len(uniq) == total, "%d distinct entries, %d sent" % (len(uniq), total)
    for p in pushers:
        mine = sorted((s, t) for (c, s), t in uniq.items() if c == p.cl.conn_id)
        assert [t[:9] for _, t in mine] == [("p%d-%06d-" % (p.i, k))[:9] for k in range(p.sent)]
    assert metric(gw, "wsgate_inbound_dropped_total", reason="full") == 0
    print("after SIGCONT: %d messages, %d entries (%d sent again)" % (
        total, len(envs), metric(gw, "wsgate_inbound_retried_total")))
    # The clients are read again: one more message each reaches the stream.
    for p in pushers:
        p.cl.send_frame(0x1, b"after")
    harness.wait_for(lambda: metric(gw, "wsgate_inbound_messages_total", mode="stream")
                     >= total + 10, 10, "10 more entries")


@harness.timeout(90)
def test_many_clients_over_a_small_budget_wait_rather_than_lose_messages():
    """60 clients flood a worker whose --inbound-max-pending (256k) holds a few hundred
    messages, with Redis stopped: once half the budget is held, a connection with input
    is paused before it is read, so nothing read has to be dropped; every message is in
    the stream once Redis is back."""
    redis = harness.start_redis()
    r = redis.client()
    gw = gateway(redis, "stream", workers=1,
                 flags={"--inbound-max-pending": "256k", "--redis-timeout": "20s"})
    wait_publisher(gw)
    pushers = [Pusher(gw.port, i) for i in range(60)]
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        for p in pushers:
            p.push(200)
        harness.wait_for(lambda: metric(gw, "wsgate_inbound_paused_connections") == 60, 10,
                         "every client paused")
        assert metric(gw, "wsgate_inbound_pending_bytes") <= 256 * 1024
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    for p in pushers:
        p.finish()
    total = sum(p.sent for p in pushers)
    assert total > 1000, total  # far more than the budget holds
    harness.wait_for(lambda: metric(gw, "wsgate_inbound_messages_total", mode="stream") >= total,
                     30, "%d entries streamed" % total)
    assert metric(gw, "wsgate_inbound_dropped_total", reason="full") == 0
    envs = stream_envelopes(r, "wsgate:in")
    assert len({(e["conn"], e["seq"]) for e in envs}) == total


@harness.timeout(30)
def test_drop_mode_counts_and_echo_alias_still_echoes():
    redis = harness.start_redis()
    gw = gateway(redis, "drop", workers=1)
    cl = wsraw.Client.open(gw.port)
    for k in range(7):
        cl.send_frame(0x1, b"x%d" % k)
    harness.wait_for(lambda: metric(gw, "wsgate_inbound_dropped_total", reason="mode") == 7, 5,
                     "7 messages dropped by mode")
    echo = harness.Gateway(flags={"--redis": redis.url}, workers=1).start()  # --echo
    ce = wsraw.Client.open(echo.port)
    ce.send_frame(0x1, b"back")
    f = ce.recv_frame()
    assert f.opcode == 0x1 and f.payload == b"back"
    assert metric(echo, "wsgate_inbound_dropped_total", reason="mode") == 0
