// Holds N idle devices connected through the unmodified Azure device SDK on one transport and
// prints the hub's RSS growth per connection (see idle-transports.sh, which starts the hub).
//   node idle-transports.js <Mqtt|MqttWs|Amqp|AmqpWs> <devices> <hub pid> <connection string> <prefix>
'use strict';
const path = require('node:path');
const fs = require('node:fs');
const mods = path.join(__dirname, '..', 'tests', 'conformance', 'node_modules');
const need = (m) => require(path.join(mods, m));
const { Registry } = need('azure-iothub');
const { Client } = need('azure-iot-device');
const transports = {
  Mqtt: () => need('azure-iot-device-mqtt').Mqtt,
  MqttWs: () => need('azure-iot-device-mqtt').MqttWs,
  Amqp: () => need('azure-iot-device-amqp').Amqp,
  AmqpWs: () => need('azure-iot-device-amqp').AmqpWs,
};
const [name, countText, pidText, cs, prefix] = process.argv.slice(2);
const count = Number(countText);
const rssKiB = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pidText}/status`, 'utf8'))[1]);

(async () => {
  const transport = transports[name]();
  const registry = Registry.fromConnectionString(cs);
  const key = Buffer.alloc(32, 7).toString('base64');
  for (let i = 0; i < count; i += 100) {
    const batch = [];
    for (let j = i; j < Math.min(count, i + 100); j++)
      batch.push({ deviceId: `${prefix}${j}`, authentication: { symmetricKey: { primaryKey: key, secondaryKey: key } } });
    await registry.addDevices(batch);
  }
  const host = /HostName=([^;]+)/.exec(cs)[1];
  const rss0 = rssKiB();
  const clients = [];
  const started = Date.now();
  // A few at a time: the SDK's own connect timeouts are not what is measured here.
  for (let i = 0; i < count; i += 50) {
    const wave = [];
    for (let j = i; j < Math.min(count, i + 50); j++) {
      const c = Client.fromConnectionString(`HostName=${host};DeviceId=${prefix}${j};SharedAccessKey=${key}`, transport);
      clients.push(c);
      wave.push(c.open());
    }
    await Promise.all(wave);
  }
  const seconds = (Date.now() - started) / 1000;
  // Let the hub settle (lazy work after connect, allocator caches).
  await new Promise((r) => setTimeout(r, 2000));
  const rss1 = rssKiB();
  console.log(JSON.stringify({ transport: name, devices: count, connectSeconds: seconds,
    serverRssBeforeKiB: rss0, serverRssKiB: rss1, rssBytesPerConnection: ((rss1 - rss0) * 1024) / count }));
  await Promise.all(clients.map((c) => c.close().catch(() => {})));
  process.exit(0);
})().catch((e) => { console.error(e); process.exit(1); });
