"""paho-mqtt 2.x under test: ``publish()`` in a loop with ``loop_start()``, and ``on_message``.

``CallbackAPIVersion.VERSION2``, MQTT 3.1.1 (or MQTT 5: ``protocol=MQTTv5``), an unbounded outgoing queue
(``max_queued_messages_set(0)``) and ``max_inflight_messages_set(window)`` (the parent's
``--paho-window``; see the note in ``bench_clients.py``). Completion is read the way a paho user
would: the last ``MQTTMessageInfo``'s ``wait_for_publish()`` (QoS 0: written to the socket;
QoS 1/2: PUBACK / PUBCOMP), then every other info checked, as for mqttfast's handles. paho keeps
at most 65,535 QoS 1/2 messages outstanding (queued or in flight): its packet ids cycle and a
publish whose id is still taken is refused (``MQTT_ERR_QUEUE_SIZE``, the id burnt). So before
message i the loop checks that message i - 65,535 is acknowledged and, if not, waits
(``wait_for_publish``) for a batch of 1,024 to come free: the flow control paho lacks (waiting
for one id at a time costs a thread wake-up per message and ran at half the speed).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, List

import paho.mqtt
import paho.mqtt.client as mqtt

from .child import Control, payload_of, received

perf_counter = time.perf_counter


def _info() -> Dict[str, Any]:
    return {"version": paho.mqtt.__version__}


def _connect(spec: Dict[str, Any], window: int = 20) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=spec["client_id"],
                    protocol=mqtt.MQTTv5 if spec.get("protocol") == 5 else mqtt.MQTTv311)
    c.max_inflight_messages_set(window)
    c.max_queued_messages_set(0)
    connected = threading.Event()
    result: List[Any] = []

    def on_connect(client: Any, userdata: Any, flags: Any, reason_code: Any,
                   properties: Any) -> None:
        result.append(reason_code)
        connected.set()

    c.on_connect = on_connect
    c.connect(spec["host"], spec["port"], keepalive=60)
    c.loop_start()
    if not connected.wait(10):
        raise TimeoutError("no CONNACK within 10 s")
    if result[0].is_failure:
        raise ConnectionError(f"connection refused: {result[0]}")
    c.on_connect = None
    return c


def _wait(info: Any, timeout: float) -> bool:
    try:
        info.wait_for_publish(max(0.0, timeout))
    except (ValueError, RuntimeError):
        return False
    return info.is_published()


def publish(spec: Dict[str, Any], ctl: Control) -> None:
    n, qos, topic = spec["n"], spec["qos"], spec["topic"]
    timeout = spec["timeout"]
    payload = payload_of(spec["payload_size"])
    c = _connect(spec, int(spec.get("window") or 20))
    ctl.ready(**_info())
    ctl.wait_go()
    deadline = time.monotonic() + timeout
    t0 = perf_counter()
    pub = c.publish
    if qos == 0:
        for _ in range(n):
            info = pub(topic, payload, 0)
        infos = [info]
        full = 0
    else:
        # paho refuses a QoS 1/2 publish (rc MQTT_ERR_QUEUE_SIZE, and the id is used up) while
        # its next packet id is still outstanding. Ids cycle 1..65535, so message i needs
        # message i - 65535 acknowledged first: wait for that one (flow control paho lacks).
        infos = []
        append = infos.append
        full = 0
        for i in range(n):
            if i >= 65535 and not infos[i - 65535].is_published():
                # Wait for a batch of ids to come free (one wake-up per id would cost more).
                full += 1
                left = deadline - time.monotonic()
                if left > 0:
                    infos[min(i - 65535 + 1024, i - 1)].wait_for_publish(left)
                if not infos[i - 65535].is_published():
                    break  # timed out
            append(pub(topic, payload, qos))
    t_queued = perf_counter()
    ctl.emit("queued", t_queued=t_queued)
    ok = _wait(infos[-1], timeout)
    t_done = perf_counter()
    refused = sum(1 for i in infos if i.rc)
    if refused:
        raise RuntimeError(f"paho refused {refused} publishes (first rc: "
                           f"{mqtt.error_string(next(i.rc for i in infos if i.rc))})")
    if qos == 0:
        completed = n if ok else 0
    else:
        stragglers = n - len(infos) + sum(1 for i in infos if not i.is_published())
        if stragglers:
            completed = sum(1 for i in infos
                            if _wait(i, deadline - time.monotonic()))
            t_done = perf_counter()
        else:
            completed = n
    c.disconnect()
    c.loop_stop()
    ctl.result(t0=t0, t_done=t_done, t_queued=t_queued, sent=n if qos == 0 else len(infos),
               completed=completed,
               ok=completed == n, timed_out=completed != n, window=c._max_inflight_messages,
               queue_full_waits=full,
               **_info())


def receive(spec: Dict[str, Any], ctl: Control) -> None:
    n = spec["n"]
    done = threading.Event()
    subscribed = threading.Event()
    state: List[Any] = [0, None, None]  # count, t_first, t_last

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        k = state[0] + 1
        state[0] = k
        if k == 1:
            state[1] = perf_counter()
        if k == n:
            state[2] = perf_counter()
            done.set()

    def on_subscribe(client: Any, userdata: Any, mid: Any, reason_codes: Any,
                     properties: Any) -> None:
        subscribed.set()

    c = _connect(spec)
    c.on_message = on_message
    c.on_subscribe = on_subscribe
    c.subscribe(spec["topic"], spec["qos"])
    if not subscribed.wait(10):
        raise TimeoutError("no SUBACK within 10 s")
    ctl.on_stop(done.set)
    ctl.ready(**_info())
    timed_out = not done.wait(spec["timeout"])
    got = tuple(state)
    c.disconnect()
    c.loop_stop()
    received(ctl, got, n, timed_out, **_info())
