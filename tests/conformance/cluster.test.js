// Cluster mode with the unmodified SDKs: three clustered JetStream nats-servers and two hub nodes
// (127.0.0.1 and 127.0.0.2) made from copies of one data directory. Devices connect to one node,
// the service to the other: registry, telemetry through the Event Hubs endpoint, C2D with
// feedback and expiry, twins, methods, one connection per identity, connection state, revocation,
// files, cluster status, routing and Event Grid subscriptions. Faults are in cluster-faults.test.js.
'use strict';
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const { Readable } = require('node:stream');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const { Message } = require('azure-iot-device');
const { bin, dataDir, eventually, sleep, rawRequest, serviceToken } = require('./lib/hub');
const {
  setUp, closers, serviceString, createDevice, deviceOn, rawDevice, collect, values, call,
} = require('./lib/two-nodes');

let a;
let b;
const feedback = [];  // C2D feedback records read through node B
let service;  // node B's service client
setUp((nodes) => { ({ a, b } = nodes); });

describe('one hub across two nodes', () => {
  it('a device created through node B connects to node A at once', async () => {
    await createDevice(b, 'reg-1');
    const c = await deviceOn(a, 'reg-1');
    await c.sendEvent(new Message('hello'));
    const seen = (await Registry.fromConnectionString(serviceString(a)).get('reg-1')).responseBody;
    assert.equal(seen.deviceId, 'reg-1');
  });

  it('telemetry sent to node A is read through node B\'s Event Hubs endpoint', async () => {
    await createDevice(a, 'tel-1');
    const c = await deviceOn(a, 'tel-1');
    for (let i = 0; i < 20; i += 1) await c.sendEvent(new Message(JSON.stringify({ i })));
    const c1 = collect(b);
    await eventually(() => new Set(values(c1, 'tel-1')).size === 20, 30000,
      () => `20 events through node B, got ${values(c1, 'tel-1').length}`);
    await c1.subscription.close();
  });

  it('C2D sent through node B reaches the device on node A, and feedback comes back through B', async () => {
    await createDevice(a, 'c2d-1');
    const device = await deviceOn(a, 'c2d-1');
    const received = [];
    device.on('message', (msg) => {
      received.push(msg.data.toString());
      device.complete(msg, () => {});
    });
    service = ServiceClient.fromConnectionString(serviceString(b, 'service'));
    await service.open();
    closers.push(() => service.close());
    const { result: receiver } = await service.getFeedbackReceiver();
    receiver.on('message', (msg) => {
      for (const r of JSON.parse(msg.data.toString())) feedback.push(r);
      receiver.complete(msg, () => {});
    });
    const m = new Message('to the device');
    m.messageId = 'cluster-c2d-1';
    m.ack = 'full';
    await service.send('c2d-1', m);
    await eventually(() => received.includes('to the device'), 15000, 'the C2D message on node A');
    await eventually(() => feedback.some((r) => r.originalMessageId === 'cluster-c2d-1' && r.statusCode === 'Success'),
      15000, () => `Success feedback through node B, got ${JSON.stringify(feedback)}`);
  });

  it('a C2D message that expires gives one Expired record: one node expires for the cluster', async () => {
    await createDevice(a, 'c2d-offline');
    const send = async (id, ttlMs) => {
      const m = new Message('never read');
      m.messageId = id;
      m.ack = 'full';
      m.expiryTimeUtc = Date.now() + ttlMs;
      await service.send('c2d-offline', m);
    };
    await send('expires-first', 1000);
    // Both nodes sweep every second: by the time the second one's record is in, a second record
    // for the first would be too.
    await send('expires-later', 4000);
    const expired = (id) => feedback.filter((r) => r.originalMessageId === id && r.statusCode === 'Expired');
    await eventually(() => expired('expires-later').length > 0, 20000,
      () => `Expired feedback for both, got ${JSON.stringify(feedback)}`);
    assert.equal(expired('expires-first').length, 1, JSON.stringify(feedback));
    assert.equal(expired('expires-later').length, 1, JSON.stringify(feedback));
  });

  it('a desired update through node B reaches the device on node A; its report is read on B', async () => {
    await createDevice(a, 'twin-1');
    const device = await deviceOn(a, 'twin-1');
    const twin = await device.getTwin();
    const patches = [];
    twin.on('properties.desired', (p) => patches.push(p));
    const registryB = Registry.fromConnectionString(serviceString(b));
    const current = (await registryB.getTwin('twin-1')).responseBody;
    await registryB.updateTwin('twin-1', { properties: { desired: { interval: 30 } } }, current.etag);
    await eventually(() => patches.some((p) => p.interval === 30), 15000, 'the desired patch on node A');
    await call((cb) => twin.properties.reported.update({ interval: 30 }, cb));
    const seen = (await registryB.getTwin('twin-1')).responseBody;
    assert.equal(seen.properties.reported.interval, 30);
  });

  it('a direct method invoked through node B is answered by the device on node A', async () => {
    await createDevice(a, 'method-1');
    const device = await deviceOn(a, 'method-1');
    device.onDeviceMethod('reboot', (req, res) => res.send(200, { delayed: req.payload.delay }, () => {}));
    const service = ServiceClient.fromConnectionString(serviceString(b, 'service'));
    closers.push(() => service.close());
    // The device's subscription reaches node A's memory a moment after open().
    let answer;
    await eventually(async () => {
      try {
        answer = (await service.invokeDeviceMethod('method-1', { methodName: 'reboot', payload: { delay: 5 }, responseTimeoutInSeconds: 10 })).result;
        return true;
      } catch (e) {
        if (e.responseBody && /DeviceNotOnline|404103/.test(e.responseBody)) return false;
        throw e;
      }
    }, 15000, 'the method answered');
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.payload, { delayed: 5 });
    await assert.rejects(service.invokeDeviceMethod('reg-1', { methodName: 'x', responseTimeoutInSeconds: 5 }),
      (e) => /DeviceNotOnline|404103|not online/.test(`${e.responseBody || e.message}`));
  });

  it('a method with connectTimeoutInSeconds through node B waits for the device to connect to node A', async () => {
    await createDevice(a, 'method-late');
    const service = ServiceClient.fromConnectionString(serviceString(b, 'service'));
    closers.push(() => service.close());
    const invoked = service.invokeDeviceMethod('method-late',
      { methodName: 'hello', payload: {}, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 30 });
    // The call is waiting on node B before the device connects to node A.
    await sleep(500);
    const device = await deviceOn(a, 'method-late');
    device.onDeviceMethod('hello', (req, res) => res.send(200, { from: 'A' }, () => {}));
    const answer = (await invoked).result;
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.payload, { from: 'A' });
  });

  it('a second connection on node B ends the first one on node A', async () => {
    await createDevice(a, 'twice-1');
    const first = rawDevice(a, 'twice-1');
    await first.connected;
    const second = rawDevice(b, 'twice-1');
    await second.connected;
    await Promise.race([first.closed, sleep(5000).then(() => { throw new Error('the first connection is still open'); })]);
    assert.equal(second.client.connected, true);
  });

  it('a file uploaded through node A is read through node B', async () => {
    await createDevice(a, 'upload-1');
    const device = await deviceOn(a, 'upload-1');
    // Larger than one JetStream message, so it is stored in parts.
    const data = Buffer.from('0123456789abcdef'.repeat(40 * 1024));
    await device.uploadToBlob('logs/big.txt', Readable.from([data]), data.length);
    const r = await rawRequest({
      path: '/files/upload-1/logs/big.txt?api-version=2021-04-12', host: b.host,
      ca: fs.readFileSync(`${dataDir}/tls/ca.pem`), headers: { Authorization: serviceToken('service', 600, b.host) },
    });
    assert.equal(r.status, 200, r.body.slice(0, 200));
    assert.equal(r.body.length, data.length);
    assert.ok(r.body === data.toString(), 'the bytes read through node B differ');
  });

  it('connectionState and lastActivityTime read through node B follow a device on node A', async () => {
    await createDevice(a, 'state-1');
    const registryB = Registry.fromConnectionString(serviceString(b));
    const read = async () => (await registryB.get('state-1')).responseBody;
    const device = rawDevice(a, 'state-1');
    await device.connected;
    const sent = Date.now();
    await new Promise((resolve, reject) => device.client.publish('devices/state-1/messages/events/', 'x',
      { qos: 1 }, (e) => (e ? reject(e) : resolve())));
    let d;
    await eventually(async () => { d = await read(); return d.connectionState === 'Connected'; }, 5000,
      () => `Connected on node B, got ${d && d.connectionState}`);
    // Activity is written behind every five seconds on the device's node.
    await eventually(async () => { d = await read(); return Date.parse(d.lastActivityTime) >= sent - 1000; }, 15000,
      () => `lastActivityTime after ${new Date(sent).toISOString()} on node B, got ${d && d.lastActivityTime}`);
    const closedAt = Date.now();
    device.client.end(true);
    await eventually(async () => { d = await read(); return d.connectionState === 'Disconnected'; }, 5000,
      () => `Disconnected on node B, got ${d && d.connectionState}`);
    assert.ok(Date.parse(d.connectionStateUpdatedTime) >= closedAt - 1000, d.connectionStateUpdatedTime);
  });

  it('disabling a device through node B disconnects it from node A within a second', async () => {
    await createDevice(a, 'revoke-1');
    const device = rawDevice(a, 'revoke-1');
    await device.connected;
    const registryB = Registry.fromConnectionString(serviceString(b));
    const d = (await registryB.get('revoke-1')).responseBody;
    await registryB.update({ ...d, status: 'disabled' });
    // Within a second of the update's answer (measured here, as a deadline, not a delay).
    await Promise.race([device.closed, sleep(1000).then(() => { throw new Error('still connected after 1 s'); })]);
  });
});

