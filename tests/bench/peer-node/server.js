#!/usr/bin/env node
// The benchmark peer: a typical Node.js WebSocket gateway (cluster + ws + ioredis) with the
// same job, close-order and send-order semantics as wsgate, so the benchmarks compare like
// with like.
// It is written the way a Node team would write it, not tuned.
//
//   node server.js --listen 127.0.0.1:PORT --workers N --id ID --redis redis://127.0.0.1:RPORT
//                  [--channel wsgate:orders] [--close-timeout 5000] [--deflate 1]
//                  [--inbound echo|publish] [--inbound-channel wsgate:in]
// --deflate 1 turns ws's perMessageDeflate on with the contract wsgate's --deflate
// answers with (no context takeover either way, messages under 256 bytes plain); ws
// then compresses each message once per connection that negotiated it.
'use strict';

const cluster = require('node:cluster');
const crypto = require('node:crypto');
const { isUtf8 } = require('node:buffer');
const { WebSocketServer } = require('ws');
const Redis = require('ioredis');

const MAX_GROUPS = 16;
const MAX_NAME = 128;
const MAX_ORDER = 64 * 1024;
const MAX_NAMES = 10000;
const MAX_SPREAD = 3600000;
const MAX_SEND = 1024 * 1024;      // wsgate's --max-send default
const MAX_OUTBOUND = 1024 * 1024;  // wsgate's --max-outbound default
// A send order's text may be as long as its message needs (JSON escapes, base64): bounded
// here only against absurd input.
const MAX_SEND_ORDER = MAX_ORDER + 8 * MAX_SEND;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function usage(msg) {
  if (msg) process.stderr.write(`server.js: ${msg}\n`);
  process.stderr.write('usage: node server.js --listen HOST:PORT --workers N --id ID ' +
    '--redis redis://HOST:PORT [--channel wsgate:orders] [--close-timeout MS] [--deflate 1]\n' +
    '                      [--inbound echo|publish] [--inbound-channel wsgate:in]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { listen: '127.0.0.1:8080', workers: 1, id: 'peer', redis: 'redis://127.0.0.1:6379',
    channel: 'wsgate:orders', closeTimeout: 5000, deflate: false, inbound: 'echo',
    inboundChannel: 'wsgate:in' };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const val = argv[i + 1];
    if (flag === '--help') usage();
    if (val === undefined) usage(`${flag} needs a value`);
    i++;
    switch (flag) {
      case '--listen': opts.listen = val; break;
      case '--workers': opts.workers = Number(val); break;
      case '--id': opts.id = val; break;
      case '--redis': opts.redis = val; break;
      case '--channel': opts.channel = val; break;
      case '--close-timeout': opts.closeTimeout = Number(val); break;
      case '--deflate': opts.deflate = val === '1'; break;
      case '--inbound': opts.inbound = val; break;
      case '--inbound-channel': opts.inboundChannel = val; break;
      default: usage(`unknown flag ${flag}`);
    }
  }
  const m = /^(.*):(\d+)$/.exec(opts.listen);
  if (!m) usage('--listen must be HOST:PORT');
  opts.host = m[1].replace(/^\[|\]$/g, '');
  opts.port = Number(m[2]);
  if (!Number.isInteger(opts.workers) || opts.workers < 1 || opts.workers > 256) usage('bad --workers');
  if (!Number.isInteger(opts.closeTimeout) || opts.closeTimeout < 0) usage('bad --close-timeout');
  if (opts.inbound !== 'echo' && opts.inbound !== 'publish') usage('--inbound: echo or publish');
  if (opts.inboundChannel === '') usage('--inbound-channel must not be empty');
  return opts;
}

const opts = parseArgs(process.argv.slice(2));

