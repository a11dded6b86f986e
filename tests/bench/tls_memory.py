#!/usr/bin/python3
"""Idle memory and handshake cost of wss:// next to ws://, in one run.

    /usr/bin/python3 tests/bench/tls_memory.py [--build build] [-n 5000] [--rounds 3]
                                               [--key ec|rsa] [--workers 2] [--out FILE]
                                               [--kinds plain,tls]

Each round runs plain, then TLS, each on a fresh gateway (--workers, no admin listener,
no events) with a fresh redis-server: 200 warm-up connections opened and closed, the
summed VmRSS of the gateway's process tree, then N connections opened by build/wsload
(--tls for TLS: a full handshake each, 500 in flight) and held idle, and the RSS again.
RSS per idle connection = (during - before) / N. The ramp gives handshakes/s and their
latency (TCP connect to the 101, TLS included). The certificate is a fresh self-signed
EC P-256 (--key ec) or RSA 2048 (--key rsa) one, made with the openssl command. Prints
one line per run and the medians; --out writes every run as JSON.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (processes, RSS and wsload helpers)


def make_cert(dir, key_type):
    cert, key = os.path.join(dir, "cert.pem"), os.path.join(dir, "key.pem")
    alg = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key_type == "ec" else \
        ["-newkey", "rsa:2048"]
    subprocess.run(["openssl", "req", "-x509"] + alg + ["-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost"], check=True, capture_output=True)
    return cert, key


def tree_cpu(root):
    """User + system CPU seconds of root and its descendants (workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0, [root]
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    st = f.read()
            except OSError:
                continue
            kids.setdefault(int(st[st.rindex(")") + 2:].split()[1]), []).append(int(d))
    while todo:
        pid = todo.pop()
        todo += kids.get(pid, [])
        try:
            with open("/proc/%d/stat" % pid) as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


def start_gateway(args, redis, tls, logpath):
    port = bench.free_port()
    cmd = [os.path.join(args.build, "wsgate"), "--listen", "127.0.0.1:%d" % port, "--workers",
           str(args.workers), "--id", "gw", "--redis", redis.url(), "--events-channel", "",
           "--admin", "", "--log-level", "notice"] + (tls or [])
    logf = open(logpath, "ab")
    logf.write(("$ " + shlex.join(cmd) + "\n").encode())
    logf.flush()
    proc = bench.spawn(cmd, stdout=logf, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        with open(logpath, "rb") as f:
            text = f.read().decode(errors="replace")
        if text.count("redis subscriber up") >= args.workers and \
                text.count("worker ready") >= args.workers:
            return proc, port
        if proc.poll() is not None or time.monotonic() > deadline:
            raise bench.BenchError("wsgate did not start: %s" % text[-2000:])
        time.sleep(0.05)


def one_run(args, kind, tmp, rnd, cert, key):
    logdir = os.path.join(tmp, "logs")
    os.makedirs(logdir, exist_ok=True)
    redis = bench.Redis(logdir)
    tls = ["--tls-cert", cert, "--tls-key", key] if kind == "tls" else None
    log = os.path.join(logdir, "%s-r%d-wsgate.log" % (kind, rnd))
    proc, port = start_gateway(args, redis, tls, log)

    class Srv:
        def rss(self):
            return bench.tree_rss(proc.pid)
    srv = Srv()
    wl = [os.path.join(args.build, "wsload"), "--host", "127.0.0.1", "--port", str(port)]
    wl += ["--tls"] if kind == "tls" else []
    wlog = os.path.join(logdir, "%s-r%d-wsload.log" % (kind, rnd))
    try:
        warm, _ = bench.run_wsload(wl + ["-n", "200"], 60, wlog)
        time.sleep(1.0)
        before = bench.settle_rss(srv)
        cpu0 = tree_cpu(proc.pid)
        ready = os.path.join(tmp, "ready-%s-%d" % (kind, rnd))

        def on_ready():
            cpu = tree_cpu(proc.pid) - cpu0  # the ramp's CPU, before the settling wait
            return bench.settle_rss(srv), cpu
        res, (after, cpu) = bench.run_wsload(
            wl + ["-n", str(args.n), "--inflight", "500", "--ready-file", ready, "--hold-ms",
                  "4000", "--ramp-timeout", "60000"], 180, wlog, ready=ready,
            on_ready=on_ready, ready_timeout=120)
    finally:
        bench.kill_group(proc)
        redis.stop()
    ok = bench.get(res, "ramp", "ok") or 0
    return {"kind": kind, "round": rnd, "n": args.n, "ok": ok,
            "failed": bench.get(res, "ramp", "failed"), "warmup_ok": bench.get(warm, "ramp", "ok"),
            "rss_before": before, "rss_after": after,
            "bytes_per_conn": (after - before) / ok if ok else None,
            "cpu_us_per_conn": cpu * 1e6 / ok if ok else None,
            "rate": bench.get(res, "ramp", "rate"), "lat_p50": bench.get(res, "ramp", "lat_p50"),
            "lat_p99": bench.get(res, "ramp", "lat_p99")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(bench.ROOT, "build"))
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--key", choices=("ec", "rsa"), default="ec")
    ap.add_argument("--kinds", default="plain,tls", help="plain, tls or both")
    ap.add_argument("--out")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="wstls-")
    cert, key = make_cert(tmp, args.key)
    runs = []
    try:
        for rnd in range(1, args.rounds + 1):
            for kind in args.kinds.split(","):
                r = one_run(args, kind, tmp, rnd, cert, key)
                runs.append(r)
                bench.log("%-5s round %d: %d/%d open, %.0f B/conn, %.0f us CPU/conn, %s "
                          "handshakes/s, p50 %s ms, p99 %s ms"
                          % (kind, rnd, r["ok"], args.n, r["bytes_per_conn"] or -1,
                             r["cpu_us_per_conn"] or -1, r["rate"], r["lat_p50"], r["lat_p99"]))
    finally:
        bench.kill_all()
    print("\nmedians over %d rounds, N = %d, %d workers, %s key (logs in %s):"
          % (args.rounds, args.n, args.workers, args.key, tmp))
    print("| | RSS per idle connection | gateway CPU per handshake | handshakes/s | latency p50 "
          "| latency p99 |")
    print("|---|---|---|---|---|---|")
    for kind in args.kinds.split(","):
        rs = [r for r in runs if r["kind"] == kind and r["ok"] == args.n]
        if not rs:
            print("| %s | (no complete run) | | | | |" % kind)
            continue
        med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
        print("| %s | %.0f B | %.0f µs | %.0f | %.1f ms | %.1f ms |" % (
            "ws://" if kind == "plain" else "wss://", med("bytes_per_conn"),
            med("cpu_us_per_conn"), med("rate"), med("lat_p50"), med("lat_p99")))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"n": args.n, "workers": args.workers, "key": args.key, "runs": runs}, f,
                      indent=1)


if __name__ == "__main__":
    main()
