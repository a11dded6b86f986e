"""permessage-deflate, RFC 7692 (--deflate): negotiation, compressed frames both ways,
the ground of Autobahn|Testsuite cases 12.* and 13.* (compressed messages of many sizes,
fragmented, with the window sizes and context takeover parameters) and the failure
cases (bad RSV1 use 1002, bad deflate data 1007, a bomb 1009 at --max-message).

Raw sockets say exactly which bytes go on the wire (tests/lib/wsraw.py); Python's zlib
is the client's compressor and checks what the server sends. Real clients (Python
websockets, Node ws, Chromium) round-trip messages with compression on, and a send
order to a group where some members negotiated deflate and others did not reaches
every member with the right payload."""

import asyncio
import json
import os
import random
import subprocess
import threading
import time
import zlib

import harness
import fleet as F
import lb
from fleet import Fleet, until
from lb import value
from wsraw import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, Client, frame

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_ENV = dict(os.environ, NODE_PATH=os.path.join(HERE, "node_modules"))
TAIL = b"\x00\x00\xff\xff"
OFFER = "permessage-deflate; client_max_window_bits"
ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
MIB = 1024 * 1024


def gateway(flags=None, workers=1, deflate=True, **kw):
    return harness.start_gateway(flags=flags, workers=workers,
                                 extra=["--deflate"] if deflate else [], **kw)


def zopen(gw, offer=OFFER):
    """A raw client that offered offer (None: nothing)."""
    return Client.open(gw.port, extra=[("Sec-WebSocket-Extensions", offer)] if offer else [])


def deflate(data, wbits=15, level=6, co=None):
    """One message as a client compresses it: raw deflate, sync flush, tail cut (§7.2.1).
    co: a compressor kept across messages (context takeover)."""
    if isinstance(data, str):
        data = data.encode()
    co = co or zlib.compressobj(level, zlib.DEFLATED, -wbits)
    out = co.compress(data) + co.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


def inflate(payload, wbits=15):
    """What a client with window wbits makes of a compressed message (§7.2.2); zlib fails
    on a distance past its window, so this also checks server_max_window_bits."""
    d = zlib.decompressobj(-wbits)
    out = d.decompress(payload + TAIL)
    assert not d.unconsumed_tail, "deflate data left over"
    return out


def recv_data(c, timeout=5.0):
    """The next data frame (pongs skipped): (opcode, rsv, payload as sent)."""
    while True:
        f = c.recv_frame(timeout)
        assert not f.masked, f
        if f.opcode == OP_PONG:
            continue
        assert f.opcode in (OP_TEXT, OP_BINARY) and f.fin, "unexpected frame %r" % f
        return f.opcode, f.rsv, f.payload


def echo_back(c, opcode, payload, wbits=15):
    """The echo of a message, inflated when it came compressed: (payload, compressed)."""
    op, rsv, data = recv_data(c)
    assert op == opcode, (op, opcode)
    assert rsv in (0, 4), "RSV bits %d" % rsv
    return (inflate(data, wbits) if rsv == 4 else data), rsv == 4


def json_text(n):
    """n bytes (ASCII) of JSON-like text that compresses like real pushed messages."""
    items, size, i = [], 2, 0
    while size < n:
        item = json.dumps({"id": i, "user": "user%d" % (i % 37), "event": "price.update",
                           "price": round(100 + i * 0.37, 2), "tags": ["a", "b", "\u00fc"]})
        items.append(item)
        size += len(item) + 1
        i += 1
    return ("[" + ",".join(items) + "]")[:n]


def metric(gw, name, **labels):
    return value(lb.metrics(gw.admin_port), name, **labels)


# ---- negotiation ---------------------------------------------------------------------------

