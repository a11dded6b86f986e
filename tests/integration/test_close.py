"""Closing handshake, RFC 6455 §5.5.1 and §7: both directions, and the close timeout."""

import signal
import time

import harness
from wsraw import OP_CLOSE, OP_PING, OP_TEXT, Client, close_payload, frame


def test_client_close_code_echoed_then_tcp_closed():
    gw = harness.start_gateway()
    for code, reason in ((1000, b"bye"), (1001, b""), (3000, b"app"), (4999, "ok €".encode())):
        c = Client.open(gw.port)
        c.echo(OP_TEXT, "before close")
        c.send_frame(OP_CLOSE, close_payload(code, reason))
        c.expect_close(code)  # and TCP EOF with nothing after the close frame
        c.close()


def test_client_close_without_code():
    """An empty close is answered with an empty close or 1000 (RFC 6455 §7.4.1)."""
    gw = harness.start_gateway()
    c = Client.open(gw.port)
    c.send_frame(OP_CLOSE, b"")
    f = c.recv_frame()
    assert f.opcode == OP_CLOSE and f.close_code in (None, 1000), f
    c.expect_eof()


def test_nothing_is_answered_after_client_close():
    """Frames after the client's close are not processed: no echo, no pong."""
    gw = harness.start_gateway()
    c = Client.open(gw.port)
    c.send(frame(OP_CLOSE, close_payload(1000)) + frame(OP_TEXT, b"late") + frame(OP_PING, b"x"))
    c.expect_close(1000)


def test_close_with_max_reason_echoed():
    gw = harness.start_gateway()
    c = Client.open(gw.port)
    c.send_frame(OP_CLOSE, close_payload(1000, b"r" * 123))
    c.expect_close(1000)


def test_sigterm_closes_with_1001_and_master_exits_0():
    gw = harness.start_gateway()
    clients = [Client.open(gw.port) for _ in range(6)]
    for c in clients:
        c.echo(OP_TEXT, "hi")
    gw.signal(signal.SIGTERM)
    for c in clients:
        f = c.recv_frame(timeout=5)
        assert f.opcode == OP_CLOSE and f.close_code == 1001, f
        assert f.close_reason, "1001 without a reason"
        f.close_reason.decode("utf-8")  # a valid UTF-8 reason
        c.send_frame(OP_CLOSE, close_payload(1001))  # the client answers
        c.expect_eof(timeout=3)
    assert gw.wait_exit(timeout=10) == 0, "master exit status %s" % gw.exit_status


def test_sigterm_when_client_answers_closes_promptly():
    """With the client's close answer, TCP closes well before the close timeout."""
    gw = harness.start_gateway(flags={"--close-timeout": "5s"})
    c = Client.open(gw.port)
    gw.signal(signal.SIGTERM)
    f = c.recv_frame(timeout=5)
    assert f.opcode == OP_CLOSE and f.close_code == 1001, f
    t0 = time.monotonic()
    c.send_frame(OP_CLOSE, close_payload(1001))
    c.expect_eof(timeout=4)
    assert time.monotonic() - t0 < 2.5, "TCP closed only after %.2fs" % (time.monotonic() - t0)
    assert gw.wait_exit(timeout=10) == 0


def test_close_timeout_when_client_never_answers():
    """Server-initiated close, silent client: TCP closes after --close-timeout, not before."""
    timeout = 1.0
    gw = harness.start_gateway(flags={"--close-timeout": "1s"})
    c = Client.open(gw.port)
    c.echo(OP_TEXT, "x")
    gw.signal(signal.SIGTERM)
    f = c.recv_frame(timeout=5)
    t0 = time.monotonic()
    assert f.opcode == OP_CLOSE and f.close_code == 1001, f
    c.expect_eof(timeout=timeout + 3)
    dt = time.monotonic() - t0
    assert dt >= timeout * 0.95, "TCP closed %.3fs after the close frame (< %.1fs)" % (dt, timeout)
    assert dt <= timeout + 2.0, "TCP closed only %.3fs after the close frame" % dt
    assert gw.wait_exit(timeout=10) == 0


def test_close_timeout_default_flag_500ms():
    gw = harness.start_gateway()  # --close-timeout 500ms
    c = Client.open(gw.port)
    gw.signal(signal.SIGTERM)
    f = c.recv_frame(timeout=5)
    t0 = time.monotonic()
    assert f.opcode == OP_CLOSE and f.close_code == 1001, f
    c.expect_eof(timeout=3)
    dt = time.monotonic() - t0
    assert 0.45 <= dt <= 2.5, "TCP closed %.3fs after the close frame" % dt
    assert gw.wait_exit(timeout=10) == 0


def test_sigterm_with_no_connections_exits_0():
    gw = harness.start_gateway()
    gw.stop(expect_status=0, timeout=10)
    assert "worker ready" in gw.log()
