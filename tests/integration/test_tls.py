"""wss:// with --tls-cert and --tls-key: real TLS clients (Python websockets and ssl,
openssl s_client, headless Chromium) against a gateway whose test CA and certificates
are made at test time with the openssl command. Versions (1.2 and 1.3 in, 1.0 and 1.1
out), ALPN, clients that are not TLS or stall in the handshake, close codes and orders
over TLS, a reader too slow for its output (records retried with the same bytes), a
certificate reloaded on SIGHUP while connections stay, tickets that resume on another
worker, and the counters of all that.
"""

import asyncio
import json
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import time

import certs
import fleet as F
import harness
import lb
import wsraw
from fleet import Fleet, run, until


def ca():
    return certs.CA(os.path.join(harness.tmp_root(), "ca"))


def tls_flags(cert, key):
    return ["--tls-cert", cert, "--tls-key", key]


def tls_gateway(cert, key, flags=None, extra=(), workers=2, binary=None):
    f = {"--redis": "redis://127.0.0.1:1", "--log-level": "debug"}
    f.update(flags or {})
    return harness.Gateway(flags=f, extra=tls_flags(cert, key) + list(extra), workers=workers,
                           binary=binary).start()


def metric(gw, name, **labels):
    return lb.value(lb.metrics(gw.admin_port), name, **labels)


def tls_socket(port, ctx, timeout=5.0, session=None):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(raw, server_hostname="localhost", session=session)


def tls_client(port, ctx, path="/", timeout=5.0, session=None):
    """A wsraw.Client over TLS, upgraded; its socket is the SSLSocket."""
    s = tls_socket(port, ctx, timeout, session)
    key = wsraw.new_key()
    s.sendall(wsraw.request(path=path, host="localhost", key=key))
    r = wsraw.read_head(s, timeout)
    assert r.status == 101, r.status_line
    assert r.header("sec-websocket-accept") == wsraw.accept_for(key)
    return wsraw.Client(s, r.rest, r)


def serial_of(ws_or_sock):
    if isinstance(ws_or_sock, ssl.SSLSocket):
        cert = ws_or_sock.getpeercert()
    else:
        cert = ws_or_sock.transport.get_extra_info("peercert")
    return int(cert["serialNumber"], 16)


async def wss(port, ctx, path="/"):
    import websockets
    return await websockets.connect("wss://localhost:%d%s" % (port, path), ssl=ctx,
                                    open_timeout=5, close_timeout=2, ping_interval=None,
                                    max_size=None)


