// Provisioning throughput and latency: DEVICES devices of one symmetric-key enrollment group
// register over TRANSPORT (mqtt, the default; amqp; http) with the unmodified provisioning device
// SDK, CONCURRENCY at a time; prints
// registrations per second, the hub's CPU per registration, and p50/p99 of the whole registration
// (connect, register, the poll after the service's retry-after of one second, assigned). One hub
// with embedded storage, in the network namespace run.sh makes:
//
//   DEVICES=1000 CONCURRENCY=50 tests/conformance/run.sh build/release/iothub bench/dps-register.js
//   TRANSPORT=amqp DEVICES=1000 CONCURRENCY=50 tests/conformance/run.sh build/release/iothub bench/dps-register.js
//
// LINKED=1 assigns every device to a second hub instance (127.0.0.2, linked with
// `iothub dps linked-hub add`, static allocation), where each is created over that hub's service
// API; the CPU figure is then both hubs' together.
'use strict';
const path = require('node:path');
const crypto = require('node:crypto');
const fs = require('node:fs');
const { test, after } = require('node:test');
const sdk = require('node:module').createRequire(path.join(__dirname, '../tests/conformance/package.json'));
const { ProvisioningServiceClient } = sdk('azure-iot-provisioning-service');
const { ProvisioningDeviceClient } = sdk('azure-iot-provisioning-device');
const transports = {
  mqtt: sdk('azure-iot-provisioning-device-mqtt').Mqtt,
  amqp: sdk('azure-iot-provisioning-device-amqp').Amqp,
  http: sdk('azure-iot-provisioning-device-http').Http,
};
const TRANSPORT = process.env.TRANSPORT || 'mqtt';
const Transport = transports[TRANSPORT];
if (!Transport) throw new Error(`TRANSPORT is one of ${Object.keys(transports).join(', ')}`);
const { SymmetricKeySecurityClient } = sdk('azure-iot-security-symmetric-key');
const { execFileSync } = require('node:child_process');
const { Hub, bin, dataDir } = require('../tests/conformance/lib/hub');

const DEVICES = Number(process.env.DEVICES || 1000);
const CONCURRENCY = Number(process.env.CONCURRENCY || 50);
const LINKED = process.env.LINKED === '1';
let hub;
let linked;
after(async () => {
  await linked?.stop();
  await hub?.stop();
  setTimeout(() => process.exit(), 1000).unref();
});

// A second instance whose certificate the same development CA signs, linked to the first.
async function startLinkedHub() {
  const host = '127.0.0.2';
  const dir = path.join(process.env.IOTHUB_WORK, 'linked-hub');
  fs.mkdirSync(path.join(dir, 'tls'), { recursive: true });
  for (const f of ['ca.pem', 'ca.key']) fs.copyFileSync(path.join(dataDir, 'tls', f), path.join(dir, 'tls', f));
  execFileSync(bin, ['init', '--data-dir', dir, '--hostname', host]);
  const other = await Hub.start(['--bind', host, '--log-level', 'warn'], { dir, host });
  const cs = execFileSync(bin, ['connection-string', '--data-dir', dir]).toString().trim();
  execFileSync(bin, ['dps', 'linked-hub', 'add', '--connection-string', cs, '--data-dir', dataDir]);
  return { hub: other, host };
}

const pct = (xs, p) => xs.slice().sort((x, y) => x - y)[Math.min(xs.length - 1, Math.floor(xs.length * p))];
const cpuTicks = (pid) => {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]);
};

test(`${DEVICES} group registrations over ${TRANSPORT}, ${CONCURRENCY} at a time`, { timeout: 600000 }, async () => {
  hub = await Hub.start(['--log-level', 'warn', ...(LINKED ? ['--bind', '127.0.0.1'] : [])]);
  let assignTo = {};
  if (LINKED) {
    const l = await startLinkedHub();
    linked = l.hub;
    assignTo = { allocationPolicy: 'static', iotHubs: [l.host] };
  }
  const idScope = execFileSync(bin, ['dps', 'id-scope', '--data-dir', dataDir]).toString().trim();
  const service = ProvisioningServiceClient.fromConnectionString(
    execFileSync(bin, ['connection-string', '--dps', '--data-dir', dataDir]).toString().trim());
  const group = (await service.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: 'bench', attestation: { type: 'symmetricKey' }, ...assignTo,
  })).responseBody;
  const groupKey = Buffer.from(group.attestation.symmetricKey.primaryKey, 'base64');
  const times = [];
  let next = 0;
  let failed = 0;
  const hubs = [hub, linked].filter(Boolean);
  const ticks = () => hubs.reduce((sum, h) => sum + cpuTicks(h.proc.pid), 0);
  const ticks0 = ticks();
  const started = Date.now();
  const worker = async () => {
    while (next < DEVICES) {
      const id = `bench-${next++}`;
      const key = crypto.createHmac('sha256', groupKey).update(id).digest('base64');
      const t0 = Date.now();
      try {
        const client = ProvisioningDeviceClient.create('localhost', idScope, new Transport(),
          new SymmetricKeySecurityClient(id, key));
        const r = await client.register();
        if (r.status !== 'assigned' || (LINKED && r.assignedHub !== assignTo.iotHubs[0])) failed += 1;
        times.push(Date.now() - t0);
      } catch {
        failed += 1;
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const seconds = (Date.now() - started) / 1000;
  const cpu = (ticks() - ticks0) / 100;
  console.log(`registered ${times.length} of ${DEVICES} (${failed} failed) in ${seconds.toFixed(1)} s: ` +
    `${(times.length / seconds).toFixed(0)} registrations/s, hub CPU ${(cpu * 1000 / Math.max(1, times.length)).toFixed(2)} ms each, ` +
    `p50 ${pct(times, 0.5)} ms, p99 ${pct(times, 0.99)} ms`);
});
