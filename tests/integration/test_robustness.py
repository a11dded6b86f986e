"""What broke or bent under faults and hostile clients (issue 8), each case as it was found:
a drain order without id, the admin port at the file limit, a hung worker, identity
from the query string beside trusted headers, 256 groups on one connection, a SIGTERM
while a worker sets up, and --version."""

import os
import re
import signal
import socket
import subprocess
import time

import harness
import fleet as F
import lb
import wsraw
from fleet import Fleet, open_clients, run, until
from lb import value


def gateway(redis, workers=2, binary=None, nofile=None, **flags):
    f = {"--redis": redis.url, "--log-level": "info", "--close-timeout": "1s"}
    f.update({"--" + k.replace("_", "-"): v for k, v in flags.items()})
    gw = harness.Gateway(flags=f, workers=workers, binary=binary)
    if nofile is not None:
        gw.argv = ["prlimit", "--nofile=%d:%d" % (nofile, nofile)] + gw.argv
    gw.start()
    lb.wait_ready(gw.admin_port)
    return gw


# --- 1. a drain order without an id ends the gateway -----------------------------------------

@harness.timeout(40)
def test_readme_drain_order_without_id_ends_the_gateway_with_status_0():
    redis = harness.start_redis()
    gw = gateway(redis, id="gw1")
    clients = [wsraw.Client.open(gw.port) for _ in range(10)]
    # The README's example, published as written.
    out = subprocess.run(["redis-cli", "-p", str(redis.port), "PUBLISH", "wsgate:orders",
                          '{"op":"drain","gateway":"gw1","spread_ms":0}'],
                         capture_output=True, text=True, timeout=10)
    assert out.stdout.strip() == "2", out  # both workers
    for c in clients:
        c.expect_close(1001, timeout=5, reply=True)
    status = gw.wait_exit(15)
    assert status == 0, "exit status %s\n%s" % (status, gw.log())
    log = gw.log()
    assert "restarting worker" not in log, log
    assert re.search(r"master .*draining \(drain order\)", log), log
    assert lb.admin_get(gw.admin_port, "/readyz", timeout=1)[0] is None, "admin still answers"


@harness.timeout(40)
def test_drain_order_drains_a_worker_it_did_not_reach():
    """The order reaches w1 only (w2 is stopped while it is delivered and the master
    sweeps): the master drains w2 with SIGTERM, and the gateway exits 0."""
    redis = harness.start_redis()
    gw = gateway(redis, id="gwS", stall_kill="0", drain_spread="0")
    pids = gw.worker_pids()
    os.kill(pids["w2"], signal.SIGSTOP)
    try:
        r = redis.client()
        r.publish("wsgate:orders:gwS", '{"op":"drain","gateway":"gwS"}')
        gw.wait_log(r"master .*draining \(drain order\)", timeout=5)
        # w1 drains on the order; a second later the master signals w2, which is still
        # stopped: the signal waits for it.
        gw.wait_log(r"worker exited w=1 pid=%d status=3" % pids["w1"], timeout=10)
        gw.wait_log(r"drain order: SIGTERM to 1 worker\(s\) not draining", timeout=5)
    finally:
        os.kill(pids["w2"], signal.SIGCONT)
    assert gw.wait_exit(15) == 0, gw.log()
    assert "restarting worker" not in gw.log(), gw.log()


# --- 2. the admin port at the file limit ----------------------------------------------------

