"""connect_async + loop_start over TLS (tls_set with a CA file), on_publish with VERSION1."""
import sys
import threading

import paho.mqtt.client as mqtt

host, tls_port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
connected = threading.Event()
mids = []


def on_connect(client, userdata, flags, rc):
    print("connect:", rc)
    connected.set()


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION1, client_id="compat-tls")
client.tls_set(ca_certs=ca)
client.on_connect = on_connect
client.on_publish = lambda c, u, mid: mids.append(mid)
client.connect_async("localhost", tls_port)
client.loop_start()
assert connected.wait(10)
infos = [client.publish("compat/tls", str(i), qos=1) for i in range(5)]
for info in infos:
    info.wait_for_publish(5)
print("published:", [info.is_published() for info in infos])
client.disconnect()
client.loop_stop()
print("on_publish mids:", sorted(mids) == [info.mid for info in infos])
