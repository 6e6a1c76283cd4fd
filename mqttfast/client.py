"""The Client: the friendly facade over a session, a connection and a loop.

By default ``connect`` blocks until the broker's CONNACK and then runs the network loop in a
background thread; ``publish`` returns at once with a handle. Pass ``background=False`` to drive the
loop yourself (``client.loop(timeout)`` / ``client.loop_forever()``), or ``loop=`` to share one
``Loop`` between many clients in one thread.

Thread contract:

- ``publish``, ``publish_many``, ``subscribe``, ``unsubscribe``, ``auth``, ``disconnect``,
  ``close`` and every handle's ``wait`` may be called from any thread; each call is atomic
  against the loop (the connection's lock).
- Callbacks (``on_message``, per-filter callbacks, ``on_connect``, ``on_disconnect``,
  ``on_publish``, ``on_subscribe``, ``on_unsubscribe``, ``on_auth``) always run on the loop
  thread, one at a time, in the order the events happened. A callback may publish or subscribe,
  but must not ``wait()``: the loop it would wait for is the one running it (that raises).
- The loop is driven by exactly one thread: the client's own background thread, or, with
  ``background=False`` / a shared ``loop=``, the thread that calls ``loop()`` / ``run_*``.
  Driving it from a second live thread raises ``RuntimeError``.
- Waiting never polls: handles wake when their outcome is known, and every pending handle
  completes (as failed) when the connection closes for good.
"""
from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from typing import (
    Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union,
)

from .batching import DEFAULT_READ_DELAY, check_read_delay
from .codec import Publish, Publisher, StreamMark, Subscription, Will, deliver
from .constants import MAX_PACKET_SIZE, MAX_QUEUED_BYTES, MQTT_5
from .errors import ConnectionLost, ConnectRefused, MQTTError, NotConnected, QueueFull
from .events import (
    AuthRequest,
    ConnectionRefused,
    Connected,
    Disconnected,
    PublishState,
    Subscribed,
    Unsubscribed,
)
from .loop import OPEN, Backoff, Connection, Handler, Loop
from .quickack import check_quickack
from .session import CONNECTED, Outgoing, Session, subscriptions_from
from .store import MemoryStore
from .url import is_url
from .websocket import websocket_for
from .url import target as url_target
from .wire import topic_matches, validate_topic_filter

log = logging.getLogger("mqttfast")
_monotonic = time.monotonic
_DONE = PublishState.DONE

Message = Publish  # what ``on_message`` and ``messages()`` hand out
Payload = Union[bytes, bytearray, memoryview, str]


def tls_context(ca_certs: Optional[str] = None, certfile: Optional[str] = None,
                keyfile: Optional[str] = None, *, ca_path: Optional[str] = None,
                password: Union[str, bytes, None] = None, verify: bool = True,
                alpn_protocols: Optional[Sequence[str]] = None) -> ssl.SSLContext:
    """A client TLS context: the system CAs (or ``ca_certs`` file / ``ca_path`` directory of
    hashed certificates), hostname verification on, an optional client certificate (``keyfile``
    may be encrypted: ``password``), optional ALPN. ``verify=False`` turns verification off
    (testing only)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_certs, capath=ca_path)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if certfile:
        ctx.load_cert_chain(certfile, keyfile, password)
    if alpn_protocols:
        ctx.set_alpn_protocols(list(alpn_protocols))
    return ctx


class PublishHandle(Outgoing):
    """A tracked publish (QoS 1/2, or QoS 0 queued while not connected): ``wait()`` is true once
    the broker acknowledged it (QoS 0: once written).

    Each Client makes its own subclass with ``_client`` as a class attribute, which saves an
    attribute store per message.
    """

    __slots__ = ()
    _client: "Client"

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until done; True if it succeeded, False if it failed or ``timeout`` passed."""
        if self.state < _DONE:
            self._client._wait_for(lambda: self.state >= _DONE, timeout)
        return self.state == _DONE

    @property
    def is_published(self) -> bool:
        return self.state == _DONE


