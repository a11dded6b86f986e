"""A real browser: headless Chromium loads wsgate's demo page, which connects to wsgate;
a close order is published on Redis and the page's CloseEvent must carry its code and
reason. Chromium is driven over the DevTools protocol with python websockets.

Chromium is a test dependency (the Makefile's deps-test installs Debian's chromium): if
/usr/bin/chromium is missing the test fails, it does not skip.
"""

import asyncio
import itertools
import json
import os
import signal
import subprocess
import time

import harness
import fleet as F
from fleet import Fleet, run, until

CHROMIUM = "/usr/bin/chromium"

# Runs in the page before its own scripts: records every WebSocket's CloseEvent as the
# browser delivers it, independently of what the page chooses to show.
RECORD_CLOSES = """
(function () {
  var Native = window.WebSocket;
  window.__closes = [];
  window.WebSocket = function (url, protocols) {
    var ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    ws.addEventListener("close", function (ev) {
      window.__closes.push({code: ev.code, reason: ev.reason, wasClean: ev.wasClean});
    });
    return ws;
  };
  window.WebSocket.prototype = Native.prototype;
  ["CONNECTING", "OPEN", "CLOSING", "CLOSED"].forEach(function (k) {
    window.WebSocket[k] = Native[k];
  });
})();
"""


class Chromium:
    """Headless Chromium in its own process group, killed (group and pid) in cleanup."""

    def __init__(self, extra_args=()):
        self.dir = os.path.join(harness.tmp_root(), "chromium-profile")
        os.makedirs(self.dir)
        self.log_path = os.path.join(harness.tmp_root(), "chromium.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-extensions",
             "--no-proxy-server", "--disable-dev-shm-usage", "--user-data-dir=" + self.dir,
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]
            + list(extra_args) + ["about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)
        harness._live.append(self)

    def devtools_url(self, timeout=20.0):
        """ws://127.0.0.1:PORT/devtools/browser/ID from the DevToolsActivePort file."""
        path = os.path.join(self.dir, "DevToolsActivePort")

        def read():
            if self.proc.poll() is not None:
                raise AssertionError("chromium exited with %s" % self.proc.returncode)
            try:
                with open(path) as f:
                    lines = f.read().split("\n")
            except OSError:
                return None
            return lines if len(lines) >= 2 and lines[0].isdigit() and lines[1] else None
        port, ws_path = harness.wait_for(read, timeout, path, 0.05)[:2]
        return "ws://127.0.0.1:%s%s" % (port, ws_path)

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its renderers and helpers too
            except OSError:
                pass
            self.proc.kill()
        self.proc.wait()
        if not self._log.closed:
            self._log.close()

    def dump(self):
        return "---- chromium log ----\n%s" % harness.read_text(self.log_path)[-4000:]


class CDP:
    """A minimal DevTools protocol client: commands in flat session mode, events ignored."""

    def __init__(self, ws):
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending = {}
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, url):
        import websockets
        ws = await websockets.connect(url, max_size=None, ping_interval=None, open_timeout=10)
        return cls(ws)

    async def _read(self):
        async for text in self.ws:
            msg = json.loads(text)
            fut = self.pending.pop(msg.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def send(self, method, params=None, session=None, timeout=10.0):
        i = next(self.ids)
        msg = {"id": i, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        fut = asyncio.get_running_loop().create_future()
        self.pending[i] = fut
        await self.ws.send(json.dumps(msg))
        reply = await asyncio.wait_for(fut, timeout)
        if "error" in reply:
            raise AssertionError("CDP %s: %r" % (method, reply["error"]))
        return reply["result"]

    async def evaluate(self, session, expr):
        r = await self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True},
                            session)
        if "exceptionDetails" in r:
            raise AssertionError("page threw on %r: %r" % (expr, r["exceptionDetails"]))
        return r["result"].get("value")

    async def close(self):
        self.reader.cancel()
        await self.ws.close()


