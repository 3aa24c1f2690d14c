// NATS as a routing endpoint, read with the official NATS client (nats.js): device messages from
// the Azure device SDK over MQTT and AMQP published on a subject per device (the device id escaped
// to stay one token) with the properties as headers; a JetStream endpoint whose stream holds each
// routed message exactly once (lifecycle events included); a subject no stream captures reported
// in the endpoint's health with nothing lost once the stream exists; in cluster mode, an endpoint
// that names no servers publishes on the cluster's own NATS.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const { Registry } = require('azure-iothub');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Amqp } = require('azure-iot-device-amqp');
const nats = require('nats');
const { Hub, connectionString, eventually, serviceRequest } = require('./lib/hub');
const { canConnect } = require('./lib/cluster');

const work = process.env.IOTHUB_WORK;
const external = 'nats://127.0.0.1:4300';
const clustered = Boolean(process.env.IOTHUB_CLUSTER);

let hub;
let registry;
let server;
let nc;
let jsm;
const devices = {};
const text = (data) => Buffer.from(data).toString();

// Every message a subscription sees, in arrival order.
function record(connection, subject) {
  const seen = [];
  const sub = connection.subscribe(subject);
  (async () => { for await (const m of sub) seen.push(m); })();
  return seen;
}

async function storedMessages(stream) {
  const info = await jsm.streams.info(stream);
  const out = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++)
    out.push(await jsm.streams.getMessage(stream, { seq }));
  return out;
}

async function device(id, transport) {
  const d = (await registry.create({ deviceId: id })).responseBody;
  const c = Client.fromConnectionString(
    `HostName=localhost;DeviceId=${id};SharedAccessKey=${d.authentication.symmetricKey.primaryKey}`, transport);
  await c.open();
  devices[id] = c;
}

async function send(id, body, props = {}) {
  const m = new Message(JSON.stringify(body));
  m.contentType = 'application/json';
  m.contentEncoding = 'utf-8';
  for (const [k, v] of Object.entries(props)) m.properties.add(k, v);
  await devices[id].sendEvent(m);
}

const { putRouting, endpointHealth: health } = require('./lib/routing');

before(async () => {
  server = spawn('nats-server', ['-js', '-a', '127.0.0.1', '-p', '4300', '-sd', `${work}/ext-nats`,
    '-l', `${work}/ext-nats.log`], { stdio: 'ignore' });
  await eventually(() => canConnect(4300), 15000, 'the external nats-server');
  nc = await nats.connect({ servers: external });
  jsm = await nc.jetstreamManager();
  await jsm.streams.add({ name: 'ROUTED', subjects: ['routed.>'], duplicate_window: nats.nanos(120000) });
  hub = await Hub.start();
  registry = Registry.fromConnectionString(connectionString());
});

after(async () => {
  for (const c of Object.values(devices)) await c.close().catch(() => {});
  await nc?.close();
  await hub?.stop();
  server?.kill();
});

