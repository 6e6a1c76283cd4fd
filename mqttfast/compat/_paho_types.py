"""The value types of paho-mqtt 2.x's API, written for mqttfast's paho face (no paho import).

Constants keep paho's names and numbers (``MQTT_ERR_*``, ``MQTTv311``, ``CallbackAPIVersion``);
``ReasonCode``, ``Properties``, ``SubscribeOptions``, ``MQTTMessage`` and ``MQTTMessageInfo`` behave
like paho's for what programs read from them. Properties convert to and from mqttfast's
snake_case dicts; paho's own ``Properties`` / ``SubscribeOptions`` objects are accepted too (read
by attribute name), so a program that builds them with paho's classes keeps working.
"""
from __future__ import annotations

import enum
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

from ..codec import Subscription


class CallbackAPIVersion(enum.Enum):
    VERSION1 = 1  # paho 1.x callback signatures (differ between MQTT 3 and 5)
    VERSION2 = 2  # one signature per callback, with ReasonCode and Properties


class MQTTErrorCode(enum.IntEnum):
    MQTT_ERR_AGAIN = -1
    MQTT_ERR_SUCCESS = 0
    MQTT_ERR_NOMEM = 1
    MQTT_ERR_PROTOCOL = 2
    MQTT_ERR_INVAL = 3
    MQTT_ERR_NO_CONN = 4
    MQTT_ERR_CONN_REFUSED = 5
    MQTT_ERR_NOT_FOUND = 6
    MQTT_ERR_CONN_LOST = 7
    MQTT_ERR_TLS = 8
    MQTT_ERR_PAYLOAD_SIZE = 9
    MQTT_ERR_NOT_SUPPORTED = 10
    MQTT_ERR_AUTH = 11
    MQTT_ERR_ACL_DENIED = 12
    MQTT_ERR_UNKNOWN = 13
    MQTT_ERR_ERRNO = 14
    MQTT_ERR_QUEUE_SIZE = 15
    MQTT_ERR_KEEPALIVE = 16


class MQTTProtocolVersion(enum.IntEnum):
    MQTTv31 = 3
    MQTTv311 = 4
    MQTTv5 = 5


class LogLevel(enum.IntEnum):
    MQTT_LOG_INFO = 0x01
    MQTT_LOG_NOTICE = 0x02
    MQTT_LOG_WARNING = 0x04
    MQTT_LOG_ERR = 0x08
    MQTT_LOG_DEBUG = 0x10


class PacketTypes:
    """Packet type numbers as paho's ``PacketTypes`` names them (WILLMESSAGE: will properties)."""

    CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, SUBACK, \
        UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(1, 16)
    WILLMESSAGE = 99
    Names = ("reserved", "Connect", "Connack", "Publish", "Puback", "Pubrec", "Pubrel", "Pubcomp",
             "Subscribe", "Suback", "Unsubscribe", "Unsuback", "Pingreq", "Pingresp",
             "Disconnect", "Auth")


# MQTT 5 reason code names (spec 2.4); code 0 is named by the packet it is in.
_REASON_NAMES: Dict[int, str] = {
    0x00: "Success", 0x01: "Granted QoS 1", 0x02: "Granted QoS 2",
    0x04: "Disconnect with will message", 0x10: "No matching subscribers",
    0x11: "No subscription found", 0x18: "Continue authentication", 0x19: "Re-authenticate",
    0x80: "Unspecified error", 0x81: "Malformed packet", 0x82: "Protocol error",
    0x83: "Implementation specific error", 0x84: "Unsupported protocol version",
    0x85: "Client identifier not valid", 0x86: "Bad user name or password",
    0x87: "Not authorized", 0x88: "Server unavailable", 0x89: "Server busy", 0x8A: "Banned",
    0x8B: "Server shutting down", 0x8C: "Bad authentication method", 0x8D: "Keep alive timeout",
    0x8E: "Session taken over", 0x8F: "Topic filter invalid", 0x90: "Topic name invalid",
    0x91: "Packet identifier in use", 0x92: "Packet identifier not found",
    0x93: "Receive maximum exceeded", 0x94: "Topic alias invalid", 0x95: "Packet too large",
    0x96: "Message rate too high", 0x97: "Quota exceeded", 0x98: "Administrative action",
    0x99: "Payload format invalid", 0x9A: "Retain not supported", 0x9B: "QoS not supported",
    0x9C: "Use another server", 0x9D: "Server moved",
    0x9E: "Shared subscription not supported", 0x9F: "Connection rate exceeded",
    0xA0: "Maximum connect time", 0xA1: "Subscription identifiers not supported",
    0xA2: "Wildcard subscription not supported",
}
_ZERO_NAMES = {PacketTypes.DISCONNECT: "Normal disconnection", PacketTypes.SUBACK: "Granted QoS 0"}
_BY_NAME = {name: code for code, name in _REASON_NAMES.items()}
_BY_NAME.update({name: 0 for name in _ZERO_NAMES.values()})

