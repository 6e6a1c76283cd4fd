"""Fuzz target: random bytes "from the broker" fed to a connected ``mqttfast.session.Session``.

An input is two control bytes and a byte stream:

- byte 0: the protocol level (``PROTOCOLS[b % 3]``);
- byte 1: bit 0 Session Present on the CONNACK, bit 1 ``manual_ack``, bit 2 ``clean_session``,
  bit 3 an ``ack_timeout`` of 1 s; bits 4-7: chunk size (0: whole);
- the rest: what the broker sends after its CONNACK.

Before the bytes arrive the session has QoS 0/1/2 publishes in flight and queued and a
SUBSCRIBE outstanding, so acknowledgements find something to act on. Each chunk goes to
``receive`` (the clock moves on a second per chunk, with a ``tick``). The only exception allowed is
``ProtocolError`` (and its ``MalformedPacket``); then the connection is dropped as the loop drops
it and a new one made (at most three times), and the rest of the bytes go to it. After every step:

- every publish is exactly once either completed (DONE or FAILED, reported once) or still held
  (in flight under its own packet id, or queued); nothing is lost;
- no two records share a packet id, and in flight never exceeds the window (nor the QoS 2 cap);
- what the session wrote is whole, well-formed MQTT that a client may send;
- a message handed to the application has a topic (an alias is resolved) and no alias property.

It runs on the codec ``mqttfast.codec`` loaded (``MQTTFAST_PURE=1`` for the pure twin).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from session_helpers import Broker, connected  # noqa: E402

from mqttfast.codec import Publish  # noqa: E402
from mqttfast.constants import MQTT_5, PacketType  # noqa: E402
from mqttfast.errors import ProtocolError  # noqa: E402
from mqttfast.session import (  # noqa: E402
    CONNECTED,
    DONE,
    FAILED,
    QUEUED,
    WAIT_PUBACK,
    WAIT_PUBCOMP,
    WAIT_PUBREC,
    Outgoing,
    Session,
)

PROTOCOLS = (3, 4, 5)
MAX_RECONNECTS = 3
# What a client may send (a broker-only packet in the session's output is a bug).
CLIENT_PACKETS = {PacketType.CONNECT, PacketType.PUBLISH, PacketType.PUBACK, PacketType.PUBREC,
                  PacketType.PUBREL, PacketType.PUBCOMP, PacketType.SUBSCRIBE,
                  PacketType.UNSUBSCRIBE, PacketType.PINGREQ, PacketType.DISCONNECT, PacketType.AUTH}


def header(protocol: int, *, session_present: bool = False, manual_ack: bool = False,
           clean_session: bool = False, ack_timeout: bool = False, chunk: int = 0) -> bytes:
    flags = (session_present | manual_ack << 1 | clean_session << 2 | ack_timeout << 3
             | (chunk & 0x0F) << 4)
    return bytes((PROTOCOLS.index(protocol), flags))


class Tracker:
    """Every record the session was given, and which ones it reported completed."""

    def __init__(self, session: Session, broker: Broker) -> None:
        self.s = session
        self.b = broker
        self.records: List[Outgoing] = []
        self.completed: Dict[int, Outgoing] = {}  # id(record) -> record

    def publish(self, topic: str, qos: int) -> None:
        result = self.s.publish(topic, b"m%d" % len(self.records), qos)
        if isinstance(result, Outgoing):
            self.records.append(result)

    def step(self, drained: Sequence[Outgoing] = ()) -> None:
        """Drain what the session produced (plus ``drained``, records a helper already took)
        and check every invariant."""
        s = self.s
        for record in [*drained, *s.take_completed()]:
            assert record.state in (DONE, FAILED), f"completed in state {record.state!r}"
            assert id(record) not in self.completed, f"{record!r} completed twice"
            self.completed[id(record)] = record
        s.take_events()
        store = s.store
        seen = set()
        qos2 = 0
        for pid, record in store.outgoing.items():
            assert record.packet_id == pid, f"{record!r} held under id {pid}"
            assert record.state in (WAIT_PUBACK, WAIT_PUBREC, WAIT_PUBCOMP), record
            assert id(record) not in self.completed, f"{record!r} completed but still in flight"
            seen.add(id(record))
            qos2 += record.qos == 2
        assert len(store.outgoing) <= s.window, f"{len(store.outgoing)} in flight > {s.window}"
        assert qos2 <= s.max_inflight_qos2, f"{qos2} QoS 2 in flight > {s.max_inflight_qos2}"
        for record in store.pending:
            assert record.state == QUEUED, record
            assert id(record) not in seen, f"{record!r} both in flight and queued"
            assert id(record) not in self.completed, f"{record!r} completed but still queued"
            seen.add(id(record))
        for record in self.records:
            if record.qos and not s.clean_session:
                assert id(record) in seen or id(record) in self.completed, f"{record!r} was lost"
        for packet in self.b.read():
            assert packet.type in CLIENT_PACKETS, f"the session sent a {packet!r}"


def check_messages(messages: List[Any], protocol: int) -> None:
    for message in messages:
        assert type(message).__name__ == Publish.__name__, message
        assert message.topic, f"a message without a topic reached the application: {message!r}"
        assert "topic_alias" not in (message.properties or {}), message
        assert 0 <= message.qos <= 2 and (message.packet_id > 0) == (message.qos > 0), message


def check(data: bytes) -> None:
    if len(data) < 2:
        data = bytes(2 - len(data)) + data
    protocol = PROTOCOLS[data[0] % 3]
    flags = data[1]
    chunk = flags >> 4
    stream = data[2:]
    clean = bool(flags & 4)
    kw: Dict[str, Any] = dict(manual_ack=bool(flags & 2), ack_timeout=1.0 if flags & 8 else None,
                              max_inflight=4, max_inflight_qos2=2, clean_session=clean)
    connack = {"topic_alias_maximum": 2, "receive_maximum": 3} if protocol == MQTT_5 else None
    s, b = connected(protocol, connack=connack, keepalive=5, **kw)
    t = Tracker(s, b)
    for i in range(6):
        t.publish(f"t/{i % 2}", (0, 1, 2)[i % 3])
    s.subscribe([("s/#", 1), ("s/+", 2)])
    t.step()
    pieces = [stream[i:i + chunk] for i in range(0, len(stream), chunk)] if chunk else [stream]
    now = 0.0
    reconnects = 0
    for piece in pieces:
        now += 1.0
        try:
            messages = s.receive(piece, now)
        except ProtocolError:
            messages = []
            if reconnects == MAX_RECONNECTS:
                s.connection_lost("protocol error")
                t.step()
                return
            reconnects += 1
            s.connection_lost("protocol error")
            t.step()
            _, result = b.connect(now, keepalive=5, session_present=bool(flags & 1) and not clean,
                                  properties=connack)
            t.step(result.completed)
        check_messages(messages, protocol)
        if s.manual_ack:
            for message in messages:
                if message.qos:
                    s.ack(message.packet_id, s.epoch)
        s.tick(now)
        if s.state is CONNECTED:
            t.publish("t/late", 1)
        t.step()
