"""paho-mqtt 2.x's ``Client`` on mqttfast's engine: ``import mqttfast.compat.paho as mqtt``.

A paho program runs unchanged but for that import: ``Client(CallbackAPIVersion.VERSION2, ...)``,
``connect`` / ``connect_async`` / ``reconnect``, ``loop_start`` / ``loop_stop`` /
``loop_forever`` / ``loop``, ``publish`` returning an ``MQTTMessageInfo``, every form of
``subscribe``, ``message_callback_add``, TLS, wills, and the ``on_*`` callbacks with paho's
signatures for both callback API versions (``ReasonCode`` and ``Properties`` values for VERSION2).

Threads, as in paho: callbacks run in the thread that drives the network (the ``loop_start``
thread, or the caller of ``loop_forever`` / ``loop``); ``publish``, ``subscribe``,
``unsubscribe`` and ``disconnect`` may be called from any thread. Callbacks of the CONNACK that
``connect()`` waits for run at the next ``loop*`` call, as in paho.

Where it differs from paho (the engine's behaviour shows through):

- ``connect()`` returns once the CONNACK arrived (paho returns after sending CONNECT); a refused
  CONNACK is still reported through ``on_connect`` (and ``on_disconnect``), not raised, and is
  not retried (paho retries it under ``loop_forever``).
- Reconnecting after a drop is mqttfast's (``reconnect_delay_set`` sets its backoff, with
  jitter), in every loop mode; the subscriptions the broker granted are restored by themselves
  when it lost the session (paho programs that subscribe again in ``on_connect`` do no harm).
- An exception raised by a callback is logged (``on_log`` / ``enable_logger`` / the
  ``mqttfast`` logger), not re-raised into the loop (paho's ``suppress_exceptions=False``).
- ``max_inflight_messages_set`` defaults to mqttfast's window, not 20; proxies, ``connect_srv``
  and the external-loop calls (``loop_read``, ``loop_write``, ``loop_misc``, ``socket``,
  ``want_write``, ``on_socket_*``) are not available.
- ``transport="websockets"`` and ``"unix"`` work as in paho (``ws_set_options`` path and
  headers, wss after ``tls_set``; the socket's path as ``connect()``'s host), but a WebSocket
  path with a query (``?...``) is refused, and the engine writes the upgrade's own headers
  (``Host``, ``Upgrade``, ``Connection``, ``Sec-WebSocket-*``): extra headers or a headers
  callable cannot replace those (``Origin`` and any other header they can).
"""
from __future__ import annotations

import logging
import os
import ssl
import threading
import time
import uuid
import warnings
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple
from urllib.parse import quote

from ..client import Client as _Engine
from ..client import WrittenHandle
from ..codec import Publish, Subscription, Will
from ..errors import ConnectionLost, ConnectRefused, MQTTError, NotConnected, QueueFull
from ..events import Connected, Disconnected, Subscribed, Unsubscribed
from ..loop import Backoff, Loop
from ..websocket import WebSocketError
from ..wire import topic_matches, validate_topic_filter
from ._paho_types import (
    CONNACK_TO_REASON,
    REASON_TO_CONNACK,
    CallbackAPIVersion,
    ConnectFlags,
    DisconnectFlags,
    LogLevel,
    MQTTErrorCode,
    MQTTMessage,
    MQTTMessageInfo,
    MQTTProtocolVersion,
    PacketTypes,
    Properties,
    ReasonCode,
    ReasonCodes,
    SubscribeOptions,
    connack_string,
    encode_payload,
    error_string,
    is_subscribe_options,
    props_to_dict,
    subscription,
)

MQTT_ERR_AGAIN = MQTTErrorCode.MQTT_ERR_AGAIN
MQTT_ERR_SUCCESS = MQTTErrorCode.MQTT_ERR_SUCCESS
MQTT_ERR_NOMEM = MQTTErrorCode.MQTT_ERR_NOMEM
MQTT_ERR_PROTOCOL = MQTTErrorCode.MQTT_ERR_PROTOCOL
MQTT_ERR_INVAL = MQTTErrorCode.MQTT_ERR_INVAL
MQTT_ERR_NO_CONN = MQTTErrorCode.MQTT_ERR_NO_CONN
MQTT_ERR_CONN_REFUSED = MQTTErrorCode.MQTT_ERR_CONN_REFUSED
MQTT_ERR_NOT_FOUND = MQTTErrorCode.MQTT_ERR_NOT_FOUND
MQTT_ERR_CONN_LOST = MQTTErrorCode.MQTT_ERR_CONN_LOST
MQTT_ERR_TLS = MQTTErrorCode.MQTT_ERR_TLS
MQTT_ERR_PAYLOAD_SIZE = MQTTErrorCode.MQTT_ERR_PAYLOAD_SIZE
MQTT_ERR_NOT_SUPPORTED = MQTTErrorCode.MQTT_ERR_NOT_SUPPORTED
MQTT_ERR_AUTH = MQTTErrorCode.MQTT_ERR_AUTH
MQTT_ERR_ACL_DENIED = MQTTErrorCode.MQTT_ERR_ACL_DENIED
MQTT_ERR_UNKNOWN = MQTTErrorCode.MQTT_ERR_UNKNOWN
MQTT_ERR_ERRNO = MQTTErrorCode.MQTT_ERR_ERRNO
MQTT_ERR_QUEUE_SIZE = MQTTErrorCode.MQTT_ERR_QUEUE_SIZE
MQTT_ERR_KEEPALIVE = MQTTErrorCode.MQTT_ERR_KEEPALIVE

MQTTv31 = MQTTProtocolVersion.MQTTv31
MQTTv311 = MQTTProtocolVersion.MQTTv311
MQTTv5 = MQTTProtocolVersion.MQTTv5

