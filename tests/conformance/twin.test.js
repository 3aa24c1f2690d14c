// Device twins and direct methods with the unmodified Azure SDKs: azure-iot-device over MQTT and
// MQTT-WS on the device side, azure-iothub Registry and Client on the service side.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const mqtt = require('mqtt');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const { Client, ModuleClient } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { SharedAccessSignature } = require('azure-iot-common');
const { Hub, connectionString, eventually, dataDir, serviceRequest, sleep } = require('./lib/hub');

const ca = fs.readFileSync(`${dataDir}/tls/ca.pem`);
let hub;
let registry;
let service;
const keys = {};
const open = [];

async function device(id) {
  const d = (await registry.create({ deviceId: id })).responseBody;
  keys[id] = d.authentication.symmetricKey.primaryKey;
}
async function deviceClient(id, transport = Mqtt) {
  const c = Client.fromConnectionString(`HostName=localhost;DeviceId=${id};SharedAccessKey=${keys[id]}`, transport);
  await c.open();
  open.push(c);
  return c;
}
const call = (f) => new Promise((resolve, reject) => f((err, res) => (err ? reject(err) : resolve(res))));

before(async () => {
  hub = await Hub.start();
  registry = Registry.fromConnectionString(connectionString());
  service = ServiceClient.fromConnectionString(connectionString('service'));
});
after(async () => {
  for (const c of open) await c.close().catch(() => {});
  await service.close().catch(() => {});
  await hub.stop();
});

describe('twins over MQTT with the device SDK', () => {
  for (const transport of [Mqtt, MqttWs]) {
    it(`${transport.name}: get, reported update, desired notification with version`, async () => {
      const id = `twin-${transport.name.toLowerCase()}`;
      await device(id);
      const client = await deviceClient(id, transport);
      const twin = await client.getTwin();
      assert.equal(twin.properties.desired.$version, 1);
      assert.equal(twin.properties.reported.$version, 1);

      await call((cb) => twin.properties.reported.update({ temp: 21.5, fw: { version: '1.0' } }, cb));
      const seen = (await registry.getTwin(id)).responseBody;
      assert.equal(seen.properties.reported.temp, 21.5);
      assert.equal(seen.properties.reported.fw.version, '1.0');
      assert.equal(seen.properties.reported.$version, 2);
      assert.ok(seen.properties.reported.$metadata.temp.$lastUpdated);

      const notified = [];
      twin.on('properties.desired', (patch) => notified.push(patch));
      await eventually(() => notified.length >= 1, 5000, 'the initial desired event');
      await registry.updateTwin(id, { properties: { desired: { rate: 5, mode: { fast: true } } } }, '*');
      await eventually(() => notified.some((p) => p.$version === 2), 5000, 'desired notification');
      const patch = notified.find((p) => p.$version === 2);
      assert.equal(patch.rate, 5);
      assert.equal(patch.mode.fast, true);
      // The SDK merges notifications into its copy of the twin.
      assert.equal(twin.properties.desired.rate, 5);
      assert.equal(twin.properties.desired.$version, 2);
    });
  }

  it('a reported patch that breaks the limits is refused with the Azure error', async () => {
    await device('twin-limits');
    const client = await deviceClient('twin-limits');
    const twin = await client.getTwin();
    await assert.rejects(call((cb) => twin.properties.reported.update({ 'bad.key': 1 }, cb)));
    await assert.rejects(call((cb) => twin.properties.reported.update({ big: 'x'.repeat(5000) }, cb)));
    const deep = {};
    let at = deep;
    for (let i = 0; i < 11; i++) { at.k = {}; at = at.k; }
    at.v = 1;
    await assert.rejects(call((cb) => twin.properties.reported.update(deep, cb)));
    const t = (await registry.getTwin('twin-limits')).responseBody;
    assert.equal(t.properties.reported.$version, 1, 'nothing was applied');
    // The connection survives a refused patch.
    await call((cb) => twin.properties.reported.update({ ok: true }, cb));
  });

  it('error responses carry the status in the topic and errorCode in the body', async () => {
    await device('twin-raw');
    const token = SharedAccessSignature.create('localhost/devices/twin-raw', undefined, keys['twin-raw'],
      Math.floor(Date.now() / 1000) + 600).toString();
    const c = mqtt.connect('mqtts://localhost:8883', { ca, clientId: 'twin-raw', reconnectPeriod: 0,
      username: 'localhost/twin-raw/?api-version=2021-04-12', password: token });
    await new Promise((resolve, reject) => { c.once('connect', resolve); c.once('error', reject); });
    const responses = [];
    c.on('message', (topic, payload) => responses.push({ topic, payload: payload.toString() }));
    await new Promise((resolve) => c.subscribe('$iothub/twin/res/#', { qos: 0 }, resolve));
    c.publish('$iothub/twin/PATCH/properties/reported/?$rid=7', 'not json');
    c.publish('$iothub/twin/PATCH/properties/reported/?$rid=8&$version=99', '{"a":1}');
    c.publish('$iothub/twin/PATCH/properties/reported/?$rid=9', '{"a":1}');
    c.publish('$iothub/twin/GET/?$rid=10', '');
    await eventually(() => responses.length === 4, 5000, 'four twin responses');
    assert.match(responses[0].topic, /^\$iothub\/twin\/res\/400\/\?\$rid=7$/);
    assert.ok(JSON.parse(responses[0].payload).errorCode);
    assert.match(responses[1].topic, /^\$iothub\/twin\/res\/412\/\?\$rid=8$/);
    assert.equal(responses[2].topic, '$iothub/twin/res/204/?$rid=9&$version=2');
    assert.equal(responses[2].payload, '');
    assert.equal(responses[3].topic, '$iothub/twin/res/200/?$rid=10');
    assert.deepEqual(JSON.parse(responses[3].payload), { desired: { $version: 1 }, reported: { a: 1, $version: 2 } });
    c.end(true);
  });
});

