"""Single thread, loop(timeout) by hand: retained messages, will_set, max_inflight, user data."""
import sys
import time

import paho.mqtt.client as mqtt

host, port = sys.argv[1], int(sys.argv[2])

setter = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="compat-retain-set")
setter.will_set("compat/manual/will", "gone", qos=1, retain=False)
setter.max_inflight_messages_set(10)
setter.max_queued_messages_set(100)
setter.connect(host, port)
info = setter.publish("compat/manual/state", "on", qos=1, retain=True)
deadline = time.monotonic() + 5
while not info.is_published() and time.monotonic() < deadline:
    setter.loop(0.1)
print("retained set:", info.is_published(), info.rc)

got = []


def on_message(client, userdata, message):
    got.append((userdata, message.topic, message.payload, message.retain, message.qos))


reader = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="compat-retain-get", userdata="reader")
reader.on_message = on_message
reader.on_connect = lambda c, u, f, rc, p: c.subscribe("compat/manual/state", 1)
reader.connect(host, port)
deadline = time.monotonic() + 5
while not got and time.monotonic() < deadline:
    reader.loop(0.1)
setter.publish("compat/manual/state", "", qos=1, retain=True)  # clear it
for _ in range(20):
    setter.loop(0.05)
    reader.loop(0.05)
print("received:", got)
print("before connect:", mqtt.Client(mqtt.CallbackAPIVersion.VERSION2).publish("t", "x", qos=1).rc)
print("subscribe before connect:", mqtt.Client(mqtt.CallbackAPIVersion.VERSION2).subscribe("t"))
print("disconnect rc:", setter.disconnect(), reader.disconnect())
for _ in range(5):
    setter.loop(0.05)
    reader.loop(0.05)
print("connected:", setter.is_connected(), reader.is_connected())
