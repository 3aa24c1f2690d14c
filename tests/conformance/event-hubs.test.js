// The Event Hubs-compatible endpoint with the unmodified @azure/event-hubs EventHubConsumerClient:
// partition metadata, reading from earliest, latest and a time, across partitions, consumer
// groups, checkpoint-and-resume, and exclusive (epoch) receivers.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const { EventHubConsumerClient, earliestEventPosition, latestEventPosition } = require('@azure/event-hubs');
const { Registry } = require('azure-iothub');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const rhea = require('rhea');
const { SharedAccessSignature } = require('azure-iot-common');
const { Hub, bin, dataDir, connectionString, eventually, readTelemetry, serviceRequest, sleep } = require('./lib/hub');
const { RawAmqp } = require('./lib/raw-amqp');

let hub;
let registry;
let ehConnectionString;
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
  const m = new Message(JSON.stringify(body));
  m.contentType = 'application/json';
  m.contentEncoding = 'utf-8';
  for (const [k, v] of Object.entries(props)) m.properties.add(k, v);
  await devices[id].sendEvent(m);
}
function consumer(group = '$Default') {
  const c = new EventHubConsumerClient(group, ehConnectionString);
  clients.push(c);
  return c;
}
// Subscribes and collects events (and errors) until closed. `ready` holds the partitions whose
// receiver is attached and reading: the client calls processEvents, with an empty batch when
// nothing came, once per maxWaitTimeInSeconds, so a call proves the receiver is in place.
function collect(client, options, partitionId) {
  const events = [];
  const errors = [];
  const ready = new Set();
  const handlers = {
    processEvents: async (batch, context) => {
      ready.add(context.partitionId);
      for (const e of batch) events.push({ ...e, partitionId: context.partitionId, context });
    },
    processError: async (err) => { errors.push(err); },
  };
  const sub = partitionId === undefined
    ? client.subscribe(handlers, { maxWaitTimeInSeconds: 1, ...options })
    : client.subscribe(partitionId, handlers, { maxWaitTimeInSeconds: 1, ...options });
  return { events, errors, sub, ready };
}
const bodiesOf = (events, id) => events
  .filter((e) => e.systemProperties['iothub-connection-device-id'] === id)
  .map((e) => e.body.n);

before(async () => {
  hub = await Hub.start();
  registry = Registry.fromConnectionString(connectionString());
  ehConnectionString = execFileSync(bin, ['connection-string', '--data-dir', dataDir, '--policy', 'service', '--event-hubs'])
    .toString().trim();
});
// A client whose connection the hub refused may never settle its close; none may hold the run.
const bounded = (p) => Promise.race([p.catch(() => {}), sleep(3000)]);
after(async () => {
  for (const c of clients) await bounded(c.close());
  for (const c of Object.values(devices)) await bounded(c.close());
  await hub.stop();
  // Together, the suite's Event Hubs clients leave a handle open after close() (each test alone
  // exits cleanly); end the process once the results are out rather than wait out the timeout.
  setTimeout(() => process.exit(), 2000).unref();
});

