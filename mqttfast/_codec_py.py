"""The pure-Python codec: the twin of ``_codec.pyx``, with the same names and the same behaviour.

The hot packets (PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP), the stream decoder and the publish
encoders live here; the cold packets come from ``packets`` and are shared with the Cython twin.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .constants import MAX_REMAINING_LENGTH, MQTT_5, PROTOCOLS, REQUIRED_FLAGS, V5_REASON_CODES
from .constants import PacketType as P
from .errors import InvalidTopic, MalformedPacket, PacketTooLarge, PayloadTooLarge
from .packets import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
    decode_cold,
    encode_cold,
)
from .properties import decode_properties, encode_properties
from .wire import check_utf8, encode_varint, topic_error, validate_topic, validate_topic_filter

Props = Optional[Dict[str, Any]]
BytesLike = Union[bytes, bytearray, memoryview]


class Publish(Packet):
    __slots__ = _fields = ("topic", "payload", "qos", "packet_id", "retain", "dup", "properties")
    type = P.PUBLISH

    def __init__(self, topic: str, payload: bytes = b"", qos: int = 0, packet_id: int = 0,
                 retain: bool = False, dup: bool = False, properties: Props = None) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.packet_id = packet_id
        self.retain = retain
        self.dup = dup
        self.properties = properties or None


class _Ack(Packet):
    __slots__ = _fields = ("packet_id", "reason_code", "properties")

    def __init__(self, packet_id: int, reason_code: int = 0, properties: Props = None) -> None:
        self.packet_id = packet_id
        self.reason_code = reason_code
        self.properties = properties or None


class PubAck(_Ack):
    __slots__ = ()
    type = P.PUBACK


class PubRec(_Ack):
    __slots__ = ()
    type = P.PUBREC


class PubRel(_Ack):
    __slots__ = ()
    type = P.PUBREL


class PubComp(_Ack):
    __slots__ = ()
    type = P.PUBCOMP


_ACK_CLASSES: Dict[int, type] = {P.PUBACK: PubAck, P.PUBREC: PubRec, P.PUBREL: PubRel, P.PUBCOMP: PubComp}


# --------------------------------------------------------------------------- remaining length

def encode_remaining_length(value: int) -> bytes:
    """The fixed header's variable byte integer (1 to 4 bytes)."""
    return encode_varint(value)


def decode_remaining_length(data: BytesLike, offset: int = 0) -> Optional[Tuple[int, int]]:
    """``(value, offset after it)`` of the varint at ``offset``, or ``None`` if it is incomplete."""
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    value = 0
    shift = 0
    end = len(data)
    for i in range(offset, offset + 4):
        if i >= end:
            return None
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    raise MalformedPacket("remaining length is longer than 4 bytes")


# --------------------------------------------------------------------------- encoding

def _check_protocol(protocol: int) -> None:
    # An int (5.0 == 5, but the C twin takes ints only).
    if not isinstance(protocol, int) or protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be 3 (MQTT 3.1), 4 (3.1.1) or 5 (5.0), got {protocol!r}")


def _as_payload(payload: Any) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload)
    raise TypeError(f"payload must be bytes, bytearray, memoryview or str, "
                    f"not {type(payload).__name__}")


def _bad_qos(qos: Any) -> None:
    """Raise for a qos that is not a plain int 0..2 (an int subclass, e.g. an IntEnum, is fine)."""
    if not isinstance(qos, int) or isinstance(qos, bool):
        raise TypeError(f"qos must be an int 0, 1 or 2, not {type(qos).__name__}")
    if not 0 <= qos <= 2:
        raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")


def _check_flag(name: str, value: Any) -> None:
    # bool only: retain=1 or retain="no" is a caller's mistake, not a truth value to guess at.
    if value is not True and value is not False:
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")