@harness.timeout(60)
def test_admin_answers_at_capacity_and_readyz_says_why():
    redis = harness.start_redis()
    gw = gateway(redis, workers=1, nofile=300)
    m = re.search(r"worker ready .*capacity=(\d+)", gw.log())
    cap = int(m.group(1))
    assert cap == 300 - 32, m.group(0)
    held, refused = [], 0
    while refused == 0:
        assert len(held) <= cap, "more than capacity %d accepted" % cap
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        s.sendall(wsraw.request())
        r = wsraw.read_head(s)
        if r.status == 101:
            held.append(s)
        else:
            assert r.status == 503, r.status_line
            refused += 1
            s.close()
    assert len(held) == cap, (len(held), cap)
    # Full of clients, the probes and the metrics still answer from the reserve.
    assert lb.admin_get(gw.admin_port, "/healthz") == (200, "ok\n")
    fams = lb.metrics(gw.admin_port)
    assert value(fams, "wsgate_handshakes_total", result="full") >= 1
    harness.wait_for(lambda: value(lb.metrics(gw.admin_port), "wsgate_connections_open") == cap,
                     3, "wsgate_connections_open %d" % cap)
    harness.wait_for(lambda: value(lb.metrics(gw.admin_port), "wsgate_workers_at_capacity") == 1,
                     3, "wsgate_workers_at_capacity 1")
    status, body = lb.readyz(gw.admin_port)
    assert (status, body) == (503, "worker 1 at capacity\n"), (status, body)
    for s in held[:5]:
        s.close()
    harness.wait_for(lambda: lb.readyz(gw.admin_port)[0] == 200, 5, "/readyz 200 with room again")
    for s in held[5:]:
        s.close()


@harness.timeout(40)
def test_admin_requests_beyond_max_admin_conns_get_503_and_are_counted():
    redis = harness.start_redis()
    gw = gateway(redis, workers=1, max_admin_conns="3", handshake_timeout="3s")
    idle = [socket.create_connection(("127.0.0.1", gw.admin_port)) for _ in range(3)]
    # The three idle ones hold the budget: the next request is refused, not queued.
    harness.wait_for(lambda: lb.admin_get(gw.admin_port, "/healthz")[0] == 503, 3,
                     "503 with 3 admin connections held")
    status, body = lb.admin_get(gw.admin_port, "/healthz")
    assert (status, body) == (503, "too many admin requests\n"), (status, body)
    for s in idle:
        s.close()
    harness.wait_for(lambda: lb.admin_get(gw.admin_port, "/healthz")[0] == 200, 3,
                     "/healthz 200 once they are gone")
    assert value(lb.metrics(gw.admin_port), "wsgate_admin_refused_total") >= 1
    # clients were never refused for it
    with wsraw.Client.open(gw.port) as c:
        c.echo(wsraw.OP_TEXT, b"still here")


# --- 3. a hung worker -----------------------------------------------------------------------

@harness.timeout(60)
def test_stopped_worker_fails_readyz_then_is_killed_and_restarted():
    redis = harness.start_redis()
    gw = gateway(redis, stall_timeout="1s", stall_kill="4s")
    victim = gw.worker_pids()["w1"]
    mark = len(gw.log())
    t0 = time.monotonic()
    os.kill(victim, signal.SIGSTOP)
    harness.wait_for(lambda: lb.readyz(gw.admin_port)[0] == 503, 3, "/readyz 503")
    status, body = lb.readyz(gw.admin_port)
    assert status == 503 and re.match(r"worker 1 stalled for \d+ms\n$", body), (status, body)
    assert time.monotonic() - t0 < 2.5
    fams = lb.metrics(gw.admin_port)
    assert value(fams, "wsgate_workers_stalled") == 1
    assert lb.admin_get(gw.admin_port, "/healthz")[0] == 200  # the master is on it
    gw.wait_log(r"worker w=1 pid=%d stalled: no tick for \d+ms; killing it" % victim,
                timeout=8, start=mark)
    gw.wait_log(r"\bw1 worker ready\b", timeout=10, start=mark)
    assert time.monotonic() - t0 >= 4.0
    lb.wait_ready(gw.admin_port, timeout=10)
    fams = lb.metrics(gw.admin_port)
    assert value(fams, "wsgate_worker_stall_kills_total") == 1
    assert value(fams, "wsgate_worker_restarts_total") == 1
    assert value(fams, "wsgate_workers_stalled") == 0
    # New clients are served by both workers again.
    workers = {wsraw.Client.open(gw.port).worker for _ in range(40)}
    assert workers == {"1", "2"}, workers


