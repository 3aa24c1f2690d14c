// Allocation over linked hubs with the unmodified SDKs: a second iothub instance (127.0.0.2, its
// certificate from the same development CA) is linked with `iothub dps linked-hub add`; hashed
// allocation spreads a group's devices over both hubs and creates each device in the hub it was
// assigned to, where azure-iot-device connects with the same key and sees the initial twin;
// static allocation names one hub; a custom allocation webhook (a plain Node HTTP server) gets
// the device's provisioning payload and the linked hubs, chooses the hub, and its payload comes
// back to the device; a webhook answering an unlinked hub fails the registration. Unlinking a hub
// and keeping this hub out of hashed allocation change where devices go.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http: ProvisioningHttp } = require('azure-iot-provisioning-device-http');
const { Mqtt: ProvisioningMqtt } = require('azure-iot-provisioning-device-mqtt');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Registry } = require('azure-iothub');
const { Hub, bin, dataDir } = require('./lib/hub');
const { startProvisioning } = require('./lib/dps');

const other = '127.0.0.2';
let hub;
let otherHub;
let service;
let registry;
let otherRegistry;
let idScope;
let webhook;
const webhookRequests = [];
let webhookAnswer = () => ({});

const cli = (...args) => execFileSync(bin, [...args, '--data-dir', dataDir]).toString();

before(async () => {
  ({ hub, idScope, service, registry } = await startProvisioning(['--bind', '127.0.0.1']));
  // The other hub: an instance of its own whose certificate the same development CA signs, so
  // this hub and the SDKs trust it.
  const otherDir = path.join(process.env.IOTHUB_WORK, 'other-hub');
  fs.mkdirSync(path.join(otherDir, 'tls'), { recursive: true });
  for (const f of ['ca.pem', 'ca.key']) fs.copyFileSync(path.join(dataDir, 'tls', f), path.join(otherDir, 'tls', f));
  execFileSync(bin, ['init', '--data-dir', otherDir, '--hostname', other]);
  otherHub = await Hub.start(['--bind', other], { dir: otherDir, host: other });
  const otherString = execFileSync(bin, ['connection-string', '--data-dir', otherDir]).toString().trim();
  otherRegistry = Registry.fromConnectionString(otherString);
  cli('dps', 'linked-hub', 'add', '--connection-string', otherString);

  webhook = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const request = JSON.parse(body);
      webhookRequests.push(request);
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(webhookAnswer(request)));
    });
  });
  await new Promise((resolve) => webhook.listen(0, '127.0.0.1', resolve));
});
after(async () => {
  webhook?.close();
  await otherHub?.stop();
  await hub?.stop();
  setTimeout(() => process.exit(), 2000).unref();
});

const derive = (groupKey, id) =>
  crypto.createHmac('sha256', Buffer.from(groupKey, 'base64')).update(id, 'utf8').digest('base64');

function provision(id, key, { transport = new ProvisioningHttp(), payload } = {}) {
  const client = ProvisioningDeviceClient.create('localhost', idScope, transport, new SymmetricKeySecurityClient(id, key));
  if (payload !== undefined) client.setProvisioningPayload(payload);
  return client.register();
}

async function connect(result, key) {
  const client = Client.fromConnectionString(`HostName=${result.assignedHub};DeviceId=${result.deviceId};SharedAccessKey=${key}`, Mqtt);
  await client.open();
  try {
    await client.sendEvent(new Message('hello from an allocated device'));
    return (await client.getTwin()).properties.desired;
  } finally {
    await client.close();
  }
}

async function group(id, extra = {}) {
  const g = (await service.createOrUpdateEnrollmentGroup({ enrollmentGroupId: id, attestation: { type: 'symmetricKey' }, ...extra })).responseBody;
  return g.attestation.symmetricKey.primaryKey;
}

