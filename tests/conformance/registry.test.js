// The identity registry through the unmodified azure-iothub service SDK.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Registry, SharedAccessSignature } = require('azure-iothub');
// The service SDK bundles its own copy of the common error classes; use that one.
const errors = require('azure-iothub/dist/common-core/errors');
const { Hub, connectionString, policyKey } = require('./lib/hub');

let hub;
let registry;
before(async () => {
  hub = await Hub.start();
  registry = Registry.fromConnectionString(connectionString());
});
after(async () => {
  const { code } = await hub.stop();
  assert.equal(code, 0, 'SIGTERM ends the hub cleanly');
});

const base64Key = /^[A-Za-z0-9+/]{43}=$/;

async function rejectsWith(promise, ErrorType, status, code) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof ErrorType, `expected ${ErrorType.name}, got ${err.constructor.name}: ${err.message}`);
    if (status) assert.equal(err.response.statusCode, status);
    if (code) assert.equal(err.response.headers['iothub-errorcode'], code);
    return true;
  });
}

describe('devices', () => {
  it('create generates keys, a generation id and an etag', async () => {
    const { responseBody: d, httpResponse } = await registry.create({ deviceId: 'sdk-dev-1', status: 'enabled' });
    assert.equal(httpResponse.statusCode, 200);
    assert.equal(d.deviceId, 'sdk-dev-1');
    assert.match(d.authentication.symmetricKey.primaryKey, base64Key);
    assert.match(d.authentication.symmetricKey.secondaryKey, base64Key);
    assert.notEqual(d.authentication.symmetricKey.primaryKey, d.authentication.symmetricKey.secondaryKey);
    assert.equal(d.authentication.type, 'sas');
    assert.ok(d.generationId.length > 0);
    assert.ok(d.etag.length > 0);
    assert.equal(d.status, 'enabled');
    assert.equal(d.connectionState, 'Disconnected');
    assert.equal(d.cloudToDeviceMessageCount, 0);
    assert.equal(d.lastActivityTime, '0001-01-01T00:00:00Z');
    assert.deepEqual(d.capabilities, { iotEdge: false });
  });

  it('get returns what create stored', async () => {
    const { responseBody: d } = await registry.get('sdk-dev-1');
    assert.equal(d.deviceId, 'sdk-dev-1');
    assert.match(d.authentication.symmetricKey.primaryKey, base64Key);
  });

  it('creating an existing id is DeviceAlreadyExists (409)', async () => {
    await rejectsWith(registry.create({ deviceId: 'sdk-dev-1' }), errors.DeviceAlreadyExistsError, 409, 'DeviceAlreadyExists');
  });

  it('update changes status, keeps keys and generation, bumps the etag', async () => {
    const before = (await registry.get('sdk-dev-1')).responseBody;
    const { responseBody: after } = await registry.update({ ...before, status: 'disabled', statusReason: 'maintenance' });
    assert.equal(after.status, 'disabled');
    assert.equal(after.statusReason, 'maintenance');
    assert.equal(after.generationId, before.generationId);
    assert.equal(after.authentication.symmetricKey.primaryKey, before.authentication.symmetricKey.primaryKey);
    assert.notEqual(after.etag, before.etag);
    assert.notEqual(after.statusUpdatedTime, '0001-01-01T00:00:00Z');
  });

  it('keys and X.509 thumbprints given by the caller are kept', async () => {
    const key = Buffer.alloc(32, 7).toString('base64');
    const { responseBody: sas } = await registry.create({
      deviceId: 'sdk-dev-keys', authentication: { symmetricKey: { primaryKey: key, secondaryKey: key } },
    });
    assert.equal(sas.authentication.symmetricKey.primaryKey, key);
    const print = 'AB'.repeat(20);
    const { responseBody: x509 } = await registry.create({
      deviceId: 'sdk-dev-x509', authentication: { x509Thumbprint: { primaryThumbprint: print } },
    });
    assert.equal(x509.authentication.type, 'selfSigned');
    assert.equal(x509.authentication.x509Thumbprint.primaryThumbprint, print);
    const { responseBody: ca } = await registry.create({
      deviceId: 'sdk-dev-ca', authentication: { type: 'certificateAuthority' },
    });
    assert.equal(ca.authentication.type, 'certificateAuthority');
  });

  it('list includes the devices', async () => {
    const { responseBody: list } = await registry.list();
    const ids = list.map((d) => d.deviceId);
    for (const id of ['sdk-dev-1', 'sdk-dev-keys', 'sdk-dev-x509']) assert.ok(ids.includes(id), id);
  });

  it('ids that need URL encoding round-trip', async () => {
    for (const id of ['dev#hash', 'dev%pct', 'dev?q', 'dev$dollar', "a-b:c.d+e_f*g!h(i)j,k=l@m;n'o"]) {
      const { responseBody: created } = await registry.create({ deviceId: id });
      assert.equal(created.deviceId, id);
      const { responseBody: got } = await registry.get(id);
      assert.equal(got.deviceId, id);
      await registry.delete(id);
      await rejectsWith(registry.get(id), errors.DeviceNotFoundError, 404, 'DeviceNotFound');
    }
  });

  it('invalid ids and fields are 400 ArgumentError', async () => {
    await rejectsWith(registry.create({ deviceId: 'has space' }), errors.ArgumentError, 400, 'ArgumentInvalid');
    await rejectsWith(registry.create({ deviceId: 'x'.repeat(129) }), errors.ArgumentError, 400, 'ArgumentInvalid');
    await rejectsWith(registry.create({ deviceId: 'bad-status', status: 'sleeping' }), errors.ArgumentError, 400);
    await rejectsWith(registry.create({
      deviceId: 'bad-key', authentication: { symmetricKey: { primaryKey: 'not base64!', secondaryKey: '' } },
    }), errors.ArgumentError, 400);
    await rejectsWith(registry.get('bad-status'), errors.DeviceNotFoundError, 404);
  });

  it('statistics count enabled and disabled devices', async () => {
    const { responseBody: stats } = await registry.getRegistryStatistics();
    assert.ok(stats.totalDeviceCount >= 4);
    assert.equal(stats.totalDeviceCount, stats.enabledDeviceCount + stats.disabledDeviceCount);
    assert.ok(stats.disabledDeviceCount >= 1);
  });

  it('delete removes the device; deleting again is DeviceNotFound', async () => {
    await registry.delete('sdk-dev-keys');
    await rejectsWith(registry.get('sdk-dev-keys'), errors.DeviceNotFoundError, 404, 'DeviceNotFound');
    await rejectsWith(registry.delete('sdk-dev-keys'), errors.DeviceNotFoundError, 404, 'DeviceNotFound');
  });
});

