"""A TCP proxy on loopback that can cut chosen connections by dropping their packets.

Each accepted connection is forwarded to the upstream port. blackhole(marker) starts
dropping, in both directions, everything on the connections whose client has sent
marker (b"SUBSCRIBE": Redis subscribers), and on new ones as soon as they send it: the
TCP connections stay up, the bytes vanish, as behind a firewall that drops packets.
The peers see silence, not a reset. restore() closes the cut connections (what they
held is gone) and forwards again. Other connections are never touched.

Registered with the harness: killed (its thread stopped, sockets closed) in cleanup."""

import select
import socket
import threading

import harness


class CutProxy:
    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.port = self.lsock.getsockname()[1]
        self.marker = None  # while set, connections that sent it are cut
        self.peer = {}  # socket -> the other end
        self.sent = {}  # client socket -> bytes it sent (the first 4 KiB), for the marker
        self.client = set()  # the client-side sockets
        self.cut = set()  # client-side sockets being dropped
        self.dropped_bytes = 0
        self.cut_total = 0
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        harness._live.append(self)

    @property
    def url(self):
        return "redis://127.0.0.1:%d" % self.port

    def blackhole(self, marker=b"SUBSCRIBE"):
        with self._lock:
            self.marker = marker
            for c in list(self.client):
                if marker in self.sent.get(c, b""):
                    self._cut(c)

    def restore(self):
        with self._lock:
            self.marker = None
            for c in list(self.cut):
                self._close(c)
            self.cut.clear()

    def _cut(self, c):
        if c not in self.cut:
            self.cut.add(c)
            self.cut_total += 1

    def _close(self, s):
        other = self.peer.pop(s, None)
        for x in (s, other):
            if x is None:
                continue
            self.peer.pop(x, None)
            self.sent.pop(x, None)
            self.client.discard(x)
            self.cut.discard(x)
            try:
                x.close()
            except OSError:
                pass

    def _run(self):
        while not self._stop:
            with self._lock:
                socks = [self.lsock] + list(self.peer)
            try:
                r, _, _ = select.select(socks, [], [], 0.05)
            except (OSError, ValueError):
                continue
            for s in r:
                with self._lock:
                    if s is self.lsock:
                        self._accept()
                    elif s in self.peer:
                        self._forward(s)

    def _accept(self):
        try:
            c, _ = self.lsock.accept()
        except OSError:
            return
        try:
            u = socket.create_connection(("127.0.0.1", self.upstream), timeout=1)
        except OSError:
            c.close()
            return
        self.peer[c] = u
        self.peer[u] = c
        self.client.add(c)
        self.sent[c] = b""

    def _forward(self, s):
        try:
            data = s.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._close(s)
            return
        c = s if s in self.client else self.peer.get(s)
        if s in self.client and len(self.sent.get(s, b"")) < 4096:
            self.sent[s] = self.sent.get(s, b"") + data[:4096]
            if self.marker is not None and self.marker in self.sent[s]:
                self._cut(s)
        if c in self.cut:
            self.dropped_bytes += len(data)
            return
        try:
            self.peer[s].sendall(data)
        except (OSError, KeyError):
            self._close(s)

    def kill(self):
        self._stop = True
        self._thread.join(2)
        with self._lock:
            for s in list(self.peer):
                self._close(s)
        self.lsock.close()

    def dump(self):
        return "---- cut proxy :%d -> :%d (%d connections cut, %d bytes dropped) ----" % (
            self.port, self.upstream, self.cut_total, self.dropped_bytes)
