// A raw AMQP 1.0 client on rhea for the cases the SDKs cannot express: many identities on one
// connection (a gateway), links the hub must refuse, odd tokens, unsettled deliveries. TLS to
// localhost:5671 with the run's CA and no SASL (a bare AMQP header), as the Node SDKs connect.
'use strict';
const fs = require('node:fs');
const rhea = require('rhea');
const WebSocket = require('ws');
const { SharedAccessSignature } = require('azure-iot-common');
const { dataDir, sleep } = require('./hub');

const ca = () => fs.readFileSync(`${dataDir}/tls/ca.pem`);

// A device SAS token for `localhost/devices/{id}`, expiring `ttlSeconds` from now.
function deviceToken(id, key, ttlSeconds = 600) {
  const expiry = Math.floor(Date.now() / 1000) + ttlSeconds;
  return SharedAccessSignature.create(`localhost%2Fdevices%2F${encodeURIComponent(id)}`, undefined, key, expiry).toString();
}
const deviceAudience = (id) => `localhost%2Fdevices%2F${encodeURIComponent(id)}`;

// Rejects after `ms` unless `promise` settles first.
function within(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms); }),
  ]);
}

// One link and what the hub did with it: `opened` when the hub answered the attach, `error`
// (the condition and description) when it detached it with one, `closed` once detached.
class Link {
  constructor(link, kind) {
    this.link = link;
    this.kind = kind;
    this.opened = false;
    this.closed = false;
    this.error = null;
    this.messages = [];
    this.pending = new Map();  // delivery -> resolve
    link.on(`${kind}_open`, () => { this.opened = true; });
    link.on(`${kind}_error`, () => {
      const e = link.remote && link.remote.detach && link.remote.detach.error;
      this.error = e ? { condition: String(e.condition), description: e.description } : { condition: 'unknown' };
    });
    link.on(`${kind}_close`, () => { this.closed = true; });
    if (kind === 'sender') {
      for (const outcome of ['accepted', 'rejected', 'released', 'modified']) {
        link.on(outcome, (ctx) => {
          const resolve = this.pending.get(ctx.delivery);
          if (!resolve) return;
          this.pending.delete(ctx.delivery);
          const e = ctx.delivery.remote_state && ctx.delivery.remote_state.error;
          resolve({ outcome, condition: e ? String(e.condition) : undefined, description: e && e.description });
        });
      }
    } else {
      link.on('message', (ctx) => { this.messages.push({ message: ctx.message, delivery: ctx.delivery }); });
    }
  }

  // Resolves once the hub has either attached the link for good or refused it.
  async settled(ms = 5000) {
    await within((async () => {
      while (!(this.opened || this.closed)) await sleep(10);
    })(), ms, `attach of ${this.kind}`);
  }

  // Waits for the hub to detach the link; returns its error condition (or null).
  async detached(ms = 5000) {
    await within((async () => { while (!this.closed) await sleep(10); })(), ms, `detach of ${this.kind}`);
    return this.error;
  }

  // Sends once there is credit and resolves with the outcome: {outcome, condition, description}.
  async send(message, ms = 10000) {
    await within((async () => {
      while (!this.link.sendable()) {
        if (this.closed) throw new Error(`link detached: ${JSON.stringify(this.error)}`);
        await sleep(10);
      }
    })(), ms, 'credit');
    const delivery = this.link.send(message);
    return within(new Promise((resolve) => this.pending.set(delivery, resolve)), ms, 'an outcome');
  }

  // Sends bytes already encoded, with the transfer's message-format set (a batched message is
  // 0x80013700), and resolves with the outcome as send() does.
  async sendEncoded(bytes, format, ms = 10000) {
    await within((async () => {
      while (!this.link.sendable()) {
        if (this.closed) throw new Error(`link detached: ${JSON.stringify(this.error)}`);
        await sleep(10);
      }
    })(), ms, 'credit');
    const delivery = this.link.send(bytes, undefined, format);
    return within(new Promise((resolve) => this.pending.set(delivery, resolve)), ms, 'an outcome');
  }

  close() { if (!this.closed) this.link.close(); }
}

class RawAmqp {
  constructor(connection) {
    this.connection = connection;
    this.replies = new Map();
    this.nextId = 1;
    this.error = null;
    this.closed = false;
  }

