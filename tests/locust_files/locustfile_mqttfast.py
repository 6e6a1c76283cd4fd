"""Locust users for tests/test_locust.py: mqttfast's own User, and Locust's MqttUser with
mqttfast's paho-compatible client as its client_cls."""
import itertools
import os

from locust import between, task
from locust.contrib.mqtt import MqttUser

from mqttfast.contrib.locust import MqttfastPahoClient, MqttfastUser, timestamped

_ids = itertools.count()


class PubSub(MqttfastUser):
    """Subscribes to its own topic, then publishes to it at QoS 0 and 1: every message comes
    back as a ``receive`` event with its end-to-end latency."""

    wait_time = between(0.05, 0.1)
    weight = 3
    port = int(os.environ.get("MQTT_PORT", "1883"))  # --host gives the host only

    def on_start(self):
        super().on_start()
        self.topic = f"locust/pubsub/{next(_ids)}"
        self.client.receive_name = lambda m: f"receive:{m.qos}:locust/pubsub/<n>"
        self.client.subscribe(self.topic, qos=1, name="subscribe:1:locust/pubsub/<n>")

    @task
    def publish(self):
        self.client.publish(self.topic, b"hello", qos=0, name="publish:0:locust/pubsub/<n>")
        self.client.publish(self.topic, b"hello", qos=1, name="publish:1:locust/pubsub/<n>")


class PahoShaped(MqttUser):
    """Locust's own MqttUser; only client_cls is mqttfast's."""

    client_cls = MqttfastPahoClient
    port = int(os.environ.get("MQTT_PORT", "1883"))
    wait_time = between(0.05, 0.1)
    weight = 1

    @task
    def publish(self):
        if self.client.is_connected():
            self.client.publish("locust/paho", timestamped(b"x"), qos=1)
