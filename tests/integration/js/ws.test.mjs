// MQTT.js over WebSockets in Node. Run by tests/integration/test_ws.py with
//   TERN_WS_URL  ws://127.0.0.1:PORT/mqtt   (a ws listener)
//   TERN_WSS_URL wss://localhost:PORT/PATH  (a wss listener, certificate for localhost)
//   TERN_TCP_URL mqtt://127.0.0.1:PORT      (the same broker over TCP)
//   TERN_CA      the CA file the wss listener's certificate chains to
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import mqtt from 'mqtt';

const WS = process.env.TERN_WS_URL;
const WSS = process.env.TERN_WSS_URL;
const TCP = process.env.TERN_TCP_URL;
const CA = process.env.TERN_CA;
const T = { timeout: 20000 };
let seq = 0;
const uid = (p) => `${p}-${process.pid}-${++seq}`;
const open = new Set();

function connect(url, opts = {}) {
  const c = mqtt.connect(url, {
    protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000, clientId: uid('jsws'),
    ...opts,
  });
  open.add(c);
  c.received = [];
  c.waiters = [];
  c.on('message', (topic, payload, packet) => {
    c.received.push({ topic, payload: Buffer.from(payload), packet });
    for (const w of c.waiters.splice(0)) w();
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { c.end(true); reject(new Error(`connect timeout ${url}`)); }, 8000);
    c.once('connect', () => { clearTimeout(timer); resolve(c); });
    c.once('error', (e) => { clearTimeout(timer); c.end(true); reject(e); });
  });
}

function waitMessages(c, n, ms = 8000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`got ${c.received.length} of ${n}`)), ms);
    const check = () => {
      if (c.received.length >= n) { clearTimeout(timer); resolve(c.received.slice(0, n)); }
      else c.waiters.push(check);
    };
    check();
  });
}

afterEach(async () => {
  const left = [...open];
  open.clear();
  await Promise.all(left.map((c) => c.endAsync().catch(() => {})));
});

test('v5 over ws: QoS 0, 1 and 2 in order, a 200 kB payload', T, async () => {
  const sub = await connect(WS);
  const pub = await connect(WS);
  await sub.subscribeAsync('ws/js/#', { qos: 2 });
  const big = Buffer.alloc(200000, 7);
  await pub.publishAsync('ws/js/a', 'zero', { qos: 0 });
  await pub.publishAsync('ws/js/b', 'one', { qos: 1 });
  await pub.publishAsync('ws/js/c', 'two', { qos: 2 });
  await pub.publishAsync('ws/js/d', big, { qos: 1 });
  const got = await waitMessages(sub, 4);
  assert.deepEqual(got.slice(0, 3).map((m) => m.payload.toString()), ['zero', 'one', 'two']);
  assert.equal(got[3].payload.length, big.length);
  assert.ok(got[3].payload.equals(big));
});

test('MQTT 3.1.1, and 3.1 (subprotocol mqttv3.1), over ws', T, async () => {
  const v4 = await connect(WS, { protocolVersion: 4 });
  const v3 = await connect(WS, { protocolVersion: 3, protocolId: 'MQIsdp' });
  await v3.subscribeAsync('ws/v3', { qos: 1 });
  await v4.publishAsync('ws/v3', 'old client', { qos: 1 });
  const [m] = await waitMessages(v3, 1);
  assert.equal(m.payload.toString(), 'old client');
});

test('wss (TLS under WebSockets) to ws and tcp subscribers, and back', T, async () => {
  const ca = fs.readFileSync(CA);
  const secure = await connect(WSS, { ca, rejectUnauthorized: true });
  const plain = await connect(WS);
  const tcp = await connect(TCP);
  await plain.subscribeAsync('wss/t', { qos: 1 });
  await tcp.subscribeAsync('wss/t', { qos: 1 });
  await secure.subscribeAsync('back/t', { qos: 1 });
  await secure.publishAsync('wss/t', 'from wss', { qos: 1 });
  const [a] = await waitMessages(plain, 1);
  const [b] = await waitMessages(tcp, 1);
  assert.equal(a.payload.toString(), 'from wss');
  assert.equal(b.payload.toString(), 'from wss');
  await tcp.publishAsync('back/t', 'to wss', { qos: 1 });
  const [c] = await waitMessages(secure, 1);
  assert.equal(c.payload.toString(), 'to wss');
});

test('wss refuses a client that does not trust the certificate', T, async () => {
  await assert.rejects(connect(WSS, { rejectUnauthorized: true }));
});
