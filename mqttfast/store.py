"""Where a session's unacknowledged state lives between connections.

The session works on the store's containers directly (plain dicts and a set, so the hot path is a
dict operation), and calls the ``saved`` / ``removed`` hooks only when ``durable`` is true, so a
durable store (SQLite, coming) can mirror each change to disk without slowing the memory store.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Deque, Dict, Set


class MemoryStore:
    """Keeps the session in memory: it survives reconnects, not the process."""

    durable = False

    def __init__(self) -> None:
        self.outgoing: Dict[int, Any] = {}  # packet id -> Outgoing, in send order
        self.pending: Deque[Any] = deque()  # Outgoing records waiting for a window slot
        self.incoming: Set[int] = set()  # QoS 2 packet ids received, PUBREL not yet seen

    def clear(self) -> None:
        self.outgoing.clear()
        self.pending.clear()
        self.incoming.clear()

    # Hooks a durable store overrides; the session calls them only when ``durable`` is true.
    def saved(self, record: Any) -> None:
        """``record`` (an outgoing publish) was added or changed state."""

    def removed(self, packet_id: int) -> None:
        """The outgoing publish with ``packet_id`` completed."""

    def incoming_changed(self, packet_id: int, present: bool) -> None:
        """An incoming QoS 2 packet id was recorded (``present``) or released."""
