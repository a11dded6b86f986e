"""Opening handshake, RFC 6455 §4.2: the 101 answer and every refusal with its status."""

import re
import socket
import time

import harness
from wsraw import (OP_TEXT, Client, accept_for, connect, new_key, read_head, request,
                   send_request)


def expect_status(gw, data, status, bytewise=False):
    """Sends data as the request, asserts the status, and that the server then closes."""
    s, r = send_request(gw.port, data, bytewise=bytewise)
    try:
        assert r.status == status, "expected %d, got %r for %r" % (status, r.status_line,
                                                                  data[:120])
        if status != 101:
            assert r.header("sec-websocket-accept") is None, "refusal carries an accept key"
            expect_closed(s)
        return r
    finally:
        s.close()


def expect_closed(s, timeout=3.0):
    """After an error answer the server closes: read the body (if any) up to EOF."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "connection still open %.1fs after an error answer" % timeout
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            raise AssertionError("connection still open %.1fs after an error answer" % timeout)
        except ConnectionResetError:
            return
        if not chunk:
            return


def test_valid_handshake_accept_key():
    gw = harness.start_gateway()
    key = new_key()
    s, r = send_request(gw.port, request(key=key))
    assert r.status == 101, r.status_line
    assert r.header("sec-websocket-accept") == accept_for(key)
    assert r.header("upgrade").lower() == "websocket"
    assert "upgrade" in [t.strip().lower() for t in r.header("connection").split(",")]
    assert r.rest == b"", "bytes after the 101 head: %r" % r.rest
    conn = r.header("x-wsgate-conn")
    assert conn and re.fullmatch(r"test1-\d+-[0-9A-Za-z]+-\d+", conn), \
        "X-Wsgate-Conn %r is not <gateway>-<worker>-<nonce>-<counter>" % conn
    c = Client(s, r.rest, r)
    c.echo(OP_TEXT, "after handshake")
    c.close()


def test_rfc_sample_key():
    """RFC 6455 §1.3: dGhlIHNhbXBsZSBub25jZQ== -> s3pPLMBiTxaQ9kYGzzhZRbK+xOo=."""
    gw = harness.start_gateway()
    r = expect_status(gw, request(key="dGhlIHNhbXBsZSBub25jZQ=="), 101)
    assert r.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_request_one_byte_at_a_time_upgrades():
    gw = harness.start_gateway()
    key = new_key()
    s, r = send_request(gw.port, request(key=key), bytewise=True)
    assert r.status == 101, r.status_line
    assert r.header("sec-websocket-accept") == accept_for(key)
    c = Client(s, r.rest, r)
    c.echo(OP_TEXT, "bytewise")
    c.close()


def test_first_frame_in_same_packet_as_request():
    from wsraw import frame
    gw = harness.start_gateway()
    key = new_key()
    s = connect(gw.port)
    s.sendall(request(key=key) + frame(OP_TEXT, b"early"))
    r = read_head(s)
    assert r.status == 101, r.status_line
    c = Client(s, r.rest, r)
    op, data = c.recv_message()
    assert (op, data) == (OP_TEXT, b"early")
    c.close()


def test_token_lists_and_case_upgrade():
    gw = harness.start_gateway()
    expect_status(gw, request(connection="keep-alive, Upgrade", upgrade="WebSocket"), 101)
    expect_status(gw, request(connection="upgrade"), 101)


def test_header_just_under_max_header_upgrades():
    gw = harness.start_gateway()
    base = len(request(extra=[("X-Pad", "")]))
    pad = 8 * 1024 - base - 64
    expect_status(gw, request(extra=[("X-Pad", "a" * pad)]), 101)


# (name, request bytes, expected status)
REFUSALS = [
    ("malformed_request_line", b"GARBAGE\r\n\r\n", 400),
    ("malformed_no_version", b"GET /\r\nHost: x\r\n\r\n", 400),
    ("malformed_header_line", request().replace(b"\r\n\r\n", b"\r\nNoColonHere\r\n\r\n"), 400),
    ("http_1_0", request(http="HTTP/1.0"), 400),
    ("missing_host", request(host=None), 400),
    ("key_not_base64", request(key="not base64 at all!!!"), 400),
    ("key_15_bytes", request(key="AAAAAAAAAAAAAAAAAAAA"), 400),
    ("key_17_bytes", request(key="AAAAAAAAAAAAAAAAAAAAAAA="), 400),
    ("key_empty", request(key=""), 400),
    ("key_missing", request(key=None), 400),
    ("upgrade_not_websocket", request(upgrade="h2c"), 400),
    ("connection_without_upgrade", request(connection="keep-alive"), 400),
    ("connection_missing", request(connection=None), 400),
    ("method_post", request(method="POST"), 405),
    ("method_put", request(method="PUT"), 405),
    ("method_head", request(method="HEAD"), 405),
    ("version_8", request(version="8"), 426),
    ("version_14", request(version="14"), 426),
    ("version_junk", request(version="thirteen"), 426),
    ("plain_get", b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 426),
    ("header_too_large", request(extra=[("X-Pad", "a" * 9000)]), 431),
    ("many_headers_too_large",
     request(extra=[("X-H%d" % i, "v" * 60) for i in range(200)]), 431),
]


def _refusal_test(data, status):
    def t():
        gw = harness.start_gateway()
        r = expect_status(gw, data, status)
        if status == 426:
            assert r.header("sec-websocket-version") == "13", \
                "426 without Sec-WebSocket-Version: 13: %r" % r
        # the gateway is still fine afterwards
        Client.open(gw.port).close()
    return t


for _name, _data, _status in REFUSALS:
    globals()["test_refuse_%d_%s" % (_status, _name)] = _refusal_test(_data, _status)


def test_plain_get_of_root_serves_the_demo_page():
    """GET / without an upgrade answers the demo page, then closes."""
    gw = harness.start_gateway()
    r = expect_status(gw, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200)
    assert r.header("content-type").startswith("text/html"), r
    Client.open(gw.port).close()


def test_refusal_one_byte_at_a_time():
    """Verdicts do not depend on how the request is cut."""
    gw = harness.start_gateway()
    expect_status(gw, request(version="8"), 426, bytewise=True)
    expect_status(gw, request(method="POST"), 405, bytewise=True)
    expect_status(gw, request(host=None), 400, bytewise=True)


def test_header_too_large_without_blank_line():
    """A head that never ends is cut at --max-header, not buffered forever."""
    gw = harness.start_gateway()
    s = connect(gw.port)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: " + b"a" * 10000)
    except (BrokenPipeError, ConnectionResetError):
        pass
    r = read_head(s)
    assert r.status == 431, r.status_line
    s.close()


def padded_request(total):
    """An upgrade request head of exactly total bytes, blank line included."""
    base = len(request(key="dGhlIHNhbXBsZSBub25jZQ==", extra=[("X-Pad", "")]))
    data = request(key="dGhlIHNhbXBsZSBub25jZQ==", extra=[("X-Pad", "a" * (total - base))])
    assert len(data) == total
    return data


def test_head_of_exactly_max_header_upgrades():
    gw = harness.start_gateway()  # --max-header 8k
    expect_status(gw, padded_request(8192), 101)


def test_head_of_max_header_plus_one_is_431():
    gw = harness.start_gateway()
    expect_status(gw, padded_request(8193), 431)


def test_unfinished_request_dropped_after_handshake_timeout():
    gw = harness.start_gateway(flags={"--handshake-timeout": "500ms"})
    s = connect(gw.port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    t0 = time.monotonic()
    s.settimeout(5)
    try:
        while s.recv(4096):
            pass  # an error answer (408 or similar) is allowed before the close
    except ConnectionResetError:
        pass
    dt = time.monotonic() - t0
    assert 0.45 <= dt <= 3.0, "unfinished request dropped after %.2fs" % dt
    s.close()
