"""One exception hierarchy, shared by the Cython codec, its pure-Python twin and every layer above."""
from __future__ import annotations

from typing import Optional


class MQTTError(Exception):
    """Base class of every error mqttfast raises on purpose."""


class ProtocolError(MQTTError):
    """The peer broke the protocol: the connection cannot go on."""


class MalformedPacket(ProtocolError):
    """Bytes from the network that are not a valid MQTT packet."""


class PacketTooLarge(MalformedPacket):
    """A packet larger than the negotiated maximum packet size (refused from its header)."""


class TopicAliasInvalid(ProtocolError):
    """A PUBLISH from the broker whose Topic Alias is 0, above the Topic Alias Maximum the client
    announced in CONNECT, or one the client has no topic for while the topic is empty (MQTT 5.0
    3.3.2.3.4): the client closes with DISCONNECT 0x94 (Topic Alias invalid)."""


class InvalidTopic(MQTTError, ValueError):
    """A topic name or filter the caller gave is not valid MQTT."""


class PayloadTooLarge(MQTTError, ValueError):
    """A payload that cannot fit in one packet (or exceeds the broker's maximum)."""


class ConnectionLost(MQTTError):
    """The connection dropped, or a keep-alive went unanswered."""


class ConnectRefused(MQTTError):
    """The broker answered CONNECT with a failure reason code."""

    def __init__(self, reason_code: int, reason: str, properties: Optional[dict] = None) -> None:
        super().__init__(f"connection refused: {reason} (code {reason_code:#04x})")
        self.reason_code = reason_code
        self.reason = reason
        self.properties = properties


class QueueFull(MQTTError):
    """The inflight window and the bounded pending queue are both full."""


class NotConnected(MQTTError):
    """An operation that needs a connection (or a persistent session) was called without one."""


class StoreError(MQTTError):
    """A durable session store cannot be used or written: locked by another client, damaged, of
    another program or a newer version, bound to another client id, or the disk is full."""
