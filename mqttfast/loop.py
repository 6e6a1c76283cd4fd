"""The I/O loop: one ``selectors`` loop drives any number of MQTT connections.

The only module that touches sockets. Each ``Connection`` pairs a socket with a sans-IO ``Session``:
bytes the session queues are written with as few ``send`` calls as possible (everything queued goes
out in one call), received bytes land in a reusable buffer through ``recv_into``, keep-alive and
acknowledgement timers live in one heap, TLS handshakes are non-blocking, and a dropped connection
can come back by itself with exponential backoff and jitter.

Threads: the loop runs in one thread. Other threads may change a session under ``conn.lock`` and
then call ``conn.kick()``, which wakes the loop (once per batch, not once per message).
"""
from __future__ import annotations

import errno
import heapq
import os
import logging
import random
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Tuple

from .errors import ConnectionLost, MQTTError, ProtocolError
from .session import Connected, ConnectionRefused, Disconnected, Session

log = logging.getLogger("mqttfast")

RECV_SIZE = 256 * 1024
_monotonic = time.monotonic

# Connection phases.
IDLE, TCP_CONNECTING, TLS_HANDSHAKE, MQTT_CONNECTING, OPEN, CLOSED = range(6)
_PHASES = ("idle", "tcp connecting", "tls handshake", "mqtt connecting", "open", "closed")


