"""The README's publish snippets, run exactly as written.

README.md has fenced blocks, each right after a marker line
`<!-- snippet: publish-redis-cli -->` (sh), `<!-- snippet: publish-python -->` (python) and
`<!-- snippet: publish-node -->` (js). Each reads the Redis address from WSGATE_REDIS and
publishes a close order for group room:1 with code 4001. A test per block runs it against
a fleet (gwA and gwB, 2 workers each) and checks that clients in room:1 on both gateways
get 4001 and the snippet's reason while clients in room:2 stay open.

The blocks `send-redis-cli`, `send-python` and `send-node` publish a send order with a
text for room:1 the same way: clients in room:1 on both gateways receive exactly that
text, once, and clients in room:2 nothing.
"""

import asyncio
import json
import os
import re
import subprocess
import time

import harness
import fleet as F
from fleet import Fleet, assert_closed_with, assert_open, open_clients, run, until

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(harness.REPO, "README.md")


def snippet(name, lang):
    """The code of the block after <!-- snippet: name -->, exactly as written."""
    try:
        with open(README, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise AssertionError("README.md cannot be read: %s" % e)
    m = re.search(r"^<!-- snippet: %s -->[ \t]*\n```%s[ \t]*\n(.*?)^```[ \t]*$"
                  % (re.escape(name), re.escape(lang)), text, re.M | re.S)
    assert m, "README.md has no ```%s block after the line '<!-- snippet: %s -->'" % (lang, name)
    return m.group(1)


def published(code_text):
    """(order id, reason) written in the snippet, for what the clients must see."""
    reason = re.search(r'"?reason"?\s*:\s*"((?:[^"\\]|\\.)*)"', code_text)
    oid = re.search(r'"?id"?\s*:\s*"((?:[^"\\]|\\.)*)"', code_text)
    assert reason, "no reason in the snippet:\n" + code_text
    assert re.search(r'"?group"?\s*:\s*"room:1"', code_text), "no group room:1:\n" + code_text
    assert re.search(r'"?code"?\s*:\s*4001\b', code_text), "no code 4001:\n" + code_text
    return (oid.group(1) if oid else None), reason.group(1)


def check_snippet(name, lang, argv_of):
    code_text = snippet(name, lang)
    oid, reason = published(code_text)
    fl = Fleet()
    env = dict(os.environ, WSGATE_REDIS=fl.redis.url,
               NODE_PATH=os.path.join(HERE, "node_modules"))

    async def main():
        room1 = await open_clients(fl, [(g, ["room:1"], None) for g in ("gwA", "gwB")] * 2)
        room2 = await open_clients(fl, [(g, ["room:2"], None) for g in ("gwA", "gwB")] * 2)
        argv = argv_of(code_text)

        def call():
            return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, env=env, cwd=HERE, timeout=30)
        p = await asyncio.get_running_loop().run_in_executor(None, call)
        assert p.returncode == 0, "%s exited %d\nstdout: %s\nstderr: %s" % (
            name, p.returncode, p.stdout, p.stderr)
        assert re.search(r"\b4\b", p.stdout), \
            "%s did not report 4 receivers: %r" % (name, p.stdout)
        await assert_closed_with(room1, 4001, F.cut_reason(reason))
        await assert_open(room2, name)
        await until(lambda: all(fl.listener.events("close", c.conn) for c in room1), 5,
                    "close events of room:1")
        for c in room1:
            e = fl.listener.events("close", c.conn)[0]
            assert e["code"] == 4001 and e["reason"] == F.cut_reason(reason), e
            if oid is not None:
                assert e["by"] == "order:" + oid, e
    run(main())


@harness.timeout(60)
def test_readme_snippet_redis_cli():
    check_snippet("publish-redis-cli", "sh", lambda code: ["bash", "-c", code])


@harness.timeout(60)
def test_readme_snippet_python():
    check_snippet("publish-python", "python", lambda code: ["/usr/bin/python3", "-c", code])


@harness.timeout(60)
def test_readme_snippet_node():
    assert os.path.isdir(os.path.join(HERE, "node_modules", "ioredis")), \
        "ioredis is not installed: cd tests/integration && npm install"
    check_snippet("publish-node", "js", lambda code: ["node", "-e", code])


