"""Master and workers: SO_REUSEPORT spreads connections; a killed worker is replaced."""

import os
import re
import signal
import subprocess

import harness
from wsraw import OP_TEXT, Client


def open_many(port, n):
    return [Client.open(port) for _ in range(n)]


def test_two_workers_both_take_connections():
    gw = harness.start_gateway(workers=2)
    names = set(gw.worker_pids())
    assert len(names) == 2, "ready lines: %r" % gw.ready_lines()
    clients = open_many(gw.port, 40)
    seen = {}
    for c in clients:
        seen.setdefault(c.worker, []).append(c)
    assert len(seen) == 2, "all 40 connections went to worker(s) %r" % sorted(seen)
    assert {"w" + w for w in seen} == names, \
        "X-Wsgate-Conn workers %r vs logged %r" % (sorted(seen), sorted(names))
    for c in clients:
        c.echo(OP_TEXT, c.conn_id)
    ids = [c.conn_id for c in clients]
    assert len(set(ids)) == len(ids), "duplicate connection ids"


def test_worker_pids_are_children_of_master():
    gw = harness.start_gateway(workers=2)
    pids = set(gw.worker_pids().values())
    out = subprocess.run(["pgrep", "-P", str(gw.pid)], capture_output=True, text=True).stdout
    children = {int(x) for x in out.split()}
    assert pids == children, "logged worker pids %r, master's children %r" % (pids, children)


@harness.timeout(45)
def test_kill_9_worker_is_replaced_and_other_worker_unaffected():
    gw = harness.start_gateway(workers=2)
    clients = open_many(gw.port, 40)
    by_worker = {}
    for c in clients:
        by_worker.setdefault(c.worker, []).append(c)
    assert len(by_worker) == 2, "connections all on %r" % sorted(by_worker)
    pids = gw.worker_pids()
    victim, survivor = sorted(by_worker)
    victim_pid = pids["w" + victim]
    mark = len(gw.log())
    os.kill(victim_pid, signal.SIGKILL)

    gw.wait_log(r"master worker exited\b.*\bw=%s\b.*\bsignal=9" % victim, timeout=5, start=mark)
    m = gw.wait_log(r"\bw%s worker ready\b.*\bpid=(\d+)" % victim, timeout=10, start=mark)
    new_pid = int(m.group(1))
    assert new_pid != victim_pid
    assert gw.proc.poll() is None, "master exited"

    # the victim's clients see TCP closed (no close frame is possible from a dead process)
    for c in by_worker[victim]:
        c.expect_eof(timeout=3)
    # the survivor's clients still echo
    for c in by_worker[survivor]:
        c.echo(OP_TEXT, "still alive")
    # the replacement accepts: new connections reach both workers again
    seen = set()
    for i in range(60):
        c = Client.open(gw.port)
        c.echo(OP_TEXT, "new %d" % i)
        seen.add(c.worker)
        c.close()
        if seen == {victim, survivor}:
            break
    assert victim in seen, "no new connection reached the restarted worker %s" % victim
    assert set(gw.worker_pids()) == {"w" + victim, "w" + survivor}
    gw.stop(expect_status=0)


def test_master_logs_worker_exit_with_pid():
    gw = harness.start_gateway(workers=2)
    name, pid = sorted(gw.worker_pids().items())[0]
    mark = len(gw.log())
    os.kill(pid, signal.SIGKILL)
    m = gw.wait_log(r"master worker exited\b.*", timeout=5, start=mark)
    line = m.group(0)
    assert re.search(r"\bpid=%d\b" % pid, line), line
    gw.wait_ready(3, timeout=10)


def test_many_concurrent_connections_echo():
    gw = harness.start_gateway(workers=2)
    clients = open_many(gw.port, 200)
    for i, c in enumerate(clients):
        c.send_frame(OP_TEXT, b"msg %d" % i)
    for i, c in enumerate(clients):
        op, data = c.recv_message()
        assert (op, data) == (OP_TEXT, b"msg %d" % i)
    for c in clients:
        c.close()
