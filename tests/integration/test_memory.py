"""Idle memory as a user meets it: a freshly started gateway, connections opened with
many handshakes in flight, then left idle. RSS is summed over the master and its
workers (VmRSS), as make bench and FACTS.md measure it."""

import json
import os
import statistics
import subprocess
import time

import harness

# The load generator is a tool, not the product: an ASan gateway can take the plain one.
WSLOAD = next((p for p in (os.path.join(harness.BUILD, "wsload"),
                           os.path.join(harness.REPO, "build", "wsload")) if os.access(p, os.X_OK)),
              os.path.join(harness.BUILD, "wsload"))

# Cold bytes per idle connection at 4 000 connections on 2 workers: about 410 after the
# handshake stopped loading OpenSSL's digest providers (2.3 MB per worker) and stopped
# allocating a parser per connection; 1 770 before. FACTS.md's uWebSockets figure is
# 429 B at 20 000; fixed costs weigh more at 4 000.
COLD_MAX = 600
N = 4000


class Wsload:
    """build/wsload holding connections; registered with the harness for cleanup."""

    def __init__(self, argv, log_path):
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._log)
        harness._live.append(self)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self._log.closed:
            self._log.close()

    def dump(self):
        return "---- wsload (%s) ----\n%s" % (" ".join(self.argv), harness.read_text(self.log_path))


def vm_rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


def tree_rss(gw):
    """Summed VmRSS of the master and its workers: the median of three reads."""
    pids = [gw.pid] + list(gw.worker_pids().values())
    reads = []
    for _ in range(3):
        reads.append(sum(vm_rss(p) for p in pids))
        time.sleep(0.1)
    return statistics.median(reads)


def is_asan(path):
    with open(path, "rb") as f:
        return b"__asan_init" in f.read()


@harness.timeout(90)
def test_idle_memory_from_a_fresh_gateway():
    assert os.access(WSLOAD, os.X_OK), "%s is not built (make %s)" % (
        WSLOAD, os.path.relpath(WSLOAD, harness.REPO))
    redis = harness.start_redis()
    gw = harness.Gateway(flags={"--redis": redis.url, "--log-level": "notice",
                                "--events-channel": ""}, workers=2, echo=False).start()
    # Ready as a user sees it: both workers up and subscribed, not one handshake yet.
    harness.wait_for(lambda: gw.log().count("redis subscriber up (subscribed)") >= 2, 10,
                     "both workers subscribed")
    before = tree_rss(gw)
    ready = os.path.join(harness.tmp_root(), "wsload-ready")
    load = Wsload([WSLOAD, "--host", "127.0.0.1", "--port", str(gw.port), "-n", str(N),
                   "--inflight", "500", "--sources", "20", "--ramp-timeout", "60000",
                   "--ready-file", ready, "--hold-ms", "60000"],
                  os.path.join(harness.tmp_root(), "wsload.log"))
    harness.wait_for(lambda: os.path.exists(ready) or load.proc.poll() is not None, 70,
                     "wsload's ramp")
    assert os.path.exists(ready), "wsload exited (%s) before its ramp ended" % load.proc.returncode
    with open(ready) as f:
        ramp = json.load(f)["ramp"]
    assert ramp["ok"] == N and ramp["failed"] == 0, ramp
    after = tree_rss(gw)
    per_conn = (after - before) / N
    print("cold: RSS %d B with workers ready, %d B with %d idle: %.0f B per connection"
          % (before, after, N, per_conn))
    if is_asan(harness.WSGATE):
        print("ASan build: its allocator's RSS is not the product's; the figure is not judged")
        return
    assert per_conn <= COLD_MAX, \
        "%.0f B of RSS per idle connection from a fresh gateway (at most %d)" % (per_conn, COLD_MAX)


# --deflate may cost an idle connection at most this much more than without it (the
# negotiated window lives in 3 bits of the frame decoder: the true figure is 0; what is
# left is the noise of RSS).
DEFLATE_EXTRA_MAX = 64
N_DEFLATE = 10000


def idle_per_conn(deflate, tag):
    """Cold bytes of RSS per idle connection of a fresh 2-worker gateway holding
    N_DEFLATE connections, with --deflate and every client offering it, or neither."""
    redis = harness.start_redis()
    gw = harness.Gateway(flags={"--redis": redis.url, "--log-level": "notice",
                                "--events-channel": ""}, workers=2, echo=False,
                         extra=["--deflate"] if deflate else []).start()
    harness.wait_for(lambda: gw.log().count("redis subscriber up (subscribed)") >= 2, 10,
                     "both workers subscribed")
    before = tree_rss(gw)
    ready = os.path.join(harness.tmp_root(), "wsload-ready-" + tag)
    load = Wsload([WSLOAD, "--host", "127.0.0.1", "--port", str(gw.port), "-n", str(N_DEFLATE),
                   "--inflight", "500", "--sources", "20", "--ramp-timeout", "60000",
                   "--ready-file", ready, "--hold-ms", "60000"] + (["--deflate"] if deflate else []),
                  os.path.join(harness.tmp_root(), "wsload-%s.log" % tag))
    harness.wait_for(lambda: os.path.exists(ready) or load.proc.poll() is not None, 70,
                     "wsload's ramp")
    assert os.path.exists(ready), "wsload exited (%s) before its ramp ended" % load.proc.returncode
    with open(ready) as f:
        ramp = json.load(f)["ramp"]
    assert ramp["ok"] == N_DEFLATE and ramp["failed"] == 0, ramp
    after = tree_rss(gw)
    import lb
    negotiated = lb.value(lb.metrics(gw.admin_port), "wsgate_deflate_negotiated_total")
    assert negotiated == (N_DEFLATE if deflate else 0), negotiated
    load.kill()
    gw.kill()
    redis.kill()
    return (after - before) / N_DEFLATE


@harness.timeout(240)
def test_idle_memory_with_deflate_negotiated():
    """Every connection negotiated permessage-deflate: idle, it costs what a connection
    of a gateway without --deflate costs (at most DEFLATE_EXTRA_MAX bytes more). Two
    rounds each way, alternating; medians compared."""
    assert os.access(WSLOAD, os.X_OK), "%s is not built" % WSLOAD
    plain, zipped = [], []
    for r in range(2):
        plain.append(idle_per_conn(False, "plain%d" % r))
        zipped.append(idle_per_conn(True, "deflate%d" % r))
    p, z = statistics.median(plain), statistics.median(zipped)
    print("idle bytes per connection (%d, cold, 2 workers): without --deflate %s -> %.0f, "
          "with --deflate negotiated %s -> %.0f: %+.0f B"
          % (N_DEFLATE, ["%.0f" % x for x in plain], p, ["%.0f" % x for x in zipped], z, z - p))
    if is_asan(harness.WSGATE):
        print("ASan build: its allocator's RSS is not the product's; the figure is not judged")
        return
    assert z - p <= DEFLATE_EXTRA_MAX, \
        "an idle deflate connection costs %.0f B more than a plain one (at most %d)" % (
            z - p, DEFLATE_EXTRA_MAX)