describe('cluster status', () => {
  it('shows both nodes alive, the routing and sweep duties held, and the streams with three replicas', async () => {
    const ca = fs.readFileSync(`${dataDir}/tls/ca.pem`);
    let status;
    await eventually(async () => {
      const r = await rawRequest({
        path: '/cluster/status?api-version=2021-04-12', host: b.host, ca,
        headers: { Authorization: serviceToken('service', 600, b.host) },
      });
      status = r.json;
      return r.status === 200 && status.nodes.filter((n) => n.alive).length === 2 &&
        ['routing', 'sweeps'].every((duty) => status.duties.some((d) => d.duty === duty && d.held));
    }, 15000, () => `two live nodes and the routing and sweep duties, got ${JSON.stringify(status)}`);
    assert.equal(status.mode, 'cluster');
    const state = status.streams.find((x) => x.stream === 'IOTHUB_STATE');
    assert.ok(state.lastSequence > 0);
    assert.equal(state.replicas.length, 2, 'a leader and two other replicas');
    const cli = execFileSync(bin, ['cluster', 'status', '--connection-string', serviceString(a, 'service')],
      { env: { ...process.env, IOTHUB_CA_FILE: `${dataDir}/tls/ca.pem` } }).toString();
    assert.match(cli, /"mode": ?"cluster"/);
  });
});