# MQTT 3.1.1 CONNACK return codes 1..5 and the MQTT 5 reason codes paho 2 maps them to.
CONNACK_TO_REASON = {0: 0x00, 1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87}
REASON_TO_CONNACK = {v: k for k, v in CONNACK_TO_REASON.items()}


class ReasonCode:
    """An MQTT 5 reason code: compares equal to its number and to its name, prints its name."""

    __slots__ = ("packetType", "value")

    def __init__(self, packetType: int, aName: str = "Success", identifier: int = -1) -> None:
        self.packetType = packetType
        if identifier == -1:
            if aName not in _BY_NAME:
                raise KeyError(f"Reason code name not found: {aName}")
            identifier = _BY_NAME[aName]
        self.value = identifier

    def getName(self) -> str:
        if self.value == 0 and self.packetType in _ZERO_NAMES:
            return _ZERO_NAMES[self.packetType]
        return _REASON_NAMES.get(self.value, f"Unknown reason code {self.value:#04x}")

    @property
    def is_failure(self) -> bool:
        return self.value >= 0x80

    def json(self) -> str:
        return self.getName()

    def pack(self) -> bytearray:
        return bytearray([self.value])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, int):
            return self.value == other
        if isinstance(other, str):
            return other == self.getName()
        value = getattr(other, "value", None)  # paho's ReasonCode too
        return isinstance(value, int) and hasattr(other, "packetType") and value == self.value

    def __lt__(self, other: Any) -> bool:
        if isinstance(other, int):
            return self.value < other
        if isinstance(other, ReasonCode):
            return self.value < other.value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        names = PacketTypes.Names
        packet = names[self.packetType] if 0 <= self.packetType < len(names) else "Unknown"
        return f"ReasonCode({packet}, {self.getName()!r})"

    def __str__(self) -> str:
        return self.getName()


ReasonCodes = ReasonCode  # paho 1.x's (deprecated) name


# paho's attribute names are the spec's names without spaces; mqttfast's are snake_case.
_SPECIAL = {"maximum_qos": "MaximumQoS"}
_CAMEL_NAMES = (
    "payload_format_indicator", "message_expiry_interval", "content_type", "response_topic",
    "correlation_data", "subscription_identifier", "session_expiry_interval",
    "assigned_client_identifier", "server_keep_alive", "authentication_method",
    "authentication_data", "request_problem_information", "will_delay_interval",
    "request_response_information", "response_information", "server_reference",
    "reason_string", "receive_maximum", "topic_alias_maximum", "topic_alias", "maximum_qos",
    "retain_available", "user_property", "maximum_packet_size",
    "wildcard_subscription_available", "subscription_identifier_available",
    "shared_subscription_available",
)
TO_CAMEL = {snake: _SPECIAL.get(snake, "".join(w.capitalize() for w in snake.split("_")))
            for snake in _CAMEL_NAMES}
TO_SNAKE = {camel: snake for snake, camel in TO_CAMEL.items()}
_MULTIPLE = ("UserProperty", "SubscriptionIdentifier")


