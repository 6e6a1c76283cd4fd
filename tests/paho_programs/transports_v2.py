"""paho VERSION2 over transport="websockets" (ws_set_options path and headers; tls_set makes it
wss) and transport="unix" (the socket's path as connect()'s host): a publish/subscribe round
trip on each, with on_message."""
import sys
import threading

import paho.mqtt.client as mqtt

host, ws_port, wss_port, tls_host, ca_path, unix_path = sys.argv[1:7]


def round_trip(name, client, connect_args):
    subscribed, received = threading.Event(), threading.Event()
    messages = []

    def on_connect(client, userdata, flags, reason_code, properties):
        print(f"{name}: connect rc={reason_code}")
        client.subscribe(f"compat/transports/{name}", qos=1)

    def on_subscribe(client, userdata, mid, reason_code_list, properties):
        subscribed.set()

    def on_message(client, userdata, message):
        messages.append((message.topic, message.payload, message.qos))
        received.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(*connect_args, keepalive=30)
    client.loop_start()
    assert subscribed.wait(5), f"{name}: no SUBACK"
    info = client.publish(f"compat/transports/{name}", f"over {name}", qos=1)
    info.wait_for_publish(5)
    print(f"{name}: published={info.is_published()}")
    assert received.wait(5), f"{name}: no message"
    print(f"{name}: messages={messages} transport={client.transport}")
    client.disconnect()
    client.loop_stop()


ws = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, transport="websockets")
ws.ws_set_options(path="/mqtt", headers={"X-Compat-Test": "1"})
round_trip("ws", ws, (host, int(ws_port)))

wss = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, transport="websockets")
wss.tls_set(ca_certs=ca_path)
wss.ws_set_options(path="/mqtt", headers=lambda headers: dict(headers, **{"X-Compat-Test": "2"}))
round_trip("wss", wss, (tls_host, int(wss_port)))

unix = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, transport="unix")
round_trip("unix", unix, (unix_path,))
