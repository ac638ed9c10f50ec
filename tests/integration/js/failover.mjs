// Client failover across tern nodes with MQTT.js (docs/operations.md, "Client failover").
//
//   node failover.mjs 10.0.0.11:1883,10.0.0.12:1883,10.0.0.13:1883 [COUNT]
//
// One persistent MQTT 5 session (client id "failover-example-js", subscribed to
// "example/#" with QoS 1); MQTT.js tries the next server of the list at every
// reconnect. Prints each connection and message; exits after COUNT messages (default:
// never). tests/integration/test_deploy_files.py runs it.
import mqtt from 'mqtt';

const servers = process.argv[2].split(',').map((s) => {
  const i = s.lastIndexOf(':');
  return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
});
const count = process.argv[3] ? Number(process.argv[3]) : Infinity;
let got = 0;

const client = mqtt.connect({
  servers,
  protocol: 'mqtt',
  protocolVersion: 5,
  clientId: 'failover-example-js',
  clean: false, // resume the session: subscriptions and queued messages
  properties: { sessionExpiryInterval: 3600 },
  keepalive: 10,
  reconnectPeriod: 500,
  reconnectOnConnackError: true, // a node without quorum refuses CONNECT: try the next
});

client.on('connect', (connack) => {
  const s = client.stream;
  const present = connack.sessionPresent ? 1 : 0;
  console.log(`connected to ${s.remoteAddress}:${s.remotePort} session_present=${present}`);
  if (!connack.sessionPresent) client.subscribe('example/#', { qos: 1 });
});
client.on('close', () => console.log('disconnected'));
client.on('error', (e) => console.log(`error ${e.message}`));
client.on('message', (topic, payload) => {
  console.log(`received ${topic} ${payload}`);
  if (++got >= count) client.end();
});
