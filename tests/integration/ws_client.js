'use strict';
/*
 * A Node `ws` client driven by test_clients.py. Prints one JSON object per line.
 *   node ws_client.js URL echo        text, binary and 100 KiB echoes, then closes with 4001
 *   node ws_client.js URL wait-close  one echo, prints {"event":"ready"}, waits for the
 *                                     server's close
 * Every event ends with {"event":"close","code":N,"reason":"..."}; exit 0 unless an error.
 */
const WebSocket = require('ws');

const [url, mode] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const fail = (msg) => {
  out({ event: 'error', message: String(msg) });
  process.exit(1);
};
setTimeout(() => fail('timeout'), 15000).unref();

const ws = new WebSocket(url);
const pending = [];
let connId = null;

ws.on('upgrade', (res) => {
  connId = res.headers['x-wsgate-conn'] || null;
});
ws.on('error', (e) => fail(e.message));
ws.on('message', (data, isBinary) => {
  const want = pending.shift();
  if (!want) return fail('unexpected message');
  const got = Buffer.from(data);
  if (isBinary !== want.binary || !got.equals(want.buf))
    return fail('echo mismatch for ' + want.name);
  out({ event: 'echo', name: want.name, binary: isBinary, len: got.length });
  if (pending.length === 0) next();
});
ws.on('close', (code, reason) => {
  out({ event: 'close', code, reason: reason.toString('utf8') });
  process.exit(0);
});

function send(name, buf, binary) {
  pending.push({ name, buf, binary });
  ws.send(binary ? buf : buf.toString('utf8'), { binary });
}

function next() {
  if (mode === 'echo') ws.close(4001, 'done');
  else if (mode === 'wait-close') out({ event: 'ready' });
  else fail('unknown mode ' + mode);
}

ws.on('open', () => {
  out({ event: 'open', conn: connId });
  send('text', Buffer.from('héllo wsgate', 'utf8'), false);
  send('binary', Buffer.from([0, 1, 2, 255, 254]), true);
  if (mode === 'echo') send('big', Buffer.alloc(100 * 1024, 'x'), false);
});
