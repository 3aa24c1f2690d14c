// Test-side helpers: start and stop the hub binary, read its connection strings, and make raw
// signed HTTPS requests for the paths the SDKs do not cover. Everything stays on loopback inside
// the suite's own network namespace (see run.sh).
'use strict';
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const https = require('node:https');
const { SharedAccessSignature } = require('azure-iot-common');

const bin = process.env.IOTHUB_BIN;
const dataDir = process.env.IOTHUB_DATA_DIR;
if (!bin || !dataDir) throw new Error('run through tests/conformance/run.sh');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function rawRequest({ method = 'GET', path, body, headers = {}, port = 443, agent = false, ca, host = 'localhost' }) {
  return new Promise((resolve, reject) => {
    const req = https.request({ host, port, method, path, headers, agent, ca }, (res) => {
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

  // Starts `iothub serve` and waits until /health answers 200. With `dir`, the hub uses that data
  // directory and its own configuration, and is found through the port in its runtime.json.
  // `host`: where its /health answers (a hub bound to another loopback address).
  static async start(extraArgs = [], { dir, env, host = 'localhost' } = {}) {
    const args = dir ? ['serve', '--data-dir', dir, ...extraArgs]
      : ['serve', '--data-dir', dataDir, '--hostname', 'localhost', ...extraArgs];
    // In cluster mode (run.sh) every data directory is a hub of its own, in JetStream too.
    const own = dir && process.env.IOTHUB_CLUSTER
      ? { IOTHUB_CLUSTER_PREFIX: `T${require('node:crypto').createHash('sha256').update(dir).digest('hex').slice(0, 12)}` }
      : {};
    const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...own, ...env } });
    const hub = new Hub(proc);
    // Every hub's output goes to a file beside the run, for post-mortems (the runner prints the
    // tail of these when a suite fails).
    if (process.env.IOTHUB_WORK) {
      const log = fs.createWriteStream(`${process.env.IOTHUB_WORK}/hub-${proc.pid}.log`);
      proc.stdout.pipe(log);
      proc.stderr.pipe(log);
    }
    const deadline = Date.now() + 15000;
    let exited = false;
    hub.exited.then(() => { exited = true; });
    while (Date.now() < deadline && !exited) {
      try {
        const port = dir ? JSON.parse(fs.readFileSync(`${dir}/runtime.json`, 'utf8')).httpsPort : 443;
        const r = await rawRequest({ path: '/health', port, host, ca: dir ? fs.readFileSync(`${dir}/tls/ca.pem`) : undefined });
        if (r.status === 200) { hub.port = port; return hub; }
      } catch { /* not listening yet */ }
      await sleep(50);
    }
    proc.kill('SIGKILL');
    await hub.exited;
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

// Runs the binary to completion (for commands expected to fail fast).
function runToExit(args, { env, timeoutMs = 15000 } = {}) {
  return new Promise((resolve) => {
    const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let output = '';
    proc.stdout.on('data', (d) => { output += d; });
    proc.stderr.on('data', (d) => { output += d; });
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.on('exit', (code, signal) => { clearTimeout(timer); resolve({ code, signal, output }); });
  });
}

// Collects telemetry through the hub's /telemetry API until `done(events)` holds or the time runs
// out; returns the events (each with properties and systemProperties as objects).
async function readTelemetry({ from = 'earliest', device, until = () => false, timeoutMs = 10000 } = {}) {
  const events = [];
  let cursor;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const wait = Math.max(1, Math.min(5, Math.ceil((deadline - Date.now()) / 1000)));
    const q = cursor ? `cursor=${cursor}` : `from=${from}`;
    const r = await serviceRequest({ path: `/telemetry/events?${q}&max=1000&wait=${wait}` });
    if (r.status !== 200) throw new Error(`telemetry read failed: ${r.status} ${r.body}`);
    cursor = r.json.cursor;
    for (const e of r.json.events)
      if (!device || e.systemProperties['iothub-connection-device-id'] === device) events.push(e);
    if (until(events)) break;
  }
  return events;
}

// Waits for `predicate()` to hold, polling every 20 ms, for at most `timeoutMs`.
async function eventually(predicate, timeoutMs = 5000, what = 'condition') {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${typeof what === 'function' ? what() : what}`);
}

module.exports = { Hub, runToExit, readTelemetry, eventually, bin, dataDir, rawRequest, serviceRequest, serviceToken, connectionString, policyKey, sleep };
