// Two hub nodes (127.0.0.1 and 127.0.0.2, copies of one data directory) on three clustered
// JetStream nats-servers, for the cluster suites, with the helpers they share: devices created and
// connected through either node, raw MQTT connections, Event Hubs readers. setUp() registers the
// suite's before/after hooks and hands the nodes over once they run.
'use strict';
const { before, after } = require('node:test');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const { Registry } = require('azure-iothub');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const mqtt = require('mqtt');
const { SharedAccessSignature } = require('azure-iot-common');
const eh = require('./events');
const { bin, dataDir, sleep } = require('./hub');
const { startNats, Node } = require('./cluster');

const { from } = eh;
const closers = [];
const consumers = [];
const keys = {};

const serviceString = (node, policy = 'iothubowner') =>
  execFileSync(bin, ['connection-string', '--data-dir', dataDir, '--policy', policy])
    .toString().trim().replace('HostName=localhost', `HostName=${node.host}`);
const eventHubsString = (node) =>
  execFileSync(bin, ['connection-string', '--data-dir', dataDir, '--policy', 'service', '--event-hubs'])
    .toString().trim().replace('localhost', node.host);

async function createDevice(node, id) {
  const registry = Registry.fromConnectionString(serviceString(node));
  const d = (await registry.create({ deviceId: id })).responseBody;
  keys[id] = d.authentication.symmetricKey.primaryKey;
  return d;
}
async function deviceOn(node, id, transport = Mqtt) {
  const c = Client.fromConnectionString(`HostName=${node.host};DeviceId=${id};SharedAccessKey=${keys[id]}`, transport);
  await c.open();
  closers.push(() => c.close());
  return c;
}
// A raw MQTT connection that never reconnects, so the test sees what the hub did to it.
// `options` adds to or replaces the MQTT client's (mqtt.js reads connectTimeout when it starts
// connecting, inside connect(): it must be given here, not set afterwards).
function rawDevice(node, id, options = {}) {
  const expiry = Math.floor(Date.now() / 1000) + 600;
  const c = mqtt.connect(`mqtts://${node.host}:8883`, {
    ca: fs.readFileSync(`${dataDir}/tls/ca.pem`), clientId: id, clean: false, reconnectPeriod: 0,
    connectTimeout: 5000, username: `${node.host}/${id}/?api-version=2021-04-12`,
    password: SharedAccessSignature.create(`${node.host}/devices/${id}`, undefined, keys[id], expiry).toString(),
    ...options,
  });
  const closed = new Promise((resolve) => c.once('close', resolve));
  const connected = new Promise((resolve, reject) => {
    c.once('connect', resolve);
    c.once('error', reject);
  });
  // The CONNACK code of a refusal; a connection that closes without one (a connect timeout)
  // says so instead of leaving the test waiting.
  const refused = new Promise((resolve) => {
    c.once('error', (e) => resolve(e.code));
    c.once('close', () => resolve('closed without a CONNACK'));
  });
  connected.catch(() => {});  // a test that expects a refusal looks at `refused`
  closers.push(async () => c.end(true));
  return { client: c, connected, closed, refused };
}
// A device's events (their body's `i`) through a node's Event Hubs endpoint: the built-in one,
// or a hosted event hub.
function collect(node, entity) {
  let cs = eventHubsString(node);
  if (entity) cs = cs.replace(/EntityPath=[^;]*/, `EntityPath=${entity}`);
  return eh.collect(cs, consumers);
}
const values = (c, device) => from(c.events, device).map((e) => e.body.i);
const call = (f) => new Promise((resolve, reject) => f((err, res) => (err ? reject(err) : resolve(res))));

// Starts the NATS servers and the nodes before the suite, stops everything after it;
// `started({ nats, a, b })` runs once they are up.
function setUp(started) {
  let nats;
  let a;
  let b;
  before(async () => {
    nats = await startNats();
    const urls = nats.map((s) => s.url);
    a = await new Node(1, urls).start();
    b = await new Node(2, urls).start();
    started({ nats, a, b });
  });
  after(async () => {
    // A client of the killed node may never settle its close: none may hold the run.
    for (const c of consumers) closers.push(() => c.close());
    for (const close of closers.reverse()) await Promise.race([close().catch(() => {}), sleep(3000)]);
    for (const n of [a, b]) if (n) await n.stop();
    for (const s of nats || []) await s.stop();
    // SDK clients of the killed node keep retrying timers alive: the results are in, so the file
    // ends (the test runner has reported every case by now).
    setTimeout(() => process.exit(), 2000).unref();
  });
}

module.exports = {
  setUp, closers, keys, serviceString, eventHubsString, createDevice, deviceOn, rawDevice, collect,
  values, call,
};
