// Cloud-to-device messaging and the AMQP device endpoint with the unmodified Azure SDKs: the
// service Client (Amqp and AmqpWs) sends and reads feedback; devices receive over MQTT and AMQP,
// complete, abandon and reject; telemetry, twins and methods over device AMQP.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const { Client, ModuleClient, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Amqp, AmqpWs } = require('azure-iot-device-amqp');
const { AmqpWs: ServiceAmqpWs } = require('azure-iothub');
const { Hub, connectionString, eventually, serviceRequest, readTelemetry, sleep } = require('./lib/hub');

let hub;
let registry;
let service;
const keys = {};
const open = [];

async function device(id) {
  const d = (await registry.create({ deviceId: id })).responseBody;
  keys[id] = d.authentication.symmetricKey.primaryKey;
}
async function deviceClient(id, transport) {
  const c = Client.fromConnectionString(`HostName=localhost;DeviceId=${id};SharedAccessKey=${keys[id]}`, transport);
  await c.open();
  open.push(c);
  return c;
}
function c2d(body, { messageId, ack, props = {}, expiryTimeUtc } = {}) {
  const m = new Message(body);
  if (messageId) m.messageId = messageId;
  if (ack) m.ack = ack;
  if (expiryTimeUtc) m.expiryTimeUtc = expiryTimeUtc;
  for (const [k, v] of Object.entries(props)) m.properties.add(k, v);
  return m;
}
// Every feedback record any receiver got: receivers on several connections compete for the
// hub's one feedback stream, as on Azure.
const allFeedback = [];
// Collects feedback records from the service's feedback receiver. The SDK hands out one receiver
// per client however often it is asked, so each client gets one listener, which feeds every
// collector made for that client (and allFeedback once per record).
const sinks = new Map();  // client -> the record arrays of its collectors
async function feedbackCollector(client) {
  const records = [];
  if (!sinks.has(client)) {
    const mine = [];
    sinks.set(client, mine);
    const { result: receiver } = await client.getFeedbackReceiver();
    receiver.on('message', (msg) => {
      assert.equal(msg.contentType, 'application/vnd.microsoft.iothub.feedback.json');
      for (const r of JSON.parse(msg.data.toString())) {
        allFeedback.push(r);
        for (const sink of mine) sink.push(r);
      }
      receiver.complete(msg, () => {});
    });
  }
  sinks.get(client).push(records);
  return records;
}
const feedbackFor = (records, messageId) => records.filter((r) => r.originalMessageId === messageId);
const depth = async (id) => (await registry.get(id)).responseBody.cloudToDeviceMessageCount;

before(async () => {
  hub = await Hub.start();
  registry = Registry.fromConnectionString(connectionString());
  service = ServiceClient.fromConnectionString(connectionString('service'));
  await service.open();
});
after(async () => {
  for (const c of open) await c.close().catch(() => {});
  await service.close().catch(() => {});
  await hub.stop();
});

