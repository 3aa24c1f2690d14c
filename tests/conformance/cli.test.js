// The `iothub` command-line client against a running hub: every command, its output and exit
// status, and the SAS tokens it makes verified by the hub itself.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const { Registry } = require('azure-iothub');
const { Hub, connectionString, rawRequest } = require('./lib/hub');

const bin = process.env.IOTHUB_BIN;
const dataDir = process.env.IOTHUB_DATA_DIR;

function iothub(...args) {
  const r = spawnSync(bin, args, { encoding: 'utf8', env: { ...process.env, IOTHUB_CONNECTION_STRING: '' } });
  return { code: r.status, out: r.stdout, err: r.stderr, json: () => JSON.parse(r.stdout) };
}
const local = (...args) => iothub(...args, '--data-dir', dataDir);

let hub;
// A low consumer-group limit, so the limit case needs only a few groups.
before(async () => { hub = await Hub.start(['--max-consumer-groups', '3']); });
after(async () => { await hub.stop(); });

describe('iothub device and module commands', () => {
  it('create, show, update, connection-string, renew-key, delete', () => {
    const created = local('device', 'create', 'cli-dev', '--status', 'disabled', '--status-reason', 'new');
    assert.equal(created.code, 0, created.err);
    const d = created.json();
    assert.equal(d.deviceId, 'cli-dev');
    assert.equal(d.status, 'disabled');

    const dup = local('device', 'create', 'cli-dev');
    assert.equal(dup.code, 1);
    assert.match(dup.err, /DeviceAlreadyExists/);

    const updated = local('device', 'update', '-d', 'cli-dev', '--status', 'enabled').json();
    assert.equal(updated.status, 'enabled');
    assert.equal(updated.authentication.symmetricKey.primaryKey, d.authentication.symmetricKey.primaryKey);

    const stale = local('device', 'update', 'cli-dev', '--status', 'disabled', '--etag', d.etag);
    assert.equal(stale.code, 1);
    assert.match(stale.err, /PreconditionFailed/);

    const cs = local('device', 'connection-string', 'cli-dev');
    assert.equal(cs.out.trim(), `HostName=localhost;DeviceId=cli-dev;SharedAccessKey=${d.authentication.symmetricKey.primaryKey}`);
    const cs2 = local('device', 'connection-string', 'cli-dev', '--key-type', 'secondary');
    assert.match(cs2.out, new RegExp(`SharedAccessKey=${d.authentication.symmetricKey.secondaryKey.replace(/[+/]/g, '\\$&')}`));

    const renewed = local('device', 'renew-key', 'cli-dev', '--key', 'primary').json();
    assert.notEqual(renewed.authentication.symmetricKey.primaryKey, d.authentication.symmetricKey.primaryKey);
    assert.equal(renewed.authentication.symmetricKey.secondaryKey, d.authentication.symmetricKey.secondaryKey);

    const show = local('device', 'show', 'cli-dev').json();
    assert.equal(show.etag, renewed.etag);
    assert.ok(local('device', 'list').json().some((x) => x.deviceId === 'cli-dev'));

    assert.equal(local('device', 'delete', 'cli-dev').code, 0);
    const gone = local('device', 'show', 'cli-dev');
    assert.equal(gone.code, 1);
    assert.match(gone.err, /DeviceNotFound/);
  });

  it('x509 identities', () => {
    const print = 'ab'.repeat(32);
    const x = local('device', 'create', 'cli-x509', '--auth-method', 'x509_thumbprint', '--primary-thumbprint', print).json();
    assert.equal(x.authentication.type, 'selfSigned');
    assert.equal(local('device', 'connection-string', 'cli-x509').out.trim(), 'HostName=localhost;DeviceId=cli-x509;x509=true');
    const bad = local('device', 'create', 'cli-x509-bad', '--auth-method', 'x509_thumbprint', '--primary-thumbprint', 'zz');
    assert.equal(bad.code, 1);
    assert.match(bad.err, /ArgumentInvalid/);
  });

  it('modules', () => {
    assert.equal(local('device', 'create', 'cli-mod-dev').code, 0);
    const m = local('module', 'create', 'cli-mod-dev', 'mod1').json();
    assert.equal(m.moduleId, 'mod1');
    assert.deepEqual(local('module', 'list', 'cli-mod-dev').json().map((x) => x.moduleId), ['mod1']);
    assert.match(local('module', 'connection-string', 'cli-mod-dev', 'mod1').out, /^HostName=localhost;DeviceId=cli-mod-dev;ModuleId=mod1;SharedAccessKey=/);
    assert.equal(local('module', 'delete', 'cli-mod-dev', 'mod1').code, 0);
    assert.deepEqual(local('module', 'list', 'cli-mod-dev').json(), []);
  });
});

