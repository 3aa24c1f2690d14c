// Routing under kill -9: devices publish at QoS 1 while routes split their messages between an
// event hub the hub hosts and (through the fallback) the built-in endpoint; the hub is killed;
// after a restart every message that got a PUBACK reaches the endpoint its route matched
// (duplicates allowed, losses not), read with the unmodified @azure/event-hubs client and the
// telemetry API. Once with routes decided as messages arrive (each written straight to its
// endpoint), once through the ingest log and the endpoints' workers.
'use strict';
const { it, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const { EventHubConsumerClient, earliestEventPosition } = require('@azure/event-hubs');
const { Registry } = require('azure-iothub');
const { Hub, bin, connectionString, readTelemetry, dataDir, sleep, eventually, serviceRequest } = require('./lib/hub');
const { startQos1Load } = require('./lib/load');

const DEVICES = 10;
const LOAD_MS = 1500;

async function crashAndCheck(t, args, prefix) {
  let hub = await Hub.start(args);
  const registry = Registry.fromConnectionString(connectionString());
  let r = await serviceRequest({
    method: 'PUT', path: '/routing', json: {
      endpoints: { eventHubs: [{ name: 'even' }] },
      routes: [{ name: 'evens', source: 'DeviceMessages', condition: "parity = 'even'", endpointNames: ['even'], isEnabled: true }],
    },
  });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const acked = { even: new Set(), odd: new Set() };
  const parity = (n) => (n % 2 === 0 ? 'even' : 'odd');
  const load = await startQos1Load(registry, Array.from({ length: DEVICES }, (_, d) => `${prefix}-${d}`),
    (id, n) => ({ body: `${id}:${n}`, topicSuffix: `parity=${parity(n)}` }),
    (body, n) => acked[parity(n)].add(body));
  await sleep(LOAD_MS);
  const { signal } = await hub.kill();
  assert.equal(signal, 'SIGKILL');
  await load.stop();
  assert.ok(acked.even.size > 50 && acked.odd.size > 50, `enough load (${acked.even.size} + ${acked.odd.size})`);

  hub = await Hub.start(args);
  const cs = execFileSync(bin, ['connection-string', '--data-dir', dataDir, '--policy', 'service', '--event-hubs'])
    .toString().trim().replace(/EntityPath=[^;]*/, 'EntityPath=even');
  const consumer = new EventHubConsumerClient('$Default', cs);
  const atEven = new Set();
  const errors = [];
  let misrouted = 0;
  const sub = consumer.subscribe({
    processEvents: async (batch) => {
      for (const e of batch) {
        const body = Buffer.isBuffer(e.body) ? e.body.toString() : String(e.body);
        if (acked.odd.has(body)) misrouted++;
        atEven.add(body);
      }
    },
    processError: async (err) => { errors.push(String(err)); },
  }, { startPosition: earliestEventPosition, maxWaitTimeInSeconds: 1, maxBatchSize: 500 });
  try {
    await eventually(() => [...acked.even].every((b) => atEven.has(b)), 30000, 'every acknowledged even message at its endpoint');
  } catch (e) {
    const missing = [...acked.even].filter((b) => !atEven.has(b));
    const health = (await serviceRequest({ path: '/routing/endpoints/health' })).json;
    const parts = [];
    for (const id of await consumer.getPartitionIds()) parts.push(await consumer.getPartitionProperties(id));
    throw new Error(`${e.message}: errors ${errors.slice(0, 3)}; partitions ${JSON.stringify(parts)}; ${missing.length} of ${acked.even.size} missing (e.g. ${missing.slice(0, 5)}), ${atEven.size} read; health ${JSON.stringify(health)}`);
  }
  const builtin = new Set();
  await readTelemetry({
    until: (e) => { for (const x of e) builtin.add(x.body); return [...acked.odd].every((b) => builtin.has(b)); },
    timeoutMs: 30000,
  });
  const lostOdd = [...acked.odd].filter((b) => !builtin.has(b));
  t.diagnostic(`${acked.even.size} even and ${acked.odd.size} odd acknowledged before the kill`);
  assert.deepEqual(lostOdd, [], `${lostOdd.length} odd messages lost from the fallback`);
  assert.equal(misrouted, 0, 'no odd message at the even endpoint');
  assert.ok(![...builtin].some((b) => acked.even.has(b)), 'no even message through the fallback');
  await sub.close();
  await consumer.close();
  await hub.stop();
}

it('every acknowledged message reaches its routed endpoint after kill -9 (routes decided on arrival)',
  (t) => crashAndCheck(t, [], 'rcrash'));

it('every acknowledged message reaches its routed endpoint after kill -9 (through the ingest log)',
  (t) => crashAndCheck(t, ['--routing-decide-on-append', 'false'], 'rcrash-ingest'));

after(() => { setTimeout(() => process.exit(), 2000).unref(); });
