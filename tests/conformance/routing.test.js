// Message routing with unmodified clients: the routing document over the service REST API,
// device messages from the Azure device SDK routed by property and body to an event hub the hub
// hosts, read by @azure/event-hubs at EntityPath=<endpoint>; the fallback to the built-in
// endpoint; twin-change and connection-state events through routes; bad documents refused with
// the configuration in force kept; a route tested without sending; endpoint health.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const { Registry } = require('azure-iothub');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const eh = require('./lib/events');

const { from } = eh;
const { Hub, bin, dataDir, connectionString, eventually, serviceRequest, sleep } = require('./lib/hub');

let hub;
let registry;
let ehBase;
const clients = [];
const devices = {};

async function device(id) {
  const d = (await registry.create({ deviceId: id })).responseBody;
  const c = Client.fromConnectionString(
    `HostName=localhost;DeviceId=${id};SharedAccessKey=${d.authentication.symmetricKey.primaryKey}`, Mqtt);
  await c.open();
  devices[id] = c;
  return c;
}
async function send(id, body, props = {}) {
  const m = new Message(typeof body === 'string' ? body : JSON.stringify(body));
  if (typeof body !== 'string') {
    m.contentType = 'application/json';
    m.contentEncoding = 'utf-8';
  }
  for (const [k, v] of Object.entries(props)) m.properties.add(k, v);
  await devices[id].sendEvent(m);
}
const collect = (entity) =>
  eh.collect(ehBase.replace(/EntityPath=[^;]*/, `EntityPath=${entity}`), clients);

const routing = {
  endpoints: { eventHubs: [{ name: 'hot', subscriptionId: 'unused', resourceGroup: 'kept-as-given' }, { name: 'audit' }] },
  routes: [
    { name: 'critical', source: 'DeviceMessages', condition: "level = 'critical' OR $body.temperature > 30", endpointNames: ['hot'], isEnabled: true },
    { name: 'twins', source: 'TwinChangeEvents', condition: 'true', endpointNames: ['audit'], isEnabled: true },
    { name: 'presence', source: 'DeviceConnectionStateEvents', endpointNames: ['audit'], isEnabled: true },
  ],
  fallbackRoute: { name: '$fallback', source: 'DeviceMessages', condition: 'true', endpointNames: ['events'], isEnabled: true },
  enrichments: [{ key: 'hubname', value: '$iothubname', endpointNames: ['hot'] }],
};

before(async () => {
  hub = await Hub.start();
  registry = Registry.fromConnectionString(connectionString());
  ehBase = execFileSync(bin, ['connection-string', '--data-dir', dataDir, '--policy', 'service', '--event-hubs'])
    .toString().trim();
});
const bounded = (p) => Promise.race([p.catch(() => {}), sleep(3000)]);
after(async () => {
  for (const c of clients) await bounded(c.close());
  for (const c of Object.values(devices)) await bounded(c.close());
  await hub.stop();
  setTimeout(() => process.exit(), 2000).unref();
});

describe('routing document', () => {
  it('starts with the fallback to events and nothing else', async () => {
    const r = await serviceRequest({ path: '/routing?api-version=2021-07-02' });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json.routes, []);
    assert.equal(r.json.fallbackRoute.isEnabled, true);
    assert.deepEqual(r.json.fallbackRoute.endpointNames, ['events']);
  });

  it('refuses an invalid document as a whole, naming the fault, and keeps what is in force', async () => {
    const bad = structuredClone(routing);
    bad.routes[0].endpointNames = ['nowhere'];
    let r = await serviceRequest({ method: 'PUT', path: '/routing', json: bad });
    assert.equal(r.status, 400);
    assert.match(JSON.stringify(r.json), /nowhere/);
    const unparsable = structuredClone(routing);
    unparsable.routes[0].condition = "level = ";
    r = await serviceRequest({ method: 'PUT', path: '/routing', json: unparsable });
    assert.equal(r.status, 400);
    r = await serviceRequest({ path: '/routing' });
    assert.deepEqual(r.json.routes, []);
  });

  it('needs RegistryWrite and ServiceConnect to replace it', async () => {
    const r = await serviceRequest({ method: 'PUT', path: '/routing', json: routing, policy: 'service' });
    assert.equal(r.status, 401);
  });

  it('is replaced as a whole and read back in ARM shape', async () => {
    const r = await serviceRequest({ method: 'PUT', path: '/routing', json: { properties: { routing } } });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    const back = (await serviceRequest({ path: '/routing' })).json;
    assert.deepEqual(back.routes.map((x) => x.name), ['critical', 'twins', 'presence']);
    assert.equal(back.endpoints.eventHubs[0].resourceGroup, 'kept-as-given');
  });
});