def _publish_parts(topic: str, payload: Any, qos: int, packet_id: int, retain: bool, dup: bool,
                   protocol: int, properties: Props) -> Tuple[bytes, bytes, bytes]:
    """Validate a PUBLISH from the caller; returns (topic bytes, properties block, payload)."""
    payload = _as_payload(payload)
    if protocol == MQTT_5 and (protocol.__class__ is int or isinstance(protocol, int)):
        props = encode_properties(properties, P.PUBLISH)
    else:
        _check_protocol(protocol)
        if properties:
            raise ValueError("properties need protocol 5 (MQTT 5.0)")
        props = b""
    if not isinstance(topic, str):
        raise TypeError(f"topic must be str, not {type(topic).__name__}")
    try:
        raw_topic = topic.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidTopic("topic contains a lone surrogate and cannot be encoded as UTF-8") from None
    if retain is not True and retain is not False:
        _check_flag("retain", retain)
    if dup is not True and dup is not False:
        _check_flag("dup", dup)
    if qos.__class__ is not int or not 0 <= qos <= 2:
        _bad_qos(qos)
    if qos:
        if packet_id.__class__ is not int and (
                not isinstance(packet_id, int) or isinstance(packet_id, bool)):
            raise TypeError(f"packet_id must be an int, not {type(packet_id).__name__}")
        if not 1 <= packet_id <= 0xFFFF:
            raise ValueError(f"a QoS {qos} PUBLISH needs a packet_id of 1..65535, got {packet_id!r}")
    elif dup:
        raise ValueError("dup must be False for QoS 0")
    reason = topic_error(topic, len(raw_topic))
    if reason and not (not raw_topic and properties and "topic_alias" in properties):
        raise InvalidTopic(reason)
    return raw_topic, props, payload


def _publish_header(raw_topic: bytes, props: bytes, payload: bytes, qos: int, packet_id: int,
                    retain: bool, dup: bool) -> bytes:
    remaining = 2 + len(raw_topic) + (2 if qos else 0) + len(props) + len(payload)
    if remaining > MAX_REMAINING_LENGTH:
        raise PayloadTooLarge(f"PUBLISH of {remaining} bytes exceeds MQTT's limit of "
                              f"{MAX_REMAINING_LENGTH} bytes")
    first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    head = bytes((first,)) + encode_varint(remaining) + len(raw_topic).to_bytes(2, "big") + raw_topic
    if qos:
        head += packet_id.to_bytes(2, "big")
    return head + props


def encode_publish(topic: str, payload: Any, qos: int = 0, packet_id: int = 0,
                   retain: bool = False, dup: bool = False, protocol: int = 4,
                   properties: Props = None) -> bytes:
    """Encode one PUBLISH packet, validating everything the caller gave."""
    raw_topic, props, payload = _publish_parts(topic, payload, qos, packet_id, retain, dup,
                                               protocol, properties)
    return _publish_header(raw_topic, props, payload, qos, packet_id, retain, dup) + payload


def append_publish(buf: bytearray, topic: str, payload: Any, qos: int = 0, packet_id: int = 0,
                   retain: bool = False, dup: bool = False, protocol: int = 4,
                   properties: Props = None) -> int:
    """Append one encoded PUBLISH to ``buf`` (for one ``send`` of many packets); returns its size."""
    if not isinstance(buf, bytearray):
        raise TypeError(f"buf must be a bytearray, not {type(buf).__name__}")
    return _append_publish(buf, topic, payload, qos, packet_id, retain, dup, protocol, properties, 0)


def _check_max_size(max_size: Any) -> None:
    if not isinstance(max_size, int) or isinstance(max_size, bool):
        raise TypeError(f"max_size must be an int (0: no limit), not {type(max_size).__name__}")
    if max_size < 0:
        raise ValueError(f"max_size must be >= 0 (0: no limit), got {max_size}")


def _too_large(size: int, max_size: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"PUBLISH of {size} bytes exceeds the maximum packet size of "
                           f"{max_size} bytes")


def _append_publish(buf: bytearray, topic: str, payload: Any, qos: Any, packet_id: Any,
                    retain: Any, dup: Any, protocol: Any, properties: Props,
                    max_size: Any) -> int:
    if max_size.__class__ is not int or max_size < 0:
        _check_max_size(max_size)
    raw_topic, props, payload = _publish_parts(topic, payload, qos, packet_id, retain, dup,
                                               protocol, properties)
    head = _publish_header(raw_topic, props, payload, qos, packet_id, retain, dup)
    size = len(head) + len(payload)
    if max_size and size > max_size:
        raise _too_large(size, max_size)
    buf += head
    buf += payload
    return size


def append_publish_many(buf: bytearray, topic: str, payloads: Any, retain: bool = False,
                        protocol: int = 4, properties: Props = None) -> int:
    """Append a QoS 0 PUBLISH to ``topic`` for each payload: the bulk sender's path (the topic is
    validated once). Returns the number of bytes appended; on any error, appends nothing."""
    if not isinstance(buf, bytearray):
        raise TypeError(f"buf must be a bytearray, not {type(buf).__name__}")
    return _append_publish_many(buf, topic, payloads, retain, protocol, properties, 0)


