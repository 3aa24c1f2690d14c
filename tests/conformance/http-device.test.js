// The HTTPS device API with the unmodified Azure SDKs: azure-iot-device-http's Http transport
// sends telemetry (one message and a batch) and polls for cloud-to-device messages, which the
// service Client sends over AMQP; raw signed requests cover what the SDK never sends (a second
// poll while a message is locked, a bogus lock token, another device's identity).
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const { Client, Message } = require('azure-iot-device');
const { Http } = require('azure-iot-device-http');
const { SharedAccessSignature } = require('azure-iot-common');
const { Hub, connectionString, eventually, rawRequest, readTelemetry } = require('./lib/hub');

let hub;
let registry;
let service;
const keys = {};
const open = [];

async function device(id) {
  const d = (await registry.create({ deviceId: id })).responseBody;
  keys[id] = d.authentication.symmetricKey.primaryKey;
}
async function httpClient(id) {
  const c = Client.fromConnectionString(`HostName=localhost;DeviceId=${id};SharedAccessKey=${keys[id]}`, Http);
  // Without receivePolicy the Http transport's setOptions never calls back (its quirk); a 1 s
  // poll keeps the tests quick.
  await c.setOptions({ http: { receivePolicy: { interval: 1 } } });
  await c.open();
  open.push(c);
  return c;
}
function deviceToken(id, key = keys[id]) {
  return SharedAccessSignature.create(`localhost/devices/${id}`, '', key,
    Math.floor(Date.now() / 1000) + 600).toString();
}
function deviceRequest(id, { method = 'GET', path, headers = {}, body, token = deviceToken(id) }) {
  const h = { ...headers, Authorization: token };
  if (body !== undefined) h['Content-Length'] = Buffer.byteLength(body);
  const sep = path.includes('?') ? '&' : '?';
  return rawRequest({ method, path: `${path}${sep}api-version=2021-04-12`, headers: h, body });
}
function c2d(body, { messageId, ack = 'full', props = {} } = {}) {
  const m = new Message(body);
  if (messageId) m.messageId = messageId;
  m.ack = ack;
  for (const [k, v] of Object.entries(props)) m.properties.add(k, v);
  return m;
}
async function feedbackCollector() {
  const records = [];
  const { result: receiver } = await service.getFeedbackReceiver();
  receiver.on('message', (msg) => {
    for (const r of JSON.parse(msg.data.toString())) records.push(r);
    receiver.complete(msg, () => {});
  });
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

describe('device telemetry over HTTPS', () => {
  it('sendEvent: the message and its properties reach the telemetry stream', async () => {
    await device('http-d2c');
    const client = await httpClient('http-d2c');
    const m = new Message(JSON.stringify({ temperature: 21.5 }));
    m.messageId = 'http-m-1';
    m.correlationId = 'http-c-1';
    m.contentType = 'application/json';
    m.contentEncoding = 'utf-8';
    m.properties.add('alert', 'true');
    await client.sendEvent(m);
    const [e] = await readTelemetry({ device: 'http-d2c', until: (ev) => ev.length >= 1 });
    assert.ok(e, 'the event arrived');
    assert.deepEqual(JSON.parse(e.body), { temperature: 21.5 });
    assert.equal(e.properties.alert, 'true');
    assert.equal(e.systemProperties['message-id'], 'http-m-1');
    assert.equal(e.systemProperties['correlation-id'], 'http-c-1');
    assert.equal(e.systemProperties['content-type'], 'application/json');
    assert.equal(e.systemProperties['content-encoding'], 'utf-8');
    assert.equal(e.systemProperties['iothub-connection-device-id'], 'http-d2c');
    assert.equal(e.systemProperties['iothub-connection-auth-method'],
      '{"scope":"device","type":"sas","issuer":"iothub"}');
  });

  it('sendEventBatch: three messages, in order, each with its properties', async () => {
    await device('http-batch');
    const client = await httpClient('http-batch');
    const batch = [0, 1, 2].map((i) => {
      const m = new Message(`b${i}`);
      m.properties.add('i', String(i));
      return m;
    });
    await client.sendEventBatch(batch);
    const events = await readTelemetry({ device: 'http-batch', until: (ev) => ev.length >= 3 });
    assert.deepEqual(events.map((e) => e.body), ['b0', 'b1', 'b2']);
    assert.deepEqual(events.map((e) => e.properties.i), ['0', '1', '2']);
  });

  it('another device\'s path or an unknown device is 401 IotHubUnauthorizedAccess', async () => {
    await device('http-other');
    const r = await deviceRequest('http-d2c', { method: 'POST', path: '/devices/http-other/messages/events', body: 'x' });
    assert.equal(r.status, 401);
    assert.equal(r.headers['iothub-errorcode'], 'IotHubUnauthorizedAccess');
    assert.match(r.json.Message, /^ErrorCode:IotHubUnauthorizedAccess;/);
    const ghost = await deviceRequest('ghost', { method: 'POST', path: '/devices/ghost/messages/events', body: 'x', token: deviceToken('ghost', keys['http-d2c']) });
    assert.equal(ghost.status, 401);
  });
});

describe('cloud-to-device over HTTPS', () => {
  it('the SDK polls: complete (Success), abandon (redelivered) and reject (Rejected)', async () => {
    const id = 'http-c2d';
    await device(id);
    const feedback = await feedbackCollector();
    for (let i = 0; i < 3; i++)
      await service.send(id, c2d(`n${i}`, { messageId: `${id}-${i}`, props: { i: String(i) } }));
    assert.equal(await depth(id), 3);
    const client = await httpClient(id);
    const seen = [];
    let abandoned = false;
    client.on('message', (m) => {
      seen.push({ body: m.data.toString(), props: m.properties });
      const settle = (err) => { if (err) seen.push({ error: err }); };
      if (m.messageId === `${id}-1` && !abandoned) {
        abandoned = true;
        client.abandon(m, settle);
      } else if (m.messageId === `${id}-2`) {
        client.reject(m, settle);
      } else {
        client.complete(m, settle);
      }
    });
    await eventually(() => feedbackFor(feedback, `${id}-2`).length === 1 && feedbackFor(feedback, `${id}-1`).length === 1,
      20000, 'feedback for every message');
    assert.ok(!seen.some((s) => s.error), `settles failed: ${seen.filter((s) => s.error).map((s) => s.error)}`);
    const bodies = seen.map((s) => s.body);
    assert.deepEqual(bodies.slice(0, 2), ['n0', 'n1']);
    assert.equal(bodies.filter((b) => b === 'n1').length, 2, `n1 redelivered: ${bodies}`);
    assert.equal(bodies.filter((b) => b === 'n0').length, 1, `n0 once: ${bodies}`);
    // Node keeps the iothub-app- prefix on C2D properties received over HTTP.
    assert.equal(seen[0].props.getValue('iothub-app-i'), '0');
    assert.equal(feedbackFor(feedback, `${id}-0`)[0].statusCode, 'Success');
    assert.equal(feedbackFor(feedback, `${id}-1`)[0].statusCode, 'Success');
    assert.equal(feedbackFor(feedback, `${id}-2`)[0].statusCode, 'Rejected');
    assert.equal(await depth(id), 0);
  });

  it('a second poll while the message is locked gets nothing; a bogus lock token is 412', async () => {
    const id = 'http-raw';
    await device(id);
    const path = `/devices/${id}/messages/devicebound`;
    assert.equal((await deviceRequest(id, { path })).status, 204, 'empty queue');
    await service.send(id, c2d('locked', { messageId: 'raw-1', props: { k: 'v' } }));
    const first = await deviceRequest(id, { path });
    assert.equal(first.status, 200);
    assert.equal(first.body, 'locked');
    assert.equal(first.headers['iothub-messageid'], 'raw-1');
    assert.equal(first.headers['iothub-app-k'], 'v');
    assert.equal(first.headers['iothub-deliverycount'], '1');
    assert.match(first.headers.etag, /^"[0-9a-f-]{36}"$/);
    const lock = first.headers.etag.slice(1, -1);
    assert.equal((await deviceRequest(id, { path })).status, 204, 'the locked message is not handed out twice');

    const bogus = await deviceRequest(id, { method: 'DELETE', path: `${path}/00000000-0000-0000-0000-000000000000` });
    assert.equal(bogus.status, 412);
    assert.equal(bogus.headers['iothub-errorcode'], 'DeviceMessageLockLost');
    assert.match(bogus.json.Message, /^ErrorCode:DeviceMessageLockLost;/);

    // C# spells the segment deviceBound; C quotes the If-Match.
    const done = await deviceRequest(id, { method: 'DELETE', path: `/devices/${id}/messages/deviceBound/${lock}`, headers: { 'If-Match': `"${lock}"` } });
    assert.equal(done.status, 204);
    assert.equal((await deviceRequest(id, { method: 'DELETE', path: `${path}/${lock}` })).status, 412, 'already completed');
    assert.equal(await depth(id), 0);
  });
});
