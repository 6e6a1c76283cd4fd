"""paho VERSION1 callbacks (MQTT 3.1.1), loop_forever, disconnect from a callback, list subscribe."""
import sys

import paho.mqtt.client as mqtt

host, port = sys.argv[1], int(sys.argv[2])
seen = []


def on_connect(client, userdata, flags, rc):
    print("connect:", flags, rc, mqtt.connack_string(rc))
    result, mid = client.subscribe([("compat/v1/a", 0), ("compat/v1/b", 1)])
    print("subscribe() ->", result, mid)


def on_subscribe(client, userdata, mid, granted_qos):
    print("suback:", mid, granted_qos)
    publisher.publish("compat/v1/a", b"\x00\x01binary", qos=1)
    publisher.publish("compat/v1/b", 42, qos=1)
    publisher.publish("compat/v1/b", 2.5, qos=0)
    publisher.publish("compat/v1/b", None, qos=1)


def on_message(client, userdata, msg):
    seen.append((msg.topic, msg.payload, msg.qos))
    userdata["count"] += 1
    if userdata["count"] == 4:
        client.unsubscribe("compat/v1/b")


def on_unsubscribe(client, userdata, mid):
    print("unsuback:", mid)
    client.disconnect()


def on_disconnect(client, userdata, rc):
    print("disconnect:", rc, mqtt.error_string(rc))


publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION1, client_id="compat-v1-pub")
publisher.connect(host, port)
publisher.loop_start()

client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION1, client_id="compat-v1-sub")
client.user_data_set({"count": 0})
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.on_unsubscribe = on_unsubscribe
client.on_disconnect = on_disconnect
client.connect(host, port)
rc = client.loop_forever()
print("loop_forever returned")
print("messages:", sorted(seen, key=repr))
publisher.disconnect()
publisher.loop_stop()
