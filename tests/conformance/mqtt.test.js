// Devices over MQTT with the unmodified Azure device SDK (Mqtt and MqttWs), plain MQTT clients,
// and the protocol faults a hub must survive.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const tls = require('node:tls');
const { spawnSync } = require('node:child_process');
const mqtt = require('mqtt');
const { Registry } = require('azure-iothub');
const { Client, ModuleClient, Message } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { SharedAccessSignature, NoRetry, errors } = require('azure-iot-common');
const { Hub, connectionString, readTelemetry, eventually, dataDir, serviceRequest, policyKey } = require('./lib/hub');

const ca = fs.readFileSync(`${dataDir}/tls/ca.pem`);
let hub;
let registry;
const keys = {};

async function device(id, body = {}) {
  const d = (await registry.create({ deviceId: id, ...body })).responseBody;
  keys[id] = d.authentication.symmetricKey && d.authentication.symmetricKey.primaryKey;
  return d;
}
const deviceCs = (id) => `HostName=localhost;DeviceId=${id};SharedAccessKey=${keys[id]}`;
const sas = (resource, key, ttl = 600, skn) =>
  SharedAccessSignature.create(encodeURIComponent(resource), skn, key, Math.floor(Date.now() / 1000) + ttl).toString();

// A raw MQTT connection as `id`, never reconnecting, so tests see exactly what the hub did.
function rawClient(id, { password, username, clientId = id, clean = false, will, protocolVersion = 4 } = {}) {
  return mqtt.connect('mqtts://localhost:8883', {
    ca, clientId, clean, reconnectPeriod: 0, connectTimeout: 5000, protocolVersion, will,
    username: username ?? `localhost/${id}/?api-version=2021-04-12`,
    password: password ?? sas(`localhost/devices/${id}`, keys[id]),
  });
}
function connected(client) {
  return new Promise((resolve, reject) => {
    client.once('connect', resolve);
    client.once('error', reject);
    client.once('close', () => reject(new Error('closed before CONNACK')));
  });
}
function closed(client) {
  return new Promise((resolve) => { if (client.disconnected) resolve(); else client.once('close', resolve); });
}

before(async () => {
  hub = await Hub.start(['--mqtt-plain']);
  registry = Registry.fromConnectionString(connectionString());
});
after(async () => { await hub.stop(); });

