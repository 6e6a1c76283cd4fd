"""aiomqtt 2.5 (asyncio around paho-mqtt) under test: awaited ``publish()``, and
``async for message in client.messages``.

aiomqtt's ``publish`` is a coroutine that returns once paho reports the message published (QoS 0:
handed to paho's socket; QoS 1/2: acknowledged), and it has no fire-and-forget form. At QoS 0 one
coroutine awaits each publish in turn (nothing more to overlap: it returns once written). At QoS
1/2, ``window`` coroutines (paho's default in-flight window of 20, its fastest: paho rescans its
in-flight list on every acknowledgement, see bench_clients.py) each publish their share, so up to
``window`` messages are in flight. Receive: its message iterator, the only way it delivers.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Dict, List

import aiomqtt

from .child import Control, payload_of, received, until_set

perf_counter = time.perf_counter
WINDOW = 20


def _info() -> Dict[str, Any]:
    from importlib import metadata
    return {"version": metadata.version("aiomqtt")}


def _client(spec: Dict[str, Any], **options: Any) -> Any:
    protocol = aiomqtt.ProtocolVersion.V5 if spec.get("protocol") == 5 else \
        aiomqtt.ProtocolVersion.V311
    return aiomqtt.Client(spec["host"], spec["port"], identifier=spec["client_id"],
                          protocol=protocol, **options)


async def _publish(spec: Dict[str, Any], ctl: Control) -> None:
    n, qos, topic = spec["n"], spec["qos"], spec["topic"]
    timeout = spec["timeout"]
    payload = payload_of(spec["payload_size"])
    window = WINDOW if qos else 1
    async with _client(spec, max_inflight_messages=WINDOW, timeout=timeout) as c:
        ctl.ready(window=window, **_info())
        ctl.wait_go()
        t0 = perf_counter()
        done: List[int] = [0]

        async def worker(count: int) -> None:
            publish = c.publish
            for _ in range(count):
                await publish(topic, payload, qos)
                done[0] += 1

        shares = [n // window + (1 if k < n % window else 0) for k in range(window)]
        ok = True
        try:
            await asyncio.wait_for(asyncio.gather(*(worker(s) for s in shares)), timeout)
        except asyncio.TimeoutError:
            ok = False
        t_done = perf_counter()
        ctl.emit("queued", t_queued=t_done)
    ctl.result(t0=t0, t_done=t_done, t_queued=t_done, sent=done[0], completed=done[0],
               ok=ok and done[0] == n, timed_out=not ok, window=window, **_info())


async def _receive(spec: Dict[str, Any], ctl: Control) -> None:
    n = spec["n"]
    done = asyncio.Event()
    state: List[Any] = [0, None, None]

    async with _client(spec) as c:
        await c.subscribe(spec["topic"], qos=spec["qos"])

        async def consume() -> None:
            async for _ in c.messages:
                k = state[0] + 1
                state[0] = k
                if k == 1:
                    state[1] = perf_counter()
                if k == n:
                    state[2] = perf_counter()
                    done.set()

        consumer = asyncio.ensure_future(consume())
        timed_out = await until_set(ctl, done, spec["timeout"], **_info())
        got = tuple(state)
        consumer.cancel()
    received(ctl, got, n, timed_out, **_info())


def publish(spec: Dict[str, Any], ctl: Control) -> None:
    asyncio.run(_publish(spec, ctl))


def receive(spec: Dict[str, Any], ctl: Control) -> None:
    asyncio.run(_receive(spec, ctl))
