"""deploy/: the files parse, agree with the gateway's own defaults (`wsgate --help`), and
the proxy configs pass their tools' own checks (haproxy -c, nginx -t) on test ports."""

import os
import re
import shlex
import subprocess

import harness
import lb

DEPLOY = lb.DEPLOY


def read(name):
    with open(os.path.join(DEPLOY, name)) as f:
        return f.read()


def help_text():
    out = subprocess.run([harness.WSGATE, "--help"], capture_output=True, text=True, timeout=5)
    assert out.returncode == 0, "wsgate --help exited %d: %s" % (out.returncode, out.stderr)
    return out.stdout + out.stderr


def flags():
    """{"--listen": "default text or None"} from --help."""
    out = {}
    text = help_text()
    for m in re.finditer(r"^\s+(--[a-z][a-z-]*)\b(.*(?:\n\s{20,}\S.*)*)", text, re.M):
        d = re.search(r"\(default:? ([^)]*)\)", m.group(2))
        out[m.group(1)] = d.group(1).strip().strip('"') if d else None
    return out


def env_to_flag(name):
    assert name.startswith("WSGATE_"), name
    return "--" + name[len("WSGATE_"):].lower().replace("_", "-")


def seconds(dur):
    """A wsgate DUR (500ms, 5s, 2m, 1h, or a number of seconds) in seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", str(dur).strip())
    assert m, "not a duration: %r" % dur
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def defaults():
    f = flags()
    for name in ("--listen", "--admin", "--drain-delay", "--drain-timeout"):
        assert f.get(name), "--help shows no default for %s: %r" % (name, f.get(name))
    return {"listen": int(f["--listen"].rsplit(":", 1)[1]),
            "admin": int(f["--admin"].rsplit(":", 1)[1]),
            "drain_delay": seconds(f["--drain-delay"]),
            "drain_timeout": seconds(f["--drain-timeout"])}


def test_help_names_the_defaults_the_deploy_files_rely_on():
    d = defaults()
    assert (d["listen"], d["admin"]) == (8080, 9090), d
    text = help_text()
    for path in ("/healthz", "/readyz", "/metrics"):
        assert path in text, "--help does not mention %s" % path
    assert d["drain_timeout"] == 30, d


def test_env_file_variables_are_real_flags():
    known = flags()
    names = []
    for lineno, line in enumerate(read("wsgate.env").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"(WSGATE_[A-Z0-9_]+)=(.*)", line)
        assert m, "wsgate.env line %d is not WSGATE_X=value: %r" % (lineno, line)
        names.append(m.group(1))
        assert env_to_flag(m.group(1)) in known, \
            "wsgate.env line %d: %s is not a flag (%s not in --help)" % (
                lineno, m.group(1), env_to_flag(m.group(1)))
    assert len(names) == len(set(names)), "a variable set twice: %r" % names
    for must in ("WSGATE_LISTEN", "WSGATE_ADMIN", "WSGATE_DRAIN_TIMEOUT"):
        assert must in names, "wsgate.env does not set %s" % must


def env_file():
    out = {}
    for line in read("wsgate.env").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def test_env_file_is_accepted_by_the_gateway():
    """The env file's values parse: wsgate starts with them (ports moved to test ports)."""
    env = dict(os.environ, **env_file())
    redis = harness.start_redis()
    gw = harness.Gateway(flags={"--redis": redis.url, "--log-level": "info",
                                "--drain-delay": "0s", "--drain-spread": "0s"},
                         env=env).start()
    lb.wait_ready(gw.admin_port)
    assert gw.stop() == 0, gw.log()


def test_systemd_unit_drains_within_its_stop_timeout():
    unit = read("wsgate.service")
    sections, cur = {}, None
    for line in unit.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("["):
            cur = sections.setdefault(s.strip("[]"), {})
            continue
        k, _, v = s.partition("=")
        cur.setdefault(k, []).append(v)
    svc = sections["Service"]
    assert svc["KillSignal"] == ["SIGTERM"], svc.get("KillSignal")
    assert svc.get("Restart") == ["on-failure"], svc.get("Restart")
    assert svc.get("LimitNOFILE") and int(svc["LimitNOFILE"][0]) >= 65536, svc.get("LimitNOFILE")
    assert "Install" in sections and "Unit" in sections
    env = env_file()
    d = defaults()
    drain = seconds(env.get("WSGATE_DRAIN_TIMEOUT", d["drain_timeout"]))
    delay = seconds(env.get("WSGATE_DRAIN_DELAY", d["drain_delay"]))
    stop = seconds(svc["TimeoutStopSec"][0])
    # the drain timeout counts from the signal; the delay is inside it, but keep a margin
    assert stop >= max(drain, d["drain_timeout"]) + 5, \
        "TimeoutStopSec=%s is not above the drain timeout %ss + 5s margin" % (stop, drain)
    assert stop > delay + drain, (stop, delay, drain)
    assert svc.get("EnvironmentFile"), "no EnvironmentFile"
    exe = shlex.split(svc["ExecStart"][0])[0]
    assert os.path.basename(exe) == "wsgate", exe


