"""MQTT 5 properties (spec 2.2.2): every identifier, its type, and the packets that may carry it.

Properties travel as a plain ``dict`` keyed by the spec's names in snake_case
(``{"message_expiry_interval": 60, "user_property": [("k", "v")]}``). ``user_property`` is a list of
pairs and may repeat; ``subscription_identifier`` may repeat in a PUBLISH (decoded as a list of ints)
and appears once in a SUBSCRIBE (an int). Shared by both codec twins: properties are off the hot path.
"""
from __future__ import annotations

from typing import Any, Dict, FrozenSet, List, NamedTuple, Optional, Tuple

from .constants import PacketType as P
from .errors import MalformedPacket
from .wire import (
    Buffer,
    decode_binary,
    decode_string,
    decode_u16,
    decode_u32,
    decode_u8,
    decode_varint,
    encode_binary,
    encode_string,
    encode_varint,
)

WILL = 0  # pseudo packet type: the will properties inside CONNECT

BYTE, U16, U32, VARINT, STRING, PAIR, BINARY = range(7)


class Prop(NamedTuple):
    ident: int
    name: str
    kind: int
    packets: FrozenSet[int]
    boolean: bool = False  # a byte that may only be 0 or 1
    nonzero: bool = False  # zero is a protocol error
    # Decoded as it stands even when zero: the session judges the value (topic_alias: 0 is
    # "Topic Alias invalid", 0x94, like any other alias it cannot accept, not a malformed packet).
    session_judges: bool = False


_ACKS = (P.PUBACK, P.PUBREC, P.PUBREL, P.PUBCOMP)
_ALL = frozenset(set(P) | {WILL})

PROPERTIES: Tuple[Prop, ...] = (
    Prop(0x01, "payload_format_indicator", BYTE, frozenset({P.PUBLISH, WILL}), boolean=True),
    Prop(0x02, "message_expiry_interval", U32, frozenset({P.PUBLISH, WILL})),
    Prop(0x03, "content_type", STRING, frozenset({P.PUBLISH, WILL})),
    Prop(0x08, "response_topic", STRING, frozenset({P.PUBLISH, WILL})),
    Prop(0x09, "correlation_data", BINARY, frozenset({P.PUBLISH, WILL})),
    Prop(0x0B, "subscription_identifier", VARINT, frozenset({P.PUBLISH, P.SUBSCRIBE}), nonzero=True),
    Prop(0x11, "session_expiry_interval", U32, frozenset({P.CONNECT, P.CONNACK, P.DISCONNECT})),
    Prop(0x12, "assigned_client_identifier", STRING, frozenset({P.CONNACK})),
    Prop(0x13, "server_keep_alive", U16, frozenset({P.CONNACK})),
    Prop(0x15, "authentication_method", STRING, frozenset({P.CONNECT, P.CONNACK, P.AUTH})),
    Prop(0x16, "authentication_data", BINARY, frozenset({P.CONNECT, P.CONNACK, P.AUTH})),
    Prop(0x17, "request_problem_information", BYTE, frozenset({P.CONNECT}), boolean=True),
    Prop(0x18, "will_delay_interval", U32, frozenset({WILL})),
    Prop(0x19, "request_response_information", BYTE, frozenset({P.CONNECT}), boolean=True),
    Prop(0x1A, "response_information", STRING, frozenset({P.CONNACK})),
    Prop(0x1C, "server_reference", STRING, frozenset({P.CONNACK, P.DISCONNECT})),
    Prop(0x1F, "reason_string", STRING,
         frozenset({P.CONNACK, *_ACKS, P.SUBACK, P.UNSUBACK, P.DISCONNECT, P.AUTH})),
    Prop(0x21, "receive_maximum", U16, frozenset({P.CONNECT, P.CONNACK}), nonzero=True),
    Prop(0x22, "topic_alias_maximum", U16, frozenset({P.CONNECT, P.CONNACK})),
    Prop(0x23, "topic_alias", U16, frozenset({P.PUBLISH}), nonzero=True, session_judges=True),
    Prop(0x24, "maximum_qos", BYTE, frozenset({P.CONNACK}), boolean=True),
    Prop(0x25, "retain_available", BYTE, frozenset({P.CONNACK}), boolean=True),
    Prop(0x26, "user_property", PAIR, _ALL - {P.PINGREQ, P.PINGRESP}),
    Prop(0x27, "maximum_packet_size", U32, frozenset({P.CONNECT, P.CONNACK}), nonzero=True),
    Prop(0x28, "wildcard_subscription_available", BYTE, frozenset({P.CONNACK}), boolean=True),
    Prop(0x29, "subscription_identifier_available", BYTE, frozenset({P.CONNACK}), boolean=True),
    Prop(0x2A, "shared_subscription_available", BYTE, frozenset({P.CONNACK}), boolean=True),
)
BY_ID: Dict[int, Prop] = {p.ident: p for p in PROPERTIES}
BY_NAME: Dict[str, Prop] = {p.name: p for p in PROPERTIES}

_WHERE = {WILL: "will properties"}


