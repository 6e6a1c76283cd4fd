"""MQTT 5, VERSION2: message_callback_add, user properties, SubscribeOptions, no_local, unsubscribe codes."""
import sys
import threading

import paho.mqtt.client as mqtt

host, port = sys.argv[1], int(sys.argv[2])
done = threading.Event()
acks = threading.Event()
out = []


def on_connect(client, userdata, flags, reason_code, properties):
    out.append(f"connect: {reason_code} {type(properties).__name__}")
    client.subscribe([("compat/v5/sensors/+/temp", 1),
                      ("compat/v5/other", mqtt.SubscribeOptions(qos=2, noLocal=False))])
    client.subscribe("compat/v5/local", options=mqtt.SubscribeOptions(qos=1, noLocal=True))


def on_subscribe(client, userdata, mid, reason_code_list, properties):
    out.append(f"suback {mid}: {[str(c) for c in reason_code_list]}")
    if mid == 2:
        acks.set()


def on_temp(client, userdata, message):
    users = getattr(message.properties, "UserProperty", None)
    out.append(f"temp: {message.topic} {message.payload!r} qos={message.qos} user={users}")


def on_message(client, userdata, message):
    out.append(f"other: {message.topic} {message.payload!r} qos={message.qos} "
               f"expiry={getattr(message.properties, 'MessageExpiryInterval', None)}")
    client.unsubscribe(["compat/v5/other", "compat/v5/never"])


def on_unsubscribe(client, userdata, mid, reason_code_list, properties):
    out.append(f"unsuback {mid}: {[str(c) for c in reason_code_list]}")
    done.set()


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="compat-v5", protocol=mqtt.MQTTv5)
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_unsubscribe = on_unsubscribe
client.on_message = on_message
client.message_callback_add("compat/v5/sensors/+/temp", on_temp)
client.connect(host, port, clean_start=True)
client.loop_start()
assert acks.wait(5)
props = mqtt.Properties(mqtt.PacketTypes.PUBLISH)
props.UserProperty = ("unit", "C")
props.UserProperty = ("site", "lab")
client.publish("compat/v5/local", "own message: not delivered (noLocal)", qos=1).wait_for_publish(5)
client.publish("compat/v5/sensors/1/temp", "21.5", qos=1, properties=props).wait_for_publish(5)
expiring = mqtt.Properties(mqtt.PacketTypes.PUBLISH)
expiring.MessageExpiryInterval = 60
client.publish("compat/v5/other", b"x", qos=2, properties=expiring).wait_for_publish(5)
assert done.wait(5)
client.disconnect()
client.loop_stop()
print("\n".join(out))