def _append_publish_many(buf: bytearray, topic: str, payloads: Any, retain: Any, protocol: Any,
                         properties: Props, max_size: Any) -> int:
    if max_size.__class__ is not int or max_size < 0:
        _check_max_size(max_size)
    # Everything but the payloads is validated once, even for an empty batch.
    raw_topic, props, _ = _publish_parts(topic, b"", 0, 0, retain, False, protocol, properties)
    start = len(buf)
    try:
        for payload in payloads:
            data = _as_payload(payload)
            head = _publish_header(raw_topic, props, data, 0, 0, retain, False)
            if max_size and len(head) + len(data) > max_size:
                raise _too_large(len(head) + len(data), max_size)
            buf += head
            buf += data
    except BaseException:
        del buf[start:]  # all or nothing: the caller cannot count a half-appended batch
        raise
    return len(buf) - start


class WriteBuffer:
    """The outgoing byte stream of one session: the bytes not yet taken, and a running position.

    ``position`` counts every byte ever written (across connections: QoS 0 completion marks are
    positions in this stream); ``taken`` counts those handed out by ``take`` or dropped by
    ``discard``, so ``position - taken == len(self)``. The append methods return the new position.
    """

    __slots__ = ("_buf", "_taken")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._taken = 0

    def __len__(self) -> int:
        return len(self._buf)

    def __bool__(self) -> bool:
        return bool(self._buf)

    def __repr__(self) -> str:
        return f"<WriteBuffer held={len(self._buf)} position={self.position} taken={self._taken}>"

    @property
    def position(self) -> int:
        """Bytes ever written: the stream position of the end of what is held."""
        return self._taken + len(self._buf)

    @property
    def taken(self) -> int:
        """Bytes ever taken or discarded: the stream position of the start of what is held."""
        return self._taken

    def write(self, data: BytesLike) -> int:
        """Append raw bytes (an already encoded packet); returns the new position."""
        self._buf += data
        return self._taken + len(self._buf)

    def append_publish(self, topic: str, payload: Any, qos: int = 0, packet_id: int = 0,
                       retain: bool = False, dup: bool = False, protocol: int = 4,
                       properties: Props = None, max_size: int = 0) -> int:
        """Append one PUBLISH (as the module's ``append_publish``); with ``max_size`` > 0, a
        packet longer than that raises ``PayloadTooLarge`` and nothing is appended."""
        buf = self._buf
        _append_publish(buf, topic, payload, qos, packet_id, retain, dup, protocol, properties,
                        max_size)
        return self._taken + len(buf)

    def append_publish_alias(self, topic: str, payload: Any, qos: int, packet_id: int,
                             retain: bool, dup: bool, alias: int, max_size: int = 0) -> int:
        """Append an MQTT 5 PUBLISH whose one property is the topic alias ``alias`` (``topic``
        may be "" to send the alias alone): the bytes of ``append_publish`` with
        ``properties={"topic_alias": alias}``."""
        if alias.__class__ is not int:
            raise TypeError(f"topic_alias must be an int, not {type(alias).__name__}")
        if not 1 <= alias <= 0xFFFF:
            raise ValueError(f"topic_alias must be 1..65535, got {alias!r}")
        return self.append_publish(topic, payload, qos, packet_id, retain, dup, MQTT_5,
                                   {"topic_alias": alias}, max_size)

    def append_publish_many(self, topic: str, payloads: Any, retain: bool = False,
                            protocol: int = 4, properties: Props = None,
                            max_size: int = 0) -> int:
        """Append a QoS 0 PUBLISH for each payload (all or nothing); returns the new position."""
        buf = self._buf
        _append_publish_many(buf, topic, payloads, retain, protocol, properties, max_size)
        return self._taken + len(buf)

    def append_ack(self, packet_type: int, packet_id: int, reason_code: int = 0,
                   protocol: int = 4) -> int:
        """Append a PUBACK, PUBREC, PUBREL or PUBCOMP; returns the new position."""
        buf = self._buf
        buf += encode_ack(packet_type, packet_id, reason_code, protocol)
        return self._taken + len(buf)

    def take(self) -> bytearray:
        """Everything held, handed over (no copy): the buffer starts afresh and ``taken`` moves on."""
        out = self._buf
        self._buf = bytearray()
        self._taken += len(out)
        return out

    def discard(self) -> int:
        """Drop everything held (the connection is gone); returns how many bytes were dropped."""
        n = len(self._buf)
        self._buf = bytearray()
        self._taken += n
        return n

    def peek(self) -> bytes:
        """A copy of what is held (for tests and debugging)."""
        return bytes(self._buf)


