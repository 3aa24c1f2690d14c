// Webhook endpoints and Event Grid subscriptions with unmodified clients: the Azure device SDK
// (MQTT) connects and sends, the service SDK creates and deletes devices, and a small HTTP server
// in this process receives what the hub delivers: webhook POSTs with properties as headers, the
// Event Grid validation handshake, then DeviceCreated, DeviceConnected, DeviceTelemetry (routed to
// `eventgrid`), DeviceDisconnected and DeviceDeleted events, and retries after a refusal.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { Registry } = require('azure-iothub');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Hub, connectionString, eventually, serviceRequest } = require('./lib/hub');

let hub;
let registry;
let server;
let port;
const received = [];  // { path, headers, body }
let refuseNext = 0;   // answer this many notifications with 503 first

function listen() {
  return new Promise((resolve) => {
    server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => { body += c; });
      req.on('end', () => {
        received.push({ path: req.url, headers: req.headers, body });
        if (req.headers['aeg-event-type'] === 'SubscriptionValidation') {
          const code = JSON.parse(body)[0].data.validationCode;
          res.writeHead(200, { 'content-type': 'application/json' });
          return res.end(JSON.stringify(req.url.includes('wrong') ? { validationResponse: 'nope' } : { validationResponse: code }));
        }
        if (req.headers['aeg-event-type'] === 'Notification' && refuseNext > 0) {
          refuseNext -= 1;
          res.writeHead(503);
          return res.end('busy');
        }
        res.writeHead(200);
        res.end();
      });
    });
    server.listen(0, '127.0.0.1', () => { port = server.address().port; resolve(); });
  });
}
const at = (path) => received.filter((r) => r.path === path);
const gridEvents = (path) => at(path)
  .filter((r) => r.headers['aeg-event-type'] === 'Notification')
  .flatMap((r) => JSON.parse(r.body));

before(async () => {
  await listen();
  hub = await Hub.start();
  registry = Registry.fromConnectionString(connectionString());
});
after(async () => {
  await hub.stop();
  server.close();
  setTimeout(() => process.exit(), 2000).unref();
});

