#!/usr/bin/python3
"""wsgate benchmarks: wsgate against a typical Node.js gateway (tests/bench/peer-node).

    python3 tests/bench/bench.py --out tests/bench/results        # full run (~30 min)
    python3 tests/bench/bench.py --out DIR --smoke                # small N, 1 round, asserts sanity
    python3 tests/bench/bench.py --only group,everyone --rounds 1 # some scenarios

Every run gets a fresh redis-server and a fresh server on free ports; wsgate and the peer
alternate (A B A B ...). Load comes from build/wsload. Everything started here runs in its
own process group and is killed at the end, error or not. The tables in results.md are
generated from the runs in results.json only.
"""

import argparse
import base64
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEER_DIR = os.path.join(ROOT, "tests", "bench", "peer-node")
SERVERS = ("wsgate", "peer")
CHANNEL = "wsgate:orders"

# --- processes --------------------------------------------------------------------------------

LIVE = []  # every Popen we started; each leads its own process group


def spawn(cmd, **kw):
    p = subprocess.Popen(cmd, start_new_session=True, **kw)
    LIVE.append(p)
    return p


def kill_group(p, sig=signal.SIGKILL, wait=5.0):
    """Signal the whole process group of p (workers included), then reap p."""
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=5)


def kill_all():
    for p in reversed(LIVE):
        kill_group(p)
    LIVE.clear()


PORTS_GIVEN = set()


