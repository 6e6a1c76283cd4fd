"""Protocol numbers: packet types, protocol levels, reason codes and their names."""
from __future__ import annotations

from enum import IntEnum
from typing import Dict, FrozenSet, Optional, Tuple

MQTT_3_1 = 3  # protocol name "MQIsdp"
MQTT_3_1_1 = 4
MQTT_5 = 5
PROTOCOLS = (MQTT_3_1, MQTT_3_1_1, MQTT_5)

MAX_REMAINING_LENGTH = 268_435_455  # four varint bytes
MAX_PACKET_ID = 65_535
MAX_STRING_LENGTH = 65_535
# The default limit on an incoming packet (issue 9): bigger than any sane message, small enough
# that one packet cannot cost the process hundreds of MB; announced in an MQTT 5 CONNECT.
MAX_PACKET_SIZE = 16 * 1024 * 1024
# The default bound on the bytes of topics and payloads waiting in a session's outgoing queue.
MAX_QUEUED_BYTES = 64 * 1024 * 1024


class PacketType(IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15  # MQTT 5 only


class ReasonCode(IntEnum):
    """MQTT 5 reason codes (spec 2.4). 0x00-0x02 also mean 'granted QoS n' in a SUBACK."""

    SUCCESS = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


class ConnectReturnCode(IntEnum):
    """MQTT 3.1 / 3.1.1 CONNACK return codes."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USERNAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


SUBACK_FAILURE = 0x80  # MQTT 3.1.1 SUBACK return code for a refused subscription

_R = ReasonCode
# Which reason codes each packet type may carry in MQTT 5 (spec 3.x.2.x tables).
V5_REASON_CODES: Dict[int, FrozenSet[int]] = {
    PacketType.CONNACK: frozenset({
        0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C,
        0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
    }),
    PacketType.PUBACK: frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99}),
    PacketType.PUBREC: frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99}),
    PacketType.PUBREL: frozenset({0x00, 0x92}),
    PacketType.PUBCOMP: frozenset({0x00, 0x92}),
    PacketType.SUBACK: frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E,
                                  0xA1, 0xA2}),
    PacketType.UNSUBACK: frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91}),
    PacketType.DISCONNECT: frozenset({
        0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93,
        0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
    }),
    PacketType.AUTH: frozenset({0x00, 0x18, 0x19}),
}
V311_SUBACK_CODES = frozenset({0x00, 0x01, 0x02, 0x80})
V31_SUBACK_CODES = frozenset({0x00, 0x01, 0x02})

# Names that depend on the packet: 0x00 is "success", "normal disconnection" or "granted QoS 0".
_CONTEXT_NAMES: Dict[Tuple[int, int], str] = {
    (PacketType.DISCONNECT, 0x00): "normal disconnection",
    (PacketType.SUBACK, 0x00): "granted QoS 0",
    (PacketType.SUBACK, 0x01): "granted QoS 1",
    (PacketType.SUBACK, 0x02): "granted QoS 2",
}


def reason_name(code: int, packet_type: Optional[int] = None, protocol: int = MQTT_5) -> str:
    """A readable name for a reason code (or, before MQTT 5, a CONNACK/SUBACK return code)."""
    if protocol < MQTT_5:
        if packet_type == PacketType.CONNACK and code in ConnectReturnCode._value2member_map_:
            return ConnectReturnCode(code).name.lower().replace("_", " ")
        if packet_type == PacketType.SUBACK:
            return "failure" if code == SUBACK_FAILURE else f"granted QoS {code}"
    name = _CONTEXT_NAMES.get((packet_type, code)) if packet_type is not None else None
    if name:
        return name
    try:
        return ReasonCode(code).name.lower().replace("_", " ")
    except ValueError:
        return f"unknown reason code {code:#04x}"

# Fixed-header flag bits each packet type must carry (spec 2.1.3); PUBLISH's flags are its own.
REQUIRED_FLAGS = (
    None,  # 0: reserved
    0, 0, None, 0, 0, 2, 0, 2, 0, 2, 0, 0, 0, 0,
    0,  # 15: AUTH (MQTT 5), reserved before
)
