"""Failures: a closed port raises ConnectionRefusedError, bad credentials go to on_connect,
bad arguments raise."""
import socket
import sys
import threading

import paho.mqtt.client as mqtt

host, port, auth_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with socket.socket() as s:
    s.bind((host, 0))
    closed_port = s.getsockname()[1]

client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
try:
    client.connect(host, closed_port)
except ConnectionRefusedError as exc:
    print("closed port:", type(exc).__name__, isinstance(exc, OSError))

answered = threading.Event()
events = []


def on_connect(client, userdata, flags, reason_code, properties):
    events.append(f"connect: {reason_code} failure={reason_code.is_failure}")


def on_disconnect(client, userdata, flags, reason_code, properties):
    events.append(f"disconnect: {flags.is_disconnect_packet_from_server}")
    answered.set()


bad = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="compat-bad", reconnect_on_failure=False)
bad.username_pw_set("alice", "wrong")
bad.on_connect = on_connect
bad.on_disconnect = on_disconnect
bad.connect(host, auth_port)
bad.loop_start()
answered.wait(5)
bad.loop_stop()
print("\n".join(events))

good = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
for call in (lambda: good.publish("a/+", "x"), lambda: good.publish("a", "x", qos=3),
             lambda: good.publish("a", object()), lambda: good.subscribe("a", qos=5),
             lambda: good.subscribe(42), lambda: good.will_set(""),
             lambda: mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, clean_session=False),
             lambda: mqtt.Client("client-id-as-first-argument")):
    try:
        call()
        print("no error")
    except (ValueError, TypeError) as exc:
        print(type(exc).__name__)
