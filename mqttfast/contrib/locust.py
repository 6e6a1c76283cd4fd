"""Locust on mqttfast: thousands of MQTT connections per Locust worker, on one loop.

``MqttfastUser`` is a Locust ``User`` whose ``self.client`` fires Locust request events
(request type ``"MQTT"``) for ``connect`` (time to CONNACK), ``publish:<qos>:<topic>`` (QoS 1/2:
publish to acknowledgement; QoS 0 has no acknowledgement: the time of the call),
``subscribe:<qos>:<topic>`` (to SUBACK; a refused filter is a failure) and
``receive:<qos>:<topic>`` (end to end: the publisher puts a timestamp header in front of the
payload, the receiver subtracts it from its own clock; across machines the clocks must be in
sync, e.g. NTP). Every user of a worker shares one mqttfast ``Loop``, driven by one greenlet.

``MqttfastPahoClient`` is mqttfast's paho-compatible client shaped as the ``client_cls`` of
Locust's own ``locust.contrib.mqtt.MqttUser`` (same events and names as Locust's paho client,
plus ``receive`` events for payloads made with ``timestamped()``), also on the shared loop.

Locust monkey-patches the standard library with gevent when it is imported; this module imports
it first, so the loop's selector, sockets, locks and thread are gevent's and cooperate.
"""
from __future__ import annotations

import locust  # noqa: F401  (first: gevent's monkey-patching happens here)

import logging
import struct
import threading
import time
import uuid
from typing import Any, Callable, Dict, Optional, Tuple

from gevent import monkey
from locust import User
from locust.env import Environment

from ..client import Client, WrittenHandle
from ..codec import Publish
from ..compat import paho as _paho
from ..errors import MQTTError
from ..events import Disconnected, Subscribed
from ..loop import Loop

REQUEST_TYPE = "MQTT"
HEADER = struct.Struct("!2sQ")  # magic, then the sender's time.time_ns()
MAGIC = b"mT"
log = logging.getLogger("mqttfast.contrib.locust")

_shared: Optional[Loop] = None


def shared_loop() -> Loop:
    """This process's loop for every Locust user, started on first use in a greenlet of its own
    (returns once that greenlet drives it, so no user's call ends up driving it instead)."""
    global _shared
    if _shared is None:
        if not monkey.is_module_patched("socket") or not monkey.is_module_patched("select"):
            raise RuntimeError("mqttfast.contrib.locust needs gevent's monkey-patching (import "
                               "locust, or call gevent.monkey.patch_all(), before mqttfast)")
        loop = Loop(stall_after=None)  # greenlets: no watchdog thread behind gevent's back
        threading.Thread(target=_drive, args=(loop,), name="mqttfast-locust-loop",
                         daemon=True).start()
        while loop.owner_id is None:
            time.sleep(0.001)  # gevent's sleep: lets the loop's greenlet start
        _shared = loop
    return _shared


def _drive(loop: Loop) -> None:
    try:
        loop.run_forever()
    except BaseException:  # pragma: no cover - a bug; make it visible
        log.exception("mqttfast's Locust loop crashed")
        raise


def timestamped(payload: bytes = b"") -> bytes:
    """``payload`` behind the timestamp header ``receive`` events measure latency from."""
    return HEADER.pack(MAGIC, time.time_ns()) + payload


def sent_at(payload: bytes) -> Optional[int]:
    """The sender's ``time.time_ns()`` from a ``timestamped`` payload, else None."""
    if len(payload) >= HEADER.size and payload[:2] == MAGIC:
        return HEADER.unpack_from(payload)[1]
    return None


def parse_host(host: Optional[str], default_port: int = 1883) -> Tuple[str, int]:
    """Locust's ``--host`` as (host, port): ``mqtt://h:p``, ``h:p``, ``h`` or ``[v6]:p``."""
    text = (host or "127.0.0.1").split("://", 1)[-1].rstrip("/")
    if text.startswith("["):
        name, _, rest = text[1:].partition("]")
        return name, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        name, port = text.split(":")
        return name, int(port)
    return text, default_port


