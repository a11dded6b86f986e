"""The file limit: wsgate raises its soft limit to the hard one, logs each worker's
capacity, and answers 503 near the limit instead of spinning on EMFILE."""

import re
import socket

import harness
from wsraw import Client, read_head, request


def limited_gateway(nofile):
    gw = harness.Gateway(flags={"--workers": "1"})
    gw.argv = ["prlimit", "--nofile=%d:%d" % (nofile, nofile)] + gw.argv
    return gw.start()


def test_capacity_is_logged_from_the_hard_limit():
    gw = limited_gateway(200)
    m = re.search(r"worker ready .*capacity=(\d+)", gw.log())
    assert m, gw.log()
    assert int(m.group(1)) == 200 - 32, m.group(0)


def test_503_at_capacity_then_serves_again():
    gw = limited_gateway(128)  # capacity 96 for the one worker
    held, refused = [], 0
    for _ in range(110):
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        s.sendall(request())
        r = read_head(s)
        if r.status == 101:
            held.append(s)
        else:
            assert r.status == 503, r.status_line
            refused += 1
            s.close()
    assert len(held) == 96 and refused == 14, (len(held), refused)
    assert "at capacity" in gw.log()
    for s in held[:10]:
        s.close()
    # Room again: the worker did not stop accepting.
    c = harness.wait_for(lambda: _try_open(gw.port), 5, "a connection after closing ten")
    c.close()
    for s in held[10:]:
        s.close()


def _try_open(port):
    try:
        return Client.open(port)
    except (AssertionError, OSError):
        return None
