// The `iothub` routing commands against a running hub: endpoints, routes, route tests, enrichments,
// the fallback route and Event Grid subscriptions, each a read-modify-write of the routing
// document that `routing show` must then reflect; the hub's refusals passed on with exit status 1;
// endpoint health after a device's messages were routed.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { Registry } = require('azure-iothub');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Hub, bin, dataDir, connectionString, eventually, sleep } = require('./lib/hub');

function iothub(args, input) {
  const r = spawnSync(bin, [...args, '--data-dir', dataDir], {
    encoding: 'utf8', input, env: { ...process.env, IOTHUB_CONNECTION_STRING: '' },
  });
  return { code: r.status, out: r.stdout, err: r.stderr, json: () => JSON.parse(r.stdout) };
}
// Runs a command that must succeed and returns its JSON.
function ok(...args) {
  const r = iothub(args);
  assert.equal(r.code, 0, `${args.join(' ')}: ${r.err}`);
  return r.out.trim() ? r.json() : undefined;
}
// Runs a command that must fail with status 1 and returns its stderr.
function refused(...args) {
  const r = iothub(args);
  assert.equal(r.code, 1, `${args.join(' ')} should fail: ${r.out}`);
  assert.equal(r.out, '');
  return r.err;
}
const shown = () => ok('routing', 'show');
const names = (items, field = 'name') => items.map((x) => x[field]);

let hub;
let device;
before(async () => { hub = await Hub.start(); });
const bounded = (p) => Promise.race([p.catch(() => {}), sleep(3000)]);
after(async () => {
  if (device) await bounded(device.close());
  await hub.stop();
  setTimeout(() => process.exit(), 2000).unref();
});

describe('routing document', () => {
  it('routing show prints the default document', () => {
    const doc = shown();
    assert.deepEqual(Object.keys(doc.endpoints).sort(),
      ['cosmosDBSqlContainers', 'eventHubs', 'kafka', 'nats', 'serviceBusQueues', 'serviceBusTopics', 'storageContainers', 'webhooks']);
    assert.deepEqual(doc.routes, []);
    assert.deepEqual(doc.enrichments, []);
    assert.deepEqual(doc.fallbackRoute,
      { name: '$fallback', source: 'DeviceMessages', condition: 'true', endpointNames: ['events'], isEnabled: true });
  });
});