describe('twins from the service SDK', () => {
  it('the model id a device announces and the live fields show in its twin; a re-created device starts fresh', async () => {
    await device('twin-pnp');
    const c = Client.fromConnectionString(`HostName=localhost;DeviceId=twin-pnp;SharedAccessKey=${keys['twin-pnp']}`, Mqtt);
    await c.setOptions({ modelId: 'dtmi:com:example:Thermostat;1' });
    await c.open();
    open.push(c);
    await eventually(async () => (await registry.getTwin('twin-pnp')).responseBody.modelId === 'dtmi:com:example:Thermostat;1',
      5000, 'modelId recorded');
    const { responseBody: live } = await registry.getTwin('twin-pnp');
    assert.equal(live.connectionState, 'Connected');
    await registry.updateTwin('twin-pnp', { tags: { keep: false } }, '*');
    await c.close();
    await registry.delete('twin-pnp');
    await assert.rejects(registry.getTwin('twin-pnp'), (err) => err.response.statusCode === 404);
    await registry.create({ deviceId: 'twin-pnp' });
    const { responseBody: fresh } = await registry.getTwin('twin-pnp');
    assert.deepEqual(fresh.tags, {});
    assert.equal(fresh.modelId, '');
    assert.equal(fresh.version, 1);
  });

  it('tags and desired merge; a stale ETag is refused with 412', async () => {
    await device('twin-svc');
    const { responseBody: twin } = await registry.getTwin('twin-svc');
    assert.equal(twin.deviceId, 'twin-svc');
    assert.equal(twin.authenticationType, 'sas');
    assert.equal(twin.connectionState, 'Disconnected');
    const etag = twin.etag;
    const updated = (await registry.updateTwin('twin-svc', { tags: { site: { building: 43 } } }, etag)).responseBody;
    assert.equal(updated.tags.site.building, 43);
    assert.notEqual(updated.etag, etag);
    await assert.rejects(registry.updateTwin('twin-svc', { tags: { site: null } }, etag),
      (err) => err.response.statusCode === 412 && err.constructor.name === 'InvalidEtagError');
    // The Twin object's own update uses `*`.
    const { responseBody: t2 } = await registry.getTwin('twin-svc');
    await t2.update({ tags: { site: { floor: 2 } }, properties: { desired: { interval: 10 } } });
    const { responseBody: t3 } = await registry.getTwin('twin-svc');
    assert.deepEqual(t3.tags, { site: { building: 43, floor: 2 } });
    assert.equal(t3.properties.desired.interval, 10);
    assert.equal(t3.properties.desired.$metadata.interval.$lastUpdatedVersion, 2);
  });

  it('PUT replaces tags and desired; reported stays the device\'s', async () => {
    await device('twin-put');
    await registry.updateTwin('twin-put', { tags: { a: 1 }, properties: { desired: { x: 1, y: 2 } } }, '*');
    const res = await serviceRequest({ method: 'PUT', path: '/twins/twin-put?api-version=2021-04-12',
      json: { tags: { b: 2 }, properties: { desired: { y: 3 }, reported: { hacked: true } } } });
    assert.equal(res.status, 200);
    assert.deepEqual(res.json.tags, { b: 2 });
    assert.equal(res.json.properties.desired.x, undefined);
    assert.equal(res.json.properties.desired.y, 3);
    assert.equal(res.json.properties.reported.hacked, undefined);
    assert.equal(res.headers.etag, `"${res.json.etag}"`);
  });

  it('bad writes are 400 and change nothing; unknown devices 404', async () => {
    await device('twin-bad');
    for (const body of [{ tags: { 'a b': 1 } }, { tags: [1] }, { properties: { desired: { s: 'x'.repeat(5000) } } },
      { tags: { big: 'y'.repeat(4000), big2: 'y'.repeat(4000), big3: 'y'.repeat(400) } }]) {
      const res = await serviceRequest({ method: 'PATCH', path: '/twins/twin-bad?api-version=2021-04-12', json: body });
      assert.equal(res.status, 400, JSON.stringify(body).slice(0, 60));
      assert.match(res.json.Message, /^ErrorCode:ArgumentInvalid;/);
    }
    const { responseBody: t } = await registry.getTwin('twin-bad');
    assert.deepEqual(t.tags, {});
    assert.equal(t.version, 1);
    await assert.rejects(registry.getTwin('no-such-device'), (err) => err.response.statusCode === 404);
    const noRight = await serviceRequest({ method: 'GET', path: '/twins/twin-bad?api-version=2021-04-12', policy: 'registryRead' });
    assert.equal(noRight.status, 401);
  });

  it('module twins: service and module client', async () => {
    await device('twin-mod-dev');
    const m = (await registry.addModule({ deviceId: 'twin-mod-dev', moduleId: 'filter' })).responseBody;
    const mc = ModuleClient.fromConnectionString(
      `HostName=localhost;DeviceId=twin-mod-dev;ModuleId=filter;SharedAccessKey=${m.authentication.symmetricKey.primaryKey}`, Mqtt);
    await mc.open();
    open.push(mc);
    const twin = await mc.getTwin();
    await call((cb) => twin.properties.reported.update({ stage: 'ready' }, cb));
    const notified = [];
    twin.on('properties.desired', (p) => notified.push(p));
    await registry.updateModuleTwin('twin-mod-dev', 'filter', { properties: { desired: { threshold: 7 } } }, '*');
    await eventually(() => notified.some((p) => p.threshold === 7), 5000, 'module desired notification');
    const { responseBody: mt } = await registry.getModuleTwin('twin-mod-dev', 'filter');
    assert.equal(mt.moduleId, 'filter');
    assert.equal(mt.properties.reported.stage, 'ready');
    const { responseBody: dt } = await registry.getTwin('twin-mod-dev');
    assert.equal(dt.properties.reported.stage, undefined, 'the device twin is separate');
  });
});

