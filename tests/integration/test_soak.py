"""A bounded soak: everything hostile and everything good at once, against one gateway
with JWT, signed-free orders on Redis, small output limits and 2 workers.

  - 20 000 connect/close cycles with tokens (complete close handshakes), from threads;
  - 10 000 orders, half good (a conn order for a live connection, acknowledged) and half
    bad (broken JSON, wrong types, unknown ops, oversized);
  - slow readers that send and never read (closed 1013 "slow consumer");
  - trickling handshakes (a byte at a time, then complete) and stalled ones (408);
  - clients with bad tokens (401).

Afterwards every good client and every good order went through, and the workers' open
files and RSS are back within a small margin of where they started."""

import json
import os
import socket
import threading
import time
import uuid

import harness
import lb
import wsraw
from fleet import ACKS, Fleet
from lb import value

SECRET = "soak-secret-0123456789abcdef0123456789"
CYCLES = 20000
THREADS = 8
ORDERS = 10000


def token(sub):
    import jwt
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 600, "jti": uuid.uuid4().hex},
                      SECRET, algorithm="HS256")


def worker_fds_rss(gw):
    fds = rss = 0
    for pid in gw.worker_pids().values():
        fds += len(os.listdir("/proc/%d/fd" % pid))
        with open("/proc/%d/status" % pid) as f:
            rss += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return fds, rss * 1024


def cycles(port, tokens, n, errors):
    """n connect/upgrade/close-handshake cycles; any failure is recorded."""
    for i in range(n):
        try:
            c = wsraw.Client.open(port, extra=[("Authorization", "Bearer " + tokens[i % 8])])
            c.send_frame(wsraw.OP_CLOSE, wsraw.close_payload(1000))
            f = c.recv_frame(timeout=10)
            assert f.opcode == wsraw.OP_CLOSE and f.close_code == 1000, f
            c.expect_eof(10)
            c.close()
        except Exception as e:  # noqa: BLE001 - counted, reported below
            errors.append(repr(e))
            if len(errors) > 20:
                return


