// Device registration with the unmodified provisioning device SDK (azure-iot-provisioning-device
// with its Http, Mqtt, MqttWs, Amqp and AmqpWs transports and azure-iot-security-symmetric-key): an individual symmetric-key
// enrollment and a group whose device key is derived from the group key; the SDK polls the
// operation until `assigned`; then azure-iot-device connects to the assigned hub with the same key,
// sends telemetry and sees the initial twin. Refusals: a wrong key and an unknown registration
// (401), a disabled enrollment (no device created). Registering again migrates; a device deleted
// from the registry comes back; a disabled device stays disabled. Registration states through the
// service SDK.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const util = require('node:util');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http: ProvisioningHttp } = require('azure-iot-provisioning-device-http');
const { Mqtt: ProvisioningMqtt, MqttWs: ProvisioningMqttWs } = require('azure-iot-provisioning-device-mqtt');
const { Amqp: ProvisioningAmqp, AmqpWs: ProvisioningAmqpWs } = require('azure-iot-provisioning-device-amqp');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { eventually } = require('./lib/hub');
const { startProvisioning } = require('./lib/dps');
const { RawAmqp } = require('./lib/raw-amqp');
const { SharedAccessSignature } = require('azure-iot-common');

let hub;
let service;
let registry;
let idScope;
const clients = [];

before(async () => {
  ({ hub, idScope, service, registry } = await startProvisioning());
});
after(async () => {
  for (const c of clients) await c.close().catch(() => {});
  await hub?.stop();
  setTimeout(() => process.exit(), 2000).unref();
});

function provision(registrationId, key, transport = new ProvisioningHttp()) {
  const client = ProvisioningDeviceClient.create('localhost', idScope, transport,
    new SymmetricKeySecurityClient(registrationId, key));
  return client.register();
}

const derive = (groupKey, registrationId) =>
  crypto.createHmac('sha256', Buffer.from(groupKey, 'base64')).update(registrationId, 'utf8').digest('base64');

async function connectAndCheck(result, key, desired) {
  const client = Client.fromConnectionString(
    `HostName=${result.assignedHub};DeviceId=${result.deviceId};SharedAccessKey=${key}`, Mqtt);
  clients.push(client);
  await client.open();
  await client.sendEvent(new Message(JSON.stringify({ provisioned: true })));
  const twin = await client.getTwin();
  for (const [k, v] of Object.entries(desired)) assert.deepEqual(twin.properties.desired[k], v);
  await client.close();
}

