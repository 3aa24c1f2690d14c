// Batched AMQP telemetry (message format 0x80013700), as the Azure IoT C SDK sends every telemetry
// message and the C# SDK's SendEventBatchAsync does: each data section of the body is a whole
// encoded message, stored as its own event with its own properties; one disposition settles the
// batch. Spoken with a raw AMQP client (rhea) over TLS and WebSockets, for devices, modules and a
// gateway, and read back with the unmodified EventHubConsumerClient. Also: batches that must be
// refused whole, and message formats the hub does not know, on every link that takes messages.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const { EventHubConsumerClient, earliestEventPosition } = require('@azure/event-hubs');
const { Registry } = require('azure-iothub');
const rhea = require('rhea');
const { Hub, bin, dataDir, connectionString, eventually, serviceToken, sleep } = require('./lib/hub');
const { RawAmqp, deviceToken, deviceAudience, data } = require('./lib/raw-amqp');

const BATCHED = 0x80013700;

let hub;
let registry;
let consumer;
let subscription;
const events = [];
const open = [];
const keys = {};

async function device(id) {
  keys[id] = (await registry.create({ deviceId: id })).responseBody.authentication.symmetricKey.primaryKey;
}
// A connection with a token for each identity ('dev' or 'dev/modules/mod') and a telemetry
// sender per identity.
async function connect(identities, options) {
  const c = await RawAmqp.open(options);
  open.push(c);
  const senders = {};
  for (const id of identities) {
    assert.equal(await c.putToken(deviceAudience(id), deviceToken(id, keys[id])), 200);
    senders[id] = c.sender(`/devices/${id}/messages/events`);
    await senders[id].settled();
    assert.equal(senders[id].error, null);
  }
  return { connection: c, senders };
}

// One message as a device encodes it, and a batch: a data section per encoded message.
function dataSection(bytes) {
  const head = Buffer.from([0x00, 0x53, 0x75, 0xb0, 0, 0, 0, 0]);
  head.writeUInt32BE(bytes.length, 4);
  return Buffer.concat([head, bytes]);
}
const batchOf = (encodedMessages) => Buffer.concat(encodedMessages.map(dataSection));
function telemetry(prefix, i, body = JSON.stringify({ i })) {
  return {
    message_id: `${prefix}-${i}`,
    correlation_id: `corr-${prefix}-${i}`,
    content_type: 'application/json',
    content_encoding: 'utf-8',
    application_properties: { i: String(i), batch: prefix },
    message_annotations: { 'iothub-creation-time-utc': '2026-12-01T10:00:00.000Z' },
    body: rhea.message.data_section(Buffer.from(body)),
  };
}
const encode = (m) => rhea.message.encode(m);
const batch = (prefix, n) => batchOf(Array.from({ length: n }, (_, i) => encode(telemetry(prefix, i))));

const from = (id) => events.filter((e) => e.systemProperties['iothub-connection-device-id'] === id);
const withPrefix = (prefix) => events.filter((e) => String(e.messageId).startsWith(`${prefix}-`));

// Sends a plain message after a refused one and waits for it: once it is read, anything the
// refused batch had stored would have been read before it (same device, same partition).
async function marker(sender, id, name) {
  const outcome = await sender.send({ message_id: name, body: data('marker') });
  assert.equal(outcome.outcome, 'accepted');
  await eventually(() => from(id).some((e) => e.messageId === name), 15000, `the marker ${name}`);
}

before(async () => {
  hub = await Hub.start();
  registry = Registry.fromConnectionString(connectionString());
  const eh = execFileSync(bin, ['connection-string', '--data-dir', dataDir, '--policy', 'service', '--event-hubs'])
    .toString().trim();
  consumer = new EventHubConsumerClient('$Default', eh);
  subscription = consumer.subscribe({
    processEvents: async (batchOfEvents) => { events.push(...batchOfEvents); },
    processError: async () => {},
  }, { startPosition: earliestEventPosition, maxWaitTimeInSeconds: 1 });
});
const bounded = (p) => Promise.race([p.catch(() => {}), sleep(3000)]);
after(async () => {
  for (const c of open) await c.close().catch(() => {});
  await bounded(subscription.close());
  await bounded(consumer.close());
  await hub.stop();
  // The Event Hubs client can leave a handle open after close(); end once results are out.
  setTimeout(() => process.exit(), 2000).unref();
});

