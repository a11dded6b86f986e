"""Autobahn|Testsuite-style conformance cases against wsgate --echo, over raw sockets.

Case ids follow the Autobahn fuzzingclient numbering (1.x framing, 2.x pings, 3.x reserved
bits, 4.x opcodes, 5.x fragmentation, 6.x UTF-8, 7.x close). Each case is the bytes a
client sends (whole, byte by byte, or in chops) and the frames it must get back, in order;
a case ending in a close code also requires that nothing follows the close frame but EOF.
The behaviour judged is Autobahn's "strict": a failing connection is failed with the
code, fast, and nothing after the violation is processed.
"""

import struct

import harness
from wsraw import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, Client,
                   close_payload, frame)


def T(payload, fin=True, **kw):
    return frame(OP_TEXT, payload, fin=fin, **kw)


def B(payload, fin=True, **kw):
    return frame(OP_BINARY, payload, fin=fin, **kw)


def K(payload, fin=True, **kw):
    return frame(OP_CONT, payload, fin=fin, **kw)


def P(payload=b"", **kw):
    return frame(OP_PING, payload, **kw)


def PONG(payload=b"", **kw):
    return frame(OP_PONG, payload, **kw)


def CL(code=None, reason=b"", **kw):
    return frame(OP_CLOSE, close_payload(code, reason), **kw)


def echo_text(p):
    return ("msg", OP_TEXT, p if isinstance(p, bytes) else p.encode())


def echo_bin(p):
    return ("msg", OP_BINARY, p)


def pong(p=b""):
    return ("pong", p)


def close(*codes):
    return ("close", codes)


CASES = []  # (id, wire frames, expected, chop)


def case(cid, wire, expect, chop=None):
    CASES.append((cid, wire, expect, chop))


# ---- 1.x framing: text and binary messages of each length encoding --------------------------
LENGTHS = [0, 125, 126, 127, 128, 65535, 65536]
for i, n in enumerate(LENGTHS, 1):
    case("1.1.%d" % i, [T(b"*" * n)], [echo_text(b"*" * n)])
case("1.1.8", [T(b"*" * 65536)], [echo_text(b"*" * 65536)], chop=997)
for i, n in enumerate(LENGTHS, 1):
    case("1.2.%d" % i, [B(b"\xfe" * n)], [echo_bin(b"\xfe" * n)])
case("1.2.8", [B(b"\xfe" * 65536)], [echo_bin(b"\xfe" * 65536)], chop=997)

# ---- 2.x pings and pongs ---------------------------------------------------------------------
case("2.1", [P()], [pong()])
case("2.2", [P(b"Hello, world!")], [pong(b"Hello, world!")])
case("2.3", [P(b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff")], [pong(b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff")])
case("2.4", [P(b"\xfe" * 125)], [pong(b"\xfe" * 125)])
case("2.5", [P(b"\xfe" * 126)], [close(1002)])
case("2.6", [P(b"\xfe" * 125)], [pong(b"\xfe" * 125)], chop=1)
case("2.7", [PONG()], [])
case("2.8", [PONG(b"unsolicited pong payload")], [])
case("2.9", [PONG(b"unsolicited pong payload"), P(b"ping payload")], [pong(b"ping payload")])
case("2.10", [P(b"payload-%d" % i) for i in range(10)], [pong(b"payload-%d" % i) for i in range(10)])
case("2.11", [P(b"payload-%d" % i) for i in range(10)], [pong(b"payload-%d" % i) for i in range(10)],
     chop=1)