describe('iothub endpoint', () => {
  it('creates each type in its collection', () => {
    assert.deepEqual(ok('endpoint', 'create', '--name', 'hot', '--type', 'eventhub'), { name: 'hot' });
    assert.deepEqual(
      ok('endpoint', 'create', '-n', 'hook', '--type', 'webhook', '--url', 'http://127.0.0.1:9/x',
        '--header', 'X-Api-Key: s3cret', '--header', 'X-Trace:on'),
      { name: 'hook', endpointUri: 'http://127.0.0.1:9/x', headers: { 'X-Api-Key': 's3cret', 'X-Trace': 'on' } });
    // The hub fills in the storage defaults.
    assert.deepEqual(
      ok('endpoint', 'create', 'cold', '--type', 'STORAGE', '--container', 'archive', '--encoding', 'json',
        '--batch-frequency', '60'),
      {
        name: 'cold', containerName: 'archive', fileNameFormat: '{iothub}/{partition}/{YYYY}/{MM}/{DD}/{HH}/{mm}',
        batchFrequencyInSeconds: 60, maxChunkSizeInBytes: 314572800, encoding: 'JSON',
      });
    assert.deepEqual(
      ok('endpoint', 'create', '--name', 'stream', '--type', 'kafka', '--brokers', '127.0.0.1:9092',
        '--topic', 'telemetry', '--property', 'acks=all'),
      { name: 'stream', brokers: '127.0.0.1:9092', topic: 'telemetry', properties: { acks: 'all' } });
    assert.deepEqual(
      ok('endpoint', 'create', '--name', 'bus', '--type', 'nats', '--servers', 'nats://127.0.0.1:4299',
        '--subject', 'telemetry.{deviceId}', '--jetstream'),
      { name: 'bus', servers: ['nats://127.0.0.1:4299'], subject: 'telemetry.{deviceId}', jetStream: true });

    // An external event hub: the endpoint's --connection-string, not the hub's.
    const external = 'Endpoint=sb://ns.example.net/;SharedAccessKeyName=send;SharedAccessKey=a2V5;EntityPath=eh';
    assert.deepEqual(ok('endpoint', 'create', '--name', 'ext', '--type', 'eventhub', '--connection-string', external),
      { name: 'ext', connectionString: external });

    const doc = shown();
    assert.deepEqual(doc.endpoints.eventHubs, [{ name: 'hot' }, { name: 'ext', connectionString: external }]);
    assert.deepEqual(names(doc.endpoints.webhooks), ['hook']);
    assert.deepEqual(names(doc.endpoints.storageContainers), ['cold']);
    assert.deepEqual(names(doc.endpoints.kafka), ['stream']);
    assert.deepEqual(names(doc.endpoints.nats), ['bus']);

    assert.equal(iothub(['endpoint', 'delete', '--name', 'EXT']).code, 0);
    assert.deepEqual(shown().endpoints.eventHubs, [{ name: 'hot' }]);
  });

  it('refuses duplicates, options of another type, and what the hub refuses', () => {
    assert.match(refused('endpoint', 'create', '--name', 'HOT', '--type', 'webhook', '--url', 'http://127.0.0.1:9/y'),
      /^error: Endpoint 'hot' already exists\.$/m);
    assert.match(refused('endpoint', 'create', '--name', 'x', '--type', 'eventhub', '--url', 'http://127.0.0.1:9/y'),
      /^error: --url does not apply to eventhub endpoints\.$/m);
    assert.match(refused('endpoint', 'create', '--name', 'x', '--type', 'storage'),
      /^error: storage endpoints need --container\.$/m);
    assert.match(refused('endpoint', 'create', '--name', 'x', '--type', 'nats'),
      /^error: nats endpoints need --subject\.$/m);
    assert.match(refused('endpoint', 'create', '--name', 'x', '--type', 'nats', '--subject', 'a.*'),
      /^error: ArgumentInvalid: Endpoint 'x': subject 'a\.\*' has a wildcard/m);
    assert.match(refused('endpoint', 'create', '--name', 'events', '--type', 'eventhub'),
      /^error: ArgumentInvalid: Endpoint name 'events' is reserved .*\(HTTP 400\)$/m);
    assert.match(refused('endpoint', 'create', '--name', 'h2', '--type', 'webhook', '--url', 'ftp://127.0.0.1/x'),
      /^error: ArgumentInvalid: Endpoint 'h2': endpointUri 'ftp:\/\/127.0.0.1\/x' is not an http/m);
    const doc = shown();
    assert.deepEqual(names(doc.endpoints.eventHubs), ['hot']);
    assert.deepEqual(names(doc.endpoints.webhooks), ['hook']);
  });

  it('lists by type and shows by name ignoring case', () => {
    const all = ok('endpoint', 'list');
    assert.deepEqual(names(all.eventHubs), ['hot']);
    assert.deepEqual(names(all.kafka), ['stream']);
    assert.deepEqual(ok('endpoint', 'list', '--type', 'webhook'),
      [{ name: 'hook', endpointUri: 'http://127.0.0.1:9/x', headers: { 'X-Api-Key': 's3cret', 'X-Trace': 'on' } }]);
    assert.deepEqual(ok('endpoint', 'list', '--type', 'eventhub'), [{ name: 'hot' }]);
    assert.equal(ok('endpoint', 'show', '--name', 'COLD').containerName, 'archive');
    assert.match(refused('endpoint', 'show', '--name', 'nowhere'), /^error: No endpoint 'nowhere'\.$/m);
  });
});

