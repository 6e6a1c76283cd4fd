"""An in-memory "broker side" for the sans-IO session tests: it decodes what the session wrote to
``session.out`` and encodes the broker's packets for ``session.receive``. No sockets, no clock."""
from __future__ import annotations

from collections import deque
from typing import Any, Dict, Iterator, List, Optional, Tuple

from mqttfast.codec import (
    ConnAck,
    Connect,
    Publish,
    StreamDecoder,
    encode,
    encode_ack,
)
from mqttfast.constants import MQTT_5, PacketType
from mqttfast.session import Session
from mqttfast.store import MemoryStore

CLIENT_ID = "session-test"  # MQTT 3.1 wants 1..23 characters


class Broker:
    """The broker end of one session: ``read()`` drains and decodes ``session.out``; ``send()``
    feeds encoded broker packets to ``session.receive`` and returns the session's events."""

    def __init__(self, session: Session) -> None:
        self.s = session
        self.protocol = session.protocol
        self.decoder = StreamDecoder(self.protocol)

    # -------------------------------------------------------------- session -> broker

    def raw(self) -> bytes:
        """Drain ``session.out`` (as the loop would) and return the bytes."""
        data = bytes(self.s.out)
        self.s.out.clear()
        return data

    def read(self) -> List[Any]:
        """Drain ``session.out`` and decode it into packets (nothing may be left half-written)."""
        packets = self.decoder.feed(self.raw())
        assert self.decoder.buffered == 0, "session.out ended in the middle of a packet"
        return packets

    def read_one(self, cls: Optional[type] = None) -> Any:
        packets = self.read()
        assert len(packets) == 1, f"expected one packet, got {packets!r}"
        if cls is not None:
            assert type(packets[0]).__name__ == cls.__name__, packets
        return packets[0]

    # -------------------------------------------------------------- broker -> session

    def encode(self, packet: Any) -> bytes:
        return encode(packet, self.protocol)

    def send(self, *packets: Any, now: float = 0.0) -> List[Any]:
        return self.s.receive(b"".join(self.encode(p) for p in packets), now)

    def ack(self, packet_type: int, *packet_ids: int, reason_code: int = 0,
            now: float = 0.0) -> List[Any]:
        data = b"".join(encode_ack(packet_type, pid, reason_code, self.protocol)
                        for pid in packet_ids)
        return self.s.receive(data, now)

    def puback(self, *ids: int, **kw: Any) -> List[Any]:
        return self.ack(PacketType.PUBACK, *ids, **kw)

    def pubrec(self, *ids: int, **kw: Any) -> List[Any]:
        return self.ack(PacketType.PUBREC, *ids, **kw)

    def pubrel(self, *ids: int, **kw: Any) -> List[Any]:
        return self.ack(PacketType.PUBREL, *ids, **kw)

    def pubcomp(self, *ids: int, **kw: Any) -> List[Any]:
        return self.ack(PacketType.PUBCOMP, *ids, **kw)

    # -------------------------------------------------------------- connection

    def connect(self, now: float = 0.0, keepalive: int = 60, session_present: bool = False,
                properties: Optional[Dict[str, Any]] = None, reason_code: int = 0,
                **connect_kw: Any) -> Tuple[Connect, List[Any]]:
        """A new connection: the session's CONNECT, then the broker's CONNACK. Returns
        ``(the decoded CONNECT, the CONNACK's events)``."""
        self.decoder = StreamDecoder(self.protocol)  # a new TCP stream
        self.s.connect(now, keepalive, **connect_kw)
        connect = self.read_one(Connect)
        if self.protocol != MQTT_5:
            properties = None
        events = self.send(ConnAck(session_present, reason_code, properties), now=now)
        return connect, events


def connected(protocol: int = 4, *, now: float = 0.0, keepalive: int = 0,
              connack: Optional[Dict[str, Any]] = None, session_present: bool = False,
              client_id: str = CLIENT_ID, clean_session: bool = True,
              **session_kw: Any) -> Tuple[Session, Broker]:
    """A session that has connected (CONNECT written, CONNACK received, ``out`` drained).
    ``keepalive`` defaults to 0 so that tests about other timers see no PINGREQ."""
    s = Session(client_id, protocol, clean_session, **session_kw)
    b = Broker(s)
    _, events = b.connect(now, keepalive, session_present, connack)
    assert [type(e).__name__ for e in events] == ["Connected"], events
    assert s.connected
    return s, b


def publish_packet(topic: str, payload: bytes = b"", qos: int = 0, packet_id: int = 0,
                   dup: bool = False, retain: bool = False,
                   properties: Optional[Dict[str, Any]] = None) -> Publish:
    return Publish(topic, payload, qos, packet_id, retain, dup, properties)


class ScanCountingDict(dict):
    """A dict that counts whole-container walks (to prove acks never rescan the inflight set)."""

    scans = 0

    def __iter__(self) -> Iterator[Any]:
        ScanCountingDict.scans += 1
        return super().__iter__()

    def values(self):  # type: ignore[override]
        ScanCountingDict.scans += 1
        return super().values()

    def items(self):  # type: ignore[override]
        ScanCountingDict.scans += 1
        return super().items()

    def keys(self):  # type: ignore[override]
        ScanCountingDict.scans += 1
        return super().keys()


class ScanCountingDeque(deque):
    """A deque that counts walks and membership tests (each is O(queued))."""

    scans = 0

    def __iter__(self) -> Iterator[Any]:
        ScanCountingDeque.scans += 1
        return super().__iter__()

    def __contains__(self, item: object) -> bool:
        ScanCountingDeque.scans += 1
        return super().__contains__(item)

    def remove(self, value: Any) -> None:
        ScanCountingDeque.scans += 1
        super().remove(value)


def scan_counting_store() -> MemoryStore:
    store = MemoryStore()
    store.outgoing = ScanCountingDict()
    store.pending = ScanCountingDeque()
    ScanCountingDict.scans = ScanCountingDeque.scans = 0
    return store


__all__ = [
    "Broker", "CLIENT_ID", "ScanCountingDeque", "ScanCountingDict", "connected", "publish_packet",
    "scan_counting_store",
]
