"""How often other threads wake the loop thread (issue 8: QoS 0 publish through mosquitto).

A publish from the application's thread appends to the session and, if no flush is due, wakes
the loop (a byte on its socketpair). While the socket is full the loop already waits for it to
become writable, and that event flushes whatever was appended meanwhile: a wake per publish then
only costs two syscalls and a GIL hand-over each, on the core the broker needs (measured before
this test: ~1 wake per publish while blocked, and QoS 0 publishing through mosquitto at 0.78x
the raw ceiling). The broker is frozen with SIGSTOP so the socket stays full.
"""
from __future__ import annotations

import os
import signal
import time
from typing import Any, List

import pytest

from client_support import QUIET_LOG, connected_client, shutdown, topic


def _fill(pub: Any, name: str, payload: bytes) -> List[Any]:
    """Publish until the kernel takes no more (the newest handle stays not done)."""
    handles: List[Any] = []
    started = time.monotonic()
    while time.monotonic() - started < 10:
        handles += [pub.publish(name, payload) for _ in range(1024)]
        if not handles[-1].wait(0.3):
            return handles
    raise AssertionError("the socket never filled with the broker frozen")


def _count_wakes(pub: Any) -> List[int]:
    loop = pub._loop
    count = [0]
    wake = loop.wake

    def counting() -> None:
        count[0] += 1
        wake()

    loop.wake = counting
    return count


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("api", ["publish", "publish_many"])
def test_publishing_into_a_full_socket_does_not_wake_the_loop(broker_factory, qos, api):
    instance = broker_factory(log_types=QUIET_LOG, max_inflight_messages=0,
                              max_queued_messages=0)
    name = topic("wakes")
    payload = b"x" * 1024
    pub = None
    try:
        pub = connected_client(instance.port, max_buffer=256 * 1024 * 1024,
                               block_when_full=False, max_inflight=65535)
        os.kill(instance.pid, signal.SIGSTOP)
        try:
            handles = _fill(pub, name, payload)
            time.sleep(0.2)  # the loop is back in select(), waiting for the socket
            wakes = _count_wakes(pub)
            if api == "publish":
                more = [pub.publish(name, payload, qos=qos) for _ in range(2000)]
            else:
                more = [pub.publish_many(name, [payload] * 10, qos=qos) for _ in range(200)]
            time.sleep(0.2)
            assert wakes[0] <= 2, f"{wakes[0]} wakes for 2,000 publishes into a full socket"
            assert not handles[-1].done
        finally:
            os.kill(instance.pid, signal.SIGCONT)
        # Nothing was lost by not waking: once the broker reads again, everything goes out.
        assert all(h.wait(20) for h in more)
        assert all(h.wait(20) and h.ok for h in handles)
    finally:
        shutdown(pub)


def test_a_publish_after_the_socket_drains_still_wakes_the_loop(broker_factory):
    """The other side of the same flag: once the backlog is written the loop sleeps in select()
    for reads only, and the next publish must wake it (no lost wake-up)."""
    instance = broker_factory(log_types=QUIET_LOG)
    name = topic("wakes")
    pub = None
    try:
        pub = connected_client(instance.port)
        for _ in range(50):
            handle = pub.publish(name, b"x" * 64)
            assert handle.wait(5), "a QoS 0 publish after the socket drained was never written"
            time.sleep(0.005)
        assert pub.publish(name, b"y", qos=1).wait(5)
    finally:
        shutdown(pub)
