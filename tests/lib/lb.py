"""Helpers for the deploy, drain, load-balancer and metrics tests.

- render(): deploy/haproxy.cfg and deploy/nginx.conf pointed at test ports by plain text
  substitution of their default ports (the placeholders listed at the top of each file).
- HAProxy and Nginx: those configs run in the foreground, registered with harness so
  that their logs are printed when a test fails and they are killed (by pid) at the end.
- admin_get(), readyz(), metrics(): the gateway's admin listener; parse_metrics(): a
  strict Prometheus text-format (0.0.4) parser.
- Reconnector: an asyncio client that reconnects after a 1001 with a short random
  backoff, counting every attempt that does not get a 101.
- established(), alive(): what is left of a gateway after it exited.

Every wait polls against a deadline (harness.wait_for, fleet.until).
"""

import asyncio
import math
import os
import random
import re
import signal
import socket
import subprocess
import time

import harness
import fleet

DEPLOY = os.path.join(harness.REPO, "deploy")
HAPROXY_BIN = "/usr/sbin/haproxy"
NGINX_BIN = "/usr/sbin/nginx"

# Placeholders: the default ports written in deploy/haproxy.cfg and deploy/nginx.conf.
FRONT, STATS, GW1, ADMIN1, GW2, ADMIN2 = 8000, 8404, 8080, 9090, 8081, 9091


def render(text, ports):
    """text with "*:PORT" bound to 127.0.0.1 and each placeholder port in `ports`
    ({default: test port}) replaced where it stands as a whole number."""
    text = re.sub(r"\*:(\d+)", r"127.0.0.1:\1", text)
    rx = re.compile(r"(?<![\d.])(%s)(?![\d.])" % "|".join(str(p) for p in ports))
    return rx.sub(lambda m: str(ports[int(m.group(1))]), text)


def render_file(name, ports, dest):
    with open(os.path.join(DEPLOY, name)) as f:
        text = render(f.read(), ports)
    with open(dest, "w") as f:
        f.write(text)
    return text


def need(path):
    if not os.access(path, os.X_OK):
        raise AssertionError("%s is missing (make deps-test installs it)" % path)


# --- HTTP on loopback ----------------------------------------------------------------------

def admin_get(port, path, timeout=2.0, http="HTTP/1.1"):
    """(status, body text) of GET path on 127.0.0.1:port, or (None, error) when the
    connection fails. The admin listener answers with Connection: close; HTTP/1.0 keeps
    other servers (HAProxy's stats) from answering chunked."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError as e:
        return None, repr(e)
    try:
        s.settimeout(timeout)
        s.sendall(("GET %s %s\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                   % (path, http)).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if m and len(body) >= int(m.group(1)):
                    break
    except OSError as e:
        return None, repr(e)
    finally:
        s.close()
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None, "no complete response: %r" % data[:200]
    if re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        body = dechunk(body)
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        return None, "bad status line %r" % line
    return int(parts[1]), body.decode("utf-8", "replace")


def dechunk(body):
    out = b""
    while True:
        size, sep, rest = body.partition(b"\r\n")
        if not sep:
            raise AssertionError("truncated chunked body")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            return out
        out += rest[:n]
        body = rest[n + 2:]


def readyz(port, timeout=2.0):
    return admin_get(port, "/readyz", timeout)


def metrics(port):
    """The parsed /metrics of the admin listener on port (see parse_metrics)."""
    status, body = admin_get(port, "/metrics")
    assert status == 200, "/metrics on %d: %s %r" % (port, status, body[:300])
    return parse_metrics(body)


def wait_ready(port, timeout=10.0):
    harness.wait_for(lambda: readyz(port)[0] == 200, timeout, "/readyz 200 on %d" % port)


# --- Prometheus text format ----------------------------------------------------------------

METRIC_NAME = re.compile(r"^wsgate_[a-z_]+$")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
FLOAT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$|^[+-]?Inf$|^NaN$")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class MetricsError(AssertionError):
    pass


def _labels(text, lineno):
    """Parses '{a="x",b="y\\""}' (text starts at '{'); returns (dict, rest)."""
    out = {}
    i = 1
    while True:
        if text[i:i + 1] == "}":
            return out, text[i + 1:]
        m = LABEL_NAME.match(text, i)
        if not m:
            raise MetricsError("line %d: bad label name at %r" % (lineno, text[i:]))
        name = m.group(0)
        i = m.end()
        if text[i:i + 2] != '="':
            raise MetricsError("line %d: expected =\" after label %s" % (lineno, name))
        i += 2
        val = []
        while True:
            if i >= len(text):
                raise MetricsError("line %d: unterminated label value" % lineno)
            c = text[i]
            if c == "\\":
                nxt = text[i + 1:i + 2]
                if nxt not in ('\\', '"', 'n'):
                    raise MetricsError("line %d: bad escape \\%s" % (lineno, nxt))
                val.append("\n" if nxt == "n" else nxt)
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                raise MetricsError("line %d: newline in label value" % lineno)
            else:
                val.append(c)
                i += 1
        if name in out:
            raise MetricsError("line %d: label %s twice" % (lineno, name))
        out[name] = "".join(val)
        if text[i:i + 1] == ",":
            i += 1
            if text[i:i + 1] == "}":  # a trailing comma is allowed by the format
                return out, text[i + 1:]
        elif text[i:i + 1] != "}":
            raise MetricsError("line %d: expected , or } at %r" % (lineno, text[i:]))


HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _family_of(fams, name):
    """(family name, suffix) of a sample name: a histogram's samples are <name>_bucket,
    <name>_sum and <name>_count; every other sample carries its family's own name."""
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[:-len(suffix)]
        if name.endswith(suffix) and fams.get(base, {}).get("type") == "histogram":
            return base, suffix
    return name, ""


