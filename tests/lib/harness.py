"""Integration harness: real build/wsgate and redis-server processes on loopback.

Every wait polls against a deadline; nothing sleeps to synchronise. Processes started
here are registered and killed by pid in cleanup_all(), which the runner calls after
each test; logs of everything started are printed when a test fails.

Environment:
  WSGATE_BUILD   build directory holding wsgate (default: <repo>/build)
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("WSGATE_BUILD") or os.path.join(REPO, "build")
if not os.path.isabs(BUILD):
    BUILD = os.path.join(REPO, BUILD)
WSGATE = os.path.join(BUILD, "wsgate")
# The same gateway under ASan and UBSan (make test builds it): tests of memory safety.
WSGATE_ASAN = os.path.join(REPO, "build", "asan", "wsgate")

# Flags every test gateway gets unless the test overrides them. The ping interval is
# long so that raw-socket tests never see a keepalive ping they did not ask for.
DEFAULT_FLAGS = {
    "--workers": "2",
    "--id": "test1",
    "--log-level": "debug",
    "--close-timeout": "500ms",
    "--ping-interval": "30s",
    "--max-header": "8k",
    "--max-message": "1m",
    "--drain-spread": "200ms",
}

_tmp_root = None
_live = []  # objects with kill() and dump(), newest last


def tmp_root():
    """One temp dir per test process, removed in cleanup_all()."""
    global _tmp_root
    if _tmp_root is None:
        _tmp_root = tempfile.mkdtemp(prefix="wsgate-it-")
    return _tmp_root


_ports_given = set()


def free_port():
    """A loopback TCP port that was free a moment ago, never the same one twice in a test.

    Gateways, HAProxy and nginx all listen with SO_REUSEPORT, so two of them handed the
    same port would share it silently instead of failing to bind."""
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise AssertionError("no fresh loopback port in 100 tries")


def kill_pids(pids):
    """SIGKILL each pid still there (children left behind by a killed parent)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def read_text(path):
    """A log file's text so far ("" when it is not there)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def wait_for(pred, timeout, what, interval=0.01):
    """Polls pred() until it returns a truthy value, which is returned; fails at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


READY_RE = re.compile(r"\b(w\d+) worker ready\b.*\bpid=(\d+)")