class Properties:
    """MQTT 5 properties as attributes named like paho's (``MessageExpiryInterval``,
    ``UserProperty`` as a list of pairs). Setting ``UserProperty`` or ``SubscriptionIdentifier``
    appends, as in paho."""

    def __init__(self, packetType: int) -> None:
        object.__setattr__(self, "packetType", packetType)

    def __setattr__(self, name: str, value: Any) -> None:
        name = name.replace(" ", "")
        if name not in TO_SNAKE:
            raise AttributeError(f"Property name must be one of {sorted(TO_SNAKE)}, not {name!r}")
        if name in _MULTIPLE:
            value = list(getattr(self, name, [])) + (value if isinstance(value, list) else [value])
        object.__setattr__(self, name, value)

    def isEmpty(self) -> bool:
        return not any(hasattr(self, camel) for camel in TO_SNAKE)

    def clear(self) -> None:
        for camel in TO_SNAKE:
            if hasattr(self, camel):
                object.__delattr__(self, camel)

    def json(self) -> Dict[str, Any]:
        return {camel: getattr(self, camel) for camel in TO_SNAKE if hasattr(self, camel)}

    def __str__(self) -> str:
        return "[" + ", ".join(f"{k} : {v}" for k, v in self.json().items()) + "]"

    __repr__ = __str__

    @classmethod
    def from_dict(cls, packet_type: int, props: Optional[Dict[str, Any]]) -> "Properties":
        """mqttfast's dict (snake_case) as a ``Properties``."""
        made = cls(packet_type)
        for snake, value in (props or {}).items():
            camel = TO_CAMEL.get(snake)
            if camel is not None:
                if snake == "user_property":
                    value = [tuple(pair) for pair in value]
                made.__setattr__(camel, value)
        return made


def props_to_dict(props: Any, single_subscription_id: bool = False) -> Optional[Dict[str, Any]]:
    """A ``Properties`` (this module's or paho's, read by attribute), a dict or None as
    mqttfast's snake_case dict (None when empty)."""
    if props is None:
        return None
    if isinstance(props, dict):
        return dict(props) or None
    out: Dict[str, Any] = {}
    for camel, snake in TO_SNAKE.items():
        if hasattr(props, camel):
            value = getattr(props, camel)
            if camel == "UserProperty":
                value = [tuple(pair) for pair in value]
            elif camel == "SubscriptionIdentifier" and isinstance(value, list):
                value = value[0] if single_subscription_id else value
            out[snake] = value
    return out or None


class SubscribeOptions:
    """MQTT 5 subscription options, paho's names."""

    RETAIN_SEND_ON_SUBSCRIBE, RETAIN_SEND_IF_NEW_SUB, RETAIN_DO_NOT_SEND = range(3)

    def __init__(self, qos: int = 0, noLocal: bool = False, retainAsPublished: bool = False,
                 retainHandling: int = RETAIN_SEND_ON_SUBSCRIBE) -> None:
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        if retainHandling not in (0, 1, 2):
            raise ValueError(f"retainHandling must be 0, 1 or 2, not {retainHandling!r}")
        self.QoS = qos
        self.noLocal = noLocal
        self.retainAsPublished = retainAsPublished
        self.retainHandling = retainHandling

    def __repr__(self) -> str:
        return (f"{{QoS={self.QoS}, noLocal={self.noLocal}, retainAsPublished="
                f"{self.retainAsPublished}, retainHandling={self.retainHandling}}}")


def is_subscribe_options(value: Any) -> bool:
    return hasattr(value, "QoS") and hasattr(value, "retainHandling")


def subscription(topic: str, options: Any) -> Subscription:
    """One filter with a ``SubscribeOptions`` (this module's or paho's) as mqttfast's value."""
    return Subscription(topic, options.QoS, bool(options.noLocal), bool(options.retainAsPublished),
                        int(options.retainHandling))


class ConnectFlags(NamedTuple):
    session_present: bool


class DisconnectFlags(NamedTuple):
    is_disconnect_packet_from_server: bool


_ERROR_STRINGS = {
    0: "No error.", 1: "Out of memory.",
    2: "A network protocol error occurred when communicating with the broker.",
    3: "Invalid function arguments provided.", 4: "The client is not currently connected.",
    5: "The connection was refused.", 6: "Message not found (internal error).",
    7: "The connection was lost.", 8: "A TLS error occurred.", 9: "Payload too large.",
    10: "This feature is not supported.", 11: "Authorisation failed.",
    12: "Access denied by ACL.", 13: "Unknown error.", 14: "Error defined by errno.",
    15: "Message queue full.", 16: "Client or broker did not communicate in the keepalive interval.",
}


def error_string(mqtt_errno: int) -> str:
    return _ERROR_STRINGS.get(int(mqtt_errno), "Unknown error.")