describe('nats endpoints', () => {
  let live;
  it('accepts nats endpoints in the routing document and writes them back', async () => {
    live = record(nc, 'telemetry.>');
    await nc.flush();
    await putRouting({
      endpoints: {
        nats: [
          { name: 'live', servers: external, subject: 'telemetry.{deviceId}' },
          { name: 'durable', servers: [external], subject: 'routed.{iothub}.{deviceId}', jetStream: true },
        ],
      },
      routes: [
        { name: 'all', source: 'DeviceMessages', condition: 'true', endpointNames: ['live'], isEnabled: true },
        { name: 'alerts', source: 'DeviceMessages', condition: "level = 'alert'", endpointNames: ['durable'], isEnabled: true },
        { name: 'lifecycle', source: 'DeviceLifecycleEvents', condition: 'true', endpointNames: ['durable'], isEnabled: true },
      ],
      fallbackRoute: { name: '$fallback', source: 'DeviceMessages', condition: 'true', endpointNames: ['events'], isEnabled: true },
    });
    const back = (await serviceRequest({ path: '/routing' })).json;
    assert.equal(back.endpoints.nats.length, 2);
    assert.deepEqual(back.endpoints.nats[1].servers, [external]);
    assert.equal(back.endpoints.nats[1].jetStream, true);
    assert.equal(back.endpoints.nats[0].subject, 'telemetry.{deviceId}');
  });

  it('publishes device messages on a subject per device, with their properties as headers', async () => {
    await device('dev.1', Mqtt);
    await device('dev-2', Amqp);
    for (let i = 0; i < 3; i++) await send('dev.1', { n: i }, { level: i === 1 ? 'alert' : 'info' });
    for (let i = 0; i < 2; i++) await send('dev-2', { n: i }, { level: 'alert' });
    await eventually(() => live.length >= 5, 15000, () => `5 messages on telemetry.> (have ${live.length})`);
    const from = (subject) => live.filter((m) => m.subject === subject);
    // '.' in a device id would split the subject: it is escaped.
    assert.deepEqual(from('telemetry.dev%2E1').map((m) => JSON.parse(text(m.data)).n), [0, 1, 2]);
    assert.deepEqual(from('telemetry.dev-2').map((m) => JSON.parse(text(m.data)).n), [0, 1]);
    const m = from('telemetry.dev%2E1')[1];
    assert.equal(m.headers.get('level'), 'alert');
    assert.equal(m.headers.get('iothub-connection-device-id'), 'dev.1');
    assert.equal(m.headers.get('iothub-content-type'), 'application/json');
    assert.ok(m.headers.get('Nats-Msg-Id'));
    assert.equal(from('telemetry.dev-2')[0].headers.get('iothub-connection-device-id'), 'dev-2');
    assert.equal(live.length, 5, 'nothing else was published');
  });

  it('stores alerts and lifecycle events in the JetStream stream exactly once', async () => {
    // The last alert marks the end: one device's messages keep their order.
    await send('dev.1', { n: 'last' }, { level: 'alert' });
    let stored = [];
    await eventually(async () => {
      stored = await storedMessages('ROUTED');
      return stored.some((m) => text(m.data).includes('"last"'));
    }, 15000, 'the last alert in the stream');
    const telemetry = stored.filter((m) => m.header.get('level') === 'alert');
    assert.deepEqual(telemetry.map((m) => `${m.header.get('iothub-connection-device-id')}:${JSON.parse(text(m.data)).n}`).sort(),
      ['dev-2:0', 'dev-2:1', 'dev.1:1', 'dev.1:last']);
    const lifecycle = stored.filter((m) => m.header.get('opType') === 'createDeviceIdentity');
    assert.deepEqual(lifecycle.map((m) => m.header.get('deviceId')).sort(), ['dev-2', 'dev.1']);
    const hubName = lifecycle[0].header.get('hubName');
    assert.equal(lifecycle.find((m) => m.header.get('deviceId') === 'dev.1').subject, `routed.${hubName.replaceAll('.', '%2E')}.dev%2E1`);
    const ids = stored.map((m) => m.header.get('Nats-Msg-Id'));
    assert.equal(new Set(ids).size, ids.length, 'a message id was stored twice');
    assert.equal(stored.length, 6);
    assert.equal((await health('durable')).healthStatus, 'healthy');
  });

  it('reports a subject no stream captures and delivers once the stream exists', async () => {
    const routing = (await serviceRequest({ path: '/routing' })).json;
    routing.endpoints.nats.push({ name: 'late', servers: external, subject: 'late.{deviceId}', jetStream: true });
    routing.routes.push({ name: 'late', source: 'DeviceMessages', condition: "level = 'late'", endpointNames: ['late'], isEnabled: true });
    await putRouting(routing);
    await send('dev-2', { n: 'waiting' }, { level: 'late' });
    let h;
    await eventually(async () => {
      h = await health('late');
      return h && /no JetStream stream captures subject 'late\.dev-2'/.test(h.lastKnownError || '');
    }, 15000, () => `the late endpoint's error (health ${JSON.stringify(h)})`);
    assert.notEqual(h.healthStatus, 'healthy');
    await jsm.streams.add({ name: 'LATE', subjects: ['late.>'], duplicate_window: nats.nanos(120000) });
    let stored = [];
    await eventually(async () => {
      stored = await storedMessages('LATE');
      return stored.length >= 1;
    }, 30000, 'the held message in the new stream');
    assert.equal(JSON.parse(text(stored[0].data)).n, 'waiting');
    await eventually(async () => (await health('late')).healthStatus === 'healthy', 15000, 'late healthy');
  });

  it(clustered ? 'publishes on the cluster\'s own NATS when an endpoint names no servers'
    : 'reports an endpoint without servers as undeliverable outside cluster mode', async () => {
    const routing = (await serviceRequest({ path: '/routing' })).json;
    routing.endpoints.nats.push({ name: 'own', subject: 'own.{deviceId}' });
    routing.routes.push({ name: 'own', source: 'DeviceMessages', condition: "level = 'own'", endpointNames: ['own'], isEnabled: true });
    if (!clustered) {
      await putRouting(routing);
      let h;
      await eventually(async () => {
        h = await health('own');
        return h && /names no servers/.test(h.lastKnownError || '');
      }, 15000, () => `the own endpoint's error (health ${JSON.stringify(h)})`);
      return;
    }
    const own = await nats.connect({ servers: process.env.IOTHUB_CLUSTER });
    try {
      const seen = record(own, 'own.>');
      await own.flush();
      await putRouting(routing);
      await send('dev-2', { n: 'own' }, { level: 'own' });
      await eventually(() => seen.length >= 1, 15000, 'a message on the cluster\'s NATS');
      assert.equal(seen[0].subject, 'own.dev-2');
      assert.equal(JSON.parse(text(seen[0].data)).n, 'own');
    } finally {
      await own.close();
    }
  });
});
