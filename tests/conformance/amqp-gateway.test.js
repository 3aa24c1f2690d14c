// The AMQP endpoint seen from a raw AMQP client (rhea, as the SDKs use it, but without their
// rules): a gateway multiplexing 100 devices on one connection, isolation between identities on
// one connection, refused addresses and tokens, size limits, token expiry and renewal, the
// maximum delivery count and at-least-once delivery of unsettled C2D messages.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const { Client, Message } = require('azure-iot-device');
const { Amqp } = require('azure-iot-device-amqp');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Hub, connectionString, eventually, readTelemetry, serviceToken, sleep } = require('./lib/hub');
const { RawAmqp, deviceToken, deviceAudience, data } = require('./lib/raw-amqp');

let hub;
let registry;
let service;
const keys = {};
const open = [];
const feedback = [];

async function device(id) {
  const d = (await registry.create({ deviceId: id })).responseBody;
  keys[id] = d.authentication.symmetricKey.primaryKey;
}
async function connect() {
  const c = await RawAmqp.open();
  open.push(c);
  return c;
}
function c2d(body, { messageId, ack } = {}) {
  const m = new Message(body);
  if (messageId) m.messageId = messageId;
  if (ack) m.ack = ack;
  return m;
}
const text = (m) => (m.body && m.body.content ? m.body.content.toString() : String(m.body));
const depth = async (id) => (await registry.get(id)).responseBody.cloudToDeviceMessageCount;
const feedbackFor = (messageId) => feedback.filter((r) => r.originalMessageId === messageId);

before(async () => {
  hub = await Hub.start();
  registry = Registry.fromConnectionString(connectionString());
  service = ServiceClient.fromConnectionString(connectionString('service'));
  await service.open();
  const { result: receiver } = await service.getFeedbackReceiver();
  receiver.on('message', (msg) => {
    for (const r of JSON.parse(msg.data.toString())) feedback.push(r);
    receiver.complete(msg, () => {});
  });
});
after(async () => {
  for (const c of open) await c.close().catch(() => {});
  await service.close().catch(() => {});
  await hub.stop();
});

describe('a gateway: many devices on one connection', () => {
  it('100 devices put tokens, send telemetry and show as connected on one connection; some take C2D', async () => {
    const ids = Array.from({ length: 100 }, (_, i) => `gw-${String(i).padStart(3, '0')}`);
    const devices = ids.map((deviceId) => {
      keys[deviceId] = crypto.randomBytes(32).toString('base64');
      return { deviceId, authentication: { symmetricKey: { primaryKey: keys[deviceId], secondaryKey: crypto.randomBytes(32).toString('base64') } } };
    });
    const added = (await registry.addDevices(devices)).responseBody;
    assert.equal(added.isSuccessful, true, JSON.stringify(added.errors));

    const gw = await connect();
    const statuses = await Promise.all(ids.map((id) => gw.putToken(deviceAudience(id), deviceToken(id, keys[id]))));
    assert.deepEqual([...new Set(statuses)], [200]);
    const senders = ids.map((id) => gw.sender(`/devices/${id}/messages/events`));
    const outcomes = await Promise.all(senders.map((s, i) =>
      s.send({ message_id: `${ids[i]}-m`, body: data(`hello from ${ids[i]}`), application_properties: { n: String(i) } })));
    assert.deepEqual(outcomes.map((o) => o.outcome), ids.map(() => 'accepted'));

    const byDevice = new Map();
    await readTelemetry({
      until: (events) => {
        for (const e of events)
          if (e.systemProperties['iothub-connection-device-id'].startsWith('gw-'))
            byDevice.set(e.systemProperties['iothub-connection-device-id'], e);
        return byDevice.size === ids.length;
      },
      timeoutMs: 20000,
    });
    assert.equal(byDevice.size, ids.length);
    for (const [i, id] of ids.entries()) {
      const e = byDevice.get(id);
      assert.equal(e.body, `hello from ${id}`);
      assert.equal(e.systemProperties['message-id'], `${id}-m`);
      assert.equal(e.properties.n, String(i));
    }

    const list = (await registry.list()).responseBody.filter((d) => d.deviceId.startsWith('gw-'));
    assert.equal(list.length, ids.length);
    assert.deepEqual(list.filter((d) => d.connectionState !== 'Connected').map((d) => d.deviceId), []);

    // C2D for a few of them, each on its own receiver of the same connection.
    const few = ids.slice(0, 5);
    const receivers = few.map((id) => gw.receiver(`/devices/${id}/messages/devicebound`));
    for (const r of receivers) await r.settled();
    for (const id of few) await service.send(id, c2d(`to ${id}`, { messageId: `${id}-c2d` }));
    await eventually(() => receivers.every((r) => r.messages.length === 1), 10000, 'one C2D message per receiver');
    for (const [i, id] of few.entries()) {
      assert.equal(text(receivers[i].messages[0].message), `to ${id}`);
      assert.equal(receivers[i].messages[0].message.message_id, `${id}-c2d`);
    }
    await eventually(async () => (await Promise.all(few.map(depth))).every((n) => n === 0), 5000, 'completed C2D');

    await gw.close();
    await eventually(async () => (await registry.list()).responseBody
      .filter((d) => d.deviceId.startsWith('gw-')).every((d) => d.connectionState === 'Disconnected'),
    5000, 'every gateway device disconnected');
  });
});

