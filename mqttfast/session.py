"""The sans-IO MQTT session: packet ids, the inflight window, QoS 1/2 flows, keep-alive, MQTT 5.

Like h11's ``Connection``, it never touches a socket or a clock: user intents and received bytes go
in, bytes to send (``out``) and events come out, and the time is passed in as ``now``. The loop above
moves ``out`` to the socket and reports what it sent.

Events returned by ``receive`` / ``tick``: a received ``Publish`` packet (delivered once, even when a
QoS 2 message is re-sent), a completed ``Outgoing`` record (success or failure), and the small event
classes below.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple, Union

from .codec import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    PingResp,
    PubAck,
    PubComp,
    PubRec,
    PubRel,
    Publish,
    StreamDecoder,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
    append_publish,
    encode,
    encode_ack,
    encode_publish,
)
from .constants import MQTT_3_1, MQTT_5, PROTOCOLS, PacketType, reason_name
from .errors import NotConnected, PayloadTooLarge, ProtocolError, QueueFull
from .store import MemoryStore

log = logging.getLogger("mqttfast")

# Connection states.
DISCONNECTED, CONNECTING, CONNECTED = "disconnected", "connecting", "connected"

# Outgoing record states.
QUEUED, WAIT_PUBACK, WAIT_PUBREC, WAIT_PUBCOMP, DONE, FAILED = range(6)


class Outgoing:
    """One outgoing QoS 1/2 publish (or a QoS 0 one queued while offline) and its outcome.

    The client layer subclasses it to add waiting; the session only sets ``state``, ``reason_code``
    and ``error`` and returns the record as an event when it completes.
    """

    __slots__ = ("topic", "payload", "qos", "retain", "properties", "packet_id", "state",
                 "deadline", "attempts", "reason_code", "error", "__weakref__")

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool = False,
                 properties: Optional[dict] = None) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties
        self.packet_id = 0
        self.state = QUEUED
        self.deadline = 0.0
        self.attempts = 0
        self.reason_code = 0
        self.error: Optional[str] = None

    @property
    def done(self) -> bool:
        return self.state >= DONE

    @property
    def ok(self) -> bool:
        return self.state == DONE

    def __repr__(self) -> str:
        state = ("queued", "wait PUBACK", "wait PUBREC", "wait PUBCOMP", "done", "failed")[self.state]
        return f"<Outgoing {self.topic!r} qos={self.qos} id={self.packet_id} {state}>"


class Connected:
    __slots__ = ("session_present", "properties")

    def __init__(self, session_present: bool, properties: Optional[dict]) -> None:
        self.session_present = session_present
        self.properties = properties


class ConnectionRefused:
    __slots__ = ("reason_code", "reason", "properties")

    def __init__(self, reason_code: int, reason: str, properties: Optional[dict]) -> None:
        self.reason_code = reason_code
        self.reason = reason
        self.properties = properties


class Subscribed:
    __slots__ = ("packet_id", "topics", "reason_codes", "properties")

    def __init__(self, packet_id: int, topics: List[str], reason_codes: List[int],
                 properties: Optional[dict]) -> None:
        self.packet_id = packet_id
        self.topics = topics
        self.reason_codes = reason_codes
        self.properties = properties


class Unsubscribed(Subscribed):
    __slots__ = ()


class Disconnected:
    """The connection ended: the broker's DISCONNECT (MQTT 5), a keep-alive timeout, or an error."""

    __slots__ = ("reason_code", "reason", "properties")

    def __init__(self, reason_code: int, reason: str, properties: Optional[dict] = None) -> None:
        self.reason_code = reason_code
        self.reason = reason
        self.properties = properties


class AuthRequest:
    """An MQTT 5 AUTH packet from the broker (enhanced authentication)."""

    __slots__ = ("reason_code", "properties")

    def __init__(self, reason_code: int, properties: Optional[dict]) -> None:
        self.reason_code = reason_code
        self.properties = properties


SubscriptionArg = Union[str, Tuple[str, int], Subscription]


