// Test certificates made with the openssl command line in a temporary directory: EC P-256 keys,
// self-signed and CA-signed certificates, and a CA registered with the hub and verified by proof
// of possession through the `iothub certificate` commands.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { bin, dataDir } = require('./hub');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iothub-pki-'));
const file = (n) => path.join(dir, n);
const read = (n) => fs.readFileSync(file(n), 'utf8');

function openssl(...args) {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}
function key(name) { openssl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`); }
function selfSigned(name, cn, extra = []) {
  key(name);
  openssl('req', '-x509', '-new', '-key', `${name}.key`, '-subj', `/CN=${cn}`, '-days', '30', '-out', `${name}.pem`, ...extra);
}
const caExtensions = ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'];
function signed(name, cn, ca, days = 30) {
  key(name);
  openssl('req', '-new', '-key', `${name}.key`, '-subj', `/CN=${cn}`, '-out', `${name}.csr`);
  openssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial',
    '-days', String(days), '-out', `${name}.pem`);
}
const cli = (...args) => spawnSync(bin, [...args, '--data-dir', dataDir], { encoding: 'utf8' });

// Registers `ca` (its PEM) with the hub under `name`, unverified.
function registerCa(name, ca) {
  const created = cli('certificate', 'create', name, '--path', file(`${ca}.pem`));
  if (created.status !== 0) throw new Error(created.stderr);
}

// Proves possession of the key of `ca`, registered as `name`.
function verifyCa(name, ca) {
  const code = JSON.parse(cli('certificate', 'generate-verification-code', name).stdout).properties.verificationCode;
  signed(`${ca}-proof`, code, ca);
  const verified = cli('certificate', 'verify', name, '--path', file(`${ca}-proof.pem`));
  if (verified.status !== 0) throw new Error(verified.stderr);
}

// Registers `ca` with the hub under `name` and proves possession of its key.
function registerVerifiedCa(name, ca) {
  registerCa(name, ca);
  verifyCa(name, ca);
}

function cleanUp() { fs.rmSync(dir, { recursive: true, force: true }); }

module.exports = { file, read, selfSigned, signed, caExtensions, registerCa, verifyCa, registerVerifiedCa, cleanUp };