describe('symmetric key over HTTPS', () => {
  it('registers an individual enrollment, and the device connects with the same key', async () => {
    const enrollment = (await service.createOrUpdateIndividualEnrollment({
      registrationId: 'thermo-1',
      deviceId: 'thermo-1-device',
      attestation: { type: 'symmetricKey' },
      initialTwin: { tags: { site: 'north' }, properties: { desired: { interval: 30 } } },
    })).responseBody;
    const key = enrollment.attestation.symmetricKey.primaryKey;
    const result = await provision('thermo-1', key);
    assert.equal(result.status, 'assigned');
    assert.equal(result.assignedHub, 'localhost');
    assert.equal(result.deviceId, 'thermo-1-device');
    assert.equal(result.substatus, 'initialAssignment');
    await connectAndCheck(result, key, { interval: 30 });
    const twin = (await registry.getTwin('thermo-1-device')).responseBody;
    assert.deepEqual(twin.tags, { site: 'north' });
    const state = (await service.getDeviceRegistrationState('thermo-1')).responseBody;
    assert.equal(state.status, 'assigned');
    assert.equal(state.deviceId, 'thermo-1-device');
  });

  it('registers a group device with the key derived from the group key', async () => {
    const group = (await service.createOrUpdateEnrollmentGroup({
      enrollmentGroupId: 'floor-2',
      attestation: { type: 'symmetricKey' },
      initialTwin: { properties: { desired: { mode: 'eco' } } },
    })).responseBody;
    const groupKey = group.attestation.symmetricKey.primaryKey;
    for (const id of ['lamp-1', 'lamp-2']) {
      const key = derive(groupKey, id);
      const result = await provision(id, key);
      assert.equal(result.status, 'assigned');
      assert.equal(result.deviceId, id, 'a group device is named by its registration id');
      await connectAndCheck(result, key, { mode: 'eco' });
    }
    const states = await service.createEnrollmentGroupDeviceRegistrationStateQuery(
      { query: 'SELECT * FROM enrollments' }, 'floor-2').next();
    assert.deepEqual(states.responseBody.map((s) => s.registrationId).sort(), ['lamp-1', 'lamp-2']);
  });

  it('refuses a wrong key and an unknown registration', async () => {
    const wrong = crypto.randomBytes(32).toString('base64');
    await assert.rejects(provision('thermo-1', wrong), (e) => /401|nauthori/i.test(`${e.message} ${e.statusCode ?? ''}`));
    await assert.rejects(provision('nobody-here', wrong), (e) => /401|nauthori/i.test(`${e.message} ${e.statusCode ?? ''}`));
  });

  it('a disabled enrollment provisions nothing', async () => {
    const enrollment = (await service.createOrUpdateIndividualEnrollment({
      registrationId: 'off-1', attestation: { type: 'symmetricKey' }, provisioningStatus: 'disabled',
    })).responseBody;
    await assert.rejects(provision('off-1', enrollment.attestation.symmetricKey.primaryKey));
    await assert.rejects(registry.get('off-1'), (e) => e.name === 'DeviceNotFoundError');
  });

  it('registering again migrates; a deleted device comes back; a disabled device stays disabled', async () => {
    const key = (await service.getIndividualEnrollmentAttestationMechanism('thermo-1')).responseBody.symmetricKey.primaryKey;
    const again = await provision('thermo-1', key);
    assert.equal(again.substatus, 'deviceDataMigrated');

    await registry.delete('thermo-1-device');
    const back = await provision('thermo-1', key);
    assert.equal(back.status, 'assigned');
    await eventually(async () => (await registry.get('thermo-1-device')).responseBody.deviceId === 'thermo-1-device',
      5000, 'the device back in the registry');

    const device = (await registry.get('thermo-1-device')).responseBody;
    await registry.update({ ...device, status: 'disabled' });
    await provision('thermo-1', key);
    assert.equal((await registry.get('thermo-1-device')).responseBody.status, 'disabled');
  });
});

describe('symmetric key over MQTT', () => {
  it('registers an individual enrollment and a group device, and both connect', async () => {
    const enrollment = (await service.createOrUpdateIndividualEnrollment({
      registrationId: 'mqtt-1', attestation: { type: 'symmetricKey' },
      initialTwin: { properties: { desired: { via: 'mqtt' } } },
    })).responseBody;
    const key = enrollment.attestation.symmetricKey.primaryKey;
    const result = await provision('mqtt-1', key, new ProvisioningMqtt());
    assert.equal(result.status, 'assigned');
    assert.equal(result.deviceId, 'mqtt-1');
    await connectAndCheck(result, key, { via: 'mqtt' });

    const groupKey = (await service.getEnrollmentGroupAttestationMechanism('floor-2')).responseBody.symmetricKey.primaryKey;
    const lampKey = derive(groupKey, 'lamp-3');
    const lamp = await provision('lamp-3', lampKey, new ProvisioningMqtt());
    assert.equal(lamp.deviceId, 'lamp-3');
    await connectAndCheck(lamp, lampKey, { mode: 'eco' });
    const wsKey = derive(groupKey, 'lamp-mqtt-ws');
    const overWebSockets = await provision('lamp-mqtt-ws', wsKey, new ProvisioningMqttWs());
    assert.equal(overWebSockets.deviceId, 'lamp-mqtt-ws');
    await connectAndCheck(overWebSockets, wsKey, { mode: 'eco' });
  });

  it('refuses a wrong key', async () => {
    await assert.rejects(provision('mqtt-1', crypto.randomBytes(32).toString('base64'), new ProvisioningMqtt()));
    await assert.rejects(registry.get('nobody-mqtt'), (e) => e.name === 'DeviceNotFoundError');
  });
});

