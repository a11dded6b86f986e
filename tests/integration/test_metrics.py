"""/metrics: every line passes a strict Prometheus text-format parser (lb.parse_metrics),
and the counters and gauges match what the test did: handshakes, refusals, echoed
messages, orders and their closes, a killed worker, a lost and restarted Redis, a drain.

Counters are summed over workers; gauges are refreshed every 50 ms by the workers, so
every check of a gauge polls against a deadline."""

import asyncio
import os
import signal
import socket
import time

import harness
import fleet as F
import lb
import wsraw
from fleet import Fleet, assert_closed_with, assert_open, open_clients, run, until
from lb import MetricsError, parse_metrics, value

EXPECTED = {
    "wsgate_workers": "gauge",
    "wsgate_worker_restarts_total": "counter",
    "wsgate_worker_stall_kills_total": "counter",
    "wsgate_workers_stalled": "gauge",
    "wsgate_workers_at_capacity": "gauge",
    "wsgate_admin_refused_total": "counter",
    "wsgate_auth_accepted_total": "counter",
    "wsgate_auth_refused_total": "counter",
    "wsgate_origin_refused_total": "counter",
    "wsgate_ip_refused_total": "counter",
    "wsgate_ip_untracked_total": "counter",
    "wsgate_proxy_protocol_errors_total": "counter",
    "wsgate_connections_open": "gauge",
    "wsgate_connections_accepted_total": "counter",
    "wsgate_handshakes_total": "counter",
    "wsgate_messages_received_total": "counter",
    "wsgate_messages_sent_total": "counter",
    "wsgate_bytes_received_total": "counter",
    "wsgate_bytes_sent_total": "counter",
    "wsgate_protocol_errors_total": "counter",
    "wsgate_close_frames_sent_total": "counter",
    "wsgate_closes_total": "counter",
    "wsgate_orders_received_total": "counter",
    "wsgate_orders_applied_total": "counter",
    "wsgate_orders_ignored_total": "counter",
    "wsgate_orders_refused_total": "counter",
    "wsgate_order_connections_closed_total": "counter",
    "wsgate_redis_connected": "gauge",
    "wsgate_redis_subscribed_workers": "gauge",
    "wsgate_redis_reconnects_total": "counter",
    "wsgate_redis_connect_attempts_total": "counter",
    "wsgate_redis_timeouts_total": "counter",
    "wsgate_redis_refused_total": "counter",
    "wsgate_redis_publish_dropped_total": "counter",
    "wsgate_redis_shards_connected": "gauge",
    "wsgate_redis_cluster_channels": "gauge",
    "wsgate_redis_cluster_maps_total": "counter",
    "wsgate_redis_cluster_moved_total": "counter",
    "wsgate_redis_cluster_sunsubscribed_total": "counter",
    "wsgate_redis_cluster_redirects_lost_total": "counter",
    "wsgate_redis_worker_channel_refused_total": "counter",
    "wsgate_redis_failovers_total": "counter",
    "wsgate_redis_not_master_total": "counter",
    "wsgate_redis_sentinel_queries_total": "counter",
    "wsgate_redis_sentinel_errors_total": "counter",
    "wsgate_redis_sentinel_connect_attempts_total": "counter",
    "wsgate_redis_sentinel_failures_total": "counter",
    "wsgate_draining": "gauge",
    "wsgate_slow_consumer_closes_total": "counter",
    "wsgate_pending_budget_closes_total": "counter",
    "wsgate_outbound_bytes": "gauge",
    "wsgate_pending_bytes": "gauge",
    "wsgate_order_jobs": "gauge",
    "wsgate_inbound_messages_total": "counter",
    "wsgate_inbound_bytes_total": "counter",
    "wsgate_inbound_dropped_total": "counter",
    "wsgate_inbound_retried_total": "counter",
    "wsgate_inbound_pauses_total": "counter",
    "wsgate_inbound_paused_connections": "gauge",
    "wsgate_inbound_pending_bytes": "gauge",
    "wsgate_tls_handshakes_total": "counter",
    "wsgate_tls_reloads_total": "counter",
    "wsgate_order_member_orders_total": "counter",
    "wsgate_order_joined_total": "counter",
    "wsgate_order_left_total": "counter",
    "wsgate_order_join_refused_total": "counter",
    "wsgate_groups": "gauge",
    "wsgate_group_channels": "gauge",
    "wsgate_group_subscribe_commands_total": "counter",
    "wsgate_group_unsubscribe_commands_total": "counter",
    "wsgate_group_channel_orders_total": "counter",
    "wsgate_group_channel_oom_total": "counter",
    "wsgate_pushed_messages_total": "counter",
    "wsgate_pushed_bytes_total": "counter",
    "wsgate_push_dropped_total": "counter",
    "wsgate_deflate_negotiated_total": "counter",
    "wsgate_deflate_declined_total": "counter",
    "wsgate_deflate_malformed_total": "counter",
    "wsgate_deflate_compressed_messages_total": "counter",
    "wsgate_deflate_compressed_bytes_in_total": "counter",
    "wsgate_deflate_compressed_bytes_out_total": "counter",
    "wsgate_deflate_sent_total": "counter",
    "wsgate_deflate_uncompressed_total": "counter",
    "wsgate_deflate_inflated_messages_total": "counter",
    "wsgate_deflate_inflated_bytes_in_total": "counter",
    "wsgate_deflate_inflated_bytes_out_total": "counter",
    "wsgate_deflate_inflate_errors_total": "counter",
    "wsgate_deflate_bombs_refused_total": "counter",
    "wsgate_deflate_compressor_bytes": "gauge",
    "wsgate_push_delivery_seconds": "histogram",
    "wsgate_stream_entries_total": "counter",
    "wsgate_stream_orders_total": "counter",
    "wsgate_stream_skipped_stale_total": "counter",
    "wsgate_stream_skipped_bad_total": "counter",
    "wsgate_stream_duplicates_total": "counter",
    "wsgate_stream_dedup_full_total": "counter",
    "wsgate_stream_readers": "gauge",
    "wsgate_stream_reconnects_total": "counter",
    "wsgate_stream_timeouts_total": "counter",
    "wsgate_tombstones": "gauge",
    "wsgate_tombstones_added_total": "counter",
    "wsgate_tombstones_lifted_total": "counter",
    "wsgate_tombstone_refused_total": "counter",
    "wsgate_tombstone_enforced_total": "counter",
    "wsgate_tombstones_full_total": "counter",
    "wsgate_tombstones_bad_total": "counter",
    "wsgate_tombstone_loads_total": "counter",
}