describe('linked hubs', () => {
  it('lists this hub and the linked one, without keys', () => {
    const hubs = JSON.parse(cli('dps', 'linked-hub', 'list'));
    assert.deepEqual(hubs.map((h) => h.hostName), ['localhost', other]);
    assert.equal(hubs[0].self, true);
    assert.match(hubs[1].connectionString, /SharedAccessKey=\*\*\*\*/);
    assert.equal(hubs[1].allocationWeight, 1);
  });

  it('hashed allocation spreads a group over both hubs; each device lives and connects where it was assigned', async () => {
    const groupKey = await group('spread', { initialTwin: { properties: { desired: { fleet: 'spread' } } } });
    const where = {};
    for (let i = 0; i < 10; i++) {
      const id = `spread-${i}`;
      const result = await provision(id, derive(groupKey, id), { transport: i % 2 ? new ProvisioningMqtt() : new ProvisioningHttp() });
      assert.equal(result.status, 'assigned');
      where[id] = result.assignedHub;
      const holder = result.assignedHub === other ? otherRegistry : registry;
      const notHolder = result.assignedHub === other ? registry : otherRegistry;
      assert.equal((await holder.get(id)).responseBody.deviceId, id);
      await assert.rejects(notHolder.get(id), (e) => e.name === 'DeviceNotFoundError');
    }
    const hubs = new Set(Object.values(where));
    assert.deepEqual([...hubs].sort(), ['127.0.0.2', 'localhost'], `both hubs take devices: ${JSON.stringify(where)}`);
    const onOther = Object.keys(where).find((id) => where[id] === other);
    const desired = await connect({ assignedHub: other, deviceId: onOther }, derive(groupKey, onOther));
    assert.equal(desired.fleet, 'spread', 'the initial twin is applied in the linked hub');
    // The same device lands on the same hub again.
    const again = await provision(onOther, derive(groupKey, onOther));
    assert.equal(again.assignedHub, other);
    assert.equal(again.substatus, 'deviceDataMigrated');
  });

  it('static allocation sends an enrollment\'s device to the hub it names', async () => {
    const e = (await service.createOrUpdateIndividualEnrollment({
      registrationId: 'pinned-1', attestation: { type: 'symmetricKey' }, allocationPolicy: 'static', iotHubs: [other],
      initialTwin: { tags: { pinned: true } },
    })).responseBody;
    const result = await provision('pinned-1', e.attestation.symmetricKey.primaryKey);
    assert.equal(result.assignedHub, other);
    assert.equal(result.substatus, 'initialAssignment');
    assert.deepEqual((await otherRegistry.getTwin('pinned-1')).responseBody.tags, { pinned: true });

    // Pinned to this hub instead, the device moves with its data; pinned back, it returns to the
    // hub it was first assigned to.
    const pinTo = async (hub) => service.createOrUpdateIndividualEnrollment({
      ...(await service.getIndividualEnrollment('pinned-1')).responseBody, iotHubs: [hub],
    });
    await otherRegistry.updateTwin('pinned-1', { tags: { moved: 'with its data' } }, '*');
    await pinTo('localhost');
    const moved = await provision('pinned-1', e.attestation.symmetricKey.primaryKey);
    assert.equal(moved.assignedHub, 'localhost');
    assert.equal(moved.substatus, 'deviceDataMigrated');
    assert.equal((await registry.getTwin('pinned-1')).responseBody.tags.moved, 'with its data');
    await pinTo(other);
    const back = await provision('pinned-1', e.attestation.symmetricKey.primaryKey, { transport: new ProvisioningMqtt() });
    assert.equal(back.assignedHub, other);
    assert.equal(back.substatus, 'reprovisionedToInitialAssignment');
    const state = (await service.getDeviceRegistrationState('pinned-1')).responseBody;
    assert.equal(state.substatus, 'reprovisionedToInitialAssignment');
    assert.equal(Object.keys(state).some((k) => /before/i.test(k)), false, 'no internal fields shown');
  });

  it('keeps this hub out of hashed allocation when told to', async () => {
    cli('dps', 'linked-hub', 'add', '--host', 'localhost', '--apply-allocation-policy', 'false');
    try {
      const groupKey = await group('elsewhere');
      for (let i = 0; i < 4; i++) {
        const id = `elsewhere-${i}`;
        assert.equal((await provision(id, derive(groupKey, id))).assignedHub, other);
      }
    } finally {
      cli('dps', 'linked-hub', 'add', '--host', 'localhost', '--apply-allocation-policy', 'true');
    }
  });
});

