"""Signed orders (--order-key): gateways on a real redis-server apply only orders whose
HMAC-SHA256 envelope verifies, answer verified refusals on reply_to, never answer the
others, count everything in /metrics; wsgatectl signs; the README's Python and Node
signing snippets work as written; a Redis ACL confines publishers and gateways.

An envelope is {"kid": KEYID, "sig": hex HMAC-SHA256 of the body's UTF-8 bytes, "body":
the order JSON as a string}. A refusal is proved silent by publishing a good order after
it: a worker handles messages in order and publishes its answers in order, so once the
good order's acks are in, an answer to the refused one would have been too.
"""

import asyncio
import hashlib
import hmac
import json
import os
import re
import socket
import subprocess
import time

import harness
import lb
import fleet as F
from fleet import ACKS, Fleet, assert_closed_with, assert_open, open_clients, run, until

HERE = os.path.dirname(os.path.abspath(__file__))
SNIPPETS = os.path.join(HERE, "snippets")

K1 = "k1:first-secret-0123456789abcdef"
K2 = "k2:second-secret-0123456789abcdef"
K3 = "k3:third-secret-0123456789abcdef"  # never configured on a gateway


def now_ms():
    return int(time.time() * 1000)


def seal(order, key=K1, sig_of=None):
    """The envelope of order (a dict, or the body text as is) signed with key
    ("KEYID:SECRET"); sig_of, when given, is the text the signature is made over."""
    kid, secret = key.split(":", 1)
    body = order if isinstance(order, str) else json.dumps(order, ensure_ascii=False)
    signed = body if sig_of is None else sig_of
    sig = hmac.new(secret.encode(), signed.encode("utf-8"), hashlib.sha256).hexdigest()
    return json.dumps({"kid": kid, "sig": sig, "body": body})


def signed_order(**fields):
    """A close order with a fresh id, ts now and reply_to test:acks, plus fields."""
    o = {"id": F.order_id("s"), "ts": now_ms(), "op": "close", "reply_to": ACKS}
    o.update(fields)
    return o


async def acks_of(fl, oid, want, timeout=5.0):
    acks = await until(lambda: len(fl.listener.acks(oid)) >= want and fl.listener.acks(oid),
                       timeout, "%d acks of %s" % (want, oid))
    return [a for a, _ in acks]


async def publish_and_ack(fl, order, key=K1, timeout=5.0):
    """Publishes order signed with key; returns the acks of every worker."""
    n = fl.publish(seal(order, key))
    assert n == fl.workers, "reached %d subscribers, expected %d" % (n, fl.workers)
    return await acks_of(fl, order["id"], fl.workers, timeout)


def refused(gw):
    """{reason: count} of wsgate_orders_refused_total on gw (all workers summed)."""
    samples = lb.metrics(gw.admin_port)["wsgate_orders_refused_total"]["samples"]
    return {dict(labels)["reason"]: v for labels, v in samples.items()}


async def until_refused(gw, want, timeout=5.0):
    """Waits until every reason in want has exactly that count."""
    def check():
        got = refused(gw)
        return all(got.get(k) == v for k, v in want.items()) and got
    try:
        return await until(check, timeout, "refusal counts %r" % want)
    except AssertionError:
        raise AssertionError("refusal counts %r, expected %r" % (refused(gw), want))


# --- the gateway -----------------------------------------------------------------------------

@harness.timeout(60)
def test_signed_order_closes_its_targets_on_every_gateway():
    fl = Fleet(extra=["--order-key", K1])

    async def main():
        room1 = await open_clients(fl, [(g, ["room:1"], None) for g in ("gwA", "gwB")] * 2)
        room2 = await open_clients(fl, [(g, ["room:2"], None) for g in ("gwA", "gwB")])
        order = signed_order(group="room:1", code=4001, reason="signed")
        acks = await publish_and_ack(fl, order)
        assert all("error" not in a for a in acks), acks
        assert sum(a["closed"] for a in acks) == 4, acks
        await assert_closed_with(room1, 4001, "signed")
        await assert_open(room2)
        for gw in fl.gateways.values():
            assert sum(refused(gw).values()) == 0, refused(gw)
    run(main())