  // `websocket: true` speaks AMQP over WebSockets on 443 (subprotocol AMQPWSB10) instead of 5671.
  // `username` and `password` sign in with SASL PLAIN; `cbs: false` attaches no $cbs links.
  static async open({ websocket = false, username, password, cbs = true } = {}) {
    const container = rhea.create_container();
    // Errors are read from the links; without these listeners rhea would throw them.
    for (const ev of ['error', 'connection_error', 'session_error', 'sender_error', 'receiver_error', 'protocol_error'])
      container.on(ev, () => {});
    const options = { hostname: 'localhost', reconnect: false, idle_time_out: 0 };
    if (username) Object.assign(options, { username, password });
    if (websocket) {
      const ws = container.websocket_connect(WebSocket);
      options.connection_details = ws('wss://localhost:443/$iothub/websocket', ['AMQPWSB10'], { ca: ca() });
    } else {
      Object.assign(options, { host: 'localhost', port: 5671, transport: 'tls', ca: ca(), servername: 'localhost' });
    }
    const connection = container.connect(options);
    const raw = new RawAmqp(connection);
    connection.on('disconnected', () => { raw.closed = true; });
    connection.on('connection_close', () => { raw.closed = true; });
    await within(new Promise((resolve, reject) => {
      connection.once('connection_open', resolve);
      connection.once('disconnected', (ctx) => reject(ctx.error || new Error('disconnected')));
    }), 10000, 'the AMQP connection');
    if (cbs) [raw.cbsOut, raw.cbsIn] = await raw.requestLinks('$cbs');
    return raw;
  }

  // A sender and a receiver on `address` whose replies resolve the request with the same
  // correlation-id (the $cbs and $management request-response pattern).
  async requestLinks(address) {
    const out = this.sender(address);
    const replies = this.receiver(address);
    replies.link.on('message', (ctx) => {
      const resolve = this.replies.get(ctx.message.correlation_id);
      if (resolve) this.replies.delete(ctx.message.correlation_id), resolve(ctx.message);
    });
    await out.settled();
    await replies.settled();
    return [out, replies];
  }

  sender(target, options = {}) {
    return new Link(this.connection.open_sender({ target: { address: target }, ...options }), 'sender');
  }

  // `autoaccept: false` leaves settling to the test.
  receiver(source, options = {}) {
    return new Link(this.connection.open_receiver({ source: { address: source }, ...options }), 'receiver');
  }

  // A CBS put-token; resolves with the reply's status-code.
  async putToken(audience, token) {
    const id = `put-token-${this.nextId++}`;
    const reply = within(new Promise((resolve) => this.replies.set(id, resolve)), 10000, 'the CBS reply');
    await this.cbsOut.send({
      message_id: id, to: '$cbs', reply_to: 'cbs', body: token,
      application_properties: { operation: 'put-token', type: 'servicebus.windows.net:sastoken', name: audience },
    });
    const m = await reply;
    return m.application_properties['status-code'];
  }

  // A $management READ of an event hub (the Event Hubs endpoint's), answered on this connection;
  // resolves with the reply's status-code.
  async management(entity) {
    if (!this.managementOut) [this.managementOut, this.managementIn] = await this.requestLinks('$management');
    const id = `management-${this.nextId++}`;
    const reply = within(new Promise((resolve) => this.replies.set(id, resolve)), 10000, 'the $management reply');
    await this.managementOut.send({
      message_id: id, reply_to: this.managementIn.link.name,
      application_properties: { operation: 'READ', type: 'com.microsoft:eventhub', name: entity },
    });
    return (await reply).application_properties['status-code'];
  }

  async close() {
    if (this.closed) return;
    // rhea reports a close it started with the peer's close frame, not with 'disconnected'.
    const done = new Promise((resolve) => {
      this.connection.once('connection_close', resolve);
      this.connection.once('disconnected', resolve);
    });
    this.connection.close();
    await within(done, 5000, 'the connection to close').catch(() => this.connection.socket && this.connection.socket.destroy());
    this.closed = true;
  }
}

const data = (text) => rhea.message.data_section(Buffer.from(text));

module.exports = { RawAmqp, deviceToken, deviceAudience, data, within };
