// Cluster mode under faults, with the unmodified SDKs on two hub nodes and three clustered
// JetStream nats-servers: a NATS server stopped, a hub node killed under load and the NATS quorum
// lost lose nothing that was acknowledged, and the hub recovers by itself.
'use strict';
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { Message } = require('azure-iot-device');
const fs = require('node:fs');
const {
  dataDir, eventually, sleep, rawRequest, serviceToken,
} = require('./lib/hub');
const {
  setUp, createDevice, deviceOn, rawDevice, collect, values,
} = require('./lib/two-nodes');

let nats;
let a;
let b;
setUp((nodes) => { ({ nats, a, b } = nodes); });

describe('faults', () => {
  it('with one of three NATS servers stopped the hub keeps serving and loses nothing', async () => {
    await createDevice(a, 'fault-1');
    const c = await deviceOn(a, 'fault-1');
    const sent = [];
    for (let i = 0; i < 20; i += 1) { await c.sendEvent(new Message(JSON.stringify({ i }))); sent.push(i); }
    await nats[2].stop();
    for (let i = 20; i < 60; i += 1) { await c.sendEvent(new Message(JSON.stringify({ i }))); sent.push(i); }
    const c2 = collect(b);
    const got = () => new Set(values(c2, 'fault-1'));
    await eventually(() => got().size === sent.length, 30000,
      () => `all ${sent.length} acknowledged events, got ${got().size}`);
    await c2.subscription.close();
    nats[2].start();
    await nats[2].ready();
  });

  it('killing node A under load loses no acknowledged message; node B serves its devices', async () => {
    await createDevice(a, 'kill-1');
    const c = await deviceOn(a, 'kill-1');
    const acked = [];
    let stop = false;
    const load = (async () => {
      for (let i = 0; i < 2000 && !stop; i += 1) {
        try { await c.sendEvent(new Message(JSON.stringify({ i }))); acked.push(i); } catch { break; }
      }
    })();
    await eventually(() => acked.length >= 50, 15000, 'load to start');
    await a.stop('SIGKILL');
    stop = true;
    await Promise.race([load, sleep(5000)]);
    const after = await deviceOn(b, 'kill-1');
    await after.sendEvent(new Message(JSON.stringify({ i: 'after' })));
    const c3 = collect(b);
    const got = () => new Set(values(c3, 'kill-1'));
    await eventually(() => { const g = got(); return acked.every((i) => g.has(i)) && g.has('after'); }, 30000,
      () => `${acked.length} acknowledged and one after, got ${got().size}`);
    await c3.subscription.close();
  });

  it('without a NATS quorum node B answers "server busy" and recovers by itself', async () => {
    await createDevice(b, 'quorum-1');
    await nats[1].stop();
    await nats[2].stop();
    const ca = fs.readFileSync(`${dataDir}/tls/ca.pem`);
    const get = () => rawRequest({
      path: '/devices/quorum-1?api-version=2021-04-12', host: b.host, ca,
      headers: { Authorization: serviceToken('iothubowner', 600, b.host) },
    });
    // JetStream's last leader keeps answering until it notices it lost its quorum (seconds).
    let r;
    await eventually(async () => { r = await get(); return r.status === 503; }, 30000,
      () => `503 from node B, got ${r && r.status}`);
    assert.match(r.body, /ServiceUnavailable/);
    // The refusal waits on the storage cluster's request timeout: more than mqtt.js's 5 s.
    const refusedDevice = rawDevice(b, 'quorum-1', { connectTimeout: 30000 });
    assert.equal(await refusedDevice.refused, 3, 'CONNACK 3 (server unavailable)');
    nats[1].start();
    nats[2].start();
    await nats[1].ready();
    await nats[2].ready();
    await eventually(async () => (await get()).status === 200, 60000, 'node B to serve again');
    // Streams elect their leaders one by one after the servers return, so a device may still be
    // turned away once; it reconnects as the SDKs do, and the hub, never restarted, takes it.
    let refusal;
    await eventually(async () => {
      const back = rawDevice(b, 'quorum-1', { connectTimeout: 30000 });
      const outcome = await Promise.race([back.connected.then(() => 'connected'), back.refused]);
      if (outcome === 'connected') return true;
      refusal = outcome;
      back.client.end(true);
      return false;
    }, 60000, () => `node B to take quorum-1 again (last refusal: ${refusal})`);
  });
});
