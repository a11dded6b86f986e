"""Framing rules, RFC 6455 §5: echo, fragmentation, limits, and each violation's close code."""

import struct

import harness
from wsraw import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, Client,
                   close_payload, frame)

MIB = 1024 * 1024


def client(**kw):
    gw = harness.start_gateway(**kw)
    return gw, Client.open(gw.port)


# ---- echo ------------------------------------------------------------------------------------

def test_echo_text_and_binary():
    _, c = client()
    c.echo(OP_TEXT, "hello")
    c.echo(OP_BINARY, bytes(range(256)))
    c.echo(OP_TEXT, "κόσμε 𝄞")
    c.echo(OP_TEXT, b"")
    c.echo(OP_BINARY, b"")


def test_echo_length_encodings():
    """7-bit, 16-bit and 64-bit lengths at their edges."""
    _, c = client()
    for n in (125, 126, 127, 65535, 65536, 65537):
        c.echo(OP_BINARY, bytes(i & 0xFF for i in range(n)))


def test_fragmented_message_one_byte_at_a_time_is_echoed():
    _, c = client()
    parts = [b"Hel", b"", b"lo, ", b"w\xc3", b"\xb6rld"]  # splits a 2-byte sequence
    wire = b"".join(frame(OP_TEXT if i == 0 else OP_CONT, p, fin=(i == len(parts) - 1))
                    for i, p in enumerate(parts))
    c.send_bytewise(wire)
    f = c.recv_frame()
    assert (f.opcode, f.fin) == (OP_TEXT, True), "echo is not one frame: %r" % f
    assert f.payload == b"".join(parts)


def test_fragmented_binary_with_ping_in_between():
    _, c = client()
    c.send_frame(OP_BINARY, b"ab", fin=False)
    c.send_frame(OP_PING, b"mid")
    c.send_frame(OP_CONT, b"cd", fin=False)
    c.send_frame(OP_CONT, b"ef", fin=True)
    f = c.recv_frame()
    assert (f.opcode, f.payload) == (OP_PONG, b"mid"), f
    f = c.recv_frame()
    assert (f.opcode, f.fin, f.payload) == (OP_BINARY, True, b"abcdef"), f


def test_whole_session_one_byte_at_a_time():
    _, c = client()
    c.send_bytewise(frame(OP_PING, b"p") + frame(OP_TEXT, b"x" * 300))
    f = c.recv_frame()
    assert (f.opcode, f.payload) == (OP_PONG, b"p"), f
    op, data = c.recv_message()
    assert (op, data) == (OP_TEXT, b"x" * 300)


@harness.timeout(60)
def test_max_message_exactly_echoed():
    _, c = client()
    payload = bytes((i * 7) & 0xFF for i in range(MIB))
    c.send_frame(OP_BINARY, payload)
    f = c.recv_frame(timeout=20)
    assert (f.opcode, f.fin) == (OP_BINARY, True)
    assert len(f.payload) == MIB and f.payload == payload


@harness.timeout(60)
def test_max_message_exactly_echoed_fragmented():
    _, c = client()
    payload = b"a" * MIB
    step = 100000
    chunks = [payload[i:i + step] for i in range(0, MIB, step)]
    for i, ch in enumerate(chunks):
        c.send_frame(OP_TEXT if i == 0 else OP_CONT, ch, fin=(i == len(chunks) - 1))
    f = c.recv_frame(timeout=20)
    assert (f.opcode, f.fin, len(f.payload)) == (OP_TEXT, True, MIB)
    assert f.payload == payload


def test_max_message_plus_one_is_1009_at_the_header():
    """1 MiB + 1 in one frame: refused from the header alone, no payload sent."""
    _, c = client()
    hdr = frame(OP_BINARY, b"", length=MIB + 1)  # header + mask key, no payload
    c.send(hdr)
    c.expect_close(1009)


@harness.timeout(60)
def test_max_message_plus_one_fragmented_is_1009():
    _, c = client()
    c.send_frame(OP_BINARY, b"z" * MIB, fin=False)
    c.send_frame(OP_CONT, b"", fin=False)  # still exactly at the limit
    c.send(frame(OP_CONT, b"", fin=True, length=1))  # header only: one byte too many
    c.expect_close(1009, timeout=20)


# ---- ping / pong -----------------------------------------------------------------------------

def test_ping_pong_same_payload():
    _, c = client()
    for p in (b"", b"ping", bytes(range(125))):
        c.send_frame(OP_PING, p)
        f = c.recv_frame()
        assert (f.opcode, f.fin, f.masked, f.payload) == (OP_PONG, True, False, p), f


