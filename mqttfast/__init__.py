"""mqttfast: the fastest MQTT client for Python."""
from ._version import __version__
from .client import (
    AckableMessage,
    BatchHandle,
    Client,
    Message,
    PublishHandle,
    RequestHandle,
    WrittenHandle,
    tls_context,
)
from .codec import Subscription, Will
from .constants import MAX_PACKET_SIZE
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
    StoreError,
    TopicAliasInvalid,
)
from .events import (
    AuthRequest,
    ConnectionRefused,
    ConnectionState,
    Connected,
    Disconnected,
    PublishState,
    Subscribed,
    Unsubscribed,
)
from .loop import Backoff, Loop, TransportState
from .sqlite_store import SQLiteStore
from .store import MemoryStore
from .wire import topic_matches


def __getattr__(name: str) -> object:
    # ``mqttfast.aio`` (the asyncio client) loads on first use: ``import mqttfast`` stays free of
    # asyncio.
    if name == "aio":
        import importlib

        return importlib.import_module(".aio", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AckableMessage", "AuthRequest", "ConnectionRefused", "ConnectionState", "Connected",
    "Disconnected", "PublishState", "Subscribed", "TransportState", "Unsubscribed",
    "WrittenHandle",
    "Backoff", "BatchHandle", "Client", "ConnectRefused", "ConnectionLost", "InvalidTopic",
    "Loop", "MAX_PACKET_SIZE", "MQTTError", "MalformedPacket", "MemoryStore", "Message", "NotConnected",
    "PacketTooLarge", "PayloadTooLarge", "ProtocolError", "PublishHandle", "QueueFull",
    "RequestHandle", "SQLiteStore", "StoreError", "Subscription", "TopicAliasInvalid", "Will",
    "__version__", "tls_context", "topic_matches",
]
