// The hub as a process: graceful shutdown, configuration layers, ephemeral ports, and start-up
// failures that must be reported clearly.
'use strict';
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const tls = require('node:tls');
const { spawnSync } = require('node:child_process');
const { Hub, runToExit, bin, dataDir, serviceToken, serviceRequest, rawRequest, eventually } = require('./lib/hub');

describe('shutdown', () => {
  it('SIGTERM lets a request in flight finish, then exits 0 and keeps its write', async () => {
    const hub = await Hub.start();
    const body = JSON.stringify({ deviceId: 'in-flight' });
    const half = Math.floor(body.length / 2);
    const socket = tls.connect({ host: 'localhost', port: 443, servername: 'localhost' });
    await new Promise((resolve, reject) => { socket.once('secureConnect', resolve); socket.once('error', reject); });
    let received = '';
    socket.on('data', (d) => { received += d.toString(); });
    // Pipelined: once the first answer arrives, the server has already read the second request's
    // header, so the request is in flight when the signal comes.
    socket.write('GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n'
      + `PUT /devices/in-flight?api-version=2021-04-12 HTTP/1.1\r\nHost: localhost\r\n`
      + `Authorization: ${serviceToken()}\r\nContent-Type: application/json\r\n`
      + `Content-Length: ${body.length}\r\n\r\n${body.slice(0, half)}`);
    while (!received.includes('"status":"ok"')) await new Promise((r) => socket.once('data', r));
    hub.proc.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 100));
    socket.write(body.slice(half));
    const closed = new Promise((r) => socket.once('close', r));
    await closed;
    const second = received.slice(received.indexOf('HTTP/1.1', 10));
    assert.match(second, /^HTTP\/1\.1 200 OK/);
    assert.match(second, /Connection: close/i);
    assert.match(second, /"deviceId":"in-flight"/);
    const { code } = await hub.exited;
    assert.equal(code, 0);
    assert.equal(fs.existsSync(`${dataDir}/runtime.json`), false, 'runtime.json is removed at clean shutdown');

    const again = await Hub.start();
    assert.equal((await serviceRequest({ path: '/devices/in-flight' })).status, 200);
    await again.stop();
  });
});

describe('state that survives a restart', () => {
  it('lastActivityTime is kept across a clean restart', async () => {
    const { SharedAccessSignature } = require('azure-iot-common');
    const hub = await Hub.start();
    const created = await serviceRequest({ method: 'PUT', path: '/devices/active-dev', json: { deviceId: 'active-dev' } });
    assert.equal(created.status, 200, created.body);
    const key = created.json.authentication.symmetricKey.primaryKey;
    const token = SharedAccessSignature.create('localhost%2Fdevices%2Factive-dev', undefined, key,
      Math.floor(Date.now() / 1000) + 600).toString();
    const sent = await rawRequest({
      method: 'POST', path: '/devices/active-dev/messages/events?api-version=2021-04-12', body: 'hi',
      headers: { Authorization: token, 'Content-Length': 2 },
    });
    assert.equal(sent.status, 204, sent.body);
    const before = (await serviceRequest({ path: '/devices/active-dev' })).json.lastActivityTime;
    assert.notEqual(before, '0001-01-01T00:00:00Z');
    assert.equal((await hub.stop()).code, 0);
    const again = await Hub.start();
    const after = (await serviceRequest({ path: '/devices/active-dev' })).json.lastActivityTime;
    assert.equal(after, before);
    await again.stop();
  });
});

