// The routing document and endpoint health over the service REST API, for the routing suites.
'use strict';
const assert = require('node:assert/strict');
const { serviceRequest } = require('./hub');

// Replaces the routing document; the hub must accept it.
async function putRouting(document) {
  const r = await serviceRequest({ method: 'PUT', path: '/routing', json: document });
  assert.equal(r.status, 200, JSON.stringify(r.json));
}

// One endpoint's entry of GET /routing/endpoints/health (undefined until it has one).
async function endpointHealth(name) {
  const r = await serviceRequest({ path: '/routing/endpoints/health' });
  assert.equal(r.status, 200);
  return r.json.value.find((v) => v.endpointId === name);
}

module.exports = { putRouting, endpointHealth };