def eq(fams, want, name, **labels):
    got = value(fams, name, **labels)
    assert got == want, "%s%r is %r, expected %r" % (name, labels, got, want)


def fetch(gw):
    return lb.metrics(gw.admin_port)


async def until_metric(gw, name, want, timeout=5.0, **labels):
    """Polls /metrics until name{labels} == want (gauges lag by up to 50 ms)."""
    seen = []

    def check():
        v = value(fetch(gw), name, **labels)
        seen.append(v)
        return v == want
    try:
        await until(check, timeout, "%s%r == %r" % (name, labels, want), 0.02)
    except AssertionError:
        raise AssertionError("%s%r is %r, expected %r" % (name, labels, seen[-1:], want))


# --- the parser itself ---------------------------------------------------------------------

GOOD = ("# HELP wsgate_x_total Things.\n# TYPE wsgate_x_total counter\n"
        'wsgate_x_total{a="1",b="q\\"x\\\\y"} 3\nwsgate_x_total{a="2"} 1e3\n'
        "# HELP wsgate_g A gauge.\n# TYPE wsgate_g gauge\nwsgate_g -0.5\n"
        "# HELP wsgate_h_seconds A histogram.\n# TYPE wsgate_h_seconds histogram\n"
        'wsgate_h_seconds_bucket{le="0.1"} 1\nwsgate_h_seconds_bucket{le="1"} 3\n'
        'wsgate_h_seconds_bucket{le="+Inf"} 4\nwsgate_h_seconds_sum 7.25\n'
        "wsgate_h_seconds_count 4\n")

HIST = "# HELP wsgate_h h\n# TYPE wsgate_h histogram\n"

