// One MQTT.js CONNECT with the credentials in the environment; prints the outcome
// as JSON ({"ok": true} or {"code": N} from the refusing CONNACK). Used by
// tests/integration/test_auth.py:
//   TERN_HOST=127.0.0.1 TERN_PORT=1883 TERN_V=5 TERN_USER=u TERN_PASS=p node auth.mjs
import mqtt from 'mqtt';

const opts = {
  protocolVersion: Number(process.env.TERN_V || 5), reconnectPeriod: 0,
  connectTimeout: 5000, clientId: `js-auth-${process.pid}`,
};
if (process.env.TERN_USER !== undefined) opts.username = process.env.TERN_USER;
if (process.env.TERN_PASS !== undefined) opts.password = process.env.TERN_PASS;
const c = mqtt.connect(`mqtt://${process.env.TERN_HOST}:${process.env.TERN_PORT}`, opts);
const done = (out) => { console.log(JSON.stringify(out)); c.end(true); process.exit(0); };
c.on('connect', () => done({ ok: true }));
c.on('error', (e) => done({ code: e.code ?? null, message: String(e.message) }));
setTimeout(() => done({ timeout: true }), 8000);
