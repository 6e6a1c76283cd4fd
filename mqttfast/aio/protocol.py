"""The asyncio client's side of the transport, and its message iterator.

``ConnectionProtocol`` is one connection attempt's ``asyncio.BufferedProtocol``: it receives into
a buffer of its own (the Proactor loop fills it after ``get_buffer`` returns) and forwards every
call to the Client, which ignores the calls of an attempt it has given up on.

``WebSocketProtocol`` is the same for ``ws://`` and ``wss://``: it drives the sans-IO
``mqttfast.websocket.WebSocket`` (the sync loop's too): the upgrade request once TCP (and TLS) is
up, the 101 answer, then it unwraps the broker's frames before the Client sees the bytes and
wraps the Client's in masked binary frames. A plain connection never runs any of it.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Optional, Union

from ..codec import Publish
from ..errors import ConnectionLost
from ..loop import RECV_SIZE
from ..websocket import WebSocket, WebSocketError
from ..websocket import frame as ws_frame

if TYPE_CHECKING:
    from .client import Client


class ConnectionProtocol(asyncio.BufferedProtocol):
    """One connection attempt's protocol object: forwards the transport's calls to the Client,
    which ignores those of an attempt it has already given up on."""

    ws: Optional[WebSocket] = None  # a WebSocketProtocol's

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
        self.client._received(self, self.view[:nbytes])

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


class WebSocketProtocol(ConnectionProtocol):
    """A ``ws://`` / ``wss://`` connection attempt: the upgrade, then MQTT inside WebSocket frames.

    The Client starts its session only once the broker accepted the upgrade (``_made``), feeds
    the MQTT bytes unwrapped here to ``Session.receive``, and hands what it writes to ``wrap``,
    which also puts the pending control frames (pongs) in front. The transport counts frame bytes;
    ``sent`` turns what it has let go of back into MQTT bytes for ``Session.sent``.
    """

    ws: WebSocket

    def __init__(self, client: "Client", ws: WebSocket) -> None:
        super().__init__(client)
        self.ws = ws
        self.unsent = 0  # MQTT bytes handed to the transport inside frames, not known sent
        self.ending = False  # our close frame is out

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.client._proto is not self:
            transport.abort()  # type: ignore[attr-defined]  # an attempt given up on
            return
        transport.write(self.ws.request())  # type: ignore[attr-defined]

    def buffer_updated(self, nbytes: int) -> None:
        client, ws = self.client, self.ws
        if client._proto is not self:
            return
        data = self.view[:nbytes]
        try:
            if not ws.open:
                rest = ws.receive_handshake(data)
                if rest is None:
                    return
                if ws.receive(rest):
                    raise WebSocketError("the broker sent MQTT data before the CONNECT")
                if ws.close_code is None:
                    client._made(self)  # the session starts: CONNECT goes out in a frame
                    return
                received = b""
            else:
                received = ws.receive(data)
        except WebSocketError as exc:
            client._end(self, exc if self.started else ConnectionLost(
                f"WebSocket upgrade to {client._where()} failed: {exc}"))
            return
        if received:
            client._received(self, received)  # before a close in the same read
        if ws.close_code is not None:
            if client._proto is self:
                self.send_control()  # the close's echo, best effort
                client._end(self, ConnectionLost(f"the broker closed the WebSocket "
                                                 f"({ws.close_code} {ws.close_reason})".rstrip()))
        elif ws.control and client._proto is self:
            client._schedule_flush()  # a pong to send

    def wrap(self, data: Union[bytes, bytearray, memoryview]) -> bytes:
        """The MQTT bytes ``data`` (may be empty) in a masked binary frame, after any control
        frame waiting to go."""
        ws = self.ws
        self.unsent += len(data)
        framed = ws_frame(data) if data else b""
        if ws.control:
            framed = bytes(ws.control) + framed
            ws.control.clear()
        return framed

    def sent(self, left: int) -> int:
        """The transport holds ``left`` bytes: the MQTT bytes now known to be sent. At most
        ``left`` of those still held are MQTT, so this never runs ahead of the socket, and it is
        exact once the transport is empty."""
        unsent = self.unsent
        now = left if left < unsent else unsent
        self.unsent = now
        return unsent - now

    def send_control(self) -> None:
        """Write the queued control frames now (on the way out: nothing is counted)."""
        ws, transport = self.ws, self.transport
        if ws.control and transport is not None and not transport.is_closing():
            transport.write(bytes(ws.control))
        ws.control.clear()

    def end_frame(self) -> None:
        """We end an accepted WebSocket (no close from the broker yet): say so with a close
        frame, after whatever the transport holds (once; before any ``write_eof``)."""
        ws = self.ws
        if ws.open and ws.close_code is None and not self.ending:
            self.ending = True
            ws.control += ws.close_frame()
            self.send_control()


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


__all__ = ["ConnectionProtocol", "MessageIterator", "WebSocketProtocol"]
