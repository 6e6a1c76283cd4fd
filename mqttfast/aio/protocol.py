"""The asyncio client's side of the transport, and its message iterator.

``ConnectionProtocol`` is one connection attempt's ``asyncio.BufferedProtocol``: it receives into
a buffer of its own (the Proactor loop fills it after ``get_buffer`` returns) and forwards every
call to the Client, which ignores the calls of an attempt it has given up on.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Optional

from ..codec import Publish
from ..loop import RECV_SIZE

if TYPE_CHECKING:
    from .client import Client


class ConnectionProtocol(asyncio.BufferedProtocol):
    """One connection attempt's protocol object: forwards the transport's calls to the Client,
    which ignores those of an attempt it has already given up on."""

    def __init__(self, client: "Client") -> None:
        self.client = client
        self.transport: Optional[asyncio.Transport] = None
        self.started = False  # the session has started on this connection
        self.established = False  # its CONNACK accepted the connection
        # One buffer per connection: the Proactor loop fills it after get_buffer returns.
        self.buf = bytearray(RECV_SIZE)
        self.view = memoryview(self.buf)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.client._made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self.client._received(self, nbytes)

    def eof_received(self) -> bool:
        return False  # the broker closed its side: close ours

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.client._lost(self, exc)

    def pause_writing(self) -> None:
        if self.client._proto is self:
            self.client._write_paused = True

    def resume_writing(self) -> None:
        if self.client._proto is self:
            self.client._write_paused = False
            self.client._flush()


class MessageIterator:
    """``async for m in client.messages()``: pops the client's bounded inbox; survives
    reconnects; ends when the client is closed (raising the error when that was not asked for)."""

    __slots__ = ("_client",)

    def __init__(self, client: "Client") -> None:
        self._client = client

    def __aiter__(self) -> "MessageIterator":
        return self

    async def __anext__(self) -> Publish:
        client = self._client
        inbox = client._inbox
        while not inbox:
            if client._ended:
                if client._end_error is not None:
                    raise client._end_error
                raise StopAsyncIteration
            await client._inbox_wait()
        message = inbox.popleft()
        if client._reading_paused and len(inbox) <= client._resume_at:
            client._resume_reading()
        return message


__all__ = ["ConnectionProtocol", "MessageIterator"]
