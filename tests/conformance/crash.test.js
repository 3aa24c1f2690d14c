// Durability under load: kill -9 the hub while devices publish at QoS 1; after a restart every
// message that got a PUBACK is in the stream (duplicates are allowed, losses are not).
'use strict';
const { it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const mqtt = require('mqtt');
const { Registry } = require('azure-iothub');
const { SharedAccessSignature } = require('azure-iot-common');
const { Hub, connectionString, readTelemetry, dataDir, sleep } = require('./lib/hub');

const DEVICES = 20;
const LOAD_MS = 1500;

it('every acknowledged message survives kill -9', async (t) => {
  let hub = await Hub.start();
  const registry = Registry.fromConnectionString(connectionString());
  const ca = fs.readFileSync(`${dataDir}/tls/ca.pem`);
  const acked = new Set();
  let stop = false;
  const publishers = [];
  for (let d = 0; d < DEVICES; d++) {
    const id = `crash-${d}`;
    const key = (await registry.create({ deviceId: id })).responseBody.authentication.symmetricKey.primaryKey;
    const password = SharedAccessSignature.create(`localhost%2Fdevices%2F${id}`, undefined, key,
      Math.floor(Date.now() / 1000) + 600).toString();
    const client = mqtt.connect('mqtts://localhost:8883', { ca, clientId: id, clean: true, reconnectPeriod: 0,
      username: `localhost/${id}/?api-version=2021-04-12`, password });
    client.on('error', () => {});
    await new Promise((resolve, reject) => { client.once('connect', resolve); client.once('error', reject); });
    // Each device keeps up to 8 messages in flight until the hub dies or the load time ends.
    publishers.push(new Promise((resolve) => {
      let n = 0;
      let inflight = 0;
      const pump = () => {
        while (!stop && client.connected && inflight < 8) {
          const body = `${id}:${n++}`;
          inflight++;
          client.publish(`devices/${id}/messages/events/`, body, { qos: 1 }, (err) => {
            inflight--;
            if (!err) acked.add(body);
            pump();
          });
        }
        if (stop || !client.connected) resolve();
      };
      client.once('close', resolve);
      pump();
    }));
  }
  await sleep(LOAD_MS);
  const { signal } = await hub.kill();
  assert.equal(signal, 'SIGKILL');
  stop = true;
  await Promise.all(publishers);
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
