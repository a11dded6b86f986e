"""Command line: every bad value is refused before forking (message, exit 2); --help."""

import os
import subprocess

import harness


def run_wsgate(args, env=None, timeout=5.0):
    """Runs wsgate to completion; a gateway that starts instead of refusing is killed."""
    p = subprocess.Popen([harness.WSGATE] + args, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict(os.environ, **(env or {})), start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        out, err = p.communicate()
        raise AssertionError("wsgate %r kept running instead of exiting; stderr:\n%s"
                             % (args, err.decode("utf-8", "replace")))
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def good_args(**over):
    flags = {"--listen": "127.0.0.1:%d" % harness.free_port(), "--workers": "1"}
    flags.update(over)
    args = []
    for k, v in flags.items():
        args += [k, v]
    return args + ["--echo"]


BAD = [
    ("workers_word", {"--workers": "abc"}),
    ("workers_negative", {"--workers": "-1"}),
    ("workers_trailing", {"--workers": "2x"}),
    ("close_timeout_unit", {"--close-timeout": "5x"}),
    ("close_timeout_word", {"--close-timeout": "soon"}),
    ("close_timeout_negative", {"--close-timeout": "-1s"}),
    ("ping_interval_unit", {"--ping-interval": "1h2"}),
    ("ping_interval_empty", {"--ping-interval": ""}),
    ("max_header_unit", {"--max-header": "8q"}),
    ("max_header_word", {"--max-header": "big"}),
    ("max_message_unit", {"--max-message": "1z"}),
    ("max_message_negative", {"--max-message": "-5"}),
    ("listen_no_port", {"--listen": "127.0.0.1"}),
    ("listen_port_too_big", {"--listen": "127.0.0.1:99999"}),
    ("listen_bad_host", {"--listen": "not an address:80"}),
    ("log_level_unknown", {"--log-level": "chatty"}),
    ("order_key_no_secret", {"--order-key": "k1"}),
    ("order_key_short_secret", {"--order-key": "k1:short"}),
    ("order_key_empty", {"--order-key": ""}),
    ("order_max_age_zero", {"--order-max-age": "0"}),
    ("order_replay_max_zero", {"--order-replay-max": "0"}),
    ("redis_timeout_zero", {"--redis-timeout": "0"}),
    ("redis_timeout_absurd", {"--redis-timeout": "1h"}),
]


def _bad_flag_test(over):
    def t():
        rc, out, err = run_wsgate(good_args(**over))
        assert rc == 2, "exit %s for %r (stderr %r)" % (rc, over, err)
        assert err.strip(), "no message on stderr for %r" % over
        assert "worker ready" not in err, "started workers despite a bad flag"
    return t


for _name, _over in BAD:
    globals()["test_bad_flag_%s" % _name] = _bad_flag_test(_over)


def test_unknown_flag_exits_2():
    rc, _, err = run_wsgate(good_args() + ["--no-such-flag"])
    assert rc == 2 and err.strip(), (rc, err)


def test_flag_missing_value_exits_2():
    rc, _, err = run_wsgate(["--listen"])
    assert rc == 2 and err.strip(), (rc, err)


ENV_BAD = [
    ("WSGATE_WORKERS", "abc"),
    ("WSGATE_CLOSE_TIMEOUT", "5x"),
    ("WSGATE_PING_INTERVAL", "never"),
    ("WSGATE_MAX_HEADER", "8q"),
    ("WSGATE_MAX_MESSAGE", "huge"),
    ("WSGATE_LISTEN", "127.0.0.1:99999"),
    ("WSGATE_ORDER_KEY", "k1:short"),
    ("WSGATE_REDIS_TIMEOUT", "0"),
]


def _bad_env_test(name, value):
    def t():
        args = ["--echo"]
        env = {name: value}
        if name != "WSGATE_LISTEN":
            args += ["--listen", "127.0.0.1:%d" % harness.free_port()]
        rc, out, err = run_wsgate(args, env=env)
        assert rc == 2, "exit %s for %s=%r (stderr %r)" % (rc, name, value, err)
        assert err.strip(), "no message on stderr for %s=%r" % (name, value)
    return t


for _name, _value in ENV_BAD:
    globals()["test_bad_env_%s" % _name.lower()] = _bad_env_test(_name, _value)


def test_env_twins_are_used():
    """WSGATE_LISTEN and WSGATE_WORKERS configure a gateway with no flags for them."""
    from wsraw import OP_TEXT, Client
    port = harness.free_port()
    gw = harness.Gateway(flags={"--listen": None, "--workers": None},
                         env={"WSGATE_LISTEN": "127.0.0.1:%d" % port, "WSGATE_WORKERS": "3"})
    gw.port = port
    gw.workers = 3
    gw.start()
    assert len(gw.worker_pids()) == 3, gw.worker_pids()
    c = Client.open(port)
    c.echo(OP_TEXT, "env")
    c.close()
    gw.stop(expect_status=0)


def test_flag_sizes_and_durations_are_parsed():
    """Suffixes k/m and ms/s/m and bare numbers are all accepted."""
    from wsraw import OP_TEXT, Client
    gw = harness.start_gateway(workers=1, flags={"--close-timeout": "2", "--ping-interval": "1m",
                                                 "--max-header": "4096",
                                                 "--max-message": "64k"})
    c = Client.open(gw.port)
    c.echo(OP_TEXT, "x" * 65536)
    from wsraw import frame, OP_BINARY
    c.send(frame(OP_BINARY, b"", length=65537))
    c.expect_close(1009)
    gw.stop(expect_status=0)


def test_help_exits_0():
    rc, out, err = run_wsgate(["--help"])
    assert rc == 0, "--help exit %s (stderr %r)" % (rc, err)
    text = out + err
    assert "--listen" in text, "--help does not mention --listen:\n" + text
