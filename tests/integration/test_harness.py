"""The harness itself: the pieces later tests build on work on this machine."""

import socket

import harness


def test_start_redis_answers_and_is_killed_by_pid():
    r = harness.start_redis()
    cli = r.client()
    assert cli.ping() is True
    cli.set("wsgate:test", "1")
    assert cli.get("wsgate:test") == b"1"
    pid = r.proc.pid
    r.kill()
    assert r.proc.poll() is not None, "redis-server %d still running" % pid
    s = socket.socket()
    s.settimeout(1)
    try:
        assert s.connect_ex(("127.0.0.1", r.port)) != 0, "port still accepts after kill"
    finally:
        s.close()


def test_gateway_stop_reports_exit_status():
    gw = harness.start_gateway(workers=1)
    assert len(gw.worker_pids()) == 1
    assert gw.stop(expect_status=0) == 0