describe('routing across nodes', () => {
  it('a route set through node B delivers node A\'s messages once, from the node holding the duty', async () => {
    const routing = {
      endpoints: { eventHubs: [{ name: 'hot' }] },
      routes: [{ name: 'hot', source: 'DeviceMessages', condition: 'hot = \'yes\'', endpointNames: ['hot'], isEnabled: true }],
      fallbackRoute: { name: '$fallback', source: 'DeviceMessages', condition: 'true', endpointNames: ['events'], isEnabled: true },
    };
    const body = JSON.stringify(routing);
    // Creating the endpoint's replicated streams can outlast one request on a busy machine:
    // the PUT is repeated (it is idempotent) while the hub answers 503.
    let r;
    await eventually(async () => {
      r = await rawRequest({
        method: 'PUT', path: '/routing?api-version=2021-04-12', host: b.host, body,
        ca: fs.readFileSync(`${dataDir}/tls/ca.pem`),
        headers: { Authorization: serviceToken('iothubowner', 600, b.host), 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
      });
      if (r.status !== 503) return true;
      return false;
    }, 90000, () => `the routing stored, last ${r && r.status}`);
    assert.equal(r.status, 200, r.body);
    await createDevice(a, 'route-1');
    const c = await deviceOn(a, 'route-1');
    const hot = collect(b, 'hot');
    // Node A learns the new routing from storage a moment after B stored it (as on Azure, a
    // change applies to what devices send after it is in force).
    await eventually(async () => {
      const seen = await rawRequest({
        path: '/routing?api-version=2021-04-12', host: a.host, ca: fs.readFileSync(`${dataDir}/tls/ca.pem`),
        headers: { Authorization: serviceToken('iothubowner', 600, a.host) },
      });
      return seen.status === 200 && (seen.json.routes || []).some((x) => x.name === 'hot');
    }, 30000, 'node A to follow the routing change');
    // The 31st closes the run: routing keeps a device's order, so once it is in, any repeat of
    // the others would be too.
    for (let i = 0; i <= 30; i += 1) {
      const m = new Message(JSON.stringify({ i }));
      m.properties.add('hot', 'yes');
      await c.sendEvent(m);
    }
    await eventually(() => values(hot, 'route-1').includes(30), 30000,
      () => `the last routed message, got ${values(hot, 'route-1').length}`);
    assert.deepEqual(values(hot, 'route-1').sort((x, y) => x - y), [...Array(31).keys()], 'each exactly once');
    await hot.subscription.close();
  });
});


describe('event grid across nodes', () => {
  it('a subscription made through node B is known to node A and gets the events of a device there', async () => {
    const notifications = [];
    const server = require('node:http').createServer((req, res) => {
      let body = '';
      req.on('data', (c) => { body += c; });
      req.on('end', () => {
        if (req.headers['aeg-event-type'] === 'SubscriptionValidation') {
          res.writeHead(200, { 'content-type': 'application/json' });
          return res.end(JSON.stringify({ validationResponse: JSON.parse(body)[0].data.validationCode }));
        }
        if (req.headers['aeg-event-type'] === 'Notification') notifications.push(...JSON.parse(body));
        res.writeHead(200);
        res.end();
      });
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise((resolve) => server.close(resolve)));
    const ca = fs.readFileSync(`${dataDir}/tls/ca.pem`);
    const request = (node, method, body) => rawRequest({
      method, path: '/eventSubscriptions/across?api-version=2021-04-12', host: node.host, ca,
      body: body && JSON.stringify(body),
      headers: {
        Authorization: serviceToken('iothubowner', 600, node.host), 'Content-Type': 'application/json',
        ...(body ? { 'Content-Length': Buffer.byteLength(JSON.stringify(body)) } : {}),
      },
    });
    const r = await request(b, 'PUT', {
      properties: {
        destination: { endpointType: 'WebHook', properties: { endpointUrl: `http://127.0.0.1:${server.address().port}/grid` } },
        filter: { includedEventTypes: ['Microsoft.Devices.DeviceConnected'], subjectBeginsWith: 'devices/grid-x' },
      },
    });
    assert.equal(r.status, 200, r.body);
    await eventually(async () => (await request(a, 'GET')).status === 200, 30000,
      'node A to know the subscription');
    await eventually(async () => (await request(b, 'GET')).json.properties.provisioningState === 'Succeeded',
      30000, 'the validation handshake');
    await createDevice(a, 'grid-x1');
    await deviceOn(a, 'grid-x1');
    await eventually(() => notifications.some((e) => e.subject === 'devices/grid-x1'), 30000,
      () => `DeviceConnected for grid-x1, got ${JSON.stringify(notifications.map((e) => e.subject))}`);
    assert.equal((await request(b, 'DELETE')).status, 204);
    await eventually(async () => (await request(a, 'GET')).status === 404, 30000,
      'node A to forget the subscription');
  });
});