def free_port():
    """A free loopback port, never the same one twice in a run: the servers listen with
    SO_REUSEPORT and would share a port handed out twice instead of failing to bind."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in PORTS_GIVEN:
            PORTS_GIVEN.add(port)
            return port
    raise BenchError("no fresh loopback port in 100 tries")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class BenchError(Exception):
    pass


# --- redis and the servers --------------------------------------------------------------------

class Redis:
    def __init__(self, logdir):
        self.port = free_port()
        self.proc = spawn(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "no", "--loglevel", "warning"],
                          stdout=open(os.path.join(logdir, "redis.log"), "ab"),
                          stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = subprocess.run(["redis-cli", "-p", str(self.port), "PING"],
                               capture_output=True, text=True)
            if r.stdout.strip() == "PONG":
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise BenchError("redis-server did not start")

    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def stop(self):
        kill_group(self.proc)


class Server:
    """wsgate or the Node peer, with its stderr logged and read for readiness."""

    def __init__(self, kind, cfg, redis, workers, logpath, echo=False, drain=False, extra=(),
                 inbound=False):
        self.kind = kind
        self.port = free_port()
        self.workers = workers
        listen = f"127.0.0.1:{self.port}"
        if kind == "wsgate":
            self.cmd = [cfg.wsgate, "--listen", listen, "--workers", str(workers), "--id", "gw",
                        "--redis", redis.url(), "--events-channel", "", "--log-level", "notice"]
            if cfg.wsgate_has_admin:
                self.cmd += ["--admin", ""]  # no health/metrics listener: the peer has none
            if echo:
                self.cmd.append("--echo")
            if inbound:
                self.cmd += ["--inbound", "publish"]  # on wsgate:in, the default channel
            if drain and cfg.wsgate_has_drain_flags:
                # the peer closes everyone at once on SIGTERM: compare like with like
                self.cmd += ["--drain-spread", "0", "--drain-reason", "server shutting down"]
            self.cmd += list(extra)
            self.markers = {"worker ready": workers, "redis subscriber up (subscribed)": workers}
            self.term_marker = "draining"
        else:
            self.cmd = ["node", os.path.join(PEER_DIR, "server.js"), "--listen", listen,
                        "--workers", str(workers), "--id", "peer", "--redis", redis.url()]
            self.cmd += list(extra)
            if inbound:
                self.cmd += ["--inbound", "publish"]
            self.markers = {"worker ready": workers}
            self.term_marker = "shutting down"
        self.counts = {m: 0 for m in self.markers}
        self.term_seen = None  # monotonic time the server said it got SIGTERM
        self.exited = None     # monotonic time the server process exited
        self.cond = threading.Condition()
        self.logf = open(logpath, "ab")
        self.logf.write(("$ " + shlex.join(self.cmd) + "\n").encode())
        self.logf.flush()
        self.proc = spawn(self.cmd, stdout=self.logf, stderr=subprocess.PIPE)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        threading.Thread(target=self._wait, daemon=True).start()

    def _read(self):
        for raw in self.proc.stderr:
            now = time.monotonic()
            self.logf.write(raw)
            line = raw.decode(errors="replace")
            with self.cond:
                for m in self.markers:
                    if m in line:
                        self.counts[m] += 1
                if self.term_seen is None and self.term_marker in line:
                    self.term_seen = now
                self.cond.notify_all()
        self.logf.flush()

    def _wait(self):
        self.proc.wait()
        with self.cond:
            self.exited = time.monotonic()
            self.cond.notify_all()

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(self.counts[m] >= n for m, n in self.markers.items()):
                if self.exited is not None:
                    raise BenchError(f"{self.kind} exited during start-up (see logs)")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"{self.kind} not ready after {timeout}s: {self.counts}")
                self.cond.wait(left)

    def wait_exit(self, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.exited is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def rss(self):
        return tree_rss(self.proc.pid)

    def stop(self):
        kill_group(self.proc)
        self.reader.join(timeout=5)  # it writes to the log until the pipe closes
        self.logf.close()


def tree_pids(root):
    """root and all its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def status_kb(pid, field):
    """A /proc/PID/status field in bytes (VmRSS, VmHWM), or 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def wchar(pids):
    """Bytes written by pids (/proc/PID/io wchar: sockets, pipes and files alike)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/io") as f:
                for line in f:
                    if line.startswith("wchar:"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return total


def cpu_ns(pids):
    """CPU time in ns of every thread of pids (/proc/PID/task/TID/schedstat, first field)."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total


def tree_rss(root):
    """Summed VmRSS in bytes of root and all its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


# --- wsload -----------------------------------------------------------------------------------

def wsload_cmd(cfg, server, redis, n, path=None, publish=None, signal_term=False, ready=None,
               hold_ms=None, expect=None, code=None, reason=None, close_timeout=None,
               extra=()):
    cmd = [cfg.wsload, "--host", "127.0.0.1", "--port", str(server.port), "-n", str(n)]
    if path:
        cmd += ["--path", path]
    if ready:
        cmd += ["--ready-file", ready]
    if hold_ms is not None:
        cmd += ["--hold-ms", str(hold_ms)]
    if publish is not None:
        cmd += ["--publish", json.dumps(publish), "--redis-host", "127.0.0.1",
                "--redis-port", str(redis.port), "--channel", CHANNEL]
    if signal_term:
        cmd += ["--signal", f"{server.proc.pid}:15"]
    if expect is not None:
        cmd += ["--expect-closed", str(expect)]
    if code is not None:
        cmd += ["--expect-code", str(code)]
    if reason is not None:
        cmd += ["--expect-reason", reason]
    if close_timeout is not None:
        cmd += ["--close-timeout", str(close_timeout)]
    return cmd + list(extra)


def run_wsload(cmd, timeout, logpath, ready=None, on_ready=None, ready_timeout=None):
    """Run wsload; if ready/on_ready are given, call on_ready() once the ready file appears
    (while wsload holds its connections). Returns (json, ready_result)."""
    with open(logpath, "ab") as errf:
        errf.write(("$ " + shlex.join(cmd) + "\n").encode())
        errf.flush()
        p = spawn(cmd, stdout=subprocess.PIPE, stderr=errf)
        ready_result = None
        try:
            if ready is not None:
                deadline = time.monotonic() + (ready_timeout or timeout)
                while not os.path.exists(ready):
                    if p.poll() is not None:
                        raise BenchError(f"wsload exited ({p.returncode}) before it was ready")
                    if time.monotonic() > deadline:
                        raise BenchError("wsload not ready in time")
                    time.sleep(0.01)
                if on_ready is not None:
                    ready_result = on_ready()
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(p)
            raise BenchError(f"wsload did not finish within {timeout}s")
        finally:
            if p.poll() is None:
                kill_group(p)
            if p in LIVE:
                LIVE.remove(p)
    text = out.decode(errors="replace").strip()
    try:
        res = json.loads(text.splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError(f"wsload exit {p.returncode}, no JSON on stdout: {text[:300]!r}")
    res["_exit"] = p.returncode
    return res, ready_result


def start_background(cmd, logpath, ready, timeout):
    """Start a wsload that holds connections; return once its ready file exists."""
    errf = open(logpath, "ab")
    errf.write(("$ " + shlex.join(cmd) + " &\n").encode())
    errf.flush()
    p = spawn(cmd, stdout=subprocess.DEVNULL, stderr=errf)
    deadline = time.monotonic() + timeout
    while not os.path.exists(ready):
        if p.poll() is not None:
            raise BenchError(f"background wsload exited ({p.returncode}) before it was ready")
        if time.monotonic() > deadline:
            raise BenchError("background wsload not ready in time")
        time.sleep(0.01)
    return p


# --- helpers ----------------------------------------------------------------------------------

def pct(values, p):
    """Nearest-rank percentile."""
    v = sorted(values)
    if not v:
        return None
    k = max(0, min(len(v) - 1, int(-(-p * len(v) // 100)) - 1))
    return v[k]


def med(values):
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def settle_rss(server, samples=3, gap=0.4):
    vals = []
    for _ in range(samples):
        time.sleep(gap)
        vals.append(server.rss())
    return int(statistics.median(vals))


# --- the scenarios ----------------------------------------------------------------------------
# Each function runs one server once and returns a dict of metrics (plus raw wsload output).

class Ctx:
    def __init__(self, cfg, kind, rnd, scen):
        self.cfg, self.kind, self.rnd, self.scen = cfg, kind, rnd, scen
        self.tmp = tempfile.mkdtemp(prefix="wsbench-")
        self.logdir = os.path.join(cfg.out, "logs")
        self.tag = f"{scen}-r{rnd}-{kind}"
        self.commands = []

    def log(self, what):
        return os.path.join(self.logdir, f"{self.tag}-{what}.log")

    def ready(self, name="ready"):
        return os.path.join(self.tmp, name)

    def wsload(self, cmd, timeout, **kw):
        self.commands.append(shlex.join(cmd))
        return run_wsload(cmd, timeout, self.log("wsload"), **kw)


def with_server(ctx, workers=2, echo=False, drain=False, extra=(), inbound=False):
    redis = Redis(ctx.logdir)
    try:
        srv = Server(ctx.kind, ctx.cfg, redis, workers, ctx.log("server"), echo=echo, drain=drain,
                     extra=extra, inbound=inbound)
    except Exception:
        redis.stop()
        raise
    ctx.commands.append(shlex.join(srv.cmd))
    try:
        srv.wait_ready()
    except Exception:
        srv.stop()
        redis.stop()
        raise
    return redis, srv


def timeouts(n):
    """(ramp-timeout ms, subprocess timeout s) for n connections on this machine."""
    ramp_ms = max(20000, n * 3)           # 20k -> 60 s, 100k -> 300 s
    return ramp_ms, ramp_ms / 1000 + 120


def sc_handshake(ctx):
    n = ctx.cfg.n
    redis, srv = with_server(ctx)
    try:
        ramp_ms, to = timeouts(n)
        res, _ = ctx.wsload(wsload_cmd(ctx.cfg, srv, redis, n,
                                       extra=["--inflight", "500", "--ramp-timeout", str(ramp_ms)]),
                            to)
    finally:
        srv.stop()
        redis.stop()
    return {"n": n, "ramp_ok": get(res, "ramp", "ok"), "ramp_failed": get(res, "ramp", "failed"),
            "rate": get(res, "ramp", "rate"), "lat_p50": get(res, "ramp", "lat_p50"),
            "lat_p99": get(res, "ramp", "lat_p99"), "lat_max": get(res, "ramp", "lat_max"),
            "wsload": res}


def idle_memory(ctx, n, workers, cold, extra_load=(), publish=None, code=None, reason=None):
    """RSS of the server's process tree before and while n idle connections are held,
    opened 500 at a time. Cold: read right after the workers are ready, as a user meets
    it; warm: after 200 connections were opened and closed. Optionally finish with an
    order and collect the closes."""
    redis, srv = with_server(ctx, workers=workers)
    warm = None
    try:
        if not cold:
            warm, _ = ctx.wsload(wsload_cmd(ctx.cfg, srv, redis, 200), 60,)
            time.sleep(1.0)  # let the 200 closes finish
        before = settle_rss(srv)
        ready = ctx.ready("ready-cold" if cold else "ready-warm")
        ramp_ms, to = timeouts(n)
        cmd = wsload_cmd(ctx.cfg, srv, redis, n, ready=ready, hold_ms=4000, publish=publish,
                         expect=n if publish else None, code=code, reason=reason,
                         close_timeout=60000 if publish else None,
                         extra=["--inflight", "500", "--ramp-timeout", str(ramp_ms)]
                         + list(extra_load))
        res, after = ctx.wsload(cmd, to + 120, ready=ready, on_ready=lambda: settle_rss(srv),
                                ready_timeout=to)
    finally:
        srv.stop()
        redis.stop()
    ok = get(res, "ramp", "ok") or 0
    out = {"n": n, "workers": workers, "cold": cold, "warmup_ok": get(warm, "ramp", "ok"),
           "rss_before": before, "rss_after": after, "ramp_ok": ok,
           "bytes_per_conn": (after - before) / ok if ok else None,
           "rate": get(res, "ramp", "rate"), "wsload": res}
    if publish:
        out.update({"frames": get(res, "close", "frames"), "wrong_code": get(res, "close", "wrong_code"),
                    "frame_max": get(res, "close", "frame_max"), "tcp_max": get(res, "close", "tcp_max"),
                    "still_open": get(res, "close", "still_open")})
    return out


def cold_and_warm(ctx, n, workers, **kw):
    """One cold and one warm run, each on a fresh server; the cold run's figures lead,
    the warm run's come as warm_*. An order (kw) goes with the cold run."""
    cold = idle_memory(ctx, n, workers, True, **kw)
    kw = {k: v for k, v in kw.items() if k == "extra_load"}
    warm = idle_memory(ctx, n, workers, False, **kw)
    out = dict(cold)
    out["ramp_ok"] = min(cold["ramp_ok"], warm["ramp_ok"])
    for k in ("rss_before", "rss_after", "bytes_per_conn", "rate", "warmup_ok", "wsload"):
        out["warm_" + k] = warm[k]
    return out


def sc_memory(ctx):
    return cold_and_warm(ctx, ctx.cfg.n, 2)


def sc_memory100k(ctx):
    n = ctx.cfg.n_big
    return cold_and_warm(ctx, n, 8, extra_load=["--procs", "6", "--sources", "50"],
                         publish={"all": True, "code": 4004, "reason": "bench 100k"},
                         code=4004, reason="bench 100k")


def close_metrics(res):
    c = get(res, "close") or {}
    keys = ("frames", "frame_p50", "frame_p99", "frame_max", "tcp", "tcp_p50", "tcp_p99",
            "tcp_max", "wrong_code", "wrong_reason", "no_frame_tcp_closed", "still_open")
    out = {k: c.get(k) for k in keys}
    out["codes"] = c.get("codes")
    for k in ("frame_samples", "frame_lat", "samples"):  # raw latencies, if wsload gives them
        if isinstance(c.get(k), list):
            out["frame_samples"] = c[k]
    return out


def sc_group(ctx):
    n = ctx.cfg.n
    members = len([i for i in range(n) if i % 100 == 7])
    redis, srv = with_server(ctx)
    try:
        ramp_ms, to = timeouts(n)
        order = {"group": "g7", "code": 4001, "reason": "bench"}
        extra = ["--ramp-timeout", str(ramp_ms)]
        if ctx.cfg.wsload_samples:
            extra.append("--samples")  # raw per-connection latencies for the CDF
        res, _ = ctx.wsload(wsload_cmd(ctx.cfg, srv, redis, n, path="/?group=g{i%100}",
                                       hold_ms=1000, publish=order, expect=members, code=4001,
                                       reason="bench", close_timeout=10000, extra=extra), to + 30)
    finally:
        srv.stop()
        redis.stop()
    out = {"n": n, "members": members, "ramp_ok": get(res, "ramp", "ok")}
    out.update(close_metrics(res))
    out["wsload"] = res
    return out


def sc_everyone(ctx):
    n = ctx.cfg.n
    redis, srv = with_server(ctx)
    try:
        ramp_ms, to = timeouts(n)
        order = {"all": True, "code": 4002, "reason": "bench all"}
        res, _ = ctx.wsload(wsload_cmd(ctx.cfg, srv, redis, n, hold_ms=1000, publish=order,
                                       expect=n, code=4002, reason="bench all", close_timeout=30000,
                                       extra=["--ramp-timeout", str(ramp_ms)]), to + 60)
    finally:
        srv.stop()
        redis.stop()
    out = {"n": n, "ramp_ok": get(res, "ramp", "ok")}
    out.update(close_metrics(res))
    out["wsload"] = res
    return out


def ws_open(port, path="/"):
    """A raw WebSocket client connection; returns (socket, connection id, bytes already read)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise BenchError("probe: connection closed during the handshake")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode(errors="replace").split("\r\n")
    if " 101 " not in lines[0] + " ":
        raise BenchError(f"probe: handshake answered {lines[0]!r}")
    cid = next((ln.split(":", 1)[1].strip() for ln in lines[1:]
                if ln.lower().startswith("x-wsgate-conn:")), None)
    if not cid:
        raise BenchError("probe: no X-Wsgate-Conn in the 101")
    return s, cid, rest


def resp(*args):
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode()
        out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
    return b"".join(out)


def conn_probe(server, rsock, code, reason):
    """One connection, one {"conn": its id} order: (close-frame ms, TCP-close ms, code ok),
    both from right before PUBLISH, read with a blocking socket."""
    s, cid, buf = ws_open(server.port)
    try:
        order = json.dumps({"conn": cid, "code": code, "reason": reason})
        t0 = time.perf_counter()
        rsock.sendall(resp("PUBLISH", CHANNEL, order))
        while len(buf) < 2:
            chunk = s.recv(4096)
            if not chunk:
                return None, (time.perf_counter() - t0) * 1000, False
            buf += chunk
        t_frame = (time.perf_counter() - t0) * 1000
        while len(buf) < 2 + (buf[1] & 0x7F):
            buf += s.recv(4096)
        ok = (buf[0] & 0x0F) == 8 and len(buf) >= 4 and int.from_bytes(buf[2:4], "big") == code \
            and buf[4:2 + (buf[1] & 0x7F)] == reason.encode()
        mask = os.urandom(4)
        payload = buf[2:4]
        s.sendall(bytes([0x88, 0x80 | len(payload)]) + mask
                  + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        while s.recv(4096):
            pass
        t_tcp = (time.perf_counter() - t0) * 1000
        reply = rsock.recv(64)  # ":<receivers>"
        if not reply.startswith(b":"):
            raise BenchError(f"probe: PUBLISH answered {reply!r}")
        return t_frame, t_tcp, ok
    finally:
        s.close()


def sc_growth(ctx):
    """Latency of an order that closes one connection ({"conn": id}) and of an order for a
    group of 200, with few (200) and many (N) other connections held by a background wsload
    in 100 groups bg0..bg99. Nothing the probes' orders name is held by the background."""
    cfg = ctx.cfg
    out = {"settings": {}}
    for bg in (200, cfg.n):
        redis, srv = with_server(ctx)
        bgp = rsock = None
        try:
            ready = ctx.ready(f"bg{bg}")
            ramp_ms, to = timeouts(bg)
            bg_cmd = wsload_cmd(cfg, srv, redis, bg, path="/?group=bg{i%100}", ready=ready,
                                hold_ms=3600000, extra=["--ramp-timeout", str(ramp_ms)])
            ctx.commands.append(shlex.join(bg_cmd) + " &")
            bgp = start_background(bg_cmd, ctx.log("wsload-bg"), ready, to)
            time.sleep(0.5)
            rsock = socket.create_connection(("127.0.0.1", redis.port), timeout=10)
            one, grp = [], []
            for _ in range(cfg.growth_one):
                f, t, ok = conn_probe(srv, rsock, 4005, "one")
                one.append({"frame": f, "tcp": t, "ok": ok})
            grp_cmd = wsload_cmd(cfg, srv, redis, 200, path="/?group=probe",
                                 publish={"group": "probe", "code": 4006, "reason": "group"},
                                 expect=200, code=4006, reason="group", close_timeout=5000)
            ctx.commands.append(shlex.join(grp_cmd))
            for _ in range(cfg.growth_group):
                res, _ = run_wsload(grp_cmd, 60, ctx.log("wsload-probe"))
                grp.append({k: get(res, "close", k) for k in ("frames", "frame_p50", "frame_p99",
                                                               "frame_max", "tcp_p99", "wrong_code")})
            alive = bgp.poll() is None
        finally:
            if rsock is not None:
                rsock.close()
            if bgp is not None:
                kill_group(bgp)
                LIVE.remove(bgp)
            srv.stop()
            redis.stop()
        lat1 = [x["frame"] for x in one if x["frame"] is not None]
        out["settings"][str(bg)] = {
            "background": bg, "background_alive": alive, "one": one, "group": grp,
            "one_p50": pct(lat1, 50), "one_p99": pct(lat1, 99), "one_samples": len(lat1),
            "one_tcp_p99": pct([x["tcp"] for x in one if x["frame"] is not None], 99),
            "group_p99": med([x["frame_p99"] for x in grp]),
            "one_ok": sum(1 for x in one if x["ok"]),
            "group_frames_ok": sum(1 for x in grp if x["frames"] == 200),
            "wrong_code": sum((x["wrong_code"] or 0) for x in grp) + sum(1 for x in one if not x["ok"]),
        }
    lo, hi = out["settings"]["200"], out["settings"][str(cfg.n)]
    out["one_p99_small"], out["one_p99_big"] = lo["one_p99"], hi["one_p99"]
    out["group_p99_small"], out["group_p99_big"] = lo["group_p99"], hi["group_p99"]
    out["one_ratio"] = (hi["one_p99"] / lo["one_p99"]) if lo["one_p99"] and hi["one_p99"] is not None else None
    out["group_ratio"] = ((hi["group_p99"] / lo["group_p99"])
                          if lo["group_p99"] and hi["group_p99"] is not None else None)
    out["wrong_code"] = lo["wrong_code"] + hi["wrong_code"]
    out["probes_ok"] = all(s["one_ok"] == len(s["one"]) and s["group_frames_ok"] == len(s["group"])
                           and s["background_alive"] for s in (lo, hi))
    return out


def fanout(ctx, size, binary, peak, body=None, deflate=False, tag=""):
    """N connections in group "fan"; one send order of size bytes to the group. The
    server's CPU time (all threads of all its processes) and bytes written (wchar) are
    read once the connections are idle and again when wsload's watch ended (its
    --done-file, connections still open), and its RSS then too. With peak, each server
    process's peak RSS (VmHWM, reset through clear_refs once the connections are idle) is
    read then too: the sum of the peaks over the sum of the resident sizes before
    PUBLISH. body: the message (default: size letters); deflate: the server compresses
    (wsgate --deflate, the peer's perMessageDeflate) and wsload offers it."""
    n = ctx.cfg.n
    extra = (["--deflate"] if ctx.kind == "wsgate" else ["--deflate", "1"]) if deflate else []
    redis, srv = with_server(ctx, extra=extra)
    body = body if body is not None else bytes(0x61 + i % 26 for i in range(size))
    order = {"op": "send", "id": "fan", "group": "fan"}
    if binary:
        order["binary"] = base64.b64encode(body).decode()
    else:
        order["text"] = body.decode()
    base = {}
    ramp_ms, to = timeouts(n)
    ready, done = ctx.ready("ready" + tag), ctx.ready("done" + tag)

    def on_ready():
        time.sleep(0.5)
        base["pids"] = pids = tree_pids(srv.proc.pid)
        if peak:
            for pid in pids:
                try:
                    with open(f"/proc/{pid}/clear_refs", "w") as f:
                        f.write("5")  # reset VmHWM to the current RSS
                except OSError as e:
                    raise BenchError(f"clear_refs of {pid}: {e}")
        base["rss"] = sum(status_kb(pid, "VmRSS") for pid in pids)
        base["cpu"] = cpu_ns(pids)
        base["wchar"] = wchar(pids)
        deadline = time.monotonic() + 90
        while not os.path.exists(done):
            if time.monotonic() > deadline:
                raise BenchError("wsload's watch did not end in time")
            time.sleep(0.005)
        base["cpu_after"] = cpu_ns(pids)
        base["wchar_after"] = wchar(pids)
        base["hwm"] = sum(status_kb(pid, "VmHWM") for pid in pids)
        base["rss_after"] = sum(status_kb(pid, "VmRSS") for pid in pids)

    try:
        res, _ = ctx.wsload(wsload_cmd(ctx.cfg, srv, redis, n, path="/?group=fan", ready=ready,
                                       hold_ms=1500, publish=order, close_timeout=60000,
                                       extra=["--ramp-timeout", str(ramp_ms), "--expect-messages",
                                              str(n), "--expect-size", str(size),
                                              "--done-file", done]
                                       + (["--deflate"] if deflate else [])),
                            to + 90, ready=ready, on_ready=on_ready, ready_timeout=to)
    finally:
        srv.stop()
        redis.stop()
    m = get(res, "messages") or {}
    out = {"n": n, "size": size, "ramp_ok": get(res, "ramp", "ok"),
           "receivers": get(res, "action", "receivers")}
    for k in ("delivered", "connections", "duplicated_connections", "wrong_size", "before_t0",
              "text", "binary", "lat_p50", "lat_p99", "lat_max", "rate", "compressed",
              "wire_bytes"):
        out[k] = m.get(k)
    out["close_frames"] = get(res, "close", "frames")
    out["timed_out"] = get(res, "close", "timed_out")
    cpu = base["cpu_after"] - base["cpu"]
    out["cpu_ms"] = cpu / 1e6
    out["cpu_us_per_msg"] = cpu / 1e3 / out["delivered"] if out["delivered"] else None
    out["written_per_msg"] = ((base["wchar_after"] - base["wchar"]) / out["delivered"]
                              if out["delivered"] else None)
    out["payload_per_msg"] = (out["wire_bytes"] / out["delivered"]
                              if out["delivered"] and out["wire_bytes"] is not None else None)
    out["rss_growth"] = base["rss_after"] - base["rss"]
    if peak:
        out["rss_before"], out["rss_peak"] = base["rss"], base["hwm"]
        out["rss_peak_increase"] = base["hwm"] - base["rss"]
    out["wsload"] = res
    return out


def sc_fanout(ctx):
    return fanout(ctx, 128, False, False)


def sc_fanout64k(ctx):
    return fanout(ctx, 65536, True, True)


def json_message(size):
    """size bytes of JSON (ASCII), the kind of message pushed to browsers."""
    items, total, i = [], 2, 0
    while total < size:
        item = json.dumps({"id": i, "user": f"user{i % 37}", "event": "price.update",
                           "price": round(100 + i * 0.37, 2), "qty": (i * 7919) % 1000,
                           "ts": 1764892800000 + i * 17})
        items.append(item)
        total += len(item) + 1
        i += 1
    return ("[" + ",".join(items) + "]")[:size].encode()


DEFLATE_KEYS = ("delivered", "connections", "wrong_size", "duplicated_connections", "before_t0",
                "close_frames", "compressed", "written_per_msg", "payload_per_msg",
                "cpu_us_per_msg", "rate", "lat_max", "rss_growth")


def sc_deflate(ctx):
    """Fan-out of a 2 KiB JSON message to N, without and with permessage-deflate (wsload
    offers it; wsgate --deflate compresses once per worker, the peer's ws once per
    connection): bytes written per delivered message, CPU per delivered message, and
    the RSS the server holds once the message went out."""
    out = {"n": ctx.cfg.n, "size": 2048}
    body = json_message(2048)
    for mode in ("plain", "deflate"):
        m = fanout(ctx, 2048, False, False, body=body, deflate=mode == "deflate", tag=mode)
        kill_all()
        for k in DEFLATE_KEYS:
            out[f"{mode}_{k}"] = m.get(k)
        out[f"{mode}_wsload"] = m["wsload"]
    return out


def sc_drain(ctx):
    n = ctx.cfg.n
    redis, srv = with_server(ctx, drain=True)
    try:
        ramp_ms, to = timeouts(n)
        reason = "server shutting down" if (ctx.kind == "peer" or ctx.cfg.wsgate_has_drain_flags) else None
        res, _ = ctx.wsload(wsload_cmd(ctx.cfg, srv, redis, n, hold_ms=1000, signal_term=True,
                                       expect=n, code=1001, reason=reason, close_timeout=30000,
                                       extra=["--ramp-timeout", str(ramp_ms)]), to + 60)
        exited = srv.wait_exit(40)
        exit_code = srv.proc.returncode if exited else None
        exit_ms = None
        if exited and srv.term_seen is not None:
            exit_ms = (srv.exited - srv.term_seen) * 1000
    finally:
        srv.stop()
        redis.stop()
    out = {"n": n, "ramp_ok": get(res, "ramp", "ok"), "exited": exited, "exit_code": exit_code,
           "exit_ms": exit_ms}
    out.update(close_metrics(res))
    out["wsload"] = res
    return out


def sc_echo(ctx):
    """conns connections each echo msgs messages of size bytes, one at a time. The
    server's CPU time (all threads of all its processes) is read during the hold between
    the ramp and the echo, and again when the echo is over (wsload's --done-file)."""
    conns, msgs, size = ctx.cfg.echo
    redis, srv = with_server(ctx, echo=True)
    ready, done = ctx.ready(), ctx.ready("done")
    base = {}

    def on_ready():
        time.sleep(0.3)  # the echo starts 1 s after the ramp (--hold-ms)
        base["pids"] = pids = tree_pids(srv.proc.pid)
        base["cpu"] = cpu_ns(pids)
        deadline = time.monotonic() + 300
        while not os.path.exists(done):
            if time.monotonic() > deadline:
                raise BenchError("the echo did not end in time")
            time.sleep(0.005)
        base["cpu_after"] = cpu_ns(pids)

    try:
        res, _ = ctx.wsload(wsload_cmd(ctx.cfg, srv, redis, conns, ready=ready, hold_ms=1000,
                                       extra=["--echo", str(msgs), "--size", str(size),
                                              "--done-file", done]),
                            300, ready=ready, on_ready=on_ready, ready_timeout=120)
    finally:
        srv.stop()
        redis.stop()
    out = {"conns": conns, "per_conn": msgs, "size": size,
           "messages": get(res, "echo", "messages"), "rate": get(res, "echo", "rate"),
           "seconds": get(res, "echo", "seconds"), "failures": get(res, "echo", "failures"),
           "wsload": res}
    cpu = base["cpu_after"] - base["cpu"]
    out["cpu_ms"] = cpu / 1e6
    out["cpu_us_per_msg"] = cpu / 1e3 / out["messages"] if out["messages"] else None
    return out


def reset_peaks(pids):
    """Resets each process's VmHWM to its current RSS; returns the summed VmRSS."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError as e:
            raise BenchError(f"clear_refs of {pid}: {e}")
    return sum(status_kb(pid, "VmRSS") for pid in pids)


def run_tool(ctx, cmd, timeout, what):
    """Run build/wsredis to the end; its JSON (last stdout line)."""
    ctx.commands.append(shlex.join(cmd))
    with open(ctx.log(what), "ab") as errf:
        errf.write(("$ " + shlex.join(cmd) + "\n").encode())
        errf.flush()
        p = spawn(cmd, stdout=subprocess.PIPE, stderr=errf)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(p)
            raise BenchError(f"{what} did not finish within {timeout}s")
        finally:
            if p.poll() is None:
                kill_group(p)
            if p in LIVE:
                LIVE.remove(p)
    try:
        return json.loads(out.decode(errors="replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError(f"{what} exit {p.returncode}, no JSON on stdout")


def sc_small_orders(ctx):
    """N connections; build/wsredis publishes R send orders a second for S seconds, each to
    one connection by id (order k to connection k mod N, ids from wsload --ids-file), its
    text stamped with the publish time; wsload --stamped times every message from its
    stamp and checks each connection gets its orders once each, in order. Server CPU from
    just before the first PUBLISH to the end of wsload's watch."""
    cfg = ctx.cfg
    n, rate, secs = cfg.n, cfg.orders[0], cfg.orders[1]
    total = rate * secs
    redis, srv = with_server(ctx)
    ids, done, base = ctx.ready("ids"), ctx.ready("done"), {}
    ramp_ms, to = timeouts(n)

    def on_ready():
        time.sleep(0.5)
        base["pids"] = pids = tree_pids(srv.proc.pid)
        base["rss"] = reset_peaks(pids)
        base["cpu"] = cpu_ns(pids)
        base["pub"] = run_tool(ctx, [cfg.wsredis, "pub", "--port", str(redis.port), "--ids-file", ids,
                                     "--rate", str(rate), "--seconds", str(secs), "--size", "128",
                                     "--channel", CHANNEL, "--worker-channels", "1"],
                                    secs + 90, "wsredis")
        deadline = time.monotonic() + 120
        while not os.path.exists(done):
            if time.monotonic() > deadline:
                raise BenchError("wsload's watch did not end in time")
            time.sleep(0.005)
        base["cpu_after"] = cpu_ns(pids)
        base["hwm"] = sum(status_kb(pid, "VmHWM") for pid in pids)

    try:
        res, _ = ctx.wsload(wsload_cmd(ctx.cfg, srv, redis, n, close_timeout=(secs + 100) * 1000,
                                       extra=["--ids-file", ids, "--ramp-timeout", str(ramp_ms),
                                              "--stamped", "--expect-messages", str(total),
                                              "--expect-size", "128", "--done-file", done]),
                            to + secs + 200, ready=ids, on_ready=on_ready, ready_timeout=to)
    finally:
        srv.stop()
        redis.stop()
    m, st, pub = get(res, "messages") or {}, get(res, "messages", "stamped") or {}, base["pub"]
    out = {"n": n, "orders": total, "target_rate": rate, "seconds": secs,
           "ramp_ok": get(res, "ramp", "ok"), "published": pub.get("published"),
           "publish_rate": pub.get("rate"), "publish_max_lag_ms": pub.get("max_lag_ms"),
           "publish_errors": pub.get("errors"), "receivers": pub.get("receivers"),
           "publisher_cpu_s": pub.get("cpu_s"), "publisher_wall_s": pub.get("wall_s"),
           "delivered": m.get("delivered"), "stamped": st.get("messages"),
           "bad_stamp": st.get("bad"), "out_of_sequence": st.get("out_of_sequence"),
           "conn_min": m.get("conn_min"), "conn_max": m.get("conn_max"),
           "wrong_size": m.get("wrong_size"), "close_frames": get(res, "close", "frames"),
           "timed_out": get(res, "close", "timed_out"),
           "lat_p50": st.get("lat_p50"), "lat_p99": st.get("lat_p99"), "lat_max": st.get("lat_max")}
    span = ((st.get("t_last") or 0) - (pub.get("t_first") or 0)) / 1e9
    out["rate"] = out["delivered"] / span if out["delivered"] and span > 0 else None
    cpu = base["cpu_after"] - base["cpu"]
    out["cpu_ms"] = cpu / 1e6
    out["cpu_s_per_million"] = cpu / 1e9 / (out["delivered"] / 1e6) if out["delivered"] else None
    out["cpu_us_per_msg"] = cpu / 1e3 / out["delivered"] if out["delivered"] else None
    out["rss_before"], out["rss_peak_increase"] = base["rss"], base["hwm"] - base["rss"]
    out["publisher_busy"] = (pub["cpu_s"] / pub["wall_s"]) if pub.get("wall_s") else None
    out["wsload"], out["wsredis"] = res, pub
    return out


def sc_inbound(ctx, which="inbound"):
    """N clients (?user=u<i>) each send R stamped 128-byte text messages a second for S
    seconds; the server publishes each on wsgate:in (wsgate --inbound publish, the peer
    --inbound publish), where build/wsredis sub counts them, checks every client's arrive
    once each in order and times each from its stamp. Server CPU from just before the
    first message to the subscriber's end."""
    cfg = ctx.cfg
    n, (rate, secs) = cfg.n, getattr(cfg, which)
    per_conn = rate * secs
    total = n * per_conn
    redis, srv = with_server(ctx, inbound=True)
    sready, ready, stop, base = ctx.ready("sub-ready"), ctx.ready(), ctx.ready("stop"), {}
    ramp_ms, to = timeouts(n)
    sub_cmd = [cfg.wsredis, "sub", "--port", str(redis.port), "--channel", "wsgate:in",
               "--expect", str(total), "--conns", str(n), "--per-conn", str(per_conn),
               "--ready-file", sready, "--idle-ms", "5000", "--timeout-ms", str((secs * 4 + 150) * 1000)]
    ctx.commands.append(shlex.join(sub_cmd) + " &")
    subf = open(ctx.log("wsredis"), "ab")
    subf.write(("$ " + shlex.join(sub_cmd) + " &\n").encode())
    subf.flush()
    sub = spawn(sub_cmd, stdout=subprocess.PIPE, stderr=subf)

    def on_ready():  # the sending starts after the 1 s hold
        base["pids"] = pids = tree_pids(srv.proc.pid)
        base["rss"] = reset_peaks(pids)
        base["cpu"] = cpu_ns(pids)
        try:
            out, _ = sub.communicate(timeout=secs * 4 + 160)
        except subprocess.TimeoutExpired:
            raise BenchError("the subscriber did not finish in time")
        finally:
            base["cpu_after"] = cpu_ns(pids)
            base["hwm"] = sum(status_kb(pid, "VmHWM") for pid in pids)
            with open(stop, "w") as f:
                f.write("stop\n")
        try:
            base["sub"] = json.loads(out.decode(errors="replace").strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BenchError(f"wsredis sub exit {sub.returncode}, no JSON on stdout")

    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sready):
            if sub.poll() is not None or time.monotonic() > deadline:
                raise BenchError("wsredis sub did not subscribe")
            time.sleep(0.01)
        res, _ = ctx.wsload(wsload_cmd(ctx.cfg, srv, redis, n, path="/?user=u{i}", ready=ready,
                                       hold_ms=1000, close_timeout=(secs * 4 + 200) * 1000,
                                       extra=["--ramp-timeout", str(ramp_ms), "--send-rate", str(rate),
                                              "--send-seconds", str(secs), "--send-size", "128",
                                              "--stop-file", stop]),
                            to + secs * 4 + 250, ready=ready, on_ready=on_ready, ready_timeout=to)
    finally:
        if sub.poll() is None:
            kill_group(sub)
        if sub in LIVE:
            LIVE.remove(sub)
        subf.close()
        srv.stop()
        redis.stop()
    snd, sb = get(res, "send") or {}, base["sub"]
    out = {"n": n, "per_conn": per_conn, "expected": total, "target_rate": n * rate, "seconds": secs,
           "ramp_ok": get(res, "ramp", "ok"), "sent": snd.get("messages"),
           "send_skipped": snd.get("skipped"), "send_rate": snd.get("rate"),
           "send_max_lag_ms": snd.get("max_lag_ms"), "received": sb.get("received"),
           "bad": sb.get("bad"), "duplicates": sb.get("duplicates"), "gaps": sb.get("gaps"),
           "conns_complete": sb.get("conns_complete"), "sub_timed_out": sb.get("timed_out"),
           "subscriber_cpu_s": sb.get("cpu_s"), "subscriber_wall_s": sb.get("wall_s"),
           "lat_p50": sb.get("lat_p50"), "lat_p99": sb.get("lat_p99"), "lat_max": sb.get("lat_max")}
    span = ((sb.get("t_last") or 0) - (snd.get("t_first") or 0)) / 1e9
    out["rate"] = out["received"] / span if out["received"] and span > 0 else None
    cpu = base["cpu_after"] - base["cpu"]
    out["cpu_ms"] = cpu / 1e6
    out["cpu_us_per_msg"] = cpu / 1e3 / out["received"] if out["received"] else None
    out["lost"] = (out["sent"] - out["received"]) if out["sent"] is not None and out["received"] is not None else None
    out["rss_before"], out["rss_peak_increase"] = base["rss"], base["hwm"] - base["rss"]
    out["subscriber_busy"] = (sb["cpu_s"] / sb["wall_s"]) if sb.get("wall_s") else None
    out["wsload"], out["wsredis"] = res, sb
    return out


SCENARIOS = [
    # name, function, servers, title
    ("handshake", sc_handshake, SERVERS, "1. Handshake rate"),
    ("memory", sc_memory, SERVERS, "2. Idle memory"),
    ("memory100k", sc_memory100k, SERVERS, "2b. 100k idle, 8 workers, all closed"),
    ("group", sc_group, SERVERS, "3. One group"),
    ("everyone", sc_everyone, SERVERS, "4. Everyone"),
    ("growth", sc_growth, SERVERS, "5. Growth"),
    ("drain", sc_drain, SERVERS, "6. Drain (SIGTERM)"),
    ("echo", sc_echo, SERVERS, "7. Echo"),
    ("fanout", sc_fanout, SERVERS, "8. Fan-out, 128 B"),
    ("fanout64k", sc_fanout64k, SERVERS, "9. Fan-out, 64 KiB"),
    ("small_orders", sc_small_orders, SERVERS, "10. Many small orders"),
    ("inbound", sc_inbound, SERVERS, "11. Inbound, publish"),
    ("inbound_light", lambda ctx: sc_inbound(ctx, "inbound_light"), SERVERS,
     "11b. Inbound, publish, lighter"),
    ("deflate", sc_deflate, SERVERS, "12. Fan-out, 2 KiB JSON, permessage-deflate off/on"),
]


# --- sanity checks (asserted in --smoke, reported always) --------------------------------------

def sanity(scen, m, cfg):
    """List of problems with one run's metrics."""
    bad = []

    def want(cond, what):
        if not cond:
            bad.append(what)

    if scen in ("handshake", "memory", "memory100k", "group", "everyone", "drain"):
        want(m.get("ramp_ok") == m.get("n"), f"ramp ok {m.get('ramp_ok')} != {m.get('n')}")
    if scen == "group":
        want(m.get("frames") == m["members"], f"frames {m.get('frames')} != {m['members']}")
        want(m.get("still_open") == m["n"] - m["members"],
             f"still_open {m.get('still_open')} != {m['n'] - m['members']}")
    if scen in ("everyone", "drain", "memory100k"):
        want(m.get("frames") == m.get("n"), f"frames {m.get('frames')} != {m.get('n')}")
    if scen in ("group", "everyone", "drain", "memory100k"):
        want(m.get("wrong_code") == 0, f"wrong_code {m.get('wrong_code')}")
    if scen in ("group", "everyone", "drain"):
        want(not m.get("wrong_reason"), f"wrong_reason {m.get('wrong_reason')}")
    if scen == "drain":
        want(m.get("exited") and m.get("exit_code") == 0,
             f"server exit {m.get('exit_code')} (exited={m.get('exited')})")
    if scen == "growth":
        want(m.get("probes_ok"), "a growth probe missed its closes")
        want(m.get("wrong_code") == 0, f"growth wrong_code {m.get('wrong_code')}")
    if scen in ("fanout", "fanout64k"):
        n = m.get("n")
        want(m.get("ramp_ok") == n, f"ramp ok {m.get('ramp_ok')} != {n}")
        want(m.get("delivered") == n and m.get("connections") == n,
             f"delivered {m.get('delivered')} to {m.get('connections')} connections, not {n} once each")
        for k in ("duplicated_connections", "wrong_size", "before_t0", "close_frames"):
            want(m.get(k) == 0, f"{k} {m.get(k)}")
        want(m.get("text" if scen == "fanout" else "binary") == n, "wrong message type")
    if scen == "deflate":
        n = m.get("n")
        for mode in ("plain", "deflate"):
            want(m.get(f"{mode}_delivered") == n and m.get(f"{mode}_connections") == n,
                 f"{mode}: delivered {m.get(f'{mode}_delivered')} to "
                 f"{m.get(f'{mode}_connections')} connections, not {n} once each")
            for k in ("duplicated_connections", "wrong_size", "before_t0", "close_frames"):
                want(m.get(f"{mode}_{k}") == 0, f"{mode} {k} {m.get(f'{mode}_{k}')}")
        want(m.get("plain_compressed") == 0, "compressed messages without deflate")
        want(m.get("deflate_compressed") == n,
             f"deflate: {m.get('deflate_compressed')} compressed of {n}")
    if scen == "echo":
        want(m.get("messages") == m["conns"] * m["per_conn"] and not m.get("failures"),
             f"echo messages {m.get('messages')} failures {m.get('failures')}")
    if scen == "small_orders":
        n, total = m.get("n"), m.get("orders")
        want(m.get("ramp_ok") == n, f"ramp ok {m.get('ramp_ok')} != {n}")
        want(m.get("published") == total and m.get("publish_errors") == 0,
             f"published {m.get('published')} of {total}, {m.get('publish_errors')} refused by Redis")
        # the publisher must not be what limits the rate
        want((m.get("publish_rate") or 0) >= 0.95 * m["target_rate"],
             f"publisher reached {m.get('publish_rate')}/s of {m['target_rate']}/s")
        want(m.get("delivered") == total and m.get("stamped") == total,
             f"delivered {m.get('delivered')} ({m.get('stamped')} stamped) of {total}")
        for k in ("bad_stamp", "out_of_sequence", "wrong_size", "close_frames"):
            want(m.get(k) == 0, f"{k} {m.get(k)}")
        if total % n == 0:
            want(m.get("conn_min") == m.get("conn_max") == total // n,
                 f"per connection {m.get('conn_min')}..{m.get('conn_max')}, not {total // n} each")
    if scen in ("inbound", "inbound_light"):
        n, total = m.get("n"), m.get("expected")
        want(m.get("ramp_ok") == n, f"ramp ok {m.get('ramp_ok')} != {n}")
        want(m.get("sent") == total and m.get("send_skipped") == 0,
             f"sent {m.get('sent')} of {total} ({m.get('send_skipped')} skipped)")
        want((m.get("send_rate") or 0) >= 0.95 * m["target_rate"],
             f"wsload sent {m.get('send_rate')}/s of {m['target_rate']}/s")
        want(m.get("received") == total, f"subscriber got {m.get('received')} of {total}")
        for k in ("bad", "duplicates", "gaps"):
            want(m.get(k) == 0, f"{k} {m.get(k)}")
        want(m.get("conns_complete") == n, f"{m.get('conns_complete')} of {n} clients complete")
    return bad


# --- report -----------------------------------------------------------------------------------

def fmt(v, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if abs(v) >= 100:
            s = f"{v:,.0f}"
        elif abs(v) >= 10:
            s = f"{v:.1f}"
        else:
            s = f"{v:.2f}"
    else:
        s = f"{v:,}" if isinstance(v, int) else str(v)
    return s + (f" {unit}" if unit else "")


# Table rows: scenario, metric label, metric key, unit, target text, check(ws, peer, ratio, runs)
def all_equal(runs, key, value):
    vals = [r["metrics"].get(key) for r in runs]
    return bool(vals) and all(v == value for v in vals)


ROWS = [
    ("handshake", "handshakes/s", "rate", "/s", "≥ 3.5× peer", lambda w, p, r, runs: r is not None and r >= 3.5),
    ("handshake", "handshake latency p50", "lat_p50", "ms", "", None),
    ("handshake", "handshake latency p99", "lat_p99", "ms", "< 80 ms", lambda w, p, r, runs: w is not None and w < 80),
    ("memory", "cold: RSS with workers ready", "rss_before", "B", "", None),
    ("memory", "cold: RSS with N idle", "rss_after", "B", "", None),
    ("memory", "cold: bytes per idle connection", "bytes_per_conn", "B", "≤ 429 B (uWebSockets)", lambda w, p, r, runs: w is not None and w <= 429),
    ("memory", "warm: RSS after warm-up", "warm_rss_before", "B", "", None),
    ("memory", "warm: RSS with N idle", "warm_rss_after", "B", "", None),
    ("memory", "warm: bytes per idle connection", "warm_bytes_per_conn", "B", "≤ 1 KiB", lambda w, p, r, runs: w is not None and w <= 1024),
    ("memory100k", "connections opened (cold and warm runs)", "ramp_ok", "", "= N", lambda w, p, r, runs: all(x["metrics"].get("ramp_ok") == x["metrics"].get("n") for x in runs)),
    ("memory100k", "cold: bytes per idle connection", "bytes_per_conn", "B", "≤ 441 B (uWebSockets)", lambda w, p, r, runs: w is not None and w <= 441),
    ("memory100k", "warm: bytes per idle connection", "warm_bytes_per_conn", "B", "≤ 1 KiB", lambda w, p, r, runs: w is not None and w <= 1024),
    ("memory100k", "handshakes/s (8 workers, cold)", "rate", "/s", "", None),
    ("memory100k", "close frames received", "frames", "", "= N", lambda w, p, r, runs: all(x["metrics"].get("frames") == x["metrics"].get("n") for x in runs)),
    ("memory100k", "wrong codes", "wrong_code", "", "0", lambda w, p, r, runs: all_equal(runs, "wrong_code", 0)),
    ("memory100k", "last close frame", "frame_max", "ms", "", None),
    ("memory100k", "last TCP close", "tcp_max", "ms", "", None),
    ("group", "close frame p50", "frame_p50", "ms", "", None),
    ("group", "close frame p99", "frame_p99", "ms", "≤ 0.5× peer", lambda w, p, r, runs: r is not None and r <= 0.5),
    ("group", "TCP close p99", "tcp_p99", "ms", "< 15 ms", lambda w, p, r, runs: w is not None and w < 15),
    ("group", "close frames received", "frames", "", "= group size", lambda w, p, r, runs: all(x["metrics"].get("frames") == x["metrics"].get("members") for x in runs)),
    ("group", "other connections still open", "still_open", "", "= N − group", lambda w, p, r, runs: all(x["metrics"].get("still_open") == x["metrics"]["n"] - x["metrics"]["members"] for x in runs)),
    ("everyone", "last close frame (frame_max)", "frame_max", "ms", "≤ 300 ms", lambda w, p, r, runs: w is not None and w <= 300),
    ("everyone", "last TCP close (tcp_max)", "tcp_max", "ms", "≤ 800 ms", lambda w, p, r, runs: w is not None and w <= 800),
    ("everyone", "close frame p99", "frame_p99", "ms", "", None),
    ("everyone", "close frames received", "frames", "", "= N", lambda w, p, r, runs: all(x["metrics"].get("frames") == x["metrics"].get("n") for x in runs)),
    ("everyone", "wrong codes", "wrong_code", "", "0", lambda w, p, r, runs: all_equal(runs, "wrong_code", 0)),
    ("growth", "one-connection order p99, 200 held", "one_p99_small", "ms", "", None),
    ("growth", "one-connection order p99, N held", "one_p99_big", "ms", "", None),
    ("growth", "one-connection p99 ratio N/200", "one_ratio", "", "≤ 1.2", lambda w, p, r, runs: w is not None and w <= 1.2),
    ("growth", "group-of-200 order p99, 200 held", "group_p99_small", "ms", "", None),
    ("growth", "group-of-200 order p99, N held", "group_p99_big", "ms", "", None),
    ("growth", "group-of-200 p99 ratio N/200", "group_ratio", "", "≤ 1.2", lambda w, p, r, runs: w is not None and w <= 1.2),
    ("drain", "SIGTERM to process exit", "exit_ms", "ms", "", None),
    ("drain", "last close frame", "frame_max", "ms", "", None),
    ("drain", "last TCP close", "tcp_max", "ms", "", None),
    ("drain", "close frames received", "frames", "", "= N", lambda w, p, r, runs: all(x["metrics"].get("frames") == x["metrics"].get("n") for x in runs)),
    ("echo", "echoed messages/s", "rate", "/s", "", None),
    ("echo", "server CPU per echoed message", "cpu_us_per_msg", "µs", "≤ 0.38× peer", lambda w, p, r, runs: r is not None and r <= 0.38),
    ("fanout", "PUBLISH to last delivery", "lat_max", "ms", "", None),
    ("fanout", "delivery p50", "lat_p50", "ms", "", None),
    ("fanout", "delivery p99", "lat_p99", "ms", "", None),
    ("fanout", "messages delivered/s", "rate", "/s", "≥ 3× peer", lambda w, p, r, runs: r is not None and r >= 3),
    ("fanout", "server CPU per delivered message", "cpu_us_per_msg", "µs", "≤ 0.38× peer", lambda w, p, r, runs: r is not None and r <= 0.38),
    ("fanout", "messages delivered, each connection once", "delivered", "", "= N", lambda w, p, r, runs: all(fanout_once(x) for x in runs)),
    ("fanout64k", "peak RSS increase, server processes", "rss_peak_increase", "B", "< 4 MiB", lambda w, p, r, runs: w is not None and w < 4 << 20),
    ("fanout64k", "PUBLISH to last delivery", "lat_max", "ms", "", None),
    ("fanout64k", "messages delivered/s", "rate", "/s", "", None),
    ("fanout64k", "server CPU per delivered message", "cpu_us_per_msg", "µs", "", None),
    ("fanout64k", "messages delivered, each connection once", "delivered", "", "= N", lambda w, p, r, runs: all(fanout_once(x) for x in runs)),
    ("small_orders", "publisher's rate (target: the offered rate)", "publish_rate", "/s", "", None),
    ("small_orders", "messages delivered/s", "rate", "/s", "≥ 3× peer", lambda w, p, r, runs: r is not None and r >= 3),
    ("small_orders", "latency p50 (stamp to receipt)", "lat_p50", "ms", "", None),
    ("small_orders", "latency p99", "lat_p99", "ms", "", None),
    ("small_orders", "latency max", "lat_max", "ms", "", None),
    ("small_orders", "server CPU s per million delivered", "cpu_s_per_million", "s", "≤ 0.38× peer", lambda w, p, r, runs: r is not None and r <= 0.38),
    ("small_orders", "peak RSS increase, server processes", "rss_peak_increase", "B", "", None),
    ("small_orders", "publisher's CPU share of one core", "publisher_busy", "", "", None),
    ("small_orders", "orders delivered, each once, in order", "delivered", "", "= orders", lambda w, p, r, runs: all(not sanity("small_orders", x["metrics"], None) for x in runs)),
    ("inbound", "client messages sent/s (wsload)", "send_rate", "/s", "", None),
    ("inbound", "messages/s reaching the subscriber", "rate", "/s", "", None),
    ("inbound", "latency p50 (client send to subscriber)", "lat_p50", "ms", "", None),
    ("inbound", "latency p99", "lat_p99", "ms", "", None),
    ("inbound", "server CPU per message", "cpu_us_per_msg", "µs", "", None),
    ("inbound", "peak RSS increase, server processes", "rss_peak_increase", "B", "", None),
    ("inbound", "messages lost (sent, never at the subscriber)", "lost", "", "0", lambda w, p, r, runs: all_equal(runs, "lost", 0)),
    ("inbound", "subscriber's CPU share of one core", "subscriber_busy", "", "", None),
    ("inbound", "messages at the subscriber, each once", "received", "", "= sent", lambda w, p, r, runs: all(not sanity("inbound", x["metrics"], None) for x in runs)),
    ("inbound_light", "client messages sent/s (wsload)", "send_rate", "/s", "", None),
    ("inbound_light", "messages/s reaching the subscriber", "rate", "/s", "", None),
    ("inbound_light", "latency p50 (client send to subscriber)", "lat_p50", "ms", "", None),
    ("inbound_light", "latency p99", "lat_p99", "ms", "", None),
    ("inbound_light", "server CPU per message", "cpu_us_per_msg", "µs", "", None),
    ("inbound_light", "peak RSS increase, server processes", "rss_peak_increase", "B", "", None),
    ("inbound_light", "messages lost (sent, never at the subscriber)", "lost", "", "0", lambda w, p, r, runs: all_equal(runs, "lost", 0)),
    ("inbound_light", "subscriber's CPU share of one core", "subscriber_busy", "", "", None),
    ("inbound_light", "messages at the subscriber, each once", "received", "", "= sent", lambda w, p, r, runs: all(not sanity("inbound_light", x["metrics"], None) for x in runs)),
    ("deflate", "bytes written per delivered message, deflate off", "plain_written_per_msg", "B", "", None),
    ("deflate", "bytes written per delivered message, deflate on", "deflate_written_per_msg", "B", "", None),
    ("deflate", "payload bytes per message on the wire, deflate on", "deflate_payload_per_msg", "B", "", None),
    ("deflate", "server CPU per delivered message, deflate off", "plain_cpu_us_per_msg", "µs", "", None),
    ("deflate", "server CPU per delivered message, deflate on", "deflate_cpu_us_per_msg", "µs", "≤ peer", lambda w, p, r, runs: r is not None and r <= 1),
    ("deflate", "messages delivered/s, deflate off", "plain_rate", "/s", "", None),
    ("deflate", "messages delivered/s, deflate on", "deflate_rate", "/s", "", None),
    ("deflate", "PUBLISH to last delivery, deflate on", "deflate_lat_max", "ms", "", None),
    ("deflate", "RSS growth through the fan-out, deflate off", "plain_rss_growth", "B", "", None),
    ("deflate", "RSS growth through the fan-out, deflate on", "deflate_rss_growth", "B", "", None),
    ("deflate", "delivered, each connection once, compressed when on", "deflate_delivered", "", "= N", lambda w, p, r, runs: all(deflate_once(x) for x in runs)),
]


def deflate_once(run):
    m = run["metrics"]
    return all(m.get(f"{x}_delivered") == m.get("n") == m.get(f"{x}_connections")
               and m.get(f"{x}_wrong_size") == 0 for x in ("plain", "deflate")) \
        and m.get("deflate_compressed") == m.get("n")


def fanout_once(run):
    m = run["metrics"]
    return (m.get("delivered") == m.get("n") == m.get("connections")
            and m.get("duplicated_connections") == 0 and m.get("wrong_size") == 0)


def machine_info():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except Exception:
            return "unknown"

    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "node": version(["node", "--version"]), "redis": version(["redis-server", "--version"]),
            "wsgate_commit": version(["git", "-C", ROOT, "describe", "--always", "--dirty"]),
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "loadavg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def write_report(cfg, data):
    runs = data["runs"]
    by = {}
    for r in runs:
        if r.get("metrics") is not None:
            by.setdefault((r["scenario"], r["server"]), []).append(r)
    m = data["machine"]
    L = []
    L.append("# wsgate benchmark results" + (" (smoke)" if cfg.smoke else ""))
    L.append("")
    L.append(f"Generated by `tests/bench/bench.py` from the runs in `{cfg.name}.json` on {m['date']}. "
             f"Every figure below was measured in this run; medians over {cfg.rounds} round(s), "
             "wsgate and the peer alternating (A B A B).")
    L.append("")
    L.append(f"- Machine: {m['nproc']} CPUs, {m['cpu']}, {m['memory_gib']} GiB, Linux {m['kernel']}")
    L.append(f"- Software: wsgate {m['wsgate_commit']}, peer = Node {m['node']} "
             f"(cluster + ws + ioredis, tests/bench/peer-node), {m['redis']}")
    L.append(f"- N = {cfg.n} connections unless said; loopback only; open-files limit {m['nofile']}; "
             f"load average at start {m['loadavg_at_start']}"
             + (f", at the end {data['loadavg_at_end']}" if data.get("loadavg_at_end") else "")
             + " (other work on the machine skews figures)")
    L.append(f"- Total time {data['seconds']} s")
    L.append(f"- Command: `{data['argv']}`")
    L.append("")
    L.append("| scenario | metric | wsgate median | peer median | ratio wsgate/peer | target | met? |")
    L.append("|---|---|---|---|---|---|---|")
    titles = {s[0]: s[3] for s in SCENARIOS}
    for scen, label, key, unit, target, check in ROWS:
        if scen not in data["scenarios_run"]:
            continue
        wr, pr = by.get((scen, "wsgate"), []), by.get((scen, "peer"), [])
        w = med([r["metrics"].get(key) for r in wr])
        p = med([r["metrics"].get(key) for r in pr])
        ratio = (w / p) if (w is not None and p) else None
        if check is None:
            met = ""
        elif not wr:
            met = "no data"
        else:
            met = "yes" if check(w, p, ratio, wr) else "**no**"
        u = "" if unit in ("", "/s") else unit
        wtxt = fmt(w, u) + ("/s" if unit == "/s" and w is not None else "")
        ptxt = "—" if not pr and scen == "memory100k" else fmt(p, u) + ("/s" if unit == "/s" and p is not None else "")
        rtxt = fmt(ratio) + "×" if ratio is not None else "—"
        L.append(f"| {titles[scen]} | {label} | {wtxt} | {ptxt} | {rtxt} | {target} | {met} |")
    L.append("")
    L.append("Ratio is wsgate's median over the peer's. Targets are wsgate's. \"= N\" checks hold "
             "in every wsgate run.")
    L.append("")
    L.append("## How each scenario is run")
    L.append("")
    L.append(SCENARIO_NOTES.format(n=cfg.n, big=cfg.n_big, one=cfg.growth_one,
                                   grp=cfg.growth_group, echo=cfg.echo, orders=cfg.orders,
                                   orders_total=cfg.orders[0] * cfg.orders[1], inbound=cfg.inbound,
                                   inbound_light=cfg.inbound_light,
                                   inbound_total=cfg.n * cfg.inbound[0] * cfg.inbound[1],
                                   drainflags=("`--drain-spread 0 --drain-reason 'server shutting down'`"
                                               if cfg.wsgate_has_drain_flags else "its defaults")))
    L.append("")
    problems = [r for r in runs if r.get("error") or r.get("problems")]
    if problems:
        L.append("## Problems")
        L.append("")
        for r in problems:
            L.append(f"- {r['scenario']} round {r['round']} {r['server']}: "
                     + "; ".join(([r["error"]] if r.get("error") else []) + r.get("problems", [])))
        L.append("")
    L.append("## Per-run values")
    L.append("")
    for scen, _, _, title in SCENARIOS:
        if scen not in data["scenarios_run"]:
            continue
        L.append(f"- {title}")
        for r in runs:
            if r["scenario"] == scen and r.get("metrics"):
                L.append(f"  - round {r['round']} {r['server']}: " + ", ".join(
                    f"{k}={fmt(v)}" for k, v in r["metrics"].items()
                    if k in {row[2] for row in ROWS if row[0] == scen}))
    L.append("")
    L.append("## Exact commands (round 1; ports are picked free per run)")
    L.append("")
    for scen, _, _, title in SCENARIOS:
        cmds = data["commands"].get(scen)
        if not cmds:
            continue
        L.append(f"### {title}")
        L.append("")
        L.append("```")
        for server in SERVERS:
            for c in cmds.get(server, []):
                L.append(c)
        L.append("```")
        L.append("")
    if data.get("plots"):
        L.append("## Plots")
        L.append("")
        for p in data["plots"]:
            L.append(f"![{p}]({p})")
        L.append("")
    with open(os.path.join(cfg.out, cfg.name + ".md"), "w") as f:
        f.write("\n".join(L))


SCENARIO_NOTES = """\
1. **Handshake rate**: wsload opens {n} connections, 500 in flight, from 20 source addresses;
   rate = handshakes completed per second of the ramp; latency from connect to the 101.
2. **Idle memory**: summed VmRSS of the server's whole process tree (master/primary and
   workers), read (median of 3 reads) before and while {n} idle connections are held (read
   once wsload's ready file appears), the connections opened 500 in flight; bytes per
   connection = difference / connections. Each round runs two fresh servers: **cold**, RSS
   read right after the workers are ready (as a user meets it), and **warm**, RSS read after
   200 connections were opened and closed. The cold targets are uWebSockets' figures from
   the same kind of run on this machine (FACTS.md: 429 B at 20 000, 441 B at 100 000).
2b. **100 000**: `--workers 8`, wsload `--procs 6 --sources 50`, {big} connections held idle
   (memory as in 2, cold and warm); after the cold run's hold,
   `{{"all":true,"code":4004,"reason":"bench 100k"}}`: every connection must get a close
   frame with 4004. Run once, whatever --rounds says.
3. **One group**: {n} connections with `?group=g{{i%100}}`; the order
   `{{"group":"g7","code":4001,"reason":"bench"}}` must close exactly g7's members; latencies
   are from right before PUBLISH to the close frame and to the TCP close, per connection.
4. **Everyone**: {n} connections, `{{"all":true,"code":4002,"reason":"bench all"}}`.
5. **Growth**: a background wsload holds 200, then {n}, connections in 100 groups
   `bg0..bg99` on a fresh server. Then, one after another: {one}× bench.py opens one
   connection itself (raw socket), reads its id from `X-Wsgate-Conn`, publishes
   `{{"conn":"<id>","code":4005,"reason":"one"}}` and times the close frame from right before
   PUBLISH (p99 = nearest rank over the {one} samples); then {grp}× a wsload opens 200
   connections in group `probe` and publishes `{{"group":"probe"}}` (p99 per probe over its
   200 closes, median over probes). Ratio = p99 with {n} held / p99 with 200 held, per
   round, median of rounds. No probe order names a background connection.
6. **Drain**: {n} connections, then wsload sends SIGTERM to the master/primary; both must
   close everyone with 1001. wsgate runs with {drainflags} (the peer closes everyone at once).
   "SIGTERM to process exit" runs from the moment the server logs that it got the signal
   (its stderr read by bench.py) to its exit seen by waitpid.
7. **Echo**: {echo[0]} connections × {echo[1]} messages of {echo[2]} bytes, echoed back
   (wsgate with `--echo`; the peer always echoes); messages/s, and the server's CPU time
   (every thread of every process, user and system) over the echo divided by the
   messages echoed.
8. **Fan-out, 128 B**: {n} connections, all in group `fan`; one send order
   `{{"op":"send","group":"fan","text":"<128 ASCII bytes>"}}`. wsload counts every data
   message per connection (`--expect-messages {n} --expect-size 128`) and times each
   connection's first one from right before PUBLISH; "PUBLISH to last delivery" is the
   latest of those, messages/s = {n} / that time. Every connection must get the message
   exactly once, of the right size and type, and no close frame. Server CPU: every thread
   of every server process (`/proc/PID/task/TID/schedstat`), read once the connections are
   idle (0.5 s after wsload's ready file) and when wsload's watch ended (`--done-file`,
   connections still open), over the messages delivered.
9. **Fan-out, 64 KiB**: as 8 with one 64 KiB binary message (base64 in the order). Once the
   connections are idle, bench.py resets each server process's peak RSS (`5` into
   `/proc/PID/clear_refs`) and reads its VmRSS; after the last delivery it reads VmHWM: the
   increase is the sum of the peaks minus the sum before PUBLISH (an upper bound of the
   tree's simultaneous peak).
10. **Many small orders**: {n} connections; `build/wsredis pub` publishes {orders[0]} send
   orders a second for {orders[1]} s ({orders_total} in all), order k
   `{{"op":"send","conn":"<id of connection k mod N>","text":"<T> <k> xxx…"}}` (128-byte
   text), the ids read from wsload's `--ids-file`. The publisher pipelines: every
   millisecond, the orders due by then go out in one write, each stamped with
   CLOCK_MONOTONIC right before that write; its achieved rate is checked (≥ 95% of the
   offered rate, else the run fails). wsload `--stamped` times every message from its
   stamp to its arrival (same machine, same clock) and checks that connection i gets
   k = i, i + N, i + 2N… each once, in order. Delivered/s = messages / (last arrival −
   first PUBLISH). Server CPU from just before the first PUBLISH to the end of wsload's
   watch, in seconds per million messages delivered. Each order goes on the channel of
   its connection's worker, `wsgate:orders:worker:<the id without its last -N>`
   (`wsredis pub --worker-channels 1`), as wsgatectl publishes; the Node peer subscribes
   to the same per-worker channel, so neither server's workers parse the others' orders.
11. **Inbound, publish**: {n} clients (`?user=u<i>`), each sending {inbound[0]} text
   messages of 128 bytes a second for {inbound[1]} s ({inbound_total} in all), staggered
   evenly, each beginning `<T> <i> <m> ` (T = CLOCK_MONOTONIC at the send). wsgate runs
   `--inbound publish`, the peer `--inbound publish` (the same envelope, `PUBLISH` on
   `wsgate:in` through ioredis). `build/wsredis sub`, subscribed before the clients
   connect, counts the envelopes, checks each client's m run 0, 1, 2… once each, and times
   each from T. Messages/s = messages / (last arrival − first client send). wsload's own
   achieved send rate is checked (≥ 95%). Server CPU from before the first send to the
   subscriber's end, over the messages it received; the peak RSS increase of the server's
   processes (VmHWM reset through `clear_refs` before the first message) shows what each
   holds when Redis or the subscriber lags.
11b. **Inbound, lighter**: as 11 with {inbound_light[0]} message a second per client for
   {inbound_light[1]} s, a load this machine carries with the load generator on the same
   cores, so the latency is the path's and not a queue's.12. **Fan-out, 2 KiB JSON, permessage-deflate**: as 8 with a 2 048-byte JSON text, twice per
   server: deflate off, then on (wsgate `--deflate`; the peer's ws `perMessageDeflate` with
   no context takeover either way and its 256-byte threshold; wsload `--deflate` offers it
   and inflates every message, checking its inflated size). Bytes written per delivered
   message: the server tree's `wchar` (/proc/PID/io) over the watch, frames and all, over
   the messages delivered; payload bytes: what wsload read of the data frames. RSS growth:
   the tree's VmRSS after the last delivery minus before PUBLISH (the peer keeps a zlib
   compressor per connection that got a compressed message; wsgate one per worker)."""


PUBSUB_PLOT = [  # scenario, label on the plot
    ("echo", "echo\n128 B"),
    ("fanout", "fan-out\n128 B to N"),
    ("small_orders", "small orders\n1 conn each"),
    ("inbound", "inbound publish\n10/s per client"),
    ("inbound_light", "inbound publish\n1/s per client"),
]


def plot_pubsub(cfg, runs, plt, colors):
    """Messages/s and server CPU per message, wsgate against the peer, for the message
    scenarios present in runs: bars are medians, dots the rounds."""
    scens = [(s, lbl) for s, lbl in PUBSUB_PLOT if any(r["scenario"] == s for r in runs)]
    if not scens:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    panels = [("rate", "messages/s (delivered, echoed or published)", "{:,.0f}"),
              ("cpu_us_per_msg", "server CPU µs per message (all processes, all threads)", "{:.1f}")]
    for ax, (key, ylabel, nf) in zip(axes, panels):
        ticks = []
        for si, (scen, lbl) in enumerate(scens):
            meds = {}
            for bi, server in enumerate(SERVERS):
                vals = [r["metrics"][key] for r in runs if r["scenario"] == scen and r["server"] == server
                        and r["metrics"].get(key) is not None]
                if not vals:
                    continue
                x = si * 3 + bi
                m = statistics.median(vals)
                meds[server] = m
                ax.bar(x, m, color=colors[server], label=server if si == 0 else None)
                ax.scatter([x] * len(vals), vals, color="black", s=10, zorder=3)
                ax.annotate(nf.format(m), (x, m), ha="center", va="bottom", fontsize=7)
            ratio = (f"\n{meds['wsgate'] / meds['peer']:.2f}×" if len(meds) == 2 and meds["peer"]
                     else "")
            ticks.append(lbl + ratio)
        ax.set_xticks([si * 3 + 0.5 for si in range(len(scens))], ticks, fontsize=7)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("Throughput (higher is better)", fontsize=9)
    axes[1].set_title("CPU per message (lower is better)", fontsize=9)
    fig.suptitle("wsgate against the Node peer, 2 workers each, same load generator "
                 "(median bar, dots = rounds, ratio wsgate/peer under each pair)", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(cfg.out, "pubsub.png"), dpi=110)
    plt.close(fig)
    return "pubsub.png"


def make_plots(cfg, data, only=None):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing (apt-get install python3-matplotlib): no plots")
        return []
    made = []
    colors = {"wsgate": "tab:blue", "peer": "tab:orange"}
    runs = [r for r in data["runs"] if r.get("metrics")]
    if only is None or "pubsub" in only:
        p = plot_pubsub(cfg, runs, plt, colors)
        if p:
            made.append(p)
    if only is not None:
        return made
    # close latency: scenario 3, CDF from raw samples when wsload gives them, else its quantiles
    grp = [r for r in runs if r["scenario"] == "group"]
    if grp:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        raw = any(r["metrics"].get("frame_samples") for r in grp)
        for server in SERVERS:
            rs = [r for r in grp if r["server"] == server]
            if not rs:
                continue
            if raw:
                xs = sorted(x for r in rs for x in (r["metrics"].get("frame_samples") or []))
                if xs:
                    ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post",
                            color=colors[server], label=f"{server} ({len(xs)} closes)")
            else:
                first = True
                for r in rs:
                    m = r["metrics"]
                    pts = [(m.get("frame_p50"), 0.5), (m.get("frame_p99"), 0.99), (m.get("frame_max"), 1.0)]
                    pts = [(x, y) for x, y in pts if x is not None]
                    if pts:
                        ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", color=colors[server],
                                alpha=0.7, label=server if first else None)
                        first = False
        ax.set_xscale("log")
        ax.set_xlabel("close frame latency after PUBLISH (ms, log scale)")
        ax.set_ylabel("fraction of the group's connections")
        ax.set_title(f"Scenario 3: one group ({grp[0]['metrics']['members']} connections) among {cfg.n}"
                     + ("" if raw else "\n(p50, p99 and max of each run: wsload gives no raw samples)"))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(cfg.out, "close_latency.png"), dpi=110)
        plt.close(fig)
        made.append("close_latency.png")
    mem = [r for r in runs if r["scenario"] in ("memory", "memory100k")]
    if mem:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        sizes = [("memory", f"{cfg.n:,} connections, 2 workers"),
                 ("memory100k", f"{cfg.n_big:,} connections, 8 workers")]
        bars = [("wsgate", "bytes_per_conn", "wsgate cold", 0.9), ("wsgate", "warm_bytes_per_conn", "wsgate warm", 0.45),
                ("peer", "bytes_per_conn", "peer cold", 0.9), ("peer", "warm_bytes_per_conn", "peer warm", 0.45)]
        ticks, labels, seen = [], [], set()
        for gi, (scen, label) in enumerate(sizes):
            for bi, (server, key, name, alpha) in enumerate(bars):
                vals = [r["metrics"][key] for r in mem if r["scenario"] == scen and r["server"] == server
                        and r["metrics"].get(key) is not None]
                if not vals:
                    continue
                x = gi * (len(bars) + 1) + bi
                m = statistics.median(vals)
                ax.bar(x, m, color=colors[server], alpha=alpha, label=None if name in seen else name)
                seen.add(name)
                ax.scatter([x] * len(vals), vals, color="black", s=12, zorder=3)
                ax.annotate(f"{m:,.0f} B", (x, m), ha="center", va="bottom", fontsize=8)
            ticks.append(gi * (len(bars) + 1) + (len(bars) - 1) / 2)
            labels.append(label)
        ax.axhline(1024, color="tab:red", linestyle="--", label="target: 1 KiB")
        ax.set_xticks(ticks, labels)
        ax.set_ylabel("bytes of RSS per idle connection")
        ax.set_yscale("log")
        ax.set_ylim(bottom=100)
        ax.set_title("Idle memory per connection, cold (fresh server) and warm\n(median bar, dots = rounds)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(cfg.out, "memory.png"), dpi=110)
        plt.close(fig)
        made.append("memory.png")
    return made


# --- main -------------------------------------------------------------------------------------

def prepare(cfg):
    for tool in (cfg.wsgate, cfg.wsload, cfg.wsredis):
        if not os.access(tool, os.X_OK):
            sys.exit(f"bench: {tool} is missing: build it first (make; make {os.path.relpath(tool, ROOT)})")
    for tool in ("redis-server", "redis-cli", "node"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} not found")
    if not os.path.isdir(os.path.join(PEER_DIR, "node_modules", "ws")) or \
            not os.path.isdir(os.path.join(PEER_DIR, "node_modules", "ioredis")):
        log("installing the peer's npm packages (npm ci)")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=PEER_DIR, check=True)
    helptext = subprocess.run([cfg.wsgate, "--help"], capture_output=True, text=True).stdout
    cfg.wsgate_has_drain_flags = "--drain-spread" in helptext and "--drain-reason" in helptext
    cfg.wsgate_has_admin = "--admin" in helptext
    loadhelp = subprocess.run([cfg.wsload, "--help"], capture_output=True, text=True)
    cfg.wsload_samples = "--samples" in loadhelp.stdout + loadhelp.stderr
    # 100 000 connections need ~100k descriptors on each side; children inherit this
    want = 262144
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    # the limit is per process: 8 server workers and 6 wsload processes share the 100k
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit < cfg.n_big / 6 * 1.15 + 100:
        log(f"warning: open-files limit {limit} is low for {cfg.n_big} connections over 6 "
            "processes (raise ulimit -n)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "bench", "results"))
    ap.add_argument("--smoke", action="store_true", help="small N, 1 round, asserts sanity (< 2 min)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per scenario (default 3, smoke 1)")
    ap.add_argument("--only", default="", help="comma-separated scenarios: " + ",".join(s[0] for s in SCENARIOS))
    ap.add_argument("--skip", default="", help="comma-separated scenarios to leave out")
    ap.add_argument("-n", type=int, default=None, help="connections for the 20 000 scenarios")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"),
                    help="folder with wsgate and wsload (default build/)")
    ap.add_argument("--wsgate", default=None, help="default BUILD/wsgate")
    ap.add_argument("--wsload", default=None, help="default BUILD/wsload")
    ap.add_argument("--wsredis", default=None, help="default BUILD/wsredis")
    ap.add_argument("--name", default="results",
                    help="report file names in --out: NAME.md and NAME.json (default results)")
    ap.add_argument("--plot-from", nargs="+", metavar="JSON", default=None,
                    help="only draw the plots from these results JSON files (their runs merged) "
                         "into --out, and exit")
    cfg = ap.parse_args()
    cfg.wsgate = os.path.abspath(cfg.wsgate or os.path.join(cfg.build, "wsgate"))
    cfg.wsload = os.path.abspath(cfg.wsload or os.path.join(cfg.build, "wsload"))
    cfg.wsredis = os.path.abspath(cfg.wsredis or os.path.join(cfg.build, "wsredis"))
    cfg.out = os.path.abspath(cfg.out)
    if cfg.smoke:
        cfg.rounds = cfg.rounds or 1
        cfg.n = cfg.n or 1000
        cfg.n_big = 3000
        cfg.growth_one, cfg.growth_group = 20, 2
        cfg.echo = (100, 20, 128)
        cfg.orders = (1000, 2)   # send orders per second, seconds
        cfg.inbound = (2, 2)     # messages per second per client, seconds
        cfg.inbound_light = (1, 2)
    else:
        cfg.rounds = cfg.rounds or 3
        cfg.n = cfg.n or 20000
        cfg.n_big = 100000
        cfg.growth_one, cfg.growth_group = 200, 20
        cfg.echo = (1000, 100, 128)
        cfg.orders = (20000, 10)
        cfg.inbound = (10, 10)
        cfg.inbound_light = (1, 10)
    if cfg.plot_from:
        os.makedirs(cfg.out, exist_ok=True)
        merged = {"runs": []}
        for path in cfg.plot_from:
            with open(path) as f:
                merged["runs"] += json.load(f)["runs"]
        for p in make_plots(cfg, merged, only=("pubsub",)):
            log(f"wrote {os.path.join(cfg.out, p)}")
        return
    names = [s[0] for s in SCENARIOS]
    only = [x for x in cfg.only.split(",") if x]
    skip = [x for x in cfg.skip.split(",") if x]
    for x in only + skip:
        if x not in names:
            ap.error(f"unknown scenario {x!r}; known: {', '.join(names)}")
    if cfg.smoke and not only:
        skip.append("inbound_light")  # the inbound code path again, at another rate
    selected = [s for s in SCENARIOS if (not only or s[0] in only) and s[0] not in skip]

    os.makedirs(os.path.join(cfg.out, "logs"), exist_ok=True)
    for f in os.listdir(os.path.join(cfg.out, "logs")):
        os.unlink(os.path.join(cfg.out, "logs", f))

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    data = {"argv": shlex.join(["python3", os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
            "smoke": cfg.smoke, "rounds": cfg.rounds, "n": cfg.n, "runs": [], "commands": {},
            "scenarios_run": []}
    failures = []
    started = time.monotonic()
    try:
        prepare(cfg)
        data["machine"] = machine_info()
        data["wsgate_drain_flags"] = cfg.wsgate_has_drain_flags
        for name, fn, servers, title in selected:
            data["scenarios_run"].append(name)
            rounds = 1 if name == "memory100k" else cfg.rounds
            t_scen = time.monotonic()
            for rnd in range(1, rounds + 1):
                for kind in servers:
                    ctx = Ctx(cfg, kind, rnd, name)
                    run = {"scenario": name, "round": rnd, "server": kind}
                    t = time.monotonic()
                    try:
                        run["metrics"] = fn(ctx)
                        run["problems"] = sanity(name, run["metrics"], cfg)
                    except BenchError as e:
                        run["metrics"], run["error"] = None, str(e)
                    finally:
                        kill_all()  # nothing of this run survives it
                        shutil.rmtree(ctx.tmp, ignore_errors=True)
                    run["seconds"] = round(time.monotonic() - t, 1)
                    if rnd == 1:
                        data["commands"].setdefault(name, {})[kind] = ctx.commands
                    data["runs"].append(run)
                    status = run.get("error") or ("; ".join(run["problems"]) or "ok")
                    log(f"{title} round {rnd} {kind}: {status} ({run['seconds']} s)")
                    for p in ([run["error"]] if run.get("error") else []) + run.get("problems", []):
                        failures.append(f"{name} r{rnd} {kind}: {p}")
            log(f"{title}: {time.monotonic() - t_scen:.0f} s")
    except KeyboardInterrupt:
        failures.append("interrupted")
        log("interrupted")
    finally:
        kill_all()
        data["seconds"] = round(time.monotonic() - started, 1)
        data["loadavg_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        if "machine" in data:
            data["plots"] = make_plots(cfg, data)
            with open(os.path.join(cfg.out, cfg.name + ".json"), "w") as f:
                json.dump(data, f, indent=1)
            write_report(cfg, data)
            log(f"wrote {cfg.out}/{cfg.name}.md, {cfg.name}.json ({data['seconds']} s in all)")
    good = sum(1 for r in data["runs"] if r.get("metrics") is not None and not r.get("problems"))
    if failures:
        print("bench: FAILED checks:\n  " + "\n  ".join(failures), file=sys.stderr)
    elif cfg.smoke:
        print("bench smoke: every run opened all its connections, got every close with the right code "
              "and every pushed message exactly once, and every client message reached the subscriber "
              "once")
    # one line per run: a run passes when it completed and its sanity checks held
    print(f"bench: {good} passed, {len(data['runs']) - good + (1 if 'interrupted' in failures else 0)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
