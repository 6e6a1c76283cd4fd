"""The I/O loop: one ``selectors`` loop drives any number of MQTT connections.

The only module that touches sockets. Each ``Connection`` pairs a socket with a sans-IO ``Session``:
it takes the bytes the session queued (``take_output``) and writes them with as few ``send`` calls
as possible, reports what the socket accepted (``Session.sent``), feeds received bytes (read into
one reusable buffer with ``recv_into``) to ``Session.receive``, and hands messages, control events
and completed publishes to its ``Handler``. The MQTT state is the session's; the connection only
knows its socket's phase (``TransportState``). Timers live in one heap; TLS handshakes are
non-blocking; a dropped connection can come back by itself with exponential backoff and jitter.

Threads: the loop is driven by one thread at a time: ``run_once`` / ``run_until`` / ``run_forever``
called while another thread is inside one of them raises ``RuntimeError``.
Other threads may change a session under ``conn.lock`` and then call ``conn.kick()``, which wakes
the loop (once per batch, not once per message); ``call_soon`` runs a function in the loop thread.
Handlers are called at the end of each iteration, one at a time, in order (``Loop.report``); one
that runs past ``stall_after`` gets a stand-in thread that drives the loop until it returns, so
that a slow ``on_message`` never stalls keep-alive (``_StandIn``, ``_Watchdog``).
"""
from __future__ import annotations

import errno
import heapq
import logging
import os
import random
import select as _select
import selectors
import socket
import ssl
import threading
import time
import weakref
from collections import deque
from enum import IntEnum
from typing import Any, Callable, Deque, List, Optional, Tuple

from .batching import DEFAULT_READ_DELAY, ReadBatcher, batcher_for, set_lowat
from .errors import ConnectionLost, MQTTError, ProtocolError
from .events import ConnectionRefused, ConnectionState, Connected, Disconnected
from .quickack import ack_now, available
from .session import Session
from .websocket import WebSocket, WebSocketError
from .websocket import frame as ws_frame

log = logging.getLogger("mqttfast")

RECV_SIZE = 256 * 1024
_monotonic = time.monotonic
_INF = float("inf")
_AF_UNIX = getattr(socket, "AF_UNIX", None)  # absent on some Windows builds
_CONNECTING = ConnectionState.CONNECTING
_CONNECTED = ConnectionState.CONNECTED
_DISCONNECTING = ConnectionState.DISCONNECTING


class TransportState(IntEnum):
    """The socket's phase. Once OPEN, the MQTT state is the session's (``session.state``)."""

    IDLE = 0  # no socket: not opened yet, or waiting to reconnect
    CONNECTING = 1  # TCP connect in progress
    HANDSHAKING = 2  # TLS handshake in progress
    OPEN = 3  # the socket carries MQTT
    CLOSED = 4  # closed for good
    UPGRADING = 5  # WebSocket upgrade request sent, waiting for the 101

    def __repr__(self) -> str:
        return f"TransportState.{self.name}"


IDLE = TransportState.IDLE
CONNECTING = TransportState.CONNECTING
HANDSHAKING = TransportState.HANDSHAKING
OPEN = TransportState.OPEN
CLOSED = TransportState.CLOSED
UPGRADING = TransportState.UPGRADING