_CONNACK_STRINGS = {
    0: "Connection Accepted.", 1: "Connection Refused: unacceptable protocol version.",
    2: "Connection Refused: identifier rejected.", 3: "Connection Refused: broker unavailable.",
    4: "Connection Refused: bad user name or password.", 5: "Connection Refused: not authorised.",
}


def connack_string(connack_code: Union[int, ReasonCode]) -> str:
    if isinstance(connack_code, ReasonCode):
        return str(connack_code)
    return _CONNACK_STRINGS.get(int(connack_code), "Connection Refused: unknown reason.")


class MQTTMessageInfo:
    """What ``publish`` returns: ``mid``, ``rc``, ``wait_for_publish``, ``is_published``, and
    ``(rc, mid)`` unpacking, backed by mqttfast's handle. As in paho, a message published while
    not connected has ``rc == MQTT_ERR_NO_CONN`` (QoS 1/2 ones are still sent once connected)
    and waiting on it raises ``RuntimeError``."""

    __slots__ = ("mid", "rc", "_handle")

    def __init__(self, mid: int) -> None:
        self.mid = mid
        self.rc: int = MQTTErrorCode.MQTT_ERR_SUCCESS
        self._handle: Any = None  # mqttfast's PublishHandle / WrittenHandle

    def _check_rc(self) -> None:
        if self.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            raise ValueError("Message is not queued due to ERR_QUEUE_SIZE")
        if self.rc > 0:
            raise RuntimeError(f"Message publish failed: {error_string(self.rc)}")

    def _settled(self) -> bool:
        """True once the outcome is known; a failure (the connection dropped first) sets
        ``rc`` to ``MQTT_ERR_CONN_LOST``."""
        handle = self._handle
        if handle is None or not handle.done:
            return False
        if not handle.ok:
            self.rc = MQTTErrorCode.MQTT_ERR_CONN_LOST
        return True

    def wait_for_publish(self, timeout: Optional[float] = None) -> None:
        """Block until the message is published (acknowledged for QoS 1/2, written for QoS 0)
        or ``timeout`` passes; ``RuntimeError`` when it failed (paho's contract)."""
        self._check_rc()
        if self._handle is not None:
            self._handle.wait(timeout)
            self._settled()
        self._check_rc()

    def is_published(self) -> bool:
        self._check_rc()
        done = self._settled()
        self._check_rc()
        return done

    def __iter__(self) -> Iterator[int]:
        return iter((self.rc, self.mid))

    def __getitem__(self, index: int) -> int:
        if index == 0:
            return self.rc
        if index == 1:
            return self.mid
        raise IndexError("index out of range")

    def __str__(self) -> str:
        return str((self.rc, self.mid))


class MQTTMessage:
    """A received message as paho shapes it: ``topic`` (str), ``payload`` (bytes), ``qos``,
    ``retain``, ``mid``, ``dup``, ``properties`` (MQTT 5: ``Properties``; else None),
    ``timestamp`` (``time.monotonic()`` at arrival, as paho)."""

    __slots__ = ("_topic", "payload", "qos", "retain", "mid", "dup", "properties", "timestamp",
                 "info", "state")

    def __init__(self, mid: int = 0, topic: bytes = b"") -> None:
        self._topic = topic
        self.mid = mid
        self.payload: bytes = b""
        self.qos = 0
        self.retain = False
        self.dup = False
        self.properties: Optional[Properties] = None
        self.timestamp = 0.0
        self.info = MQTTMessageInfo(mid)
        self.state = 0

    @property
    def topic(self) -> str:
        return self._topic.decode("utf-8")

    @topic.setter
    def topic(self, value: bytes) -> None:
        self._topic = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MQTTMessage) and self.mid == other.mid

    def __hash__(self) -> int:
        return hash(self.mid)

    def __repr__(self) -> str:
        return f"<MQTTMessage {self.topic!r} qos={self.qos} mid={self.mid} {len(self.payload)} B>"


def encode_payload(payload: Any) -> bytes:
    """paho's payload rule: str as UTF-8, int/float as their text, None as empty, bytes as is."""
    if payload is None:
        return b""
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload)
    if isinstance(payload, (int, float)) and not isinstance(payload, bool):
        return str(payload).encode("ascii")
    raise TypeError("payload must be a string, bytearray, int, float or None.")


TopicArg = Union[str, Tuple[str, Any], List[Tuple[str, Any]]]