class Session:
    """Protocol state of one MQTT client connection, kept across reconnects.

    ``max_inflight`` caps unacknowledged QoS 1/2 publishes (further capped by the broker's MQTT 5
    Receive Maximum; default 65535 for MQTT 5, 20 before it, where brokers cannot announce a
    limit); up to ``max_queued`` more wait in a queue, beyond which ``publish`` raises
    ``QueueFull``. ``ack_timeout`` (seconds) re-sends an unacknowledged publish with DUP set, at most
    ``max_retries`` times (MQTT 3 only: MQTT 5 forbids re-sending on a live connection), and then
    completes it as failed.
    """

    def __init__(self, client_id: str = "", protocol: int = 4, clean_session: bool = True, *,
                 max_inflight: Optional[int] = None, max_queued: int = 1_000_000,
                 ack_timeout: Optional[float] = None, max_retries: int = 3,
                 topic_alias_maximum: int = 64, outgoing_aliases: bool = True,
                 max_packet_size: Optional[int] = None, store: Optional[MemoryStore] = None) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be 3 (MQTT 3.1), 4 (3.1.1) or 5 (5.0), got {protocol!r}")
        if max_inflight is None:
            # MQTT 5 brokers announce their limit (Receive Maximum). Before 5 they cannot, and
            # mosquitto (max_inflight_messages, 20 by default) silently drops the QoS 2 messages
            # of a 3.1.1 client beyond it: default to 20, as paho does.
            max_inflight = 65535 if protocol == MQTT_5 else 20
        if not 1 <= max_inflight <= 65535:
            raise ValueError(f"max_inflight must be 1..65535, got {max_inflight}")
        self.client_id = client_id
        self.protocol = protocol
        self.clean_session = clean_session
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.ack_timeout = ack_timeout
        self.max_retries = max_retries
        self.topic_alias_maximum = topic_alias_maximum if protocol == MQTT_5 else 0
        self.outgoing_aliases = outgoing_aliases
        self.max_packet_size = max_packet_size
        self.store = store if store is not None else MemoryStore()
        self._inflight = self.store.outgoing
        self._pending = self.store.pending
        self._incoming = self.store.incoming
        self._durable = self.store.durable
        self._control: Dict[int, Tuple[int, List[str]]] = {}  # SUBSCRIBE/UNSUBSCRIBE ids
        self._last_id = 0
        self._timeouts: Deque[Outgoing] = deque()  # in send order, for ack_timeout
        self.state = DISCONNECTED
        # True while a QoS 0 publish is nothing but bytes appended to ``out`` (connected, no
        # outgoing topic aliases, no broker packet-size limit): the client's fast path.
        self.plain_qos0 = False
        self.out = bytearray()  # bytes for the socket; the loop drains it
        self.queued_bytes = 0  # bytes ever appended to ``out`` (marks QoS 0 completion)
        self.keepalive = 0
        self.last_sent = 0.0
        self.last_received = 0.0
        self.ping_sent_at: Optional[float] = None
        self.broker_properties: Dict[str, Any] = {}
        self._window = max_inflight
        self._broker_max_packet: Optional[int] = None
        self._broker_max_qos = 2
        self._aliases_in: Dict[int, str] = {}
        self._aliases_out: Dict[str, int] = {}
        self._alias_out_max = 0
        self._decoder = StreamDecoder(protocol, max_packet_size)

    # ------------------------------------------------------------------ connection lifecycle

    def connect(self, now: float, keepalive: int = 60, username: Optional[str] = None,
                password: Union[str, bytes, None] = None, will: Optional[Will] = None,
                properties: Optional[dict] = None) -> None:
        """Start a connection: queue CONNECT (the loop has just opened the socket)."""
        props = dict(properties or {})
        if self.protocol == MQTT_5:
            # The CONNECT's own limits win: they are what the broker is told to respect.
            self.topic_alias_maximum = props.setdefault("topic_alias_maximum",
                                                        self.topic_alias_maximum)
            if not self.topic_alias_maximum:
                del props["topic_alias_maximum"]
            if "maximum_packet_size" in props:
                self.max_packet_size = props["maximum_packet_size"]
            elif self.max_packet_size:
                props["maximum_packet_size"] = self.max_packet_size
        packet = Connect(self.client_id, self.protocol, self.clean_session, keepalive, username,
                         password, will, props or None)
        self.out = bytearray(encode(packet))
        self.queued_bytes += len(self.out)
        self._decoder = StreamDecoder(self.protocol, self.max_packet_size)
        self._set_state(CONNECTING)
        self.keepalive = keepalive
        self.last_sent = self.last_received = now
        self.ping_sent_at = None
        self._aliases_in.clear()
        self._aliases_out.clear()
        self._alias_out_max = 0
        if self.clean_session:
            self._incoming.clear()

    def connection_lost(self, reason: str = "connection lost") -> List[Any]:
        """The socket is gone. Returns the publishes that fail with it (none if the session persists)."""
        self._set_state(DISCONNECTED)
        self.out = bytearray()
        self.ping_sent_at = None
        self._control.clear()
        for record in self._inflight.values():
            if record.state == WAIT_PUBACK or record.state == WAIT_PUBREC:
                record.attempts = 0
        if not self.clean_session:
            return []
        # Without a persistent session nobody will ever acknowledge these: fail them now.
        return self.fail_all(reason)

    def fail_all(self, reason: str) -> List[Any]:
        """Complete every unacknowledged or queued publish as failed (client closing for good)."""
        failed: List[Any] = []
        for record in list(self._inflight.values()) + list(self._pending):
            record.state = FAILED
            record.error = reason
            failed.append(record)
        if self._durable:
            for pid in self._inflight:
                self.store.removed(pid)
        self._inflight.clear()
        self._pending.clear()
        self._timeouts.clear()
        return failed

    def disconnect(self, reason_code: int = 0, properties: Optional[dict] = None) -> None:
        """Queue DISCONNECT; the loop closes the socket once it is written."""
        if self.state == DISCONNECTED:
            return
        if self.protocol == MQTT_5:
            self._write(encode(Disconnect(reason_code, properties), MQTT_5))
        else:
            self._write(b"\xe0\x00")
        self._set_state(DISCONNECTED)

    def _set_state(self, state: str) -> None:
        self.state = state
        self.plain_qos0 = (state == CONNECTED and not self._alias_out_max
                           and self._broker_max_packet is None)

    def _write(self, data: bytes) -> None:
        self.out += data
        self.queued_bytes += len(data)

    @property
    def connected(self) -> bool:
        return self.state == CONNECTED


    @property
    def inflight_count(self) -> int:
        return len(self._inflight)

    @property
    def queued_count(self) -> int:
        return len(self._pending)

    def sent(self, now: float) -> None:
        """The loop wrote bytes to the socket (keep-alive counts from the last send)."""
        self.last_sent = now

    # ------------------------------------------------------------------ user intents

    def _next_packet_id(self) -> int:
        pid = self._last_id
        inflight = self._inflight
        control = self._control
        for _ in range(65535):
            pid = pid + 1 if pid < 65535 else 1
            if pid not in inflight and pid not in control:
                return pid  # the caller takes it (``_last_id``) once its packet is encoded
        raise QueueFull("all 65535 packet ids are in use")

    def publish(self, topic: str, payload: Union[bytes, bytearray, memoryview, str], qos: int = 0,
                retain: bool = False, properties: Optional[dict] = None,
                now: float = 0.0, cls: type = Outgoing) -> Optional[Outgoing]:
        """Queue a PUBLISH. QoS 0 returns None once its bytes are in ``out``; QoS 1/2 return the
        ``Outgoing`` record (an instance of ``cls``) that completes on the acknowledgement."""
        if qos and self.plain_qos0 and not self._pending and len(self._inflight) < self._window:
            # The QoS 1/2 fast path: no separate validation, the codec checks while encoding.
            if self._broker_max_qos < qos <= 2:
                raise ValueError(f"the broker accepts at most QoS {self._broker_max_qos}")
            record = cls(topic, payload, qos, retain, properties)
            self._start_inflight(record, now)
            if payload.__class__ is not bytes:  # keep an owned copy for re-sending
                record.payload = (payload.encode("utf-8") if isinstance(payload, str)
                                  else bytes(payload))
            return record
        if qos == 0 and self.state == CONNECTED:
            if self._alias_out_max and (properties is None or "topic_alias" not in properties):
                self._publish_aliased(topic, payload, 0, 0, retain, properties, None)
                return None
            n = append_publish(self.out, topic, payload, 0, 0, retain, False, self.protocol,
                               properties)
            if self._broker_max_packet is not None and n > self._broker_max_packet:
                del self.out[-n:]
                raise PayloadTooLarge(f"PUBLISH of {n} bytes exceeds the broker's maximum packet "
                                      f"size of {self._broker_max_packet}")
            self.queued_bytes += n
            return None
        return self.publish_record(self.make_record(topic, payload, qos, retain, properties, cls),
                                   now)

    def make_record(self, topic: str, payload: Any, qos: int, retain: bool = False,
                    properties: Optional[dict] = None, cls: type = Outgoing) -> Any:
        """Validate a publish (raising at the call, not later) and wrap it in a record."""
        data = encode_publish(topic, payload, qos, 1 if qos else 0, retain, False, self.protocol,
                              properties)
        if self._broker_max_packet is not None and len(data) > self._broker_max_packet:
            raise PayloadTooLarge(f"PUBLISH of {len(data)} bytes exceeds the broker's maximum "
                                  f"packet size of {self._broker_max_packet}")
        if qos > self._broker_max_qos:
            raise ValueError(f"the broker accepts at most QoS {self._broker_max_qos}")
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        elif not isinstance(payload, bytes):
            payload = bytes(payload)
        return cls(topic, payload, qos, retain, properties)

    def publish_record(self, record: Outgoing, now: float = 0.0) -> Outgoing:
        """Send a record made by ``make_record`` now, or queue it for a free window slot."""
        if self.state != CONNECTED:
            if self.clean_session and self.state == DISCONNECTED:
                raise NotConnected("not connected, and no persistent session to queue in "
                                   "(connect first, or use clean_session=False)")
        elif record.qos == 0:
            self._send_publish(record, False)
            record.state = DONE
            return record
        elif len(self._inflight) < self._window and not self._pending:
            self._start_inflight(record, now)
            return record
        if len(self._pending) >= self.max_queued:
            raise QueueFull(f"{len(self._inflight)} publishes in flight and {len(self._pending)} "
                            f"queued (max_queued={self.max_queued})")
        self._pending.append(record)
        return record

    def _start_inflight(self, record: Outgoing, now: float) -> None:
        """Give ``record`` a packet id and send it; it is kept in flight only once encoded, so a
        publish the codec refuses leaves nothing behind."""
        record.packet_id = pid = self._next_packet_id()
        self._send_publish(record, False)
        self._last_id = pid
        record.state = WAIT_PUBACK if record.qos == 1 else WAIT_PUBREC
        self._inflight[pid] = record
        if self.ack_timeout is not None:
            record.deadline = now + self.ack_timeout
            self._timeouts.append(record)
        if self._durable:
            self.store.saved(record)

    def _send_publish(self, record: Outgoing, dup: bool) -> None:
        if self._alias_out_max and not dup and (
                record.properties is None or "topic_alias" not in record.properties):
            self._publish_aliased(record.topic, record.payload, record.qos, record.packet_id,
                                  record.retain, record.properties, record)
            return
        self.queued_bytes += append_publish(self.out, record.topic, record.payload, record.qos,
                                            record.packet_id, record.retain, dup, self.protocol,
                                            record.properties)

    def _publish_aliased(self, topic: str, payload: Any, qos: int, packet_id: int, retain: bool,
                         properties: Optional[dict], record: Optional[Outgoing]) -> None:
        """MQTT 5 outgoing topic aliases: the first use of a topic carries topic and alias, later
        uses only the alias, while the broker's Topic Alias Maximum has free slots."""
        alias = self._aliases_out.get(topic)
        props = dict(properties) if properties else {}
        wire_topic = topic
        new_alias = False
        if alias is not None:
            wire_topic = ""
            props["topic_alias"] = alias
        elif len(self._aliases_out) < self._alias_out_max:
            alias = len(self._aliases_out) + 1
            new_alias = True
            props["topic_alias"] = alias
        n = append_publish(self.out, wire_topic, payload, qos, packet_id, retain, False,
                           self.protocol, props or None)
        if self._broker_max_packet is not None and n > self._broker_max_packet and alias:
            # The alias property (3 bytes) broke the limit: send it plain, as ``make_record``
            # checked (a record raising here would stay in flight, never sent).
            del self.out[-n:]
            new_alias = False
            n = append_publish(self.out, topic, payload, qos, packet_id, retain, False,
                               self.protocol, properties)
        if self._broker_max_packet is not None and n > self._broker_max_packet:
            del self.out[-n:]
            raise PayloadTooLarge(f"PUBLISH of {n} bytes exceeds the broker's maximum packet "
                                  f"size of {self._broker_max_packet}")
        if new_alias and alias is not None:  # only once the PUBLISH teaching it is written
            self._aliases_out[topic] = alias
        self.queued_bytes += n
        return None

    def _fill_window(self, now: float) -> None:
        pending = self._pending
        while pending and len(self._inflight) < self._window:
            record = pending.popleft()
            if record.qos == 0:
                self._send_publish(record, False)
                record.state = DONE
            else:
                self._start_inflight(record, now)

    def subscribe(self, topics: Union[SubscriptionArg, Sequence[SubscriptionArg]], qos: int = 0,
                  properties: Optional[dict] = None) -> int:
        """Queue SUBSCRIBE; returns its packet id (a ``Subscribed`` event carries the SUBACK)."""
        if self.state != CONNECTED:
            raise NotConnected("subscribe needs a connection")
        if isinstance(topics, (str, Subscription)) or (
                isinstance(topics, tuple) and len(topics) == 2 and isinstance(topics[1], int)):
            topics = [topics]  # type: ignore[list-item]
        subs = []
        for item in topics:  # type: ignore[union-attr]
            if isinstance(item, str):
                subs.append(Subscription(item, qos))
            elif isinstance(item, Subscription):
                subs.append(item)
            else:
                subs.append(Subscription(*item))
        pid = self._next_packet_id()
        self._write(encode(Subscribe(pid, subs, properties), self.protocol))
        self._last_id = pid
        self._control[pid] = (PacketType.SUBACK, [s.topic for s in subs])
        return pid

    def unsubscribe(self, topics: Union[str, Sequence[str]],
                    properties: Optional[dict] = None) -> int:
        if self.state != CONNECTED:
            raise NotConnected("unsubscribe needs a connection")
        if isinstance(topics, str):
            topics = [topics]
        pid = self._next_packet_id()
        self._write(encode(Unsubscribe(pid, list(topics), properties), self.protocol))
        self._last_id = pid
        self._control[pid] = (PacketType.UNSUBACK, list(topics))
        return pid

    def auth(self, reason_code: int = 0x18, properties: Optional[dict] = None) -> None:
        """Send an MQTT 5 AUTH packet (enhanced authentication)."""
        self._write(encode(Auth(reason_code, properties), MQTT_5))

    # ------------------------------------------------------------------ input

    def receive(self, data: Union[bytes, bytearray, memoryview], now: float) -> List[Any]:
        """Feed bytes from the socket; returns the events they complete (may raise ProtocolError)."""
        packets = self._decoder.feed(data)
        self.last_received = now
        for pkt in packets:
            if pkt.__class__ is not Publish or pkt.qos or pkt.properties is not None:
                break
        else:
            if self.state == CONNECTED:
                return packets  # the bulk-telemetry fast path: QoS 0 messages only
        events: List[Any] = []
        for pkt in packets:
            self._handle(pkt, events, now)
        return events

    def _handle(self, pkt: Any, events: List[Any], now: float) -> None:
        cls = pkt.__class__
        if self.state == CONNECTING:
            if cls is not ConnAck:
                raise ProtocolError(f"expected CONNACK, got {type(pkt).__name__}")
            self._on_connack(pkt, events, now)
            return
        if cls is Publish:
            self._on_publish(pkt, events)
        elif cls is PubAck:
            record = self._inflight.get(pkt.packet_id)
            if record is not None and record.state == WAIT_PUBACK:
                self._complete(record, pkt.reason_code, events, now)
        elif cls is PubRec:
            record = self._inflight.get(pkt.packet_id)
            if record is None or record.qos != 2:
                return  # orphan PUBREC: ignored, as the seed does
            if pkt.reason_code >= 0x80:
                self._complete(record, pkt.reason_code, events, now)
            elif record.state in (WAIT_PUBREC, WAIT_PUBCOMP):
                record.state = WAIT_PUBCOMP
                self._write(encode_ack(PacketType.PUBREL, pkt.packet_id, 0, self.protocol))
                if self._durable:
                    self.store.saved(record)
        elif cls is PubComp:
            record = self._inflight.get(pkt.packet_id)
            if record is not None and record.state == WAIT_PUBCOMP:
                self._complete(record, pkt.reason_code, events, now)
        elif cls is PubRel:
            # Always answered, even for an unknown id (the PUBCOMP may have been lost).
            if pkt.packet_id in self._incoming:
                self._incoming.discard(pkt.packet_id)
                if self._durable:
                    self.store.incoming_changed(pkt.packet_id, False)
            self._write(encode_ack(PacketType.PUBCOMP, pkt.packet_id, 0, self.protocol))
        elif cls is SubAck or cls is UnsubAck:
            entry = self._control.get(pkt.packet_id)
            expected = PacketType.SUBACK if cls is SubAck else PacketType.UNSUBACK
            if entry is None or entry[0] != expected:
                return  # orphan acknowledgement
            del self._control[pkt.packet_id]
            event_cls = Subscribed if cls is SubAck else Unsubscribed
            events.append(event_cls(pkt.packet_id, entry[1], pkt.reason_codes, pkt.properties))
        elif cls is PingResp:
            self.ping_sent_at = None
        elif cls is Disconnect:
            self._set_state(DISCONNECTED)
            events.append(Disconnected(pkt.reason_code, reason_name(
                pkt.reason_code, PacketType.DISCONNECT), pkt.properties))
        elif cls is Auth:
            events.append(AuthRequest(pkt.reason_code, pkt.properties))
        else:
            raise ProtocolError(f"a broker must not send {type(pkt).__name__}")

    def _on_connack(self, pkt: ConnAck, events: List[Any], now: float) -> None:
        if pkt.reason_code:
            self._set_state(DISCONNECTED)
            events.append(ConnectionRefused(pkt.reason_code, reason_name(
                pkt.reason_code, PacketType.CONNACK, self.protocol), pkt.properties))
            return
        props = pkt.properties or {}
        self.broker_properties = props
        self._window = min(self.max_inflight, props.get("receive_maximum", 65535))
        self._broker_max_packet = props.get("maximum_packet_size")
        self._broker_max_qos = props.get("maximum_qos", 2)
        if "assigned_client_identifier" in props:
            self.client_id = props["assigned_client_identifier"]
        if "server_keep_alive" in props:
            self.keepalive = props["server_keep_alive"]
        self._alias_out_max = props.get("topic_alias_maximum", 0) if self.outgoing_aliases else 0
        self._set_state(CONNECTED)
        if not pkt.session_present and not self.clean_session and self.protocol != MQTT_3_1:
            self._incoming.clear()  # the broker lost our session: its QoS 2 ids are gone too
        events.append(Connected(pkt.session_present, pkt.properties))
        self._restore(now)

    def _restore(self, now: float) -> None:
        """Re-send what was unacknowledged when the last connection dropped, as the seed's
        RestoreSession does: PUBLISH with DUP, or PUBREL for those past PUBREC."""
        self._timeouts.clear()  # every inflight record is re-timed below, from ``now``
        for pid, record in list(self._inflight.items()):
            if record.state == WAIT_PUBCOMP:
                self._write(encode_ack(PacketType.PUBREL, pid, 0, self.protocol))
            else:
                self._send_publish(record, True)
            if self.ack_timeout is not None:
                record.deadline = now + self.ack_timeout
                self._timeouts.append(record)
        self._fill_window(now)

    def _on_publish(self, pkt: Any, events: List[Any]) -> None:
        props = pkt.properties
        if props is not None and "topic_alias" in props:
            alias = props["topic_alias"]
            if alias > self.topic_alias_maximum:
                raise ProtocolError(f"topic alias {alias} exceeds our maximum "
                                    f"{self.topic_alias_maximum}")
            if pkt.topic:
                self._aliases_in[alias] = pkt.topic
            else:
                topic = self._aliases_in.get(alias)
                if topic is None:
                    raise ProtocolError(f"unknown topic alias {alias}")
                pkt.topic = topic
        qos = pkt.qos
        if qos == 0:
            events.append(pkt)
        elif qos == 1:
            self._write(encode_ack(PacketType.PUBACK, pkt.packet_id, 0, self.protocol))
            events.append(pkt)
        else:
            pid = pkt.packet_id
            if pid not in self._incoming:
                self._incoming.add(pid)
                if self._durable:
                    self.store.incoming_changed(pid, True)
                events.append(pkt)
            # A re-sent QoS 2 PUBLISH gets PUBREC again and is not delivered twice.
            self._write(encode_ack(PacketType.PUBREC, pid, 0, self.protocol))

    def _complete(self, record: Outgoing, reason_code: int, events: List[Any], now: float) -> None:
        del self._inflight[record.packet_id]
        record.reason_code = reason_code
        if reason_code >= 0x80:
            record.state = FAILED
            record.error = reason_name(reason_code, PacketType.PUBACK)
        else:
            record.state = DONE
        if self._durable:
            self.store.removed(record.packet_id)
        events.append(record)
        if self._pending:
            self._fill_window(now)

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> List[Any]:
        """Keep-alive and acknowledgement timeouts. Returns events (a ``Disconnected`` means the
        loop must close the connection)."""
        events: List[Any] = []
        if self.state != CONNECTED:
            return events
        if self.keepalive:
            if self.ping_sent_at is not None:
                if now - self.ping_sent_at >= self.keepalive:
                    self._set_state(DISCONNECTED)
                    events.append(Disconnected(0x8D, "no PINGRESP within the keep-alive period"))
                    return events
            elif now - self.last_sent >= self.keepalive:
                self._write(b"\xc0\x00")
                self.ping_sent_at = now
        timeouts = self._timeouts
        while timeouts and (timeouts[0].state >= DONE or timeouts[0].deadline <= now):
            record = timeouts.popleft()
            if record.state >= DONE or self._inflight.get(record.packet_id) is not record:
                continue
            if record.attempts < self.max_retries and self.protocol != MQTT_5:
                record.attempts += 1
                record.deadline = now + self.ack_timeout  # type: ignore[operator]
                if record.state == WAIT_PUBCOMP:
                    self._write(encode_ack(PacketType.PUBREL, record.packet_id, 0, self.protocol))
                else:
                    self._send_publish(record, True)
                timeouts.append(record)
            else:
                del self._inflight[record.packet_id]
                record.state = FAILED
                record.error = f"not acknowledged after {record.attempts + 1} attempts"
                if self._durable:
                    self.store.removed(record.packet_id)
                events.append(record)
                self._fill_window(now)
        return events

    def next_deadline(self) -> Optional[float]:
        """When ``tick`` next has something to do (None: nothing is timed)."""
        if self.state != CONNECTED:
            return None
        deadline = None
        if self.keepalive:
            if self.ping_sent_at is not None:
                deadline = self.ping_sent_at + self.keepalive
            else:
                deadline = self.last_sent + self.keepalive
        if self._timeouts:
            first = self._timeouts[0].deadline
            deadline = first if deadline is None else min(deadline, first)
        return deadline