describe('iothub route', () => {
  it('creates routes, refusing an unknown endpoint with the hub\'s message', () => {
    assert.deepEqual(
      ok('route', 'create', '--name', 'hot-temp', '--source', 'devicemessages', '--endpoint', 'hot',
        '--condition', '$body.temp > 30'),
      { name: 'hot-temp', source: 'DeviceMessages', condition: '$body.temp > 30', endpointNames: ['hot'], isEnabled: true });
    assert.deepEqual(
      ok('route', 'create', '--name', 'to-hook', '--source', 'DeviceMessages', '--endpoint', 'hook',
        '--condition', 'alert = true', '--enabled', 'false'),
      { name: 'to-hook', source: 'DeviceMessages', condition: 'alert = true', endpointNames: ['hook'], isEnabled: false });
    assert.deepEqual(ok('route', 'create', '-n', 'twins', '-s', 'TwinChangeEvents', '-e', 'hot'),
      { name: 'twins', source: 'TwinChangeEvents', condition: 'true', endpointNames: ['hot'], isEnabled: true });

    assert.match(refused('route', 'create', '--name', 'lost', '--source', 'DeviceMessages', '--endpoint', 'nowhere'),
      /^error: ArgumentInvalid: Route 'lost' names endpoint 'nowhere', which does not exist\. \(HTTP 400\)$/m);
    assert.match(refused('route', 'create', '--name', 'HOT-TEMP', '--source', 'DeviceMessages', '--endpoint', 'hot'),
      /^error: Route 'hot-temp' already exists\.$/m);
    assert.notEqual(iothub(['route', 'create', '--name', 'x', '--source', 'Telemetry', '--endpoint', 'hot']).code, 0);
    assert.deepEqual(names(shown().routes), ['hot-temp', 'to-hook', 'twins']);
  });

  it('lists, shows, updates and deletes', () => {
    assert.deepEqual(names(ok('route', 'list')), ['hot-temp', 'to-hook', 'twins']);
    assert.deepEqual(names(ok('route', 'list', '--source', 'TwinChangeEvents')), ['twins']);

    const updated = ok('route', 'update', '--name', 'To-Hook', '--enabled', 'true', '--condition', "level = 'critical'");
    const expected = { name: 'to-hook', source: 'DeviceMessages', condition: "level = 'critical'", endpointNames: ['hook'], isEnabled: true };
    assert.deepEqual(updated, expected);
    assert.deepEqual(ok('route', 'show', '--name', 'to-hook'), expected);
    assert.deepEqual(shown().routes[1], expected);

    assert.match(refused('route', 'update', '--name', 'to-hook', '--condition', 'level = '),
      /^error: ArgumentInvalid: Route 'to-hook' has an invalid condition/m);
    assert.deepEqual(ok('route', 'show', '--name', 'to-hook'), expected, 'unchanged after a refusal');
    assert.match(refused('route', 'update', '--name', 'to-hook'), /Give --source, --endpoint, --condition or --enabled/);
    assert.match(refused('route', 'update', '--name', 'ghost', '--enabled', 'false'), /^error: No route 'ghost'\.$/m);

    const twins = iothub(['route', 'delete', '--name', 'TWINS']);
    assert.equal(twins.code, 0, twins.err);
    assert.equal(twins.out, '');
    assert.match(refused('route', 'show', '--name', 'twins'), /^error: No route 'twins'\.$/m);
    assert.deepEqual(names(shown().routes), ['hot-temp', 'to-hook']);
  });

  it('tests a stored route or a condition: true, false, undefined', () => {
    const json = ['--system-property', 'contentType=application/json', '--system-property', 'contentEncoding=utf-8'];
    const test = (...args) => {
      const r = iothub(['route', 'test', ...args]);
      assert.equal(r.code, 0, r.err);
      return r.out;
    };
    assert.equal(test('--name', 'HOT-TEMP', '--body', '{"temp":35}', ...json), 'true\n');
    assert.equal(test('--name', 'hot-temp', '--body', '{"temp":5}', ...json), 'false\n');
    // Without a JSON content type the body cannot be read.
    assert.equal(test('--name', 'hot-temp', '--body', '{"temp":35}'), 'undefined\n');
    assert.equal(test('--name', 'to-hook', '--app-property', 'level=critical'), 'true\n');
    assert.equal(test('--condition', "$twin.tags.site = 'north'", '--twin', '{"tags":{"site":"north"}}'), 'true\n');
    assert.equal(test('--condition', "$twin.tags.site = 'north'", '--twin', '{"tags":{"site":"south"}}'), 'false\n');
    assert.equal(test('--condition', "$twin.tags.site = 'north'"), 'undefined\n');
    assert.equal(test('--condition', "opType = 'updateTwin'", '--source', 'TwinChangeEvents',
      '--app-property', 'opType=updateTwin'), 'true\n');

    assert.match(refused('route', 'test', '--body', 'x'), /^error: Give --name \(a stored route\) or --condition\.$/m);
    assert.match(refused('route', 'test', '--condition', '$body.temp >'), /^error: ArgumentInvalid: .*invalid condition/m);
    assert.match(refused('route', 'test', '--name', 'ghost'), /^error: No route 'ghost'\.$/m);
    assert.match(refused('route', 'test', '--condition', 'true', '--twin', '[1'), /^error: --twin is not valid JSON/m);
  });
});

