"""awscrt 0.38 (the AWS Common Runtime's C MQTT clients) under test: ``publish()`` in a loop.

Both of its clients, by the spec's protocol: ``awscrt.mqtt.Connection`` (MQTT 3.1.1) and
``awscrt.mqtt5.Client`` (MQTT 5). Each runs its protocol and socket on a CRT event-loop thread
of its own (``EventLoopGroup(1)``, in C, outside the GIL); ``publish()`` called from Python only
hands the message to that thread and returns a ``concurrent.futures.Future`` that the C side
completes (QoS 0: written to the socket; QoS 1: PUBACK; QoS 2: PUBCOMP). So the fastest fair way
is to call ``publish()`` N times from the main thread, keep the futures, wait for the last (the
operations complete in order), then check every one, as for mqttfast's handles. The loop keeps
at most ``window`` operations outstanding (the parent's ``--awscrt-window``, 60,000): before the
next call, once that many are open, it waits on the oldest. Without that bound the 3.1.1
client's request queue in C fills and it fails the excess with ``AWS_ERROR_MQTT_QUEUE_FULL``
(172,956 of 200,000 done at QoS 1 in an unbounded run; with 65,535 outstanding, 3 of 200,000
still failed at QoS 0), which measures the queue, not the client. The MQTT 5 client also keeps
to the broker's Receive Maximum (mosquitto here announces none: 65,535). The MQTT 5 client is
created with ``ExtendedValidationAndFlowControlOptions.NONE`` (no AWS IoT Core throttling, which
would cap it at IoT Core's per-connection rate), metrics in the CONNECT username off, and its
defaults otherwise (no outgoing topic aliases).

Receive: a counting callback, run on the CRT thread (it takes the GIL per message): the
subscription's ``callback`` on 3.1.1, ``on_publish_callback_fn`` on MQTT 5.

Unsupported: QoS 2, on both clients (aws-c-mqtt implements QoS 0 and 1 only: the MQTT 5 client
is refused up front; the 3.1.1 one is probed with one QoS 2 publish, which it fails at the call).
aws-c-io offers no ``TCP_NODELAY`` option, so Nagle stays on: the last segment of a run can wait
for the peer's delayed ACK (up to ~40 ms on Linux), counted in its time like any client's tail.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, TimeoutError as FutureTimeout
from typing import Any, Callable, Dict, List, Tuple

import awscrt
from awscrt import io, mqtt, mqtt5

from .child import Control, Unsupported, payload_of

perf_counter = time.perf_counter


def _info() -> Dict[str, Any]:
    return {"version": getattr(awscrt, "__version__", None) or _dist_version()}


def _dist_version() -> str:
    from importlib import metadata
    return metadata.version("awscrt")


def _bootstrap() -> io.ClientBootstrap:
    elg = io.EventLoopGroup(1)
    return io.ClientBootstrap(elg, io.DefaultHostResolver(elg))


class _Mqtt3:
    """``awscrt.mqtt.Connection`` (MQTT 3.1.1)."""

    def __init__(self, spec: Dict[str, Any]) -> None:
        self.conn = mqtt.Connection(client=mqtt.Client(_bootstrap()), host_name=spec["host"],
                                    port=spec["port"], client_id=spec["client_id"],
                                    clean_session=True, keep_alive_secs=60)

    def connect(self) -> None:
        self.conn.connect().result(10)

    def publisher(self, topic: str, payload: bytes, qos: int) -> Callable[[], Future]:
        pub = self.conn.publish
        level = mqtt.QoS(qos)

        def one() -> Future:
            return pub(topic, payload, level)[0]
        return one

    def check(self, topic: str, qos: int) -> None:
        """QoS 2: one probe publish on a topic nobody reads; the 3.1.1 client refuses QoS 2 at
        the call (its future fails with ``ValueError``), which makes the scenario unsupported."""
        if qos != 2:
            return
        fut, _pid = self.conn.publish(f"{topic}/qos2-probe", b"", mqtt.QoS(2))
        try:
            fut.result(10)
        except ValueError as e:
            raise Unsupported(f"awscrt's MQTT 3.1.1 client refuses QoS 2 (publish fails with "
                              f"ValueError({str(e)!r})): aws-c-mqtt implements QoS 0 and 1") from e

    def subscribe(self, topic: str, qos: int, on_message: Callable[..., None]) -> None:
        fut, _pid = self.conn.subscribe(topic, mqtt.QoS(qos), callback=on_message)
        fut.result(10)

    def disconnect(self) -> None:
        self.conn.disconnect().result(10)


class _Mqtt5:
    """``awscrt.mqtt5.Client`` (MQTT 5)."""

    def __init__(self, spec: Dict[str, Any], on_publish: Any = None) -> None:
        self.connected: "Future[Any]" = Future()
        self.stopped = threading.Event()

        def on_success(data: Any) -> None:
            if not self.connected.done():
                self.connected.set_result(data)

        def on_failure(data: Any) -> None:
            if not self.connected.done():
                self.connected.set_exception(ConnectionError(f"MQTT 5 connect failed: "
                                                             f"{data.exception}"))

        opts = mqtt5.ClientOptions(
            host_name=spec["host"], port=spec["port"], bootstrap=_bootstrap(),
            connect_options=mqtt5.ConnectPacket(client_id=spec["client_id"],
                                                keep_alive_interval_sec=60),
            session_behavior=mqtt5.ClientSessionBehaviorType.CLEAN,
            extended_validation_and_flow_control_options=(
                mqtt5.ExtendedValidationAndFlowControlOptions.NONE),
            on_publish_callback_fn=on_publish,
            on_lifecycle_event_connection_success_fn=on_success,
            on_lifecycle_event_connection_failure_fn=on_failure,
            on_lifecycle_event_stopped_fn=lambda data: self.stopped.set(),
            disable_metrics=True)
        self.client = mqtt5.Client(opts)

    def connect(self) -> None:
        self.client.start()
        self.connected.result(10)

    def check(self, topic: str, qos: int) -> None:
        pass  # QoS 2 is refused before connecting, in publisher()

    def publisher(self, topic: str, payload: bytes, qos: int) -> Callable[[], Future]:
        if qos == 2:
            raise Unsupported("awscrt's MQTT 5 client implements QoS 0 and 1 only")
        pub = self.client.publish
        packet = mqtt5.PublishPacket(topic=topic, payload=payload, qos=mqtt5.QoS(qos))

        def one() -> Future:
            return pub(packet)  # the packet is read (copied into C) at the call
        return one

    def subscribe(self, topic: str, qos: int, on_message: Any = None) -> None:
        packet = mqtt5.SubscribePacket(
            subscriptions=[mqtt5.Subscription(topic_filter=topic, qos=mqtt5.QoS(qos))])
        self.client.subscribe(packet).result(10)

    def disconnect(self) -> None:
        self.client.stop()
        self.stopped.wait(10)


def _open(spec: Dict[str, Any], on_publish: Any = None) -> Any:
    return _Mqtt5(spec, on_publish) if spec.get("protocol") == 5 else _Mqtt3(spec)


def _settled(futures: List[Future]) -> Tuple[int, int]:
    done = sum(1 for f in futures if f.done())
    failed = sum(1 for f in futures if f.done() and f.exception() is not None)
    return done, failed


def publish(spec: Dict[str, Any], ctl: Control) -> None:
    n, qos, topic = spec["n"], spec["qos"], spec["topic"]
    timeout = spec["timeout"]
    payload = payload_of(spec["payload_size"])
    c = _open(spec)
    one = c.publisher(topic, payload, qos)  # before connecting: an unsupported QoS says so
    c.connect()
    c.check(topic, qos)
    ctl.ready(**_info())
    ctl.wait_go()
    deadline = time.monotonic() + timeout
    window = int(spec.get("window") or 65535)
    window_waits = 0
    futures: List[Future] = []
    append = futures.append
    t0 = perf_counter()
    for i in range(n):
        if i >= window:
            oldest = futures[i - window]
            if not oldest.done():
                window_waits += 1
                try:
                    oldest.result(max(0.0, deadline - time.monotonic()))
                except Exception:  # failed or timed out: counted with the rest below
                    pass
        append(one())
    t_queued = perf_counter()
    ctl.emit("queued", t_queued=t_queued)
    error = None
    try:
        futures[-1].result(max(0.0, deadline - time.monotonic()))
    except FutureTimeout:
        pass
    except Exception as e:  # the last one failed: reported below with the count
        error = f"{type(e).__name__}: {e}"
    t_done = perf_counter()
    completed, failed = _settled(futures)
    if completed != n and time.monotonic() < deadline:  # stragglers (not in order)
        for f in futures:
            if not f.done():
                try:
                    f.result(max(0.0, deadline - time.monotonic()))
                except Exception:
                    break
        t_done = perf_counter()
        completed, failed = _settled(futures)
    if failed and error is None:
        e = next(f.exception() for f in futures if f.done() and f.exception() is not None)
        error = f"{type(e).__name__}: {e}"
    ok = completed == n and not failed
    c.disconnect()
    ctl.result(t0=t0, t_done=t_done, t_queued=t_queued, sent=n, completed=completed - failed,
               failed=failed, error=error, ok=ok, timed_out=completed != n, window=window,
               window_waits=window_waits, **_info())


def receive(spec: Dict[str, Any], ctl: Control) -> None:
    n = spec["n"]
    done = threading.Event()
    state: List[Any] = [0, None, None]  # count, t_first, t_last

    def count(*args: Any, **kwargs: Any) -> None:
        k = state[0] + 1
        state[0] = k
        if k == 1:
            state[1] = perf_counter()
        if k == n:  # the feeder sends a margin more: the N-th stops the clock
            state[2] = perf_counter()
            done.set()

    v5 = spec.get("protocol") == 5
    c = _open(spec, on_publish=count if v5 else None)
    c.connect()
    c.subscribe(spec["topic"], spec["qos"], None if v5 else count)
    ctl.on_stop(done.set)
    ctl.ready(**_info())
    timed_out = not done.wait(spec["timeout"])
    received, t_first, t_last = state
    c.disconnect()
    ctl.result(received=received, t_first=t_first, t_last=t_last, ok=received >= n,
               timed_out=timed_out, **_info())