def test_negotiation_answers():
    gw = gateway()
    cases = [
        (OFFER, ANSWER),
        ("permessage-deflate", ANSWER),
        ("permessage-deflate; client_no_context_takeover; server_no_context_takeover", ANSWER),
        ("permessage-deflate; server_max_window_bits=10", ANSWER + "; server_max_window_bits=10"),
        ('permessage-deflate; client_max_window_bits="9"', ANSWER + "; client_max_window_bits=9"),
        ("x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=8, "
         "permessage-deflate; server_max_window_bits=12", ANSWER + "; server_max_window_bits=12"),
        # offers that cannot be honoured: answered without the extension
        ("permessage-deflate; server_max_window_bits=8", None),
        ("permessage-deflate; server_max_window_bits=16", None),
        ("permessage-deflate; client_max_window_bits=07", None),
        ("permessage-deflate; unknown_param", None),
        ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
        ("permessage-deflate; server_max_window_bits", None),
        ("permessage-deflate; client_max_window_bits=\"10", None),  # out of grammar
        ("x-webkit-deflate-frame", None),
        (None, None),
    ]
    for offer, want in cases:
        c = zopen(gw, offer)
        got = c.response.headers.get("sec-websocket-extensions")
        assert got == ([want] if want else None), "offer %r answered %r" % (offer, got)
        c.echo(OP_TEXT, "still a websocket")  # short: uncompressed either way
        c.close()
    # two Sec-WebSocket-Extensions lines are one list (RFC 7230 §3.2.2)
    c = Client.open(gw.port, extra=[("Sec-WebSocket-Extensions", "foo"),
                                    ("Sec-WebSocket-Extensions", "permessage-deflate")])
    assert c.response.header("sec-websocket-extensions") == ANSWER
    fams = lb.metrics(gw.admin_port)
    assert value(fams, "wsgate_deflate_negotiated_total") == 7
    assert value(fams, "wsgate_deflate_declined_total") == 7  # the malformed one too
    assert value(fams, "wsgate_deflate_malformed_total") == 1


def test_without_the_flag_nothing_is_negotiated_and_rsv1_is_1002():
    gw = gateway(deflate=False)
    c = zopen(gw)
    assert c.response.header("sec-websocket-extensions") is None
    c.send_frame(OP_TEXT, deflate("x" * 300), rsv=4)
    c.expect_close(1002)


def test_declined_offer_means_rsv1_is_1002():
    gw = gateway()
    c = zopen(gw, "permessage-deflate; server_max_window_bits=8")
    assert c.response.header("sec-websocket-extensions") is None
    big = json_text(2000)
    c.echo(OP_TEXT, big)  # and the server sends it plain
    c.send_frame(OP_TEXT, deflate(big), rsv=4)
    c.expect_close(1002)


# ---- compressed messages both ways (Autobahn 12.* / 13.* ground) ----------------------------

def test_compressed_echo_of_many_sizes_text_and_binary():
    """Autobahn 12.1-12.5 send messages of 16 B to 128 KiB, text and binary, compressible
    or not; each comes back as sent. The server compresses what is worth it (RSV1)."""
    gw = gateway(flags={"--max-message": "4m"})
    c = zopen(gw)
    rnd = random.Random(7)
    compressed_echoes = 0
    for size in (16, 64, 255, 256, 1000, 4096, 65535, 65536, 131072, 1000000):
        for op in (OP_TEXT, OP_BINARY):
            msg = json_text(size).encode() if op == OP_TEXT else \
                bytes(rnd.getrandbits(8) for _ in range(min(size, 70000)))
            c.send_frame(op, deflate(msg), rsv=4)
            got, was_compressed = echo_back(c, op, msg)
            assert got == msg, "size %d op %d differs" % (size, op)
            if op == OP_TEXT:
                assert was_compressed == (size >= 256), (size, was_compressed)
            else:
                assert not was_compressed, "random bytes do not shrink: sent plain"
            compressed_echoes += was_compressed
    # and uncompressed messages are fine on a deflate connection (RSV1 clear, §6)
    msg = json_text(3000).encode()
    c.send_frame(OP_TEXT, msg)
    got, was_compressed = echo_back(c, OP_TEXT, msg)
    assert got == msg and was_compressed
    fams = lb.metrics(gw.admin_port)
    assert value(fams, "wsgate_deflate_inflated_messages_total") == 20
    assert value(fams, "wsgate_deflate_sent_total") == compressed_echoes + 1
    assert value(fams, "wsgate_deflate_uncompressed_total", reason="small") == 6
    assert value(fams, "wsgate_deflate_uncompressed_total", reason="incompressible") >= 7
    before = value(fams, "wsgate_deflate_compressed_bytes_in_total")
    after = value(fams, "wsgate_deflate_compressed_bytes_out_total")
    assert after * 3 < before, "JSON should compress at least 3x: %d -> %d" % (before, after)