class SClient:
    """openssl s_client on stdin/stdout: what a TLS client that is not ours sends."""

    def __init__(self, port, *args):
        self.proc = subprocess.Popen(
            [certs.OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port, "-quiet",
             "-servername", "localhost"] + list(args),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out = b""
        harness._live.append(self)

    def send(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read_until(self, pred, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not pred(self.out):
            left = deadline - time.monotonic()
            assert left > 0, "s_client: timed out with %r; stderr %r" % (
                self.out[:300], self.stderr())
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                assert chunk, "s_client: EOF with %r; stderr %r" % (self.out[:300],
                                                                    self.stderr())
                self.out += chunk
        return self.out

    def stderr(self):
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stderr.read().decode("utf-8", "replace")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def dump(self):
        return "---- s_client %r ----" % self.out[:500]


def s_client_fails(port, *args, timeout=10.0):
    """Runs s_client to completion with nothing to send; returns (rc, stderr)."""
    out = subprocess.run([certs.OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port,
                          "-servername", "localhost"] + list(args),
                         stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=timeout)
    return out.returncode, out.stdout + out.stderr


# --- refused before anything starts -----------------------------------------------------------

def test_tls_bad_files_exit_2_before_any_worker():
    import test_cli
    c = ca()
    cert, key = c.issue("gw")
    _, other_key = c.issue("other", serial=7)
    enc = os.path.join(c.dir, "enc.key")
    subprocess.run([certs.OPENSSL, "pkey", "-in", key, "-aes128", "-passout", "pass:x",
                    "-out", enc], check=True, capture_output=True)
    for extra, needle in ((["--tls-cert", cert], "give both or neither"),
                          (["--tls-key", key], "give both or neither"),
                          (["--tls-cert", cert, "--tls-key", other_key], "does not match"),
                          (["--tls-cert", cert, "--tls-key", enc], "not an unencrypted"),
                          (["--tls-cert", key, "--tls-key", key], "not a PEM certificate"),
                          (["--tls-cert", cert, "--tls-key", "/nonexistent.key"], "No such"),
                          (["--tls-min-version", "1.3"], "needs --tls-cert"),
                          (["--tls-cert", cert, "--tls-key", key, "--tls-min-version", "1.1"],
                           "expected 1.2 or 1.3")):
        rc, _, err = test_cli.run_wsgate(test_cli.good_args() + extra)
        assert rc == 2 and needle in err, (extra, rc, err)
        assert "worker ready" not in err
    # the twins count: WSGATE_TLS_CERT with --tls-key starts a TLS gateway
    gw = harness.Gateway(flags={"--redis": "redis://127.0.0.1:1"}, workers=1,
                         extra=["--tls-key", key], env={"WSGATE_TLS_CERT": cert}).start()
    assert "tls=on" in gw.log()
    with tls_socket(gw.port, c.context()) as s:
        assert s.version() == "TLSv1.3"


# --- Python websockets ------------------------------------------------------------------------

def test_tls_websockets_echo_and_close_codes():
    c = ca()
    cert, key = c.issue("gw")
    gw = tls_gateway(cert, key)
    ctx = c.context()

    async def main():
        import websockets
        ws = await wss(gw.port, ctx)
        assert ws.transport.get_extra_info("ssl_object").version() == "TLSv1.3"
        await ws.send("hello")
        assert await ws.recv() == "hello"
        big = os.urandom(900 << 10)  # many records each way (--max-message is 1m)
        await ws.send(big)
        assert await ws.recv() == big
        for i in range(200):
            await ws.send("m%d" % i)
        assert [await ws.recv() for _ in range(200)] == ["m%d" % i for i in range(200)]
        await ws.close(4000, "bye over tls")
        assert ws.close_code == 4000  # echoed (RFC 6455 §5.5.1), without the reason
        # the server fails a protocol violation with 1002 over TLS too
        ws = await wss(gw.port, ctx)
        await ws.ensure_open()
        ws.transport.write(wsraw.frame(wsraw.OP_TEXT, b"x", rsv=4))
        try:
            await asyncio.wait_for(ws.recv(), 5)
            raise AssertionError("no close after a frame with RSV bits")
        except websockets.ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code == 1002, e
    run(main())
    harness.wait_for(lambda: metric(gw, "wsgate_tls_handshakes_total", result="ok") == 2, 5,
                     "2 TLS handshakes counted")
    assert metric(gw, "wsgate_tls_handshakes_total", result="failed") == 0
    assert metric(gw, "wsgate_handshakes_total", result="ok") == 2
    assert "ERROR" not in gw.log()


@harness.timeout(45)
def test_tls_close_order_reaches_tls_clients():
    c = ca()
    cert, key = c.issue("gw")
    fl = Fleet(ids=("gwT",), extra=tls_flags(cert, key))
    gw = fl.gateways["gwT"]
    ctx = c.context()

    async def main():
        clients = []
        for i in range(6):
            ws = await wss(gw.port, ctx, "/?group=room:%d" % (i % 2))
            clients.append(F.Client(ws, "gwT", ["room:%d" % (i % 2)]))
        want = {cl.conn for cl in clients}
        await until(lambda: want <= {e["conn"] for e in fl.listener.events("open")}, 5,
                    "open events")
        targets = [cl for cl in clients if "room:1" in cl.groups]
        others = [cl for cl in clients if cl not in targets]
        oid, acks = await fl.order({"group": "room:1", "code": 4321, "reason": "tls bye ✓"})
        assert F.ack_sums(acks) == (3, 3), acks
        await F.assert_closed_with(targets, 4321, "tls bye ✓")
        await F.assert_open(others, "beside the order")
        await F.close_all(others)
    run(main())


# --- openssl s_client ---------------------------------------------------------------------------

def test_tls_s_client_upgrades_over_1_2_and_1_3():
    c = ca()
    cert, key = c.issue("gw")
    gw = tls_gateway(cert, key)
    for version, name in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        sc = SClient(gw.port, version, "-CAfile", c.cert, "-verify_return_error", "-alpn",
                     "http/1.1")
        sc.send(wsraw.request(host="localhost", key="dGhlIHNhbXBsZSBub25jZQ=="))
        out = sc.read_until(lambda b: b"\r\n\r\n" in b)
        head = out.split(b"\r\n\r\n")[0].decode()
        assert head.startswith("HTTP/1.1 101 "), head
        assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head, head
        conn = re.search(r"X-Wsgate-Conn: (\S+)", head).group(1)
        sc.out = out.split(b"\r\n\r\n", 1)[1]
        sc.send(wsraw.frame(wsraw.OP_TEXT, "over %s" % name))
        sc.read_until(lambda b: b"over " + name.encode() in b)
        sc.send(wsraw.frame(wsraw.OP_CLOSE, wsraw.close_payload(1000)))
        sc.read_until(lambda b: b"\x88\x02\x03\xe8" in b)  # the close echoed
        gw.wait_log(r"conn=%s tls handshake done version=%s cipher=\S+ resumed=0 "
                    r"alpn=http/1\.1" % (re.escape(conn), name))
        sc.kill()
    # ECDHE with AEAD only on 1.2
    for m in re.finditer(r"version=TLSv1\.2 cipher=(\S+)", gw.log()):
        assert m.group(1).startswith("ECDHE-") and ("GCM" in m.group(1) or "CHACHA" in
                                                    m.group(1)), m.group(0)


def test_tls_1_0_and_1_1_are_refused():
    c = ca()
    cert, key = c.issue("gw")
    gw = tls_gateway(cert, key, workers=1)
    for version in ("-tls1", "-tls1_1"):
        rc, text = s_client_fails(gw.port, version, "-cipher", "DEFAULT@SECLEVEL=0")
        assert rc != 0 and "alert protocol version" in text, text
    harness.wait_for(lambda: metric(gw, "wsgate_tls_handshakes_total", result="failed") == 2,
                     5, "2 failed TLS handshakes")
    assert gw.log().count('why="unsupported protocol"') == 2, gw.log()
    assert metric(gw, "wsgate_tls_handshakes_total", result="ok") == 0
    # --tls-min-version 1.3: 1.2 is refused as well
    gw13 = tls_gateway(cert, key, extra=["--tls-min-version", "1.3"], workers=1)
    rc, text = s_client_fails(gw13.port, "-tls1_2")
    assert rc != 0 and "alert protocol version" in text, text
    with tls_socket(gw13.port, c.context()) as s:
        assert s.version() == "TLSv1.3"


def test_tls_plain_client_on_the_tls_port_is_dropped():
    c = ca()
    cert, key = c.issue("gw")
    gw = tls_gateway(cert, key, workers=1)
    for data in (wsraw.request(), b"GET /healthz HTTP/1.0\r\n\r\n", b"\x00" * 64):
        s = wsraw.connect(gw.port)
        s.sendall(data)
        s.settimeout(5)
        got = b""
        try:
            while True:  # until the gateway closes; a timeout fails the test
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
        assert b"HTTP/1.1" not in got, got  # no answer in clear, the connection just ends
        s.close()
    harness.wait_for(lambda: metric(gw, "wsgate_tls_handshakes_total", result="failed") == 3,
                     5, "3 failed TLS handshakes")
    assert 'why="http request"' in gw.log(), gw.log()
    # still serving
    cl = tls_client(gw.port, c.context())
    cl.send_frame(wsraw.OP_TEXT, "after")
    assert cl.recv_message() == (wsraw.OP_TEXT, b"after")
    assert "worker exited" not in gw.log()


def test_tls_handshake_stall_is_dropped_at_the_handshake_timeout():
    c = ca()
    cert, key = c.issue("gw")
    gw = tls_gateway(cert, key, flags={"--handshake-timeout": "600ms"}, workers=1)
    # A ClientHello cut short, from a real one.
    out = ssl.MemoryBIO()
    obj = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), out,
                                                server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    assert hello[:1] == b"\x16" and len(hello) > 50, hello[:10]
    stalled = []
    t0 = time.monotonic()
    for data in (b"", hello[:20], hello):  # nothing, a partial hello, a hello then silence
        s = wsraw.connect(gw.port, timeout=5)
        if data:
            s.sendall(data)
        stalled.append(s)
    for s in stalled:
        s.settimeout(5)
        try:
            while s.recv(65536):
                pass  # the ServerHello flight of the third one
        except ConnectionResetError:
            pass
        s.close()
    took = time.monotonic() - t0
    assert 0.5 <= took < 3.0, took
    harness.wait_for(lambda: metric(gw, "wsgate_tls_handshakes_total", result="timeout") == 3,
                     5, "3 TLS handshake timeouts")
    assert metric(gw, "wsgate_handshakes_total", result="timeout") == 3
    assert gw.log().count("tls handshake timeout") == 3, gw.log()
    # a TLS client that finishes TLS but never sends its request: the same timeout
    with tls_socket(gw.port, c.context()) as s:
        s.settimeout(5)
        assert s.recv(100) == b""
    harness.wait_for(lambda: metric(gw, "wsgate_handshakes_total", result="timeout") == 4,
                     5, "the upgrade timeout after TLS")
    assert metric(gw, "wsgate_tls_handshakes_total", result="timeout") == 3


# --- output that waits: TLS records retried with the same bytes ----------------------------------

@harness.timeout(60)
def test_tls_slow_reader_gets_whole_frames_then_1013():
    """The client writes and does not read: the server's echoes back up behind a TLS
    record whose write waits to be retried, reading pauses, and at the keepalive
    timeout the client is a slow consumer (1013): the queued data frames are dropped,
    but never one that a record already holds (encrypted, half sent). The client then
    reads whole frames in order, the ping, and the 1013 close: a retry with other bytes
    would have torn a frame or failed the record's MAC. Under ASan when it is built."""
    c = ca()
    cert, key = c.issue("gw")
    binary = harness.WSGATE_ASAN if os.access(harness.WSGATE_ASAN, os.X_OK) else None
    gw = tls_gateway(cert, key, flags={"--ping-interval": "1s", "--close-timeout": "10s"},
                     workers=1, binary=binary)
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # tiny stalls loopback TCP
    s = c.context().wrap_socket(raw, server_hostname="localhost")
    key_ = wsraw.new_key()
    s.sendall(wsraw.request(host="localhost", key=key_))
    r = wsraw.read_head(s)
    assert r.status == 101
    cl = wsraw.Client(s, r.rest, r)
    sent = []
    s.settimeout(0.5)
    for i in range(4000):  # until the gateway stops reading: past the kernel's buffers
        msg = ("%05d:" % i).encode() + os.urandom(5000).hex().encode()
        try:
            s.sendall(wsraw.frame(wsraw.OP_TEXT, msg))
        except (socket.timeout, ssl.SSLWantWriteError):
            break  # the frame may be partly sent: whatever follows is not read
        sent.append(msg)
    assert 20 < len(sent) < 4000, len(sent)
    gw.wait_log(r"close code=1013 by=slow", timeout=10)
    got = []
    while True:
        f = cl.recv_frame(timeout=10)
        if f.opcode == wsraw.OP_CLOSE:
            assert f.close_code == 1013, f
            break
        if f.opcode == wsraw.OP_PING:
            continue
        assert f.opcode == wsraw.OP_TEXT and f.fin, f
        got.append(f.payload)
    assert got == sent[:len(got)], "frames out of order or torn"
    assert 0 < len(got) < len(sent), (len(got), len(sent))
    log = gw.log()
    assert "ERROR: AddressSanitizer" not in log and "tls error" not in log, log[-3000:]
    assert "worker exited" not in log


# --- SIGHUP ----------------------------------------------------------------------------------

def replace(src, dst):
    """dst becomes a copy of src at once (rename), as a certificate manager does."""
    tmp = dst + ".new"
    with open(src, "rb") as f, open(tmp, "wb") as g:
        g.write(f.read())
    os.rename(tmp, dst)


@harness.timeout(60)
def test_tls_sighup_reloads_the_certificate_and_keeps_connections():
    c = ca()
    one = c.issue("one", cn="localhost", serial=1001)
    two = c.issue("two", cn="localhost", serial=1002)
    live_cert = os.path.join(c.dir, "live.pem")
    live_key = os.path.join(c.dir, "live.key")
    replace(one[0], live_cert)
    replace(one[1], live_key)
    gw = tls_gateway(live_cert, live_key)
    ctx = c.context()
    old = [tls_client(gw.port, ctx) for _ in range(4)]
    assert {serial_of(o.sock) for o in old} == {1001}
    replace(two[0], live_cert)
    replace(two[1], live_key)
    mark = len(gw.log())
    gw.signal(signal.SIGHUP)
    harness.wait_for(lambda: gw.log()[mark:].count("tls reload cert=") == 2, 5,
                     "both workers reloaded")
    assert "serial=0x03EA" in gw.log()[mark:]
    new = [tls_client(gw.port, ctx) for _ in range(6)]
    assert {serial_of(n.sock) for n in new} == {1002}
    assert {n.worker for n in new} == {"1", "2"}, [n.conn_id for n in new]
    for i, o in enumerate(old):  # the old connections kept their TLS session and work
        o.send_frame(wsraw.OP_TEXT, "old %d" % i)
        assert o.recv_message() == (wsraw.OP_TEXT, b"old %d" % i)
    assert metric(gw, "wsgate_tls_reloads_total", result="ok") == 2

    # a broken key: every worker keeps the pair it has, and says so
    with open(live_key, "w") as f:
        f.write("not a key\n")
    mark = len(gw.log())
    gw.signal(signal.SIGHUP)
    harness.wait_for(lambda: gw.log()[mark:].count("tls reload failed") == 2, 5,
                     "both workers refused the broken key")
    assert "the certificate loaded before stays" in gw.log()[mark:]
    # a key of another certificate: refused too
    replace(one[1], live_key)
    gw.signal(signal.SIGHUP)
    harness.wait_for(lambda: gw.log()[mark:].count("does not match") == 2, 5,
                     "both workers refused the other key")
    assert metric(gw, "wsgate_tls_reloads_total", result="failed") == 4
    still = [tls_client(gw.port, ctx) for _ in range(4)]
    assert {serial_of(n.sock) for n in still} == {1002}
    for cl in old + new + still:
        cl.send_frame(wsraw.OP_CLOSE, wsraw.close_payload(1000))
        assert cl.recv_frame().close_code == 1000
    assert "worker exited" not in gw.log()


def test_tls_sighup_during_startup_is_not_fatal():
    """SIGHUP sent while workers set up waits for their loop (blocked until then) and
    the master forwards it; nobody dies of the default action."""
    c = ca()
    cert, key = c.issue("gw")
    gw = harness.Gateway(flags={"--redis": "redis://127.0.0.1:1", "--log-level": "info"},
                         extra=tls_flags(cert, key), workers=2)
    gw.start(wait_ready=False)
    gw.wait_log(r"master starting id=")
    deadline = time.monotonic() + 10
    while len(gw.ready_lines()) < 2:
        assert time.monotonic() < deadline, gw.log()
        gw.signal(signal.SIGHUP)
        time.sleep(0.005)
    gw.signal(signal.SIGHUP)
    harness.wait_for(lambda: metric(gw, "wsgate_tls_reloads_total", result="ok") >= 2, 5,
                     "reloads in both workers")
    assert "worker exited" not in gw.log() and gw.proc.poll() is None, gw.log()
    # without TLS, SIGHUP is harmless too
    plain = harness.Gateway(flags={"--redis": "redis://127.0.0.1:1"}, workers=1).start()
    plain.signal(signal.SIGHUP)
    plain.wait_log(r"got SIGHUP: no TLS, nothing to reload")
    assert plain.proc.poll() is None


# --- resumption -------------------------------------------------------------------------------

def test_tls_tickets_resume_on_every_worker():
    """One ticket key for the gateway: a session from one worker resumes on the others."""
    c = ca()
    cert, key = c.issue("gw")
    gw = tls_gateway(cert, key)
    ctx = c.context()
    tries = 0
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx.minimum_version = ctx.maximum_version = version
        first = tls_client(gw.port, ctx)  # TLS 1.3 tickets come with the 101
        session = first.sock.session
        assert session is not None and session.has_ticket, version
        # Until both workers have resumed it (the kernel picks the worker: at least 8
        # tries, at most 200), every try a resumption.
        workers = set()
        for i in range(200):
            if i >= 8 and workers == {"1", "2"}:
                break
            cl = tls_client(gw.port, ctx, session=session)
            assert cl.sock.session_reused, version
            workers.add(cl.worker)
            cl.sock.close()
            tries += 1
        assert workers == {"1", "2"}, workers
        first.sock.close()
    harness.wait_for(lambda: len(re.findall(r"resumed=1", gw.log())) == tries, 5,
                     "%d resumptions logged" % tries)


# --- headless Chromium ------------------------------------------------------------------------

@harness.timeout(90)
def test_tls_chromium_opens_wss_and_gets_the_close_code():
    import test_browser as B
    assert os.path.exists(B.CHROMIUM), "%s is missing (make deps-test)" % B.CHROMIUM
    c = ca()
    cert, key = c.issue("gw")
    fl = Fleet(ids=("gwT",), extra=tls_flags(cert, key))
    gw = fl.gateways["gwT"]

    async def main():
        browser = B.Chromium(extra_args=["--ignore-certificate-errors"])
        cdp = await B.CDP.connect(browser.devtools_url())
        target = (await cdp.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
        session = (await cdp.send("Target.attachToTarget",
                                  {"targetId": target, "flatten": True}))["sessionId"]
        await cdp.send("Page.enable", session=session)
        await cdp.send("Page.addScriptToEvaluateOnNewDocument", {"source": B.RECORD_CLOSES},
                       session)
        # the demo page over https, which connects back with wss://
        await cdp.send("Page.navigate",
                       {"url": "https://127.0.0.1:%d/?group=room:9&reconnect=0" % gw.port},
                       session)

        async def wait_value(expr, pred, timeout, what):
            deadline = time.monotonic() + timeout
            while True:
                v = await cdp.evaluate(session, expr)
                if pred(v):
                    return v
                assert time.monotonic() < deadline, "timed out waiting for %s; last %r" % (
                    what, v)
                await asyncio.sleep(0.05)

        conn = await wait_value("(document.getElementById('conn') || {}).textContent",
                                lambda v: v and v not in ("-",), 20, "the connection id")
        assert await cdp.evaluate(session, "location.protocol") == "https:"
        await until(lambda: fl.listener.events("open", conn), 5, "open event of " + conn)
        oid, acks = await fl.order({"group": "room:9", "code": 4333, "reason": "wss bye"})
        assert F.ack_sums(acks) == (1, 1), acks
        await wait_value("document.title", lambda v: v == "closed 4333", 10, "closed 4333")
        closes = json.loads(await cdp.evaluate(session, "JSON.stringify(window.__closes)"))
        assert closes == [{"code": 4333, "reason": "wss bye", "wasClean": True}], closes
        await cdp.close()
        browser.kill()
    run(main())
    assert metric(gw, "wsgate_tls_handshakes_total", result="ok") >= 2  # the page, the socket


# --- deploy/: TLS terminated at the proxy, or passed through to the gateway -------------------

class TLSProxies:
    """A plain gateway and a TLS one on one redis-server, as deploy/'s TLS files expect
    them (gw1 plain, gw3 TLS; gw2 and gw4 are absent ports, down for the proxy)."""

    def __init__(self):
        import test_deploy as D
        self.D = D
        self.ca = ca()
        self.gw_cert = self.ca.issue("gateway", serial=2001)
        self.proxy_cert = self.ca.issue("proxy", serial=3001)
        redis = harness.start_redis()
        flags = {"--redis": redis.url, "--log-level": "debug"}
        self.plain = harness.Gateway(flags=dict(flags, **{"--id": "gwP"}), workers=1).start()
        self.tls = harness.Gateway(flags=dict(flags, **{"--id": "gwT"}), workers=1,
                                   extra=tls_flags(*self.gw_cert)).start()
        for gw in (self.plain, self.tls):
            lb.wait_ready(gw.admin_port)
        self.ports = {p: harness.free_port() for p in D.HAPROXY_TLS_PORTS}
        self.ports.update({lb.GW1: self.plain.port, lb.ADMIN1: self.plain.admin_port,
                           D.GW3: self.tls.port, D.ADMIN3: self.tls.admin_port})

    def check(self, front, serial, gw):
        """A wss:// client through front: the certificate it sees, an echo, the gateway
        that served it."""
        async def main():
            ws = await wss(front, self.ca.context())
            assert serial_of(ws) == serial, serial_of(ws)
            await ws.send("through %d" % front)
            assert await ws.recv() == "through %d" % front
            conn = ws.response_headers["X-Wsgate-Conn"]
            await ws.close()
            return conn
        conn = run(main())
        assert conn.startswith(gw.argv[gw.argv.index("--id") + 1] + "-"), conn

    def wait_front(self, front, proxy):
        def up():
            try:
                with tls_socket(front, self.ca.context(), timeout=1) as s:
                    s.sendall(wsraw.request(host="localhost"))
                    return wsraw.read_head(s, 1).status == 101
            except (OSError, AssertionError, ssl.SSLError):
                if proxy.proc.poll() is not None:
                    raise AssertionError(proxy.log())
                return False
        harness.wait_for(up, 10, "a 101 through port %d" % front, 0.1)


@harness.timeout(60)
def test_tls_through_haproxy_terminated_and_passed_through():
    t = TLSProxies()
    D = t.D
    d = os.path.join(harness.tmp_root(), "haproxy-tls")
    os.makedirs(d)
    pem = os.path.join(d, "proxy.pem")
    with open(pem, "w") as out:
        for part in t.proxy_cert:
            with open(part) as f:
                out.write(f.read())
    cfg = os.path.join(d, "haproxy-tls.cfg")
    D.render_tls("haproxy-tls.cfg", t.ports, cfg, {D.HAPROXY_CERT: pem})
    hap = lb.Proxy()
    hap.name, hap.log_path = "haproxy", os.path.join(d, "haproxy.log")
    hap._spawn([lb.HAPROXY_BIN, "-db", "-f", cfg], d)
    front, passthrough = t.ports[D.TLS_FRONT], t.ports[D.PASS_FRONT]
    t.wait_front(front, hap)
    t.wait_front(passthrough, hap)
    t.check(front, 3001, t.plain)  # HAProxy's certificate, a plain gateway behind
    t.check(passthrough, 2001, t.tls)  # the gateway's own certificate, through TCP
    assert "tls handshake done" in t.tls.log() and "tls handshake" not in t.plain.log()


@harness.timeout(60)
def test_tls_through_nginx_terminated_and_passed_through():
    t = TLSProxies()
    D = t.D
    for name, certs_, front in (
            ("nginx-tls.conf", {D.NGINX_CERT: t.proxy_cert[0], D.NGINX_KEY: t.proxy_cert[1]},
             D.TLS_FRONT),
            ("nginx-stream.conf", {}, D.PASS_FRONT)):
        prefix = os.path.join(harness.tmp_root(), "run-" + name)
        os.makedirs(os.path.join(prefix, "temp"))
        cfg = os.path.join(prefix, name)
        D.render_tls(name, t.ports, cfg, certs_)
        ng = lb.Proxy()
        ng.name, ng.log_path = "nginx", os.path.join(prefix, "nginx.log")
        ng._spawn(lb.nginx_argv(prefix, cfg, "daemon off;"), prefix)
        t.wait_front(t.ports[front], ng)
    t.check(t.ports[D.TLS_FRONT], 3001, t.plain)
    t.check(t.ports[D.PASS_FRONT], 2001, t.tls)