@harness.timeout(40)
def test_without_the_watchdog_a_stalled_worker_fails_healthz():
    redis = harness.start_redis()
    gw = gateway(redis, stall_timeout="500ms", stall_kill="0")
    victim = gw.worker_pids()["w2"]
    os.kill(victim, signal.SIGSTOP)
    try:
        harness.wait_for(lambda: lb.readyz(gw.admin_port)[0] == 503, 3, "/readyz 503")
        assert lb.admin_get(gw.admin_port, "/healthz")[0] == 200
        # stall timeout + 5 s of grace: then the process is not sound
        harness.wait_for(lambda: lb.admin_get(gw.admin_port, "/healthz")[0] == 503, 9,
                         "/healthz 503")
        status, body = lb.admin_get(gw.admin_port, "/healthz")
        assert re.match(r"worker 2 stalled for \d+ms\n$", body), body
        assert "killing it" not in gw.log()
    finally:
        os.kill(victim, signal.SIGCONT)
    lb.wait_ready(gw.admin_port, timeout=5)
    assert lb.admin_get(gw.admin_port, "/healthz") == (200, "ok\n")


# --- 6. identity: trusted headers win over the query string ----------------------------------

def open_event_groups(fl, conn):
    ev = harness.wait_for(lambda: fl.listener.events("open", conn), 5, "open event of " + conn)
    return sorted(ev[0]["groups"])


def refusal(port, data):
    """(status, body) of a refused upgrade: the whole answer, read to EOF."""
    s, r = wsraw.send_request(port, data)
    body = r.rest
    s.settimeout(5)
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    s.close()
    return r.status, body.decode()


@harness.timeout(40)
def test_trusted_headers_turn_query_identity_off():
    fl = Fleet(ids=("gwH",), flags={"--user-header": "X-User", "--groups-header": "X-Groups"})
    port = fl.gateways["gwH"].port
    path = "/?group=room&group=user:carol&user=mallory"
    c = wsraw.Client.open(port, path, extra=[("X-User", "alice"), ("X-Groups", "team")])
    assert open_event_groups(fl, c.conn_id) == ["team", "user:alice"]
    # no header: the query's user is not taken either
    c2 = wsraw.Client.open(port, "/?user=mallory&group=room")
    assert open_event_groups(fl, c2.conn_id) == []
    # the trusted proxy cannot put anyone in a user: group through the groups header
    status, body = refusal(port, wsraw.request("/", extra=[("X-Groups", "a,user:bob")]))
    assert status == 400 and "user: is reserved" in body, (status, body)


@harness.timeout(40)
def test_query_groups_can_be_turned_back_on_and_user_prefix_is_reserved():
    fl = Fleet(ids=("gwQ", "gwP"), flags={"--user-header": "X-User"})
    gwq = fl.gateways["gwQ"]
    # --query-groups beside a header flag: groups from the query, the user from the header
    gwq.kill()
    gwq = fl.gateways["gwQ"] = harness.Gateway(
        flags={"--id": "gwQ", "--redis": fl.redis.url, "--user-header": "X-User"},
        extra=["--query-groups"]).start()
    fl.wait_subscribed(1)
    c = wsraw.Client.open(gwq.port, "/?group=room&user=mallory", extra=[("X-User", "alice")])
    assert open_event_groups(fl, c.conn_id) == ["room", "user:alice"]
    # user: is reserved for the user id, whatever reads the query
    for port in (gwq.port, harness.Gateway(flags={"--redis": fl.redis.url}).start().port):
        status, body = refusal(port, wsraw.request("/?group=user:carol"))
        assert status == 400 and "user: is reserved" in body, (status, body)


# --- 7. memory safety and small defects -----------------------------------------------------

def groups(n):
    return ",".join("g%d" % i for i in range(n))


