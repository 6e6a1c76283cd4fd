"""The sans-IO MQTT session: packet ids, the inflight window, QoS 1/2 flows, keep-alive, MQTT 5.

Like h11's ``Connection``, it never touches a socket or a clock: user intents and received bytes go
in, the time is passed in as ``now``, and three things come out, each owned here:

- ``out``, the outgoing byte stream (a codec ``WriteBuffer``). Only the session writes to it; the
  loop takes bytes with ``take_output()`` and reports what the socket accepted with ``sent()``. A
  QoS 0 publish is complete when the stream position after it has been sent: ``written(mark)``.
  Positions run on across connections, so a new connection cannot desynchronise them.
- received messages, returned by ``receive()``;
- control events (``events``: Connected, Subscribed, Disconnected, ... from ``mqttfast.events``)
  and completed publish records (``completed``), which the owner drains with ``take_events()`` /
  ``take_completed()`` after each call.

The CONNECT parameters and the connection state machine (``ConnectionState``) live here too.
"""
from __future__ import annotations

import bisect
import logging
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Sequence, Set, Tuple, Union

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
    Qos0Path,
    StreamDecoder,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
    WriteBuffer,
    all_plain_qos0,
    encode,
    encode_publish,
    untrack,
)
from .constants import MAX_PACKET_SIZE, MAX_QUEUED_BYTES, MQTT_3_1, MQTT_5, PROTOCOLS, PacketType, reason_name
from .errors import (
    InvalidTopic, MalformedPacket, NotConnected, PacketTooLarge, PayloadTooLarge, ProtocolError,
    QueueFull, StoreError, TopicAliasInvalid,
)
from .events import (
    TRANSITIONS,
    AuthRequest,
    Connected,
    ConnectionRefused,
    ConnectionState,
    Disconnected,
    PublishState,
    Subscribed,
    Unsubscribed,
)
from .store import MemoryStore

_QOS0_OFF, _QOS0_PLAIN, _QOS0_ALIASES = 0, 1, 2  # Qos0Path.mode

log = logging.getLogger("mqttfast")

DISCONNECTED = ConnectionState.DISCONNECTED
CONNECTING = ConnectionState.CONNECTING
CONNECTED = ConnectionState.CONNECTED
DISCONNECTING = ConnectionState.DISCONNECTING

QUEUED = PublishState.QUEUED
WAIT_PUBACK = PublishState.WAIT_PUBACK
WAIT_PUBREC = PublishState.WAIT_PUBREC
WAIT_PUBCOMP = PublishState.WAIT_PUBCOMP
DONE = PublishState.DONE
FAILED = PublishState.FAILED

_PUBACK, _PUBREC, _PUBREL, _PUBCOMP = (PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBREL,
                                       PacketType.PUBCOMP)
_PINGREQ = b"\xc0\x00"
# Rough wire size of a queued QoS 0 message beyond topic and payload (header, lengths, id).
_QUEUED_OVERHEAD = 8


def _queued_size(record: Any) -> int:
    """What a QoS 0 message queued while offline counts against ``max_buffer``."""
    return len(record.topic.encode("utf-8")) + len(record.payload) + _QUEUED_OVERHEAD


class Outgoing:
    """One outgoing publish that is tracked until it completes: QoS 1/2, or QoS 0 queued while
    not connected. The client layer subclasses it to add waiting; the session only sets ``state``,
    ``reason_code`` and ``error``, and reports it in ``completed`` when it is done."""

    __slots__ = ("topic", "payload", "qos", "retain", "properties", "packet_id", "state",
                 "deadline", "attempts", "reason_code", "error", "mark", "__weakref__")

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
        self.mark = 0  # QoS 0: stream position after its bytes, once written into ``out``

    @property
    def done(self) -> bool:
        return self.state >= DONE

    @property
    def ok(self) -> bool:
        return self.state == DONE

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.topic!r} qos={self.qos} id={self.packet_id} "
                f"{self.state.name}>")


_SLOTS_ONLY: Dict[type, bool] = {}


def _slots_only(cls: type) -> bool:
    """``cls`` is Outgoing or a subclass adding neither slots nor a ``__dict__``."""
    known = _SLOTS_ONLY.get(cls)
    if known is None:
        known = _SLOTS_ONLY[cls] = (issubclass(cls, Outgoing) and cls.__dictoffset__ == 0 and
                                    cls.__basicsize__ == Outgoing.__basicsize__)
    return known


SubscriptionArg = Union[str, Tuple[str, int], Subscription]


def subscriptions_from(topics: Any, qos: int = 0) -> List[Subscription]:
    """Normalise what ``subscribe`` accepts: a filter, a ``(filter, qos)`` pair, a
    ``Subscription``, or a list or tuple of those (a tuple of filters is a list of filters)."""
    if isinstance(topics, (str, Subscription)):
        topics = [topics]
    elif isinstance(topics, tuple) and len(topics) == 2 and isinstance(topics[0], str) \
            and isinstance(topics[1], int) and not isinstance(topics[1], bool):
        topics = [topics]  # ("filter", qos)
    elif not isinstance(topics, (list, tuple)):
        raise TypeError(f"subscribe takes a filter, (filter, qos), a Subscription or a list of "
                        f"them, not {type(topics).__name__}")
    subs = []
    for item in topics:
        if isinstance(item, str):
            subs.append(Subscription(item, qos))
        elif isinstance(item, Subscription):
            subs.append(item)
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            subs.append(Subscription(item[0], item[1]))
        else:
            raise TypeError(f"not a subscription: {item!r} (a filter, (filter, qos) or a "
                            f"Subscription)")
    if not subs:
        raise ValueError("subscribe needs at least one filter")
    for sub in subs:
        if sub.qos.__class__ is not int or not 0 <= sub.qos <= 2:
            raise ValueError(f"qos must be 0, 1 or 2, got {sub.qos!r} for {sub.topic!r}")
    return subs


def check_qos(qos: Any) -> int:
    if qos.__class__ is not int:
        raise TypeError(f"qos must be an int 0, 1 or 2, not {type(qos).__name__}")
    if not 0 <= qos <= 2:
        raise ValueError(f"qos must be 0, 1 or 2, got {qos}")
    return qos


