'use strict';
/*
 * A Node `ws` client with perMessageDeflate on, driven by test_deflate.py. Prints one
 * JSON object per line: {"event":"open","extensions":"..."}, one {"event":"echo",...}
 * per message that came back as sent, then {"event":"close",...}; exit 1 on an error.
 *   node deflate_client.js URL
 */
const WebSocket = require('ws');

const [url] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const fail = (msg) => {
  out({ event: 'error', message: String(msg) });
  process.exit(1);
};
setTimeout(() => fail('timeout'), 20000).unref();

// threshold 0: ws compresses every message, even the small one
const ws = new WebSocket(url, { perMessageDeflate: { threshold: 0 }, maxPayload: 8 << 20 });
const pending = [];

ws.on('error', (e) => fail(e.message));
ws.on('message', (data, isBinary) => {
  const want = pending.shift();
  if (!want) return fail('unexpected message');
  const got = Buffer.from(data);
  if (isBinary !== want.binary || !got.equals(want.buf))
    return fail('echo mismatch for ' + want.name);
  out({ event: 'echo', name: want.name, binary: isBinary, len: got.length });
  if (pending.length === 0) ws.close(4001, 'done');
});
ws.on('close', (code, reason) => {
  out({ event: 'close', code, reason: reason.toString('utf8') });
  process.exit(0);
});

function send(name, buf, binary) {
  pending.push({ name, buf, binary });
  ws.send(binary ? buf : buf.toString('utf8'), { binary });
}

function json(n) {
  const items = [];
  let size = 2;
  for (let i = 0; size < n; i++) {
    const item = JSON.stringify({ id: i, user: 'user' + (i % 37), event: 'price.update',
                                  price: 100 + i * 0.37 });
    items.push(item);
    size += item.length + 1;
  }
  return Buffer.from('[' + items.join(',') + ']', 'utf8');
}

ws.on('open', () => {
  out({ event: 'open', extensions: ws.extensions });
  send('small', Buffer.from('hi', 'utf8'), false);
  send('json', json(3000), false);
  send('big', json(2 << 20), false);
  send('binary', Buffer.alloc(200000, 7), true);
  send('utf8', Buffer.from('κόσμε 😀 '.repeat(2000), 'utf8'), false);
});