describe('cloud-to-device messages', () => {
  it('reach an MQTT device in order with their properties, and complete with Success feedback', async () => {
    await device('c2d-mqtt');
    const feedback = await feedbackCollector(service);
    const client = await deviceClient('c2d-mqtt', Mqtt);
    const got = [];
    client.on('message', (m) => { got.push(m); client.complete(m, () => {}); });
    for (const body of ['one', 'two', 'three'])
      await service.send('c2d-mqtt', c2d(body, { messageId: `mid-${body}`, ack: 'full', props: { colour: 'red & blue' } }));
    await eventually(() => got.length === 3, 5000, 'three C2D messages');
    assert.deepEqual(got.map((m) => m.data.toString()), ['one', 'two', 'three']);
    assert.equal(got[0].messageId, 'mid-one');
    assert.equal(got[0].properties.getValue('colour'), 'red & blue');
    await eventually(() => feedback.length === 3, 5000, 'three feedback records');
    assert.deepEqual(feedback.map((f) => [f.originalMessageId, f.statusCode]),
      [['mid-one', 'Success'], ['mid-two', 'Success'], ['mid-three', 'Success']]);
    assert.ok(feedback.every((f) => f.deviceId === 'c2d-mqtt' && f.deviceGenerationId && f.enqueuedTimeUtc));
    assert.equal(await depth('c2d-mqtt'), 0);
  });

  for (const transport of [Amqp, AmqpWs]) {
    it(`reach a device over ${transport.name}: complete, abandon (redelivered), reject, in order`, async () => {
      const id = `c2d-${transport.name.toLowerCase()}`;
      await device(id);
      const feedback = await feedbackCollector(service);
      for (let i = 0; i < 3; i++)
        await service.send(id, c2d(`n${i}`, { messageId: `${id}-${i}`, ack: 'full', props: { i: String(i) } }));
      assert.equal(await depth(id), 3);
      const client = await deviceClient(id, transport);
      const seen = [];
      let abandoned = false;
      client.on('message', (m) => {
        seen.push(m.data.toString());
        // Settled one at a time: rhea merges dispositions settled in the same tick into one range
        // with the first one's outcome, so an abandon right after a complete would go out as
        // accepted.
        setTimeout(() => {
          if (m.messageId === `${id}-1` && !abandoned) {
            abandoned = true;
            client.abandon(m, () => {});
          } else if (m.messageId === `${id}-2`) {
            client.reject(m, () => {});
          } else {
            client.complete(m, () => {});
          }
        }, 100 * seen.length);
      });
      await eventually(() => feedbackFor(feedback, `${id}-2`).length === 1 && feedbackFor(feedback, `${id}-1`).length === 1,
        10000, 'feedback for every message');
      assert.deepEqual(seen.slice(0, 3), ['n0', 'n1', 'n2']);
      assert.ok(seen.filter((s) => s === 'n1').length === 2, `n1 redelivered: ${seen}`);
      assert.equal(feedbackFor(feedback, `${id}-0`)[0].statusCode, 'Success');
      assert.equal(feedbackFor(feedback, `${id}-1`)[0].statusCode, 'Success');
      assert.equal(feedbackFor(feedback, `${id}-2`)[0].statusCode, 'Rejected');
      assert.equal(await depth(id), 0);
    });
  }

  it('an unknown device is DeviceNotFound; a full queue is DeviceMaximumQueueDepthExceeded', async () => {
    await assert.rejects(service.send('no-such-device', c2d('x')), (e) => e.constructor.name === 'DeviceNotFoundError');
    await device('c2d-full');
    for (let i = 0; i < 50; i++) await service.send('c2d-full', c2d(`m${i}`));
    await assert.rejects(service.send('c2d-full', c2d('one too many')),
      (e) => e.constructor.name === 'DeviceMaximumQueueDepthExceededError');
    assert.equal(await depth('c2d-full'), 50);
  });

  it('purge empties the queue with Purged feedback; expired messages give Expired feedback', async () => {
    await device('c2d-purge');
    const feedback = await feedbackCollector(service);
    await service.send('c2d-purge', c2d('a', { messageId: 'purge-a', ack: 'negative' }));
    await service.send('c2d-purge', c2d('b', { messageId: 'purge-b', ack: 'positive' }));
    const r = await serviceRequest({ method: 'DELETE', path: '/devices/c2d-purge/commands' });
    assert.equal(r.status, 200);
    assert.equal(r.json.totalMessagesPurged, 2);
    await eventually(() => feedbackFor(feedback, 'purge-a').length === 1, 5000, 'purge feedback');
    assert.equal(feedbackFor(feedback, 'purge-a')[0].statusCode, 'Purged');
    // One purge commits every record it causes, and a feedback batch takes up to 64 records: had
    // purge-b asked for one, it would have come with purge-a's.
    assert.equal(feedbackFor(feedback, 'purge-b').length, 0, 'positive ack asks for no Purged feedback');

    await service.send('c2d-purge', c2d('late', { messageId: 'expired-1', ack: 'full', expiryTimeUtc: Date.now() + 300 }));
    await sleep(500);
    const client = await deviceClient('c2d-purge', Amqp);
    const got = [];
    client.on('message', (m) => { got.push(m); client.complete(m, () => {}); });
    await eventually(() => feedbackFor(feedback, 'expired-1').length === 1, 5000, 'expiry feedback');
    assert.equal(feedbackFor(feedback, 'expired-1')[0].statusCode, 'Expired');
    assert.equal(got.length, 0);
  });

  it('the service works over AmqpWs too', async () => {
    await device('c2d-svc-ws');
    const ws = ServiceClient.fromConnectionString(connectionString('service'), ServiceAmqpWs);
    await ws.open();
    await feedbackCollector(ws);
    const client = await deviceClient('c2d-svc-ws', Mqtt);
    const got = [];
    client.on('message', (m) => { got.push(m); client.complete(m, () => {}); });
    await ws.send('c2d-svc-ws', c2d('over ws', { messageId: 'ws-1', ack: 'positive' }));
    await eventually(() => got.length === 1 && feedbackFor(allFeedback, 'ws-1').length === 1, 5000, 'delivery and feedback');
    await ws.close();
  });
});

