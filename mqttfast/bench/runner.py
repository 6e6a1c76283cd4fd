"""The engine of ``mqttfast bench``: every client of a process on one ``Loop``, in one thread.

Each client is a ``Connection`` + ``Session`` whose handler is a lean ``BenchClient`` (no Client
facade, no thread, no handle per message). Loop timers drive everything:

- connection starts, paced by ``-i`` (ms between starts) or ``-R`` (starts per second), a batch per
  millisecond at high rates;
- publishing: a pacing timer takes, from a token bucket refilled at the target rate (``--rate``, or
  connected publishers x 1000 / ``-I``), the number of messages due, and hands them round robin
  to the clients that can take one (QoS 1/2: fewer than ``-F`` in flight; any QoS: not backed up
  behind a slow socket). A slow tick is caught up at the next one; the bucket never holds more
  than one second's worth, so a stall never turns into a burst beyond that. ``-I 0`` without
  ``--rate`` saturates instead: every client is kept topped up with a batch of messages;
- a timer each second snapshots the counters into the per-second series and reports them.

The runner never prints: it hands ``(kind, payload)`` reports to a sink (the command line in a
single process, a pipe to the parent in a worker) and returns a picklable result dict.
"""
from __future__ import annotations

import gc
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..batching import DEFAULT_READ_DELAY
from ..client import tls_context
from ..errors import MQTTError
from ..events import Connected, ConnectionRefused, Disconnected, PublishState, Subscribed
from ..loop import Connection, Handler, Loop
from ..session import CONNECTED, Outgoing, Session
from ..websocket import websocket_for
from .errors import describe_error
from .stats import Latency, SeqTracker, rss_kb
from .templates import HEADER_SIZE, MAGIC_INT, RECV_HEADER, PayloadMaker, Template, share_group

_monotonic = time.monotonic
_time_ns = time.time_ns

TICK = 0.002  # the publish pacer's period at high rates (s)
MAX_TICK = 0.01  # ... and at low rates
START_BATCH = 64  # connections opened per loop pass when starts are not paced (-i 0)
# Paced starts that fell behind catch up by at most this many seconds' worth per pass: small
# batches keep the connections already started moving (connect time is time to CONNACK).
CATCH_UP = 0.002
LOW_WATER = 64 * 1024  # saturating publishers are topped up while less than this is unsent
HIGH_WATER = 1024 * 1024  # a paced publisher with more unsent than this is skipped (backed up)
DRAIN_TIMEOUT = 10.0  # after publishing: seconds to wait for acknowledgements / unsent bytes
CLOSE_TIMEOUT = 5.0  # seconds to wait for DISCONNECTs to go out


@dataclass
class Options:
    """Everything a run needs, picklable (workers get a copy)."""

    kind: str  # "conn", "pub", "sub"
    host: str = "127.0.0.1"
    addr: str = "127.0.0.1"  # ``host`` resolved once
    port: int = 1883
    version: int = 5
    username: Optional[str] = None
    password: Optional[str] = None
    tls: bool = False
    cafile: Optional[str] = None
    certfile: Optional[str] = None
    keyfile: Optional[str] = None
    insecure: bool = False
    count: int = 200
    interval_ms: float = 10.0
    conn_rate: Optional[float] = None
    start_number: int = 0
    keepalive: int = 300
    prefix: str = "mqfb"
    clean: bool = True
    ifaddrs: List[str] = field(default_factory=list)
    unix_path: Optional[str] = None  # --url unix:///path: a Unix domain socket
    ws_path: Optional[str] = None  # --url ws(s)://host/path: MQTT over WebSocket
    connect_timeout: float = 10.0
    read_delay: float = DEFAULT_READ_DELAY  # each connection's max_read_delay (batching.py)
    quickack: bool = False  # each connection acknowledges every read at once (quickack.py)
    duration: Optional[float] = None
    topics: List[str] = field(default_factory=list)
    msg_interval_ms: float = 1000.0
    rate: Optional[float] = None
    size: int = 256
    message: Optional[bytes] = None
    qos: int = 0
    retain: bool = False
    limit: int = 0
    inflight: int = 1
    wait: bool = False
    payload_hdrs: bool = False
    workers: int = 1
    quiet: bool = False
    run_id: int = 0
    t0: float = 0.0  # shared start time (time.monotonic, the same clock in every process)

    @property
    def window(self) -> int:
        return self.inflight if self.inflight > 0 else 65535


