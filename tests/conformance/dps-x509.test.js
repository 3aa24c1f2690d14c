// X.509 registration with the unmodified provisioning device SDK (azure-iot-security-x509, Http,
// Mqtt and Amqp transports): a self-signed certificate of an individual enrollment, and leaves signed
// by a CA that a group references (registered with the hub and verified by proof of possession)
// or by a group's own signing certificate; then azure-iot-device connects to the assigned hub with
// the same certificate. Refusals: a certificate that is not the enrollment's, a CN that is not the
// registration id, a leaf signed by another CA, an expired leaf, a leaf of a referenced CA whose
// possession was not proven (until it is).
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http: ProvisioningHttp } = require('azure-iot-provisioning-device-http');
const { Mqtt: ProvisioningMqtt } = require('azure-iot-provisioning-device-mqtt');
const { Amqp: ProvisioningAmqp } = require('azure-iot-provisioning-device-amqp');
const { X509Security } = require('azure-iot-security-x509');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { startProvisioning } = require('./lib/dps');
const pki = require('./lib/pki');

let hub;
let service;
let registry;
let idScope;

before(async () => {
  ({ hub, idScope, service, registry } = await startProvisioning());
  pki.selfSigned('self', 'cam-1');
  pki.selfSigned('other', 'cam-1');
  pki.selfSigned('factory', 'Factory Root', pki.caExtensions);
  pki.selfSigned('line', 'Line Signing CA', pki.caExtensions);
  pki.selfSigned('rogue', 'Rogue CA', pki.caExtensions);
  pki.signed('plant-1', 'plant-1', 'factory');
  pki.signed('robot-1', 'robot-1', 'line');
  pki.signed('plant-rogue', 'plant-2', 'rogue');
  pki.signed('plant-old', 'plant-3', 'factory', -1);
  pki.signed('plant-amqp', 'plant-amqp', 'factory');
  pki.registerVerifiedCa('factory-root', 'factory');
});
after(async () => {
  await hub?.stop();
  pki.cleanUp();
  setTimeout(() => process.exit(), 2000).unref();
});

function provision(registrationId, name, transport) {
  const client = ProvisioningDeviceClient.create('localhost', idScope, transport,
    new X509Security(registrationId, { cert: pki.read(`${name}.pem`), key: pki.read(`${name}.key`) }));
  return client.register();
}

async function connect(result, name) {
  const client = Client.fromConnectionString(`HostName=${result.assignedHub};DeviceId=${result.deviceId};x509=true`, Mqtt);
  await client.setOptions({ cert: pki.read(`${name}.pem`), key: pki.read(`${name}.key`) });
  await client.open();
  await client.sendEvent(new Message('provisioned with a certificate'));
  await client.close();
}

describe('X.509 registration', () => {
  it('registers a self-signed certificate of an individual enrollment', async () => {
    await service.createOrUpdateIndividualEnrollment({
      registrationId: 'cam-1',
      attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: pki.read('self.pem') } } } },
    });
    const result = await provision('cam-1', 'self', new ProvisioningHttp());
    assert.equal(result.status, 'assigned');
    assert.equal(result.deviceId, 'cam-1');
    await connect(result, 'self');
    const device = (await registry.get('cam-1')).responseBody;
    assert.equal(device.authentication.type, 'selfSigned');
  });

  it('registers the same self-signed device over AMQP, and refuses another certificate with the same CN', async () => {
    const again = await provision('cam-1', 'self', new ProvisioningAmqp());
    assert.equal(again.status, 'assigned');
    assert.equal(again.substatus, 'deviceDataMigrated');
    await assert.rejects(provision('cam-1', 'other', new ProvisioningHttp()));
    await assert.rejects(provision('cam-1', 'other', new ProvisioningAmqp()));
  });

  it('registers leaves signed by a group\'s verified CA or by its signing certificate', async () => {
    await service.createOrUpdateEnrollmentGroup({
      enrollmentGroupId: 'plant', attestation: { type: 'x509', x509: { caReferences: { primary: 'factory-root' } } },
    });
    await service.createOrUpdateEnrollmentGroup({
      enrollmentGroupId: 'robots',
      attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: pki.read('line.pem') } } } },
    });
    const plant = await provision('plant-1', 'plant-1', new ProvisioningMqtt());
    assert.equal(plant.status, 'assigned');
    assert.equal(plant.deviceId, 'plant-1');
    await connect(plant, 'plant-1');
    assert.equal((await registry.get('plant-1')).responseBody.authentication.type, 'certificateAuthority');
    const robot = await provision('robot-1', 'robot-1', new ProvisioningHttp());
    assert.equal(robot.deviceId, 'robot-1');
    const state = (await service.getDeviceRegistrationState('robot-1')).responseBody;
    assert.equal(state.x509.enrollmentGroupId, 'robots');
    const overAmqp = await provision('plant-amqp', 'plant-amqp', new ProvisioningAmqp());
    assert.equal(overAmqp.deviceId, 'plant-amqp');
    await connect(overAmqp, 'plant-amqp');
  });

  it('refuses a leaf of another CA, a CN that is not the registration id, and an expired leaf', async () => {
    await assert.rejects(provision('plant-2', 'plant-rogue', new ProvisioningHttp()));
    await assert.rejects(provision('plant-9', 'plant-1', new ProvisioningHttp()));
    await assert.rejects(provision('plant-3', 'plant-old', new ProvisioningMqtt()));
    await assert.rejects(provision('plant-2', 'plant-rogue', new ProvisioningAmqp()));
    await assert.rejects(provision('plant-9', 'plant-1', new ProvisioningAmqp()));
    for (const id of ['plant-2', 'plant-9', 'plant-3'])
      await assert.rejects(registry.get(id), (e) => e.name === 'DeviceNotFoundError');
  });

  it('refuses a leaf of a referenced CA until possession of its key is proven', async () => {
    pki.selfSigned('unproven', 'Unproven CA', pki.caExtensions);
    pki.signed('kiosk-1', 'kiosk-1', 'unproven');
    pki.registerCa('unproven-ca', 'unproven');
    await service.createOrUpdateEnrollmentGroup({
      enrollmentGroupId: 'kiosks', attestation: { type: 'x509', x509: { caReferences: { primary: 'unproven-ca' } } },
    });
    await assert.rejects(provision('kiosk-1', 'kiosk-1', new ProvisioningHttp()));
    await assert.rejects(registry.get('kiosk-1'), (e) => e.name === 'DeviceNotFoundError');
    pki.verifyCa('unproven-ca', 'unproven');
    const result = await provision('kiosk-1', 'kiosk-1', new ProvisioningMqtt());
    assert.equal(result.status, 'assigned');
    assert.equal(result.deviceId, 'kiosk-1');
  });
});