BAD = [
    ("no newline at the end", GOOD[:-1]),
    ("sample before HELP/TYPE", "wsgate_g 1\n# HELP wsgate_g g\n# TYPE wsgate_g gauge\n"),
    ("counter without _total", "# HELP wsgate_c c\n# TYPE wsgate_c counter\nwsgate_c 1\n"),
    ("gauge with _total", "# HELP wsgate_c_total c\n# TYPE wsgate_c_total gauge\n"
                          "wsgate_c_total 1\n"),
    ("bad name", "# HELP wsgate_C c\n# TYPE wsgate_C gauge\nwsgate_C 1\n"),
    ("no prefix", "# HELP up u\n# TYPE up gauge\nup 1\n"),
    ("digit in name", "# HELP wsgate_g2 g\n# TYPE wsgate_g2 gauge\nwsgate_g2 1\n"),
    ("bad value", "# HELP wsgate_g g\n# TYPE wsgate_g gauge\nwsgate_g one\n"),
    ("timestamp", "# HELP wsgate_g g\n# TYPE wsgate_g gauge\nwsgate_g 1 1700000000\n"),
    ("two spaces", "# HELP wsgate_g g\n# TYPE wsgate_g gauge\nwsgate_g  1\n"),
    ("unquoted label", "# HELP wsgate_g g\n# TYPE wsgate_g gauge\nwsgate_g{a=1} 1\n"),
    ("bad escape", '# HELP wsgate_g g\n# TYPE wsgate_g gauge\nwsgate_g{a="\\t"} 1\n'),
    ("unterminated labels", '# HELP wsgate_g g\n# TYPE wsgate_g gauge\nwsgate_g{a="x" 1\n'),
    ("duplicate sample", "# HELP wsgate_g g\n# TYPE wsgate_g gauge\nwsgate_g 1\nwsgate_g 2\n"),
    ("second TYPE", "# HELP wsgate_g g\n# TYPE wsgate_g gauge\n# TYPE wsgate_g gauge\n"),
    ("blank line", "# HELP wsgate_g g\n\n# TYPE wsgate_g gauge\nwsgate_g 1\n"),
    ("free comment", "# hello\n"),
    ("unknown type", "# HELP wsgate_g g\n# TYPE wsgate_g meter\nwsgate_g 1\n"),
    ("negative counter", "# HELP wsgate_c_total c\n# TYPE wsgate_c_total counter\n"
                         "wsgate_c_total -1\n"),
    ("split family", "# HELP wsgate_a a\n# TYPE wsgate_a gauge\nwsgate_a{x=\"1\"} 1\n"
                     "# HELP wsgate_b b\n# TYPE wsgate_b gauge\nwsgate_b 1\n"
                     "wsgate_a{x=\"2\"} 1\n"),
    ("HELP without TYPE", "# HELP wsgate_g g\n"),
    ("histogram without +Inf", HIST + 'wsgate_h_bucket{le="1"} 1\nwsgate_h_sum 1\n'
                               "wsgate_h_count 1\n"),
    ("histogram not cumulative", HIST + 'wsgate_h_bucket{le="1"} 2\n'
                                 'wsgate_h_bucket{le="+Inf"} 1\nwsgate_h_sum 1\n'
                                 "wsgate_h_count 1\n"),
    ("histogram count not +Inf", HIST + 'wsgate_h_bucket{le="+Inf"} 2\nwsgate_h_sum 1\n'
                                 "wsgate_h_count 1\n"),
    ("histogram without _sum", HIST + 'wsgate_h_bucket{le="+Inf"} 1\nwsgate_h_count 1\n'),
    ("histogram bucket without le", HIST + "wsgate_h_bucket 1\nwsgate_h_sum 1\n"
                                    "wsgate_h_count 1\n"),
    ("histogram bad le", HIST + 'wsgate_h_bucket{le="x"} 1\nwsgate_h_bucket{le="+Inf"} 1\n'
                         "wsgate_h_sum 1\nwsgate_h_count 1\n"),
    ("histogram bare sample", HIST + "wsgate_h 1\n"),
    ("histogram sample elsewhere", HIST + 'wsgate_h_bucket{le="+Inf"} 1\nwsgate_h_sum 1\n'
                                   "# HELP wsgate_g g\n# TYPE wsgate_g gauge\nwsgate_g 1\n"
                                   "wsgate_h_count 1\n"),
    ("bucket of a gauge", "# HELP wsgate_g g\n# TYPE wsgate_g gauge\nwsgate_g_bucket 1\n"),
]