describe('a gateway: identities come and go', () => {
  it('a token for an identity without links stops counting when the identity is disabled', async () => {
    await device('rev-idle');
    const gw = await connect();
    assert.equal(await gw.putToken(deviceAudience('rev-idle'), deviceToken('rev-idle', keys['rev-idle'])), 200);
    const d = (await registry.get('rev-idle')).responseBody;
    await registry.update({ deviceId: 'rev-idle', status: 'disabled', etag: d.etag });
    // The registry's change reaches the connection asynchronously: attach until it is refused.
    let refused;
    await eventually(async () => {
      const link = gw.sender('/devices/rev-idle/messages/events');
      await link.settled();
      if (!link.closed) {
        link.close();
        return false;
      }
      refused = (await link.detached())?.condition;
      return true;
    }, 5000, 'a refused attach');
    assert.equal(refused, 'amqp:unauthorized-access');
  });

  it("revoking a device ends its links and its token's grant; the other devices carry on", async () => {
    for (const id of ['rev-del', 'rev-dis', 'rev-key', 'rev-keep']) await device(id);
    const gw = await connect();
    const links = {};
    for (const id of ['rev-del', 'rev-dis', 'rev-key', 'rev-keep']) {
      assert.equal(await gw.putToken(deviceAudience(id), deviceToken(id, keys[id])), 200);
      links[id] = gw.sender(`/devices/${id}/messages/events`);
      assert.equal((await links[id].send({ body: data(`${id} before`) })).outcome, 'accepted');
    }
    await registry.delete('rev-del');
    const dis = (await registry.get('rev-dis')).responseBody;
    await registry.update({ deviceId: 'rev-dis', status: 'disabled', etag: dis.etag });
    const rk = (await registry.get('rev-key')).responseBody;
    const newKey = crypto.randomBytes(32).toString('base64');
    await registry.update({ deviceId: 'rev-key', etag: rk.etag, authentication: { symmetricKey: { primaryKey: newKey, secondaryKey: newKey } } });
    for (const id of ['rev-del', 'rev-dis', 'rev-key']) {
      assert.ok(await links[id].detached(), `${id}: detached with an error`);
      // The token put before the change no longer authorizes anything on this connection.
      const again = gw.sender(`/devices/${id}/messages/events`);
      assert.equal((await again.detached())?.condition, 'amqp:unauthorized-access', id);
    }
    assert.notEqual(await gw.putToken(deviceAudience('rev-dis'), deviceToken('rev-dis', keys['rev-dis'])), 200);
    assert.notEqual(await gw.putToken(deviceAudience('rev-key'), deviceToken('rev-key', keys['rev-key'])), 200);
    assert.equal(await gw.putToken(deviceAudience('rev-key'), deviceToken('rev-key', newKey)), 200);
    assert.equal((await gw.sender('/devices/rev-key/messages/events').send({ body: data('rev-key after') })).outcome, 'accepted');
    assert.equal(links['rev-keep'].closed, false);
    assert.equal((await links['rev-keep'].send({ body: data('rev-keep after') })).outcome, 'accepted');
    const events = await readTelemetry({ until: (e) => e.some((x) => x.body === 'rev-keep after') && e.some((x) => x.body === 'rev-key after') });
    const late = events.filter((e) => / after$/.test(e.body)).map((e) => e.body).sort();
    assert.deepEqual(late, ['rev-keep after', 'rev-key after']);
  });

  it("a device connecting elsewhere takes its identity off the gateway; the others stay", async () => {
    for (const id of ['tk-1', 'tk-2']) await device(id);
    const gw = await connect();
    const links = {};
    for (const id of ['tk-1', 'tk-2']) {
      assert.equal(await gw.putToken(deviceAudience(id), deviceToken(id, keys[id])), 200);
      links[id] = gw.sender(`/devices/${id}/messages/events`);
      await links[id].settled();
    }
    const direct = Client.fromConnectionString(`HostName=localhost;DeviceId=tk-1;SharedAccessKey=${keys['tk-1']}`, Mqtt);
    await direct.open();
    try {
      assert.equal((await links['tk-1'].detached())?.condition, 'amqp:link:detach-forced');
      assert.equal((await links['tk-2'].send({ body: data('tk-2 still here') })).outcome, 'accepted');
      assert.equal((await registry.get('tk-1')).responseBody.connectionState, 'Connected');
      await direct.sendEvent(new Message('tk-1 direct'));
    } finally {
      await direct.close().catch(() => {});
    }
  });
});