def _check_histogram(name, fam):
    """A histogram's series per label set (le aside): buckets with increasing le ending at
    +Inf, cumulative counts that never decrease, +Inf equal to _count, _sum present."""
    series = {}
    for key, v in fam["samples"].items():
        labels = dict(key)
        suffix = labels.pop("__suffix__")
        le = labels.pop("le", None)
        if (le is None) != (suffix != "_bucket"):
            raise MetricsError("%s%s: le belongs on buckets only" % (name, suffix))
        ser = series.setdefault(frozenset(labels.items()), {"buckets": [], "sum": None,
                                                            "count": None})
        if suffix == "_bucket":
            if not FLOAT.match(le) or le == "NaN":
                raise MetricsError("%s_bucket: le=%r is not a bound" % (name, le))
            ser["buckets"].append((float(le), v))
        else:
            ser[suffix[1:]] = v
    if not series:
        raise MetricsError("histogram %s has no samples" % name)
    for labels, ser in series.items():
        b = sorted(ser["buckets"])
        if not b or b[-1][0] != math.inf:
            raise MetricsError("histogram %s%r: no +Inf bucket" % (name, dict(labels)))
        if any(v < 0 or math.isnan(v) for _, v in b) or \
                any(b[i][1] > b[i + 1][1] for i in range(len(b) - 1)):
            raise MetricsError("histogram %s%r: buckets are not cumulative: %r"
                               % (name, dict(labels), b))
        if ser["count"] is None or ser["sum"] is None:
            raise MetricsError("histogram %s%r: _sum or _count missing" % (name, dict(labels)))
        if ser["count"] != b[-1][1]:
            raise MetricsError("histogram %s%r: _count %r is not the +Inf bucket %r"
                               % (name, dict(labels), ser["count"], b[-1][1]))