class Backoff:
    """Reconnect delays: exponential from ``initial`` up to ``maximum``, with "equal jitter" (half
    the delay fixed, half random) so a fleet of clients does not reconnect in lockstep.

    The default ``maximum`` is 2 s: a client is back at most 2 s after its broker (a 30 s cap left
    handles waiting 27-45 s after a restart, issue 9); a large fleet may pass a longer one."""

    def __init__(self, initial: float = 0.5, maximum: float = 2.0, factor: float = 2.0,
                 max_attempts: Optional[int] = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.max_attempts = max_attempts

    def delay(self, attempt: int) -> Optional[float]:
        """Seconds to wait before reconnect attempt number ``attempt`` (0-based), None to give up."""
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return None
        base = min(self.maximum, self.initial * self.factor ** attempt)
        return base / 2 + random.uniform(0, base / 2)


class Handler:
    """What a connection reports to (the Client, the load generator). Called in the loop thread,
    one call at a time, in order, after the I/O of the loop's iteration (``Loop.report``)."""

    def on_messages(self, conn: "Connection", messages: List[Any]) -> None:
        """Received ``Publish`` packets, in order."""

    def on_events(self, conn: "Connection", events: List[Any], completed: List[Any]) -> None:
        """Control events (``mqttfast.events``) and completed publish records."""

    def on_closed(self, conn: "Connection", event: Disconnected) -> None:
        """The connection ended (``event.will_reconnect`` says whether it comes back)."""

    def on_written(self, conn: "Connection") -> None:
        """The socket accepted bytes (called only while ``conn.notify_writes`` is set)."""

    def on_waiting(self, conn: "Connection") -> None:
        """A report for ``conn`` waits for the handler thread, stuck in a call while a stand-in
        drives the loop (called in the stand-in): the session has moved on meanwhile."""


class Connection:
    """A socket and its session, with what the loop needs to drive it."""

    def __init__(self, loop: "Loop", session: Session, handler: Handler, host: str, port: int, *,
                 ssl_context: Optional[ssl.SSLContext] = None,
                 server_hostname: Optional[str] = None, connect_timeout: float = 10.0,
                 reconnect: Optional[Backoff] = None, retry_first: bool = False,
                 source_address: Optional[Tuple[str, int]] = None,
                 unix_path: Optional[str] = None,
                 websocket: Optional[Callable[[], WebSocket]] = None,
                 max_read_delay: float = DEFAULT_READ_DELAY, quickack: bool = False) -> None:
        self.loop = loop
        self.session = session
        self.handler = handler
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname if server_hostname is not None else host
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect
        self.retry_first = retry_first  # reconnect even before the first CONNACK
        self.source_address = source_address
        self.unix_path = unix_path  # a Unix domain socket instead of host and port
        self.peer = unix_path if unix_path is not None else f"{host}:{port}"  # for messages
        self.websocket = websocket  # makes each connection's WebSocket state (ws://, wss://)
        self.ws: Optional[WebSocket] = None  # the current connection's, once upgrading
        self.max_read_delay = max_read_delay  # batching.py: 0 reads every segment at once
        self._batcher: Optional[ReadBatcher] = None  # the current TCP socket's, once OPEN
        self.quickack = quickack  # quickack.py: acknowledge at once after every read
        self._acking = False  # quickack, on the current socket, while it takes the option
        self._wprefix = 0  # bytes at the front of _wbuf that are WebSocket framing, not MQTT
        self.lock = threading.Lock()  # guards ``session`` against other threads
        self.sock: Optional[socket.socket] = None
        self.phase = IDLE
        self.closing = False  # the user asked to close: no reconnect
        self.was_connected = False  # a CONNACK accepted on some connection
        self.attempt = 0  # reconnect attempts since the last successful CONNACK
        self.notify_writes = False  # someone waits for bytes to be written: call on_written
        self.connected_at = 0.0  # when CONNACK arrived
        self.started_at = 0.0  # when the current connection attempt began
        self._wbuf = bytearray()  # taken from the session, not yet accepted by the socket
        self._woff = 0
        self._want_write = False
        self.flush_queued = False  # a flush is coming: kick() queued one, or we await writability
        self._timer_at = _INF
        self._connect_deadline = _INF
        self._retry_at = _INF
        self._addrs: List[Any] = []

    def __repr__(self) -> str:
        return (f"<Connection {self.session.client_id!r} {self.peer} "
                f"{self.phase.name} {self.session.state.name}>")

    # ------------------------------------------------------------------ called from any thread

    def kick(self) -> None:
        """The session has new bytes to send: have the loop flush them (cheap when already due)."""
        if not self.flush_queued:
            self.flush_queued = True
            loop = self.loop
            loop._dirty.append(self)
            if loop.sleeping and loop._owner_id != threading.get_ident():
                loop.wake()

    @property
    def closed(self) -> bool:
        return self.phase is CLOSED

    # ------------------------------------------------------------------ loop thread only

    def open(self) -> None:
        """Start a (re)connection: resolve, connect without blocking, then TLS and CONNECT."""
        if self.phase is CLOSED:
            return
        self.phase = CONNECTING
        now = _monotonic()
        self.started_at = now
        self._connect_deadline = now + self.connect_timeout
        self._rearm()
        if self.unix_path is not None:
            self._addrs = [(_AF_UNIX, socket.SOCK_STREAM, 0, "", self.unix_path)]
            self._connect_next(None)
            return
        try:
            self._addrs = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            self.close(ConnectionLost(f"cannot resolve {self.peer}: {exc}"))
            return
        self._connect_next(None)

    def _connect_next(self, last_error: Optional[str]) -> None:
        """Try the next resolved address (a name may resolve to ::1 and 127.0.0.1, and the broker
        may listen on only one of them); fail with the last error when none is left."""
        self._drop_socket()
        while self._addrs:
            family, kind, proto, _, addr = self._addrs.pop(0)
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as exc:
                last_error = str(exc)
                continue
            sock.setblocking(False)
            if family != _AF_UNIX:  # no Nagle on TCP; a Unix socket has none to turn off
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.source_address is not None:
                try:
                    sock.bind(self.source_address)
                except OSError as exc:
                    sock.close()
                    self.close(ConnectionLost(f"cannot bind to {self.source_address}: {exc}"))
                    return
            code = sock.connect_ex(addr)
            if family == _AF_UNIX and code in (errno.EAGAIN, errno.EWOULDBLOCK):
                code = errno.ECONNREFUSED  # the listener's backlog is full: not in progress
            if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                sock.close()
                last_error = os.strerror(code)
                continue
            self.sock = sock
            self.loop.selector.register(sock, selectors.EVENT_WRITE, self)
            self._want_write = True
            return
        self.close(ConnectionLost(f"cannot connect to {self.peer}: {last_error}"))

    def _drop_socket(self, drain: bool = False) -> None:
        sock, self.sock = self.sock, None
        self._batcher = None
        if sock is not None and drain:
            # Closing a socket with unread input sends RST, and an RST can make the peer throw
            # away what we sent last (acks, the DISCONNECT): end our side with FIN, then read
            # what is waiting (64 reads at most: a peer that never stops sending, say the body
            # of a packet refused as too large, cannot hold the loop), then close.
            try:
                sock.shutdown(socket.SHUT_WR)
                for _ in range(64):
                    if not sock.recv_into(self.loop.rbuf):
                        break
            except (OSError, ValueError):
                pass
        if sock is not None:
            try:
                self.loop.selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()

    def _tcp_connected(self) -> None:
        assert self.sock is not None
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._connect_next(os.strerror(code))
            return
        if self.ssl_context is not None:
            self.loop.selector.unregister(self.sock)
            try:
                self.sock = self.ssl_context.wrap_socket(
                    self.sock, server_hostname=self.server_hostname, do_handshake_on_connect=False)
            except (ssl.SSLError, OSError, ValueError) as exc:
                self.close(ConnectionLost(f"TLS setup for {self.peer} failed: {exc}"))
                return
            self.loop.selector.register(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE,
                                        self)
            self.phase = HANDSHAKING
            self._handshake()
        else:
            self._transport_up()

    def _handshake(self) -> None:
        assert isinstance(self.sock, ssl.SSLSocket)
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._set_events(selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._set_events(selectors.EVENT_READ | selectors.EVENT_WRITE)
            return
        except (ssl.SSLError, OSError) as exc:
            self.close(ConnectionLost(f"TLS handshake with {self.peer} failed: {exc}"))
            return
        self._transport_up()

    def _transport_up(self) -> None:
        """TCP (and TLS) is up: MQTT starts now, or after the WebSocket upgrade."""
        if self.websocket is None:
            self._start_mqtt()
            return
        assert self.sock is not None
        ws = self.ws = self.websocket()
        request = ws.request()
        try:  # a few hundred bytes into an empty socket buffer: one send takes them
            sent = self.sock.send(request)
        except (OSError, ssl.SSLError) as exc:
            self.close(ConnectionLost(f"WebSocket upgrade to {self.peer} failed: {exc}"))
            return
        if sent != len(request):
            self.close(ConnectionLost(f"WebSocket upgrade to {self.peer} failed: the request "
                                      "did not fit in the socket buffer"))
            return
        self.phase = UPGRADING
        self._set_events(selectors.EVENT_READ)

    def _upgrade(self) -> None:
        """Read the broker's answer to the WebSocket upgrade."""
        sock, ws = self.sock, self.ws
        assert sock is not None and ws is not None
        while True:
            try:
                n = sock.recv_into(self.loop.rbuf)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except OSError as exc:
                self.close(ConnectionLost(f"receive failed: {exc}"))
                return
            if not n:
                self.close(ConnectionLost("the broker closed the connection during the "
                                          "WebSocket upgrade"))
                return
            try:
                rest = ws.receive_handshake(self.loop.rbuf[:n])
                if rest is not None and ws.receive(rest):
                    raise WebSocketError("the broker sent MQTT data before the CONNECT")
            except WebSocketError as exc:
                self.close(ConnectionLost(f"WebSocket upgrade to {self.peer} failed: {exc}"))
                return
            if rest is not None and ws.close_code is not None:
                self._send_control(ws)
                self.close(ConnectionLost(f"the broker closed the WebSocket "
                                          f"({ws.close_code} {ws.close_reason})".rstrip()))
                return
            if rest is not None:
                self._start_mqtt()
                return
            if not (self.ssl_context is not None and sock.pending()):  # type: ignore[attr-defined]
                return

    def _set_events(self, events: int) -> None:
        assert self.sock is not None
        self._want_write = bool(events & selectors.EVENT_WRITE)
        self.loop.selector.modify(self.sock, events, self)

    def _start_mqtt(self) -> None:
        self.phase = OPEN
        now = _monotonic()
        if self.unix_path is None and self.max_read_delay > 0:  # a Unix socket ignores the mark
            self._batcher = batcher_for(self.sock, self.max_read_delay, now)
        self._acking = self.quickack and available(self.sock)
        with self.lock:
            self.session.start(now)
        self._set_events(selectors.EVENT_READ)
        self.flush()

    def flush(self) -> None:
        """Write everything the session queued, in as few ``send`` calls as the socket allows.

        The session's buffer is taken only once the previous one is fully written, so data the
        socket cannot take yet stays in the session, where publishers see it (back-pressure).
        """
        self.flush_queued = False
        if self.phase is not OPEN:
            return
        session = self.session
        sock = self.sock
        assert sock is not None
        for _ in range(2):  # then back to select(), so acknowledgements get read too
            if self._woff >= len(self._wbuf):
                ws = self.ws
                if not session.out and not (ws is not None and ws.control):
                    break
                with self.lock:
                    self._wbuf = session.take_output()
                self._woff = 0
                if ws is not None:
                    self._frame(ws)
            try:
                with memoryview(self._wbuf) as view:
                    sent = sock.send(view[self._woff:])
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                sent = 0
            except OSError as exc:
                self.close(ConnectionLost(f"send failed: {exc}"))
                return
            if sent:
                old = self._woff
                self._woff += sent
                if self._wprefix:  # only the MQTT bytes count as the session's
                    sent = max(0, self._woff - self._wprefix) - max(0, old - self._wprefix)
                with self.lock:
                    session.sent(sent, _monotonic())
                if self.notify_writes:
                    self.handler.on_written(self)
            if self._woff < len(self._wbuf):
                if not self._want_write:
                    self._set_events(selectors.EVENT_READ | selectors.EVENT_WRITE)
                # The writable event flushes what publishers append meanwhile: they need not
                # wake us (a wake per publish cost two syscalls and a GIL hand-over each, on
                # the core the broker needs). Cleared by the next flush.
                self.flush_queued = True
                break
        else:
            if session.out:
                self.kick()  # more arrived meanwhile: next iteration, after reading
        if session.completed:
            self._report([])
        if self._woff >= len(self._wbuf):
            if self._wbuf:
                self._wbuf = bytearray()
                self._woff = 0
            if self._want_write and not session.out:
                self._set_events(selectors.EVENT_READ)
            if session.state is _DISCONNECTING and not session.out:
                self.close(None, retry=False)  # the DISCONNECT is out
                return
        self._rearm()  # a new publish may time out before the current timer

    def on_ready(self, mask: int) -> None:
        phase = self.phase
        if phase is OPEN:
            if mask & selectors.EVENT_READ:
                self._read()
            if mask & selectors.EVENT_WRITE and self.phase is OPEN:
                self.flush()
        elif phase is CONNECTING:
            self._tcp_connected()
        elif phase is HANDSHAKING:
            self._handshake()
        elif phase is UPGRADING:
            self._upgrade()

    def _read(self) -> None:
        sock = self.sock
        assert sock is not None
        loop = self.loop
        session = self.session
        while True:
            try:
                n = sock.recv_into(loop.rbuf)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except OSError as exc:
                self.close(ConnectionLost(f"receive failed: {exc}"))
                return
            if not n:
                self.close(ConnectionLost("the broker closed the connection"))
                return
            if self._acking and not ack_now(sock):
                self._acking = False
            now = _monotonic()
            batcher = self._batcher
            if batcher is not None:
                lowat = batcher.read(n, now)
                if lowat:
                    set_lowat(sock, lowat)
                    if lowat > 1:
                        loop._schedule(self, batcher.last_read + batcher.delay)
            data: Any = loop.rview[:n]
            ws = self.ws
            if ws is not None:
                try:
                    data = ws.receive(data)
                except WebSocketError as exc:
                    self.close(exc)
                    return
                if ws.close_code is not None:
                    self._send_control(ws)
                    self.close(ConnectionLost(f"the broker closed the WebSocket "
                                              f"({ws.close_code} {ws.close_reason})".rstrip()))
                    return
                if ws.control:
                    self.kick()  # a pong to send
            try:
                with self.lock:
                    before = len(session.out)
                    messages = session.receive(data, now)
                    answered = len(session.out) > before
            except MQTTError as exc:
                self._abort(exc if isinstance(exc, ProtocolError) else ProtocolError(str(exc)))
                return
            if answered and batcher is not None and batcher.answered(now):
                set_lowat(sock, 1)  # the broker may wait for these acks: read as it comes
            if session.events or session.completed:
                if not self._report(messages):
                    return
            elif messages:
                loop.report(len(messages), self.handler.on_messages, self, messages)
            if session.out:
                self.flush()
            if self.phase is not OPEN:
                return
            # TLS may hold decrypted bytes that select() will not report.
            if not (self.ssl_context is not None and sock.pending()):  # type: ignore[attr-defined]
                return

    def _abort(self, error: ProtocolError) -> None:
        """The broker broke the protocol. On MQTT 5 the session's last bytes are a DISCONNECT
        with the reason: sent once, after what the socket has not taken yet (best effort, nothing
        waits for it), then FIN, so that no RST makes the broker drop it; then close."""
        with self.lock:
            cause = self.session.abort(error)
            tail = self.session.take_output() if cause is not None else None
        sock = self.sock
        if tail is not None and sock is not None:
            data = self._wbuf[self._woff:] + (ws_frame(tail) if self.ws is not None else tail)
            try:
                sock.send(data)
            except OSError:  # ssl.SSLError is one too
                pass
            self._drop_socket(drain=True)
        self.close(error, cause=cause)

    def _frame(self, ws: WebSocket) -> None:
        """Put the MQTT bytes just taken in a masked binary frame, after any control frame."""
        payload = self._wbuf
        framed = bytes(ws.control) + ws_frame(payload) if payload else bytes(ws.control)
        ws.control.clear()
        self._wprefix = len(framed) - len(payload)
        self._wbuf = bytearray(framed)

    def _send_control(self, ws: WebSocket) -> None:
        """Best effort, on the way out: the close frame's echo."""
        if ws.control and self.sock is not None:
            try:
                self.sock.send(bytes(ws.control))
            except (OSError, ssl.SSLError):
                pass
            ws.control.clear()

    def _report(self, messages: List[Any]) -> bool:
        """Hand control events and completions (then messages) to the handler; act on the
        events that change the connection. False when the connection closed."""
        session = self.session
        with self.lock:
            events = session.take_events()
            completed = session.take_completed()
        end: Any = None
        for event in events:
            cls = event.__class__
            if cls is Connected:
                self.attempt = 0
                self.was_connected = True
                self.connected_at = _monotonic()
                self._connect_deadline = _INF
            elif cls is ConnectionRefused or cls is Disconnected:
                end = event
        loop = self.loop
        loop.report(1, self.handler.on_events, self, events, completed)
        if messages:
            loop.report(len(messages), self.handler.on_messages, self, messages)
        if end is None:
            if events:
                self._rearm()
            return True
        if end.__class__ is ConnectionRefused:
            self.closing = True  # a refusal is an answer, not a glitch: do not retry
            self.close(ConnectionLost(f"connection refused: {end.reason}"), cause=end)
        elif end.by_server:
            self.close(ConnectionLost(f"the broker disconnected: {end.reason}"), cause=end)
        else:  # keep-alive timeout, found by the session
            self.close(ConnectionLost(end.reason), cause=end)
        return False

    def _rearm(self) -> None:
        """Arm the timer for whatever this connection waits for next."""
        phase = self.phase
        if phase is OPEN and self.session.state is _CONNECTED:
            deadline = self.session.next_deadline()
            batcher = self._batcher
            if batcher is not None and batcher.lowat > 1:
                due = batcher.last_read + batcher.delay
                if deadline is None or due < deadline:
                    deadline = due
        elif phase is IDLE:
            deadline = self._retry_at
        elif phase is CLOSED:
            return
        else:  # TCP connect, TLS handshake, or waiting for CONNACK
            deadline = self._connect_deadline
        if deadline is not None and deadline < self._timer_at:
            self.loop._schedule(self, deadline)

    def on_timer(self, now: float) -> None:
        phase = self.phase
        if phase is IDLE:
            if now >= self._retry_at:
                self._retry_at = _INF
                self.open()
                return
        elif phase is OPEN and self.session.state is _CONNECTED:
            batcher = self._batcher
            if batcher is not None and batcher.tail(now):
                set_lowat(self.sock, 1)  # wakes the loop if anything waits
            with self.lock:
                if self.loop.reading_paused:
                    self.session.hold_input(now)  # the silence is our backlog, not the broker
                self.session.tick(now)
            if self.session.events or self.session.completed:
                if not self._report([]):
                    return
            if self.session.out:
                self.flush()
        elif phase is not CLOSED and now >= self._connect_deadline:
            self.close(ConnectionLost(f"no CONNACK from {self.peer} within "
                                      f"{self.connect_timeout:g} s"))
            return
        self._rearm()  # always: a superseded timer must not leave the connection unarmed

    def close(self, error: Optional[BaseException], retry: bool = True,
              cause: Any = None) -> None:
        """Close the socket; report what failed; reconnect later when the policy says so.
        ``error`` is the local cause (None: the application asked), ``cause`` the session's
        event that ended it (a refusal, a DISCONNECT from the broker, a keep-alive timeout)."""
        if self.phase is CLOSED:
            return
        if self.phase is IDLE and self.sock is None:
            if retry and not self.closing:
                return  # already down and waiting to reconnect
            # Waiting to reconnect (or never opened) and told to stop: give up now, not at the
            # next attempt.
            self._retry_at = _INF
            self.phase = CLOSED
            self.loop._closed(self)
            self.loop.report(1, self.handler.on_closed, self, _ending(error, cause, False))
            return
        ws, self.ws = self.ws, None
        if ws is not None and ws.open and ws.close_code is None and error is None:
            ws.control += ws.close_frame()  # we end it: say so at the WebSocket level too
            self._send_control(ws)
        self._drop_socket(drain=self.closing)
        with self.lock:
            self.session.connection_lost(str(error) if error else "disconnected")
            completed = self.session.take_completed()
            events = self.session.take_events()
        self._wbuf = bytearray()
        self._woff = 0
        self._want_write = False
        self.flush_queued = False  # no writable event will come for this socket
        delay = None
        if retry and not self.closing and self.reconnect is not None and (
                self.was_connected or self.retry_first):
            delay = self.reconnect.delay(self.attempt)
        if delay is None:
            self.phase = CLOSED
            self.loop._closed(self)
        else:
            self.phase = IDLE
            self.attempt += 1
            self._retry_at = _monotonic() + delay
            self._rearm()
            log.info("connection to %s lost (%s); reconnecting in %.2f s",
                     self.peer, error, delay)
        report = self.loop.report
        if completed or events:
            report(1, self.handler.on_events, self, events, completed)
        report(1, self.handler.on_closed, self, _ending(error, cause, delay is not None))


def _ending(error: Optional[BaseException], cause: Any, will_reconnect: bool) -> Disconnected:
    """The ``Disconnected`` event that tells the application how a connection ended."""
    if cause is not None and cause.__class__ is Disconnected:
        return Disconnected(cause.reason_code, cause.reason, cause.properties, cause.by_server,
                            error, will_reconnect)
    if cause is not None:  # refused
        return Disconnected(cause.reason_code, cause.reason, cause.properties, False, error,
                            will_reconnect)
    if error is None:
        return Disconnected(0, "disconnected by the client", None, False, None, will_reconnect)
    return Disconnected(0x80, str(error), None, False, error, will_reconnect)


class TimerHandle:
    """A callback scheduled with ``Loop.call_at`` / ``call_later``; ``cancel()`` stops it."""

    __slots__ = ("fn", "_timer_at")

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self._timer_at = _INF

    def cancel(self) -> None:
        self._timer_at = -1.0  # no heap entry matches it any more

    def on_timer(self, now: float) -> None:
        self.fn()


_WAKE_KEY = selectors.SelectorKey(None, -1, selectors.EVENT_READ, None)  # type: ignore[arg-type]


def _Key(conn: Connection) -> selectors.SelectorKey:
    return selectors.SelectorKey(None, -1, selectors.EVENT_WRITE, conn)  # type: ignore[arg-type]


class _StandIn:
    """A thread that drives a loop while the thread that runs its handlers is stuck in one (a
    slow ``on_message``): keep-alive, acknowledgements and other threads' publishes go on. It
    never calls a handler: what the connections report waits, in order, for the handler thread,
    which takes the loop back (``give_back``) when its call returns. Parked between turns."""

    def __init__(self, loop: "Loop") -> None:
        self.loop = loop
        self.cond = threading.Condition()
        self.active = False  # driving, or about to
        self.returning = False  # the handler thread wants the loop back
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="mqttfast-stand-in", daemon=True)
        self.thread.start()
        self.ident = self.thread.ident

    def start(self) -> None:
        with self.cond:
            self.active = True
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def give_back(self) -> None:
        """Called by the handler thread: returns once that thread drives the loop again."""
        loop = self.loop
        with self.cond:
            self.returning = True
            while self.active:
                loop.wake()
                self.cond.wait(0.05)

    def _run(self) -> None:
        loop = self.loop
        cond = self.cond
        while True:
            with cond:
                while not self.active and not self.stopped:
                    cond.wait()
                if self.stopped:
                    return
            try:
                while not self.returning and not self.stopped:
                    loop._iterate(0.05, None)
            except Exception:
                log.exception("mqttfast: the loop's stand-in failed")
            finally:
                with loop._handoff:
                    loop._owner_id, loop._caller_id = loop._caller_id, None
                    loop.reading_paused = False
                with cond:
                    self.active = self.returning = False
                    cond.notify_all()


class _Watchdog:
    """One daemon thread for the process's loops: every ``PERIOD`` s it looks for a loop whose
    handler call has run past its ``stall_after`` and has that loop's stand-in take over. It
    only reads a timestamp per loop, and ends when no loop is left."""

    PERIOD = 0.05

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loops: "weakref.WeakSet[Loop]" = weakref.WeakSet()
        self.thread: Optional[threading.Thread] = None

    def watch(self, loop: "Loop") -> None:
        with self.lock:
            self.loops.add(loop)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="mqttfast-watchdog",
                                               daemon=True)
                self.thread.start()

    def forget(self, loop: "Loop") -> None:
        with self.lock:
            self.loops.discard(loop)

    def _after_fork(self) -> None:
        """In a forked child: no thread came along, the watchdog's nor any stand-in; they are
        made anew when needed."""
        self.lock = threading.Lock()
        self.thread = None
        loops = list(self.loops)
        for loop in loops:
            loop._standin = None
            loop._handoff = threading.Lock()
        if loops:
            self.watch(loops[0])

    def _run(self) -> None:
        while True:
            time.sleep(self.PERIOD)
            with self.lock:
                loops = list(self.loops)
                if not loops:
                    self.thread = None
                    return
            now = _monotonic()
            for loop in loops:
                since = loop._calling_since
                if since and now - since >= loop.stall_after:  # type: ignore[operator]
                    try:
                        loop._stand_in(now)
                    except Exception:  # e.g. no thread can be started: try again next time
                        log.exception("mqttfast: cannot start a stand-in for a stalled loop")
            del loops, loop  # no strong reference while sleeping: a dropped Loop can go


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WATCHDOG._after_fork)


