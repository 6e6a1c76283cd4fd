"""zmqtt 0.2 (pure asyncio) under test: ``await publish()``, and ``async for`` over a subscription.

zmqtt has one publish call, a coroutine that returns when the message is done: QoS 0 once it is
written (``transport.write`` then ``drain()``), QoS 1/2 once its PUBACK / PUBCOMP is in. It has no
fire-and-forget call, no window and no outbound flow control of its own (packet ids 1..65535).

* QoS 0: one coroutine awaits ``publish()`` N times in a row. That is its fastest way: the await
  does not suspend while the transport is below its high-water mark (``drain()`` returns at
  once), so there is no switch per message; more coroutines would only add switches.
* QoS 1/2: one ``await publish()`` at a time would be one broker round trip per message. So
  ``window`` worker coroutines (65,535 at QoS 1, the same window as every other client; the
  parent's ``--qos2-window`` at QoS 2) share the N messages, each awaiting its publishes in turn:
  up to ``window`` messages in flight, pipelined, with one coroutine per slot rather than one
  task per message. Completion is every worker done (every ack in).

On Python < 3.12 each ``drain()`` goes through zmqtt's ``wait_for`` shim, one task per write:
that is zmqtt's cost, not the benchmark's.

Receive: zmqtt delivers only through a ``Subscription`` (``async with client.subscribe(...)``,
then ``async for``); there is no callback API. ``receive_buffer_size=0`` (unbounded) so the
consumer, not a full queue, sets the pace: the default bound of 1,000 only makes the read loop
stop and restart while the consumer catches up.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Dict, List

import zmqtt

from .child import Control, payload_of, received

perf_counter = time.perf_counter


def _info() -> Dict[str, Any]:
    from importlib import metadata
    return {"version": getattr(zmqtt, "__version__", None) or metadata.version("zmqtt")}


def _client(spec: Dict[str, Any]) -> Any:
    return zmqtt.create_client(spec["host"], spec["port"], client_id=spec["client_id"],
                               keepalive=60,
                               version="5.0" if spec.get("protocol") == 5 else "3.1.1")


async def _publish(spec: Dict[str, Any], ctl: Control) -> None:
    n, qos, topic = spec["n"], spec["qos"], spec["topic"]
    timeout = spec["timeout"]
    payload = payload_of(spec["payload_size"])
    window = max(1, min(int(spec.get("window") or 65535), 65535, n))
    level = zmqtt.QoS(qos)
    c = _client(spec)
    await c.connect()
    ctl.ready(window=window if qos else None, **_info())
    ctl.wait_go()
    deadline = time.monotonic() + timeout
    pub = c.publish
    done = [0]
    t0 = perf_counter()
    if qos == 0:
        async def run() -> None:
            for _ in range(n):
                await pub(topic, payload)
            done[0] = n
    else:
        left = [n]

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                await pub(topic, payload, qos=level)
                done[0] += 1

        async def run() -> None:
            await asyncio.gather(*(worker() for _ in range(window)))
    try:
        await asyncio.wait_for(run(), max(0.0, deadline - time.monotonic()))
        ok = True
    except asyncio.TimeoutError:
        ok = False
    t_done = perf_counter()
    ctl.emit("queued", t_queued=t_done)
    completed = done[0]
    await c.disconnect()
    ok = ok and completed == n
    ctl.result(t0=t0, t_done=t_done, t_queued=t_done, sent=completed, completed=completed, ok=ok,
               timed_out=not ok, window=window if qos else None, **_info())


async def _receive(spec: Dict[str, Any], ctl: Control) -> None:
    n = spec["n"]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    state: List[Any] = [0, None, None]  # count, t_first, t_last
    c = _client(spec)
    await c.connect()
    timed_out = False
    async with c.subscribe(spec["topic"], qos=zmqtt.QoS(spec["qos"]),
                           receive_buffer_size=0) as sub:
        async def consume() -> None:
            async for _message in sub:
                k = state[0] + 1
                state[0] = k
                if k == 1:
                    state[1] = perf_counter()
                if k == n:  # the feeder sends a margin more: the N-th stops the clock
                    state[2] = perf_counter()
                    break

        ctl.on_stop(lambda: loop.call_soon_threadsafe(stop.set))
        ctl.ready(**_info())
        consumer = asyncio.ensure_future(consume())
        stopper = asyncio.ensure_future(stop.wait())
        finished, _ = await asyncio.wait((consumer, stopper), timeout=spec["timeout"],
                                         return_when=asyncio.FIRST_COMPLETED)
        if consumer not in finished:
            timed_out = stopper not in finished
            consumer.cancel()
        stopper.cancel()
        await asyncio.gather(consumer, stopper, return_exceptions=True)
    got = tuple(state)
    await c.disconnect()
    received(ctl, got, n, timed_out, **_info())


def publish(spec: Dict[str, Any], ctl: Control) -> None:
    asyncio.run(_publish(spec, ctl))


def receive(spec: Dict[str, Any], ctl: Control) -> None:
    asyncio.run(_receive(spec, ctl))