MQTT_LOG_INFO = LogLevel.MQTT_LOG_INFO
MQTT_LOG_NOTICE = LogLevel.MQTT_LOG_NOTICE
MQTT_LOG_WARNING = LogLevel.MQTT_LOG_WARNING
MQTT_LOG_ERR = LogLevel.MQTT_LOG_ERR
MQTT_LOG_DEBUG = LogLevel.MQTT_LOG_DEBUG
LOGGING_LEVEL: Dict[int, int] = {MQTT_LOG_DEBUG: logging.DEBUG, MQTT_LOG_INFO: logging.INFO,
                 MQTT_LOG_NOTICE: logging.INFO, MQTT_LOG_WARNING: logging.WARNING,
                 MQTT_LOG_ERR: logging.ERROR}

CONNACK_ACCEPTED = 0
CONNACK_REFUSED_PROTOCOL_VERSION = 1
CONNACK_REFUSED_IDENTIFIER_REJECTED = 2
CONNACK_REFUSED_SERVER_UNAVAILABLE = 3
CONNACK_REFUSED_BAD_USERNAME_PASSWORD = 4
CONNACK_REFUSED_NOT_AUTHORIZED = 5
MQTT_CLEAN_START_FIRST_ONLY = 3
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, SUBACK, UNSUBSCRIBE, \
    UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = (t << 4 for t in range(1, 16))

log = logging.getLogger("mqttfast.compat.paho")


class WebsocketConnectionError(ConnectionError):
    """Raised by paho when the WebSocket handshake fails (kept for ``except`` clauses)."""


class TransportNotAvailable(NotImplementedError):
    """The transport asked for is not (yet) in mqttfast's engine."""


def topic_matches_sub(sub: str, topic: str) -> bool:
    return topic_matches(sub, topic)


def convert_connack_rc_to_reason_code(connack_code: int) -> ReasonCode:
    return ReasonCode(PacketTypes.CONNACK, identifier=CONNACK_TO_REASON.get(connack_code, 0x80))


def _check_publish_topic(topic: Any, protocol: int) -> None:
    if not isinstance(topic, str):
        raise TypeError(f"topic must be a str, not {type(topic).__name__}")
    if protocol != MQTTv5 and not topic:
        raise ValueError("Invalid topic.")
    if "+" in topic or "#" in topic:
        raise ValueError("Publish topic cannot contain wildcards.")


def _connect_error(exc: MQTTError) -> OSError:
    """The socket-level exception paho's ``connect()`` would raise for what the engine saw."""
    text = str(exc)
    if isinstance(exc, WebSocketError) or "WebSocket upgrade" in text:  # before "refused"
        return WebsocketConnectionError(text)
    if "refused" in text.lower():
        return ConnectionRefusedError(text)
    if "TLS" in text:
        return ssl.SSLError(text)
    if "timed out" in text or "within" in text:
        return TimeoutError(text)
    return OSError(text)


class _Pairing:
    """Pairs what the caller knows once a call returned (the paho ``mid``) with the outcome the
    loop thread may report first (an acknowledgement racing the return of ``publish``)."""

    __slots__ = ("_lock", "_waiting", "_early")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: Dict[Any, Any] = {}
        self._early: Dict[Any, Any] = {}

    def expect(self, key: Any, value: Any) -> Any:
        """Remember ``value``; returns the outcome instead when it already arrived."""
        with self._lock:
            if key in self._early:
                return self._early.pop(key)
            self._waiting[key] = value
            return None

    def arrive(self, key: Any, outcome: Any) -> Any:
        """The value remembered for ``key``, or None (then ``expect`` will get ``outcome``)."""
        with self._lock:
            if key in self._waiting:
                return self._waiting.pop(key)
            self._early[key] = outcome
            return None