def test_min_size_flag():
    gw = gateway(flags={"--deflate-min-size": "0"})
    c = zopen(gw)
    c.send_frame(OP_TEXT, b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
    got, was_compressed = echo_back(c, OP_TEXT, b"a" * 42)
    assert got == b"a" * 42 and was_compressed
    gw = gateway(flags={"--deflate-min-size": "4k"})
    c = zopen(gw)
    for n, want in ((4095, False), (4096, True)):
        msg = json_text(n).encode()
        c.send_frame(OP_TEXT, msg)
        got, was_compressed = echo_back(c, OP_TEXT, msg)
        assert got == msg and was_compressed == want, (n, was_compressed)


def test_compressed_fragments_and_pings_between():
    """Autobahn 12.x/13.x fragmented variants: RSV1 only on the first frame, continuation
    frames of every size down to 1 byte, empty ones, pings between them."""
    gw = gateway()
    c = zopen(gw)
    msg = json_text(20000).encode()
    z = deflate(msg)
    for step in (1, 7, 1000, len(z) // 2):
        parts = [z[i:i + step] for i in range(0, len(z), step)]
        if step == 1:
            parts = parts[:200] + [b"".join(parts[200:])]  # 1-byte frames, then the rest
        wire = b""
        for i, p in enumerate(parts):
            wire += frame(OP_TEXT if i == 0 else OP_CONT, p, fin=i == len(parts) - 1,
                          rsv=4 if i == 0 else 0)
            if i == 0:
                wire += frame(OP_CONT, b"", fin=False) + frame(OP_PING, b"mid")
        c.send(wire)
        f = c.recv_frame()
        assert (f.opcode, f.payload) == (OP_PONG, b"mid"), f
        got, was_compressed = echo_back(c, OP_TEXT, msg)
        assert got == msg and was_compressed, step
    # an empty compressed message (a single 0x00 block, §7.2.3.6) and an empty frame
    c.send_frame(OP_BINARY, b"\x00", rsv=4)
    assert recv_data(c) == (OP_BINARY, 0, b"")
    c.send_frame(OP_TEXT, b"", rsv=4)
    assert recv_data(c) == (OP_TEXT, 0, b"")
    # a compressed message sent one byte per write
    c.send_bytewise(frame(OP_TEXT, deflate("bytewise " * 40), rsv=4))
    got, _ = echo_back(c, OP_TEXT, b"")
    assert got == b"bytewise " * 40


def test_a_final_block_ends_a_message_too():
    gw = gateway()
    c = zopen(gw)
    co = zlib.compressobj(6, zlib.DEFLATED, -15)
    z = co.compress(b"final block " * 50) + co.flush(zlib.Z_FINISH)  # BFINAL set, no tail
    c.send_frame(OP_TEXT, z, rsv=4)
    got, _ = echo_back(c, OP_TEXT, b"")
    assert got == b"final block " * 50
    c.send_frame(OP_TEXT, z + b"\x00", rsv=4)  # bytes after the final block
    c.expect_close(1007)


def test_context_takeover_off_many_messages_and_on_refused():
    """The answer always says client_no_context_takeover: a client that resets its
    compressor per message is fine however many messages it sends; one that keeps its
    window (a back reference into the previous message) breaks the contract: 1007."""
    gw = gateway()
    c = zopen(gw, "permessage-deflate")
    assert "client_no_context_takeover" in c.response.header("sec-websocket-extensions")
    msg = json_text(600).encode()
    for _ in range(50):
        c.send_frame(OP_TEXT, deflate(msg), rsv=4)
        got, _ = echo_back(c, OP_TEXT, msg)
        assert got == msg
    # the server does no context takeover either: every echo inflates on its own
    co = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = deflate(msg, co=co)
    c.send_frame(OP_TEXT, first, rsv=4)
    assert echo_back(c, OP_TEXT, msg)[0] == msg
    second = deflate(msg, co=co)
    assert len(second) < len(first) // 4, "the second message refers back to the first"
    c.send_frame(OP_TEXT, second, rsv=4)
    f = c.expect_close(1007)
    assert f.close_reason == b"invalid deflate data", f
    assert metric(gw, "wsgate_deflate_inflate_errors_total") == 1


def test_window_bits_both_ways():
    """server_max_window_bits=N: what the server sends inflates with a window of 2^N
    (zlib refuses a distance past it); client_max_window_bits=N: the client may
    compress with that window. Autobahn 13.3-13.6 ground."""
    gw = gateway(flags={"--max-message": "4m"})
    rnd = random.Random(3)
    block = bytes(rnd.getrandbits(8) for _ in range(3000))
    msg = block * 8  # repeats 3000 bytes apart: only a window over 3000 bytes finds them
    for n in range(9, 16):
        c = zopen(gw, "permessage-deflate; server_max_window_bits=%d; "
                      "client_max_window_bits=%d" % (n, n))
        assert c.response.header("sec-websocket-extensions") == \
            ANSWER + "; server_max_window_bits=%d; client_max_window_bits=%d" % (n, n)
        c.send_frame(OP_BINARY, deflate(msg, wbits=n), rsv=4)
        op, rsv, data = recv_data(c)
        if n >= 12:
            assert rsv == 4 and inflate(data, wbits=n) == msg
            assert len(data) < len(msg) // 4, (n, len(data))
        else:
            assert rsv == 0 and data == msg, "a small window cannot shrink it: plain"
        c.send_frame(OP_TEXT, deflate(json_text(5000), wbits=n), rsv=4)
        op, rsv, data = recv_data(c)
        assert rsv == 4 and inflate(data, wbits=n) == json_text(5000).encode(), n
        c.close()
    # client_max_window_bits=8: a client window of 256 bytes inflates fine
    c = zopen(gw, "permessage-deflate; client_max_window_bits=8")
    assert c.response.header("sec-websocket-extensions") == ANSWER + "; client_max_window_bits=8"
    c.send_frame(OP_TEXT, deflate("w8 " * 500, wbits=9), rsv=4)
    assert echo_back(c, OP_TEXT, b"")[0] == b"w8 " * 500
    assert metric(gw, "wsgate_deflate_compressor_bytes") > 0


# ---- failures ---------------------------------------------------------------------------------

def test_bad_rsv1_use_is_1002():
    gw = gateway()
    z = deflate("x" * 300)
    cases = [
        ("RSV1 on a continuation", frame(OP_TEXT, z[:5], fin=False, rsv=4)
         + frame(OP_CONT, z[5:], rsv=4)),
        ("RSV1 on a continuation of a plain message", frame(OP_TEXT, b"ab", fin=False)
         + frame(OP_CONT, b"cd", rsv=4)),
        ("RSV1 on a ping", frame(OP_PING, b"p", rsv=4)),
        ("RSV1 on a close", frame(OP_CLOSE, b"\x03\xe8", rsv=4)),
        ("RSV2", frame(OP_TEXT, b"x", rsv=2)),
        ("RSV3 with RSV1", frame(OP_TEXT, z, rsv=5)),
    ]
    for why, wire in cases:
        c = zopen(gw)
        c.send(wire)
        f = c.expect_close(1002)
        assert f.close_reason.startswith(b"RSV"), (why, f)


def test_decompression_errors_are_1007():
    gw = gateway()
    cases = [
        ("a reserved block type", b"\x07\x00"),
        ("a stored block whose length check fails", b"\x00\x05\x00\x00\x00hello"),
        ("not UTF-8 once inflated", deflate(b"ok \xc0\xaf then more text")),
        ("a code point cut at the end", deflate("caf\u00e9".encode()[:-1])),
    ]
    for why, payload in cases:
        c = zopen(gw)
        c.send_frame(OP_TEXT, payload, rsv=4)
        f = c.expect_close(1007)
        assert f.close_reason, why
    assert metric(gw, "wsgate_deflate_inflate_errors_total") == len(cases)
    # binary is not UTF-8 checked, even once inflated
    c = zopen(gw)
    c.send_frame(OP_BINARY, deflate(b"ok \xc0\xaf then more text"), rsv=4)
    assert echo_back(c, OP_BINARY, b"")[0] == b"ok \xc0\xaf then more text"


def bomb(size_out=1024 * MIB):
    """About 1 MB of deflate data that inflates to size_out zero bytes."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    zeros = bytes(MIB)
    out = [co.compress(zeros) for _ in range(size_out // MIB)]
    return b"".join(out) + co.flush(zlib.Z_SYNC_FLUSH)[:-4]


def worker_hwm(gw):
    """Peak RSS (VmHWM) of the only worker, in bytes."""
    pid = list(gw.worker_pids().values())[0]
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def sanitized():
    with open(harness.WSGATE, "rb") as f:
        return b"__asan_init" in f.read()


@harness.timeout(60)
def test_bomb_costs_at_most_max_message_and_closes_1009():
    """1 MB that inflates to 1 GB, whole and in fragments, against the default
    --max-message (1 MiB) in echo mode (the message is kept: the worst case): closed
    with 1009 once 1 MiB is inflated; the worker's peak RSS grows by about that."""
    z = bomb()
    assert 900 * 1024 < len(z) < 1100 * 1024, len(z)
    gw = gateway(flags={"--max-message": "1m"})
    c = zopen(gw)
    c.echo(OP_TEXT, "warm")
    base = worker_hwm(gw)
    t0 = time.monotonic()
    for wire in (frame(OP_BINARY, z, rsv=4),
                 b"".join(frame(OP_BINARY if i == 0 else OP_CONT, z[i:i + 65536],
                                fin=i + 65536 >= len(z), rsv=4 if i == 0 else 0)
                          for i in range(0, len(z), 65536))):
        c = zopen(gw)
        sender = threading.Thread(target=lambda: _send_quietly(c, wire))
        sender.start()
        f = c.expect_close(1009, timeout=20)
        assert f.close_reason == b"message too big once inflated", f
        sender.join(20)
    took = time.monotonic() - t0
    grown = worker_hwm(gw) - base
    fams = lb.metrics(gw.admin_port)
    assert value(fams, "wsgate_deflate_bombs_refused_total") == 2
    assert value(fams, "wsgate_deflate_inflated_bytes_out_total") == 0  # none inflated whole
    print("two 1 GB bombs refused in %.2f s; worker peak RSS grew by %d KiB" % (took,
                                                                              grown // 1024))
    if not sanitized():
        assert grown < 3 * MIB, "peak RSS grew by %d bytes for --max-message 1m" % grown
    # the worker is fine
    c = zopen(gw)
    c.echo(OP_TEXT, "after the bombs")


def _send_quietly(c, data):
    try:
        c.sock.sendall(data)
    except OSError:
        pass  # the server may close once it has read what it needs


def test_max_message_counts_inflated_bytes():
    gw = gateway(flags={"--max-message": "10k"})
    c = zopen(gw)
    msg = json_text(10 * 1024).encode()
    c.send_frame(OP_TEXT, deflate(msg), rsv=4)
    assert echo_back(c, OP_TEXT, msg)[0] == msg  # exactly --max-message: fine
    c.send_frame(OP_TEXT, deflate(msg + b" "), rsv=4)  # a few hundred bytes on the wire
    c.expect_close(1009)


# ---- inbound publish with compressed messages --------------------------------------------------

@harness.timeout(45)
def test_inbound_publish_carries_the_inflated_message():
    redis = harness.start_redis()
    gw = harness.Gateway(flags={"--redis": redis.url, "--inbound-channel": "t:zin",
                                "--id": "gwZ"}, workers=1, echo=False,
                         extra=["--inbound", "publish", "--deflate"]).start()
    harness.wait_for(lambda: "redis publisher up" in gw.log(), 10, "publisher up")
    r = redis.client()
    sub = r.pubsub()
    sub.subscribe("t:zin")
    harness.wait_for(lambda: sub.get_message(timeout=0.1) is not None, 5, "subscribed")
    c = zopen(gw)
    text = json_text(5000)
    c.send_frame(OP_TEXT, deflate(text), rsv=4)
    blob = bytes(range(256)) * 40
    z = deflate(blob)
    c.send(frame(OP_BINARY, z[:10], fin=False, rsv=4) + frame(OP_CONT, z[10:]))
    envs = []

    def two():
        m = sub.get_message(timeout=0.2)
        if m and m["type"] == "message":
            envs.append(json.loads(m["data"]))
        return len(envs) >= 2
    harness.wait_for(two, 10, "two envelopes on t:zin")
    assert envs[0]["text"] == text and envs[0]["conn"] == c.conn_id
    import base64
    assert base64.b64decode(envs[1]["binary"]) == blob
    sub.close()


# ---- real clients -------------------------------------------------------------------------------

def test_python_websockets_with_compression():
    import websockets
    gw = gateway(flags={"--max-message": "4m"})

    async def go():
        async with websockets.connect("ws://127.0.0.1:%d/" % gw.port, compression="deflate",
                                      max_size=2 ** 22) as ws:
            ext = ws.response_headers.get("Sec-WebSocket-Extensions")
            assert ext == ANSWER, ext
            for m in ("short", json_text(3000), json_text(2 * MIB), b"\x00" * 100000,
                      os.urandom(50000), "κόσμε " * 1000):
                await ws.send(m)
                assert await ws.recv() == m
    asyncio.run(asyncio.wait_for(go(), 20))
    fams = lb.metrics(gw.admin_port)
    assert value(fams, "wsgate_deflate_negotiated_total") == 1
    assert value(fams, "wsgate_deflate_inflated_messages_total") == 6
    assert value(fams, "wsgate_deflate_sent_total") == 4  # not "short", not random bytes


def test_node_ws_with_per_message_deflate():
    gw = gateway(flags={"--max-message": "4m"})
    p = subprocess.run(["node", os.path.join(HERE, "deflate_client.js"),
                        "ws://127.0.0.1:%d/" % gw.port], capture_output=True, text=True,
                       timeout=25, env=NODE_ENV)
    events = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert events[0]["event"] == "open" and events[0]["extensions"].startswith(
        "permessage-deflate"), events[0]
    echoes = [e for e in events if e["event"] == "echo"]
    assert [e["name"] for e in echoes] == ["small", "json", "big", "binary", "utf8"], echoes
    assert events[-1] == {"event": "close", "code": 4001, "reason": ""}, events[-1]
    fams = lb.metrics(gw.admin_port)
    assert value(fams, "wsgate_deflate_negotiated_total") == 1
    assert value(fams, "wsgate_deflate_inflated_messages_total") >= 3  # ws compresses >= 1 KiB
    assert value(fams, "wsgate_deflate_sent_total") >= 3


@harness.timeout(90)
def test_chromium_round_trips_compressed_messages():
    """The browser offers permessage-deflate; a page script opens a WebSocket, sees the
    extension in ws.extensions, and gets back compressed echoes of text it sends."""
    from test_browser import CDP, CHROMIUM, Chromium
    assert os.path.exists(CHROMIUM), "%s is missing (make deps-test)" % CHROMIUM
    gw = gateway(flags={"--max-message": "4m"})

    async def main():
        browser = Chromium()
        cdp = await CDP.connect(browser.devtools_url())
        target = (await cdp.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
        session = (await cdp.send("Target.attachToTarget",
                                  {"targetId": target, "flatten": True}))["sessionId"]
        await cdp.send("Page.navigate", {"url": "http://127.0.0.1:%d/" % gw.port}, session)
        script = """
        window.__z = {done: false, ok: 0, bad: [], ext: null};
        (function () {
          var msgs = ["short", JSON.stringify({big: "%s".repeat(4000), n: [1,2,3]}),
                      "κόσμε 😀 ".repeat(3000)];
          var i = 0;
          var ws = new WebSocket("ws://127.0.0.1:%d/");
          ws.onopen = function () { window.__z.ext = ws.extensions; ws.send(msgs[0]); };
          ws.onmessage = function (ev) {
            if (ev.data === msgs[i]) window.__z.ok++; else window.__z.bad.push(i);
            i++;
            if (i < msgs.length) ws.send(msgs[i]); else { window.__z.done = true; ws.close(); }
          };
          ws.onerror = function () { window.__z.bad.push("error"); window.__z.done = true; };
        })();
        true
        """ % ("x", gw.port)
        deadline = time.monotonic() + 20
        while True:  # the page may still be loading: retry until the script ran
            try:
                await cdp.evaluate(session, script)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        deadline = time.monotonic() + 20
        while True:
            z = await cdp.evaluate(session, "JSON.stringify(window.__z)")
            z = json.loads(z) if z else {}
            if z.get("done"):
                break
            assert time.monotonic() < deadline, "browser round trip not done: %r" % z
            await asyncio.sleep(0.05)
        assert z["bad"] == [] and z["ok"] == 3, z
        assert z["ext"].startswith("permessage-deflate"), z
        await cdp.close()
        browser.kill()
    F.run(main())
    fams = lb.metrics(gw.admin_port)
    assert value(fams, "wsgate_deflate_negotiated_total") >= 1
    assert value(fams, "wsgate_deflate_inflated_messages_total") >= 3
    assert value(fams, "wsgate_deflate_sent_total") >= 2


# ---- a send order to a mixed group ---------------------------------------------------------------

@harness.timeout(60)
def test_send_to_a_group_of_deflate_and_plain_members():
    """Members with and without deflate, and with two window sizes, on 2 gateways x 2
    workers: each receives the message as sent; each worker compresses it at most once
    per window, and every deflate member gets a compressed frame."""
    import websockets
    fl = Fleet(extra=["--deflate"], flags={"--max-message": "1m"})

    async def connect(gid, compression):
        ws = await websockets.connect(fl.url(gid, ["room:z"]), compression=compression,
                                      ping_interval=None, max_size=None)
        return F.Client(ws, gid, ["room:z"])
    text = json_text(2048)
    small = "tiny"

    async def main():
        plain = [await connect(g, None) for g in ("gwA", "gwB") * 4]
        zipped = [await connect(g, "deflate") for g in ("gwA", "gwB") * 4]
        for c in zipped:
            assert c.ws.response_headers["Sec-WebSocket-Extensions"] == ANSWER
        raws = [Client.open(fl.gateways[g].port, path="/?group=room:z", extra=[(
            "Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=10")])
            for g in ("gwA", "gwB", "gwA", "gwB")]
        for c in plain:  # these offered nothing: plain
            assert c.ws.response_headers.get("Sec-WebSocket-Extensions") is None
        want = {c.conn for c in plain + zipped} | {r.conn_id for r in raws}
        await until(lambda: want <= {e["conn"] for e in fl.listener.events("open")}, 10,
                    "open events")
        for payload in (text, small, text.encode()):
            key = "binary" if isinstance(payload, bytes) else "text"
            import base64
            body = base64.b64encode(payload).decode() if key == "binary" else payload
            oid, acks = await fl.order({"op": "send", "group": "room:z", key: body})
            assert sum(a["sent"] for a in acks) == len(want), acks
            for c in plain + zipped:
                got = await asyncio.wait_for(c.messages.get(), 5)
                assert got == payload, "%r got %r" % (c, got[:50])
            for r in raws:
                op, rsv, data = recv_data(r)
                assert op == (OP_BINARY if key == "binary" else OP_TEXT)
                got = inflate(data, wbits=10) if rsv == 4 else data
                assert got == (payload if key == "binary" else payload.encode())
                assert rsv == (0 if payload == small else 4), (payload[:10], rsv)
    F.run(main())
    compressed = sent = 0
    for gw in fl.gateways.values():
        fams = lb.metrics(gw.admin_port)
        compressed += value(fams, "wsgate_deflate_compressed_messages_total")
        sent += value(fams, "wsgate_deflate_sent_total")
    # 2 big messages x at most (4 workers x 2 windows); 12 deflate members each got 2
    assert sent == 2 * 12, sent
    assert 2 * 2 <= compressed <= 2 * 4 * 2, compressed


@harness.timeout(45)
def test_compressed_messages_over_tls():
    """wss:// with permessage-deflate: compressed frames go through TLS records both ways
    (many records for the large ones)."""
    import test_tls
    c = test_tls.ca()
    cert, key = c.issue("gw")
    gw = test_tls.tls_gateway(cert, key, flags={"--max-message": "4m"},
                              extra=["--deflate"], workers=1)
    ctx = c.context()

    async def main():
        ws = await test_tls.wss(gw.port, ctx)
        assert ws.response_headers["Sec-WebSocket-Extensions"] == ANSWER
        for m in (json_text(300), json_text(3 * MIB), os.urandom(200000), "κόσμε " * 5000):
            await ws.send(m)
            assert await ws.recv() == m
        await ws.close()
    F.run(main())
    fams = lb.metrics(gw.admin_port)
    assert value(fams, "wsgate_deflate_inflated_messages_total") == 4
    assert value(fams, "wsgate_deflate_sent_total") == 3  # not the random bytes