describe('iothub enrichment', () => {
  it('creates, lists and refuses', () => {
    assert.deepEqual(ok('enrichment', 'create', '--key', 'site', '--value', '$twin.tags.site', '--endpoints', 'hot,hook'),
      { key: 'site', value: '$twin.tags.site', endpointNames: ['hot', 'hook'] });
    assert.deepEqual(ok('enrichment', 'create', '-k', 'hubname', '-v', '$iothubname', '-e', 'hot'),
      { key: 'hubname', value: '$iothubname', endpointNames: ['hot'] });
    assert.match(refused('enrichment', 'create', '--key', 'SITE', '--value', 'x', '--endpoints', 'hot'),
      /^error: Enrichment 'site' already exists; delete it first\.$/m);
    assert.match(refused('enrichment', 'create', '--key', 'bad', '--value', '$twin.nope', '--endpoints', 'hot'),
      /^error: ArgumentInvalid: Enrichment 'bad' has value '\$twin.nope'/m);
    assert.match(refused('enrichment', 'create', '--key', 'lost', '--value', 'x', '--endpoints', 'hot,nowhere'),
      /^error: ArgumentInvalid: Enrichment 'lost' names endpoint 'nowhere', which does not exist/m);
    assert.deepEqual(names(ok('enrichment', 'list'), 'key'), ['site', 'hubname']);
    assert.deepEqual(shown().enrichments, [
      { key: 'site', value: '$twin.tags.site', endpointNames: ['hot', 'hook'] },
      { key: 'hubname', value: '$iothubname', endpointNames: ['hot'] },
    ]);
  });

  it('an endpoint still named by a route or an enrichment is not deleted', () => {
    assert.match(refused('endpoint', 'delete', '--name', 'HOOK'),
      /^error: Endpoint 'HOOK' is still named by route 'to-hook' and enrichment 'site'; change or delete them first\.$/m);
    assert.deepEqual(names(shown().endpoints.webhooks), ['hook']);
  });

  it('deletes for some endpoints or as a whole', () => {
    assert.equal(iothub(['enrichment', 'delete', '--key', 'site', '--endpoints', 'HOOK']).code, 0);
    assert.deepEqual(ok('enrichment', 'list'), [
      { key: 'site', value: '$twin.tags.site', endpointNames: ['hot'] },
      { key: 'hubname', value: '$iothubname', endpointNames: ['hot'] },
    ]);
    assert.match(refused('enrichment', 'delete', '--key', 'site', '--endpoints', 'hook'),
      /^error: Enrichment 'site' does not apply to endpoint 'hook'\.$/m);
    assert.equal(iothub(['enrichment', 'delete', '--key', 'HubName']).code, 0);
    assert.match(refused('enrichment', 'delete', '--key', 'hubname'), /^error: No enrichment 'hubname'\.$/m);
    assert.deepEqual(shown().enrichments, [{ key: 'site', value: '$twin.tags.site', endpointNames: ['hot'] }]);
  });
});

describe('iothub routing fallback', () => {
  it('turns the fallback off and on and moves it', () => {
    assert.deepEqual(ok('routing', 'fallback', '--enabled', 'false'),
      { name: '$fallback', source: 'DeviceMessages', condition: 'true', endpointNames: ['events'], isEnabled: false });
    assert.equal(shown().fallbackRoute.isEnabled, false);

    assert.deepEqual(ok('routing', 'fallback', '--enabled', 'true', '--endpoint', 'hot', '--condition', "level <> 'debug'"),
      { name: '$fallback', source: 'DeviceMessages', condition: "level <> 'debug'", endpointNames: ['hot'], isEnabled: true });
    assert.match(refused('endpoint', 'delete', '--name', 'hot'),
      /^error: Endpoint 'hot' is still named by route 'hot-temp', the fallback route and enrichment 'site'; change or delete them first\.$/m);

    assert.match(refused('routing', 'fallback', '--enabled', 'true', '--endpoint', 'nowhere'),
      /^error: ArgumentInvalid: fallbackRoute names endpoint 'nowhere', which does not exist/m);
    assert.deepEqual(shown().fallbackRoute.endpointNames, ['hot'], 'unchanged after a refusal');

    assert.deepEqual(ok('routing', 'fallback', '--enabled', 'true', '--endpoint', 'events', '--condition', 'true'),
      { name: '$fallback', source: 'DeviceMessages', condition: 'true', endpointNames: ['events'], isEnabled: true });
    assert.deepEqual(shown().fallbackRoute,
      { name: '$fallback', source: 'DeviceMessages', condition: 'true', endpointNames: ['events'], isEnabled: true });
  });
});

