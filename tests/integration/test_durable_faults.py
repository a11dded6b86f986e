"""Orders through Redis faults, counted end to end (tests/lib/orderflow.py): a steady
flow of numbered send orders (50 a second) to one client, through
  - redis-server killed (SIGKILL) and started again 5 s later on the same port,
  - redis-server paused (SIGSTOP) for 5 s,
  - the gateway's subscriber connections cut for 5 s by a proxy that drops their
    packets (tests/lib/tcpproxy.py); the other links pass.
With --orders-stream, every order Redis acknowledged reaches the client, exactly once.
The Redis here keeps what it acknowledged (AOF, appendfsync always): a Redis restarted
empty loses its stream with it, and no reader can read back what is gone.
Without the stream, the loss is measured by tests/bench/durable.py (README); the cut
test checks here that the count does see it."""

import harness
import lb
import orderflow as OF
from fleet import run
from tcpproxy import CutProxy


def gateway(redis_url, stream):
    flags = {"--redis": redis_url, "--id": "flow", "--log-level": "info"}
    if stream:
        flags["--orders-stream"] = OF.STREAM
    gw = harness.Gateway(flags=flags, workers=2).start()
    lb.wait_ready(gw.admin_port, 10)
    return gw


def check_none_lost(res, what):
    assert res["published"] > 200, "%s: too few orders went through: %r" % (what, res)
    assert res["lost"] == 0, "%s: orders lost with the stream: %r" % (what, res)
    assert res["duplicates"] == 0, "%s: orders applied twice: %r" % (what, res)
    assert res["client_open"], "%s: the client was closed: %r" % (what, res)


@harness.timeout(90)
def test_stream_loses_no_order_when_redis_is_killed_and_restarted():
    redis = OF.DurableRedis().start()
    gw = gateway(redis.url, True)
    res = run(OF.run_flow(gw, redis.port, OF.kill_restart(redis, 5.0), stream=OF.STREAM))
    check_none_lost(res, "kill -9 and restart")
    assert res["fault_s"] >= 5.0, res
    fams = lb.metrics(gw.admin_port)
    assert lb.value(fams, "wsgate_stream_reconnects_total") >= 2, "both readers came back"


@harness.timeout(90)
def test_stream_loses_no_order_when_redis_is_paused_for_five_seconds():
    redis = OF.DurableRedis().start()
    gw = gateway(redis.url, True)
    res = run(OF.run_flow(gw, redis.port, OF.sigstop(redis, 5.0), stream=OF.STREAM))
    check_none_lost(res, "SIGSTOP 5 s")
    fams = lb.metrics(gw.admin_port)
    # The publisher retried orders whose answer timed out: Redis ran some twice once
    # it woke up, and the gateway applied each id once.
    assert lb.value(fams, "wsgate_stream_timeouts_total") >= 1, "the paused link was dropped"


@harness.timeout(120)
def test_stream_loses_no_order_when_the_subscriber_is_cut_and_the_count_sees_loss_without():
    redis = OF.DurableRedis().start()
    proxy = CutProxy(redis.port)
    gw = gateway(proxy.url, True)
    res = run(OF.run_flow(gw, redis.port, OF.cut_subscribers(proxy, 5.0), stream=OF.STREAM))
    check_none_lost(res, "subscriber cut 5 s")
    assert proxy.cut_total >= 2, "the proxy cut no subscriber: %s" % proxy.dump()
    gw.kill()

    # The same cut without the stream: what the subscriber missed is gone.
    proxy2 = CutProxy(redis.port)
    gw2 = gateway(proxy2.url, False)
    res2 = run(OF.run_flow(gw2, redis.port, OF.cut_subscribers(proxy2, 5.0), settle=3.0))
    assert res2["lost"] >= 100, "a 5 s cut without the stream lost only %r" % res2
    assert res2["duplicates"] == 0, res2