class WrittenHandle(StreamMark):
    """A QoS 0 publish: done once the stream up to its mark reached the socket, ok unless its
    connection dropped first.

    Consecutive QoS 0 publishes that go out in the same write share one handle (making an object
    per message would cost a third of ``publish()``), so ``wait()`` may return a moment after the
    message's own bytes were written, never before. The mark and the stream's ``taken`` when the
    handle was made (same value, same write) are the codec's ``StreamMark``, which the compiled
    ``publish()`` moves on.
    """

    __slots__ = ("_client",)
    qos = 0

    def __init__(self, client: "Client", mark: int, taken: int) -> None:
        StreamMark.__init__(self, mark, taken)
        self._client = client

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

    def wait(self, timeout: Optional[float] = None) -> bool:
        written = self._client.session.written
        if written(self._mark) is None:
            self._client._wait_for(lambda: written(self._mark) is not None, timeout, writes=True)
        return written(self._mark) is True


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

    def wait(self, timeout: Optional[float] = None) -> bool:
        deadline = None if timeout is None else _monotonic() + timeout
        for handle in self.handles:
            left = None if deadline is None else max(0.0, deadline - _monotonic())
            if not handle.wait(left):
                return False
        return True


class RequestHandle:
    """A SUBSCRIBE or UNSUBSCRIBE: ok once the broker acknowledged it; ``reason_codes`` holds one
    code per filter (granted QoS 0-2, or a failure >= 0x80)."""

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

    def wait(self, timeout: Optional[float] = None) -> bool:
        if not self.done:
            self._client._wait_for(lambda: self.done, timeout)
        return self.ok

    def __repr__(self) -> str:
        state = "ok" if self.ok else (f"failed: {self.error}" if self.error else "pending")
        return f"<RequestHandle id={self.packet_id} {list(self.topics)} {state}>"


class _LoopEvents(Handler):
    """The Client's side of the loop's callback protocol, kept out of the Client's own API."""

    __slots__ = ("client",)

    def __init__(self, client: "Client") -> None:
        self.client = client

    def on_messages(self, conn: Connection, messages: List[Any]) -> None:
        self.client._on_messages(messages)

    def on_events(self, conn: Connection, events: List[Any], completed: List[Any]) -> None:
        self.client._on_events(conn, events, completed)

    def on_closed(self, conn: Connection, event: Disconnected) -> None:
        self.client._on_closed(conn, event)

    def on_written(self, conn: Connection) -> None:
        self.client._notify()

    def on_waiting(self, conn: Connection) -> None:
        self.client._notify()  # waiters on the session's state (a PUBACK read) need not wait