def dockerfile_instructions():
    lines, buf = [], ""
    for raw in read("Dockerfile").splitlines():
        if not buf and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        buf += raw.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        word, _, rest = buf.strip().partition(" ")
        lines.append((word.upper(), rest.strip()))
        buf = ""
    return lines


def test_dockerfile_copies_existing_paths_and_exposes_the_defaults():
    ins = dockerfile_instructions()
    stages = [rest for word, rest in ins if word == "FROM"]
    assert len(stages) >= 2, "not multi-stage: %r" % stages
    assert all(s.split()[0] == "debian:bookworm-slim" for s in stages), stages
    copies = 0
    for word, rest in ins:
        if word not in ("COPY", "ADD"):
            continue
        args = shlex.split(rest)
        if any(a.startswith("--from") for a in args):
            continue
        srcs = [a for a in args if not a.startswith("--")][:-1]
        for src in srcs:
            copies += 1
            assert os.path.exists(os.path.join(harness.REPO, src)), \
                "Dockerfile copies %s, which is not in the repository" % src
    assert copies >= 4, "the build stage should copy Makefile, common, worker, gateway"
    copied = " ".join(rest for w, rest in ins if w == "COPY")
    for part in ("Makefile", "common", "worker", "gateway"):
        assert part in copied, "Dockerfile does not copy %s" % part
    assert any(w == "RUN" and re.search(r"\bmake\b", r) for w, r in ins), "no RUN make"
    d = defaults()
    exposed = {int(p.split("/")[0]) for w, r in ins if w == "EXPOSE" for p in r.split()}
    assert {d["listen"], d["admin"]} <= exposed, "EXPOSE %r" % exposed
    # the runtime stage: after the last FROM, a non-root USER and no -dev packages
    last = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    runtime = ins[last:]
    users = [r for w, r in runtime if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "runtime USER %r" % users
    for w, r in runtime:
        if w == "RUN":
            assert "-dev" not in r and "gcc" not in r, "build tools in the runtime stage: %s" % r
    for w, r in runtime:
        if w == "HEALTHCHECK":
            assert "/healthz" in r, r


def yaml_docs(path):
    import yaml
    with open(os.path.join(DEPLOY, path)) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    assert docs, "%s is empty" % path
    return docs


def k8s_objects():
    out = {}
    kdir = os.path.join(DEPLOY, "k8s")
    for fn in sorted(os.listdir(kdir)):
        if fn.endswith((".yaml", ".yml")):
            for doc in yaml_docs(os.path.join("k8s", fn)):
                assert "apiVersion" in doc and "kind" in doc, "%s: %r" % (fn, doc)
                out.setdefault(doc["kind"], []).append(doc)
    return out


def port_number(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise AssertionError("no container port named %r" % port)


def test_k8s_manifests_parse_and_match_the_defaults():
    objs = k8s_objects()
    for kind in ("Deployment", "Service", "PodDisruptionBudget"):
        assert kind in objs, "deploy/k8s has no %s (has %s)" % (kind, sorted(objs))
    dep = objs["Deployment"][0]
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (c,) = [c for c in pod["containers"] if c["name"] == "wsgate"]
    d = defaults()
    known = flags()
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    for name in env:
        assert name.startswith("WSGATE_") and env_to_flag(name) in known, \
            "container env %s is not a wsgate flag" % name
    ports = {p["containerPort"] for p in c["ports"]}
    assert {d["listen"], d["admin"]} <= ports, ports
    for name, flag_port in (("WSGATE_LISTEN", d["listen"]), ("WSGATE_ADMIN", d["admin"])):
        if env.get(name):
            assert env[name].rsplit(":", 1)[1] == str(flag_port), (name, env[name])
    assert env.get("WSGATE_ADMIN", "").startswith("0.0.0.0:"), \
        "the kubelet probes the pod IP: admin must listen beyond loopback"
    rp, lp = c["readinessProbe"]["httpGet"], c["livenessProbe"]["httpGet"]
    assert rp["path"] == "/readyz" and port_number(c, rp["port"]) == d["admin"], rp
    assert lp["path"] == "/healthz" and port_number(c, lp["port"]) == d["admin"], lp
    pre = c["lifecycle"]["preStop"]
    sleep = float(pre["exec"]["command"][-1]) if "exec" in pre else float(pre["sleep"]["seconds"])
    delay = seconds(env.get("WSGATE_DRAIN_DELAY") or d["drain_delay"])
    drain = seconds(env.get("WSGATE_DRAIN_TIMEOUT") or d["drain_timeout"])
    assert sleep == delay, "preStop sleep %ss vs drain delay %ss" % (sleep, delay)
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > sleep + drain, "terminationGracePeriodSeconds %s <= preStop %s + drain %s" % (
        grace, sleep, drain)
    svc_ports = [p for s in objs["Service"] for p in s["spec"]["ports"]]
    for p in svc_ports:
        assert port_number(c, p.get("targetPort", p["port"])) in ports, p
    for s in objs["Service"]:
        assert s["spec"]["selector"].items() <= labels.items(), s["spec"]["selector"]
    pdb = objs["PodDisruptionBudget"][0]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert "maxUnavailable" in pdb or "minAvailable" in pdb


def test_compose_parses_and_uses_the_haproxy_config():
    (doc,) = yaml_docs("compose.yaml")
    svcs = doc["services"]
    known = flags()
    gws = [n for n, s in svcs.items() if any(k.startswith("WSGATE_")
                                              for k in (s.get("environment") or {}))]
    assert len(gws) >= 2, "compose has gateways %r" % gws
    assert any("redis" in (s.get("image") or "") for s in svcs.values()), "no redis service"
    hap = [s for s in svcs.values() if "haproxy" in (s.get("image") or "")]
    assert hap, "no haproxy service"
    vols = " ".join(hap[0].get("volumes", []))
    assert "haproxy.cfg" in vols and os.path.exists(os.path.join(DEPLOY, "haproxy.cfg")), vols
    cfg = read("haproxy.cfg")
    d = defaults()
    for name in gws:
        s = svcs[name]
        env = s["environment"]
        for k in env:
            assert env_to_flag(k) in known, "%s: %s is not a flag" % (name, k)
        listen = int(env["WSGATE_LISTEN"].rsplit(":", 1)[1])
        admin = int(env["WSGATE_ADMIN"].rsplit(":", 1)[1])
        # each gateway is a server of the HAProxy config, checked on its admin port
        assert re.search(r"server \S+ 127\.0\.0\.1:%d check port %d\b" % (listen, admin), cfg), \
            "%s (%d, admin %d) is not a server in haproxy.cfg" % (name, listen, admin)
        grace = seconds(s["stop_grace_period"])
        drain = seconds(env.get("WSGATE_DRAIN_TIMEOUT", d["drain_timeout"]))
        assert grace > drain, "%s: stop_grace_period %s <= drain timeout %s" % (name, grace, drain)
        if "build" in s:
            b = s["build"]
            assert os.path.exists(os.path.join(DEPLOY, b["context"], b["dockerfile"])), b
    assert any(int(env_port(svcs[g], "WSGATE_LISTEN")) == d["listen"] for g in gws)
    # Admin ports and Redis are published on the host's loopback only: metrics and
    # readiness are not for the internet, and whoever reaches Redis can order closes.
    private = {int(env_port(svcs[g], "WSGATE_ADMIN")) for g in gws} | {6379}
    for name, s in svcs.items():
        for p in s.get("ports") or []:
            parts = str(p).split(":")
            host, container = (parts[0] if len(parts) == 3 else ""), int(parts[-1].split("/")[0])
            if container in private:
                assert host == "127.0.0.1", "%s publishes %s on every interface" % (name, p)
    assert any(int(env_port(svcs[g], "WSGATE_ADMIN")) == d["admin"] for g in gws)


def env_port(svc, name):
    return svc["environment"][name].rsplit(":", 1)[1]


def test_haproxy_config_is_valid_and_checks_readyz():
    lb.need(lb.HAPROXY_BIN)
    cfg = read("haproxy.cfg")
    d = defaults()
    for must in (r"balance\s+leastconn", r"timeout\s+tunnel\s+1h", r"/readyz",
                 r"server gw1 127\.0\.0\.1:%d check port %d" % (d["listen"], d["admin"]),
                 r"\bfall 1\b", r"\brise 2\b", r"mode http"):
        assert re.search(must, cfg), "haproxy.cfg lacks /%s/" % must
    for port in (lb.FRONT, lb.STATS, lb.GW1, lb.ADMIN1, lb.GW2, lb.ADMIN2):
        assert re.search(r"^#.*\b%d\b" % port, cfg, re.M), \
            "placeholder port %d is not documented in the header comment" % port
    path = os.path.join(harness.tmp_root(), "haproxy.cfg")
    ports = {p: harness.free_port() for p in (lb.FRONT, lb.STATS, lb.GW1, lb.ADMIN1, lb.GW2,
                                                lb.ADMIN2)}
    text = lb.render_file("haproxy.cfg", ports, path)
    for p in ports:
        assert not re.search(r"(?<![\d.])%d(?![\d.])" % p, text), "port %d left in" % p
    out = subprocess.run([lb.HAPROXY_BIN, "-c", "-f", path], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode == 0, "haproxy -c: %s%s" % (out.stdout, out.stderr)
    assert "*:" not in text and "127.0.0.1:%d" % ports[lb.FRONT] in text


def test_nginx_config_is_valid_and_proxies_websockets():
    lb.need(lb.NGINX_BIN)
    cfg = read("nginx.conf")
    for must in (r"least_conn;", r"proxy_http_version 1\.1;",
                 r"proxy_set_header Upgrade \$http_upgrade;",
                 r"proxy_set_header Connection \$connection_upgrade;",
                 r"proxy_read_timeout 1h;", r"max_fails=", r"server 127\.0\.0\.1:8080\b",
                 r"(?i)#.*no active health check"):
        assert re.search(must, cfg), "nginx.conf lacks /%s/" % must
    prefix = os.path.join(harness.tmp_root(), "nginx")
    os.makedirs(os.path.join(prefix, "temp"))
    path = os.path.join(prefix, "nginx.conf")
    ports = {p: harness.free_port() for p in (lb.FRONT, lb.GW1, lb.GW2)}
    lb.render_file("nginx.conf", ports, path)
    out = subprocess.run(lb.nginx_argv(prefix, path) + ["-t"], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode == 0, "nginx -t: %s%s" % (out.stdout, out.stderr)
    assert "test is successful" in out.stderr, out.stderr


# --- wss:// (deploy/haproxy-tls.cfg, nginx-tls.conf, nginx-stream.conf) ----------------------

# Placeholders of the TLS files, beside those of haproxy.cfg and nginx.conf.
TLS_FRONT, PASS_FRONT, GW3, ADMIN3, GW4, ADMIN4 = 8443, 9443, 8444, 9092, 8445, 9093
HAPROXY_TLS_PORTS = (TLS_FRONT, PASS_FRONT, lb.STATS, lb.GW1, lb.ADMIN1, lb.GW2, lb.ADMIN2, GW3,
                     ADMIN3, GW4, ADMIN4)
HAPROXY_CERT = "/etc/haproxy/certs/wsgate.pem"
NGINX_CERT, NGINX_KEY = "/etc/nginx/certs/wsgate.pem", "/etc/nginx/certs/wsgate.key"
TLS12_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                 "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                 "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")


def render_tls(name, ports, dest, certs_):
    """A TLS deploy file on test ports, with its certificate paths replaced:
    certs_ is {path in the file: path of a throwaway file}."""
    with open(os.path.join(DEPLOY, name)) as f:
        text = lb.render(f.read(), ports)
    for old, new in certs_.items():
        assert old in text, "%s does not name %s" % (name, old)
        text = text.replace(old, new)
    with open(dest, "w") as f:
        f.write(text)
    return text


def haproxy_pem(dir):
    """A throwaway certificate, its key appended: what HAProxy's crt takes."""
    import certs
    cert, key = certs.self_signed(dir)
    pem = os.path.join(dir, "haproxy.pem")
    with open(pem, "w") as out, open(cert) as c, open(key) as k:
        out.write(c.read() + k.read())
    return cert, key, pem


def test_tls_deploy_files_name_the_gateways_own_ciphers():
    """The proxies offer what wsgate accepts (common/tls.c), no more, no less."""
    with open(os.path.join(harness.REPO, "common", "tls.c")) as f:
        src = f.read()
    m = re.search(r"#define TLS12_CIPHERS((?:.*\\\n)*.*)\n", src)
    assert m, "common/tls.c has no TLS12_CIPHERS"
    assert "".join(re.findall(r'"([^"]*)"', m.group(1))) == TLS12_CIPHERS


def test_haproxy_tls_config_is_valid_both_ways():
    lb.need(lb.HAPROXY_BIN)
    cfg = read("haproxy-tls.cfg")
    for must in (r"bind \*:8443 ssl crt %s alpn http/1\.1" % re.escape(HAPROXY_CERT),
                 r"mode tcp", r"bind \*:9443", r"balance\s+leastconn", r"timeout\s+tunnel\s+1h",
                 r"server gw3 127\.0\.0\.1:8444 check port 9092", r"ssl-min-ver TLSv1\.2",
                 re.escape(TLS12_CIPHERS), r"X-Forwarded-Proto https", r"/readyz",
                 r"wsgate --tls-cert"):
        assert re.search(must, cfg), "haproxy-tls.cfg lacks /%s/" % must
    for port in HAPROXY_TLS_PORTS:
        assert re.search(r"^#.*\b%d\b" % port, cfg, re.M), \
            "placeholder port %d is not documented in the header comment" % port
    d = os.path.join(harness.tmp_root(), "haproxy-tls")
    os.makedirs(d)
    _, _, pem = haproxy_pem(d)
    ports = {p: harness.free_port() for p in HAPROXY_TLS_PORTS}
    path = os.path.join(d, "haproxy-tls.cfg")
    text = render_tls("haproxy-tls.cfg", ports, path, {HAPROXY_CERT: pem})
    for p in ports:
        assert not re.search(r"(?<![\d.])%d(?![\d.])" % p, text), "port %d left in" % p
    out = subprocess.run([lb.HAPROXY_BIN, "-c", "-f", path], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode == 0, "haproxy -c: %s%s" % (out.stdout, out.stderr)


def nginx_check(name, ports, certs_):
    prefix = os.path.join(harness.tmp_root(), "nginx-" + name)
    os.makedirs(os.path.join(prefix, "temp"))
    path = os.path.join(prefix, name)
    render_tls(name, ports, path, certs_)
    out = subprocess.run(lb.nginx_argv(prefix, path) + ["-t"], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode == 0, "nginx -t %s: %s%s" % (name, out.stdout, out.stderr)
    assert "test is successful" in out.stderr, out.stderr


def test_nginx_tls_configs_are_valid_both_ways():
    lb.need(lb.NGINX_BIN)
    import certs
    cert, key = certs.self_signed(os.path.join(harness.tmp_root(), "nginx-certs"))
    cfg = read("nginx-tls.conf")
    for must in (r"listen \*:8443 ssl;", r"ssl_protocols TLSv1\.2 TLSv1\.3;",
                 re.escape(TLS12_CIPHERS), r"proxy_set_header Upgrade \$http_upgrade;",
                 r"proxy_set_header Connection \$connection_upgrade;", r"proxy_read_timeout 1h;",
                 r"server 127\.0\.0\.1:8080\b", r"X-Forwarded-Proto https"):
        assert re.search(must, cfg), "nginx-tls.conf lacks /%s/" % must
    nginx_check("nginx-tls.conf", {p: harness.free_port() for p in (TLS_FRONT, lb.GW1, lb.GW2)},
                {NGINX_CERT: cert, NGINX_KEY: key})
    cfg = read("nginx-stream.conf")
    for must in (r"(?m)^stream \{", r"listen \*:9443;", r"proxy_timeout 1h;",
                 r"server 127\.0\.0\.1:8444\b", r"least_conn;", r"libnginx-mod-stream",
                 r"wsgate --tls-cert"):
        assert re.search(must, cfg), "nginx-stream.conf lacks /%s/" % must
    assert "ssl_certificate" not in cfg, "the pass-through holds no certificate"
    nginx_check("nginx-stream.conf",
                {p: harness.free_port() for p in (PASS_FRONT, GW3, GW4)}, {})
