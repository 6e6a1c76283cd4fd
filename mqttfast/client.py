"""The Client: the friendly facade over a session, a connection and a loop.

By default ``connect`` blocks until the broker's CONNACK and then runs the network loop in a
background thread; ``publish`` returns at once with a handle. Pass ``background=False`` to drive the
loop yourself (``client.loop(timeout)`` / ``client.loop_forever()``), or ``loop=`` to share one
``Loop`` between many clients in one thread.
"""
from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from .codec import Publish, Subscription, Will, append_publish, append_publish_many
from .constants import MQTT_5
from .errors import ConnectionLost, ConnectRefused, MQTTError, NotConnected, QueueFull
from .loop import CLOSED, MQTT_CONNECTING, Backoff, Connection, Handler, Loop
from .session import (
    CONNECTED,
    DONE,
    AuthRequest,
    Connected,
    ConnectionRefused,
    Disconnected,
    Outgoing,
    Session,
    Subscribed,
    Unsubscribed,
)
from .store import MemoryStore

log = logging.getLogger("mqttfast")
_monotonic = time.monotonic

Message = Publish  # what ``on_message`` and ``messages()`` hand out
Payload = Union[bytes, bytearray, memoryview, str]


def tls_context(ca_certs: Optional[str] = None, certfile: Optional[str] = None,
                keyfile: Optional[str] = None, *, verify: bool = True,
                alpn_protocols: Optional[Sequence[str]] = None) -> ssl.SSLContext:
    """A client TLS context: the system CAs (or ``ca_certs``), hostname verification on, an optional
    client certificate, optional ALPN. ``verify=False`` turns verification off (testing only)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_certs)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if certfile:
        ctx.load_cert_chain(certfile, keyfile)
    if alpn_protocols:
        ctx.set_alpn_protocols(list(alpn_protocols))
    return ctx


class PublishHandle(Outgoing):
    """A QoS 1/2 publish: ``wait()`` is true once the broker acknowledged it.

    Each Client makes its own subclass with ``_client`` as a class attribute, which saves an
    attribute store per message.
    """

    __slots__ = ()
    _client: "Client"

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until acknowledged (True), failed (False), or ``timeout`` passed (False)."""
        if self.state < DONE:
            self._client._wait_for(lambda: self.state >= DONE, timeout)
        return self.state == DONE

    @property
    def is_published(self) -> bool:
        return self.state == DONE


class WrittenHandle:
    """A QoS 0 publish: ``wait()`` is true once its bytes were handed to the socket.

    Consecutive QoS 0 publishes that go out in the same write share one handle (making an object
    per message cost a third of ``publish()``), so ``wait()`` may return a moment after the
    message's own bytes were written, never before.
    """

    __slots__ = ("_conn", "_mark", "_client", "_takes")

    def __init__(self, client: "Client", conn: Connection, mark: int) -> None:
        self._client = client
        self._conn = conn
        self._mark = mark
        self._takes = conn.takes

    qos = 0

    @property
    def done(self) -> bool:
        return self._conn.is_written(self._mark) is not None

    @property
    def ok(self) -> bool:
        return self._conn.is_written(self._mark) is True

    is_published = ok

    def wait(self, timeout: Optional[float] = None) -> bool:
        conn = self._conn
        if conn.is_written(self._mark) is None:
            self._client._wait_for(
                lambda: conn.is_written(self._mark) is not None or conn.phase == CLOSED, timeout,
                on_write=True)
        return conn.is_written(self._mark) is True