@harness.timeout(90)
def test_browser_page_sees_close_code_and_reason_of_group_order():
    assert os.path.exists(CHROMIUM), \
        "%s is missing: the integration tests need Debian's chromium (make deps-test)" % CHROMIUM
    fl = Fleet(ids=("gwA",))
    gw = fl.gateways["gwA"]
    bystanders = []

    async def main():
        bystanders.extend(await F.open_clients(fl, [("gwA", ["room:8"], None)] * 2))
        browser = Chromium()
        cdp = await CDP.connect(browser.devtools_url())
        target = (await cdp.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
        session = (await cdp.send("Target.attachToTarget",
                                  {"targetId": target, "flatten": True}))["sessionId"]
        await cdp.send("Page.enable", session=session)
        await cdp.send("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_CLOSES},
                       session)
        page = "http://127.0.0.1:%d/?group=room:9&reconnect=0" % gw.port
        await cdp.send("Page.navigate", {"url": page}, session)

        async def text_of(element_id):
            return await cdp.evaluate(
                session, "(document.getElementById(%s) || {}).textContent" % json.dumps(
                    element_id))

        async def wait_value(expr, pred, timeout, what):
            deadline = time.monotonic() + timeout
            while True:
                v = await cdp.evaluate(session, expr)
                if pred(v):
                    return v
                if time.monotonic() > deadline:
                    raise AssertionError("timed out waiting for %s; last %r; page log: %r" % (
                        what, v, await text_of("log")))
                await asyncio.sleep(0.05)

        conn = await wait_value("(document.getElementById('conn') || {}).textContent",
                                lambda v: v and v not in ("-",), 20, "the connection id")
        # the gateway agrees: an open event for that id, in room:9
        await until(lambda: fl.listener.events("open", conn), 5, "open event of " + conn)
        ev = fl.listener.events("open", conn)[0]
        assert ev["gateway"] == "gwA" and "room:9" in ev["groups"], ev

        oid, acks = await fl.order({"group": "room:9", "code": 4321, "reason": "browser bye ✓"})
        assert F.ack_sums(acks) == (1, 1), acks

        title = await wait_value("document.title", lambda v: v == "closed 4321", 10,
                                 "document.title 'closed 4321'")
        assert title == "closed 4321"
        assert await text_of("code") == "4321"
        assert await text_of("reason") == "browser bye ✓", await text_of("reason")
        closes = await cdp.evaluate(session, "JSON.stringify(window.__closes)")
        closes = json.loads(closes)
        assert closes == [{"code": 4321, "reason": "browser bye ✓", "wasClean": True}], closes
        # and the gateway's side of it
        await until(lambda: fl.listener.events("close", conn), 5, "close event of " + conn)
        ev = fl.listener.events("close", conn)[0]
        assert (ev["code"], ev["reason"], ev["by"]) == (4321, "browser bye ✓",
                                                        "order:%s" % oid), ev
        await F.assert_open(bystanders, "beside the browser")
        await cdp.close()
        browser.kill()
    run(main())


@harness.timeout(90)
def test_browser_page_shows_pushed_text_and_binary_messages():
    """The demo page receives messages pushed with send orders: text with multi-byte UTF-8
    as it was sent, binary as its length and bytes; a second member of the group on the
    other gateway gets the same."""
    assert os.path.exists(CHROMIUM), \
        "%s is missing: the integration tests need Debian's chromium (make deps-test)" % CHROMIUM
    fl = Fleet()
    gw = fl.gateways["gwA"]

    async def main():
        (peer,) = await F.open_clients(fl, [("gwB", ["room:7"], None)])
        browser = Chromium()
        cdp = await CDP.connect(browser.devtools_url())
        target = (await cdp.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
        session = (await cdp.send("Target.attachToTarget",
                                  {"targetId": target, "flatten": True}))["sessionId"]
        await cdp.send("Page.enable", session=session)
        await cdp.send("Page.navigate",
                       {"url": "http://127.0.0.1:%d/?group=room:7&reconnect=0" % gw.port},
                       session)

        async def wait_text(element_id, pred, timeout, what):
            expr = "(document.getElementById(%s) || {}).textContent" % json.dumps(element_id)
            deadline = time.monotonic() + timeout
            while True:
                v = await cdp.evaluate(session, expr)
                if pred(v):
                    return v
                if time.monotonic() > deadline:
                    log = await cdp.evaluate(session, "document.getElementById('log').textContent")
                    raise AssertionError("timed out waiting for %s; last %r; page log: %r"
                                         % (what, v, log))
                await asyncio.sleep(0.05)

        conn = await wait_text("conn", lambda v: v and v != "-", 20, "the connection id")
        await until(lambda: fl.listener.events("open", conn), 5, "open event of " + conn)
        text = "pushed to the browser ✓ 😀 服务"
        oid, acks = await fl.order({"op": "send", "group": "room:7", "text": text})
        assert sum(a["sent"] for a in acks) == 2, acks
        assert await wait_text("message", lambda v: v == text, 10, "the text") == text
        assert await wait_text("count", lambda v: v == "1", 5, "count 1") == "1"
        oid, acks = await fl.order({"op": "send", "conn": conn, "binary": "AAEC/w=="})
        assert sum(a["sent"] for a in acks) == 1, acks
        want = "binary 4 bytes: 00 01 02 ff"
        assert await wait_text("message", lambda v: v == want, 10, "the binary") == want
        assert await wait_text("count", lambda v: v == "2", 5, "count 2") == "2"
        assert await asyncio.wait_for(peer.messages.get(), 5) == text
        await F.assert_open([peer], "beside the browser")
        await cdp.close()
        browser.kill()
    run(main())