def parse_metrics(text):
    """Strict parse of Prometheus text format as wsgate writes it. Returns
    {name: {"help": str, "type": str, "samples": {frozenset(labels.items()): float}}}.
    A histogram's samples are keyed with their labels and a "__suffix__" label
    ("_bucket", "_sum" or "_count"); value() and histogram() read them.

    Rules: the body ends with a newline; every line is a comment '# HELP name text',
    '# TYPE name type' or a sample 'name{labels} value'; HELP and TYPE come once per name,
    before its samples, and all samples of a name are together; names match
    ^wsgate_[a-z_]+$; a counter's name ends in _total; values are floats; no sample
    (name + labels) twice; no timestamps; no blank lines. A histogram's samples are
    <name>_bucket{le="..."} (cumulative, increasing le, ending at +Inf), <name>_sum and
    <name>_count (equal to the +Inf bucket), together under its HELP and TYPE."""
    if not text.endswith("\n"):
        raise MetricsError("body does not end with a newline")
    fams = {}
    current = None
    done = set()  # names whose sample block is over
    for lineno, line in enumerate(text[:-1].split("\n"), 1):
        if line == "" or line != line.strip():
            raise MetricsError("line %d: blank or padded line %r" % (lineno, line))
        if line.startswith("#"):
            m = re.match(r"^# (HELP|TYPE) (\S+) (.*)$", line)
            if not m:
                raise MetricsError("line %d: comment that is neither HELP nor TYPE: %r"
                                   % (lineno, line))
            kind, name, rest = m.groups()
            if not METRIC_NAME.match(name):
                raise MetricsError("line %d: bad metric name %r" % (lineno, name))
            fam = fams.setdefault(name, {"help": None, "type": None, "samples": {}})
            if fam["samples"] or name in done:
                raise MetricsError("line %d: %s of %s after its samples" % (lineno, kind, name))
            if kind == "HELP":
                if fam["help"] is not None:
                    raise MetricsError("line %d: second HELP for %s" % (lineno, name))
                if not rest.strip():
                    raise MetricsError("line %d: empty HELP for %s" % (lineno, name))
                fam["help"] = rest
            else:
                if fam["type"] is not None:
                    raise MetricsError("line %d: second TYPE for %s" % (lineno, name))
                if rest not in TYPES:
                    raise MetricsError("line %d: bad type %r" % (lineno, rest))
                if rest == "counter" and not name.endswith("_total"):
                    raise MetricsError("line %d: counter %s does not end in _total"
                                       % (lineno, name))
                if rest != "counter" and name.endswith("_total"):
                    raise MetricsError("line %d: %s %s ends in _total" % (lineno, rest, name))
                fam["type"] = rest
            if current is not None and current != name:
                done.add(current)
            current = name
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
        if not m:
            raise MetricsError("line %d: not a sample: %r" % (lineno, line))
        name, suffix = _family_of(fams, m.group(1))
        rest = line[m.end():]
        if not METRIC_NAME.match(name):
            raise MetricsError("line %d: bad metric name %r" % (lineno, name))
        fam = fams.get(name)
        if fam is None or fam["help"] is None or fam["type"] is None:
            raise MetricsError("line %d: sample of %s before its HELP and TYPE" % (lineno, name))
        if name in done or (current is not None and current != name):
            raise MetricsError("line %d: samples of %s not together" % (lineno, name))
        current = name
        labels = {}
        if rest.startswith("{"):
            labels, rest = _labels(rest, lineno)
        if not rest.startswith(" "):
            raise MetricsError("line %d: expected one space before the value: %r"
                               % (lineno, line))
        value = rest[1:]
        if " " in value:
            raise MetricsError("line %d: extra fields (timestamp?) in %r" % (lineno, line))
        if not FLOAT.match(value):
            raise MetricsError("line %d: value %r is not a float" % (lineno, value))
        v = float(value)
        if fam["type"] == "counter" and (math.isnan(v) or v < 0):
            raise MetricsError("line %d: counter %s is %r" % (lineno, name, value))
        if fam["type"] == "histogram":
            if not suffix:
                raise MetricsError("line %d: histogram sample %s without _bucket, _sum or "
                                   "_count" % (lineno, name))
            if "__suffix__" in labels:
                raise MetricsError("line %d: reserved label __suffix__" % lineno)
            labels["__suffix__"] = suffix
        key = frozenset(labels.items())
        if key in fam["samples"]:
            raise MetricsError("line %d: sample %s%r twice" % (lineno, name, labels))
        fam["samples"][key] = v
    for name, fam in fams.items():
        if fam["help"] is None or fam["type"] is None:
            raise MetricsError("%s lacks HELP or TYPE" % name)
        if fam["type"] == "histogram":
            _check_histogram(name, fam)
    return fams


def value(fams, name, **labels):
    """The sample of name with exactly these labels; 0 for a labelled counter sample that
    is absent (a code nobody sent yet), an AssertionError for an unknown name. A
    histogram's samples are named as written: value(fams, "wsgate_x_count")."""
    base, suffix = _family_of(fams, name)
    if suffix:
        name = base
        labels["__suffix__"] = suffix
    assert name in fams, "no metric %s; have %s" % (name, sorted(fams))
    key = frozenset(labels.items())
    if key in fams[name]["samples"]:
        return fams[name]["samples"][key]
    if labels and fams[name]["type"] == "counter":
        return 0.0
    raise AssertionError("no sample %s%r; have %r" % (name, labels,
                                                    list(fams[name]["samples"])))


