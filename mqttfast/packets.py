"""The cold packets: CONNECT, CONNACK, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP,
DISCONNECT and AUTH, with their body encoders and decoders.

These are sent or received a handful of times per connection, so both codec twins share this pure
Python code; the hot packets (PUBLISH and its acknowledgements) live in each twin.
Body codecs work on ``(buf, pos, end)`` of a packet whose fixed header was already parsed.
"""
from __future__ import annotations

from abc import ABCMeta
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .constants import (
    MQTT_3_1,
    MQTT_5,
    PROTOCOLS,
    V5_REASON_CODES,
    V31_SUBACK_CODES,
    V311_SUBACK_CODES,
    ConnectReturnCode,
)
from .constants import PacketType as P
from .errors import MalformedPacket
from .properties import WILL, decode_properties, encode_properties
from .wire import (
    Buffer,
    check_utf8,
    decode_binary,
    decode_string,
    decode_u16,
    decode_u8,
    encode_binary,
    encode_string,
    encode_u16,
    filter_error,
    topic_error,
    validate_topic,
    validate_topic_filter,
)

Props = Optional[Dict[str, Any]]
BytesLike = Union[bytes, bytearray, memoryview, str]


class Packet(metaclass=ABCMeta):  # noqa: B024  (an ABC for register(), no abstract methods)
    """Base of the cold packets: slots, field-wise equality and a readable repr.

    An ABC so that the C twin's hot packet classes (``cdef class``, which cannot inherit from a
    Python class) register as virtual subclasses: ``isinstance(pkt, Packet)`` holds in both twins.
    """

    __slots__ = ()
    type: int = 0
    _fields: Tuple[str, ...] = ()
    _secret: Tuple[str, ...] = ()  # fields a repr must not show (it ends up in logs)

    def __eq__(self, other: object) -> bool:
        if type(other).__name__ != type(self).__name__:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._fields)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        args = ", ".join(
            f"{f}=<hidden>" if f in self._secret and getattr(self, f) is not None
            else f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({args})"


def _binary(value: Any, name: str) -> bytes:
    """An owned copy of text (UTF-8) or a bytes-like value; anything else is refused, since
    ``bytes(123)`` would be 123 NUL bytes."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{name} must be bytes, bytearray, memoryview or str, "
                    f"not {type(value).__name__}")


class Will(Packet):
    """The message the broker publishes when this client goes away without a DISCONNECT."""

    __slots__ = _fields = ("topic", "payload", "qos", "retain", "properties")

    def __init__(self, topic: str, payload: BytesLike = b"", qos: int = 0, retain: bool = False,
                 properties: Props = None) -> None:
        self.topic = topic
        self.payload = _binary(payload, "will payload")
        self.qos = qos
        self.retain = retain
        self.properties = properties or None


class Connect(Packet):
    __slots__ = _fields = ("client_id", "protocol", "clean_session", "keepalive", "username",
                           "password", "will", "properties")
    type = P.CONNECT
    _secret = ("password",)

    def __init__(self, client_id: str = "", protocol: int = 4, clean_session: bool = True,
                 keepalive: int = 60, username: Optional[str] = None,
                 password: Optional[BytesLike] = None, will: Optional[Will] = None,
                 properties: Props = None) -> None:
        self.client_id = client_id
        self.protocol = protocol
        self.clean_session = clean_session  # "clean start" in MQTT 5
        self.keepalive = keepalive
        self.username = username
        self.password = None if password is None else _binary(password, "password")
        self.will = will
        self.properties = properties or None


class ConnAck(Packet):
    __slots__ = _fields = ("session_present", "reason_code", "properties")
    type = P.CONNACK

    def __init__(self, session_present: bool = False, reason_code: int = 0,
                 properties: Props = None) -> None:
        self.session_present = session_present
        self.reason_code = reason_code  # the "return code" before MQTT 5
        self.properties = properties or None


class Subscription(Packet):
    """One topic filter of a SUBSCRIBE, with its options (the last three are MQTT 5 only)."""

    __slots__ = _fields = ("topic", "qos", "no_local", "retain_as_published", "retain_handling")

    def __init__(self, topic: str, qos: int = 0, no_local: bool = False,
                 retain_as_published: bool = False, retain_handling: int = 0) -> None:
        self.topic = topic
        self.qos = qos
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.retain_handling = retain_handling


class Subscribe(Packet):
    __slots__ = _fields = ("packet_id", "subscriptions", "properties")
    type = P.SUBSCRIBE

    def __init__(self, packet_id: int, subscriptions: Sequence[Union[Subscription, Tuple[str, int]]],
                 properties: Props = None) -> None:
        self.packet_id = packet_id
        self.subscriptions = [s if isinstance(s, Subscription) else Subscription(*s)
                              for s in subscriptions]
        self.properties = properties or None


class SubAck(Packet):
    __slots__ = _fields = ("packet_id", "reason_codes", "properties")
    type = P.SUBACK

    def __init__(self, packet_id: int, reason_codes: Sequence[int], properties: Props = None) -> None:
        self.packet_id = packet_id
        self.reason_codes = list(reason_codes)
        self.properties = properties or None


class Unsubscribe(Packet):
    __slots__ = _fields = ("packet_id", "topics", "properties")
    type = P.UNSUBSCRIBE

    def __init__(self, packet_id: int, topics: Sequence[str], properties: Props = None) -> None:
        self.packet_id = packet_id
        self.topics = list(topics)
        self.properties = properties or None


class UnsubAck(Packet):
    """``reason_codes`` is empty before MQTT 5, where UNSUBACK carries only the packet id."""

    __slots__ = _fields = ("packet_id", "reason_codes", "properties")
    type = P.UNSUBACK

    def __init__(self, packet_id: int, reason_codes: Sequence[int] = (),
                 properties: Props = None) -> None:
        self.packet_id = packet_id
        self.reason_codes = list(reason_codes)
        self.properties = properties or None


class PingReq(Packet):
    __slots__ = ()
    type = P.PINGREQ


class PingResp(Packet):
    __slots__ = ()
    type = P.PINGRESP


class Disconnect(Packet):
    __slots__ = _fields = ("reason_code", "properties")
    type = P.DISCONNECT

    def __init__(self, reason_code: int = 0, properties: Props = None) -> None:
        self.reason_code = reason_code
        self.properties = properties or None


class Auth(Packet):
    """MQTT 5 only: enhanced authentication exchange."""

    __slots__ = _fields = ("reason_code", "properties")
    type = P.AUTH

    def __init__(self, reason_code: int = 0, properties: Props = None) -> None:
        self.reason_code = reason_code
        self.properties = properties or None


# --------------------------------------------------------------------------- encoding (caller side)

def _check_protocol(protocol: int) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be 3 (MQTT 3.1), 4 (3.1.1) or 5 (5.0), got {protocol!r}")


def _check_qos(qos: int, what: str = "qos") -> None:
    if qos not in (0, 1, 2):
        raise ValueError(f"{what} must be 0, 1 or 2, got {qos!r}")


def _check_packet_id(packet_id: int) -> None:
    if not isinstance(packet_id, int) or not 1 <= packet_id <= 0xFFFF:
        raise ValueError(f"packet_id must be 1..65535, got {packet_id!r}")


def _props(protocol: int, props: Props, packet_type: int) -> bytes:
    if protocol == MQTT_5:
        return encode_properties(props, packet_type)
    if props:
        raise ValueError("properties need protocol 5 (MQTT 5.0)")
    return b""


def _check_reason(protocol: int, packet_type: int, code: int) -> None:
    if protocol == MQTT_5:
        if code not in V5_REASON_CODES[packet_type]:
            raise ValueError(f"reason code {code:#04x} is not valid in {P(packet_type).name}")
    elif code:
        raise ValueError(f"{P(packet_type).name} carries a reason code only in MQTT 5")


def encode_cold(packet: Packet, protocol: int) -> Tuple[int, bytes]:
    """Encode a cold packet's body; returns (fixed-header flags, body)."""
    _check_protocol(protocol)
    kind = packet.type
    if kind == P.CONNECT:
        return 0, _encode_connect(packet)  # type: ignore[arg-type]
    if kind == P.CONNACK:
        return 0, _encode_connack(packet, protocol)  # type: ignore[arg-type]
    if kind == P.SUBSCRIBE:
        return 2, _encode_subscribe(packet, protocol)  # type: ignore[arg-type]
    if kind == P.SUBACK:
        return 0, _encode_suback(packet, protocol)  # type: ignore[arg-type]
    if kind == P.UNSUBSCRIBE:
        return 2, _encode_unsubscribe(packet, protocol)  # type: ignore[arg-type]
    if kind == P.UNSUBACK:
        return 0, _encode_unsuback(packet, protocol)  # type: ignore[arg-type]
    if kind in (P.PINGREQ, P.PINGRESP):
        return 0, b""
    if kind in (P.DISCONNECT, P.AUTH):
        if kind == P.AUTH and protocol != MQTT_5:
            raise ValueError("AUTH exists only in MQTT 5")
        _check_reason(protocol, kind, packet.reason_code)  # type: ignore[attr-defined]
        if protocol != MQTT_5:
            return 0, _props(protocol, packet.properties, kind)  # type: ignore[attr-defined]
        if not packet.reason_code and not packet.properties:  # type: ignore[attr-defined]
            return 0, b""
        return 0, bytes([packet.reason_code]) + encode_properties(  # type: ignore[attr-defined]
            packet.properties, kind)  # type: ignore[attr-defined]
    raise TypeError(f"cannot encode {packet!r}")


def _encode_connect(c: Connect) -> bytes:
    protocol = c.protocol
    _check_protocol(protocol)
    if not 0 <= c.keepalive <= 0xFFFF:
        raise ValueError(f"keepalive must be 0..65535 seconds, got {c.keepalive}")
    if protocol == MQTT_3_1 and not 1 <= len(c.client_id) <= 23:
        raise ValueError("MQTT 3.1 needs a client id of 1 to 23 characters")
    if c.password is not None and c.username is None and protocol != MQTT_5:
        raise ValueError("a password needs a username before MQTT 5")
    flags = 0x02 if c.clean_session else 0
    out = bytearray(encode_string("MQIsdp" if protocol == MQTT_3_1 else "MQTT"))
    payload = bytearray(encode_string(c.client_id, "client id"))
    will = c.will
    if will is not None:
        validate_topic(will.topic)
        _check_qos(will.qos, "will qos")
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += _props(protocol, will.properties, WILL)
        payload += encode_string(will.topic, "will topic")
        payload += encode_binary(will.payload, "will payload")
    if c.username is not None:
        flags |= 0x80
        payload += encode_string(c.username, "username")
    if c.password is not None:
        flags |= 0x40
        payload += encode_binary(c.password, "password")
    out.append(protocol)
    out.append(flags)
    out += encode_u16(c.keepalive, "keepalive")
    out += _props(protocol, c.properties, P.CONNECT)
    return bytes(out + payload)


def _encode_connack(a: ConnAck, protocol: int) -> bytes:
    if protocol == MQTT_5:
        _check_reason(protocol, P.CONNACK, a.reason_code)
    elif a.reason_code not in ConnectReturnCode._value2member_map_:
        raise ValueError(f"CONNACK return code must be 0..5 before MQTT 5, got {a.reason_code}")
    flags = 1 if a.session_present and protocol != MQTT_3_1 else 0
    return bytes([flags, a.reason_code]) + _props(protocol, a.properties, P.CONNACK)


def _encode_subscribe(s: Subscribe, protocol: int) -> bytes:
    _check_packet_id(s.packet_id)
    if not s.subscriptions:
        raise ValueError("SUBSCRIBE needs at least one topic filter")
    out = bytearray(encode_u16(s.packet_id))
    out += _props(protocol, s.properties, P.SUBSCRIBE)
    for sub in s.subscriptions:
        validate_topic_filter(sub.topic)
        _check_qos(sub.qos)
        options = sub.qos
        if protocol == MQTT_5:
            if sub.retain_handling not in (0, 1, 2):
                raise ValueError(f"retain_handling must be 0, 1 or 2, got {sub.retain_handling}")
            if sub.no_local and sub.topic.startswith("$share/"):
                raise ValueError("no_local cannot be set on a shared subscription")
            options |= (4 if sub.no_local else 0) | (8 if sub.retain_as_published else 0)
            options |= sub.retain_handling << 4
        elif sub.no_local or sub.retain_as_published or sub.retain_handling:
            raise ValueError("subscription options other than qos need MQTT 5")
        out += encode_string(sub.topic, "topic filter")
        out.append(options)
    return bytes(out)


def _encode_suback(a: SubAck, protocol: int) -> bytes:
    _check_packet_id(a.packet_id)
    if not a.reason_codes:
        raise ValueError("SUBACK needs at least one return code")
    allowed = {MQTT_5: V5_REASON_CODES[P.SUBACK], MQTT_3_1: V31_SUBACK_CODES}.get(
        protocol, V311_SUBACK_CODES)
    for code in a.reason_codes:
        if code not in allowed:
            raise ValueError(f"SUBACK code {code:#04x} is not valid in protocol {protocol}")
    return encode_u16(a.packet_id) + _props(protocol, a.properties, P.SUBACK) + bytes(a.reason_codes)


def _encode_unsubscribe(u: Unsubscribe, protocol: int) -> bytes:
    _check_packet_id(u.packet_id)
    if not u.topics:
        raise ValueError("UNSUBSCRIBE needs at least one topic filter")
    out = bytearray(encode_u16(u.packet_id))
    out += _props(protocol, u.properties, P.UNSUBSCRIBE)
    for topic in u.topics:
        validate_topic_filter(topic)
        out += encode_string(topic, "topic filter")
    return bytes(out)


def _encode_unsuback(a: UnsubAck, protocol: int) -> bytes:
    _check_packet_id(a.packet_id)
    if protocol != MQTT_5:
        if a.reason_codes or a.properties:
            raise ValueError("UNSUBACK carries reason codes and properties only in MQTT 5")
        return encode_u16(a.packet_id)
    if not a.reason_codes:
        raise ValueError("an MQTT 5 UNSUBACK needs one reason code per topic filter")
    for code in a.reason_codes:
        _check_reason(protocol, P.UNSUBACK, code)
    return encode_u16(a.packet_id) + encode_properties(a.properties, P.UNSUBACK) + bytes(a.reason_codes)


# --------------------------------------------------------------------------- decoding (network side)

def _packet_id(buf: Buffer, pos: int, end: int, name: str) -> Tuple[int, int]:
    packet_id, pos = decode_u16(buf, pos, end, f"packet id of {name}")
    if packet_id == 0:
        raise MalformedPacket(f"{name} has packet id 0")
    return packet_id, pos


def _done(pos: int, end: int, name: str) -> None:
    if pos != end:
        raise MalformedPacket(f"{end - pos} unexpected bytes at the end of {name}")


def _reason(code: int, packet_type: int) -> int:
    if code not in V5_REASON_CODES[packet_type]:
        raise MalformedPacket(f"invalid reason code {code:#04x} in {P(packet_type).name}")
    return code


def decode_cold(kind: int, flags: int, buf: Buffer, pos: int, end: int, protocol: int) -> Packet:
    """Decode the body ``buf[pos:end]`` of a cold packet whose fixed header was already checked."""
    if kind == P.CONNECT:
        return _decode_connect(buf, pos, end)
    if kind == P.CONNACK:
        return _decode_connack(buf, pos, end, protocol)
    if kind == P.SUBSCRIBE:
        return _decode_subscribe(buf, pos, end, protocol)
    if kind == P.SUBACK:
        return _decode_suback(buf, pos, end, protocol)
    if kind == P.UNSUBSCRIBE:
        return _decode_unsubscribe(buf, pos, end, protocol)
    if kind == P.UNSUBACK:
        return _decode_unsuback(buf, pos, end, protocol)
    if kind in (P.PINGREQ, P.PINGRESP):
        if end != pos:
            raise MalformedPacket(f"{P(kind).name} must have remaining length 0, got {end - pos}")
        return PingReq() if kind == P.PINGREQ else PingResp()
    if kind == P.DISCONNECT or kind == P.AUTH:
        name = P(kind).name
        if protocol != MQTT_5:
            if kind == P.AUTH:
                raise MalformedPacket("packet type 15 (AUTH) is reserved before MQTT 5")
            _done(pos, end, name)
            return Disconnect()
        code, props = 0, None
        if pos < end:
            code = _reason(buf[pos], kind)
            pos += 1
            if pos < end:
                props, pos = decode_properties(buf, pos, end, kind)
        _done(pos, end, name)
        return Disconnect(code, props) if kind == P.DISCONNECT else Auth(code, props)
    raise MalformedPacket(f"reserved packet type {kind}")


def _decode_connect(buf: Buffer, pos: int, end: int) -> Connect:
    name, pos = decode_string(buf, pos, end, "protocol name")
    level, pos = decode_u8(buf, pos, end, "protocol level")
    if not ((name == "MQTT" and level in (4, 5)) or (name == "MQIsdp" and level == 3)):
        raise MalformedPacket(f"unsupported protocol {name!r} level {level}")
    flags, pos = decode_u8(buf, pos, end, "connect flags")
    if flags & 0x01:
        raise MalformedPacket("reserved bit 0 of the connect flags is set")
    will_flag = bool(flags & 0x04)
    will_qos = (flags >> 3) & 3
    will_retain = bool(flags & 0x20)
    if will_qos == 3:
        raise MalformedPacket("will QoS 3 is not a valid QoS")
    if not will_flag and (will_qos or will_retain):
        raise MalformedPacket("will QoS or retain set without the will flag")
    has_user, has_password = bool(flags & 0x80), bool(flags & 0x40)
    if has_password and not has_user and level != MQTT_5:
        raise MalformedPacket("password flag set without the username flag")
    keepalive, pos = decode_u16(buf, pos, end, "keepalive")
    props = None
    if level == MQTT_5:
        props, pos = decode_properties(buf, pos, end, P.CONNECT)
    client_id, pos = decode_string(buf, pos, end, "client id")
    will = None
    if will_flag:
        will_props = None
        if level == MQTT_5:
            will_props, pos = decode_properties(buf, pos, end, WILL)
        will_topic, pos = decode_string(buf, pos, end, "will topic")
        reason = topic_error(will_topic, len(will_topic.encode("utf-8")))
        if reason:
            raise MalformedPacket(f"will {reason}")
        will_payload, pos = decode_binary(buf, pos, end, "will payload")
        will = Will(will_topic, will_payload, will_qos, will_retain, will_props)
    username = password = None
    if has_user:
        username, pos = decode_string(buf, pos, end, "username")
    if has_password:
        password, pos = decode_binary(buf, pos, end, "password")
    _done(pos, end, "CONNECT")
    return Connect(client_id, level, bool(flags & 0x02), keepalive, username, password, will, props)


def _decode_connack(buf: Buffer, pos: int, end: int, protocol: int) -> ConnAck:
    if protocol != MQTT_5 and end - pos != 2:
        raise MalformedPacket(f"CONNACK must have remaining length 2, got {end - pos}")
    ack_flags, pos = decode_u8(buf, pos, end, "CONNACK flags")
    code, pos = decode_u8(buf, pos, end, "CONNACK reason code")
    if protocol == MQTT_3_1:
        ack_flags = 0  # the first byte is unused in 3.1
    elif ack_flags & 0xFE:
        raise MalformedPacket("reserved bits of the CONNACK flags are set")
    props = None
    if protocol == MQTT_5:
        _reason(code, P.CONNACK)
        props, pos = decode_properties(buf, pos, end, P.CONNACK)
        _done(pos, end, "CONNACK")
    elif code not in ConnectReturnCode._value2member_map_:
        raise MalformedPacket(f"invalid CONNACK return code {code}")
    return ConnAck(bool(ack_flags & 1), code, props)


def _decode_subscribe(buf: Buffer, pos: int, end: int, protocol: int) -> Subscribe:
    packet_id, pos = _packet_id(buf, pos, end, "SUBSCRIBE")
    props = None
    if protocol == MQTT_5:
        props, pos = decode_properties(buf, pos, end, P.SUBSCRIBE)
    subs: List[Subscription] = []
    while pos < end:
        topic, pos = decode_string(buf, pos, end, "topic filter")
        reason = filter_error(topic)
        if reason:
            raise MalformedPacket(reason)
        options, pos = decode_u8(buf, pos, end, "subscription options")
        qos = options & 3
        if qos == 3:
            raise MalformedPacket(f"QoS 3 requested for {topic!r}")
        if protocol == MQTT_5:
            if options & 0xC0:
                raise MalformedPacket("reserved bits of the subscription options are set")
            handling = (options >> 4) & 3
            if handling == 3:
                raise MalformedPacket("retain handling 3 is not valid")
            subs.append(Subscription(topic, qos, bool(options & 4), bool(options & 8), handling))
        else:
            if options & 0xFC:
                raise MalformedPacket("reserved bits of the requested QoS byte are set")
            subs.append(Subscription(topic, qos))
    if not subs:
        raise MalformedPacket("SUBSCRIBE has no topic filter")
    return Subscribe(packet_id, subs, props)


def _decode_suback(buf: Buffer, pos: int, end: int, protocol: int) -> SubAck:
    packet_id, pos = _packet_id(buf, pos, end, "SUBACK")
    props = None
    if protocol == MQTT_5:
        props, pos = decode_properties(buf, pos, end, P.SUBACK)
    allowed = {MQTT_5: V5_REASON_CODES[P.SUBACK], MQTT_3_1: V31_SUBACK_CODES}.get(
        protocol, V311_SUBACK_CODES)
    codes = list(buf[pos:end])
    if not codes:
        raise MalformedPacket("SUBACK has no return code")
    for code in codes:
        if code not in allowed:
            raise MalformedPacket(f"invalid SUBACK return code {code:#04x}")
    return SubAck(packet_id, codes, props)


def _decode_unsubscribe(buf: Buffer, pos: int, end: int, protocol: int) -> Unsubscribe:
    packet_id, pos = _packet_id(buf, pos, end, "UNSUBSCRIBE")
    props = None
    if protocol == MQTT_5:
        props, pos = decode_properties(buf, pos, end, P.UNSUBSCRIBE)
    topics: List[str] = []
    while pos < end:
        topic, pos = decode_string(buf, pos, end, "topic filter")
        reason = filter_error(topic)
        if reason:
            raise MalformedPacket(reason)
        topics.append(topic)
    if not topics:
        raise MalformedPacket("UNSUBSCRIBE has no topic filter")
    return Unsubscribe(packet_id, topics, props)


def _decode_unsuback(buf: Buffer, pos: int, end: int, protocol: int) -> UnsubAck:
    if protocol != MQTT_5:
        if end - pos != 2:
            raise MalformedPacket(f"UNSUBACK must have remaining length 2, got {end - pos}")
        packet_id, pos = _packet_id(buf, pos, end, "UNSUBACK")
        return UnsubAck(packet_id)
    packet_id, pos = _packet_id(buf, pos, end, "UNSUBACK")
    props, pos = decode_properties(buf, pos, end, P.UNSUBACK)
    codes = [_reason(code, P.UNSUBACK) for code in buf[pos:end]]
    if not codes:
        raise MalformedPacket("UNSUBACK has no reason code")
    return UnsubAck(packet_id, codes, props)


__all__ = [
    "Auth", "ConnAck", "Connect", "Disconnect", "Packet", "PingReq", "PingResp", "SubAck",
    "Subscribe", "Subscription", "UnsubAck", "Unsubscribe", "Will", "check_utf8",
]
