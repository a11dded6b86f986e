"""A real Redis Cluster on loopback for tests and benchmarks: Debian's redis-server with
cluster-enabled, built with `redis-cli --cluster create`, every node on a free port with
its bus on another free port (cluster-port), a short cluster-node-timeout so a killed
master fails over in a few seconds. Processes are registered with the harness, which
kills them after the test."""

import os
import shutil
import subprocess
import time

import harness


class Node(harness.Redis):
    """One cluster node: a harness.Redis with cluster-enabled and its own bus port."""

    def __init__(self, node_timeout_ms, password=None):
        bus = harness.free_port()
        auth = ["masterauth %s" % password] if password else []
        super().__init__(password=password, config_lines=auth + [
            "cluster-enabled yes",
            "cluster-port %d" % bus,
            "cluster-node-timeout %d" % node_timeout_ms,
            "cluster-config-file nodes.conf",
            # Every master's slots stay served by someone: a failed master's replica takes
            # over; and pub/sub works while a shard is down.
            "cluster-require-full-coverage no",
            "cluster-allow-pubsubshard-when-down yes",
            # A replica syncs at once, and may take over whatever its data's age: a
            # master killed a second after the cluster was built still fails over.
            "repl-diskless-sync-delay 0",
            "cluster-replica-validity-factor 0",
        ])
        self.bus = bus

    def cmd(self, *args):
        return self.client().execute_command(*args)


class Cluster:
    """masters x (1 + replicas) nodes; the cluster is ok (every node says so) on return."""

    def __init__(self, masters=3, replicas=1, node_timeout_ms=1000, timeout=40.0,
                 password=None):
        """password: every node requires it (requirepass, masterauth)."""
        self.password = password
        self.nodes = [Node(node_timeout_ms, password) for _ in range(masters * (1 + replicas))]
        for n in self.nodes:
            n.start()
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        argv = [cli, "--cluster", "create"] + ["127.0.0.1:%d" % n.port for n in self.nodes] + [
            "--cluster-replicas", str(replicas), "--cluster-yes"] + (
            ["-a", password, "--no-auth-warning"] if password else [])
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
        assert p.returncode == 0, "cluster create failed: %s %s" % (p.stdout, p.stderr)
        self.wait_ok(timeout)

    def alive(self):
        return [n for n in self.nodes if n.proc.poll() is None]

    def wait_ok(self, timeout=40.0, masters=None):
        """Every live node says cluster_state:ok and sees `masters` masters with slots;
        every replica's link to its master is up."""
        def ok():
            for n in self.alive():
                try:
                    info = n.cmd("CLUSTER", "INFO")
                    info = info.decode() if isinstance(info, bytes) else info
                    if "cluster_state:ok" not in info:
                        return False
                    if masters is not None and len(self.masters(n)) != masters:
                        return False
                    repl = n.client().info("replication")
                    if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                        return False
                except Exception:
                    return False
            return True
        harness.wait_for(ok, timeout, "cluster_state:ok on every node", 0.1)

    @property
    def url(self):
        """cluster:// with every node as a seed."""
        return self.seeds(len(self.nodes))

    def seeds(self, k):
        auth = ":%s@" % self.password if self.password else ""
        return "cluster://" + auth + ",".join("127.0.0.1:%d" % n.port for n in self.nodes[:k])

    def masters(self, via=None):
        """{port: (first slot, last slot)} of the masters with slots, as a node sees them."""
        via = via or self.alive()[0]
        out = {}
        for line in via.cmd("CLUSTER", "NODES").decode().splitlines():
            f = line.split()
            flags = f[2].split(",")
            if "master" not in flags or "fail" in flags or len(f) < 9:
                continue
            port = int(f[1].split("@")[0].rsplit(":", 1)[1])
            ranges = [r for r in f[8:] if not r.startswith("[")]
            if ranges:
                out[port] = [tuple(int(x) for x in (r.split("-") * 2)[:2]) for r in ranges]
        return out

    def slot(self, key):
        return int(self.alive()[0].cmd("CLUSTER", "KEYSLOT", key))

    def owner(self, key, via=None):
        """The node object serving key's slot."""
        s = self.slot(key)
        for port, ranges in self.masters(via).items():
            if any(a <= s <= b for a, b in ranges):
                return self.node(port)
        raise AssertionError("no master serves slot %d" % s)

    def node(self, port):
        return next(n for n in self.nodes if n.port == port)

    def spublish(self, channel, message):
        """SPUBLISH on the master of channel's slot; returns its receiver count."""
        return int(self.owner(channel).cmd("SPUBLISH", channel, message))

    def shardnumsub(self, channel):
        return int(self.owner(channel).cmd("PUBSUB", "SHARDNUMSUB", channel)[1])

    def kill_master(self, port):
        """kill -9 of a master; returns the time it was killed (monotonic)."""
        n = self.node(port)
        t = time.monotonic()
        n.proc.kill()
        n.proc.wait()
        return t