describe('iothub endpoint health', () => {
  it('reports a webhook that refuses connections unhealthy and a hosted event hub healthy', async () => {
    const registry = Registry.fromConnectionString(connectionString());
    const d = (await registry.create({ deviceId: 'cli-route-dev' })).responseBody;
    device = Client.fromConnectionString(
      `HostName=localhost;DeviceId=cli-route-dev;SharedAccessKey=${d.authentication.symmetricKey.primaryKey}`, Mqtt);
    await device.open();
    const hot = new Message(JSON.stringify({ temp: 40 }));
    hot.contentType = 'application/json';
    hot.contentEncoding = 'utf-8';
    await device.sendEvent(hot);
    const critical = new Message('overheating');
    critical.properties.add('level', 'critical');
    await device.sendEvent(critical);

    const health = (name) => ok('endpoint', 'health', '--name', name);
    await eventually(() => health('hot').healthStatus === 'healthy', 15000, 'hot healthy');
    await eventually(() => health('HOOK').healthStatus === 'unhealthy', 15000, 'hook unhealthy');
    const hook = health('hook');
    assert.equal(hook.endpointId, 'hook');
    assert.notEqual(hook.lastKnownError, '');
    assert.ok(hook.lastKnownErrorTime);
    assert.equal(hook.lastSuccessfulSendAttemptTime, null);
    assert.ok(health('hot').lastSuccessfulSendAttemptTime);

    const all = ok('endpoint', 'health');
    const byId = Object.fromEntries(all.map((h) => [h.endpointId, h.healthStatus]));
    assert.equal(byId.hot, 'healthy');
    assert.equal(byId.hook, 'unhealthy');
    // No route leads to them: never tried.
    assert.equal(byId.cold, 'unknown');
    assert.equal(byId.stream, 'unknown');
    assert.match(refused('endpoint', 'health', '--name', 'nowhere'), /^error: No endpoint 'nowhere'\.$/m);
  });
});

describe('iothub endpoint delete and routing set', () => {
  it('deletes an endpoint once nothing names it', () => {
    assert.equal(iothub(['route', 'delete', '--name', 'to-hook']).code, 0);
    const r = iothub(['endpoint', 'delete', '--name', 'Hook']);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, '');
    assert.match(refused('endpoint', 'show', '--name', 'hook'), /^error: No endpoint 'hook'\.$/m);
    assert.match(refused('endpoint', 'delete', '--name', 'hook'), /^error: No endpoint 'hook'\.$/m);
    assert.deepEqual(shown().endpoints.webhooks, []);
  });

  it('replaces the document from a file or stdin, and a refused one changes nothing', () => {
    const file = path.join(process.env.IOTHUB_WORK || '/tmp', 'routing.json');
    // Comments and trailing commas, as ARM templates have them, reach the hub as written.
    fs.writeFileSync(file, `{
      // one hosted event hub and a route to it
      "endpoints": { "eventHubs": [{ "name": "audit" }] },
      "routes": [{ "name": "all", "source": "DeviceMessages", "endpointNames": ["audit"], "isEnabled": true }],
    }`);
    const set = ok('routing', 'set', '--file', file);
    assert.deepEqual(set.routes, [{ name: 'all', source: 'DeviceMessages', condition: 'true', endpointNames: ['audit'], isEnabled: true }]);
    let doc = shown();
    assert.deepEqual(doc.endpoints.eventHubs, [{ name: 'audit' }]);
    assert.deepEqual(doc.endpoints.storageContainers, []);
    assert.deepEqual(doc.enrichments, []);
    assert.deepEqual(names(ok('route', 'list')), ['all']);

    const bad = { ...doc, routes: [{ name: 'r', source: 'DeviceMessages', endpointNames: ['gone'], isEnabled: true }] };
    const r = iothub(['routing', 'set', '--file', '-'], JSON.stringify(bad));
    assert.equal(r.code, 1);
    assert.match(r.err, /^error: ArgumentInvalid: Route 'r' names endpoint 'gone', which does not exist\. \(HTTP 400\)$/m);
    assert.deepEqual(shown(), doc);

    const stdin = iothub(['routing', 'set', '-f', '-'], JSON.stringify({ ...doc, routes: [] }));
    assert.equal(stdin.code, 0, stdin.err);
    doc = shown();
    assert.deepEqual(doc.routes, []);
    assert.deepEqual(doc.endpoints.eventHubs, [{ name: 'audit' }]);
    assert.match(refused('routing', 'set', '--file', '/nonexistent/routing.json'), /^error: Cannot read \/nonexistent\/routing.json\.$/m);
  });
});