@harness.timeout(60)
def test_256_groups_join_leave_join_under_asan():
    """A connection's group count was a uint8_t: 256 groups became 0, the member nodes
    were freed while still linked, and the next join wrote into freed memory."""
    if not os.access(harness.WSGATE_ASAN, os.X_OK):
        raise AssertionError("%s is not built (make test builds it)" % harness.WSGATE_ASAN)
    fl = Fleet(ids=(), workers=1)
    gw = fl.gateways["gwG"] = harness.Gateway(
        flags={"--id": "gwG", "--redis": fl.redis.url, "--max-groups": "300",
               "--groups-header": "X-Groups", "--log-level": "info"},
        workers=1, binary=harness.WSGATE_ASAN).start()
    fl.wait_subscribed(1)
    a = wsraw.Client.open(gw.port, extra=[("X-Groups", groups(300))])
    a.close()
    harness.wait_for(lambda: fl.listener.events("close", a.conn_id), 5, "close event of a")
    b = wsraw.Client.open(gw.port, extra=[("X-Groups", groups(257))])

    async def main():
        oid, acks = await fl.order({"group": "g256", "code": 4000, "reason": "g256"}, workers=1)
        assert F.ack_sums(acks) == (1, 1), acks
    run(main())
    b.expect_close(4000, timeout=5, reply=True)
    assert "ERROR: AddressSanitizer" not in gw.log(), gw.log()
    assert "worker exited" not in gw.log(), gw.log()
    assert value(lb.metrics(gw.admin_port), "wsgate_connections_open") == 0


@harness.timeout(40)
def test_sigterm_while_a_worker_sets_up_is_not_lost():
    """SIGTERM reaches a worker while it is stopped inside its first sigprocmask (strace
    holds that system call for a while): the worker must still drain and say so, not run
    the master's handler in its own process and carry on."""
    need_strace = subprocess.run(["sh", "-c", "command -v strace"], capture_output=True)
    assert need_strace.returncode == 0, "strace is missing (make deps-test installs it)"
    redis = harness.start_redis()
    gw = harness.Gateway(flags={"--redis": redis.url, "--log-level": "info",
                                "--stall-kill": "0"}, workers=1)
    gw.argv = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=rt_sigprocmask",
               "-e", "inject=rt_sigprocmask:delay_exit=3000000:when=1"] + gw.argv
    gw.start(wait_ready=False)
    master = harness.wait_for(lambda: _child_named(gw.pid, "wsgate"), 10, "the wsgate master")
    worker = harness.wait_for(lambda: _child_named(master, "wsgate"), 10, "a worker")
    # Stopped in the delayed system call: the signal lands in the setup window.
    harness.wait_for(lambda: _in_syscall(worker, 14), 5, "the worker inside rt_sigprocmask")
    assert "worker ready" not in gw.log()
    os.kill(worker, signal.SIGTERM)
    gw.wait_log(r"\bw1 got SIGTERM\b", timeout=10)
    gw.wait_log(r"worker exited w=1 pid=%d status=0" % worker, timeout=10)


def _child_named(ppid, name):
    out = subprocess.run(["pgrep", "-P", str(ppid), "-x", name], capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split()]
    return pids[0] if pids else None


def _in_syscall(pid, nr):
    try:
        with open("/proc/%d/syscall" % pid) as f:
            return f.read().split()[0] == str(nr)
    except (OSError, IndexError):
        return False


def test_version_names_the_release_and_the_git_revision():
    rev = subprocess.run(["git", "-C", harness.REPO, "rev-parse", "--short=12", "HEAD"],
                         capture_output=True, text=True)
    for prog in ("wsgate", "wsgatectl"):
        out = subprocess.run([os.path.join(harness.BUILD, prog), "--version"],
                             capture_output=True, text=True, timeout=5)
        assert out.returncode == 0, out
        m = re.match(r"^%s (\d+\.\d+\.\d+) \(git ([0-9a-f]{12}(-dirty)?|unknown)\)\n$" % prog,
                     out.stdout)
        assert m, out.stdout
        if rev.returncode == 0:
            assert m.group(2).split("-")[0] == rev.stdout.strip(), (m.group(2), rev.stdout)
    gw = harness.start_gateway()
    assert re.search(r"master wsgate \d+\.\d+\.\d+ \(git ", gw.log()), gw.log()
