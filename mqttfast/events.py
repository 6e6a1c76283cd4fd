"""What the session reports: connection states, publish-record states and control events.

Events are frozen value objects (h11's ``_events.py`` is the model): a test says
``assert events == [Connected(session_present=False)]``. Received messages are not events: they come
back from ``Session.receive`` on their own, so no layer walks every message to find the CONNACK.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Dict, Optional, Tuple


class ConnectionState(IntEnum):
    """The MQTT connection as the session sees it (the socket's own phases belong to the loop)."""

    DISCONNECTED = 0  # no connection (never connected, closed, or lost)
    CONNECTING = 1  # CONNECT queued, waiting for CONNACK
    CONNECTED = 2  # CONNACK accepted
    DISCONNECTING = 3  # DISCONNECT queued: nothing more may be sent

    def __repr__(self) -> str:
        return f"ConnectionState.{self.name}"


# Which moves are legal (asyncpg's ``_set_state`` and h11's tables): anything else is a bug.
TRANSITIONS: Dict[ConnectionState, Tuple[ConnectionState, ...]] = {
    ConnectionState.DISCONNECTED: (ConnectionState.CONNECTING, ConnectionState.DISCONNECTED),
    ConnectionState.CONNECTING: (ConnectionState.CONNECTED, ConnectionState.DISCONNECTING,
                                 ConnectionState.DISCONNECTED),
    ConnectionState.CONNECTED: (ConnectionState.DISCONNECTING, ConnectionState.DISCONNECTED),
    ConnectionState.DISCONNECTING: (ConnectionState.DISCONNECTED,),
}


class PublishState(IntEnum):
    """Where one outgoing publish is; DONE and FAILED are final."""

    QUEUED = 0  # waiting for a connection or a free window slot
    WAIT_PUBACK = 1
    WAIT_PUBREC = 2
    WAIT_PUBCOMP = 3
    DONE = 4
    FAILED = 5

    def __repr__(self) -> str:
        return f"PublishState.{self.name}"


Props = Optional[Dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Connected:
    """The broker accepted the connection (CONNACK)."""

    session_present: bool
    reason_code: int = 0
    properties: Props = None


@dataclass(frozen=True, slots=True)
class ConnectionRefused:
    """The broker answered CONNECT with a failure reason code."""

    reason_code: int
    reason: str
    properties: Props = None


@dataclass(frozen=True, slots=True)
class Subscribed:
    """A SUBACK: one reason code (granted QoS, or a failure >= 0x80) per filter."""

    packet_id: int
    topics: Tuple[str, ...]
    reason_codes: Tuple[int, ...]
    properties: Props = None


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """An UNSUBACK (MQTT 5 carries a reason code per filter; before it, all are 0)."""

    packet_id: int
    topics: Tuple[str, ...]
    reason_codes: Tuple[int, ...]
    properties: Props = None


@dataclass(frozen=True, slots=True)
class Disconnected:
    """A connection ended. ``by_server``: the broker sent DISCONNECT (MQTT 5) with ``reason_code``
    and ``properties`` (reason string, server reference...). Otherwise the cause was local:
    ``error`` is the exception (socket error, keep-alive timeout, TLS failure), or None for a
    disconnect the application asked for. ``will_reconnect``: the client will try again."""

    reason_code: int
    reason: str
    properties: Props = None
    by_server: bool = False
    error: Optional[BaseException] = None
    will_reconnect: bool = False


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """An MQTT 5 AUTH packet from the broker (enhanced authentication); answer with ``auth()``."""

    reason_code: int
    properties: Props = None


__all__ = [
    "AuthRequest", "ConnectionRefused", "ConnectionState", "Connected", "Disconnected",
    "PublishState", "Subscribed", "TRANSITIONS", "Unsubscribed",
]