# ---------------------------------------------------------------------- hot paths above the codec
#
# The session and the client keep their logic in Python. What runs once per message on the two bulk
# paths (a QoS 0 publish, a QoS 0 delivery) is compiled in the C twin, with hooks to the layers
# above; this is the same thing in Python, so both twins define all of it.

_ZERO = 0
_QOS0_OFF = 0  # every QoS 0 publish goes through the session's own logic
_QOS0_PLAIN = 1  # a QoS 0 publish is its bytes appended to the stream
_QOS0_ALIASES = 2  # the same for a topic with an automatic MQTT 5 alias: the alias alone


class Qos0Path:
    """How a QoS 0 publish without properties is written while it is only bytes in the stream.

    Owned by the session, which sets ``mode`` under its connection's lock: 0 off (not connected,
    or the broker's packet size limit must be checked); 1 plain, the PUBLISH at ``protocol``
    appended to ``out``; 2 MQTT 5 with automatic topic aliases, where a topic found in
    ``aliases`` (the session's own topic -> alias map, read here, never written) is appended as
    its alias alone and any other topic is left to the session.
    """

    __slots__ = ("_out", "mode", "_protocol", "aliases")

    def __init__(self, out: WriteBuffer, protocol: int = 4) -> None:
        if not isinstance(out, WriteBuffer):
            raise TypeError(f"out must be a WriteBuffer, not {type(out).__name__}")
        self._out = out
        self.mode = _QOS0_OFF
        self._protocol = protocol
        self.aliases: Optional[Dict[str, int]] = None

    @property
    def out(self) -> WriteBuffer:
        return self._out

    @property
    def protocol(self) -> int:
        return self._protocol

    @protocol.setter
    def protocol(self, value: int) -> None:
        if value not in (3, 4, 5) or value.__class__ is not int:
            raise ValueError(f"protocol must be 3, 4 or 5, got {value!r}")
        self._protocol = value

    def append(self, topic: str, payload: Any, retain: bool) -> int:
        """Append a QoS 0 PUBLISH if this path takes it: the stream position after it, or -1
        when it is the session's to write (mode 0, a topic without an alias, a non-str topic)."""
        mode = self.mode
        if mode == _QOS0_PLAIN:
            return self._out.append_publish(topic, payload, 0, 0, retain, False, self._protocol)
        if mode == _QOS0_ALIASES:
            aliases = self.aliases
            if topic.__class__ is not str or aliases is None:
                return -1
            alias = aliases.get(topic)
            if alias is None:
                return -1
            return self._out.append_publish_alias("", payload, 0, 0, retain, False, alias)
        return -1


class StreamMark:
    """A QoS 0 completion mark (a position in a session's stream) and the stream's ``taken``
    when it was made: publishes made while ``taken`` stays the same go out in one write, so
    they share one mark. The base of the client's QoS 0 handle."""

    __slots__ = ("_mark", "_taken")

    def __init__(self, mark: int = 0, taken: int = 0) -> None:
        self._mark = mark
        self._taken = taken


