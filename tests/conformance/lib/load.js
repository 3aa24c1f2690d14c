// QoS 1 load from raw MQTT devices over TLS, for the durability suites: each device keeps up to
// eight messages in flight until stopped or disconnected (the hub killed), and every message the
// hub acknowledged is reported, so a suite can check that none was lost.
'use strict';
const fs = require('node:fs');
const mqtt = require('mqtt');
const { SharedAccessSignature } = require('azure-iot-common');
const { dataDir } = require('./hub');

// `devices` ids are created in `registry`; `message(id, n)` gives {body, topicSuffix} of a
// device's n-th message; `acked(body, n)` is called for each acknowledgement.
async function startQos1Load(registry, ids, message, acked) {
  const ca = fs.readFileSync(`${dataDir}/tls/ca.pem`);
  let stop = false;
  const publishers = [];
  for (const id of ids) {
    const key = (await registry.create({ deviceId: id })).responseBody.authentication.symmetricKey.primaryKey;
    const password = SharedAccessSignature.create(`localhost%2Fdevices%2F${id}`, undefined, key,
      Math.floor(Date.now() / 1000) + 600).toString();
    const client = mqtt.connect('mqtts://localhost:8883', { ca, clientId: id, clean: true, reconnectPeriod: 0,
      username: `localhost/${id}/?api-version=2021-04-12`, password });
    client.on('error', () => {});
    await new Promise((resolve, reject) => { client.once('connect', resolve); client.once('error', reject); });
    publishers.push(new Promise((resolve) => {
      let n = 0;
      let inflight = 0;
      const pump = () => {
        while (!stop && client.connected && inflight < 8) {
          const m = message(id, n);
          const k = n++;
          inflight++;
          client.publish(`devices/${id}/messages/events/${m.topicSuffix ?? ''}`, m.body, { qos: 1 }, (err) => {
            inflight--;
            if (!err) acked(m.body, k);
            pump();
          });
        }
        if (stop || !client.connected) resolve();
      };
      client.once('close', resolve);
      pump();
    }));
  }
  return { stop: () => { stop = true; return Promise.all(publishers); } };
}

module.exports = { startQos1Load };
