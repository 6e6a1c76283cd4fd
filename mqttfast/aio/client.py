"""The asyncio Client: the same sans-IO ``Session`` and codec as ``mqttfast.Client``, on the running
event loop.

It talks to the socket through an ``asyncio.BufferedProtocol`` and the transport of
``loop.create_connection`` (no ``add_reader``), so it runs on the default loop, on uvloop and on
Windows' Proactor loop. The protocol work is the session's: this module only moves bytes (the
session's ``take_output`` to ``transport.write``, what the transport has let go of back through
``Session.sent``, received bytes into ``Session.receive``), arms one keep-alive timer from
``Session.next_deadline`` with ``loop.call_at``, and turns the session's events into awaitables.
Over ``ws://`` / ``wss://`` the protocol object (``WebSocketProtocol``) upgrades the connection
and unwraps and wraps WebSocket frames with the sync client's sans-IO ``mqttfast.websocket``; a
plain connection's reads and writes do none of that work.

Hot paths create no Task, Future or lock per message: ``publish_nowait`` at QoS 0 appends to the
session's stream and schedules at most one flush per batch; received QoS 0 messages go from one
``recv_into`` buffer through the codec into a bounded ``deque`` that ``messages()`` pops. A Future
is made only when a coroutine really has to wait (an acknowledgement, room, an empty queue).

Everything runs on one event loop, the one ``connect()`` ran on: call the client from coroutines
and callbacks of that loop only (``loop.call_soon_threadsafe`` from elsewhere). Callbacks
(``on_message``, ``on_connect``, ``on_disconnect``, ``on_auth``) are plain functions called in the
loop, one at a time, in the order things happened.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import socket
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Sequence, Union

from ..batching import DEFAULT_READ_DELAY, ReadBatcher, batcher_for, check_read_delay, set_lowat
from ..client import AckableMessage, tls_context
from ..codec import Publish, Subscription, Will
from ..constants import MAX_PACKET_SIZE, MAX_QUEUED_BYTES, MQTT_5
from ..errors import ConnectionLost, ConnectRefused, MQTTError, NotConnected, ProtocolError, QueueFull
from ..events import (
    AuthRequest,
    ConnectionRefused,
    Connected,
    Disconnected,
    PublishState,
    Subscribed,
    Unsubscribed,
)
from ..loop import Backoff
from ..quickack import ack_now, available, check_quickack
from ..session import CONNECTED, DISCONNECTED, Outgoing, Session, subscriptions_from
from ..store import MemoryStore
from ..url import is_url
from ..url import target as url_target
from ..websocket import WebSocket, websocket_for
from .handles import BatchHandle, PublishFailed, PublishHandle, RequestHandle, WrittenHandle
from .protocol import ConnectionProtocol, MessageIterator, WebSocketProtocol

log = logging.getLogger("mqttfast")

Payload = Union[bytes, bytearray, memoryview, str]
_DONE = PublishState.DONE
_INF = float("inf")
FLUSH_AT = 64 * 1024  # publish_nowait hands the stream to the transport at this size, not later
# At most this much goes to the transport per write while it keeps up. The default loop's
# transport holds what the socket refused in one bytearray and shifts it after every send: handed
# megabytes at once (a backlog built up while it was paused), it moved the rest each time, which
# cost the publisher more CPU than everything else it did (benchmarks/bench_aio.py qos0-publish).
WRITE_SLICE = 256 * 1024
WHEN_FULL = ("pause", "drop")


class GaveUp(ConnectionLost):
    """Reconnecting stopped: the ``Backoff``'s ``max_attempts`` were used up. ``attempts`` says
    how many were made; ``last_error`` (also ``__cause__``) is why the last one failed."""

    def __init__(self, message: str, attempts: int, last_error: Optional[BaseException]) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last_error = last_error


class Client:
    """An asyncio MQTT 3.1 / 3.1.1 / 5.0 client.

    >>> async with Client(client_id="ingest-1", protocol=5, reconnect=True) as c:
    ...     await c.connect("127.0.0.1", 1883)
    ...     await c.subscribe("sensors/#", qos=1)
    ...     await c.publish("cmd/x", b"on", qos=1)       # once acknowledged (QoS 0: written)
    ...     c.publish_nowait("raw/1", b"...")             # the fast path
    ...     async for m in c.messages(): ...

    The options are those of ``mqttfast.Client`` (minus the threading ones), plus
    ``max_messages`` (the ``messages()`` queue's bound) and ``when_full``: ``"pause"`` stops
    reading from the socket while the queue is full (TCP back-pressure: the broker holds the
    rest; keep-alive still runs), ``"drop"`` discards new messages and counts them in
    ``dropped``.
    """

    def __init__(self, client_id: str = "", protocol: int = 4, *, username: Optional[str] = None,
                 password: Union[str, bytes, None] = None, will: Optional[Will] = None,
                 clean_session: Optional[bool] = None, clean_start: Optional[bool] = None,
                 tls: Union[None, bool, ssl.SSLContext] = None,
                 server_hostname: Optional[str] = None, properties: Optional[dict] = None,
                 session_expiry: Optional[int] = None, max_inflight: Optional[int] = None,
                 max_inflight_qos2: Optional[int] = None, max_queued: int = 1_000_000,
                 max_queued_bytes: int = MAX_QUEUED_BYTES,
                 ack_timeout: Optional[float] = None, max_retries: int = 3,
                 reconnect: Union[bool, Backoff] = False, connect_timeout: float = 10.0,
                 topic_alias_maximum: int = 64, outgoing_aliases: bool = True,
                 max_packet_size: Optional[int] = MAX_PACKET_SIZE,
                 max_buffer: int = 8 * 1024 * 1024,
                 manual_ack: bool = False, store: Optional[MemoryStore] = None,
                 max_messages: int = 10_000, when_full: str = "pause",
                 max_read_delay: float = DEFAULT_READ_DELAY, quickack: bool = False) -> None:
        if clean_session is not None and clean_start is not None and clean_session != clean_start:
            raise ValueError("clean_session and clean_start are the same flag: give one")
        clean = clean_session if clean_session is not None else (
            clean_start if clean_start is not None else True)
        if protocol != MQTT_5 and (properties or session_expiry is not None):
            raise ValueError("properties and session_expiry need protocol=5")
        if when_full not in WHEN_FULL:
            raise ValueError(f"when_full must be 'pause' or 'drop', got {when_full!r}")
        if max_messages.__class__ is not int or max_messages < 1:
            raise ValueError(f"max_messages must be an int >= 1, got {max_messages!r}")
        if max_buffer.__class__ is not int or max_buffer < 1:
            raise ValueError(f"max_buffer must be an int >= 1, got {max_buffer!r}")
        if not (reconnect is True or reconnect is False or isinstance(reconnect, Backoff)):
            raise TypeError(f"reconnect must be a bool or a mqttfast.Backoff, not "
                            f"{type(reconnect).__name__}")
        if not (tls is None or tls is True or tls is False or isinstance(tls, ssl.SSLContext)):
            raise TypeError(f"tls must be True or an ssl.SSLContext, not {type(tls).__name__}")
        connect_props = dict(properties or {})
        if session_expiry is not None:
            connect_props["session_expiry_interval"] = session_expiry
        if tls is True:
            tls = tls_context()
        self.max_read_delay = check_read_delay(max_read_delay)
        self.quickack = check_quickack(quickack)
        self.protocol = protocol
        self.tls: Optional[ssl.SSLContext] = tls or None
        self.server_hostname = server_hostname
        self.reconnect: Optional[Backoff] = Backoff() if reconnect is True else (reconnect or None)
        self.connect_timeout = connect_timeout
        self.max_buffer = max_buffer
        self.max_messages = max_messages
        self.when_full = when_full
        self.manual_ack = manual_ack
        # The session checks every CONNECT parameter here: a bad one raises now.
        self.session = Session(client_id, protocol, clean, username=username, password=password,
                               will=will, properties=connect_props or None,
                               max_inflight=max_inflight, max_inflight_qos2=max_inflight_qos2,
                               max_queued=max_queued, max_queued_bytes=max_queued_bytes,
                               max_buffer=max_buffer,
                               ack_timeout=ack_timeout, max_retries=max_retries,
                               topic_alias_maximum=topic_alias_maximum,
                               outgoing_aliases=outgoing_aliases, max_packet_size=max_packet_size,
                               manual_ack=manual_ack, store=store)
        self._connect_args = (username, password, will, connect_props or None)
        self._handle_cls = type("PublishHandle", (PublishHandle,), {"__slots__": (), "_client": self})
        self._flush_at = min(FLUSH_AT, max_buffer)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._host = ""
        self._port = 0
        self._unix_path: Optional[str] = None  # this connection's Unix socket (a unix:// URL)
        self._ssl: Optional[ssl.SSLContext] = None  # this connection's TLS (mqtts:// adds one)
        self._websocket: Optional[Callable[[], WebSocket]] = None  # ws://, wss://: per attempt
        # The current connection (attempt): its protocol and transport.
        self._proto: Optional[ConnectionProtocol] = None
        self._transport: Optional[asyncio.Transport] = None
        self._ws_proto: Optional[WebSocketProtocol] = None  # _proto, when it frames (ws://)
        self._in_transport = 0  # bytes handed to the transport that it has not sent yet
        # Taken from the session's stream, not handed to the transport yet (WRITE_SLICE): the
        # bytes of _held from _held_at on.
        self._held: Union[bytes, bytearray] = b""
        self._held_at = 0
        self._write_paused = False
        self._flush_scheduled = False
        self._poll_scheduled = False
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_at = _INF
        self._connack: Optional["asyncio.Future[Connected]"] = None  # pending during an attempt
        self._closed_waiter: Optional["asyncio.Future[None]"] = None  # disconnect() waits on it
        self._supervisor: Optional["asyncio.Task[None]"] = None
        self._down: Optional[asyncio.Event] = None  # an established connection dropped
        self._closing = False  # the application asked to stop: no reconnect
        self._established = False  # a CONNACK accepted since connect() was called
        self._ended = False  # closed for good (messages() ends once drained)
        self._end_error: Optional[BaseException] = None
        # Waiting, without a Future per message: generic waiters wake on any progress; a
        # record's own waiters only on its completion.
        self._waiters: List["asyncio.Future[None]"] = []
        self._record_waiters: Dict[Outgoing, List["asyncio.Future[None]"]] = {}
        self._written: Optional[WrittenHandle] = None  # the QoS 0 handle of the current write
        # The messages() inbox: bounded by max_messages (plus, with "pause", one read's worth).
        self._inbox: Deque[Publish] = deque()
        self._inbox_waiter: Optional["asyncio.Future[None]"] = None
        self._iterating = False  # messages() was called: feed the inbox even with on_message
        self._reading_paused = False
        self._resume_at = max_messages // 2
        # The current TCP socket's low-water mark (mqttfast.batching), its socket and timer.
        self._batcher: Optional[ReadBatcher] = None
        self._batch_sock: Any = None
        self._batch_timer: Optional[asyncio.TimerHandle] = None
        self._ack_sock: Any = None  # quickack: the current TCP socket, while it takes the option
        self.dropped = 0  # messages discarded by when_full="drop"
        self._subscriptions: Dict[str, Subscription] = {}
        self._requests: Dict[int, RequestHandle] = {}
        self._asked: Dict[int, List[Subscription]] = {}
        self.connack: Optional[Connected] = None
        self.on_message: Optional[Callable[[Publish], None]] = None
        self.on_connect: Optional[Callable[[Connected], None]] = None
        self.on_disconnect: Optional[Callable[[Disconnected], None]] = None
        self.on_auth: Optional[Callable[[AuthRequest], None]] = None

    # ------------------------------------------------------------------ properties

    @property
    def client_id(self) -> str:
        return self.session.client_id

    @property
    def is_connected(self) -> bool:
        return self.session.state is CONNECTED and self._proto is not None

    @property
    def queued_messages(self) -> int:
        """Messages received and waiting in the ``messages()`` queue."""
        return len(self._inbox)

    @property
    def reading_paused(self) -> bool:
        """Reading from the socket is paused because the ``messages()`` queue is full."""
        return self._reading_paused

    @property
    def pending_bytes(self) -> int:
        """Bytes published and not yet sent (in the session's stream or the transport's buffer)."""
        return self.session.pending_bytes

    # ------------------------------------------------------------------ connecting

    async def connect(self, host: str = "127.0.0.1", port: Optional[int] = None,
                      keepalive: int = 60, timeout: Optional[float] = None, *,
                      ws_headers: Optional[Dict[str, str]] = None) -> Connected:
        """Connect and return the CONNACK; raise ``ConnectRefused`` or ``ConnectionLost`` with the
        cause (refused, unreachable, TLS verification, no CONNACK in time). Bad arguments raise
        here and leave the client as it was. With ``reconnect``, later drops are retried (the
        subscriptions restored); a first attempt that fails raises, it is not retried.

        ``host`` may be a URL (``mqttfast.url``): ``mqtt://user:pass@host:1883``, ``mqtts://``,
        ``unix:///run/mosquitto.sock``, ``ws://host:8080/mqtt`` or ``wss://`` (MQTT over
        WebSocket, subprotocol ``mqtt``, with ``ws_headers`` added to the upgrade request); its
        user name and password are used when the client was given none (a different one
        raises)."""
        if self._proto is not None or (self._supervisor is not None and not self._supervisor.done()):
            raise MQTTError("already connected; call disconnect() first")
        if not isinstance(host, str) or not host:
            raise TypeError(f"host must be a non-empty str, not {host!r}")
        username, password, will, props = self._connect_args
        ssl_context, unix_path, websocket = self.tls, None, None
        if is_url(host):
            to = url_target(host, port, self.tls, username, password, tls_context, websocket=True)
            host, port, unix_path, ssl_context, username, password, ws_path = to
            if ws_path is not None:
                websocket = websocket_for(host, port, ws_path, ws_headers, ssl_context is not None)
        if ws_headers is not None and websocket is None:
            raise ValueError("ws_headers need a ws:// or wss:// URL")
        if port is None:
            port = 8883 if ssl_context is not None else 1883
        if port.__class__ is not int or not 0 <= port < 65536 or (port == 0 and unix_path is None):
            raise ValueError(f"port must be an int 1..65535, got {port!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.session.configure(keepalive, username, password, will, props)
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            self._rebind()
        self._loop = loop
        self._host, self._port = host, port
        self._unix_path, self._ssl, self._websocket = unix_path, ssl_context, websocket
        self._closing = False
        self._established = False
        self._ended = False
        self._end_error = None
        self._down = asyncio.Event() if self.reconnect is not None else None
        result = await self._attempt(timeout if timeout is not None else self.connect_timeout)
        if self._down is not None:
            self._supervisor = loop.create_task(self._supervise(), name="mqttfast-reconnect")
        return result

    def _rebind(self) -> None:
        """A new event loop (a second ``asyncio.run``): nothing of the old one may be used."""
        self._waiters = []
        self._record_waiters = {}
        self._inbox_waiter = None
        self._timer = None
        self._timer_at = _INF
        self._flush_scheduled = self._poll_scheduled = False

    async def _attempt(self, timeout: float) -> Connected:
        """One connection attempt: TCP (and TLS), CONNECT, CONNACK within ``timeout``."""
        loop = self._loop
        assert loop is not None
        websocket = self._websocket
        proto = ConnectionProtocol(self) if websocket is None else \
            WebSocketProtocol(self, websocket())  # a fresh key per attempt
        self._proto = proto
        waiter = self._connack = loop.create_future()
        host, port = self._host, self._port
        try:
            return await asyncio.wait_for(self._open(proto, waiter), timeout)
        except asyncio.TimeoutError:
            self._end(proto, ConnectionLost(f"no CONNACK from {host}:{port} within {timeout:g} s"),
                      retry=False)
            raise ConnectionLost(f"no CONNACK from {host}:{port} within {timeout:g} s") from None
        except BaseException as exc:  # refused, unreachable, cancelled: leave nothing half-open
            self._end(proto, exc if isinstance(exc, MQTTError) else ConnectionLost(str(exc)),
                      retry=False)
            raise
        finally:
            if self._connack is waiter:
                self._connack = None
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # retrieved: the failure is raised above, not logged as lost

    async def _open(self, proto: ConnectionProtocol, waiter: "asyncio.Future[Connected]") -> Connected:
        loop = self._loop
        assert loop is not None
        host, port, path, tls = self._host, self._port, self._unix_path, self._ssl
        hostname = (self.server_hostname or host) if tls is not None else None
        where = self._where()
        try:
            if path is not None:
                await loop.create_unix_connection(lambda: proto, path, ssl=tls,
                                                  server_hostname=hostname)
            else:
                await loop.create_connection(lambda: proto, host, port, ssl=tls,
                                             server_hostname=hostname)
        except ssl.SSLError as exc:
            raise ConnectionLost(f"TLS handshake with {where} failed: {exc}") from exc
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {where}: {exc}") from exc
        return await waiter

    def _where(self) -> str:
        """The broker, for messages."""
        path = self._unix_path
        return path if path is not None else f"{self._host}:{self._port}"

    async def _supervise(self) -> None:
        """Reconnect after an established connection dropped, with the backoff, until the
        client closes or the backoff gives up."""
        backoff, down = self.reconnect, self._down
        assert backoff is not None and down is not None
        try:
            while True:
                await down.wait()
                down.clear()
                if self._closing:
                    return
                attempt = 0
                last: Optional[BaseException] = None
                while True:
                    delay = backoff.delay(attempt)
                    if delay is None:
                        self._finish(GaveUp(f"gave up reconnecting to {self._host}:{self._port} "
                                            f"after {attempt} attempts: {last}", attempt, last))
                        return
                    await asyncio.sleep(delay)
                    if self._closing:
                        return
                    attempt += 1
                    try:
                        await self._attempt(self.connect_timeout)
                    except ConnectRefused as exc:  # an answer, not a glitch: do not retry
                        self._finish(exc)
                        return
                    except MQTTError as exc:
                        last = exc
                        log.info("reconnect attempt %d to %s:%s failed: %s", attempt,
                                 self._host, self._port, exc)
                        continue
                    break  # connected (a drop from now on sets ``down`` again)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # pragma: no cover - a bug; make it visible
            log.exception("mqttfast reconnect task crashed")
            self._finish(exc)

    # ------------------------------------------------------------------ from the transport

    def _made(self, proto: ConnectionProtocol) -> None:
        transport = proto.transport
        assert transport is not None
        if proto is not self._proto:
            transport.abort()  # an attempt given up on (timed out, cancelled)
            return
        self._transport = transport
        self._ws_proto = proto if isinstance(proto, WebSocketProtocol) else None
        self._in_transport = 0
        self._held, self._held_at = b"", 0
        self._write_paused = False
        self._reading_paused = False
        proto.started = True
        now = self._now()
        self._start_batching(transport, now)
        self.session.start(now)
        self._flush()

    def _start_batching(self, transport: asyncio.BaseTransport, now: float) -> None:
        """Read in batches on a TCP socket that takes a low-water mark (not on a Unix one, which
        ignores it, nor on the Proactor loop, whose reads do not wait for readiness); with
        ``quickack``, acknowledge every read at once on a TCP socket (any loop)."""
        self._stop_batching()
        sock = transport.get_extra_info("socket")
        self._ack_sock = sock if self.quickack and available(sock) else None
        if sock is None or self.max_read_delay <= 0 or \
                sock.family not in (socket.AF_INET, socket.AF_INET6) or \
                isinstance(self._loop, getattr(asyncio, "ProactorEventLoop", ())):
            return
        self._batcher = batcher_for(sock, self.max_read_delay, now)
        self._batch_sock = sock if self._batcher is not None else None

    def _stop_batching(self) -> None:
        self._batcher = self._batch_sock = self._ack_sock = None
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._batch_timer = None

    def _batch_due(self) -> None:
        """The low-water mark's timer: no byte waits in the socket longer than the delay."""
        self._batch_timer = None
        batcher = self._batcher
        if batcher is None:
            return
        now = self._now()
        if batcher.tail(now):
            set_lowat(self._batch_sock, 1)  # the loop sees the socket readable if bytes wait
        due = batcher.due()
        if due is not None:
            self._batch_timer = self._loop.call_at(due, self._batch_due)  # type: ignore[union-attr]

    def _now(self) -> float:
        loop = self._loop
        assert loop is not None
        return loop.time()

    def _received(self, proto: ConnectionProtocol, data: Any) -> None:
        """``data``: what one read brought (MQTT bytes, already out of their frames on ws://)."""
        if proto is not self._proto:
            return
        session = self.session
        now = self._now()
        if self._ack_sock is not None and not ack_now(self._ack_sock):
            self._ack_sock = None
        batcher = self._batcher
        if batcher is not None:
            lowat = batcher.read(len(data), now)
            if lowat:
                set_lowat(self._batch_sock, lowat)
                if lowat > 1 and self._batch_timer is None:
                    self._batch_timer = self._loop.call_at(  # type: ignore[union-attr]
                        now + batcher.delay, self._batch_due)
        before = len(session.out)
        try:
            messages = session.receive(data, now)
        except MQTTError as exc:
            error = exc if isinstance(exc, ProtocolError) else ProtocolError(str(exc))
            cause = session.abort(error)  # MQTT 5: a DISCONNECT with the reason, last
            transport = self._transport
            if cause is not None and transport is not None:
                self._flush(everything=True)  # what was held, then the DISCONNECT
                transport.close()  # the DISCONNECT goes out, then FIN (not abort's RST)
            self._end(proto, error, cause)
            return
        if batcher is not None and len(session.out) > before and batcher.answered(now):
            set_lowat(self._batch_sock, 1)  # the broker may wait for these acks: read as it comes
        if session.events or session.completed:
            if not self._report(messages):
                return
        elif messages:
            self._deliver(messages)
        if session.out or self._in_transport:
            self._flush()

    def _lost(self, proto: ConnectionProtocol, exc: Optional[Exception]) -> None:
        closed = self._closed_waiter
        if closed is not None and proto is self._proto and not closed.done():
            closed.set_result(None)
        if proto is not self._proto:
            return
        if self._closing:
            error: Optional[BaseException] = None
        elif exc is not None:
            error = ConnectionLost(f"connection lost: {exc}")
        else:
            error = ConnectionLost("the broker closed the connection")
        self._end(proto, error)

    # ------------------------------------------------------------------ writing

    def _schedule_flush(self) -> None:
        # Paused: resume_writing flushes. Scheduling one anyway cost a Handle per message.
        if not self._flush_scheduled and self._transport is not None and not self._write_paused:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)  # type: ignore[union-attr]

    def _flush(self, everything: bool = False) -> None:
        """Hand the session's stream to the transport, WRITE_SLICE at a time, until it asks us to
        pause (``everything``: all of it regardless, on the way out), then report what the
        transport has sent."""
        self._flush_scheduled = False
        transport = self._transport
        if transport is None:
            return
        session = self.session
        ws_proto = self._ws_proto
        wrote = False
        while everything or not self._write_paused:
            held, at = self._held, self._held_at
            if at == len(held):
                if not session.out:
                    break
                held, at = self._held, self._held_at = session.take_output(), 0
            data: Union[bytes, bytearray, memoryview]
            if everything or len(held) - at <= WRITE_SLICE:
                data = memoryview(held)[at:] if at else held
                self._held, self._held_at = b"", 0
            else:
                data = memoryview(held)[at:at + WRITE_SLICE]
                self._held_at = at + WRITE_SLICE
            if ws_proto is not None:
                data = ws_proto.wrap(data)
            self._in_transport += len(data)
            transport.write(data)  # may call pause_writing before it returns
            wrote = True
        if wrote:
            if self._waiters:  # room in the stream for a publisher waiting on max_buffer
                self._notify()
        elif ws_proto is not None and ws_proto.ws.control:  # a pong, nothing else
            control = ws_proto.wrap(b"")
            self._in_transport += len(control)
            transport.write(control)
        if self._in_transport:
            self._account(transport)
        if self._timer is None:
            self._rearm()

    def _unhanded(self) -> int:
        """Bytes published and not yet handed to the transport: what ``max_buffer`` bounds."""
        return len(self.session.out) + len(self._held) - self._held_at

    def _account(self, transport: asyncio.Transport) -> None:
        left = transport.get_write_buffer_size()
        sent = self._in_transport - left
        if sent > 0:
            self._in_transport = left
            if self._ws_proto is not None:  # frames' bytes: count the MQTT ones in them
                sent = self._ws_proto.sent(left)
                if not sent:
                    return
            session = self.session
            session.sent(sent, self._now())
            if session.completed:
                self._completed(session.take_completed())
            if self._waiters:
                self._notify()

    def _poll_written(self) -> None:
        """Someone waits for bytes the transport still holds, and transports do not say when they
        let them go: look again in a millisecond while anyone waits."""
        self._poll_scheduled = False
        transport = self._transport
        if transport is not None and self._in_transport:
            self._flush()
            if self._waiters and self._in_transport:
                self._poll_scheduled = True
                self._loop.call_later(0.001, self._poll_written)  # type: ignore[union-attr]

    async def drain(self) -> None:
        """Wait until the bytes published so far are down to what one flush hands the transport
        (``await`` it in a ``publish_nowait`` loop to keep the write buffer small)."""
        self._flush()
        if self._unhanded() >= self._flush_at or self._write_paused:
            await self._wait(lambda: self._transport is None or (
                self._unhanded() < self._flush_at and not self._write_paused), None)

    # ------------------------------------------------------------------ timers

    def _rearm(self) -> None:
        deadline = self.session.next_deadline()
        if deadline is not None and deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._on_timer)  # type: ignore[union-attr]

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = _INF
        if self._proto is None:
            return
        session = self.session
        now = self._now()
        if self._reading_paused:
            session.hold_input(now)  # our consumer is behind, not the broker silent
        session.tick(now)
        if session.events or session.completed:
            if not self._report([]):
                return
        self._flush()
        self._rearm()

    # ------------------------------------------------------------------ what the session says

    def _report(self, messages: List[Any]) -> bool:
        """Act on the session's events and completions, then deliver ``messages`` (received
        before whatever ended the connection); False when the connection ended."""
        session = self.session
        events = session.take_events()
        completed = session.take_completed()
        end: Any = None
        for event in events:
            cls = event.__class__
            if cls is Connected:
                self._on_connected(event)
            elif cls is Subscribed or cls is Unsubscribed:
                handle = self._requests.pop(event.packet_id, None)
                asked = self._asked.pop(event.packet_id, None)
                if asked is not None:
                    for sub, code in zip(asked, event.reason_codes, strict=False):
                        if code < 0x80:
                            self._subscriptions[sub.topic] = sub
                if handle is not None:
                    handle.properties = event.properties
                    handle.reason_codes = event.reason_codes
            elif cls is AuthRequest:
                if self.on_auth is not None:
                    self._call(self.on_auth, event)
            elif cls is ConnectionRefused or cls is Disconnected:
                end = event
        if completed:
            self._completed(completed)
        if self._waiters:
            self._notify()
        if messages:
            self._deliver(messages)
        if end is None:
            return True
        proto = self._proto
        assert proto is not None
        if end.__class__ is ConnectionRefused:
            self._end(proto, ConnectRefused(end.reason_code, end.reason, end.properties),
                      cause=end, retry=False)
        elif end.by_server:
            self._end(proto, ConnectionLost(f"the broker disconnected: {end.reason}"), cause=end)
        else:  # keep-alive timeout, found by the session
            self._end(proto, ConnectionLost(end.reason), cause=end)
        return False

    def _on_connected(self, event: Connected) -> None:
        self.connack = event
        if not event.session_present and self._subscriptions and self._established:
            # A reconnect without a session: restore the subscriptions the broker had granted.
            try:
                subs = list(self._subscriptions.values())
                pid = self.session.subscribe(subs)
                self._asked[pid] = subs
            except MQTTError:
                log.exception("restoring the subscriptions failed")
        self._established = True
        if self._proto is not None:
            self._proto.established = True
        waiter = self._connack
        if waiter is not None and not waiter.done():
            waiter.set_result(event)
        self._rearm()
        if self.on_connect is not None:
            self._call(self.on_connect, event)

    def _completed(self, completed: List[Outgoing]) -> None:
        waiting = self._record_waiters
        if waiting:
            for record in completed:
                futures = waiting.pop(record, None)
                if futures is not None:
                    for fut in futures:
                        if not fut.done():
                            fut.set_result(None)

    def _deliver(self, messages: List[Any]) -> None:
        if self.manual_ack:
            messages = [self._ackable(m) if m.qos else m for m in messages]
        on_message = self.on_message
        if on_message is not None:
            for message in messages:
                try:
                    on_message(message)
                except Exception:
                    log.exception("on_message callback raised")
            if not self._iterating:
                return
        inbox = self._inbox
        room = self.max_messages - len(inbox)
        if len(messages) <= room:
            inbox.extend(messages)
        elif self.when_full == "drop":
            if room > 0:
                inbox.extend(messages[:room])
            self.dropped += len(messages) - max(room, 0)
        else:
            inbox.extend(messages)
        if len(inbox) >= self.max_messages and self.when_full == "pause" and \
                not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()
        waiter = self._inbox_waiter
        if waiter is not None:
            self._inbox_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _resume_reading(self) -> None:
        self._reading_paused = False
        if self._transport is not None:
            self._transport.resume_reading()

    def _ackable(self, message: Publish) -> Publish:
        wrapped = AckableMessage(message.topic, message.payload, message.qos, message.packet_id,
                                 message.retain, message.dup, message.properties)
        wrapped._ack_token = (message.packet_id, self.session.epoch)  # type: ignore[attr-defined]
        wrapped._client = self  # type: ignore[attr-defined]
        return wrapped

    @staticmethod
    def _call(fn: Callable[[Any], None], arg: Any) -> None:
        try:
            fn(arg)
        except Exception:
            log.exception("callback %r raised", fn)

    # ------------------------------------------------------------------ a connection ends

    def _end(self, proto: ConnectionProtocol, error: Optional[BaseException], cause: Any = None,
             retry: bool = True) -> None:
        """The connection of ``proto`` is over (once; later calls for it do nothing): close the
        transport, tell the session, fail what cannot complete, decide what comes next."""
        if proto is not self._proto:
            return
        self._proto = None
        self._ws_proto = None
        self._stop_batching()
        transport, self._transport = self._transport, None
        if transport is None:
            transport = proto.transport
        if transport is not None and not transport.is_closing():
            if error is None:
                if isinstance(proto, WebSocketProtocol):
                    proto.end_frame()
                transport.close()  # the application asked: hand over what is queued, then FIN
            else:
                transport.abort()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = _INF
        self._write_paused = False
        self._reading_paused = False
        self._held, self._held_at = b"", 0  # gone with the transport, as what it held
        session = self.session
        if proto.started:
            session.connection_lost(str(error) if error else "disconnected")
        session.take_events()
        self._completed(session.take_completed())
        requests, self._requests = self._requests, {}
        self._asked.clear()
        reason = str(error) if error else "disconnected by the client"
        for handle in requests.values():
            handle.error = f"the connection closed before the acknowledgement: {reason}"
        waiter = self._connack
        if waiter is not None and not waiter.done():
            waiter.set_exception(error if error is not None else ConnectionLost(reason))
        # An attempt that never got its CONNACK is its caller's to report (connect() raises,
        # the reconnect task tries again); an established connection's end decides what next.
        will_reconnect = (proto.established and retry and error is not None
                          and not self._closing and self._down is not None)
        if proto.started and self.on_disconnect is not None:
            self._call(self.on_disconnect, _ending(error, cause, will_reconnect))
        if will_reconnect:
            assert self._down is not None
            self._down.set()
        elif proto.established:
            self._finish(error)
        self._notify()

    def _finish(self, error: Optional[BaseException]) -> None:
        """Closed for good: ``messages()`` ends (raising ``error`` when there is one) and every
        waiter wakes to see it."""
        if self._ended:
            return
        self._ended = True
        self._end_error = error
        if self.session.clean_session:
            self.session.fail_all(str(error) if error else "disconnected")
            self._completed(self.session.take_completed())
        waiter = self._inbox_waiter
        if waiter is not None:
            self._inbox_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        for futures in self._record_waiters.values():
            for fut in futures:
                if not fut.done():
                    fut.set_result(None)
        self._record_waiters.clear()
        self._notify()

    # ------------------------------------------------------------------ waiting

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _wait(self, predicate: Callable[[], bool], timeout: Optional[float],
                    record: Optional[Outgoing] = None, writes: bool = False) -> bool:
        """Wait until ``predicate()`` (True), the client closes for good, or ``timeout`` (False).
        With ``record``, wake only on that record's completion; otherwise on any progress."""
        loop = self._loop or asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not predicate():
            if self._ended:
                return False
            fut: "asyncio.Future[None]" = loop.create_future()
            if record is not None:
                self._record_waiters.setdefault(record, []).append(fut)
                if record.state >= _DONE:  # completed meanwhile (nobody was listening)
                    break
            else:
                self._waiters.append(fut)
                if writes and self._in_transport and not self._poll_scheduled:
                    self._poll_scheduled = True
                    loop.call_later(0.001, self._poll_written)
            try:
                if deadline is None:
                    await fut
                else:
                    left = deadline - loop.time()
                    if left <= 0:
                        return predicate()
                    await asyncio.wait_for(fut, left)
            except asyncio.TimeoutError:
                return predicate()
            finally:
                if not fut.done():
                    fut.cancel()
                self._forget_waiter(fut, record)
        return True

    async def _progress(self, timeout: Optional[float]) -> None:
        """Wait for the next notification (any progress), at most ``timeout`` seconds."""
        loop = self._loop or asyncio.get_running_loop()
        fut: "asyncio.Future[None]" = loop.create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            if not fut.done():
                fut.cancel()
            self._forget_waiter(fut, None)

    def _forget_waiter(self, fut: "asyncio.Future[None]", record: Optional[Outgoing]) -> None:
        if record is not None:
            futures = self._record_waiters.get(record)
            if futures is not None and fut in futures:
                futures.remove(fut)
                if not futures:
                    del self._record_waiters[record]
        elif fut in self._waiters:
            self._waiters.remove(fut)

    async def _inbox_wait(self) -> None:
        waiter = self._inbox_waiter
        if waiter is None or waiter.done():
            loop = self._loop or asyncio.get_running_loop()
            waiter = self._inbox_waiter = loop.create_future()
        await asyncio.shield(waiter)  # a cancelled consumer must not cancel the shared waiter

    def _reconnecting(self) -> bool:
        """Connected once, not closed, and a reconnect under way: worth waiting for."""
        return self._supervisor is not None and not self._supervisor.done() and not self._ended \
            and not self._closing

    # ------------------------------------------------------------------ publishing

    def publish_nowait(self, topic: str, payload: Payload = b"", qos: int = 0,
                       retain: bool = False, properties: Optional[dict] = None) -> Any:
        """The fast path: publish without waiting; returns a handle (``await`` it, or its
        ``wait()``, to know the outcome). Bad arguments raise here. ``QueueFull`` when the
        inflight window and ``max_queued`` are taken, or ``max_buffer`` bytes wait for the
        socket (``await drain()`` or ``await publish()`` wait instead)."""
        session = self.session
        if len(session.out) >= self._flush_at:
            if not self._write_paused:  # paused: it would hand nothing
                self._flush()
            unhanded = len(session.out) + len(self._held) - self._held_at  # _unhanded(), inline
            if unhanded >= self.max_buffer:
                raise QueueFull(f"{unhanded} bytes wait for the socket (max_buffer="
                                f"{self.max_buffer}): await drain() or publish()")
        result = session.publish(topic, payload, qos, retain, properties,
                                 self._loop.time() if session.ack_timeout and self._loop else 0.0,
                                 self._handle_cls)
        if result.__class__ is int:  # QoS 0, in the stream: share the write's handle
            handle = self._written
            taken = session.out.taken
            if handle is not None and handle._taken == taken:
                handle._mark = result  # type: ignore[assignment]
            else:
                handle = self._written = WrittenHandle(self, result, taken)  # type: ignore[arg-type]
            result = handle  # type: ignore[assignment]
        if not self._flush_scheduled and not self._write_paused:  # _schedule_flush's test, inline
            self._schedule_flush()
        return result

    async def publish(self, topic: str, payload: Payload = b"", qos: int = 0,
                      retain: bool = False, properties: Optional[dict] = None,
                      timeout: Optional[float] = None) -> Any:
        """Publish and return the handle once the broker acknowledged it (QoS 0: once written).
        Waits for room in the window and the write buffer, and for a reconnect under way.
        Raises ``PublishFailed`` for a refusal, ``ConnectionLost`` when the connection dropped
        first, ``asyncio.TimeoutError`` after ``timeout`` seconds. Cancelling it is safe: a
        message already handed to the session still completes there."""
        loop = self._loop or asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            try:
                handle = self.publish_nowait(topic, payload, qos, retain, properties)
                break
            except (QueueFull, NotConnected):
                if self._ended or self._loop is None or (
                        self.session.state is DISCONNECTED and not self._reconnecting()):
                    raise
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise asyncio.TimeoutError(f"no room to publish to {topic!r} within {timeout} s")
            await self._progress(left)  # an ack, a write, a reconnect: then try again
        left = None if deadline is None else max(0.0, deadline - loop.time())
        if not await handle.wait(left):
            if not handle.done:
                if self._ended:
                    raise ConnectionLost(f"the client closed before the publish to {topic!r} "
                                         f"completed")
                raise asyncio.TimeoutError(f"publish to {topic!r} not acknowledged within "
                                           f"{timeout} s")
            if handle.__class__ is WrittenHandle:
                raise ConnectionLost(f"publish to {topic!r}: {handle.error}")
            if handle.reason_code >= 0x80:
                raise PublishFailed(handle)
            raise ConnectionLost(f"publish to {topic!r} failed: {handle.error}")
        return handle

    def publish_many(self, topic: str, payloads: Iterable[Payload], qos: int = 0,
                     retain: bool = False, properties: Optional[dict] = None) -> BatchHandle:
        """Publish many payloads to one topic without waiting (QoS 0 on a plain connection: one
        codec call for the batch); ``await`` the returned handle for the outcome."""
        session = self.session
        if qos == 0 and qos.__class__ is int and session.plain_qos0:
            if len(session.out) >= self._flush_at:
                if not self._write_paused:
                    self._flush()
                unhanded = self._unhanded()
                if unhanded >= self.max_buffer:
                    raise QueueFull(f"{unhanded} bytes wait for the socket "
                                    f"(max_buffer={self.max_buffer})")
            mark = session.publish_many(topic, payloads, retain, properties)
            self._schedule_flush()
            return BatchHandle([WrittenHandle(self, mark, session.out.taken)])
        return BatchHandle([self.publish_nowait(topic, p, qos, retain, properties)
                            for p in payloads])

    # ------------------------------------------------------------------ subscriptions

    def subscribe_nowait(self, topic: Union[str, Subscription, Sequence[Any]], qos: int = 0,
                         properties: Optional[dict] = None) -> RequestHandle:
        """Send SUBSCRIBE; the handle completes with the SUBACK (``reason_codes``)."""
        subs = subscriptions_from(topic, qos)
        pid = self.session.subscribe(subs, qos, properties)
        handle = RequestHandle(self, pid, self.session.subscription_topics(pid))
        self._requests[pid] = handle
        self._asked[pid] = subs  # remembered for reconnects once the broker grants them
        self._schedule_flush()
        return handle

    async def subscribe(self, topic: Union[str, Subscription, Sequence[Any]], qos: int = 0,
                        properties: Optional[dict] = None,
                        timeout: Optional[float] = None) -> RequestHandle:
        """Subscribe (a filter, (filter, qos), a ``Subscription`` or a list of them) and return
        the acknowledged handle: ``reason_codes`` holds the granted QoS (or failure) per filter.
        Granted subscriptions are restored by themselves after a reconnect that lost the
        session."""
        handle = self.subscribe_nowait(topic, qos, properties)
        return await self._acknowledged(handle, timeout)

    def unsubscribe_nowait(self, topic: Union[str, Sequence[str]],
                           properties: Optional[dict] = None) -> RequestHandle:
        topics = (topic,) if isinstance(topic, str) else tuple(topic)
        pid = self.session.unsubscribe(topics, properties)
        handle = RequestHandle(self, pid, topics)
        self._requests[pid] = handle
        for t in topics:
            self._subscriptions.pop(t, None)
        self._schedule_flush()
        return handle

    async def unsubscribe(self, topic: Union[str, Sequence[str]],
                          properties: Optional[dict] = None,
                          timeout: Optional[float] = None) -> RequestHandle:
        return await self._acknowledged(self.unsubscribe_nowait(topic, properties), timeout)

    async def _acknowledged(self, handle: RequestHandle, timeout: Optional[float]) -> RequestHandle:
        if not await handle.wait(timeout):
            if handle.error is not None:
                raise ConnectionLost(handle.error)
            if self._ended:
                raise ConnectionLost("the client closed before the acknowledgement")
            raise asyncio.TimeoutError(f"{list(handle.topics)} not acknowledged within {timeout} s")
        return handle

    def auth(self, reason_code: int = 0x18, properties: Optional[dict] = None) -> None:
        """Send an MQTT 5 AUTH packet (to answer ``on_auth`` during enhanced authentication)."""
        self.session.auth(reason_code, properties)
        self._schedule_flush()

    def ack(self, message: Publish) -> bool:
        """``manual_ack=True``: acknowledge a QoS 1/2 message (also ``message.ack()``). False when
        its connection is gone: the broker will send it again."""
        token = getattr(message, "_ack_token", None)
        if token is None or self._proto is None:
            return False
        ok = self.session.ack(token[0], token[1])
        self._schedule_flush()
        return ok

    def messages(self) -> MessageIterator:
        """``async for m in c.messages()``: received messages, across reconnects, until the
        client closes (then the iterator ends, or raises the error that closed it, e.g.
        ``GaveUp``). Without ``on_message`` every message is kept for it from the start;
        with ``on_message``, from this call on."""
        self._iterating = True
        return MessageIterator(self)

    # ------------------------------------------------------------------ disconnecting

    async def disconnect(self, reason_code: int = 0, properties: Optional[dict] = None,
                         timeout: float = 5.0) -> None:
        """Send DISCONNECT, end the socket with FIN once it is written, stop reconnecting. Without
        a persistent session what cannot complete fails and the subscriptions are forgotten."""
        session = self.session
        proto = self._proto
        if proto is not None and session.state is CONNECTED:
            session.disconnect(reason_code, properties)  # bad properties raise here
        self._closing = True
        self._stop_supervisor()
        if proto is not None and self._transport is not None:
            transport = self._transport
            loop = self._loop
            assert loop is not None
            closed = self._closed_waiter = loop.create_future()
            self._flush(everything=True)  # the DISCONNECT goes to the transport's buffer regardless
            if self._ws_proto is not None:
                self._ws_proto.end_frame()  # a close frame after the DISCONNECT
            try:
                if transport.can_write_eof():
                    transport.write_eof()  # FIN after the DISCONNECT; the broker then closes
                else:
                    transport.close()
            except OSError:  # the broker reset the connection first: nothing left to end
                transport.close()
            try:
                await asyncio.wait_for(asyncio.shield(closed), timeout)
            except asyncio.TimeoutError:
                pass
            finally:
                self._closed_waiter = None
                self._end(proto, None, retry=False)
        elif proto is not None:
            self._end(proto, None, retry=False)
        if session.clean_session:
            session.fail_all("disconnected")
            self._completed(session.take_completed())
            self._subscriptions.clear()
        self._finish(None)

    async def close(self) -> None:
        """Drop the connection without DISCONNECT (the broker publishes the will) and stop.
        Bytes already queued are handed to the transport first."""
        self._closing = True
        self._stop_supervisor()
        proto = self._proto
        if proto is not None:
            self._flush(everything=True)
            self._end(proto, ConnectionLost("closed by the client"), retry=False)
        self._finish(None)
        await asyncio.sleep(0)  # let the transport run its close

    def _stop_supervisor(self) -> None:
        task = self._supervisor
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        self._supervisor = None

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._proto is not None and self.session.state is CONNECTED:
            await self.disconnect()
        else:
            await self.close()


def _ending(error: Optional[BaseException], cause: Any, will_reconnect: bool) -> Disconnected:
    """The ``Disconnected`` event handed to ``on_disconnect``."""
    if cause is not None and cause.__class__ is Disconnected:
        return Disconnected(cause.reason_code, cause.reason, cause.properties, cause.by_server,
                            error, will_reconnect)
    if cause is not None:  # refused
        return Disconnected(cause.reason_code, cause.reason, cause.properties, False, error,
                            will_reconnect)
    if error is None:
        return Disconnected(0, "disconnected by the client", None, False, None, will_reconnect)
    return Disconnected(0x80, str(error), None, False, error, will_reconnect)


__all__ = ["Client", "GaveUp"]