describe('batched telemetry', () => {
  it('a batch of 1, 3 and 50 messages is stored as one event each, with its own properties', async () => {
    await device('batch-dev');
    const { senders } = await connect(['batch-dev']);
    for (const n of [1, 3, 50]) {
      const outcome = await senders['batch-dev'].sendEncoded(batch(`b${n}`, n), BATCHED);
      assert.equal(outcome.outcome, 'accepted', JSON.stringify(outcome));
    }
    await eventually(() => from('batch-dev').length >= 54, 20000, () => `54 events, have ${from('batch-dev').length}`);
    assert.equal(from('batch-dev').length, 54);
    for (const n of [1, 3, 50]) {
      const got = withPrefix(`b${n}`);
      assert.deepEqual(got.map((e) => e.messageId), Array.from({ length: n }, (_, i) => `b${n}-${i}`), 'in order');
      for (const [i, e] of got.entries()) {
        assert.deepEqual(e.body, { i });
        assert.equal(e.correlationId, `corr-b${n}-${i}`);
        assert.equal(e.contentType, 'application/json');
        assert.equal(e.systemProperties.contentEncoding, 'utf-8');
        assert.deepEqual(e.properties, { i: String(i), batch: `b${n}` });
        assert.equal(e.systemProperties['iothub-connection-device-id'], 'batch-dev');
        assert.equal(e.systemProperties['iothub-message-source'], 'Telemetry');
        assert.equal(e.systemProperties['iothub-creation-time-utc'], '2026-12-01T10:00:00.000Z');
      }
    }
    // Every event of a batch has its own sequence number.
    const sequence = from('batch-dev').map((e) => e.sequenceNumber);
    assert.equal(new Set(sequence).size, sequence.length);
  });

  it('a batch with a section that does not decode is refused whole, and nothing of it is stored', async () => {
    await device('batch-corrupt');
    const { senders } = await connect(['batch-corrupt']);
    const s = senders['batch-corrupt'];
    const corrupt = Buffer.from([0x00, 0x53, 0x73, 0xc0, 0x40, 0x05, 0xa1]);  // a properties list cut short
    const bad = batchOf([encode(telemetry('corrupt', 0)), corrupt, encode(telemetry('corrupt', 2))]);
    const outcome = await s.sendEncoded(bad, BATCHED);
    assert.equal(outcome.outcome, 'rejected');
    assert.equal(outcome.condition, 'amqp:decode-error');
    assert.match(outcome.description, /Message 2 of 3/);

    // A body that is not data sections at all.
    const notSections = await s.sendEncoded(Buffer.from('not an AMQP message'), BATCHED);
    assert.equal(notSections.outcome, 'rejected');
    assert.equal(notSections.condition, 'amqp:decode-error');

    await marker(s, 'batch-corrupt', 'after-corrupt');
    assert.deepEqual(withPrefix('corrupt'), []);
    assert.deepEqual(from('batch-corrupt').map((e) => e.messageId), ['after-corrupt']);
  });

  it('a batch over the size limit is refused whole, and the link stays up', async () => {
    await device('batch-big');
    const { senders } = await connect(['batch-big']);
    const s = senders['batch-big'];
    // Four messages of 66,000 bytes: each within 256 KB, together over it, and the transfer
    // within the link's limit so that the batch itself is judged.
    const big = batchOf(Array.from({ length: 4 }, (_, i) => encode(telemetry('big', i, 'x'.repeat(66000)))));
    const outcome = await s.sendEncoded(big, BATCHED);
    assert.equal(outcome.outcome, 'rejected');
    assert.equal(outcome.condition, 'amqp:link:message-size-exceeded');
    assert.match(outcome.description, /The batch is \d+ bytes; the limit is 262144/);
    assert.equal(s.closed, false);
    await marker(s, 'batch-big', 'after-big');
    assert.deepEqual(withPrefix('big'), []);
  });

  it('over AMQP over WebSockets', async () => {
    await device('batch-ws');
    const { senders } = await connect(['batch-ws'], { websocket: true });
    const outcome = await senders['batch-ws'].sendEncoded(batch('ws', 3), BATCHED);
    assert.equal(outcome.outcome, 'accepted');
    await eventually(() => withPrefix('ws').length === 3, 15000, 'the three events');
    assert.deepEqual(withPrefix('ws').map((e) => e.properties.i), ['0', '1', '2']);
    assert.ok(withPrefix('ws').every((e) => e.systemProperties['iothub-connection-device-id'] === 'batch-ws'));
  });

  it('through a gateway: each device\'s batch is stamped with its own identity, and a module\'s too', async () => {
    await device('batch-gw-1');
    await device('batch-gw-2');
    const m = (await registry.addModule({ deviceId: 'batch-gw-1', moduleId: 'edge' })).responseBody;
    keys['batch-gw-1/modules/edge'] = m.authentication.symmetricKey.primaryKey;
    const ids = ['batch-gw-1', 'batch-gw-2', 'batch-gw-1/modules/edge'];
    const { senders } = await connect(ids);
    const outcomes = await Promise.all(ids.map((id, k) => senders[id].sendEncoded(batch(`gw${k}`, 3), BATCHED)));
    assert.deepEqual(outcomes.map((o) => o.outcome), ['accepted', 'accepted', 'accepted']);
    await eventually(() => [0, 1, 2].every((k) => withPrefix(`gw${k}`).length === 3), 15000, 'nine events');
    const stamp = (k) => withPrefix(`gw${k}`).map((e) => [e.systemProperties['iothub-connection-device-id'],
      e.systemProperties['iothub-connection-module-id']]);
    assert.deepEqual(stamp(0), Array(3).fill(['batch-gw-1', undefined]));
    assert.deepEqual(stamp(1), Array(3).fill(['batch-gw-2', undefined]));
    assert.deepEqual(stamp(2), Array(3).fill(['batch-gw-1', 'edge']));
  });
});