def test_parser_accepts_good_text_and_rejects_each_bad_case():
    fams = parse_metrics(GOOD)
    eq(fams, 3, "wsgate_x_total", a="1", b='q"x\\y')
    eq(fams, 1000, "wsgate_x_total", a="2")
    eq(fams, -0.5, "wsgate_g")
    eq(fams, 4, "wsgate_h_seconds_count")
    eq(fams, 7.25, "wsgate_h_seconds_sum")
    eq(fams, 3, "wsgate_h_seconds_bucket", le="1")
    assert lb.histogram(fams, "wsgate_h_seconds") == ([(0.1, 1), (1.0, 3), (float("inf"), 4)],
                                                      7.25, 4)
    for why, text in BAD:
        try:
            parse_metrics(text)
        except MetricsError:
            continue
        raise AssertionError("parser accepted %s: %r" % (why, text))


# --- the gateway's text --------------------------------------------------------------------

def test_metrics_text_is_strict_prometheus_with_every_documented_metric():
    redis = harness.start_redis()
    gw = harness.Gateway(flags={"--redis": redis.url}).start()
    lb.wait_ready(gw.admin_port)
    status, body = lb.admin_get(gw.admin_port, "/metrics")
    assert status == 200
    fams = parse_metrics(body)
    for name, typ in EXPECTED.items():
        assert name in fams, "no %s in /metrics" % name
        assert fams[name]["type"] == typ, "%s is a %s, expected %s" % (name, fams[name]["type"],
                                                                     typ)
    extra = set(fams) - set(EXPECTED)
    assert not extra, "undocumented metrics: %r" % sorted(extra)
    for r in ("ok", "refused", "timeout", "full"):
        assert value(fams, "wsgate_handshakes_total", result=r) == 0
    for r in ("ok", "failed", "timeout"):  # present, at 0, without TLS too
        assert ({"result": r} in [dict(k) for k in fams["wsgate_tls_handshakes_total"]["samples"]])
        assert value(fams, "wsgate_tls_handshakes_total", result=r) == 0
    for i in ("order", "client", "drain", "timeout", "error", "slow", "busy"):
        assert value(fams, "wsgate_closes_total", initiator=i) == 0
    eq(fams, 2, "wsgate_workers")
    eq(fams, 1, "wsgate_redis_connected")
    eq(fams, 2, "wsgate_redis_subscribed_workers")
    eq(fams, 0, "wsgate_draining")
    # HEAD-less checks of the other admin paths
    assert lb.admin_get(gw.admin_port, "/healthz") == (200, "ok") or \
        lb.admin_get(gw.admin_port, "/healthz")[1].strip() == "ok"
    assert lb.readyz(gw.admin_port)[0] == 200


def refused_handshake(port):
    """An upgrade request without Sec-WebSocket-Key: the gateway answers 400."""
    s = wsraw.connect(port)
    try:
        s.sendall(wsraw.request(key=None))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        status = int(data.split(b" ", 2)[1])
        assert 400 <= status < 500, data[:200]
    finally:
        s.close()