describe('modules', () => {
  before(async () => { await registry.create({ deviceId: 'sdk-mod-dev' }); });

  it('create, get, list, update with etag, stale etag 412, delete', async () => {
    const { responseBody: m } = await registry.addModule({ deviceId: 'sdk-mod-dev', moduleId: 'mod-a' });
    assert.equal(m.moduleId, 'mod-a');
    assert.equal(m.deviceId, 'sdk-mod-dev');
    assert.match(m.authentication.symmetricKey.primaryKey, base64Key);
    await rejectsWith(registry.addModule({ deviceId: 'sdk-mod-dev', moduleId: 'mod-a' }), errors.DeviceAlreadyExistsError, 409, 'ModuleAlreadyExistsOnDevice');

    const { responseBody: got } = await registry.getModule('sdk-mod-dev', 'mod-a');
    assert.equal(got.etag, m.etag);
    await registry.addModule({ deviceId: 'sdk-mod-dev', moduleId: 'mod-b' });
    const { responseBody: list } = await registry.getModulesOnDevice('sdk-mod-dev');
    assert.deepEqual(list.map((x) => x.moduleId).sort(), ['mod-a', 'mod-b']);

    const { responseBody: updated } = await registry.updateModule({ ...got, managedBy: 'tests' });
    assert.equal(updated.managedBy, 'tests');
    assert.notEqual(updated.etag, got.etag);
    await rejectsWith(registry.updateModule({ ...got, managedBy: 'stale' }), errors.InvalidEtagError, 412, 'PreconditionFailed');
    // The SDK's promise form of removeModule(module) loses its callback; the callback form works.
    const removeModule = (mod) => new Promise((resolve, reject) => {
      registry.removeModule(mod, (err) => (err ? reject(err) : resolve()));
    });
    await rejectsWith(removeModule(got), errors.InvalidEtagError, 412, 'PreconditionFailed');
    await removeModule(updated);
    await assert.rejects(registry.getModule('sdk-mod-dev', 'mod-a'), (e) => e.response.statusCode === 404
      && e.response.headers['iothub-errorcode'] === 'ModuleNotFound');
  });

  it('a module needs its device, and dies with it', async () => {
    await rejectsWith(registry.addModule({ deviceId: 'no-such-device', moduleId: 'm' }), errors.DeviceNotFoundError, 404, 'DeviceNotFound');
    await registry.delete('sdk-mod-dev');
    await registry.create({ deviceId: 'sdk-mod-dev' });
    const { responseBody: list } = await registry.getModulesOnDevice('sdk-mod-dev');
    assert.deepEqual(list, [], 'a re-created device starts without the old modules');
  });
});