describe('telemetry through the Azure device SDK', () => {
  for (const transport of [Mqtt, MqttWs]) {
    it(`${transport.name}: events keep their body, properties and system properties`, async () => {
      const id = `sdk-${transport.name.toLowerCase()}`;
      await device(id);
      const client = Client.fromConnectionString(deviceCs(id), transport);
      await client.open();
      const sent = [];
      for (let i = 0; i < 3; i++) {
        const m = new Message(JSON.stringify({ i, temperature: 20 + i }));
        m.messageId = `${id}-m${i}`;
        m.correlationId = `corr-${i}`;
        m.contentType = 'application/json';
        m.contentEncoding = 'utf-8';
        m.properties.add('alert', i === 2 ? 'true' : 'false');
        m.properties.add('with space&amp', 'v=1&x');
        await client.sendEvent(m);
        sent.push(m.messageId);
      }
      await client.close();
      const events = await readTelemetry({ device: id, until: (e) => e.length >= 3 });
      assert.deepEqual(events.map((e) => e.systemProperties['message-id']), sent);
      const last = events[2];
      assert.deepEqual(JSON.parse(last.body), { i: 2, temperature: 22 });
      assert.equal(last.properties.alert, 'true');
      assert.equal(last.properties['with space&amp'], 'v=1&x');
      assert.equal(last.systemProperties['correlation-id'], 'corr-2');
      assert.equal(last.systemProperties['content-type'], 'application/json');
      assert.equal(last.systemProperties['content-encoding'], 'utf-8');
      assert.equal(last.systemProperties['iothub-connection-device-id'], id);
      assert.equal(last.systemProperties['iothub-message-source'], 'Telemetry');
      assert.deepEqual(JSON.parse(last.systemProperties['iothub-connection-auth-method']),
        { scope: 'device', type: 'sas', issuer: 'iothub' });
      assert.equal(last.systemProperties['iothub-connection-auth-generation-id'],
        (await registry.get(id)).responseBody.generationId);
      assert.ok(Date.parse(last.systemProperties['iothub-enqueuedtime']) > Date.now() - 60000);
      const seq = events.map((e) => e.sequenceNumber);
      assert.ok(seq[0] < seq[1] && seq[1] < seq[2], 'in order within the partition');
    });
  }

  it('a module client sends events and output events', async () => {
    await device('mod-host');
    const m = (await registry.addModule({ deviceId: 'mod-host', moduleId: 'filter' })).responseBody;
    const cs = `HostName=localhost;DeviceId=mod-host;ModuleId=filter;SharedAccessKey=${m.authentication.symmetricKey.primaryKey}`;
    const client = ModuleClient.fromConnectionString(cs, Mqtt);
    await client.open();
    await client.sendEvent(new Message('from-module'));
    await client.sendOutputEvent('alerts', new Message('to-output'));
    await client.close();
    const events = await readTelemetry({ device: 'mod-host', until: (e) => e.length >= 2 });
    assert.equal(events[0].body, 'from-module');
    assert.equal(events[0].systemProperties['iothub-connection-module-id'], 'filter');
    assert.equal(events[1].body, 'to-output');
    assert.equal(events[1].systemProperties['iothub-outputname'], 'alerts');
  });

  it('the registry shows the connection and its activity', async () => {
    await device('presence');
    const client = Client.fromConnectionString(deviceCs('presence'), Mqtt);
    await client.open();
    await client.sendEvent(new Message('x'));
    const live = (await registry.get('presence')).responseBody;
    assert.equal(live.connectionState, 'Connected');
    assert.notEqual(live.lastActivityTime, '0001-01-01T00:00:00Z');
    const stats = await serviceRequest({ path: '/statistics/service', policy: 'service' });
    assert.ok(stats.json.connectedDeviceCount >= 1);
    await client.close();
    await eventually(async () => (await registry.get('presence')).responseBody.connectionState === 'Disconnected',
      5000, 'Disconnected');
  });
});

describe('authentication at CONNECT', () => {
  before(async () => { await device('auth-dev'); });

  it('a wrong key is refused with CONNACK 5 (UnauthorizedError)', async () => {
    const cs = `HostName=localhost;DeviceId=auth-dev;SharedAccessKey=${Buffer.alloc(32, 9).toString('base64')}`;
    const client = Client.fromConnectionString(cs, Mqtt);
    client.setRetryPolicy(new NoRetry());
    await assert.rejects(client.open(), (e) => e instanceof errors.UnauthorizedError);
  });

  it('an expired token is refused', async () => {
    const token = SharedAccessSignature.create('localhost%2Fdevices%2Fauth-dev', undefined, keys['auth-dev'],
      Math.floor(Date.now() / 1000) - 5).toString();
    const client = Client.fromSharedAccessSignature(`HostName=localhost;DeviceId=auth-dev;SharedAccessSignature=${token}`, Mqtt);
    client.setRetryPolicy(new NoRetry());
    await assert.rejects(client.open(), (e) => e instanceof errors.UnauthorizedError);
  });

  it('a disabled device is refused with CONNACK 3', async () => {
    await device('disabled-dev', { status: 'disabled' });
    const client = rawClient('disabled-dev');
    await assert.rejects(connected(client), (e) => e.code === 3);
  });

  it('the secondary key, a policy with DeviceConnect, and the C SDK\'s raw sr all work', async () => {
    const d = (await registry.get('auth-dev')).responseBody;
    for (const password of [
      sas('localhost/devices/auth-dev', d.authentication.symmetricKey.secondaryKey),
      sas('localhost/devices/auth-dev', policyKey('device'), 600, 'device'),
    ]) {
      const c = rawClient('auth-dev', { password });
      await connected(c);
      c.end();
      await closed(c);
    }
    const exp = Math.floor(Date.now() / 1000) + 600;
    const sig = require('node:crypto').createHmac('sha256', Buffer.from(keys['auth-dev'], 'base64'))
      .update(`localhost/devices/auth-dev\n${exp}`).digest('base64');
    const raw = rawClient('auth-dev', { password: `SharedAccessSignature sr=localhost/devices/auth-dev&sig=${encodeURIComponent(sig)}&se=${exp}&skn=` });
    await connected(raw);
    raw.end();
    await closed(raw);
    const service = rawClient('auth-dev', { password: sas('localhost/devices/auth-dev', policyKey('service'), 600, 'service') });
    await assert.rejects(connected(service), (e) => e.code === 5);
  });

  it('a client id that is not the username\'s identity is CONNACK 2; a malformed username CONNACK 4', async () => {
    await assert.rejects(connected(rawClient('auth-dev', { clientId: 'someone-else' })), (e) => e.code === 2);
    await assert.rejects(connected(rawClient('auth-dev', { username: 'no-slashes' })), (e) => e.code === 4);
  });

  it('MQTT 3.1 is CONNACK 1', async () => {
    await assert.rejects(connected(rawClient('auth-dev', { protocolVersion: 3 })), (e) => e.code === 1);
  });
});