describe('plain messages', () => {
  it('a body of several data sections is stored whole, in order', async () => {
    await device('sections-dev');
    const { senders } = await connect(['sections-dev']);
    // Properties, then the body in three data sections.
    const head = encode({ message_id: 'three-sections', body: rhea.message.data_section(Buffer.from('')) });
    const properties = head.subarray(0, head.length - 5);  // without its empty data section
    const bytes = Buffer.concat([properties, dataSection(Buffer.from('one,')), dataSection(Buffer.from('two,')),
      dataSection(Buffer.from('three'))]);
    assert.equal((await senders['sections-dev'].sendEncoded(bytes, 0)).outcome, 'accepted');
    await eventually(() => from('sections-dev').length === 1, 15000, 'the event');
    assert.equal(from('sections-dev')[0].messageId, 'three-sections');
    assert.equal(Buffer.from(from('sections-dev')[0].body).toString(), 'one,two,three');
  });
});

describe('message formats the hub does not know', () => {
  it('are refused on device telemetry and module links, and nothing is stored', async () => {
    await device('format-dev');
    const m = (await registry.addModule({ deviceId: 'format-dev', moduleId: 'mod' })).responseBody;
    keys['format-dev/modules/mod'] = m.authentication.symmetricKey.primaryKey;
    const { senders } = await connect(['format-dev', 'format-dev/modules/mod']);
    for (const id of ['format-dev', 'format-dev/modules/mod']) {
      const outcome = await senders[id].sendEncoded(encode(telemetry('unknown-format', 0)), 0x12345);
      assert.equal(outcome.outcome, 'rejected');
      assert.equal(outcome.condition, 'amqp:not-implemented');
      assert.match(outcome.description, /Message format 74565 is not supported/);
    }
    await marker(senders['format-dev'], 'format-dev', 'after-unknown-format');
    assert.deepEqual(withPrefix('unknown-format'), []);
  });

  it('are refused on the service\'s C2D link, batched ones included, and nothing is queued', async () => {
    await device('format-c2d');
    const c = await RawAmqp.open();
    open.push(c);
    assert.equal(await c.putToken('localhost', serviceToken('service')), 200);
    const s = c.sender('/messages/devicebound');
    await s.settled();
    const message = encode({ to: '/devices/format-c2d/messages/devicebound', message_id: 'c2d-x', body: data('hi') });
    for (const [format, why] of [[7, /Message format 7 is not supported/], [BATCHED, /only device telemetry and event hubs take batched messages/]]) {
      const outcome = await s.sendEncoded(format === BATCHED ? batchOf([message]) : message, format);
      assert.equal(outcome.outcome, 'rejected');
      assert.equal(outcome.condition, 'amqp:not-implemented');
      assert.match(outcome.description, why);
    }
    assert.equal((await registry.get('format-c2d')).responseBody.cloudToDeviceMessageCount, 0);
    // The same message in the standard format is queued: the link was fine all along.
    assert.equal((await s.sendEncoded(message, 0)).outcome, 'accepted');
    assert.equal((await registry.get('format-c2d')).responseBody.cloudToDeviceMessageCount, 1);
  });
});