@harness.timeout(60)
def test_counters_match_handshakes_messages_and_orders():
    fl = Fleet(ids=("gwM",))
    gw = fl.gateways["gwM"]
    n, m = 12, 3
    texts = ["hello %d" % i for i in range(n)] + ["é" * 10]

    async def main():
        before = fetch(gw)
        eq(before, 0, "wsgate_connections_accepted_total")
        clients = await open_clients(fl, [("gwM", ["g%d" % (i % 2)], None) for i in range(n)])
        for _ in range(m):
            refused_handshake(gw.port)
        for c, t in zip(clients + clients[:1], texts):
            await c.echo(t)
        k = len(texts)
        nbytes = sum(len(t.encode()) for t in texts)
        fams = fetch(gw)
        eq(fams, n, "wsgate_handshakes_total", result="ok")
        eq(fams, m, "wsgate_handshakes_total", result="refused")
        eq(fams, n + m, "wsgate_connections_accepted_total")
        eq(fams, k, "wsgate_messages_received_total")
        eq(fams, k, "wsgate_messages_sent_total")
        eq(fams, nbytes, "wsgate_bytes_received_total")
        assert value(fams, "wsgate_bytes_sent_total") >= nbytes + n * 2
        eq(fams, 0, "wsgate_protocol_errors_total")
        await until_metric(gw, "wsgate_connections_open", n)

        # an order closing the x members of g0 with 4001
        targets = [c for c in clients if "g0" in c.groups]
        x = len(targets)
        oid, acks = await fl.order({"group": "g0", "code": 4001, "reason": "metrics"})
        await assert_closed_with(targets, 4001, "metrics")
        fams = fetch(gw)
        eq(fams, x, "wsgate_close_frames_sent_total", code="4001")
        eq(fams, x, "wsgate_closes_total", initiator="order")
        eq(fams, x, "wsgate_order_connections_closed_total")
        eq(fams, 2, "wsgate_orders_received_total")  # each worker counts it
        eq(fams, 2, "wsgate_orders_applied_total")
        await until_metric(gw, "wsgate_connections_open", n - x)

        # a refused order: a code that may not be on the wire
        r0 = value(fams, "wsgate_orders_refused_total", reason="code")
        rid = F.order_id("bad")
        assert fl.publish({"id": rid, "op": "close", "all": True, "code": 1005,
                           "reply_to": F.ACKS}) == 2
        await until(lambda: len(fl.listener.acks(rid)) >= 2, 5, "2 refusals of " + rid)
        fams = fetch(gw)
        assert value(fams, "wsgate_orders_refused_total", reason="code") == r0 + 2, \
            fams["wsgate_orders_refused_total"]["samples"]
        eq(fams, 4, "wsgate_orders_received_total")
        eq(fams, 2, "wsgate_orders_applied_total")
        # an order for another gateway is ignored by both workers
        fl.publish({"id": F.order_id("other"), "op": "close", "all": True, "gateway": "nope"})
        await until_metric(gw, "wsgate_orders_ignored_total", 2)
        rest = [c for c in clients if c.open]
        await assert_open(rest, "after")

        # client-initiated closes
        await asyncio.gather(*[c.ws.close(1000, "bye") for c in rest])
        await until_metric(gw, "wsgate_closes_total", len(rest), initiator="client")
        await until_metric(gw, "wsgate_connections_open", 0)
        fams = fetch(gw)
        eq(fams, k + len(rest), "wsgate_messages_received_total")  # + the "after" echoes
        eq(fams, k + len(rest), "wsgate_messages_sent_total")
        eq(fams, 0, "wsgate_closes_total", initiator="error")
        eq(fams, 0, "wsgate_protocol_errors_total")

    run(main())


def test_protocol_error_is_counted():
    gw = harness.start_gateway()
    c = wsraw.Client.open(gw.port)
    # an unmasked frame: 1002
    c.sock.sendall(b"\x81\x02hi")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        fams = fetch(gw)
        # the worker counts the error, then the close frame: wait for both, not one
        if value(fams, "wsgate_protocol_errors_total") == 1 and \
                value(fams, "wsgate_close_frames_sent_total", code="1002") == 1:
            break
        time.sleep(0.02)  # poll interval
    eq(fams, 1, "wsgate_protocol_errors_total")
    eq(fams, 1, "wsgate_close_frames_sent_total", code="1002")
    eq(fams, 1, "wsgate_closes_total", initiator="error")


@harness.timeout(60)
def test_kill_9_worker_counts_one_restart():
    redis = harness.start_redis()
    gw = harness.Gateway(flags={"--redis": redis.url}).start()
    lb.wait_ready(gw.admin_port)
    eq(fetch(gw), 0, "wsgate_worker_restarts_total")
    clients = [wsraw.Client.open(gw.port) for _ in range(20)]
    on_w1 = sum(1 for c in clients if c.worker == "1")
    assert 0 < on_w1 < 20, "all 20 connections on one worker"
    victim = gw.worker_pids()["w1"]
    mark = len(gw.log())
    os.kill(victim, signal.SIGKILL)
    gw.wait_log(r"\bw1 worker ready\b", timeout=10, start=mark)

    async def main():
        await until_metric(gw, "wsgate_worker_restarts_total", 1)
        await until_metric(gw, "wsgate_workers", 2)
        await until_metric(gw, "wsgate_redis_subscribed_workers", 2)
        # the dead worker's connections are gone from the gauge, not frozen in its slot
        await until_metric(gw, "wsgate_connections_open", 20 - on_w1)
    run(main())
    lb.wait_ready(gw.admin_port)
    for c in clients:
        c.close()