def check_send_snippet(name, lang, argv_of):
    code_text = snippet(name, lang)
    m = re.search(r'"?text"?\s*:\s*("(?:[^"\\]|\\.)*")', code_text)
    assert m, "no text in the snippet:\n" + code_text
    assert re.search(r'"?op"?\s*:\s*"send"', code_text), "no op send:\n" + code_text
    assert re.search(r'"?group"?\s*:\s*"room:1"', code_text), "no group room:1:\n" + code_text
    text = json.loads(m.group(1))
    fl = Fleet()
    env = dict(os.environ, WSGATE_REDIS=fl.redis.url,
               NODE_PATH=os.path.join(HERE, "node_modules"))

    async def main():
        room1 = await open_clients(fl, [(g, ["room:1"], None) for g in ("gwA", "gwB")] * 2)
        room2 = await open_clients(fl, [(g, ["room:2"], None) for g in ("gwA", "gwB")] * 2)

        def call():
            return subprocess.run(argv_of(code_text), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, env=env, cwd=HERE, timeout=30)
        p = await asyncio.get_running_loop().run_in_executor(None, call)
        assert p.returncode == 0, "%s exited %d\nstdout: %s\nstderr: %s" % (
            name, p.returncode, p.stdout, p.stderr)
        assert re.search(r"\b4\b", p.stdout), \
            "%s did not report 4 receivers: %r" % (name, p.stdout)
        for c in room1:
            got = await asyncio.wait_for(c.messages.get(), 5)
            assert got == text, "%r got %r, expected %r" % (c, got, text)
        await assert_open(room1 + room2, name)  # nothing else came before the echo
    run(main())


@harness.timeout(60)
def test_readme_send_snippet_redis_cli():
    check_send_snippet("send-redis-cli", "sh", lambda code: ["bash", "-c", code])


@harness.timeout(60)
def test_readme_send_snippet_python():
    check_send_snippet("send-python", "python", lambda code: ["/usr/bin/python3", "-c", code])


@harness.timeout(60)
def test_readme_send_snippet_node():
    assert os.path.isdir(os.path.join(HERE, "node_modules", "ioredis")), \
        "ioredis is not installed: cd tests/integration && npm install"
    check_send_snippet("send-node", "js", lambda code: ["node", "-e", code])


def check_stream_snippet(name, lang, argv_of):
    """A durable order: the snippet XADDs a close order for room:1 (code 4001, an id) to
    wsgate:orders:log, which the fleet reads with --orders-stream, and PUBLISHes it too.
    room:1 is closed once (one ack per worker at most, each id applied once), room:2
    stays open, and every worker read the entry."""
    code_text = snippet(name, lang)
    oid, reason = published(code_text)
    assert oid, "a stream order needs an id:\n" + code_text
    assert "wsgate:orders:log" in code_text, "no XADD to wsgate:orders:log:\n" + code_text
    fl = Fleet(flags={"--orders-stream": "wsgate:orders:log"})
    env = dict(os.environ, WSGATE_REDIS=fl.redis.url,
               NODE_PATH=os.path.join(HERE, "node_modules"))

    async def main():
        room1 = await open_clients(fl, [(g, ["room:1"], None) for g in ("gwA", "gwB")] * 2)
        room2 = await open_clients(fl, [(g, ["room:2"], None) for g in ("gwA", "gwB")] * 2)

        def call():
            return subprocess.run(argv_of(code_text), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, env=env, cwd=HERE, timeout=30)
        p = await asyncio.get_running_loop().run_in_executor(None, call)
        assert p.returncode == 0, "%s exited %d\nstdout: %s\nstderr: %s" % (
            name, p.returncode, p.stdout, p.stderr)
        assert re.search(r"\b\d{13}-\d+\b", p.stdout), \
            "%s did not print the stream entry id: %r" % (name, p.stdout)
        await assert_closed_with(room1, 4001, F.cut_reason(reason))
        await assert_open(room2, name)
        import lb
        await until(lambda: sum(lb.value(lb.metrics(gw.admin_port), "wsgate_stream_orders_total")
                                for gw in fl.gateways.values()) == fl.workers, 5,
                    "the entry read by every worker")
        for c in room1:
            await until(lambda: fl.listener.events("close", c.conn), 5, "close event")
            e = fl.listener.events("close", c.conn)
            assert len(e) == 1 and e[0]["by"] == "order:" + oid, e
    run(main())