describe('custom allocation webhook', () => {
  it('gets the payload and the linked hubs, chooses the hub, and its payload reaches the device', async () => {
    webhookAnswer = (request) => ({
      iotHubHostName: request.deviceRuntimeContext.payload.site === 'east' ? other : 'localhost',
      initialTwin: { tags: { chosenBy: 'webhook' }, properties: { desired: { region: request.deviceRuntimeContext.payload.site } } },
      payload: { greeting: `welcome ${request.deviceRuntimeContext.registrationId}` },
    });
    const e = (await service.createOrUpdateIndividualEnrollment({
      registrationId: 'custom-1', attestation: { type: 'symmetricKey' }, allocationPolicy: 'custom',
      customAllocationDefinition: { webhookUrl: `http://127.0.0.1:${webhook.address().port}/allocate?code=secret`, apiVersion: '2021-10-01' },
    })).responseBody;
    const key = e.attestation.symmetricKey.primaryKey;
    const result = await provision('custom-1', key, { transport: new ProvisioningMqtt(), payload: { site: 'east' } });
    assert.equal(result.status, 'assigned');
    assert.equal(result.assignedHub, other);
    assert.deepEqual(result.payload, { greeting: 'welcome custom-1' });

    const request = webhookRequests.at(-1);
    assert.equal(request.individualEnrollment.registrationId, 'custom-1');
    assert.deepEqual(request.individualEnrollment.attestation, { type: 'symmetricKey' }, 'keys are not sent to the webhook');
    assert.deepEqual(request.deviceRuntimeContext.payload, { site: 'east' });
    assert.deepEqual(request.linkedHubs.sort(), ['127.0.0.2', 'localhost']);
    const desired = await connect(result, key);
    assert.equal(desired.region, 'east');
    assert.deepEqual((await otherRegistry.getTwin('custom-1')).responseBody.tags, { chosenBy: 'webhook' });
  });

  it('fails a registration the webhook sends to a hub that is not linked, and creates nothing', async () => {
    webhookAnswer = () => ({ iotHubHostName: 'nowhere.example' });
    const e = (await service.createOrUpdateIndividualEnrollment({
      registrationId: 'custom-bad', attestation: { type: 'symmetricKey' }, allocationPolicy: 'custom',
      customAllocationDefinition: { webhookUrl: `http://127.0.0.1:${webhook.address().port}/allocate` },
    })).responseBody;
    await assert.rejects(provision('custom-bad', e.attestation.symmetricKey.primaryKey));
    const state = (await service.getDeviceRegistrationState('custom-bad')).responseBody;
    assert.equal(state.status, 'failed');
    assert.match(state.errorMessage, /nowhere\.example/);
    for (const r of [registry, otherRegistry])
      await assert.rejects(r.get('custom-bad'), (err) => err.name === 'DeviceNotFoundError');
  });
});

describe('unlinking', () => {
  it('a removed hub takes no more devices; this hub cannot be removed', async () => {
    cli('dps', 'linked-hub', 'remove', other);
    const hubs = JSON.parse(cli('dps', 'linked-hub', 'list'));
    assert.deepEqual(hubs.map((h) => h.hostName), ['localhost']);
    const groupKey = (await service.getEnrollmentGroupAttestationMechanism('elsewhere')).responseBody.symmetricKey.primaryKey;
    const back = await provision('elsewhere-0', derive(groupKey, 'elsewhere-0'));
    assert.equal(back.assignedHub, 'localhost', 'with its hub gone the device is reassigned');
    assert.throws(() => execFileSync(bin, ['dps', 'linked-hub', 'remove', 'localhost', '--data-dir', dataDir], { stdio: 'pipe' }),
      (e) => /always linked/.test(e.stderr.toString()));
  });
});
