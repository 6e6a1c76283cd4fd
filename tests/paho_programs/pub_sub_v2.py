"""paho VERSION2 callbacks, loop_start: subscribe in on_connect, publish QoS 0/1/2, wait_for_publish."""
import sys
import threading

import paho.mqtt.client as mqtt

host, port = sys.argv[1], int(sys.argv[2])
subscribed = threading.Event()
received = threading.Event()
lock = threading.Lock()
messages, published, lines = [], [], []


def on_connect(client, userdata, flags, reason_code, properties):
    lines.append(f"connect: session_present={flags.session_present} rc={reason_code} "
                 f"failure={reason_code.is_failure} userdata={userdata}")
    client.subscribe("compat/v2/#", qos=2)


def on_subscribe(client, userdata, mid, reason_code_list, properties):
    lines.append(f"subscribe: mid={mid} codes={[str(rc) for rc in reason_code_list]} "
                 f"values={[rc.value for rc in reason_code_list]}")
    subscribed.set()


def on_message(client, userdata, message):
    with lock:
        messages.append((message.topic, message.payload, message.qos, message.retain))
        if len(messages) == 3:
            received.set()


def on_publish(client, userdata, mid, reason_code, properties):
    with lock:
        published.append((mid, str(reason_code)))


def on_disconnect(client, userdata, flags, reason_code, properties):
    lines.append(f"disconnect: from_server={flags.is_disconnect_packet_from_server} "
                 f"rc={reason_code} value={reason_code.value}")


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="compat-v2", userdata="ud")
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.on_publish = on_publish
client.on_disconnect = on_disconnect
print("connect() ->", client.connect(host, port, keepalive=30))
client.loop_start()
assert subscribed.wait(5), "no SUBACK"
infos = [client.publish("compat/v2/q%d" % q, "payload %d" % q, qos=q) for q in (0, 1, 2)]
for info in infos:
    info.wait_for_publish(5)
    rc, mid = info
    print("publish:", rc, mid, info.rc == mqtt.MQTT_ERR_SUCCESS, info.mid == mid, info.is_published())
assert received.wait(5), "messages missing"
print("messages:", sorted(messages))
print("published:", sorted(published))
print("connected:", client.is_connected())
client.disconnect()
client.loop_stop()
print("connected after:", client.is_connected())
print("\n".join(lines))
