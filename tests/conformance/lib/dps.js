// A hub for the provisioning suites: started, with its ID scope, a ProvisioningServiceClient on
// `iothub connection-string --dps` and a Registry on the owner policy.
'use strict';
const { execFileSync } = require('node:child_process');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { Registry } = require('azure-iothub');
const { Hub, bin, dataDir, connectionString } = require('./hub');

async function startProvisioning(args = []) {
  const hub = await Hub.start(args);
  const idScope = execFileSync(bin, ['dps', 'id-scope', '--data-dir', dataDir]).toString().trim();
  const service = ProvisioningServiceClient.fromConnectionString(
    execFileSync(bin, ['connection-string', '--dps', '--data-dir', dataDir]).toString().trim());
  const registry = Registry.fromConnectionString(connectionString());
  return { hub, idScope, service, registry };
}

module.exports = { startProvisioning };