class Publisher:
    """One client's thread-safe ``publish()``, compiled for its hot path in the C twin.

    A QoS 0 publish without properties that the session's ``Qos0Path`` takes is written under
    the connection's lock, the shared ``StreamMark`` moved on, the loop kicked unless a flush is
    already due, and the writer held back when the stream is over ``max_buffer`` (``drain()``).
    Everything else, and everything before ``bind``, goes to ``fallback`` (the client's own
    publish, called with the same arguments), which keeps every check and every other QoS.
    ``new_mark(mark, taken)`` makes a handle when the stream was taken since the last one.
    """

    __slots__ = ("_path", "_fallback", "_new_mark", "_max_buffer", "_drain", "_acquire",
                 "_release", "_conn", "_kick", "_current")

    def __init__(self, path: Qos0Path, fallback: Callable[..., Any],
                 new_mark: Callable[[int, int], Any], max_buffer: int,
                 drain: Callable[[], None]) -> None:
        if not isinstance(path, Qos0Path):
            raise TypeError(f"path must be a Qos0Path, not {type(path).__name__}")
        self._path = path
        self._fallback = fallback
        self._new_mark = new_mark
        self._max_buffer = max_buffer
        self._drain = drain
        self._conn: Any = None
        self._acquire: Any = None
        self._release: Any = None
        self._kick: Any = None
        self._current: Optional[StreamMark] = None

    def bind(self, lock: Any, conn: Any) -> None:
        """Publish through ``conn`` (its ``lock``, ``flush_queued`` and ``kick()``)."""
        self._acquire = lock.acquire
        self._release = lock.release
        self._kick = conn.kick
        self._conn = conn

    def unbind(self) -> None:
        self._conn = self._acquire = self._release = self._kick = None

    def __call__(self, topic: str, payload: Any = b"", qos: int = 0, retain: bool = False,
                 properties: Optional[dict] = None) -> Any:
        conn = self._conn
        # ``qos is _ZERO``: the int 0 itself (what ``0`` and ``qos=0`` pass), not False or 0.0.
        if conn is None or qos is not _ZERO or properties is not None:
            return self._fallback(topic, payload, qos, retain, properties)
        self._acquire()
        try:
            position = self._path.append(topic, payload, retain)
            if position >= 0:
                mark = self.mark(position)
        finally:
            self._release()
        if position < 0:
            return self._fallback(topic, payload, qos, retain, properties)
        if not conn.flush_queued:
            self._kick()
        if len(self._path._out) > self._max_buffer:
            self._drain()
        return mark

    def mark(self, position: int) -> Any:
        """The handle of a QoS 0 publish that ended at ``position``: the current one, moved on,
        while the stream has not been taken since it was made (call with the lock held)."""
        mark = self._current
        taken = self._path._out._taken
        if mark is not None and mark._taken == taken:
            mark._mark = position
            return mark
        mark = self._current = self._new_mark(position, taken)
        return mark


def untrack(obj: Any) -> None:
    """Stop the cyclic garbage collector from walking ``obj``, which the caller knows cannot be
    part of a reference cycle. A no-op here: only the C twin can (see its docstring)."""


def all_plain_qos0(packets: List[Packet]) -> bool:
    """True when every packet is a QoS 0 PUBLISH without properties: the bulk receive path."""
    for pkt in packets:
        if pkt.__class__ is not Publish or pkt.qos or pkt.properties is not None:  # type: ignore[attr-defined]
            return False
    return True


def deliver(callback: Callable[[Any], Any], messages: List[Any],
            on_error: Callable[[Exception], Any]) -> None:
    """Call ``callback(message)`` for each message in order; an ``Exception`` it raises goes to
    ``on_error(exc)`` and delivery goes on with the next one."""
    for message in messages:
        try:
            callback(message)
        except Exception as exc:
            on_error(exc)


def encode_ack(packet_type: int, packet_id: int, reason_code: int = 0, protocol: int = 4,
               properties: Props = None) -> bytes:
    """Encode a PUBACK, PUBREC, PUBREL or PUBCOMP."""
    if packet_type not in _ACK_CLASSES:
        raise ValueError(f"not an acknowledgement packet type: {packet_type!r}")
    if not isinstance(packet_id, int) or not 1 <= packet_id <= 0xFFFF:
        raise ValueError(f"packet_id must be 1..65535, got {packet_id!r}")
    _check_protocol(protocol)
    first = (packet_type << 4) | (2 if packet_type == P.PUBREL else 0)
    if protocol != MQTT_5:
        if reason_code or properties:
            raise ValueError("reason codes and properties on acknowledgements need MQTT 5")
        return bytes((first, 2, packet_id >> 8, packet_id & 0xFF))
    if reason_code not in V5_REASON_CODES[packet_type]:
        raise ValueError(f"reason code {reason_code!r} is not valid in {P(packet_type).name}")
    if properties:
        body = bytes((packet_id >> 8, packet_id & 0xFF, reason_code)) + encode_properties(
            properties, packet_type)
        return bytes((first,)) + encode_varint(len(body)) + body
    if reason_code:
        return bytes((first, 3, packet_id >> 8, packet_id & 0xFF, reason_code))
    return bytes((first, 2, packet_id >> 8, packet_id & 0xFF))


