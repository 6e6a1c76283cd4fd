"""How many MQTT connections one Locust worker holds with mqttfast.contrib.locust.

Each user connects, subscribes to its own topic and publishes a timestamped QoS 1 message to it
every 5 s (so every connection carries traffic both ways). The README's "Locust" section gives the
command and what it measured. MQTT_PORT picks the broker's port (--host gives the host).
"""
import itertools
import os

from locust import constant, task

from mqttfast.contrib.locust import MqttfastUser

_ids = itertools.count()


class Idle(MqttfastUser):
    wait_time = constant(5)
    port = int(os.environ.get("MQTT_PORT", "1883"))

    def on_start(self):
        super().on_start()
        self.topic = f"bench/conn/{next(_ids)}"
        self.client.receive_name = lambda m: "receive:1:bench/conn/<n>"
        self.client.subscribe(self.topic, qos=1, name="subscribe:1:bench/conn/<n>")

    @task
    def ping(self):
        self.client.publish(self.topic, b"x" * 32, qos=1, name="publish:1:bench/conn/<n>")
