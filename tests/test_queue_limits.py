"""The outgoing queue is bounded in bytes as well as in messages (issue 9): ``max_queued_bytes``
counts the topic and payload bytes (plus a few of framing) of every message waiting for a
connection or a window slot, QoS 0, 1 and 2 alike; past it ``publish`` raises ``QueueFull``.
(``max_queued`` alone, 1,000,000 messages by default, let a queue of large payloads grow without
limit.) Sans-IO: the session against ``session_helpers``' in-memory broker side."""
from __future__ import annotations

import pytest

import mqttfast
from mqttfast.errors import QueueFull
from mqttfast.session import Session

from session_helpers import Broker, connected

PAYLOAD = b"p" * 1000


def test_the_default_is_64_mib_and_the_client_passes_it_on():
    assert Session("c").max_queued_bytes == 64 * 1024 * 1024
    assert mqttfast.Client(max_queued_bytes=12345).session.max_queued_bytes == 12345


def test_a_queue_while_disconnected_is_bounded_in_bytes():
    s = Session("q-bytes", 4, clean_session=False, max_queued_bytes=10_000)
    accepted = []
    with pytest.raises(QueueFull, match="max_queued_bytes=10000"):
        for _ in range(100):
            accepted.append(s.publish("t", PAYLOAD, 1))
    assert len(accepted) == 9  # 9 x (1000 + 1 + 8) bytes fit, a tenth does not
    b = Broker(s)
    b.connect(1.0)
    packets = b.read()
    assert len(packets) == 9
    assert s.queued_count == 0
    s.publish("t", PAYLOAD, 1)  # sent, not queued: the queue is empty again
    assert s.queued_count == 0 and [p.payload for p in b.read()] == [PAYLOAD]


def test_a_queue_behind_a_full_window_is_bounded_and_frees_as_acks_come():
    s, b = connected(4, max_inflight=1, max_queued_bytes=3_000)
    first = s.publish("t", PAYLOAD, 2)  # in flight
    queued = [s.publish("t", PAYLOAD, 1) for _ in range(2)]
    with pytest.raises(QueueFull):
        s.publish("t", PAYLOAD, 1)
    b.read()
    b.pubrec(first.packet_id)
    b.pubcomp(first.packet_id)  # the window slot frees: one queued goes out
    s.publish("t", PAYLOAD, 1)  # room again for one
    assert s.queued_count == 2 and queued[0].packet_id != 0