describe('symmetric key over AMQP and AMQP over WebSockets', () => {
  it('registers an individual enrollment and a group device, and both connect', async () => {
    const enrollment = (await service.createOrUpdateIndividualEnrollment({
      registrationId: 'amqp-1', deviceId: 'amqp-1-device', attestation: { type: 'symmetricKey' },
      initialTwin: { properties: { desired: { via: 'amqp' } } },
    })).responseBody;
    const key = enrollment.attestation.symmetricKey.primaryKey;
    const result = await provision('amqp-1', key, new ProvisioningAmqp());
    assert.equal(result.status, 'assigned');
    assert.equal(result.deviceId, 'amqp-1-device');
    assert.equal(result.substatus, 'initialAssignment');
    await connectAndCheck(result, key, { via: 'amqp' });

    const groupKey = (await service.getEnrollmentGroupAttestationMechanism('floor-2')).responseBody.symmetricKey.primaryKey;
    const lampKey = derive(groupKey, 'lamp-ws');
    const lamp = await provision('lamp-ws', lampKey, new ProvisioningAmqpWs());
    assert.equal(lamp.deviceId, 'lamp-ws');
    await connectAndCheck(lamp, lampKey, { mode: 'eco' });
    const again = await provision('lamp-ws', lampKey, new ProvisioningAmqpWs());
    assert.equal(again.substatus, 'deviceDataMigrated');
  });

  it('refuses a wrong key and a disabled enrollment, and creates nothing', async () => {
    await assert.rejects(provision('amqp-nobody', crypto.randomBytes(32).toString('base64'), new ProvisioningAmqp()),
      // The SDK hands up the link's AMQP error as rhea decoded it: the condition is inside.
      (e) => /amqp:unauthorized-access/.test(util.inspect(e, { depth: 5 })));
    await assert.rejects(registry.get('amqp-nobody'), (e) => e.name === 'DeviceNotFoundError');
    const off = (await service.createOrUpdateIndividualEnrollment({
      registrationId: 'amqp-off', attestation: { type: 'symmetricKey' }, provisioningStatus: 'disabled',
    })).responseBody;
    await assert.rejects(provision('amqp-off', off.attestation.symmetricKey.primaryKey, new ProvisioningAmqp()));
    await assert.rejects(registry.get('amqp-off'), (e) => e.name === 'DeviceNotFoundError');
  });
});

describe('provisioning over a raw AMQP connection', () => {
  it('serves only the registration signed in, and refuses unknown operations clearly', async () => {
    const key = (await service.getIndividualEnrollmentAttestationMechanism('amqp-1')).responseBody.symmetricKey.primaryKey;
    const resource = `${idScope}/registrations/amqp-1`;
    const sas = SharedAccessSignature.create(resource, 'registration', key, Math.floor(Date.now() / 1000) + 600).toString();
    const amqp = await RawAmqp.open({ username: resource, password: sas, cbs: false });
    try {
      const other = amqp.receiver(`${idScope}/registrations/amqp-2`);
      assert.equal((await other.detached()).condition, 'amqp:unauthorized-access');

      const [out, replies] = await amqp.requestLinks(resource);
      const unknown = await out.send({ correlation_id: 'c-1', application_properties: { 'iotdps-operation-type': 'iotdps-teleport' } });
      assert.equal(unknown.outcome, 'rejected');
      assert.equal(unknown.condition, 'amqp:not-implemented');
      const lost = await out.send({
        correlation_id: 'c-2', body: ' ',
        application_properties: { 'iotdps-operation-type': 'iotdps-get-operationstatus', 'iotdps-operation-id': 'no-such-operation' },
      });
      assert.equal(lost.outcome, 'rejected');
      assert.equal(lost.condition, 'amqp:not-found');

      const answer = new Promise((resolve) => amqp.replies.set('c-3', resolve));
      const sent = await out.send({
        correlation_id: 'c-3', body: JSON.stringify({ registrationId: 'amqp-1' }),
        application_properties: { 'iotdps-operation-type': 'iotdps-register', 'iotdps-forceRegistration': false },
      });
      assert.equal(sent.outcome, 'accepted');
      const reply = await answer;
      assert.equal(reply.application_properties['iotdps-status'], 'assigning');
      assert.equal(Number(reply.application_properties['retry-after']) > 0, true);
      const operationId = reply.application_properties['iotdps-operation-id'];
      assert.equal(JSON.parse(Buffer.from(reply.body.content ?? reply.body).toString()).operationId, operationId);
      assert.ok(replies.opened);
    } finally {
      await amqp.close();
    }
  });
});