class BatchHandle:
    """Several publishes at once (``publish_many``): ``wait()`` is true once all succeeded."""

    __slots__ = ("handles",)

    def __init__(self, handles: List[Any]) -> None:
        self.handles = handles

    @property
    def done(self) -> bool:
        return all(h.done for h in self.handles)

    def wait(self, timeout: Optional[float] = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for handle in self.handles:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not handle.wait(left):
                return False
        return True


class RequestHandle:
    """A SUBSCRIBE or UNSUBSCRIBE: ``wait()`` returns the broker's reason codes (or raises)."""

    __slots__ = ("packet_id", "topics", "reason_codes", "properties", "_client")

    def __init__(self, client: "Client", packet_id: int, topics: List[str]) -> None:
        self._client = client
        self.packet_id = packet_id
        self.topics = topics
        self.reason_codes: Optional[List[int]] = None
        self.properties: Optional[dict] = None

    @property
    def done(self) -> bool:
        return self.reason_codes is not None

    def wait(self, timeout: Optional[float] = 10.0) -> List[int]:
        if self.reason_codes is None and not self._client._wait_for(
                lambda: self.reason_codes is not None, timeout):
            raise TimeoutError(f"no acknowledgement for packet id {self.packet_id} within "
                               f"{timeout} s")
        return self.reason_codes  # type: ignore[return-value]


class Client(Handler):
    """An MQTT 3.1 / 3.1.1 / 5.0 client.

    >>> with Client(client_id="sensor-1") as c:
    ...     c.connect("127.0.0.1", 1883)
    ...     c.publish("sensors/1/temp", b"21.5", qos=1).wait(5)
    """

    def __init__(self, client_id: str = "", protocol: int = 4, *, username: Optional[str] = None,
                 password: Optional[Payload] = None, will: Optional[Will] = None,
                 clean_session: Optional[bool] = None, clean_start: Optional[bool] = None,
                 tls: Union[None, bool, ssl.SSLContext] = None,
                 server_hostname: Optional[str] = None, properties: Optional[dict] = None,
                 session_expiry: Optional[int] = None, max_inflight: Optional[int] = None,
                 max_queued: int = 1_000_000, ack_timeout: Optional[float] = None,
                 max_retries: int = 3, reconnect: Union[bool, Backoff] = False,
                 connect_timeout: float = 10.0, topic_alias_maximum: int = 64,
                 outgoing_aliases: bool = True, max_packet_size: Optional[int] = None,
                 max_buffer: int = 8 * 1024 * 1024, block_when_full: bool = False,
                 store: Optional[MemoryStore] = None,
                 loop: Optional[Loop] = None, background: Optional[bool] = None) -> None:
        if clean_session is not None and clean_start is not None and clean_session != clean_start:
            raise ValueError("clean_session and clean_start are the same flag: give one")
        clean = clean_session if clean_session is not None else (
            clean_start if clean_start is not None else True)
        if protocol != MQTT_5 and (properties or session_expiry is not None):
            raise ValueError("properties and session_expiry need protocol=5")
        self.protocol = protocol
        self.username = username
        self.password = password
        self.will = will
        self.properties = dict(properties or {})
        if session_expiry is not None:
            self.properties["session_expiry_interval"] = session_expiry
        if tls is True:
            tls = tls_context()
        self.tls: Optional[ssl.SSLContext] = tls or None
        self.server_hostname = server_hostname
        self.reconnect = Backoff() if reconnect is True else (reconnect or None)
        self.connect_timeout = connect_timeout
        self.max_buffer = max_buffer
        self.block_when_full = block_when_full  # QueueFull blocks publish() instead of raising
        self.session = Session(client_id, protocol, clean, max_inflight=max_inflight,
                               max_queued=max_queued, ack_timeout=ack_timeout,
                               max_retries=max_retries, topic_alias_maximum=topic_alias_maximum,
                               outgoing_aliases=outgoing_aliases, max_packet_size=max_packet_size,
                               store=store)
        self._handle_cls = type("PublishHandle", (PublishHandle,), {"__slots__": (), "_client": self})
        self._own_loop = loop is None
        self._loop = loop if loop is not None else Loop()
        self._background = self._own_loop if background is None else background
        self._thread: Optional[threading.Thread] = None
        self._conn: Optional[Connection] = None
        self._cond = threading.Condition()
        self._waiters = 0
        self._inbox: Optional["queue.SimpleQueue[Any]"] = None
        self._written: Optional[WrittenHandle] = None  # the QoS 0 handle of the current write
        self._subscriptions: Dict[str, Subscription] = {}
        self._requests: Dict[int, RequestHandle] = {}
        self._connect_result: Optional[Any] = None
        self.connected_event: Optional[Connected] = None
        self.on_message: Optional[Callable[[Publish], None]] = None
        self.on_connect: Optional[Callable[[Connected], None]] = None
        self.on_disconnect: Optional[Callable[[Optional[BaseException]], None]] = None
        self.on_publish: Optional[Callable[[Any], None]] = None
        self.on_subscribe: Optional[Callable[[Subscribed], None]] = None
        self.on_unsubscribe: Optional[Callable[[Unsubscribed], None]] = None
        self.on_auth: Optional[Callable[[AuthRequest], None]] = None

    # ------------------------------------------------------------------ properties

    @property
    def client_id(self) -> str:
        return self.session.client_id

    @property
    def is_connected(self) -> bool:
        return self.session.state == CONNECTED

    @property
    def loop_object(self) -> Loop:
        return self._loop

    # ------------------------------------------------------------------ connecting

    def connect(self, host: str = "127.0.0.1", port: Optional[int] = None, keepalive: int = 60,
                timeout: Optional[float] = None, *,
                source_address: Optional[Tuple[str, int]] = None) -> Connected:
        """Connect and block until the CONNACK; raise ``ConnectRefused`` or ``ConnectionLost``."""
        if self._conn is not None and self._conn.phase != CLOSED:
            raise MQTTError("already connected; call disconnect() first")
        if port is None:
            port = 8883 if self.tls is not None else 1883
        conn = Connection(self._loop, self.session, self, host, port, keepalive=keepalive,
                          username=self.username, password=self.password, will=self.will,
                          properties=self.properties or None, ssl_context=self.tls,
                          server_hostname=self.server_hostname,
                          connect_timeout=self.connect_timeout, reconnect=self.reconnect,
                          source_address=source_address)
        self._conn = conn
        self._connect_result = None
        self._loop.add(conn)
        if self._background and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mqttfast-loop", daemon=True)
            self._thread.start()
        wait = timeout if timeout is not None else self.connect_timeout + 1.0
        if not self._wait_for(lambda: self._connect_result is not None, wait):
            conn.closing = True
            self._loop.call_soon(lambda: conn.close(ConnectionLost("connect timed out"), False))
            raise ConnectionLost(f"no CONNACK from {host}:{port} within {wait:g} s")
        result = self._connect_result
        if isinstance(result, ConnectionRefused):
            raise ConnectRefused(result.reason_code, result.reason, result.properties)
        if isinstance(result, BaseException):
            if isinstance(result, MQTTError):
                raise result
            raise ConnectionLost(str(result)) from result
        return result  # type: ignore[return-value]

    def _run(self) -> None:
        try:
            self._loop.run_forever()
        except BaseException:  # pragma: no cover - a bug; make it visible
            log.exception("mqttfast network loop crashed")
            raise

    def loop(self, timeout: float = 1.0) -> None:
        """Drive the network loop once (for ``background=False``)."""
        self._loop.run_once(timeout)

    def loop_forever(self) -> None:
        """Drive the network loop until ``disconnect()`` (for ``background=False``)."""
        while self._conn is not None and self._conn.phase != CLOSED:
            self._loop.run_once(1.0)

    def _in_loop_thread(self) -> bool:
        return not self._background or threading.current_thread() is self._thread

    def _wait_for(self, predicate: Callable[[], bool], timeout: Optional[float],
                  on_write: bool = False) -> bool:
        """Wait until ``predicate()``: on a condition when a loop thread runs (the client's, which
        session events notify, or with ``on_write`` the loop's, which writes notify), else by
        running the loop ourselves."""
        if predicate():
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._in_loop_thread():
            if self._background:
                raise MQTTError("cannot wait inside a callback: the loop thread would block")
            return self._loop.run_until(predicate, timeout)
        loop = self._loop
        cond = loop.written if on_write else self._cond
        with cond:
            if on_write:
                loop.write_waiters += 1
            else:
                self._waiters += 1
            try:
                while not predicate():
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    cond.wait(0.25 if left is None else min(left, 0.25))
            finally:
                if on_write:
                    loop.write_waiters -= 1
                else:
                    self._waiters -= 1
        return True

    def _notify(self) -> None:
        if self._waiters:
            with self._cond:
                self._cond.notify_all()

    # ------------------------------------------------------------------ publishing

    def publish(self, topic: str, payload: Payload = b"", qos: int = 0, retain: bool = False,
                properties: Optional[dict] = None) -> Any:
        """Send a message; returns at once with a handle whose ``wait(timeout)`` is true once the
        message is written (QoS 0) or acknowledged (QoS 1 and 2)."""
        conn = self._conn
        if conn is None:
            raise NotConnected("publish before connect(): connect first")
        session = self.session
        if qos == 0 and session.state == CONNECTED:
            lock = conn.lock
            lock.acquire()  # ``with lock`` costs 3x more than acquire/release on this path
            try:
                if session.plain_qos0:  # the hot path: straight into the session's buffer
                    session.queued_bytes += append_publish(session.out, topic, payload, 0, 0,
                                                           retain, False, session.protocol,
                                                           properties)
                else:  # aliases, a broker size limit, or just disconnected: the session decides
                    queued = session.publish(topic, payload, 0, retain, properties, 0.0,
                                             self._handle_cls)
                    if queued is not None:  # kept for the next connection (persistent session)
                        return queued
                handle = self._written
                if handle is not None and handle._takes == conn.takes and handle._conn is conn:
                    handle._mark = session.queued_bytes  # same write: share the handle
                else:
                    handle = self._written = WrittenHandle(self, conn, session.queued_bytes)
            finally:
                lock.release()
            if not conn._dirty:
                conn.kick()
            if len(session.out) > self.max_buffer:
                self._drain()
            return handle
        lock = conn.lock
        while True:
            lock.acquire()
            try:
                record = session.publish(topic, payload, qos, retain, properties,
                                         _monotonic() if session.ack_timeout else 0.0,
                                         self._handle_cls)
                break
            except QueueFull:
                if not self.block_when_full:
                    raise
            finally:
                lock.release()
            # Block until an acknowledgement frees a slot (or the connection is gone for good).
            self._wait_for(lambda: session.queued_count < session.max_queued
                           or conn.phase == CLOSED, None)
            if conn.phase == CLOSED:
                raise NotConnected("the connection closed while waiting for a free slot")
        if not conn._dirty:
            conn.kick()
        if len(session.out) > self.max_buffer:
            self._drain()
        return record

    def publish_many(self, topic: str, payloads: Iterable[Payload], qos: int = 0,
                     retain: bool = False, properties: Optional[dict] = None) -> BatchHandle:
        """Publish many payloads to one topic with one lock and one wake-up: the bulk path."""
        conn = self._conn
        if conn is None:
            raise NotConnected("publish before connect(): connect first")
        session = self.session
        if qos == 0 and session.plain_qos0:
            with conn.lock:
                session.queued_bytes += append_publish_many(session.out, topic, payloads, retain,
                                                            session.protocol, properties)
                mark = session.queued_bytes
            conn.kick()
            if len(session.out) > self.max_buffer:
                self._drain()
            return BatchHandle([WrittenHandle(self, conn, mark)])
        handles = []
        now = time.monotonic()
        for payload in payloads:
            with conn.lock:
                record = session.publish(topic, payload, qos, retain, properties, now,
                                         self._handle_cls)
            handles.append(record)
            if not conn._dirty:
                conn.kick()  # let the loop start writing while the batch is still being queued
            if len(session.out) > self.max_buffer:
                conn.kick()
                self._drain()
        conn.kick()
        return BatchHandle(handles)

    def _drain(self) -> None:
        """Back-pressure: wait until the loop has written the buffer down to half its limit."""
        conn = self._conn
        assert conn is not None
        low = self.max_buffer // 2
        if self._in_loop_thread() and self._background:
            return  # inside a callback: the loop cannot write while we wait
        self._wait_for(lambda: len(self.session.out) <= low or conn.phase == CLOSED, None,
                       on_write=True)

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, topic: Union[str, Subscription, Sequence[Any]], qos: int = 0,
                  properties: Optional[dict] = None) -> RequestHandle:
        """Subscribe to a filter or a list of filters (str, (str, qos) or ``Subscription``);
        ``.wait()`` on the result returns the granted QoS / reason codes."""
        conn = self._require_conn()
        with conn.lock:
            pid = self.session.subscribe(topic, qos, properties)
            topics = self.session._control[pid][1]
            handle = RequestHandle(self, pid, topics)
            self._requests[pid] = handle
            items = topic if isinstance(topic, list) else [topic]
            for item in items:
                sub = item if isinstance(item, Subscription) else (
                    Subscription(item, qos) if isinstance(item, str) else Subscription(*item))
                self._subscriptions[sub.topic] = sub
        conn.kick()
        return handle

    def unsubscribe(self, topic: Union[str, Sequence[str]],
                    properties: Optional[dict] = None) -> RequestHandle:
        conn = self._require_conn()
        topics = [topic] if isinstance(topic, str) else list(topic)
        with conn.lock:
            pid = self.session.unsubscribe(topics, properties)
            handle = RequestHandle(self, pid, topics)
            self._requests[pid] = handle
            for t in topics:
                self._subscriptions.pop(t, None)
        conn.kick()
        return handle

    def _require_conn(self) -> Connection:
        conn = self._conn
        if conn is None or self.session.state != CONNECTED:
            raise NotConnected("not connected")
        return conn

    def messages(self, timeout: Optional[float] = None) -> Iterator[Publish]:
        """Iterate over received messages (pull style). Stops after ``timeout`` seconds without a
        message, or when the connection closes for good. Messages are kept from this call on
        (not from the first ``next()``), so call it before subscribing to miss nothing."""
        if self._inbox is None:
            self._inbox = queue.SimpleQueue()
        return self._iterate(self._inbox, timeout)

    def _iterate(self, inbox: "queue.SimpleQueue[Any]", timeout: Optional[float]) -> Iterator[Publish]:
        while True:
            try:
                item = inbox.get(timeout=timeout) if self._background else self._pull(timeout)
            except queue.Empty:
                return
            if item is None:
                return
            yield item

    def _pull(self, timeout: Optional[float]) -> Any:
        inbox = self._inbox
        assert inbox is not None
        if inbox.empty():
            self._loop.run_until(lambda: not inbox.empty() or (
                self._conn is not None and self._conn.phase == CLOSED), timeout)
        return inbox.get_nowait()

    # ------------------------------------------------------------------ disconnecting

    def disconnect(self, reason_code: int = 0, properties: Optional[dict] = None,
                   timeout: float = 5.0) -> None:
        """Send DISCONNECT, close the socket, stop the loop thread; fails what cannot complete."""
        conn = self._conn
        if conn is None:
            return
        conn.closing = True
        if conn.phase != CLOSED:
            with conn.lock:
                self.session.disconnect(reason_code, properties)
            if conn.phase >= MQTT_CONNECTING:  # a socket to say DISCONNECT on: wait until said
                conn.kick()
                self._wait_for(lambda: conn.phase == CLOSED, timeout)
            if conn.phase != CLOSED:
                self._loop.call_soon(lambda: conn.close(None, retry=False))
                self._wait_for(lambda: conn.phase == CLOSED, 1.0)
        if self.session.clean_session:
            with conn.lock:
                failed = self.session.fail_all("disconnected")
            self._completed(failed)
        self._stop_thread()

    def _stop_thread(self) -> None:
        if self._thread is not None and self._own_loop:
            self._loop.stop()
            if threading.current_thread() is not self._thread:
                self._thread.join(5.0)
            self._thread = None

    def close(self) -> None:
        """Drop the connection without DISCONNECT (the broker publishes the will) and stop."""
        conn = self._conn
        if conn is not None and conn.phase != CLOSED:
            conn.closing = True
            self._loop.call_soon(lambda: conn.close(ConnectionLost("closed by the client"), False))
            self._wait_for(lambda: conn.phase == CLOSED, 5.0)
        self._stop_thread()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._conn is not None and self._conn.phase != CLOSED:
            self.disconnect()
        else:
            self._stop_thread()

    # ------------------------------------------------------------------ loop callbacks

    def connection_events(self, conn: Connection, events: List[Any]) -> None:
        on_message = self.on_message
        inbox = self._inbox
        handle_cls = self._handle_cls
        completed = False
        for event in events:
            cls = event.__class__
            if cls is Publish:
                if on_message is not None:
                    try:
                        on_message(event)
                    except Exception:
                        log.exception("on_message callback raised")
                if inbox is not None:
                    inbox.put(event)
            elif cls is handle_cls or isinstance(event, Outgoing):
                completed = True
                if self.on_publish is not None:
                    self._call(self.on_publish, event)
            else:
                completed = True
                self._control_event(event)
        if completed:
            self._notify()

    def _control_event(self, event: Any) -> None:
        cls = event.__class__
        if cls is Connected:
            self.connected_event = event
            if not event.session_present and self._subscriptions and self._connect_result:
                # A reconnect without a session: restore the subscriptions.
                with self._conn.lock:  # type: ignore[union-attr]
                    self.session.subscribe(list(self._subscriptions.values()))
                self._conn.kick()  # type: ignore[union-attr]
            self._connect_result = event
            if self.on_connect is not None:
                self._call(self.on_connect, event)
        elif cls is ConnectionRefused:
            self._connect_result = event
        elif cls is Subscribed or cls is Unsubscribed:
            handle = self._requests.pop(event.packet_id, None)
            if handle is not None:
                handle.properties = event.properties
                handle.reason_codes = event.reason_codes
            callback = self.on_subscribe if cls is Subscribed else self.on_unsubscribe
            if callback is not None:
                self._call(callback, event)
        elif cls is AuthRequest:
            if self.on_auth is not None:
                self._call(self.on_auth, event)
        elif cls is Disconnected:
            log.info("broker disconnected: %s", event.reason)

    def _completed(self, records: List[Any]) -> None:
        if records and self.on_publish is not None:
            for record in records:
                self._call(self.on_publish, record)
        self._notify()

    @staticmethod
    def _call(fn: Callable[[Any], None], arg: Any) -> None:
        try:
            fn(arg)
        except Exception:
            log.exception("callback %r raised", fn)

    def connection_closed(self, conn: Connection, error: Optional[BaseException],
                          failed: List[Any], will_retry: bool) -> None:
        if self._connect_result is None and not will_retry:
            self._connect_result = error or ConnectionLost("connection closed")
        self._requests.clear()
        if self.on_disconnect is not None:
            self._call(self.on_disconnect, error)
        self._completed(failed)
        if not will_retry and self._inbox is not None:
            self._inbox.put(None)
        if not will_retry:
            with self._loop.written:
                self._loop.written.notify_all()


__all__ = ["BatchHandle", "Client", "Message", "PublishHandle", "RequestHandle", "WrittenHandle",
           "tls_context"]