describe('Event Hubs-compatible endpoint', () => {
  it('prints an Event Hubs connection string and reports the partitions', async () => {
    assert.match(ehConnectionString, /^Endpoint=sb:\/\/localhost\/;SharedAccessKeyName=service;SharedAccessKey=[^;]+;EntityPath=localhost$/);
    const c = consumer();
    assert.deepEqual(await c.getPartitionIds(), ['0', '1', '2', '3']);
    const props = await c.getEventHubProperties();
    assert.equal(props.name, 'localhost');
    assert.ok(props.createdOn instanceof Date);
    const p = await c.getPartitionProperties('0');
    assert.equal(p.partitionId, '0');
    assert.equal(typeof p.isEmpty, 'boolean');
  });

  it('reads from earliest across partitions, with properties and IoT Hub annotations', async () => {
    const ids = ['eh-a', 'eh-b', 'eh-c', 'eh-d', 'eh-e', 'eh-f'];
    for (const id of ids) await device(id);
    for (const id of ids) for (let n = 0; n < 3; n++) await send(id, { n }, { seq: String(n) });
    const c = consumer();
    const { events, errors, sub } = collect(c, { startPosition: earliestEventPosition });
    await eventually(() => ids.every((id) => bodiesOf(events, id).length === 3), 15000, 'every event');
    await sub.close();
    assert.deepEqual(errors, []);
    for (const id of ids) assert.deepEqual(bodiesOf(events, id), [0, 1, 2], `${id} in order`);
    const e = events.find((x) => x.systemProperties['iothub-connection-device-id'] === 'eh-a');
    assert.equal(e.properties.seq, '0');
    assert.equal(e.contentType, 'application/json');
    assert.equal(e.systemProperties['iothub-message-source'], 'Telemetry');
    assert.ok(e.enqueuedTimeUtc instanceof Date);
    assert.equal(typeof e.sequenceNumber, 'number');
    assert.ok(new Set(events.map((x) => x.partitionId)).size > 1, 'more than one partition');
  });

  it('reads only new events from latest, and from an enqueued time', async () => {
    await device('eh-latest');
    await send('eh-latest', { n: 0 });
    await sleep(50);
    const since = new Date();
    await sleep(50);
    const c = consumer();
    const latest = collect(c, { startPosition: latestEventPosition });
    await eventually(() => latest.ready.size === 4, 10000, 'every partition\'s receiver attached');
    await send('eh-latest', { n: 1 });
    await eventually(() => bodiesOf(latest.events, 'eh-latest').length === 1, 10000, 'the new event');
    await latest.sub.close();
    assert.deepEqual(bodiesOf(latest.events, 'eh-latest'), [1]);

    // From a time: n=1 and then a marker sent now. Once the marker is read, anything before n=1
    // that the position wrongly let through would have been read before it (one partition).
    const c2 = consumer();
    const fromTime = collect(c2, { startPosition: { enqueuedOn: since } });
    await send('eh-latest', { n: 2 });
    await eventually(() => bodiesOf(fromTime.events, 'eh-latest').includes(2), 10000, 'events after the time');
    await fromTime.sub.close();
    assert.deepEqual(bodiesOf(fromTime.events, 'eh-latest'), [1, 2]);
  });

  it('resumes after a checkpoint', async () => {
    await device('eh-ckpt');
    for (let n = 0; n < 3; n++) await send('eh-ckpt', { n });
    // Which partition the device's events went to.
    const probe = collect(consumer(), { startPosition: earliestEventPosition });
    await eventually(() => bodiesOf(probe.events, 'eh-ckpt').length === 3, 10000, 'the events');
    await probe.sub.close();
    const partition = probe.events.find((e) => e.systemProperties['iothub-connection-device-id'] === 'eh-ckpt').partitionId;

    // An in-memory checkpoint store, as a user would plug in blob storage.
    const checkpoints = new Map();
    const owners = new Map();
    const store = {
      listOwnership: async () => [...owners.values()],
      claimOwnership: async (list) => list.map((o) => {
        const claimed = { ...o, etag: String(Date.now()), lastModifiedTimeInMs: Date.now() };
        owners.set(o.partitionId, claimed);
        return claimed;
      }),
      listCheckpoints: async () => [...checkpoints.values()],
      updateCheckpoint: async (cp) => { checkpoints.set(cp.partitionId, cp); },
    };
    let lastSeen;
    const run = async (client, want) => {
      const seen = [];
      const failures = [];
      const sub = client.subscribe(partition, {
        processEvents: async (batch, ctx) => {
          for (const e of batch) {
            if (e.systemProperties['iothub-connection-device-id'] !== 'eh-ckpt') continue;
            seen.push(e.body.n);
            await ctx.updateCheckpoint(e);
            lastSeen = e.sequenceNumber;
          }
        },
        processError: async (err) => { failures.push(String(err)); },
      }, { startPosition: earliestEventPosition, maxWaitTimeInSeconds: 1 });
      await eventually(() => seen.length >= want, 10000, () => `${want} events (${seen}; ${failures})`);
      // The checkpoint of the last event is stored before the subscription closes.
      await eventually(() => checkpoints.get(partition)?.sequenceNumber === lastSeen, 10000, 'the last checkpoint');
      await sub.close();
      return seen;
    };
    const first = new EventHubConsumerClient('$Default', ehConnectionString, store);
    clients.push(first);
    assert.deepEqual(await run(first, 3), [0, 1, 2]);
    assert.equal(checkpoints.get(partition).sequenceNumber, probe.events.filter((e) => e.partitionId === partition).at(-1).sequenceNumber);

    for (let n = 3; n < 5; n++) await send('eh-ckpt', { n });
    // A new client, as after a restart, resumes after the checkpoint.
    const second = new EventHubConsumerClient('$Default', ehConnectionString, store);
    clients.push(second);
    assert.deepEqual(await run(second, 2), [3, 4]);
  });

  it('consumer groups must exist; created ones work', async () => {
    const missing = consumer('nosuchgroup');
    const bad = collect(missing, { startPosition: earliestEventPosition }, '0');
    await eventually(() => bad.errors.length > 0, 10000, 'an error for the unknown group');
    await bad.sub.close();
    assert.match(String(bad.errors[0].message), /Consumer group/);

    assert.ok([200, 201].includes((await serviceRequest({ method: 'PUT', path: '/telemetry/consumergroups/analytics' })).status));
    await device('eh-cg');
    await send('eh-cg', { n: 7 });
    const c = consumer('analytics');
    const { events, sub } = collect(c, { startPosition: earliestEventPosition });
    await eventually(() => bodiesOf(events, 'eh-cg').length === 1, 10000, 'the event in the new group');
    await sub.close();
  });

  it('a receiver with a higher owner level takes a partition over', async () => {
    const low = consumer();
    const a = collect(low, { startPosition: latestEventPosition, ownerLevel: 1 }, '0');
    await eventually(() => a.ready.has('0'), 10000, 'the first receiver attached');
    const high = consumer();
    const b = collect(high, { startPosition: latestEventPosition, ownerLevel: 2 }, '0');
    await eventually(() => a.errors.length > 0, 10000, 'the lower owner level disconnected');
    assert.equal(b.errors.length, 0);
    await a.sub.close();
    await b.sub.close();
  });

  it('Debian\'s Python azure.eventhub consumer reads the same events', async () => {
    await device('eh-py');
    for (let n = 0; n < 3; n++) await send('eh-py', { n }, { k: `v${n}` });
    const { execFile } = require('node:child_process');
    const out = await new Promise((resolve, reject) => execFile('/usr/bin/python3',
      [`${__dirname}/python/eh_read.py`, ehConnectionString, `${dataDir}/tls/ca.pem`, 'eh-py', '3', '30'],
      { timeout: 60000 }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}\n${stdout}`)) : resolve(stdout))));
    const lines = out.trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(lines[0].partitions, ['0', '1', '2', '3']);
    const events = lines.slice(1);
    assert.deepEqual(events.map((e) => JSON.parse(e.body).n), [0, 1, 2]);
    assert.deepEqual(events.map((e) => e.properties.k), ['v0', 'v1', 'v2']);
  });

  it('a token signed with a wrong key is refused', async () => {
    const wrong = ehConnectionString.replace(/SharedAccessKey=[^;]+/, `SharedAccessKey=${Buffer.alloc(32, 1).toString('base64')}`);
    const c = new EventHubConsumerClient('$Default', wrong, { retryOptions: { maxRetries: 0, timeoutInMs: 5000 } });
    clients.push(c);
    await assert.rejects(c.getPartitionIds(), /nauthori|401|signature/i);
  });
});

// Event Hubs tokens sign with the policy key's text (not its Base64 bytes).
function ehToken(resource) {
  const key = /SharedAccessKey=([^;]+)/.exec(ehConnectionString)[1];
  const sr = encodeURIComponent(resource);
  const se = Math.floor(Date.now() / 1000) + 600;
  const sig = require('node:crypto').createHmac('sha256', key).update(`${sr}\n${se}`).digest('base64');
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}&skn=service`;
}
const selector = (text) => ({ 'apache.org:selector-filter:string': rhea.types.wrap_described(text, 0x468C00000004) });

describe('Event Hubs receivers, raw', () => {
  it('unknown partitions, entities and malformed filters are refused with their conditions', async () => {
    const raw = await RawAmqp.open();
    try {
      assert.equal(await raw.putToken('sb://localhost/localhost', ehToken('sb://localhost/localhost')), 200);
      const cases = [
        ['localhost/ConsumerGroups/$Default/Partitions/9', undefined, 'amqp:not-found'],
        ['otherhub/ConsumerGroups/$Default/Partitions/0', undefined, 'amqp:not-found'],
        ['localhost/ConsumerGroups/$Default/Partitions/0', selector("amqp.annotation.x-opt-offset < '5'"), 'com.microsoft:argument-error'],
      ];
      for (const [address, filter, condition] of cases) {
        const r = raw.receiver(address, filter ? { source: { address, filter } } : {});
        assert.equal((await r.detached())?.condition, condition, address);
      }
    } finally {
      await raw.close();
    }
  });

  it('a receiver gets nothing without credit and the events once it grants some', async () => {
    await device('eh-credit');
    const raw = await RawAmqp.open();
    try {
      assert.equal(await raw.putToken('sb://localhost/localhost', ehToken('sb://localhost/localhost')), 200);
      const links = [];
      for (let p = 0; p < 4; p++) {
        const address = `localhost/ConsumerGroups/$Default/Partitions/${p}`;
        links.push(raw.receiver(address, { source: { address, filter: selector("amqp.annotation.x-opt-offset > '@latest'") }, credit_window: 0 }));
      }
      for (const l of links) await l.settled();
      await send('eh-credit', { n: 1 });
      // The event is readable (the REST reader sees it), and a $management round trip on the
      // same connection after that has come back: a receiver with credit would have been sent it
      // by then, one without has nothing pending.
      await readTelemetry({ device: 'eh-credit', until: (events) => events.length === 1 });
      await raw.management('localhost');
      assert.equal(links.reduce((n, l) => n + l.messages.length, 0), 0, 'nothing without credit');
      for (const l of links) l.link.add_credit(5);
      await eventually(() => links.some((l) => l.messages.length === 1), 5000, 'the event after credit');
      const m = links.find((l) => l.messages.length === 1).messages[0].message;
      assert.equal(m.message_annotations['iothub-connection-device-id'], 'eh-credit');
      assert.equal(typeof m.message_annotations['x-opt-offset'], 'string');
    } finally {
      await raw.close();
    }
  });
});

describe('a consumer behind retention', () => {
  it('resumes at the oldest retained event', async () => {
    // The hub again, now keeping events for one second only.
    await hub.stop();
    const short = await Hub.start(['--retention', '1s']);
    try {
      const reg = Registry.fromConnectionString(connectionString());
      const d = (await reg.create({ deviceId: 'eh-old' })).responseBody;
      const c = Client.fromConnectionString(`HostName=localhost;DeviceId=eh-old;SharedAccessKey=${d.authentication.symmetricKey.primaryKey}`, Mqtt);
      await c.open();
      await c.sendEvent(new Message(JSON.stringify({ n: 0 })));
      // Retention runs every 100 ms with a one-second retention: wait for it to remove n=0.
      await eventually(async () => {
        const r = await serviceRequest({ path: '/telemetry/partitions' });
        return r.json.partitions.every((p) => p.isEmpty);
      }, 10000, 'retention to remove the first event');
      await c.sendEvent(new Message(JSON.stringify({ n: 1 })));
      await c.close();
      const reader = new EventHubConsumerClient('$Default', ehConnectionString);
      clients.push(reader);
      // From sequence number 0, which is gone: the reader starts at the oldest event left.
      const { events, sub } = collect(reader, { startPosition: { sequenceNumber: 0, isInclusive: true } });
      await eventually(() => bodiesOf(events, 'eh-old').length === 1, 10000, 'the retained event');
      await sub.close();
      assert.deepEqual(bodiesOf(events, 'eh-old'), [1], 'the first read starts at the oldest event left');
    } finally {
      await short.stop();
    }
  });
});
