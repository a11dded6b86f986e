"""Real clients: Python `websockets` (Debian 10.4) and Node `ws` against wsgate --echo."""

import asyncio
import json
import os
import shutil
import signal
import subprocess

import harness

HERE = os.path.dirname(os.path.abspath(__file__))


def url(gw, path="/"):
    return "ws://127.0.0.1:%d%s" % (gw.port, path)


def run(coro, timeout=15):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ---- Python websockets -----------------------------------------------------------------------

def test_python_websockets_echo_text_and_binary():
    import websockets
    gw = harness.start_gateway()

    async def go():
        async with websockets.connect(url(gw), max_size=2 ** 21) as ws:
            assert ws.response_headers.get("X-Wsgate-Conn", "").startswith("test1-")
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            await ws.send(b"\x00\x01\xff")
            assert await ws.recv() == b"\x00\x01\xff"
            big = os.urandom(512 * 1024)
            await ws.send(big)
            assert await ws.recv() == big
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, 5)
        assert ws.close_code == 1000, ws.close_code
    run(go())


def test_python_websockets_fragmented_async_iterator():
    import websockets
    gw = harness.start_gateway()

    async def fragments(parts):
        for p in parts:
            yield p

    async def go():
        async with websockets.connect(url(gw)) as ws:
            parts = ["frag", "men", "ted ", "κόσμε"]
            await ws.send(fragments(parts))
            assert await ws.recv() == "".join(parts)
            bparts = [b"\x01" * 10, b"", b"\x02" * 70000]
            await ws.send(fragments(bparts))
            assert await ws.recv() == b"".join(bparts)
    run(go())


def test_python_websockets_close_code_echoed():
    import websockets
    gw = harness.start_gateway()

    async def go():
        ws = await websockets.connect(url(gw))
        await ws.close(code=4321, reason="custom")
        assert ws.close_code == 4321, ws.close_code
    run(go())


def test_python_websockets_sees_1001_on_sigterm():
    import websockets
    gw = harness.start_gateway()

    async def go():
        async with websockets.connect(url(gw)) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            gw.signal(signal.SIGTERM)
            try:
                await ws.recv()
                raise AssertionError("message after SIGTERM")
            except websockets.ConnectionClosed as e:
                assert e.rcvd is not None and e.rcvd.code == 1001, e
    run(go())
    assert gw.wait_exit(10) == 0


def test_python_websockets_message_too_big_1009():
    import websockets
    gw = harness.start_gateway(flags={"--max-message": "64k"})

    async def go():
        async with websockets.connect(url(gw)) as ws:
            await ws.send(b"y" * 65536)
            assert len(await ws.recv()) == 65536
            await ws.send(b"y" * 65537)
            try:
                await ws.recv()
                raise AssertionError("echo of an oversized message")
            except websockets.ConnectionClosed as e:
                assert e.rcvd is not None and e.rcvd.code == 1009, e
    run(go())


# ---- Node ws ---------------------------------------------------------------------------------

def node_client(gw, mode):
    node = shutil.which("node") or shutil.which("nodejs")
    assert node, "node is not installed"
    assert os.path.isdir(os.path.join(HERE, "node_modules", "ws")), \
        "tests/integration/node_modules/ws missing (make deps-test runs npm install)"
    return subprocess.Popen([node, os.path.join(HERE, "ws_client.js"), url(gw), mode],
                            cwd=HERE, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def read_events(p, timeout=20):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError("node client timed out:\n%s\n%s" % (out, err))
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert p.returncode == 0, "node client exit %s: %r %s" % (p.returncode, events, err)
    return events


def test_node_ws_echo_and_client_close():
    gw = harness.start_gateway()
    events = read_events(node_client(gw, "echo"))
    kinds = [e["event"] for e in events]
    assert kinds == ["open", "echo", "echo", "echo", "close"], events
    assert events[0]["conn"] and events[0]["conn"].startswith("test1-"), events[0]
    assert [e["name"] for e in events[1:4]] == ["text", "binary", "big"]
    assert events[-1]["code"] == 4001, events[-1]


def test_node_ws_receives_1001_and_reason_on_sigterm():
    gw = harness.start_gateway()
    p = node_client(gw, "wait-close")
    lines = []
    while True:  # until the client says it is ready; the client has its own 15 s timeout
        line = p.stdout.readline()
        assert line, "node client ended early: %r %s" % (lines, p.stderr.read())
        ev = json.loads(line)
        lines.append(ev)
        assert ev["event"] != "error", ev
        if ev["event"] == "ready":
            break
    gw.signal(signal.SIGTERM)
    events = lines + read_events(p)
    close = events[-1]
    assert close["event"] == "close" and close["code"] == 1001, events
    assert close["reason"], "1001 without a reason: %r" % close
    assert gw.wait_exit(10) == 0
