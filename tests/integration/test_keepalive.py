"""Keepalive: a silent connection is pinged after --ping-interval, dropped after 2x."""

import socket
import time

import harness
from wsraw import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, Client, Closed, frame

INTERVAL = 1.0


def gateway():
    return harness.start_gateway(flags={"--ping-interval": "1s"})


def test_silent_client_is_pinged_after_interval():
    gw = gateway()
    c = Client.open(gw.port)
    t0 = time.monotonic()
    f = c.recv_frame(timeout=INTERVAL * 3)
    dt = time.monotonic() - t0
    assert f.opcode == OP_PING and f.fin and not f.masked, "expected a ping, got %r" % f
    assert len(f.payload) <= 125
    assert dt >= INTERVAL * 0.9, "ping after %.3fs, before --ping-interval" % dt
    assert dt <= INTERVAL * 2, "ping only after %.3fs" % dt


def test_silent_client_is_dropped_after_twice_interval():
    gw = gateway()
    c = Client.open(gw.port)
    t0 = time.monotonic()
    pings = 0
    try:
        while True:
            f = c.recv_frame(timeout=INTERVAL * 6)
            if f.opcode == OP_PING:
                pings += 1
                continue
            # a close frame before the drop is allowed; nothing may follow it
            assert f.opcode == OP_CLOSE, "unexpected frame %r" % f
            c.expect_eof(timeout=3)
            break
    except Closed:
        pass
    dt = time.monotonic() - t0
    assert pings >= 1, "dropped without a ping first"
    assert dt >= INTERVAL * 2 * 0.9, "dropped after %.3fs, before 2x --ping-interval" % dt
    assert dt <= INTERVAL * 2 + 2.0, "dropped only after %.3fs" % dt


def test_client_answering_pings_stays_open():
    gw = gateway()
    c = Client.open(gw.port)
    deadline = time.monotonic() + INTERVAL * 3.5
    pings = 0
    while time.monotonic() < deadline:
        try:
            f = c.recv_frame(timeout=max(0.05, deadline - time.monotonic()))
        except socket.timeout:
            break
        assert f.opcode == OP_PING, "unexpected frame %r" % f
        pings += 1
        c.send_frame(OP_PONG, f.payload)
    assert pings >= 2, "only %d pings in %.1fs" % (pings, INTERVAL * 3.5)
    c.echo(OP_TEXT, "alive")


def test_traffic_resets_idle_timer():
    """A client that keeps sending messages is never dropped even if it ignores pings."""
    gw = gateway()
    c = Client.open(gw.port)
    end = time.monotonic() + INTERVAL * 3.5
    while time.monotonic() < end:
        c.send_frame(OP_TEXT, b"tick")
        while True:
            f = c.recv_frame(timeout=2)
            if f.opcode == OP_PING:
                continue  # ignored on purpose
            assert (f.opcode, f.payload) == (OP_TEXT, b"tick"), f
            break
        # poll for any frame for a short while, without sleeping blind
        try:
            f = c.recv_frame(timeout=0.3)
            assert f.opcode == OP_PING, "unexpected frame %r" % f
        except socket.timeout:
            pass
    c.echo(OP_TEXT, "alive")


def test_ping_interval_0_disables_keepalive():
    gw = harness.start_gateway(flags={"--ping-interval": "0"})
    c = Client.open(gw.port)
    try:
        f = c.recv_frame(timeout=2.5)
        raise AssertionError("frame from an idle connection with keepalive off: %r" % f)
    except socket.timeout:
        pass
    c.echo(OP_TEXT, "still open")
