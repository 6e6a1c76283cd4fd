"""Where a session's unacknowledged state lives between connections.

The session works on the store's containers directly (plain dicts and a set, so the hot path is a
dict operation), and calls the hooks (``saved``, ``removed``, ``incoming_changed``, ``commit``) only
when ``durable`` is true, so a durable store (``mqttfast.sqlite_store.SQLiteStore``) can mirror each
change to disk, in batches, without slowing the memory store.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Deque, Dict, List, Set


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
        """``record`` (an outgoing QoS 1/2 publish) was queued, sent or changed state."""

    def removed(self, record: Any) -> None:
        """``record`` completed, failed, or is to be stored anew (``saved`` follows)."""

    def incoming_changed(self, packet_id: int, present: bool) -> None:
        """An incoming QoS 2 packet id was recorded (``present``) or released."""

    def commit(self) -> None:
        """Make the changes reported since the last call durable (one transaction)."""

    def attach(self, client_id: str, clean_session: bool) -> List[Any]:
        """Called once by a session with a durable store: the publishes it brought back for
        ``client_id`` (none here)."""
        return []

    def adopt(self, record: Any, key: int) -> None:
        """``record`` is the session's object for the stored publish ``key``."""