describe('isolation and refusals', () => {
  it("a connection holding A's token cannot attach B's links; A's links keep working", async () => {
    await device('iso-a');
    await device('iso-b');
    const c = await connect();
    assert.equal(await c.putToken(deviceAudience('iso-a'), deviceToken('iso-a', keys['iso-a'])), 200);
    const mine = c.sender('/devices/iso-a/messages/events');
    const myC2d = c.receiver('/devices/iso-a/messages/devicebound');
    await mine.settled();
    await myC2d.settled();
    const theirs = c.sender('/devices/iso-b/messages/events');
    const theirC2d = c.receiver('/devices/iso-b/messages/devicebound');
    assert.equal((await theirs.detached())?.condition, 'amqp:unauthorized-access');
    assert.equal((await theirC2d.detached())?.condition, 'amqp:unauthorized-access');
    // A differently spelled address for B is still B's.
    const spelled = c.sender('amqps://localhost:5671/devices/iso-b/messages/events');
    assert.equal((await spelled.detached())?.condition, 'amqp:unauthorized-access');

    assert.equal((await mine.send({ body: data('still mine') })).outcome, 'accepted');
    await service.send('iso-a', c2d('for a', { messageId: 'iso-a-1' }));
    await eventually(() => myC2d.messages.length === 1, 5000, "A's C2D message");
    assert.equal(text(myC2d.messages[0].message), 'for a');
    assert.equal(mine.closed, false);
    assert.equal(myC2d.closed, false);
    const events = await readTelemetry({ device: 'iso-a', until: (e) => e.length >= 1 });
    assert.deepEqual(events.map((e) => e.body), ['still mine']);
    assert.equal((await readTelemetry({ device: 'iso-b', timeoutMs: 1000 })).length, 0);
  });

  it('an unknown address is amqp:not-found', async () => {
    const c = await connect();
    assert.equal((await c.sender('/foo').detached())?.condition, 'amqp:not-found');
    assert.equal((await c.receiver('/foo').detached())?.condition, 'amqp:not-found');
    assert.equal((await c.sender('/devices/x/messages/nowhere').detached())?.condition, 'amqp:not-found');
  });

  it('a malformed token, a wrong key and an unknown device get 401 and authorize nothing', async () => {
    await device('bad-tok');
    const c = await connect();
    const aud = deviceAudience('bad-tok');
    assert.equal(await c.putToken(aud, 'SharedAccessSignature this-is-not-a-token'), 401);
    assert.equal(await c.putToken(aud, 'garbage'), 401);
    assert.equal(await c.putToken(aud, deviceToken('bad-tok', crypto.randomBytes(32).toString('base64'))), 401);
    assert.equal(await c.putToken(deviceAudience('no-such-dev'), deviceToken('no-such-dev', keys['bad-tok'])), 401);
    assert.equal((await c.sender('/devices/bad-tok/messages/events').detached())?.condition, 'amqp:unauthorized-access');
    assert.equal((await c.sender('/devices/no-such-dev/messages/events').detached())?.condition, 'amqp:unauthorized-access');
    // The connection is still usable: a good token authorizes afterwards.
    assert.equal(await c.putToken(aud, deviceToken('bad-tok', keys['bad-tok'])), 200);
    const s = c.sender('/devices/bad-tok/messages/events');
    assert.equal((await s.send({ body: data('after the bad ones') })).outcome, 'accepted');
  });

  it('service links need a service token: a device token is unauthorized-access', async () => {
    await device('svc-dev');
    const c = await connect();
    assert.equal(await c.putToken(deviceAudience('svc-dev'), deviceToken('svc-dev', keys['svc-dev'])), 200);
    assert.equal((await c.sender('/messages/devicebound').detached())?.condition, 'amqp:unauthorized-access');
    assert.equal((await c.receiver('/messages/serviceBound/feedback').detached())?.condition, 'amqp:unauthorized-access');
  });

  it('service C2D sends: unknown device is not-found, a missing `to` is argument-error', async () => {
    await device('svc-to');
    const c = await connect();
    assert.equal(await c.putToken('localhost', serviceToken('service')), 200);
    const s = c.sender('/messages/devicebound');
    const unknown = await s.send({ to: '/devices/nobody-here/messages/devicebound', message_id: 'u1', body: data('x') });
    assert.deepEqual([unknown.outcome, unknown.condition], ['rejected', 'amqp:not-found']);
    const noTo = await s.send({ message_id: 'u2', body: data('x') });
    assert.deepEqual([noTo.outcome, noTo.condition], ['rejected', 'com.microsoft:argument-error']);
    const badTo = await s.send({ to: '/devices/svc-to/messages/events', message_id: 'u3', body: data('x') });
    assert.deepEqual([badTo.outcome, badTo.condition], ['rejected', 'com.microsoft:argument-error']);
    // The link survives its rejections.
    const ok = await s.send({ to: '/devices/svc-to/messages/devicebound', message_id: 'u4', body: data('fine') });
    assert.equal(ok.outcome, 'accepted');
    assert.equal(await depth('svc-to'), 1);
    await assert.rejects(service.send('nobody-here', c2d('x')), (e) => e.constructor.name === 'DeviceNotFoundError');
  });

  it('telemetry over 256 KB is refused and not stored', async () => {
    await device('big-d2c');
    const c = await connect();
    assert.equal(await c.putToken(deviceAudience('big-d2c'), deviceToken('big-d2c', keys['big-d2c'])), 200);
    // Just over the limit (the link's frame allowance takes it, the hub's check does not), and
    // well over it (the link itself refuses it).
    for (const size of [256 * 1024 + 1, 400 * 1024]) {
      const s = c.sender('/devices/big-d2c/messages/events');
      await s.settled();
      const sent = s.send({ message_id: `big-${size}`, body: data('x'.repeat(size)) }, 10000).catch((e) => ({ outcome: 'none', e }));
      await Promise.race([sent, s.detached(10000)]);
      if (s.closed) {
        assert.equal(s.error?.condition, 'amqp:link:message-size-exceeded', `${size} bytes`);
      } else {
        const o = await sent;
        assert.deepEqual([o.outcome, o.condition], ['rejected', 'amqp:link:message-size-exceeded'], `${size} bytes`);
      }
      s.close();
    }
    const after = c.sender('/devices/big-d2c/messages/events');
    assert.equal((await after.send({ message_id: 'small', body: data('small') })).outcome, 'accepted');
    // The device SDK sees MessageTooLargeError and carries on.
    const sdk = Client.fromConnectionString(`HostName=localhost;DeviceId=big-d2c;SharedAccessKey=${keys['big-d2c']}`, Amqp);
    await sdk.open();
    try {
      await assert.rejects(sdk.sendEvent(new Message('q'.repeat(300 * 1024))), (e) => e.constructor.name === 'MessageTooLargeError');
      const m = new Message('small over the SDK');
      m.messageId = 'small-sdk';
      await sdk.sendEvent(m);
    } finally {
      await sdk.close().catch(() => {});
    }
    const events = await readTelemetry({ device: 'big-d2c', until: (e) => e.some((x) => x.body === 'small over the SDK') });
    assert.deepEqual(events.map((e) => e.systemProperties['message-id']), ['small', 'small-sdk']);
  });

  it('a C2D message over 64 KB is rejected with amqp:link:message-size-exceeded', async () => {
    await device('big-c2d');
    const c = await connect();
    assert.equal(await c.putToken('localhost', serviceToken('service')), 200);
    const s = c.sender('/messages/devicebound');
    for (const size of [64 * 1024 + 1, 300 * 1024]) {
      const big = await s.send({ to: '/devices/big-c2d/messages/devicebound', body: data('y'.repeat(size)) });
      assert.deepEqual([big.outcome, big.condition], ['rejected', 'amqp:link:message-size-exceeded'], `${size} bytes`);
    }
    assert.equal(s.closed, false, 'the link survives its rejections');
    await assert.rejects(service.send('big-c2d', c2d('z'.repeat(70 * 1024))), (e) => e.constructor.name === 'MessageTooLargeError');
    // Far over the limit too, and the SDK's client (its sender and its feedback receiver, on the
    // same connection) still works afterwards.
    await assert.rejects(service.send('big-c2d', c2d('z'.repeat(300 * 1024))), (e) => e.constructor.name === 'MessageTooLargeError');
    assert.equal(await depth('big-c2d'), 0);
    await service.send('big-c2d', c2d('small', { messageId: 'big-c2d-small' }));
    assert.equal(await depth('big-c2d'), 1);
  });
});

