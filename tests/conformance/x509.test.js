// X.509 device authentication with the unmodified device SDK: self-signed certificates matched
// by thumbprint, and CA-signed certificates trusted after the CA's proof of possession.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const crypto = require('node:crypto');
const { spawnSync } = require('node:child_process');
const mqtt = require('mqtt');
const { Registry } = require('azure-iothub');
const { Client, Message } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { Http } = require('azure-iot-device-http');
const { NoRetry, errors } = require('azure-iot-common');
const { Hub, connectionString, readTelemetry, bin, dataDir } = require('./lib/hub');

const { file, selfSigned, signed, caExtensions, cleanUp } = require('./lib/pki');

function thumbprint(name) {
  return new crypto.X509Certificate(fs.readFileSync(file(`${name}.pem`))).fingerprint.replace(/:/g, '');
}
const cli = (...args) => spawnSync(bin, [...args, '--data-dir', dataDir], { encoding: 'utf8' });

async function x509Client(deviceId, name, transport = Mqtt) {
  const client = Client.fromConnectionString(`HostName=localhost;DeviceId=${deviceId};x509=true`, transport);
  client.setRetryPolicy(new NoRetry());
  // The Http transport's setOptions calls back only when the object has http.receivePolicy.
  const http = transport === Http ? { http: { receivePolicy: { interval: 1 } } } : {};
  await client.setOptions({ cert: fs.readFileSync(file(`${name}.pem`), 'utf8'), key: fs.readFileSync(file(`${name}.key`), 'utf8'), ...http });
  return client;
}

let hub;
let registry;
before(async () => {
  hub = await Hub.start();
  registry = Registry.fromConnectionString(connectionString());
  selfSigned('self', 'x509-self');
  selfSigned('stranger', 'x509-self');
  selfSigned('root', 'Test Root CA', caExtensions);
  signed('ca-dev', 'x509-ca-dev', 'root');
  signed('wrong-cn', 'somebody-else', 'root');
});
after(async () => {
  await hub.stop();
  cleanUp();
});

describe('self-signed certificates (thumbprint)', () => {
  before(async () => {
    await registry.create({ deviceId: 'x509-self', authentication: { x509Thumbprint: { primaryThumbprint: thumbprint('self') } } });
  });

  for (const transport of [Mqtt, MqttWs, Http]) {
    it(`${transport.name}: the registered certificate connects and sends`, async () => {
      const client = await x509Client('x509-self', 'self', transport);
      await client.open();
      await client.sendEvent(new Message(`x509 over ${transport.name}`));
      await client.close();
      const events = await readTelemetry({ device: 'x509-self', until: (e) => e.some((x) => x.body === `x509 over ${transport.name}`) });
      const e = events.find((x) => x.body === `x509 over ${transport.name}`);
      assert.equal(JSON.parse(e.systemProperties['iothub-connection-auth-method']).type, 'x509Certificate');
    });
  }

  it('a certificate with another thumbprint is refused', async () => {
    const client = await x509Client('x509-self', 'stranger');
    await assert.rejects(client.open(), (e) => e instanceof errors.UnauthorizedError);
  });

  it('the secondary thumbprint also works, and SHA-256 thumbprints too', async () => {
    const d = (await registry.get('x509-self')).responseBody;
    d.authentication.x509Thumbprint.secondaryThumbprint =
      new crypto.X509Certificate(fs.readFileSync(file('stranger.pem'))).fingerprint256.replace(/:/g, '').toLowerCase();
    await registry.update(d);
    const client = await x509Client('x509-self', 'stranger');
    await client.open();
    await client.close();
  });
});

describe('CA-signed certificates', () => {
  before(async () => {
    await registry.create({ deviceId: 'x509-ca-dev', authentication: { type: 'certificateAuthority' } });
    await registry.create({ deviceId: 'somebody-else', authentication: { type: 'certificateAuthority' } });
  });

  it('an unverified CA is not trusted; proof of possession makes it so', async () => {
    const created = cli('certificate', 'create', 'test-root', '--path', file('root.pem'));
    assert.equal(created.status, 0, created.stderr);
    const info = JSON.parse(created.stdout);
    assert.equal(info.properties.isVerified, false);
    assert.equal(info.properties.thumbprint, thumbprint('root').toUpperCase());

    const early = await x509Client('x509-ca-dev', 'ca-dev');
    await assert.rejects(early.open(), (e) => e instanceof errors.UnauthorizedError);

    const code = JSON.parse(cli('certificate', 'generate-verification-code', 'test-root').stdout).properties.verificationCode;
    assert.match(code, /^[0-9A-F]{48}$/);
    signed('wrong-proof', 'not-the-code', 'root');
    const refused = cli('certificate', 'verify', 'test-root', '--path', file('wrong-proof.pem'));
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /verification code/);
    signed('proof', code, 'root');
    const verified = cli('certificate', 'verify', 'test-root', '--path', file('proof.pem'));
    assert.equal(verified.status, 0, verified.stderr);
    assert.equal(JSON.parse(verified.stdout).properties.isVerified, true);

    const client = await x509Client('x509-ca-dev', 'ca-dev');
    await client.open();
    await client.sendEvent(new Message('signed by a CA'));
    await client.close();
    const events = await readTelemetry({ device: 'x509-ca-dev', until: (e) => e.length >= 1 });
    assert.equal(events[0].body, 'signed by a CA');
  });

  it('the subject CN must be the device id', async () => {
    const client = await x509Client('x509-ca-dev', 'wrong-cn');
    await assert.rejects(client.open(), (e) => e instanceof errors.UnauthorizedError);
  });

  it('deleting the CA ends its trust', async () => {
    assert.equal(cli('certificate', 'delete', 'test-root').status, 0);
    const list = JSON.parse(cli('certificate', 'list').stdout);
    assert.deepEqual(list.value, []);
    const client = await x509Client('x509-ca-dev', 'ca-dev');
    await assert.rejects(client.open(), (e) => e instanceof errors.UnauthorizedError);
  });

  it('a non-CA certificate cannot be registered', async () => {
    const r = cli('certificate', 'create', 'not-a-ca', '--path', file('ca-dev.pem'));
    assert.equal(r.status, 1);
    assert.match(r.stderr, /not a CA certificate/);
  });
});

describe('X.509 over plain MQTT clients', () => {
  it('a client without a certificate or token is refused with CONNACK 5', async () => {
    const c = mqtt.connect('mqtts://localhost:8883', { ca: fs.readFileSync(`${dataDir}/tls/ca.pem`), clientId: 'x509-self',
      username: 'localhost/x509-self/?api-version=2021-04-12', reconnectPeriod: 0 });
    await assert.rejects(new Promise((resolve, reject) => { c.once('connect', resolve); c.once('error', reject); }),
      (e) => e.code === 5);
  });
});