def slow_reader(port, tok, results):
    """Sends echo messages and never reads. The gateway must either close it with 1013
    (its output passed --max-outbound) or stop reading from it (the output over its
    high mark): either way what it holds for it stays bounded. Records 1013, "paused",
    or the error."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    try:
        s.sendall(wsraw.request(extra=[("Authorization", "Bearer " + tok)]))
        r = wsraw.read_head(s)
        assert r.status == 101
        c = wsraw.Client(s, r.rest, r)
        payload = b"x" * 16000
        while True:
            try:
                s.settimeout(1.0)
                s.sendall(wsraw.frame(wsraw.OP_BINARY, payload))
            except socket.timeout:
                results.append("paused")
                return
            except (BrokenPipeError, ConnectionResetError):
                break
        while True:
            f = c.recv_frame(timeout=10)
            if f.opcode == wsraw.OP_CLOSE:
                results.append(f.close_code)
                return
    except wsraw.Closed:
        # It did not read for longer than --close-timeout after its 1013: the gateway
        # closed TCP with its input unread, and the reset took the close frame with it.
        results.append("reset")
    except ConnectionResetError:
        results.append("reset")
    except Exception as e:  # noqa: BLE001
        results.append(repr(e))
    finally:
        s.close()


def trickle(port, tok, results):
    """A handshake a few bytes at a time, then an echo."""
    try:
        data = wsraw.request(extra=[("Authorization", "Bearer " + tok)])
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        for i in range(0, len(data), 16):
            s.sendall(data[i:i + 16])
            time.sleep(0.01)
        r = wsraw.read_head(s)
        c = wsraw.Client(s, r.rest, r)
        assert r.status == 101, r.status_line
        c.echo(wsraw.OP_TEXT, b"slowly")
        c.close()
        results.append("ok")
    except Exception as e:  # noqa: BLE001
        results.append(repr(e))


BAD_ORDERS = [
    "{", "[]", "null", '{"conn":5}', '{"op":"explode","all":true}', '{"all":false}',
    '{"group":"g","code":99}', '{"group":"g","spread_ms":-1}', '{"conn":[]}',
    '{"op":"send","all":true}', '{"group":"' + "x" * 200 + '"}',
]


def sanitized():
    """A `make SANITIZE=1` build: ASan's quarantine keeps freed memory (256 MB a
    process), so it is turned off here, and redzones get twice the margin."""
    with open(harness.WSGATE, "rb") as f:
        return b"__asan_init" in f.read()


@harness.timeout(240)
def test_soak_everything_at_once_then_back_to_where_it_started():
    asan = sanitized()
    env = {"ASAN_OPTIONS": "quarantine_size_mb=0"} if asan else None
    fl = Fleet(ids=("gwS",), env=env,
               flags={"--jwt-secret": SECRET, "--max-outbound": "64k", "--handshake-timeout": "2s",
                      "--log-level": "notice", "--close-timeout": "2s"})
    gw = fl.gateways["gwS"]
    port = gw.port
    tokens = [token("user%d" % i) for i in range(8)]
    # Warm the workers' heaps with one small round, then take the baseline.
    cycles(port, tokens, 200, [])
    time.sleep(0.5)
    fds0, rss0 = worker_fds_rss(gw)

    # Live targets for the good orders: one connection per worker at least.
    live = [wsraw.Client.open(port, extra=[("Authorization", "Bearer " + tokens[0])])
            for _ in range(20)]
    errors, slow, trickled, stalled = [], [], [], []
    threads = [threading.Thread(target=cycles, args=(port, tokens, CYCLES // THREADS, errors))
               for _ in range(THREADS)]
    threads += [threading.Thread(target=slow_reader, args=(port, tokens[1], slow))
                for _ in range(10)]
    threads += [threading.Thread(target=trickle, args=(port, tokens[2], trickled))
                for _ in range(20)]
    for t in threads:
        t.start()

    # Stalled handshakes: a request line, then nothing: 408 at the handshake timeout.
    stall_socks = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        stall_socks.append(s)
    # Bad tokens: 401.
    bad_tok = [wsraw.http_status(port, wsraw.request(extra=[("Authorization", "Bearer x.y.z")]))
               .status for _ in range(50)]

    # Orders: good ones close nothing (a group nobody is in) but must be acknowledged by
    # both workers; bad ones must be refused without stopping the good ones.
    r = fl.redis.client()
    good_ids = []
    pipe = r.pipeline(transaction=False)
    for i in range(ORDERS):
        if i % 2 == 0:
            oid = "soak-%d" % i
            good_ids.append(oid)
            pipe.publish("wsgate:orders", json.dumps({"id": oid, "group": "nobody-%d" % i,
                                                      "code": 4000, "reply_to": ACKS}))
        else:
            pipe.publish("wsgate:orders", BAD_ORDERS[i % len(BAD_ORDERS)])
        if i % 500 == 499:
            pipe.execute()
    pipe.execute()

    for t in threads:
        t.join(200)
    for s in stall_socks:
        r408 = wsraw.read_head(s, timeout=10)
        stalled.append(r408.status)
        s.close()
    harness.wait_for(lambda: _acked(fl, good_ids), 60, "acks of every good order")

    assert not errors, "%d cycles failed, e.g. %s" % (len(errors), errors[:3])
    assert len(slow) == 10 and set(slow) <= {1013, "paused", "reset"}, slow
    assert trickled == ["ok"] * 20, trickled
    assert stalled == [408] * 20, stalled
    assert bad_tok == [401] * 50, bad_tok
    for c in live:
        c.echo(wsraw.OP_TEXT, b"alive")
        c.close()

    fams = lb.metrics(gw.admin_port)
    assert value(fams, "wsgate_auth_refused_total", reason="malformed") >= 50
    # every cycle, live client, slow reader and trickler was a verified handshake
    assert value(fams, "wsgate_auth_accepted_total") >= 200 + CYCLES + 20 + 10 + 20
    assert value(fams, "wsgate_handshakes_total", result="ok") >= 200 + CYCLES + 50
    refused = sum(v for (name, labels), v in _samples(fams, "wsgate_orders_refused_total"))
    assert refused == 2 * (ORDERS // 2), refused  # each bad order, by each of 2 workers
    assert value(fams, "wsgate_orders_applied_total") == 2 * (ORDERS // 2)
    # Everything closed: files and memory come back.
    harness.wait_for(lambda: value(lb.metrics(gw.admin_port), "wsgate_connections_open") == 0,
                     30, "every connection gone")
    fds1, rss1 = harness.wait_for(lambda: _settled(gw, fds0), 15, "open files back")
    assert fds1 <= fds0 + 4, (fds0, fds1)
    margin = (48 if asan else 24) * 1024 * 1024
    assert rss1 <= rss0 + margin, "RSS %d -> %d" % (rss0, rss1)


def _samples(fams, name):
    return [((name, labels), v) for labels, v in fams[name]["samples"].items()]


def _acked(fl, ids):
    acks = {}
    for ch, d, _ in fl.listener.msgs:
        if ch == ACKS and isinstance(d, dict) and "error" not in d and d.get("id"):
            acks[d["id"]] = acks.get(d["id"], 0) + 1
    missing = [i for i in ids if acks.get(i, 0) < 2]
    return not missing


def _settled(gw, fds0):
    fds, rss = worker_fds_rss(gw)
    return (fds, rss) if fds <= fds0 + 4 else None
