"""A Redis Sentinel deployment on loopback for the tests: one redis-server master, its
replicas and a few redis-sentinel processes watching them, all started here, registered
with harness (killed by pid in cleanup, logs printed when a test fails).

Sentinel settings are short so a failover takes a few seconds: down-after 1000 ms,
failover-timeout 3000 ms, quorum 2 of 3. Every wait polls against a deadline."""

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time

import harness
import lb
from fleet import ORDERS, until

GROUP = "wsgate:orders:group:"

DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def _command(port, *args, password=None, timeout=1.0):
    """One command on a fresh connection (redis-py); the reply, or None when the node is
    not reachable."""
    import redis
    try:
        c = redis.Redis(host="127.0.0.1", port=port, password=password,
                        socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            return c.execute_command(*args)
        finally:
            c.close()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        return None


def _s(x):
    return x.decode() if isinstance(x, bytes) else x


class Sentinel:
    """A redis-sentinel on a free loopback port, monitoring `name` at 127.0.0.1:master_port.
    password: its own requirepass (sentinels authenticate to nothing else here);
    auth_pass: what it gives the data nodes."""

    def __init__(self, name, master_port, quorum, password=None, auth_pass=None,
                 down_after_ms=DOWN_AFTER_MS, failover_timeout_ms=FAILOVER_TIMEOUT_MS):
        self.port = harness.free_port()
        self.password = password
        self.dir = os.path.join(harness.tmp_root(), "sentinel-%d" % self.port)
        os.makedirs(self.dir)
        self.conf = os.path.join(self.dir, "sentinel.conf")
        self.log_path = os.path.join(self.dir, "sentinel.log")
        lines = ["port %d" % self.port, "bind 127.0.0.1", "dir %s" % self.dir,
                 "sentinel monitor %s 127.0.0.1 %d %d" % (name, master_port, quorum),
                 "sentinel down-after-milliseconds %s %d" % (name, down_after_ms),
                 "sentinel failover-timeout %s %d" % (name, failover_timeout_ms),
                 "sentinel parallel-syncs %s 1" % name]
        if auth_pass:
            lines.append("sentinel auth-pass %s %s" % (name, auth_pass))
        if password:
            lines.append("requirepass %s" % password)
        with open(self.conf, "w") as f:  # sentinel rewrites it: it must be its own file
            f.write("\n".join(lines) + "\n")
        self.proc = None

    def start(self, timeout=10.0):
        exe = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([exe, self.conf], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=self.dir)
        harness._live.append(self)
        harness.wait_for(lambda: self.command("PING") is not None, timeout,
                         "redis-sentinel PING on port %d" % self.port, 0.02)
        return self

    def command(self, *args):
        if self.proc is not None and self.proc.poll() is not None:
            return None
        return _command(self.port, *args, password=self.password)

    def master_addr(self, name):
        r = self.command("SENTINEL", "get-master-addr-by-name", name)
        return (_s(r[0]), int(r[1])) if r else None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None and not self._log.closed:
            self._log.close()

    def dump(self):
        return "---- redis-sentinel log (port %d) ----\n%s" % (self.port,
                                                             harness.read_text(self.log_path))


class Deployment:
    """A master, `replicas` replicas of it and `sentinels` sentinels (quorum 2 of 3 by
    default), on loopback. password: requirepass and masterauth of the data nodes (the
    sentinels get it as auth-pass); sentinel_password: the sentinels' own requirepass."""

    def __init__(self, name="wsgm", replicas=1, sentinels=3, quorum=2, password=None,
                 sentinel_password=None):
        self.name = name
        self.password = password
        self.sentinel_password = sentinel_password
        auth = ["masterauth %s" % password] if password else []
        self.master = harness.start_redis(config_lines=auth, password=password)
        self.replicas = [
            harness.start_redis(config_lines=auth + ["replicaof 127.0.0.1 %d" % self.master.port],
                                password=password)
            for _ in range(replicas)]
        self.nodes = {self.master.port: self.master}
        self.nodes.update((r.port, r) for r in self.replicas)
        for r in self.replicas:
            harness.wait_for(lambda: self._link_up(r), 10,
                             "replica %d in sync with its master" % r.port, 0.05)
        self.sentinels = [Sentinel(name, self.master.port, quorum, sentinel_password, password)
                          .start() for _ in range(sentinels)]
        harness.wait_for(self._all_known, 20, "every sentinel knowing the replicas and the "
                         "other sentinels", 0.1)

    def _link_up(self, r):
        info = _command(r.port, "INFO", "replication", password=self.password)
        return info is not None and info.get("master_link_status") == "up"

    def _all_known(self):
        n = len(self.sentinels)
        for s in self.sentinels:
            others = s.command("SENTINEL", "sentinels", self.name)
            reps = s.command("SENTINEL", "replicas", self.name)
            if others is None or reps is None or len(others) < n - 1 or \
                    len(reps) < len(self.replicas):
                return False
        return True

    def url(self, sentinels=None, name=None, user_pass=None, query=""):
        hosts = ",".join("127.0.0.1:%d" % s.port for s in (sentinels or self.sentinels))
        if user_pass is None and self.password:
            user_pass = ":%s" % self.password
        return "sentinel://%s%s/%s%s" % (user_pass + "@" if user_pass else "", hosts,
                                         name or self.name, query)

    def master_port(self):
        """The master's port as a majority of the live sentinels name it, or None."""
        seen = {}
        for s in self.sentinels:
            a = s.master_addr(self.name)
            if a is not None:
                seen[a[1]] = seen.get(a[1], 0) + 1
        best = max(seen.items(), key=lambda kv: kv[1], default=(None, 0))
        return best[0] if best[1] * 2 > len(self.sentinels) else None

    def client(self):
        """A redis-py client of the current master (resolved through the sentinels)."""
        import redis
        return redis.Redis(host="127.0.0.1", port=self.master_port(), password=self.password,
                           socket_timeout=2, socket_connect_timeout=1)

    def kill_master(self):
        """SIGKILL to the current master; returns its port."""
        port = self.master_port()
        node = self.nodes[port]
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()
        return port

    def wait_failover(self, old_port, timeout=30.0):
        """Waits until a majority of sentinels name a master other than old_port and that
        node says it is a master; returns its port."""
        def done():
            p = self.master_port()
            if p is None or p == old_port:
                return None
            role = _command(p, "ROLE", password=self.password)
            return p if role and _s(role[0]) == "master" else None
        return harness.wait_for(done, timeout, "a failover away from port %d" % old_port, 0.05)


# --- gateways and orders through a failover ------------------------------------------------

class Gateways:
    """Gateways on one sentinel deployment (just what fleet.open_clients needs)."""

    def __init__(self, dep, ids=("gwS",), workers=2, url=None, flags=None):
        self.dep = dep
        self.gateways = {}
        for gid in ids:
            f = {"--id": gid, "--log-level": "info", "--close-timeout": "1s",
                 "--redis": url or dep.url()}
            f.update(flags or {})
            self.gateways[gid] = harness.Gateway(flags=f, workers=workers).start()

    def url(self, gid, groups=(), user=None, extra=""):
        q = ["group=%s" % g for g in groups] + (["user=%s" % user] if user else [])
        return "ws://127.0.0.1:%d/?%s%s" % (self.gateways[gid].port, "&".join(q), extra)

    def ready(self):
        return all(lb.readyz(gw.admin_port)[0] == 200 for gw in self.gateways.values())

    def metric(self, name, **labels):
        return sum(lb.value(lb.metrics(gw.admin_port), name, **labels)
                   for gw in self.gateways.values())


class OrderStream:
    """A thread that publishes a send order to group `group` every `every` seconds on
    whatever master the sentinels name (re-asked after any error), numbering them.
    published: [(seq, monotonic time, receivers)] of every PUBLISH that Redis answered.
    Extend here to XADD the same orders to a stream."""

    def __init__(self, dep, group, every=0.02):
        self.dep = dep
        self.group = group
        self.every = every
        self.published = []
        self.errors = 0
        self._stop = False
        self._seq = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        harness._live.append(self)

    def _run(self):
        c = None
        while not self._stop:
            try:
                if c is None:
                    c = self.dep.client()
                self._seq += 1
                order = {"op": "send", "id": "s%d" % self._seq, "group": self.group,
                         "text": "seq %d" % self._seq}
                n = c.publish(ORDERS, json.dumps(order))
                self.published.append((self._seq, time.monotonic(), n))
            except Exception:  # noqa: BLE001 - a dead master: ask the sentinels again
                self.errors += 1
                c = None
            time.sleep(self.every)

    def kill(self):
        self._stop = True
        self._thread.join(3)

    def dump(self):
        return "---- order stream: %d published, %d errors ----" % (len(self.published),
                                                                   self.errors)


class Arrivals:
    """Stamps every message of a client with its arrival time (a reader task)."""

    def __init__(self, client):
        self.got = []  # [(seq, monotonic time)]
        self.task = asyncio.ensure_future(self._read(client))

    async def _read(self, client):
        while True:
            text = await client.messages.get()
            m = re.match(r"seq (\d+)$", text)
            if m:
                self.got.append((int(m.group(1)), time.monotonic()))


def numsub(port, channel, password=None):
    r = _command(port, "PUBSUB", "NUMSUB", channel, password=password)
    return None if r is None else int(r[1])


async def failover_once(dep, gws, watcher, arrivals, stream):
    """Kills the master while `stream` flows; returns (seconds from the kill to the first
    order published after it being applied, the new master's port, orders lost)."""
    await until(lambda: len(arrivals.got) >= 5, 10, "orders flowing before the kill")
    t_kill = time.monotonic()
    old = dep.kill_master()
    gw = next(iter(gws.gateways.values()))
    # The kill shows at once: the links are reset, readiness and the gauge follow.
    await until(lambda: lb.readyz(gw.admin_port)[0] == 503, 5, "/readyz 503 after the kill")
    await until(lambda: gws.metric("wsgate_redis_connected") == 0, 5,
                "wsgate_redis_connected 0 after the kill")
    new = dep.wait_failover(old, timeout=30)
    await until(gws.ready, 20, "/readyz 200 on the new master")
    await until(lambda: gws.metric("wsgate_redis_connected") == len(gws.gateways), 5,
                "wsgate_redis_connected 1")
    def first_applied():
        after = {s for s, t, n in stream.published if t > t_kill}
        got = [t for s, t in arrivals.got if s in after]
        return min(got) if got else None
    first = await until(first_applied, 10, "an order published after the kill applied")
    # every order that reached every worker (PUBLISH's count) since the kill is applied
    workers = sum(g.workers for g in gws.gateways.values())
    reached = {s for s, t, n in stream.published if t > t_kill and n >= workers}
    await until(lambda: reached <= {s for s, _ in arrivals.got}, 5,
                "the %d orders that reached every worker applied" % len(reached))
    lost = sum(1 for s, t, n in stream.published if t > t_kill and n == 0)
    return first - t_kill, new, lost
