"""gmqtt (asyncio) under test: ``publish()`` in a loop, and ``on_message``.

MQTT 3.1.1, or MQTT 5 (``version=MQTTv50``, gmqtt's own default). ``publish()`` is
synchronous (it encodes and calls ``transport.write``); the loop
yields to the event loop (``await asyncio.sleep(0)``) every ``YIELD_EVERY`` messages, as any
asyncio program does, so the transport flushes and acknowledgements are read while publishing.
gmqtt has no flow control of its own: when all 65,535 packet ids are taken, ``publish`` raises
``OverflowError`` ("May be your QoS queue is full"); the loop then sleeps a millisecond and tries
again. The benchmark's QoS 2 window (``--qos2-window``) is applied by this loop (at most that
many messages in gmqtt's in-flight store), as mqttfast and paho apply theirs. Completion: QoS 0,
the transport's write buffer empty (polled each millisecond at the end); QoS 1/2, gmqtt's
in-flight store empty (``wait_empty()``: the PUBACK / PUBCOMP of every message).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Dict, List

import gmqtt
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

from .child import SESSION_EXPIRY, Control, payload_of, received, until_done, until_go, until_set

perf_counter = time.perf_counter
YIELD_EVERY = 1024

logging.getLogger("gmqtt").setLevel(logging.ERROR)


def _version(spec: Dict[str, Any]) -> int:
    return MQTTv50 if spec.get("protocol") == 5 else MQTTv311


def _info() -> Dict[str, Any]:
    return {"version": gmqtt.__version__}


async def _connect(spec: Dict[str, Any]) -> Any:
    c = gmqtt.Client(spec["client_id"])
    c.set_config({"reconnect_retries": 0})
    await c.connect(spec["host"], spec["port"], keepalive=60, version=_version(spec))
    return c


async def _publish(spec: Dict[str, Any], ctl: Control) -> None:
    n, qos, topic = spec["n"], spec["qos"], spec["topic"]
    timeout = spec["timeout"]
    payload = payload_of(spec["payload_size"])
    c = await _connect(spec)
    transport = c._connection._transport
    storage = c._persistent_storage
    ctl.ready(**_info())
    ctl.wait_go()  # blocks the event loop for a moment: nothing to do before the start anyway
    t0 = perf_counter()
    pub = c.publish
    sleep = asyncio.sleep
    window = int(spec.get("window") or 65535)
    deadline = time.monotonic() + timeout
    inflight = storage._messages  # gmqtt's in-flight QoS 1/2 packets by packet id
    capped = qos > 0 and window < 65535
    overflows = window_waits = 0
    i = 0
    while i < n:
        chunk = min(n, i + YIELD_EVERY)
        while i < chunk:
            if capped and len(inflight) >= window:
                window_waits += 1
                while len(inflight) >= window and time.monotonic() < deadline:
                    await sleep(0.001)
            try:
                pub(topic, payload, qos=qos)
            except OverflowError:
                overflows += 1
                if time.monotonic() > deadline:
                    break
                await sleep(0.001)
                continue
            i += 1
        await sleep(0)
        if time.monotonic() > deadline:
            break
    t_queued = perf_counter()
    ctl.emit("queued", t_queued=t_queued)
    ok = True
    try:
        if qos == 0:
            async def flushed() -> None:
                while transport.get_write_buffer_size():
                    await sleep(0.001)
            await asyncio.wait_for(flushed(), max(0.0, deadline - time.monotonic()))
        else:
            await asyncio.wait_for(storage.wait_empty(), max(0.0, deadline - time.monotonic()))
        ok = i == n
    except asyncio.TimeoutError:
        ok = False
    t_done = perf_counter()
    completed = n if ok else i - len(storage.get_all()) if qos else 0
    await c.disconnect()
    ctl.result(t0=t0, t_done=t_done, t_queued=t_queued, sent=i, completed=completed,
               ok=ok, timed_out=not ok, overflows=overflows, window=window,
               window_waits=window_waits, **_info())


async def _receive(spec: Dict[str, Any], ctl: Control, backlog: bool = False) -> None:
    """Subscribe and count to N. ``backlog``: subscribe on a session that outlives the connection
    (``clean_session=False``; MQTT 5 also a session expiry), disconnect, say ready; at ``go``
    (the broker holds the feed) connect a Client with that id again (``t0`` just before)."""
    n = spec["n"]
    done = asyncio.Event()
    subscribed = asyncio.Event()
    state: List[Any] = [0, None, None]  # count, t_first, t_last

    def on_message(client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        k = state[0] + 1
        state[0] = k
        if k == 1:
            state[1] = perf_counter()
        if k == n:
            state[2] = perf_counter()
            done.set()
        return 0

    def on_subscribe(client: Any, *args: Any) -> None:
        subscribed.set()

    def make() -> Any:
        session: Dict[str, Any] = {}
        if backlog:
            session["clean_session"] = False
            if spec.get("protocol") == 5:
                session["session_expiry_interval"] = SESSION_EXPIRY
        c = gmqtt.Client(spec["client_id"], **session)
        c.set_config({"reconnect_retries": 0})
        c.on_message = on_message
        c.on_subscribe = on_subscribe
        return c

    c = make()
    await c.connect(spec["host"], spec["port"], keepalive=60, version=_version(spec))
    c.subscribe(spec["topic"], qos=spec["qos"])
    await asyncio.wait_for(subscribed.wait(), 10)
    extra: Dict[str, Any] = {}
    if backlog:
        await c.disconnect()
        extra["t0"] = await until_go(ctl, done, spec["timeout"], **_info())
        c = make()
        await c.connect(spec["host"], spec["port"], keepalive=60, version=_version(spec))
        timed_out = await until_done(done, spec["timeout"])
    else:
        timed_out = await until_set(ctl, done, spec["timeout"], **_info())
    got = tuple(state)
    await c.disconnect()
    received(ctl, got, n, timed_out, **extra, **_info())


def backlog(spec: Dict[str, Any], ctl: Control) -> None:
    asyncio.run(_receive(spec, ctl, backlog=True))


def publish(spec: Dict[str, Any], ctl: Control) -> None:
    asyncio.run(_publish(spec, ctl))


def receive(spec: Dict[str, Any], ctl: Control) -> None:
    asyncio.run(_receive(spec, ctl))