describe('token expiry', () => {
  it("an expired token takes its links back with amqp:unauthorized-access; other devices' stay", async () => {
    await device('exp-1');
    await device('exp-other');
    const c = await connect();
    assert.equal(await c.putToken(deviceAudience('exp-other'), deviceToken('exp-other', keys['exp-other'])), 200);
    const other = c.sender('/devices/exp-other/messages/events');
    await other.settled();
    assert.equal(await c.putToken(deviceAudience('exp-1'), deviceToken('exp-1', keys['exp-1'], 3)), 200);
    const s = c.sender('/devices/exp-1/messages/events');
    const r = c.receiver('/devices/exp-1/messages/devicebound');
    assert.equal((await s.send({ body: data('before expiry') })).outcome, 'accepted');
    assert.equal((await s.detached(10000))?.condition, 'amqp:unauthorized-access');
    assert.equal((await r.detached(10000))?.condition, 'amqp:unauthorized-access');
    // And nothing new can attach on the expired token.
    assert.equal((await c.sender('/devices/exp-1/messages/events').detached())?.condition, 'amqp:unauthorized-access');
    assert.equal(other.closed, false, JSON.stringify(other.error));
    assert.equal((await other.send({ body: data('unaffected') })).outcome, 'accepted');
  });

  it('a token renewed before expiry keeps the links alive', async () => {
    await device('exp-2');
    const c = await connect();
    assert.equal(await c.putToken(deviceAudience('exp-2'), deviceToken('exp-2', keys['exp-2'], 3)), 200);
    const s = c.sender('/devices/exp-2/messages/events');
    const r = c.receiver('/devices/exp-2/messages/devicebound');
    assert.equal((await s.send({ body: data('one') })).outcome, 'accepted');
    assert.equal(await c.putToken(deviceAudience('exp-2'), deviceToken('exp-2', keys['exp-2'], 600)), 200);
    await sleep(4500);  // past the first token's expiry
    assert.equal(s.closed, false, JSON.stringify(s.error));
    assert.equal(r.closed, false, JSON.stringify(r.error));
    assert.equal((await s.send({ body: data('two') })).outcome, 'accepted');
    await service.send('exp-2', c2d('still here', { messageId: 'exp-2-c2d' }));
    await eventually(() => r.messages.length === 1, 5000, 'C2D after renewal');
    const events = await readTelemetry({ device: 'exp-2', until: (e) => e.length >= 2 });
    assert.deepEqual(events.map((e) => e.body), ['one', 'two']);
  });
});

