"""loop_start() before connect(); connect_async() + loop_forever() with everything in callbacks."""
import sys
import threading

import paho.mqtt.client as mqtt

host, port = sys.argv[1], int(sys.argv[2])
events = []
connected = threading.Event()
gone = threading.Event()


def on_connect(client, userdata, flags, reason_code, properties):
    events.append(f"first: connect {reason_code} present={flags.session_present}")
    connected.set()


def on_disconnect(client, userdata, flags, reason_code, properties):
    events.append(f"first: disconnect {reason_code}")
    gone.set()


first = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="compat-first")
first.on_connect = on_connect
first.on_disconnect = on_disconnect
first.loop_start()
first.connect(host, port)
assert connected.wait(5)
first.disconnect()
assert gone.wait(5)
first.loop_stop()
print("\n".join(events))


def on_connect2(client, userdata, flags, reason_code, properties):
    print("second: connect", reason_code)
    client.subscribe(("compat/forever", 1))


def on_subscribe2(client, userdata, mid, reason_code_list, properties):
    print("second: suback", [str(c) for c in reason_code_list])
    client.publish("compat/forever", "to myself", qos=1)


def on_message2(client, userdata, message):
    print("second: message", message.topic, message.payload, message.qos, message.mid > 0)
    client.disconnect()


second = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="compat-second")
second.on_connect = on_connect2
second.on_subscribe = on_subscribe2
second.on_message = on_message2
second.connect_async(host, port, keepalive=10)
second.loop_forever()
print("second: loop_forever returned, connected:", second.is_connected())
