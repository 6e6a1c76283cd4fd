"""mqttfast under test: ``Client.publish()`` in a loop or ``publish_many``, and ``on_message``.

Variants (the spec's ``variant``): ``loop`` and ``many`` are the tuned client,
``Client(protocol=P, max_inflight=window)`` (the parent's ``--mqttfast-window``, 65535) and, on
MQTT 5, ``outgoing_aliases=False`` (the reference the issue measures automatic aliases against);
``default`` is what a user gets without reading the docs: ``Client(protocol=P)`` and nothing
else (its default window; on MQTT 5 automatic outgoing topic aliases on), ``publish()`` in a loop.

Completion: QoS 0, the last handle's ``wait()`` (its bytes, and so all before them, were handed
to the socket); QoS 1/2, every handle acknowledged (PUBACK / PUBCOMP). The handles come back in
order, so the clock stops when the last one completes and the rest are checked afterwards (any
that were not complete then are waited for, and the clock read again).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, List

import mqttfast
from mqttfast import codec

from .child import SESSION_EXPIRY, Control, payload_of, received

perf_counter = time.perf_counter


def _info() -> Dict[str, Any]:
    return {"version": mqttfast.__version__, "codec": codec.IMPLEMENTATION}


def _finish_all(handles: List[Any], deadline: float) -> int:
    """Wait for the stragglers (if any); return how many completed."""
    for h in handles:
        if not h.is_published:
            h.wait(max(0.0, deadline - time.monotonic()))
    return sum(1 for h in handles if h.is_published)


def publish(spec: Dict[str, Any], ctl: Control) -> None:
    n, qos, topic = spec["n"], spec["qos"], spec["topic"]
    timeout = spec["timeout"]
    many = spec.get("variant") == "many"
    payload = payload_of(spec["payload_size"])
    protocol = int(spec.get("protocol") or 4)
    if spec.get("variant") == "default":
        c = mqttfast.Client(client_id=spec["client_id"], protocol=protocol)
    else:
        window = int(spec.get("window") or 65535)  # QoS 2 too: tuned means the same window
        tuned: Dict[str, Any] = {"max_inflight": window, "max_inflight_qos2": window}
        if protocol == 5:
            tuned["outgoing_aliases"] = False
        c = mqttfast.Client(client_id=spec["client_id"], protocol=protocol, **tuned)
    c.connect(spec["host"], spec["port"])
    payloads = [payload] * n if many else None
    ctl.ready(**_info())
    ctl.wait_go()
    deadline = time.monotonic() + timeout
    t0 = perf_counter()
    if many:
        batch = c.publish_many(topic, payloads, qos=qos)  # type: ignore[arg-type]
        t_queued = perf_counter()
        ctl.emit("queued", t_queued=t_queued)
        handles = batch.handles
        ok = handles[-1].wait(timeout)
    else:
        pub = c.publish
        if qos == 0:
            for _ in range(n):
                h = pub(topic, payload, 0)
            handles = [h]
        else:
            handles = [pub(topic, payload, qos) for _ in range(n)]
        t_queued = perf_counter()
        ctl.emit("queued", t_queued=t_queued)
        ok = handles[-1].wait(timeout)
    t_done = perf_counter()
    if qos == 0:
        completed = n if ok else 0
    else:
        stragglers = sum(1 for h in handles if not h.is_published)
        if stragglers:
            completed = _finish_all(handles, deadline)
            t_done = perf_counter()
        else:
            completed = n
    c.disconnect()
    ctl.result(t0=t0, t_done=t_done, t_queued=t_queued, sent=n, completed=completed,
               ok=completed == n, timed_out=completed != n, **_info())


def receive(spec: Dict[str, Any], ctl: Control) -> None:
    c, state, done = _counting_client(spec)
    c.connect(spec["host"], spec["port"])
    c.subscribe(spec["topic"], spec["qos"]).wait(10)
    ctl.on_stop(done.set)
    ctl.ready(**_info())
    timed_out = not done.wait(spec["timeout"])
    got = tuple(state)
    c.disconnect()
    received(ctl, got, n=spec["n"], timed_out=timed_out, **_info())


def backlog(spec: Dict[str, Any], ctl: Control) -> None:
    """Subscribe on a session that outlives the connection (3.1.1: ``clean_session=False``;
    MQTT 5: ``clean_start=False`` and a session expiry), disconnect, say ready; at ``go`` the
    broker holds the feed: connect the same Client again (``t0`` just before) and count."""
    session = ({"clean_session": False} if int(spec.get("protocol") or 4) == 4
               else {"clean_start": False, "session_expiry": SESSION_EXPIRY})
    c, state, done = _counting_client(spec, **session)
    c.connect(spec["host"], spec["port"])
    c.subscribe(spec["topic"], spec["qos"]).wait(10)
    c.disconnect()
    ctl.on_stop(done.set)
    ctl.ready(**_info())
    ctl.wait_go(spec["timeout"])
    t0 = perf_counter()
    c.connect(spec["host"], spec["port"])
    timed_out = not done.wait(spec["timeout"])
    got = tuple(state)
    c.disconnect()
    received(ctl, got, n=spec["n"], timed_out=timed_out, t0=t0, **_info())


def _counting_client(spec: Dict[str, Any], **session: Any) -> Any:
    """A Client whose ``on_message`` counts to the spec's ``n`` (then sets ``done``)."""
    n = spec["n"]
    done = threading.Event()
    state: List[Any] = [0, None, None]  # count, t_first, t_last

    def on_message(msg: Any) -> None:
        k = state[0] + 1
        state[0] = k
        if k == 1:
            state[1] = perf_counter()
        if k == n:  # the feeder sends a margin more: the N-th stops the clock
            state[2] = perf_counter()
            done.set()

    options = {} if spec.get("read_delay") is None else {"max_read_delay": spec["read_delay"]}
    c = mqttfast.Client(client_id=spec["client_id"], protocol=int(spec.get("protocol") or 4),
                        **options, **session)
    c.on_message = on_message
    return c, state, done