@harness.timeout(60)
def test_unverified_orders_are_refused_unanswered_and_counted():
    fl = Fleet(ids=("gwA",), extra=["--order-key", K1])
    gw = fl.gateways["gwA"]

    async def main():
        clients = await open_clients(fl, [("gwA", ["room:1"], None)] * 2)
        bad = {}

        def bad_order(name):
            bad[name] = signed_order(all=True, code=4002, reason=name)
            return bad[name]

        fl.publish(bad_order("unsigned"))  # a plain order, as before --order-key
        fl.publish(seal(bad_order("kid"), K3))
        fl.publish(seal(bad_order("secret"), "k1:not-the-secret-0123456789abc"))
        tampered = bad_order("tampered")
        fl.publish(seal(dict(tampered, reason="x"), sig_of=json.dumps(tampered)))
        env = json.loads(seal(bad_order("extra")))
        env["reply_to"] = ACKS
        fl.publish(json.dumps(env))
        fl.publish(seal(bad_order("hex")).replace('"sig": "', '"sig": "z'))
        fl.publish(b"\xff not json")
        good = signed_order(group="nobody")
        acks = await publish_and_ack(fl, good)
        assert [a.get("matched") for a in acks] == [0, 0], acks
        for name, o in bad.items():
            assert not fl.listener.acks(o["id"]), "refused order %s was answered: %r" % (
                name, fl.listener.acks(o["id"]))
        await assert_open(clients)
        # Each of the 2 workers counts each refusal.
        await until_refused(gw, {"unsigned": 2, "kid": 2, "signature": 6, "envelope": 4})
        assert re.search(r"order refused unverified key=signature: sig: does not match", gw.log())
        assert "first-secret" not in gw.log(), "a secret was logged"
    run(main())


@harness.timeout(60)
def test_verified_refusals_are_answered_on_reply_to():
    fl = Fleet(ids=("gwA",), flags={"--order-max-age": "5s"}, extra=["--order-key", K1])
    gw = fl.gateways["gwA"]

    async def main():
        room1 = await open_clients(fl, [("gwA", ["room:1"], None)] * 2)
        cases = [
            ("stale", signed_order(group="room:1", ts=now_ms() - 10000), "stale: ts is"),
            ("future", signed_order(group="room:1", ts=now_ms() + 10000), "in the future"),
            ("no ts", {k: v for k, v in signed_order(group="room:1").items() if k != "ts"},
             "must carry ts"),
            ("bad code", signed_order(group="room:1", code=1005), "code: 1005"),
        ]
        for _, order, _ in cases:
            fl.publish(seal(order))
        for name, order, text in cases:
            acks = await acks_of(fl, order["id"], 2)
            assert all(text in a.get("error", "") for a in acks), (name, acks)
        no_id = {k: v for k, v in signed_order(group="room:1").items() if k != "id"}
        fl.publish(seal(no_id))
        await until(lambda: len([d for d, _ in fl.listener.on(ACKS)
                                 if d.get("id") is None and "must carry an id" in d.get("error", "")])
                    == 2, 5, "2 error acks without id")
        await assert_open(room1)

        # Applied once; the same envelope again is a replay, answered with the error.
        order = signed_order(group="room:1", code=4003, reason="once")
        envelope = seal(order)
        fl.publish(envelope)
        await assert_closed_with(room1, 4003, "once")
        first = await acks_of(fl, order["id"], 2)
        assert sum(a["closed"] for a in first) == 2, first
        fl.publish(envelope)
        acks = await acks_of(fl, order["id"], 4)
        assert sorted(a.get("error", "") for a in acks)[2:] == \
            ["replay: this order id was used already"] * 2, acks
        # A new order may not reuse the id either, however signed.
        fl.publish(seal(dict(order, ts=now_ms(), group="other")))
        await until(lambda: len(fl.listener.acks(order["id"])) >= 6, 5, "2 more replay acks")
        await until_refused(gw, {"stale": 4, "ts": 2, "id": 2, "code": 2, "replay": 4})
    run(main())


