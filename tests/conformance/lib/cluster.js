// Cluster-mode helpers: three JetStream nats-servers clustered on loopback, and hub nodes started
// from copies of one data directory, each on its own loopback address (127.0.0.N) with the
// hub's usual ports. Everything stays inside the suite's network namespace.
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const { bin, dataDir, rawRequest, sleep } = require('./hub');

const work = process.env.IOTHUB_WORK;

function canConnect(port, host = '127.0.0.1') {
  return new Promise((resolve) => {
    const s = net.connect({ port, host }, () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

class NatsServer {
  constructor(index) {
    this.index = index;
    this.port = 4222 + index;
    this.url = `nats://127.0.0.1:${this.port}`;
  }

  start() {
    const routes = [0, 1, 2].filter((i) => i !== this.index).map((i) => `nats://127.0.0.1:${6222 + i}`).join(',');
    this.proc = spawn('nats-server', [
      '-js', '-n', `n${this.index}`, '-a', '127.0.0.1', '-p', String(this.port),
      '-sd', `${work}/nats-${this.index}`, '--cluster_name', 'iothub',
      '--cluster', `nats://127.0.0.1:${6222 + this.index}`, '--routes', routes,
      '-l', `${work}/nats-${this.index}.log`,
    ], { stdio: 'ignore' });
    this.exited = new Promise((resolve) => this.proc.on('exit', resolve));
  }

  async ready(timeoutMs = 15000) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (await canConnect(this.port)) return;
      await sleep(50);
    }
    throw new Error(`nats-server ${this.index} did not listen`);
  }

  // A graceful stop of a server that lost its JetStream quorum can wait on the cluster for a
  // long time: after `graceMs` it is killed, as a crashed server would be.
  async stop(signal = 'SIGTERM', graceMs = 10000) {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill(signal);
    let timer;
    const late = new Promise((resolve) => { timer = setTimeout(() => resolve('late'), graceMs); });
    if (await Promise.race([this.exited, late]) === 'late') {
      this.proc.kill('SIGKILL');
      await this.exited;
    }
    clearTimeout(timer);
  }
}

async function startNats() {
  const servers = [0, 1, 2].map((i) => new NatsServer(i));
  for (const s of servers) s.start();
  for (const s of servers) await s.ready();
  return servers;
}

// A hub node: its own copy of the data directory, bound to 127.0.0.`n`.
class Node {
  constructor(n, urls) {
    this.n = n;
    this.host = `127.0.0.${n}`;
    this.dir = `${work}/node-${n}`;
    this.urls = urls;
    if (!fs.existsSync(this.dir)) {
      fs.cpSync(dataDir, this.dir, { recursive: true });
      fs.rmSync(`${this.dir}/storage`, { recursive: true, force: true });
    }
  }

  async start(extra = []) {
    this.output = '';
    this.proc = spawn(bin, ['serve', '--data-dir', this.dir, '--bind', this.host,
      '--alias', '127.0.0.1,127.0.0.2,127.0.0.3', '--cluster', this.urls.join(','),
      ...(process.env.IOTHUB_CLUSTER_LOG_LEVEL ? ['--log-level', process.env.IOTHUB_CLUSTER_LOG_LEVEL] : []), ...extra],
    { stdio: ['ignore', 'pipe', 'pipe'] });
    const log = fs.createWriteStream(`${work}/hub-node-${this.n}-${this.proc.pid}.log`);
    this.proc.stdout.on('data', (d) => { this.output += d; log.write(d); });
    this.proc.stderr.on('data', (d) => { this.output += d; log.write(d); });
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, signal) => resolve({ code, signal })));
    const ca = fs.readFileSync(`${this.dir}/tls/ca.pem`);
    const deadline = Date.now() + 60000;
    let exited = false;
    this.exited.then(() => { exited = true; });
    while (Date.now() < deadline && !exited) {
      try {
        const r = await rawRequest({ path: '/health', host: this.host, ca });
        if (r.status === 200) return this;
      } catch { /* not listening yet */ }
      await sleep(100);
    }
    this.proc.kill('SIGKILL');
    throw new Error(`node ${this.n} did not become healthy:\n${this.output}`);
  }

  async stop(signal = 'SIGTERM') {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill(signal);
    await this.exited;
  }
}

module.exports = { startNats, Node, canConnect };