# ---- 3.x reserved bits -----------------------------------------------------------------------
case("3.1", [T(b"Hello", rsv=1)], [close(1002)])
case("3.2", [T(b"small"), T(b"small", rsv=2), P()], [echo_text(b"small"), close(1002)])
case("3.3", [T(b"small"), T(b"small", rsv=3), P()], [echo_text(b"small"), close(1002)], chop=1)
case("3.4", [T(b"small"), T(b"small", rsv=4), P()], [echo_text(b"small"), close(1002)], chop=1)
case("3.5", [B(b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff", rsv=5)], [close(1002)])
case("3.6", [P(b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff", rsv=6)], [close(1002)])
case("3.7", [CL(1000, rsv=7)], [close(1002)])

# ---- 4.x opcodes -----------------------------------------------------------------------------
for i, op in enumerate((3, 4, 5, 6, 7), 1):
    base = [echo_text(b"x")] if i >= 3 else []
    wire = ([T(b"x")] if i >= 3 else []) + [frame(op, b"reserved" if i != 1 else b"")] + \
        ([P()] if i >= 3 else [])
    case("4.1.%d" % i, wire, base + [close(1002)], chop=1 if i == 4 else None)
for i, op in enumerate((0xB, 0xC, 0xD, 0xE, 0xF), 1):
    base = [echo_text(b"x")] if i >= 3 else []
    wire = ([T(b"x")] if i >= 3 else []) + [frame(op, b"reserved" if i != 1 else b"")] + \
        ([P()] if i >= 3 else [])
    case("4.2.%d" % i, wire, base + [close(1002)], chop=1 if i == 4 else None)

# ---- 5.x fragmentation -----------------------------------------------------------------------
case("5.1", [frame(OP_PING, b"frag", fin=False), K(b"ment")], [close(1002)])
case("5.2", [frame(OP_PONG, b"frag", fin=False), K(b"ment")], [close(1002)])
case("5.3", [T(b"frag", fin=False), K(b"ment")], [echo_text(b"fragment")])
case("5.4", [T(b"frag", fin=False), K(b"ment")], [echo_text(b"fragment")], chop=1)
case("5.5", [T(b"frag", fin=False), K(b"ment")], [echo_text(b"fragment")], chop=3)
case("5.6", [T(b"frag", fin=False), P(b"ping"), K(b"ment")],
     [pong(b"ping"), echo_text(b"fragment")])
case("5.7", [T(b"frag", fin=False), P(b"ping"), K(b"ment")],
     [pong(b"ping"), echo_text(b"fragment")], chop=1)
case("5.8", [T(b"frag", fin=False), P(b"ping"), K(b"ment")],
     [pong(b"ping"), echo_text(b"fragment")], chop=5)
case("5.9", [K(b"non-continuation payload"), T(b"Hello, world!")], [close(1002)])
case("5.10", [K(b"non-continuation payload"), T(b"Hello, world!")], [close(1002)], chop=1)
case("5.11", [K(b"non-continuation payload"), T(b"Hello, world!")], [close(1002)], chop=7)
case("5.12", [K(b"non-continuation payload", fin=False), T(b"Hello, world!")], [close(1002)])
case("5.13", [K(b"non-continuation payload", fin=False), T(b"Hello, world!")], [close(1002)],
     chop=1)
case("5.14", [K(b"non-continuation payload", fin=False), T(b"Hello, world!")], [close(1002)],
     chop=7)
case("5.15", [T(b"fragment1", fin=False), K(b"fragment2"), K(b"fragment3", fin=False),
              T(b"fragment4")], [echo_text(b"fragment1fragment2"), close(1002)])
case("5.16", [K(b"fragment1", fin=False), T(b"fragment2", fin=False), K(b"fragment3")] * 2,
     [close(1002)])
case("5.17", [K(b"fragment1"), T(b"fragment2", fin=False), K(b"fragment3")] * 2, [close(1002)])
case("5.18", [T(b"fragment1", fin=False), T(b"fragment2")], [close(1002)])
case("5.19", [T(b"frag1", fin=False), K(b"frag2", fin=False), P(b"pongme 1!"),
              K(b"frag3", fin=False), K(b"frag4", fin=False), P(b"pongme 2!"), K(b"frag5")],
     [pong(b"pongme 1!"), pong(b"pongme 2!"), echo_text(b"frag1frag2frag3frag4frag5")])
case("5.20", [T(b"frag1", fin=False), K(b"frag2", fin=False), P(b"pongme 1!"),
              K(b"frag3", fin=False), K(b"frag4", fin=False), P(b"pongme 2!"), K(b"frag5")],
     [pong(b"pongme 1!"), pong(b"pongme 2!"), echo_text(b"frag1frag2frag3frag4frag5")], chop=1)

# ---- 6.x UTF-8 -------------------------------------------------------------------------------
case("6.1.1", [T(b"")], [echo_text(b"")])
case("6.1.2", [T(b"", fin=False), K(b"", fin=False), K(b"")], [echo_text(b"")])
case("6.1.3", [T(b"", fin=False), K(b"middle frame payload", fin=False), K(b"")],
     [echo_text(b"middle frame payload")])

HELLO = "Hello-µ@ßöäüàá-UTF-8!!".encode()
case("6.2.1", [T(HELLO)], [echo_text(HELLO)])
case("6.2.2", [T("Hello-µ@ßöä".encode(), fin=False), K("üàá-UTF-8!!".encode())], [echo_text(HELLO)])
case("6.2.3", [T(HELLO[:1], fin=False)] + [K(HELLO[i:i + 1], fin=False)
                                            for i in range(1, len(HELLO) - 1)] + [K(HELLO[-1:])],
     [echo_text(HELLO)])
PILE = b"\xf0\xa4\xad\xa2"  # U+24B62, one 4-byte sequence
case("6.2.4", [T(PILE[:1], fin=False)] + [K(PILE[i:i + 1], fin=False) for i in (1, 2)] +
     [K(PILE[3:])], [echo_text(PILE)])

KOSME = "κόσμε".encode()
BAD = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64"
case("6.3.1", [T(BAD)], [close(1007)])
case("6.3.2", [T(BAD[:1], fin=False)] + [K(BAD[i:i + 1], fin=(i == len(BAD) - 1))
                                         for i in range(1, len(BAD))], [close(1007)])

# 6.4.x fail fast: the invalid fragment never gets its final fragment; close must come anyway
case("6.4.1", [T(KOSME, fin=False), K(b"\xf4\x90\x80\x80", fin=False)], [close(1007)])
case("6.4.2", [T(KOSME + b"\xf4", fin=False), K(b"\x90", fin=False)], [close(1007)])
case("6.4.3", [T(KOSME + b"\xf4\x90\x80\x80" + b"edited", fin=False)], [close(1007)])
case("6.4.4", [T(KOSME + b"\xf4\x90\x80\x80" + b"edited", fin=False)], [close(1007)], chop=1)

for i in range(1, len(KOSME) + 1):  # 6.5.x / 6.6.x: every prefix of κόσμε
    prefix = KOSME[:i]
    try:
        prefix.decode("utf-8")
        want = [echo_text(prefix)]
    except UnicodeDecodeError:
        want = [close(1007)]
    case("6.6.%d" % i, [T(prefix)], want)

VALID = [  # 6.7-6.7.4 first of each length, 6.8 last, 6.11-6.12 other boundaries, 6.23 nonchars
    b"\x00", b"\xc2\x80", b"\xe0\xa0\x80", b"\xf0\x90\x80\x80",
    b"\x7f", b"\xdf\xbf", b"\xef\xbf\xbf", b"\xf4\x8f\xbf\xbf",
    b"\xed\x9f\xbf", b"\xee\x80\x80", b"\xef\xbf\xbd", b"\xef\xbf\xbe",
    b"\xef\xb7\x90", b"\xf0\x9f\xbf\xbe", b"\xf3\xbf\xbf\xbf",
]
for i, s in enumerate(VALID, 1):
    case("6.7.%d" % i, [T(s)], [echo_text(s)])

INVALID = [
    # 6.8: 5- and 6-byte sequences, beyond U+10FFFF
    b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80", b"\xf4\x90\x80\x80",
    b"\xf7\xbf\xbf\xbf", b"\xfb\xbf\xbf\xbf\xbf", b"\xfd\xbf\xbf\xbf\xbf\xbf",
    # 6.9-6.10: unexpected continuation bytes
    b"\x80", b"\xbf", b"\x80\xbf", b"\x80\xbf\x80", b"\x80\xbf\x80\xbf",
    bytes(range(0x80, 0xc0)),
    # 6.11-6.13: lonely start bytes followed by a space
    b"\xc0 ", b"\xdf ", b"\xe0 ", b"\xef ", b"\xf0 ", b"\xf7 ", b"\xf8 ", b"\xfb ",
    b"\xfc ", b"\xfd ",
    # 6.14: last continuation byte missing (at message end)
    b"\xc2", b"\xe0\xa0", b"\xf0\x90\x80", b"\xdf", b"\xef\xbf", b"\xf4\x8f\xbf",
    # 6.16: impossible bytes
    b"\xfe", b"\xff", b"\xfe\xfe\xff\xff",
    # 6.17-6.18: overlong forms
    b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf", b"\xc1\xbf", b"\xe0\x9f\xbf",
    b"\xf0\x8f\xbf\xbf", b"\xc0\x80", b"\xe0\x80\x80", b"\xf0\x80\x80\x80",
    # 6.19-6.20: UTF-16 surrogates, single and paired
    b"\xed\xa0\x80", b"\xed\xad\xbf", b"\xed\xae\x80", b"\xed\xaf\xbf", b"\xed\xb0\x80",
    b"\xed\xbe\x80", b"\xed\xbf\xbf", b"\xed\xa0\x80\xed\xb0\x80", b"\xed\xaf\xbf\xed\xbf\xbf",
]
for i, s in enumerate(INVALID, 1):
    case("6.8.%d" % i, [T(b"ok " + s)], [close(1007)])

# ---- 7.x close -------------------------------------------------------------------------------
case("7.1.1", [T(b"Hello World!"), CL(1000)], [echo_text(b"Hello World!"), close(1000)])
case("7.1.2", [CL(1000), CL(1000)], [close(1000)])
case("7.1.3", [CL(1000), P(b"Hello World!")], [close(1000)])
case("7.1.4", [CL(1000), T(b"Hello World!")], [close(1000)])
case("7.1.5", [T(b"fragment1", fin=False), CL(1000), K(b"fragment2")], [close(1000)])
case("7.1.6", [T(b"BAsd7&jh23" * 26214), T(b"Hello World!"), CL(1000), P(b"ping")],
     [echo_text(b"BAsd7&jh23" * 26214), echo_text(b"Hello World!"), close(1000)])
case("7.3.1", [CL()], [close(None, 1000)])
case("7.3.2", [frame(OP_CLOSE, b"a")], [close(1002)])
case("7.3.3", [CL(1000)], [close(1000)])
case("7.3.4", [CL(1000, b"Hello World!")], [close(1000)])
case("7.3.5", [CL(1000, b"*" * 123)], [close(1000)])
case("7.3.6", [CL(1000, b"*" * 124)], [close(1002)])
case("7.5.1", [CL(1000, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69")],
     [close(1007)])
for i, code in enumerate((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                          3000, 3999, 4000, 4999), 1):
    # 1010 is a client-only code (RFC 6455 §7.4.1): answering it with 1000 is allowed,
    # as Autobahn allows for every 7.7.x case; the others must be echoed.
    case("7.7.%d" % i, [CL(code)], [close(code, 1000) if code == 1010 else close(code)])
for i, code in enumerate((0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999), 1):
    case("7.9.%d" % i, [CL(code)], [close(1002)])
for i, code in enumerate((5000, 65535), 1):
    case("7.13.%d" % i, [CL(code)], [close(1002)])


# ---- driver ----------------------------------------------------------------------------------

def send(c, wire, chop):
    data = b"".join(wire)
    if chop is None:
        c.send(data)
    else:
        for i in range(0, len(data), chop):
            c.send(data[i:i + chop])


def check(c, expect, cid):
    for want in expect:
        if want[0] == "close":
            f = c.recv_frame()
            assert f.opcode == OP_CLOSE, "%s: expected close %r, got %r" % (cid, want[1], f)
            assert f.close_code in want[1], "%s: expected close %r, got %s (reason %r)" % (
                cid, want[1], f.close_code, f.close_reason)
            assert not f.masked and f.fin and f.rsv == 0, "%s: bad close frame %r" % (cid, f)
            if len(f.payload) > 2:
                f.close_reason.decode("utf-8")
            c.expect_eof(timeout=3)
            return
        f = c.recv_frame(timeout=10)
        assert not f.masked and f.rsv == 0 and f.fin, "%s: bad frame %r" % (cid, f)
        if want[0] == "pong":
            assert (f.opcode, f.payload) == (OP_PONG, want[1]), \
                "%s: expected pong %r, got %r" % (cid, want[1][:40], f)
        else:
            assert (f.opcode, f.payload) == (want[1], want[2]), \
                "%s: expected echo op=%x len=%d, got %r" % (cid, want[1], len(want[2]), f)
    # open cases end with a clean close initiated by the client
    c.send_frame(OP_CLOSE, close_payload(1000))
    f = c.recv_frame()
    assert f.opcode == OP_CLOSE and f.close_code == 1000, \
        "%s: expected nothing more, then close 1000; got %r" % (cid, f)
    c.expect_eof(timeout=3)


def _case_test(cid, wire, expect, chop):
    def t():
        gw = harness.start_gateway(workers=1)
        c = Client.open(gw.port)
        send(c, wire, chop)
        check(c, expect, cid)
    t.__doc__ = "Autobahn case %s" % cid
    return t


for _cid, _wire, _expect, _chop in CASES:
    globals()["test_case_" + _cid.replace(".", "_")] = _case_test(_cid, _wire, _expect, _chop)