describe('delivery', () => {
  it('routes device messages by property and body to a hosted event hub, the rest to the built-in one', async () => {
    const hot = collect('hot');
    const builtin = collect(ehBase.match(/EntityPath=([^;]*)/)[1]);
    await device('route-d1');
    await send('route-d1', { temperature: 35, n: 1 });
    await send('route-d1', { temperature: 10, n: 2 }, { level: 'critical' });
    await send('route-d1', { temperature: 10, n: 3 });
    await send('route-d1', 'plain text, no JSON', { n: '4' });
    // One last message for each endpoint: a device's messages arrive in order, so when these
    // are in, everything before them has been routed.
    await send('route-d1', { temperature: 99, n: 5 });
    await send('route-d1', { temperature: 0, n: 6 });
    await eventually(() => from(hot.events, 'route-d1').some((e) => e.body.n === 5), 15000, 'the last at hot');
    await eventually(() => from(builtin.events, 'route-d1').some((e) => e.body.n === 6), 15000, 'the last at events');
    const hotBodies = from(hot.events, 'route-d1').map((e) => e.body.n);
    assert.deepEqual(hotBodies, [1, 2, 5], 'in order, and only the matching ones');
    assert.equal(from(hot.events, 'route-d1')[0].properties.hubname, 'localhost');
    const fallback = from(builtin.events, 'route-d1');
    assert.equal(fallback.length, 3, 'matched messages do not reach the fallback');
    assert.equal(fallback[0].body.n, 3);
    assert.equal(fallback[0].properties?.hubname, undefined, 'enrichments are per endpoint');
    assert.deepEqual(hot.errors, []);
  });

  it('routes twin changes and connection state events with Azure envelopes', async () => {
    const audit = collect('audit');
    await device('route-d2');
    const twin = await registry.getTwin('route-d2');
    await twin.responseBody.update({ tags: { site: 'north' } });
    await devices['route-d2'].close();
    delete devices['route-d2'];
    const of = (op) => audit.events.filter((e) => e.properties.deviceId === 'route-d2' && e.properties.opType === op);
    await eventually(() => of('updateTwin').length >= 1 && of('deviceDisconnected').length >= 1, 15000, 'events at audit');
    const change = of('updateTwin')[0];
    assert.equal(change.properties.hubName, 'localhost');
    assert.equal(change.properties['iothub-message-schema'], 'twinChangeNotification');
    assert.equal(change.systemProperties['iothub-message-source'], 'twinChangeEvents');
    assert.equal(change.body.tags.site, 'north');
    assert.equal(typeof change.body.version, 'number');
    const connected = of('deviceConnected');
    const disconnected = of('deviceDisconnected');
    assert.equal(connected.length, 1);
    assert.match(connected[0].body.sequenceNumber, /^[0-9a-f]{64}$/);
    assert.ok(disconnected[0].body.sequenceNumber > connected[0].body.sequenceNumber);
    assert.equal(disconnected[0].systemProperties['iothub-message-source'], 'deviceConnectionStateEvents');
  });

  it('reports each endpoint healthy once it took messages', async () => {
    const r = await serviceRequest({ path: '/routing/endpoints/health' });
    assert.equal(r.status, 200);
    const hot = r.json.value.find((v) => v.endpointId === 'hot');
    assert.equal(hot.healthStatus, 'healthy');
    assert.ok(hot.lastSuccessfulSendAttemptTime);
  });
});

describe('route test', () => {
  const test = (json) => serviceRequest({ method: 'POST', path: '/routing/routes/$testnew?api-version=2021-07-02', json });
  const route = { name: 't', source: 'DeviceMessages', condition: "$body.temp > 20 AND $twin.tags.site = 'north'", endpointNames: ['events'], isEnabled: true };
  const message = (temp) => ({
    body: JSON.stringify({ temp }), appProperties: {},
    systemProperties: { contentType: 'application/json', contentEncoding: 'utf-8' },
  });

  it('answers true, false or undefined without sending anything', async () => {
    let r = await test({ message: message(25), route, twin: { tags: { site: 'north' } } });
    assert.equal(r.status, 200);
    assert.equal(r.json.result, 'true');
    r = await test({ message: message(5), route, twin: { tags: { site: 'north' } } });
    assert.equal(r.json.result, 'false');
    r = await test({ message: message(25), route });
    assert.equal(r.json.result, 'undefined');
  });

  it('refuses a route that does not parse', async () => {
    const r = await test({ message: message(1), route: { ...route, condition: '$body.temp >' } });
    assert.equal(r.status, 400);
  });
});
