"""--proxy-protocol: the client's address comes from a PROXY protocol header (v1 or v2)
sent by the balancer, never from the socket or a header a client can write; the
per-address limits and events use it; a bad or missing header closes the connection;
nothing after the header (an upgrade request, a TLS ClientHello) is lost; and HAProxy's
send-proxy-v2 works as written."""

import socket
import ssl
import struct

import harness
import lb
import wsraw
from fleet import Fleet
from lb import value


def v1(src, sport, dst="127.0.0.1", dport=8080, fam="TCP4"):
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def v2(src, sport, dst="::1", dport=8080, local=False):
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if local:
        return sig + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    addr = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    body = addr + struct.pack("!HH", sport, dport) + b"\x03\x00\x04abcd"  # and a TLV
    return sig + bytes([0x21, 0x21]) + struct.pack("!H", len(body)) + body


def open_with(port, header, path="/", bytewise=False):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    data = header + wsraw.request(path)
    if bytewise:
        for i in range(len(data)):
            s.sendall(data[i:i + 1])
    else:
        s.sendall(data)
    r = wsraw.read_head(s)
    return s, r


def remote_of(fl, conn):
    ev = harness.wait_for(lambda: fl.listener.events("open", conn), 5, "open event")
    return ev[0]["remote"]


@harness.timeout(40)
def test_proxy_headers_set_the_client_address():
    fl = Fleet(ids=("gwP",), extra=["--proxy-protocol"])
    port = fl.gateways["gwP"].port
    s, r = open_with(port, v1("203.0.113.7", 5555))
    assert r.status == 101, r.status_line
    assert remote_of(fl, r.header("x-wsgate-conn")) == "203.0.113.7:5555"
    c = wsraw.Client(s, r.rest, r)
    c.echo(wsraw.OP_TEXT, b"through the balancer")
    s2, r2 = open_with(port, v2("2001:db8::42", 4242), bytewise=True)
    assert r2.status == 101, r2.status_line
    assert remote_of(fl, r2.header("x-wsgate-conn")) == "[2001:db8::42]:4242"
    # LOCAL (a balancer's own health check): the socket's address stays
    s3, r3 = open_with(port, v2("::", 0, local=True))
    assert r3.status == 101 and remote_of(fl, r3.header("x-wsgate-conn")).startswith("127.0.0.1:")
    for x in (s, s2, s3):
        x.close()


@harness.timeout(40)
def test_missing_or_bad_header_is_closed_and_counted():
    fl = Fleet(ids=("gwQ",), extra=["--proxy-protocol"])
    gw = fl.gateways["gwQ"]
    bad = [wsraw.request(), b"PROXY TCP4 1.2.3.4\r\n", b"PROXY TCP9 a b 1 2\r\n" + wsraw.request(),
           b"X-Forwarded-For: 1.2.3.4\r\n" + wsraw.request()]
    for data in bad:
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        s.sendall(data)
        s.settimeout(5)
        try:
            got = s.recv(4096)
        except ConnectionResetError:
            got = b""
        assert got == b"", "an answer to a connection without a good header: %r" % got
        s.close()
    harness.wait_for(lambda: value(lb.metrics(gw.admin_port),
                                   "wsgate_proxy_protocol_errors_total") == len(bad), 5,
                     "%d proxy errors counted" % len(bad))


@harness.timeout(40)
def test_per_address_limit_uses_the_header_address():
    fl = Fleet(ids=("gwL",), flags={"--max-conns-per-ip": "2"}, extra=["--proxy-protocol"])
    port = fl.gateways["gwL"].port
    held = [open_with(port, v1("198.51.100.1", 1000 + i))[0] for i in range(2)]
    s, r = open_with(port, v1("198.51.100.1", 2000))
    assert r.status == 429 and int(r.header("retry-after")) >= 1, r.status_line
    s.close()
    s, r = open_with(port, v1("198.51.100.2", 3000))  # another client behind the same balancer
    assert r.status == 101, r.status_line
    for x in held + [s]:
        x.close()


@harness.timeout(40)
def test_proxy_header_then_tls():
    import os
    import certs
    ca = certs.CA(os.path.join(harness.tmp_root(), "ca"))
    cert, key = ca.issue("server")
    fl = Fleet(ids=("gwT",), flags={"--tls-cert": cert, "--tls-key": key},
               extra=["--proxy-protocol"])
    port = fl.gateways["gwT"].port
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    raw.sendall(v1("192.0.2.9", 7777))
    s = ca.context().wrap_socket(raw, server_hostname="localhost")
    s.sendall(wsraw.request())
    r = wsraw.read_head(s)
    assert r.status == 101, r.status_line
    assert remote_of(fl, r.header("x-wsgate-conn")) == "192.0.2.9:7777"
    s.close()


@harness.timeout(60)
def test_haproxy_send_proxy_v2_gives_the_real_client_address():
    lb.need(lb.HAPROXY_BIN)
    fl = Fleet(ids=("gwH",), extra=["--proxy-protocol"])
    gw = fl.gateways["gwH"]
    front = harness.free_port()
    cfg = ("global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 2s\n"
           "  timeout client 30s\n  timeout server 30s\nlisten ws\n  bind 127.0.0.1:%d\n"
           "  server g1 127.0.0.1:%d send-proxy-v2\n" % (front, gw.port))
    hp = TcpHAProxy(cfg, front)
    harness.wait_for(lambda: _try_open(front), 10, "a connection through HAProxy")
    c = wsraw.Client.open(front)
    remote = remote_of(fl, c.conn_id)
    # HAProxy saw the client at 127.0.0.1:<its port> and said so; not HAProxy's own port
    assert remote == "127.0.0.1:%d" % c.sock.getsockname()[1], remote
    c.close()


class TcpHAProxy(lb.Proxy):
    """HAProxy in TCP mode from a config text, in the foreground."""

    name = "haproxy"

    def __init__(self, text, port):
        import os
        d = os.path.join(harness.tmp_root(), "haproxy-pp-%d" % port)
        os.makedirs(d)
        cfg = os.path.join(d, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(text)
        self.log_path = os.path.join(d, "haproxy.log")
        self._spawn([lb.HAPROXY_BIN, "-db", "-f", cfg], d)
        self.wait_listening(port)


def _try_open(port):
    try:
        wsraw.Client.open(port).close()
        return True
    except (AssertionError, OSError):
        return False
