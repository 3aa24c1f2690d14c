// The telemetry read API (/telemetry) and `iothub monitor` over real MQTT traffic.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const { Registry } = require('azure-iothub');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Hub, connectionString, serviceRequest, readTelemetry, bin, dataDir } = require('./lib/hub');

let hub;
let client;
before(async () => {
  hub = await Hub.start();
  const registry = Registry.fromConnectionString(connectionString());
  const d = (await registry.create({ deviceId: 'streamer' })).responseBody;
  client = Client.fromConnectionString(
    `HostName=localhost;DeviceId=streamer;SharedAccessKey=${d.authentication.symmetricKey.primaryKey}`, Mqtt);
  await client.open();
});
after(async () => {
  await client.close();
  await hub.stop();
});

const send = async (...bodies) => { for (const b of bodies) await client.sendEvent(new Message(b)); };

describe('/telemetry', () => {
  it('partitions describe the stream', async () => {
    await send('p1');
    const r = await serviceRequest({ path: '/telemetry/partitions', policy: 'service' });
    assert.equal(r.status, 200);
    assert.equal(r.json.partitionCount, 4);
    const busy = r.json.partitions.filter((p) => !p.isEmpty);
    assert.equal(busy.length, 1, 'one device, one partition');
    assert.ok(busy[0].lastEnqueuedSequenceNumber >= 0);
    assert.ok(Date.parse(busy[0].lastEnqueuedTimeUtc) > 0);
    const idle = r.json.partitions.find((p) => p.isEmpty);
    assert.equal(idle.lastEnqueuedSequenceNumber, -1);
    assert.equal(idle.lastEnqueuedTimeUtc, null);
  });

  it('reads from earliest, a sequence number, a time, and latest', async () => {
    const before = new Date().toISOString();
    await send('a1', 'a2');
    const all = await readTelemetry({ until: (e) => e.some((x) => x.body === 'a2') });
    const a1 = all.find((e) => e.body === 'a1');
    const bySeq = await serviceRequest({ path: `/telemetry/events?from=sequence:${a1.sequenceNumber}&partitions=${a1.partition}` });
    assert.deepEqual(bySeq.json.events.map((e) => e.body), ['a1', 'a2']);
    const byTime = await serviceRequest({ path: `/telemetry/events?from=time:${before}` });
    assert.deepEqual(byTime.json.events.map((e) => e.body), ['a1', 'a2']);
    const latest = await serviceRequest({ path: '/telemetry/events?from=latest' });
    assert.deepEqual(latest.json.events, []);
  });

  it('a long poll answers when an event arrives', async () => {
    const start = await serviceRequest({ path: '/telemetry/events?from=latest' });
    const poll = serviceRequest({ path: `/telemetry/events?cursor=${start.json.cursor}&wait=30` });
    await send('woke');
    const r = await poll;
    assert.deepEqual(r.json.events.map((e) => e.body), ['woke']);
    const empty = await serviceRequest({ path: `/telemetry/events?cursor=${r.json.cursor}&wait=1` });
    assert.deepEqual(empty.json.events, [], 'and a quiet poll ends at its deadline');
  });

  it('consumer groups keep checkpoints; $Default always exists', async () => {
    assert.equal((await serviceRequest({ method: 'PUT', path: '/telemetry/consumergroups/analytics', json: {} })).status, 201);
    const list = await serviceRequest({ path: '/telemetry/consumergroups' });
    assert.deepEqual(list.json.sort(), ['$Default', 'analytics']);
    const first = await serviceRequest({ path: '/telemetry/events?from=checkpoint&consumerGroup=analytics&max=2' });
    assert.equal(first.json.events.length, 2, 'no checkpoint yet: from the start');
    assert.equal((await serviceRequest({ method: 'PUT', path: '/telemetry/consumergroups/analytics/checkpoint',
      json: { cursor: first.json.cursor } })).status, 204);
    const resumed = await serviceRequest({ path: '/telemetry/events?from=checkpoint&consumerGroup=analytics&max=1' });
    assert.equal(resumed.json.events[0].sequenceNumber, first.json.events[1].sequenceNumber + 1);
    assert.equal((await serviceRequest({ method: 'DELETE', path: '/telemetry/consumergroups/$Default' })).status, 400);
    assert.equal((await serviceRequest({ method: 'DELETE', path: '/telemetry/consumergroups/analytics' })).status, 204);
    assert.equal((await serviceRequest({ path: '/telemetry/consumergroups/analytics/checkpoint' })).status, 404);
  });

  it('bad requests are 400 and the right is ServiceConnect', async () => {
    for (const q of ['from=yesterday', 'partitions=9', 'cursor=7:1', 'cursor=garbage', 'max=0', 'wait=61', 'from=time:notatime'])
      assert.equal((await serviceRequest({ path: `/telemetry/events?${q}` })).status, 400, q);
    assert.equal((await serviceRequest({ path: '/telemetry/events', policy: 'registryReadWrite' })).status, 401);
  });
});

