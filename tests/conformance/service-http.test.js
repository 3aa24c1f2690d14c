// Service REST paths the SDK does not exercise, checked at the HTTP level: bulk edge cases,
// statistics, limits, error shapes, token variants, If-Match forms, and durability across kill -9.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { SharedAccessSignature } = require('azure-iot-common');
const { Hub, serviceRequest, rawRequest, policyKey } = require('./lib/hub');

let hub;
before(async () => { hub = await Hub.start(); });
after(async () => { await hub.stop(); });

function assertAzureError(r, status, code) {
  assert.equal(r.status, status, r.body);
  assert.equal(r.headers['iothub-errorcode'], code);
  assert.ok(r.json, 'error bodies are JSON');
  const parts = r.json.Message.split(';');
  assert.equal(parts[0], `ErrorCode:${code}`);
  assert.ok(parts[1].length > 0, 'with a human-readable explanation');
  assert.match(r.json.ExceptionMessage, /^Tracking ID:[0-9a-f]+-TimeStamp:/);
}

describe('error shapes and limits', () => {
  it('unknown path is 404 GenericNotFound; wrong method is 405', async () => {
    assertAzureError(await serviceRequest({ path: '/no/such/thing' }), 404, 'GenericNotFound');
    assertAzureError(await serviceRequest({ method: 'PATCH', path: '/devices/x', json: {} }), 405, 'GenericMethodNotAllowed');
  });

  it('a body over the limit is 413 and creates nothing', async () => {
    const big = JSON.stringify({ deviceId: 'too-big', statusReason: 'x'.repeat(2 * 1024 * 1024) });
    const r = await serviceRequest({ method: 'PUT', path: '/devices/too-big', body: big,
      headers: { 'Content-Type': 'application/json' } });
    assertAzureError(r, 413, 'GenericRequestEntityTooLarge');
    assertAzureError(await serviceRequest({ path: '/devices/too-big' }), 404, 'DeviceNotFound');
  });

  it('malformed JSON is 400 IotHubFormatError, an empty body 400 ArgumentNull', async () => {
    assertAzureError(await serviceRequest({ method: 'PUT', path: '/devices/bad-json', body: '{"deviceId":',
      headers: { 'Content-Type': 'application/json' } }), 400, 'IotHubFormatError');
    assertAzureError(await serviceRequest({ method: 'PUT', path: '/devices/bad-json', body: '' }), 400, 'ArgumentNull');
    assertAzureError(await serviceRequest({ method: 'PUT', path: '/devices/bad-json', body: '<x/>',
      headers: { 'Content-Type': 'application/xml' } }), 415, 'GenericUnsupportedMediaType');
  });

  it('a rejected update changes nothing', async () => {
    const created = await serviceRequest({ method: 'PUT', path: '/devices/steady', json: {} });
    assert.equal(created.status, 200);
    const bad = await serviceRequest({ method: 'PUT', path: '/devices/steady', json: { status: 'paused' },
      headers: { 'If-Match': '*' } });
    assertAzureError(bad, 400, 'ArgumentInvalid');
    const after = await serviceRequest({ path: '/devices/steady' });
    assert.equal(after.json.etag, created.json.etag);
  });
});