describe('tokens and connection strings', () => {
  it('connection-string works offline for each policy', () => {
    const owner = local('connection-string');
    assert.equal(owner.code, 0);
    assert.equal(owner.out.trim(), connectionString());
    assert.match(local('connection-string', '--policy', 'service').out, /SharedAccessKeyName=service;/);
    const none = local('connection-string', '--policy', 'nope');
    assert.equal(none.code, 1);
    assert.match(none.err, /no policy 'nope'/);
  });

  it('sas generate makes tokens the hub accepts', async () => {
    const token = local('sas', 'generate', '--for-policy', 'registryRead', '--duration', '120').out.trim();
    assert.match(token, /^SharedAccessSignature sr=localhost&sig=.+&se=\d+&skn=registryRead$/);
    const r = await rawRequest({ path: '/statistics/devices?api-version=2021-04-12', headers: { Authorization: token } });
    assert.equal(r.status, 200);
    local('device', 'create', 'cli-sas');
    const deviceToken = local('sas', 'generate', '-d', 'cli-sas').out.trim();
    assert.match(deviceToken, /^SharedAccessSignature sr=localhost%2Fdevices%2Fcli-sas&sig=.+&se=\d+$/);
    const bad = local('sas', 'generate', '--for-policy', 'x', '--duration', '-5');
    assert.equal(bad.code, 1);
  });

  it('a connection string reaches the hub without a data directory', async () => {
    const ca = `${dataDir}/tls/ca.pem`;
    const r = iothub('device', 'create', 'cli-cs', '--connection-string', connectionString('registryReadWrite'), '--ca-file', ca);
    assert.equal(r.code, 0, r.err);
    const registry = Registry.fromConnectionString(connectionString());
    assert.equal((await registry.get('cli-cs')).responseBody.deviceId, 'cli-cs');
    const denied = iothub('device', 'delete', 'cli-cs', '--connection-string', connectionString('registryRead'), '--ca-file', ca);
    assert.equal(denied.code, 1);
    assert.match(denied.err, /IotHubUnauthorizedAccess/);
  });

  it('stats and clear errors when the hub is unreachable', () => {
    const stats = local('stats').json();
    assert.ok(stats.devices.totalDeviceCount >= 3);
    const missing = iothub('device', 'list', '--data-dir', '/nonexistent-hub-dir');
    assert.equal(missing.code, 1);
    assert.match(missing.err, /No hub in \/nonexistent-hub-dir/);
    const usage = iothub('device', 'frobnicate');
    assert.notEqual(usage.code, 0);
  });
});