class Client:
    """An MQTT 3.1 / 3.1.1 / 5.0 client.

    >>> with Client(client_id="sensor-1") as c:
    ...     c.connect("127.0.0.1", 1883)
    ...     c.publish("sensors/1/temp", b"21.5", qos=1).wait(5)

    ``max_read_delay`` (seconds, default 0: off; 0.001 is a good value): while messages arrive faster
    than about a kilobyte per that time, they may wait that long in the socket so that one read
    takes many (``mqttfast.batching``: the broker then spends less on each delivery); slower
    traffic is read as it comes.

    ``quickack`` (default False; Linux): acknowledge every read at once (``TCP_QUICKACK``,
    ``mqttfast.quickack``). Where the broker fans the same messages out to several subscribers:
    a burst right after their subscriptions then reached 2-100 of them about twice as fast
    through mosquitto; a lone fast subscriber is faster without it.
    """

    def __init__(self, client_id: str = "", protocol: int = 4, *, username: Optional[str] = None,
                 password: Union[str, bytes, None] = None, will: Optional[Will] = None,
                 clean_session: Optional[bool] = None, clean_start: Optional[bool] = None,
                 tls: Union[None, bool, ssl.SSLContext] = None,
                 server_hostname: Optional[str] = None, properties: Optional[dict] = None,
                 session_expiry: Optional[int] = None, max_inflight: Optional[int] = None,
                 max_inflight_qos2: Optional[int] = None,
                 max_queued: int = 1_000_000, max_queued_bytes: int = MAX_QUEUED_BYTES,
                 ack_timeout: Optional[float] = None,
                 max_retries: int = 3, reconnect: Union[bool, Backoff] = False,
                 connect_timeout: float = 10.0, topic_alias_maximum: int = 64,
                 outgoing_aliases: bool = True,
                 max_packet_size: Optional[int] = MAX_PACKET_SIZE,
                 max_buffer: int = 8 * 1024 * 1024, block_when_full: bool = False,
                 manual_ack: bool = False, store: Optional[MemoryStore] = None,
                 loop: Optional[Loop] = None, background: Optional[bool] = None,
                 max_read_delay: float = DEFAULT_READ_DELAY, quickack: bool = False) -> None:
        if clean_session is not None and clean_start is not None and clean_session != clean_start:
            raise ValueError("clean_session and clean_start are the same flag: give one")
        clean = clean_session if clean_session is not None else (
            clean_start if clean_start is not None else True)
        if protocol != MQTT_5 and (properties or session_expiry is not None):
            raise ValueError("properties and session_expiry need protocol=5")
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
        self.reconnect = Backoff() if reconnect is True else (reconnect or None)
        self.connect_timeout = connect_timeout
        self._max_buffer = max_buffer
        self.block_when_full = block_when_full  # QueueFull blocks publish() instead of raising
        self._handle_cls = type("PublishHandle", (PublishHandle,), {"__slots__": (), "_client": self})
        # The session checks every CONNECT parameter here: a bad one raises now.
        self.session = Session(client_id, protocol, clean, username=username, password=password,
                               will=will, properties=connect_props or None,
                               max_inflight=max_inflight, max_inflight_qos2=max_inflight_qos2,
                               max_queued=max_queued, max_queued_bytes=max_queued_bytes,
                               max_buffer=max_buffer, ack_timeout=ack_timeout,
                               max_retries=max_retries, topic_alias_maximum=topic_alias_maximum,
                               outgoing_aliases=outgoing_aliases, max_packet_size=max_packet_size,
                               manual_ack=manual_ack, store=store, record_cls=self._handle_cls)
        self._connect_args = (username, password, will, connect_props or None)
        self._durable = self.session.store.durable
        self._batching: Set[int] = set()  # threads inside publish_many: it commits once
        self._events = _LoopEvents(self)
        self._own_loop = loop is None
        self._background = self._own_loop if background is None else background
        # Its own loop in its own thread gets a stand-in for slow callbacks (Loop.stall_after);
        # a caller that drives the loop itself gets no thread it did not ask for.
        self._loop = loop if loop is not None else Loop(
            stall_after=Loop.STALL_AFTER if self._background else None)
        self._thread: Optional[threading.Thread] = None
        self._conn: Optional[Connection] = None
        self._cond = threading.Condition()
        self._waiters = 0
        self._write_waiters = 0
        self._progress = 0  # bumped at every notification (for waits on "anything changed")
        self._inbox: Optional["queue.SimpleQueue[Any]"] = None
        # publish(): QoS 0 on a plain connection is compiled (the codec's Publisher, which also
        # owns the QoS 0 handle of the current write); everything else is Client.publish below.
        # A subclass that overrides publish keeps its own.
        self._publisher = Publisher(self.session.qos0, type(self).publish.__get__(self),
                                    self._new_written, max_buffer, self._drain)
        if type(self).publish is Client.publish:
            self.__dict__["publish"] = self._publisher
        self._subscriptions: Dict[str, Subscription] = {}
        self._requests: Dict[int, RequestHandle] = {}
        self._asked: Dict[int, List[Subscription]] = {}  # SUBSCRIBE id -> its subscriptions
        self._filters: Dict[str, Callable[[Publish], None]] = {}
        self._connect_result: Optional[Any] = None
        self.manual_ack = manual_ack
        self.connack: Optional[Connected] = None
        self.on_message: Optional[Callable[[Publish], None]] = None
        self.on_connect: Optional[Callable[[Connected], None]] = None
        self.on_disconnect: Optional[Callable[[Disconnected], None]] = None
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
        return self.session.state is CONNECTED

    @property
    def max_buffer(self) -> int:
        """Bytes the outgoing stream may hold before a publisher is held back (``_drain``)."""
        return self._max_buffer

    @property
    def loop_object(self) -> Loop:
        return self._loop

    @property
    def restored(self) -> List[PublishHandle]:
        """Handles of the publishes a durable store brought back from an earlier process: they
        are sent again once connected, and complete (``wait``, ``on_publish``) like any other."""
        return self.session.restored  # type: ignore[return-value]

    # ------------------------------------------------------------------ connecting

    def connect(self, host: str = "127.0.0.1", port: Optional[int] = None, keepalive: int = 60,
                timeout: Optional[float] = None, *,
                source_address: Optional[Tuple[str, int]] = None,
                ws_headers: Optional[Dict[str, str]] = None) -> Connected:
        """Connect and block until the CONNACK; raise ``ConnectRefused`` or ``ConnectionLost``
        (with the real cause: refused, unreachable, TLS verification...). Bad arguments raise
        ``ValueError`` / ``TypeError`` here and leave the client as it was. With ``reconnect``,
        later drops are retried; a first attempt that fails is reported, not retried.

        ``host`` may be a URL (``mqttfast.url``): ``mqtt://user:pass@host:1883``, ``mqtts://``,
        ``unix:///run/mosquitto.sock``, ``ws://host:8080/mqtt`` or ``wss://`` (MQTT over
        WebSocket, subprotocol ``mqtt``, with ``ws_headers`` added to the upgrade request); its
        user name and password are used when the client was given none (a different one raises)."""
        if self._conn is not None and not self._conn.closed:
            raise MQTTError("already connected; call disconnect() first")
        username, password, will, props = self._connect_args
        ssl_context, unix_path, websocket = self.tls, None, None
        if is_url(host):
            to = url_target(host, port, self.tls, username, password, tls_context, websocket=True)
            host, port, unix_path, ssl_context, username, password, ws_path = to
            if unix_path is not None and source_address is not None:
                raise ValueError("source_address has no meaning for a Unix domain socket")
            if ws_path is not None:
                websocket = websocket_for(host, port, ws_path, ws_headers, ssl_context is not None)
        if ws_headers is not None and websocket is None:
            raise ValueError("ws_headers need a ws:// or wss:// URL")
        if port is None:
            port = 8883 if ssl_context is not None else 1883
        self.session.configure(keepalive, username, password, will, props)
        conn = Connection(self._loop, self.session, self._events, host, port,
                          ssl_context=ssl_context, server_hostname=self.server_hostname,
                          connect_timeout=self.connect_timeout, reconnect=self.reconnect,
                          source_address=source_address, unix_path=unix_path,
                          websocket=websocket, max_read_delay=self.max_read_delay,
                          quickack=self.quickack)
        self._conn = conn
        self._publisher.bind(conn.lock, conn)
        self._connect_result = None
        self._loop.add(conn)
        if self._background and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mqttfast-loop", daemon=True)
            self._thread.start()
        wait = timeout if timeout is not None else self.connect_timeout + 1.0
        if not self._wait_for(lambda: self._connect_result is not None, wait):
            conn.closing = True
            self._loop.call_soon(lambda: conn.close(ConnectionLost("connect timed out"), False))
            raise ConnectionLost(f"no CONNACK from {conn.peer} within {wait:g} s")
        result = self._connect_result
        if isinstance(result, Connected):
            return result
        if isinstance(result, ConnectionRefused):
            raise ConnectRefused(result.reason_code, result.reason, result.properties)
        if isinstance(result, Disconnected):
            error = result.error
            if isinstance(error, MQTTError):
                raise error
            raise ConnectionLost(result.reason) from error
        raise ConnectionLost(str(result))  # pragma: no cover - nothing else is stored

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
        """Drive the network loop until the connection closes for good (``background=False``)."""
        while self._conn is not None and not self._conn.closed:
            self._loop.run_once(1.0)

    def _in_loop_thread(self) -> bool:
        """Called from inside the loop (a callback)."""
        return self._loop.owner_id == threading.get_ident()

    def _wait_for(self, predicate: Callable[[], bool], timeout: Optional[float],
                  writes: bool = False) -> bool:
        """Wait until ``predicate()`` (True) or ``timeout`` (False): on the client's condition,
        which the loop notifies on every event, completion and close (and, with ``writes``, on
        every write), or, with ``background=False`` and nobody driving the loop, by running it."""
        if predicate():
            return True
        owner = self._loop.owner_id
        if owner == threading.get_ident():
            raise MQTTError("cannot wait inside a callback: the loop it waits for is the one "
                            "running the callback")
        if owner is None and not self._background:
            return self._loop.run_until(predicate, timeout)
        deadline = None if timeout is None else _monotonic() + timeout
        conn = self._conn
        with self._cond:
            self._waiters += 1
            if writes:
                self._write_waiters += 1
                if conn is not None:
                    conn.notify_writes = True
            try:
                while not predicate():
                    if deadline is None:
                        self._cond.wait()
                    else:
                        left = deadline - _monotonic()
                        if left <= 0:
                            return False
                        self._cond.wait(left)
            finally:
                self._waiters -= 1
                if writes:
                    self._write_waiters -= 1
                    if not self._write_waiters and conn is not None:
                        conn.notify_writes = False
        return True

    def _notify(self) -> None:
        self._progress += 1
        if self._waiters:
            with self._cond:
                self._cond.notify_all()

    def _require_conn(self) -> Connection:
        conn = self._conn
        if conn is None:
            raise NotConnected("not connected: call connect() first")
        return conn

    # ------------------------------------------------------------------ publishing

    def publish(self, topic: str, payload: Payload = b"", qos: int = 0, retain: bool = False,
                properties: Optional[dict] = None) -> Any:
        """Send a message; returns at once with a handle whose ``wait(timeout)`` is true once the
        message is written (QoS 0) or acknowledged (QoS 1 and 2). Bad arguments raise here."""
        conn = self._conn
        if conn is None:
            raise NotConnected("publish before connect(): connect first")
        session = self.session
        lock = conn.lock
        while True:
            lock.acquire()  # ``with lock`` costs more than acquire/release on this path
            try:
                result = session.publish(topic, payload, qos, retain, properties,
                                         _monotonic() if session.ack_timeout else 0.0,
                                         self._handle_cls)
                if result.__class__ is int:  # QoS 0, in the stream: share the write's handle
                    result = self._publisher.mark(result)
                elif self._durable and threading.get_ident() not in self._batching:
                    session.store.commit()  # durable before publish returns (and before sent)
                break
            except QueueFull:
                if not self.block_when_full:
                    raise
                seen = self._progress
            finally:
                lock.release()
            # Block until something frees room (an acknowledgement, a connection) or it is over.
            self._wait_for(lambda seen=seen: self._progress != seen or conn.closed,  # type: ignore[misc]
                           None)
            if conn.closed:
                raise NotConnected("the connection closed while waiting for room")
        if not conn.flush_queued:
            conn.kick()
        if len(session.out) > self._max_buffer:
            self._drain()
        return result

    def publish_many(self, topic: str, payloads: Iterable[Payload], qos: int = 0,
                     retain: bool = False, properties: Optional[dict] = None) -> BatchHandle:
        """Publish many payloads to one topic with one lock and one wake-up: the bulk path."""
        conn = self._require_conn()
        session = self.session
        if qos == 0 and qos.__class__ is int and session.plain_qos0:
            with conn.lock:
                mark = session.publish_many(topic, payloads, retain, properties)
                handle = self._publisher.mark(mark)
            conn.kick()
            if len(session.out) > self.max_buffer:
                self._drain()
            return BatchHandle([handle])
        handles = []
        if not (self._durable and qos):
            for payload in payloads:
                handles.append(self.publish(topic, payload, qos, retain, properties))
            return BatchHandle(handles)
        me = threading.get_ident()
        self._batching.add(me)
        try:
            for payload in payloads:
                handles.append(self.publish(topic, payload, qos, retain, properties))
        finally:
            self._batching.discard(me)
            if handles:  # one transaction for the batch, before it returns (or raises)
                with conn.lock:
                    session.store.commit()
        return BatchHandle(handles)

    def _new_written(self, mark: int, taken: int) -> WrittenHandle:
        return WrittenHandle(self, mark, taken)

    def _drain(self) -> None:
        """Back-pressure: wait until the loop has taken the buffer down to half its limit."""
        conn = self._conn
        assert conn is not None
        if self._in_loop_thread():
            return  # inside a callback: the loop cannot write while we wait
        low = self.max_buffer // 2
        self._wait_for(lambda: len(self.session.out) <= low or conn.closed, None, writes=True)

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, topic: Union[str, Subscription, Sequence[Any]], qos: int = 0,
                  properties: Optional[dict] = None) -> RequestHandle:
        """Subscribe to a filter or several (a str, (str, qos), a ``Subscription``, or a list or
        tuple of them); the handle's ``reason_codes`` holds the granted QoS per filter. Granted
        subscriptions are restored by themselves after an automatic reconnect that lost the
        session; one that failed (refused, or its connection dropped first) is not."""
        conn = self._require_conn()
        subs = subscriptions_from(topic, qos)
        with conn.lock:
            pid = self.session.subscribe(subs, qos, properties)
            handle = RequestHandle(self, pid, self.session.subscription_topics(pid))
            self._requests[pid] = handle
            self._asked[pid] = subs  # remembered for reconnects once the broker grants them
        conn.kick()
        return handle

    def unsubscribe(self, topic: Union[str, Sequence[str]],
                    properties: Optional[dict] = None) -> RequestHandle:
        conn = self._require_conn()
        topics = (topic,) if isinstance(topic, str) else tuple(topic)
        with conn.lock:
            pid = self.session.unsubscribe(topics, properties)
            handle = RequestHandle(self, pid, topics)
            self._requests[pid] = handle
            for t in topics:
                self._subscriptions.pop(t, None)
        conn.kick()
        return handle

    def message_callback_add(self, topic_filter: str, callback: Callable[[Publish], None]) -> None:
        """Messages matching ``topic_filter`` go to ``callback`` (instead of ``on_message``;
        a message matching several filters goes to each of their callbacks)."""
        validate_topic_filter(topic_filter)
        self._filters = {**self._filters, topic_filter: callback}  # copy: the loop iterates it

    def message_callback_remove(self, topic_filter: str) -> None:
        self._filters = {f: cb for f, cb in self._filters.items() if f != topic_filter}

    def auth(self, reason_code: int = 0x18, properties: Optional[dict] = None) -> None:
        """Send an MQTT 5 AUTH packet (to answer ``on_auth`` during enhanced authentication)."""
        conn = self._require_conn()
        with conn.lock:
            self.session.auth(reason_code, properties)
        conn.kick()

    def ack(self, message: Publish) -> bool:
        """``manual_ack=True``: acknowledge a QoS 1/2 message (also ``message.ack()``). False when
        its connection is gone: the broker will send it again."""
        conn = self._conn
        token = getattr(message, "_ack_token", None)
        if conn is None or token is None:
            return False
        with conn.lock:
            ok = self.session.ack(token[0], token[1])
        conn.kick()
        return ok

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
                self._conn is not None and self._conn.closed), timeout)
        return inbox.get_nowait()

    # ------------------------------------------------------------------ disconnecting

    def disconnect(self, reason_code: int = 0, properties: Optional[dict] = None,
                   timeout: float = 5.0) -> None:
        """Send DISCONNECT, close the socket, stop the loop thread. Without a persistent session,
        what cannot complete any more fails, and the subscriptions are forgotten."""
        conn = self._conn
        if conn is None:
            return
        conn.closing = True
        if not conn.closed and self._in_loop_thread():
            # From a callback: queue DISCONNECT; the loop closes the socket once it is written.
            with conn.lock:
                self.session.disconnect(reason_code, properties)
            if conn.phase is OPEN:
                conn.kick()
            else:
                self._loop.call_soon(lambda: conn.close(None, retry=False))
            if self._own_loop and self._background:
                self._loop.stop()
                self._thread = None
            return
        if not conn.closed:
            with conn.lock:
                self.session.disconnect(reason_code, properties)
            if conn.phase is OPEN:  # a socket to say DISCONNECT on: wait until said
                conn.kick()
                self._wait_for(lambda: conn.closed, timeout)
            if not conn.closed:
                self._loop.call_soon(lambda: conn.close(None, retry=False))
                self._wait_for(lambda: conn.closed, 1.0)
        if self.session.clean_session:
            with conn.lock:
                self.session.fail_all("disconnected")
                completed = self.session.take_completed()
            self._subscriptions.clear()
            self._on_events(conn, [], completed)
        self._stop_thread()

    def _stop_thread(self) -> None:
        if self._thread is not None and self._own_loop:
            self._loop.stop()
            if threading.current_thread() is not self._thread:
                self._thread.join(5.0)
            self._thread = None

    def close(self) -> None:
        """Drop the connection without DISCONNECT (the broker publishes the will) and stop.
        Bytes already queued are handed to the socket first, as far as it takes them now."""
        conn = self._conn
        if conn is not None and not conn.closed:
            conn.closing = True

            def drop() -> None:  # what is already queued (acks, publishes) goes out first
                conn.flush()
                conn.close(ConnectionLost("closed by the client"), False)

            self._loop.call_soon(drop)
            if not self._in_loop_thread():
                self._wait_for(lambda: conn.closed, 5.0)
        self._stop_thread()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._conn is not None and not self._conn.closed:
            self.disconnect()
        else:
            self._stop_thread()

    # ------------------------------------------------------------------ from the loop

    def _on_messages(self, messages: List[Any]) -> None:
        if self.manual_ack:
            messages = [self._ackable(m) if m.qos else m for m in messages]
        filters = self._filters
        on_message = self.on_message
        inbox = self._inbox
        if not filters and inbox is None:  # the bulk path: the codec's loop calls on_message
            if on_message is not None:
                deliver(on_message, messages, self._on_message_failed)
            return
        for message in messages:
            if filters:
                matched = False
                for topic_filter, callback in filters.items():
                    if topic_matches(topic_filter, message.topic):
                        matched = True
                        self._call(callback, message)
                if matched:
                    continue
            if on_message is not None:
                try:
                    on_message(message)
                except Exception:
                    log.exception("on_message callback raised")
            if inbox is not None:
                inbox.put(message)

    @staticmethod
    def _on_message_failed(exc: Exception) -> None:
        log.error("on_message callback raised", exc_info=exc)

    def _ackable(self, message: Publish) -> Publish:
        wrapped = AckableMessage(message.topic, message.payload, message.qos, message.packet_id,
                                 message.retain, message.dup, message.properties)
        wrapped._ack_token = (message.packet_id, self.session.epoch)  # type: ignore[attr-defined]
        wrapped._client = self  # type: ignore[attr-defined]
        return wrapped

    def _on_events(self, conn: Connection, events: List[Any], completed: List[Any]) -> None:
        for event in events:
            cls = event.__class__
            if cls is Connected:
                self.connack = event
                if not event.session_present and self._subscriptions and \
                        self._connect_result is not None:
                    # An automatic reconnect without a session: restore the subscriptions.
                    try:
                        with conn.lock:
                            self.session.subscribe(list(self._subscriptions.values()))
                        conn.kick()
                    except MQTTError:
                        log.exception("restoring the subscriptions failed")
                if self._connect_result is None:
                    self._connect_result = event
                if self.on_connect is not None:
                    self._call(self.on_connect, event)
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
                callback = self.on_subscribe if cls is Subscribed else self.on_unsubscribe
                if callback is not None:
                    self._call(callback, event)
            elif cls is AuthRequest:
                if self.on_auth is not None:
                    self._call(self.on_auth, event)
            elif cls is ConnectionRefused:
                if self._connect_result is None:
                    self._connect_result = event
            elif cls is Disconnected:
                log.info("connection ended: %s", event.reason)
        on_publish = self.on_publish
        if completed and on_publish is not None:
            for record in completed:
                self._call(on_publish, record)
        self._notify()

    def _on_closed(self, conn: Connection, event: Disconnected) -> None:
        if conn is not self._conn:
            return  # an earlier connection of this client, already replaced
        if self._connect_result is None and not event.will_reconnect:
            self._connect_result = event
        requests, self._requests = self._requests, {}
        self._asked.clear()
        for handle in requests.values():
            handle.error = f"the connection closed before the acknowledgement: {event.reason}"
        if self.on_disconnect is not None:
            self._call(self.on_disconnect, event)
        if not event.will_reconnect and self._inbox is not None:
            self._inbox.put(None)
        self._notify()

    @staticmethod
    def _call(fn: Callable[[Any], None], arg: Any) -> None:
        try:
            fn(arg)
        except Exception:
            log.exception("callback %r raised", fn)


class AckableMessage(Publish):  # type: ignore[misc, valid-type]
    """A received QoS 1/2 message under ``manual_ack=True``: call ``ack()`` when done with it."""

    __slots__ = ("_ack_token", "_client")

    def ack(self) -> bool:
        client: Client = self._client  # type: ignore[attr-defined]
        return client.ack(self)


__all__ = ["AckableMessage", "BatchHandle", "Client", "Message", "PublishHandle",
           "RequestHandle", "WrittenHandle", "tls_context"]
