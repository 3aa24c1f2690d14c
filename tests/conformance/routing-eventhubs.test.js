// Event hubs with unmodified clients, both ways: the hosted event hubs routing endpoints keep take
// sends from @azure/event-hubs' EventHubProducerClient as an Event Hubs namespace does, and an
// eventHubs endpoint with a connection string delivers over AMQP to an event hub elsewhere, here
// this hub's own hosted `mirror` (trusted through the hub's development CA): device messages with
// their properties and device annotations, in order; a wrong key reported in the endpoint's
// health, and nothing lost once the key is fixed.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const { EventHubProducerClient, EventHubConsumerClient, earliestEventPosition } = require('@azure/event-hubs');
const { Registry } = require('azure-iothub');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const eh = require('./lib/events');

const { from } = eh;
const routingApi = require('./lib/routing');
const { Hub, bin, dataDir, connectionString, eventually, sleep } = require('./lib/hub');

let hub;
let registry;
let ehBase;
let serviceKey;
const clients = [];
const devices = {};

const entity = (name) => ehBase.replace(/EntityPath=[^;]*/, `EntityPath=${name}`);

const collect = (name) => eh.collect(entity(name), clients);

async function device(id) {
  const d = (await registry.create({ deviceId: id })).responseBody;
  const c = Client.fromConnectionString(
    `HostName=localhost;DeviceId=${id};SharedAccessKey=${d.authentication.symmetricKey.primaryKey}`, Mqtt);
  await c.open();
  devices[id] = c;
  return c;
}
async function send(id, n) {
  const m = new Message(JSON.stringify({ n }));
  m.contentType = 'application/json';
  m.contentEncoding = 'utf-8';
  m.messageId = `${id}-${n}`;
  m.properties.add('seq', String(n));
  m.properties.add('source', 'conformance');
  await devices[id].sendEvent(m);
}

// The routing document: two hosted event hubs, and `remote`, which reaches `mirror` the way an
// external event hub is reached, with `key`.
function routing(key) {
  return {
    endpoints: {
      eventHubs: [
        { name: 'inbox' },
        { name: 'mirror' },
        { name: 'remote', connectionString: `Endpoint=sb://localhost/;SharedAccessKeyName=service;SharedAccessKey=${key};EntityPath=mirror` },
      ],
    },
    routes: [{ name: 'out', source: 'DeviceMessages', condition: 'true', endpointNames: ['remote'], isEnabled: true }],
    fallbackRoute: { name: '$fallback', source: 'DeviceMessages', condition: 'true', endpointNames: ['events'], isEnabled: true },
  };
}
const putRouting = (key) => routingApi.putRouting(routing(key));
const health = routingApi.endpointHealth;

before(async () => {
  hub = await Hub.start();
  registry = Registry.fromConnectionString(connectionString());
  ehBase = execFileSync(bin, ['connection-string', '--data-dir', dataDir, '--policy', 'service', '--event-hubs'])
    .toString().trim();
  serviceKey = /SharedAccessKey=([^;]+)/.exec(ehBase)[1];
  await putRouting(serviceKey);
});
const bounded = (p) => Promise.race([p.catch(() => {}), sleep(3000)]);
after(async () => {
  for (const c of clients) await bounded(c.close());
  for (const c of Object.values(devices)) await bounded(c.close());
  await hub.stop();
  setTimeout(() => process.exit(), 2000).unref();
});