describe('configuration', () => {
  it('TOML file plus environment: ephemeral port, own host name, the CLI finds it', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iothub-second-'));
    fs.writeFileSync(`${dir}/iothub.toml`, 'hostname = "second.example"\n[listen]\nhttps_port = 0\n');
    const hub = await Hub.start([], { dir, env: { IOTHUB_LOG_LEVEL: 'debug', IOTHUB_ALIASES: 'alias.example' } });
    assert.notEqual(hub.port, 443);
    const cli = (...args) => spawnSync(bin, [...args, '--data-dir', dir], { encoding: 'utf8' });
    assert.match(cli('connection-string').stdout, /^HostName=second\.example;SharedAccessKeyName=iothubowner;/);
    const created = cli('device', 'create', 'on-second');
    assert.equal(created.status, 0, created.stderr);
    assert.equal(JSON.parse(created.stdout).deviceId, 'on-second');
    const pem = fs.readFileSync(`${dir}/tls/server.pem`);
    const names = new crypto.X509Certificate(pem).subjectAltName;
    for (const n of ['DNS:second.example', 'DNS:alias.example', 'DNS:localhost', 'IP Address:127.0.0.1'])
      assert.ok(names.includes(n), `${n} in ${names}`);
    const { code } = await hub.stop();
    assert.equal(code, 0);
    assert.match(hub.output, /debug/i, 'IOTHUB_LOG_LEVEL applies');
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
describe('telemetry settings', () => {
  it('the partition count and retention apply to the stream', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iothub-retention-'));
    const hub = await Hub.start(['--hostname', 'localhost', '--https-port', '0', '--mqtt-port', '0',
      '--event-partitions', '8', '--retention', '2s'], { dir });
    const ca = fs.readFileSync(`${dir}/tls/ca.pem`);
    const key = JSON.parse(fs.readFileSync(`${dir}/hub.json`, 'utf8')).policies[0].primaryKey;
    const { SharedAccessSignature } = require('azure-iot-common');
    const auth = SharedAccessSignature.create('localhost', 'iothubowner', key, Math.floor(Date.now() / 1000) + 600).toString();
    const call = (method, p, body) => rawRequest({ method, path: `${p}${p.includes('?') ? '&' : '?'}api-version=2021-04-12`,
      port: hub.port, ca, body, headers: { Authorization: auth, 'Content-Type': 'application/json' } });
    const parts = (await call('GET', '/telemetry/partitions')).json;
    assert.equal(parts.partitionCount, 8);
    const dev = (await call('PUT', '/devices/short-lived', '{}')).json;
    const mqtt = require('mqtt');
    const runtime = JSON.parse(fs.readFileSync(`${dir}/runtime.json`, 'utf8'));
    const c = mqtt.connect(`mqtts://localhost:${runtime.mqttPort}`, { ca, clientId: 'short-lived', reconnectPeriod: 0,
      username: 'localhost/short-lived/?api-version=2021-04-12',
      password: SharedAccessSignature.create('localhost%2Fdevices%2Fshort-lived', undefined,
        dev.authentication.symmetricKey.primaryKey, Math.floor(Date.now() / 1000) + 600).toString() });
    await new Promise((resolve, reject) => { c.once('connect', resolve); c.once('error', reject); });
    await new Promise((r) => c.publish('devices/short-lived/messages/events/', 'ephemeral', { qos: 1 }, r));
    c.end();
    assert.equal((await call('GET', '/telemetry/events?from=earliest')).json.events.length, 1);
    await eventually(async () => (await call('GET', '/telemetry/events?from=earliest')).json.events.length === 0,
      10000, 'retention to remove the event');
    const after = (await call('GET', '/telemetry/partitions')).json.partitions;
    assert.ok(after.some((p) => p.beginSequenceNumber === 1 && p.isEmpty), 'numbers are not reused');
    await hub.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

describe('start-up failures', () => {
  it('a taken port, a locked data directory and bad settings fail clearly', async () => {
    const hub = await Hub.start();
    const other = fs.mkdtempSync(path.join(os.tmpdir(), 'iothub-other-'));
    const taken = await runToExit(['serve', '--data-dir', other]);
    assert.equal(taken.code, 1);
    assert.match(taken.output, /Cannot listen on port 443: Address already in use/);

    const locked = await runToExit(['serve', '--data-dir', dataDir, '--https-port', '0']);
    assert.equal(locked.code, 1);
    assert.match(locked.output, /Another iothub is already using/);

    const bad = await runToExit(['serve', '--data-dir', other, '--https-port', '99999']);
    assert.equal(bad.code, 2);
    assert.match(bad.output, /listen\.https_port = '99999' is invalid: expected an integer from 0 to 65535/);
    fs.writeFileSync(`${other}/iothub.toml`, '[listen]\nhttps_prot = 1\n');
    const typo = await runToExit(['serve', '--data-dir', other]);
    assert.equal(typo.code, 2);
    assert.match(typo.output, /unknown setting 'listen\.https_prot'/);
    await hub.stop();
    fs.rmSync(other, { recursive: true, force: true });
  });
});