// --- primary: fork the workers, relay SIGTERM, exit when they are all gone ----------------
if (cluster.isPrimary) {
  let stopping = false;
  const numbers = new Map();  // cluster worker -> our worker number (1..N), kept on restart
  const fork = (num) => numbers.set(cluster.fork({ PEER_WORKER: String(num) }), num);
  cluster.on('exit', (worker, code, signal) => {
    const num = numbers.get(worker);
    numbers.delete(worker);
    if (stopping) {
      if (Object.keys(cluster.workers).length === 0) process.exit(0);
      return;
    }
    process.stderr.write(`worker ${worker.id} died (${signal || code}), restarting\n`);
    fork(num);
  });
  for (let i = 1; i <= opts.workers; i++) fork(i);

  const stop = () => {
    if (stopping) return;
    stopping = true;
    process.stderr.write('shutting down: closing every connection with 1001\n');
    for (const w of Object.values(cluster.workers)) w.send('shutdown');
    setTimeout(() => {
      process.stderr.write('shutdown timed out, killing the workers\n');
      for (const w of Object.values(cluster.workers)) w.process.kill('SIGKILL');
      process.exit(1);
    }, opts.closeTimeout + 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  return;
}

// --- worker --------------------------------------------------------------------------------
const workerNum = Number(process.env.PEER_WORKER);
const idPrefix = `${opts.id}-${workerNum}-${crypto.randomBytes(4).toString('hex')}-`;
let counter = 0;
const byId = new Map();     // connection id -> ws
const byGroup = new Map();  // group name -> Set(ws)
let shuttingDown = false;

function log(msg) {
  process.stderr.write(`[worker ${workerNum}] ${msg}\n`);
}

function validName(s) {
  return typeof s === 'string' && s.length > 0 && Buffer.byteLength(s) <= MAX_NAME &&
    s.isWellFormed() && !s.includes('\0');
}

// The groups a request asks for: repeated ?group=, and ?user=ID as user:ID.
function groupsOf(req) {
  const params = new URL(req.url, 'http://localhost').searchParams;
  const names = new Set(params.getAll('group'));
  const users = params.getAll('user');
  if (users.length > 1) throw new Error('more than one user');
  if (users.length === 1) names.add(`user:${users[0]}`);
  for (const n of names) if (!validName(n)) throw new Error('bad group name');
  if (names.size > MAX_GROUPS) throw new Error('too many groups');
  return [...names];
}

const wss = new WebSocketServer({
  host: opts.host,
  port: opts.port,
  perMessageDeflate: opts.deflate
    ? { serverNoContextTakeover: true, clientNoContextTakeover: true, threshold: 256 }
    : false,
  maxPayload: 1024 * 1024,
  verifyClient: (info, done) => {
    try {
      info.req.groups = groupsOf(info.req);
      done(true);
    } catch (err) {
      done(false, 400, err.message);
    }
  },
});

wss.on('headers', (headers, req) => {
  req.connId = idPrefix + (++counter);
  headers.push(`X-Wsgate-Conn: ${req.connId}`);
});

wss.on('connection', (ws, req) => {
  ws.connId = req.connId;
  ws.groups = req.groups;
  byId.set(ws.connId, ws);
  for (const g of ws.groups) {
    let set = byGroup.get(g);
    if (!set) byGroup.set(g, set = new Set());
    set.add(ws);
  }
  if (opts.inbound === 'publish') {
    ws.user = ws.groups.find((g) => g.startsWith('user:'))?.slice(5);
    ws.on('message', (data, isBinary) => publishInbound(ws, data, isBinary));
  } else {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  }
  ws.on('error', () => {});
  ws.on('close', () => {
    clearTimeout(ws.closeTimer);
    byId.delete(ws.connId);
    for (const g of ws.groups) {
      const set = byGroup.get(g);
      set.delete(ws);
      if (set.size === 0) byGroup.delete(g);
    }
    if (shuttingDown && byId.size === 0) process.exit(0);
  });
  if (shuttingDown) closeConn(ws, 1001, 'server shutting down');
});

// --inbound publish: each client message goes to Redis as wsgate's envelope (README "Client
// messages to backends"): conn, gateway, worker, user (from the user:<id> group), groups, seq
// (per worker), ts (ms), then text or binary (base64). ioredis queues what Redis has not
// taken yet in memory, as a typical gateway leaves it.
let inboundSeq = 0;
function publishInbound(ws, data, isBinary) {
  const env = { conn: ws.connId, gateway: opts.id, worker: workerNum };
  if (ws.user !== undefined) env.user = ws.user;
  env.groups = ws.groups;
  env.seq = ++inboundSeq;
  env.ts = Date.now();
  if (isBinary) env.binary = data.toString('base64');
  else env.text = data.toString();
  pub.publish(opts.inboundChannel, JSON.stringify(env)).catch((err) => log(`inbound publish: ${err.message}`));
}

// ws.close() sends the close frame and waits for the client's reply, then ends TCP; ws's own
// timer for that is 30 s, so ours cuts it to --close-timeout.
function closeConn(ws, code, reason) {
  if (ws.readyState !== ws.OPEN) return false;
  ws.close(code, reason);
  ws.closeTimer = setTimeout(() => ws.terminate(), opts.closeTimeout);
  return true;
}

// --- orders --------------------------------------------------------------------------------
function validCode(c) {
  return Number.isInteger(c) && ((c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1009) ||
    (c >= 1011 && c <= 1014) || (c >= 3000 && c <= 4999));
}

// Cut a reason to at most 123 bytes of UTF-8 at a code point boundary.
function cutReason(s) {
  if (Buffer.byteLength(s) <= 123) return s;
  let out = '';
  let bytes = 0;
  for (const ch of s) {
    const n = Buffer.byteLength(ch);
    if (bytes + n > 123) break;
    out += ch;
    bytes += n;
  }
  return out;
}

function nameList(v, field) {
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.length === 0) throw new Error(`${field}: a name or a list of names`);
  for (const n of list) if (!validName(n)) throw new Error(`${field}: names are 1-128 bytes of UTF-8`);
  return list;
}

// Check an order the way wsgate does; throws with the reason of a refusal.
function parseOrder(buf) {
  if (buf.length > MAX_SEND_ORDER) throw new Error('order larger than 64 KiB');
  if (!isUtf8(buf)) throw new Error('order is not UTF-8');
  let o;
  try {
    o = JSON.parse(buf.toString());
  } catch {
    throw new Error('order is not JSON');
  }
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new Error('order is not a JSON object');
  const order = { id: undefined, code: 1000, reason: '', spread: 0, dryRun: false, maxAffected: undefined };
  const str = (f) => { if (o[f] !== undefined && typeof o[f] !== 'string') throw new Error(`${f}: a string`); };
  str('id'); str('gateway'); str('reply_to'); str('op');
  order.id = o.id;
  order.gateway = o.gateway;
  order.replyTo = o.reply_to;
  if (o.op !== undefined && o.op !== 'close' && o.op !== 'send') throw new Error(`op: ${o.op} is not supported`);
  order.send = o.op === 'send';
  if (!order.send && buf.length > MAX_ORDER) throw new Error('order larger than 64 KiB');
  if (order.send) {
    for (const f of ['code', 'reason', 'spread_ms']) {
      if (o[f] !== undefined) throw new Error(`${f}: not for a send`);
    }
    if ((o.text === undefined) === (o.binary === undefined)) throw new Error('exactly one of text, binary');
    if (o.text !== undefined) {
      if (typeof o.text !== 'string' || !o.text.isWellFormed()) throw new Error('text: a UTF-8 string');
      order.payload = Buffer.from(o.text);
      order.binary = false;
    } else {
      if (typeof o.binary !== 'string' || !BASE64.test(o.binary)) throw new Error('binary: padded base64');
      order.payload = Buffer.from(o.binary, 'base64');
      order.binary = true;
    }
    if (order.payload.length > MAX_SEND) throw new Error('message larger than --max-send');
  }
  const targets = ['conn', 'group', 'all'].filter((f) => o[f] !== undefined);
  if (targets.length !== 1) throw new Error('exactly one of conn, group, all');
  let names = 0;
  if (o.conn !== undefined) names += (order.conn = nameList(o.conn, 'conn')).length;
  if (o.group !== undefined) names += (order.group = nameList(o.group, 'group')).length;
  if (o.all !== undefined) {
    if (o.all !== true) throw new Error('all: must be true');
    order.all = true;
  }
  if (o.except !== undefined) names += (order.except = nameList(o.except, 'except')).length;
  if (names > MAX_NAMES) throw new Error('more than 10000 names');
  if (o.code !== undefined) {
    if (typeof o.code !== 'number' || !Number.isInteger(o.code)) throw new Error('code: an integer');
    if (!validCode(o.code)) throw new Error(`code: ${o.code} may not be sent`);
    order.code = o.code;
  }
  if (o.reason !== undefined) {
    if (typeof o.reason !== 'string') throw new Error('reason: a string');
    if (!o.reason.isWellFormed() || o.reason.includes('\0')) throw new Error('reason: not valid UTF-8 text');
    order.reason = cutReason(o.reason);
  }
  if (o.spread_ms !== undefined) {
    if (!Number.isInteger(o.spread_ms) || o.spread_ms < 0 || o.spread_ms > MAX_SPREAD) {
      throw new Error('spread_ms: an integer 0-3600000');
    }
    order.spread = o.spread_ms;
  }
  if (o.dry_run !== undefined) {
    if (typeof o.dry_run !== 'boolean') throw new Error('dry_run: a boolean');
    order.dryRun = o.dry_run;
  }
  if (o.max_affected !== undefined) {
    if (!Number.isInteger(o.max_affected) || o.max_affected < 0) throw new Error('max_affected: an integer >= 0');
    order.maxAffected = o.max_affected;
  }
  return order;
}

function matches(order) {
  const found = new Set();
  if (order.all) {
    for (const ws of byId.values()) found.add(ws);
  } else if (order.conn) {
    for (const id of order.conn) {
      const ws = byId.get(id);
      if (ws) found.add(ws);
    }
  } else {
    for (const g of order.group) {
      const set = byGroup.get(g);
      if (set) for (const ws of set) found.add(ws);
    }
  }
  if (order.except) for (const id of order.except) found.delete(byId.get(id));
  for (const ws of found) if (ws.readyState !== ws.OPEN) found.delete(ws);
  return [...found];
}

function ack(replyTo, { id, ...rest }) {
  if (replyTo) pub.publish(replyTo, JSON.stringify({ id, gateway: opts.id, worker: workerNum, ...rest }));
}

// One message to every match: ws frames it per connection around the one payload Buffer.
// A message that would take a connection's queue past MAX_OUTBOUND while earlier output
// still waits makes it a slow consumer, closed with 1013, as in wsgate.
function sendMessage(order, targets) {
  if (order.dryRun) {
    ack(order.replyTo, { id: order.id, matched: targets.length, sent: 0, dropped: 0, dry_run: true });
    return;
  }
  let sent = 0;
  let dropped = 0;
  for (const ws of targets) {
    if (ws.readyState !== ws.OPEN) continue;
    if (ws.bufferedAmount > 0 && ws.bufferedAmount + order.payload.length > MAX_OUTBOUND) {
      closeConn(ws, 1013, 'slow consumer');
      dropped++;
      continue;
    }
    ws.send(order.payload, { binary: order.binary });
    sent++;
  }
  ack(order.replyTo, { id: order.id, matched: targets.length, sent, dropped });
}

function applyOrder(buf) {
  let order;
  try {
    order = parseOrder(buf);
  } catch (err) {
    log(`refused order: ${err.message}`);
    let parsed = {};
    try { parsed = JSON.parse(buf.toString()) || {}; } catch { /* not JSON */ }
    if (typeof parsed.gateway === 'string' && parsed.gateway !== opts.id) return;
    if (typeof parsed.reply_to === 'string') {
      ack(parsed.reply_to, { id: typeof parsed.id === 'string' ? parsed.id : undefined, error: err.message });
    }
    return;
  }
  if (order.gateway !== undefined && order.gateway !== opts.id) return;
  const targets = matches(order);
  if (order.maxAffected !== undefined && targets.length > order.maxAffected) {
    ack(order.replyTo, { id: order.id, error: `matched ${targets.length}, more than max_affected ${order.maxAffected}` });
    return;
  }
  if (order.send) {
    sendMessage(order, targets);
    return;
  }
  if (order.dryRun) {
    ack(order.replyTo, { id: order.id, matched: targets.length, closed: 0, dry_run: true });
    return;
  }
  if (order.spread === 0) {
    let closed = 0;
    for (const ws of targets) if (closeConn(ws, order.code, order.reason)) closed++;
    ack(order.replyTo, { id: order.id, matched: targets.length, closed });
    return;
  }
  // Spread: each match at its own random moment in the window, the ack after the last one.
  let pending = targets.length;
  let closed = 0;
  if (pending === 0) ack(order.replyTo, { id: order.id, matched: 0, closed: 0 });
  for (const ws of targets) {
    setTimeout(() => {
      if (closeConn(ws, order.code, order.reason)) closed++;
      if (--pending === 0) ack(order.replyTo, { id: order.id, matched: targets.length, closed });
    }, Math.floor(Math.random() * (order.spread + 1)));
  }
}

const sub = new Redis(opts.redis);
const pub = new Redis(opts.redis);
sub.on('error', (err) => log(`redis subscriber: ${err.message}`));
pub.on('error', (err) => log(`redis publisher: ${err.message}`));
sub.on('messageBuffer', (_channel, message) => applyOrder(message));

let listening = false;
let subscribed = false;
function maybeReady() {
  if (listening && subscribed) process.stderr.write('worker ready\n');
}
wss.on('listening', () => { listening = true; maybeReady(); });
// Like wsgate, a channel per worker, named after its connection ids' prefix: an order
// for its connections reaches it alone.
sub.subscribe(opts.channel, `${opts.channel}:${opts.id}`,
  `${opts.channel}:worker:${idPrefix.slice(0, -1)}`).then(() => { subscribed = true; maybeReady(); },
  (err) => log(`subscribe failed: ${err.message}`));

// --- shutdown: close every connection with 1001, exit when they are gone -------------------
function shutdown() {
  if (shuttingDown) return;
  shuttingDown = true;
  wss.close();  // stop accepting; open connections stay until closed below
  if (byId.size === 0) process.exit(0);
  for (const ws of byId.values()) closeConn(ws, 1001, 'server shutting down');
}
process.on('message', (msg) => { if (msg === 'shutdown') shutdown(); });
process.on('SIGTERM', shutdown);
process.on('SIGINT', () => {});  // the primary relays Ctrl-C as a shutdown