class Client:
    """paho-mqtt 2.x's ``Client``; ``loop=`` (an mqttfast ``Loop``) lets many share one loop,
    driven by one thread (then call ``loop_start()`` on one of them only, or run the loop
    yourself)."""

    def __init__(self, callback_api_version: CallbackAPIVersion = CallbackAPIVersion.VERSION1,
                 client_id: Optional[str] = "", clean_session: Optional[bool] = None,
                 userdata: Any = None, protocol: int = MQTTv311, transport: str = "tcp",
                 reconnect_on_failure: bool = True, manual_ack: bool = False, *,
                 loop: Optional[Loop] = None) -> None:
        if isinstance(callback_api_version, str):
            raise TypeError("Unsupported callback API version: version 2.0 added a "
                            "callback_api_version, see paho's docs/migrations.rst")
        if callback_api_version not in CallbackAPIVersion:
            raise ValueError("Unsupported callback API version")
        if callback_api_version is CallbackAPIVersion.VERSION1:
            warnings.warn("Callback API version 1 is deprecated, update to latest version",
                          category=DeprecationWarning, stacklevel=2)
        transport = transport.lower()
        if transport not in ("tcp", "websockets", "unix"):
            raise ValueError(f'transport must be "websockets", "tcp" or "unix", not {transport}')
        if protocol not in (MQTTv31, MQTTv311, MQTTv5):
            raise ValueError(f"protocol must be MQTTv31, MQTTv311 or MQTTv5, not {protocol!r}")
        if protocol == MQTTv5:
            if clean_session is not None:
                raise ValueError("Clean session is not used for MQTT 5.0")
        else:
            if clean_session is None:
                clean_session = True
            if not clean_session and not client_id:
                raise ValueError("A client id must be provided if clean session is False.")
        if not client_id and protocol == MQTTv31:
            client_id = uuid.uuid4().hex[:22]  # 3.1 brokers refuse an empty client id
        self._callback_api_version = callback_api_version
        self._client_id = client_id or ""
        self._clean_session = clean_session
        self._userdata = userdata
        self._protocol = int(protocol)
        self._transport = transport
        self._reconnect_on_failure = reconnect_on_failure
        self._manual_ack = manual_ack
        self._loop = loop if loop is not None else Loop()
        self._engine: Optional[_Engine] = None
        self._engine_key: Optional[Tuple[Any, ...]] = None
        # Connection settings (paho lets them change until the next connect).
        self._host = ""
        self._port = 1883
        self._keepalive = 60
        self._bind: Optional[Tuple[str, int]] = None
        self._clean_start: Any = MQTT_CLEAN_START_FIRST_ONLY
        self._connect_properties: Optional[Dict[str, Any]] = None
        self._connect_timeout = 5.0
        self._username: Optional[str] = None
        self._password: Optional[str] = None
        self._will: Optional[Will] = None
        self._ssl_context: Optional[ssl.SSLContext] = None
        self._tls_insecure = False
        self._websocket_path = "/mqtt"
        self._websocket_headers: Any = None
        self._reconnect_delay = (1.0, 120.0)
        self._max_inflight: Optional[int] = None
        self._max_queued = 0
        self._logger: Optional[logging.Logger] = None
        self._connect_pending = False  # connect_async() called: the loop connects
        # Requests and their paho ids.
        self._mid = 0
        self._mid_lock = threading.Lock()
        self._publishes = _Pairing()  # mqttfast record -> MQTTMessageInfo
        self._written: Deque[Tuple[WrittenHandle, MQTTMessageInfo]] = deque()  # QoS 0, on_publish
        self._requests_lock = threading.Lock()  # held across subscribe/unsubscribe + its mid
        self._request_mids: Dict[int, int] = {}  # SUBSCRIBE/UNSUBSCRIBE packet id -> mid
        self._unsent: List[Tuple[str, bytes, int, bool, Any, MQTTMessageInfo]] = []
        self._to_ack: Dict[int, Publish] = {}  # manual_ack: mid -> the engine's message
        self._filters: Dict[str, Callable[..., None]] = {}
        # Who runs the callbacks: during a connect() nobody loops yet, so they wait for a loop.
        self._defer = False
        self._deferred: Deque[Tuple[Callable[..., None], Tuple[Any, ...]]] = deque()
        self._up = False  # a CONNACK accepted this connection, not yet ended
        self._in_connect = False  # reconnect() waits for the CONNACK: it reports the outcome
        self._attempt_end: Optional[Disconnected] = None
        self._thread: Optional[threading.Thread] = None
        self._thread_terminate = False
        self._closed_for_good = True  # no connection, or it ended without a reconnect
        self._reconnecting = False  # reconnect(): the old connection's end is not reported
        self.suppress_exceptions = True  # paho's flag; callbacks' exceptions are always logged
        self.on_log: Optional[Callable[..., None]] = None
        self.on_pre_connect: Optional[Callable[..., None]] = None
        self.on_connect: Optional[Callable[..., None]] = None
        self.on_connect_fail: Optional[Callable[..., None]] = None
        self.on_disconnect: Optional[Callable[..., None]] = None
        self.on_message: Optional[Callable[..., None]] = None
        self.on_publish: Optional[Callable[..., None]] = None
        self.on_subscribe: Optional[Callable[..., None]] = None
        self.on_unsubscribe: Optional[Callable[..., None]] = None

    # ------------------------------------------------------------------ settings

    @property
    def callback_api_version(self) -> CallbackAPIVersion:
        return self._callback_api_version

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def keepalive(self) -> int:
        return self._keepalive

    @property
    def transport(self) -> str:
        return self._transport

    @property
    def protocol(self) -> int:
        return self._protocol

    @property
    def username(self) -> Optional[str]:
        return self._username

    @property
    def password(self) -> Optional[str]:
        return self._password

    @property
    def connect_timeout(self) -> float:
        return self._connect_timeout

    @connect_timeout.setter
    def connect_timeout(self, value: float) -> None:
        if value <= 0.0:
            raise ValueError("timeout must be a positive number")
        self._connect_timeout = value

    @property
    def max_inflight_messages(self) -> int:
        return self._max_inflight or 0

    @property
    def max_queued_messages(self) -> int:
        return self._max_queued

    @property
    def will_topic(self) -> Optional[str]:
        return self._will.topic if self._will else None

    @property
    def will_payload(self) -> Optional[bytes]:
        return self._will.payload if self._will else None

    @property
    def logger(self) -> Optional[logging.Logger]:
        return self._logger

    def username_pw_set(self, username: Optional[str], password: Optional[str] = None) -> None:
        self._username = username
        self._password = password

    def user_data_set(self, userdata: Any) -> None:
        self._userdata = userdata

    def user_data_get(self) -> Any:
        return self._userdata

    def will_set(self, topic: str, payload: Any = None, qos: int = 0, retain: bool = False,
                 properties: Any = None) -> None:
        if not topic:
            raise ValueError("Invalid topic.")
        if qos not in (0, 1, 2):
            raise ValueError("Invalid QoS level.")
        if "+" in topic or "#" in topic:
            raise ValueError("Publish topic cannot contain wildcards.")
        if properties is not None and self._protocol != MQTTv5:
            raise ValueError("Properties only apply to MQTT V5")
        self._will = Will(topic, encode_payload(payload), qos, bool(retain),
                          props_to_dict(properties))

    def will_clear(self) -> None:
        self._will = None

    def tls_set_context(self, context: Optional[ssl.SSLContext] = None) -> None:
        if self._ssl_context is not None:
            raise ValueError("SSL/TLS has already been configured.")
        self._ssl_context = context if context is not None else ssl.create_default_context()

    def tls_set(self, ca_certs: Optional[str] = None, certfile: Optional[str] = None,
                keyfile: Optional[str] = None, cert_reqs: Optional[ssl.VerifyMode] = None,
                tls_version: Optional[int] = None, ciphers: Optional[str] = None,
                keyfile_password: Any = None, alpn_protocols: Optional[List[str]] = None) -> None:
        if self._ssl_context is not None:
            raise ValueError("SSL/TLS has already been configured.")
        if tls_version is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        else:
            context = ssl.SSLContext(tls_version)
        if certfile is not None:
            context.load_cert_chain(certfile, keyfile, keyfile_password)
        if cert_reqs == ssl.CERT_NONE:
            context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED if cert_reqs is None else cert_reqs
        if ca_certs is not None:
            context.load_verify_locations(ca_certs)
        else:
            context.load_default_certs()
        if ciphers is not None:
            context.set_ciphers(ciphers)
        if alpn_protocols is not None:
            context.set_alpn_protocols(alpn_protocols)
        self._ssl_context = context
        if cert_reqs != ssl.CERT_NONE:
            self.tls_insecure_set(False)

    def tls_insecure_set(self, value: bool) -> None:
        if self._ssl_context is None:
            raise ValueError("Must configure SSL context before using tls_insecure_set.")
        self._tls_insecure = value
        self._ssl_context.check_hostname = not value

    def ws_set_options(self, path: str = "/mqtt", headers: Any = None) -> None:
        """The HTTP path and extra headers (a dict, or a callable given paho's default headers
        that returns the headers to send) of the ``transport="websockets"`` upgrade."""
        self._websocket_path = path
        if headers is not None and not (isinstance(headers, dict) or callable(headers)):
            raise ValueError("'headers' option to ws_set_options has to be either a dictionary "
                             "or callable")
        self._websocket_headers = headers

    def proxy_set(self, **proxy_args: Any) -> None:
        raise TransportNotAvailable("mqttfast does not connect through proxies")

    def reconnect_delay_set(self, min_delay: float = 1, max_delay: float = 120) -> None:
        self._reconnect_delay = (float(min_delay), float(max_delay))

    def max_inflight_messages_set(self, inflight: int) -> None:
        if inflight < 0:
            raise ValueError("Invalid inflight.")
        self._max_inflight = inflight or 65535

    def max_queued_messages_set(self, queue_size: int) -> "Client":
        if queue_size < 0:
            raise ValueError("Invalid queue size.")
        if not isinstance(queue_size, int):
            raise TypeError("Invalid type of queue size.")
        self._max_queued = queue_size
        return self

    def enable_logger(self, logger: Optional[logging.Logger] = None) -> None:
        self._logger = logger if logger is not None else log

    def disable_logger(self) -> None:
        self._logger = None

    def enable_bridge_mode(self) -> None:
        raise TransportNotAvailable("bridge mode is not available in mqttfast")

    def manual_ack_set(self, on: bool) -> None:
        self._manual_ack = bool(on)

    # Decorator forms of the callbacks (paho's ``@client.connect_callback()``).
    def _decorator(name: str) -> Callable[..., Any]:  # type: ignore[misc]
        def make(self: "Client") -> Callable[[Callable[..., None]], Callable[..., None]]:
            def register(func: Callable[..., None]) -> Callable[..., None]:
                setattr(self, name, func)
                return func
            return register
        return make

    connect_callback = _decorator("on_connect")
    connect_fail_callback = _decorator("on_connect_fail")
    disconnect_callback = _decorator("on_disconnect")
    message_callback = _decorator("on_message")
    publish_callback = _decorator("on_publish")
    subscribe_callback = _decorator("on_subscribe")
    unsubscribe_callback = _decorator("on_unsubscribe")
    log_callback = _decorator("on_log")
    pre_connect_callback = _decorator("on_pre_connect")
    del _decorator

    def message_callback_add(self, sub: str, callback: Callable[..., None]) -> None:
        if callback is None or sub is None:
            raise ValueError("sub and callback must both be defined.")
        validate_topic_filter(sub)
        self._filters = {**self._filters, sub: callback}  # copied: the loop iterates it

    def topic_callback(self, sub: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
        def register(func: Callable[..., None]) -> Callable[..., None]:
            self.message_callback_add(sub, func)
            return func
        return register

    def message_callback_remove(self, sub: str) -> None:
        if sub is None:
            raise ValueError("sub must defined.")
        self._filters = {f: cb for f, cb in self._filters.items() if f != sub}

    # ------------------------------------------------------------------ connecting

    def connect(self, host: str, port: int = 1883, keepalive: int = 60, bind_address: str = "",
                bind_port: int = 0, clean_start: Any = MQTT_CLEAN_START_FIRST_ONLY,
                properties: Any = None) -> MQTTErrorCode:
        """Connect (blocks until the CONNACK); socket and TLS failures raise ``OSError``s as
        paho's do, a refused CONNACK goes to ``on_connect``."""
        if self._protocol != MQTTv5:
            if clean_start != MQTT_CLEAN_START_FIRST_ONLY:
                raise ValueError("Clean start only applies to MQTT V5")
            if properties:
                raise ValueError("Properties only apply to MQTT V5")
        self.connect_async(host, port, keepalive, bind_address, bind_port, clean_start,
                           properties)
        return self.reconnect()

    def connect_async(self, host: str, port: int = 1883, keepalive: int = 60,
                      bind_address: str = "", bind_port: int = 0,
                      clean_start: Any = MQTT_CLEAN_START_FIRST_ONLY,
                      properties: Any = None) -> None:
        """Remember where to connect; ``loop_start`` / ``loop_forever`` connect."""
        if not host:
            raise ValueError("Invalid host.")
        if port <= 0:
            raise ValueError("Invalid port number.")
        if keepalive < 0:
            raise ValueError("Keepalive must be >=0.")
        if bind_port < 0:
            raise ValueError("Invalid bind port number.")
        self._host = host
        self._port = port
        self._keepalive = keepalive
        self._bind = (bind_address, bind_port) if bind_address or bind_port else None
        self._clean_start = clean_start
        self._connect_properties = props_to_dict(properties)
        self._connect_pending = True

    def connect_srv(self, domain: Optional[str] = None, keepalive: int = 60,
                    bind_address: str = "", bind_port: int = 0, clean_start: Any = 3,
                    properties: Any = None) -> MQTTErrorCode:
        raise TransportNotAvailable("connect_srv (DNS SRV lookup) is not available in mqttfast")

    def reconnect(self) -> MQTTErrorCode:
        """(Re)connect with the last ``connect``/``connect_async`` settings, dropping any
        current connection without DISCONNECT."""
        if not self._host:
            raise ValueError("Invalid host.")
        host, port, ws_headers = self._target()
        self._connect_pending = False
        engine = self._engine
        if engine is not None and not self._closed_for_good:
            self._reconnecting = True
            try:
                engine.close()
            finally:
                self._reconnecting = False
        if self.on_pre_connect is not None:
            self._call(self.on_pre_connect, self, self._userdata)
        engine = self._make_engine()
        self._log(MQTT_LOG_DEBUG, "Sending CONNECT (u%d, p%d, wr%d, wq%d, wf%d, c%d, k%d) "
                  "client_id=%r", self._username is not None, self._password is not None,
                  bool(self._will and self._will.retain), self._will.qos if self._will else 0,
                  self._will is not None, bool(self._clean_session), self._keepalive,
                  self._client_id)
        # Nobody loops during this call (unless a loop_start thread does): the CONNACK's
        # callbacks wait for the next loop call, as in paho.
        self._defer = not self._loop_driven()
        self._closed_for_good = False
        self._in_connect = True
        self._attempt_end = None
        try:
            engine.connect(host, port, self._keepalive, timeout=self._connect_timeout + 1.0,
                           source_address=self._bind, ws_headers=ws_headers)
        except ConnectRefused as exc:  # paho: on_connect with the code, then on_disconnect
            self._closed_for_good = True
            self._emit(self._report_connack, False, exc.reason_code, exc.properties)
            end = self._attempt_end or Disconnected(exc.reason_code, exc.reason, None, False, exc)
            self._emit(self._report_disconnect, end, True)
        except (ConnectionLost, WebSocketError) as exc:  # paho: the socket error, no callback
            self._closed_for_good = True
            raise _connect_error(exc) from exc
        finally:
            self._defer = False
            self._in_connect = False
        return MQTT_ERR_SUCCESS

    def _target(self) -> Tuple[str, Optional[int], Optional[Dict[str, str]]]:
        """What the engine connects to for the transport: host and port, or a ``unix://`` URL
        (paho: the host is the socket's path), or a ``ws://`` / ``wss://`` one (wss with TLS)
        with the extra headers of ``ws_set_options``."""
        if self._transport == "unix":
            return f"unix://{quote(os.path.abspath(self._host))}", None, None
        if self._transport != "websockets":
            return self._host, self._port, None
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "wss" if self._ssl_context is not None else "ws"
        url = f"{scheme}://{host}:{self._port}{self._websocket_path}"
        headers: Dict[str, str] = {  # paho's, but for the key: the engine makes one per attempt
            "Host": f"{self._host}:{self._port}", "Upgrade": "websocket",
            "Connection": "Upgrade", "Origin": f"https://{self._host}:{self._port}",
            "Sec-Websocket-Version": "13", "Sec-Websocket-Protocol": "mqtt"}
        extra = self._websocket_headers
        if isinstance(extra, dict):
            headers.update(extra)
        elif callable(extra):
            headers = dict(extra(dict(headers)))
        own = ("host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
               "sec-websocket-protocol")  # the engine writes these itself
        return url, None, {str(k): str(v) for k, v in headers.items() if k.lower() not in own}

    def _loop_driven(self) -> bool:
        return self._loop.owner_id is not None and self._loop.owner_id != threading.get_ident()

    def _make_engine(self) -> _Engine:
        """The engine for the current settings: kept across reconnects while they stay the same
        (so a persistent session's state survives), made anew when they changed."""
        context = self._ssl_context
        clean = self._clean_session if self._protocol != MQTTv5 else (
            self._clean_start is not False)
        key = (self._username, self._password, self._will, context, clean, self._max_inflight,
               self._max_queued, self._reconnect_delay, self._reconnect_on_failure,
               repr(self._connect_properties), self._manual_ack)
        if self._engine is not None and key == self._engine_key:
            return self._engine
        low, high = self._reconnect_delay
        engine = _Engine(
            self._client_id, self._protocol, username=self._username, password=self._password,
            will=self._will, clean_session=clean, tls=context,
            properties=self._connect_properties if self._protocol == MQTTv5 else None,
            max_inflight=self._max_inflight, max_queued=self._max_queued or 1_000_000,
            reconnect=Backoff(low, high) if self._reconnect_on_failure else False,
            connect_timeout=self._connect_timeout, manual_ack=self._manual_ack,
            loop=self._loop, background=False)
        engine.on_connect = self._on_connect
        engine.on_disconnect = self._on_disconnect
        engine.on_message = self._on_message
        engine.on_publish = self._on_publish
        engine.on_subscribe = self._on_subscribe
        engine.on_unsubscribe = self._on_unsubscribe
        self._engine, self._engine_key = engine, key
        return engine

    def is_connected(self) -> bool:
        return self._engine is not None and self._engine.is_connected

    def disconnect(self, reasoncode: Any = None, properties: Any = None) -> MQTTErrorCode:
        self._connect_pending = False
        engine = self._engine
        if engine is None or self._closed_for_good:
            self._closed_for_good = True
            return MQTT_ERR_NO_CONN
        code = int(getattr(reasoncode, "value", reasoncode or 0))
        engine.disconnect(code, props_to_dict(properties))
        return MQTT_ERR_SUCCESS

    # ------------------------------------------------------------------ the network loop

    def loop(self, timeout: float = 1.0) -> MQTTErrorCode:
        """One pass of the network loop, up to ``timeout`` seconds."""
        if timeout < 0.0:
            raise ValueError("Invalid timeout.")
        self._run_deferred()
        if self._engine is None or self._closed_for_good:
            return MQTT_ERR_NO_CONN
        self._loop.run_once(timeout, self._poll)
        self._poll()
        return MQTT_ERR_SUCCESS if not self._closed_for_good else MQTT_ERR_CONN_LOST

    def loop_forever(self, timeout: float = 1.0, retry_first_connection: bool = False) -> \
            MQTTErrorCode:
        """Run the loop until ``disconnect()`` (or, without ``reconnect_on_failure``, a drop)."""
        if self._connect_pending and not self._connect_first(retry_first_connection):
            return MQTT_ERR_NO_CONN
        self._run_deferred()
        self._loop.run_until(lambda: self._poll() or self._thread_terminate or
                             self._closed_for_good)
        return MQTT_ERR_SUCCESS

    def _connect_first(self, retry: bool) -> bool:
        """connect_async's connection, from the loop's thread; False when stopped first."""
        attempt = 0
        while not self._thread_terminate:
            try:
                self.reconnect()
                return True
            except OSError:
                if self.on_connect_fail is not None:
                    self._call(self.on_connect_fail, self, self._userdata)
                if not retry:
                    raise
                low, high = self._reconnect_delay
                self._sleep(min(high, low * 2 ** attempt))
                attempt += 1
        return False

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._thread_terminate and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def loop_start(self) -> MQTTErrorCode:
        """Run the loop in a thread of its own (until ``loop_stop``)."""
        if self._thread is not None:
            return MQTT_ERR_INVAL
        self._thread_terminate = False
        started = threading.Event()

        def run() -> None:
            try:
                if self._connect_pending and not self._connect_first(retry=True):
                    return
                self._run_deferred()

                def done() -> bool:
                    started.set()  # we drive the loop now: other threads wait instead
                    self._poll()
                    return self._thread_terminate

                self._loop.run_until(done)
            finally:
                started.set()
                self._thread = None

        self._thread = threading.Thread(target=run, daemon=True,
                                        name=f"paho-mqtt-client-{self._client_id}")
        self._thread.start()
        if not self._connect_pending:
            started.wait(5.0)
        return MQTT_ERR_SUCCESS

    def loop_stop(self) -> MQTTErrorCode:
        thread = self._thread
        if thread is None:
            return MQTT_ERR_INVAL
        self._thread_terminate = True
        self._loop.wake()
        if threading.current_thread() is not thread:
            thread.join()
        return MQTT_ERR_SUCCESS

    def _poll(self) -> bool:
        """Each loop pass: paho's on_publish for QoS 0 messages that reached the socket."""
        written = self._written
        if written and self.on_publish is not None:
            fired = 0
            while written and written[0][0].done:
                handle, info = written.popleft()
                if handle.ok:
                    self._fire_publish(info, 0, None)
                    fired += 1
            if fired:
                self._loop.wake()  # what those callbacks published goes out now
        return False

    def _run_deferred(self) -> None:
        deferred = self._deferred
        while deferred:
            fn, args = deferred.popleft()
            fn(*args)

    def _emit(self, fn: Callable[..., None], *args: Any) -> None:
        if self._defer:
            self._deferred.append((fn, args))
        else:
            fn(*args)

    # The external-loop calls: mqttfast owns its sockets and selector.
    def _no_external_loop(self, *args: Any, **kwargs: Any) -> Any:
        raise TransportNotAvailable("mqttfast drives its own selectors loop: use loop_start(), "
                                    "loop_forever() or loop()")

    loop_read = loop_write = loop_misc = socket = want_write = _no_external_loop

    # ------------------------------------------------------------------ publishing

    def _next_mid(self) -> int:
        with self._mid_lock:
            self._mid = self._mid % 65535 + 1
            return self._mid

    def publish(self, topic: str, payload: Any = None, qos: int = 0, retain: bool = False,
                properties: Any = None) -> MQTTMessageInfo:
        _check_publish_topic(topic, self._protocol)
        if qos not in (0, 1, 2) or isinstance(qos, bool):
            raise ValueError("Invalid QoS level.")
        data = encode_payload(payload)
        if len(data) > 268435455:
            raise ValueError("Payload too large.")
        info = MQTTMessageInfo(self._next_mid())
        engine = self._engine
        if engine is None or self._closed_for_good:
            info.rc = MQTT_ERR_NO_CONN
            if qos:
                self._unsent.append((topic, data, qos, bool(retain), properties, info))
            return info
        self._send(engine, topic, data, qos, bool(retain), properties, info)
        return info

    def _send(self, engine: _Engine, topic: str, data: bytes, qos: int, retain: bool,
              properties: Any, info: MQTTMessageInfo) -> None:
        try:
            handle = engine.publish(topic, data, qos, retain, props_to_dict(properties))
        except QueueFull:
            info.rc = MQTT_ERR_QUEUE_SIZE
            return
        except NotConnected:  # between reconnect attempts
            info.rc = MQTT_ERR_NO_CONN
            if qos:
                self._unsent.append((topic, data, qos, retain, properties, info))
            return
        info._handle = handle
        if isinstance(handle, WrittenHandle):
            if self.on_publish is not None:
                self._written.append((handle, info))
            return
        early = self._publishes.expect(handle, info)
        if early is not None:  # acknowledged before we got here: report from the loop
            self._loop.call_soon(lambda: self._completed(info, handle))

    def _completed(self, info: MQTTMessageInfo, record: Any) -> None:
        if record.ok:
            self._fire_publish(info, record.reason_code, None)

    def _fire_publish(self, info: MQTTMessageInfo, code: int, props: Any) -> None:
        callback = self.on_publish
        if callback is None:
            return
        if self._callback_api_version is CallbackAPIVersion.VERSION1:
            self._call(callback, self, self._userdata, info.mid)
        else:
            self._call(callback, self, self._userdata, info.mid,
                       ReasonCode(PacketTypes.PUBACK, identifier=code),
                       Properties.from_dict(PacketTypes.PUBACK, props))

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, topic: Any, qos: int = 0, options: Any = None,
                  properties: Any = None) -> Tuple[MQTTErrorCode, Optional[int]]:
        subs = self._subscriptions(topic, qos, options)
        engine = self._engine
        if engine is None or self._closed_for_good:
            return MQTT_ERR_NO_CONN, None
        props = props_to_dict(properties, single_subscription_id=True)
        with self._requests_lock:  # the SUBACK handler takes it too: it finds the mid
            try:
                handle = engine.subscribe(subs, 0, props)
            except NotConnected:
                return MQTT_ERR_NO_CONN, None
            mid = self._next_mid()
            self._request_mids[handle.packet_id] = mid
        return MQTT_ERR_SUCCESS, mid

    def _subscriptions(self, topic: Any, qos: int, options: Any) -> List[Subscription]:
        """paho's argument forms: "t", ("t", qos), ("t", options), [("t", qos or options)...],
        with ``options=`` for a single filter (MQTT 5)."""
        v5 = self._protocol == MQTTv5
        if isinstance(topic, tuple):
            topic, second = topic
            if is_subscribe_options(second):
                if not v5:
                    raise ValueError("Subscribe options need MQTT v5")
                options = second
            else:
                qos = second
        if isinstance(topic, str):
            if not topic:
                raise ValueError("Invalid topic.")
            if options is not None:
                if not v5:
                    raise ValueError("Subscribe options need MQTT v5")
                if qos != 0:
                    raise ValueError("Subscribe options and qos parameters cannot be combined.")
                if not is_subscribe_options(options):
                    raise ValueError("Subscribe options must be instance of SubscribeOptions "
                                     "class.")
                return [subscription(topic, options)]
            if qos not in (0, 1, 2) or isinstance(qos, bool):
                raise ValueError("Invalid QoS level.")
            return [Subscription(topic, qos)]
        if isinstance(topic, list):
            if not topic:
                raise ValueError("Empty topic list")
            subs = []
            for item in topic:
                if not (isinstance(item, tuple) and len(item) == 2):
                    raise ValueError(f"a subscription is (topic, qos) or (topic, options), "
                                     f"not {item!r}")
                name, second = item
                if not isinstance(name, str) or not name:
                    raise ValueError("Invalid topic.")
                if is_subscribe_options(second):
                    if not v5:
                        raise ValueError("Invalid QoS level.")
                    subs.append(subscription(name, second))
                elif second in (0, 1, 2) and not isinstance(second, bool):
                    subs.append(Subscription(name, second))
                else:
                    raise ValueError("Invalid QoS level.")
            return subs
        raise ValueError("No topic specified, or incorrect topic type.")

    def unsubscribe(self, topic: Any, properties: Any = None) -> \
            Tuple[MQTTErrorCode, Optional[int]]:
        if topic is None:
            raise ValueError("Invalid topic.")
        if isinstance(topic, str):
            topics = [topic]
        elif isinstance(topic, list):
            topics = topic
        else:
            raise ValueError("No topic specified, or incorrect topic type.")
        if any(not isinstance(t, str) or not t for t in topics):
            raise ValueError("Invalid topic.")
        engine = self._engine
        if engine is None or self._closed_for_good:
            return MQTT_ERR_NO_CONN, None
        with self._requests_lock:
            try:
                handle = engine.unsubscribe(topics, props_to_dict(properties))
            except NotConnected:
                return MQTT_ERR_NO_CONN, None
            mid = self._next_mid()
            self._request_mids[handle.packet_id] = mid
        return MQTT_ERR_SUCCESS, mid

    def ack(self, mid: int, qos: int) -> MQTTErrorCode:
        """``manual_ack=True``: acknowledge the QoS 1/2 message with this ``mid``."""
        message = self._to_ack.pop(mid, None)
        if message is None or self._engine is None:
            return MQTT_ERR_SUCCESS if qos == 0 else MQTT_ERR_NOT_FOUND
        return MQTT_ERR_SUCCESS if self._engine.ack(message) else MQTT_ERR_NO_CONN

    # ------------------------------------------------------------------ from the engine

    def _v5(self) -> bool:
        return self._protocol == MQTTv5

    def _on_connect(self, event: Connected) -> None:
        self._up = True
        self._log(MQTT_LOG_DEBUG, "Received CONNACK (%d, %d)", int(event.session_present),
                  event.reason_code)
        self._emit(self._report_connack, event.session_present, event.reason_code,
                   event.properties)
        if self._unsent:  # what was published before there was a connection
            unsent, self._unsent = self._unsent, []
            engine = self._engine
            assert engine is not None
            for topic, data, qos, retain, props, info in unsent:
                self._send(engine, topic, data, qos, retain, props, info)

    def _report_connack(self, session_present: bool, code: int, props: Any) -> None:
        callback = self.on_connect
        if callback is None:
            return
        v5 = self._v5()
        if not v5:  # the engine may give 3.1.1's return code or its MQTT 5 equivalent
            code = REASON_TO_CONNACK.get(code, code) if code >= 0x80 else code
        reason = ReasonCode(PacketTypes.CONNACK, identifier=code if v5 else
                            CONNACK_TO_REASON.get(code, 0x80))
        if self._callback_api_version is CallbackAPIVersion.VERSION1:
            flags = {"session present": int(session_present)}
            if v5:
                self._call(callback, self, self._userdata, flags, reason,
                           Properties.from_dict(PacketTypes.CONNACK, props))
            else:
                self._call(callback, self, self._userdata, flags, code)
        else:
            self._call(callback, self, self._userdata, ConnectFlags(bool(session_present)),
                       reason, Properties.from_dict(PacketTypes.CONNACK, props))

    def _on_disconnect(self, event: Disconnected) -> None:
        if not event.will_reconnect:
            self._closed_for_good = True
        was_up, self._up = self._up, False
        if self._reconnecting:
            return
        if self._in_connect and not was_up:
            self._attempt_end = event  # reconnect() reports how the attempt ended
            return
        self._log(MQTT_LOG_DEBUG, "Disconnected: %s", event.reason)
        if was_up:
            self._emit(self._report_disconnect, event, False)
        elif str(event.error).startswith("connection refused"):  # an automatic reconnect
            self._emit(self._report_connack, False, event.reason_code, event.properties)
            self._emit(self._report_disconnect, event, True)
        elif self.on_connect_fail is not None:  # an automatic reconnect that did not connect
            self._emit(self._call, self.on_connect_fail, self, self._userdata)

    def _report_disconnect(self, event: Disconnected, refused: bool) -> None:
        callback = self.on_disconnect
        if callback is None:
            return
        if event.by_server:
            v1_rc = MQTT_ERR_SUCCESS
            reason = ReasonCode(PacketTypes.DISCONNECT, identifier=event.reason_code)
        elif event.error is None:
            v1_rc = MQTT_ERR_SUCCESS
            reason = ReasonCode(PacketTypes.DISCONNECT, identifier=0)
        elif refused:
            v1_rc = MQTT_ERR_CONN_REFUSED
            reason = ReasonCode(PacketTypes.DISCONNECT, identifier=0x80)
        elif event.reason_code == 0x8D:
            v1_rc = MQTT_ERR_KEEPALIVE
            reason = ReasonCode(PacketTypes.DISCONNECT, identifier=0x8D)
        else:
            v1_rc = MQTT_ERR_CONN_LOST
            reason = ReasonCode(PacketTypes.DISCONNECT, identifier=0x80)
        props = Properties.from_dict(PacketTypes.DISCONNECT, event.properties)
        if self._callback_api_version is CallbackAPIVersion.VERSION1:
            if not self._v5():
                self._call(callback, self, self._userdata, v1_rc)
            elif event.by_server:
                self._call(callback, self, self._userdata, reason, props)
            else:
                self._call(callback, self, self._userdata, v1_rc, None)
        else:
            self._call(callback, self, self._userdata,
                       DisconnectFlags(bool(event.by_server)), reason, props)

    def _on_message(self, message: Publish) -> None:
        made = MQTTMessage(message.packet_id, message.topic.encode("utf-8"))
        made.payload = message.payload
        made.qos = message.qos
        made.retain = bool(message.retain)
        made.dup = bool(message.dup)
        made.timestamp = time.monotonic()
        if self._v5():
            made.properties = Properties.from_dict(PacketTypes.PUBLISH, message.properties)
        if self._manual_ack and message.qos:
            self._to_ack[message.packet_id] = message
        self._emit(self._deliver, made)

    def _deliver(self, message: MQTTMessage) -> None:
        matched = False
        for sub, callback in self._filters.items():
            if topic_matches(sub, message.topic):
                matched = True
                self._call(callback, self, self._userdata, message)
        if not matched and self.on_message is not None:
            self._call(self.on_message, self, self._userdata, message)

    def _on_publish(self, record: Any) -> None:
        info = self._publishes.arrive(record, True)
        if info is not None:
            self._emit(self._completed, info, record)

    def _request_mid(self, packet_id: int) -> Optional[int]:
        with self._requests_lock:
            return self._request_mids.pop(packet_id, None)

    def _on_subscribe(self, event: Subscribed) -> None:
        mid = self._request_mid(event.packet_id)
        if mid is None:  # the engine restoring subscriptions after a reconnect
            return
        self._emit(self._report_suback, mid, event)

    def _report_suback(self, mid: int, event: Subscribed) -> None:
        callback = self.on_subscribe
        if callback is None:
            return
        codes = [ReasonCode(PacketTypes.SUBACK, identifier=c) for c in event.reason_codes]
        props = Properties.from_dict(PacketTypes.SUBACK, event.properties)
        if self._callback_api_version is CallbackAPIVersion.VERSION1 and not self._v5():
            self._call(callback, self, self._userdata, mid, tuple(event.reason_codes))
        else:
            self._call(callback, self, self._userdata, mid, codes, props)

    def _on_unsubscribe(self, event: Unsubscribed) -> None:
        mid = self._request_mid(event.packet_id)
        if mid is None:
            return
        self._emit(self._report_unsuback, mid, event)

    def _report_unsuback(self, mid: int, event: Unsubscribed) -> None:
        callback = self.on_unsubscribe
        if callback is None:
            return
        v5 = self._v5()
        codes = [ReasonCode(PacketTypes.UNSUBACK, identifier=c) for c in event.reason_codes] \
            if v5 else []
        props = Properties.from_dict(PacketTypes.UNSUBACK, event.properties)
        if self._callback_api_version is CallbackAPIVersion.VERSION1:
            if v5:
                self._call(callback, self, self._userdata, mid, props,
                           codes[0] if len(codes) == 1 else codes)
            else:
                self._call(callback, self, self._userdata, mid)
        else:
            self._call(callback, self, self._userdata, mid, codes, props)

    # ------------------------------------------------------------------ helpers

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception as exc:
            name = getattr(callback, "__name__", repr(callback))
            self._log(MQTT_LOG_ERR, "Caught exception in %s: %s", name, exc)
            log.exception("paho-compatible callback %s raised", name)

    def _log(self, level: int, fmt: str, *args: Any) -> None:
        on_log = self.on_log
        logger = self._logger
        if on_log is None and logger is None:
            return
        buf = fmt % args
        if on_log is not None:
            try:
                on_log(self, self._userdata, level, buf)
            except Exception:
                log.exception("on_log raised")
        if logger is not None:
            logger.log(LOGGING_LEVEL.get(level, logging.DEBUG), buf)

    def __repr__(self) -> str:
        state = "connected" if self.is_connected() else "not connected"
        return f"<mqttfast.compat.paho.Client {self._client_id!r} {state}>"


__all__ = [
    "CONNACK_ACCEPTED", "CallbackAPIVersion", "Client", "ConnectFlags", "DisconnectFlags",
    "LOGGING_LEVEL", "LogLevel", "MQTTErrorCode", "MQTTMessage", "MQTTMessageInfo",
    "MQTTProtocolVersion", "MQTT_CLEAN_START_FIRST_ONLY", "MQTT_ERR_SUCCESS", "MQTTv31",
    "MQTTv311", "MQTTv5", "PacketTypes", "Properties", "ReasonCode", "ReasonCodes",
    "SubscribeOptions", "TransportNotAvailable", "WebsocketConnectionError", "connack_string",
    "convert_connack_rc_to_reason_code", "error_string", "topic_matches_sub",
]