describe('iothub event-subscription', () => {
  it('create, list, show, delete', () => {
    const created = ok('event-subscription', 'create', '--name', 'cli-sub', '--url', 'http://127.0.0.1:9/x',
      '--event-types', 'DeviceCreated,Microsoft.Devices.DeviceDeleted', '--subject-begins-with', 'devices/cli-',
      '--subject-ends-with', '-x', '--schema', 'cloudevents', '--max-attempts', '3', '--ttl-minutes', '10');
    assert.equal(created.name, 'cli-sub');
    const p = created.properties;
    assert.equal(p.destination.endpointType, 'WebHook');
    assert.equal(p.destination.properties.endpointUrl, 'http://127.0.0.1:9/x');
    assert.deepEqual(p.filter, {
      includedEventTypes: ['Microsoft.Devices.DeviceCreated', 'Microsoft.Devices.DeviceDeleted'],
      subjectBeginsWith: 'devices/cli-', subjectEndsWith: '-x',
    });
    assert.equal(p.eventDeliverySchema, 'CloudEventSchemaV1_0');
    assert.deepEqual(p.retryPolicy, { maxDeliveryAttempts: 3, eventTimeToLiveInMinutes: 10 });
    // Nothing listens on port 9: the validation handshake never succeeds.
    assert.equal(p.provisioningState, 'AwaitingManualAction');

    const plain = ok('event-subscription', 'create', '-n', 'cli-sub-2', '-u', 'http://127.0.0.1:9/y');
    assert.deepEqual(plain.properties.filter, { includedEventTypes: [] });
    assert.equal(plain.properties.eventDeliverySchema, 'EventGridSchema');
    assert.deepEqual(plain.properties.retryPolicy, { maxDeliveryAttempts: 30, eventTimeToLiveInMinutes: 1440 });

    assert.deepEqual(names(ok('event-subscription', 'list')).sort(), ['cli-sub', 'cli-sub-2']);
    const one = ok('event-subscription', 'show', '--name', 'cli-sub');
    assert.deepEqual(one.properties.filter, p.filter);
    assert.equal(one.properties.destination.properties.endpointUrl, 'http://127.0.0.1:9/x');

    assert.match(refused('event-subscription', 'create', '--name', 'bad', '--url', 'http://127.0.0.1:9/x', '--event-types', 'DeviceExploded'),
      /^error: ArgumentInvalid: Unknown event type "Microsoft.Devices.DeviceExploded"/m);
    assert.match(refused('event-subscription', 'create', '--name', 'bad', '--url', 'http://127.0.0.1:9/x', '--max-attempts', '31'),
      /^error: ArgumentInvalid: maxDeliveryAttempts must be an integer from 1 to 30/m);

    for (const n of ['cli-sub', 'cli-sub-2']) {
      const del = iothub(['event-subscription', 'delete', '--name', n]);
      assert.equal(del.code, 0, del.err);
      assert.equal(del.out, '');
    }
    assert.match(refused('event-subscription', 'show', '--name', 'cli-sub'), /No event subscription 'cli-sub'/);
    assert.deepEqual(ok('event-subscription', 'list'), []);
  });
});
