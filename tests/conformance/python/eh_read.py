"""Reads telemetry through the hub's Event Hubs-compatible endpoint with Debian's azure.eventhub
consumer: prints the partition ids, then one JSON line per event until COUNT events of DEVICE
arrived or TIMEOUT seconds passed. Usage: eh_read.py CONNECTION_STRING CA_FILE DEVICE COUNT TIMEOUT
"""
import json
import sys
import threading

from azure.eventhub import EventHubConsumerClient

conn, ca, device = sys.argv[1], sys.argv[2], sys.argv[3]
count, timeout = int(sys.argv[4]), float(sys.argv[5])
client = EventHubConsumerClient.from_connection_string(
    conn, consumer_group="$Default", connection_verify=ca)
print(json.dumps({"partitions": client.get_partition_ids()}), flush=True)

seen = []
done = threading.Event()


def on_event(context, event):
    if event is None:
        return
    device_id = (event.system_properties or {}).get(b"iothub-connection-device-id", b"").decode()
    if device_id != device:
        return
    seen.append(1)
    print(json.dumps({
        "partition": context.partition_id,
        "sequenceNumber": event.sequence_number,
        "body": event.body_as_str(),
        "properties": {k.decode() if isinstance(k, bytes) else k:
                       v.decode() if isinstance(v, bytes) else v
                       for k, v in (event.properties or {}).items()},
        "deviceId": device_id,
    }), flush=True)
    if len(seen) >= count:
        done.set()


worker = threading.Thread(target=lambda: client.receive(on_event=on_event, starting_position="-1",
                                                        max_wait_time=1))
worker.daemon = True
worker.start()
done.wait(timeout)
client.close()
sys.exit(0 if len(seen) >= count else 1)
