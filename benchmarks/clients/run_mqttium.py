"""mqttium 1.2 (pure asyncio) under test: ``publish_nowait()`` in a loop, and ``on_message``.

Publish: ``AsyncClient(protocol=MQTTv311 | MQTTv5, max_outbound_inflight=window,
max_unacknowledged_messages=window)`` with the window at 65,535 (the parent's ``--mqttium-window``;
mqttium's own defaults are 20 in flight on MQTT 3.1.1 and 10,000 admitted-but-unacknowledged,
either of which would make a QoS 1 run measure a window, not the client). The loop calls
``publish_nowait`` -- mqttium's fastest path, documented for sustained producers: no coroutine per
message; ready QoS 0 is encoded and handed straight to its writer, and a receipt allocates no
future until someone waits on it. When a bound is full it raises ``FlowControlError``; the loop
then makes that one call through ``await publish()``, which parks until capacity frees (the
library's own backpressure, no polling), and goes on with ``publish_nowait``. Every
``YIELD_EVERY`` messages it yields to the event loop (``await asyncio.sleep(0)``), as any asyncio
producer does, so the writer flushes and PUBACKs are read while publishing. The write queue keeps
its default bounds (10,000 frames / 1 MiB): they only decide when the loop yields.

On MQTT 5 the broker's Receive Maximum also bounds the window (mosquitto here announces none:
65,535). Completion: QoS 0, mqttium's writer queue empty (``stats().writer.queued_messages``,
polled each millisecond at the end); QoS 1/2, the last receipt's ``wait()`` (PUBACK / PUBCOMP),
then every receipt checked (``is_done()``), as for mqttfast's handles.

Receive: ``message_delivery="callback"`` with a counting ``on_message``: the callback runs inline
on mqttium's reader, with no queue between the socket and the user (the iterator mode,
mqttium's default, adds an ``asyncio`` queue hand-off per message, the slower of its two ways).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Dict, List

import mqttium
from mqttium import FlowControlError, MQTTProtocolVersion
from mqttium.api import AsyncClient, Properties

from .child import SESSION_EXPIRY, Control, payload_of, received, until_done, until_go, until_set

perf_counter = time.perf_counter
YIELD_EVERY = 1024


def _info() -> Dict[str, Any]:
    return {"version": getattr(mqttium, "__version__", None) or _dist_version()}


def _dist_version() -> str:
    from importlib import metadata
    return metadata.version("mqttium")


def _protocol(spec: Dict[str, Any]) -> MQTTProtocolVersion:
    return MQTTProtocolVersion.MQTTv5 if spec.get("protocol") == 5 else MQTTProtocolVersion.MQTTv311


async def _publish(spec: Dict[str, Any], ctl: Control) -> None:
    n, qos, topic = spec["n"], spec["qos"], spec["topic"]
    timeout = spec["timeout"]
    payload = payload_of(spec["payload_size"])
    window = int(spec.get("window") or 65535)
    c = AsyncClient(spec["client_id"], protocol=_protocol(spec), max_outbound_inflight=window,
                    max_unacknowledged_messages=window)
    await c.connect(spec["host"], spec["port"])
    ctl.ready(window=window, **_info())
    ctl.wait_go()  # blocks the event loop for a moment: nothing to do before the start anyway
    deadline = time.monotonic() + timeout
    t0 = perf_counter()
    nowait = c.publish_nowait
    publish = c.publish
    sleep = asyncio.sleep
    receipts: List[Any] = []
    keep = receipts.append if qos else None
    refused = 0
    i = 0
    while i < n:
        chunk = min(n, i + YIELD_EVERY)
        while i < chunk:
            try:
                r = nowait(topic, payload, qos=qos)
            except FlowControlError:
                refused += 1
                r = await publish(topic, payload, qos=qos)  # parks until capacity frees
            if keep is not None:
                keep(r)
            i += 1
        await sleep(0)
        if time.monotonic() > deadline:
            break
    t_queued = perf_counter()
    ctl.emit("queued", t_queued=t_queued)
    ok = i == n
    completed = 0
    try:
        if qos == 0:
            async def flushed() -> None:
                while c.stats().writer.queued_messages:
                    await sleep(0.001)
            await asyncio.wait_for(flushed(), max(0.0, deadline - time.monotonic()))
            completed = i
        else:
            await asyncio.wait_for(receipts[-1].wait(), max(0.0, deadline - time.monotonic()))
            completed = sum(1 for r in receipts if r.is_done())
            if completed != len(receipts):  # not in order: wait for the rest
                for r in receipts:
                    if not r.is_done():
                        await asyncio.wait_for(r.wait(), max(0.0, deadline - time.monotonic()))
                completed = sum(1 for r in receipts if r.is_done())
    except asyncio.TimeoutError:
        ok = False
        if qos:
            completed = sum(1 for r in receipts if r.is_done())
    t_done = perf_counter()
    ok = ok and completed == n
    await c.disconnect()
    ctl.result(t0=t0, t_done=t_done, t_queued=t_queued, sent=i, completed=completed, ok=ok,
               timed_out=not ok, flow_control_waits=refused, window=window, **_info())


async def _receive(spec: Dict[str, Any], ctl: Control, backlog: bool = False) -> None:
    """Subscribe and count to N with the callback delivery. ``backlog``: subscribe on a session
    that outlives the connection (``clean_start=False``; MQTT 5 also a session expiry),
    disconnect, say ready; at ``go`` (the broker holds the feed) connect the same client again
    (``t0`` just before)."""
    n = spec["n"]
    done = asyncio.Event()
    state: List[Any] = [0, None, None]  # count, t_first, t_last

    def on_message(message: Any) -> None:
        k = state[0] + 1
        state[0] = k
        if k == 1:
            state[1] = perf_counter()
        if k == n:  # the feeder sends a margin more: the N-th stops the clock
            state[2] = perf_counter()
            done.set()

    session: Dict[str, Any] = {}
    if backlog:
        session["clean_start"] = False
        if spec.get("protocol") == 5:
            session["connect_properties"] = Properties({"session_expiry_interval": SESSION_EXPIRY})
    c = AsyncClient(spec["client_id"], protocol=_protocol(spec), message_delivery="callback",
                    **session)
    c.on_message = on_message
    await c.connect(spec["host"], spec["port"])
    await asyncio.wait_for(c.subscribe(spec["topic"], qos=spec["qos"]), 10)
    extra: Dict[str, Any] = {}
    if backlog:
        await c.disconnect()
        extra["t0"] = await until_go(ctl, done, spec["timeout"], **_info())
        await c.connect(spec["host"], spec["port"])
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