describe('event grid and webhooks', () => {
  it('subscribes, validates, then delivers device lifecycle, connection and telemetry events', async () => {
    let r = await serviceRequest({
      method: 'PUT', path: '/routing', json: {
        endpoints: { webhooks: [{ name: 'hook', endpointUri: `http://127.0.0.1:${port}/hook`, headers: { 'x-api-key': 'k1' } }] },
        routes: [
          { name: 'to-hook', source: 'DeviceMessages', condition: "kind = 'alarm'", endpointNames: ['hook'], isEnabled: true },
          { name: 'to-grid', source: 'DeviceMessages', condition: 'true', endpointNames: ['eventgrid'], isEnabled: true },
        ],
      },
    });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    r = await serviceRequest({
      method: 'PUT', path: '/eventSubscriptions/all-devices', json: {
        properties: {
          destination: { endpointType: 'WebHook', properties: { endpointUrl: `http://127.0.0.1:${port}/grid` } },
          filter: { includedEventTypes: ['Microsoft.Devices.DeviceCreated', 'Microsoft.Devices.DeviceDeleted',
            'Microsoft.Devices.DeviceConnected', 'Microsoft.Devices.DeviceDisconnected', 'Microsoft.Devices.DeviceTelemetry'] },
        },
      },
    });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    await eventually(() => at('/grid').length >= 1, 10000, 'the validation handshake');
    assert.equal(at('/grid')[0].headers['aeg-event-type'], 'SubscriptionValidation');
    await eventually(async () => (await serviceRequest({ path: '/eventSubscriptions/all-devices' })).json
      .properties.provisioningState === 'Succeeded', 10000, 'validated');

    const created = (await registry.create({ deviceId: 'grid-d1' })).responseBody;
    const client = Client.fromConnectionString(
      `HostName=localhost;DeviceId=grid-d1;SharedAccessKey=${created.authentication.symmetricKey.primaryKey}`, Mqtt);
    await client.open();
    refuseNext = 1;  // the first notification is refused and must come again
    const m = new Message(JSON.stringify({ temperature: 21 }));
    m.contentType = 'application/json';
    m.contentEncoding = 'utf-8';
    m.properties.add('kind', 'alarm');
    await client.sendEvent(m);
    await client.close();
    await registry.delete('grid-d1');

    const types = () => gridEvents('/grid').filter((e) => e.subject === 'devices/grid-d1').map((e) => e.eventType);
    await eventually(() => ['Created', 'Connected', 'Telemetry', 'Disconnected', 'Deleted']
      .every((t) => types().includes(`Microsoft.Devices.Device${t}`)), 20000, 'all five event types');
    const byType = (t) => gridEvents('/grid').find((e) => e.eventType === `Microsoft.Devices.Device${t}` && e.subject === 'devices/grid-d1');
    const telemetry = byType('Telemetry');
    assert.deepEqual(telemetry.data.body, { temperature: 21 });
    assert.equal(telemetry.data.properties.kind, 'alarm');
    assert.equal(telemetry.data.systemProperties['iothub-connection-device-id'], 'grid-d1');
    assert.equal(byType('Created').data.twin.deviceId, 'grid-d1');
    assert.equal(byType('Created').data.hubName, 'localhost');
    assert.match(byType('Connected').data.deviceConnectionStateEventInfo.sequenceNumber, /^[0-9a-f]{64}$/);
    assert.equal(byType('Connected').metadataVersion, '1');
    const retried = at('/grid').filter((x) => x.headers['aeg-event-type'] === 'Notification' && Number(x.headers['aeg-delivery-count']) > 0);
    assert.ok(retried.length >= 1, 'a refused notification is sent again');

    await eventually(() => at('/hook').length >= 1, 10000, 'the webhook delivery');
    const hook = at('/hook')[0];
    assert.deepEqual(JSON.parse(hook.body), { temperature: 21 });
    assert.equal(hook.headers.kind, 'alarm');
    assert.equal(hook.headers['iothub-connection-device-id'], 'grid-d1');
    assert.equal(hook.headers['x-api-key'], 'k1');
    assert.equal(hook.headers['content-type'], 'application/json');
  });

  it('sends nothing but handshakes to a receiver that does not echo the code', async () => {
    const r = await serviceRequest({
      method: 'PUT', path: '/eventSubscriptions/wrong', json: {
        destination: { endpointType: 'WebHook', properties: { endpointUrl: `http://127.0.0.1:${port}/wrong` } },
      },
    });
    assert.equal(r.status, 200);
    await registry.create({ deviceId: 'grid-d2' });
    await eventually(() => at('/wrong').length >= 1, 10000, 'a handshake');
    // The created event is handled (dropped: the subscription is not active), not sent.
    await eventually(async () => (await serviceRequest({ path: '/eventSubscriptions/wrong' })).json
      .properties.droppedEvents >= 1, 10000, 'the event dropped');
    assert.ok(at('/wrong').every((x) => x.headers['aeg-event-type'] === 'SubscriptionValidation'));
    const shown = (await serviceRequest({ path: '/eventSubscriptions/wrong' })).json;
    assert.equal(shown.properties.provisioningState, 'AwaitingManualAction');
  });

  it('lists, refuses bad subscriptions and deletes', async () => {
    let r = await serviceRequest({ path: '/eventSubscriptions' });
    assert.deepEqual(r.json.value.map((s) => s.name).sort(), ['all-devices', 'wrong']);
    r = await serviceRequest({ method: 'PUT', path: '/eventSubscriptions/bad', json: { destination: { endpointType: 'EventHub' } } });
    assert.equal(r.status, 400);
    r = await serviceRequest({ method: 'DELETE', path: '/eventSubscriptions/wrong' });
    assert.equal(r.status, 204);
    r = await serviceRequest({ path: '/eventSubscriptions/wrong' });
    assert.equal(r.status, 404);
  });

  it('reports a webhook that fails as unhealthy', async () => {
    const r = await serviceRequest({
      method: 'PUT', path: '/routing', json: {
        endpoints: { webhooks: [{ name: 'dead', endpointUri: 'http://127.0.0.1:1/nothing' }] },
        routes: [{ name: 'd', source: 'DeviceMessages', endpointNames: ['dead'], isEnabled: true }],
      },
    });
    assert.equal(r.status, 200);
    const created = (await registry.create({ deviceId: 'grid-d3' })).responseBody;
    const client = Client.fromConnectionString(
      `HostName=localhost;DeviceId=grid-d3;SharedAccessKey=${created.authentication.symmetricKey.primaryKey}`, Mqtt);
    await client.open();
    await client.sendEvent(new Message('x'));
    await client.close();
    await eventually(async () => {
      const h = (await serviceRequest({ path: '/routing/endpoints/health' })).json.value.find((v) => v.endpointId === 'dead');
      return h && h.healthStatus === 'unhealthy' && h.lastKnownError.length > 0;
    }, 15000, 'dead endpoint unhealthy');
  });
});
