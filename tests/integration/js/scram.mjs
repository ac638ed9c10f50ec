// MQTT.js with MQTT 5 enhanced authentication, SCRAM-SHA-256 (RFC 5802 / 7677),
// the client side written here over node:crypto. One CONNECT with the user and
// password in the environment; prints the outcome as JSON: {"ok": true,
// "verified": true} (the broker's server-final signature checked) or {"code": N}
// from the refusing CONNACK. Used by tests/integration/test_scram.py:
//   TERN_HOST=127.0.0.1 TERN_PORT=1883 TERN_USER=u TERN_PASS=p node scram.mjs
import crypto from 'node:crypto';
import mqtt from 'mqtt';

const METHOD = 'SCRAM-SHA-256';
const user = process.env.TERN_USER;
const pass = process.env.TERN_PASS;
const cnonce = crypto.randomBytes(18).toString('base64');
const first = `n=${user.replace(/=/g, '=3D').replace(/,/g, '=2C')},r=${cnonce}`;
const hmac = (k, d) => crypto.createHmac('sha256', k).update(d).digest();
let serverSignature = null;

const c = mqtt.connect(`mqtt://${process.env.TERN_HOST}:${process.env.TERN_PORT}`, {
  protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000,
  clientId: `js-scram-${process.pid}`,
  properties: { authenticationMethod: METHOD, authenticationData: Buffer.from(`n,,${first}`) },
});
c.handleAuth = (packet, cb) => {
  const sf = packet.properties.authenticationData.toString();
  const a = Object.fromEntries(sf.split(',').map((kv) => [kv[0], kv.slice(2)]));
  if (!a.r.startsWith(cnonce)) return cb(new Error('server nonce does not extend ours'));
  const salted = crypto.pbkdf2Sync(pass, Buffer.from(a.s, 'base64'), Number(a.i), 32, 'sha256');
  const clientKey = hmac(salted, 'Client Key');
  const stored = crypto.createHash('sha256').update(clientKey).digest();
  const withoutProof = `c=biws,r=${a.r}`;
  const authMessage = `${first},${sf},${withoutProof}`;
  const sig = hmac(stored, authMessage);
  const proof = Buffer.from(clientKey.map((b, i) => b ^ sig[i]));
  serverSignature = hmac(hmac(salted, 'Server Key'), authMessage).toString('base64');
  cb(null, {
    cmd: 'auth', reasonCode: 0x18,
    properties: {
      authenticationMethod: METHOD,
      authenticationData: Buffer.from(`${withoutProof},p=${proof.toString('base64')}`),
    },
  });
};
const done = (out) => { console.log(JSON.stringify(out)); c.end(true); process.exit(0); };
c.on('connect', (connack) => {
  const data = connack.properties?.authenticationData?.toString();
  done({ ok: true, verified: data === `v=${serverSignature}` });
});
c.on('error', (e) => done({ code: e.code ?? null, message: String(e.message) }));
setTimeout(() => done({ timeout: true }), 8000);