@dataclass
class Share:
    """One process's part of the run."""

    offset: int = 0  # index of its first client
    count: int = 0
    limit: Optional[int] = None  # pub: messages to send; sub: to receive (None: no limit)
    rate: Optional[float] = None  # its part of --rate
    conn_rate: Optional[float] = None  # its part of the connection starts per second (-R, -i)
    worker: int = 0


class _Timed(Outgoing):
    """A QoS 1/2 publish that remembers when it was sent (publish-to-ack latency)."""

    __slots__ = ("t0",)


class BenchClient(Handler):
    """One simulated client: the handler of its connection."""

    def __init__(self, runner: "Runner", index: int, seq: int, client_id: str) -> None:
        self.runner = runner
        self.index = index
        self.seq = seq  # %i
        self.client_id = client_id
        # Set when it starts; ``Any`` because the hot paths use them without None checks.
        self.conn: Any = None
        self.session: Any = None
        self.resolved = False  # connected (conn/pub) or subscribed (sub), or failed
        self.refused: Optional[str] = None
        self.publishing = True
        self.topic: Optional[str] = None  # the topic when it is the same for every message
        self.bound: Any = None  # else a BoundTemplate
        self.msg_seq = 0
        self.fenced = False  # a PINGREQ follows its last QoS 0 PUBLISH (see _stop_publishing)
        self.streams: List[Any] = []  # sub: sequence-check stream key per subscription
        self.stream_key: Any = index
        self.streams_dict: Optional[Dict[int, List[Any]]] = None

    def on_messages(self, conn: Connection, messages: List[Any]) -> None:
        self.runner.on_messages(self, messages)

    def on_events(self, conn: Connection, events: List[Any], completed: List[Any]) -> None:
        runner = self.runner
        for event in events:
            cls = event.__class__
            if cls is Connected:
                runner.on_connected(self, conn)
            elif cls is Subscribed:
                runner.on_subscribed(self, event)
            elif cls is ConnectionRefused:
                self.refused = f"refused by the broker: {event.reason}"
            elif cls is Disconnected and event.by_server:
                self.refused = f"disconnected by the broker: {event.reason}"
        for record in completed:
            runner.on_ack(record)

    def on_closed(self, conn: Connection, event: Disconnected) -> None:
        self.runner.on_closed(self, event.error)


