"""mqttfast: the fastest MQTT client for Python."""
from ._version import __version__
from .client import BatchHandle, Client, Message, PublishHandle, RequestHandle, tls_context
from .codec import Subscription, Will
from .errors import (
    ConnectionLost,
    ConnectRefused,
    InvalidTopic,
    MalformedPacket,
    MQTTError,
    NotConnected,
    PacketTooLarge,
    PayloadTooLarge,
    ProtocolError,
    QueueFull,
)
from .loop import Backoff, Loop
from .store import MemoryStore
from .wire import topic_matches

__all__ = [
    "Backoff", "BatchHandle", "Client", "ConnectRefused", "ConnectionLost", "InvalidTopic",
    "Loop", "MQTTError", "MalformedPacket", "MemoryStore", "Message", "NotConnected",
    "PacketTooLarge", "PayloadTooLarge", "ProtocolError", "PublishHandle", "QueueFull",
    "RequestHandle", "Subscription", "Will", "__version__", "tls_context", "topic_matches",
]
