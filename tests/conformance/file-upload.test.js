// File upload with the unmodified Azure SDKs: devices (azure-iot-device over Mqtt and Http) call
// uploadToBlob, which asks the hub for a blob SAS, uploads with @azure/storage-blob to the hub's
// own blob endpoint (Put Block + Put Block List) and reports the outcome; the service Client's
// getFileNotificationReceiver gets the notification; `iothub file download` returns the bytes.
// Raw Storage requests check the SAS, its expiry and the size limit.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { Readable } = require('node:stream');
const { execFileSync } = require('node:child_process');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Http } = require('azure-iot-device-http');
const { SharedAccessSignature } = require('azure-iot-common');
const { Hub, bin, dataDir, connectionString, eventually, rawRequest } = require('./lib/hub');

let hub;
let registry;
let service;
const keys = {};
const open = [];
const notifications = [];

async function device(id) {
  const d = (await registry.create({ deviceId: id })).responseBody;
  keys[id] = d.authentication.symmetricKey.primaryKey;
}
async function deviceClient(id, transport) {
  const c = Client.fromConnectionString(`HostName=localhost;DeviceId=${id};SharedAccessKey=${keys[id]}`, transport);
  await c.open();
  open.push(c);
  return c;
}
function deviceToken(id) {
  return SharedAccessSignature.create(`localhost/devices/${id}`, undefined, keys[id],
    Math.floor(Date.now() / 1000) + 600).toString();
}
// A device's REST call to the hub (the file upload session API).
function deviceRequest(id, method, path, json) {
  const body = json === undefined ? undefined : JSON.stringify(json);
  const headers = { Authorization: deviceToken(id) };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    headers['Content-Length'] = Buffer.byteLength(body);
  }
  return rawRequest({ method, path: `/devices/${id}/${path}?api-version=2021-04-12`, body, headers });
}
// Put Blob to the hub's blob endpoint as a Storage client would.
function putBlob(grant, data, sasToken = grant.sasToken) {
  return rawRequest({
    method: 'PUT',
    path: `/${grant.containerName}/${grant.blobName}${sasToken}`,
    body: data,
    headers: { 'x-ms-blob-type': 'BlockBlob', 'x-ms-version': '2019-12-12', 'Content-Length': data.length },
  });
}
function download(id, blob) {
  return execFileSync(bin, ['file', 'download', '--data-dir', dataDir, '--device', id, '--blob', blob],
    { maxBuffer: 64 << 20 });
}
function fileList(id) {
  return JSON.parse(execFileSync(bin, ['file', 'list', '--data-dir', dataDir, '--device', id]).toString());
}
async function notificationFor(blobName) {
  let found;
  await eventually(() => (found = notifications.find((n) => n.blobName === blobName)), 15000,
    `file notification for ${blobName}`);
  return found;
}

async function startHub(args = []) {
  hub = await Hub.start(args);
  service = ServiceClient.fromConnectionString(connectionString('service'));
  await service.open();
  const { result: receiver } = await service.getFileNotificationReceiver();
  receiver.on('message', (msg) => {
    assert.equal(msg.contentType, 'application/vnd.microsoft.iothub.filenotification.json');
    notifications.push(JSON.parse(msg.data.toString()));
    receiver.complete(msg, () => {});
  });
}
async function stopHub() {
  for (const c of open.splice(0)) await c.close().catch(() => {});
  await service.close().catch(() => {});
  await hub.stop();
}

before(async () => {
  await startHub();
  registry = Registry.fromConnectionString(connectionString());
});
after(async () => {
  await stopHub();
});

describe('uploadToBlob with the device SDK', () => {
  for (const [name, transport] of [['Mqtt', Mqtt], ['Http', Http]]) {
    it(`uploads a small file over ${name} and the service is notified`, async () => {
      const id = `files-small-${name.toLowerCase()}`;
      await device(id);
      const client = await deviceClient(id, transport);
      const data = Buffer.from(`hello from ${id}\n`);
      await client.uploadToBlob('hello.txt', Readable.from([data]), data.length);
      const n = await notificationFor(`${id}/hello.txt`);
      assert.equal(n.deviceId, id);
      assert.equal(n.blobSizeInBytes, data.length);
      assert.match(n.blobUri, new RegExp(`^https://localhost/[a-z0-9-]+/${id}/hello.txt$`));
      assert.ok(Date.parse(n.lastUpdatedTime) > 0 && Date.parse(n.enqueuedTimeUtc) > 0);
      assert.deepEqual(download(id, 'hello.txt'), data);
      const listed = fileList(id);
      assert.equal(listed.length, 1);
      assert.equal(listed[0].blobName, 'hello.txt');
      assert.equal(listed[0].sizeInBytes, data.length);
    });
  }

  it('uploads a file split into several blocks, under a nested name', async () => {
    const id = 'files-large';
    await device(id);
    const client = await deviceClient(id, Mqtt);
    const data = crypto.randomBytes(9 * 1024 * 1024 + 123);  // 3 blocks of at most 4 MiB
    // Chunks smaller than a block, as a file stream delivers them.
    const chunks = [];
    for (let i = 0; i < data.length; i += 64 * 1024) chunks.push(data.subarray(i, i + 64 * 1024));
    await client.uploadToBlob('logs/big.bin', Readable.from(chunks), data.length);
    const n = await notificationFor(`${id}/logs/big.bin`);
    assert.equal(n.blobSizeInBytes, data.length);
    const got = download(id, 'logs/big.bin');
    assert.equal(got.length, data.length);
    assert.ok(got.equals(data), 'downloaded bytes differ');
  });
});

