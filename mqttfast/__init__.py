"""mqttfast: the fastest MQTT client for Python."""
from ._version import __version__
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

__all__ = [
    "ConnectRefused", "ConnectionLost", "InvalidTopic", "MQTTError", "MalformedPacket",
    "NotConnected", "PacketTooLarge", "PayloadTooLarge", "ProtocolError", "QueueFull",
    "__version__",
]
