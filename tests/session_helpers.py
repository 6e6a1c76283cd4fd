"""An in-memory "broker side" for the sans-IO session tests: it takes what the session wrote to
its output stream (``take_output()``, then ``sent()``, as the loop does) and decodes it, and it
encodes the broker's packets for ``session.receive``. No sockets, no clock.

Every call that feeds the session returns a ``Result``: the messages ``receive`` returned, and the
control events and completed publish records the session collected, drained with
``take_events()`` / ``take_completed()``. Tests compare it as a value:
``assert b.puback(rec.packet_id) == Result(completed=[rec])``, ``assert b.pubrel(7) == NOTHING``.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
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
from mqttfast.events import Connected
from mqttfast.session import Session
from mqttfast.store import MemoryStore

CLIENT_ID = "session-test"  # MQTT 3.1 wants 1..23 characters


@dataclass
class Result:
    """What one call into the session produced."""

    messages: List[Any] = field(default_factory=list)  # received Publish packets
    events: List[Any] = field(default_factory=list)  # Connected, Subscribed, Disconnected, ...
    completed: List[Any] = field(default_factory=list)  # Outgoing records that finished


NOTHING = Result()


def drain(session: Session, messages: Optional[List[Any]] = None) -> Result:
    """The session's collected events and completed records (drained), with ``messages``."""
    return Result(list(messages or ()), session.take_events(), session.take_completed())


class Broker:
    """The broker end of one session: ``read()`` takes and decodes the session's output;
    ``send()`` feeds encoded broker packets to ``session.receive``."""

    def __init__(self, session: Session) -> None:
        self.s = session
        self.protocol = session.protocol
        self.decoder = StreamDecoder(self.protocol)

    # -------------------------------------------------------------- session -> broker

    def raw(self, now: Optional[float] = None) -> bytes:
        """Take the session's output, as the loop would, and report it all sent at ``now``
        (by default the session's last send time, so that taking bytes moves no timer)."""
        data = bytes(self.s.take_output())
        if data:
            self.s.sent(len(data), self.s.last_sent if now is None else now)
        return data

    def read(self, now: Optional[float] = None) -> List[Any]:
        """Take the session's output and decode it (nothing may be left half-written)."""
        packets = self.decoder.feed(self.raw(now))
        assert self.decoder.buffered == 0, "the output ended in the middle of a packet"
        return packets

    def read_one(self, cls: Optional[type] = None, now: Optional[float] = None) -> Any:
        packets = self.read(now)
        assert len(packets) == 1, f"expected one packet, got {packets!r}"
        if cls is not None:
            assert type(packets[0]).__name__ == cls.__name__, packets
        return packets[0]

    # -------------------------------------------------------------- broker -> session

    def encode(self, packet: Any) -> bytes:
        return encode(packet, self.protocol)

    def feed(self, data: bytes, now: float = 0.0) -> Result:
        return drain(self.s, self.s.receive(data, now))

    def send(self, *packets: Any, now: float = 0.0) -> Result:
        return self.feed(b"".join(self.encode(p) for p in packets), now)

    def ack(self, packet_type: int, *packet_ids: int, reason_code: int = 0,
            now: float = 0.0) -> Result:
        return self.feed(b"".join(encode_ack(packet_type, pid, reason_code, self.protocol)
                                  for pid in packet_ids), now)

    def puback(self, *ids: int, **kw: Any) -> Result:
        return self.ack(PacketType.PUBACK, *ids, **kw)

    def pubrec(self, *ids: int, **kw: Any) -> Result:
        return self.ack(PacketType.PUBREC, *ids, **kw)

    def pubrel(self, *ids: int, **kw: Any) -> Result:
        return self.ack(PacketType.PUBREL, *ids, **kw)

    def pubcomp(self, *ids: int, **kw: Any) -> Result:
        return self.ack(PacketType.PUBCOMP, *ids, **kw)

    # -------------------------------------------------------------- time and connection

    def tick(self, now: float) -> Result:
        assert self.s.tick(now) is None
        return drain(self.s)

    def lost(self, reason: str = "connection lost") -> Result:
        """The socket is gone (the loop calls ``connection_lost``)."""
        assert self.s.connection_lost(reason) is None
        return drain(self.s)

    def start(self, now: float = 0.0, keepalive: Optional[int] = None, **connect_kw: Any) -> Connect:
        """A new socket: ``configure()`` (when CONNECT parameters are given), ``start()``, and
        the CONNECT it wrote."""
        self.decoder = StreamDecoder(self.protocol)  # a new TCP stream
        if keepalive is not None or connect_kw:
            self.s.configure(60 if keepalive is None else keepalive, **connect_kw)
        self.s.start(now)
        return self.read_one(Connect, now)

    def connect(self, now: float = 0.0, keepalive: Optional[int] = None,
                session_present: bool = False, properties: Optional[Dict[str, Any]] = None,
                reason_code: int = 0, **connect_kw: Any) -> Tuple[Connect, Result]:
        """A new connection: the session's CONNECT, then the broker's CONNACK. Returns
        ``(the decoded CONNECT, what the CONNACK produced)``."""
        connect = self.start(now, keepalive, **connect_kw)
        if self.protocol != MQTT_5:
            properties = None
        return connect, self.send(ConnAck(session_present, reason_code, properties), now=now)


def connected(protocol: int = 4, *, now: float = 0.0, keepalive: int = 0,
              connack: Optional[Dict[str, Any]] = None, session_present: bool = False,
              client_id: str = CLIENT_ID, clean_session: bool = True,
              **session_kw: Any) -> Tuple[Session, Broker]:
    """A session that has connected (CONNECT written, CONNACK received, output taken).
    ``keepalive`` defaults to 0 so that tests about other timers see no PINGREQ."""
    s = Session(client_id, protocol, clean_session, keepalive=keepalive, **session_kw)
    b = Broker(s)
    _, result = b.connect(now, session_present=session_present, properties=connack)
    present = session_present and protocol != 3  # a 3.1 CONNACK has no Session Present flag
    assert result == Result(events=[Connected(present, 0, connack if protocol == 5 else None)])
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
    "Broker", "CLIENT_ID", "NOTHING", "Result", "ScanCountingDeque", "ScanCountingDict", "connected",
    "drain", "publish_packet", "scan_counting_store",
]