describe('iothub twin, method and query commands', () => {
  it('twin show, update (merge, ETag), replace', () => {
    assert.equal(local('device', 'create', 'cli-twin').code, 0);
    const shown = local('twin', 'show', '-d', 'cli-twin');
    assert.equal(shown.code, 0, shown.err);
    const t = shown.json();
    assert.equal(t.properties.desired.$version, 1);

    const u = local('twin', 'update', '-d', 'cli-twin', '--tags', '{"floor":3}', '--desired', '{"rate":5}');
    assert.equal(u.code, 0, u.err);
    assert.equal(u.json().tags.floor, 3);
    assert.equal(u.json().properties.desired.rate, 5);

    const stale = local('twin', 'update', '-d', 'cli-twin', '--tags', '{"floor":4}', '--etag', t.etag);
    assert.equal(stale.code, 1);
    assert.match(stale.err, /PreconditionFailed/);

    const r = local('twin', 'replace', '-d', 'cli-twin', '--json', '{"tags":{"only":true}}');
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(r.json().tags, { only: true });
    assert.equal(r.json().properties.desired.rate, undefined);

    const bad = local('twin', 'update', '-d', 'cli-twin', '--tags', '{"a.b":1}');
    assert.equal(bad.code, 1);
    assert.match(bad.err, /ArgumentInvalid/);
  });

  it('c2d purge empties a queue and names unknown devices', () => {
    assert.equal(local('device', 'create', 'cli-c2d').code, 0);
    const p = local('c2d', 'purge', '--device', 'cli-c2d');
    assert.equal(p.code, 0, p.err);
    assert.deepEqual(p.json(), { deviceId: 'cli-c2d', totalMessagesPurged: 0 });
    const missing = local('c2d', 'purge', '--device', 'cli-nobody');
    assert.equal(missing.code, 1);
    assert.match(missing.err, /DeviceNotFound/);
  });

  it('query follows continuation pages and reports bad queries', () => {
    for (let i = 0; i < 5; i++) assert.equal(local('device', 'create', `cli-q${i}`).code, 0);
    for (let i = 0; i < 5; i++)
      assert.equal(local('twin', 'update', '-d', `cli-q${i}`, '--tags', `{"batch":"q","i":${i}}`).code, 0);
    const q = local('query', "SELECT deviceId, tags.i AS i FROM devices WHERE tags.batch = 'q'", '--page-size', '2');
    assert.equal(q.code, 0, q.err);
    assert.deepEqual(q.json(), [0, 1, 2, 3, 4].map((i) => ({ deviceId: `cli-q${i}`, i })));
    const top = local('query', "SELECT * FROM devices WHERE tags.batch = 'q'", '--top', '3', '--page-size', '2');
    assert.equal(top.json().length, 3);
    const count = local('query', "SELECT COUNT() AS n FROM devices WHERE tags.batch = 'q'");
    assert.deepEqual(count.json(), [{ n: 5 }]);
    const bad = local('query', 'SELECT * FROM devices WHERE');
    assert.equal(bad.code, 1);
    assert.match(bad.err, /ArgumentInvalid.*position/);
  });

  it('method invoke reaches a connected device', async () => {
    const { Client } = require('azure-iot-device');
    const { Mqtt } = require('azure-iot-device-mqtt');
    const d = local('device', 'create', 'cli-meth').json();
    const client = Client.fromConnectionString(
      `HostName=localhost;DeviceId=cli-meth;SharedAccessKey=${d.authentication.symmetricKey.primaryKey}`, Mqtt);
    await client.open();
    client.onDeviceMethod('blink', (req, res) => res.send(202, { times: req.payload.times }, () => {}));
    const { spawn } = require('node:child_process');
    const run = (...args) => new Promise((resolve) => {
      const p = spawn(bin, [...args, '--data-dir', dataDir], { env: { ...process.env, IOTHUB_CONNECTION_STRING: '' } });
      let out = '', err = '';
      p.stdout.on('data', (b) => { out += b; });
      p.stderr.on('data', (b) => { err += b; });
      p.on('close', (code) => resolve({ code, out, err }));
    });
    // The connect timeout covers the SDK subscribing after the handler is registered.
    const r = await run('method', 'invoke', '-d', 'cli-meth', '-n', 'blink', '-p', '{"times":3}', '--timeout', '10', '--connect-timeout', '10');
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(JSON.parse(r.out), { status: 202, payload: { times: 3 } });
    await client.close();
    const off = await run('method', 'invoke', '-d', 'cli-meth', '-n', 'blink');
    assert.equal(off.code, 1);
    assert.match(off.err, /DeviceNotOnline/);
  });
});

