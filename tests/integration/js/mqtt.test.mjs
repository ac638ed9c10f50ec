// MQTT.js interoperability tests. Run by tests/integration/test_mqttjs.py with
// TERN_HOST / TERN_PORT pointing at a running broker:
//   TERN_HOST=127.0.0.1 TERN_PORT=1883 node --test mqtt.test.mjs
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import mqtt from 'mqtt';

const HOST = process.env.TERN_HOST || '127.0.0.1';
const PORT = Number(process.env.TERN_PORT || 1883);
const URL = `mqtt://${HOST}:${PORT}`;
const T = { timeout: 15000 };
let seq = 0;
const uid = (p) => `${p}-${process.pid}-${Date.now() % 100000}-${++seq}`;

const open = new Set();

// Connects and collects messages from the very first packet on (the listener is
// attached before CONNACK, so messages queued for a resumed session are not missed).
function connect(opts = {}) {
  const c = mqtt.connect(URL, {
    protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000, clientId: uid('js'),
    ...opts,
  });
  open.add(c);
  c.received = [];
  c.waiters = [];
  c.on('message', (topic, payload, packet) => {
    c.received.push({ topic, payload: payload.toString(), packet });
    for (const w of c.waiters.splice(0)) w();
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { c.end(true); reject(new Error('connect timeout')); }, 5000);
    c.once('connect', (connack) => { clearTimeout(timer); c.connack = connack; resolve(c); });
    c.once('error', (e) => { clearTimeout(timer); c.end(true); reject(e); });
  });
}

// Waits until `c` has received n messages (bounded).
function waitMessages(c, n, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`got ${c.received.length} of ${n} messages`)), ms);
    const check = () => {
      if (c.received.length >= n) { clearTimeout(timer); resolve(c.received.slice(0, n)); }
      else c.waiters.push(check);
    };
    check();
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function end(...cs) {
  await Promise.all(cs.map((c) => { open.delete(c); return c.endAsync().catch(() => {}); }));
}

// A failed test must not leave connections open (node would not exit).
afterEach(async () => {
  const left = [...open];
  open.clear();
  await Promise.all(left.map((c) => c.endAsync(true).catch(() => {})));
});

for (const version of [4, 5]) {
  test(`connect v${version}`, T, async () => {
    const c = await connect({ protocolVersion: version });
    assert.equal(c.connected, true);
    await end(c);
  });

  for (const qos of [0, 1, 2]) {
    test(`pub/sub v${version} qos ${qos}`, T, async () => {
      const sub = await connect({ protocolVersion: version });
      const pub = await connect({ protocolVersion: version });
      const granted = await sub.subscribeAsync(`js/q${qos}`, { qos });
      assert.equal(granted[0].qos, qos);
      await pub.publishAsync(`js/q${qos}`, `hello ${qos}`, { qos });
      const [m] = await waitMessages(sub, 1);
      assert.equal(m.topic, `js/q${qos}`);
      assert.equal(m.payload, `hello ${qos}`);
      assert.equal(m.packet.qos, qos);
      await end(sub, pub);
    });
  }

  test(`retained v${version}`, T, async () => {
    const pub = await connect({ protocolVersion: version });
    await pub.publishAsync('jsret/a', 'kept', { qos: 1, retain: true });
    const sub = await connect({ protocolVersion: version });
    await sub.subscribeAsync('jsret/#', { qos: 1 });
    const [m] = await waitMessages(sub, 1);
    assert.equal(m.payload, 'kept');
    assert.equal(m.packet.retain, true);
    await pub.publishAsync('jsret/a', '', { qos: 1, retain: true });
    const sub2 = await connect({ protocolVersion: version });
    await sub2.subscribeAsync('jsret/#', { qos: 1 });
    await sleep(300);
    assert.equal(sub2.received.length, 0, 'deleted retained message was delivered');
    await end(pub, sub, sub2);
  });

  test(`persistent session resume v${version}`, T, async () => {
    const clientId = uid('jsps');
    const props = version === 5 ? { properties: { sessionExpiryInterval: 60 } } : {};
    const a = await connect({ protocolVersion: version, clientId, clean: false, ...props });
    await a.subscribeAsync('jsps/t', { qos: 1 });
    await end(a);
    const pub = await connect({ protocolVersion: version });
    await pub.publishAsync('jsps/t', 'offline-1', { qos: 1 });
    await pub.publishAsync('jsps/t', 'offline-2', { qos: 2 });
    const b = await connect({ protocolVersion: version, clientId, clean: false, ...props });
    assert.equal(b.connack.sessionPresent, true);
    const msgs = await waitMessages(b, 2);
    assert.deepEqual(msgs.map((m) => m.payload), ['offline-1', 'offline-2']);
    await end(pub, b);
  });
}

test('v5 user properties and message properties', T, async () => {
  const sub = await connect();
  const pub = await connect();
  await sub.subscribeAsync('jsprops/t', { qos: 1 });
  await pub.publishAsync('jsprops/t', '{}', {
    qos: 1,
    properties: {
      userProperties: { a: '1', b: ['2', '3'] },
      contentType: 'application/json',
      responseTopic: 'jsprops/reply',
      correlationData: Buffer.from('corr'),
    },
  });
  const [m] = await waitMessages(sub, 1);
  const p = m.packet.properties;
  assert.deepEqual({ ...p.userProperties }, { a: '1', b: ['2', '3'] });
  assert.equal(p.contentType, 'application/json');
  assert.equal(p.responseTopic, 'jsprops/reply');
  assert.equal(Buffer.from(p.correlationData).toString(), 'corr');
  await end(sub, pub);
});

test('v5 topic alias client to server', T, async () => {
  const sub = await connect();
  const pub = await connect();
  await sub.subscribeAsync('jsalias/#', { qos: 1 });
  await pub.publishAsync('jsalias/long/topic/name', 'a', { qos: 1, properties: { topicAlias: 3 } });
  await pub.publishAsync('', 'b', { qos: 1, properties: { topicAlias: 3 } });
  const msgs = await waitMessages(sub, 2);
  assert.deepEqual(msgs.map((m) => [m.topic, m.payload]),
    [['jsalias/long/topic/name', 'a'], ['jsalias/long/topic/name', 'b']]);
  await end(sub, pub);
});
