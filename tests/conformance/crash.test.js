// Durability under load: kill -9 the hub while devices publish at QoS 1; after a restart every
// message that got a PUBACK is in the stream (duplicates are allowed, losses are not). And the
// cloud-to-device side: queued messages, a message locked at the time of the kill and feedback
// not yet delivered all survive kill -9.
'use strict';
const { it } = require('node:test');
const assert = require('node:assert/strict');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const { Message } = require('azure-iot-device');
const { Hub, connectionString, readTelemetry, dataDir, sleep, eventually } = require('./lib/hub');
const { RawAmqp, deviceToken, deviceAudience } = require('./lib/raw-amqp');
const { startQos1Load } = require('./lib/load');

const DEVICES = 20;
const LOAD_MS = 1500;

it('every acknowledged message survives kill -9', async (t) => {
  let hub = await Hub.start();
  const registry = Registry.fromConnectionString(connectionString());
  const acked = new Set();
  const load = await startQos1Load(registry, Array.from({ length: DEVICES }, (_, d) => `crash-${d}`),
    (id, n) => ({ body: `${id}:${n}` }), (body) => acked.add(body));
  await sleep(LOAD_MS);
  const { signal } = await hub.kill();
  assert.equal(signal, 'SIGKILL');
  await load.stop();
  assert.ok(acked.size > 100, `enough load to mean something (${acked.size} acknowledged)`);

  hub = await Hub.start();
  const stored = new Set();
  const events = await readTelemetry({
    until: (e) => { for (const x of e) stored.add(x.body); return [...acked].every((b) => stored.has(b)); },
    timeoutMs: 20000,
  });
  const lost = [...acked].filter((b) => !stored.has(b));
  t.diagnostic(`${acked.size} acknowledged before the kill, ${events.length} stored events read back`);
  assert.deepEqual(lost, [], `${lost.length} of ${acked.size} acknowledged messages were lost`);
  assert.ok(events.length >= acked.size);
  await hub.stop();
});

it('queued C2D messages, locks and undelivered feedback survive kill -9', async () => {
  let hub = await Hub.start();
  const registry = Registry.fromConnectionString(connectionString());
  const id = 'crash-c2d';
  const key = (await registry.create({ deviceId: id })).responseBody.authentication.symmetricKey.primaryKey;
  const depth = async () => (await registry.get(id)).responseBody.cloudToDeviceMessageCount;
  let service = ServiceClient.fromConnectionString(connectionString('service'));
  await service.open();
  const ids = [0, 1, 2, 3, 4].map((i) => `crash-c2d-${i}`);
  for (const messageId of ids) {
    const m = new Message(`body of ${messageId}`);
    m.messageId = messageId;
    m.ack = 'full';
    await service.send(id, m);
  }
  await service.close();
  assert.equal(await depth(), ids.length);

  // The device takes two messages: it completes the first (no feedback receiver is attached, so
  // its Success feedback stays pending) and holds the second locked when the hub dies.
  const before = await RawAmqp.open();
  assert.equal(await before.putToken(deviceAudience(id), deviceToken(id, key)), 200);
  const r = before.receiver(`/devices/${id}/messages/devicebound`, { autoaccept: false, credit_window: 0 });
  await r.settled();
  r.link.add_credit(2);
  await eventually(() => r.messages.length === 2, 5000, 'two deliveries');
  assert.deepEqual(r.messages.map((m) => m.message.message_id), ids.slice(0, 2));
  r.messages[0].delivery.accept();
  await eventually(async () => (await depth()) === ids.length - 1, 5000, 'the first completion to commit');

  const { signal } = await hub.kill();
  assert.equal(signal, 'SIGKILL');
  await before.close().catch(() => {});

  hub = await Hub.start();
  assert.equal(await depth(), ids.length - 1);
  service = ServiceClient.fromConnectionString(connectionString('service'));
  await service.open();
  const feedback = [];
  const { result: receiver } = await service.getFeedbackReceiver();
  receiver.on('message', (msg) => {
    for (const rec of JSON.parse(msg.data.toString())) feedback.push(rec);
    receiver.complete(msg, () => {});
  });
  const after = await RawAmqp.open();
  assert.equal(await after.putToken(deviceAudience(id), deviceToken(id, key)), 200);
  const r2 = after.receiver(`/devices/${id}/messages/devicebound`);  // accepts on arrival
  const done = () => ids.every((mid) => feedback.some((f) => f.originalMessageId === mid));
  await eventually(done, 15000, 'feedback for every message');
  assert.deepEqual(r2.messages.map((m) => m.message.message_id), ids.slice(1));
  for (const mid of ids)
    assert.deepEqual([...new Set(feedback.filter((f) => f.originalMessageId === mid).map((f) => f.statusCode))], ['Success'], mid);
  assert.equal(await depth(), 0);
  await after.close();
  await service.close();
  await hub.stop();
});