describe('the session API and the blob endpoint', () => {
  let grant;
  before(async () => {
    await device('files-raw');
    const r = await deviceRequest('files-raw', 'POST', 'files', { blobName: 'raw.txt' });
    assert.equal(r.status, 200, r.body);
    grant = r.json;
  });

  it('grants a SAS for the device\'s blob', () => {
    assert.equal(grant.hostName, 'localhost');
    assert.equal(grant.blobName, 'files-raw/raw.txt');
    assert.ok(grant.sasToken.startsWith('?'));
    assert.ok(grant.correlationId);
  });

  it('refuses a wrong SAS with 403 AuthenticationFailed', async () => {
    const forged = grant.sasToken.replace(/sig=[^&]+/, 'sig=' + encodeURIComponent(Buffer.alloc(32).toString('base64')));
    const r = await putBlob(grant, Buffer.from('x'), forged);
    assert.equal(r.status, 403);
    assert.match(r.body, /<Code>AuthenticationFailed<\/Code>/);
    assert.equal(r.headers['x-ms-error-code'], 'AuthenticationFailed');
    // The SAS binds to its blob: another path with the right SAS is refused too.
    const other = await putBlob({ ...grant, blobName: 'files-raw/other.txt' }, Buffer.from('x'));
    assert.equal(other.status, 403);
    const none = await putBlob(grant, Buffer.from('x'), '');
    assert.equal(none.status, 403);
  });

  it('stores a Put Blob and answers like Azure Storage', async () => {
    const r = await putBlob(grant, Buffer.from('raw bytes'));
    assert.equal(r.status, 201, r.body);
    assert.ok(r.headers.etag);
    assert.ok(r.headers['last-modified']);
    assert.ok(r.headers['x-ms-request-id']);
    assert.equal(r.headers['content-md5'], crypto.createHash('md5').update('raw bytes').digest('base64'));
    const ok = await deviceRequest('files-raw', 'POST', 'files/notifications',
      { correlationId: grant.correlationId, isSuccess: true, statusCode: 201, statusDescription: '' });
    assert.equal(ok.status, 204, ok.body);
    const n = await notificationFor('files-raw/raw.txt');
    assert.equal(n.blobSizeInBytes, 9);
  });

  it('answers 4xx with an Azure error body for an unknown correlation id', async () => {
    const r = await deviceRequest('files-raw', 'POST', 'files/notifications/no-such-id',
      { isSuccess: true, statusCode: 200, statusDescription: '' });
    assert.ok(r.status >= 400 && r.status < 500, `status ${r.status}`);
    assert.match(r.json.Message, /^ErrorCode:/);
    // Used once: the same correlation id again is unknown.
    const again = await deviceRequest('files-raw', 'POST', 'files/notifications',
      { correlationId: grant.correlationId, isSuccess: true, statusCode: 201, statusDescription: '' });
    assert.ok(again.status >= 400 && again.status < 500, `status ${again.status}`);
  });

  it('refuses unsafe blob names', async () => {
    for (const blobName of ['../escape.txt', '/abs.txt', 'a//b', 'a/../../b']) {
      const r = await deviceRequest('files-raw', 'POST', 'files', { blobName });
      assert.equal(r.status, 400, blobName);
    }
  });
});

describe('expiry and size limits', () => {
  before(async () => {
    // A notification written while no receiver listens must survive the restart.
    await service.close();
    const g = (await deviceRequest('files-raw', 'POST', 'files', { blobName: 'durable.txt' })).json;
    assert.equal((await putBlob(g, Buffer.from('durable'))).status, 201);
    const ok = await deviceRequest('files-raw', 'POST', `files/notifications/${g.correlationId}`,
      { isSuccess: true, statusCode: 201, statusDescription: null });
    assert.equal(ok.status, 204, ok.body);
    await stopHub();
    await startHub(['--files-sas-ttl-seconds', '2', '--files-max-bytes', '1000']);
  });

  it('refuses an expired SAS with 403', async () => {
    const r = await deviceRequest('files-raw', 'POST', 'files', { blobName: 'late.txt' });
    assert.equal(r.status, 200, r.body);
    await new Promise((res) => setTimeout(res, 3000));
    const late = await putBlob(r.json, Buffer.from('too late'));
    assert.equal(late.status, 403);
    assert.match(late.body, /<Code>AuthenticationFailed<\/Code>/);
  });

  it('refuses a blob over the size limit with 413 RequestBodyTooLarge', async () => {
    const r = await deviceRequest('files-raw', 'POST', 'files', { blobName: 'big.txt' });
    assert.equal(r.status, 200, r.body);
    const big = await putBlob(r.json, Buffer.alloc(1001, 'x'));
    assert.equal(big.status, 413);
    assert.match(big.body, /<Code>RequestBodyTooLarge<\/Code>/);
    const fits = await putBlob(r.json, Buffer.alloc(1000, 'x'));
    assert.equal(fits.status, 201, fits.body);
  });

  it('kept earlier uploads and the notification stream across the restart', async () => {
    assert.equal(download('files-large', 'logs/big.bin').length, 9 * 1024 * 1024 + 123);
    const n = await notificationFor('files-raw/durable.txt');
    assert.equal(n.blobSizeInBytes, 7);
  });
});
