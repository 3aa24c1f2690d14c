// The added latency of a direct method call across nodes: a device on node A answers `ping`; the
// service invokes it 300 times through node A (the device's node) and 300 times through node B
// (forwarded over NATS), one call at a time, and prints p50/p99 of each. Three clustered
// nats-servers and two nodes on loopback, in the network namespace run.sh makes:
//
//   tests/conformance/run.sh build/release/iothub bench/cluster-method.js
'use strict';
const path = require('node:path');
const { test, after } = require('node:test');
const sdk = require('node:module').createRequire(path.join(__dirname, '../tests/conformance/package.json'));
const { Registry, Client: ServiceClient } = sdk('azure-iothub');
const { Client } = sdk('azure-iot-device');
const { Mqtt } = sdk('azure-iot-device-mqtt');
const { execFileSync } = require('node:child_process');
const { bin, dataDir } = require('../tests/conformance/lib/hub');
const { startNats, Node } = require('../tests/conformance/lib/cluster');

const CALLS = 300;
const stops = [];
after(async () => { for (const s of stops.reverse()) await s().catch(() => {}); setTimeout(() => process.exit(), 1000).unref(); });

const serviceString = (node, policy) => execFileSync(bin, ['connection-string', '--data-dir', dataDir, '--policy', policy])
  .toString().trim().replace('HostName=localhost', `HostName=${node.host}`);
const pct = (xs, p) => xs.slice().sort((x, y) => x - y)[Math.min(xs.length - 1, Math.floor(xs.length * p))];

test('direct method latency: same node against another node', async () => {
  const nats = await startNats();
  stops.push(async () => { for (const s of nats) await s.stop(); });
  const urls = nats.map((s) => s.url);
  const a = await new Node(1, urls).start(['--log-level', 'warn']);
  const b = await new Node(2, urls).start(['--log-level', 'warn']);
  stops.push(() => a.stop(), () => b.stop());
  const d = (await Registry.fromConnectionString(serviceString(a, 'iothubowner')).create({ deviceId: 'ping-1' })).responseBody;
  const device = Client.fromConnectionString(`HostName=${a.host};DeviceId=ping-1;SharedAccessKey=${d.authentication.symmetricKey.primaryKey}`, Mqtt);
  await device.open();
  stops.push(() => device.close());
  device.onDeviceMethod('ping', (req, res) => res.send(200, { pong: true }, () => {}));
  const results = {};
  for (const [label, node] of [['via node A (same node)', a], ['via node B (cross-node)', b]]) {
    const service = ServiceClient.fromConnectionString(serviceString(node, 'service'));
    stops.push(() => service.close());
    for (let i = 0; i < 20; i += 1) await service.invokeDeviceMethod('ping-1', { methodName: 'ping', responseTimeoutInSeconds: 10 });
    const ms = [];
    for (let i = 0; i < CALLS; i += 1) {
      const t = process.hrtime.bigint();
      await service.invokeDeviceMethod('ping-1', { methodName: 'ping', responseTimeoutInSeconds: 10 });
      ms.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    results[label] = { p50: pct(ms, 0.5).toFixed(2), p99: pct(ms, 0.99).toFixed(2) };
  }
  console.log(JSON.stringify(results, null, 2));
});