describe('bulk through the SDK', () => {
  it('addDevices, updateDevices and removeDevices report per item', async () => {
    const ids = ['bulk-a', 'bulk-b', 'bulk-c'];
    const { responseBody: added } = await registry.addDevices(ids.map((deviceId) => ({ deviceId })));
    assert.equal(added.isSuccessful, true, JSON.stringify(added));
    const { responseBody: again } = await registry.addDevices([{ deviceId: 'bulk-a' }, { deviceId: 'bulk-d' }]);
    assert.equal(again.isSuccessful, false);
    assert.equal(again.errors.length, 1);
    assert.equal(again.errors[0].deviceId, 'bulk-a');
    assert.equal(again.errors[0].errorCode, 'DeviceAlreadyExists');
    assert.equal((await registry.get('bulk-d')).responseBody.deviceId, 'bulk-d');

    const a = (await registry.get('bulk-a')).responseBody;
    const { responseBody: stale } = await registry.updateDevices([{ ...a, etag: 'c3RhbGU=', status: 'disabled' }], false);
    assert.equal(stale.isSuccessful, false);
    assert.equal(stale.errors[0].errorCode, 'PreconditionFailed');
    const { responseBody: forced } = await registry.updateDevices([{ deviceId: 'bulk-a', status: 'disabled' }], true);
    assert.equal(forced.isSuccessful, true, JSON.stringify(forced));
    assert.equal((await registry.get('bulk-a')).responseBody.status, 'disabled');

    const { responseBody: removed } = await registry.removeDevices([...ids, 'bulk-d'].map((deviceId) => ({ deviceId })), true);
    assert.equal(removed.isSuccessful, true, JSON.stringify(removed));
    await rejectsWith(registry.get('bulk-b'), errors.DeviceNotFoundError, 404);
  });
});

describe('service authentication', () => {
  it('a wrong key is Unauthorized', async () => {
    const wrong = connectionString().replace(/SharedAccessKey=[^;]+/, `SharedAccessKey=${Buffer.alloc(32, 1).toString('base64')}`);
    await rejectsWith(Registry.fromConnectionString(wrong).get('sdk-dev-1'), errors.UnauthorizedError, 401, 'IotHubUnauthorizedAccess');
  });

  it('the secondary key works too', async () => {
    const fs = require('node:fs');
    const hubJson = JSON.parse(fs.readFileSync(`${process.env.IOTHUB_DATA_DIR}/hub.json`, 'utf8'));
    const owner = hubJson.policies.find((p) => p.keyName === 'iothubowner');
    const cs = `HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=${owner.secondaryKey}`;
    assert.equal((await Registry.fromConnectionString(cs).get('sdk-dev-1')).responseBody.deviceId, 'sdk-dev-1');
  });

  it('an expired token is Unauthorized', async () => {
    const expired = SharedAccessSignature.create('localhost', 'iothubowner', policyKey('iothubowner'),
      Math.floor(Date.now() / 1000) - 10).toString();
    await rejectsWith(Registry.fromSharedAccessSignature(
      `HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessSignature=${expired}`).get('sdk-dev-1'),
    errors.UnauthorizedError, 401);
  });

  it('registryRead may read but not write', async () => {
    const reader = Registry.fromConnectionString(connectionString('registryRead'));
    assert.equal((await reader.get('sdk-dev-1')).responseBody.deviceId, 'sdk-dev-1');
    await rejectsWith(reader.create({ deviceId: 'reader-made' }), errors.UnauthorizedError, 401, 'IotHubUnauthorizedAccess');
    await rejectsWith(reader.delete('sdk-dev-1'), errors.UnauthorizedError, 401);
    const writer = Registry.fromConnectionString(connectionString('registryReadWrite'));
    await writer.create({ deviceId: 'writer-made' });
    await writer.delete('writer-made');
    const service = Registry.fromConnectionString(connectionString('service'));
    await rejectsWith(service.get('sdk-dev-1'), errors.UnauthorizedError, 401);
    await rejectsWith(reader.get('reader-made'), errors.DeviceNotFoundError, 404);
  });
});