describe('authentication at the HTTP level', () => {
  it('missing, malformed, expired, foreign-host and forged tokens are 401', async () => {
    const key = policyKey('iothubowner');
    const now = Math.floor(Date.now() / 1000);
    const cases = {
      missing: null,
      malformed: 'SharedAccessSignature sr=localhost&sig=abc',
      bearer: 'Bearer abc',
      expired: SharedAccessSignature.create('localhost', 'iothubowner', key, now - 1).toString(),
      otherHost: SharedAccessSignature.create('elsewhere.example', 'iothubowner', key, now + 600).toString(),
      forged: SharedAccessSignature.create('localhost', 'iothubowner', Buffer.alloc(32).toString('base64'), now + 600).toString(),
      unknownPolicy: SharedAccessSignature.create('localhost', 'nobody', key, now + 600).toString(),
    };
    for (const [name, token] of Object.entries(cases)) {
      const r = await serviceRequest({ path: '/devices/steady', token });
      assertAzureError(r, 401, 'IotHubUnauthorizedAccess');
      assert.ok(r.json.Message.length > 30, `${name} explains itself: ${r.json.Message}`);
    }
  });

  it('raw and percent-encoded resources both verify; a /devices scope covers devices only', async () => {
    const key = policyKey('iothubowner');
    const exp = Math.floor(Date.now() / 1000) + 600;
    const sign = (sr) => {
      const crypto = require('node:crypto');
      const sig = crypto.createHmac('sha256', Buffer.from(key, 'base64')).update(`${sr}\n${exp}`).digest('base64');
      return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${exp}&skn=iothubowner`;
    };
    assert.equal((await serviceRequest({ path: '/devices/steady', token: sign('localhost/devices') })).status, 200);
    assert.equal((await serviceRequest({ path: '/devices/steady', token: sign('localhost%2Fdevices') })).status, 200);
    assert.equal((await serviceRequest({ path: '/statistics/devices', token: sign('localhost/devices') })).status, 401);
  });
});

describe('If-Match on devices', () => {
  it('stale etags are 412; current, quoted, unquoted and * succeed', async () => {
    const d = (await serviceRequest({ method: 'PUT', path: '/devices/etagged', json: {} })).json;
    assert.equal((await serviceRequest({ method: 'PUT', path: '/devices/etagged', json: { statusReason: 'one' },
      headers: { 'If-Match': `"${d.etag}"` } })).status, 200);
    assertAzureError(await serviceRequest({ method: 'PUT', path: '/devices/etagged', json: { statusReason: 'two' },
      headers: { 'If-Match': `"${d.etag}"` } }), 412, 'PreconditionFailed');
    const cur = (await serviceRequest({ path: '/devices/etagged' })).json;
    assert.equal(cur.statusReason, 'one');
    assert.equal((await serviceRequest({ method: 'PUT', path: '/devices/etagged', json: { statusReason: 'three' },
      headers: { 'If-Match': cur.etag } })).status, 200);
    assert.equal((await serviceRequest({ method: 'PUT', path: '/devices/etagged', json: {},
      headers: { 'If-Match': '*' } })).status, 200);
    assertAzureError(await serviceRequest({ method: 'DELETE', path: '/devices/etagged',
      headers: { 'If-Match': `"${d.etag}"` } }), 412, 'PreconditionFailed');
    assertAzureError(await serviceRequest({ method: 'PUT', path: '/devices/never-was', json: {},
      headers: { 'If-Match': '"*"' } }), 404, 'DeviceNotFound');
    assert.equal((await serviceRequest({ method: 'DELETE', path: '/devices/etagged' })).status, 204);
  });

  it('responses carry a quoted ETag header matching the body', async () => {
    const r = await serviceRequest({ method: 'PUT', path: '/devices/quoted', json: {} });
    assert.equal(r.headers.etag, `"${r.json.etag}"`);
  });
});

describe('bulk and statistics', () => {
  it('per-item errors come back in a 200 with isSuccessful=false', async () => {
    const r = await serviceRequest({ method: 'POST', path: '/devices', json: [
      { id: 'raw-bulk-1', importMode: 'create' },
      { id: 'steady', importMode: 'create' },
      { id: 'raw-bulk-ghost', importMode: 'delete' },
    ] });
    assert.equal(r.status, 200, r.body);
    assert.equal(r.json.isSuccessful, false);
    assert.deepEqual(r.json.errors.map((e) => [e.deviceId, e.errorCode, e.operation]),
      [['steady', 'DeviceAlreadyExists', 'create'], ['raw-bulk-ghost', 'DeviceNotFound', 'delete']]);
    assert.equal((await serviceRequest({ path: '/devices/raw-bulk-1' })).status, 200);
  });

  it('request-level bulk errors reject the whole call and change nothing', async () => {
    const many = Array.from({ length: 101 }, (_, i) => ({ id: `many-${i}`, importMode: 'create' }));
    assertAzureError(await serviceRequest({ method: 'POST', path: '/devices', json: many }), 413, 'TooManyDevices');
    assertAzureError(await serviceRequest({ method: 'POST', path: '/devices', json: [
      { id: 'dup-x', importMode: 'create' }, { id: 'dup-x', importMode: 'create' }] }), 400, 'DeviceDefinedMultipleTimes');
    assertAzureError(await serviceRequest({ method: 'POST', path: '/devices', json: [
      { id: 'ok-x', importMode: 'create' }, { id: 'bad id', importMode: 'create' }] }), 400, 'ArgumentInvalid');
    assertAzureError(await serviceRequest({ method: 'POST', path: '/devices', json: { id: 'x' } }), 400, 'ArgumentInvalid');
    for (const id of ['many-0', 'dup-x', 'ok-x'])
      assertAzureError(await serviceRequest({ path: `/devices/${id}` }), 404, 'DeviceNotFound');
  });

  it('list honours top; statistics need the right policy', async () => {
    const top = await serviceRequest({ path: '/devices?top=2' });
    assert.equal(top.status, 200);
    assert.equal(top.json.length, 2);
    assertAzureError(await serviceRequest({ path: '/devices?top=abc' }), 400, 'ArgumentInvalid');
    const stats = await serviceRequest({ path: '/statistics/devices', policy: 'registryRead' });
    assert.equal(stats.status, 200);
    assert.equal(stats.json.totalDeviceCount, stats.json.enabledDeviceCount + stats.json.disabledDeviceCount);
    const svc = await serviceRequest({ path: '/statistics/service', policy: 'service' });
    assert.equal(svc.status, 200);
    assert.equal(svc.json.connectedDeviceCount, 0);
    assertAzureError(await serviceRequest({ path: '/statistics/service', policy: 'registryRead' }), 401, 'IotHubUnauthorizedAccess');
  });
});

describe('cloud-to-device queue purge', () => {
  // Only the empty queue here: sending needs the AMQP service endpoint. The unit tests cover counts.
  it('DELETE /devices/{id}/commands answers the purged count; unknown devices are 404', async () => {
    assert.equal((await serviceRequest({ method: 'PUT', path: '/devices/c2d%231', json: {} })).status, 200);
    const r = await serviceRequest({ method: 'DELETE', path: '/devices/c2d%231/commands', policy: 'service' });
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(r.json, { deviceId: 'c2d#1', totalMessagesPurged: 0 });
    const device = await serviceRequest({ path: '/devices/c2d%231' });
    assert.equal(device.json.cloudToDeviceMessageCount, 0);
    assertAzureError(await serviceRequest({ method: 'DELETE', path: '/devices/no-such-device/commands' }),
      404, 'DeviceNotFound');
    assertAzureError(await serviceRequest({ method: 'DELETE', path: '/devices/c2d%231/commands', policy: 'registryReadWrite' }),
      401, 'IotHubUnauthorizedAccess');
  });
});

describe('durability', () => {
  it('an acknowledged registry write survives kill -9', async () => {
    const created = await serviceRequest({ method: 'PUT', path: '/devices/survivor', json: {} });
    assert.equal(created.status, 200);
    const { signal } = await hub.kill();
    assert.equal(signal, 'SIGKILL');
    hub = await Hub.start();
    const got = await serviceRequest({ path: '/devices/survivor' });
    assert.equal(got.status, 200);
    assert.equal(got.json.authentication.symmetricKey.primaryKey, created.json.authentication.symmetricKey.primaryKey);
    const next = await serviceRequest({ method: 'PUT', path: '/devices/after-restart', json: {} });
    assert.notEqual(next.json.etag, created.json.etag, 'versions keep increasing after a crash');
  });

  it('the same policies and CA serve across restarts; health answers', async () => {
    const r = await rawRequest({ path: '/health' });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, { status: 'ok' });
  });
});
