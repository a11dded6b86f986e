'use strict';
/*
 * Many Node `ws` clients in one process, driven by test_send.py: one JSON object per
 * line on stdout, one command per line on stdin.
 *   node send_client.js N URL [URL...]
 * opens N connections, round robin over the URLs, and prints
 *   {"event":"open","conns":[ID, ...]}            (ids from X-Wsgate-Conn)
 * Every message must be text "seq:K:" and filler, K counting from 0 on each connection;
 * a connection that gets anything else is marked bad. Commands:
 *   expect K   prints {"event":"done","at_ns":T} once every connection has K messages
 *              or is closed; T is process.hrtime.bigint() (CLOCK_MONOTONIC, as Python's
 *              time.monotonic_ns()) when the last one arrived
 *   closed     prints {"event":"done","at_ns":T} once every connection is closed
 *   report     prints {"event":"report","conns":{ID:{"count":N,"bytes":B,"bad":why|null,
 *              "close":[code,reason]|null,"after":N}}}  (after: messages before the close)
 * An error, or 60 s without finishing, prints {"event":"error"} and exits 1.
 */
const WebSocket = require('ws');
const readline = require('readline');

const [n, ...urls] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const fail = (msg) => {
  out({ event: 'error', message: String(msg) });
  process.exit(1);
};
setTimeout(() => fail('timeout'), 60000).unref();

const conns = [];
let opened = 0;
let waiting = null; // {pred} of the pending expect/closed command
let lastAt = 0n;

function check() {
  if (waiting !== null && conns.every(waiting)) {
    waiting = null;
    out({ event: 'done', at_ns: lastAt.toString() });
  }
}

for (let i = 0; i < Number(n); i++) {
  const c = { id: null, count: 0, bytes: 0, bad: null, close: null, after: 0 };
  const ws = new WebSocket(urls[i % urls.length], { perMessageDeflate: false });
  conns.push(c);
  ws.on('upgrade', (res) => {
    c.id = res.headers['x-wsgate-conn'] || null;
  });
  ws.on('error', (e) => fail(e.message));
  ws.on('open', () => {
    if (++opened === Number(n)) out({ event: 'open', conns: conns.map((x) => x.id) });
  });
  ws.on('message', (data, isBinary) => {
    const text = isBinary ? null : data.toString('utf8');
    const want = 'seq:' + c.count + ':';
    if (c.bad === null && (text === null || !text.startsWith(want)))
      c.bad = 'message ' + c.count + ' is ' + JSON.stringify(String(text).slice(0, 40));
    c.count++;
    c.bytes += data.length;
    lastAt = process.hrtime.bigint();
    check();
  });
  ws.on('close', (code, reason) => {
    c.close = [code, reason.toString('utf8')];
    c.after = c.count;
    lastAt = process.hrtime.bigint();
    check();
  });
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, arg] = line.trim().split(/\s+/);
  if (cmd === 'expect') {
    const k = Number(arg);
    waiting = (c) => c.count >= k || c.close !== null;
    check();
  } else if (cmd === 'closed') {
    waiting = (c) => c.close !== null;
    check();
  } else if (cmd === 'report') {
    const r = {};
    for (const c of conns) r[c.id] = { count: c.count, bytes: c.bytes, bad: c.bad, close: c.close, after: c.after };
    out({ event: 'report', conns: r });
  } else {
    fail('unknown command ' + line);
  }
});