class _Requests:
    """Start times of requests whose outcome the loop reports, possibly before the caller had
    stored them (a fast acknowledgement)."""

    __slots__ = ("_lock", "_started", "_early")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: Dict[Any, Tuple[str, float, int]] = {}
        self._early: Dict[Any, float] = {}

    def start(self, key: Any, name: str, started: float, length: int) -> Optional[float]:
        """Record a request; returns when it finished if that was already reported."""
        with self._lock:
            finished = self._early.pop(key, None)
            if finished is None:
                self._started[key] = (name, started, length)
            return finished

    def finish(self, key: Any, finished: float) -> Optional[Tuple[str, float, int]]:
        with self._lock:
            request = self._started.pop(key, None)
            if request is None:
                self._early[key] = finished
            return request


class MqttfastClient:
    """One MQTT connection that reports to Locust; see the module docstring for the events."""

    def __init__(self, environment: Environment, host: str, port: int = 1883, *,
                 client_id: Optional[str] = None, protocol: int = 4, keepalive: int = 60,
                 loop: Optional[Loop] = None, **client_options: Any) -> None:
        self.environment = environment
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.client_id = client_id or f"locust-{uuid.uuid4().hex[:16]}"
        self.mqtt = Client(self.client_id, protocol, loop=loop or shared_loop(), **client_options)
        self.mqtt.on_publish = self._on_publish
        self.mqtt.on_subscribe = self._on_subscribe
        self.mqtt.on_message = self._on_message
        self.mqtt.on_disconnect = self._on_disconnect
        self._publishes = _Requests()
        self._subscribes = _Requests()
        self._fire = environment.events.request.fire
        self._closing = False  # disconnect() fails what is in flight: not the broker's failure
        # The stats entry of a received message; replace to group topics ("receive:1:dev/<n>").
        self.receive_name: Callable[[Publish], str] = lambda m: f"receive:{m.qos}:{m.topic}"

    def _report(self, name: str, started: float, length: int,
                exception: Optional[BaseException] = None, finished: Optional[float] = None,
                ) -> None:
        elapsed = ((finished or time.perf_counter()) - started) * 1000.0
        self._fire(request_type=REQUEST_TYPE, name=name, response_time=elapsed,
                   response_length=length, exception=exception,
                   context={"client_id": self.client_id})

    def connect(self) -> bool:
        """Connect (blocks this user's greenlet until the CONNACK); False when it failed."""
        started = time.perf_counter()
        self._closing = False
        try:
            self.mqtt.connect(self.host, self.port, self.keepalive)
        except (MQTTError, OSError) as exc:
            self._report("connect", started, 0, exc)
            return False
        self._report("connect", started, 0)
        return True

    def publish(self, topic: str, payload: bytes = b"", qos: int = 0, retain: bool = False,
                properties: Optional[dict] = None, *, timestamp: bool = True,
                name: Optional[str] = None) -> Any:
        """Publish (``timestamp``: with the header ``receive`` events measure from); returns
        mqttfast's handle, or None when the publish failed at the call (reported)."""
        data = timestamped(payload) if timestamp else payload
        name = name or f"publish:{qos}:{topic}"
        started = time.perf_counter()
        try:
            handle = self.mqtt.publish(topic, data, qos, retain, properties)
        except MQTTError as exc:
            self._report(name, started, len(data), exc)
            return None
        if handle.__class__ is WrittenHandle:  # QoS 0: nothing to wait for
            self._report(name, started, len(data))
        else:
            finished = self._publishes.start(handle, name, started, len(data))
            if finished is not None:
                self._publish_done(handle, name, started, len(data), finished)
        return handle

    def subscribe(self, topic: str, qos: int = 0, *, name: Optional[str] = None) -> Any:
        name = name or f"subscribe:{qos}:{topic}"
        started = time.perf_counter()
        try:
            handle = self.mqtt.subscribe(topic, qos)
        except MQTTError as exc:
            self._report(name, started, 0, exc)
            return None
        finished = self._subscribes.start(handle.packet_id, name, started, 0)
        if finished is not None:  # pragma: no cover - SUBACK before the return: reported below
            self._report(name, started, 0, None, finished)
        return handle

    def disconnect(self) -> None:
        self._closing = True
        self.mqtt.disconnect()

    # ---------------------------------------------------------------- from the loop

    def _publish_done(self, record: Any, name: str, started: float, length: int,
                      finished: float) -> None:
        if self._closing and not record.ok:
            return  # failed by our own disconnect(): neither a success nor the broker's fault
        error = None if record.ok else MQTTError(record.error or
                                                 f"reason code {record.reason_code:#04x}")
        self._report(name, started, length, error, finished)

    def _on_publish(self, record: Any) -> None:
        finished = time.perf_counter()
        request = self._publishes.finish(record, finished)
        if request is not None:
            self._publish_done(record, *request, finished)

    def _on_subscribe(self, event: Subscribed) -> None:
        finished = time.perf_counter()
        request = self._subscribes.finish(event.packet_id, finished)
        if request is None:
            return  # restored after a reconnect, or reported by subscribe()
        name, started, length = request
        refused = [code for code in event.reason_codes if code >= 0x80]
        error = MQTTError(f"the broker refused the subscription: {refused}") if refused else None
        self._report(name, started, length, error, finished)

    def _on_message(self, message: Publish) -> None:
        stamp = sent_at(message.payload)
        name = self.receive_name(message)
        if stamp is None:
            name = "untimed-" + name  # no header: counted apart, not as zero latency
            latency = 0.0
        else:
            latency = (time.time_ns() - stamp) / 1e6
        self._fire(request_type=REQUEST_TYPE, name=name, response_time=latency,
                   response_length=len(message.payload), exception=None,
                   context={"client_id": self.client_id})

    def _on_disconnect(self, event: Disconnected) -> None:
        if event.error is not None or event.by_server:
            self._fire(request_type=REQUEST_TYPE, name="disconnect", response_time=0,
                       response_length=0, exception=MQTTError(event.reason),
                       context={"client_id": self.client_id})