describe('iothub monitor', () => {
  it('prints events as JSON lines with origin, parsed payload and properties', async () => {
    const m = new Message(JSON.stringify({ temperature: 31 }));
    m.properties.add('zone', 'north');
    await client.sendEvent(m);
    const lines = await new Promise((resolve, reject) => {
      const p = spawn(bin, ['monitor', '--data-dir', dataDir, '--from', 'start', '-d', 'streamer', '-n', '3', '-t', '20']);
      let out = '';
      p.stdout.on('data', (d) => { out += d; });
      p.on('exit', (code) => (code === 0 ? resolve(out.trim().split('\n')) : reject(new Error(`exit ${code}`))));
    });
    assert.equal(lines.length, 3);
    const events = lines.map((l) => JSON.parse(l).event);
    assert.equal(events[0].origin, 'streamer');
    assert.equal(events[0].payload, 'p1');
    const all = await new Promise((resolve) => {
      const p = spawn(bin, ['monitor', '--data-dir', dataDir, '--from', 'start', '-t', '3']);
      let out = '';
      p.stdout.on('data', (d) => { out += d; });
      p.on('exit', () => resolve(out.trim().split('\n').map((l) => JSON.parse(l).event)));
    });
    const last = all[all.length - 1];
    assert.deepEqual(last.payload, { temperature: 31 });
    assert.equal(last.properties.application.zone, 'north');
    assert.equal(last.properties.system['iothub-connection-device-id'], 'streamer');
  });
});

// Runs `iothub monitor` to its exit; resolves with its status and output lines.
const monitor = (...args) => new Promise((resolve) => {
  const p = spawn(bin, ['monitor', '--data-dir', dataDir, ...args]);
  let out = '';
  let err = '';
  p.stdout.on('data', (d) => { out += d; });
  p.stderr.on('data', (d) => { err += d; });
  p.on('exit', (code) => resolve({ code, err, events: out.trim() ? out.trim().split('\n').map((l) => JSON.parse(l).event) : [] }));
});

describe('iothub monitor transports', () => {
  it('AMQP (the default) and REST print the same events', async () => {
    await send('same-1');
    const amqp = await monitor('--from', 'start', '-d', 'streamer', '-t', '3');
    const rest = await monitor('--transport', 'rest', '--from', 'start', '-d', 'streamer', '-t', '3');
    assert.equal(amqp.code, 0, amqp.err);
    assert.equal(rest.code, 0, rest.err);
    assert.ok(amqp.events.some((e) => e.payload === 'same-1'));
    const strip = (e) => ({ ...e, enqueuedTimeUtc: undefined, properties: { application: e.properties.application } });
    assert.deepEqual(amqp.events.map(strip), rest.events.map(strip));
    assert.equal(amqp.events[0].properties.system['iothub-connection-device-id'], 'streamer');
  });

  it('starts at a sequence number or a time, and latest sees only new events', async () => {
    await send('seq-a', 'seq-b');
    const all = await monitor('--from', 'start', '-d', 'streamer', '-t', '3');
    const a = all.events.find((e) => e.payload === 'seq-a');
    const fromSeq = await monitor('--sequence', String(a.sequenceNumber), '-p', a.partition, '-n', '2', '-t', '10');
    assert.deepEqual(fromSeq.events.map((e) => e.payload), ['seq-a', 'seq-b']);
    const alias = await monitor('--from', `sequence:${a.sequenceNumber + 1}`, '-p', a.partition, '-n', '1', '-t', '10');
    assert.deepEqual(alias.events.map((e) => e.payload), ['seq-b']);
    const since = new Date(Date.now() - 1).toISOString();
    const latest = monitor('-n', '1', '-t', '15');
    const byTime = monitor('--start-time', since, '-n', '1', '-t', '15');
    await new Promise((r) => setTimeout(r, 1500));
    await send('fresh');
    assert.deepEqual((await latest).events.map((e) => e.payload), ['fresh']);
    assert.deepEqual((await byTime).events.map((e) => e.payload), ['fresh']);
  });

  it('consumer groups must exist; checkpoints go through REST', async () => {
    const missing = await monitor('-g', 'nobody', '-t', '2');
    assert.equal(missing.code, 1);
    assert.match(missing.err, /Consumer group 'nobody' does not exist/);
    const forced = await monitor('--transport', 'amqp', '--checkpoint', '-t', '1');
    assert.equal(forced.code, 1);
    assert.match(forced.err, /--transport rest/);
    const checkpointed = await monitor('--from', 'checkpoint', '--checkpoint', '-n', '1', '-t', '10');
    assert.equal(checkpointed.code, 0, checkpointed.err);
    assert.equal(checkpointed.events.length, 1);
  });
});