@harness.timeout(60)
def test_replay_memory_full_refuses_new_orders():
    fl = Fleet(ids=("gwA",), workers=1, flags={"--order-replay-max": "2"},
               extra=["--order-key", K1])
    gw = fl.gateways["gwA"]

    async def main():
        a = await publish_and_ack(fl, signed_order(group="g1"))
        b = await publish_and_ack(fl, signed_order(group="g2"))
        assert "error" not in a[0] and "error" not in b[0], (a, b)
        c = await publish_and_ack(fl, signed_order(group="g3"))
        assert c[0]["error"].startswith("replay_full: 2 order ids remembered"), c
        await until_refused(gw, {"replay_full": 1})
    run(main())


@harness.timeout(60)
def test_key_rotation_two_keys_and_the_env_twin():
    # gwA takes both keys as flags, gwB as one WSGATE_ORDER_KEY list.
    fl = Fleet(ids=("gwA",), extra=["--order-key", K1, "--order-key", K2])
    fl.gateways["gwB"] = harness.Gateway(
        flags={"--id": "gwB", "--redis": fl.redis.url, "--log-level": "info"}, workers=2,
        env={"WSGATE_ORDER_KEY": "%s, %s" % (K2, K1)}).start()
    fl.wait_subscribed(1)

    async def main():
        clients = await open_clients(fl, [(g, ["room:%d" % i], None)
                                          for g in ("gwA", "gwB") for i in (1, 2)])
        for key, room in ((K1, "room:1"), (K2, "room:2")):
            order = signed_order(group=room, code=4001, reason=key[:2])
            acks = await publish_and_ack(fl, order, key)
            assert sum(a["closed"] for a in acks) == 2 and all("error" not in a for a in acks)
        await assert_closed_with([c for c in clients if "room:1" in c.groups], 4001, "k1")
        await assert_closed_with([c for c in clients if "room:2" in c.groups], 4001, "k2")
        fl.publish(seal(signed_order(all=True), K3))
        await publish_and_ack(fl, signed_order(group="nobody"), K2)
        for gw in fl.gateways.values():
            await until_refused(gw, {"kid": 2, "signature": 0})
    run(main())


# --- wsgatectl -------------------------------------------------------------------------------

@harness.timeout(60)
def test_wsgatectl_signs_with_flag_or_env():
    fl = Fleet(ids=("gwA",), extra=["--order-key", K1, "--order-key", K2])
    gw = fl.gateways["gwA"]
    url = ["--redis", fl.redis.url]

    async def main():
        clients = await open_clients(fl, [("gwA", ["room:%d" % i], None) for i in (1, 2, 3)])
        loop = asyncio.get_running_loop()

        def ctl(*args, env=None):
            return loop.run_in_executor(None, lambda: fl.ctl(*args, env=env))
        p = await ctl(*url, "--order-key", K1, "close", "--group", "room:1", "--code", "4001",
                      "--wait", "5000")
        assert p.returncode == 0 and "closed 1 of 1" in p.stdout, (p.returncode, p.stdout,
                                                                   p.stderr)
        # Of a list in WSGATE_ORDER_KEY, the first key signs.
        p = await ctl(*url, "close", "--group", "room:2", "--code", "4002", "--wait", "5000",
                      env={"WSGATE_ORDER_KEY": "%s,%s" % (K2, K3)})
        assert p.returncode == 0 and "closed 1 of 1" in p.stdout, (p.stdout, p.stderr)
        await assert_closed_with([clients[0]], 4001, "")
        await assert_closed_with([clients[1]], 4002, "")
        # Unsigned: the gateway refuses without a word, so wsgatectl hears nothing. On
        # room:3's group channel only the worker holding its member gets the order.
        p = await ctl(*url, "close", "--group", "room:3", "--wait", "1000")
        assert p.returncode == 1 and "no answer" in p.stderr, (p.returncode, p.stderr)
        await until_refused(gw, {"unsigned": 1})
        await assert_open([clients[2]])
        # What it publishes verifies the same way in Python: HMAC over the body's bytes.
        p = await ctl(*url, "--order-key", K2, "drain", "--gateway", "elsewhere", "--json",
                      "--reason", "é")
        env = json.loads(p.stdout)
        assert list(env) == ["kid", "sig", "body"] and env["kid"] == "k2", env
        assert seal(env["body"], K2) == json.dumps(env), env
        body = json.loads(env["body"])
        assert body["id"].startswith("ctl-") and abs(body["ts"] - now_ms()) < 10000, body
        # A bad key is refused before anything is sent, and its secret is not shown.
        p = await ctl(*url, "--order-key", "k1:too-short", "close", "--all")
        assert p.returncode == 2 and "too-short" not in p.stderr, (p.returncode, p.stderr)
    run(main())