class MqttfastUser(User):
    """A Locust user with an MQTT connection (``self.client``, an ``MqttfastClient``) that
    connects in ``on_start`` and disconnects in ``on_stop`` (call ``super()`` when overriding).
    ``--host`` takes ``mqtt://host:port`` / ``host:port``; class attributes set the rest."""

    abstract = True
    port = 1883
    protocol = 4
    keepalive = 60
    username: Optional[str] = None
    password: Optional[str] = None
    tls_context: Any = None
    client_options: Dict[str, Any] = {}

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        host, port = parse_host(self.host, self.port)
        options = dict(self.client_options)
        if self.username is not None:
            options.update(username=self.username, password=self.password)
        if self.tls_context is not None:
            options["tls"] = self.tls_context
        self.client = MqttfastClient(environment, host, port, protocol=self.protocol,
                                     keepalive=self.keepalive, **options)

    def on_start(self) -> None:
        self.client.connect()

    def on_stop(self) -> None:
        self.client.disconnect()


class MqttfastPahoClient(_paho.Client):
    """mqttfast's paho-compatible client as the ``client_cls`` of Locust's ``MqttUser``: the
    events Locust's own client fires (``connect``, ``publish:<qos>:<topic>``,
    ``subscribe:<qos>:<topic>``, ``disconnect``) plus ``receive:<qos>:<topic>`` for messages
    whose payload was made with ``timestamped()``; every instance on the shared loop."""

    def __init__(self, *, environment: Environment, client_id: Optional[str] = None,
                 protocol: int = _paho.MQTTv311, use_loop_selectors: bool = False,
                 **kwargs: Any) -> None:
        kwargs.setdefault("callback_api_version", _paho.CallbackAPIVersion.VERSION2)
        client_id = client_id or f"locust-{uuid.uuid4().hex[:16]}"
        super().__init__(client_id=client_id, protocol=protocol, loop=shared_loop(), **kwargs)
        self.environment = environment
        self.client_id = client_id
        self._started: Dict[int, Tuple[str, float, int]] = {}
        self.on_connect = self._locust_connect
        self.on_disconnect = self._locust_disconnect
        self.on_publish = self._locust_publish
        self.on_subscribe = self._locust_subscribe
        self.on_message = self._locust_message
        self._connect_started = 0.0

    def _event(self, name: str, elapsed_ms: float, length: int,
               exception: Optional[BaseException]) -> None:
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE, name=name, response_time=elapsed_ms,
            response_length=length, exception=exception, context={"client_id": self.client_id})

    def loop_start(self) -> _paho.MQTTErrorCode:
        """The shared loop already runs: only connect (in a greenlet of its own) if
        ``connect_async`` asked for it."""
        if self._connect_pending:
            threading.Thread(target=self._connect_now, daemon=True).start()
        return _paho.MQTT_ERR_SUCCESS

    def loop_stop(self) -> _paho.MQTTErrorCode:
        return _paho.MQTT_ERR_SUCCESS

    def _connect_now(self) -> None:
        self._connect_started = time.perf_counter()
        try:
            self.reconnect()
        except OSError as exc:
            self._event("connect", (time.perf_counter() - self._connect_started) * 1000, 0, exc)

    def publish(self, topic: str, payload: Any = None, qos: int = 0, retain: bool = False,
                properties: Any = None) -> _paho.MQTTMessageInfo:
        started = time.perf_counter()
        info = super().publish(topic, payload, qos, retain, properties)
        name = f"publish:{qos}:{topic}"
        length = len(payload) if isinstance(payload, (bytes, bytearray, str)) else 0
        if info.rc != _paho.MQTT_ERR_SUCCESS:
            self._event(name, 0, 0, MQTTError(_paho.error_string(info.rc)))
        else:
            self._started[info.mid] = (name, started, length)
        return info

    def subscribe(self, topic: Any, qos: int = 0, options: Any = None,
                  properties: Any = None) -> Tuple[_paho.MQTTErrorCode, Optional[int]]:
        started = time.perf_counter()
        first = topic if isinstance(topic, str) else topic[0][0] if isinstance(topic, list) \
            else topic[0]
        # Under gevent nothing yields between the SUBACK's registration in super().subscribe
        # and this line, so the callback (on the loop's greenlet) finds the start (likewise in
        # publish).
        result, mid = super().subscribe(topic, qos, options, properties)
        if result == _paho.MQTT_ERR_SUCCESS and mid is not None:
            self._started[mid] = (f"subscribe:{qos}:{first}", started, 0)
        if result != _paho.MQTT_ERR_SUCCESS:
            self._event(f"subscribe:{qos}:{first}", 0, 0, MQTTError(_paho.error_string(result)))
        return result, mid

    def _finish(self, mid: int, exception: Optional[BaseException] = None) -> None:
        request = self._started.pop(mid, None)
        if request is not None:
            name, started, length = request
            self._event(name, (time.perf_counter() - started) * 1000, length, exception)

    def _locust_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                        properties: Any) -> None:
        elapsed = (time.perf_counter() - self._connect_started) * 1000 \
            if self._connect_started else 0.0
        error = Exception(str(reason_code)) if reason_code.is_failure else None
        self._event("connect", elapsed, 0, error)

    def _locust_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                           properties: Any) -> None:
        self._event("disconnect", 0, 0, Exception(str(reason_code)) if reason_code != 0
                    else None)

    def _locust_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any,
                        properties: Any) -> None:
        self._finish(mid, Exception(str(reason_code)) if reason_code.is_failure else None)

    def _locust_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any,
                          properties: Any) -> None:
        failed = [str(c) for c in reason_codes if c.is_failure]
        self._finish(mid, Exception(f"subscription refused: {failed}") if failed else None)

    def _locust_message(self, client: Any, userdata: Any, message: Any) -> None:
        stamp = sent_at(message.payload)
        if stamp is not None:
            self._event(f"receive:{message.qos}:{message.topic}",
                        (time.time_ns() - stamp) / 1e6, len(message.payload), None)


__all__ = ["HEADER", "MqttfastClient", "MqttfastPahoClient", "MqttfastUser", "REQUEST_TYPE",
           "parse_host", "sent_at", "shared_loop", "timestamped"]
