"""Resource limits against a real mosquitto (issue 9): what one big packet may cost by default,
and what a slow ``on_message`` does to keep-alive.

- By default a client accepts packets up to ``mqttfast.MAX_PACKET_SIZE`` (16 MiB). On MQTT 5 it
  announces that in CONNECT (Maximum Packet Size), so the broker discards a bigger message for this
  subscriber instead of sending it [MQTT-3.1.2-24] and the connection goes on; before MQTT 5 there
  is no way to say so, and a bigger packet is refused from its fixed header (nothing of it is
  buffered) with a ``ProtocolError`` that ends the connection.
- Callbacks run on the loop thread: while ``on_message`` blocks, nothing is read or sent on any
  connection of that loop, PINGREQ included. The broker allows 1.5 x keepalive of silence
  [MQTT-3.1.2-24]; a callback blocking longer than that gets the connection closed by the broker
  (measured below with keepalive 2 s: 8 s are, 0.5 s are not; and documented in the README).
"""
from __future__ import annotations

import threading
import time

import pytest

import mqttfast
from client_support import QUIET_LOG, Inbox, connected_client, shutdown, topic, wait_until

BIG = 17 * 1024 * 1024  # over the default limit


def test_the_default_limit_is_16_mib():
    assert mqttfast.MAX_PACKET_SIZE == 16 * 1024 * 1024
    assert mqttfast.Client().session.max_packet_size == mqttfast.MAX_PACKET_SIZE


def test_mqtt5_announces_the_limit_and_the_broker_withholds_a_bigger_message(broker):
    name = topic("big")
    inbox = Inbox()
    sub = pub = None
    try:
        sub = connected_client(broker.port, inbox=inbox, protocol=5)
        assert sub.subscribe(name, 1).wait(5)
        pub = connected_client(broker.port, protocol=5)
        assert pub.publish(name, b"x" * BIG, qos=1).wait(20)
        assert pub.publish(name, b"small", qos=1).wait(5)
        assert inbox.wait_for(1, 10)
        time.sleep(0.3)
        assert inbox.payloads == [b"small"]
        assert sub.is_connected
    finally:
        shutdown(pub, sub)


def test_before_mqtt5_a_bigger_packet_ends_the_connection_without_being_buffered(broker):
    name = topic("big4")
    ended = []
    sub = pub = None
    try:
        sub = connected_client(broker.port, protocol=4)
        sub.on_disconnect = ended.append
        assert sub.subscribe(name, 0).wait(5)
        pub = connected_client(broker.port, protocol=4)
        assert pub.publish(name, b"x" * BIG, qos=1).wait(20)
        assert wait_until(lambda: ended, 10), "the subscriber took the oversized packet"
        assert isinstance(ended[0].error, mqttfast.ProtocolError), ended[0]
        assert "maximum" in str(ended[0].error).lower() or "size" in str(ended[0].error).lower()
    finally:
        shutdown(pub, sub)


# mosquitto notices an overdue keep-alive at its own pace (4 s blocks were sometimes not seen in
# time), so the long block is well past 1.5 x keepalive.
@pytest.mark.parametrize("block, dropped", [(0.5, False), (8.0, True)])
def test_a_callback_blocking_past_one_and_a_half_keepalives_loses_the_connection(
        broker_factory, block, dropped):
    instance = broker_factory(log_types=QUIET_LOG)
    keepalive = 2
    name = topic("slow")
    ended = []
    calls = threading.Event()
    sub = pub = None

    def slow(msg):
        calls.set()
        time.sleep(block)

    try:
        sub = connected_client(instance.port, keepalive=keepalive)
        sub.on_message = slow
        sub.on_disconnect = ended.append
        assert sub.subscribe(name, 1).wait(5)
        time.sleep(0.9 * keepalive)  # the callback starts just before a PINGREQ is due
        pub = connected_client(instance.port)
        assert pub.publish(name, b"x", qos=1).wait(5)
        assert calls.wait(5)
        time.sleep(block + 1.0)
        assert bool(ended) == dropped, (block, ended)
    finally:
        shutdown(pub, sub)
