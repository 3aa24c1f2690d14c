// Reading event hubs in the suites: every event of one (the built-in endpoint or a hosted event
// hub) from the start, with @azure/event-hubs, collected until the client closes.
'use strict';
const { EventHubConsumerClient, earliestEventPosition } = require('@azure/event-hubs');

// `clients` gets the consumer, for the suite to close at the end.
function collect(connectionString, clients) {
  const client = new EventHubConsumerClient('$Default', connectionString);
  clients.push(client);
  const events = [];
  const errors = [];
  const subscription = client.subscribe({
    processEvents: async (batch) => { events.push(...batch); },
    processError: async (err) => { errors.push(err); },
  }, { startPosition: earliestEventPosition, maxWaitTimeInSeconds: 1 });
  return { events, errors, subscription };
}

// The events a device sent.
const from = (events, id) => events.filter((e) => e.systemProperties['iothub-connection-device-id'] === id);

module.exports = { collect, from };