class Backoff:
    """Reconnect delays: exponential from ``initial`` up to ``maximum``, with "equal jitter" (half
    the delay fixed, half random) so a fleet of clients does not reconnect in lockstep."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0,
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
    """What a connection reports to (the Client, the load generator). Called in the loop thread."""

    def connection_events(self, conn: "Connection", events: List[Any]) -> None:
        """Session events: received ``Publish`` packets, completed ``Outgoing`` records, ..."""

    def connection_closed(self, conn: "Connection", error: Optional[BaseException],
                          failed: List[Any], will_retry: bool) -> None:
        """The socket closed; ``failed`` are publishes that can no longer complete."""


class Connection:
    """A socket and its session, with what the loop needs to drive it."""

    def __init__(self, loop: "Loop", session: Session, handler: Handler, host: str, port: int, *,
                 keepalive: int = 60, username: Optional[str] = None,
                 password: Any = None, will: Any = None, properties: Optional[dict] = None,
                 ssl_context: Optional[ssl.SSLContext] = None,
                 server_hostname: Optional[str] = None, connect_timeout: float = 10.0,
                 reconnect: Optional[Backoff] = None,
                 source_address: Optional[Tuple[str, int]] = None) -> None:
        self.loop = loop
        self.session = session
        self.handler = handler
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.username = username
        self.password = password
        self.will = will
        self.properties = properties
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname if server_hostname is not None else host
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect
        self.source_address = source_address
        self.lock = threading.Lock()  # guards ``session`` against other threads
        self.sock: Optional[socket.socket] = None
        self.phase = IDLE
        self.closing = False  # the user asked to close: no reconnect
        self.attempt = 0  # reconnect attempts since the last successful CONNACK
        self.error: Optional[BaseException] = None
        self.bytes_sent = 0  # session bytes handed to the socket (QoS 0 completion marks)
        self.takes = 0  # how many times the loop took the session's buffer (under ``lock``)
        self.lost: List[Tuple[int, int]] = []  # ranges of session bytes lost with a connection
        self.connected_at = 0.0  # when CONNACK arrived
        self.started_at = 0.0  # when the current connection attempt began
        self._wbuf = bytearray()
        self._woff = 0
        self._want_write = False
        self._dirty = False
        self._timer_at = float("inf")
        self._connect_deadline = float("inf")
        self._retry_at = float("inf")
        self._events = 0
        self._addrs: List[Any] = []

    def __repr__(self) -> str:
        return f"<Connection {self.session.client_id!r} {self.host}:{self.port} {_PHASES[self.phase]}>"

    # ------------------------------------------------------------------ called from any thread

    def kick(self) -> None:
        """The session has new bytes to send: have the loop flush them (cheap when already due)."""
        if not self._dirty:
            self._dirty = True
            self.loop._dirty.append(self)
            if self.loop.sleeping and self.loop._thread_id != threading.get_ident():
                self.loop.wake()

    def is_written(self, mark: int) -> Optional[bool]:
        """Whether session bytes up to ``mark`` reached the socket: True, False (lost with a
        dropped connection), or None (not yet)."""
        for start, end in self.lost:
            if start < mark <= end:
                return False
        return True if self.bytes_sent >= mark else None

    # ------------------------------------------------------------------ loop thread only

    def open(self) -> None:
        """Start a (re)connection: resolve, connect without blocking, then TLS and CONNECT."""
        self.phase = TCP_CONNECTING
        self.error = None
        now = _monotonic()
        self.started_at = now
        self._connect_deadline = now + self.connect_timeout
        self.loop._schedule(self, self._connect_deadline)
        try:
            self._addrs = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            self._failed(ConnectionLost(f"cannot resolve {self.host}:{self.port}: {exc}"))
            return
        self._connect_next(None)

    def _connect_next(self, last_error: Optional[str]) -> None:
        """Try the next resolved address (a name may resolve to ::1 and 127.0.0.1, and the broker
        may listen on only one of them); fail with the last error when none is left."""
        if self.sock is not None:
            try:
                self.loop.selector.unregister(self.sock)
            except (KeyError, ValueError):
                pass
            self.sock.close()
            self.sock = None
        while self._addrs:
            family, kind, proto, _, addr = self._addrs.pop(0)
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as exc:
                last_error = str(exc)
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.source_address is not None:
                try:
                    sock.bind(self.source_address)
                except OSError as exc:
                    sock.close()
                    self._failed(ConnectionLost(f"cannot bind to {self.source_address}: {exc}"))
                    return
            code = sock.connect_ex(addr)
            if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                sock.close()
                last_error = os.strerror(code)
                continue
            self.sock = sock
            self.loop.selector.register(sock, selectors.EVENT_WRITE, self)
            self._want_write = True
            return
        self._failed(ConnectionLost(f"cannot connect to {self.host}:{self.port}: {last_error}"))

    def _failed(self, error: BaseException) -> None:
        """A connection attempt failed before CONNACK (resolve, connect, TLS): close the socket,
        then retry or give up as the reconnect policy says."""
        self.close(error)

    def _tcp_connected(self) -> None:
        assert self.sock is not None
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._connect_next(os.strerror(code))
            return
        if self.ssl_context is not None:
            self.loop.selector.unregister(self.sock)
            self.sock = self.ssl_context.wrap_socket(
                self.sock, server_hostname=self.server_hostname, do_handshake_on_connect=False)
            self.loop.selector.register(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE,
                                        self)
            self.phase = TLS_HANDSHAKE
            self._handshake()
        else:
            self._start_mqtt()

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
            self._failed(ConnectionLost(f"TLS handshake with {self.host}:{self.port} failed: {exc}"))
            return
        self._start_mqtt()

    def _set_events(self, events: int) -> None:
        assert self.sock is not None
        self._want_write = bool(events & selectors.EVENT_WRITE)
        self.loop.selector.modify(self.sock, events, self)

    def _start_mqtt(self) -> None:
        self.phase = MQTT_CONNECTING
        with self.lock:
            self.session.connect(_monotonic(), self.keepalive, self.username, self.password,
                                 self.will, self.properties)
        self._set_events(selectors.EVENT_READ)
        self.flush()

    def flush(self) -> None:
        """Write everything the session queued, in as few ``send`` calls as the socket allows.

        The session's buffer is taken only once the previous one is fully written, so data the
        socket cannot take yet stays in ``session.out``, where publishers see it (back-pressure).
        """
        self._dirty = False
        if self.phase < MQTT_CONNECTING or self.phase == CLOSED:
            return
        session = self.session
        sock = self.sock
        assert sock is not None
        for _ in range(2):  # then back to select(), so acknowledgements get read too
            if self._woff >= len(self._wbuf):
                if not session.out:
                    break
                with self.lock:
                    self._wbuf = session.out
                    session.out = bytearray()
                    self.takes += 1
                self._woff = 0
            try:
                with memoryview(self._wbuf) as view:
                    sent = sock.send(view[self._woff:])
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                sent = 0
            except OSError as exc:
                self.close(ConnectionLost(f"send failed: {exc}"))
                return
            self._woff += sent
            self.bytes_sent += sent
            if sent:
                session.last_sent = _monotonic()
                if self.loop.write_waiters:
                    self.loop._written(self)
            if self._woff < len(self._wbuf):
                if not self._want_write:
                    self._set_events(selectors.EVENT_READ | selectors.EVENT_WRITE)
                break
        else:
            if session.out:
                self.kick()  # more arrived meanwhile: next iteration, after reading
        if self._woff >= len(self._wbuf):
            if self._wbuf:
                self._wbuf = bytearray()
                self._woff = 0
            if self._want_write and self.phase >= MQTT_CONNECTING and not session.out:
                self._set_events(selectors.EVENT_READ)
            if self.closing and session.state != "connected" and not session.out:
                self.close(None, retry=False)  # the DISCONNECT is out
                return
        if session.ack_timeout is not None and self.phase == OPEN:
            self._reschedule()  # a new publish may time out before the current timer

    @property
    def pending_bytes(self) -> int:
        """Bytes queued and not yet written: the session's buffer plus the unsent rest."""
        return len(self.session.out) + len(self._wbuf) - self._woff

    def on_ready(self, mask: int) -> None:
        phase = self.phase
        if phase == OPEN or phase == MQTT_CONNECTING:
            if mask & selectors.EVENT_READ:
                self._read()
            if mask & selectors.EVENT_WRITE and self.phase in (OPEN, MQTT_CONNECTING):
                self.flush()
        elif phase == TCP_CONNECTING:
            self._tcp_connected()
        elif phase == TLS_HANDSHAKE:
            self._handshake()

    def _read(self) -> None:
        sock = self.sock
        assert sock is not None
        loop = self.loop
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
            now = _monotonic()
            try:
                with self.lock:
                    events = self.session.receive(loop.rview[:n], now)
            except MQTTError as exc:
                self.close(exc if isinstance(exc, ProtocolError) else ProtocolError(str(exc)))
                return
            if events:
                self._dispatch(events, now)
                if self.phase == CLOSED:
                    return
            if self.session.out:
                self.flush()
            # TLS may hold decrypted bytes that select() will not report.
            if not (self.ssl_context is not None and sock.pending()):  # type: ignore[attr-defined]
                return

    def _dispatch(self, events: List[Any], now: float) -> None:
        for event in events:
            cls = event.__class__
            if cls is Connected:
                self.phase = OPEN
                self.attempt = 0
                self.connected_at = now
                self._connect_deadline = float("inf")
                self._reschedule()
            elif cls is ConnectionRefused:
                self.handler.connection_events(self, events)
                self.closing = True  # a refusal is an answer, not a glitch: do not retry
                self.close(None)
                return
            elif cls is Disconnected:
                self.handler.connection_events(self, events)
                self.close(ConnectionLost(f"the broker disconnected: {event.reason}"))
                return
        self.handler.connection_events(self, events)

    def _reschedule(self) -> None:
        deadline = self.session.next_deadline()
        if deadline is not None:
            self.loop._schedule(self, deadline)

    def on_timer(self, now: float) -> None:
        if self.phase in (TCP_CONNECTING, TLS_HANDSHAKE, MQTT_CONNECTING):
            if now >= self._connect_deadline:
                self.close(ConnectionLost(f"no CONNACK from {self.host}:{self.port} within "
                                          f"{self.connect_timeout:g} s"))
            else:
                self.loop._schedule(self, self._connect_deadline)
            return
        if self.phase == IDLE and now >= self._retry_at:
            self._retry_at = float("inf")
            self.open()
            return
        if self.phase != OPEN:
            return
        with self.lock:
            events = self.session.tick(now)
        if events:
            for event in events:
                if event.__class__ is Disconnected:
                    self.close(ConnectionLost(event.reason))
                    return
            self.handler.connection_events(self, events)
        if self.session.out:
            self.flush()
        self._reschedule()

    def close(self, error: Optional[BaseException], retry: bool = True) -> None:
        """Close the socket; report failed publishes; reconnect later when the policy says so."""
        if self.phase == CLOSED:
            return
        if self.phase == IDLE and self.sock is None:
            if retry and not self.closing:
                return  # already down and waiting to reconnect
            # Waiting to reconnect (or never opened) and told to stop: give up now, not at the
            # next attempt.
            self._retry_at = float("inf")
            self.phase = CLOSED
            self.loop._closed(self)
            self.handler.connection_closed(self, error, [], False)
            return
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                self.loop.selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        self.error = error
        with self.lock:
            self.takes += 1  # the session's buffer is dropped: QoS 0 handles start afresh
            unsent = len(self.session.out) + len(self._wbuf) - self._woff
            if unsent:
                self.lost.append((self.bytes_sent, self.bytes_sent + unsent))
                self.bytes_sent += unsent  # later marks count from after the lost range
            failed = self.session.connection_lost(str(error) if error else "closed")
        self._wbuf = bytearray()
        self._woff = 0
        self._want_write = False
        delay = None
        if retry and not self.closing and self.reconnect is not None:
            delay = self.reconnect.delay(self.attempt)
        if delay is None:
            self.phase = CLOSED
            self.loop._closed(self)
        else:
            self.phase = IDLE
            self.attempt += 1
            self._retry_at = _monotonic() + delay
            self.loop._schedule(self, self._retry_at)
            log.info("connection to %s:%s lost (%s); reconnecting in %.2f s",
                     self.host, self.port, error, delay)
        self.handler.connection_closed(self, error, failed, delay is not None)


