"""Resource limits against a real mosquitto (issue 9): what one big packet may cost by default,
and what a slow ``on_message`` does to keep-alive.

- By default a client accepts packets up to ``mqttfast.MAX_PACKET_SIZE`` (16 MiB). On MQTT 5 it
  announces that in CONNECT (Maximum Packet Size), so the broker discards a bigger message for this
  subscriber instead of sending it [MQTT-3.1.2-24] and the connection goes on; before MQTT 5 there
  is no way to say so, and a bigger packet is refused from its fixed header (nothing of it is
  buffered) with a ``ProtocolError`` that ends the connection.
- A slow ``on_message`` and keep-alive: ``test_slow_callbacks.py``.
"""
from __future__ import annotations

import time


import mqttfast
from client_support import Inbox, connected_client, shutdown, topic, wait_until
from mqttfast.loop import RECV_SIZE

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
        session, fed, held = sub.session, [0], [0]
        receive = session.receive

        def watching(data, now):  # the loop's thread only
            fed[0] += len(data)
            try:
                return receive(data, now)
            finally:
                held[0] = max(held[0], session.incoming_buffered)

        session.receive = watching
        pub = connected_client(broker.port, protocol=4)
        assert pub.publish(name, b"x" * BIG, qos=1).wait(20)
        assert wait_until(lambda: ended, 10), "the subscriber took the oversized packet"
        assert isinstance(ended[0].error, mqttfast.ProtocolError), ended[0]
        assert "maximum" in str(ended[0].error).lower() or "size" in str(ended[0].error).lower()
        # Refused from its fixed header: the read that completed it was the last one taken, and
        # no more than that read was ever held, not the 17 MiB it announced (+ 4: a header split
        # across two reads).
        assert 0 < held[0] <= fed[0] <= RECV_SIZE + 4, (held[0], fed[0])
    finally:
        shutdown(pub, sub)