def encode(packet: Packet, protocol: int = 4) -> bytes:
    """Encode any packet object (for a CONNECT, its own ``protocol`` field is used)."""
    kind = packet.type
    if kind == P.PUBLISH:
        # bool(): like the C twin's Publish, whose retain/dup are C booleans.
        return encode_publish(packet.topic, packet.payload, packet.qos,  # type: ignore[attr-defined]
                              packet.packet_id, bool(packet.retain),  # type: ignore[attr-defined]
                              bool(packet.dup),  # type: ignore[attr-defined]
                              protocol, packet.properties)  # type: ignore[attr-defined]
    if kind in _ACK_CLASSES:
        return encode_ack(kind, packet.packet_id, packet.reason_code,  # type: ignore[attr-defined]
                          protocol, packet.properties)  # type: ignore[attr-defined]
    if kind == P.CONNECT:
        protocol = packet.protocol  # type: ignore[attr-defined]
    flags, body = encode_cold(packet, protocol)
    if len(body) > MAX_REMAINING_LENGTH:
        raise PayloadTooLarge(f"{P(kind).name} of {len(body)} bytes exceeds MQTT's limit")
    return bytes(((kind << 4) | flags,)) + encode_varint(len(body)) + body


# --------------------------------------------------------------------------- decoding

def _decode_publish(flags: int, buf: BytesLike, pos: int, end: int, protocol: int) -> Publish:
    qos = (flags >> 1) & 3
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")
    dup = bool(flags & 8)
    if dup and not qos:
        raise MalformedPacket("PUBLISH with QoS 0 has the DUP flag set")
    if pos + 2 > end:
        raise MalformedPacket("topic length of PUBLISH runs past the end of the packet")
    tlen = (buf[pos] << 8) | buf[pos + 1]
    pos += 2
    if pos + tlen > end:
        raise MalformedPacket(f"topic of PUBLISH ({tlen} bytes) runs past the end of the packet")
    raw_topic = bytes(buf[pos:pos + tlen])
    pos += tlen
    if b"+" in raw_topic or b"#" in raw_topic:
        raise MalformedPacket("PUBLISH topic contains a wildcard")
    topic = check_utf8(raw_topic, "PUBLISH topic")
    packet_id = 0
    if qos:
        if pos + 2 > end:
            raise MalformedPacket("packet id of PUBLISH runs past the end of the packet")
        packet_id = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
        if not packet_id:
            raise MalformedPacket(f"QoS {qos} PUBLISH has packet id 0")
    props = None
    if protocol == MQTT_5:
        props, pos = decode_properties(buf, pos, end, P.PUBLISH)
    if not tlen and not (props and "topic_alias" in props):
        raise MalformedPacket("PUBLISH has an empty topic" + (
            " and no topic alias" if protocol == MQTT_5 else ""))
    return Publish(topic, bytes(buf[pos:end]), qos, packet_id, bool(flags & 1), dup, props)


def _decode_ack(kind: int, buf: BytesLike, pos: int, end: int, protocol: int) -> Packet:
    size = end - pos
    name = P(kind).name
    if size < 2 or (protocol != MQTT_5 and size != 2):
        raise MalformedPacket(f"{name} must have remaining length 2, got {size}")
    packet_id = (buf[pos] << 8) | buf[pos + 1]
    if not packet_id:
        raise MalformedPacket(f"{name} has packet id 0")
    code, props = 0, None
    if size > 2:
        code = buf[pos + 2]
        if code not in V5_REASON_CODES[kind]:
            raise MalformedPacket(f"invalid reason code {code:#04x} in {name}")
        if size > 3:
            props, stop = decode_properties(buf, pos + 3, end, kind)
            if stop != end:
                raise MalformedPacket(f"{end - stop} unexpected bytes at the end of {name}")
    return _ACK_CLASSES[kind](packet_id, code, props)


def _decode_body(first: int, buf: BytesLike, pos: int, end: int, protocol: int) -> Packet:
    kind = first >> 4
    if kind == P.PUBLISH:
        return _decode_publish(first & 0x0F, buf, pos, end, protocol)
    if kind in _ACK_CLASSES:
        return _decode_ack(kind, buf, pos, end, protocol)
    return decode_cold(kind, first & 0x0F, buf, pos, end, protocol)