describe('C2D delivery guarantees', () => {
  it('a message released 10 times is not delivered an 11th time: DeliveryCountExceeded', async () => {
    await device('maxdel');
    await service.send('maxdel', c2d('bounce', { messageId: 'maxdel-1', ack: 'full' }));
    const c = await connect();
    assert.equal(await c.putToken(deviceAudience('maxdel'), deviceToken('maxdel', keys['maxdel'])), 200);
    const r = c.receiver('/devices/maxdel/messages/devicebound', { autoaccept: false });
    const counts = [];
    r.link.on('message', (ctx) => {
      counts.push(ctx.message.message_annotations && ctx.message.message_annotations['iothub-deliverycount']);
      // One settlement per tick (see the rhea note in amqp.test.js).
      if (ctx.message.message_id === 'maxdel-1') setTimeout(() => ctx.delivery.release(), 20);
    });
    await eventually(() => feedbackFor('maxdel-1').length === 1, 15000, 'DeliveryCountExceeded feedback');
    assert.equal(feedbackFor('maxdel-1')[0].statusCode, 'DeliveryCountExceeded');
    assert.equal(feedbackFor('maxdel-1')[0].deviceId, 'maxdel');
    assert.equal(r.messages.length, 10);
    assert.deepEqual(counts, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.ok(r.messages.every((m) => m.message.message_id === 'maxdel-1'));
    assert.equal(await depth('maxdel'), 0);
    // A message sent now is the next one delivered: the old one is gone for good.
    await service.send('maxdel', c2d('next', { messageId: 'maxdel-2' }));
    await eventually(() => r.messages.length === 11, 5000, 'the next message');
    assert.equal(r.messages[10].message.message_id, 'maxdel-2');
    r.messages[10].delivery.accept();
  });

  it('a message taken and never settled is delivered again on the next connection', async () => {
    await device('unsettled');
    await service.send('unsettled', c2d('keep me', { messageId: 'unsettled-1', ack: 'full' }));
    const first = await connect();
    assert.equal(await first.putToken(deviceAudience('unsettled'), deviceToken('unsettled', keys.unsettled)), 200);
    const r1 = first.receiver('/devices/unsettled/messages/devicebound', { autoaccept: false });
    await eventually(() => r1.messages.length === 1, 5000, 'the first delivery');
    assert.equal(r1.messages[0].message.message_id, 'unsettled-1');
    await first.close();

    const second = await connect();
    assert.equal(await second.putToken(deviceAudience('unsettled'), deviceToken('unsettled', keys.unsettled)), 200);
    const r2 = second.receiver('/devices/unsettled/messages/devicebound', { autoaccept: false });
    await eventually(() => r2.messages.length === 1, 5000, 'the second delivery');
    assert.equal(r2.messages[0].message.message_id, 'unsettled-1');
    assert.equal(text(r2.messages[0].message), 'keep me');
    r2.messages[0].delivery.accept();
    await eventually(() => feedbackFor('unsettled-1').length === 1, 5000, 'Success feedback');
    assert.equal(feedbackFor('unsettled-1')[0].statusCode, 'Success');
    assert.equal(await depth('unsettled'), 0);
  });

  it('a receiver link closed with a message unsettled gives it back at once', async () => {
    await device('unsettled-link');
    await service.send('unsettled-link', c2d('again', { messageId: 'ul-1' }));
    const c = await connect();
    assert.equal(await c.putToken(deviceAudience('unsettled-link'), deviceToken('unsettled-link', keys['unsettled-link'])), 200);
    const r1 = c.receiver('/devices/unsettled-link/messages/devicebound', { autoaccept: false });
    await eventually(() => r1.messages.length === 1, 5000, 'the first delivery');
    r1.close();
    await r1.detached();
    const r2 = c.receiver('/devices/unsettled-link/messages/devicebound', { autoaccept: false });
    await eventually(() => r2.messages.length === 1, 5000, 'the second delivery');
    assert.equal(r2.messages[0].message.message_id, 'ul-1');
    r2.messages[0].delivery.accept();
    await eventually(async () => (await depth('unsettled-link')) === 0, 5000, 'completion');
  });
});

// The security layers other SDKs use, spoken with rhea: the C SDK's SASL MSSBCBS (then CBS), and
// SASL PLAIN with a SAS token as the password (DPS clients), which authorizes without CBS.
describe('SASL mechanisms', () => {
  const rhea = require('rhea');
  const fs = require('node:fs');
  const { dataDir } = require('./lib/hub');
  function connectWith(options) {
    const container = rhea.create_container();
    for (const ev of ['error', 'connection_error', 'sender_error', 'receiver_error', 'protocol_error'])
      container.on(ev, () => {});
    const connection = container.connect({
      host: 'localhost', port: 5671, transport: 'tls', ca: fs.readFileSync(`${dataDir}/tls/ca.pem`),
      servername: 'localhost', hostname: 'localhost', reconnect: false, ...options,
    });
    const opened = new Promise((resolve, reject) => {
      connection.once('connection_open', () => resolve(connection));
      connection.once('connection_close', (ctx) => reject(new Error(String(ctx.connection.error && ctx.connection.error.condition))));
      connection.once('disconnected', (ctx) => reject(ctx.error || new Error('disconnected')));
    });
    return { connection, opened };
  }
  async function sendOne(connection, id) {
    const sender = connection.open_sender({ target: { address: `/devices/${id}/messages/events` } });
    return new Promise((resolve) => {
      sender.once('sendable', () => {
        sender.send({ body: data('via sasl'), message_id: `${id}-sasl` });
      });
      sender.once('accepted', () => resolve('accepted'));
      sender.once('rejected', () => resolve('rejected'));
      sender.once('sender_error', (ctx) => resolve(String(ctx.sender.error && ctx.sender.error.condition)));
    });
  }

  it('MSSBCBS (as the C SDK offers it) then a put-token', async () => {
    await device('sasl-cbs');
    const mssbcbs = { MSSBCBS: () => ({ start: (callback) => callback(undefined, Buffer.alloc(0)) }) };
    const { connection, opened } = connectWith({ sasl_mechanisms: mssbcbs });
    await opened;
    try {
      const cbsOut = connection.open_sender({ target: { address: '$cbs' } });
      const cbsIn = connection.open_receiver({ source: { address: '$cbs' } });
      const reply = new Promise((resolve) => cbsIn.on('message', (ctx) => resolve(ctx.message)));
      await new Promise((resolve) => cbsOut.once('sendable', resolve));
      cbsOut.send({
        message_id: 'cbs-1', reply_to: 'cbs', body: deviceToken('sasl-cbs', keys['sasl-cbs']),
        application_properties: { operation: 'put-token', type: 'servicebus.windows.net:sastoken', name: deviceAudience('sasl-cbs') },
      });
      assert.equal((await reply).application_properties['status-code'], 200);
      assert.equal(await sendOne(connection, 'sasl-cbs'), 'accepted');
    } finally {
      connection.close();
    }
  });

  it('PLAIN with a device SAS token authorizes that device; a bad token fails SASL', async () => {
    await device('sasl-plain');
    const { connection, opened } = connectWith({ username: 'sasl-plain@sas.localhost', password: deviceToken('sasl-plain', keys['sasl-plain']) });
    await opened;
    try {
      assert.equal(await sendOne(connection, 'sasl-plain'), 'accepted');
      const events = await readTelemetry({ device: 'sasl-plain', until: (e) => e.length >= 1 });
      assert.equal(events[0].systemProperties['message-id'], 'sasl-plain-sasl');
    } finally {
      connection.close();
    }
    const bad = connectWith({ username: 'sasl-plain@sas.localhost', password: deviceToken('sasl-plain', Buffer.alloc(32, 7).toString('base64')) });
    await assert.rejects(bad.opened);
    assert.equal(bad.connection.is_open(), false);
  });
});
