// Storage-container endpoints the hub hosts itself, read with unmodified clients: the device SDK
// sends, routes write Avro and JSON batches into the hub's Blob endpoint, `@azure/storage-blob`
// lists and downloads them with the connection string `iothub connection-string --storage`
// prints, and Apache Avro's own reader (Debian's python3-avro) decodes the Avro blobs.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync, spawnSync } = require('node:child_process');
const { BlobServiceClient } = require('@azure/storage-blob');
const { Registry } = require('azure-iothub');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Hub, bin, dataDir, connectionString, eventually, serviceRequest, rawRequest } = require('./lib/hub');

let hub;
let registry;
let blobs;
let device;

async function streamToBuffer(stream) {
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  return Buffer.concat(chunks);
}
async function download(container, name) {
  const r = await blobs.getContainerClient(container).getBlobClient(name).download();
  return streamToBuffer(r.readableStreamBody);
}
async function names(container) {
  const out = [];
  for await (const b of blobs.getContainerClient(container).listBlobsFlat()) out.push(b.name);
  return out;
}
// Apache Avro's reader, on the blob's bytes: its records as JSON (bytes as latin-1 text).
function readAvro(bytes) {
  const file = path.join(os.tmpdir(), `routed-${process.pid}-${Math.random()}.avro`);
  fs.writeFileSync(file, bytes);
  const script = `
import json, sys
from avro.datafile import DataFileReader
from avro.io import DatumReader
out = []
with DataFileReader(open(sys.argv[1], 'rb'), DatumReader()) as r:
    schema = json.loads(str(r.meta.get('avro.schema').decode()))
    for rec in r:
        rec['Body'] = rec['Body'].decode('latin-1') if rec['Body'] is not None else None
        out.append(rec)
print(json.dumps({'schema': schema, 'records': out}))
`;
  const r = spawnSync('/usr/bin/python3', ['-c', script, file], { encoding: 'utf8' });
  fs.unlinkSync(file);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

before(async () => {
  hub = await Hub.start();
  registry = Registry.fromConnectionString(connectionString());
  const cs = execFileSync(bin, ['connection-string', '--data-dir', dataDir, '--policy', 'service', '--storage']).toString().trim();
  assert.match(cs, /^BlobEndpoint=https:\/\/localhost\/;SharedAccessSignature=/);
  blobs = BlobServiceClient.fromConnectionString(cs);
  const r = await serviceRequest({
    method: 'PUT', path: '/routing', json: {
      endpoints: {
        storageContainers: [
          { name: 'archive', containerName: 'telemetry-archive', batchFrequencyInSeconds: 1, encoding: 'avro' },
          { name: 'jsonarchive', containerName: 'telemetry-json', batchFrequencyInSeconds: 1, encoding: 'JSON',
            fileNameFormat: '{iothub}/{YYYY}/{MM}/{DD}/{HH}/{mm}/{partition}' },
          { name: 'deflated', containerName: 'telemetry-deflate', batchFrequencyInSeconds: 1, encoding: 'avrodeflate' },
        ],
      },
      routes: [
        { name: 'all-avro', source: 'DeviceMessages', endpointNames: ['archive'], isEnabled: true },
        { name: 'all-json', source: 'DeviceMessages', endpointNames: ['jsonarchive'], isEnabled: true },
        { name: 'all-deflate', source: 'DeviceMessages', endpointNames: ['deflated'], isEnabled: true },
      ],
      enrichments: [{ key: 'site', value: 'north', endpointNames: ['archive', 'jsonarchive'] }],
    },
  });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const d = (await registry.create({ deviceId: 'store-d1' })).responseBody;
  device = Client.fromConnectionString(
    `HostName=localhost;DeviceId=store-d1;SharedAccessKey=${d.authentication.symmetricKey.primaryKey}`, Mqtt);
  await device.open();
  for (let n = 1; n <= 4; n++) {
    const m = new Message(JSON.stringify({ n }));
    m.contentType = 'application/json';
    m.contentEncoding = 'utf-8';
    m.properties.add('seq', String(n));
    await device.sendEvent(m);
  }
  await device.sendEvent(new Message(Buffer.from([0, 1, 255, 32])));  // not JSON
});
after(async () => {
  await device?.close();
  await hub.stop();
});

describe('storage endpoints', () => {
  it('write Avro batches that Apache Avro reads, in Azure\'s schema', async () => {
    let records = [];
    let schema;
    await eventually(async () => {
      records = [];
      for (const n of await names('telemetry-archive')) {
        const decoded = readAvro(await download('telemetry-archive', n));
        schema = decoded.schema;
        records.push(...decoded.records);
      }
      return records.length >= 5;
    }, 20000, 'five records in Avro blobs');
    assert.equal(records.length, 5);
    assert.equal(schema.name, 'Message');
    assert.deepEqual(schema.fields.map((f) => f.name), ['EnqueuedTimeUtc', 'Properties', 'SystemProperties', 'Body']);
    const json = records.filter((r) => r.Properties.seq).sort((a, b) => a.Properties.seq - b.Properties.seq);
    assert.deepEqual(json.map((r) => JSON.parse(r.Body).n), [1, 2, 3, 4]);
    assert.equal(json[0].Properties.site, 'north', 'enrichments reach storage endpoints');
    assert.equal(json[0].SystemProperties.connectionDeviceId, 'store-d1');
    assert.ok(!Number.isNaN(Date.parse(json[0].EnqueuedTimeUtc)));
    const binary = records.find((r) => !r.Properties.seq);
    assert.deepEqual([...Buffer.from(binary.Body, 'latin1')], [0, 1, 255, 32]);
    const listed = await names('telemetry-archive');
    assert.ok(listed.every((n) => /^localhost\/\d+\/\d{4}\/\d{2}\/\d{2}\/\d{2}\/\d{2}(-\d+)?$/.test(n)), listed.join());
  });

  it('write JSON lines with JSON bodies inline and others in base64', async () => {
    let lines = [];
    await eventually(async () => {
      lines = [];
      for (const n of await names('telemetry-json')) {
        const text = (await download('telemetry-json', n)).toString('utf8');
        lines.push(...text.split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l)));
      }
      return lines.length >= 5;
    }, 20000, 'five JSON lines');
    const inline = lines.filter((l) => typeof l.Body === 'object');
    assert.deepEqual(inline.map((l) => l.Body.n).sort(), [1, 2, 3, 4]);
    const encoded = lines.find((l) => typeof l.Body === 'string');
    assert.deepEqual([...Buffer.from(encoded.Body, 'base64')], [0, 1, 255, 32]);
    assert.equal(inline[0].Properties.site, 'north');
  });

  it('write avrodeflate batches too', async () => {
    let count = 0;
    await eventually(async () => {
      count = 0;
      for (const n of await names('telemetry-deflate')) count += readAvro(await download('telemetry-deflate', n)).records.length;
      return count >= 5;
    }, 20000, 'five deflated records');
    assert.equal(count, 5);
  });

  it('serve properties and refuse requests without the account SAS', async () => {
    const [first] = await names('telemetry-archive');
    const props = await blobs.getContainerClient('telemetry-archive').getBlobClient(first).getProperties();
    assert.ok(props.contentLength > 0);
    assert.equal(props.blobType, 'BlockBlob');
    const bare = await rawRequest({ path: '/telemetry-archive?restype=container&comp=list' });
    assert.equal(bare.status, 403);
    assert.equal(bare.headers['x-ms-error-code'], 'AuthenticationFailed');
    const forged = await rawRequest({ path: '/telemetry-archive/x?sv=2021-08-06&sp=rl&se=2099-01-01T00:00:00Z&skn=service&sig=AAAA' });
    assert.equal(forged.status, 403);
    const r = await blobs.getContainerClient('telemetry-archive').getBlobClient('nope').exists();
    assert.equal(r, false, 'a missing blob is 404 BlobNotFound to the SDK');
  });
});