@harness.timeout(60)
def test_redis_loss_and_return_gauges_and_readyz():
    fl = Fleet(ids=("gwR",))
    gw = fl.gateways["gwR"]

    async def main():
        await until_metric(gw, "wsgate_redis_connected", 1)
        r0 = value(fetch(gw), "wsgate_redis_reconnects_total")
        port = fl.redis.port
        fl.redis.kill()
        await until_metric(gw, "wsgate_redis_connected", 0)
        await until(lambda: lb.readyz(gw.admin_port)[0] == 503, 5, "/readyz 503")
        status, body = lb.readyz(gw.admin_port)
        assert "redis" in body.lower(), body
        assert value(fetch(gw), "wsgate_redis_subscribed_workers") < 2
        fl.redis = F.RedisOnPort(port).start()
        await until_metric(gw, "wsgate_redis_connected", 1, timeout=15)
        await until_metric(gw, "wsgate_redis_subscribed_workers", 2)
        await until(lambda: lb.readyz(gw.admin_port)[0] == 200, 5, "/readyz 200 again")
        assert value(fetch(gw), "wsgate_redis_reconnects_total") > r0
    run(main())


@harness.timeout(60)
def test_draining_gauge_and_drain_closes():
    redis = harness.start_redis()
    gw = harness.Gateway(flags={"--redis": redis.url, "--drain-spread": "3s",
                                "--log-level": "info"}).start()
    lb.wait_ready(gw.admin_port)

    async def main():
        clients = [await F.connect("ws://127.0.0.1:%d/" % gw.port, "test1", []) for _ in range(6)]
        await until_metric(gw, "wsgate_connections_open", 6)
        eq(fetch(gw), 0, "wsgate_draining")
        gw.signal(signal.SIGTERM)
        await until_metric(gw, "wsgate_draining", 1, timeout=1)
        # mid-drain (3s spread): the drain counters follow the closes the clients saw
        await until(lambda: sum(1 for c in clients if not c.open) >= 3, 4, "3 drain closes")

        def caught_up():
            fams = fetch(gw)
            closed = sum(1 for c in clients if not c.open)
            return (value(fams, "wsgate_closes_total", initiator="drain") >= closed and
                    value(fams, "wsgate_close_frames_sent_total", code="1001") >= closed and
                    value(fams, "wsgate_draining") == 1 and closed < 6)
        await until(caught_up, 2, "drain counters mid-drain")
        await assert_closed_with(clients, 1001, "server restarting", timeout=6)
        assert gw.wait_exit(5) == 0
    run(main())


def raw_admin(port, request):
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    return int(data.split(b" ", 2)[1]), data


def test_admin_listener_never_upgrades_and_allows_only_get():
    gw = harness.start_gateway()
    for path in ("/", "/metrics", "/healthz"):
        status, data = raw_admin(gw.admin_port, wsraw.request(path=path))
        assert status != 101 and 400 <= status < 500, "upgrade on the admin port %s: %r" % (
            path, data[:200])
    status, data = raw_admin(gw.admin_port, b"POST /metrics HTTP/1.1\r\nHost: x\r\n"
                                            b"Content-Length: 0\r\n\r\n")
    assert status == 405, data[:200]


def test_admin_unknown_path_is_404():
    """A plain GET of an unknown path on the admin listener is 404 Not Found, as a
    WebSocket upgrade of the same path is; not the client listener's 426 Upgrade Required
    (with Upgrade: websocket), which tells a probe or a browser to try a WebSocket there."""
    gw = harness.start_gateway()
    status, data = raw_admin(gw.admin_port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 404, "GET /nope on the admin port: %r" % data[:300]
    status, data = raw_admin(gw.admin_port, wsraw.request(path="/nope"))
    assert status == 404, data[:300]