describe('connections are cut when access ends', () => {
  it('a second connection for the same id closes the first', async () => {
    await device('twice');
    const first = rawClient('twice');
    await connected(first);
    // Listen before the second connects: the hub may close the first before the second's CONNACK.
    const firstClosed = closed(first);
    const second = rawClient('twice');
    await connected(second);
    await firstClosed;
    assert.equal(second.connected, true);
    second.end();
  });

  for (const [what, change] of [
    ['disabled', async (id) => { const d = (await registry.get(id)).responseBody; await registry.update({ ...d, status: 'disabled' }); }],
    ['deleted', async (id) => { await registry.delete(id); }],
    ['given new keys', async (id) => {
      const d = (await registry.get(id)).responseBody;
      d.authentication.symmetricKey.primaryKey = Buffer.alloc(32, 5).toString('base64');
      await registry.update(d);
    }],
  ]) {
    it(`a device ${what} while connected is disconnected`, async () => {
      const id = `cut-${what.split(' ')[0]}`;
      await device(id);
      const c = rawClient(id);
      await connected(c);
      const gone = closed(c);
      await change(id);
      await Promise.race([gone, new Promise((_, reject) => setTimeout(() => reject(new Error('still connected')), 3000))]);
    });
  }

  it('a connection ends when its SAS token expires', async () => {
    await device('short-token');
    const c = rawClient('short-token', { password: sas('localhost/devices/short-token', keys['short-token'], 2) });
    await connected(c);
    await Promise.race([closed(c), new Promise((_, reject) => setTimeout(() => reject(new Error('not cut')), 8000))]);
  });

  it('a session with clean=0 keeps its subscriptions across reconnects', async () => {
    await device('sessions');
    const a = rawClient('sessions');
    const ack = await connected(a);
    assert.equal(ack.sessionPresent, false);
    await new Promise((resolve, reject) => a.subscribe('devices/sessions/messages/devicebound/#', { qos: 1 },
      (err, granted) => (err ? reject(err) : (assert.equal(granted[0].qos, 1), resolve()))));
    a.end();
    await closed(a);
    await eventually(async () => {
      const b = rawClient('sessions');
      const back = await connected(b);
      b.end();
      await closed(b);
      return back.sessionPresent === true;
    }, 5000, 'session present');
    const clean = rawClient('sessions', { clean: true });
    assert.equal((await connected(clean)).sessionPresent, false);
    clean.end();
  });
});