describe('hosted event hubs take sends', () => {
  it('from EventHubProducerClient: batches by partition key and to a partition, read back with their properties', async () => {
    const producer = new EventHubProducerClient(entity('inbox'));
    clients.push(producer);
    assert.deepEqual(await producer.getPartitionIds(), ['0', '1', '2', '3']);
    const batch = await producer.createBatch({ partitionKey: 'sensor-7' });
    for (let n = 1; n <= 3; n++)
      assert.ok(batch.tryAdd({
        body: { n },
        properties: { color: 'red', n },
        contentType: 'application/json',
        messageId: `msg-${n}`,
        correlationId: 'corr-1',
      }));
    await producer.sendBatch(batch);
    await producer.sendBatch([{ body: 'to partition 2', properties: { direct: true } }], { partitionId: '2' });

    const inbox = collect('inbox');
    await eventually(() => inbox.events.length >= 4, 20000, () => `4 events at inbox, got ${inbox.events.length}`);
    const keyed = inbox.events.filter((e) => e.partitionKey === 'sensor-7');
    assert.deepEqual(keyed.map((e) => e.body.n), [1, 2, 3], 'in order, in one partition');
    assert.equal(new Set(keyed.map((e) => e.sequenceNumber)).size, 3);
    assert.deepEqual(keyed.map((e) => e.messageId), ['msg-1', 'msg-2', 'msg-3']);
    assert.equal(keyed[0].correlationId, 'corr-1');
    assert.equal(keyed[0].contentType, 'application/json');
    assert.deepEqual(keyed[0].properties, { color: 'red', n: '1' });
    const direct = inbox.events.find((e) => e.body === 'to partition 2');
    assert.ok(direct, 'the event sent to a partition arrived');
    assert.equal(direct.properties.direct, 'true');
    assert.deepEqual(inbox.errors, []);

    // Which partition each went to shows in a partition reader.
    const byPartition = new EventHubConsumerClient('$Default', entity('inbox'));
    clients.push(byPartition);
    const onTwo = [];
    byPartition.subscribe('2', { processEvents: async (b) => { onTwo.push(...b); }, processError: async () => {} },
      { startPosition: earliestEventPosition, maxWaitTimeInSeconds: 1 });
    await eventually(() => onTwo.some((e) => e.body === 'to partition 2'), 15000, 'the event on partition 2');
  });

  it('refuses the built-in endpoint, unknown event hubs and senders without a token for the entity', async () => {
    for (const [name, pattern] of [['localhost', /built-in|not-found|not found/i], ['nowhere', /not-found|not found|nowhere/i]]) {
      const producer = new EventHubProducerClient(entity(name), { retryOptions: { maxRetries: 0, timeoutInMs: 10000 } });
      clients.push(producer);
      await assert.rejects(producer.sendBatch([{ body: 'x' }], { partitionId: '0' }), pattern, name);
    }
    // The registry policy lacks ServiceConnect.
    const registryRead = execFileSync(bin, ['connection-string', '--data-dir', dataDir, '--policy', 'registryRead', '--event-hubs'])
      .toString().trim().replace(/EntityPath=[^;]*/, 'EntityPath=inbox');
    const denied = new EventHubProducerClient(registryRead, { retryOptions: { maxRetries: 0, timeoutInMs: 10000 } });
    clients.push(denied);
    await assert.rejects(denied.sendBatch([{ body: 'x' }], { partitionId: '0' }), /ServiceConnect|unauthori|401/i);
  });
});

describe('an eventHubs endpoint with a connection string', () => {
  it('delivers device messages to the event hub it names, in order, with properties and the device annotations', async () => {
    const mirror = collect('mirror');
    await device('ehr-d1');
    // A sixth message closes the run: delivery keeps a device's order, so once it is in, any
    // repeat of the first five would be too.
    for (let n = 0; n <= 5; n++) await send('ehr-d1', n);
    await eventually(() => from(mirror.events, 'ehr-d1').some((e) => e.body.n === 5), 30000,
      () => `the last message at mirror, got ${from(mirror.events, 'ehr-d1').length}`);
    assert.equal(from(mirror.events, 'ehr-d1').length, 6, 'each once');
    const got = from(mirror.events, 'ehr-d1').filter((e) => e.body.n < 5);
    assert.deepEqual(got.map((e) => e.body.n), [0, 1, 2, 3, 4]);
    assert.deepEqual(got.map((e) => e.properties.seq), ['0', '1', '2', '3', '4']);
    assert.equal(got[0].properties.source, 'conformance');
    assert.equal(got[0].messageId, 'ehr-d1-0');
    assert.equal(got[0].contentType, 'application/json');
    assert.equal(got[0].partitionKey, 'ehr-d1', 'keyed by device, so one partition keeps the order');
    assert.equal(got[0].systemProperties['iothub-connection-auth-method'] !== undefined, true);
    assert.ok(got[0].systemProperties['iothub-enqueuedtime']);
    assert.deepEqual(mirror.errors, []);
    await eventually(async () => (await health('remote'))?.healthStatus === 'healthy', 15000, 'remote healthy');
  });

  it('reports a wrong key in its health and, once the key is fixed, delivers what waited', async () => {
    const wrong = Buffer.from('not the key of any policy here').toString('base64');
    await putRouting(wrong);
    const mirror = collect('mirror');
    await device('ehr-d2');
    for (let n = 0; n < 3; n++) await send('ehr-d2', n);
    let h;
    await eventually(async () => {
      h = await health('remote');
      return h?.healthStatus === 'unhealthy' && h.lastKnownError.length > 0;
    }, 20000, 'remote unhealthy');
    assert.match(h.lastKnownError, /refused the token/);
    assert.match(h.lastKnownError, /401|signature/i);
    assert.equal(from(mirror.events, 'ehr-d2').length, 0);

    await putRouting(serviceKey);
    // A fourth message, sent once the key is fixed, closes the run (see above).
    await send('ehr-d2', 3);
    await eventually(() => from(mirror.events, 'ehr-d2').some((e) => e.body.n === 3), 30000,
      () => `the last message at mirror, got ${from(mirror.events, 'ehr-d2').length}`);
    assert.deepEqual(from(mirror.events, 'ehr-d2').map((e) => e.body.n), [0, 1, 2, 3], 'nothing lost, nothing twice');
    await eventually(async () => (await health('remote'))?.healthStatus === 'healthy', 15000, 'remote healthy again');
  });
});