describe('direct methods', () => {
  it('invoke with payload and a custom status; concurrent calls to one device', async () => {
    await device('meth');
    const client = await deviceClient('meth');
    client.onDeviceMethod('reboot', (req, res) => {
      res.send(201, { echoed: req.payload, name: req.methodName }, () => {});
    });
    client.onDeviceMethod('slow', (req, res) => {
      setTimeout(() => res.send(200, { n: req.payload.n }, () => {}), 200 - req.payload.n * 20);
    });
    // The SDK subscribes when the first handler is registered; the connect timeout covers that.
    const r = await service.invokeDeviceMethod('meth', { methodName: 'reboot', payload: { delay: 3 }, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 10 });
    assert.equal(r.result.status, 201);
    assert.deepEqual(r.result.payload, { echoed: { delay: 3 }, name: 'reboot' });
    const all = await Promise.all([0, 1, 2, 3, 4].map((n) =>
      service.invokeDeviceMethod('meth', { methodName: 'slow', payload: { n }, responseTimeoutInSeconds: 10 })));
    assert.deepEqual(all.map((x) => x.result.payload.n), [0, 1, 2, 3, 4]);
  });

  it('an offline device is 404 DeviceNotOnline; no answer is 504', async () => {
    await device('meth-off');
    await assert.rejects(service.invokeDeviceMethod('meth-off', { methodName: 'x', responseTimeoutInSeconds: 5 }),
      (err) => err.response.statusCode === 404 && /DeviceNotOnline/.test(err.responseBody));
    const client = await deviceClient('meth-off');
    client.onDeviceMethod('ignored', () => {});
    const started = Date.now();
    await assert.rejects(service.invokeDeviceMethod('meth-off', { methodName: 'ignored', responseTimeoutInSeconds: 5, connectTimeoutInSeconds: 10 }),
      (err) => err.response.statusCode === 504 && /GatewayTimeout/.test(err.responseBody));
    assert.ok(Date.now() - started >= 4500, 'waited for the response timeout');
  });

  it('a method to an id the registry does not know is 404 DeviceNotFound, not DeviceNotOnline', async () => {
    await assert.rejects(service.invokeDeviceMethod('no-such-device', { methodName: 'x', responseTimeoutInSeconds: 5 }),
      (err) => err.name === 'DeviceNotFoundError' && err.response.statusCode === 404 && /DeviceNotFound/.test(err.responseBody));
    await device('meth-nomod');
    await assert.rejects(service.invokeDeviceMethod('meth-nomod', 'no-such-module', { methodName: 'x', responseTimeoutInSeconds: 5 }),
      (err) => err.response.statusCode === 404 && /ModuleNotFound/.test(err.responseBody));
  });

  it('connectTimeoutInSeconds waits for the device to connect', async () => {
    await device('meth-late');
    const pending = service.invokeDeviceMethod('meth-late', { methodName: 'hello', payload: 'hi', responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 20 });
    await sleep(500);
    const client = await deviceClient('meth-late');
    client.onDeviceMethod('hello', (req, res) => res.send(200, `${req.payload} back`, () => {}));
    const r = await pending;
    assert.equal(r.result.status, 200);
    assert.equal(r.result.payload, 'hi back');
  });

  it('module methods, and bad invocations are 400', async () => {
    await device('meth-mod');
    const m = (await registry.addModule({ deviceId: 'meth-mod', moduleId: 'm1' })).responseBody;
    const mc = ModuleClient.fromConnectionString(
      `HostName=localhost;DeviceId=meth-mod;ModuleId=m1;SharedAccessKey=${m.authentication.symmetricKey.primaryKey}`, Mqtt);
    await mc.open();
    open.push(mc);
    mc.onMethod('ping', (req, res) => res.send(200, { pong: true }, () => {}));
    const r = await service.invokeDeviceMethod('meth-mod', 'm1', { methodName: 'ping', responseTimeoutInSeconds: 5, connectTimeoutInSeconds: 10 });
    assert.deepEqual(r.result, { status: 200, payload: { pong: true } });
    for (const body of [{}, { methodName: 'x', responseTimeoutInSeconds: 1 }, { methodName: 'x', connectTimeoutInSeconds: 301 }]) {
      const res = await serviceRequest({ method: 'POST', path: '/twins/meth-mod/modules/m1/methods?api-version=2021-04-12', json: body });
      assert.equal(res.status, 400, JSON.stringify(body));
    }
    const big = await serviceRequest({ method: 'POST', path: '/twins/meth-mod/modules/m1/methods?api-version=2021-04-12',
      json: { methodName: 'ping', payload: 'z'.repeat(130 * 1024) } });
    assert.equal(big.status, 413);
  });
});

