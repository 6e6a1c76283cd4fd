"""Helpers shared by the ``test_client_*`` integration tests (this module holds no tests).

Every wait is bounded: ``wait_until`` polls a predicate up to a timeout, ``Inbox`` collects what a
client's ``on_message`` receives and can wait for a count. Topics are unique per test (``topic()``)
so tests sharing the module-scoped broker never see each other's messages.
"""
from __future__ import annotations

import itertools
import os
import threading
import time
from typing import Any, Callable, Iterator, List, Optional, Tuple

import mqttfast

HOST = "127.0.0.1"
# A broker log quiet enough for tests that move many messages ("information" is still needed:
# mosquitto flushes its log file on it, and tests/broker.py waits for the "running" line).
QUIET_LOG = ("error", "warning", "notice", "information")

_counter = itertools.count()


def uid(prefix: str = "t") -> str:
    """A short unique name (fits MQTT 3.1's 23-character client identifiers)."""
    return f"{prefix}{os.getpid() % 10000}-{next(_counter)}"


def topic(name: str = "t") -> str:
    return f"mqttfast-test/{uid(name)}"


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true (returns True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return bool(predicate())
        time.sleep(interval)
    return True


class Inbox:
    """Collects messages handed to ``on_message`` (called in the client's loop thread)."""

    def __init__(self) -> None:
        self.messages: List[Any] = []
        self._cond = threading.Condition()

    def __call__(self, msg: Any) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self.messages)

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """True once at least ``count`` messages arrived, False after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    @property
    def payloads(self) -> List[bytes]:
        return [m.payload for m in self.messages]

    @property
    def topics(self) -> List[str]:
        return [m.topic for m in self.messages]


def connected_client(port: int, *, inbox: Optional[Inbox] = None, host: str = HOST,
                     keepalive: int = 60, **options: Any) -> mqttfast.Client:
    """A ``Client(**options)`` connected to ``host:port`` (and delivering to ``inbox``)."""
    options.setdefault("client_id", uid("c"))
    client = mqttfast.Client(**options)
    if inbox is not None:
        client.on_message = inbox
    client.connect(host, port, keepalive=keepalive, timeout=10)
    return client


def aio_client_recording_disconnects(prefix: str, **options: Any) -> Tuple[Any, List[Any]]:
    """A new MQTT 5 ``mqttfast.aio.Client(**options)`` (not connected) and the list its
    ``on_disconnect`` appends to. mqttfast.aio is imported here, on first use, as in the tests."""
    import mqttfast.aio as aio

    ended: List[Any] = []
    client = aio.Client(client_id=uid(prefix), protocol=5, **options)
    client.on_disconnect = ended.append
    return client, ended


def granted(handle: Any, timeout: float = 5.0) -> List[int]:
    """The reason codes (granted QoS) of a subscribe / unsubscribe handle, once acknowledged."""
    assert handle.wait(timeout), f"not acknowledged: {handle!r}"
    return list(handle.reason_codes)


def shutdown(*clients: Optional[mqttfast.Client]) -> None:
    """Best-effort teardown: disconnect (or just stop) every client, ignoring errors."""
    for client in clients:
        if client is None:
            continue
        try:
            if client.is_connected:
                client.disconnect(timeout=2.0)
            else:
                client.close()
        except Exception:  # noqa: BLE001 - teardown must go on
            pass


def chunks(n: int, prefix: bytes = b"m") -> Iterator[bytes]:
    """``n`` distinct payloads."""
    return (b"%s%07d" % (prefix, i) for i in range(n))