def test_wsgate_refuses_bad_order_keys_before_start():
    from test_cli import good_args, run_wsgate
    for args, env in ((["--order-key", "k1:short-secret"], None),
                      (["--order-key", "k1"], None),
                      (["--order-key", K1, "--order-key", K1], None),
                      (["--order-max-age", "0"], None),
                      ([], {"WSGATE_ORDER_KEY": ""}),
                      ([], {"WSGATE_ORDER_KEY": "k 1:first-secret-0123456789abcdef"})):
        rc, _, err = run_wsgate(good_args() + args, env=env)
        assert rc == 2 and "--order-" in err, (args, env, rc, err)
        assert "short-secret" not in err and "first-secret" not in err, err


# --- the README snippets ---------------------------------------------------------------------

def snippet_text(name, lang, path):
    """The snippet file's text; when README.md has the block after <!-- snippet: name -->,
    it must be the very same text."""
    with open(path, encoding="utf-8") as f:
        code = f.read()
    try:
        with open(os.path.join(harness.REPO, "README.md"), encoding="utf-8") as f:
            readme = f.read()
    except OSError:
        readme = ""
    m = re.search(r"^<!-- snippet: %s -->[ \t]*\n```%s[ \t]*\n(.*?)^```[ \t]*$"
                  % (re.escape(name), re.escape(lang)), readme, re.M | re.S)
    if m:
        assert m.group(1) == code, "README's %s block differs from %s" % (name, path)
    return code


def check_signing_snippet(name, lang, filename, argv_of):
    code = snippet_text(name, lang, os.path.join(SNIPPETS, filename))
    key = "readme-2025:a-long-random-secret-from-your-vault"
    fl = Fleet(extra=["--order-key", key])
    env = dict(os.environ, WSGATE_REDIS=fl.redis.url, WSGATE_ORDER_KEY=key,
               NODE_PATH=os.path.join(HERE, "node_modules"))

    async def main():
        room1 = await open_clients(fl, [(g, ["room:1"], None) for g in ("gwA", "gwB")] * 2)
        room2 = await open_clients(fl, [(g, ["room:2"], None) for g in ("gwA", "gwB")])

        def call():
            return subprocess.run(argv_of(code), stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, env=env, cwd=HERE, timeout=20)
        p = await asyncio.get_running_loop().run_in_executor(None, call)
        assert p.returncode == 0, "%s exited %d\n%s%s" % (name, p.returncode, p.stdout, p.stderr)
        assert re.search(r"reached 4 workers", p.stdout), p.stdout
        await assert_closed_with(room1, 4001, "signed out elsewhere")
        await assert_open(room2, name)
        for gw in fl.gateways.values():
            assert sum(refused(gw).values()) == 0, refused(gw)
    run(main())


@harness.timeout(60)
def test_signing_snippet_python():
    check_signing_snippet("publish-signed-python", "python", "publish-signed.py",
                          lambda code: ["/usr/bin/python3", "-c", code])


@harness.timeout(60)
def test_signing_snippet_node():
    assert os.path.isdir(os.path.join(HERE, "node_modules", "ioredis")), \
        "ioredis is not installed: cd tests/integration && npm install"
    check_signing_snippet("publish-signed-node", "js", "publish-signed.js",
                          lambda code: ["node", "-e", code])


# --- Redis ACL -------------------------------------------------------------------------------

