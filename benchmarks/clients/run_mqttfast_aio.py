"""mqttfast's asyncio client (``mqttfast.aio``) under test: ``publish_nowait`` in a loop, and
``on_message`` (variant ``loop``) or ``async for m in c.messages()`` (variant ``iter``).

Publish: ``aio.Client(protocol=P, max_inflight=window)``; the loop calls ``publish_nowait`` (no
coroutine, Task or Future per message: QoS 0 is appended to the session's stream, one flush per
batch). When the window and queue or the write buffer are full it raises ``QueueFull``; the loop
then makes that one call through ``await publish()``, which waits for room, and goes on. Every
``YIELD_EVERY`` messages it yields (``await asyncio.sleep(0)``), as any asyncio producer does, so
the transport writes and PUBACKs are read while publishing. Completion: QoS 0, the last handle
(written: the transport's buffer let go of it); QoS 1/2, the last handle, then every handle
checked. The event loop is the parent's ``event_loop`` (``clients.child`` installs uvloop).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Dict, List, Optional

import mqttfast
import mqttfast.aio as aio
from mqttfast.errors import QueueFull

from .child import SESSION_EXPIRY, Control, payload_of, received, until_done, until_go, until_set

perf_counter = time.perf_counter
YIELD_EVERY = 1024


def _info() -> Dict[str, Any]:
    from mqttfast import codec
    return {"version": mqttfast.__version__, "codec": codec.IMPLEMENTATION,
            "loop": type(asyncio.get_running_loop()).__module__}


async def _publish(spec: Dict[str, Any], ctl: Control) -> None:
    n, qos, topic = spec["n"], spec["qos"], spec["topic"]
    timeout = spec["timeout"]
    payload = payload_of(spec["payload_size"])
    window = spec.get("window")
    c = aio.Client(spec["client_id"], spec.get("protocol", 4), max_inflight=window,
                   outgoing_aliases=spec.get("protocol") != 5)
    await c.connect(spec["host"], spec["port"])
    ctl.ready(**_info())
    ctl.wait_go()
    deadline = time.monotonic() + timeout
    t0 = perf_counter()
    nowait = c.publish_nowait
    publish = c.publish
    sleep = asyncio.sleep
    handles: List[Any] = []
    keep = handles.append if qos else None
    waits = 0
    last: Any = None
    i = 0
    while i < n:
        chunk = min(n, i + YIELD_EVERY)
        while i < chunk:
            try:
                last = nowait(topic, payload, qos)
            except QueueFull:
                waits += 1
                last = await publish(topic, payload, qos)  # waits for room (and for the ack)
            if keep is not None:
                keep(last)
            i += 1
        await sleep(0)
        if time.monotonic() > deadline:
            break
    t_queued = perf_counter()
    ctl.emit("queued", t_queued=t_queued)
    ok = i == n
    completed = 0
    try:
        left = max(0.0, deadline - time.monotonic())
        if qos == 0:
            ok = ok and await asyncio.wait_for(last.wait(), left)
            completed = i if ok else 0
        else:
            await asyncio.wait_for(last.wait(), left)
            for h in handles:
                if not h.done:
                    await asyncio.wait_for(h.wait(), max(0.0, deadline - time.monotonic()))
            completed = sum(1 for h in handles if h.ok)
    except asyncio.TimeoutError:
        ok = False
        if qos:
            completed = sum(1 for h in handles if h.ok)
    t_done = perf_counter()
    ok = ok and completed == n
    await c.disconnect()
    ctl.result(t0=t0, t_done=t_done, t_queued=t_queued, sent=i, completed=completed, ok=ok,
               timed_out=not ok, queue_full_waits=waits, **_info())


async def _receive(spec: Dict[str, Any], ctl: Control, backlog: bool = False) -> None:
    """Subscribe and count to N, with ``on_message`` or (variant ``iter``) the ``messages()``
    iterator. ``backlog``: subscribe on a session that outlives the connection, disconnect, say
    ready; at ``go`` (the broker holds the feed) connect the same Client again (``t0`` just
    before)."""
    n = spec["n"]
    done = asyncio.Event()
    state: List[Any] = [0, None, None]  # count, t_first, t_last

    def count(message: Any) -> None:
        k = state[0] + 1
        state[0] = k
        if k == 1:
            state[1] = perf_counter()
        if k == n:
            state[2] = perf_counter()
            done.set()

    protocol = int(spec.get("protocol") or 4)
    session: Dict[str, Any] = {}
    if backlog:
        session = ({"clean_session": False} if protocol == 4
                   else {"clean_start": False, "session_expiry": SESSION_EXPIRY})
    iterate = spec.get("variant") == "iter"
    c = aio.Client(spec["client_id"], protocol, max_messages=65536, **session)
    if not iterate:
        c.on_message = count

    def consumer() -> Optional["asyncio.Future[None]"]:
        async def consume() -> None:
            async for m in c.messages():
                count(m)
        return asyncio.ensure_future(consume()) if iterate else None

    await c.connect(spec["host"], spec["port"])
    await asyncio.wait_for(c.subscribe(spec["topic"], qos=spec["qos"]), 10)
    extra: Dict[str, Any] = {}
    if backlog:
        await c.disconnect()
        extra["t0"] = await until_go(ctl, done, spec["timeout"], **_info())
        task = consumer()
        await c.connect(spec["host"], spec["port"])
        timed_out = await until_done(done, spec["timeout"])
    else:
        task = consumer()
        timed_out = await until_set(ctl, done, spec["timeout"], **_info())
    got = tuple(state)
    if task is not None:
        task.cancel()
    await c.disconnect()
    received(ctl, got, n, timed_out, **extra, **_info())


def backlog(spec: Dict[str, Any], ctl: Control) -> None:
    asyncio.run(_receive(spec, ctl, backlog=True))


def publish(spec: Dict[str, Any], ctl: Control) -> None:
    asyncio.run(_publish(spec, ctl))


def receive(spec: Dict[str, Any], ctl: Control) -> None:
    asyncio.run(_receive(spec, ctl))