describe('iothub c2d send and feedback', () => {
  const { spawn } = require('node:child_process');
  const run = (...args) => new Promise((resolve) => {
    const p = spawn(bin, [...args, '--data-dir', dataDir], { env: { ...process.env, IOTHUB_CONNECTION_STRING: '' } });
    let out = '', err = '';
    p.stdout.on('data', (b) => { out += b; });
    p.stderr.on('data', (b) => { err += b; });
    p.on('close', (code) => resolve({ code, out, err }));
  });

  it('send reaches an MQTT device with its properties, and feedback prints the Success record', async () => {
    const { Client } = require('azure-iot-device');
    const { Mqtt } = require('azure-iot-device-mqtt');
    const d = local('device', 'create', 'cli-c2d-mqtt').json();
    const client = Client.fromConnectionString(
      `HostName=localhost;DeviceId=cli-c2d-mqtt;SharedAccessKey=${d.authentication.symmetricKey.primaryKey}`, Mqtt);
    await client.open();
    const received = new Promise((resolve) => client.on('message', (m) => { client.complete(m, () => {}); resolve(m); }));
    const sent = await run('c2d', 'send', '--device', 'cli-c2d-mqtt', '--body', '{"led":"on"}',
      '--property', 'colour=red & blue', '--property', 'n=1', '--ack', 'full', '--message-id', 'cli-mid-1',
      '--correlation-id', 'cli-corr-1', '--content-type', 'application/json', '--expiry', '600');
    assert.equal(sent.code, 0, sent.err);
    assert.equal(sent.out.trim(), 'cli-mid-1');
    const m = await received;
    assert.equal(m.data.toString(), '{"led":"on"}');
    assert.equal(m.messageId, 'cli-mid-1');
    assert.equal(m.correlationId, 'cli-corr-1');
    assert.equal(m.properties.getValue('colour'), 'red & blue');
    assert.equal(m.properties.getValue('n'), '1');
    await client.close();

    const fb = await run('c2d', 'feedback', '--count', '1', '--timeout', '30');
    assert.equal(fb.code, 0, fb.err);
    const records = fb.out.trim().split('\n').map((line) => JSON.parse(line));
    const mine = records.filter((r) => r.originalMessageId === 'cli-mid-1');
    assert.equal(mine.length, 1, fb.out);
    assert.equal(mine[0].statusCode, 'Success');
    assert.equal(mine[0].deviceId, 'cli-c2d-mqtt');
  });

  it('a generated message id, and a clear failure for an unknown device', async () => {
    assert.equal(local('device', 'create', 'cli-c2d-id').code, 0);
    const sent = await run('c2d', 'send', '-d', 'cli-c2d-id', '--body', 'x');
    assert.equal(sent.code, 0, sent.err);
    assert.match(sent.out.trim(), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    // A service connection string reaches the AMQP endpoint on 5671 with the service policy.
    const viaCs = iothub('c2d', 'send', '-d', 'cli-c2d-id', '--body', 'y', '--message-id', 'cs-1',
      '--connection-string', connectionString('service'), '--ca-file', `${dataDir}/tls/ca.pem`);
    assert.equal(viaCs.code, 0, viaCs.err);
    assert.equal(viaCs.out.trim(), 'cs-1');
    const denied = iothub('c2d', 'send', '-d', 'cli-c2d-id', '--body', 'z',
      '--connection-string', connectionString('registryRead'), '--ca-file', `${dataDir}/tls/ca.pem`);
    assert.equal(denied.code, 1);
    assert.match(denied.err, /^error: .*unauthorized-access.*ServiceConnect/);
    assert.equal(local('c2d', 'purge', '--device', 'cli-c2d-id').json().totalMessagesPurged, 2);

    const missing = await run('c2d', 'send', '--device', 'cli-c2d-nobody', '--body', 'x');
    assert.equal(missing.code, 1);
    assert.equal(missing.out, '');
    assert.match(missing.err, /^error: DeviceNotFound: .*cli-c2d-nobody.*\(amqp:not-found\)/);
    const usage = await run('c2d', 'send', '--device', 'd', '--ack', 'sometimes');
    assert.notEqual(usage.code, 0);
  });
});

describe('iothub consumer-group', () => {
  it('create, list, show, the limit, delete; $Default stays', () => {
    const created = local('consumer-group', 'create', '--name', 'cli-cg-1');
    assert.equal(created.code, 0, created.err);
    assert.equal(created.json().name, 'cli-cg-1');
    assert.equal(local('consumer-group', 'create', 'cli-cg-2').code, 0);
    assert.deepEqual(local('consumer-group', 'list').json().sort(), ['$Default', 'cli-cg-1', 'cli-cg-2']);
    assert.equal(local('consumer-group', 'show', '--name', 'cli-cg-2').json().name, 'cli-cg-2');

    // --max-consumer-groups 3, $Default included: a fourth is refused with Azure's quota error.
    const over = local('consumer-group', 'create', '--name', 'cli-cg-3');
    assert.equal(over.code, 1);
    assert.match(over.err, /^error: IotHubQuotaExceeded: .*maximum of 3 consumer groups/);
    assert.ok(!local('consumer-group', 'list').json().includes('cli-cg-3'));

    const keep = local('consumer-group', 'delete', '--name', '$Default');
    assert.equal(keep.code, 1);
    assert.match(keep.err, /\$Default cannot be deleted/);
    assert.equal(local('consumer-group', 'delete', '--name', 'cli-cg-1').code, 0);
    const gone = local('consumer-group', 'show', '--name', 'cli-cg-1');
    assert.equal(gone.code, 1);
    assert.match(gone.err, /Consumer group 'cli-cg-1' does not exist/);
    assert.equal(local('consumer-group', 'create', '--name', 'cli-cg-3').code, 0, 'room again');
    assert.deepEqual(local('consumer-group', 'list').json().sort(), ['$Default', 'cli-cg-2', 'cli-cg-3']);
    for (const n of ['cli-cg-2', 'cli-cg-3']) assert.equal(local('consumer-group', 'delete', n).code, 0);
  });
});