class Loop:
    """A ``selectors`` event loop for MQTT connections, driven by one thread at a time."""

    STALL_AFTER = 0.2  # s: a handler call longer than this gets a stand-in, by default

    def __init__(self, *, stall_after: Optional[float] = STALL_AFTER,
                 max_backlog: int = 10_000) -> None:
        if stall_after is not None and not stall_after > 0:
            raise ValueError(f"stall_after must be > 0 s or None, got {stall_after!r}")
        if max_backlog < 1:
            raise ValueError(f"max_backlog must be >= 1, got {max_backlog!r}")
        self.stall_after = stall_after  # a handler call longer than this gets a stand-in
        self.max_backlog = max_backlog  # messages waiting for the handler before reading pauses
        self.selector = selectors.DefaultSelector()
        self.rbuf = bytearray(RECV_SIZE)
        self.rview = memoryview(self.rbuf)
        self.connections: set = set()
        self._timers: List[Tuple[float, int, Any]] = []
        self._seq = 0
        self._dirty: Deque[Connection] = deque()
        self._calls: Deque[Callable[[], None]] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._owner_id: Optional[int] = None  # the thread inside run_*, if any
        self._stopping = False
        self.sleeping = False  # inside select(): other threads must wake us
        # Reports for the handlers, made by the connections during an iteration and called at
        # its end (``_dispatch``), one at a time, in order: (weight, method, args).
        self._reports: Deque[Tuple[int, Callable[..., None], Tuple[Any, ...]]] = deque()
        self.backlog = 0  # messages in _reports
        # The stand-in (see ``_StandIn``): while it drives the loop, _caller_id is the thread
        # stuck in a handler call, and _handoff guards the change of driver.
        self._handoff = threading.Lock()
        self._calling_since = 0.0  # when the current handler call began (0: none)
        self._caller_id: Optional[int] = None
        self._standin: Optional[_StandIn] = None
        self.stand_ins = 0  # how many times a stand-in took over
        self.reading_paused = False  # the stand-in stopped reading: the backlog is full
        if stall_after is not None:
            _WATCHDOG.watch(self)

    def add(self, conn: Connection) -> Connection:
        self.connections.add(conn)
        self.call_soon(conn.open)
        return conn

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the loop thread (safe from any thread)."""
        self._calls.append(fn)
        if self.sleeping and self._owner_id != threading.get_ident():
            self.wake()

    def call_at(self, when: float, fn: Callable[[], None]) -> TimerHandle:
        """Run ``fn`` in the loop thread at ``time.monotonic()`` time ``when`` (loop thread only)."""
        handle = TimerHandle(fn)
        self._schedule(handle, when)
        return handle

    def call_later(self, delay: float, fn: Callable[[], None]) -> TimerHandle:
        return self.call_at(_monotonic() + delay, fn)

    def wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending

    @property
    def owner_id(self) -> Optional[int]:
        """The ``threading.get_ident()`` of the thread driving the loop and running its handlers
        (None: nobody). While a stand-in drives it, the thread stuck in a handler call."""
        caller = self._caller_id
        return caller if caller is not None else self._owner_id

    @property
    def standing_in(self) -> bool:
        """A stand-in drives the loop now: a handler call has run longer than ``stall_after``."""
        return self._caller_id is not None

    def report(self, weight: int, method: Callable[..., None], *args: Any) -> None:
        """Have ``method(*args)`` (a handler's) called: at the end of this iteration when the
        caller drives the loop, else now. ``weight``: how many messages it carries."""
        if self._owner_id == threading.get_ident():
            self._reports.append((weight, method, args))
            self.backlog += weight
            if self._caller_id is not None:
                conn = args[0]
                conn.handler.on_waiting(conn)
        else:
            method(*args)

    def _dispatch(self) -> None:
        """Call the reports, in order. A call that runs past ``stall_after`` gets a stand-in
        that drives the loop meanwhile (and adds its reports behind the rest); once the call
        returns, this thread takes the loop back and goes on with them."""
        reports = self._reports
        watched = self.stall_after is not None
        while reports:
            weight, method, args = reports.popleft()
            self.backlog -= weight
            if not watched:
                method(*args)
                continue
            self._calling_since = _monotonic()
            try:
                method(*args)
            finally:
                self._end_call()

    def _end_call(self) -> None:
        """A handler call returned: if a stand-in took over meanwhile, wait for it to give the
        loop back."""
        with self._handoff:
            self._calling_since = 0.0
            standin = self._standin if self._caller_id is not None else None
        if standin is not None:
            standin.give_back()

    def _stand_in(self, now: float) -> None:
        """Called by the watchdog: the handler call that began at ``_calling_since`` is still
        running after ``stall_after``: a stand-in drives the loop until it returns."""
        with self._handoff:
            since, stall = self._calling_since, self.stall_after
            if not since or stall is None or now - since < stall or self._caller_id is not None \
                    or self._owner_id is None:
                return
            standin = self._standin
            if standin is None:
                standin = self._standin = _StandIn(self)
            self._caller_id = self._owner_id
            self._owner_id = standin.ident
            self.stand_ins += 1
            standin.start()

    def _schedule(self, target: Any, when: float) -> None:
        if when < target._timer_at:
            target._timer_at = when
            self._seq += 1
            heapq.heappush(self._timers, (when, self._seq, target))

    def _closed(self, conn: Connection) -> None:
        self.connections.discard(conn)

    def _claim(self) -> bool:
        """The calling thread drives the loop. True if it just took it (and must give it back),
        False if it already drives it (a nested call); raises if another thread does."""
        me = threading.get_ident()
        owner = self._owner_id
        if owner == me:
            return False
        if owner is not None:
            raise RuntimeError(f"this Loop is being driven by another thread (ident {owner}); "
                               f"one thread at a time may run it")
        self._owner_id = me
        return True

    def run_once(self, timeout: Optional[float] = None,
                 done: Optional[Callable[[], bool]] = None) -> None:
        """One iteration: run queued calls, flush, wait for I/O up to ``timeout``, handle it all.
        When ``done()`` is already true after the flush, do not wait."""
        if self._owner_id == threading.get_ident():
            self._iterate(timeout, done)
            return
        self._claim()
        try:
            self._iterate(timeout, done)
        finally:
            self._owner_id = None

    def _iterate(self, timeout: Optional[float], done: Optional[Callable[[], bool]]) -> None:
        if self._calling_since and (self._standin is None or
                                    threading.get_ident() != self._standin.ident):
            self._end_call()  # run_once from inside a handler call: that call is not stuck
            try:
                self._iterate_once(timeout, done)
            finally:
                self._calling_since = _monotonic()
            return
        self._iterate_once(timeout, done)

    def _iterate_once(self, timeout: Optional[float], done: Optional[Callable[[], bool]]) -> None:
        calls = self._calls
        for _ in range(len(calls)):  # only those queued before now: a callback may queue more
            calls.popleft()()
        dirty = self._dirty
        while dirty:
            dirty.popleft().flush()
        if self._timers:
            wait = max(0.0, self._timers[0][0] - _monotonic())
            timeout = wait if timeout is None else min(timeout, wait)
        # Other threads wake us only while we sleep: set the flag before the last look at the
        # queues, so a kick between that look and select() cannot be lost.
        self.sleeping = True
        if calls or dirty or (self._reports and self._caller_id is None) or (
                done is not None and done()):
            timeout = 0  # (reports made by the calls above: dispatched without a wait)
        standing_in = self._caller_id is not None
        try:
            if standing_in and self.backlog >= self.max_backlog:
                ready = self._wait_paused(timeout)
            else:
                if self.reading_paused:
                    self.reading_paused = False
                ready = self.selector.select(timeout)
        finally:
            self.sleeping = False
        for key, mask in ready:
            conn = key.data
            if conn is None:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except (BlockingIOError, OSError):
                    pass
                continue
            conn.on_ready(mask)
        if self._timers:
            now = _monotonic()
            timers = self._timers
            while timers and timers[0][0] <= now:
                when, _, target = heapq.heappop(timers)
                if when != target._timer_at:
                    continue  # superseded by an earlier deadline, or cancelled
                target._timer_at = _INF
                target.on_timer(now)
        if self._reports and not standing_in:
            self._dispatch()

    def _wait_paused(self, timeout: Optional[float]) -> List[Tuple[Any, int]]:
        """The stand-in's select() while the backlog is full: no reading (the broker holds the
        rest: TCP back-pressure), only writes, wake-ups and timers (keep-alive goes on)."""
        if not self.reading_paused:
            self.reading_paused = True
            log.warning("a handler call has run for %.1f s with %d messages waiting for it: "
                        "reading paused", _monotonic() - self._calling_since, self.backlog)
        waiting = [c.sock for c in self.connections if c._want_write and c.sock is not None]
        wait = 0.05 if timeout is None else min(timeout, 0.05)
        try:
            readable, writable, _ = _select.select([self._wake_r], waiting, [], wait)
        except (OSError, ValueError):
            return []
        ready: List[Tuple[Any, int]] = []
        if readable:
            ready.append((_WAKE_KEY, selectors.EVENT_READ))
        if writable:
            socks = set(writable)
            ready += [(_Key(c), selectors.EVENT_WRITE) for c in self.connections
                      if c.sock in socks]
        return ready

    def run_until(self, done: Callable[[], bool], timeout: Optional[float] = None) -> bool:
        """Run until ``done()`` is true (returns True) or ``timeout`` seconds pass (False)."""
        deadline = None if timeout is None else _monotonic() + timeout
        claimed = self._claim()
        try:
            while not done():
                if deadline is None:
                    self._iterate(1.0, done)
                else:
                    left = deadline - _monotonic()
                    if left <= 0:
                        return False
                    self._iterate(min(left, 1.0), done)
            return True
        finally:
            if claimed:
                self._owner_id = None

    def run_forever(self) -> None:
        """Run until ``stop()`` is called (from any thread)."""
        self._stopping = False
        claimed = self._claim()
        try:
            while not self._stopping:
                self._iterate(1.0, None)
        finally:
            if claimed:
                self._owner_id = None

    def stop(self) -> None:
        self._stopping = True
        self.wake()

    def close(self) -> None:
        _WATCHDOG.forget(self)
        for conn in list(self.connections):
            conn.closing = True
            conn.close(None, retry=False)
        if self._standin is not None:
            self._standin.stop()
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()


__all__ = ["Backoff", "CLOSED", "CONNECTING", "Connection", "HANDSHAKING", "Handler", "IDLE",
           "Loop", "OPEN", "TimerHandle", "TransportState"]