describe('plain MQTT clients and Azure topic rules', () => {
  before(async () => { await device('plain'); });

  it('mosquitto_pub with a SAS password publishes', async () => {
    const r = spawnSync('mosquitto_pub', ['-h', 'localhost', '-p', '8883', '--cafile', `${dataDir}/tls/ca.pem`,
      '-V', 'mqttv311', '-q', '1', '-i', 'plain', '-u', 'localhost/plain/?api-version=2021-04-12',
      '-P', sas('localhost/devices/plain', keys.plain), '-t', 'devices/plain/messages/events/source=mosquitto',
      '-m', 'hello from mosquitto_pub'], { encoding: 'utf8', timeout: 10000 });
    assert.equal(r.status, 0, r.stderr);
    const events = await readTelemetry({ device: 'plain', until: (e) => e.length >= 1 });
    assert.equal(events[0].body, 'hello from mosquitto_pub');
    assert.equal(events[0].properties.source, 'mosquitto');
  });

  it('RETAIN becomes x-opt-retain; QoS 0 is stored too; $. system names map', async () => {
    const c = rawClient('plain');
    await connected(c);
    await new Promise((r) => c.publish('devices/plain/messages/events/$.mid=retained&%24.ct=text%2Fplain', 'kept', { qos: 1, retain: true }, r));
    c.publish('devices/plain/messages/events/', 'fire-and-forget', { qos: 0 });
    c.end();
    await closed(c);
    const events = await readTelemetry({ device: 'plain', until: (e) => e.length >= 3 });
    const retained = events.find((e) => e.body === 'kept');
    assert.equal(retained.properties['x-opt-retain'], 'true');
    assert.equal(retained.systemProperties['message-id'], 'retained');
    assert.equal(retained.systemProperties['content-type'], 'text/plain');
    assert.ok(events.some((e) => e.body === 'fire-and-forget'));
  });

  it('a will is sent as telemetry when a device vanishes, not on DISCONNECT', async () => {
    await device('willing');
    const will = { topic: 'devices/willing/messages/events/reason=vanished', payload: 'gone', qos: 1, retain: false };
    const polite = rawClient('willing', { will });
    await connected(polite);
    polite.end();
    await closed(polite);
    const rude = rawClient('willing', { will: { ...will, payload: 'really gone' } });
    await connected(rude);
    rude.stream.destroy();
    const events = await readTelemetry({ device: 'willing', until: (e) => e.length >= 1 });
    assert.equal(events.length, 1);
    assert.equal(events[0].body, 'really gone');
    assert.equal(events[0].properties['iothub-MessageType'], 'Will');
    assert.equal(events[0].properties.reason, 'vanished');
  });

  it('publishing to another device\'s topic, an unknown topic, or at QoS 2 closes the connection', async () => {
    await device('other');
    for (const [topic, qos] of [['devices/other/messages/events/', 1], ['not/an/azure/topic', 1], ['devices/plain/messages/events/', 2]]) {
      const c = rawClient('plain');
      await connected(c);
      c.publish(topic, 'x', { qos });
      await closed(c);
    }
    const events = await readTelemetry({ device: 'other', timeoutMs: 1000 });
    assert.equal(events.length, 0, 'nothing reached the other device\'s stream');
  });

  it('SUBACK refuses filters outside the device\'s own topics', async () => {
    const c = rawClient('plain');
    await connected(c);
    const granted = await new Promise((resolve, reject) => c.subscribe({
      'devices/plain/messages/devicebound/#': { qos: 1 }, 'devices/other/messages/devicebound/#': { qos: 1 },
      '#': { qos: 0 }, '$iothub/methods/POST/#': { qos: 2 },
    }, (err, g) => (err ? reject(err) : resolve(g))));
    assert.deepEqual(granted.map((g) => g.qos), [1, 128, 128, 1]);
    c.end();
  });

  it('messages over 256 KB close the connection and are not stored', async () => {
    const c = rawClient('plain');
    await connected(c);
    c.publish('devices/plain/messages/events/', Buffer.alloc(262144 + 100, 97), { qos: 1 });
    await closed(c);
    const events = await readTelemetry({ device: 'plain', from: 'latest', timeoutMs: 500 });
    assert.equal(events.length, 0);
  });

  it('the plain MQTT listener serves the same protocol without TLS', async () => {
    const c = mqtt.connect('mqtt://localhost:1883', { clientId: 'plain', clean: true, reconnectPeriod: 0,
      username: 'localhost/plain/?api-version=2021-04-12', password: sas('localhost/devices/plain', keys.plain) });
    await connected(c);
    await new Promise((r) => c.publish('devices/plain/messages/events/', 'no tls', { qos: 1 }, r));
    c.end();
    const events = await readTelemetry({ device: 'plain', until: (e) => e.some((x) => x.body === 'no tls') });
    assert.ok(events.some((x) => x.body === 'no tls'));
  });
});