describe('queries from the service SDK', () => {
  it('query by tag with paging over more than one page', async () => {
    for (let i = 0; i < 12; i++) {
      await device(`q-${String(i).padStart(2, '0')}`);
      await registry.updateTwin(`q-${String(i).padStart(2, '0')}`,
        { tags: { fleet: i % 3 === 0 ? 'alpha' : 'beta', n: i } }, '*');
    }
    const query = registry.createQuery("SELECT * FROM devices WHERE tags.fleet = 'beta'", 3);
    const seen = [];
    let pages = 0;
    while (query.hasMoreResults) {
      const { result } = await query.nextAsTwin();
      pages++;
      for (const t of result) seen.push(t.deviceId);
      assert.ok(pages < 10, 'paging ends');
    }
    assert.equal(pages, 3);
    assert.deepEqual(seen, ['q-01', 'q-02', 'q-04', 'q-05', 'q-07', 'q-08', 'q-10', 'q-11']);

    const agg = registry.createQuery('SELECT tags.fleet, COUNT() AS n FROM devices WHERE STARTSWITH(deviceId, \'q-\') GROUP BY tags.fleet');
    const { result: groups } = await agg.next();
    assert.deepEqual(groups.sort((a, b) => a.fleet.localeCompare(b.fleet)), [{ fleet: 'alpha', n: 4 }, { fleet: 'beta', n: 8 }]);

    const proj = await serviceRequest({ method: 'POST', path: '/devices/query?api-version=2021-04-12',
      json: { query: 'SELECT deviceId, tags.n FROM devices WHERE tags.n IN [1, 2] AND NOT IS_DEFINED(tags.missing)' } });
    assert.equal(proj.status, 200);
    assert.equal(proj.headers['x-ms-item-type'], 'Raw');
    assert.equal(proj.headers['x-ms-continuation'], undefined);
    assert.deepEqual(proj.json, [{ deviceId: 'q-01', n: 1 }, { deviceId: 'q-02', n: 2 }]);
    // RegistryRead or ServiceConnect may query; DeviceConnect alone may not.
    for (const [policy, status] of [['registryRead', 200], ['service', 200], ['device', 401]]) {
      const res = await serviceRequest({ method: 'POST', path: '/devices/query?api-version=2021-04-12', policy,
        json: { query: 'SELECT COUNT() AS n FROM devices' } });
      assert.equal(res.status, status, policy);
    }
  });

  it('query on reported properties, modules, and a bad query', async () => {
    await device('q-mod');
    const m = (await registry.addModule({ deviceId: 'q-mod', moduleId: 'sensor' })).responseBody;
    const mc = ModuleClient.fromConnectionString(
      `HostName=localhost;DeviceId=q-mod;ModuleId=sensor;SharedAccessKey=${m.authentication.symmetricKey.primaryKey}`, Mqtt);
    await mc.open();
    open.push(mc);
    const twin = await mc.getTwin();
    await call((cb) => twin.properties.reported.update({ temperature: 31 }, cb));
    const { result } = await registry.createQuery('SELECT * FROM devices.modules WHERE properties.reported.temperature > 30').nextAsTwin();
    assert.equal(result.length, 1);
    assert.equal(result[0].moduleId, 'sensor');
    const bad = await serviceRequest({ method: 'POST', path: '/devices/query?api-version=2021-04-12',
      json: { query: 'SELECT * FROM devices WHERE tags.x = ' } });
    assert.equal(bad.status, 400);
    assert.match(bad.json.Message, /^ErrorCode:ArgumentInvalid;.*position/);
  });
});