describe('devices over AMQP', () => {
  for (const transport of [Amqp, AmqpWs]) {
    it(`${transport.name}: telemetry, twin and methods`, async () => {
      const id = `amqp-dev-${transport.name.toLowerCase()}`;
      await device(id);
      const client = await deviceClient(id, transport);
      const m = new Message(JSON.stringify({ t: 1 }));
      m.messageId = `${id}-t1`;
      m.properties.add('alert', 'true');
      await client.sendEvent(m);
      const events = await readTelemetry({ device: id, until: (e) => e.length >= 1 });
      assert.equal(events.length, 1);
      assert.equal(events[0].systemProperties['message-id'], `${id}-t1`);
      assert.equal(events[0].properties.alert, 'true');

      const twin = await client.getTwin();
      assert.equal(twin.properties.desired.$version, 1);
      await new Promise((resolve, reject) => twin.properties.reported.update({ fw: '2.0' }, (e) => (e ? reject(e) : resolve())));
      assert.equal((await registry.getTwin(id)).responseBody.properties.reported.fw, '2.0');
      let color;
      twin.on('properties.desired', (p) => { if (p.color) color = p.color; });
      // The SDK subscribes asynchronously: patch until the device hears one.
      await eventually(async () => {
        await registry.updateTwin(id, { properties: { desired: { color: 'red' } } }, '*');
        return color === 'red';
      }, 10000, 'the desired notification');

      client.onDeviceMethod('reboot', (req, res) => res.send(200, { echo: req.payload }, () => {}));
      const r = await service.invokeDeviceMethod(id, { methodName: 'reboot', payload: { a: 1 }, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 10 });
      assert.equal(r.result.status, 200);
      assert.deepEqual(r.result.payload, { echo: { a: 1 } });
    });
  }

  it('a module over Amqp: telemetry, its own twin and methods', async () => {
    await device('amqp-mod-dev');
    const mod = (await registry.addModule({ deviceId: 'amqp-mod-dev', moduleId: 'mod1' })).responseBody;
    const client = ModuleClient.fromConnectionString(
      `HostName=localhost;DeviceId=amqp-mod-dev;ModuleId=mod1;SharedAccessKey=${mod.authentication.symmetricKey.primaryKey}`, Amqp);
    await client.open();
    open.push(client);
    const m = new Message('from a module');
    m.messageId = 'mod-t1';
    await client.sendEvent(m);
    const events = await readTelemetry({ device: 'amqp-mod-dev', until: (e) => e.length >= 1 });
    assert.equal(events[0].systemProperties['iothub-connection-module-id'], 'mod1');

    const twin = await client.getTwin();
    await new Promise((resolve, reject) => twin.properties.reported.update({ mod: true }, (e) => (e ? reject(e) : resolve())));
    const stored = (await serviceRequest({ path: '/twins/amqp-mod-dev/modules/mod1' })).json;
    assert.equal(stored.properties.reported.mod, true);

    client.onMethod('ping', (req, res) => res.send(201, { pong: req.payload }, () => {}));
    const r = await serviceRequest({ method: 'POST', path: '/twins/amqp-mod-dev/modules/mod1/methods',
      json: { methodName: 'ping', payload: 7, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 10 } });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, { status: 201, payload: { pong: 7 } });
  });
});