def _check_first_byte(first: int, protocol: int) -> None:
    kind = first >> 4
    required = REQUIRED_FLAGS[kind]
    if kind == 0 or (kind == 15 and protocol != MQTT_5):
        raise MalformedPacket(f"reserved packet type {kind}")
    if required is not None and first & 0x0F != required:
        raise MalformedPacket(f"{P(kind).name} has fixed-header flags {first & 0x0F:#06b}, "
                              f"must be {required:#06b}")


def decode(data: BytesLike, protocol: int = 4) -> Packet:
    """Decode exactly one whole packet."""
    if len(data) == 0:
        raise MalformedPacket("empty input: need at least 2 bytes")
    _check_first_byte(data[0], protocol)
    header = decode_remaining_length(data, 1)
    if header is None:
        raise MalformedPacket("incomplete fixed header")
    length, pos = header
    if pos + length != len(data):
        if pos + length > len(data):
            raise MalformedPacket(f"incomplete packet: {pos + length - len(data)} bytes missing")
        raise MalformedPacket(f"{len(data) - pos - length} bytes after the end of the packet")
    return _decode_body(data[0], data, pos, pos + length, protocol)


class StreamDecoder:
    """Turns a byte stream, in any chunking, into whole packets.

    ``feed(data)`` returns every packet completed by ``data``; an incomplete tail is kept for the
    next call. A packet over ``max_packet_size`` is refused as soon as its header is read.
    """

    __slots__ = ("_protocol", "_max_packet_size", "_buf")

    def __init__(self, protocol: int = 4, max_packet_size: Optional[int] = None) -> None:
        self.protocol = protocol
        self.max_packet_size = max_packet_size
        self._buf = bytearray()

    # Properties, so that a value set later is checked like one given to the constructor.
    @property
    def protocol(self) -> int:
        return self._protocol

    @protocol.setter
    def protocol(self, value: int) -> None:
        _check_protocol(value)
        self._protocol = value

    @property
    def max_packet_size(self) -> Optional[int]:
        return self._max_packet_size

    @max_packet_size.setter
    def max_packet_size(self, value: Optional[int]) -> None:
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"max_packet_size must be an int or None, not {type(value).__name__}")
            if value < 2:
                raise ValueError(f"max_packet_size must be at least 2 bytes, got {value}")
        self._max_packet_size = value

    @property
    def buffered(self) -> int:
        """Bytes held back while waiting for the rest of a packet."""
        return len(self._buf)

    def feed(self, data: BytesLike) -> List[Packet]:
        buf = self._buf
        buf += data
        end = len(buf)
        pos = 0
        out: List[Packet] = []
        protocol = self._protocol
        limit = self._max_packet_size
        try:
            while pos < end:
                first = buf[pos]
                _check_first_byte(first, protocol)
                # Remaining length, inline: the hot loop of the pure twin.
                length = 0
                shift = 0
                i = pos + 1
                while True:
                    if i >= end:
                        return out
                    byte = buf[i]
                    i += 1
                    length |= (byte & 0x7F) << shift
                    if not byte & 0x80:
                        break
                    shift += 7
                    if shift == 28:
                        raise MalformedPacket("remaining length is longer than 4 bytes")
                stop = i + length
                if limit is not None and stop - pos > limit:
                    raise PacketTooLarge(f"packet of {stop - pos} bytes exceeds the maximum "
                                         f"packet size of {limit}")
                if stop > end:
                    return out
                if first >> 4 == 3:
                    out.append(_decode_publish(first & 0x0F, buf, i, stop, protocol))
                else:
                    out.append(_decode_body(first, buf, i, stop, protocol))
                pos = stop
            return out
        finally:
            del buf[:pos]


__all__ = [
    "Auth", "ConnAck", "Connect", "Disconnect", "Packet", "PingReq", "PingResp", "PubAck",
    "PubComp", "PubRec", "PubRel", "Publish", "Publisher", "Qos0Path", "StreamDecoder",
    "StreamMark", "SubAck", "Subscribe", "Subscription", "UnsubAck", "Unsubscribe", "Will",
    "WriteBuffer", "all_plain_qos0", "append_publish", "append_publish_many", "decode", "deliver",
    "untrack",
    "decode_remaining_length", "encode", "encode_ack", "encode_publish", "encode_remaining_length",
    "validate_topic", "validate_topic_filter",
]
