"""What the asyncio client's publishes and requests return: the sync client's handles, awaitable.

``wait()`` is a coroutine and every handle can be awaited itself; the Client wakes a record's
waiters only when that record completes, and makes a Future only for a coroutine that waits.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Generator, List, Optional, Tuple

from ..errors import MQTTError
from ..events import PublishState
from ..session import Outgoing

if TYPE_CHECKING:
    from .client import Client

_DONE = PublishState.DONE


class PublishFailed(MQTTError):
    """The broker answered a QoS 1/2 publish with a failure reason code (>= 0x80, MQTT 5), or it
    could not be sent (``reason_code`` 0, ``handle.error`` says why)."""

    def __init__(self, handle: Any) -> None:
        super().__init__(f"publish to {handle.topic!r} failed: {handle.error}")
        self.handle = handle
        self.reason_code = handle.reason_code


class PublishHandle(Outgoing):
    """A tracked publish (QoS 1/2, or QoS 0 queued while not connected), as in ``mqttfast.Client``,
    but ``wait()`` is a coroutine (and the handle itself can be awaited). Each Client makes its own
    subclass with ``_client`` as a class attribute (no attribute store per message)."""

    __slots__ = ()
    _client: "Client"

    async def wait(self, timeout: Optional[float] = None) -> bool:
        """True once acknowledged; False when it failed or ``timeout`` passed first."""
        if self.state < _DONE:
            await self._client._wait(lambda: self.state >= _DONE, timeout, self)
        return self.state == _DONE

    def __await__(self) -> Generator[Any, None, bool]:
        return self.wait().__await__()

    @property
    def is_published(self) -> bool:
        return self.state == _DONE


class WrittenHandle:
    """A QoS 0 publish: done once the stream up to its mark left the transport's buffer, ok
    unless the connection dropped first. Consecutive QoS 0 publishes of one write share a handle
    (as in ``mqttfast.Client``)."""

    __slots__ = ("_client", "_mark", "_taken")
    qos = 0

    def __init__(self, client: "Client", mark: int, taken: int) -> None:
        self._client = client
        self._mark = mark
        self._taken = taken

    @property
    def done(self) -> bool:
        return self._client.session.written(self._mark) is not None

    @property
    def ok(self) -> bool:
        return self._client.session.written(self._mark) is True

    is_published = ok

    @property
    def error(self) -> Optional[str]:
        return "the connection dropped before it was written" if \
            self._client.session.written(self._mark) is False else None

    async def wait(self, timeout: Optional[float] = None) -> bool:
        client = self._client
        written = client.session.written
        if written(self._mark) is None:
            client._flush()
            if written(self._mark) is None:
                await client._wait(lambda: written(self._mark) is not None, timeout, writes=True)
        return written(self._mark) is True

    def __await__(self) -> Generator[Any, None, bool]:
        return self.wait().__await__()


class BatchHandle:
    """Several publishes at once (``publish_many``): ok once all succeeded."""

    __slots__ = ("handles",)

    def __init__(self, handles: List[Any]) -> None:
        self.handles = handles

    @property
    def done(self) -> bool:
        return all(h.done for h in self.handles)

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.handles)

    @property
    def error(self) -> Optional[str]:
        for handle in self.handles:
            if handle.error:
                return handle.error
        return None

    async def wait(self, timeout: Optional[float] = None) -> bool:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        for handle in self.handles:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            if not await handle.wait(left):
                return False
        return True

    def __await__(self) -> Generator[Any, None, bool]:
        return self.wait().__await__()


class RequestHandle:
    """A SUBSCRIBE or UNSUBSCRIBE: ok once acknowledged; ``reason_codes`` holds one code per
    filter (granted QoS 0-2, or a failure >= 0x80)."""

    __slots__ = ("packet_id", "topics", "reason_codes", "properties", "error", "_client")

    def __init__(self, client: "Client", packet_id: int, topics: Tuple[str, ...]) -> None:
        self._client = client
        self.packet_id = packet_id
        self.topics = topics
        self.reason_codes: Optional[Tuple[int, ...]] = None
        self.properties: Optional[dict] = None
        self.error: Optional[str] = None

    @property
    def done(self) -> bool:
        return self.reason_codes is not None or self.error is not None

    @property
    def ok(self) -> bool:
        return self.reason_codes is not None

    async def wait(self, timeout: Optional[float] = None) -> bool:
        if not self.done:
            await self._client._wait(lambda: self.done, timeout)
        return self.ok

    def __await__(self) -> Generator[Any, None, bool]:
        return self.wait().__await__()

    def __repr__(self) -> str:
        state = "ok" if self.ok else (f"failed: {self.error}" if self.error else "pending")
        return f"<RequestHandle id={self.packet_id} {list(self.topics)} {state}>"


__all__ = ["BatchHandle", "PublishFailed", "PublishHandle", "RequestHandle", "WrittenHandle"]