class Gateway:
    """A build/wsgate master with its stderr in a log file."""

    def __init__(self, flags=None, extra=None, env=None, workers=None, echo=True, binary=None):
        flags = dict(DEFAULT_FLAGS, **(flags or {}))
        if workers is not None:
            flags["--workers"] = str(workers)
        self.port = free_port()
        flags.setdefault("--listen", "127.0.0.1:%d" % self.port)
        # Each gateway its own admin port: the default 127.0.0.1:9090 is one per host.
        self.admin_port = free_port()
        flags.setdefault("--admin", "127.0.0.1:%d" % self.admin_port)
        self.workers = int(flags["--workers"]) if flags.get("--workers") else 1
        self.binary = binary or WSGATE
        self.argv = [self.binary]
        for k, v in flags.items():
            if v is not None:
                self.argv += [k, v]
        if echo:
            self.argv.append("--echo")
        self.argv += list(extra or [])
        self.log_path = os.path.join(tmp_root(), "wsgate-%d.log" % self.port)
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.exit_status = None

    def start(self, wait_ready=True, timeout=10.0):
        if not os.access(self.binary, os.X_OK):
            raise AssertionError("%s is not built (run make)" % self.binary)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=self.env)
        _live.append(self)
        if wait_ready:
            self.wait_ready(self.workers, timeout)
        return self

    def __enter__(self):
        return self.start() if self.proc is None else self

    def __exit__(self, *exc):
        self.kill()

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        return read_text(self.log_path)

    def ready_lines(self):
        """[(worker name, pid)] for every "worker ready" line so far, in order."""
        return [(m.group(1), int(m.group(2))) for m in READY_RE.finditer(self.log())]

    def worker_pids(self):
        """{worker name: pid} from the newest "worker ready" line of each worker."""
        return dict(self.ready_lines())

    def wait_ready(self, n, timeout=10.0):
        """Waits until at least n "worker ready" lines are logged."""
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("wsgate exited with %s before it was ready"
                                     % self.proc.returncode)
            return len(self.ready_lines()) >= n
        wait_for(ready, timeout, "%d 'worker ready' lines" % n)

    def wait_log(self, pattern, timeout=5.0, start=0):
        """Waits for a regex in the log (searched from character start); returns the match."""
        rx = re.compile(pattern)
        return wait_for(lambda: rx.search(self.log(), start), timeout, "log /%s/" % pattern)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=10.0):
        try:
            self.exit_status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("wsgate did not exit within %.1fs" % timeout)
        return self.exit_status

    def stop(self, expect_status=None, timeout=10.0):
        """SIGTERM, then SIGKILL if it has not exited by the deadline. Returns the status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("wsgate ignored SIGTERM for %.1fs; killed" % timeout)
        self.exit_status = self.proc.returncode
        if expect_status is not None:
            assert self.exit_status == expect_status, \
                "wsgate exit status %s, expected %s" % (self.exit_status, expect_status)
        return self.exit_status

    def kill(self):
        """Kills the master and every worker it logged, by pid."""
        if self.proc is None:
            return
        pids = [pid for _, pid in self.ready_lines()]
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        kill_pids(pids)
        if not self._log.closed:
            self._log.close()

    def dump(self):
        return "---- wsgate log (%s) ----\n%s" % (" ".join(self.argv), self.log())


def start_gateway(**kw):
    return Gateway(**kw).start()


class Redis:
    """A throwaway redis-server on a free loopback port, in its own temp dir.

    config_lines: redis.conf lines written to a file in that dir and given first (the
    flags here still win), e.g. ACL users: "user publisher on >pw &wsgate:orders +publish".
    password: it requires that password (requirepass), and url and client() carry it.
    """

    password = None

    def __init__(self, config_lines=None, password=None):
        self.port = free_port()
        self.password = password
        self.dir = os.path.join(tmp_root(), "redis-%d" % self.port)
        os.makedirs(self.dir)
        self.log_path = os.path.join(self.dir, "redis.log")
        self.config_lines = list(config_lines or [])
        self.proc = None

    def start(self, timeout=10.0):
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        argv = [exe]
        if self.config_lines:
            conf = os.path.join(self.dir, "redis.conf")
            with open(conf, "w") as f:
                f.write("".join(line + "\n" for line in self.config_lines))
            argv.append(conf)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv + ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", self.dir]
            + (["--requirepass", self.password] if self.password else []),
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.dir)
        _live.append(self)
        wait_for(self._pong, timeout, "redis-server PING on port %d" % self.port, 0.02)
        return self

    def _pong(self):
        if self.proc.poll() is not None:
            raise AssertionError("redis-server exited with %s" % self.proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                if self.password:
                    s.sendall(b"AUTH %s\r\n" % self.password.encode())
                    if not s.recv(64).startswith(b"+OK"):
                        return False
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self):
        if self.password:
            return "redis://:%s@127.0.0.1:%d" % (self.password, self.port)
        return "redis://127.0.0.1:%d" % self.port

    def client(self):
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           socket_timeout=5)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None and not self._log.closed:
            self._log.close()

    def dump(self):
        return "---- redis-server log (port %d) ----\n%s" % (self.port, read_text(self.log_path))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


def start_redis(timeout=10.0, config_lines=None, password=None):
    return Redis(config_lines, password).start(timeout)


def dump_all():
    return "\n".join(p.dump() for p in _live)


def cleanup_all():
    global _tmp_root
    for p in reversed(_live):
        try:
            p.kill()
        except Exception:
            pass
    del _live[:]
    if _tmp_root is not None:
        shutil.rmtree(_tmp_root, ignore_errors=True)
        _tmp_root = None


def timeout(seconds):
    """Decorator: the runner's hard timeout for this test, instead of its default."""
    def deco(f):
        f.timeout = seconds
        return f
    return deco
