// Test-side helpers: start and stop the hub binary, read its connection strings, and make raw
// signed HTTPS requests for the paths the SDKs do not cover. Everything stays on loopback inside
// the suite's own network namespace (see run.sh).
'use strict';
const { spawn, execFileSync } = require('node:child_process');
const https = require('node:https');
const { SharedAccessSignature } = require('azure-iot-common');

const bin = process.env.IOTHUB_BIN;
const dataDir = process.env.IOTHUB_DATA_DIR;
if (!bin || !dataDir) throw new Error('run through tests/conformance/run.sh');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function rawRequest({ method = 'GET', path, body, headers = {}, port = 443, agent = false }) {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: 'localhost', port, method, path, headers, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, body: text, json });
      });
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

function connectionString(policy = 'iothubowner') {
  return execFileSync(bin, ['connection-string', '--data-dir', dataDir, '--policy', policy])
    .toString().trim();
}

function policyKey(policy) {
  return /SharedAccessKey=([^;]+)/.exec(connectionString(policy))[1];
}

function serviceToken(policy = 'iothubowner', ttlSeconds = 600, resource = 'localhost') {
  const expiry = Math.floor(Date.now() / 1000) + ttlSeconds;
  return SharedAccessSignature.create(resource, policy, policyKey(policy), expiry).toString();
}

// A signed service request; `token: null` sends none.
function serviceRequest({ method = 'GET', path, json, body, policy = 'iothubowner', token, headers = {} }) {
  const h = { ...headers };
  const auth = token === undefined ? serviceToken(policy) : token;
  if (auth) h.Authorization = auth;
  let payload = body;
  if (json !== undefined) {
    payload = JSON.stringify(json);
    h['Content-Type'] = 'application/json; charset=utf-8';
  }
  if (payload !== undefined) h['Content-Length'] = Buffer.byteLength(payload);
  const sep = path.includes('?') ? '&' : '?';
  return rawRequest({ method, path: `${path}${sep}api-version=2021-04-12`, body: payload, headers: h });
}

class Hub {
  constructor(proc) {
    this.proc = proc;
    this.output = '';
    proc.stdout.on('data', (d) => { this.output += d; });
    proc.stderr.on('data', (d) => { this.output += d; });
    this.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  }

  static async start(extraArgs = []) {
    const proc = spawn(bin, ['serve', '--data-dir', dataDir, '--hostname', 'localhost', ...extraArgs],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    const hub = new Hub(proc);
    const deadline = Date.now() + 15000;
    let exited = false;
    hub.exited.then(() => { exited = true; });
    while (Date.now() < deadline && !exited) {
      try {
        const r = await rawRequest({ path: '/health' });
        if (r.status === 200) return hub;
      } catch { /* not listening yet */ }
      await sleep(50);
    }
    proc.kill('SIGKILL');
    throw new Error(`hub did not become healthy:\n${hub.output}`);
  }

  async stop() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.exited;
    this.proc.kill('SIGTERM');
    return this.exited;
  }

  async kill() {
    this.proc.kill('SIGKILL');
    return this.exited;
  }
}

module.exports = { Hub, rawRequest, serviceRequest, serviceToken, connectionString, policyKey, sleep };