# What each kind of client may do: gateways SUBSCRIBE to the orders channels meant for
# them (the group channels included) and to their own heartbeat channels (a worker PUBLISHes there and hears itself: the
# liveness of both links), PUBLISH events and acknowledgements, SET and DEL their own
# announce keys, PING (the publisher's setup); a
# backend only PUBLISHes orders; wsgatectl also SUBSCRIBEs to acknowledgements and reads
# heartbeats. A selector in parentheses grants its commands on its own channels and keys
# only.
ACL = [
    "user gateway-gwA on >gw-pw resetchannels resetkeys -@all +ping"
    " +subscribe &wsgate:orders &wsgate:orders:gwA &wsgate:orders:worker:gwA-*"
    " &wsgate:orders:hb:gwA:* &wsgate:orders:group:*"
    " +set +del ~wsgate:orders:gw:gwA:*"
    " (+publish resetchannels &wsgate:events &wsgate:orders:ack:* &wsgate:orders:hb:gwA:*)"
    " +time (+hgetall +hset +hdel resetkeys ~wsgate:orders:tombs)"
    " (+xread resetkeys %R~wsgate:orders:log)",
    "user backend on >be-pw resetchannels resetkeys -@all"
    " +publish &wsgate:orders &wsgate:orders:*",
    "user publisher on >pub-pw resetchannels resetkeys -@all"
    " +publish &wsgate:orders &wsgate:orders:*"
    " (+subscribe resetchannels &wsgate:orders:ack:*)"
    " (+scan +get %R~wsgate:orders:gw:*)"
    " (+hgetall resetkeys %R~wsgate:orders:tombs) (+xadd resetkeys %W~wsgate:orders:log)",
]