def test_unsolicited_pong_is_ignored():
    _, c = client()
    c.send_frame(OP_PONG, b"unsolicited")
    c.echo(OP_TEXT, "still here")


# ---- violations ------------------------------------------------------------------------------

def _violation(wire, code):
    def t():
        _, c = client()
        c.send(wire)
        c.expect_close(code)
    return t


VIOLATIONS = [
    ("unmasked_text", frame(OP_TEXT, b"hi", mask=False), 1002),
    ("unmasked_ping", frame(OP_PING, b"", mask=False), 1002),
    ("rsv1", frame(OP_TEXT, b"hi", rsv=4), 1002),
    ("rsv2", frame(OP_TEXT, b"hi", rsv=2), 1002),
    ("rsv3", frame(OP_TEXT, b"hi", rsv=1), 1002),
    ("rsv_on_ping", frame(OP_PING, b"", rsv=7), 1002),
    ("ping_126_bytes", frame(OP_PING, b"x" * 126), 1002),
    ("close_126_bytes", frame(OP_CLOSE, close_payload(1000, b"r" * 124)), 1002),
    ("fragmented_ping", frame(OP_PING, b"a", fin=False), 1002),
    ("fragmented_pong", frame(OP_PONG, b"a", fin=False), 1002),
    ("fragmented_close", frame(OP_CLOSE, close_payload(1000), fin=False), 1002),
    ("continuation_without_start", frame(OP_CONT, b"x", fin=True), 1002),
    ("continuation_without_start_nofin", frame(OP_CONT, b"x", fin=False), 1002),
    ("text_inside_fragmented",
     frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b", fin=True), 1002),
    ("binary_inside_fragmented",
     frame(OP_BINARY, b"a", fin=False) + frame(OP_BINARY, b"b", fin=False), 1002),
    ("length64_top_bit",
     bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 63) + b"\x00\x00\x00\x00", 1002),
    ("invalid_utf8_text", frame(OP_TEXT, b"\xff"), 1007),
    ("invalid_utf8_first_fragment_fail_fast", frame(OP_TEXT, b"ok\xc0\xaf", fin=False), 1007),
    ("invalid_utf8_in_continuation",
     frame(OP_TEXT, b"ok", fin=False) + frame(OP_CONT, b"\xed\xa0\x80", fin=False), 1007),
    ("truncated_utf8_at_message_end", frame(OP_TEXT, b"\xe2\x82"), 1007),
    ("close_one_byte", frame(OP_CLOSE, b"\x03"), 1002),
    ("close_invalid_utf8_reason", frame(OP_CLOSE, close_payload(1000, b"\xff\xfe")), 1007),
]
VIOLATIONS += [("opcode_%X" % op, frame(op, b"x"), 1002)
               for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)]
VIOLATIONS += [("close_code_%d" % code, frame(OP_CLOSE, close_payload(code)), 1002)
               for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000)]

for _name, _wire, _code in VIOLATIONS:
    globals()["test_violation_%s_%d" % (_name, _code)] = _violation(_wire, _code)


def test_fail_fast_utf8_without_finishing_message():
    """1007 comes for the first fragment alone: the message is never finished."""
    _, c = client()
    c.send_frame(OP_TEXT, "valid start ".encode() + b"\xf8\x88\x80\x80\x80", fin=False)
    c.expect_close(1007)


def test_fail_fast_utf8_split_sequence_across_fragments():
    """A sequence cut across fragments is valid; a bad continuation byte fails at once."""
    _, c = client()
    c.send_frame(OP_TEXT, b"\xe2", fin=False)
    c.send_frame(OP_CONT, b"\x82", fin=False)
    c.send_frame(OP_CONT, b"\xac", fin=True)
    op, data = c.recv_message()
    assert (op, data) == (OP_TEXT, "€".encode())
    c.send_frame(OP_TEXT, b"\xe2", fin=False)
    c.send_frame(OP_CONT, b"\x28", fin=False)  # not a continuation byte
    c.expect_close(1007)


def test_violation_after_valid_traffic():
    _, c = client()
    c.echo(OP_TEXT, "fine")
    c.send_frame(OP_TEXT, b"bad", rsv=4)
    c.expect_close(1002)


def test_protocol_error_closes_tcp_without_client_reply():
    """The client never answers the close: TCP is closed within the close timeout."""
    _, c = client()
    c.send_frame(OP_TEXT, b"x", mask=False)
    f = c.recv_frame()
    assert f.opcode == OP_CLOSE and f.close_code == 1002, f
    c.expect_eof(timeout=3.0)