@harness.timeout(60)
def test_readme_stream_snippet_redis_cli():
    check_stream_snippet("stream-redis-cli", "sh", lambda code: ["bash", "-c", code])


@harness.timeout(60)
def test_readme_stream_snippet_python():
    check_stream_snippet("stream-python", "python", lambda code: ["/usr/bin/python3", "-c", code])


@harness.timeout(60)
def test_readme_stream_snippet_node():
    assert os.path.isdir(os.path.join(HERE, "node_modules", "ioredis")), \
        "ioredis is not installed: cd tests/integration && npm install"
    check_stream_snippet("stream-node", "js", lambda code: ["node", "-e", code])


@harness.timeout(60)
def test_readme_inbound_consumer_snippet():
    """The README's xreadgroup loop (`inbound-python`), as written, against a gateway in
    --inbound stream mode (stream wsgate:in, the default): 3 clients (Python websockets,
    two with a user) send 5 messages each; the loop prints `<conn> <user> <text>` once per
    message and acknowledges every entry. It blocks forever: stopped once all lines came."""
    import queue
    import signal
    import threading

    code_text = snippet("inbound-python", "python")
    assert "xreadgroup" in code_text and '"wsgate:in"' in code_text, code_text
    redis = harness.start_redis()
    r = redis.client()
    gw = harness.Gateway(flags={"--redis": redis.url, "--id": "gwS"}, workers=2, echo=False,
                         extra=["--inbound", "stream"]).start()
    harness.wait_for(lambda: gw.log().count("redis publisher up") >= gw.workers, 10,
                     "every worker's publisher up")
    r.xgroup_create("wsgate:in", "backend", id="0", mkstream=True)  # the README's XGROUP CREATE
    env = dict(os.environ, WSGATE_REDIS=redis.url, PYTHONUNBUFFERED="1")
    p = subprocess.Popen(["/usr/bin/python3", "-c", code_text], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         start_new_session=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln.rstrip("\n")) for ln in p.stdout],
                     daemon=True).start()
    try:
        async def main():
            import websockets
            users = ["alice", "bob", None]
            clients, want = [], []
            for u in users:
                url = "ws://127.0.0.1:%d/%s" % (gw.port, "?user=%s" % u if u else "")
                ws = await websockets.connect(url, open_timeout=5, close_timeout=2,
                                              ping_interval=None)
                conn = ws.response_headers.get("X-Wsgate-Conn")
                assert conn, "101 without X-Wsgate-Conn"
                clients.append(ws)
                for j in range(5):
                    text = "hello %d from %s ✓" % (j, u or "nobody")
                    await ws.send(text)
                    want.append("%s %s %s" % (conn, u, text))
            return clients, want

        loop = asyncio.new_event_loop()
        clients, want = loop.run_until_complete(main())
        got = []
        deadline = time.monotonic() + 20
        while len(got) < len(want) and time.monotonic() < deadline:
            try:
                got.append(lines.get(timeout=0.2))
            except queue.Empty:
                assert p.poll() is None, "the snippet exited %s: %s" % (p.returncode,
                                                                       p.stderr.read())
        assert sorted(got) == sorted(want), "printed:\n%s\nexpected:\n%s" % (
            "\n".join(got), "\n".join(want))
        harness.wait_for(lambda: r.xpending("wsgate:in", "backend")["pending"] == 0, 10,
                         "every entry acknowledged")
        time.sleep(0.3)  # nothing printed twice
        assert lines.empty(), "extra line: %r" % lines.get()
        assert p.poll() is None, "the loop should still be waiting for entries"
        async def close_all():
            await asyncio.gather(*[ws.close() for ws in clients])
        loop.run_until_complete(close_all())
        loop.close()
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=10)