def resp(port, user, password, *cmd):
    """The first reply line to cmd after AUTH user password, on a fresh connection."""
    def enc(*args):
        return b"*%d\r\n" % len(args) + b"".join(
            b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(enc("AUTH", user, password) + enc(*cmd))
        f = s.makefile("rb")
        auth = f.readline()
        assert auth == b"+OK\r\n", auth
        return f.readline().decode().strip()


@harness.timeout(60)
def test_acl_confines_gateways_and_publishers():
    fl = Fleet(ids=("gwA",), extra=["--order-key", K1, "--orders-stream", "wsgate:orders:log"],
               redis_config=ACL,
               redis_url_of=lambda r, gid: "redis://gateway-%s:gw-pw@127.0.0.1:%d" % (gid, r.port))
    gw = fl.gateways["gwA"]
    pub = "redis://publisher:pub-pw@127.0.0.1:%d" % fl.redis.port

    async def main():
        clients = await open_clients(fl, [("gwA", ["room:1"], None)] * 2)  # events published
        loop = asyncio.get_running_loop()

        def ctl(*args):
            return loop.run_in_executor(None, lambda: fl.ctl("--redis", pub, *args))
        p = await ctl("gateways")  # SCAN and GET of the heartbeats (SET by the workers)
        assert p.returncode == 0 and "gwA  workers=2" in p.stdout, (p.stdout, p.stderr)
        # A ban through the stream: XADD, XREAD, HSET and HGETALL within the rules.
        p = await ctl("--order-key", K1, "--orders-stream", "wsgate:orders:log", "close",
                      "--group", "room:1", "--code", "4001", "--ttl", "60000", "--wait", "5000")
        assert p.returncode == 0 and "closed 2 of 2" in p.stdout, (p.returncode, p.stdout,
                                                                   p.stderr)
        await assert_closed_with(clients, 4001, "")
        p = await ctl("tombstones")
        assert p.returncode == 0 and "group=room:1" in p.stdout, (p.stdout, p.stderr)
        import redis
        backend = redis.Redis(host="127.0.0.1", port=fl.redis.port, username="backend",
                              password="be-pw", socket_timeout=5)
        order = signed_order(group="room:2", reply_to="wsgate:orders:ack:be-1")
        assert backend.publish("wsgate:orders", seal(order)) == 2
        applied = "order id=%s op=close matched=0" % order["id"]
        await until(lambda: gw.log().count(applied) == 2, 5, "the backend's order")
        assert fl.r.execute_command("ACL", "LOG") == [], "denied: %r" % fl.r.execute_command(
            "ACL", "LOG")
        assert "refused" not in gw.log(), gw.log()

        port = fl.redis.port
        denied = [
            ("publisher", "pub-pw", "SUBSCRIBE", "wsgate:events"),
            ("publisher", "pub-pw", "PUBLISH", "wsgate:events", "{}"),
            ("publisher", "pub-pw", "PUBLISH", "elsewhere", "{}"),
            ("publisher", "pub-pw", "SET", "wsgate:orders:gw:gwA:1", "{}"),
            ("publisher", "pub-pw", "GET", "other"),
            ("backend", "be-pw", "SUBSCRIBE", "wsgate:orders:ack:be-1"),
            ("backend", "be-pw", "SCAN", "0"),
            ("gateway-gwA", "gw-pw", "PUBLISH", "wsgate:orders", "{}"),
            ("gateway-gwA", "gw-pw", "SUBSCRIBE", "wsgate:orders:gwB"),
            ("gateway-gwA", "gw-pw", "SUBSCRIBE", "wsgate:events"),
            ("gateway-gwA", "gw-pw", "SET", "wsgate:orders:gw:gwB:1", "{}"),
            ("gateway-gwA", "gw-pw", "GET", "wsgate:orders:gw:gwA:1"),
            ("gateway-gwA", "gw-pw", "HSET", "elsewhere", "f", "v"),
            ("gateway-gwA", "gw-pw", "SET", "wsgate:orders:tombs", "v"),
            ("gateway-gwA", "gw-pw", "XADD", "wsgate:orders:log", "*", "order", "{}"),
            ("publisher", "pub-pw", "HSET", "wsgate:orders:tombs", "group:x", "{}"),
        ]
        for user, pw, *cmd in denied:
            got = resp(port, user, pw, *cmd)
            assert got.startswith("-NOPERM"), "%s may %r: %s" % (user, cmd, got)
        assert resp(port, "publisher", "pub-pw", "PUBLISH", "wsgate:orders:gwA", "{}") == ":2"
        # The worker's own channel is granted: subscribed, nothing refused.
        fams = lb.metrics(gw.admin_port)
        assert sum(fams["wsgate_redis_worker_channel_refused_total"]["samples"].values()) == 0
        # The worker's heartbeat DEL on the way out is allowed too.
        gw.stop(expect_status=0)
        assert fl.r.keys("wsgate:orders:gw:*") == [], fl.r.keys("*")
    run(main())


@harness.timeout(60)
def test_acl_from_before_the_worker_channel_still_works():
    """A gateway upgraded under the README's older ACL, which does not grant
    <channel>:worker:*: each worker's subscriber is refused that channel once, logs it,
    counts it and runs on without it; wsgatectl, finding nobody on the worker's channel,
    publishes a connection's order on the fleet's channel, where it is applied."""
    old = [ACL[0].replace(" &wsgate:orders:worker:gwA-*", "")] + ACL[1:]
    assert old[0] != ACL[0]
    fl = Fleet(ids=("gwA",), extra=["--order-key", K1], redis_config=old,
               redis_url_of=lambda r, gid: "redis://gateway-%s:gw-pw@127.0.0.1:%d" % (gid, r.port))
    gw = fl.gateways["gwA"]
    pub = "redis://publisher:pub-pw@127.0.0.1:%d" % fl.redis.port

    async def main():
        await until(lambda: gw.log().count("redis refused SUBSCRIBE wsgate:orders:worker:") == 2,
                    10, "both workers refused their channel")
        await until(lambda: gw.log().count("redis subscriber up (subscribed) attempts=") == 2,
                    10, "both subscribers back without it")
        lb.wait_ready(gw.admin_port)
        clients = await open_clients(fl, [("gwA", ["room:1"], None)] * 2)
        loop = asyncio.get_running_loop()
        p = await loop.run_in_executor(None, lambda: fl.ctl(
            "--redis", pub, "--order-key", K1, "close", "--conn", clients[0].conn,
            "--code", "4002", "--wait", "5000"))
        assert p.returncode == 0 and "closed 1 of 1" in p.stdout, (p.returncode, p.stdout,
                                                                   p.stderr)
        await assert_closed_with(clients[:1], 4002, "")
        await assert_open(clients[1:])
        fams = lb.metrics(gw.admin_port)
        assert sum(fams["wsgate_redis_worker_channel_refused_total"]["samples"].values()) == 2
    run(main())