def _where(packet_type: int) -> str:
    return _WHERE.get(packet_type) or P(packet_type).name


def _repeats(prop: Prop, packet_type: int) -> bool:
    return prop.kind == PAIR or (prop.ident == 0x0B and packet_type == P.PUBLISH)


def decode_properties(
    buf: Buffer, pos: int, end: int, packet_type: int
) -> Tuple[Optional[Dict[str, Any]], int]:
    """Decode a property block at ``pos``; returns (dict or None if empty, position after it)."""
    where = _where(packet_type)
    length, pos = decode_varint(buf, pos, end, f"property length of {where}")
    if length == 0:
        return None, pos
    stop = pos + length
    if stop > end:
        raise MalformedPacket(f"properties of {where} ({length} bytes) run past the end of the packet")
    props: Dict[str, Any] = {}
    while pos < stop:
        ident, pos = decode_varint(buf, pos, stop, f"property identifier in {where}")
        prop = BY_ID.get(ident)
        if prop is None:
            raise MalformedPacket(f"unknown property identifier {ident:#04x} in {where}")
        if packet_type not in prop.packets:
            raise MalformedPacket(f"property {prop.name} is not allowed in {where}")
        what = f"property {prop.name}"
        kind = prop.kind
        value: Any
        if kind == BYTE:
            value, pos = decode_u8(buf, pos, stop, what)
        elif kind == U16:
            value, pos = decode_u16(buf, pos, stop, what)
        elif kind == U32:
            value, pos = decode_u32(buf, pos, stop, what)
        elif kind == VARINT:
            value, pos = decode_varint(buf, pos, stop, what)
        elif kind == STRING:
            value, pos = decode_string(buf, pos, stop, what)
        elif kind == BINARY:
            value, pos = decode_binary(buf, pos, stop, what)
        else:
            key, pos = decode_string(buf, pos, stop, f"{what} name")
            val, pos = decode_string(buf, pos, stop, f"{what} value")
            value = (key, val)
        if prop.boolean and value > 1:
            raise MalformedPacket(f"{what} must be 0 or 1, got {value}")
        if prop.nonzero and value == 0 and not prop.session_judges:
            raise MalformedPacket(f"{what} must not be 0")
        if _repeats(prop, packet_type):
            props.setdefault(prop.name, []).append(value)
        elif prop.name in props:
            raise MalformedPacket(f"{what} appears twice in {where}")
        else:
            props[prop.name] = value
    return props, pos


def encode_properties(props: Optional[Dict[str, Any]], packet_type: int) -> bytes:
    """Encode a property block, length prefix included; ``None`` or ``{}`` gives ``b"\\x00"``."""
    if not props:
        return b"\x00"
    where = _where(packet_type)
    out = bytearray()
    for name, value in props.items():
        prop = BY_NAME.get(name)
        if prop is None:
            raise ValueError(f"unknown MQTT 5 property {name!r}")
        if packet_type not in prop.packets:
            raise ValueError(f"property {name} is not allowed in {where}")
        if _repeats(prop, packet_type) or (prop.ident == 0x0B and isinstance(value, (list, tuple))):
            single = _is_pair(value) if prop.kind == PAIR else isinstance(value, int)
            values = [value] if single else list(value)
            if prop.kind != PAIR and packet_type != P.PUBLISH and len(values) != 1:
                raise ValueError(f"property {name} may appear only once in {where}")
        else:
            values = [value]
        for item in values:
            out += encode_varint(prop.ident)
            out += _encode_value(prop, item)
    return encode_varint(len(out)) + bytes(out)


def _is_pair(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, str) for v in value)


def _encode_value(prop: Prop, value: Any) -> bytes:
    what = f"property {prop.name}"
    kind = prop.kind
    if kind == PAIR:
        if not (isinstance(value, (tuple, list)) and len(value) == 2):
            raise ValueError(f"{what} entries must be (name, value) pairs of str")
        return encode_string(value[0], f"{what} name") + encode_string(value[1], f"{what} value")
    if kind == STRING:
        return encode_string(value, what)
    if kind == BINARY:
        if isinstance(value, str):
            raise TypeError(f"{what} must be bytes, not str")
        return encode_binary(value, what)
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if prop.boolean and value not in (0, 1):
        raise ValueError(f"{what} must be 0 or 1, got {value}")
    if prop.nonzero and value == 0:
        raise ValueError(f"{what} must not be 0")
    if kind == BYTE:
        limit = 0xFF
    elif kind == U16:
        limit = 0xFFFF
    elif kind == U32:
        limit = 0xFFFFFFFF
    else:
        return encode_varint(value)
    if not 0 <= value <= limit:
        raise ValueError(f"{what} must be 0..{limit}, got {value}")
    return value.to_bytes({BYTE: 1, U16: 2, U32: 4}[kind], "big")


def user_properties(props: Optional[Dict[str, Any]]) -> List[Tuple[str, str]]:
    """The user properties of a packet, as a list of pairs (empty when there are none)."""
    return list(props.get("user_property", ())) if props else []
