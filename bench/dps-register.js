// Provisioning throughput and latency: DEVICES devices of one symmetric-key enrollment group
// register over TRANSPORT (mqtt, the default; amqp; http) with the unmodified provisioning device
// SDK, CONCURRENCY at a time; prints
// registrations per second, the hub's CPU per registration, and p50/p99 of the whole registration
// (connect, register, the poll after the service's retry-after of one second, assigned). One hub
// with embedded storage, in the network namespace run.sh makes:
//
//   DEVICES=1000 CONCURRENCY=50 tests/conformance/run.sh build/release/iothub bench/dps-register.js
//   TRANSPORT=amqp DEVICES=1000 CONCURRENCY=50 tests/conformance/run.sh build/release/iothub bench/dps-register.js
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
let hub;
after(async () => { await hub?.stop(); setTimeout(() => process.exit(), 1000).unref(); });

const pct = (xs, p) => xs.slice().sort((x, y) => x - y)[Math.min(xs.length - 1, Math.floor(xs.length * p))];
const cpuTicks = (pid) => {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]);
};

test(`${DEVICES} group registrations over ${TRANSPORT}, ${CONCURRENCY} at a time`, { timeout: 600000 }, async () => {
  hub = await Hub.start(['--log-level', 'warn']);
  const idScope = execFileSync(bin, ['dps', 'id-scope', '--data-dir', dataDir]).toString().trim();
  const service = ProvisioningServiceClient.fromConnectionString(
    execFileSync(bin, ['connection-string', '--dps', '--data-dir', dataDir]).toString().trim());
  const group = (await service.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: 'bench', attestation: { type: 'symmetricKey' },
  })).responseBody;
  const groupKey = Buffer.from(group.attestation.symmetricKey.primaryKey, 'base64');
  const times = [];
  let next = 0;
  let failed = 0;
  const ticks0 = cpuTicks(hub.proc.pid);
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
        if (r.status !== 'assigned') failed += 1;
        times.push(Date.now() - t0);
      } catch {
        failed += 1;
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const seconds = (Date.now() - started) / 1000;
  const cpu = (cpuTicks(hub.proc.pid) - ticks0) / 100;
  console.log(`registered ${times.length} of ${DEVICES} (${failed} failed) in ${seconds.toFixed(1)} s: ` +
    `${(times.length / seconds).toFixed(0)} registrations/s, hub CPU ${(cpu * 1000 / Math.max(1, times.length)).toFixed(2)} ms each, ` +
    `p50 ${pct(times, 0.5)} ms, p99 ${pct(times, 0.99)} ms`);
});
