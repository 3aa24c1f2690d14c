// The hub-wide device connect rate, Azure IoT Hub's "device connections per second" throttle: a
// hub of its own allowing one connect per second with a burst of two. MQTT devices over the rate
// get CONNACK 3 (server unavailable); an AMQP device's link attach is refused with
// com.microsoft:device-container-throttled, which the device SDK reports as ThrottlingError.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const mqtt = require('mqtt');
const { Registry } = require('azure-iothub');
const { Client, Message } = require('azure-iot-device');
const { Amqp } = require('azure-iot-device-amqp');
const { SharedAccessSignature, NoRetry, errors } = require('azure-iot-common');
const { Hub, connectionString, dataDir, sleep } = require('./lib/hub');

const ca = fs.readFileSync(`${dataDir}/tls/ca.pem`);
let hub;
let registry;
const keys = {};

async function device(id) {
  const d = (await registry.create({ deviceId: id })).responseBody;
  keys[id] = d.authentication.symmetricKey.primaryKey;
}
const deviceCs = (id) => `HostName=localhost;DeviceId=${id};SharedAccessKey=${keys[id]}`;
const sas = (id) => SharedAccessSignature.create(encodeURIComponent(`localhost/devices/${id}`), undefined,
  keys[id], Math.floor(Date.now() / 1000) + 600).toString();

// A raw MQTT connection as `id`, never reconnecting, so the test sees exactly what the hub said.
function rawClient(id) {
  return mqtt.connect('mqtts://localhost:8883', {
    ca, clientId: id, clean: true, reconnectPeriod: 0, connectTimeout: 5000,
    username: `localhost/${id}/?api-version=2021-04-12`, password: sas(id),
  });
}
// Resolves with the client once accepted; rejects with mqtt.js's error (code = the CONNACK code).
function connected(client) {
  return new Promise((resolve, reject) => {
    client.once('connect', () => resolve(client));
    client.once('error', (e) => { client.end(true); reject(e); });
    client.once('close', () => reject(new Error('closed before CONNACK')));
  });
}
const throttled = (e) => e.code === 3;

// Connects `id` over raw MQTT, retrying while the hub answers CONNACK 3, until `timeoutMs`.
async function connectOnceAllowed(id, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  let refusals = 0;
  for (;;) {
    try {
      const client = await connected(rawClient(id));
      return { client, refusals };
    } catch (e) {
      if (!throttled(e) || Date.now() > deadline) throw e;
      refusals += 1;
      await sleep(50);
    }
  }
}

before(async () => {
  hub = await Hub.start(['--device-connects-per-second', '1', '--device-connects-burst', '2']);
  registry = Registry.fromConnectionString(connectionString());
  for (const id of ['thr-1', 'thr-2', 'thr-3', 'thr-amqp']) await device(id);
});
after(async () => { await hub.stop(); });

describe('device connects per second', () => {
  it('MQTT: the burst is accepted, the next connect gets CONNACK 3 until the bucket refills', async () => {
    // The hub has taken no device connect yet: its bucket holds the burst.
    const first = await connected(rawClient('thr-1'));
    const second = await connected(rawClient('thr-2'));
    await assert.rejects(connected(rawClient('thr-3')), throttled);
    assert.equal((await registry.get('thr-3')).responseBody.connectionState, 'Disconnected');
    // One connect per second comes back.
    const { client: third } = await connectOnceAllowed('thr-3');
    assert.equal((await registry.get('thr-3')).responseBody.connectionState, 'Connected');
    for (const c of [first, second, third]) c.end(true);
  });

  it('AMQP: a device link over the rate is refused and the SDK reports ThrottlingError', async () => {
    // The connection and its put-token open no device session; the telemetry link does. Raw MQTT
    // connects empty the bucket first; should a connect slip in before the attach (the bucket
    // refills meanwhile), the attempt is made again.
    const deadline = Date.now() + 20000;
    let seen;
    while (!seen && Date.now() < deadline) {
      const client = Client.fromConnectionString(deviceCs('thr-amqp'), Amqp);
      client.setRetryPolicy(new NoRetry());
      await client.open();
      const held = [];
      for (;;) {
        try {
          held.push(await connected(rawClient(`thr-${(held.length % 3) + 1}`)));
        } catch (e) {
          if (!throttled(e)) throw e;
          break;
        }
      }
      try {
        await client.sendEvent(new Message('over the rate'));
      } catch (e) {
        seen = e;
      }
      for (const c of held) c.end(true);
      await client.close();
    }
    assert.ok(seen, 'a link attach was throttled');
    assert.ok(seen instanceof errors.ThrottlingError, `${seen.constructor.name}: ${seen.message}`);

    // Once the bucket refills, the same device gets its link.
    const again = Client.fromConnectionString(deviceCs('thr-amqp'), Amqp);
    again.setRetryPolicy(new NoRetry());
    await again.open();
    for (;;) {
      try {
        await again.sendEvent(new Message('within the rate'));
        break;
      } catch (e) {
        if (!(e instanceof errors.ThrottlingError) || Date.now() > deadline + 10000) throw e;
        await sleep(50);
      }
    }
    await again.close();
  });
});