def histogram(fams, name, **labels):
    """A histogram's series with these labels: ([(le, cumulative count)...], sum, count)."""
    assert fams.get(name, {}).get("type") == "histogram", "no histogram %s" % name
    buckets = []
    for key, v in fams[name]["samples"].items():
        d = dict(key)
        if d.pop("__suffix__") == "_bucket":
            le = float(d.pop("le"))
            if d == labels:
                buckets.append((le, v))
    return (sorted(buckets), value(fams, name + "_sum", **labels),
            value(fams, name + "_count", **labels))


# --- HAProxy and nginx ---------------------------------------------------------------------

class Proxy:
    """A proxy process in the foreground with its output in a log file."""

    name = "proxy"

    def _spawn(self, argv, cwd):
        self.argv = argv
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=cwd)
        harness._live.append(self)

    def log(self):
        return harness.read_text(self.log_path)

    def wait_listening(self, port, timeout=10.0):
        def up():
            if self.proc.poll() is not None:
                raise AssertionError("%s exited with %s:\n%s" % (self.name, self.proc.returncode,
                                                                 self.log()))
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        harness.wait_for(up, timeout, "%s listening on %d" % (self.name, port), 0.02)

    def children(self):
        try:
            with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def kill(self):
        if self.proc is None:
            return
        kids = self.children()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        harness.kill_pids(kids)
        if not self._log.closed:
            self._log.close()

    def dump(self):
        return "---- %s log (%s) ----\n%s" % (self.name, " ".join(self.argv), self.log()[-20000:])


class HAProxy(Proxy):
    """deploy/haproxy.cfg on test ports: front (clients), stats, and gw1/gw2 as
    (listen port, admin port) pairs. Runs in the foreground (-db)."""

    name = "haproxy"

    def __init__(self, gw1, gw2):
        need(HAPROXY_BIN)
        self.front = harness.free_port()
        self.stats = harness.free_port()
        self.ports = {FRONT: self.front, STATS: self.stats, GW1: gw1[0], ADMIN1: gw1[1],
                      GW2: gw2[0], ADMIN2: gw2[1]}
        d = os.path.join(harness.tmp_root(), "haproxy-%d" % self.front)
        os.makedirs(d)
        self.cfg = os.path.join(d, "haproxy.cfg")
        render_file("haproxy.cfg", self.ports, self.cfg)
        self.log_path = os.path.join(d, "haproxy.log")
        self._spawn([HAPROXY_BIN, "-db", "-f", self.cfg], d)
        self.wait_listening(self.front)

    def server_rows(self):
        """{server name: stats CSV row (dict)} of backend wsgate."""
        status, body = admin_get(self.stats, "/stats;csv", http="HTTP/1.0")
        assert status == 200, "haproxy stats: %s %r" % (status, body[:200])
        lines = body.splitlines()
        cols = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            row = dict(zip(cols, line.split(",")))
            if row.get("pxname") == "wsgate" and row.get("svname") not in ("BACKEND", None):
                out[row["svname"]] = row
        return out

    def server_status(self):
        """{server name: status} of backend wsgate (UP, DOWN, ...)."""
        return {k: v["status"] for k, v in self.server_rows().items()}

    def wait_status(self, server, want, timeout=10.0):
        """Polls the stats until server's status starts with want ("UP", "DOWN")."""
        harness.wait_for(lambda: self.server_status().get(server, "").startswith(want),
                         timeout, "haproxy: %s %s (now %r)" % (server, want,
                                                               self.server_status()))


class Nginx(Proxy):
    """deploy/nginx.conf on test ports: front and the two gateway listen ports. Runs in
    the foreground with its prefix, pid file and error log in a temp dir."""

    name = "nginx"

    def __init__(self, gw1_port, gw2_port):
        need(NGINX_BIN)
        self.front = harness.free_port()
        self.ports = {FRONT: self.front, GW1: gw1_port, GW2: gw2_port}
        self.prefix = os.path.join(harness.tmp_root(), "nginx-%d" % self.front)
        os.makedirs(os.path.join(self.prefix, "temp"))
        self.cfg = os.path.join(self.prefix, "nginx.conf")
        render_file("nginx.conf", self.ports, self.cfg)
        self.log_path = os.path.join(self.prefix, "nginx.log")
        self._spawn(nginx_argv(self.prefix, self.cfg, "daemon off;"), self.prefix)
        self.wait_listening(self.front)