class TimerHandle:
    """A callback scheduled with ``Loop.call_at`` / ``call_later``; ``cancel()`` stops it."""

    __slots__ = ("fn", "_timer_at")

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self._timer_at = float("inf")

    def cancel(self) -> None:
        self._timer_at = -1.0  # no heap entry matches it any more

    def on_timer(self, now: float) -> None:
        self.fn()


class Loop:
    """A ``selectors`` event loop for MQTT connections, run by one thread."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.rbuf = bytearray(RECV_SIZE)
        self.rview = memoryview(self.rbuf)
        self.connections: set = set()
        self._timers: List[Tuple[float, int, Connection]] = []
        self._seq = 0
        self._dirty: Deque[Connection] = deque()
        self._calls: Deque[Callable[[], None]] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread_id: Optional[int] = None  # set by the thread that runs the loop
        self._stopping = False
        self.sleeping = False  # inside select(): other threads must wake us
        self.written = threading.Condition()  # notified after flushes, when someone waits
        self.write_waiters = 0

    def add(self, conn: Connection) -> Connection:
        self.connections.add(conn)
        self.call_soon(conn.open)
        return conn

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the loop thread (safe from any thread)."""
        self._calls.append(fn)
        if self.sleeping and self._thread_id != threading.get_ident():
            self.wake()

    def call_at(self, when: float, fn: Callable[[], None]) -> TimerHandle:
        """Run ``fn`` in the loop thread at ``time.monotonic()`` time ``when`` (loop thread only)."""
        handle = TimerHandle(fn)
        self._schedule(handle, when)  # type: ignore[arg-type]
        return handle

    def call_later(self, delay: float, fn: Callable[[], None]) -> TimerHandle:
        return self.call_at(_monotonic() + delay, fn)

    def wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending

    def _schedule(self, conn: Connection, when: float) -> None:
        if when < conn._timer_at:
            conn._timer_at = when
            self._seq += 1
            heapq.heappush(self._timers, (when, self._seq, conn))

    def _written(self, conn: Connection) -> None:
        if self.write_waiters:
            with self.written:
                self.written.notify_all()

    def _closed(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self._written(conn)

    def run_once(self, timeout: Optional[float] = None,
                 done: Optional[Callable[[], bool]] = None) -> None:
        """One iteration: run queued calls, flush, wait for I/O up to ``timeout``, handle it all.
        When ``done()`` is already true after the flush (a DISCONNECT written and the socket
        closed), do not wait."""
        self._thread_id = threading.get_ident()
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
        if calls or dirty or (done is not None and done()):
            timeout = 0
        try:
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
                when, _, conn = heapq.heappop(timers)
                if when != conn._timer_at:
                    continue  # superseded by an earlier deadline
                conn._timer_at = float("inf")
                conn.on_timer(now)

    def run_until(self, done: Callable[[], bool], timeout: Optional[float] = None) -> bool:
        """Run until ``done()`` is true (returns True) or ``timeout`` seconds pass (False)."""
        deadline = None if timeout is None else _monotonic() + timeout
        while not done():
            if deadline is None:
                self.run_once(1.0, done)
            else:
                left = deadline - _monotonic()
                if left <= 0:
                    return False
                self.run_once(min(left, 1.0), done)
        return True

    def run_forever(self) -> None:
        """Run until ``stop()`` is called (from any thread)."""
        self._stopping = False
        while not self._stopping:
            self.run_once(1.0)

    def stop(self) -> None:
        self._stopping = True
        self.wake()

    def close(self) -> None:
        for conn in list(self.connections):
            conn.closing = True
            conn.close(None, retry=False)
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()
