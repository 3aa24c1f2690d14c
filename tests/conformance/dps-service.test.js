// The provisioning service's back-end API with the unmodified ProvisioningServiceClient
// (azure-iot-provisioning-service) and `iothub connection-string --dps`: individual enrollments
// and enrollment groups created, read, updated with their ETag, queried page by page and deleted;
// keys generated when omitted; the attestation mechanism; bulk operations; refusals (TPM, a stale
// ETag, an unknown enrollment, a hub policy's key) with DPS's error body; `iothub dps id-scope`;
// the `iothub dps enrollment|group|registration|derive-key` commands, with a device registering
// through the unmodified provisioning device client in between.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { execFileSync, spawnSync } = require('node:child_process');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http: ProvisioningHttp } = require('azure-iot-provisioning-device-http');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { Hub, bin, dataDir, connectionString } = require('./lib/hub');

let hub;
let client;

before(async () => {
  hub = await Hub.start();
  const cs = execFileSync(bin, ['connection-string', '--dps', '--data-dir', dataDir]).toString().trim();
  assert.match(cs, /^HostName=localhost;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=/);
  client = ProvisioningServiceClient.fromConnectionString(cs);
});
after(async () => {
  await hub?.stop();
  // The SDK's HTTP agent keeps its connections open: the results are in, so the file ends.
  setTimeout(() => process.exit(), 2000).unref();
});

// The error a call failed with: its HTTP status and DPS's body.
async function failure(promise) {
  try {
    await promise;
  } catch (e) {
    return { status: e.response?.statusCode ?? e.statusCode, body: JSON.parse(e.responseBody || '{}'), e };
  }
  assert.fail('the call succeeded');
}

describe('iothub dps id-scope', () => {
  it('prints the ID scope alone on a line, the same each time', () => {
    const scope = execFileSync(bin, ['dps', 'id-scope', '--data-dir', dataDir]).toString();
    assert.match(scope, /^0ne[0-9A-F]{8}\n$/);
    assert.equal(execFileSync(bin, ['dps', 'id-scope', '--data-dir', dataDir]).toString(), scope);
  });
});

describe('individual enrollments', () => {
  it('creates one with generated keys and Azure\'s defaults, and reads it back', async () => {
    const created = (await client.createOrUpdateIndividualEnrollment({
      registrationId: 'sensor-001',
      deviceId: 'sensor-001-device',
      attestation: { type: 'symmetricKey' },
      initialTwin: { tags: { site: 'north' }, properties: { desired: { interval: 30 } } },
    })).responseBody;
    assert.equal(created.registrationId, 'sensor-001');
    assert.equal(created.deviceId, 'sensor-001-device');
    assert.equal(created.provisioningStatus, 'enabled');
    assert.equal(created.allocationPolicy, 'hashed');
    assert.deepEqual(created.reprovisionPolicy, { updateHubAssignment: true, migrateDeviceData: true });
    assert.ok(created.etag);
    assert.equal(Buffer.from(created.attestation.symmetricKey.primaryKey, 'base64').length, 64);
    const read = (await client.getIndividualEnrollment('SENSOR-001')).responseBody;
    assert.equal(read.etag, created.etag);
    assert.deepEqual(read.initialTwin.tags, { site: 'north' });
    const mechanism = (await client.getIndividualEnrollmentAttestationMechanism('sensor-001')).responseBody;
    assert.equal(mechanism.type, 'symmetricKey');
    assert.equal(mechanism.symmetricKey.primaryKey, created.attestation.symmetricKey.primaryKey);
  });

  it('updates with the current ETag and refuses a stale one with 412', async () => {
    const current = (await client.getIndividualEnrollment('sensor-001')).responseBody;
    const updated = (await client.createOrUpdateIndividualEnrollment({
      ...current, provisioningStatus: 'disabled',
    })).responseBody;
    assert.equal(updated.provisioningStatus, 'disabled');
    assert.notEqual(updated.etag, current.etag);
    const stale = await failure(client.createOrUpdateIndividualEnrollment({ ...current, provisioningStatus: 'enabled' }));
    assert.equal(stale.status, 412);
    assert.equal(stale.body.errorCode, 412002);
    const staleDelete = await failure(client.deleteIndividualEnrollment(current));
    assert.equal(staleDelete.status, 412);
  });

  it('refuses TPM attestation and answers 404 for an unknown enrollment, in DPS\'s error shape', async () => {
    const tpm = await failure(client.createOrUpdateIndividualEnrollment({
      registrationId: 'tpm-1', attestation: { type: 'tpm', tpm: { endorsementKey: 'AAAA' } },
    }));
    assert.equal(tpm.status, 400);
    assert.equal(tpm.body.errorCode, 400004);
    assert.match(tpm.body.message, /TPM attestation is not supported/);
    assert.ok(tpm.body.trackingId && tpm.body.timestampUtc);
    const unknown = await failure(client.getIndividualEnrollment('nobody'));
    assert.equal(unknown.status, 404);
  });

  it('queries page by page with a continuation token', async () => {
    for (let i = 0; i < 4; i += 1) {
      await client.createOrUpdateIndividualEnrollment({ registrationId: `paged-${i}`, attestation: { type: 'symmetricKey' } });
    }
    const query = client.createIndividualEnrollmentQuery({ query: 'SELECT * FROM enrollments' }, 2);
    const seen = [];
    let pages = 0;
    while (query.hasMoreResults && pages < 10) {
      // The SDK's promise form resumes only from a token it is given.
      const page = await query.next(query.continuationToken);
      seen.push(...page.responseBody.map((e) => e.registrationId));
      pages += 1;
    }
    assert.deepEqual(seen, ['paged-0', 'paged-1', 'paged-2', 'paged-3', 'sensor-001']);
    assert.equal(pages, 3);
  });

  it('runs bulk operations and reports each failure', async () => {
    // (The SDK's promise form of this call never settles: the callback form it is.)
    const r = await new Promise((resolve, reject) => client.runBulkEnrollmentOperation({
      mode: 'create',
      enrollments: [
        { registrationId: 'bulk-1', attestation: { type: 'symmetricKey' } },
        { registrationId: 'paged-0', attestation: { type: 'symmetricKey' } },
      ],
    }, (err, result) => (err ? reject(err) : resolve(result))));
    assert.equal(r.isSuccessful, false);
    assert.deepEqual(r.errors.map((e) => [e.registrationId, e.errorCode]), [['paged-0', 409201]]);
    await client.getIndividualEnrollment('bulk-1');
  });

  it('deletes one', async () => {
    await client.deleteIndividualEnrollment('bulk-1');
    assert.equal((await failure(client.getIndividualEnrollment('bulk-1'))).status, 404);
  });
});