describe('WebSocket and keep-alive', () => {
  const WebSocket = require('ws');
  for (const protocol of ['mqtt', 'MQTT']) {
    it(`subprotocol ${protocol} is echoed as the client spelled it`, async () => {
      const ws = new WebSocket('wss://localhost/$iothub/websocket', protocol, { ca });
      await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
      assert.equal(ws.protocol, protocol);
      ws.close();
    });
  }

  it('an unknown subprotocol or path is refused with 400', async () => {
    for (const [url, protocol] of [['wss://localhost/$iothub/websocket', 'stomp'], ['wss://localhost/elsewhere', 'mqtt']]) {
      const ws = new WebSocket(url, protocol, { ca });
      const status = await new Promise((resolve) => {
        ws.once('unexpected-response', (req, res) => resolve(res.statusCode));
        ws.once('open', () => resolve('opened'));
        ws.once('error', () => {});
      });
      assert.equal(status, 400, url);
    }
  });

  it('a client silent for 1.5 x its keep-alive is disconnected', async () => {
    await device('sleepy');
    const s = tls.connect({ host: 'localhost', port: 8883, ca, servername: 'localhost' });
    await new Promise((r) => s.once('secureConnect', r));
    s.resume();  // drain the CONNACK, or the socket never reports its close
    const mqttPacket = require('mqtt-packet');
    s.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 1,
      clientId: 'sleepy', username: 'localhost/sleepy/?api-version=2021-04-12', password: Buffer.from(sas('localhost/devices/sleepy', keys.sleepy)) }));
    const opened = Date.now();
    await new Promise((r) => s.once('close', r));
    const lived = Date.now() - opened;
    assert.ok(lived >= 1400, `closed after ${lived} ms, not before 1.5 s`);
  });
});

describe('malformed input never takes the hub down', () => {
  const cases = {
    'garbage bytes': Buffer.from('GET / HTTP/1.1\r\n\r\n'),
    'PUBLISH before CONNECT': Buffer.from([0x30, 0x03, 0x00, 0x01, 0x74]),
    'remaining length over four bytes': Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0x01]),
    'a 100 MB packet announced': Buffer.from([0x10, 0x80, 0x80, 0x80, 0x32]),
    'unknown packet type': Buffer.from([0xf0, 0x00]),
    'CONNECT with the reserved flag': Buffer.from([0x10, 0x0c, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x01, 0x00, 0x3c, 0x00, 0x00]),
    'CONNECT with invalid UTF-8': Buffer.from([0x10, 0x0e, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3c, 0x00, 0x02, 0xc3, 0x28]),
  };
  for (const [name, bytes] of Object.entries(cases)) {
    it(`${name}: the connection is closed`, async () => {
      const s = tls.connect({ host: 'localhost', port: 8883, ca, servername: 'localhost' });
      await new Promise((r, j) => { s.once('secureConnect', r); s.once('error', j); });
      s.on('error', () => {});
      s.write(bytes);
      await new Promise((r) => s.once('close', r));
    });
  }

  it('a flood of connections that never send CONNECT is cut, and devices still connect', async () => {
    const sockets = [];
    for (let i = 0; i < 50; i++) sockets.push(net.connect({ host: 'localhost', port: 1883 }));
    await Promise.all(sockets.map((s) => new Promise((r) => s.once('connect', r))));
    const c = rawClient('plain', { clean: true });
    await connected(c);
    await new Promise((r) => c.publish('devices/plain/messages/events/', 'still here', { qos: 1 }, r));
    c.end();
    for (const s of sockets) s.destroy();
    assert.equal((await serviceRequest({ path: '/devices/plain' })).status, 200);
  });
});
