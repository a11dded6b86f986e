'use strict';
/*
 * A Node `ws` client driven by test_orders.py: connects, prints
 *   {"event":"open","conn":ID}   (ID from the X-Wsgate-Conn answer header)
 * and, when the server closes the connection,
 *   {"event":"close","code":N,"reason":"..."}
 * then exits 0. Any error, or no close within 20 s, prints {"event":"error"} and exits 1.
 *   node orders_client.js URL
 */
const WebSocket = require('ws');

const url = process.argv[2];
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const fail = (msg) => {
  out({ event: 'error', message: String(msg) });
  process.exit(1);
};
setTimeout(() => fail('timeout'), 20000).unref();

const ws = new WebSocket(url);
let connId = null;
ws.on('upgrade', (res) => {
  connId = res.headers['x-wsgate-conn'] || null;
});
ws.on('error', (e) => fail(e.message));
ws.on('open', () => out({ event: 'open', conn: connId }));
ws.on('close', (code, reason) => {
  out({ event: 'close', code, reason: reason.toString('utf8') });
  process.exit(0);
});