def nginx_argv(prefix, cfg, extra_globals=""):
    """nginx with every path of its own under prefix (pid file, error log, temp dirs)."""
    return [NGINX_BIN, "-p", prefix + "/", "-e", "stderr", "-c", cfg, "-g",
            "%s pid %s/nginx.pid; error_log stderr notice;" % (extra_globals,
                                                               prefix)]


# --- reconnecting clients ------------------------------------------------------------------

RECONNECT_CODES = {1001, 1012, 1013} | set(range(4000, 4500))


class Reconnector:
    """A client that stays connected: after a close with a reconnect code it waits a short
    random backoff and connects again. Records every session (conn id, close code and
    reason) and every failed attempt (anything but a 101)."""

    def __init__(self, url, backoff=(0.02, 0.2), timeout=5.0):
        self.url = url
        self.backoff = backoff
        self.timeout = timeout
        self.sessions = []  # [{"conn", "code", "reason", "opened", "closed"}]
        self.failures = []  # [(time, repr(error))]
        self.ws = None
        self.stopped = False
        self.task = None

    def start(self):
        self.task = asyncio.ensure_future(self._run())
        return self

    @property
    def conn(self):
        return self.sessions[-1]["conn"] if self.sessions and self.ws is not None else None

    @property
    def connected(self):
        return self.ws is not None and self.sessions and self.sessions[-1]["closed"] is None

    async def _run(self):
        import websockets
        while not self.stopped:
            try:
                ws = await websockets.connect(self.url, open_timeout=self.timeout,
                                              close_timeout=2, ping_interval=None)
            except Exception as e:  # noqa: BLE001 - every failed attempt is counted
                self.failures.append((time.monotonic(), repr(e)))
                await asyncio.sleep(random.uniform(*self.backoff))  # backoff, not a sync
                continue
            s = {"conn": ws.response_headers.get("X-Wsgate-Conn"), "code": None,
                 "reason": None, "opened": time.monotonic(), "closed": None}
            self.sessions.append(s)
            self.ws = ws
            try:
                while True:
                    await ws.recv()
            except websockets.ConnectionClosed as e:
                s["closed"] = time.monotonic()
                if e.rcvd is not None:
                    s["code"], s["reason"] = e.rcvd.code, e.rcvd.reason
            except Exception as e:  # noqa: BLE001
                s["closed"] = time.monotonic()
                s["reason"] = repr(e)
            self.ws = None
            if self.stopped or s["code"] not in RECONNECT_CODES:
                return
            await asyncio.sleep(random.uniform(*self.backoff))  # backoff, not a sync

    async def stop(self):
        self.stopped = True
        ws = self.ws
        if ws is not None:
            await ws.close()
        if self.task is not None:
            try:
                await asyncio.wait_for(self.task, 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self.task.cancel()


def gateway_of(conn_id):
    """The gateway id at the front of an X-Wsgate-Conn id (gw1-1-5f3a-42 → gw1)."""
    assert conn_id, "no connection id"
    return conn_id.split("-")[0]


# --- what a gateway leaves behind ----------------------------------------------------------

def tcp_rows(*ports):
    """[(state, local port, remote port)] of /proc/net/tcp{,6} rows touching any of ports."""
    ports = set(ports)
    out = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            lport = int(parts[1].rsplit(":", 1)[1], 16)
            rport = int(parts[2].rsplit(":", 1)[1], 16)
            if lport in ports or rport in ports:
                out.append((parts[3], lport, rport))
    return out


def lingering(*ports):
    """Rows in state ESTABLISHED (01) or LISTEN (0A) on any of ports."""
    return [r for r in tcp_rows(*ports) if r[0] in ("01", "0A")]


def alive(pid):
    """True when pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def ports_gateway(gid, redis_url, listen, admin, flags=None, workers=2):
    """A harness.Gateway on given ports (a restart of one on the same ports)."""
    f = {"--id": gid, "--redis": redis_url, "--listen": "127.0.0.1:%d" % listen,
         "--admin": "127.0.0.1:%d" % admin, "--log-level": "info", "--close-timeout": "1s"}
    f.update(flags or {})
    gw = harness.Gateway(flags=f, workers=workers)
    gw.port, gw.admin_port = listen, admin
    gw.log_path = os.path.join(harness.tmp_root(), "wsgate-%s-%d-%d.log"
                               % (gid, listen, len(harness._live)))
    return gw


async def until_all(pred, timeout, what):
    return await fleet.until(pred, timeout, what, 0.02)