class Session:
    """Protocol state of one MQTT client, kept across reconnects.

    ``max_inflight`` caps unacknowledged QoS 1/2 publishes (default 65535, further capped by the
    broker's MQTT 5 Receive Maximum), and ``max_inflight_qos2`` the QoS 2 ones among them (default 20
    before MQTT 5, where a broker cannot announce its limit and mosquitto silently drops a 3.1.1
    client's QoS 2 messages beyond its ``max_inflight_messages`` of 20, and 1000 on MQTT 5; QoS 1 has
    no such trap: the broker acknowledges at once); up to ``max_queued`` more wait in a queue, beyond
    which ``publish`` raises ``QueueFull``, and so it does once the queue holds ``max_queued_bytes``
    of topics and payloads (every QoS). QoS 0 messages published while not connected are queued
    too, within ``max_buffer`` bytes. ``ack_timeout`` (seconds) re-sends an unacknowledged publish
    with DUP set, at most ``max_retries`` times (MQTT 3 only: MQTT 5 forbids re-sending on a live
    connection), and then completes it as failed. ``manual_ack``: incoming QoS 1/2 messages are
    acknowledged only by ``ack()``.
    """

    def __init__(self, client_id: str = "", protocol: int = 4, clean_session: bool = True, *,
                 keepalive: int = 60, username: Optional[str] = None,
                 password: Union[str, bytes, None] = None, will: Optional[Will] = None,
                 properties: Optional[dict] = None,
                 max_inflight: Optional[int] = None, max_inflight_qos2: Optional[int] = None,
                 max_queued: int = 1_000_000, max_queued_bytes: int = MAX_QUEUED_BYTES,
                 max_buffer: int = 8 * 1024 * 1024,
                 ack_timeout: Optional[float] = None, max_retries: int = 3,
                 topic_alias_maximum: int = 64, outgoing_aliases: bool = True,
                 max_packet_size: Optional[int] = MAX_PACKET_SIZE, manual_ack: bool = False,
                 store: Optional[MemoryStore] = None, record_cls: type = Outgoing) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be 3 (MQTT 3.1), 4 (3.1.1) or 5 (5.0), got {protocol!r}")
        if max_inflight is None:
            max_inflight = 65535
        if max_inflight_qos2 is None:
            # MQTT 5 brokers announce their limit (Receive Maximum). Before 5 they cannot, and
            # mosquitto (max_inflight_messages, 20 by default) silently drops the QoS 2 messages
            # of a 3.1.1 client beyond it: 20, as paho's window.
            # On MQTT 5, 1000: QoS 2 gains nothing from more, and a broker that announces no
            # limit (mosquitto with max_inflight_messages 0) slows down with the number in
            # flight: measured ~2,000 msg/s with 65535 against ~30,000 with 1000.
            max_inflight_qos2 = min(1000 if protocol == MQTT_5 else 20, max_inflight)
        if not 1 <= max_inflight <= 65535:
            raise ValueError(f"max_inflight must be 1..65535, got {max_inflight}")
        if not 1 <= max_inflight_qos2 <= 65535:
            raise ValueError(f"max_inflight_qos2 must be 1..65535, got {max_inflight_qos2}")
        if not isinstance(client_id, str):
            raise TypeError(f"client_id must be str, not {type(client_id).__name__}")
        if not client_id and not clean_session and protocol != MQTT_5:
            # [MQTT-3.1.3-7]: a broker must refuse it; refuse it here, where the caller sees why.
            raise ValueError("an empty client id needs clean_session=True before MQTT 5 "
                             "(give a client_id to keep a persistent session)")
        self.client_id = client_id
        self.protocol = protocol
        self.clean_session = clean_session
        self.max_inflight = max_inflight
        self.max_inflight_qos2 = max_inflight_qos2
        self.max_queued = max_queued
        self.max_buffer = max_buffer
        self.max_queued_bytes = max_queued_bytes
        self.ack_timeout = ack_timeout
        self.max_retries = max_retries
        self.topic_alias_maximum = topic_alias_maximum if protocol == MQTT_5 else 0
        self.outgoing_aliases = outgoing_aliases
        self.max_packet_size = max_packet_size
        self.manual_ack = manual_ack
        self.store = store if store is not None else MemoryStore()
        self._inflight = self.store.outgoing
        self._pending = self.store.pending
        self._incoming = self.store.incoming
        self._durable = self.store.durable
        self._control: Dict[int, Tuple[int, Tuple[str, ...]]] = {}  # SUBSCRIBE/UNSUBSCRIBE ids
        self._incoming_before: Set[int] = set()
        self._last_id = 0
        self._timeouts: Deque[Outgoing] = deque()  # in send order, for ack_timeout
        self.state = DISCONNECTED
        # True while a publish without properties takes the codec's fast paths (connected, no
        # broker packet-size limit); outgoing aliases may be on.
        self._fast = False
        self.out = WriteBuffer()
        # How a QoS 0 publish is only bytes in ``out`` (the compiled hot path the client's
        # publish() and ours share): its mode is set here, with the state, and nowhere else.
        self.qos0 = Qos0Path(self.out, protocol)
        self._sent = 0  # stream position up to which the socket took the bytes
        self._lost_starts: List[int] = []  # stream ranges lost with a dropped connection
        self._lost_ends: List[int] = []
        self._qos0_marks: Deque[Outgoing] = deque()  # queued QoS 0 records written, not yet sent
        self._queued_bytes = 0  # size of the QoS 0 records waiting in ``_pending``
        self._queued_total = 0  # size of every record waiting in ``_pending``
        self.events: List[Any] = []
        self.completed: List[Outgoing] = []
        self.connack: Optional[Connected] = None
        self.keepalive = 0
        self.last_sent = 0.0
        self.last_received = 0.0
        self.ping_sent_at: Optional[float] = None
        self.broker_properties: Dict[str, Any] = {}
        self._window = max_inflight
        self._window2 = min(max_inflight_qos2, max_inflight)  # for QoS 2
        self._inflight2 = 0  # QoS 2 records in flight
        # In flight but not re-sent on this connection yet: the new Receive Maximum was full
        # [MQTT-4.9.0-2]. They keep their ids and go out, in order, as slots free.
        self._held: Dict[int, Outgoing] = {}
        self._held2 = 0  # QoS 2 records among them
        self._broker_max_packet = 0  # 0: no limit announced
        self._broker_max_qos = 2
        self._aliases_in: Dict[int, str] = {}
        self._aliases_out: Dict[str, int] = {}  # topic -> alias the broker knows it by
        self._alias_topics: Dict[int, str] = {}  # alias -> topic, as the broker maps it now
        self._alias_next = 1
        self._alias_out_max = 0
        self._acks_due: Dict[int, List[Any]] = {}  # manual_ack: packet id -> [type, ready]
        self._epoch = 0  # connections started; tells a stale manual ack from a current one
        self._decoder = StreamDecoder(protocol, max_packet_size)
        self._connect_packet: Optional[Connect] = None
        self.configure(keepalive, username, password, will, properties)
        # Publishes a durable store kept from an earlier process (``record_cls`` instances).
        self.restored: List[Outgoing] = self._load_store(record_cls) if self._durable else []

    def _load_store(self, cls: type) -> List[Outgoing]:
        """Take back what a durable store holds for this client id: in flight (re-sent with DUP,
        or PUBREL, on a CONNACK with Session Present; as new if the broker lost the session),
        then queued, in the order they were published."""
        records: List[Outgoing] = []
        for stored in self.store.attach(self.client_id, self.clean_session):
            record = cls(stored.topic, stored.payload, stored.qos, stored.retain,
                         stored.properties)
            record.packet_id = stored.packet_id
            record.state = stored.state
            self.store.adopt(record, stored.key)
            if record.packet_id:
                self._inflight[record.packet_id] = record
                self._last_id = record.packet_id
                if record.qos == 2:
                    self._inflight2 += 1
            else:
                self._pending.append(record)
                self._queued_total += _queued_size(record)
            records.append(record)
        return records

    # ------------------------------------------------------------------ CONNECT parameters

    def configure(self, keepalive: int = 60, username: Optional[str] = None,
                  password: Union[str, bytes, None] = None, will: Optional[Will] = None,
                  properties: Optional[dict] = None) -> None:
        """Set the CONNECT parameters for the next connections. Everything is checked here, by
        encoding the CONNECT, so a bad argument raises at the caller's call, not in the loop."""
        if keepalive.__class__ is not int:
            raise TypeError(f"keepalive must be an int, not {type(keepalive).__name__}")
        if self.protocol != MQTT_5 and properties:
            raise ValueError("CONNECT properties need protocol=5")
        props = dict(properties or {})
        if self.protocol == MQTT_5:
            # The CONNECT's own limits win: they are what the broker is told to respect.
            props.setdefault("topic_alias_maximum", self.topic_alias_maximum)
            if not props["topic_alias_maximum"]:
                del props["topic_alias_maximum"]
            if "maximum_packet_size" not in props and self.max_packet_size:
                props["maximum_packet_size"] = self.max_packet_size
        packet = Connect(self.client_id, self.protocol, self.clean_session, keepalive, username,
                         password, will, props or None)
        encode(packet)  # raises ValueError / TypeError / InvalidTopic for what cannot be sent
        self._connect_packet = packet
        if self.protocol == MQTT_5:
            self.topic_alias_maximum = props.get("topic_alias_maximum", 0)
            self.max_packet_size = props.get("maximum_packet_size", self.max_packet_size)

    # ------------------------------------------------------------------ connection lifecycle

    def _set_state(self, state: ConnectionState) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"session cannot go from {self.state!r} to {state!r}")
        self.state = state
        self._fast = fast = state == CONNECTED and not self._broker_max_packet
        qos0 = self.qos0
        qos0.mode = (_QOS0_ALIASES if self._alias_out_max else _QOS0_PLAIN) if fast else _QOS0_OFF
        qos0.aliases = self._aliases_out if qos0.mode == _QOS0_ALIASES else None

    def start(self, now: float) -> None:
        """A socket to the broker is open: queue CONNECT (first in the stream of this connection)."""
        packet = self._connect_packet
        assert packet is not None
        self._set_state(CONNECTING)
        self._epoch += 1
        self.out.write(encode(packet))
        self._decoder = StreamDecoder(self.protocol, self.max_packet_size)
        self.keepalive = packet.keepalive
        self.last_sent = self.last_received = now
        self.ping_sent_at = None
        self._aliases_in.clear()
        self._aliases_out.clear()
        self._alias_topics.clear()
        self._alias_next = 1
        self._alias_out_max = 0
        self._broker_max_packet = 0
        self._acks_due.clear()
        if self.clean_session:
            self._incoming.clear()

    def connection_lost(self, reason: str = "connection lost") -> None:
        """The socket is gone. What was not sent is lost with it; publishes that can no longer
        complete (all of them without a persistent session) go to ``completed`` as failed."""
        if self.state != DISCONNECTED:
            self._set_state(DISCONNECTED)
        out = self.out
        if out.position > self._sent:
            self._lost_starts.append(self._sent)
            self._lost_ends.append(out.position)
        out.discard()
        self._sent = out.position
        self.ping_sent_at = None
        self._control.clear()
        self._acks_due.clear()
        marks = self._qos0_marks
        while marks:
            record = marks.popleft()
            self._fail(record, f"{reason} before the message was written")
        for record in self._inflight.values():
            if record.state == WAIT_PUBACK or record.state == WAIT_PUBREC:
                record.attempts = 0
        if self.clean_session:
            # Without a persistent session nobody will ever acknowledge these.
            self.fail_all(reason)

    def fail_all(self, reason: str) -> None:
        """Complete every unacknowledged or queued publish as failed (closing for good)."""
        for record in list(self._inflight.values()) + list(self._pending):
            self._fail(record, reason)
        if self._durable:
            for record in list(self._inflight.values()) + list(self._pending):
                self.store.removed(record)
            self.store.commit()
        self._inflight.clear()
        self._inflight2 = 0
        self._held.clear()
        self._held2 = 0
        self._pending.clear()
        self._queued_bytes = 0
        self._queued_total = 0
        self._timeouts.clear()

    def _fail(self, record: Outgoing, reason: str) -> None:
        record.state = FAILED
        record.error = reason
        self.completed.append(record)

    def disconnect(self, reason_code: int = 0, properties: Optional[dict] = None) -> None:
        """Queue DISCONNECT; nothing more is sent after it. The loop closes the socket once it is
        written."""
        if self.state == DISCONNECTED or self.state == DISCONNECTING:
            return
        if self.state == CONNECTED or self.state == CONNECTING:
            if self.protocol == MQTT_5:
                self.out.write(encode(Disconnect(reason_code, properties), MQTT_5))
            else:
                self.out.write(b"\xe0\x00")
        self._set_state(DISCONNECTING)

    def abort(self, error: ProtocolError) -> Optional[Disconnected]:
        """``receive`` raised ``error``: the connection must close [MQTT-4.13.1-1]. On MQTT 5 a
        DISCONNECT that says why (0x95 packet too large, 0x81 malformed packet, 0x94 topic alias
        invalid, 0x82 any other protocol error) is queued last in the stream, and the returned
        event describes it; the caller sends what is queued and closes at once. Before MQTT 5
        there is nothing to say (None). The one place errors become reason codes (the sync loop
        and the asyncio client both call it)."""
        if self.protocol != MQTT_5 or not (self.state == CONNECTED or self.state == CONNECTING):
            return None
        code = (0x95 if isinstance(error, PacketTooLarge) else
                0x81 if isinstance(error, MalformedPacket) else
                0x94 if isinstance(error, TopicAliasInvalid) else 0x82)
        packet = encode(Disconnect(code, {"reason_string": str(error)}), MQTT_5)
        if self._broker_max_packet and len(packet) > self._broker_max_packet:
            packet = encode(Disconnect(code), MQTT_5)  # no Reason String past it [MQTT-3.14.2-3]
        self.out.write(packet)
        return Disconnected(code, f"{reason_name(code, PacketType.DISCONNECT)}: {error} "
                                  f"(DISCONNECT {code:#04x} sent)")

    @property
    def connected(self) -> bool:
        return self.state == CONNECTED

    # ------------------------------------------------------------------ the output stream

    def take_output(self) -> bytearray:
        """Everything queued for the socket (the caller owns it and reports with ``sent``)."""
        return self.out.take()

    def sent(self, nbytes: int, now: float) -> None:
        """The socket accepted ``nbytes`` more of the stream."""
        self._sent += nbytes
        self.last_sent = now
        marks = self._qos0_marks
        while marks and marks[0].mark <= self._sent:
            record = marks.popleft()
            record.state = DONE
            self.completed.append(record)

    @property
    def pending_bytes(self) -> int:
        """Bytes queued for the socket and not yet accepted by it."""
        return self.out.position - self._sent

    @property
    def position(self) -> int:
        """The stream position after everything queued so far."""
        return self.out.position

    def written(self, mark: int) -> Optional[bool]:
        """Whether the stream up to ``mark`` reached the socket: True, False (lost with a dropped
        connection), or None (not yet)."""
        if mark > self._sent:
            return None
        i = bisect.bisect_left(self._lost_ends, mark)
        return not (i < len(self._lost_starts) and self._lost_starts[i] < mark)

    def take_events(self) -> List[Any]:
        events, self.events = self.events, []
        return events

    def take_completed(self) -> List[Outgoing]:
        completed, self.completed = self.completed, []
        return completed

    # ------------------------------------------------------------------ counters for callers

    @property
    def inflight_count(self) -> int:
        return len(self._inflight)

    @property
    def queued_count(self) -> int:
        return len(self._pending)

    @property
    def window_free(self) -> int:
        """QoS 1/2 publishes that can start now without queueing."""
        return 0 if self._pending else max(0, self._window - len(self._inflight))

    @property
    def window(self) -> int:
        return self._window

    @property
    def plain_qos0(self) -> bool:
        """A QoS 0 publish is nothing but bytes in the stream (no aliases, no size limit)."""
        return self.qos0.mode == _QOS0_PLAIN

    def ping(self, now: float) -> bool:
        """Send PINGREQ now unless one is outstanding (True when sent)."""
        if self.state != CONNECTED or self.ping_sent_at is not None:
            return False
        self.out.write(_PINGREQ)
        self.ping_sent_at = now
        return True

    def hold_input(self, now: float) -> None:
        """The owner has stopped reading (its application is behind: TCP back-pressure), so the
        broker's silence is ours, not the broker's: until reading resumes, keep-alive only keeps
        our side alive (``tick`` pings when due) and does not time the broker out."""
        self.last_received = now
        self.ping_sent_at = None

    # ------------------------------------------------------------------ publishing

    def _next_packet_id(self) -> int:
        pid = self._last_id
        inflight = self._inflight
        control = self._control
        for _ in range(65535):
            pid = pid + 1 if pid < 65535 else 1
            if pid not in inflight and pid not in control:
                return pid  # the caller takes it (``_last_id``) once its packet is encoded
        raise QueueFull("all 65535 packet ids are in use")

    def publish(self, topic: str, payload: Union[bytes, bytearray, memoryview, str] = b"",
                qos: int = 0, retain: bool = False, properties: Optional[dict] = None,
                now: float = 0.0, cls: type = Outgoing) -> Union[int, Outgoing]:
        """Publish a message. Returns an ``int`` for a QoS 0 message written into the stream now
        (its completion mark: see ``written``), else the ``Outgoing`` record (an instance of
        ``cls``) that completes on the acknowledgement (or, QoS 0 queued while not connected,
        once written). Bad arguments raise here."""
        if properties is None and self._fast and qos.__class__ is int:
            if qos == 0:  # the hot path: straight into the stream (or as its alias alone)
                position = self.qos0.append(topic, payload, retain)
                if position >= 0:
                    return position
                if topic:
                    return self._append(topic, payload, 0, 0, retain, False, None)
            elif 0 < qos <= self._broker_max_qos and not self._pending and \
                    len(self._inflight) < self._window and \
                    (qos == 1 or self._inflight2 < self._window2):
                # The QoS 1/2 fast path: the codec checks the other arguments while encoding.
                record = cls(topic, payload, qos, retain, None)
                self._start_inflight(record, now)
                if payload.__class__ is not bytes:  # keep an owned copy for re-sending
                    record.payload = (payload.encode("utf-8") if isinstance(payload, str)
                                      else bytes(payload))
                if topic.__class__ is str and _slots_only(cls):
                    # Its slots now hold only str, bytes, numbers, a state and None: it cannot
                    # be in a cycle, so the cyclic GC need not walk every record in flight.
                    untrack(record)
                return record
        check_qos(qos)
        if properties is not None:
            self._check_properties(properties)
        if qos == 0 and self.state == CONNECTED:
            if not topic and "topic_alias" not in (properties or ()):
                raise InvalidTopic("topic must not be empty (unless a topic_alias is given)")
            return self._append(topic, payload, 0, 0, retain, False, properties)
        return self.publish_record(self.make_record(topic, payload, qos, retain, properties, cls),
                                   now)

    def publish_many(self, topic: str, payloads: Any, retain: bool = False,
                     properties: Optional[dict] = None) -> int:
        """QoS 0 batch into the stream (connected, no aliases or size limit: ``plain_qos0``);
        returns the mark after the last one."""
        if self.qos0.mode != _QOS0_PLAIN:
            raise NotConnected("publish_many at QoS 0 needs a connection without aliases or a "
                               "packet size limit (use publish)")
        if properties is not None:
            self._check_properties(properties)
        return self.out.append_publish_many(topic, payloads, retain, self.protocol, properties)

    def _check_properties(self, properties: dict) -> None:
        if self.protocol != MQTT_5:
            raise ValueError("PUBLISH properties need protocol=5")
        if "subscription_identifier" in properties:
            raise ValueError("a client must not send subscription_identifier in a PUBLISH "
                             "(MQTT 5 3.3.4); it belongs to SUBSCRIBE")
        alias = properties.get("topic_alias")
        if alias is not None and self.state == CONNECTED:  # at the call, even if it must queue
            self._check_alias(alias)

    def _check_alias(self, alias: Any) -> None:
        if alias.__class__ is not int or not 1 <= alias <= self._broker_alias_max:
            raise ValueError(f"topic_alias must be 1..{self._broker_alias_max} (the broker's "
                             f"Topic Alias Maximum), got {alias!r}")

    @property
    def _broker_alias_max(self) -> int:
        return self.broker_properties.get("topic_alias_maximum", 0)

    def make_record(self, topic: str, payload: Any, qos: int, retain: bool = False,
                    properties: Optional[dict] = None, cls: type = Outgoing) -> Any:
        """Validate a publish (raising at the call, not later) and wrap it in a record."""
        if properties is not None and "topic_alias" in properties and not topic:
            # Keep the topic the alias stands for now: the record may be sent on another
            # connection, where the alias means nothing.
            topic = self._alias_topics.get(properties["topic_alias"], "")
            if not topic:
                raise ValueError(f"topic_alias {properties['topic_alias']} has no topic on this "
                                 f"connection: give the topic with it first")
        data = encode_publish(topic, payload, qos, 1 if qos else 0, retain, False, self.protocol,
                              properties)
        if self._broker_max_packet and len(data) > self._broker_max_packet:
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
        """Send a record made by ``make_record`` now, or queue it for a connection or a free
        window slot."""
        if self.state != CONNECTED:
            if self.state == DISCONNECTING:
                raise NotConnected("disconnecting: nothing more can be sent")
            if self.clean_session and self.state == DISCONNECTED:
                raise NotConnected("not connected, and no persistent session to queue in "
                                   "(connect first, or use clean_session=False)")
        elif record.qos == 0:
            self._write_queued_qos0(record)
            return record
        elif len(self._inflight) < self._window and not self._pending and \
                (record.qos == 1 or self._inflight2 < self._window2):
            self._start_inflight(record, now)
            return record
        if len(self._pending) >= self.max_queued:
            raise QueueFull(f"{len(self._inflight)} publishes in flight and {len(self._pending)} "
                            f"queued (max_queued={self.max_queued})")
        size = _queued_size(record)
        if self._queued_total + size > self.max_queued_bytes:
            raise QueueFull(f"{self._queued_total} bytes of messages queued "
                            f"(max_queued_bytes={self.max_queued_bytes})")
        if record.qos == 0:  # only while not connected: bounded by bytes too
            if self._queued_bytes + size + len(self.out) > self.max_buffer:
                raise QueueFull(f"{self._queued_bytes} bytes of QoS 0 messages queued while "
                                f"not connected (max_buffer={self.max_buffer})")
            self._queued_bytes += size
        elif self._durable:
            self.store.saved(record)
        self._pending.append(record)
        self._queued_total += size
        return record

    def _write_queued_qos0(self, record: Outgoing) -> None:
        try:
            record.mark = self._append(record.topic, record.payload, 0, 0, record.retain, False,
                                       record.properties)
        except (ValueError, TypeError) as exc:  # e.g. a caller alias over the broker's maximum
            self._fail(record, str(exc))
            return
        self._qos0_marks.append(record)

    def _start_inflight(self, record: Outgoing, now: float) -> None:
        """Give ``record`` a packet id and send it; it is kept in flight only once encoded, so a
        publish the codec refuses leaves nothing behind."""
        record.packet_id = pid = self._next_packet_id()
        self._append(record.topic, record.payload, record.qos, pid, record.retain, False,
                     record.properties)
        self._last_id = pid
        if record.qos == 1:
            record.state = WAIT_PUBACK
        else:
            record.state = WAIT_PUBREC
            self._inflight2 += 1
        self._inflight[pid] = record
        if self.ack_timeout is not None:
            record.deadline = now + self.ack_timeout
            self._timeouts.append(record)
        if self._durable:
            self.store.saved(record)

    def _append(self, topic: str, payload: Any, qos: int, packet_id: int, retain: bool, dup: bool,
                properties: Optional[dict]) -> int:
        """Write one PUBLISH into the stream, with MQTT 5 topic aliases: the caller's own, or
        automatic ones (the first use of a topic teaches the broker topic and alias, later uses
        send only the alias) while the broker's Topic Alias Maximum has free slots. Returns the
        stream position after it."""
        out = self.out
        limit = self._broker_max_packet
        protocol = self.protocol
        if properties is not None and "topic_alias" in properties:
            alias = properties["topic_alias"]
            if dup:  # a re-send on a new connection: the alias may mean something else here
                props = {k: v for k, v in properties.items() if k != "topic_alias"}
                return out.append_publish(topic, payload, qos, packet_id, retain, dup, protocol,
                                          props or None, limit)
            self._check_alias(alias)
            if not topic and alias not in self._alias_topics:
                raise ValueError(f"topic_alias {alias} has no topic on this connection: give "
                                 f"the topic with it first")
            position = out.append_publish(topic, payload, qos, packet_id, retain, dup, protocol,
                                          properties, limit)
            if topic:  # the broker now maps this alias to this topic
                old = self._alias_topics.get(alias)
                if old is not None and old != topic:
                    self._aliases_out.pop(old, None)
                self._alias_topics[alias] = topic
                self._aliases_out[topic] = alias
            return position
        if self._alias_out_max and not dup and topic:
            alias = self._aliases_out.get(topic)
            if alias is not None:
                try:
                    return self._append_alias("", payload, qos, packet_id, retain, properties,
                                              alias, limit)
                except PayloadTooLarge:  # a 1-2 byte topic is shorter than the alias property
                    pass
                return out.append_publish(topic, payload, qos, packet_id, retain, dup, protocol,
                                          properties, limit)
            alias = self._free_alias()
            if alias:
                try:
                    position = self._append_alias(topic, payload, qos, packet_id, retain,
                                                  properties, alias, limit)
                except PayloadTooLarge:  # the alias property broke the limit: send it plain
                    pass
                else:  # only once the PUBLISH teaching it is in the stream
                    self._aliases_out[topic] = alias
                    self._alias_topics[alias] = topic
                    return position
        return out.append_publish(topic, payload, qos, packet_id, retain, dup, protocol,
                                  properties, limit)

    def _append_alias(self, topic: str, payload: Any, qos: int, packet_id: int, retain: bool,
                      properties: Optional[dict], alias: int, limit: int) -> int:
        if properties is None:  # the codec writes the alias property itself: no dict per message
            return self.out.append_publish_alias(topic, payload, qos, packet_id, retain, False,
                                                 alias, limit)
        props = dict(properties)
        props["topic_alias"] = alias
        return self.out.append_publish(topic, payload, qos, packet_id, retain, False,
                                       self.protocol, props, limit)

    def _free_alias(self) -> int:
        """The lowest alias number no topic holds (0 when all are taken)."""
        n = self._alias_next
        taken = self._alias_topics
        while n <= self._alias_out_max and n in taken:
            n += 1
        self._alias_next = n
        return n if n <= self._alias_out_max else 0

    def _fill_window(self, now: float) -> None:
        held = self._held
        while held and self.state == CONNECTED:
            pid, record = next(iter(held.items()))
            if len(self._inflight) - len(held) >= self._window or (
                    record.qos == 2 and self._inflight2 - self._held2 >= self._window2):
                return  # the queue waits behind what is owed a re-send
            self._unhold(pid, record)
            self._resend(pid, record, now)
        pending = self._pending
        while pending and self.state == CONNECTED and (
                pending[0].qos == 0 or (len(self._inflight) < self._window and (
                    pending[0].qos == 1 or self._inflight2 < self._window2))):
            record = pending.popleft()
            self._queued_total -= _queued_size(record)
            if record.qos == 0:
                self._queued_bytes -= _queued_size(record)
                self._write_queued_qos0(record)
            else:
                try:
                    self._start_inflight(record, now)
                except (ValueError, TypeError) as exc:  # not sendable on this connection
                    if self._durable:
                        self.store.removed(record)
                    self._fail(record, str(exc))

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, topics: Union[SubscriptionArg, Sequence[SubscriptionArg]], qos: int = 0,
                  properties: Optional[dict] = None) -> int:
        """Queue SUBSCRIBE; returns its packet id (a ``Subscribed`` event carries the SUBACK)."""
        subs = subscriptions_from(topics, qos)
        return self._request(Subscribe(0, subs, properties), PacketType.SUBACK,
                             tuple(s.topic for s in subs))

    def unsubscribe(self, topics: Union[str, Sequence[str]],
                    properties: Optional[dict] = None) -> int:
        filters = (topics,) if isinstance(topics, str) else tuple(topics)
        return self._request(Unsubscribe(0, list(filters), properties), PacketType.UNSUBACK,
                             filters)

    def _request(self, packet: Any, ack_type: int, topics: Tuple[str, ...]) -> int:
        if self.state != CONNECTED:
            raise NotConnected(f"{type(packet).__name__.lower()} needs a connection")
        packet.packet_id = pid = self._next_packet_id()
        data = encode(packet, self.protocol)  # raises for bad filters, before anything is kept
        if self._broker_max_packet and len(data) > self._broker_max_packet:
            raise PayloadTooLarge(f"{type(packet).__name__.upper()} of {len(data)} bytes exceeds "
                                  f"the broker's maximum packet size of {self._broker_max_packet}")
        self.out.write(data)
        self._last_id = pid
        self._control[pid] = (ack_type, topics)
        return pid

    def subscription_topics(self, packet_id: int) -> Tuple[str, ...]:
        """The filters of a SUBSCRIBE / UNSUBSCRIBE still waiting for its acknowledgement."""
        return self._control[packet_id][1]

    def auth(self, reason_code: int = 0x18, properties: Optional[dict] = None) -> None:
        """Send an MQTT 5 AUTH packet (enhanced authentication)."""
        if self.protocol != MQTT_5:
            raise ValueError("AUTH needs protocol=5")
        if self.state != CONNECTED and self.state != CONNECTING:
            raise NotConnected("auth needs a connection")
        self.out.write(encode(Auth(reason_code, properties), MQTT_5))

    # ------------------------------------------------------------------ manual acknowledgement

    @property
    def epoch(self) -> int:
        """Which connection this is (for ``ack``): it changes with every ``start``."""
        return self._epoch

    def ack(self, packet_id: int, epoch: int) -> bool:
        """``manual_ack``: the application is done with the QoS 1/2 message ``packet_id``
        received on connection ``epoch``. Acknowledgements go out in the order the messages
        arrived (MQTT-4.6.0-2), so this one may wait for earlier ones. False when the message's
        connection is gone (the broker will send it again)."""
        if epoch != self._epoch or self.state is not CONNECTED:
            return False
        entry = self._acks_due.get(packet_id)
        if entry is None:
            return False
        entry[1] = True
        due = self._acks_due
        while due:
            pid = next(iter(due))
            kind, ready = due[pid]
            if not ready:
                break
            del due[pid]
            self.out.append_ack(kind, pid, 0, self.protocol)
        return True

    # ------------------------------------------------------------------ input

    @property
    def incoming_buffered(self) -> int:
        """Bytes of an incomplete incoming packet held until the rest arrives: never more than
        ``max_packet_size`` between reads (a bigger packet is refused from its fixed header)."""
        return self._decoder.buffered

    def receive(self, data: Union[bytes, bytearray, memoryview], now: float) -> List[Any]:
        """Feed bytes from the socket; returns the messages they complete. Control events and
        completed publishes collect in ``events`` / ``completed``. Raises ``ProtocolError``."""
        packets = self._decoder.feed(data)
        self.last_received = now
        if self.state is CONNECTED and all_plain_qos0(packets):
            return packets  # the bulk-telemetry fast path: QoS 0 messages only
        messages: List[Any] = []
        for pkt in packets:
            state = self.state
            if state is DISCONNECTED or state is DISCONNECTING:
                # After a DISCONNECT (the broker's or ours) nothing more counts, and nothing may
                # be sent behind ours [MQTT-3.14.4-1]; the broker re-sends what we did not ack.
                break
            self._handle(pkt, messages, now)
        if self._durable:  # one transaction per chunk read, before anything it caused is sent
            try:
                self.store.commit()
            except StoreError as exc:
                # The changes wait for the next commit (publish() raises it). Failing here would
                # drop these messages although their QoS 2 ids are recorded: the broker's
                # re-send would then be taken for a duplicate, and the message lost.
                log.error("%s", exc)
        return messages

    def _handle(self, pkt: Any, messages: List[Any], now: float) -> None:
        cls = pkt.__class__
        if self.state == CONNECTING:
            if cls is not ConnAck:
                raise ProtocolError(f"expected CONNACK, got {type(pkt).__name__}")
            self._on_connack(pkt, now)
            return
        if cls is Publish:
            self._on_publish(pkt, messages)
        elif cls is PubAck:
            record = self._inflight.get(pkt.packet_id)
            if record is not None and record.state == WAIT_PUBACK:
                self._complete(record, pkt.reason_code, now)
        elif cls is PubRec:
            record = self._inflight.get(pkt.packet_id)
            if record is None or record.qos != 2:
                return  # orphan PUBREC: ignored, as the seed does
            if pkt.reason_code >= 0x80:
                self._complete(record, pkt.reason_code, now)
            elif record.state == WAIT_PUBREC or record.state == WAIT_PUBCOMP:
                record.state = WAIT_PUBCOMP
                if self._held:
                    # Held back by a smaller window, but the broker has it: past PUBREC its
                    # PUBLISH must not go again (a late DUP after PUBCOMP is a new message).
                    self._unhold(pkt.packet_id, record)
                self.out.append_ack(_PUBREL, pkt.packet_id, 0, self.protocol)
                if self._durable:
                    self.store.saved(record)
        elif cls is PubComp:
            record = self._inflight.get(pkt.packet_id)
            if record is not None and record.state == WAIT_PUBCOMP:
                self._complete(record, pkt.reason_code, now)
        elif cls is PubRel:
            # Always answered, even for an unknown id (the PUBCOMP may have been lost).
            if pkt.packet_id in self._incoming:
                self._incoming.discard(pkt.packet_id)
                if self._durable:
                    self.store.incoming_changed(pkt.packet_id, False)
            self.out.append_ack(_PUBCOMP, pkt.packet_id, 0, self.protocol)
        elif cls is SubAck or cls is UnsubAck:
            entry = self._control.get(pkt.packet_id)
            expected = PacketType.SUBACK if cls is SubAck else PacketType.UNSUBACK
            if entry is None or entry[0] != expected:
                return  # orphan acknowledgement
            topics = entry[1]
            if pkt.reason_codes or cls is SubAck or self.protocol == MQTT_5:
                codes = tuple(pkt.reason_codes)
                if len(codes) != len(topics):  # which code is whose is unknown
                    raise ProtocolError(
                        f"{'SUBACK' if cls is SubAck else 'UNSUBACK'} {pkt.packet_id} carries "
                        f"{len(codes)} reason codes for {len(topics)} topic filters")
            else:  # before MQTT 5 an UNSUBACK has no payload
                codes = (0,) * len(topics)
            del self._control[pkt.packet_id]
            event_cls = Subscribed if cls is SubAck else Unsubscribed
            self.events.append(event_cls(pkt.packet_id, topics, codes, pkt.properties))
        elif cls is PingResp:
            self.ping_sent_at = None
        elif cls is Disconnect:
            self._set_state(DISCONNECTED)
            reason = reason_name(pkt.reason_code, PacketType.DISCONNECT)
            text = (pkt.properties or {}).get("reason_string")
            self.events.append(Disconnected(pkt.reason_code, f"{reason}: {text}" if text else reason,
                                            pkt.properties, by_server=True))
        elif cls is Auth:
            self.events.append(AuthRequest(pkt.reason_code, pkt.properties))
        else:
            raise ProtocolError(f"a broker must not send {type(pkt).__name__}")

    def _on_connack(self, pkt: ConnAck, now: float) -> None:
        if pkt.reason_code:
            self._set_state(DISCONNECTED)
            self.events.append(ConnectionRefused(pkt.reason_code, reason_name(
                pkt.reason_code, PacketType.CONNACK, self.protocol), pkt.properties))
            return
        props = pkt.properties or {}
        self.broker_properties = props
        self._window = min(self.max_inflight, props.get("receive_maximum", 65535))
        self._window2 = min(self.max_inflight_qos2, self._window)
        self._broker_max_packet = props.get("maximum_packet_size", 0)
        self._broker_max_qos = props.get("maximum_qos", 2)
        if "assigned_client_identifier" in props:
            self.client_id = props["assigned_client_identifier"]
        if "server_keep_alive" in props:
            self.keepalive = props["server_keep_alive"]
        self._alias_out_max = props.get("topic_alias_maximum", 0) if self.outgoing_aliases else 0
        self._set_state(CONNECTED)
        lost_session = (not pkt.session_present and not self.clean_session
                        and self.protocol != MQTT_3_1)
        if lost_session:
            self._session_lost()
        # The QoS 2 ids still held from earlier connections: see _on_publish.
        self._incoming_before = set(self._incoming)
        self.connack = Connected(bool(pkt.session_present), 0, pkt.properties)
        self.events.append(self.connack)
        self._restore(now)

    def _session_lost(self) -> None:
        """Session Present 0 although we asked to keep it: the broker has no state for us
        (MQTT 5 3.2.2.1.2), so ours goes too. Unacknowledged publishes are not lost: they are
        sent again as new messages (DUP 0, new packet ids), ahead of the queue; a QoS 2 message
        past PUBREC was received by the broker and completes."""
        if self._durable:
            for pid in self._incoming:
                self.store.incoming_changed(pid, False)
        self._incoming.clear()
        restart: List[Outgoing] = []
        for pid, record in list(self._inflight.items()):
            if record.state == WAIT_PUBCOMP:
                self._complete(record, 0, 0.0, refill=False)
                continue
            self._forget(pid, record)
            record.packet_id = 0
            record.attempts = 0
            record.state = QUEUED
            if self._durable:
                self.store.saved(record)
            restart.append(record)
        self._pending.extendleft(reversed(restart))
        self._queued_total += sum(_queued_size(r) for r in restart)
        self._timeouts.clear()

    def _restore(self, now: float) -> None:
        """Re-send what was unacknowledged when the last connection dropped, as the seed's
        RestoreSession does: PUBLISH with DUP, or PUBREL for those past PUBREC."""
        self._timeouts.clear()  # every inflight record is re-timed below, from ``now``
        self._held.clear()
        self._held2 = 0
        # A restarted broker may announce a smaller Receive Maximum: re-send no more than it
        # allows (overrunning it earns 0x97 per message). Records past PUBREC hold a slot
        # already; their PUBRELs always go.
        released = sum(1 for r in self._inflight.values() if r.state == WAIT_PUBCOMP)
        sent = sent2 = released
        holding = False
        for pid, record in list(self._inflight.items()):
            if record.state == WAIT_PUBCOMP:
                self.out.append_ack(_PUBREL, pid, 0, self.protocol)
                if self.ack_timeout is not None:
                    record.deadline = now + self.ack_timeout
                    self._timeouts.append(record)
                continue
            holding = holding or sent >= self._window or (
                record.qos == 2 and sent2 >= self._window2)
            if holding:  # in order: nothing overtakes a held record
                self._held[pid] = record
                if record.qos == 2:
                    self._held2 += 1
                continue
            if self._resend(pid, record, now):
                sent += 1
                sent2 += record.qos == 2
        self._fill_window(now)

    def _resend(self, pid: int, record: Outgoing, now: float) -> bool:
        """PUBLISH again with DUP (same id); a record no longer sendable fails."""
        try:
            self._append(record.topic, record.payload, record.qos, pid, record.retain,
                         True, record.properties)
        except (ValueError, TypeError) as exc:  # e.g. over the new broker's size limit
            self._forget(pid, record)
            if self._durable:
                self.store.removed(record)
            self._fail(record, str(exc))
            return False
        if self.ack_timeout is not None:
            record.deadline = now + self.ack_timeout
            self._timeouts.append(record)
        return True

    def _on_publish(self, pkt: Any, messages: List[Any]) -> None:
        props = pkt.properties
        if props is not None and "topic_alias" in props:
            alias = props.pop("topic_alias")  # a transport detail: resolved here, not handed on
            if not props:
                pkt.properties = None
            if alias == 0:  # decoded as it stands: judged here with the others [MQTT-3.3.2-8]
                raise TopicAliasInvalid("topic alias 0 is not permitted")
            if alias > self.topic_alias_maximum:  # [MQTT-3.3.2-10]
                raise TopicAliasInvalid(f"topic alias {alias} is above the Topic Alias Maximum "
                                        f"{self.topic_alias_maximum} announced in CONNECT")
            if pkt.topic:
                self._aliases_in[alias] = pkt.topic
            else:
                topic = self._aliases_in.get(alias)
                if topic is None:
                    raise TopicAliasInvalid(f"unknown topic alias {alias} with an empty topic")
                pkt.topic = topic
        qos = pkt.qos
        if qos == 0:
            messages.append(pkt)
        elif qos == 1:
            if self.manual_ack:
                self._acks_due.setdefault(pkt.packet_id, [_PUBACK, False])  # a re-send keeps it
            else:
                self.out.append_ack(_PUBACK, pkt.packet_id, 0, self.protocol)
            messages.append(pkt)
        else:
            pid = pkt.packet_id
            before = self._incoming_before
            if before and pid in before:
                before.discard(pid)
                # Held since an earlier connection. A re-delivery carries DUP 1 [MQTT-3.3.1-1];
                # with DUP 0 the broker has assigned the id anew (restarted from an older
                # database, it lost the exchange our PUBREC would have closed): a new message,
                # which holding back would lose.
                if not pkt.dup:
                    self._incoming.discard(pid)
            if pid not in self._incoming:
                self._incoming.add(pid)
                if self._durable:
                    self.store.incoming_changed(pid, True)
                messages.append(pkt)
                if self.manual_ack:
                    self._acks_due[pid] = [_PUBREC, False]
                    return
            elif self.manual_ack and pid in self._acks_due:
                return  # re-sent before the application acknowledged it: PUBREC comes then
            # A re-sent QoS 2 PUBLISH gets PUBREC again and is not delivered twice.
            self.out.append_ack(_PUBREC, pid, 0, self.protocol)

    def _forget(self, packet_id: int, record: Outgoing) -> None:
        """Take a record out of flight (the one place that does, so the QoS 2 count holds)."""
        del self._inflight[packet_id]
        if record.qos == 2:
            self._inflight2 -= 1
        if self._held:
            self._unhold(packet_id, record)  # acknowledged before its re-send (the broker had it)

    def _unhold(self, packet_id: int, record: Outgoing) -> None:
        """``record`` is owed no re-send any more (the one place that says so, for the QoS 2
        count of those held)."""
        if self._held.pop(packet_id, None) is not None and record.qos == 2:
            self._held2 -= 1

    def _complete(self, record: Outgoing, reason_code: int, now: float,
                  refill: bool = True) -> None:
        self._forget(record.packet_id, record)
        record.reason_code = reason_code
        if reason_code >= 0x80:
            record.state = FAILED
            record.error = reason_name(reason_code, PacketType.PUBACK)
        else:
            record.state = DONE
        if self._durable:
            self.store.removed(record)
        self.completed.append(record)
        if refill and (self._pending or self._held):
            self._fill_window(now)

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        """Keep-alive and acknowledgement timeouts. A ``Disconnected`` in ``events`` means the
        loop must close the connection.

        Keep-alive watches both directions: MQTT requires us to send something every
        ``keepalive`` seconds, and a peer that sends nothing for half of it is pinged, so a
        frozen broker is noticed within one keep-alive period whatever we send."""
        if self.state != CONNECTED:
            return
        keepalive = self.keepalive
        if keepalive:
            if self.ping_sent_at is not None:
                if now >= max(self.ping_sent_at + keepalive / 2, self.last_received + keepalive):
                    self._set_state(DISCONNECTED)
                    self.events.append(Disconnected(
                        0x8D, f"keep alive timeout: nothing from the broker for "
                              f"{now - self.last_received:.1f} s"))
                    return
            elif now >= self.last_sent + keepalive or now >= self.last_received + keepalive / 2:
                self.out.write(_PINGREQ)
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
                    self.out.append_ack(_PUBREL, record.packet_id, 0, self.protocol)
                else:
                    self._append(record.topic, record.payload, record.qos, record.packet_id,
                                 record.retain, True, record.properties)
                timeouts.append(record)
            else:
                self._forget(record.packet_id, record)
                if self._durable:
                    self.store.removed(record)
                self._fail(record, f"not acknowledged after {record.attempts + 1} attempts")
                self._fill_window(now)

    def next_deadline(self) -> Optional[float]:
        """When ``tick`` next has something to do (None: nothing is timed)."""
        if self.state != CONNECTED:
            return None
        deadline = None
        keepalive = self.keepalive
        if keepalive:
            if self.ping_sent_at is not None:
                deadline = max(self.ping_sent_at + keepalive / 2, self.last_received + keepalive)
            else:
                deadline = min(self.last_sent + keepalive, self.last_received + keepalive / 2)
        if self._timeouts:
            first = self._timeouts[0].deadline
            deadline = first if deadline is None else min(deadline, first)
        return deadline


__all__ = [
    "CONNECTED", "CONNECTING", "DISCONNECTED", "DISCONNECTING", "DONE", "FAILED", "QUEUED",
    "WAIT_PUBACK", "WAIT_PUBCOMP", "WAIT_PUBREC", "AuthRequest", "Connected", "ConnectionRefused",
    "ConnectionState", "Disconnected", "Outgoing", "PublishState", "Session", "Subscribed",
    "Unsubscribed", "check_qos", "subscriptions_from",
]