describe('enrollment groups', () => {
  it('creates a symmetric-key group, reads its keys through the attestation mechanism, and deletes it', async () => {
    const created = (await client.createOrUpdateEnrollmentGroup({
      enrollmentGroupId: 'line-7',
      attestation: { type: 'symmetricKey' },
      capabilities: { iotEdge: true },
    })).responseBody;
    assert.equal(created.enrollmentGroupId, 'line-7');
    assert.equal(created.capabilities.iotEdge, true);
    const mechanism = (await client.getEnrollmentGroupAttestationMechanism('line-7')).responseBody;
    assert.equal(mechanism.symmetricKey.primaryKey, created.attestation.symmetricKey.primaryKey);
    const page = await client.createEnrollmentGroupQuery({ query: 'SELECT * FROM enrollmentGroups' }).next();
    assert.deepEqual(page.responseBody.map((g) => g.enrollmentGroupId), ['line-7']);
    await client.deleteEnrollmentGroup('line-7');
    assert.equal((await failure(client.getEnrollmentGroup('line-7'))).status, 404);
  });
});

describe('authorization', () => {
  it('refuses a hub policy\'s key with 401', async () => {
    const hubCs = connectionString('iothubowner');
    const wrong = ProvisioningServiceClient.fromConnectionString(hubCs);
    const r = await failure(wrong.getIndividualEnrollment('sensor-001'));
    assert.equal(r.status, 401);
    assert.equal(r.body.errorCode, 401002);
  });
});

describe('iothub dps commands', () => {
  const dps = (...args) => JSON.parse(execFileSync(bin, ['dps', ...args, '--data-dir', dataDir]).toString() || 'null');
  const fails = (...args) => {
    const r = spawnSync(bin, ['dps', ...args, '--data-dir', dataDir]);
    assert.equal(r.status, 1, `iothub dps ${args.join(' ')} should fail`);
    return r.stderr.toString();
  };

  it('creates, shows with keys, lists, registers, and deletes an individual enrollment', async () => {
    const created = dps('enrollment', 'create', '--registration-id', 'cli-1', '--device-id', 'cli-device',
      '--initial-twin-tags', '{"line":"cli"}', '--reprovision-policy', 'never', '--allocation-policy', 'static',
      '--iot-hubs', 'localhost');
    assert.equal(created.registrationId, 'cli-1');
    assert.deepEqual(created.reprovisionPolicy, { updateHubAssignment: false, migrateDeviceData: true });
    assert.deepEqual(created.iotHubs, ['localhost']);
    const shown = dps('enrollment', 'show', 'cli-1', '--show-keys');
    const key = shown.attestation.symmetricKey.primaryKey;
    assert.ok(key, 'the keys are shown');
    assert.ok(dps('enrollment', 'list').some((e) => e.registrationId === 'cli-1'));

    const result = await ProvisioningDeviceClient.create('localhost', execFileSync(bin, ['dps', 'id-scope', '--data-dir', dataDir]).toString().trim(),
      new ProvisioningHttp(), new SymmetricKeySecurityClient('cli-1', key)).register();
    assert.equal(result.deviceId, 'cli-device');
    assert.equal(dps('registration', 'show', 'cli-1').status, 'assigned');
    dps('registration', 'delete', 'cli-1');
    assert.match(fails('registration', 'show', 'cli-1'), /not exist|NotFound|404/i);

    dps('enrollment', 'delete', 'cli-1');
    assert.match(fails('enrollment', 'show', 'cli-1'), /404|not found|NotFound/i);
    assert.match(fails('enrollment', 'create', '--registration-id', 'bad id!'), /registration/i);
  });

  it('creates a group with a given key and derives device keys online and offline', () => {
    const groupKey = crypto.randomBytes(32).toString('base64');
    const g = dps('group', 'create', '--group-id', 'cli-group', '--primary-key', groupKey, '--provisioning-status', 'disabled');
    assert.equal(g.enrollmentGroupId, 'cli-group');
    assert.equal(g.provisioningStatus, 'disabled');
    const expected = crypto.createHmac('sha256', Buffer.from(groupKey, 'base64')).update('cli-dev-7', 'utf8').digest('base64');
    const derive = (...args) => execFileSync(bin, ['dps', 'derive-key', ...args, '--registration-id', 'cli-dev-7', '--data-dir', dataDir]).toString().trim();
    assert.equal(derive('--group', 'cli-group'), expected);
    assert.equal(derive('--key', groupKey), expected);
    assert.ok(dps('group', 'list').some((x) => x.enrollmentGroupId === 'cli-group'));
    dps('group', 'delete', 'cli-group');
  });
});