class Runner:
    """Runs one process's clients; ``run()`` returns the result dict."""

    def __init__(self, opts: Options, share: Share,
                 report: Callable[[str, Any], None]) -> None:
        self.opts = opts
        self.share = share
        self.report = report
        self.kind = opts.kind
        self.loop = Loop()
        self.t0 = opts.t0 or _monotonic()
        self.ssl: Optional[ssl.SSLContext] = None
        if opts.tls:
            self.ssl = tls_context(opts.cafile, opts.certfile, opts.keyfile,
                                   verify=not opts.insecure)
        self._websocket = (websocket_for(opts.host, opts.port, opts.ws_path, None, opts.tls)
                           if opts.ws_path is not None else None)
        self.templates = [Template(t, allow_seq=opts.kind == "pub") for t in opts.topics]
        self.clients: List[BenchClient] = []
        self.done = False
        self.stopping = False  # shutting down: closes are ours, not drops
        self.stop_reason = ""
        self.interrupted = False  # set by a signal handler; acted on in the loop
        # Counters (cumulative).
        self.started = 0
        self.connected = 0  # ever got CONNACK
        self.open = 0  # connected now
        self.failed = 0
        self.failure_reasons: Dict[str, int] = {}
        self.dropped = 0
        self.drop_reasons: Dict[str, int] = {}
        self.resolved = 0
        self.subscribed = 0
        self.subscribe_failed = 0
        self.sent = 0
        self.acked = 0
        self.publish_failed = 0
        self.received = 0
        self.errors = 0
        self.error_reasons: Dict[str, int] = {}
        self.without_headers = 0
        self.negative_latency = 0
        # Times (monotonic).
        self.first_start = 0.0
        self.last_start = 0.0
        self.last_connack = 0.0
        self.last_connack_99 = 0.0  # when 99 % of the clients had their CONNACK
        self.n99 = max(1, -(-share.count * 99 // 100))
        self.last_ready = 0.0
        self.pub_start = 0.0
        self.pub_end = 0.0
        self.first_recv = 0.0
        self.last_recv = 0.0
        # Measurements.
        self.lat_connect = Latency()
        self.lat_ack = Latency()
        self.lat_e2e = Latency()
        self.seq = SeqTracker()
        self.series: List[List[int]] = []
        self._prev = [0] * 6
        self._second = 0
        self.peak_rss = 0
        # Publishing.
        self.maker = PayloadMaker(opts.size, opts.message, opts.payload_hdrs, opts.run_id)
        self.pubs: List[BenchClient] = []
        self.publishing = False
        self.pub_stopped = False
        self.tokens = 0.0
        self.rr = 0
        self.pub_last_tick = 0.0
        self.target_rate = 0.0
        self.go_received = not opts.wait
        self.drain_deadline = 0.0
        self.close_deadline = 0.0
        self.limit = share.limit if opts.kind in ("pub", "sub") else None
        self._batch: List[bytes] = []

    # ------------------------------------------------------------------ control (loop thread)

    def request_stop(self, reason: str = "stopped") -> None:
        """End the run gracefully: stop publishing, wait for acks, disconnect everyone."""
        if self.stop_reason:
            return
        self.stop_reason = reason
        if self.kind == "pub" and self.publishing and not self.pub_stopped:
            self._stop_publishing()
        else:
            self._shutdown()

    def go(self) -> None:
        """Publishers waiting for ``-w`` may start (all clients of all workers are connected)."""
        self.go_received = True
        if self.kind == "pub" and not self.stop_reason and self.open:
            self._start_publishing()

    # ------------------------------------------------------------------ the run

    def run(self) -> Dict[str, Any]:
        opts = self.opts
        share = self.share
        for i in range(share.count):
            index = share.offset + i
            seq = opts.start_number + index
            client = BenchClient(self, index, seq, f"{opts.prefix}_{opts.kind}_{seq}")
            if opts.kind == "pub":
                bound = self.templates[0].bind(seq, client.client_id, opts.username)
                client.topic = bound.static
                client.bound = bound
            self.clients.append(client)
        self._batch = [self.maker.constant] * max(1, LOW_WATER // max(1, self.maker.size + 8)) \
            if self.maker.constant is not None else []
        loop = self.loop
        now = _monotonic()
        self._start_at = max(now, self.t0)
        loop.call_at(self._start_at, self._start_tick)
        loop.call_at(self.t0 + 1.0, self._second_tick)
        gc_was = gc.isenabled()
        gc.disable()  # no reference cycles on the hot paths; 10,000 clients make gen-2 scans slow
        try:
            while not self.done:
                loop.run_once(0.1)
                if self.interrupted and not self.stop_reason:
                    self.request_stop("interrupted")
        finally:
            if gc_was:
                gc.enable()
            loop.close()
        return self.result()

    def _start_tick(self) -> None:
        if self.stop_reason:
            return
        count = len(self.clients)
        now = _monotonic()
        rate = self.share.conn_rate
        if rate is None:
            due = self.started + START_BATCH
        else:
            due = int((now - self._start_at) * rate) + 1
            due = min(due, self.started + max(8, int(rate * CATCH_UP)))
        due = min(due, count)
        while self.started < due:
            self._open(self.clients[self.started], now)
        if self.started < count:
            if rate is None:
                self.loop.call_later(0, self._start_tick)
            else:
                when = self._start_at + self.started / rate
                self.loop.call_at(max(when, now + 0.0005), self._start_tick)

    def _open(self, client: BenchClient, now: float) -> None:
        opts = self.opts
        self.started += 1
        if not self.first_start:
            self.first_start = now
        self.last_start = now
        session = Session(client.client_id, opts.version, opts.clean, keepalive=opts.keepalive,
                          username=opts.username, password=opts.password,
                          max_inflight=opts.window, topic_alias_maximum=0, outgoing_aliases=False)
        source = None
        if opts.ifaddrs:
            source = (opts.ifaddrs[client.index % len(opts.ifaddrs)], 0)
        conn = Connection(self.loop, session, client, opts.addr, opts.port, ssl_context=self.ssl,
                          server_hostname=opts.host, connect_timeout=opts.connect_timeout,
                          reconnect=None, source_address=source, unix_path=opts.unix_path,
                          websocket=self._websocket, max_read_delay=opts.read_delay,
                          quickack=opts.quickack)
        client.conn = conn
        client.session = session
        self.loop.connections.add(conn)
        conn.open()

    # ------------------------------------------------------------------ connection events

    def on_connected(self, client: BenchClient, conn: Connection) -> None:
        self.connected += 1
        self.open += 1
        self.last_connack = conn.connected_at
        if self.connected == self.n99:
            self.last_connack_99 = conn.connected_at
        us = int((conn.connected_at - conn.started_at) * 1e6)
        pending = self.lat_connect.pending
        pending[us] = pending.get(us, 0) + 1
        if self.stop_reason:
            self._close_client(client)
            return
        if self.kind == "sub":
            self._subscribe(client)
            return
        self._resolve(client)
        if self.kind == "pub":
            self.pubs.append(client)
            if self.go_received and not self.publishing:
                self._start_publishing()

    def _subscribe(self, client: BenchClient) -> None:
        opts = self.opts
        filters = []
        for template in self.templates:
            bound = template.bind(client.seq, client.client_id, opts.username)
            text = bound.render(0)
            filters.append((text, opts.qos))
            group = share_group(text)
            client.streams.append(("share", group) if group is not None else client.index)
        # One subscriber's streams: a shared group's members in this process check together.
        shared = [s for s in client.streams if isinstance(s, tuple)]
        client.stream_key = shared[0] if shared and len(shared) == len(client.streams) \
            else client.index
        assert client.session is not None and client.conn is not None
        try:
            client.session.subscribe(filters)
        except (MQTTError, ValueError) as exc:
            self._count(self.error_reasons, f"subscribe failed: {exc}")
            self.errors += 1
            self.subscribe_failed += 1
            self._resolve(client)
            return
        client.conn.kick()

    def on_subscribed(self, client: BenchClient, event: Subscribed) -> None:
        bad = [code for code in event.reason_codes if code >= 0x80]
        if bad:
            self.subscribe_failed += 1
            self.errors += 1
            self._count(self.error_reasons, f"subscription refused (reason code {bad[0]:#04x})")
        else:
            self.subscribed += 1
        self._resolve(client)

    def _resolve(self, client: BenchClient) -> None:
        if client.resolved:
            return
        client.resolved = True
        self.resolved += 1
        if self.resolved == len(self.clients):
            self._all_resolved()

    def _all_resolved(self) -> None:
        now = _monotonic()
        self.last_ready = now
        ok = self.open if self.kind != "sub" else self.subscribed
        self.report("ready", {"worker": self.share.worker, "ok": ok, "failed": self.failed,
                              "clients": len(self.clients)})
        if not ok:
            self.request_stop("no client connected" if not self.connected else "nothing to do")
            return
        if self.kind in ("conn", "sub") and self.opts.duration is not None:
            self.loop.call_at(now + self.opts.duration, lambda: self.request_stop("duration"))

    def on_closed(self, client: BenchClient, error: Optional[BaseException]) -> None:
        if not client.conn.was_connected:
            self.failed += 1
            if self.stopping and error is None and client.refused is None:
                reason = "stopped before CONNACK"
            else:
                reason = client.refused or describe_error(error)
            self._count(self.failure_reasons, reason)
            self._resolve(client)
        else:
            self.open -= 1
            if not self.stopping:
                self.dropped += 1
                self.errors += 1
                self._count(self.drop_reasons, client.refused or describe_error(error))
                self._resolve(client)  # a subscriber lost before its SUBACK
                if not self.open and self.resolved == len(self.clients) \
                        and self.started == len(self.clients):
                    self.request_stop("every connection dropped")
        if self.stopping and not self.loop.connections:
            self.done = True

    @staticmethod
    def _count(table: Dict[str, int], reason: str) -> None:
        table[reason] = table.get(reason, 0) + 1

    # ------------------------------------------------------------------ publishing

    def _start_publishing(self) -> None:
        if self.publishing:
            return
        self.publishing = True
        now = _monotonic()
        self.pub_start = now
        self.pub_last_tick = now
        if self.opts.duration is not None:
            self.loop.call_at(now + self.opts.duration, lambda: self.request_stop("duration"))
        if self._saturating:
            self.loop.call_later(0, self._fill)
        else:
            self.loop.call_later(TICK, self._pub_tick)

    @property
    def _saturating(self) -> bool:
        return self.share.rate is None and self.opts.msg_interval_ms <= 0

    def _rate(self) -> float:
        if self.share.rate is not None:
            return self.share.rate
        return self.open * 1000.0 / self.opts.msg_interval_ms

    def _pub_tick(self) -> None:
        if self.pub_stopped:
            return
        now = _monotonic()
        rate = self._rate()
        if rate > self.target_rate:
            self.target_rate = rate
        tokens = self.tokens + rate * (now - self.pub_last_tick)
        self.pub_last_tick = now
        cap = rate if rate > 1.0 else 1.0
        if tokens > cap:
            tokens = cap  # at most one second's worth: catch up, never burst beyond that
        due = int(tokens)
        if self.limit is not None:
            due = min(due, self.limit - self.sent)
        if due > 0:
            tokens -= self._publish(due, now)
        self.tokens = tokens
        if self.limit is not None and self.sent >= self.limit:
            self._stop_publishing()
            return
        delay = MAX_TICK if rate <= 0 else min(max((1.0 - tokens) / rate, TICK), MAX_TICK)
        self.loop.call_later(delay, self._pub_tick)

    def _publish(self, due: int, now: float) -> int:
        """Publish up to ``due`` messages, one per client in turn; returns how many went out."""
        pubs = self.pubs
        if not pubs:
            return 0
        done, self.rr, stale = self._publish_to(pubs, self.rr, due, now)
        if done:
            self.sent += done
            self.pub_end = now
        if stale:
            self.pubs = [c for c in pubs if c.session.state is CONNECTED and c.publishing]
            self.rr = 0
        return done

    def _publish_to(self, pubs: List[BenchClient], i: int, due: int,
                    now: float) -> Tuple[int, int, bool]:
        """The publishing loop: ``(published, next index, whether a client went away)``."""
        n = len(pubs)
        opts = self.opts
        qos = opts.qos
        retain = opts.retain
        maker = self.maker
        constant = maker.constant
        make = maker.make
        done = 0
        misses = 0
        stale = False
        while done < due and misses < n:
            if i >= n:
                i = 0
            client = pubs[i]
            i += 1
            if client.session.state is not CONNECTED or not client.publishing:
                misses += 1
                stale = True
                continue
            session = client.session
            conn = client.conn
            if (qos and session.window_free <= 0) or session.pending_bytes > HIGH_WATER:
                misses += 1
                continue
            misses = 0
            client.msg_seq += 1
            seq = client.msg_seq
            topic = client.topic
            if topic is None:
                topic = client.bound.render(seq)
            payload = constant if constant is not None else make(client.seq, seq, _time_ns())
            try:
                if qos == 0:
                    session.publish(topic, payload, 0, retain)
                else:
                    session.publish(topic, payload, qos, retain, None, now, _Timed).t0 = now
            except (MQTTError, ValueError) as exc:
                self._publish_error(client, exc)
                stale = True
                continue
            done += 1
            if not conn.flush_queued:
                conn.kick()
        return done, i, stale

    def _publish_error(self, client: BenchClient, exc: BaseException) -> None:
        client.publishing = False  # the same message would fail again
        self.errors += 1
        self._count(self.error_reasons, f"publish failed: {exc}")

    def _fill(self) -> None:
        """Saturating mode (-I 0): top up every publisher that is not backed up."""
        if self.pub_stopped:
            return
        now = _monotonic()
        opts = self.opts
        qos = opts.qos
        batch = self._batch
        added = 0
        for client in self.pubs:
            if client.session.state is not CONNECTED or not client.publishing:
                continue
            session = client.session
            conn = client.conn
            if session.pending_bytes >= LOW_WATER:
                continue
            if qos:
                room = session.window_free  # -F, or the broker's less
                if room <= 0:
                    continue
                room = min(room, len(batch) or 256)
            else:
                room = len(batch) or 256
            if self.limit is not None:
                room = min(room, self.limit - self.sent - added)
                if room <= 0:
                    break
            if qos == 0 and batch and client.topic is not None and session.plain_qos0:
                try:
                    session.publish_many(client.topic,
                                         batch[:room] if room < len(batch) else batch, opts.retain)
                except (MQTTError, ValueError) as exc:
                    self._publish_error(client, exc)
                    continue
                client.msg_seq += room
                added += room
                conn.kick()
                continue
            added += self._publish_to([client], 0, room, now)[0]
        if added:
            self.sent += added
            self.pub_end = now
        if self.limit is not None and self.sent >= self.limit:
            self._stop_publishing()
            return
        self.loop.call_later(0 if added else 0.0005, self._fill)

    def on_ack(self, record: Any) -> None:
        if record.state == PublishState.DONE:
            self.acked += 1
            t0 = getattr(record, "t0", None)
            if t0 is not None:
                us = int((_monotonic() - t0) * 1e6)
                pending = self.lat_ack.pending
                pending[us] = pending.get(us, 0) + 1
        else:
            self.publish_failed += 1
            self.errors += 1
            self._count(self.error_reasons, f"publish refused: {record.error}")

    def _stop_publishing(self) -> None:
        if self.pub_stopped:
            return
        self.pub_stopped = True
        if not self.stop_reason:
            self.stop_reason = "limit" if self.limit is not None and self.sent >= self.limit \
                else "stopped"
        now = _monotonic()
        self.drain_deadline = now + DRAIN_TIMEOUT
        if not self.opts.qos:
            # QoS 0 has no acknowledgement: a PINGREQ behind the last PUBLISH of each connection
            # is one. The broker answers it only after reading everything before it, so "the
            # PINGRESPs are in" means the broker has taken every message (not merely the kernel's
            # socket buffers, which on loopback hold hundreds of megabytes).
            for client in self.pubs:
                session = client.session
                if client.msg_seq and session.ping(now):
                    client.fenced = True
                    client.conn.kick()
        self._drain_tick()

    def _drain_tick(self) -> None:
        """After publishing: wait for every acknowledgement (QoS 1/2) or PINGRESP (QoS 0)."""
        if self.opts.qos:
            outstanding = self.sent - self.acked - self.publish_failed
        else:
            outstanding = len([c for c in self.pubs if c.fenced and c.session.state is CONNECTED
                               and c.session.ping_sent_at is not None])
        now = _monotonic()
        if outstanding <= 0 and not self.opts.qos and self.sent:
            self.pub_end = now  # QoS 0: published = read by the broker
        if outstanding <= 0 or now >= self.drain_deadline or not self.open:
            self._shutdown()
            return
        self.loop.call_later(0.001, self._drain_tick)

    # ------------------------------------------------------------------ receiving

    def on_messages(self, client: BenchClient, messages: List[Any]) -> None:
        """Received PUBLISHes (the hot path of ``bench sub``): count, and with payload headers
        measure end-to-end latency and check each publisher's sequence."""
        n = len(messages)
        if self.limit is not None:
            left = self.limit - self.received
            if left <= 0:
                return
            if n >= left:
                messages = messages[:left]
                n = left
                self.loop.call_later(0, lambda: self.request_stop("limit"))
        now = _monotonic()
        if not self.first_recv:
            self.first_recv = now
        self.last_recv = now
        self.received += n
        now_us = _time_ns() // 1000
        pending = self.lat_e2e.pending
        see = self.seq.see
        streams = client.streams_dict
        if streams is None:
            streams = client.streams_dict = self.seq.streams_of(client.stream_key)
        unpack = RECV_HEADER.unpack_from
        for msg in messages:
            payload = msg.payload
            if len(payload) >= HEADER_SIZE:
                magic, ts, seq, stream = unpack(payload)
                if magic == MAGIC_INT:
                    us = now_us - ts // 1000
                    if us < 0:
                        self.negative_latency += 1
                        us = 0
                    pending[us] = pending.get(us, 0) + 1
                    state = streams.get(stream)
                    if state is not None and seq == state[1] + 1:
                        state[1] = seq
                    else:
                        see(streams, stream, seq)
                    continue
            self.without_headers += 1

    # ------------------------------------------------------------------ the end

    def _shutdown(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.pub_stopped = True
        if not self.stop_reason:
            self.stop_reason = "stopped"
        for client in self.clients:
            self._close_client(client)
        self.close_deadline = _monotonic() + CLOSE_TIMEOUT
        if not self.loop.connections:
            self.done = True
        else:
            self.loop.call_later(0.05, self._close_tick)

    def _close_client(self, client: BenchClient) -> None:
        conn = client.conn
        if conn is None or conn.closed:
            return
        conn.closing = True
        session = client.session
        assert session is not None
        if session.state is CONNECTED:
            session.disconnect()
            conn.kick()
        else:
            conn.close(None, retry=False)

    def _close_tick(self) -> None:
        if not self.loop.connections:
            self.done = True
            return
        if _monotonic() >= self.close_deadline:
            for conn in list(self.loop.connections):
                conn.close(None, retry=False)
            self.done = True
            return
        self.loop.call_later(0.05, self._close_tick)

    # ------------------------------------------------------------------ reporting

    def _second_tick(self) -> None:
        self._second += 1
        self.lat_connect.fold()
        self.lat_ack.fold()
        self.lat_e2e.fold()
        totals = [self.connected, self.failed, self.sent, self.acked, self.received,
                  self.errors]
        prev = self._prev
        row = [self._second, self.open] + [totals[i] - prev[i] for i in range(6)]
        self._prev = totals
        self.series.append(row)
        rss = rss_kb()
        if rss > self.peak_rss:
            self.peak_rss = rss
        self.report("tick", self.snapshot())
        if not self.done:
            self.loop.call_at(self.t0 + self._second + 1, self._second_tick)

    def snapshot(self) -> Dict[str, Any]:
        return {"worker": self.share.worker, "second": self._second,
                "elapsed": _monotonic() - self.t0, "clients": len(self.clients),
                "started": self.started, "connected": self.connected, "open": self.open,
                "failed": self.failed, "sent": self.sent, "acked": self.acked,
                "received": self.received, "errors": self.errors}

    def result(self) -> Dict[str, Any]:
        # The last, partial second is kept in the series only when something happened in it.
        totals = [self.connected, self.failed, self.sent, self.acked, self.received, self.errors]
        deltas = [totals[i] - self._prev[i] for i in range(6)]
        partial = any(deltas)
        if partial:
            self.series.append([self._second + 1, self.open] + deltas)
        rss = rss_kb()
        if rss > self.peak_rss:
            self.peak_rss = rss
        unacked = self.sent - self.acked - self.publish_failed if self.opts.qos else 0
        return {
            "kind": self.kind,
            "clients": len(self.clients),
            "started": self.started,
            "connected": self.connected,
            "failed": self.failed,
            "failure_reasons": dict(self.failure_reasons),
            "dropped": self.dropped,
            "drop_reasons": dict(self.drop_reasons),
            "subscribed": self.subscribed,
            "subscribe_failed": self.subscribe_failed,
            "sent": self.sent,
            "acked": self.acked,
            "publish_failed": self.publish_failed,
            "unacked": max(0, unacked),
            "received": self.received,
            "errors": self.errors,
            "error_reasons": dict(self.error_reasons),
            "lost": self.seq.lost,
            "duplicated": self.seq.duplicated,
            "out_of_order": self.seq.out_of_order,
            "without_headers": self.without_headers,
            "negative_latency": self.negative_latency,
            "streams": self.seq.streams,
            "target_rate": self.target_rate,
            "first_start": self.first_start,
            "last_start": self.last_start,
            "last_connack": self.last_connack,
            "last_connack_99": self.last_connack_99,
            "connected_99": self.n99 if self.last_connack_99 else 0,
            "last_ready": self.last_ready,
            "pub_start": self.pub_start,
            "pub_end": self.pub_end,
            "first_recv": self.first_recv,
            "last_recv": self.last_recv,
            "run_end": _monotonic(),
            "stop_reason": self.stop_reason,
            "rss_kb": self.peak_rss,
            "rss_peak_kb": rss_kb("VmHWM"),
            "histograms": {"connect": self.lat_connect.encode(), "ack": self.lat_ack.encode(),
                           "e2e": self.lat_e2e.encode()},
            "series": self.series,
            "series_partial_last": partial,  # the last row covers less than a second
        }
