"""Raw-socket WebSocket helpers: arbitrary handshakes, hand-built frames, strict reads.

Nothing here is lenient: a test says exactly which bytes go on the wire and reads
exactly what comes back, with a timeout on every read.
"""

import base64
import hashlib
import os
import socket
import struct
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA


def accept_for(key):
    if isinstance(key, str):
        key = key.encode()
    return base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()


def new_key():
    return base64.b64encode(os.urandom(16)).decode()


def request(path="/", host="127.0.0.1", key=..., version="13", method="GET",
            upgrade="websocket", connection="Upgrade", extra=(), http="HTTP/1.1"):
    """An upgrade request as bytes; a header whose value is None is left out
    (key=... , the default, is a fresh random key)."""
    lines = ["%s %s %s" % (method, path, http)]
    hdrs = [("Host", host), ("Upgrade", upgrade), ("Connection", connection),
            ("Sec-WebSocket-Key", new_key() if key is ... else key),
            ("Sec-WebSocket-Version", version)]
    for name, value in list(hdrs) + list(extra):
        if value is not None:
            lines.append("%s: %s" % (name, value))
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(port, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Response:
    def __init__(self, head, rest):
        text = head.decode("iso-8859-1")
        lines = text.split("\r\n")
        self.status_line = lines[0]
        parts = lines[0].split(" ", 2)
        assert len(parts) >= 2 and parts[0].startswith("HTTP/1."), \
            "bad status line %r" % lines[0]
        self.status = int(parts[1])
        self.headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                self.headers.setdefault(name.strip().lower(), []).append(value.strip())
        self.rest = rest  # bytes read past the head (the start of the body or first frames)

    def header(self, name):
        v = self.headers.get(name.lower())
        return v[0] if v else None

    def __repr__(self):
        return "<Response %r %r>" % (self.status_line, self.headers)


def read_head(sock, timeout=5.0, limit=65536):
    """Reads up to the blank line. Returns Response; fails on EOF or timeout."""
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\r\n\r\n" not in buf:
        left = deadline - time.monotonic()
        assert left > 0, "no response head within %.1fs (got %r)" % (timeout, buf[:200])
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            raise AssertionError("no response head within %.1fs (got %r)" % (timeout, buf[:200]))
        assert chunk, "connection closed before a response head (got %r)" % buf[:200]
        buf += chunk
        assert len(buf) < limit, "response head too long"
    head, _, rest = buf.partition(b"\r\n\r\n")
    return Response(head, rest)


def send_request(port, data, bytewise=False, timeout=5.0):
    """Sends raw bytes as a request and reads the answer head. Returns (sock, Response)."""
    s = connect(port, timeout)
    try:
        if bytewise:
            for i in range(len(data)):
                s.sendall(data[i:i + 1])
        else:
            s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may answer and close before reading everything
    return s, read_head(s, timeout)


def http_status(port, data, timeout=5.0):
    s, r = send_request(port, data, timeout=timeout)
    s.close()
    return r


def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, key=None, length=None):
    """One frame as bytes. length overrides the encoded length (payload is sent as is)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = key if key is not None else os.urandom(4)
    return head + key + apply_mask(payload, key)


def apply_mask(data, key):
    if not data:
        return b""
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def close_payload(code=None, reason=b""):
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode()
    return struct.pack("!H", code) + reason


class Frame:
    def __init__(self, fin, rsv, opcode, masked, payload):
        self.fin, self.rsv, self.opcode, self.masked, self.payload = fin, rsv, opcode, masked, payload

    @property
    def close_code(self):
        assert self.opcode == OP_CLOSE
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self):
        return self.payload[2:]

    def __repr__(self):
        p = self.payload if len(self.payload) <= 40 else self.payload[:40] + b"..."
        return "<Frame op=%x fin=%d rsv=%d len=%d %r>" % (self.opcode, self.fin, self.rsv,
                                                         len(self.payload), p)


class Closed(Exception):
    """The server closed TCP (EOF or reset) where a frame was expected."""


class Client:
    """A raw WebSocket client over one socket."""

    def __init__(self, sock, buf=b"", response=None):
        self.sock = sock
        self.buf = buf
        self.response = response

    @classmethod
    def open(cls, port, path="/", timeout=5.0, **kw):
        key = new_key()
        s, r = send_request(port, request(path=path, key=key, **kw), timeout=timeout)
        assert r.status == 101, "handshake answered %r" % r.status_line
        assert r.header("sec-websocket-accept") == accept_for(key), \
            "bad Sec-WebSocket-Accept %r" % r.header("sec-websocket-accept")
        return cls(s, r.rest, r)

    @property
    def conn_id(self):
        return self.response.header("x-wsgate-conn")

    @property
    def worker(self):
        """Worker number from X-Wsgate-Conn: <gateway>-<worker>-<nonce>-<counter>."""
        return self.conn_id.split("-")[-3]

    def send(self, data):
        self.sock.sendall(data)

    def send_frame(self, *a, **kw):
        self.sock.sendall(frame(*a, **kw))

    def send_bytewise(self, data):
        for i in range(len(data)):
            self.sock.sendall(data[i:i + 1])

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(max(65536, n - len(self.buf)))
            except ConnectionResetError:
                raise Closed("connection reset by peer")
            if not chunk:
                raise Closed("EOF")
            self.buf += chunk

    def _take(self, n, deadline):
        self._fill(n, deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self, timeout=5.0):
        """The next frame; raises socket.timeout or Closed."""
        deadline = time.monotonic() + timeout
        b0, b1 = self._take(2, deadline)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8, deadline))[0]
        key = self._take(4, deadline) if b1 & 0x80 else None
        payload = self._take(n, deadline)
        if key:
            payload = apply_mask(payload, key)
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, bool(b1 & 0x80), payload)

    def recv_message(self, timeout=5.0, skip_pings=True):
        """(opcode, payload) of the next data message, reassembling fragments."""
        deadline = time.monotonic() + timeout
        op, data = None, b""
        while True:
            f = self.recv_frame(max(0.0, deadline - time.monotonic()))
            assert not f.masked, "server frame is masked: %r" % f
            assert f.rsv == 0, "server frame has RSV bits: %r" % f
            if f.opcode == OP_PING and skip_pings:
                continue
            if f.opcode == OP_CLOSE:
                raise AssertionError("expected a message, got close %s %r"
                                     % (f.close_code, f.close_reason))
            if op is None:
                assert f.opcode in (OP_TEXT, OP_BINARY), "unexpected frame %r" % f
                op = f.opcode
            else:
                assert f.opcode == OP_CONT, "unexpected frame inside message %r" % f
            data += f.payload
            if f.fin:
                return op, data

    def echo(self, opcode, payload, timeout=5.0):
        """Sends one message and asserts it comes back unchanged, as one frame."""
        if isinstance(payload, str):
            payload = payload.encode()
        self.send_frame(opcode, payload)
        f = self.recv_frame(timeout)
        assert (f.opcode, f.fin, f.rsv, f.masked) == (opcode, True, 0, False), \
            "expected an echo frame, got %r" % f
        assert f.payload == payload, "echo differs: %r" % f

    def expect_close(self, code, timeout=5.0, reply=False, eof_timeout=3.0):
        """Reads frames (data frames and pings are an error) until a close frame with
        code (None: an empty payload), then asserts nothing follows it but TCP EOF.
        reply=True answers the close with the same code first. Returns the Frame."""
        f = self.recv_frame(timeout)
        assert f.opcode == OP_CLOSE, "expected close %s, got %r" % (code, f)
        assert not f.masked and f.fin and f.rsv == 0, "bad close frame %r" % f
        assert f.close_code == code, "expected close code %s, got %s (reason %r)" % (
            code, f.close_code, f.close_reason)
        if reply:
            try:
                self.send_frame(OP_CLOSE, f.payload[:2])
            except (BrokenPipeError, ConnectionResetError):
                pass
        self.expect_eof(eof_timeout)
        return f

    def expect_eof(self, timeout=3.0):
        """Asserts that TCP closes within timeout with no more bytes before it."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("TCP still open %.1fs after close" % timeout)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(4096)
            except socket.timeout:
                raise AssertionError("TCP still open %.1fs after close" % timeout)
            except ConnectionResetError:
                chunk = b""
            if self.buf or chunk:
                raise AssertionError("bytes after the close frame: %r" % (self.buf + chunk)[:80])
            return

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
